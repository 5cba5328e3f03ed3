"""The hybrid logical clock: its rules under an injected clock, and its persistence in a real
LMDB in a temporary folder."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.clock import ManualClock
from gateway.errors import PayloadError, StoreError
from gateway.store import Database, Writer
from gateway.store.hlc import (
    HLC_KEY,
    MAX_TIMESTAMP,
    PERSIST_EVERY_MS,
    RESUME_GAP_MS,
    TOLERANCE_MS,
    TRUSTED_AFTER_MS,
    HybridClock,
    from_ms,
    load_last,
    logical,
    persist_due,
    persist_op,
    physical_ms,
    resume,
    to_seconds,
)

WALL_S = 1_750_000_000.0  # 2025-06-15, after TRUSTED_AFTER_MS
WALL_MS = 1_750_000_000_000


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[tuple[Database, Writer]]:
    db = Database(tmp_path / "store", map_size=1 << 20)
    db.open()
    writer = Writer(db)
    writer.start()
    yield db, writer
    await writer.aclose()
    db.close()


def test_timestamp_layout() -> None:
    ts = from_ms(WALL_MS) | 7
    assert physical_ms(ts) == WALL_MS
    assert logical(ts) == 7
    assert to_seconds(ts) == WALL_S
    assert from_ms(0) == 0
    assert from_ms(1) == 1 << 16
    with pytest.raises(ValueError, match="out of range"):
        from_ms(-1)
    with pytest.raises(ValueError, match="out of range"):
        HybridClock(ManualClock(), last=MAX_TIMESTAMP + 1)


def test_local_events_follow_the_wall_clock_and_never_repeat() -> None:
    wall = ManualClock(WALL_S)
    hlc = HybridClock(wall)
    first = hlc.now()
    assert first == from_ms(WALL_MS)
    assert hlc.now() == first + 1  # same millisecond: the counter moves
    assert hlc.last == first + 1
    wall.advance(0.005)
    assert hlc.now() == from_ms(WALL_MS + 5)  # wall ahead again: counter back to 0


def test_a_wall_clock_going_backwards_only_moves_the_counter() -> None:
    wall = ManualClock(WALL_S)
    hlc = HybridClock(wall)
    before = hlc.now()
    wall.advance(-3600.0)
    after = [hlc.now() for _ in range(3)]
    assert after == [before + 1, before + 2, before + 3]
    wall.advance(3600.0 + 1.0)
    assert hlc.now() == from_ms(WALL_MS + 1000)


def test_logical_overflow_carries_into_the_physical_part() -> None:
    wall = ManualClock(WALL_S)
    hlc = HybridClock(wall, last=from_ms(WALL_MS) | 0xFFFF)
    ts = hlc.now()
    assert ts == from_ms(WALL_MS + 1)
    assert (physical_ms(ts), logical(ts)) == (WALL_MS + 1, 0)
    assert hlc.now() == from_ms(WALL_MS + 1) + 1


def test_update_follows_the_hlc_receive_rule() -> None:
    wall = ManualClock(WALL_S)
    hlc = HybridClock(wall, last=from_ms(WALL_MS - 10) | 4)
    # The wall clock is ahead of both: wall time, counter 0.
    assert hlc.update(from_ms(WALL_MS - 5) | 9) == from_ms(WALL_MS)
    # The remote is ahead of both: its physical part, its counter plus one.
    assert hlc.update(from_ms(WALL_MS + 50) | 3) == from_ms(WALL_MS + 50) | 4
    # The local clock is ahead of the remote and the wall: the local counter plus one.
    assert hlc.update(from_ms(WALL_MS + 20) | 99) == from_ms(WALL_MS + 50) | 5
    # Same physical part on both sides: the larger counter plus one.
    assert hlc.update(from_ms(WALL_MS + 50) | 40) == from_ms(WALL_MS + 50) | 41
    assert hlc.update(from_ms(WALL_MS + 50) | 2) == from_ms(WALL_MS + 50) | 42
    # A remote counter at its maximum carries.
    assert hlc.update(from_ms(WALL_MS + 60) | 0xFFFF) == from_ms(WALL_MS + 61)
    assert hlc.now() == from_ms(WALL_MS + 61) | 1


@pytest.mark.parametrize("remote", [-1, MAX_TIMESTAMP + 1])
def test_update_refuses_a_timestamp_out_of_range(remote: int) -> None:
    hlc = HybridClock(ManualClock(WALL_S))
    with pytest.raises(PayloadError, match="hlc_out_of_range"):
        hlc.update(remote)
    assert hlc.last == 0


def test_a_pi_that_booted_in_1970_is_untrusted_until_its_clock_is_set() -> None:
    wall = ManualClock(0.0)
    hlc = HybridClock(wall)
    assert not hlc.trusted
    ts, trusted = hlc.stamp()
    assert (ts, trusted) == (1, False)  # ordered, but its time is meaningless
    wall.advance(WALL_S)  # NTP sets the clock
    assert hlc.trusted
    ts, trusted = hlc.stamp()
    assert (ts, trusted) == (from_ms(WALL_MS), True)


def test_trust_boundary_is_the_configured_instant() -> None:
    wall = ManualClock(TRUSTED_AFTER_MS / 1000 - 0.001)
    hlc = HybridClock(wall)
    assert not hlc.stamp()[1]
    wall.advance(0.001)
    assert hlc.stamp()[1]
    assert not HybridClock(ManualClock(WALL_S), trusted_after_ms=WALL_MS + 1).trusted


def test_a_clock_far_behind_the_last_timestamp_is_untrusted() -> None:
    # The Pi kept last year's time from its last shutdown: sane-looking, but behind the store.
    persisted = from_ms(WALL_MS)
    wall = ManualClock(WALL_S - 30 * 86400)
    hlc = HybridClock(wall, last=persisted)
    ts, trusted = hlc.stamp()
    assert (ts, trusted) == (persisted + 1, False)
    wall.advance(30 * 86400 - TOLERANCE_MS / 1000)  # within the tolerance: sane again
    assert hlc.stamp() == (persisted + 2, True)
    wall.advance(TOLERANCE_MS / 1000 + 1.0)  # caught up: stamps follow the wall clock again
    assert hlc.stamp() == (from_ms(WALL_MS + 1000), True)
    # NTP steps the clock back by more than the tolerance: untrusted while it catches up.
    wall.advance(-600.0)
    assert not hlc.trusted
    assert hlc.stamp() == (from_ms(WALL_MS + 1000) + 1, False)


def test_persist_due_counts_issued_time() -> None:
    persisted = from_ms(WALL_MS)
    assert not persist_due(persisted + 0xFFFF, persisted)
    assert not persist_due(from_ms(WALL_MS + PERSIST_EVERY_MS - 1), persisted)
    assert persist_due(from_ms(WALL_MS + PERSIST_EVERY_MS), persisted)
    assert persist_due(from_ms(WALL_MS + 10), persisted, every_ms=10)


async def test_persistence_round_trip_never_moves_backwards(
    store: tuple[Database, Writer],
) -> None:
    db, writer = store
    assert load_last(db) == 0
    ts = from_ms(WALL_MS) | 3
    assert await writer.write(persist_op(db, ts)) == ts
    assert load_last(db) == ts
    assert await writer.write(persist_op(db, ts - 1)) == ts  # an older persist is a no-op
    assert load_last(db) == ts
    # Persists submitted together, in any order: the largest wins.
    stamps = [from_ms(WALL_MS + n) for n in (5, 9, 2, 7)]
    results = await asyncio.gather(*(writer.write(persist_op(db, s)) for s in stamps))
    assert results[1] == from_ms(WALL_MS + 9)
    assert load_last(db) == from_ms(WALL_MS + 9)
    with db.env.begin(db=db.handle("meta")) as txn:
        assert txn.get(HLC_KEY) == str(from_ms(WALL_MS + 9)).encode()
    with pytest.raises(ValueError, match="out of range"):
        persist_op(db, -1)


async def test_a_damaged_persisted_timestamp_is_reported(store: tuple[Database, Writer]) -> None:
    db, writer = store
    with db.env.begin(write=True) as txn:
        txn.put(HLC_KEY, b"soon", db=db.handle("meta"))
    with pytest.raises(StoreError, match="not a timestamp"):
        load_last(db)
    with pytest.raises(StoreError, match="not a timestamp"):
        await writer.write(persist_op(db, 1))


async def test_resume_never_reissues_after_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "store"
    wall = ManualClock(WALL_S)
    issued: list[int] = []
    db = Database(path, map_size=1 << 20)
    db.open()
    writer = Writer(db)
    writer.start()
    hlc = resume(db, wall)
    assert hlc.last == 0
    persisted = 0
    for _ in range(40):  # 40 x 30 ms of events, persisting as the gateway does
        for _ in range(100):
            issued.append(hlc.now())
        if persist_due(hlc.last, persisted):
            persisted = await writer.write(persist_op(db, hlc.last))
        wall.advance(0.03)
    issued.append(hlc.update(from_ms(WALL_MS + 1100) | 8))  # HQ ahead, not persisted: power cut
    assert physical_ms(issued[-1]) - physical_ms(persisted) < RESUME_GAP_MS
    await writer.aclose()
    db.close()

    # The Pi comes back in 1970, then NTP sets it back to (a little before) where it was.
    wall = ManualClock(0.0)
    db = Database(path, map_size=1 << 20)
    db.open()
    try:
        hlc = resume(db, wall)
        assert physical_ms(hlc.last) == physical_ms(persisted) + RESUME_GAP_MS
        after, trusted = hlc.stamp()
        assert after > max(issued)
        assert not trusted
        wall.advance(WALL_S)
        assert hlc.now() > after
    finally:
        db.close()


# ----- the invariant -----

_remote_near = st.builds(
    lambda dms, counter: from_ms(WALL_MS + dms) | counter,
    st.integers(-2_000, 2_000),
    st.sampled_from([0, 1, 0xFFFE, 0xFFFF]),
)
_ops = st.lists(
    st.one_of(
        st.tuples(st.just("now"), st.just(0)),
        st.tuples(st.just("stamp"), st.just(0)),
        st.tuples(st.just("update"), _remote_near),
        st.tuples(st.just("update"), st.integers(0, 1 << 62)),
        st.tuples(st.just("jump_ms"), st.integers(-(10**9), 10**9)),
        st.tuples(st.just("jump_ms"), st.integers(-3, 3)),
    ),
    max_size=200,
)


@settings(max_examples=300, deadline=None)
@given(ops=_ops, start=st.sampled_from([0.0, WALL_S]))
def test_issued_timestamps_strictly_increase(ops: list[tuple[str, int]], start: float) -> None:
    wall = ManualClock(start)
    hlc = HybridClock(wall)
    previous = hlc.last
    for op, value in ops:
        if op == "jump_ms":
            wall.advance(value / 1000)
            continue
        if op == "now":
            ts = hlc.now()
        elif op == "stamp":
            ts, _trusted = hlc.stamp()
        else:
            ts = hlc.update(value)
            assert ts > value
        assert ts > previous
        assert ts == hlc.last
        assert ts >= from_ms(max(int(wall.now() * 1000), 0))  # never behind the wall clock
        previous = ts
