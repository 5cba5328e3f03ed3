"""The shopper in control, store side: the consent ledger, consent changes, preferences,
decisions and caps (sans-HTTP: write operations for the store's writer, and short reads).

Consent ledger (``consent_ledger``), append-only: every consent decision that reached this
store, the proof of consent. Key ``shopper \\x00 hlc (8 bytes BE) \\x00 purpose``, value a
:class:`~gateway.store.records.ConsentEntry`. An entry is never overwritten: appending the same
entry again is a no-op, and a *different* decision under a key already taken (a hybrid clock
timestamp used twice for one purpose) is refused for a local change and skipped for one from
HQ, whose decisions carry HQ's own clock. The entries of a shopper come out in clock order;
the consent record is, purpose by purpose, the merge of them all
(:func:`~gateway.sync.merge.merge_purpose`): local decisions follow the very rule HQ merges
follow, so a withdrawal wins over every grant that is not causally after it.

A local change (:func:`change_consents_op`, from the app, a kiosk or staff) commits in one
transaction: the ledger entries, the merged :class:`ConsentRecord`, the identity generation
(``presence`` decides who can be recognised) and a non-perishable ``consent`` event for HQ::

    {"shopper": id,
     "purposes": {purpose: {"granted", "hlc", "notice_version", "channel", "expires_at"}},
     "no_marketing": true | false | null}

``purposes`` holds the decisions of the change (HQ merges them under the same rule) and
``no_marketing`` is null when the change leaves the objection alone. A purpose never decided
is denied. HQ's decisions (its ``consents`` stream, ``gateway.sync.apply``) are appended with
channel ``hq`` when they change what the store had (:func:`ledger_hq_in`).

``no_marketing`` has no clock. Across replicas it merges as a logical OR
(``gateway.sync.merge``): an objection from either side holds. Locally, ``True`` records the
objection at once; ``False`` lifts this store's objection (the shopper lifting their own) and
tells HQ so. If HQ still holds an objection it had not yet seen lifted, its next consent
record for the shopper brings it back until HQ clears it too: a race between the two ends
errs on the side of not marketing. The ledger records purposes only; the objection travels
in the consent record and its event.

Preferences (``preferences``): a :class:`PreferencesRecord` per shopper (caps per visit and
per day, quiet hours, locale). Decisions (``decisions``): a :class:`DecisionRecord` per
decision under ``shopper \\x00 hlc (8 bytes BE)``, at most :data:`MAX_DECISIONS` per shopper
(the oldest go in the transaction that adds one), plus ``\\x00id\\x00 decision_id`` → primary
key for :func:`decision`. Counters (``counters``): ``shopper \\x00 name \\x00 window`` → count,
8 bytes BE, for caps.

Nothing of an erased shopper is written while the tombstone is kept: a consent change or a
preferences write is refused (:class:`RefusedChange`, reason ``shopper_erased``); a decision or
a counter bump is skipped. :func:`forget_in` removes everything this module keeps about a
shopper, with the outbox events naming them, and bumps their token generation; both the local
erasure (``gateway.erasure``) and HQ's (``gateway.sync.apply``) run it.

Errors. Arguments are checked when an operation is built, so a bad request fails before it
reaches the writer. :class:`RefusedChange` is a :class:`~gateway.errors.PayloadError` and a
``ValueError``: raised inside a write operation it aborts that operation alone, and
:meth:`~gateway.store.writer.Writer.write` raises a ``StoreError`` caused by it
(:func:`refusal` finds it).
"""

from __future__ import annotations

import datetime as dt
import math
import re
import struct
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Final, Literal, NamedTuple

import lmdb
import msgspec

from gateway.errors import PayloadError, StoreError
from gateway.store import codec
from gateway.store.database import Database, decision_key, ledger_key
from gateway.store.hlc import MAX_TIMESTAMP
from gateway.store.records import (
    ConsentEntry,
    ConsentRecord,
    DecisionRecord,
    PreferencesRecord,
    Purpose,
    PurposeState,
)
from gateway.store.writer import WriteOp
from gateway.sync.envelope import decode_event
from gateway.sync.merge import merge_consent
from gateway.sync.outbox import PendingEvent, enqueue_in, remove_where_in

