"""Lift against the holdout: Wilson and Newcombe intervals against published values, coverage
in simulation, warnings for small samples, and the CLI table."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.lift import Z95, Arm, LiftRow, format_table, lift, wilson


def test_z_is_the_two_sided_95_percent_quantile() -> None:
    assert pytest.approx(1.959964, abs=1e-6) == Z95


# Newcombe (1998), Statistics in Medicine 17:873-890, Table II, method 10 (hybrid score,
# no continuity correction): x1/n1 - x2/n2 and the interval, to 4 decimals.
NEWCOMBE_TABLE_II = [
    ((56, 70), (48, 80), (0.0524, 0.3339)),
    ((9, 10), (3, 10), (0.1705, 0.8090)),
    ((6, 7), (2, 7), (0.0582, 0.8062)),
    ((5, 56), (0, 29), (-0.0381, 0.1926)),
    ((0, 10), (0, 20), (-0.1611, 0.2775)),
    ((10, 10), (0, 20), (0.6791, 1.0000)),
]


@pytest.mark.parametrize(("treated", "control", "expected"), NEWCOMBE_TABLE_II)
def test_the_difference_interval_matches_newcombe(
    treated: tuple[int, int], control: tuple[int, int], expected: tuple[float, float]
) -> None:
    result = lift(Arm(treated[1], treated[0]), Arm(control[1], control[0]))

    assert result.ci95 is not None
    assert result.ci95 == pytest.approx(expected, abs=5e-5)


def test_wilson_matches_newcombe() -> None:
    # Newcombe (1998), Statistics in Medicine 17:857-872, Table I: 81/263 and 15/148.
    assert wilson(81, 263) == pytest.approx((0.2553, 0.3662), abs=5e-5)
    assert wilson(15, 148) == pytest.approx((0.0624, 0.1605), abs=5e-5)
    assert wilson(0, 20)[0] == 0.0
    assert wilson(20, 20)[1] == 1.0


def test_wilson_needs_someone_exposed() -> None:
    with pytest.raises(ValueError, match="exposed"):
        wilson(0, 0)


def test_a_plain_result() -> None:
    result = lift(Arm(exposed=2000, conversions=120), Arm(exposed=500, conversions=20))

    assert result.treat_rate == pytest.approx(0.06)
    assert result.control_rate == pytest.approx(0.04)
    assert result.diff == pytest.approx(0.02)
    assert result.lift == pytest.approx(0.5)
    assert result.ci95 is not None
    assert result.lift_ci95 is not None
    assert result.ci95[0] < 0.02 < result.ci95[1]
    assert result.lift_ci95[0] < 0.5 < result.lift_ci95[1]
    # Katz: exp(log(1.5) +- z * sqrt(1/120 - 1/2000 + 1/20 - 1/500)) - 1
    half = Z95 * math.sqrt(1 / 120 - 1 / 2000 + 1 / 20 - 1 / 500)
    assert result.lift_ci95 == pytest.approx((1.5 * math.exp(-half) - 1, 1.5 * math.exp(half) - 1))
    assert result.warning is None


def test_no_conversion_in_the_control_leaves_the_lift_undefined() -> None:
    result = lift(Arm(1000, 40), Arm(200, 0))

    assert result.control_rate == 0.0
    assert result.lift is None
    assert result.lift_ci95 is None
    assert result.ci95 is not None  # the difference is still defined
    assert result.warning is not None
    assert "lift undefined" in result.warning


def test_no_conversion_in_the_treatment_has_no_ratio_interval() -> None:
    result = lift(Arm(1000, 0), Arm(1000, 40))

    assert result.lift == pytest.approx(-1.0)
    assert result.lift_ci95 is None


def test_an_arm_nobody_was_in() -> None:
    result = lift(Arm(1000, 40), Arm(0, 0))

    assert result.treat_rate == pytest.approx(0.04)
    assert result.control_rate is None
    assert result.diff is None
    assert result.ci95 is None
    assert result.lift is None
    assert result.warning is not None
    assert "control has 0 exposed" in result.warning


@pytest.mark.parametrize(
    ("treatment", "control", "fragments"),
    [
        (Arm(29, 10), Arm(1000, 50), ["treatment has 29 exposed (< 30)"]),
        (Arm(1000, 50), Arm(25, 6), ["control has 25 exposed (< 30)"]),
        (Arm(1000, 4), Arm(1000, 50), ["treatment has 4 conversions (< 5)"]),
        (
            Arm(10, 1),
            Arm(1000, 3),
            ["treatment has 10 exposed", "treatment has 1 conversions", "control has 3 conv"],
        ),
    ],
)
def test_small_samples_warn(treatment: Arm, control: Arm, fragments: list[str]) -> None:
    warning = lift(treatment, control).warning

    assert warning is not None
    for fragment in fragments:
        assert fragment in warning


def test_enough_samples_do_not_warn() -> None:
    assert lift(Arm(30, 5), Arm(30, 5)).warning is None


@pytest.mark.parametrize(("exposed", "conversions"), [(-1, 0), (1, 2), (1.0, 0), (True, 0)])
def test_bad_arms_are_refused(exposed: object, conversions: object) -> None:
    with pytest.raises(ValueError, match=r"exposed|conversions"):
        Arm(exposed, conversions)  # type: ignore[arg-type]


arms = st.integers(min_value=1, max_value=5000).flatmap(
    lambda n: st.builds(Arm, st.just(n), st.integers(min_value=0, max_value=n))
)


@given(arms, arms)
def test_intervals_hold_their_estimates(treatment: Arm, control: Arm) -> None:
    result = lift(treatment, control)

    assert result.diff is not None
    assert result.ci95 is not None
    low, high = result.ci95
    assert -1.0 <= low <= result.diff + 1e-12
    assert result.diff - 1e-12 <= high <= 1.0
    if result.lift_ci95 is not None:
        assert result.lift is not None
        assert result.lift_ci95[0] <= result.lift * (1 + 1e-9) + 1e-12
        assert result.lift * (1 - 1e-9) - 1e-12 <= result.lift_ci95[1]


def _binomial(rng: random.Random, n: int, p: float) -> int:
    return sum(rng.random() < p for _ in range(n))


@pytest.mark.parametrize(
    ("p_treat", "p_control", "n_treat", "n_control"),
    [(0.06, 0.04, 800, 800), (0.12, 0.10, 1500, 300)],
)
def test_the_intervals_cover_the_truth_95_percent_of_the_time(
    p_treat: float, p_control: float, n_treat: int, n_control: int
) -> None:
    rng = random.Random(20240601)
    true_diff = p_treat - p_control
    true_lift = p_treat / p_control - 1
    runs = 800
    diff_hits = lift_hits = lift_runs = 0
    for _ in range(runs):
        result = lift(
            Arm(n_treat, _binomial(rng, n_treat, p_treat)),
            Arm(n_control, _binomial(rng, n_control, p_control)),
        )
        assert result.ci95 is not None
        diff_hits += result.ci95[0] <= true_diff <= result.ci95[1]
        if result.lift_ci95 is not None:
            lift_runs += 1
            lift_hits += result.lift_ci95[0] <= true_lift <= result.lift_ci95[1]

    # 800 runs: the coverage's standard error is 0.8 points; allow about 2.5 of them.
    assert 0.93 <= diff_hits / runs <= 0.97
    assert lift_runs == runs
    assert 0.93 <= lift_hits / lift_runs <= 0.97


# -- the table -----------------------------------------------------------------------------


def test_the_table_lines_up() -> None:
    text = format_table(
        [
            LiftRow("spring-coffee", Arm(2000, 120), Arm(500, 20)),
            LiftRow("x", Arm(10, 1), Arm(0, 0)),
        ]
    )
    lines = text.splitlines()

    assert text.endswith("\n")
    assert lines[0].startswith("offer" + " " * (len("spring-coffee") - len("offer") + 2))
    assert set(lines[1]) == {"-", " "}
    assert all(line == line.rstrip() for line in lines)
    # Every numeric column ends at the same place on every line.
    for header in ("impressions", "redemptions", "treat conv", "lift 95% CI"):
        end = lines[0].index(header) + len(header)
        assert all(line[end - 1] != " " and line[end : end + 2] == "  " for line in lines[1:])
    coffee, x = lines[2], lines[3]
    assert coffee.startswith("spring-coffee")
    assert "6.00%" in coffee
    assert "4.00%" in coffee
    assert "+50.0%" in coffee
    assert "warning" not in coffee and "<" not in coffee
    assert "n/a" in x
    assert "control has 0 exposed (< 30)" in x


def test_an_empty_table_is_its_header() -> None:
    lines = format_table([]).splitlines()

    assert len(lines) == 2
    assert lines[0].startswith("offer")
    assert lines[0].endswith("warning")
