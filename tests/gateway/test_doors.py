"""Door counters: decoding and its drop reasons, and entries today across a counter restart
and across local midnight."""

from __future__ import annotations

import datetime as dt

import pytest

from gateway.doors import (
    DoorBook,
    DoorCount,
    DoorError,
    DoorLimits,
    encode_door_count,
    parse_door_count,
)

LIMITS = DoorLimits()
# 2026-11-20 00:00 UTC, a Friday: local midnight when utc_offset_h = 0.
MIDNIGHT = dt.datetime(2026, 11, 20, tzinfo=dt.UTC).timestamp()


def test_a_good_count_decodes() -> None:
    payload = b'{"v": 1, "door": "door-main", "t": 1795378600.5, "in": 412, "out": 398, "x": 1}'
    count = parse_door_count("door-main", payload, LIMITS)
    assert count == DoorCount("door-main", 412, 398, 1795378600.5)
    assert parse_door_count("door-main", encode_door_count(count), LIMITS) == count
    bare = parse_door_count("d", b'{"v": 1, "door": "d", "in": 0, "out": 0}', LIMITS)
    assert bare.t is None


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{" + b" " * 2000 + b"}", "oversized_payload"),
        (b"not json", "bad_json"),
        (b'{"v": 1, "door": "d", "in": 1, "out": 1', "bad_json"),
        (b"\xff\xfe", "bad_json"),
        (b'{"v": 1, "door": "d", "out": 1}', "bad_field"),
        (b'{"v": 1, "door": "d", "in": -1, "out": 1}', "bad_field"),
        (b'{"v": 1, "door": "d", "in": 1.5, "out": 1}', "bad_field"),
        (b'{"v": 1, "door": "d", "in": 1, "out": "1"}', "bad_field"),
        (b'{"v": 1, "door": "d", "in": 1, "out": 1, "t": -5}', "bad_field"),
        (b'{"v": 1, "door": "d/x", "in": 1, "out": 1}', "bad_field"),
        (b"[]", "bad_field"),
        (b'{"v": 2, "door": "d", "in": 1, "out": 1}', "unsupported_version"),
        (b'{"v": 1, "door": "other", "in": 1, "out": 1}', "door_mismatch"),
    ],
)
def test_each_drop_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(DoorError) as refused:
        parse_door_count("d", payload, LIMITS)
    assert refused.value.reason == reason


def _count(entered: int, left: int = 0, door: str = "door-main") -> DoorCount:
    return DoorCount(door, entered, left)


def test_each_count_gives_the_entries_since_the_doors_previous_one() -> None:
    book = DoorBook()
    assert not book.counted_today(MIDNIGHT + 3600)
    rises = [
        book.apply(_count(400, 390), MIDNIGHT + 8 * 3600),  # the first: a baseline
        book.apply(_count(410, 395), MIDNIGHT + 8 * 3600 + 10),
        book.apply(_count(430, 400), MIDNIGHT + 9 * 3600 + 5),
        book.apply(_count(5, 2, door="door-back"), MIDNIGHT + 9 * 3600 + 6),
        book.apply(_count(9, 2, door="door-back"), MIDNIGHT + 9 * 3600 + 7),  # doors apart
    ]
    assert rises == [0, 10, 20, 0, 4]
    assert book.counted_today(MIDNIGHT + 9 * 3600 + 30)


def test_a_counter_restart_is_a_new_baseline() -> None:
    book = DoorBook()
    t = MIDNIGHT + 10 * 3600
    rises = [book.apply(_count(n), t + i) for i, n in enumerate([100, 120, 3, 10, 0, 4])]
    assert rises == [0, 20, 0, 7, 0, 4]  # restarts after 120 and after 10
    assert book.apply(_count(4, 0), t + 11) == 0  # the same count again adds nothing
    assert book.apply(_count(4, 0), t + 12) == 0


def test_counted_today_follows_the_stores_local_midnight() -> None:
    book = DoorBook(utc_offset_h=2.0)  # local midnight is 22:00 UTC the day before
    local_midnight = MIDNIGHT - 2 * 3600
    book.apply(_count(100), local_midnight - 20)
    assert book.counted_today(local_midnight - 1)
    assert not book.counted_today(local_midnight + 1)  # yesterday's count is not today's
    assert book.apply(_count(150), local_midnight + 5) == 50  # counted today, as it arrived
    assert book.counted_today(local_midnight + 6)


def test_the_book_is_bounded() -> None:
    book = DoorBook(max_doors=1)
    assert book.apply(_count(1, door="a"), MIDNIGHT) == 0
    assert book.apply(_count(1, door="b"), MIDNIGHT) is None
    assert book.apply(_count(2, door="a"), MIDNIGHT + 1) == 1
    with pytest.raises(ValueError, match="max_doors"):
        DoorBook(max_doors=0)


def test_doors_that_have_not_counted_today_make_room() -> None:
    book = DoorBook(max_doors=1)
    assert book.apply(_count(1, door="invented"), MIDNIGHT - 3600) == 0  # yesterday
    assert book.apply(_count(5, door="door-main"), MIDNIGHT + 60) == 0  # the stale one goes
    assert book.counted_today(MIDNIGHT + 60)