__all__ = [
    "LOCAL_CHANNELS",
    "MAX_DECISIONS",
    "SHOPPER_TOKEN_GENERATION",
    "STORE_COUNTER",
    "ConsentChange",
    "RefusedChange",
    "append_ledger_in",
    "bump_counter_in",
    "change_consents_op",
    "check_shopper_id",
    "counter",
    "counters",
    "counters_in",
    "decision",
    "decisions",
    "decisions_in",
    "forget_in",
    "in_quiet_hours",
    "ledger",
    "ledger_hq_in",
    "ledger_in",
    "preferences",
    "preferences_in",
    "record_decision_in",
    "refusal",
    "set_preferences_op",
    "sweep_counters_op",
    "validate_preferences",
]

STORE_COUNTER: Final = "~store"
"""The pseudo shopper the store-wide counters are kept under (``~`` starts no shopper id this
store issues or a token subject accepts): the offers' caps and social proof
(``gateway.moments``), the lift aggregates (``gateway.redemptions``), today's tallies
(``gateway.today``)."""

LocalChannel = Literal["app", "kiosk", "staff"]
LOCAL_CHANNELS: Final = ("app", "kiosk", "staff")
"""Where a local consent change can come from (``hq`` is for HQ's stream only)."""
MAX_DECISIONS: Final = 200
"""Decision records kept per shopper; the oldest go first."""
SHOPPER_TOKEN_GENERATION: Final = b"gen:shopper:"
"""``tokens`` key prefix of a shopper's token generation (``gen:{role}:{subject}`` → 8-byte BE
count, the layout of ``gateway.tokens``): moving it on revokes every token issued before."""

_MAX_ID_BYTES: Final = 200
_MAX_NAME_BYTES: Final = 100
_MAX_NOTICE_BYTES: Final = 100
_LOCALE: Final = re.compile(r"^[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{1,8}){0,3}$")
_U64: Final = struct.Struct(">Q")
_ID_INDEX: Final = b"\x00id\x00"
_PURPOSES: Final = frozenset(p.value for p in Purpose)


class RefusedChange(PayloadError, ValueError):
    """A change to a shopper's data was refused. ``reason``: ``shopper_erased`` (a tombstone
    is kept), ``unknown_purpose``, ``invalid_change``, ``ledger_conflict`` (another decision
    already holds that clock timestamp for that purpose), ``invalid_preferences``,
    ``invalid_decision``, ``invalid_id``."""


