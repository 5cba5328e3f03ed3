"""The composition root: every resource the gateway holds is created, started and closed here.

``Gateway`` only stores its parts in ``__init__``; ``running()`` opens the store, starts the
writer thread, the broker link and the background loops in one ``TaskGroup``, and closes all of
it in reverse order on the way out. The HTTP app (``gateway.http``) enters ``running()`` from
Starlette's lifespan, so one ``uvicorn`` process owns one gateway and nothing lives in a module
global.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgspec

from beacons.backoff import Backoff
from beacons.bleak_source import BleakSource
from beacons.presence import PresenceEvent
from gateway import __version__
from gateway.clock import Clock, SystemClock
from gateway.config import Config
from gateway.devices import Devices
from gateway.engine import KioskDecision
from gateway.errors import LinkError, StoreError
from gateway.events import EventRecorder
from gateway.fleet import BeaconAlert
from gateway.helpdesk import AckError, AckOutcome, parse_ack
from gateway.kiosk import KioskDirector, KioskHub, KioskView
from gateway.linkstate import LinkState
from gateway.logs import RateLimitedLog
from gateway.metrics import Metrics
from gateway.moments import Moments
from gateway.mqtt import MqttLink, Will
from gateway.render import Renderer, templates_from
from gateway.sensing import Sensing
from gateway.shoppers import Shoppers
from gateway.store import Database, Writer
from gateway.store.backup import hold_lock
from gateway.store.hlc import resume
from gateway.sync.apply import sweep_tombstones_op
from gateway.sync.service import HqSync
from gateway.today import Today

__all__ = ["Gateway"]

log = logging.getLogger(__name__)

TICK_STALE_S = 10.0  # a tick this late stops the watchdog pings (``Gateway.beating``)


class Gateway:
    def __init__(self, config: Config, *, clock: Clock | None = None) -> None:
        self.config = config
        self.clock: Clock = clock or SystemClock()
        self.ticked_at = time.monotonic()  # the tick's last start (``beating``)
        self.metrics = Metrics()
        self.db = Database(config.data_path / "store", map_size=config.store.map_size_mb << 20)
        self.writer = Writer(self.db, batch=config.store.commit_batch)
        self.renderer = Renderer()
        self.hub = KioskHub([k.id for k in config.kiosks])
        self.moments = Moments(
            db=self.db,
            utc_offset_h=config.api.utc_offset_h,
            visit_gap_s=config.api.visit_gap_min * 60.0,
        )
        self.today = Today(db=self.db, writer=self.writer, utc_offset_h=config.api.utc_offset_h)
        self.kiosks = KioskDirector(
            kiosks=config.kiosks,
            store_name=config.store_id,
            db=self.db,
            renderer=self.renderer,
            hub=self.hub,
            clock=self.clock,
            metrics=self.metrics,
            on_view=self._on_view,
            moments=self.moments,
            social_proof_floor=config.engine.social_proof_floor,
        )
        self.sensing = Sensing(
            config=config,
            db=self.db,
            clock=self.clock,
            metrics=self.metrics,
            on_event=self._on_presence,
        )
        self.events: EventRecorder | None = None  # needs the store's clock: made in running()
        self.shoppers = Shoppers(
            config=config,
            db=self.db,
            writer=self.writer,
            clock=self.clock,
            metrics=self.metrics,
            kiosks=self.kiosks,
            sensing=self.sensing,
            moments=self.moments,
            renderer=self.renderer,
            today=self.today,
        )
        self.shoppers.helpdesk.on_change.append(self._help_changed)
        self._help_soon = False
        self.shoppers.on_phone.append(self._push_phone)
        self.radio: BleakSource | None = None
        if config.radio.enabled:
            self.radio = BleakSource(
                config.radio.adapter,
                queue_size=config.radio.queue_size,
                watchdog_s=config.radio.watchdog_s,
                clock=self.clock.now,
            )
        self.sync: HqSync | None = None
        if config.hq.enabled:
            self.sync = HqSync(
                config, db=self.db, writer=self.writer, clock=self.clock, metrics=self.metrics
            )
        self.devices = Devices(
            prefix=config.broker.topic_prefix,
            store_id=config.store_id,
            db=self.db,
            writer=self.writer,
            clock=self.clock,
            metrics=self.metrics,
            moments=self.moments,
            tell_hq=config.hq.enabled,
            window_s=config.engine.attribution_days * 86_400.0,
            utc_offset_h=config.api.utc_offset_h,
            nodes=frozenset(config.zone_of_node()),
            today=self.today,
        )
        self.moments.stock = self.devices.stock.in_stock
        self.devices.on_signal.append(self._on_signal)
        status_topic = f"{config.broker.topic_prefix}/{config.store_id}/gateway/status"
        self.link = MqttLink(
            name="store",
            host=config.broker.host,
            port=config.broker.port,
            client_id=config.client_id,
            subscriptions=[
                *self.sensing.subscriptions,
                *self.devices.subscriptions,
                (f"{config.broker.topic_prefix}/{config.store_id}/staff/acks/+", 1),
            ],
            keepalive=config.broker.keepalive_s,
            connect_timeout=config.broker.connect_timeout_s,
            backoff=Backoff(config.broker.backoff_min_s, config.broker.backoff_max_s),
            session_expiry=config.broker.session_expiry_s,
            username=config.broker.username,
            password=config.broker.password,
            will=Will(status_topic, _status_payload("offline")),
            birth=Will(status_topic, _status_payload("online")),
            inbox_size=config.ingest.queue_size,
            on_state=self._on_link_state,
        )
        self._alerts_prefix = f"{config.broker.topic_prefix}/{config.store_id}/alerts/beacons/"
        self._help_topic = f"{config.broker.topic_prefix}/{config.store_id}/staff/alerts"
        self._acks_prefix = f"{config.broker.topic_prefix}/{config.store_id}/staff/acks/"
        self._warn = RateLimitedLog(log)
        self._phone_topic = f"{config.broker.topic_prefix}/{config.store_id}/phone/messages"
        # Beacon alerts not yet handed to the broker; the latest per beacon wins (they are states).
        self._pending_alerts: dict[str, BeaconAlert] = {}
        self.stopping = asyncio.Event()
        self.started_at = 0.0

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Gateway]:
        self.started_at = time.time()
        # One gateway per store: a second one (or a restore) is refused while this one runs.
        with hold_lock(self.db.path):
            async with self._store_open():
                yield self

    @asynccontextmanager
    async def _store_open(self) -> AsyncIterator[None]:
        self.db.open()
        try:
            self.writer.start()
            hlc = resume(self.db, self.clock)  # one clock for every stamp this store issues
            self.events = EventRecorder(
                db=self.db,
                writer=self.writer,
                store_id=self.config.store_id,
                hlc=hlc,
                enabled=self.sync is not None,
            )
            await self.shoppers.start(hlc)
            self.moments.restore()
            if self.sync is not None:
                self.events.on_enqueued.append(self.sync.relay.wake)
                self.shoppers.on_enqueued.append(self.sync.relay.wake)
            try:
                self.sensing.identities.maintain(self.clock.now())
                self._load_templates()
                self.kiosks.refresh_all()
                async with asyncio.TaskGroup() as tasks:
                    tasks.create_task(self.link.run(), name="store-broker-link")
                    consumer = tasks.create_task(self._consume(), name="store-broker-consumer")
                    ticker = tasks.create_task(self._tick(), name="presence-ticker")
                    keeper = tasks.create_task(self._housekeeping(), name="housekeeping")
                    if self.sync is not None:
                        tasks.create_task(self.sync.run(), name="hq-sync")
                    radio_tasks = []
                    if self.radio is not None:
                        radio_tasks = [
                            tasks.create_task(self.radio.run(), name="radio-scanner"),
                            tasks.create_task(self._consume_radio(), name="radio-consumer"),
                        ]
                    log.info(
                        "gateway started",
                        extra={"version": __version__, "store": self.config.store_id},
                    )
                    try:
                        yield
                    finally:
                        self.stopping.set()
                        await self.link.aclose()
                        if self.sync is not None:
                            await self.sync.aclose()
                        if self.radio is not None:
                            await self.radio.aclose()
                        consumer.cancel()
                        ticker.cancel()
                        keeper.cancel()
                        for task in radio_tasks[1:]:
                            task.cancel()
            finally:
                await self._last_writes()
                await self.writer.aclose()
        finally:
            self.db.close()
            log.info("gateway stopped", extra={"store": self.config.store_id})

    def health(self) -> dict[str, Any]:
        store: dict[str, Any]
        try:
            store = {"state": "ok", **self.db.stat()}
        except StoreError as exc:
            store = {"state": "failed", "detail": str(exc)}
        broker = self.link.status()
        components = {
            "store": store,
            "broker": broker,
            "radio": self.radio.status() if self.radio is not None else {"state": "disabled"},
            "hq": self.sync.status() if self.sync is not None else {"state": "not_configured"},
            "beacons": self.sensing.fleet.status(self.clock.now()),
            "kiosks": {
                "state": "ok",
                "count": len(self.config.kiosks),
                "streams": self.hub.clients(),
            },
        }
        healthy = all(c["state"] in _HEALTHY for c in components.values())
        return {
            "status": "ok" if healthy else "degraded",
            "version": __version__,
            "store_id": self.config.store_id,
            "uptime_s": round(time.time() - self.started_at, 1),
            "components": components,
        }

    def _on_presence(self, event: PresenceEvent) -> None:
        self.moments.on_presence(event)  # first: the kiosk and the phone decide in it
        self.kiosks.on_presence(event)
        # The phone after the screen: the kiosk's live stream, woken by the view just
        # published, goes out before the phone's decision and its reads run.
        asyncio.get_running_loop().call_soon(self.shoppers.on_presence, event)
        self.shoppers.helpdesk.on_presence(event)  # dwell watches, alerts following them
        self.today.on_presence(event)  # a first entry today: one more shopper recognised
        if self.events is not None:
            self.events.presence(event)

    def _help_changed(self) -> None:
        """The alerts changed: publish once, right after what changed them (escalations,
        withdrawals and raises in one tick make one message, not one each)."""
        if not self._help_soon:
            self._help_soon = True
            asyncio.get_running_loop().call_soon(self._publish_help_soon)

    def _publish_help_soon(self) -> None:
        self._help_soon = False
        self._publish_help()

    def _publish_help(self) -> None:
        """Staff devices follow ``{prefix}/{store}/staff/alerts``: the retained list of open
        help requests, republished whole on every change (and retried from the tick while
        the broker is away)."""
        desk = self.shoppers.helpdesk
        if not desk.dirty or not self.link.is_up:
            return
        try:
            self.link.publish(self._help_topic, desk.payload(), qos=1, retain=True)
        except LinkError as exc:
            log.warning("staff alerts not published yet", extra={"error": str(exc)})
            return
        desk.dirty = False

    def _load_templates(self) -> None:
        """HQ's templates (checked on arrival) into the renderer; unchanged versions cost
        nothing. A failure leaves the loaded ones in use."""
        try:
            refused = self.renderer.load_hq(templates_from(self.db))
        except StoreError as exc:
            log.warning("templates not reloaded", extra={"error": str(exc)})
            return
        for template_id, why in refused.items():
            log.warning("HQ template not used", extra={"template": template_id, "why": why})

    def _on_signal(self, signal: str) -> None:
        """A device signal is a moment for everyone in the store: screens and phones
        decide again for it (offers with a matching ``signal`` trigger may now show)."""
        now = self.clock.now()
        for shopper_id in self.moments.on_signal(signal, now):
            self.shoppers.on_signal(shopper_id, now)
        self.kiosks.refresh_all()

    def _push_phone(self, payload: bytes) -> None:
        """The retailer's messaging service follows ``{prefix}/{store}/phone/messages`` to
        push a queued card to the shopper's phone (QoS 1, not retained: a card is news);
        the app can also collect it from ``GET /v1/me/messages``."""
        try:
            self.link.publish(self._phone_topic, payload, qos=1)
        except LinkError as exc:
            log.info("phone card not pushed: the app collects it", extra={"error": str(exc)})

    def _on_view(self, view: KioskView, shopper: str | None, decision: KioskDecision) -> None:
        self.shoppers.on_kiosk_view(view, shopper, decision)
        if self.events is not None:
            self.events.impression(view, decision.shopper_id, self.clock.now())

    async def _consume(self) -> None:
        inbox = self.link.inbox
        while True:
            message = await inbox.get()
            try:
                if message.topic.startswith(self._acks_prefix):
                    self._staff_ack(message.topic[len(self._acks_prefix) :], message.payload)
                elif not self.devices.handle(message):
                    self.sensing.handle(message)
            except Exception as exc:  # noqa: BLE001 (a bug on one message must not stop the store)
                self.metrics.dropped.labels(source="broker", reason="handler_failed").inc()
                self._warn.warning(
                    "handler_failed",
                    "broker message not handled",
                    topic=message.topic[:200],
                    error=f"{type(exc).__name__}: {exc}",
                )

    def _staff_ack(self, staff_id: str, payload: bytes) -> None:
        """A staff device took an alert (``{prefix}/{store}/staff/acks/{staff_id}``); the
        device learns the outcome from the retained alert state. A malformed message, or one
        for an alert that is gone or taken, is counted in ``moments_dropped_total{source=
        "staff"}`` and logged once a minute per reason."""
        try:
            alert_id = parse_ack(staff_id, payload)
        except AckError as exc:
            self._drop_ack(exc.reason, exc.detail, staff_id[:64])
            return
        outcome, _alert = self.shoppers.helpdesk.acknowledge(alert_id, staff_id, self.clock.now())
        if outcome is AckOutcome.UNKNOWN:
            self._drop_ack("unknown_alert", alert_id, staff_id)
        elif outcome is AckOutcome.TAKEN:
            self._drop_ack("already_acknowledged", alert_id, staff_id)

    def _drop_ack(self, reason: str, detail: str, staff_id: str) -> None:
        self.metrics.dropped.labels(source="staff", reason=reason).inc()
        self._warn.warning(
            f"staff.{reason}", "staff message dropped", detail=detail, staff=staff_id
        )

    async def _consume_radio(self) -> None:
        assert self.radio is not None
        sightings = self.radio.sightings
        while True:
            self.sensing.radio_sighting(await sightings.get())

    async def _last_writes(self) -> None:
        """Before the writer stops: the clock and what the learner learned, kept."""
        if self.events is not None:
            await self.events.aclose()
        await self.today.drain()
        try:
            await self.writer.write(self.moments.save_op())
        except StoreError as exc:
            log.error("learner counts not kept", extra={"error": str(exc)})

    async def _housekeeping(self) -> None:
        """Hourly retention: the shopper data's sweeps, and erasure tombstones when no HQ
        sync runs (HQ sync sweeps its own, and then forces the full resync it needs)."""
        retention_s = self.config.hq.tombstone_days * 86_400.0
        while True:
            try:
                await self.shoppers.housekeeping()
                await self.writer.write(self.moments.save_op())
                if self.sync is None:
                    await self.writer.write(
                        sweep_tombstones_op(self.db, self.clock.now(), retention_s=retention_s)
                    )
            except StoreError as exc:
                log.error("housekeeping failed", extra={"error": str(exc)})
            await asyncio.sleep(HOUSEKEEPING_EVERY_S)

    def beating(self, within_s: float = TICK_STALE_S) -> bool:
        """Has the once-a-second tick run lately? (systemd's watchdog is pinged only then: a
        tick that died or hangs gets the gateway restarted.)"""
        return time.monotonic() - self.ticked_at <= within_s

    async def _tick(self) -> None:
        while True:
            self.ticked_at = time.monotonic()
            await asyncio.sleep(1.0)
            self.tick_once()

    def tick_once(self) -> None:
        """The gateway's once-a-second work, whether or not anyone looks."""
        self.sensing.tick()
        self._load_templates()
        try:
            self.shoppers.recheck(self.clock.now())
        except StoreError as exc:  # a failed read this second: the next tick tries again
            self._warn.warning("recheck_failed", "consent recheck failed", error=str(exc))
        self._publish_help()
        # Re-decides every screen once a second: offers that start or end, consents that
        # change while a shopper stands there; unchanged views are not re-sent.
        self.kiosks.refresh_all()
        for alert in self.sensing.fleet.check(self.clock.now()):
            log.log(
                logging.INFO if alert.condition == "ok" else logging.WARNING,
                "fixed beacon condition changed",
                extra={
                    "beacon": alert.beacon,
                    "zone": alert.zone,
                    "condition": alert.condition,
                    "previous": alert.previous,
                    "battery_mv": alert.battery_mv,
                },
            )
            self._pending_alerts[alert.beacon] = alert
        self._flush_alerts()

    def _flush_alerts(self) -> None:
        while self._pending_alerts and self.link.is_up:
            beacon, alert = next(iter(self._pending_alerts.items()))
            payload = msgspec.json.encode(
                {
                    "v": 1,
                    "beacon": alert.beacon,
                    "zone": alert.zone,
                    "condition": alert.condition,
                    "previous": alert.previous,
                    "t": alert.t,
                    "battery_mv": alert.battery_mv,
                }
            )
            try:
                self.link.publish(self._alerts_prefix + beacon, payload, qos=1, retain=True)
            except LinkError as exc:
                log.warning("beacon alert not published yet", extra={"error": str(exc)})
                return
            del self._pending_alerts[beacon]

    def _on_link_state(self, state: LinkState) -> None:
        self.metrics.link_up.labels(link="store").set(1 if state is LinkState.UP else 0)


HOUSEKEEPING_EVERY_S = 3600.0

# Component states that do not make the gateway degraded.
_HEALTHY = frozenset({"ok", "up", "scanning", "disabled", "not_configured", "starting"})


def _status_payload(state: str) -> bytes:
    return msgspec.json.encode({"v": 1, "state": state, "version": __version__})
