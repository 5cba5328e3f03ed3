"""Applying HQ's signed streams to the store, sans-I/O: wire bytes in, LMDB write operations out.

:meth:`StreamApplier.plan` verifies a message (:func:`~gateway.sync.envelope.open_envelope`)
and parses its body for its stream; a message that fails either is rejected whole, counted by
reason, and nothing of it is applied. Otherwise the :class:`Outcome` carries an
:class:`ApplyOp`: a function of one write transaction for the store's
:class:`~gateway.store.writer.Writer`, which reads the stream's :class:`SyncState` in that same
transaction, applies or not, records the new state and returns the result (:data:`OpResult`).
The caller hands the result back to :meth:`StreamApplier.committed` once the write is durable;
only then does the in-memory :class:`~gateway.sync.envelope.Keyring` change, and the caller
gets the resync request to send, if any::

    outcome = applier.plan(wire)
    if outcome.op is not None:
        result = await writer.write(outcome.op)
        request = applier.committed(outcome, result)
        if request is not None:
            ...publish encode_resync(request)...

Messages of one stream are planned and written one at a time (a key added by one message
must be in the keyring before the message it signs is verified).

Deltas (``last`` is the stream's last applied sequence)::

    seq <= last                   duplicate     nothing written
    stream stopped by a full      stopped       nothing written (waits for a snapshot)
      resync, or staging a
      snapshot it asked for
    seq == last + 1               applied       records written (merge rules), last = seq
    seq >  last + 1, running      gap           stream stopped, seen = seq: send a resync
    seq >  last + 1, stopped      stopped       already waiting for the resync

While a stream is stopped by a gap, the missing deltas (``last + 1`` onwards, a resync's
answer) still apply in order; the stream runs again once ``last`` reaches the highest
sequence seen. :meth:`StreamApplier.resync_request` asks for everything after ``last``
(after 0 when a full resync was forced: HQ answers with a snapshot).

Snapshots. Their messages are sequenced among themselves: ``snapshot_begin`` at some ``b``,
then each ``snapshot_item`` at the next sequence, then ``snapshot_end``. A begin is accepted
while the stream is stopped (the answer to a resync, whatever its sequence) or when its
sequence is after ``last`` (HQ pushing a snapshot in line); a begin at or before ``last`` on a
running stream, a message at a sequence of the snapshot in progress already taken, and any
message of the snapshot applied last are duplicates. An item or end that names no snapshot in
progress, or another one, is rejected (``snapshot_out_of_order``; nothing written). One that
skips a sequence, or a delta interrupting a snapshot pushed in line, aborts the snapshot
(staging cleared, stream stopped: ``gap``). At the end the records staged must number the
begin's ``count`` (else ``snapshot_mismatch``: aborted, stopped, resync). Then, in one
transaction: the live records of the stream are deleted, the staged ones copied in (with the
merge rules and tombstones), staging cleared, ``last`` set to the end's ``watermark`` (which
is authoritative, whatever the snapshot's own sequences) and the stream runs again (if a
delta past the watermark had already been seen, :meth:`StreamApplier.committed` returns a
resync request for what follows the watermark). Staged items live in the ``staging``
database under ``{snapshot}/{stream}/{key}``, so a reader sees the old stream whole until the
end commits, and the new one whole after.

What each stream writes:

==============  ===================================================================
``offers``      ``OfferRecord`` put/delete in ``offers`` (HQ's replaces the store's)
``templates``   ``TemplateRecord`` put/delete in ``templates`` (same); a template that
                fails :func:`gateway.render.check_template` is refused like an
                offer whose audience does not compile (the previous version stays,
                HQ gets a ``rejection`` event)
``profiles``    ``ProfileRecord`` merged with :func:`~gateway.sync.merge.merge_profile`
``consents``    ``ConsentRecord`` merged with :func:`~gateway.sync.merge.merge_consent`,
                each purpose it changed appended to the consent ledger (channel ``hq``);
                an erased one erases the shopper (``gateway.consents.forget_in`` too)
                and keeps a tombstone
``keys``        ``HqKeyRecord`` in ``keyring``; delete revokes; a revoked key stays
                revoked; a keys snapshot revokes the known keys it leaves out
``config``      the body, as JSON, in ``meta/hq_config``
==============  ===================================================================

Puts of an erased shopper's profile or consent are skipped while the tombstone is kept
(counted as ``skipped``).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import msgspec

from gateway.clock import Clock, SystemClock
from gateway.consents import forget_in, ledger_hq_in
from gateway.pricing import ComeNow, to_cents
from gateway.render import check_template
from gateway.rules import RuleError, compile_rule
from gateway.store import codec
from gateway.store.database import (
    HQ_CONFIG_KEY,
    Database,
    shopper_keys,
    table_and_key,
    tombstone_key,
)
from gateway.store.records import (
    ConsentRecord,
    HqKeyRecord,
    IdentityRecord,
    OfferRecord,
    ProfileRecord,
    SyncState,
    TemplateRecord,
    Tombstone,
)
from gateway.store.writer import WriteOp
from gateway.sync.bodies import LIVE_TABLE as _LIVE_TABLE
from gateway.sync.bodies import Begin as _Begin
from gateway.sync.bodies import Body as _Body
from gateway.sync.bodies import Delta as _Delta
from gateway.sync.bodies import End as _End
from gateway.sync.bodies import Items as _Items
from gateway.sync.bodies import erasure_hlc as _erasure_hlc
from gateway.sync.bodies import parse_body as _parse
from gateway.sync.envelope import (
    Keyring,
    Kind,
    ResyncRequest,
    Stream,
    SyncError,
    open_envelope,
)
from gateway.sync.merge import (
    ERASABLE_STREAMS,
    TOMBSTONE_RETENTION_S,
    expired_tombstones,
    merge_consent,
    merge_profile,
    merge_tombstone,
)
from gateway.sync.outbox import enqueue_in

__all__ = [
    "RESYNC_RESULTS",
    "ApplyOp",
    "OpResult",
    "Outcome",
    "StreamApplier",
    "Sweep",
    "SyncCounts",
    "erase_op",
    "restore_keyring",
    "sweep_tombstones_op",
]

log = logging.getLogger(__name__)
_json = msgspec.json.Encoder()

OpResult = Literal[
    "applied",
    "duplicate",
    "gap",
    "stopped",
    "staged",
    "snapshot_applied",
    "snapshot_out_of_order",
    "snapshot_mismatch",
]
RESYNC_RESULTS: Final = frozenset({"gap", "snapshot_mismatch"})
"""Results after which the caller sends :meth:`StreamApplier.resync_request`."""
_REJECTED_RESULTS: Final = frozenset({"snapshot_out_of_order", "snapshot_mismatch"})
_LOG_EVERY_S: Final = 60.0


# ----- the write operation -----


class _Txn:
    """One write transaction seen through the store's tables (used inside an op only)."""

    __slots__ = ("db", "txn")

    def __init__(self, db: Database, txn: Any) -> None:
        self.db = db
        self.txn = txn

    def get(self, table: str, key: bytes) -> bytes | None:
        value: bytes | None = self.txn.get(key, db=self.db.handle(table))
        return value

    def put(self, record: codec.Record) -> None:
        table, key = table_and_key(record)
        self.txn.put(key, codec.encode(record), db=self.db.handle(table))

    def delete(self, table: str, key: bytes) -> None:
        self.txn.delete(key, db=self.db.handle(table))

    def scan(self, table: str, prefix: bytes = b"") -> list[tuple[bytes, bytes]]:
        cursor = self.txn.cursor(db=self.db.handle(table))
        if prefix and not cursor.set_range(prefix):
            return []
        rows: list[tuple[bytes, bytes]] = []
        for key, value in cursor.iternext():
            if not bytes(key).startswith(prefix):
                break
            rows.append((bytes(key), bytes(value)))
        return rows

    def clear(self, table: str) -> None:
        self.txn.drop(self.db.handle(table), delete=False)

    def state(self, stream: str) -> SyncState:
        raw = self.get("sync", stream.encode())
        return SyncState(stream=stream) if raw is None else codec.decode_as(SyncState, raw)

    def erase(self, shopper_id: str, hlc: int, now: float) -> None:
        """Delete everything personal of a shopper and keep (or refresh) its tombstone."""
        for table, key in shopper_keys(shopper_id):
            self.delete(table, key)
        for ident_key, value in self.scan("identities"):
            if codec.decode_as(IdentityRecord, value).shopper_id == shopper_id:
                self.delete("identities", ident_key)
        tombstone = Tombstone(id=shopper_id, hlc=hlc, erased_at=now)
        raw = self.get("tombstones", tombstone_key("shopper", shopper_id))
        if raw is not None:
            tombstone = merge_tombstone(codec.decode_as(Tombstone, raw), tombstone)
        self.put(tombstone)
        self.db.bump_identity_generation(self.txn)


