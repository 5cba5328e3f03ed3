"""The bodies of HQ sync messages: one schema per kind, decoded and checked in one place.

``parse_body(message)`` turns a verified :class:`~gateway.sync.envelope.Message` into a typed
body (a delta, or a snapshot's begin, items or end) with the stream's records decoded into the
store's record types, or raises :class:`~gateway.sync.envelope.SyncError` (``bad_body``).
Sans-I/O; ``gateway.sync.apply`` decides what a body does to the store.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway.store import codec
from gateway.store.database import table_and_key
from gateway.store.hlc import LOGICAL_BITS, MAX_TIMESTAMP
from gateway.store.records import (
    ConsentRecord,
    HqKeyRecord,
    OfferRecord,
    ProfileRecord,
    TemplateRecord,
)
from gateway.sync.envelope import Message, SyncError

__all__ = [
    "LIVE_TABLE",
    "MAX_KEY_BYTES",
    "Begin",
    "Body",
    "Delta",
    "End",
    "Item",
    "Items",
    "erasure_hlc",
    "parse_body",
]

MAX_KEY_BYTES: Final = 400  # LMDB keys stop at 511 bytes; staging adds a prefix
_MAX_PHYSICAL_MS: Final = MAX_TIMESTAMP >> LOGICAL_BITS

_SnapshotId = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
_Count = Annotated[int, msgspec.Meta(ge=0, le=2**62)]


# ----- bodies: one schema per kind, decoded in plan() -----


class _DeltaBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    op: Literal["put", "delete"]
    records: list[Any]


class _Ref(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: str


class _BeginBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    snapshot: _SnapshotId
    count: _Count


class _ItemBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    snapshot: _SnapshotId
    records: list[Any]


class _EndBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    snapshot: _SnapshotId
    watermark: _Count


class _WireKey(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    key_id: _SnapshotId
    public_key: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-fA-F]{64}$")]
    status: Literal["active", "revoked"]


_RECORD_LISTS: Final[dict[str, Any]] = {
    "offers": list[OfferRecord],
    "templates": list[TemplateRecord],
    "profiles": list[ProfileRecord],
    "consents": list[ConsentRecord],
}
LIVE_TABLE: Final = {
    "offers": "offers",
    "templates": "templates",
    "profiles": "profiles",
    "consents": "consents",
    "keys": "keyring",
}
_json = msgspec.json.Encoder()

Item = codec.Record | bytes
"""A parsed record of a stream; ``bytes`` (a JSON object) only for ``config``."""


@dataclass(frozen=True, slots=True)
class Delta:
    op: Literal["put", "delete"]
    items: tuple[Item, ...]
    ids: tuple[str, ...]
    raw: bytes  # the body as JSON (what the config stream stores)


@dataclass(frozen=True, slots=True)
class Begin:
    snapshot: str
    count: int


@dataclass(frozen=True, slots=True)
class Items:
    snapshot: str
    items: tuple[Item, ...]


@dataclass(frozen=True, slots=True)
class End:
    snapshot: str
    watermark: int


Body = Delta | Begin | Items | End


def _bad(detail: str) -> SyncError:
    return SyncError("bad_body", detail)


def _items(stream: str, records: list[Any]) -> tuple[Item, ...]:
    if stream == "config":
        out: list[Item] = []
        for i, record in enumerate(records):
            if not isinstance(record, dict):
                raise _bad(f"$.body.records[{i}]: expected an object")
            out.append(_json.encode(record))
        return tuple(out)
    if stream == "keys":
        keys: list[Item] = []
        for k in msgspec.convert(records, list[_WireKey]):
            public = bytes.fromhex(k.public_key)
            try:
                Ed25519PublicKey.from_public_bytes(public)
            except ValueError as exc:
                raise _bad(f"key {k.key_id}: {exc}") from exc
            keys.append(HqKeyRecord(key_id=k.key_id, public_key=public, status=k.status))
        return tuple(keys)
    parsed: list[codec.Record] = msgspec.convert(records, _RECORD_LISTS[stream])
    for record in parsed:
        if record.v > codec.CURRENT_VERSION:
            raise _bad(f"record schema version {record.v} > {codec.CURRENT_VERSION}")
        key = table_and_key(record)[1]
        if not key or len(key) > MAX_KEY_BYTES:
            raise _bad(f"record key of {len(key)} bytes")
    return tuple(parsed)


def parse_body(message: Message) -> Body:
    """The typed body of a verified message; ``SyncError("bad_body")`` if it does not fit."""
    stream, body = message.stream, message.body
    try:
        match message.kind:
            case "delta":
                delta = msgspec.convert(body, _DeltaBody)
                if delta.op == "put":
                    return Delta("put", _items(stream, delta.records), (), _json.encode(body))
                refs = msgspec.convert(delta.records, list[_Ref])
                for ref in refs:
                    if not ref.id or len(ref.id.encode()) > MAX_KEY_BYTES:
                        raise _bad(f"id of {len(ref.id.encode())} bytes")
                return Delta("delete", (), tuple(r.id for r in refs), _json.encode(body))
            case "snapshot_begin":
                begin = msgspec.convert(body, _BeginBody)
                return Begin(begin.snapshot, begin.count)
            case "snapshot_item":
                item = msgspec.convert(body, _ItemBody)
                return Items(item.snapshot, _items(stream, item.records))
            case "snapshot_end":
                end = msgspec.convert(body, _EndBody)
                return End(end.snapshot, end.watermark)
    except msgspec.ValidationError as exc:
        raise _bad(f"{message.kind} of {stream}: {exc}") from exc


def erasure_hlc(consent: ConsentRecord, issued_at_ms: int) -> int:
    issued = min(max(issued_at_ms, 0), _MAX_PHYSICAL_MS) << LOGICAL_BITS
    return max([issued, *(state.hlc for state in consent.purposes.values())])
