"""Statistics of the floor-plan simulator's radio channel: the mean and spread of RSSI at a
distance match the configured log-distance model, shadowing is correlated in time as
configured and independent between links, walls subtract their attenuation, and packets
are lost below the sensitivity, to the scanner's own misses and to collisions at the rates
the model states.

Tolerances are derived from standard errors (four of them), and every channel is seeded, so
the tests are deterministic."""

from __future__ import annotations

import itertools
import math
import random
import statistics

import pytest

from firmware_sim.radio import Channel

TX = -59.0
ORIGIN = (0.0, 0.0)
WALL = tuple[tuple[float, float], tuple[float, float], float]


def channel(
    *,
    seed: int = 7,
    exponent: float = 2.0,
    shadowing_db: float = 4.0,
    shadowing_tau_s: float = 0.0,
    fading_db: float = 0.0,
    sensitivity_dbm: float = -200.0,
    base_loss: float = 0.0,
    packet_airtime_s: float = 376e-6,
    walls: list[WALL] | None = None,
) -> Channel:
    return Channel(
        random.Random(seed),
        exponent=exponent,
        shadowing_db=shadowing_db,
        shadowing_tau_s=shadowing_tau_s,
        fading_db=fading_db,
        sensitivity_dbm=sensitivity_dbm,
        base_loss=base_loss,
        packet_airtime_s=packet_airtime_s,
        walls=walls,
    )


def readings(
    ch: Channel, d: float, n: int, *, dt: float = 1.0, link: tuple[str, str] = ("tx", "rx")
) -> list[int]:
    out = []
    for i in range(n):
        rssi = ch.receive(link, TX, ORIGIN, (d, 0.0), i * dt)
        assert rssi is not None
        out.append(rssi)
    return out


def model(exponent: float, d: float) -> float:
    return TX - 10.0 * exponent * math.log10(d)


def lag1(series: list[int] | list[float]) -> float:
    mean = statistics.fmean(series)
    centred = [x - mean for x in series]
    num = sum(a * b for a, b in itertools.pairwise(centred))
    return num / sum(c * c for c in centred)


# Whole-dBm rounding adds a uniform error of variance 1/12 to every reading.
def spread(sigma: float) -> float:
    return math.sqrt(sigma * sigma + 1.0 / 12.0)


N = 3000


@pytest.mark.parametrize("exponent", [2.0, 3.2])
@pytest.mark.parametrize("sigma", [2.0, 6.0])
@pytest.mark.parametrize("d", [1.0, 3.0, 10.0])
def test_independent_shadowing_mean_and_spread(exponent: float, sigma: float, d: float) -> None:
    # Sensitivity far below anything drawn (-59 - 32 - 8 sigma), so nothing is clipped.
    ch = channel(exponent=exponent, shadowing_db=sigma, shadowing_tau_s=0.0)
    values = readings(ch, d, N)
    mean = statistics.fmean(values)
    sd = statistics.stdev(values)
    assert abs(mean - model(exponent, d)) <= 4.0 * sigma / math.sqrt(N) + 0.05
    assert sd == pytest.approx(spread(sigma), rel=0.10)
    assert abs(lag1(values)) < 4.0 / math.sqrt(N)  # tau 0: a new draw every packet


def test_no_shadowing_is_the_model_exactly() -> None:
    ch = channel(exponent=2.5, shadowing_db=0.0)
    for d in (1.0, 2.0, 7.5, 20.0):
        assert ch.mean_dbm(TX, ORIGIN, (d, 0.0)) == pytest.approx(model(2.5, d))
        assert set(readings(ch, d, 20)) == {round(model(2.5, d))}


def test_distances_below_half_a_metre_count_as_half_a_metre() -> None:
    ch = channel(exponent=2.0, shadowing_db=0.0)
    assert ch.mean_dbm(TX, ORIGIN, (0.1, 0.0)) == pytest.approx(model(2.0, 0.5))
    assert ch.mean_dbm(TX, ORIGIN, ORIGIN) == pytest.approx(model(2.0, 0.5))


@pytest.mark.parametrize(("tau", "dt"), [(2.0, 0.5), (2.0, 2.0), (10.0, 1.0)])
def test_correlated_shadowing(tau: float, dt: float) -> None:
    sigma = 5.0
    n = 20_000
    ch = channel(shadowing_db=sigma, shadowing_tau_s=tau)
    values = readings(ch, 3.0, n, dt=dt)
    rho = math.exp(-dt / tau)
    # Rounding noise dilutes the correlation by sigma² / (sigma² + 1/12).
    expected = rho * sigma**2 / spread(sigma) ** 2
    assert lag1(values) == pytest.approx(expected, abs=0.03)
    # The marginal spread is still sigma; the series has about n (1-rho²)/(1+rho²)
    # independent samples.
    assert statistics.stdev(values) == pytest.approx(spread(sigma), rel=0.10)
    effective = n * (1 - rho * rho) / (1 + rho * rho)
    assert abs(statistics.fmean(values) - model(2.0, 3.0)) <= 4.0 * sigma / math.sqrt(effective)