def _staging_prefix(snapshot: str, stream: str) -> bytes:
    return f"{snapshot}/{stream}/".encode()


class ApplyOp:
    """The write operation of one planned message. Call it with the writer's transaction; it
    returns the :data:`OpResult` and leaves, for :meth:`StreamApplier.committed`, the keyring
    changes and skipped records of its last run (it may run again if the group is retried)."""

    __slots__ = (
        "_body",
        "_db",
        "_issued_at",
        "_now",
        "_store_id",
        "behind",
        "key_changes",
        "refused",
        "seq",
        "skipped",
        "stream",
    )

    def __init__(
        self,
        db: Database,
        stream: Stream,
        seq: int,
        body: _Body,
        *,
        now: float,
        issued_at: int,
        store_id: str = "",
    ) -> None:
        self._db = db
        self._store_id = store_id
        self.stream: Stream = stream
        self.seq = seq
        self._body = body
        self._now = now
        self._issued_at = issued_at
        self.key_changes: list[tuple[str, bytes | None]] = []
        self.skipped: Counter[str] = Counter()
        self.refused: list[tuple[str, str, int, str]] = []  # stream, id, version, why
        self.behind = False

    def __call__(self, txn: Any) -> OpResult:
        self.key_changes = []
        self.skipped = Counter()
        self.refused = []
        self.behind = False
        w = _Txn(self._db, txn)
        state = w.state(self.stream)
        match self._body:
            case _Delta():
                result, new = self._delta(w, state, self._body)
            case _Begin():
                result, new = self._begin(w, state, self._body)
            case _Items():
                result, new = self._item(w, state, self._body)
            case _End():
                result, new = self._end(w, state, self._body)
        if new != state:
            w.put(new)
        return result

    # ----- sequencing -----

    def _delta(self, w: _Txn, s: SyncState, body: _Delta) -> tuple[OpResult, SyncState]:
        seq = self.seq
        if seq <= s.last:
            return "duplicate", s
        seen = max(s.seen, seq)
        if s.snapshot and not s.stopped:
            # A delta inside a snapshot pushed in line: some of the snapshot was lost.
            self._clear_staging(w)
            return "gap", _abort(s, stopped=True, seen=seen)
        if s.stopped and (s.full or s.snapshot or seq > s.last + 1):
            return "stopped", msgspec.structs.replace(s, seen=seen)
        if seq > s.last + 1:
            return "gap", msgspec.structs.replace(s, stopped=True, seen=seq)
        self._apply_delta(w, body)
        if s.stopped and seq >= s.seen:
            return "applied", msgspec.structs.replace(s, last=seq, stopped=False, seen=0)
        return "applied", msgspec.structs.replace(s, last=seq)

    def _begin(self, w: _Txn, s: SyncState, body: _Begin) -> tuple[OpResult, SyncState]:
        seq = self.seq
        if (
            (s.snapshot == body.snapshot and seq < s.snapshot_next)
            or (s.done_snapshot == body.snapshot and seq <= s.done_seq)
            or seq <= s.last  # also while stopped: a late answer to an older request
        ):
            return "duplicate", s
        self._clear_staging(w)
        return "staged", msgspec.structs.replace(
            s,
            snapshot=body.snapshot,
            snapshot_next=seq + 1,
            snapshot_count=body.count,
            snapshot_staged=0,
        )

    def _continues(self, s: SyncState, snapshot: str) -> OpResult | None:
        """None when a snapshot item or end may proceed, else why not."""
        if s.snapshot != snapshot:
            if s.done_snapshot == snapshot and self.seq <= s.done_seq:
                return "duplicate"
            return "snapshot_out_of_order"
        if self.seq < s.snapshot_next:
            return "duplicate"
        if self.seq > s.snapshot_next:
            return "gap"
        return None

    def _item(self, w: _Txn, s: SyncState, body: _Items) -> tuple[OpResult, SyncState]:
        refused = self._continues(s, body.snapshot)
        if refused == "gap":
            self._clear_staging(w)
            return "gap", _abort(s, stopped=True, seen=s.seen)
        if refused is not None:
            return refused, s
        prefix = _staging_prefix(body.snapshot, self.stream)
        for n, item in enumerate(body.items, start=s.snapshot_staged):
            if isinstance(item, bytes):
                w.txn.put(prefix + b"%08d" % n, item, db=self._db.handle("staging"))
            else:
                key = table_and_key(item)[1]
                w.txn.put(prefix + key, codec.encode(item), db=self._db.handle("staging"))
        return "staged", msgspec.structs.replace(
            s,
            snapshot_next=s.snapshot_next + 1,
            snapshot_staged=s.snapshot_staged + len(body.items),
        )

    def _end(self, w: _Txn, s: SyncState, body: _End) -> tuple[OpResult, SyncState]:
        refused = self._continues(s, body.snapshot)
        if refused == "gap":
            self._clear_staging(w)
            return "gap", _abort(s, stopped=True, seen=s.seen)
        if refused is not None:
            return refused, s
        if s.snapshot_staged != s.snapshot_count:
            self._clear_staging(w)
            return "snapshot_mismatch", _abort(s, stopped=True, seen=s.seen)
        staged = w.scan("staging", _staging_prefix(body.snapshot, self.stream))
        self._swap(w, [value for _key, value in staged])
        self._clear_staging(w)
        self.behind = s.seen > body.watermark
        return "snapshot_applied", SyncState(
            stream=self.stream, last=body.watermark, done_snapshot=body.snapshot, done_seq=self.seq
        )

    def _clear_staging(self, w: _Txn) -> None:
        """Drop every staged item of this stream, whatever snapshot staged it."""
        stream = self.stream.encode()
        for key, _value in w.scan("staging"):
            parts = key.split(b"/", 2)
            if len(parts) == 3 and parts[1] == stream:
                w.delete("staging", key)

    # ----- writing records -----

    def _apply_delta(self, w: _Txn, body: _Delta) -> None:
        if self.stream == "config":
            w.txn.put(HQ_CONFIG_KEY, body.raw, db=self._db.handle("meta"))
            return
        if body.op == "put":
            for item in body.items:
                assert not isinstance(item, bytes)
                self._put(w, item)
            return
        table = _LIVE_TABLE[self.stream]
        for id_ in body.ids:
            key = id_.encode()
            if self.stream == "keys":
                raw = w.get("keyring", key)
                known = (
                    HqKeyRecord(key_id=id_) if raw is None else codec.decode_as(HqKeyRecord, raw)
                )
                self._put(w, msgspec.structs.replace(known, status="revoked"))
                continue
            w.delete(table, key)
            if self.stream == "consents":
                self._db.bump_identity_generation(w.txn)

    def _put(self, w: _Txn, record: codec.Record) -> None:
        match record:
            case ProfileRecord():
                if self._db.erased_in(w.txn, record.shopper_id):
                    self.skipped["erased"] += 1
                    return
                raw = w.get("profiles", record.shopper_id.encode())
                profile = None if raw is None else codec.decode_as(ProfileRecord, raw)
                w.put(merge_profile(profile, record))
            case ConsentRecord():
                if self._db.erased_in(w.txn, record.shopper_id):
                    self.skipped["erased"] += 1
                    return
                raw = w.get("consents", record.shopper_id.encode())
                consent = record if raw is None else codec.decode_as(ConsentRecord, raw)
                merged = merge_consent(consent, record)
                if merged.erased:
                    w.erase(record.shopper_id, _erasure_hlc(record, self._issued_at), self._now)
                    forget_in(w.txn, self._db, record.shopper_id)
                    return
                w.put(merged)
                # HQ's decisions that changed the store's state join the consent ledger.
                ledger_hq_in(w.txn, self._db, None if raw is None else consent, merged)
                self._db.bump_identity_generation(w.txn)
            case HqKeyRecord():
                raw = w.get("keyring", record.key_id.encode())
                if raw is not None and codec.decode_as(HqKeyRecord, raw).status == "revoked":
                    if record.status == "active":
                        self.skipped["revoked_key"] += 1
                    return
                w.put(record)
                self.key_changes.append(
                    (record.key_id, record.public_key if record.status == "active" else None)
                )
            case OfferRecord():
                why = _offer_refusal(record)
                if why is not None:
                    # The version the store had stays.
                    self._refuse(w, "offers", record.offer_id, record.version, why)
                    return
                w.put(record)
            case TemplateRecord():
                why = check_template(record.source)
                if why is not None:
                    self._refuse(w, "templates", record.template_id, record.version, why)
                    return
                w.put(record)
            case _:
                w.put(record)

    def _refuse(self, w: _Txn, stream: Stream, record_id: str, version: int, why: str) -> None:
        """A record that cannot be used (an offer, a template) is not applied; HQ hears why
        (a ``rejection`` event in the same transaction), and the stream moves on."""
        self.skipped[f"invalid_{stream.removesuffix('s')}"] += 1
        self.refused.append((stream, record_id, version, why))
        if self._store_id:
            body = {"stream": stream, "id": record_id, "version": version, "why": why}
            at_ms = round(self._now * 1000)
            enqueue_in(w.txn, self._db, self._store_id, "rejection", body, at_ms, perishable=False)

    def _swap(self, w: _Txn, staged: Sequence[bytes]) -> None:
        """Replace the live records of the stream by the staged ones, in ``w``'s transaction."""
        if self.stream == "config":
            records = [msgspec.json.decode(raw) for raw in staged]
            document = _json.encode({"op": "put", "records": records})
            w.txn.put(HQ_CONFIG_KEY, document, db=self._db.handle("meta"))
            return
        new = [codec.decode(raw) for raw in staged]
        if self.stream == "keys":
            self._swap_keys(w, new)
            return
        table = _LIVE_TABLE[self.stream]
        if self.stream in ERASABLE_STREAMS:
            # Delete what the snapshot leaves out; what it lists is merged with the live
            # record (store-owned profile fields, consent rules), as a delta would be.
            listed = {table_and_key(record)[1] for record in new}
            for key, _value in w.scan(table):
                if key not in listed and not self._store_owned(w, key):
                    w.delete(table, key)
            if self.stream == "consents":
                self._db.bump_identity_generation(w.txn)
        elif self.stream in ("offers", "templates"):
            # A record the snapshot brings in an unusable version keeps its live version.
            unusable = {
                table_and_key(r)[1]
                for r in new
                if (isinstance(r, OfferRecord) and _offer_refusal(r) is not None)
                or (isinstance(r, TemplateRecord) and check_template(r.source) is not None)
            }
            for key, _value in w.scan(table):
                if key not in unusable:
                    w.delete(table, key)
        else:
            w.clear(table)
        for record in new:
            self._put(w, record)

    def _store_owned(self, w: _Txn, shopper: bytes) -> bool:
        """Whether a shopper opted in on this store and HQ may not know them yet (a snapshot
        older than their registration must not delete them). Asked only of the records a
        snapshot leaves out, so a snapshot that lists everyone reads no profile for it."""
        raw = w.get("profiles", shopper)
        return raw is not None and codec.decode_as(ProfileRecord, raw).origin == "store"

    def _swap_keys(self, w: _Txn, new: Sequence[codec.Record]) -> None:
        old = [codec.decode_as(HqKeyRecord, raw) for _key, raw in w.scan("keyring")]
        listed: set[str] = set()
        for record in new:
            if not isinstance(record, HqKeyRecord):
                raise TypeError(f"unexpected {type(record).__name__} staged for keys")
            listed.add(record.key_id)
            self._put(w, record)  # a revoked key stays revoked
        for before in old:
            if before.key_id in listed or before.status == "revoked":
                continue
            # A key HQ no longer lists is no longer trusted.
            w.put(msgspec.structs.replace(before, status="revoked"))
            self.key_changes.append((before.key_id, None))


