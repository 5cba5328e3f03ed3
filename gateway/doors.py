"""Door counters: what a counter publishes, decoded and bounded, and the book of today's entries.

Sans-I/O. ``parse_door_count(topic_door, payload, limits)`` takes the bytes of one MQTT message
and returns a validated :class:`DoorCount` or raises :class:`DoorError` with a short, stable
``reason`` (a metric label). :class:`DoorBook` folds counts into entries per door per local
day. ``docs/PROTOCOL.md`` ("Door counters → gateway") is the contract.

Payload (JSON, UTF-8), topic ``{prefix}/{store}/doors/{door}/count``::

    {"v": 1, "door": "door-main", "t": 1795378600.5, "in": 412, "out": 398}

``in`` and ``out`` are cumulative since the counter started. Anonymous by construction.

The book
    :class:`DoorBook` keeps each door's latest count: a count's rise of ``in`` over the door's
    previous one is that many entries, which the caller adds to today's tallies in the store
    (``gateway.today``, metric ``door_entries``, by the local hour the count arrived in), so a
    gateway restart loses none of the day's entries. A door's first count after the gateway
    started, and a count smaller than the one before (the counter restarted), are a new
    baseline: what a counter saw between its last count before and its first count after is
    not known and not guessed. Days and hours are the gateway's clock at arrival: a counter's
    clock is not trusted for ordering, as for scanner nodes.

Bounds
    At most ``max_doors`` doors; a count from one more door is refused (``apply`` returns
    False, the caller counts it as ``too_many_doors``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Annotated, Final

import msgspec

from gateway.errors import PayloadError
from gateway.payloads import decode_bounded

__all__ = [
    "PROTOCOL_VERSION",
    "DoorBook",
    "DoorCount",
    "DoorError",
    "DoorLimits",
    "encode_door_count",
    "parse_door_count",
]

PROTOCOL_VERSION: Final = 1
DOOR_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
"""A door id: one MQTT topic level, letters, digits and ``_.-``, 1 to 64 characters."""
MAX_COUNT: Final = 2**53

_DoorId = Annotated[str, msgspec.Meta(pattern=DOOR_PATTERN)]
_Count = Annotated[int, msgspec.Meta(ge=0, le=MAX_COUNT)]


class DoorError(PayloadError):
    """A door counter's message was rejected. ``reason``: ``oversized_payload``, ``bad_json``
    (not JSON, not UTF-8), ``bad_field`` (a missing field, a wrong type, a value out of
    bounds; the detail names the path), ``unsupported_version``, ``door_mismatch`` (the
    payload's door is not the topic's)."""


class _CountIn(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    v: int
    door: _DoorId
    in_: _Count = msgspec.field(name="in")
    out: _Count
    t: Annotated[float, msgspec.Meta(ge=0, le=1e11)] | None = None


_decoder: Final = msgspec.json.Decoder(_CountIn)


@dataclass(frozen=True, slots=True)
class DoorLimits:
    max_payload_bytes: int = 1_024


@dataclass(frozen=True, slots=True)
class DoorCount:
    """One counter's cumulative counts since it started, and its own clock (or None)."""

    door: str
    entered: int
    left: int
    t: float | None = None


def parse_door_count(topic_door: str, payload: bytes, limits: DoorLimits) -> DoorCount:
    """Validate and decode one door-count message published under ``topic_door``."""
    raw = decode_bounded(_decoder, payload, limits.max_payload_bytes, DoorError)
    if raw.v != PROTOCOL_VERSION:
        raise DoorError("unsupported_version", f"v={raw.v}, this gateway speaks 1")
    if raw.door != topic_door:
        raise DoorError("door_mismatch", f"payload door does not match topic {topic_door}")
    return DoorCount(raw.door, raw.in_, raw.out, raw.t)


def encode_door_count(count: DoorCount) -> bytes:
    """The reverse, for simulated counters and tests: one place owns the wire shape."""
    return msgspec.json.encode(
        _CountIn(v=PROTOCOL_VERSION, door=count.door, in_=count.entered, out=count.left, t=count.t)
    )


class DoorBook:
    """Each door's latest count, to turn cumulative counts into entries (module notes).

    One book belongs to one event loop; it is not thread-safe and needs no lock there."""

    __slots__ = ("_doors", "_max_doors", "_offset")

    def __init__(self, *, utc_offset_h: float = 0.0, max_doors: int = 64) -> None:
        if max_doors < 1:
            raise ValueError("max_doors must be at least 1")
        self._offset = dt.timedelta(hours=utc_offset_h)
        self._max_doors = max_doors
        self._doors: dict[str, tuple[dt.date, DoorCount]] = {}  # door: (local day, last count)

    def _day(self, now: float) -> dt.date:
        return (dt.datetime.fromtimestamp(now, dt.UTC) + self._offset).date()

    def apply(self, count: DoorCount, now: float) -> int | None:
        """Fold ``count`` (arrived at ``now``) in: the entries since the door's previous count
        (0 for its first, or after the counter restarted); None when it is one door too
        many."""
        day = self._day(now)
        seen = self._doors.get(count.door)
        if seen is None and len(self._doors) >= self._max_doors:
            # Doors that have not counted today make room (a door id invented once on the
            # broker must not lock the real doors out for good).
            for stale in [k for k, (d, _c) in self._doors.items() if d != day]:
                del self._doors[stale]
            if len(self._doors) >= self._max_doors:
                return None
        self._doors[count.door] = (day, count)
        if seen is None:
            return 0
        last = seen[1]
        if count.entered < last.entered or count.left < last.left:  # the counter restarted
            return 0
        return count.entered - last.entered

    def counted_today(self, now: float) -> bool:
        """Has any door counted today (even zero entries)?"""
        day = self._day(now)
        return any(d == day for d, _c in self._doors.values())
