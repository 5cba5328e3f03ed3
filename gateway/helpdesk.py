"""Shoppers waiting for staff (sans-I/O: presence events and the tick's ``now`` in, decisions
out; no timers, no clock of its own).

An alert is raised for a shopper with ``staff_assist`` (the caller checks the consent, at raise
time and on every recheck) for one of two reasons:

* ``asked``: they asked (``POST /v1/me/help``); asking again moves it to where they are now.
  It follows them from zone to zone, and shows no zone while they are in none.
* ``dwell``: they stayed in a zone with ``help_after_s`` (``[[zones]]``) that long since
  entering it. ``entered``/``left`` arm and cancel the watch; ``tick`` returns the watches that
  are due, once each, and the caller raises them with :meth:`HelpDesk.dwell` if the consent
  allows. Leaving the zone withdraws a dwell alert, acknowledged or not: its reason is gone.

One shopper has at most one alert; asking while a dwell alert is open turns it into ``asked``.

Life of an alert, decided from the tick's ``now``:

===============  ===========================================================================
event            effect
===============  ===========================================================================
raised           ``level`` 0, not acknowledged
unacknowledged   ``level`` 1 after ``escalate_after_s``, 2 after twice that (then no higher)
acknowledged     the first staff member wins (``acknowledged_by``, ``acknowledged_at``); the
                 level stays as it was; the alert stays listed so others see it is taken
resolved         staff closed it: gone
left the zone    a dwell alert: gone. An asked alert: shows no zone
left the store   in no zone for ``away_after_s`` after leaving the last one: all their alerts
                 gone (a shopper never seen in a zone is not timed out: only staff, a
                 withdrawal or an erasure close their alert)
withdrawn        ``staff_assist`` withdrawn or expired, or erased: gone, and nothing about them
                 (watch, away clock) is kept
===============  ===========================================================================

What staff see is the whole list, republished on every change as one retained MQTT message
(:meth:`HelpDesk.payload`): a name (nickname, else first name), the zone, times, the reason,
the level and who took it; never the shopper's id. A restart, which starts with none, clears
what an earlier run left on the broker.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Annotated, Any, Final, Literal

import msgspec

from beacons.presence import PresenceEvent, ZoneEntered, ZoneLeft
from gateway.errors import PayloadError
from gateway.payloads import decode_bounded

__all__ = [
    "MAX_ACK_BYTES",
    "MAX_LEVEL",
    "AckError",
    "AckOutcome",
    "Due",
    "Help",
    "HelpDesk",
    "Reason",
    "parse_ack",
]

Reason = Literal["asked", "dwell"]

MAX_LEVEL: Final = 2
MAX_ACK_BYTES: Final = 1024
_STAFF_ID: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$")


@dataclass(slots=True)
class Help:
    """One open alert. ``shopper_id`` never leaves the gateway (see ``view``)."""

    alert_id: str
    shopper_id: str
    name: str
    zone: str | None
    since: float
    reason: Reason = "asked"
    level: int = 0
    acknowledged_by: str | None = None
    acknowledged_at: float | None = None

    def view(self) -> dict[str, Any]:
        """What staff see: everything but the shopper's id."""
        return {
            "alert_id": self.alert_id,
            "name": self.name,
            "zone": self.zone,
            "since": self.since,
            "reason": self.reason,
            "level": self.level,
            "acknowledged_by": self.acknowledged_by,
            "acknowledged_at": self.acknowledged_at,
        }


@dataclass(frozen=True, slots=True)
class Due:
    """A dwell watch that reached its zone's ``help_after_s``: raise it if consent allows."""

    shopper_id: str
    zone: str
    entered_at: float = field(default=0.0, compare=False)


class AckOutcome(Enum):
    ACKNOWLEDGED = "acknowledged"  # this staff member took it now, or had already
    TAKEN = "taken"  # someone else took it first
    UNKNOWN = "unknown"  # no such alert (never, or gone)


