"""The outbox in a real LMDB: sequences, order, the disk budget, one transaction with a change."""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import StoreError
from gateway.store import Database, ProfileRecord, Writer
from gateway.sync.envelope import decode_event
from gateway.sync.outbox import (
    PROTECTED_TYPES,
    depth,
    enforce_budget_op,
    enqueue_in,
    enqueue_op,
    merge_ranges,
    oldest_age,
    outbox_bytes,
    pending,
    remove_op,
    remove_ranges_op,
)
from tests.support.store import opened, run

STORE = "store-1"
AT = 1_795_378_600_000


def enqueue(db: Database, kind: str, *, perishable: bool, at: int = AT, **body: Any) -> int:
    seq: int = run(db, enqueue_op(db, STORE, kind, dict(body), at, perishable=perishable))
    return seq


def entry_bytes(db: Database) -> int:
    with db.env.begin(db=db.handle("outbox")) as txn:
        return sum(len(k) + len(v) for k, v in txn.cursor())


def test_sequences_are_monotonic_and_pending_is_in_order(db: Database) -> None:
    assert [enqueue(db, "visit", perishable=True, n=i) for i in range(5)] == [1, 2, 3, 4, 5]
    entries = pending(db, 10)
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5]
    first = entries[0]
    assert first.topic == f"{STORE}/events/visit"
    assert first.perishable
    event = decode_event(first.payload)
    assert (event.store, event.seq, event.type, event.at, event.body) == (
        STORE,
        1,
        "visit",
        AT,
        {"n": 0},
    )
    assert [e.seq for e in pending(db, 2)] == [1, 2]
    assert [e.seq for e in pending(db, 2, after=3)] == [4, 5]
    assert pending(db, 0) == []


def test_removed_sequences_are_never_reused(db: Database) -> None:
    for _ in range(3):
        enqueue(db, "impression", perishable=True)
    assert run(db, remove_op(db, 1, 2, 3, 99)) == 3
    assert depth(db) == 0
    assert outbox_bytes(db) == 0
    assert enqueue(db, "redemption", perishable=False) == 4
    assert [e.seq for e in pending(db, 10)] == [4]
    assert not pending(db, 10)[0].perishable


def test_depth_bytes_and_oldest_age(db: Database) -> None:
    assert depth(db) == 0
    assert oldest_age(db, AT / 1000) is None
    enqueue(db, "visit", perishable=True, at=AT)
    enqueue(db, "visit", perishable=True, at=AT + 5_000)
    assert depth(db) == 2
    assert oldest_age(db, AT / 1000 + 12.5) == pytest.approx(12.5)
    assert outbox_bytes(db) == entry_bytes(db) > 0


