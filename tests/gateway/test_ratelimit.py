"""The per-key token bucket: bursts, refill, the wait it reports, and its memory bound."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.ratelimit import RateLimiter

T0 = 1000.0


def test_a_burst_is_allowed_then_refused() -> None:
    limiter = RateLimiter(rate_per_s=2.0, burst=5)

    assert [limiter.check("a", T0) for _ in range(5)] == [None] * 5
    wait = limiter.check("a", T0)

    assert wait == pytest.approx(0.5)  # one token at 2 per second


def test_keys_have_their_own_buckets() -> None:
    limiter = RateLimiter(rate_per_s=1.0, burst=1)

    assert limiter.check("a", T0) is None
    assert limiter.check("a", T0) is not None
    assert limiter.check("b", T0) is None


def test_refill_at_the_rate_up_to_the_burst() -> None:
    limiter = RateLimiter(rate_per_s=2.0, burst=3)
    for _ in range(3):
        assert limiter.check("a", T0) is None

    assert limiter.check("a", T0 + 0.25) == pytest.approx(0.25)  # half a token so far
    assert limiter.check("a", T0 + 0.5) is None  # one token after 0.5 s
    assert limiter.check("a", T0 + 0.5) is not None

    # A long pause refills to the burst, not beyond.
    later = T0 + 3600
    assert [limiter.check("a", later) for _ in range(3)] == [None] * 3
    assert limiter.check("a", later) is not None


def test_the_wait_is_exact_and_a_refused_check_takes_nothing() -> None:
    limiter = RateLimiter(rate_per_s=0.1, burst=1)  # one request per 10 s
    assert limiter.check("a", T0) is None

    assert limiter.check("a", T0 + 1) == pytest.approx(9.0)
    assert limiter.check("a", T0 + 4) == pytest.approx(6.0)
    assert limiter.check("a", T0 + 9.99) == pytest.approx(0.01)
    assert limiter.check("a", T0 + 10) is None


def test_waiting_the_reported_time_is_enough() -> None:
    limiter = RateLimiter(rate_per_s=3.0, burst=2)
    now = T0
    allowed = 0
    while allowed < 50:
        wait = limiter.check("a", now)
        if wait is None:
            allowed += 1
        else:
            assert wait > 0
            now += wait
            assert limiter.check("a", now) is None
            allowed += 1
    assert now - T0 == pytest.approx((50 - 2) / 3.0)


def test_a_clock_going_backwards_gives_nothing_away() -> None:
    limiter = RateLimiter(rate_per_s=1.0, burst=1)
    assert limiter.check("a", T0) is None

    assert limiter.check("a", T0 - 100) == pytest.approx(101.0)
    assert limiter.check("a", T0 + 0.5) == pytest.approx(0.5)
    assert limiter.check("a", T0 + 1) is None


def test_the_least_recently_used_key_is_forgotten() -> None:
    limiter = RateLimiter(rate_per_s=1.0, burst=1, max_keys=3)
    for key in ("a", "b", "c"):
        assert limiter.check(key, T0) is None
    assert limiter.check("a", T0) is not None  # "a" is now the most recently used

    assert limiter.check("d", T0) is None

    assert len(limiter) == 3
    assert "b" not in limiter
    assert all(key in limiter for key in ("a", "c", "d"))
    assert limiter.check("a", T0) is not None  # still remembered, still empty
    assert limiter.check("b", T0) is None  # forgotten: a full bucket again


def test_memory_stays_bounded_under_many_keys() -> None:
    limiter = RateLimiter(rate_per_s=1.0, burst=2, max_keys=100)
    for i in range(10_000):
        limiter.check(f"client-{i}", T0 + i / 1000)

    assert len(limiter) == 100
    assert "client-9999" in limiter
    assert "client-9899" not in limiter


@pytest.mark.parametrize(
    ("rate", "burst", "max_keys"),
    [(0.0, 1, 1), (-1.0, 1, 1), (math.inf, 1, 1), (math.nan, 1, 1), (1.0, 0, 1), (1.0, 1, 0)],
)
def test_bad_parameters_are_refused(rate: float, burst: int, max_keys: int) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each names its own parameter
        RateLimiter(rate, burst, max_keys=max_keys)


@given(
    rate=st.floats(0.01, 100),
    burst=st.integers(1, 20),
    gaps=st.lists(st.floats(0, 5), min_size=1, max_size=200),
)
def test_never_more_than_the_burst_plus_what_the_rate_refills(
    rate: float, burst: int, gaps: list[float]
) -> None:
    limiter = RateLimiter(rate, burst)
    now = T0
    allowed = 0
    for gap in gaps:
        now += gap
        wait = limiter.check("k", now)
        if wait is None:
            allowed += 1
        else:
            assert 0 < wait <= 1 / rate + 1e-9
    assert allowed <= burst + (now - T0) * rate + 1e-6


@given(keys=st.lists(st.text(max_size=3), max_size=300), max_keys=st.integers(1, 20))
def test_the_key_count_never_exceeds_the_bound(keys: list[str], max_keys: int) -> None:
    limiter = RateLimiter(1.0, 1, max_keys=max_keys)
    for i, key in enumerate(keys):
        limiter.check(key, T0 + i)
        assert len(limiter) <= max_keys
        assert key in limiter