def refusal(exc: BaseException) -> RefusedChange | None:
    """The :class:`RefusedChange` behind ``exc`` (itself, or what caused the writer's
    ``StoreError``), or None."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, RefusedChange):
            return seen
        seen = seen.__cause__
    return None


class ConsentChange(NamedTuple):
    """One decision of a shopper about one purpose, made on this store."""

    purpose: str
    granted: bool
    notice_version: str = ""
    channel: str = "app"
    expires_at: float | None = None


# ----- validation -----


def check_shopper_id(shopper_id: str) -> bytes:
    """``shopper_id`` encoded, or :class:`RefusedChange` (``invalid_id``): not empty, at most
    200 bytes, no NUL (the separator of the keys that start with it)."""
    raw = shopper_id.encode()
    if not raw or len(raw) > _MAX_ID_BYTES or b"\x00" in raw:
        raise RefusedChange("invalid_id", f"shopper id of {len(raw)} bytes, or with a NUL")
    return raw


def _check_name(what: str, value: str) -> bytes:
    raw = value.encode()
    if not raw or len(raw) > _MAX_NAME_BYTES or b"\x00" in raw:
        raise RefusedChange("invalid_id", f"{what} {value!r}: 1 to 100 bytes, no NUL")
    return raw


def _check_hlc(hlc: int) -> int:
    if not 0 < hlc <= MAX_TIMESTAMP:
        raise RefusedChange("invalid_change", f"hybrid clock timestamp {hlc} out of range")
    return hlc


def _check_now(now: float) -> float:
    if not math.isfinite(now):
        raise RefusedChange("invalid_change", f"time {now} is not finite")
    return now


def _entry(shopper_id: str, change: ConsentChange, hlc: int, now: float) -> ConsentEntry:
    raw_purpose, granted, notice, channel, expires_at = change
    purpose = str(raw_purpose)  # a Purpose member is its value
    if purpose not in _PURPOSES:
        raise RefusedChange("unknown_purpose", f"{purpose!r}; expected one of {sorted(_PURPOSES)}")
    if channel not in LOCAL_CHANNELS:
        raise RefusedChange("invalid_change", f"channel {channel!r}; expected {LOCAL_CHANNELS}")
    if len(notice.encode()) > _MAX_NOTICE_BYTES:
        raise RefusedChange("invalid_change", f"notice version of {len(notice.encode())} bytes")
    if granted and not notice:
        raise RefusedChange("invalid_change", f"a grant of {purpose} names no notice version")
    if expires_at is not None:
        if not granted:
            raise RefusedChange("invalid_change", f"a withdrawal of {purpose} cannot expire")
        if not math.isfinite(expires_at) or expires_at <= now:
            raise RefusedChange("invalid_change", f"{purpose} would expire at {expires_at}")
    return ConsentEntry(
        shopper_id=shopper_id,
        purpose=purpose,
        granted=granted,
        hlc=hlc,
        at=now,
        notice_version=notice,
        channel=channel,  # type: ignore[arg-type]  # checked against LOCAL_CHANNELS above
        expires_at=expires_at,
    )


# ----- the ledger -----


def append_ledger_in(txn: Any, db: Database, entry: ConsentEntry) -> bool:
    """Append ``entry`` inside ``txn`` unless its key is taken; True when it was appended.
    Never overwrites: the caller decides what a taken key means."""
    key = ledger_key(entry.shopper_id, entry.hlc, entry.purpose)
    appended: bool = txn.put(
        key, codec.encode(entry), db=db.handle("consent_ledger"), overwrite=False
    )
    return appended


def _prefix(shopper_id: str) -> bytes:
    return check_shopper_id(shopper_id) + b"\x00"


def _under(txn: Any, handle: Any, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
    """The rows of ``handle`` whose key starts with ``prefix``, in key order."""
    cursor = txn.cursor(db=handle)
    if not cursor.set_range(prefix):
        return
    for raw_key, value in cursor.iternext():
        key = bytes(raw_key)
        if not key.startswith(prefix):
            return
        yield key, bytes(value)


def ledger_in(txn: Any, db: Database, shopper_id: str) -> list[ConsentEntry]:
    """The shopper's ledger as seen by ``txn`` (read or write), in clock order."""
    handle = db.handle("consent_ledger")
    return [
        codec.decode_as(ConsentEntry, value)
        for _k, value in _under(txn, handle, _prefix(shopper_id))
    ]


def ledger(db: Database, shopper_id: str) -> list[ConsentEntry]:
    """Every consent decision of the shopper that reached this store, in clock order."""
    with _reading(db, "consent_ledger") as txn:
        return ledger_in(txn, db, shopper_id)


def ledger_hq_in(txn: Any, db: Database, before: ConsentRecord | None, after: ConsentRecord) -> int:
    """Append, inside ``txn``, an ``hq`` entry for each purpose of ``after`` (HQ's consent as
    merged and stored) whose state differs from ``before`` (the store's, None if it had
    none); returns how many were appended. A taken key is skipped (see the module notes)."""
    had = {} if before is None else before.purposes
    appended = 0
    for purpose, state in after.purposes.items():
        if had.get(purpose) == state:
            continue
        entry = ConsentEntry(
            shopper_id=after.shopper_id,
            purpose=purpose,
            granted=state.granted,
            hlc=state.hlc,
            at=state.at,
            notice_version=state.notice_version,
            channel="hq",
            expires_at=state.expires_at,
        )
        appended += append_ledger_in(txn, db, entry)
    return appended