def test_budget_drops_perishable_oldest_first_and_never_consent_or_erasure(db: Database) -> None:
    plan = [
        ("visit", True),
        ("consent", False),
        ("impression", True),
        ("erasure", False),
        ("redemption", False),
        ("decision", True),
        ("visit", True),
    ]
    for kind, perishable in plan:
        enqueue(db, kind, perishable=perishable, pad="x" * 200)
    size = outbox_bytes(db) // len(plan)  # every entry is about the same size here
    # Room for all but about two entries: the two oldest perishable ones go.
    dropped = run(db, enforce_budget_op(db, outbox_bytes(db) - size - size // 2))
    assert dropped == 2
    assert [e.seq for e in pending(db, 10)] == [2, 4, 5, 6, 7]
    # Nothing fits: every perishable entry goes, consent, erasure and redemption stay.
    assert run(db, enforce_budget_op(db, 0)) == 2
    kept = [(e.seq, decode_event(e.payload).type) for e in pending(db, 10)]
    assert kept == [(2, "consent"), (4, "erasure"), (5, "redemption")]
    assert outbox_bytes(db) == entry_bytes(db)
    assert run(db, enforce_budget_op(db, 0)) == 0
    # Under budget: nothing to do.
    assert run(db, enforce_budget_op(db, 1 << 20)) == 0


@pytest.mark.parametrize("kind", sorted(PROTECTED_TYPES))
def test_consent_and_erasure_cannot_be_perishable(db: Database, kind: str) -> None:
    with pytest.raises(ValueError, match="never perishable"):
        enqueue_op(db, STORE, kind, {}, AT, perishable=True)


def test_bad_type_store_or_size_is_refused(db: Database) -> None:
    with pytest.raises(ValueError, match="unknown event type"):
        enqueue_op(db, STORE, "gossip", {}, AT, perishable=False)
    with pytest.raises(ValueError, match="store id"):
        enqueue_op(db, "store/1", "visit", {}, AT, perishable=False)
    with pytest.raises(ValueError, match="bytes >"):
        enqueue(db, "visit", perishable=True, pad="x" * 70_000)
    assert depth(db) == 0
    assert enqueue(db, "visit", perishable=True) == 1


async def test_enqueue_commits_with_the_change_it_reports(db: Database, writer: Writer) -> None:
    profile = ProfileRecord(shopper_id="s-1", first_name="Ada")

    def change(txn: Any) -> int:
        db.put_op([profile])(txn)
        return enqueue_in(txn, db, STORE, "visit", {"shopper": "s-1"}, AT, perishable=True)

    assert await writer.write(change) == 1
    assert db.profile("s-1") == profile
    assert [e.seq for e in pending(db, 10)] == [1]


async def test_a_failing_enqueue_takes_the_change_with_it(db: Database, writer: Writer) -> None:
    profile = ProfileRecord(shopper_id="s-2", first_name="Grace")

    def change(txn: Any) -> int:
        db.put_op([profile])(txn)
        # A body that cannot be encoded fails inside the same transaction, after the put.
        return enqueue_in(txn, db, STORE, "visit", {"bad": object()}, AT, perishable=True)

    with pytest.raises(StoreError):
        await writer.write(change)
    assert db.profile("s-2") is None
    assert depth(db) == 0
    assert outbox_bytes(db) == 0

    def change_then_fail(txn: Any) -> int:
        db.put_op([profile])(txn)
        enqueue_in(txn, db, STORE, "consent", {"shopper": "s-2"}, AT, perishable=False)
        raise StoreError("the rest of the change failed")

    with pytest.raises(StoreError, match="rest of the change"):
        await writer.write(change_then_fail)
    assert db.profile("s-2") is None
    assert depth(db) == 0
    # The sequence counter rolled back with everything else.
    assert await writer.write(enqueue_op(db, STORE, "visit", {}, AT, perishable=True)) == 1


def test_a_corrupt_counter_is_reported(db: Database) -> None:
    with db.env.begin(write=True) as txn:
        txn.put(b"outbox_seq", b"12", db=db.handle("sync"))
    with pytest.raises(StoreError, match="outbox_seq"):
        enqueue(db, "visit", perishable=True)


_KINDS = st.sampled_from(["visit", "impression", "redemption", "consent", "erasure", "decision"])


@settings(max_examples=40, deadline=None)
@given(
    entries=st.lists(st.tuples(_KINDS, st.booleans(), st.integers(0, 300)), max_size=30),
    budget=st.integers(0, 8_000),
)
def test_budget_invariants(entries: list[tuple[str, bool, int]], budget: int) -> None:
    with tempfile.TemporaryDirectory() as folder, opened(Path(folder)) as db:
        perishable_seqs: list[int] = []
        kept_seqs: list[int] = []
        for kind, wants, pad in entries:
            perishable = wants and kind not in PROTECTED_TYPES
            seq = enqueue(db, kind, perishable=perishable, pad="x" * pad)
            (perishable_seqs if perishable else kept_seqs).append(seq)
        dropped = run(db, enforce_budget_op(db, budget))
        left = [e.seq for e in pending(db, 100)]
        # Only perishable entries go, and they go oldest first.
        assert set(kept_seqs) <= set(left)
        assert [s for s in perishable_seqs if s not in left] == perishable_seqs[:dropped]
        # Under budget, or nothing perishable left to drop.
        assert outbox_bytes(db) <= budget or not set(perishable_seqs) & set(left)
        assert outbox_bytes(db) == entry_bytes(db)
        assert left == sorted(left)


def test_an_unreadable_layout_is_refused(db: Database) -> None:
    enqueue(db, "visit", perishable=True)
    with db.env.begin(write=True, db=db.handle("outbox")) as txn:
        key, value = next(iter(txn.cursor()))
        txn.put(key, b"\x09" + value[1:])
    with pytest.raises(StoreError, match="layout"):
        pending(db, 1)


# ----- HQ's receipts -----


def test_merge_ranges_sorts_merges_and_drops_nonsense() -> None:
    assert merge_ranges([(5, 9), (1, 2), (3, 4), (8, 12), (20, 20), (0, 3), (7, 6)]) == [
        (1, 12),
        (20, 20),
    ]
    assert merge_ranges([]) == []


@given(st.lists(st.tuples(st.integers(-2, 40), st.integers(-2, 40)), max_size=12))
def test_merge_ranges_covers_exactly_the_valid_sequences(ranges: list[tuple[int, int]]) -> None:
    merged = merge_ranges(ranges)
    want = {n for first, last in ranges if 1 <= first <= last for n in range(first, last + 1)}
    assert {n for first, last in merged for n in range(first, last + 1)} == want
    assert all(a[1] + 1 < b[0] for a, b in itertools.pairwise(merged))


def test_remove_ranges_deletes_what_they_cover_and_keeps_the_byte_count(db: Database) -> None:
    for i in range(10):
        enqueue(db, "consent" if i % 3 == 0 else "visit", perishable=i % 3 != 0, n=i)
    assert run(db, remove_ranges_op(db, [(2, 4), (4, 5), (9, 2**62)])) == 6
    assert [e.seq for e in pending(db, 20)] == [1, 6, 7, 8]
    assert outbox_bytes(db) == entry_bytes(db)
    assert run(db, remove_ranges_op(db, [(2, 5), (100, 200)])) == 0  # already gone: no-op
    assert run(db, remove_ranges_op(db, [(1, 8)])) == 4
    assert depth(db) == 0 and outbox_bytes(db) == 0
    assert enqueue(db, "visit", perishable=True) == 11  # sequences never go back
