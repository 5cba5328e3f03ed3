"""Scanner nodes' own reports: their status (online, offline) and their telemetry, decoded and
bounded, and the book of the latest of each per node.

Sans-I/O. ``parse_status`` and ``parse_telemetry`` take the bytes of one MQTT message and the
node named by its topic, and return a validated :class:`NodeStatus` or :class:`NodeTelemetry`
or raise :class:`NodeReportError` with a short, stable ``reason`` (a metric label).
``docs/PROTOCOL.md`` ("nodes/{node}/status", "nodes/{node}/telemetry") is the contract.

Payloads (JSON, UTF-8)::

    {prefix}/{store}/nodes/{node}/status     {"v": 1, "node": "node-coffee", "state": "online"}
    {prefix}/{store}/nodes/{node}/telemetry  {"v": 1, "node": "node-coffee", "t": 1795378600.5,
        "uptime_s": 86400.0, "heard": 120345, "forwarded": 118002, "batches": 172800,
        "free_heap": 180000, "wifi_rssi": -57}

The status is retained and a node's MQTT will says ``offline``: the book keeps what the node
(or the broker on its behalf) said last. Telemetry is kept as the last one per node, with the
gateway's time of arrival. Whether a node that says it is online is also heard is the
dashboard's business (``gateway.dashboard``), not this book's.

Bounds
    At most ``max_nodes`` nodes; a report from one more node is refused (``apply_*`` return
    False, the caller counts it as ``too_many_nodes``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Final, Literal, TypeVar

import msgspec

from gateway.errors import PayloadError
from gateway.payloads import decode_bounded

__all__ = [
    "PROTOCOL_VERSION",
    "NodeBook",
    "NodeReportError",
    "NodeReportLimits",
    "NodeStatus",
    "NodeTelemetry",
    "State",
    "encode_status",
    "encode_telemetry",
    "parse_status",
    "parse_telemetry",
]

PROTOCOL_VERSION: Final = 1
NODE_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
"""A node id as one MQTT topic level: letters, digits and ``_.-``, 1 to 64 characters."""
MAX_COUNT: Final = 2**53

_NodeId = Annotated[str, msgspec.Meta(pattern=NODE_PATTERN)]
_Count = Annotated[int, msgspec.Meta(ge=0, le=MAX_COUNT)]
State = Literal["online", "offline"]
_T = TypeVar("_T")


class NodeReportError(PayloadError):
    """A node's status or telemetry message was rejected. ``reason``: ``oversized_payload``,
    ``bad_json`` (not JSON, not UTF-8), ``bad_field`` (a missing field, a wrong type, a value
    out of bounds, a state other than ``online``/``offline``; the detail names the path),
    ``unsupported_version``, ``node_mismatch`` (the payload's node is not the topic's)."""


class _StatusIn(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    v: int
    node: _NodeId
    state: State


class _TelemetryIn(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    v: int
    node: _NodeId
    t: Annotated[float, msgspec.Meta(ge=0, le=1e11)]
    heard: _Count
    forwarded: _Count
    uptime_s: Annotated[float, msgspec.Meta(ge=0, le=1e11)] | None = None
    batches: _Count | None = None
    free_heap: _Count | None = None
    wifi_rssi: Annotated[int, msgspec.Meta(ge=-127, le=20)] | None = None  # None: wired


_status_decoder: Final = msgspec.json.Decoder(_StatusIn)
_telemetry_decoder: Final = msgspec.json.Decoder(_TelemetryIn)


@dataclass(frozen=True, slots=True)
class NodeReportLimits:
    max_payload_bytes: int = 2_048


@dataclass(frozen=True, slots=True)
class NodeStatus:
    node: str
    state: State


@dataclass(frozen=True, slots=True)
class NodeTelemetry:
    """A node's last health report; ``at`` is the gateway's clock when it arrived."""

    node: str
    t: float
    heard: int
    forwarded: int
    wifi_rssi: int | None
    free_heap: int | None
    at: float = 0.0


def _check(v: int, node: str, topic_node: str) -> None:
    if v != PROTOCOL_VERSION:
        raise NodeReportError("unsupported_version", f"v={v}, this gateway speaks 1")
    if node != topic_node:
        raise NodeReportError("node_mismatch", f"payload node does not match topic {topic_node}")


def parse_status(topic_node: str, payload: bytes, limits: NodeReportLimits) -> NodeStatus:
    """Validate and decode one status message published under ``topic_node``."""
    raw = decode_bounded(_status_decoder, payload, limits.max_payload_bytes, NodeReportError)
    _check(raw.v, raw.node, topic_node)
    return NodeStatus(raw.node, raw.state)


def parse_telemetry(
    topic_node: str, payload: bytes, limits: NodeReportLimits, *, now: float
) -> NodeTelemetry:
    """Validate and decode one telemetry message published under ``topic_node``, arrived at
    ``now`` (the gateway's clock)."""
    raw = decode_bounded(_telemetry_decoder, payload, limits.max_payload_bytes, NodeReportError)
    _check(raw.v, raw.node, topic_node)
    return NodeTelemetry(
        raw.node, raw.t, raw.heard, raw.forwarded, raw.wifi_rssi, raw.free_heap, at=now
    )


def encode_status(node: str, state: State) -> bytes:
    """A node's status message (simulated nodes, tests): one place owns the wire shape."""
    return msgspec.json.encode(_StatusIn(v=PROTOCOL_VERSION, node=node, state=state))


def encode_telemetry(
    node: str,
    *,
    t: float,
    heard: int,
    forwarded: int,
    uptime_s: float | None = None,
    batches: int | None = None,
    free_heap: int | None = None,
    wifi_rssi: int | None = None,
) -> bytes:
    """A node's telemetry message (simulated nodes, tests): one place owns the wire shape."""
    return msgspec.json.encode(
        _TelemetryIn(
            v=PROTOCOL_VERSION,
            node=node,
            t=t,
            heard=heard,
            forwarded=forwarded,
            uptime_s=uptime_s,
            batches=batches,
            free_heap=free_heap,
            wifi_rssi=wifi_rssi,
        )
    )


class NodeBook:
    """What each node last said of itself: its state and its telemetry (module notes).

    One book belongs to one event loop; it is not thread-safe and needs no lock there."""

    __slots__ = ("_max_nodes", "_states", "_telemetry")

    def __init__(self, *, max_nodes: int = 256) -> None:
        if max_nodes < 1:
            raise ValueError("max_nodes must be at least 1")
        self._max_nodes = max_nodes
        self._states: dict[str, State] = {}
        self._telemetry: dict[str, NodeTelemetry] = {}

    def _room_for(self, node: str) -> bool:
        return (
            node in self._states or node in self._telemetry or len(self.nodes()) < self._max_nodes
        )

    def apply_status(self, status: NodeStatus) -> bool:
        """Keep ``status``; False when it is one node too many."""
        if not self._room_for(status.node):
            return False
        self._states[status.node] = status.state
        return True

    def apply_telemetry(self, telemetry: NodeTelemetry) -> bool:
        """Keep ``telemetry`` as the node's last; False when it is one node too many."""
        if not self._room_for(telemetry.node):
            return False
        self._telemetry[telemetry.node] = telemetry
        return True

    def state(self, node: str) -> State | None:
        """``online`` or ``offline`` as the node said last; None when it never said."""
        return self._states.get(node)

    def telemetry(self, node: str) -> NodeTelemetry | None:
        return self._telemetry.get(node)

    def states(self) -> dict[str, State]:
        return dict(self._states)

    def last_telemetry(self) -> dict[str, NodeTelemetry]:
        return dict(self._telemetry)

    def nodes(self) -> set[str]:
        return self._states.keys() | self._telemetry.keys()
