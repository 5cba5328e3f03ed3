"""Shoppers waiting for staff (sans-I/O, on the event loop).

A shopper with ``staff_assist`` who asks for help (``POST /v1/me/help``) gets one open request;
asking again from elsewhere moves it. It goes when they withdraw the purpose (on this store,
through HQ, or by expiry) or are erased. What staff see is the whole list, republished on
every change as one retained MQTT message (``payload``): a name (nickname, else first name),
the zone and since when, nothing else; a request that went leaves nothing behind, and a
restart, which starts with none, clears what an earlier run left on the broker.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass

import msgspec

__all__ = ["Help", "HelpDesk"]


@dataclass(slots=True)
class Help:
    """A shopper asked for help (staff_assist granted); withdrawn when they withdraw it."""

    alert_id: str
    shopper_id: str
    name: str
    zone: str | None
    since: float


class HelpDesk:
    def __init__(self) -> None:
        self.alerts: dict[str, Help] = {}
        self.dirty = True  # published at start too: clears what a previous run left
        self.on_change: list[Callable[[], None]] = []

    def ask(self, shopper_id: str, *, name: str, zone: str | None, now: float) -> Help:
        """The shopper's open request, opened now or moved to ``zone``."""
        existing = next((h for h in self.alerts.values() if h.shopper_id == shopper_id), None)
        if existing is not None:
            if existing.zone != zone:
                existing.zone = zone
                self._changed()
            return existing
        alert = Help(
            alert_id=secrets.token_hex(6),
            shopper_id=shopper_id,
            name=name or "A shopper",
            zone=zone,
            since=now,
        )
        self.alerts[alert.alert_id] = alert
        self._changed()
        return alert

    def withdraw(self, shopper_id: str) -> None:
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
        """The staff alert state: every open request, oldest first."""
        alerts = sorted(self.alerts.values(), key=lambda h: h.since)
        return msgspec.json.encode(
            {
                "v": 1,
                "alerts": [
                    {"alert_id": h.alert_id, "name": h.name, "zone": h.zone, "since": h.since}
                    for h in alerts
                ],
            }
        )

    def _changed(self) -> None:
        self.dirty = True
        for changed in self.on_change:
            changed()