def _offer_refusal(offer: OfferRecord) -> str | None:
    """Why an offer from HQ cannot be used (its audience rule does not compile, or its
    come-now terms cannot make a fair price), or None."""
    try:
        compile_rule(offer.audience)
    except RuleError as exc:
        return str(exc)
    terms = offer.come_now
    if terms is not None:
        regular = offer.regular_price if offer.regular_price is not None else offer.price
        if regular is None:
            return "come_now: a come-now discount needs the regular price"
        try:
            ComeNow(
                to_cents(regular, offer.currency),
                terms.max_discount_pct,
                terms.full_for_s,
                terms.gone_after_s,
            )
        except ValueError as exc:
            return f"come_now: {exc}"
    return None


def _abort(s: SyncState, *, stopped: bool, seen: int) -> SyncState:
    return msgspec.structs.replace(
        s,
        stopped=stopped,
        seen=seen,
        snapshot="",
        snapshot_next=0,
        snapshot_count=0,
        snapshot_staged=0,
    )


# ----- the applier -----


@dataclass(frozen=True, slots=True)
class Outcome:
    """What :meth:`StreamApplier.plan` made of a message: an op to write, or a rejection."""

    stream: str
    kind: Kind | None
    seq: int
    op: ApplyOp | None
    reason: str = ""
    detail: str = ""
    issued_at: int = 0  # HQ's clock when it issued the message, ms (0: not said)

    @property
    def rejected(self) -> bool:
        return self.op is None


