"""The scanner-node protocol: what an ESP32 scanner node publishes, decoded and bounded.

Sans-I/O: ``parse_batch(topic_node, payload, limits)`` takes the bytes of one MQTT message and
returns a validated :class:`NodeBatch` or raises :class:`~gateway.errors.NodeMessageError` with a
short, stable ``reason`` used as a metric label. Nothing here trusts the payload: size is
checked before parsing, types are checked by the schema, every number is bounded, and hex is
decoded here so that the rest of the gateway sees bytes. ``docs/PROTOCOL.md`` is the contract.

Payload (JSON, UTF-8), topic ``{prefix}/{store}/nodes/{node}/adv``::

    {"v": 1, "node": "esp32-coffee", "seq": 42, "ts": 1732300000.25,
     "adv": [{"addr": "6c:1d:...", "rssi": -61, "age_ms": 120, "data": "0201061aff4c00..."}]}
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass
from typing import Annotated, Final

import msgspec

from gateway.errors import NodeMessageError
from gateway.payloads import decode_bounded

__all__ = ["PROTOCOL_VERSION", "Advert", "NodeBatch", "NodeLimits", "encode_batch", "parse_batch"]

PROTOCOL_VERSION: Final = 1
MAX_AD_BYTES: Final = 255

_Rssi = Annotated[int, msgspec.Meta(ge=-127, le=20)]
_Age = Annotated[int, msgspec.Meta(ge=0, le=600_000)]
_NodeId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class _AdvertIn(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    rssi: _Rssi
    data: Annotated[str, msgspec.Meta(max_length=2 * MAX_AD_BYTES)]
    age_ms: _Age = 0
    addr: Annotated[str, msgspec.Meta(max_length=17)] = ""


class _BatchIn(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    v: int
    node: _NodeId
    seq: Annotated[int, msgspec.Meta(ge=0, le=2**53)]
    ts: Annotated[float, msgspec.Meta(ge=0)]
    adv: list[_AdvertIn]


_decoder = msgspec.json.Decoder(_BatchIn)


@dataclass(frozen=True, slots=True)
class NodeLimits:
    max_payload_bytes: int = 65_536
    max_batch: int = 256


@dataclass(frozen=True, slots=True)
class Advert:
    """One advertisement as a node heard it. ``addr`` stays in memory, never on disk or in logs."""

    data: bytes
    rssi: int
    age_ms: int
    addr: str


@dataclass(frozen=True, slots=True)
class NodeBatch:
    node: str
    seq: int
    ts: float
    adverts: tuple[Advert, ...]


def parse_batch(topic_node: str, payload: bytes, limits: NodeLimits) -> NodeBatch:
    """Validate and decode one scanner-node message published under ``topic_node``."""
    raw = decode_bounded(_decoder, payload, limits.max_payload_bytes, NodeMessageError)
    if raw.v != PROTOCOL_VERSION:
        raise NodeMessageError("unsupported_version", f"v={raw.v}, this gateway speaks 1")
    if raw.node != topic_node:
        raise NodeMessageError("node_mismatch", f"payload node does not match topic {topic_node}")
    if len(raw.adv) > limits.max_batch:
        raise NodeMessageError("oversized_batch", f"{len(raw.adv)} adverts > {limits.max_batch}")
    adverts = []
    for i, adv in enumerate(raw.adv):
        text = adv.data
        if len(text) % 2:
            raise NodeMessageError("bad_hex", f"adv[{i}].data has odd length {len(text)}")
        try:
            data = binascii.unhexlify(text)
        except (binascii.Error, ValueError) as exc:
            raise NodeMessageError("bad_hex", f"adv[{i}].data is not hex") from exc
        if not data:
            raise NodeMessageError("bad_hex", f"adv[{i}].data is empty")
        adverts.append(Advert(data, adv.rssi, adv.age_ms, adv.addr))
    return NodeBatch(raw.node, raw.seq, raw.ts, tuple(adverts))


def encode_batch(node: str, seq: int, ts: float, adverts: list[Advert]) -> bytes:
    """The reverse, for simulated nodes and tests: one place owns the wire shape."""
    return msgspec.json.encode(
        _BatchIn(
            v=PROTOCOL_VERSION,
            node=node,
            seq=seq,
            ts=ts,
            adv=[_AdvertIn(a.rssi, a.data.hex(), a.age_ms, a.addr) for a in adverts],
        )
    )