# ----- consent changes -----


def _state_body(state: PurposeState) -> dict[str, Any]:
    return {
        "granted": state.granted,
        "hlc": state.hlc,
        "notice_version": state.notice_version,
        "channel": state.channel,
        "expires_at": state.expires_at,
    }


def change_consents_op(
    db: Database,
    store_id: str,
    shopper_id: str,
    changes: Sequence[ConsentChange],
    *,
    hlc: int,
    now: float,
    no_marketing: bool | None = None,
    tell_hq: bool = True,
) -> WriteOp[ConsentRecord]:
    """A write operation recording the shopper's ``changes`` (and the "no marketing"
    objection, unless None), stamped ``hlc`` (from the store's hybrid clock) at ``now``, and
    returning the consent record that stands (see the module notes).

    Raises :class:`RefusedChange` at once for an invalid id, purpose, channel, expiry, a grant
    without a notice version, a purpose twice, or nothing to change; the operation raises it
    (aborting itself alone) for an erased shopper or a ledger conflict. Replaying the very same
    change (same entries, same objection) is a no-op returning the record: no event again."""
    raw_id = check_shopper_id(shopper_id)
    _check_hlc(hlc)
    _check_now(now)
    entries = [_entry(shopper_id, ConsentChange(*change), hlc, now) for change in changes]
    purposes = [e.purpose for e in entries]
    if len(set(purposes)) != len(purposes):
        raise RefusedChange("invalid_change", f"a purpose decided twice in one change: {purposes}")
    if not entries and no_marketing is None:
        raise RefusedChange("invalid_change", "nothing to change")
    encoded = [(ledger_key(shopper_id, hlc, e.purpose), codec.encode(e)) for e in entries]
    incoming = ConsentRecord(
        shopper_id=shopper_id, purposes={e.purpose: e.state() for e in entries}
    )
    body: dict[str, Any] = {
        "shopper": shopper_id,
        "purposes": {e.purpose: _state_body(e.state()) for e in entries},
        "no_marketing": no_marketing,
    }
    at_ms = int(now * 1000)

    def change(txn: Any) -> ConsentRecord:
        if db.erased_in(txn, shopper_id):
            raise RefusedChange("shopper_erased", "the shopper was erased on this store")
        consents, ledger_db = db.handle("consents"), db.handle("consent_ledger")
        raw = txn.get(raw_id, db=consents)
        current = (
            ConsentRecord(shopper_id=shopper_id)
            if raw is None
            else codec.decode_as(ConsentRecord, bytes(raw))
        )
        fresh = 0
        for key, value in encoded:
            if txn.put(key, value, db=ledger_db, overwrite=False):
                fresh += 1
            elif bytes(txn.get(key, db=ledger_db)) != value:
                raise RefusedChange(
                    "ledger_conflict", f"another decision holds hlc {hlc} for this purpose"
                )
        if entries and not fresh and no_marketing in {None, current.no_marketing}:
            return current  # the same change again
        merged = merge_consent(current, incoming)
        if merged.erased:  # pragma: no cover - an erased consent is never stored
            raise RefusedChange("shopper_erased", "the shopper's consent is an erasure")
        if no_marketing is not None:
            merged = msgspec.structs.replace(merged, no_marketing=no_marketing)
        txn.put(raw_id, codec.encode(merged), db=consents)
        db.bump_identity_generation(txn)
        if tell_hq:  # no HQ link configured: no one to tell, nothing is queued
            enqueue_in(txn, db, store_id, "consent", body, at_ms, perishable=False)
        return merged

    return change


