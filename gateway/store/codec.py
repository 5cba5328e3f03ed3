"""Encoding and decoding of store records: MessagePack, tagged by kind, versioned.

One encoder and one decoder per process, compiled once. A record whose version is newer than
this code understands is refused rather than misread; migrations of older versions go in
``_MIGRATIONS`` keyed by (kind, version).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, TypeVar

import msgspec

from gateway.errors import StoreError
from gateway.store.records import (
    ConsentEntry,
    ConsentRecord,
    DecisionRecord,
    EidKeyRecord,
    HqKeyRecord,
    IdentityRecord,
    IrkRecord,
    OfferRecord,
    PreferencesRecord,
    ProfileRecord,
    SyncState,
    TemplateRecord,
    Tombstone,
)

__all__ = ["CURRENT_VERSION", "Record", "decode", "decode_as", "encode"]

Record = (
    ProfileRecord
    | ConsentRecord
    | OfferRecord
    | IdentityRecord
    | EidKeyRecord
    | IrkRecord
    | TemplateRecord
    | HqKeyRecord
    | Tombstone
    | SyncState
    | ConsentEntry
    | PreferencesRecord
    | DecisionRecord
)
R = TypeVar(
    "R",
    ProfileRecord,
    ConsentRecord,
    OfferRecord,
    IdentityRecord,
    EidKeyRecord,
    IrkRecord,
    TemplateRecord,
    HqKeyRecord,
    Tombstone,
    SyncState,
    ConsentEntry,
    PreferencesRecord,
    DecisionRecord,
)

CURRENT_VERSION: Final = 1

_encoder = msgspec.msgpack.Encoder()
_decoder: msgspec.msgpack.Decoder[Record] = msgspec.msgpack.Decoder(Record)
_MIGRATIONS: dict[tuple[str, int], Callable[[dict[str, Any]], dict[str, Any]]] = {}


def encode(record: Record) -> bytes:
    return _encoder.encode(record)


def decode(data: bytes) -> Record:
    try:
        record = _decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise StoreError(f"undecodable record: {exc}") from exc
    if record.v > CURRENT_VERSION:
        raise StoreError(
            f"record of kind {type(record).__name__} has schema version {record.v}, "
            f"newer than this gateway's {CURRENT_VERSION}: upgrade the gateway"
        )
    return record


def decode_as(kind: type[R], data: bytes) -> R:
    record = decode(data)
    if not isinstance(record, kind):
        raise StoreError(f"expected a {kind.__name__}, found a {type(record).__name__}")
    return record