def test_a_long_gap_forgets_the_past() -> None:
    ch = channel(shadowing_db=5.0, shadowing_tau_s=1.0)
    values = readings(ch, 3.0, 5000, dt=50.0)  # exp(-50): independent draws
    assert abs(lag1(values)) < 4.0 / math.sqrt(5000)


def test_links_are_independent() -> None:
    sigma = 5.0
    n = 20_000
    ch = channel(shadowing_db=sigma, shadowing_tau_s=2.0)
    a: list[int] = []
    b: list[int] = []
    for i in range(n):
        t = i * 0.5
        ra = ch.receive(("phone-1", "node-a"), TX, ORIGIN, (3.0, 0.0), t)
        rb = ch.receive(("phone-1", "node-b"), TX, ORIGIN, (0.0, 3.0), t)
        assert ra is not None and rb is not None
        a.append(ra)
        b.append(rb)
    rho = math.exp(-0.5 / 2.0)
    # Cross-correlation of two independent AR(1) series: standard error sqrt((1+rho²)/(1-rho²)/n).
    se = math.sqrt((1 + rho * rho) / (1 - rho * rho) / n)
    assert abs(statistics.correlation(a, b)) < 4.0 * se
    assert lag1(a) > 0.7 and lag1(b) > 0.7  # each is correlated with itself


def test_forget_starts_a_link_afresh() -> None:
    ch = channel(shadowing_db=5.0, shadowing_tau_s=1e6)  # practically frozen shadowing
    link = ("phone-1", "n")
    first = ch.power(link, TX, ORIGIN, (3.0, 0.0), 0.0)
    assert ch.power(link, TX, ORIGIN, (3.0, 0.0), 1.0) == pytest.approx(first, abs=0.05)
    ch.forget("phone-1")
    assert ch.power(link, TX, ORIGIN, (3.0, 0.0), 2.0) != pytest.approx(first, abs=0.05)


@pytest.mark.parametrize(("shadow", "fading"), [(4.0, 3.0), (0.0, 5.0), (6.0, 2.0)])
def test_fading_adds_in_quadrature(shadow: float, fading: float) -> None:
    n = 6000
    ch = channel(shadowing_db=shadow, shadowing_tau_s=0.0, fading_db=fading)
    values = readings(ch, 3.0, n)
    total = math.hypot(shadow, fading)
    assert statistics.stdev(values) == pytest.approx(spread(total), rel=0.10)
    assert abs(statistics.fmean(values) - model(2.0, 3.0)) <= 4.0 * total / math.sqrt(n) + 0.05


def test_fading_is_per_packet_even_with_frozen_shadowing() -> None:
    n = 6000
    ch = channel(shadowing_db=5.0, shadowing_tau_s=1e6, fading_db=3.0)
    values = [ch.power(("a", "b"), TX, ORIGIN, (3.0, 0.0), float(i)) for i in range(n)]
    # The shadowing barely moves in n seconds with tau 1e6 s; the spread is the fading's.
    assert statistics.stdev(values) == pytest.approx(3.0, rel=0.10)


# ----- walls -----

RX = (10.0, 0.0)
ACROSS_1: WALL = ((3.0, -5.0), (3.0, 5.0), 6.0)
ACROSS_2: WALL = ((7.0, -5.0), (7.0, 5.0), 9.5)
BESIDE: WALL = ((5.0, 1.0), (5.0, 6.0), 20.0)  # beside the line, clear of it
BEYOND: WALL = ((12.0, -5.0), (12.0, 5.0), 20.0)  # behind the receiver


@pytest.mark.parametrize(
    ("walls", "loss"),
    [
        ([], 0.0),
        ([ACROSS_1], 6.0),
        ([ACROSS_2], 9.5),
        ([ACROSS_1, ACROSS_2], 15.5),
        ([BESIDE], 0.0),
        ([BEYOND], 0.0),
        ([ACROSS_1, BESIDE, BEYOND], 6.0),
    ],
)
def test_walls_lower_the_mean_by_their_attenuation(walls: list[WALL], loss: float) -> None:
    clear = model(2.0, 10.0)
    ch = channel(shadowing_db=3.0, walls=walls)
    assert ch.mean_dbm(TX, ORIGIN, RX) == pytest.approx(clear - loss)
    assert ch.mean_dbm(TX, RX, ORIGIN) == pytest.approx(clear - loss)  # either direction
    n = 3000
    values = readings(ch, 10.0, n)
    assert abs(statistics.fmean(values) - (clear - loss)) <= 4.0 * 3.0 / math.sqrt(n) + 0.05


def test_wall_seen_from_points_either_side_of_it() -> None:
    # A mover walking past the end of a wall: blocked while behind it, clear once past.
    wall: WALL = ((5.0, -5.0), (5.0, 5.0), 10.0)
    ch = channel(shadowing_db=0.0, walls=[wall])
    node = (10.0, 0.0)
    behind = ch.mean_dbm(TX, (0.0, 0.0), node)
    past = ch.mean_dbm(TX, (0.0, 20.0), node)
    assert behind == pytest.approx(model(2.0, 10.0) - 10.0)
    assert past == pytest.approx(model(2.0, math.dist((0.0, 20.0), node)))


