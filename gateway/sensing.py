"""Sensing: from scanner-node messages to presence events, with consent checked per sighting.

For every advertisement: decode the frame (``beacons``); if it is one of the store's fixed
beacons, record that it is alive (and its telemetry) in the fleet; otherwise resolve it to an
opted-in shopper whose ``presence`` consent is active (``gateway.identity``) and feed the
presence tracker; a device that does not resolve is only counted anonymously (keyed hash,
rotating key). Shopper apps that range the store's fixed beacons (iPhones cannot advertise in
the background) report sightings through ``app_sighting``, placed in the beacon's zone with the
same consent check. Untrusted input never raises out of here: a bad message or advertisement
is counted by reason in the metrics and logged at most once a minute per reason, and
processing carries on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from beacons import DecodeError, EddystoneTLM, Frame, decode_advertisement, decode_bleak
from beacons.anonymous import AnonymousCounter, RecentCounter
from beacons.bleak_source import RadioSighting
from beacons.frames import EddystoneEID, EddystoneUID, IBeacon
from beacons.presence import (
    LeftKiosk,
    NearKiosk,
    PresenceEvent,
    PresenceParams,
    PresenceTracker,
    ZoneDwelling,
    ZoneEntered,
    ZoneLeft,
)
from beacons.rssi import Calibration
from gateway.clock import Clock
from gateway.config import Config
from gateway.errors import NodeMessageError, StoreError
from gateway.fleet import BeaconFleet, FixedBeacon
from gateway.identity import Identities, identity_key
from gateway.logs import RateLimitedLog
from gateway.metrics import Metrics
from gateway.mqtt import InboundMessage
from gateway.nodes import NodeBatch, NodeLimits, parse_batch
from gateway.store import Database, Purpose

__all__ = ["Sensing"]

_SHOPPER, _ANONYMOUS, _FIXED, _DROPPED = "shopper", "anonymous", "fixed_beacon", "dropped"
_RADIO = "radio"  # the scanner name of the box's own adapter in presence
_EVENT_KIND: dict[type, str] = {
    ZoneEntered: "entered",
    ZoneDwelling: "dwelling",
    ZoneLeft: "left",
    NearKiosk: "near_kiosk",
    LeftKiosk: "left_kiosk",
}
# Eddystone advertises its power at 0 m; the log-distance model wants it at 1 m (41 dB less,
# as the Eddystone protocol specification says).
_EDDYSTONE_0M_TO_1M_DB = 41


def _power_at_1m(frame: Frame | None) -> int | None:
    if isinstance(frame, IBeacon):
        return frame.tx_power
    if isinstance(frame, EddystoneUID | EddystoneEID):
        return frame.tx_power - _EDDYSTONE_0M_TO_1M_DB
    return None


log = logging.getLogger(__name__)


class Sensing:
    def __init__(
        self,
        *,
        config: Config,
        db: Database,
        clock: Clock,
        metrics: Metrics,
        on_event: Callable[[PresenceEvent], None],
    ) -> None:
        self._db = db
        self._clock = clock
        self._metrics = metrics
        self._on_event = on_event
        self._zone_of_node = config.zone_of_node()
        self._limits = NodeLimits(config.ingest.max_payload_bytes, config.ingest.max_batch)
        p = config.presence
        self._presence = PresenceTracker(
            PresenceParams(
                enter_rssi_dbm=p.enter_rssi_dbm,
                exit_rssi_dbm=p.exit_rssi_dbm,
                leave_after_s=p.leave_after_s,
                switch_margin_db=p.switch_margin_db,
                switch_evidence_db_s=p.switch_evidence_db_s,
                window_s=p.window_s,
                time_constant_s=p.time_constant_s,
                enter_confirm_readings=p.enter_confirm_readings,
                enter_confirm_s=p.enter_confirm_s,
                leave_grace_s=p.leave_grace_s,
                dwell_steps_s=tuple(p.dwell_steps_s),
                tx_at_1m_dbm=p.tx_at_1m_dbm,
                path_loss_exponent=p.path_loss_exponent,
                near_m=p.near_m,
                near_exit_m=p.near_exit_m,
            ),
            kiosk_of_scanner={k.scanner: k.id for k in config.kiosks if k.scanner},
            calibration=Calibration(p.scanner_offsets_db),
        )
        self._anonymous = AnonymousCounter(offset_s=config.api.utc_offset_h * 3600.0)
        self._recent = RecentCounter()
        # When each scanner node's last accepted message arrived (for the staff dashboard).
        self.node_heard: dict[str, float] = {}
        self.identities = Identities(db)
        self.fleet = BeaconFleet(
            FixedBeacon(b.id, b.zone, b.identity, b.address, b.silent_after_s, b.low_battery_mv)
            for b in config.beacons
        )
        self._nodes_prefix = f"{config.broker.topic_prefix}/{config.store_id}/nodes/"
        self._warn = RateLimitedLog(log)
        # Labelled counters resolved once: the per-advertisement path only increments.
        m = metrics
        self._node_adverts = m.adverts.labels(source="node")
        self._app_adverts = m.adverts.labels(source="app")
        self._anonymous_sightings = m.sightings.labels(kind="anonymous")
        self._shopper_sightings = m.sightings.labels(kind="shopper")
        self._fixed_sightings = m.sightings.labels(kind="fixed_beacon")
        self._radio_adverts = m.adverts.labels(source="radio")
        self._sightings_of = {
            _SHOPPER: self._shopper_sightings,
            _ANONYMOUS: self._anonymous_sightings,
            _FIXED: self._fixed_sightings,
        }
        self._radio_zone = config.radio.zone

    @property
    def subscriptions(self) -> list[tuple[str, int]]:
        return [(f"{self._nodes_prefix}+/adv", 0)]

    def shoppers(self) -> list[str]:
        """The recognised shoppers presence is tracking now."""
        return self._presence.subjects()

    def zone_of(self, shopper_id: str) -> str | None:
        return self._presence.zone_of(shopper_id)

    def anonymous_store(self, now: float) -> tuple[int, list[int]]:
        """Distinct anonymous devices in the whole store today (each once, whatever the zones
        that heard it), and by the local hour each was first heard."""
        return self._anonymous.total(now), self._anonymous.hourly(now)

    def occupancy(self, now: float) -> dict[str, int]:
        """Anonymous devices per zone heard in the last two minutes (how full it is now)."""
        return self._recent.counts(now)

    def handle(self, message: InboundMessage) -> None:
        """One MQTT message from the store broker."""
        topic = message.topic
        if not topic.startswith(self._nodes_prefix) or not topic.endswith("/adv"):
            self._drop("broker", "unexpected_topic", "message on an unexpected topic", topic=topic)
            return
        node = topic[len(self._nodes_prefix) : -len("/adv")]
        zone = self._zone_of_node.get(node)
        if zone is None:
            self._drop("node", "unknown_node", "message from a node in no zone", node=node)
            return
        try:
            batch = parse_batch(node, message.payload, self._limits)
        except NodeMessageError as exc:
            self._drop(
                "node", exc.reason, "scanner-node message rejected", node=node, detail=exc.detail
            )
            return
        self._metrics.node_messages.inc()
        self.node_heard[node] = self._clock.now()
        self.ingest(zone, batch)

    def ingest(self, zone: str, batch: NodeBatch) -> None:
        now = self._clock.now()
        counts = {_SHOPPER: 0, _ANONYMOUS: 0, _FIXED: 0, _DROPPED: 0}
        for advert in batch.adverts:
            t = now - advert.age_ms / 1000.0
            kind = self.sight(
                zone, advert.data, advert.rssi, t, addr=advert.addr, scanner=batch.node
            )
            counts[kind] += 1
        # Counted once per batch, not per advertisement: this is the hottest loop of the box.
        self._node_adverts.inc(len(batch.adverts))
        self._shopper_sightings.inc(counts[_SHOPPER])
        self._anonymous_sightings.inc(counts[_ANONYMOUS])
        self._fixed_sightings.inc(counts[_FIXED])

    def sight(self, zone: str, data: bytes, rssi: int, t: float, *, addr: str, scanner: str) -> str:
        """One advertisement heard in ``zone`` by ``scanner`` at time ``t``; returns what it
        was: a shopper's, an anonymous device's, a fixed beacon's, or dropped."""
        try:
            frame = decode_advertisement(data)
        except DecodeError as exc:
            self._drop("node", "undecodable_advert", "advertisement rejected", detail=str(exc))
            return _DROPPED
        return self._place(
            zone, frame, rssi, t, addr=addr, device=addr.encode() or data, scanner=scanner
        )

    def radio_sighting(self, sighting: RadioSighting) -> None:
        """One advertisement heard by the box's own radio (bleak's shape, already split)."""
        self._radio_adverts.inc()
        try:
            frame = decode_bleak(sighting.manufacturer_data, sighting.service_data)
        except DecodeError as exc:
            self._drop("radio", "undecodable_advert", "advertisement rejected", detail=str(exc))
            return
        if self._radio_zone:
            kind = self._place(
                self._radio_zone,
                frame,
                sighting.rssi,
                sighting.t,
                addr=sighting.address,
                device=sighting.address.encode(),
                scanner=_RADIO,
            )
        elif frame is not None and self._fixed_beacon(
            frame, identity_key(frame), sighting.address, sighting.t
        ):
            kind = _FIXED  # a radio in a back office only watches the beacon fleet
        else:
            return
        self._sightings_of[kind].inc()

    def _place(
        self,
        zone: str,
        frame: Frame | None,
        rssi: int,
        t: float,
        *,
        addr: str,
        device: bytes,
        scanner: str,
    ) -> str:
        key = identity_key(frame) if frame is not None else None
        if frame is not None and self._fixed_beacon(frame, key, addr, t):
            return _FIXED
        try:
            shopper = self.identities.resolve(frame, addr, t, key=key)
        except StoreError as exc:
            self._drop("store", "store_read_failed", "identity lookup failed", detail=str(exc))
            return _DROPPED
        if shopper is None:
            self._anonymous.observe(zone, device, t)
            self._recent.observe(zone, device, t, rssi)
            return _ANONYMOUS
        self._emit(
            self._presence.observe(
                shopper, zone, rssi, t, scanner=scanner, tx_power=_power_at_1m(frame)
            )
        )
        return _SHOPPER

    def _fixed_beacon(self, frame: Frame, key: str | None, addr: str, t: float) -> bool:
        """Record a frame from one of the store's own beacons; True when it was one."""
        if isinstance(frame, EddystoneTLM):
            return bool(addr) and self.fleet.telemetry(addr, frame, t)
        beacon = self.fleet.by_identity(key) if key is not None else None
        if beacon is None:
            return False
        self.fleet.heard(beacon, t)
        return True

    def app_sighting(self, shopper_id: str, frame: Frame, rssi: int, t: float) -> str:
        """A fixed beacon the shopper's app heard. Returns the outcome: ``placed``,
        ``unknown_beacon`` (not one of this store's beacons) or ``no_consent``."""
        self._app_adverts.inc()
        key = identity_key(frame)
        beacon: FixedBeacon | None = self.fleet.by_identity(key) if key is not None else None
        if beacon is None:
            self._metrics.dropped.labels(source="app", reason="unknown_beacon").inc()
            return "unknown_beacon"
        consent = self._db.consent(shopper_id)
        if consent is None or not consent.allows(Purpose.PRESENCE, t):
            self._metrics.dropped.labels(source="app", reason="no_consent").inc()
            return "no_consent"
        self._shopper_sightings.inc()
        self._emit(
            self._presence.observe(
                shopper_id, beacon.zone, rssi, t, scanner=beacon.id, tx_power=_power_at_1m(frame)
            )
        )
        return "placed"

    def tick(self) -> None:
        """Called about once a second: expires silent shoppers and refreshes the counts."""
        now = self._clock.now()
        try:
            self.identities.maintain(now)
        except StoreError as exc:
            self._drop("store", "store_read_failed", "identity reload failed", detail=str(exc))
        self._emit(self._presence.tick(now))
        for zone, count in self._anonymous.counts(now).items():
            self._metrics.anonymous_devices.labels(zone=zone).set(count)
        if self._anonymous.saturated:
            self._warn.warning(
                "anonymous_saturated",
                "anonymous counting is full for today: new devices are not counted",
            )

    def forget(self, shopper_id: str) -> None:
        """Consent withdrawn: out of the resolvers and out of every zone, at once."""
        self.identities.forget(shopper_id)
        self._emit(self._presence.forget(shopper_id, self._clock.now()))

    def _emit(self, events: list[PresenceEvent]) -> None:
        for event in events:
            self._metrics.presence_events.labels(kind=_EVENT_KIND[type(event)]).inc()
            self._on_event(event)

    def _drop(self, source: str, reason: str, msg: str, **fields: object) -> None:
        self._metrics.dropped.labels(source=source, reason=reason).inc()
        self._warn.warning(reason, msg, source=source, **fields)
