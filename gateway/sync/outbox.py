"""The outbox: events for HQ, kept in LMDB until the HQ broker acknowledges them (sans-asyncio).

An event is enqueued by a write operation that can run inside the same transaction as the
change it reports (``enqueue_in``), so the change and its event commit together or not at
all. Each gets the next outbox sequence, kept in the ``sync`` database under ``outbox_seq``
and moved in the same transaction; ``(store, seq)`` is the event's idempotency key at HQ.

Layout (``outbox`` database), one entry per event::

    key    seq, 8 bytes big-endian (so a cursor walks the outbox in order)
    value  header (struct ``>BBQQH``): layout version, flags, ``at`` (ms since the epoch),
           expires_at (ms, 0 for none), topic length; then the topic under the prefix
           (``{store}/events/{type}``); then the encoded :class:`~gateway.sync.envelope.Event`

flags: bit 0 perishable (may be dropped over budget, carries an MQTT message expiry).
``sync/outbox_bytes`` counts the bytes of keys and values, moved in the same transaction as
every insert and delete, so the disk budget is checked without a scan. Consent changes and
erasures are never perishable and never dropped, whatever the budget says.

Reads are short read transactions on the caller's thread; writes are operations for the
store's single :class:`~gateway.store.writer.Writer`.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final, NamedTuple, cast

import lmdb

from gateway.errors import StoreError
from gateway.store.database import OUTBOX_SEQ_KEY, Database
from gateway.sync.envelope import EVENT_TYPES, Event, EventType, encode_event

__all__ = [
    "MAX_EVENT_BYTES",
    "PROTECTED_TYPES",
    "PendingEvent",
    "depth",
    "enforce_budget_op",
    "enqueue_in",
    "enqueue_op",
    "merge_ranges",
    "oldest_age",
    "outbox_bytes",
    "pending",
    "remove_op",
    "remove_ranges_op",
    "remove_where_in",
]

PROTECTED_TYPES: Final = frozenset({"consent", "erasure", "rejection"})
MAX_EVENT_BYTES: Final = 1 << 16
MAX_PENDING: Final = 4096

_SEQ_KEY: Final = OUTBOX_SEQ_KEY
_BYTES_KEY: Final = b"outbox_bytes"
_LAYOUT: Final = 1
_PERISHABLE: Final = 0x01
_HEADER: Final = struct.Struct(">BBQQH")
_U64: Final = struct.Struct(">Q")
_STORE_ID: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class PendingEvent(NamedTuple):
    """One outbox entry ready to publish; ``topic`` is relative to the topic prefix."""

    seq: int
    topic: str
    payload: bytes
    perishable: bool
    expires_at: int  # ms since the epoch, 0 for none


# ----- writes: functions of a write transaction -----


def enqueue_in(  # noqa: PLR0917 - enqueue_op's arguments after the transaction
    txn: Any,
    db: Database,
    store_id: str,
    event_type: str,
    body: dict[str, Any],
    at: int,
    *,
    perishable: bool,
    expires_at: int = 0,
) -> int:
    """Append an event inside ``txn`` (the caller's transaction) and return its sequence.

    ``at`` and ``expires_at`` are milliseconds since the epoch. Raises ``ValueError`` for an
    unknown type, a perishable consent or erasure, or an oversized event; ``TypeError`` when
    the body cannot be encoded. Either aborts the caller's whole transaction in the writer.

    A perishable (analytics) event naming a shopper erased by the time it commits keeps no
    name: the shopper's id was read before the erasure, whose transaction already took the
    events naming them, so this one goes anonymous instead of outliving the erasure.
    """
    kind = _checked(store_id, event_type, perishable)
    shopper = body.get("shopper")
    if perishable and isinstance(shopper, str) and db.erased_in(txn, shopper):
        body = {k: v for k, v in body.items() if k != "shopper"}
    sync = db.handle("sync")
    seq = _read_u64(txn, _SEQ_KEY, sync) + 1
    payload = encode_event(Event(store=store_id, seq=seq, type=kind, at=at, body=body))
    topic = f"{store_id}/events/{kind}".encode()
    if len(payload) > MAX_EVENT_BYTES:
        raise ValueError(f"{kind} event of {len(payload)} bytes > {MAX_EVENT_BYTES}")
    flags = _PERISHABLE if perishable else 0
    header = _HEADER.pack(_LAYOUT, flags, at, expires_at if perishable else 0, len(topic))
    key = _U64.pack(seq)
    value = header + topic + payload
    if not txn.put(key, value, db=db.handle("outbox"), overwrite=False):
        raise StoreError(f"outbox sequence {seq} is already taken: the counter went back")
    txn.put(_SEQ_KEY, _U64.pack(seq), db=sync)
    _add_bytes(txn, sync, len(key) + len(value))
    return seq


def enqueue_op(
    db: Database,
    store_id: str,
    event_type: str,
    body: dict[str, Any],
    at: int,
    *,
    perishable: bool,
    expires_at: int = 0,
) -> Callable[[Any], int]:
    """A write operation that enqueues one event and returns its sequence."""
    _checked(store_id, event_type, perishable)

    def enqueue(txn: Any) -> int:
        return enqueue_in(
            txn, db, store_id, event_type, body, at, perishable=perishable, expires_at=expires_at
        )

    return enqueue


def remove_op(db: Database, *seqs: int) -> Callable[[Any], int]:
    """A write operation that deletes acknowledged entries; returns how many were there."""
    keys = [_U64.pack(seq) for seq in seqs]

    def remove(txn: Any) -> int:
        outbox, sync = db.handle("outbox"), db.handle("sync")
        removed = freed = 0
        for key in keys:
            value = txn.pop(key, db=outbox)
            if value is not None:
                removed += 1
                freed += len(key) + len(value)
        if freed:
            _add_bytes(txn, sync, -freed)
        return removed

    return remove


def remove_where_in(txn: Any, db: Database, predicate: Callable[[PendingEvent], bool]) -> int:
    """Delete, inside ``txn`` (the caller's transaction), every entry for which ``predicate``
    is true, whatever its type, and keep ``sync/outbox_bytes`` right; returns how many went.
    For an erasure, which must take a shopper's queued events with it; walks the whole
    outbox."""
    outbox, sync = db.handle("outbox"), db.handle("sync")
    doomed: list[bytes] = []
    freed = 0
    with txn.cursor(db=outbox) as cursor:
        for key, value in cursor:
            if predicate(_entry(bytes(key), bytes(value))):
                doomed.append(bytes(key))
                freed += len(key) + len(value)
    for key in doomed:
        txn.delete(key, db=outbox)
    if freed:
        _add_bytes(txn, sync, -freed)
    return len(doomed)


def merge_ranges(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Valid inclusive ranges sorted and merged where they overlap or touch."""
    out: list[tuple[int, int]] = []
    for first, last in sorted(r for r in ranges if 1 <= r[0] <= r[1]):
        if out and first <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], last))
        else:
            out.append((first, last))
    return out