def test_wall_loss_does_not_depend_on_earlier_queries() -> None:
    wall: WALL = ((5.0, -5.0), (5.0, 5.0), 10.0)
    node = (10.0, 0.0)
    fresh = channel(shadowing_db=0.0, walls=[wall])
    clear = fresh.mean_dbm(TX, (0.0, 10.05), node)  # the line passes the wall's end at y 5.025
    assert clear == pytest.approx(model(2.0, math.dist((0.0, 10.05), node)))
    used = channel(shadowing_db=0.0, walls=[wall])
    used.mean_dbm(TX, (0.0, 9.95), node)  # 5 cm away, behind the wall
    assert used.mean_dbm(TX, (0.0, 10.05), node) == pytest.approx(clear)


# ----- losses -----


def test_nothing_is_received_below_the_sensitivity() -> None:
    # Mean -59 - 30 log10(100) = -119 dBm, sensitivity -95, sigma 2: 12 sigma below.
    ch = channel(exponent=3.0, shadowing_db=2.0, sensitivity_dbm=-95.0)
    assert all(
        ch.receive(("a", "b"), TX, ORIGIN, (100.0, 0.0), float(i)) is None for i in range(2000)
    )


def test_at_the_sensitivity_about_half_is_received_and_none_below_it() -> None:
    ch = channel(exponent=2.0, shadowing_db=4.0, sensitivity_dbm=model(2.0, 10.0))
    n = 4000
    got = [ch.receive(("a", "b"), TX, ORIGIN, (10.0, 0.0), float(i)) for i in range(n)]
    heard = [r for r in got if r is not None]
    assert len(heard) / n == pytest.approx(0.5, abs=4.0 * math.sqrt(0.25 / n))
    assert min(heard) >= round(ch.sensitivity_dbm)


def test_reported_rssi_is_clipped_to_the_node_protocol_range() -> None:
    ch = channel(exponent=1.0, shadowing_db=0.0)
    loud = ch.receive(("a", "b"), 40.0, ORIGIN, (1.0, 0.0), 0.0)
    assert loud == 20
    quiet = ch.receive(("a", "b"), -120.0, ORIGIN, (100.0, 0.0), 0.0)
    assert quiet == -127


@pytest.mark.parametrize("base_loss", [0.0, 0.05, 0.3])
def test_base_loss(base_loss: float) -> None:
    n = 10_000
    ch = channel(shadowing_db=2.0, base_loss=base_loss)
    lost = sum(ch.receive(("a", "b"), TX, ORIGIN, (3.0, 0.0), float(i)) is None for i in range(n))
    se = math.sqrt(base_loss * (1 - base_loss) / n)
    assert lost / n == pytest.approx(base_loss, abs=4.0 * se + 1e-9)


def test_survival_formula() -> None:
    airtime = 376e-6
    ch = channel(base_loss=0.1, packet_airtime_s=airtime)
    for rate in (0.0, 10.0, 100.0, 500.0, 2000.0):
        assert ch.survival(rate) == pytest.approx(0.9 * math.exp(-2.0 * airtime * rate))
    rates = [0.0, 1.0, 50.0, 200.0, 1000.0, 5000.0]
    values = [ch.survival(r) for r in rates]
    assert all(b < a for a, b in itertools.pairwise(values))
    assert ch.survival(-5.0) == ch.survival(0.0)  # a negative rate is no rate


@pytest.mark.parametrize("rate", [100.0, 800.0, 2500.0])
def test_measured_collision_loss_matches_survival(rate: float) -> None:
    n = 10_000
    ch = channel(shadowing_db=2.0, base_loss=0.05)
    got = sum(
        ch.receive(("a", "b"), TX, ORIGIN, (3.0, 0.0), float(i), other_rate_per_s=rate) is not None
        for i in range(n)
    )
    p = ch.survival(rate)
    assert got / n == pytest.approx(p, abs=4.0 * math.sqrt(p * (1 - p) / n))


def test_survival_is_the_unslotted_aloha_result() -> None:
    """Check the formula itself against a direct simulation: many advertisers at random
    phases, each packet lost when another starts within one airtime either side of it."""
    rng = random.Random(3)
    airtime = 0.002  # long packets, so a short simulation sees many collisions
    advertisers = 100
    interval = 1.0
    horizon = 200.0
    starts: list[float] = []
    for _ in range(advertisers):
        t = rng.uniform(0.0, interval)
        while t < horizon:
            starts.append(t)
            t += interval + rng.uniform(0.0, 0.010)
    starts.sort()
    survived = 0
    for i, t in enumerate(starts):
        before = i > 0 and t - starts[i - 1] < airtime
        after = i + 1 < len(starts) and starts[i + 1] - t < airtime
        survived += not (before or after)
    total_rate = len(starts) / horizon
    other_rate = total_rate * (advertisers - 1) / advertisers
    ch = channel(base_loss=0.0, packet_airtime_s=airtime)
    p = ch.survival(other_rate)
    n = len(starts)
    assert survived / n == pytest.approx(p, abs=4.0 * math.sqrt(p * (1 - p) / n) + 0.01)
