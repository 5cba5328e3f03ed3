"""The records HQ publishes, sans-I/O but for reading a file: validation, identity, bodies.

Each stream carries one record shape, the store's (``gateway/store/records.py``), as JSON with
its ``type`` tag, validated here the way the store converts it (``STREAM_TAGS``); the ``keys``
stream's records carry no tag: ``{"key_id", "public_key", "status"}``; ``config`` records are
free-form objects, and each put replaces the whole config (the store keeps one document), so
config has no deletes. A record's identity within its stream is the field in ``ID_FIELDS``;
a delete names records as ``{"id": ...}`` and nothing else.

Message bodies are split so that each carries at most ``batch`` records and about
``MAX_CHUNK_BYTES`` of them, far under the envelope's limit once signed and base64-encoded.
"""

from __future__ import annotations

import importlib
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Final, Literal, cast

import msgspec

from gateway.hq.errors import InputError
from gateway.store import Record
from gateway.sync.envelope import STREAMS, ResyncRequest

__all__ = [
    "CONFIG_STREAM",
    "ID_FIELDS",
    "KEYS_STREAM",
    "MAX_CHUNK_BYTES",
    "MAX_ID_BYTES",
    "STREAM_TAGS",
    "KeyRecord",
    "Op",
    "Planned",
    "check_address",
    "chunks",
    "delta_bodies",
    "load_records",
    "record_id",
    "snapshot_bodies",
    "validate_delete",
    "validate_record",
]

Op = Literal["put", "delete"]
Kind = Literal["delta", "snapshot_begin", "snapshot_item", "snapshot_end"]
Planned = tuple[Kind, dict[str, Any]]

STREAM_TAGS: Final[Mapping[str, str]] = {
    "offers": "offer",
    "templates": "template",
    "profiles": "profile",
    "consents": "consent",
}
ID_FIELDS: Final[Mapping[str, str]] = {
    "offers": "offer_id",
    "templates": "template_id",
    "profiles": "shopper_id",
    "consents": "shopper_id",
    "keys": "key_id",
}
KEYS_STREAM: Final = "keys"
CONFIG_STREAM: Final = "config"
MAX_CHUNK_BYTES: Final = 512 * 1024
MAX_ID_BYTES: Final = 400  # what the store accepts as a record key
# The store's record shapes by tag (a tag the codec does not know yet is checked for its id).
_SHAPES: Final[Mapping[str, Any]] = {
    str(cls.__struct_config__.tag): cls
    for cls in typing.get_args(Record)
    if cls.__struct_config__.tag
}