def remove_ranges_op(db: Database, ranges: Sequence[tuple[int, int]]) -> Callable[[Any], int]:
    """A write operation that deletes every entry within the inclusive ``[first, last]``
    ranges (HQ's receipt); returns how many were there. Walks only what the outbox holds, so
    a wide range costs no more than the entries it covers."""
    spans = merge_ranges(ranges)

    def remove(txn: Any) -> int:
        outbox, sync = db.handle("outbox"), db.handle("sync")
        doomed: list[bytes] = []
        freed = 0
        with txn.cursor(db=outbox) as cursor:
            for first, last in spans:
                found = cursor.set_range(_U64.pack(first))
                while found:
                    key = bytes(cursor.key())
                    if _U64.unpack(key)[0] > last:
                        break
                    doomed.append(key)
                    freed += len(key) + len(cursor.value())
                    found = cursor.next()
        for key in doomed:
            txn.delete(key, db=outbox)
        if freed:
            _add_bytes(txn, sync, -freed)
        return len(doomed)

    return remove


def enforce_budget_op(db: Database, max_bytes: int) -> Callable[[Any], int]:
    """A write operation that drops perishable entries, oldest first, until the outbox holds
    at most ``max_bytes``; returns how many it dropped. Other entries are never dropped, so
    the outbox may stay over budget when what remains is not perishable."""

    def enforce(txn: Any) -> int:
        outbox, sync = db.handle("outbox"), db.handle("sync")
        used = _read_u64(txn, _BYTES_KEY, sync)
        if used <= max_bytes:
            return 0
        dropped = freed = 0
        doomed: list[bytes] = []
        with txn.cursor(db=outbox) as cursor:
            for key, value in cursor:
                if used - freed <= max_bytes:
                    break
                if value[1] & _PERISHABLE:
                    doomed.append(bytes(key))
                    freed += len(key) + len(value)
        for key in doomed:
            txn.delete(key, db=outbox)
            dropped += 1
        if freed:
            _add_bytes(txn, sync, -freed)
        return dropped

    return enforce