# ----- preferences -----


def validate_preferences(record: PreferencesRecord) -> PreferencesRecord:
    """``record`` if its values are in range, else :class:`RefusedChange`
    (``invalid_preferences``) naming the field."""
    check_shopper_id(record.shopper_id)

    def bad(detail: str) -> RefusedChange:
        return RefusedChange("invalid_preferences", detail)

    for name, top in (("max_per_visit", 50), ("max_per_day", 200)):
        value = getattr(record, name)
        if value is not None and (type(value) is not int or not 0 <= value <= top):
            raise bad(f"{name} = {value!r}: expected an integer from 0 to {top}, or null")
    hours = record.quiet_hours
    if hours is not None:
        if len(hours) != 2 or any(type(h) is not int or not 0 <= h <= 23 for h in hours):
            raise bad(f"quiet_hours = {hours!r}: expected [start, end], hours from 0 to 23")
        if hours[0] == hours[1]:
            raise bad(f"quiet_hours = {hours!r}: start equals end; use null for none")
    if not _LOCALE.match(record.locale):
        raise bad(f"locale = {record.locale!r}: expected a language tag such as 'en' or 'fr-BE'")
    return record


def set_preferences_op(db: Database, record: PreferencesRecord) -> WriteOp[PreferencesRecord]:
    """A write operation storing the shopper's preferences (replacing any), validated now;
    refused for an erased shopper."""
    validate_preferences(record)
    key, value = record.shopper_id.encode(), codec.encode(record)

    def put(txn: Any) -> PreferencesRecord:
        if db.erased_in(txn, record.shopper_id):
            raise RefusedChange("shopper_erased", "the shopper was erased on this store")
        txn.put(key, value, db=db.handle("preferences"))
        return record

    return put


def preferences_in(txn: Any, db: Database, shopper_id: str) -> PreferencesRecord | None:
    raw = txn.get(check_shopper_id(shopper_id), db=db.handle("preferences"))
    return None if raw is None else codec.decode_as(PreferencesRecord, bytes(raw))


def preferences(db: Database, shopper_id: str) -> PreferencesRecord | None:
    """The shopper's preferences, None when they never set any."""
    with _reading(db, "preferences") as txn:
        return preferences_in(txn, db, shopper_id)


def in_quiet_hours(prefs: PreferencesRecord | None, local_hour: int) -> bool:
    """Whether ``local_hour`` (0 to 23, the store's local time) falls in the shopper's quiet
    hours: ``start`` included, ``end`` excluded, wrapping midnight when ``end < start``."""
    if not 0 <= local_hour <= 23:
        raise ValueError(f"hour {local_hour} is not from 0 to 23")
    if prefs is None or prefs.quiet_hours is None:
        return False
    start, end = prefs.quiet_hours
    if start <= end:
        return start <= local_hour < end
    return local_hour >= start or local_hour < end


# ----- decisions -----


def _check_decision(record: DecisionRecord) -> None:
    check_shopper_id(record.shopper_id)
    _check_name("decision id", record.decision_id)
    _check_hlc(record.hlc)
    if record.channel not in {"kiosk", "phone"}:
        raise RefusedChange("invalid_decision", f"channel {record.channel!r}")


def record_decision_in(txn: Any, db: Database, record: DecisionRecord) -> bool:
    """Keep ``record`` inside ``txn`` (the caller's, e.g. with the event it causes) and drop
    the shopper's oldest decisions past :data:`MAX_DECISIONS`. True when it was written;
    False for a decision id already kept or an erased shopper (nothing written)."""
    _check_decision(record)
    handle = db.handle("decisions")
    index = _ID_INDEX + record.decision_id.encode()
    if db.erased_in(txn, record.shopper_id) or txn.get(index, db=handle) is not None:
        return False
    key = decision_key(record.shopper_id, record.hlc)
    if not txn.put(key, codec.encode(record), db=handle, overwrite=False):
        raise RefusedChange("invalid_decision", f"another decision holds hlc {record.hlc}")
    txn.put(index, key, db=handle)
    rows = list(_under(txn, handle, _prefix(record.shopper_id)))
    for old_key, old_value in rows[: max(0, len(rows) - MAX_DECISIONS)]:
        _drop_decision(txn, handle, old_key, old_value)
    return True


