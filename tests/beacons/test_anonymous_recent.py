"""RecentCounter: how many distinct anonymous devices stand in each zone now."""

from __future__ import annotations

from beacons.anonymous import RecentCounter


def test_counts_distinct_devices_within_the_window_and_forgets_older_ones() -> None:
    counter = RecentCounter(window_s=120.0, key_period_s=3600.0)
    counter.observe("coffee", b"a", 10.0, -60)
    counter.observe("coffee", b"a", 20.0, -61)  # the same device again
    counter.observe("coffee", b"b", 30.0, -70)
    counter.observe("bakery", b"c", 30.0, -65)
    assert counter.counts(40.0) == {"coffee": 2, "bakery": 1}
    assert counter.counts(145.0) == {"coffee": 1, "bakery": 1}  # a (20 s) is out of the window
    assert counter.counts(200.0) == {}


def test_a_device_heard_by_several_zones_counts_once_where_it_is_loudest() -> None:
    counter = RecentCounter()
    counter.observe("coffee", b"a", 10.0, -62)
    counter.observe("bakery", b"a", 10.2, -80)  # the bakery's node hears it too, faintly
    counter.observe("dairy", b"a", 10.4, -75)
    assert counter.counts(11.0) == {"coffee": 1}
    counter.observe("bakery", b"a", 12.0, -58)  # now louder in the bakery: it walked over
    assert counter.counts(13.0) == {"bakery": 1}
    counter.observe("coffee", b"a", 30.0, -85)  # the bakery's hold has lapsed (10 s)
    assert counter.counts(31.0) == {"coffee": 1}


def test_a_new_key_period_starts_again_and_never_matches_old_digests() -> None:
    keys = iter([b"\x01" * 32, b"\x02" * 32])
    counter = RecentCounter(window_s=120.0, key_period_s=3600.0, entropy=lambda n: next(keys))
    counter.observe("coffee", b"a", 3590.0, -60)
    assert counter.counts(3595.0) == {"coffee": 1}
    counter.observe("coffee", b"a", 3605.0, -60)  # the next hour: a new key, old digests gone
    assert counter.counts(3606.0) == {"coffee": 1}


def test_memory_is_bounded_and_quiet_devices_make_room() -> None:
    counter = RecentCounter(window_s=120.0, max_devices=3)
    for i in range(5):
        counter.observe("coffee", bytes([i]) * 6, 0.0)
    assert counter.counts(1.0) == {"coffee": 3}  # the 4th and 5th found no room
    counter.observe("coffee", b"\x09" * 6, 200.0)  # the first three have gone quiet
    assert counter.counts(200.0) == {"coffee": 1}