# ----- reads: short read transactions -----


def pending(db: Database, limit: int, *, after: int = 0) -> list[PendingEvent]:
    """Up to ``limit`` entries (at most ``MAX_PENDING``) with a sequence above ``after``,
    oldest first."""
    limit = max(0, min(limit, MAX_PENDING))
    out: list[PendingEvent] = []
    if limit == 0:
        return out
    try:
        with db.env.begin(db=db.handle("outbox"), buffers=False) as txn, txn.cursor() as cursor:
            found = cursor.set_range(_U64.pack(after + 1))
            while found and len(out) < limit:
                out.append(_entry(cursor.key(), cursor.value()))
                found = cursor.next()
    except lmdb.Error as exc:
        raise StoreError(f"read of the outbox failed: {exc}") from exc
    return out


def depth(db: Database) -> int:
    """How many events wait in the outbox."""
    try:
        with db.env.begin(buffers=False) as txn:
            return int(txn.stat(db.handle("outbox"))["entries"])
    except lmdb.Error as exc:
        raise StoreError(f"read of the outbox failed: {exc}") from exc


def outbox_bytes(db: Database) -> int:
    """Bytes of keys and values in the outbox (what the budget counts)."""
    try:
        with db.env.begin(buffers=False) as txn:
            return _read_u64(txn, _BYTES_KEY, db.handle("sync"))
    except lmdb.Error as exc:
        raise StoreError(f"read of the outbox failed: {exc}") from exc


def oldest_age(db: Database, now: float) -> float | None:
    """Seconds between the oldest waiting event's ``at`` and ``now``; ``None`` when empty."""
    try:
        with db.env.begin(db=db.handle("outbox"), buffers=False) as txn, txn.cursor() as cursor:
            if not cursor.first():
                return None
            value = cursor.value()
    except lmdb.Error as exc:
        raise StoreError(f"read of the outbox failed: {exc}") from exc
    _layout, _flags, at, _expires, _n = _header(value)
    return max(0.0, now - at / 1000.0)


# ----- helpers -----


def _checked(store_id: str, event_type: str, perishable: bool) -> EventType:
    if not _STORE_ID.match(store_id):
        raise ValueError(f"store id {store_id!r} is not a valid topic level")
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event_type!r}; expected one of {EVENT_TYPES}")
    if perishable and event_type in PROTECTED_TYPES:
        raise ValueError(f"{event_type} events are never perishable")
    return cast(EventType, event_type)


def _read_u64(txn: Any, key: bytes, handle: Any) -> int:
    raw = txn.get(key, db=handle)
    if raw is None:
        return 0
    if len(raw) != _U64.size:
        raise StoreError(f"sync/{key.decode()} is {len(raw)} bytes, expected {_U64.size}")
    value: int = _U64.unpack(raw)[0]
    return value


def _add_bytes(txn: Any, sync: Any, delta: int) -> None:
    total = max(0, _read_u64(txn, _BYTES_KEY, sync) + delta)
    txn.put(_BYTES_KEY, _U64.pack(total), db=sync)


def _header(value: bytes) -> tuple[int, int, int, int, int]:
    if len(value) < _HEADER.size:
        raise StoreError(f"outbox entry of {len(value)} bytes is shorter than its header")
    layout, flags, at, expires, n = _HEADER.unpack_from(value)
    if layout != _LAYOUT:
        raise StoreError(f"outbox entry layout {layout}; this gateway reads {_LAYOUT}")
    return layout, flags, at, expires, n


def _entry(key: bytes, value: bytes) -> PendingEvent:
    _layout, flags, _at, expires, n = _header(value)
    start = _HEADER.size
    topic = value[start : start + n].decode()
    return PendingEvent(
        seq=_U64.unpack(key)[0],
        topic=topic,
        payload=value[start + n :],
        perishable=bool(flags & _PERISHABLE),
        expires_at=expires,
    )
