"""Tests of RSSI filtering and distance: quantiles and Tukey's fences against a plain
reference, the window's bounds in time and count, late and non-finite readings, the
log-distance model and per-scanner calibration; then a property test of the window against
a brute-force model."""

from __future__ import annotations

import math
import random
import statistics
from dataclasses import dataclass
from math import exp

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beacons.rssi import (
    DEFAULT_MAX_READINGS,
    DEFAULT_PATH_LOSS_EXPONENT,
    DEFAULT_TX_AT_1M_DBM,
    DEFAULT_WINDOW_S,
    Calibration,
    RssiWindow,
    distance_m,
    quantile,
    rssi_at_m,
    tukey_mean,
)

PROPERTY = settings(database=None, deadline=None, print_blob=True, max_examples=200)


# --- quantiles and Tukey's fences ------------------------------------------------------


def test_quantile_interpolates_between_ranks() -> None:
    values = [-90.0, -80.0, -70.0, -60.0]

    assert quantile(values, 0.0) == -90.0
    assert quantile(values, 1.0) == -60.0
    assert quantile(values, 0.5) == -75.0
    assert quantile(values, 0.25) == pytest.approx(-82.5)
    assert quantile(values, 0.75) == pytest.approx(-67.5)
    assert quantile([-70.0], 0.25) == -70.0


@PROPERTY
@given(st.lists(st.integers(-120, -20), min_size=2, max_size=40))
def test_quartiles_match_the_statistics_module(values: list[int]) -> None:
    ordered = sorted(float(v) for v in values)
    q1, _, q3 = statistics.quantiles(ordered, n=4, method="inclusive")

    assert quantile(ordered, 0.25) == pytest.approx(q1)
    assert quantile(ordered, 0.75) == pytest.approx(q3)


def test_tukey_mean_without_outliers_is_the_mean() -> None:
    values = sorted([-72.0, -70.0, -69.0, -71.0, -68.0])

    assert tukey_mean(values) == pytest.approx(-70.0)


def test_tukey_mean_drops_a_lucky_packet_and_a_deep_fade() -> None:
    values = sorted([-80.0, -81.0, -79.0, -80.0, -82.0, -78.0, -80.0, -50.0, -100.0])

    # Q1 = -81, Q3 = -79, fences -84 .. -76: both extremes are outside.
    assert tukey_mean(values) == pytest.approx(-80.0)
    # The plain mean is pulled by them.
    assert statistics.fmean(values) != pytest.approx(-80.0)


def test_tukey_mean_with_k_zero_keeps_only_the_interquartile_range() -> None:
    values = [-90.0, -80.0, -70.0, -60.0, -50.0]

    # Q1 = -80, Q3 = -60: the mean of -80, -70, -60.
    assert tukey_mean(values, k=0.0) == pytest.approx(-70.0)


# --- the window ---------------------------------------------------------------------


def test_defaults() -> None:
    window = RssiWindow()

    assert (DEFAULT_WINDOW_S, DEFAULT_MAX_READINGS) == (5.0, 32)
    assert 2.0 <= DEFAULT_PATH_LOSS_EXPONENT <= 2.5
    assert DEFAULT_TX_AT_1M_DBM == -59.0
    assert window.estimate is None
    assert window.newest is None
    assert len(window) == 0


def test_one_reading_is_its_own_estimate() -> None:
    window = RssiWindow()

    assert window.add(1.0, -70.0)
    assert window.estimate == -70.0
    assert window.newest == 1.0


def test_two_readings_average() -> None:
    window = RssiWindow()
    window.add(0.0, -60.0)
    window.add(0.1, -80.0)

    assert window.estimate == pytest.approx(-70.0)


def test_one_lucky_packet_does_not_move_the_estimate() -> None:
    window = RssiWindow()
    for i, rssi in enumerate([-90, -91, -89, -90, -92, -88, -90, -91]):
        window.add(i * 0.1, float(rssi))
    before = window.estimate

    window.add(0.8, -50.0)

    assert before is not None
    assert window.estimate == pytest.approx(before)
    assert len(window) == 9  # kept in the window, left out of the estimate


def test_a_time_constant_weights_the_readings_by_age() -> None:
    window = RssiWindow(time_constant_s=1.0)
    window.add(0.0, -80.0)
    window.add(1.0, -70.0)

    # Weights exp(-1) and 1: the newer reading counts e times as much.
    expected = (-80.0 * exp(-1.0) - 70.0) / (exp(-1.0) + 1.0)
    assert window.estimate == pytest.approx(expected)