@dataclass(frozen=True, slots=True)
class SyncCounts:
    """Counters for metrics, keyed by ``(stream, label)`` (stream ``"unknown"`` when the
    message could not be read). ``messages``: every message by fate, an :data:`OpResult` or
    ``"rejected"``; ``rejected``: the rejections by reason; ``skipped``: records of applied
    messages that were not written (``erased``: a tombstone is kept; ``revoked_key``: a
    revoked key offered again)."""

    messages: Mapping[tuple[str, str], int]
    rejected: Mapping[tuple[str, str], int]
    skipped: Mapping[tuple[str, str], int]


@dataclass(slots=True)
class _Counters:
    messages: Counter[tuple[str, str]] = field(default_factory=Counter)
    rejected: Counter[tuple[str, str]] = field(default_factory=Counter)
    skipped: Counter[tuple[str, str]] = field(default_factory=Counter)


class StreamApplier:
    """Plans the application of HQ's messages for one store (see the module notes).

    Used from the event-loop thread; its ops run on the writer's thread and report back
    through :meth:`committed`."""

    def __init__(
        self,
        db: Database,
        store_id: str,
        keyring: Keyring,
        *,
        clock: Clock | None = None,
    ) -> None:
        self._db = db
        self._store_id = store_id
        self._keyring = keyring
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._counters = _Counters()
        self._logged: dict[str, float] = {}

    def plan(self, wire: bytes) -> Outcome:
        """Verify and parse ``wire``; the outcome's op, if any, is for the writer."""
        try:
            message = open_envelope(wire, self._keyring, self._store_id)
        except SyncError as exc:
            return self._reject("unknown", None, 0, exc)
        try:
            body = _parse(message)
        except SyncError as exc:
            return self._reject(message.stream, message.kind, message.seq, exc)
        op = ApplyOp(
            self._db,
            message.stream,
            message.seq,
            body,
            now=self._clock.now(),
            issued_at=message.issued_at,
            store_id=self._store_id,
        )
        return Outcome(
            stream=message.stream,
            kind=message.kind,
            seq=message.seq,
            op=op,
            issued_at=message.issued_at,
        )

    def committed(self, outcome: Outcome, result: OpResult) -> ResyncRequest | None:
        """Account for ``outcome``'s op, durably committed with ``result``: count it, apply
        its keyring changes, and return the resync request to send, if one is due."""
        op = outcome.op
        if op is None:
            raise ValueError("a rejected outcome has nothing to commit")
        stream = op.stream
        if result in _REJECTED_RESULTS:
            self._counters.messages[stream, "rejected"] += 1
            self._counters.rejected[stream, result] += 1
            self._log_rejection(stream, result, f"seq {op.seq}")
        else:
            self._counters.messages[stream, result] += 1
        for why, n in op.skipped.items():
            self._counters.skipped[stream, why] += n
        for refused_stream, record_id, version, why in op.refused:
            log.warning(
                "%s record from HQ refused; the previous version stays",
                refused_stream,
                extra={"stream": refused_stream, "id": record_id, "version": version, "why": why},
            )
        for key_id, public in op.key_changes:
            if public is None:
                self._keyring.revoke(key_id)
            elif self._keyring.status(key_id) != "revoked":
                self._keyring.add(key_id, public)
        if result in RESYNC_RESULTS or op.behind:
            return self.resync_request(stream)
        return None

    def resync_request(self, stream: Stream) -> ResyncRequest:
        """Ask HQ for ``stream`` after its last applied sequence (after 0 for a full resync)."""
        state = self._db.sync_state(stream)
        since = 0 if state.full else state.last
        return ResyncRequest(store=self._store_id, stream=stream, since=since)

    def counts(self) -> SyncCounts:
        return SyncCounts(
            messages=dict(self._counters.messages),
            rejected=dict(self._counters.rejected),
            skipped=dict(self._counters.skipped),
        )

    def _reject(self, stream: str, kind: Kind | None, seq: int, exc: SyncError) -> Outcome:
        self._counters.messages[stream, "rejected"] += 1
        self._counters.rejected[stream, exc.reason] += 1
        self._log_rejection(stream, exc.reason, exc.detail)
        return Outcome(
            stream=stream, kind=kind, seq=seq, op=None, reason=exc.reason, detail=exc.detail
        )

    def _log_rejection(self, stream: str, reason: str, detail: str) -> None:
        now = self._clock.monotonic()
        last = self._logged.get(reason)
        if last is not None and now - last < _LOG_EVERY_S:
            return
        self._logged[reason] = now
        log.warning(
            "HQ sync message rejected: %s",
            reason,
            extra={"stream": stream, "reason": reason, "detail": detail},
        )


