"""RecentCounter: how many distinct anonymous devices a zone heard in the last window."""

from __future__ import annotations

from beacons.anonymous import RecentCounter


def test_counts_distinct_devices_within_the_window_and_forgets_older_ones() -> None:
    counter = RecentCounter(window_s=120.0, key_period_s=3600.0)
    counter.observe("coffee", b"a", 10.0)
    counter.observe("coffee", b"a", 20.0)  # the same device again
    counter.observe("coffee", b"b", 30.0)
    counter.observe("bakery", b"c", 30.0)
    assert counter.counts(40.0) == {"coffee": 2, "bakery": 1}
    assert counter.counts(145.0) == {"coffee": 1, "bakery": 1}  # a (20 s) is out of the window
    assert counter.counts(200.0) == {"coffee": 0, "bakery": 0}


def test_a_new_key_period_starts_again_and_never_matches_old_digests() -> None:
    keys = iter([b"\x01" * 32, b"\x02" * 32])
    counter = RecentCounter(window_s=120.0, key_period_s=3600.0, entropy=lambda n: next(keys))
    counter.observe("coffee", b"a", 3590.0)
    assert counter.counts(3595.0) == {"coffee": 1}
    counter.observe("coffee", b"a", 3605.0)  # the next hour: a new key, old digests gone
    assert counter.counts(3606.0) == {"coffee": 1}