def _drop_decision(txn: Any, handle: Any, key: bytes, value: bytes) -> None:
    old = codec.decode_as(DecisionRecord, value)
    txn.delete(key, db=handle)
    txn.delete(_ID_INDEX + old.decision_id.encode(), db=handle)


def decisions_in(txn: Any, db: Database, shopper_id: str, limit: int) -> list[DecisionRecord]:
    prefix = _prefix(shopper_id)
    out: list[DecisionRecord] = []
    if limit <= 0:
        return out
    cursor = txn.cursor(db=db.handle("decisions"))
    # The first key after every key of the prefix, then walk back.
    found = cursor.prev() if cursor.set_range(prefix[:-1] + b"\x01") else cursor.last()
    while found and len(out) < limit:
        key = bytes(cursor.key())
        if not key.startswith(prefix):
            break
        out.append(codec.decode_as(DecisionRecord, bytes(cursor.value())))
        found = cursor.prev()
    return out


def decisions(db: Database, shopper_id: str, limit: int = 50) -> list[DecisionRecord]:
    """The shopper's latest decisions, newest first, at most ``limit``."""
    with _reading(db, "decisions") as txn:
        return decisions_in(txn, db, shopper_id, limit)


def decision(db: Database, decision_id: str) -> DecisionRecord | None:
    """One decision by its id, None when it is not (or no longer) kept."""
    index = _ID_INDEX + _check_name("decision id", decision_id)
    with _reading(db, "decisions") as txn:
        key = txn.get(index, db=db.handle("decisions"))
        raw = None if key is None else txn.get(bytes(key), db=db.handle("decisions"))
        return None if raw is None else codec.decode_as(DecisionRecord, bytes(raw))


# ----- counters -----


def _counter_key(shopper_id: str, name: str, window: str) -> bytes:
    return b"\x00".join(
        (check_shopper_id(shopper_id), _check_name("counter", name), _check_name("window", window))
    )


def _count(raw: Any) -> int:
    raw = bytes(raw)
    if len(raw) != _U64.size:
        raise StoreError(f"a counter holds {len(raw)} bytes, expected {_U64.size}")
    value: int = _U64.unpack(raw)[0]
    return value


def bump_counter_in(
    txn: Any, db: Database, shopper_id: str, name: str, window: str, *, by: int = 1
) -> int:
    """Add ``by`` (one) to the shopper's counter ``name`` for ``window`` (e.g. a visit id or a
    local date) inside ``txn`` and return the new count; 0, writing nothing, for an erased
    shopper."""
    key = _counter_key(shopper_id, name, window)
    if db.erased_in(txn, shopper_id):
        return 0
    handle = db.handle("counters")
    raw = txn.get(key, db=handle)
    count = (0 if raw is None else _count(raw)) + by
    txn.put(key, _U64.pack(count), db=handle)
    return count


def counters_at(db: Database, shopper_id: str, names: Sequence[str], window: str) -> list[int]:
    """The shopper's counters ``names`` for ``window``, in one read transaction (0 for
    one never bumped)."""
    keys = [_counter_key(shopper_id, name, window) for name in names]
    handle = db.handle("counters")
    with _reading(db, "counters") as txn:
        raws = [txn.get(key, db=handle) for key in keys]
    return [0 if raw is None else _count(raw) for raw in raws]


def counter(db: Database, shopper_id: str, name: str, window: str) -> int:
    """The shopper's counter ``name`` for ``window``; 0 when never bumped."""
    key = _counter_key(shopper_id, name, window)
    with _reading(db, "counters") as txn:
        raw = txn.get(key, db=db.handle("counters"))
        return 0 if raw is None else _count(raw)