def test_a_time_weighted_window_keeps_equal_readings_exact_and_drops_outliers() -> None:
    window = RssiWindow(time_constant_s=1.5)
    for i in range(8):
        window.add(i * 0.1, -60.0)
    assert window.estimate == -60.0

    window.add(0.8, -20.0)  # a lucky packet: outside the fences, left out of the estimate

    assert window.estimate == -60.0


def test_a_time_weighted_window_matches_the_formula_over_a_long_run() -> None:
    window = RssiWindow(window_s=5.0, max_readings=32, time_constant_s=0.5)
    rng = random.Random(7)
    for i in range(3000):  # 1100 s: the weights' anchor moves many times
        t = i * 0.37
        window.add(t, -70.0 + rng.gauss(0.0, 5.0))
        readings = window.readings()
        values = sorted(v for _, v in readings)
        q1, q3 = quantile(values, 0.25), quantile(values, 0.75)
        lo, hi = (q1 - 1.5 * (q3 - q1), q3 + 1.5 * (q3 - q1)) if len(values) >= 3 else (-999, 0)
        kept = [(exp((r_t - t) / 0.5), v) for r_t, v in readings if lo <= v <= hi]
        expected = sum(w * v for w, v in kept) / sum(w for w, _ in kept)
        assert window.estimate == pytest.approx(expected, abs=1e-9)


def test_readings_older_than_the_window_expire_on_the_next_reading() -> None:
    window = RssiWindow(window_s=5.0)
    window.add(0.0, -90.0)
    window.add(1.0, -90.0)

    window.add(5.5, -60.0)

    assert window.readings() == [(1.0, -90.0), (5.5, -60.0)]
    window.add(5.9, -60.0)
    assert window.readings() == [(1.0, -90.0), (5.5, -60.0), (5.9, -60.0)]
    # Exactly window_s old is out: the window holds the last 5 s, not 5 s and an instant.
    window.add(6.0, -60.0)
    assert window.readings() == [(5.5, -60.0), (5.9, -60.0), (6.0, -60.0)]
    assert window.estimate == pytest.approx(-60.0)


def test_expire_moves_the_window_on_between_readings() -> None:
    window = RssiWindow(window_s=5.0)
    window.add(0.0, -90.0)
    window.add(3.0, -60.0)

    window.expire(4.0)
    assert len(window) == 2
    window.expire(5.0)
    assert window.readings() == [(3.0, -60.0)]
    assert window.estimate == -60.0
    window.expire(8.0)
    assert len(window) == 0
    assert window.estimate is None


def test_the_count_is_bounded_and_the_newest_are_kept() -> None:
    window = RssiWindow(window_s=1000.0, max_readings=32)
    for i in range(1000):
        window.add(i * 0.01, -90.0 if i < 990 else -60.0)

    assert len(window) == 32
    assert window.readings()[0][0] == pytest.approx(9.68)
    assert window.readings()[-1][1] == -60.0


def test_a_late_reading_inside_the_window_is_inserted_in_time_order() -> None:
    window = RssiWindow(window_s=5.0)
    window.add(10.0, -70.0)
    window.add(12.0, -72.0)

    assert window.add(11.0, -74.0)
    assert window.readings() == [(10.0, -70.0), (11.0, -74.0), (12.0, -72.0)]
    assert window.estimate == pytest.approx(-72.0)


def test_a_reading_older_than_the_window_is_refused() -> None:
    window = RssiWindow(window_s=5.0)
    window.add(10.0, -70.0)

    assert not window.add(5.0, -40.0)
    assert window.readings() == [(10.0, -70.0)]
    assert window.add(5.01, -40.0)


@pytest.mark.parametrize(("t", "rssi"), [(0.0, math.nan), (0.0, math.inf), (math.nan, -70.0)])
def test_non_finite_readings_are_refused(t: float, rssi: float) -> None:
    window = RssiWindow()
    window.add(0.0, -70.0)

    assert not window.add(t, rssi)
    assert window.readings() == [(0.0, -70.0)]
    assert window.estimate == -70.0


