"""A shopper's erasure and export, store side (sans-HTTP).

:func:`erase_shopper_op` removes everything this store holds about a shopper in one
transaction::

    profiles, consents, keys, identities   gateway.sync.apply.erase_op, which keeps the
                                           tombstone (kind, id, clock: no personal data)
    consent_ledger, preferences,           gateway.consents.forget_in
    decisions, counters
    outbox                                 queued events whose body names the shopper
    tokens                                 the shopper's token generation moves on: every
                                           token issued to them is refused from the commit

and then queues the non-perishable ``erasure`` event ``{"shopper": id, "hlc": hlc}`` for HQ.
What is left of the shopper on this store is the tombstone, that event until HQ receipts it,
and the token generation entry ``gen:shopper:{id}`` (an id and a counter, like the tombstone,
needed so that no token issued before the erasure works again). Erasing a shopper already
erased (a tombstone is kept, whoever erased them) is a no-op with a report that says so. An
erasure that arrives from HQ (``gateway.sync.apply``) runs the same removal, without the event.

:func:`export` is what the store holds about a shopper, as plain JSON-able data: profile,
consent per purpose, the consent ledger, preferences, recent decisions with their reasons,
counters and the identities registered. Of an EID identity key or an IRK it says that one is
registered, never its bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import lmdb
import msgspec

from gateway.consents import (
    MAX_DECISIONS,
    check_shopper_id,
    counters_in,
    decisions_in,
    forget_in,
    ledger_in,
    preferences_in,
)
from gateway.errors import StoreError
from gateway.store import codec
from gateway.store.database import Database, shopper_keys, tombstone_key
from gateway.store.hlc import MAX_TIMESTAMP
from gateway.store.records import (
    ConsentRecord,
    IdentityRecord,
    ProfileRecord,
    Purpose,
    PurposeState,
)
from gateway.store.writer import WriteOp
from gateway.sync.apply import erase_op
from gateway.sync.outbox import enqueue_in

__all__ = ["ERASED_TABLES", "ErasureReport", "erase_shopper_op", "export"]

ERASED_TABLES: Final = (
    "profiles",
    "consents",
    "keys",
    "identities",
    "consent_ledger",
    "preferences",
    "decisions",
    "counters",
    "outbox",
)
"""The databases an erasure deletes from, the keys of :attr:`ErasureReport.removed`."""
_KEY_KINDS: Final = {b"eid:": "eddystone_eid", b"irk:": "irk"}


@dataclass(frozen=True, slots=True)
class ErasureReport:
    """What an erasure did: rows deleted per database (:data:`ERASED_TABLES`, all zero when
    ``already_erased``) and the outbox sequence of the ``erasure`` event (None when none was
    queued)."""

    shopper_id: str
    already_erased: bool
    removed: Mapping[str, int]
    event_seq: int | None


def erase_shopper_op(
    db: Database, store_id: str, shopper_id: str, *, hlc: int, now: float, tell_hq: bool = True
) -> WriteOp[ErasureReport]:
    """A write operation erasing the shopper on this store, stamped ``hlc`` (the store's
    hybrid clock) at ``now``, and returning its report (see the module notes)."""
    check_shopper_id(shopper_id)
    if not 0 < hlc <= MAX_TIMESTAMP:
        raise ValueError(f"hybrid clock timestamp {hlc} out of range")
    erase_core = erase_op(db, shopper_id, hlc=hlc, now=now)
    body: dict[str, Any] = {"shopper": shopper_id, "hlc": hlc}
    at_ms = int(now * 1000)

    def erase(txn: Any) -> ErasureReport:
        if db.erased_in(txn, shopper_id):
            return ErasureReport(
                shopper_id=shopper_id,
                already_erased=True,
                removed=dict.fromkeys(ERASED_TABLES, 0),
                event_seq=None,
            )
        removed = dict.fromkeys(ERASED_TABLES, 0)
        for table, key in shopper_keys(shopper_id):
            removed[table] += txn.get(key, db=db.handle(table)) is not None
        removed["identities"] = len(_identities_in(txn, db, shopper_id))
        erase_core(txn)
        removed.update(forget_in(txn, db, shopper_id))
        seq = (
            enqueue_in(txn, db, store_id, "erasure", body, at_ms, perishable=False)
            if tell_hq  # no HQ link configured: no one to tell, nothing is queued
            else None
        )
        return ErasureReport(
            shopper_id=shopper_id, already_erased=False, removed=removed, event_seq=seq
        )

    return erase


def _identities_in(txn: Any, db: Database, shopper_id: str) -> list[str]:
    """The fixed beacon identities registered to the shopper (a scan, as the erasure's)."""
    out: list[str] = []
    for key, value in txn.cursor(db=db.handle("identities")):
        if codec.decode_as(IdentityRecord, bytes(value)).shopper_id == shopper_id:
            out.append(bytes(key).decode())
    return out


# ----- export -----


def _plain(record: msgspec.Struct) -> dict[str, Any]:
    data: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(record))  # JSON types only
    data.pop("type", None)  # the codec's tag
    data.pop("v", None)
    data.pop("shopper_id", None)  # said once, at the top
    return data


