"""Thompson sampling per (offer, segment), the exploration floor, the memory bound, and the
hash-based holdout: deterministic with a seed, converging, uniform, sticky and independent."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.learning import ALL, HOLDOUT_KEY, Learner, Propensity, in_holdout

SHOPPERS = [f"shopper-{i}" for i in range(100_000)]


# -- the posterior -------------------------------------------------------------------------


def test_the_posterior_is_beta_of_the_counts() -> None:
    p = Propensity(impressions=10, redemptions=3)

    assert (p.alpha, p.beta) == (4, 8)
    assert p.mean == pytest.approx(4 / 12)
    assert Propensity().mean == 0.5  # the uniform prior


@pytest.mark.parametrize(
    ("impressions", "redemptions"),
    [(1, 2), (-1, 0), (0, -1), (True, 0), (1.0, 0)],
)
def test_counts_that_cannot_be_are_refused(impressions: object, redemptions: object) -> None:
    with pytest.raises(ValueError, match=r"impressions|redemptions"):
        Propensity(impressions, redemptions)  # type: ignore[arg-type]


def test_draws_follow_the_posterior() -> None:
    rng = random.Random(7)
    p = Propensity(impressions=1000, redemptions=200)

    draws = [p.sample(rng) for _ in range(2000)]

    assert all(0.0 <= d <= 1.0 for d in draws)
    assert sum(draws) / len(draws) == pytest.approx(p.mean, abs=0.005)


# -- observing -----------------------------------------------------------------------------


def test_observations_count_under_the_segment_and_the_pool() -> None:
    learner = Learner()
    for _ in range(3):
        learner.observe_impression("coffee", "regulars")
    learner.observe_impression("coffee", "students")
    counts = learner.observe_redemption("coffee", "regulars")

    assert counts == Propensity(3, 1)
    assert learner.propensity("coffee", "students") == Propensity(1, 0)
    assert learner.propensity("coffee", ALL) == Propensity(4, 1)


def test_observing_under_the_pool_counts_once() -> None:
    learner = Learner()
    learner.observe_impression("coffee", ALL)

    assert learner.propensity("coffee", ALL) == Propensity(1, 0)
    assert len(learner) == 1


def test_a_redemption_without_a_counted_impression_brings_one() -> None:
    learner = Learner()

    assert learner.observe_redemption("coffee", "regulars") == Propensity(1, 1)
    assert learner.observe_redemption("coffee", "regulars") == Propensity(2, 2)
    assert learner.propensity("coffee", ALL) == Propensity(2, 2)


def test_reading_creates_nothing() -> None:
    learner = Learner()
    rng = random.Random(1)

    assert learner.mean("coffee", "regulars") == 0.5
    learner.sample("coffee", "regulars", rng)
    learner.rank([("coffee", 1.0, "regulars")], rng)

    assert len(learner) == 0
    assert ("coffee", "regulars") not in learner


def test_memory_is_bounded_and_the_least_recently_observed_goes_first() -> None:
    learner = Learner(max_keys=4)
    learner.observe_impression("a", "s")  # keys (a, all), (a, s)
    learner.observe_impression("b", "s")  # keys (b, all), (b, s)
    learner.observe_impression("a", "s")  # refreshes a's keys: b's are now the oldest

    learner.observe_impression("c", "s")

    assert len(learner) == 4
    assert set(learner.counts()) == {("a", ALL), ("a", "s"), ("c", ALL), ("c", "s")}
    assert learner.propensity("a", "s") == Propensity(2, 0)
    assert learner.propensity("b", "s") == Propensity()  # forgotten: back at the prior


def test_max_keys_must_hold_a_key_and_its_pool() -> None:
    with pytest.raises(ValueError, match="max_keys"):
        Learner(max_keys=1)


def test_counts_round_trip_through_load() -> None:
    learner = Learner()
    learner.observe_impression("a", "s")
    learner.observe_redemption("a", "s")
    learner.observe_impression("b", "t")

    copy = Learner()
    copy.observe_impression("gone", "x")
    copy.load(learner.counts())

    assert copy.counts() == learner.counts()
    assert list(copy.counts()) == list(learner.counts())  # the recency order too
    assert "gone" not in {offer for offer, _ in copy.counts()}


def test_loading_more_than_the_bound_keeps_the_most_recent() -> None:
    learner = Learner(max_keys=2)

    learner.load(
        {("a", ALL): Propensity(1, 0), ("b", ALL): Propensity(2, 0), ("c", ALL): Propensity(3, 1)}
    )

    assert list(learner.counts()) == [("b", ALL), ("c", ALL)]


@pytest.mark.parametrize(
    "counts",
    [
        {("a",): Propensity()},
        {("a", 1): Propensity()},
        {("a", "s"): (1, 0)},
    ],
)
def test_loading_bad_counts_is_refused_and_changes_nothing(counts: object) -> None:
    learner = Learner()
    learner.observe_impression("kept", ALL)

    with pytest.raises(ValueError, match=r"key|counts"):
        learner.load(counts)  # type: ignore[arg-type]

    assert learner.propensity("kept", ALL) == Propensity(1, 0)


# -- which segment -------------------------------------------------------------------------


def test_the_segment_is_the_best_known_of_the_shoppers() -> None:
    learner = Learner()
    learner.load(
        {
            ("coffee", "students"): Propensity(5, 1),
            ("coffee", "regulars"): Propensity(50, 1),
            ("tea", "students"): Propensity(7, 0),
        }
    )

    assert learner.segment_for("coffee", ["students", "regulars"]) == "regulars"
    assert learner.segment_for("tea", ["regulars", "students"]) == "students"
    # Nothing known in any: the smallest name, so evidence accumulates in one place.
    assert learner.segment_for("cake", ["students", "regulars"]) == "regulars"
    assert learner.segment_for("coffee", []) == ALL


# -- ranking -------------------------------------------------------------------------------


def _trained() -> Learner:
    learner = Learner()
    learner.load(
        {
            ("a", "s"): Propensity(40, 8),
            ("b", "s"): Propensity(30, 9),
            ("c", "s"): Propensity(5, 1),
            ("d", "s"): Propensity(0, 0),
        }
    )
    return learner


CANDIDATES = [("a", 2.0, "s"), ("b", 1.5, "s"), ("c", 3.0, "s"), ("d", 1.0, "s")]


def test_the_same_seed_gives_the_same_ranking() -> None:
    learner = _trained()

    first = [learner.rank(CANDIDATES, random.Random(seed)) for seed in range(50)]
    again = [learner.rank(CANDIDATES, random.Random(seed)) for seed in range(50)]

    assert first == again
    assert len({tuple(r) for r in first}) > 1  # the seed does matter
    assert all(sorted(r) == ["a", "b", "c", "d"] for r in first)


@given(st.permutations(CANDIDATES), st.integers(min_value=0, max_value=2**32))
def test_the_order_of_candidates_does_not_matter(
    shuffled: list[tuple[str, float, str]], seed: int
) -> None:
    learner = _trained()

    assert learner.rank(shuffled, random.Random(seed)) == learner.rank(
        CANDIDATES, random.Random(seed)
    )


def test_the_better_offer_ranks_first_once_learned() -> None:
    """Closed loop: show the first-ranked offer, observe what the shopper does."""
    rng = random.Random(2024)
    truth = {"good": 0.30, "fair": 0.15, "poor": 0.05}
    learner = Learner()
    candidates = [(offer, 1.0, "s") for offer in truth]

    firsts = []
    for _ in range(3000):
        shown = learner.rank(candidates, rng)[0]
        learner.observe_impression(shown, "s")
        if rng.random() < truth[shown]:
            learner.observe_redemption(shown, "s")
        firsts.append(shown)

    assert firsts[-500:].count("good") / 500 > 0.85
    assert learner.mean("good", "s") == pytest.approx(0.30, abs=0.04)


def test_value_times_propensity_decides() -> None:
    learner = Learner()
    learner.load(
        {("cheap", "s"): Propensity(10_000, 3000), ("dear", "s"): Propensity(10_000, 1000)}
    )
    rng = random.Random(3)

    # 1.0 * 0.3 against 5.0 * 0.1: the dearer offer is worth more despite fewer redemptions.
    rankings = [
        learner.rank([("cheap", 1.0, "s"), ("dear", 5.0, "s")], rng, exploration=0.0)
        for _ in range(200)
    ]

    assert all(r == ["dear", "cheap"] for r in rankings)


@pytest.mark.parametrize("exploration", [0.05, 0.2])
def test_the_exploration_floor_runs_at_its_rate(exploration: float) -> None:
    learner = Learner()
    learner.load({("best", "s"): Propensity(10_000, 9000), ("worst", "s"): Propensity(10_000, 10)})
    rng = random.Random(11)
    candidates = [("best", 1.0, "s"), ("worst", 1.0, "s")]
    draws = 20_000

    worst_first = sum(
        learner.rank(candidates, rng, exploration=exploration)[0] == "worst" for _ in range(draws)
    )

    # Exploration picks one of the two uniformly: the worst is first half the times it runs.
    assert worst_first / draws == pytest.approx(exploration / 2, abs=0.01)


def test_without_exploration_the_worst_never_leads() -> None:
    learner = Learner()
    learner.load({("best", "s"): Propensity(10_000, 9000), ("worst", "s"): Propensity(10_000, 10)})
    rng = random.Random(5)

    firsts = {
        learner.rank([("best", 1.0, "s"), ("worst", 1.0, "s")], rng, exploration=0.0)[0]
        for _ in range(2000)
    }

    assert firsts == {"best"}


def test_full_exploration_is_uniform() -> None:
    learner = _trained()
    rng = random.Random(9)
    draws = 20_000

    firsts = [learner.rank(CANDIDATES, rng, exploration=1.0)[0] for _ in range(draws)]

    for offer in ("a", "b", "c", "d"):
        assert firsts.count(offer) / draws == pytest.approx(0.25, abs=0.015)


def test_ranking_nothing_gives_nothing() -> None:
    assert Learner().rank([], random.Random(0)) == []


@pytest.mark.parametrize(
    ("candidates", "exploration", "message"),
    [
        ([("a", 1.0, "s"), ("a", 2.0, "t")], 0.05, "twice"),
        ([("a", -1.0, "s")], 0.05, "value"),
        ([("a", float("nan"), "s")], 0.05, "value"),
        ([("a", float("inf"), "s")], 0.05, "value"),
        ([("a", 1.0, "s")], -0.1, "exploration"),
        ([("a", 1.0, "s")], 1.5, "exploration"),
        ([("a", 1.0, "s")], float("nan"), "exploration"),
    ],
)
def test_bad_rankings_are_refused(
    candidates: list[tuple[str, float, str]], exploration: float, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Learner().rank(candidates, random.Random(0), exploration=exploration)


# -- the holdout ---------------------------------------------------------------------------


@pytest.mark.parametrize("share", [0.01, 0.1, 0.5, 0.9])
def test_the_holdout_holds_its_share(share: float) -> None:
    held = sum(in_holdout(s, "spring-coffee", share) for s in SHOPPERS)

    assert abs(held / len(SHOPPERS) - share) < 0.01


def test_the_holdout_is_sticky() -> None:
    first = [in_holdout(s, "spring-coffee", 0.2) for s in SHOPPERS[:5000]]
    again = [in_holdout(s, "spring-coffee", 0.2) for s in SHOPPERS[:5000]]

    assert first == again


def test_the_holdout_is_pinned_so_every_store_agrees() -> None:
    """The hash is part of the protocol between stores: these values must never change."""
    assert HOLDOUT_KEY == b"moments-holdout-v1"
    held = [s for s in SHOPPERS[:40] if in_holdout(s, "spring-coffee", 0.1)]

    assert held == PINNED_HOLDOUT


# Computed once from the documented construction (BLAKE2b, key HOLDOUT_KEY, 8-byte digest).
PINNED_HOLDOUT = [
    "shopper-8",
    "shopper-12",
    "shopper-13",
    "shopper-14",
    "shopper-15",
    "shopper-18",
    "shopper-25",
    "shopper-33",
    "shopper-34",
]


def test_holdouts_of_two_campaigns_are_independent() -> None:
    share = 0.2
    both = neither = 0
    for s in SHOPPERS:
        a, b = in_holdout(s, "spring-coffee", share), in_holdout(s, "summer-tea", share)
        both += a and b
        neither += not a and not b

    assert both / len(SHOPPERS) == pytest.approx(share**2, abs=0.005)
    assert neither / len(SHOPPERS) == pytest.approx((1 - share) ** 2, abs=0.01)


def test_campaign_and_shopper_do_not_run_together() -> None:
    # Without the length prefix these two would hash the same bytes.
    pairs = [("ab", "c"), ("a", "bc")]
    results = {
        tuple(in_holdout(f"{shopper}-{i}", campaign, 0.5) for i in range(64))
        for campaign, shopper in pairs
    }

    assert len(results) == 2


@given(
    st.text(min_size=1, max_size=40),
    st.text(min_size=1, max_size=40),
    st.floats(min_value=0.0, max_value=1.0),
    st.floats(min_value=0.0, max_value=1.0),
)
def test_a_larger_share_only_adds_shoppers(
    shopper: str, campaign: str, share: float, other: float
) -> None:
    small, large = sorted((share, other))
    if in_holdout(shopper, campaign, small):
        assert in_holdout(shopper, campaign, large)


@given(st.text(min_size=1, max_size=40), st.text(min_size=1, max_size=40))
def test_no_share_holds_nobody_and_all_holds_everybody(shopper: str, campaign: str) -> None:
    assert not in_holdout(shopper, campaign, 0.0)
    assert in_holdout(shopper, campaign, 1.0)


@pytest.mark.parametrize(
    ("shopper", "campaign", "share"),
    [
        ("s", "c", -0.01),
        ("s", "c", 1.01),
        ("s", "c", float("nan")),
        ("", "c", 0.5),
        ("s", "", 0.5),
    ],
)
def test_bad_holdouts_are_refused(shopper: str, campaign: str, share: float) -> None:
    with pytest.raises(ValueError, match=r"share|empty"):
        in_holdout(shopper, campaign, share)
