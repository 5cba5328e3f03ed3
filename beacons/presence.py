"""Zone presence: sightings and an injected time in, presence events out. No I/O.

Each (subject, zone) pair has a smoothed RSSI (exponential moving average) and a state. The
signal each sighting brings is classified against two thresholds (hysteresis: entering needs a
stronger signal than staying), and the whole behaviour is this table, read top to bottom:

=========  ==========  =========  =====================================================
state      signal      next       emits
=========  ==========  =========  =====================================================
absent     strong      present    ZoneEntered (after leaving the subject's other zone)
absent     middling    absent     -
absent     weak        absent     -
present    strong      present    -
present    middling    present    -
present    weak        absent     ZoneLeft(reason="weak")
present    silent      absent     ZoneLeft(reason="timeout")   (from ``tick``)
=========  ==========  =========  =====================================================

A subject is present in at most one zone: entering a zone leaves the previous one, and a
sighting only counts as strong for a new zone when it beats the current zone's smoothed RSSI
by ``switch_margin_db`` (otherwise it is middling), so a shopper between two zones does not
ping-pong. ``silent``
is never a sighting; ``tick(now)`` produces it for pairs not heard for ``leave_after_s``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Final

__all__ = ["PresenceParams", "PresenceTracker", "ZoneEntered", "ZoneLeft"]


class _State(Enum):
    ABSENT = "absent"
    PRESENT = "present"


class _Signal(Enum):
    STRONG = "strong"
    MIDDLING = "middling"
    WEAK = "weak"
    SILENT = "silent"


_S, _G = _State, _Signal
_TABLE: Final[dict[tuple[_State, _Signal], tuple[_State, str | None]]] = {
    (_S.ABSENT, _G.STRONG): (_S.PRESENT, "entered"),
    (_S.ABSENT, _G.MIDDLING): (_S.ABSENT, None),
    (_S.ABSENT, _G.WEAK): (_S.ABSENT, None),
    (_S.PRESENT, _G.STRONG): (_S.PRESENT, None),
    (_S.PRESENT, _G.MIDDLING): (_S.PRESENT, None),
    (_S.PRESENT, _G.WEAK): (_S.ABSENT, "weak"),
    (_S.PRESENT, _G.SILENT): (_S.ABSENT, "timeout"),
}


@dataclass(frozen=True, slots=True)
class PresenceParams:
    enter_rssi_dbm: int = -80
    exit_rssi_dbm: int = -90
    smoothing: float = 0.4
    leave_after_s: float = 8.0
    switch_margin_db: float = 4.0


@dataclass(frozen=True, slots=True)
class ZoneEntered:
    subject: str
    zone: str
    t: float
    rssi: float


@dataclass(frozen=True, slots=True)
class ZoneLeft:
    subject: str
    zone: str
    t: float
    reason: str


PresenceEvent = ZoneEntered | ZoneLeft


class _Track:
    __slots__ = ("last_seen", "rssi", "state")

    def __init__(self, rssi: float, t: float) -> None:
        self.rssi = rssi
        self.last_seen = t
        self.state = _State.ABSENT


class PresenceTracker:
    """Holds the presence state of every subject heard recently; forgets silent absent pairs."""

    def __init__(self, params: PresenceParams) -> None:
        self._p = params
        self._tracks: dict[tuple[str, str], _Track] = {}
        self._zone_of: dict[str, str] = {}

    def zone_of(self, subject: str) -> str | None:
        return self._zone_of.get(subject)

    def present_in(self, zone: str) -> list[str]:
        return [s for s, z in self._zone_of.items() if z == zone]

    def observe(self, subject: str, zone: str, rssi: int, t: float) -> list[PresenceEvent]:
        key = (subject, zone)
        track = self._tracks.get(key)
        if track is None:
            track = self._tracks[key] = _Track(float(rssi), t)
        else:
            a = self._p.smoothing
            track.rssi = a * rssi + (1.0 - a) * track.rssi
            track.last_seen = max(track.last_seen, t)
        if track.rssi >= self._p.enter_rssi_dbm and self._may_enter(subject, zone, track.rssi):
            signal = _Signal.STRONG
        elif track.rssi < self._p.exit_rssi_dbm:
            signal = _Signal.WEAK
        else:
            signal = _Signal.MIDDLING
        return self._step(subject, zone, track, signal, t)

    def _may_enter(self, subject: str, zone: str, rssi: float) -> bool:
        """Moving from the current zone needs a clearly stronger signal (no ping-pong)."""
        current = self._zone_of.get(subject)
        if current is None or current == zone:
            return True
        held = self._tracks.get((subject, current))
        return held is None or rssi >= held.rssi + self._p.switch_margin_db

    def tick(self, now: float) -> list[PresenceEvent]:
        events: list[PresenceEvent] = []
        for (subject, zone), track in list(self._tracks.items()):
            if now - track.last_seen < self._p.leave_after_s:
                continue
            if track.state is _State.PRESENT:
                events += self._step(subject, zone, track, _Signal.SILENT, now)
            del self._tracks[(subject, zone)]
        return events

    def forget(self, subject: str, now: float) -> list[PresenceEvent]:
        """Drop a subject at once (consent withdrawn): leaves its zone, keeps nothing."""
        events: list[PresenceEvent] = []
        zone = self._zone_of.pop(subject, None)
        if zone is not None:
            events.append(ZoneLeft(subject, zone, now, "forgotten"))
        for key in [k for k in self._tracks if k[0] == subject]:
            del self._tracks[key]
        return events

    def _step(
        self, subject: str, zone: str, track: _Track, signal: _Signal, t: float
    ) -> list[PresenceEvent]:
        state, emit = _TABLE[(track.state, signal)]
        track.state = state
        if emit is None:
            return []
        if emit == "entered":
            events: list[PresenceEvent] = []
            previous = self._zone_of.get(subject)
            if previous is not None and previous != zone:
                old = self._tracks.get((subject, previous))
                if old is not None:
                    old.state = _State.ABSENT
                events.append(ZoneLeft(subject, previous, t, "moved"))
            self._zone_of[subject] = zone
            events.append(ZoneEntered(subject, zone, t, track.rssi))
            return events
        if self._zone_of.get(subject) == zone:
            del self._zone_of[subject]
        return [ZoneLeft(subject, zone, t, emit)]
