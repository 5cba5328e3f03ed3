"""What the store tells HQ: visits and impressions, through the outbox, privacy first.

Each event is stamped with the hybrid logical clock and committed to the outbox by the single
writer; the relay (``gateway.sync.relay``) takes it from there. A shopper's id goes into an
event only with their ``analytics`` consent, read at the moment of the event; otherwise the
event is anonymous (the zone or the offer, no one's id). Events made while the clock was not
yet trusted carry ``"clock_trusted": false`` so HQ can discount their times.

Nothing is recorded when the HQ link is off: there would be no one to send it to.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from beacons.presence import PresenceEvent, ZoneEntered
from gateway.errors import StoreError
from gateway.kiosk import KioskView
from gateway.store import Database, Purpose, Writer
from gateway.store.hlc import HybridClock, persist_due, persist_op, physical_ms
from gateway.sync.outbox import enqueue_op

__all__ = ["EventRecorder"]

log = logging.getLogger(__name__)


class EventRecorder:
    def __init__(
        self, *, db: Database, writer: Writer, store_id: str, hlc: HybridClock, enabled: bool
    ) -> None:
        self._db = db
        self._writer = writer
        self._store = store_id
        self._hlc = hlc
        self._enabled = enabled
        self._persisted = hlc.last
        self.on_enqueued: list[Any] = []

    def presence(self, event: PresenceEvent) -> None:
        if self._enabled and isinstance(event, ZoneEntered):
            body: dict[str, Any] = {"zone": event.zone}
            if self._analytics(event.subject, event.t):
                body["shopper"] = event.subject
            self._record("visit", body)

    def impression(self, view: KioskView, shopper: str | None, now: float) -> None:
        if not self._enabled or view.offer_id is None:
            return
        body: dict[str, Any] = {"kiosk": view.kiosk_id, "offer": view.offer_id}
        body["personal"] = view.personal
        if view.personal and shopper is not None and self._analytics(shopper, now):
            body["shopper"] = shopper
        self._record("impression", body)

    def _analytics(self, shopper: str, now: float) -> bool:
        try:
            consent = self._db.consent(shopper)
        except StoreError:
            return False
        return consent is not None and consent.allows(Purpose.ANALYTICS, now)

    def _record(self, event_type: str, body: dict[str, Any]) -> None:
        at, trusted = self._hlc.stamp()
        body["hlc"] = at  # the causal order; the event's ``at`` is its wall time in ms
        if not trusted:
            body["clock_trusted"] = False
        future = self._writer.submit(
            enqueue_op(self._db, self._store, event_type, body, physical_ms(at), perishable=True)
        )
        future.add_done_callback(self._written)
        if persist_due(at, self._persisted):
            self._persisted = at
            self._writer.submit(persist_op(self._db, at)).add_done_callback(self._written)

    def _written(self, future: asyncio.Future[Any]) -> None:
        if future.cancelled():
            return
        exc = future.exception()
        if exc is not None:
            log.error("event not recorded", extra={"error": str(exc)})
            return
        for callback in self.on_enqueued:
            callback()

    async def aclose(self) -> None:
        """Persist the clock one last time (shutdown)."""
        try:
            await self._writer.write(persist_op(self._db, self._hlc.last))
        except StoreError as exc:
            log.error("clock not persisted at shutdown", extra={"error": str(exc)})