def restore_keyring(keyring: Keyring, records: Sequence[HqKeyRecord]) -> None:
    """Bring a keyring bootstrapped from configuration up to what the ``keys`` stream said
    (``Database.keyring_records()``): revocations hold even for a configured key."""
    for record in records:
        if record.status == "revoked":
            keyring.revoke(record.key_id)
        elif keyring.status(record.key_id) != "revoked":
            keyring.add(record.key_id, record.public_key)


# ----- erasures and tombstones -----


@dataclass(frozen=True, slots=True)
class Sweep:
    """What :func:`sweep_tombstones_op` did: tombstones dropped and the streams it stopped
    for a full resync (send :meth:`StreamApplier.resync_request` for each)."""

    dropped: tuple[Tombstone, ...]
    resync: tuple[Stream, ...]

    @property
    def full_resync(self) -> bool:
        return bool(self.resync)


def sweep_tombstones_op(
    db: Database, now: float, *, retention_s: float = TOMBSTONE_RETENTION_S
) -> WriteOp[Sweep]:
    """A write op dropping the tombstones kept longer than ``retention_s`` and, if any went,
    stopping the shopper streams for a full resync (a snapshot), in the same transaction."""

    def sweep(txn: Any) -> Sweep:
        w = _Txn(db, txn)
        kept = [codec.decode_as(Tombstone, raw) for _key, raw in w.scan("tombstones")]
        expired = expired_tombstones(kept, now, retention_s=retention_s)
        if not expired:
            return Sweep(dropped=(), resync=())
        for tombstone in expired:
            w.delete("tombstones", tombstone_key(tombstone.kind, tombstone.id))
        streams: list[Stream] = []
        for stream in ERASABLE_STREAMS:
            state = w.state(stream)
            w.put(msgspec.structs.replace(state, stopped=True, full=True))
            streams.append(stream)
        return Sweep(dropped=tuple(expired), resync=tuple(streams))

    return sweep


def erase_op(db: Database, shopper_id: str, *, hlc: int, now: float) -> WriteOp[None]:
    """A write op erasing a shopper on this store (profile, consent, keys, identities) and
    keeping its tombstone; ``hlc`` stamps the erasure, ``now`` is when it was recorded."""

    def erase(txn: Any) -> None:
        _Txn(db, txn).erase(shopper_id, hlc, now)

    return erase