class KeyRecord(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A record of the ``keys`` stream."""

    key_id: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
    public_key: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$")]
    status: Literal["active", "revoked"]


_encoder: Final = msgspec.json.Encoder()


def check_address(store: str, stream: str) -> None:
    """Refuse a store id or stream name the envelope would not carry."""
    try:
        msgspec.convert({"store": store, "stream": stream, "since": 0}, ResyncRequest)
    except msgspec.ValidationError as exc:
        raise InputError(
            f"store {store!r} / stream {stream!r}: {exc} (streams: {', '.join(STREAMS)})"
        ) from exc


def record_id(stream: str, record: Mapping[str, Any]) -> str:
    """The identity of a validated record within its stream (not for ``config``)."""
    return str(record[ID_FIELDS[stream]])


def validate_record(stream: str, record: object, where: str) -> dict[str, Any]:
    """``record`` if it is a valid record for ``stream``, else ``InputError`` naming ``where``."""
    if not isinstance(record, dict):
        raise InputError(f"{where}: a record must be a JSON object")
    if stream == CONFIG_STREAM:
        return record
    try:
        if stream == KEYS_STREAM:
            msgspec.convert(record, KeyRecord)
        else:
            tag = STREAM_TAGS[stream]
            if record.get("type") != tag:
                raise InputError(f'{where}: the {stream} stream carries "type": "{tag}" records')
            shape = _SHAPES.get(tag)
            if shape is not None:
                msgspec.convert(record, shape)
    except msgspec.ValidationError as exc:
        raise InputError(f"{where}: {exc}") from exc
    _check_id(record.get(ID_FIELDS[stream]), f"{where}: {ID_FIELDS[stream]!r}")
    return record


def validate_delete(stream: str, item: object, where: str) -> dict[str, Any]:
    """``{"id": ...}``, as a delete body carries it."""
    if stream == CONFIG_STREAM:
        raise InputError(f"{where}: config has no deletes: a put replaces the whole config")
    if not isinstance(item, dict) or set(item) != {"id"}:
        raise InputError(f'{where}: a delete names its record as {{"id": "..."}}, only')
    _check_id(item["id"], f"{where}: 'id'")
    return item


def _check_id(ident: object, where: str) -> None:
    if not isinstance(ident, str) or not ident or "\x00" in ident:
        raise InputError(f"{where} must be a non-empty string")
    if len(ident.encode()) > MAX_ID_BYTES:
        raise InputError(f"{where} is longer than {MAX_ID_BYTES} bytes")


def load_records(path: Path, stream: str, op: Op) -> list[dict[str, Any]]:
    """The validated records (or delete ids) of one JSON file (YAML when PyYAML is there)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: {exc}") from exc
    if path.suffix.lower() in (".yaml", ".yml"):
        items = _yaml(path, data)
    else:
        try:
            items = msgspec.json.decode(data)
        except msgspec.DecodeError as exc:
            raise InputError(f"{path}: not JSON: {exc}") from exc
    if not isinstance(items, list):
        raise InputError(f"{path}: expected a list of records")
    if op == "delete":
        return [validate_delete(stream, item, f"{path}: $[{i}]") for i, item in enumerate(items)]
    return [validate_record(stream, item, f"{path}: $[{i}]") for i, item in enumerate(items)]


def _yaml(path: Path, data: bytes) -> object:
    try:
        yaml: Any = importlib.import_module("yaml")
    except ImportError:
        raise InputError(f"{path}: YAML needs PyYAML, which is not installed; use JSON") from None
    try:
        return cast(object, yaml.safe_load(data))
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not YAML: {exc}") from exc


def chunks(records: Iterable[dict[str, Any]], batch: int) -> list[list[dict[str, Any]]]:
    """``records`` in order, in groups of at most ``batch`` and about ``MAX_CHUNK_BYTES``."""
    out: list[list[dict[str, Any]]] = []
    group: list[dict[str, Any]] = []
    size = 0
    for record in records:
        length = len(_encoder.encode(record))
        if length > MAX_CHUNK_BYTES:
            raise InputError(f"a record of {length} bytes is larger than {MAX_CHUNK_BYTES}")
        if group and (len(group) >= batch or size + length > MAX_CHUNK_BYTES):
            out.append(group)
            group, size = [], 0
        group.append(record)
        size += length
    if group:
        out.append(group)
    return out


def delta_bodies(
    stream: str, op: Op, records: Sequence[dict[str, Any]], batch: int
) -> list[Planned]:
    """Delta messages of ``batch`` records at most; a config put is always one message (each
    replaces the store's whole config)."""
    if stream == CONFIG_STREAM:
        groups = chunks(records, len(records) or 1)
        if len(groups) > 1:
            raise InputError(f"a config of more than {MAX_CHUNK_BYTES} bytes does not fit")
        return [("delta", {"op": op, "records": list(records)})]
    return [("delta", {"op": op, "records": group}) for group in chunks(records, batch)]


def snapshot_bodies(
    snapshot: str, records: Sequence[dict[str, Any]], first_seq: int, batch: int
) -> list[Planned]:
    """begin, items, end of a snapshot whose first message gets ``first_seq``; the watermark
    is the sequence of the end message itself."""
    groups = chunks(records, batch)
    watermark = first_seq + len(groups) + 1
    return [
        ("snapshot_begin", {"snapshot": snapshot, "count": len(records)}),
        *(("snapshot_item", {"snapshot": snapshot, "records": group}) for group in groups),
        ("snapshot_end", {"snapshot": snapshot, "watermark": watermark}),
    ]