def counters_in(txn: Any, db: Database, shopper_id: str) -> dict[tuple[str, str], int]:
    """Every counter of the shopper, ``(name, window) -> count``."""
    prefix = _prefix(shopper_id)
    out: dict[tuple[str, str], int] = {}
    for key, value in _under(txn, db.handle("counters"), prefix):
        name, _sep, window = key[len(prefix) :].partition(b"\x00")
        out[name.decode(), window.decode()] = _count(value)
    return out


def counters(db: Database, shopper_id: str) -> dict[tuple[str, str], int]:
    with _reading(db, "counters") as txn:
        return counters_in(txn, db, shopper_id)


def sweep_counters_op(db: Database, now: float, *, keep_s: float = 2 * 86_400.0) -> WriteOp[int]:
    """A write operation dropping caps counters whose window ended more than ``keep_s``
    before ``now`` (windows ``day:YYYY-MM-DD`` and ``visit:<unix seconds>``; any other window
    is kept); returns how many it dropped."""

    def sweep(txn: Any) -> int:
        handle = db.handle("counters")
        doomed: list[bytes] = []
        for key, _value in txn.cursor(db=handle):
            window = bytes(key).rsplit(b"\x00", 1)[-1].decode(errors="replace")
            ended = _window_end(window)
            if ended is not None and ended < now - keep_s:
                doomed.append(bytes(key))
        for key in doomed:
            txn.delete(key, db=handle)
        return len(doomed)

    return sweep


def _window_end(window: str) -> float | None:
    kind, _sep, value = window.partition(":")
    try:
        if kind == "day":
            day = dt.date.fromisoformat(value)
            return dt.datetime.combine(day, dt.time(), dt.UTC).timestamp() + 86_400.0
        if kind == "visit":
            return float(value) + 86_400.0  # a visit lasts less than a day
    except ValueError:
        return None
    return None


# ----- forgetting a shopper -----


def _names(shopper_id: str, event: PendingEvent) -> bool:
    try:
        body = decode_event(event.payload).body
    except PayloadError:
        return False  # not ours to judge: the relay reports undecodable entries
    return body.get("shopper") == shopper_id


def forget_in(txn: Any, db: Database, shopper_id: str) -> dict[str, int]:
    """Inside ``txn``: delete the shopper's ledger, preferences, decisions, counters and the
    outbox events naming them (``"shopper": id`` in the body, outbox byte count kept right),
    and move their token generation on (every token issued to them is revoked). Returns the
    rows deleted per database. The profile, consent, keys, identities and tombstone are the
    erasure's (``gateway.sync.apply.erase_op``)."""
    prefix = _prefix(shopper_id)
    removed = dict.fromkeys(("consent_ledger", "preferences", "decisions", "counters"), 0)
    for table in ("consent_ledger", "decisions", "counters"):
        handle = db.handle(table)
        for key, value in list(_under(txn, handle, prefix)):
            if table == "decisions":
                _drop_decision(txn, handle, key, value)
            else:
                txn.delete(key, db=handle)
            removed[table] += 1
    removed["preferences"] = int(txn.delete(prefix[:-1], db=db.handle("preferences")))
    removed["outbox"] = remove_where_in(txn, db, lambda event: _names(shopper_id, event))
    tokens = db.handle("tokens")
    gen_key = SHOPPER_TOKEN_GENERATION + prefix[:-1]
    raw = txn.get(gen_key, db=tokens)
    txn.put(gen_key, _U64.pack((0 if raw is None else _count(raw)) + 1), db=tokens)
    return removed


# ----- reads -----


@contextmanager
def _reading(db: Database, table: str) -> Iterator[Any]:
    """A short read transaction, lmdb errors translated."""
    try:
        with db.env.begin(buffers=False) as txn:
            yield txn
    except lmdb.Error as exc:
        raise StoreError(f"read of {table} failed: {exc}") from exc