def _state(state: PurposeState | None) -> dict[str, Any] | None:
    return None if state is None else _plain(state)


def export(db: Database, shopper_id: str) -> dict[str, Any]:
    """Everything this store holds about the shopper, as plain JSON-able data, read in one
    transaction. A purpose never decided shows as null (denied)."""
    raw_id = check_shopper_id(shopper_id)
    try:
        with db.env.begin(buffers=False) as txn:
            erased = txn.get(tombstone_key("shopper", shopper_id), db=db.handle("tombstones"))
            raw_profile = txn.get(raw_id, db=db.handle("profiles"))
            raw_consent = txn.get(raw_id, db=db.handle("consents"))
            entries = ledger_in(txn, db, shopper_id)
            prefs = preferences_in(txn, db, shopper_id)
            decisions = decisions_in(txn, db, shopper_id, MAX_DECISIONS)
            counts = counters_in(txn, db, shopper_id)
            beacons = _identities_in(txn, db, shopper_id)
            keys = {
                kind: raw
                for prefix, kind in _KEY_KINDS.items()
                if (raw := txn.get(prefix + raw_id, db=db.handle("keys"))) is not None
            }
    except lmdb.Error as exc:
        raise StoreError(f"export of a shopper failed: {exc}") from exc
    profile = None if raw_profile is None else codec.decode_as(ProfileRecord, raw_profile)
    consent = (
        ConsentRecord(shopper_id=shopper_id)
        if raw_consent is None
        else codec.decode_as(ConsentRecord, raw_consent)
    )
    return {
        "shopper_id": shopper_id,
        "erased": erased is not None,
        "profile": None if profile is None else _plain(profile),
        "consent": {
            "no_marketing": consent.no_marketing,
            "purposes": {p.value: _state(consent.purposes.get(p.value)) for p in Purpose},
        },
        "ledger": [_plain(entry) for entry in entries],
        "preferences": None if prefs is None else _plain(prefs),
        "decisions": [
            {
                **_plain(d),
                "rejected": [{"offer_id": o, "rule": rule} for o, rule in d.rejected],
            }
            for d in decisions
        ],
        "counters": [
            {"name": name, "window": window, "count": n} for (name, window), n in counts.items()
        ],
        "identities": {
            "beacons": [{"kind": key.partition(":")[0], "id": key} for key in beacons],
            # A key's bytes never leave the store: only its kind and when it was registered
            # (null for a key registered before registration times were kept).
            "keys": [
                {"kind": kind, "registered": True, "registered_at": _registered_at(raw)}
                for kind, raw in keys.items()
            ],
        },
    }


def _registered_at(raw: bytes) -> float | None:
    """When an EID key or IRK was registered (never the key itself); None if unknown."""
    try:
        record = codec.decode(raw)
    except StoreError:
        return None
    when = getattr(record, "registered_at", 0.0)
    return float(when) if when else None