class AckError(PayloadError):
    """A staff device's acknowledgement was rejected. ``reason``: ``oversized_payload``,
    ``bad_json``, ``bad_field`` (the detail names it), ``unsupported_version``,
    ``bad_staff_id`` (the topic's last level)."""


class _Ack(msgspec.Struct, frozen=True, kw_only=True):
    v: int
    alert_id: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{12}$")]


_ack_decoder: Final = msgspec.json.Decoder(_Ack)


def parse_ack(staff_id: str, payload: bytes) -> str:
    """The alert id a staff device acknowledges on ``…/staff/acks/{staff_id}``
    (``{"v": 1, "alert_id": "…"}``; unknown fields are ignored)."""
    if not _STAFF_ID.fullmatch(staff_id):
        raise AckError("bad_staff_id", staff_id[:64])
    ack = decode_bounded(_ack_decoder, payload, MAX_ACK_BYTES, AckError)
    if ack.v != 1:
        raise AckError("unsupported_version", str(ack.v))
    return ack.alert_id


class HelpDesk:
    def __init__(
        self,
        *,
        help_after_s: Mapping[str, float] | None = None,
        escalate_after_s: float = 120.0,
        away_after_s: float = 300.0,
    ) -> None:
        self._help_after = {z: s for z, s in (help_after_s or {}).items() if s > 0}
        self._escalate_after = escalate_after_s
        self._away_after = away_after_s
        self.alerts: dict[str, Help] = {}
        self._watches: dict[str, tuple[str, float]] = {}  # shopper: (zone, entered at)
        self._away: dict[str, float] = {}  # shopper with an alert: left their last zone at
        self.dirty = True  # published at start too: clears what a previous run left
        self.on_change: list[Callable[[], None]] = []

    # ----- raising -----

    def ask(self, shopper_id: str, *, name: str, zone: str | None, now: float) -> Help:
        """The shopper's open alert, opened now, moved to ``zone``, or made ``asked``."""
        existing = self._of(shopper_id)
        if existing is not None:
            if existing.zone != zone or existing.reason != "asked":
                existing.zone = zone
                existing.reason = "asked"
                self._changed()
            return existing
        return self._open(shopper_id, name=name, zone=zone, now=now, reason="asked")

    def dwell(self, shopper_id: str, *, name: str, zone: str, now: float) -> Help:
        """Raise a dwell alert for a :class:`Due` watch (the caller checked the consent)."""
        existing = self._of(shopper_id)
        if existing is not None:
            return existing
        return self._open(shopper_id, name=name, zone=zone, now=now, reason="dwell")

    def _open(
        self, shopper_id: str, *, name: str, zone: str | None, now: float, reason: Reason
    ) -> Help:
        alert = Help(
            alert_id=secrets.token_hex(6),
            shopper_id=shopper_id,
            name=name or "A shopper",
            zone=zone,
            since=now,
            reason=reason,
        )
        self.alerts[alert.alert_id] = alert
        self._changed()
        return alert

    # ----- presence -----

    def on_presence(self, event: PresenceEvent) -> None:
        if isinstance(event, ZoneEntered):
            self.entered(event.subject, event.zone, event.t)
        elif isinstance(event, ZoneLeft):
            self.left(event.subject, event.zone, event.t, moved=event.reason == "moved")

    def entered(self, shopper_id: str, zone: str, t: float) -> None:
        self._away.pop(shopper_id, None)
        if zone in self._help_after:
            self._watches[shopper_id] = (zone, t)
        else:
            self._watches.pop(shopper_id, None)
        alert = self._of(shopper_id)
        if alert is not None and alert.reason == "asked" and alert.zone != zone:
            alert.zone = zone
            self._changed()

    def left(self, shopper_id: str, zone: str, t: float, *, moved: bool = False) -> None:
        watch = self._watches.get(shopper_id)
        if watch is not None and watch[0] == zone:
            del self._watches[shopper_id]
        alert = self._of(shopper_id)
        if alert is None:
            return
        if alert.reason == "dwell":
            if alert.zone == zone:
                self._close(alert.alert_id)
            return
        if moved:
            return  # a ZoneEntered for the next zone follows at once
        self._away[shopper_id] = t
        if alert.zone is not None:
            alert.zone = None
            self._changed()

    # ----- time -----

    def tick(self, now: float) -> list[Due]:
        """Let time pass: escalate, time out shoppers gone from the store, and hand back the
        dwell watches now due (each once: not raised again until they enter a zone again)."""
        for alert in self.alerts.values():
            if alert.acknowledged_by is not None:
                continue
            level = min(MAX_LEVEL, int(max(0.0, now - alert.since) // self._escalate_after))
            if level > alert.level:
                alert.level = level
                self._changed()
        for shopper_id, left_at in list(self._away.items()):
            if now - left_at >= self._away_after:
                self.withdraw(shopper_id)
        due: list[Due] = []
        for shopper_id, (zone, entered_at) in list(self._watches.items()):
            if now - entered_at >= self._help_after[zone]:
                del self._watches[shopper_id]
                due.append(Due(shopper_id, zone, entered_at))
        return due

    def not_decided(self, due: Due) -> None:
        """The caller could not check ``due``'s consent (a store error, in the same tick, before
        any presence event): the watch stands again, due at the next tick."""
        self._watches.setdefault(due.shopper_id, (due.zone, due.entered_at))

    # ----- staff -----

    def acknowledge(
        self, alert_id: str, staff_id: str, now: float
    ) -> tuple[AckOutcome, Help | None]:
        """The first acknowledgement wins; the same staff member acknowledging again is a no-op."""
        alert = self.alerts.get(alert_id)
        if alert is None:
            return AckOutcome.UNKNOWN, None
        if alert.acknowledged_by is None:
            alert.acknowledged_by = staff_id
            alert.acknowledged_at = now
            self._changed()
        elif alert.acknowledged_by != staff_id:
            return AckOutcome.TAKEN, alert
        return AckOutcome.ACKNOWLEDGED, alert

    def resolve(self, alert_id: str) -> Help | None:
        """Staff closed the alert; None when there is none by that id."""
        alert = self.alerts.get(alert_id)
        if alert is not None:
            self._close(alert_id)
        return alert

    # ----- withdrawal -----

    def withdraw(self, shopper_id: str) -> None:
        """Everything about the shopper goes: their alerts, their dwell watch, their away clock."""
        self._watches.pop(shopper_id, None)
        self._away.pop(shopper_id, None)
        gone = [a for a, h in self.alerts.items() if h.shopper_id == shopper_id]
        for alert_id in gone:
            del self.alerts[alert_id]
        if gone:
            self._changed()

    def shoppers(self) -> set[str]:
        return {h.shopper_id for h in self.alerts.values()}

    def open_for(self, shopper_id: str) -> list[str]:
        return [h.alert_id for h in self.alerts.values() if h.shopper_id == shopper_id]

    def payload(self) -> bytes:
        """The staff alert state: every open alert, oldest first."""
        alerts = sorted(self.alerts.values(), key=lambda h: h.since)
        return msgspec.json.encode({"v": 1, "alerts": [h.view() for h in alerts]})

    def _of(self, shopper_id: str) -> Help | None:
        return next((h for h in self.alerts.values() if h.shopper_id == shopper_id), None)

    def _close(self, alert_id: str) -> None:
        alert = self.alerts.pop(alert_id)
        if not any(h.shopper_id == alert.shopper_id for h in self.alerts.values()):
            self._away.pop(alert.shopper_id, None)
        self._changed()

    def _changed(self) -> None:
        self.dirty = True
        for changed in self.on_change:
            changed()