def test_clear_empties_the_window() -> None:
    window = RssiWindow()
    window.add(0.0, -70.0)
    window.clear()

    assert len(window) == 0
    assert window.estimate is None
    window.add(100.0, -80.0)
    assert window.estimate == -80.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"window_s": 0.0}, "window_s"),
        ({"max_readings": 0}, "max_readings"),
        ({"k": -1.0}, "k must not be negative"),
        ({"time_constant_s": -1.0}, "time_constant_s must not be negative"),
    ],
)
def test_invalid_window_parameters_are_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RssiWindow(**kwargs)  # type: ignore[arg-type]


# --- distance ---------------------------------------------------------------------------


def test_distance_at_the_measured_power_is_one_metre() -> None:
    assert distance_m(-59.0, -59.0) == pytest.approx(1.0)
    assert distance_m(-65.0, -65.0, 3.0) == pytest.approx(1.0)


def test_each_ten_n_db_is_ten_times_farther() -> None:
    assert distance_m(-79.0, -59.0, 2.0) == pytest.approx(10.0)
    assert distance_m(-81.0, -59.0, 2.2) == pytest.approx(10.0)
    assert distance_m(-39.0, -59.0, 2.0) == pytest.approx(0.1)


def test_a_larger_exponent_reads_the_same_loss_as_nearer() -> None:
    assert distance_m(-75.0, -59.0, 2.5) < distance_m(-75.0, -59.0, 2.0)


@pytest.mark.parametrize("metres", [0.3, 1.0, 1.5, 2.5, 9.0, 30.0])
def test_rssi_at_m_inverts_distance(metres: float) -> None:
    rssi = rssi_at_m(metres, -61.0, 2.3)

    assert distance_m(rssi, -61.0, 2.3) == pytest.approx(metres)


def test_default_model_values() -> None:
    # -59 dBm at 1 m and n = 2.2: the near/far band edges used by the presence tracker.
    assert rssi_at_m(1.5) == pytest.approx(-62.874, abs=1e-3)
    assert rssi_at_m(2.5) == pytest.approx(-67.754, abs=1e-3)


# --- calibration ------------------------------------------------------------------------


def test_calibration_adds_the_scanner_offset() -> None:
    calibration = Calibration({"node-coffee": 3.5, "node-door": -2.0})

    assert calibration.apply("node-coffee", -70) == -66.5
    assert calibration.apply("node-door", -70) == -72.0
    assert calibration.apply("node-other", -70) == -70.0


def test_calibration_keeps_its_own_copy() -> None:
    offsets = {"node-coffee": 3.0}
    calibration = Calibration(offsets)
    offsets["node-coffee"] = 10.0

    assert calibration.apply("node-coffee", -70) == -67.0
    with pytest.raises(TypeError):
        calibration.offsets_db["node-coffee"] = 1.0  # type: ignore[index]


# --- the window against a brute-force model ----------------------------------------------


@dataclass(frozen=True)
class Add:
    dt: float
    rssi: int


@dataclass(frozen=True)
class Expire:
    dt: float


@PROPERTY
@given(
    st.floats(min_value=0.5, max_value=10.0),
    st.integers(1, 40),
    st.lists(
        st.one_of(
            st.builds(Add, st.floats(min_value=-3.0, max_value=2.0), st.integers(-110, -30)),
            st.builds(Expire, st.floats(min_value=0.0, max_value=6.0)),
        ),
        max_size=120,
    ),
)
def test_window_matches_a_brute_force_model(
    window_s: float, max_readings: int, ops: list[Add | Expire]
) -> None:
    window = RssiWindow(window_s=window_s, max_readings=max_readings)
    model: list[tuple[float, float]] = []  # (t, rssi), in time order, equal times in arrival
    clock = 100.0
    for op in ops:
        if isinstance(op, Add):
            t = clock + op.dt  # negative dt: a late reading
            clock = max(clock, t)
            accepted = window.add(t, float(op.rssi))
            too_old = bool(model) and t <= model[-1][0] - window_s
            assert accepted is not too_old
            if accepted:
                model.append((t, float(op.rssi)))
                model.sort(key=lambda reading: reading[0])  # stable: ties keep arrival order
                newest = model[-1][0]
                model = [r for r in model if r[0] > newest - window_s][-max_readings:]
        else:
            clock += op.dt
            window.expire(clock)
            model = [r for r in model if r[0] > clock - window_s]

        assert window.readings() == model
        assert len(window) <= max_readings
        if model:
            expected = tukey_mean(sorted(r[1] for r in model))
            assert window.estimate == pytest.approx(expected, abs=1e-6)
            assert min(r[1] for r in model) <= expected <= max(r[1] for r in model)
        else:
            assert window.estimate is None
