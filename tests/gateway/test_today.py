"""Today's store-wide tallies: counted once, kept across a restart, read back per hour."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from beacons.presence import ZoneDwelling, ZoneEntered
from gateway.consents import STORE_COUNTER, counter
from gateway.store import Database, Writer
from gateway.store.hlc import from_ms
from gateway.sync.apply import erase_op
from gateway.today import METRICS, Today, hour_keys

# 2026-11-23 10:15 UTC; 11:15 in a store at UTC+1
T0 = dt.datetime(2026, 11, 23, 10, 15, tzinfo=dt.UTC).timestamp()


class Ticks:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _today(db: Database, writer: Writer | None, ticks: Ticks | None = None) -> Today:
    return Today(db=db, writer=writer, utc_offset_h=1.0, clock=ticks or Ticks())


def test_the_day_and_hour_are_the_stores_local_ones() -> None:
    assert hour_keys(T0, 1.0) == ("day:2026-11-23", 11)
    assert hour_keys(T0, -11.0) == ("day:2026-11-22", 23)


async def test_counts_land_in_their_local_hour(db: Database, writer: Writer) -> None:
    today = _today(db, writer)

    def bumps(txn: Any) -> None:
        today.bump_in(txn, "shown", T0)
        today.bump_in(txn, "shown", T0 + 3600)
        today.bump_in(txn, "redeemed:control", T0)

    await writer.write(bumps)
    figures = today.figures(T0 + 3600)
    assert figures.day == "day:2026-11-23"
    assert figures.hourly["shown"][11:13] == (1, 1) and figures.total("shown") == 2
    assert figures.total("redeemed:control") == 1
    assert set(figures.hourly) == set(METRICS)
    assert all(len(series) == 24 for series in figures.hourly.values())
    # kept where the hourly sweep finds it: under the store's pseudo shopper, a day window
    assert counter(db, STORE_COUNTER, "today:shown:h11", "day:2026-11-23") == 1


def test_an_unknown_metric_is_refused(db: Database) -> None:
    with pytest.raises(ValueError, match="metric"):
        _today(db, None).bump_in(object(), "visits", T0)


async def test_a_shopper_is_recognised_once_a_day_even_across_a_restart(
    db: Database, writer: Writer
) -> None:
    today = _today(db, writer)
    for zone, t in (("entrance", T0), ("coffee", T0 + 60), ("entrance", T0 + 4000)):
        today.on_presence(ZoneEntered("alice", zone, t, -60.0))
    today.on_presence(ZoneEntered("bob", "coffee", T0 + 10, -60.0))
    today.on_presence(ZoneDwelling("carol", "coffee", T0, 30.0))  # not an entry: not counted
    await today.drain()
    assert today.figures(T0 + 4000).total("recognised") == 2

    again = _today(db, writer)  # a restart: memory empty, the store remembers
    again.on_presence(ZoneEntered("alice", "bakery", T0 + 5000, -60.0))
    await again.drain()
    assert again.figures(T0 + 5000).total("recognised") == 2

    tomorrow = T0 + 86_400
    again.on_presence(ZoneEntered("alice", "bakery", tomorrow, -60.0))
    await again.drain()
    assert again.figures(tomorrow).total("recognised") == 1
    assert again.figures(tomorrow).day == "day:2026-11-24"


async def test_an_erased_shopper_is_not_counted(db: Database, writer: Writer) -> None:
    await writer.write(erase_op(db, "alice", hlc=from_ms(int(T0 * 1000)), now=T0))
    today = _today(db, writer)
    assert await writer.write(today.recognise_op("alice", T0)) is False
    today.on_presence(ZoneEntered("alice", "coffee", T0, -60.0))
    await today.drain()
    assert today.figures(T0).total("recognised") == 0


async def test_the_store_is_read_at_most_once_a_second(db: Database, writer: Writer) -> None:
    ticks = Ticks()
    today = _today(db, writer, ticks)
    assert today.figures(T0).total("shown") == 0
    await writer.write(lambda txn: today.bump_in(txn, "shown", T0))
    assert today.figures(T0).total("shown") == 0  # the reading of this second
    ticks.t = 1.0
    assert today.figures(T0).total("shown") == 1
    # a recognition clears the reading at once: the dashboard shows it on its next tick
    today.on_presence(ZoneEntered("alice", "coffee", T0, -60.0))
    await today.drain()
    assert today.figures(T0).total("recognised") == 1


async def test_without_a_running_writer_nothing_is_recognised_and_nothing_breaks(
    db: Database,
) -> None:
    stopped = Writer(db)  # never started: submit refuses
    today = _today(db, stopped)
    today.on_presence(ZoneEntered("alice", "coffee", T0, -60.0))
    await today.drain()
    assert today.figures(T0).total("recognised") == 0
    _today(db, None).on_presence(ZoneEntered("alice", "coffee", T0, -60.0))  # tools, tests


async def test_a_shopper_forgotten_leaves_todays_set_and_is_not_counted_again(
    db: Database, writer: Writer
) -> None:
    today = _today(db, writer)
    today.on_presence(ZoneEntered("alice", "coffee", T0, -60.0))
    await today.drain()
    assert today.seen_today() == 1
    today.forget("alice")  # presence withdrawn, or erased
    assert today.seen_today() == 0
    today.on_presence(ZoneEntered("alice", "coffee", T0 + 60, -60.0))  # consent back
    await today.drain()
    assert today.figures(T0 + 60).total("recognised") == 1


async def test_door_entries_are_kept_in_the_store_across_a_restart(
    db: Database, writer: Writer
) -> None:
    await writer.write(_today(db, writer).entries_op(7, T0))
    await writer.write(_today(db, writer).entries_op(3, T0 + 3600))
    again = _today(db, writer)  # a restart: only the store remembers
    figures = again.figures(T0 + 3600)
    assert figures.total("door_entries") == 10
    assert figures.hourly["door_entries"][11:13] == (7, 3)
