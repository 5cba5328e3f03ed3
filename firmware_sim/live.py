"""Run a scenario against a live gateway: the store's devices on the broker, apps over HTTP.

Each scanner node is its own MQTT client, as an ESP32 is: it announces itself with a
retained ``online`` status, leaves a retained ``offline`` will for when it drops, publishes
its batches (QoS 0) and, every ``telemetry_s``, its telemetry. Shelves, the door counter and
the tills publish on one device link (stock retained at QoS 1, redemptions at QoS 1, door
counts at QoS 0); a staff device on that link subscribes to the staff alerts, and the
retailer's messaging service (also that link) reads the phone cards, which is how the
simulation learns which shopper was shown which offer (and redeems it likelier). iPhone
apps post their beacon sightings and help taps to the HTTP API with their own tokens.

Before the first step the app users' profiles, consents and EID keys are written into the
gateway's store (as HQ would have sent them), and their tokens are issued from the store's
secret, as ``moments token issue`` does. ``--speed`` runs simulated time faster than the
wall clock; stamps (node ``ts``, ages, sighting times, EIDs) follow the wall clock, so the
gateway sees a store where everything happens ``speed`` times faster.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from firmware_sim.bluez import FakeBlueZ
from firmware_sim.floorplan import Scenario
from firmware_sim.http_client import HttpClient, HttpError
from firmware_sim.links import default_base_url, sim_link
from firmware_sim.seeding import seed_records
from firmware_sim.world import (
    AppSightings,
    DoorCount,
    HelpTap,
    NodeBatchOut,
    NodeTelemetry,
    Output,
    RadioHeard,
    RedemptionOut,
    StockReport,
    World,
)
from gateway.config import Config
from gateway.doors import DoorCount as Counted
from gateway.doors import encode_door_count
from gateway.errors import LinkDownError
from gateway.mqtt import MqttLink, Will
from gateway.node_status import encode_status, encode_telemetry
from gateway.nodes import encode_batch
from gateway.redemptions import Redemption, encode_redemption
from gateway.stock import StockItem, encode_stock

__all__ = ["LiveReport", "run_live"]

log = logging.getLogger(__name__)

_TICK_S = 0.1
_PROGRESS_S = 10.0
_TOKEN_SLACK_S = 3600.0
_RADIO_SWEEP_S = 10.0
_RADIO_EXPIRE_S = 30.0  # BlueZ forgets an unconnected device after 30 s by default


class _Card(msgspec.Struct, frozen=True):
    offer_id: str


class _PhoneMessage(msgspec.Struct, frozen=True):
    shopper: str
    card: _Card


class _Alert(msgspec.Struct, frozen=True):
    alert_id: str


class _Alerts(msgspec.Struct, frozen=True):
    alerts: list[_Alert]


_phone_message = msgspec.json.Decoder(_PhoneMessage)
_staff_alerts = msgspec.json.Decoder(_Alerts)


@dataclass(slots=True)
class LiveReport:
    rounds: int = 0
    sent: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    offers_shown: int = 0
    staff_alerts: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "rounds": self.rounds,
            "sent": dict(self.sent),
            "errors": dict(self.errors),
            "offers_shown": self.offers_shown,
            "staff_alerts": self.staff_alerts,
        }


async def run_live(
    config: Config,
    scenario: Scenario,
    *,
    speed: float = 1.0,
    repeat: bool = False,
    truth_path: Path | None = None,
    base_url: str = "",
    warm_up_s: float = 0.0,
    bluez: FakeBlueZ | None = None,
    progress: Callable[[str], None] | None = None,
) -> LiveReport:
    """Run the scenario (once, or round after round with a new seed each) against the
    gateway of ``config``; returns what was sent."""
    if speed <= 0:
        raise ValueError("speed must be positive")
    report = LiveReport()
    prefix = f"{config.broker.topic_prefix}/{config.store_id}"
    devices = sim_link(config, f"moments-sim-devices-{config.store_id}", ())
    staff_topic = f"{prefix}/staff/alerts"
    phone_topic = f"{prefix}/phone/messages"
    listener = sim_link(
        config, f"moments-sim-staff-{config.store_id}", ((staff_topic, 1), (phone_topic, 1))
    )
    nodes = {
        n.id: sim_link(
            config,
            n.id,
            (),
            will=Will(f"{prefix}/nodes/{n.id}/status", encode_status(n.id, "offline")),
            birth=Will(f"{prefix}/nodes/{n.id}/status", encode_status(n.id, "online")),
        )
        for n in scenario.nodes
    }
    links = [devices, listener, *nodes.values()]
    tasks = [asyncio.create_task(link.run(), name=f"sim-{link.name}") for link in links]
    http = HttpClient(base_url or default_base_url(config), connections=8, timeout_s=5.0)
    round_ = 0
    try:
        while True:
            seeded = scenario.with_changes(seed=scenario.seed + round_)
            world = World(seeded, start_epoch=time.time(), time_factor=speed)
            tokens = await _seed(config, world)
            drive = _Drive(
                world=world,
                report=report,
                devices=devices,
                nodes=nodes,
                http=http,
                tokens=tokens,
                prefix=prefix,
                bluez=bluez,
            )
            listen = asyncio.create_task(drive.listen(listener), name="sim-listen")
            try:
                await drive.run(progress, warm_up_s=warm_up_s)
            finally:
                listen.cancel()
                await asyncio.gather(listen, return_exceptions=True)
            report.rounds += 1
            if truth_path is not None:
                _write_truth(truth_path, world, append=round_ > 0)
            round_ += 1
            if not repeat:
                return report
    finally:
        await http.aclose()
        for node, link in nodes.items():
            # A node that shuts down cleanly says so (its will is for when it cannot).
            with contextlib.suppress(LinkDownError):
                link.publish(
                    f"{prefix}/nodes/{node}/status",
                    encode_status(node, "offline"),
                    qos=1,
                    retain=True,
                )
        await asyncio.sleep(0.2)
        for link in links:
            await link.aclose()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _seed(config: Config, world: World) -> dict[str, str]:
    """Write what HQ holds about the app users; issue each a token from the store's secret."""
    ids = [s.shopper_id for s in world.shoppers if s.has_app]
    ttl_s = world.scenario.duration_s / world.time_factor + _TOKEN_SLACK_S
    return await seed_records(config, world.records(), token_for=ids, ttl_s=ttl_s)


class _Drive:
    """One round: steps the world on the wall clock and puts its outputs on the wire."""

    def __init__(
        self,
        *,
        world: World,
        report: LiveReport,
        devices: MqttLink,
        nodes: dict[str, MqttLink],
        http: HttpClient,
        tokens: dict[str, str],
        prefix: str,
        bluez: FakeBlueZ | None,
    ) -> None:
        self._world = world
        self._report = report
        self._devices = devices
        self._nodes = nodes
        self._http = http
        self._tokens = tokens
        self._prefix = prefix
        self._pending: set[asyncio.Task[None]] = set()
        self._max_pending = 64
        self._beacons = {b.id: b for b in world.scenario.beacons}
        self._alerts_seen: set[str] = set()
        self._bluez = bluez
        self._radio_last: dict[str, float] = {}  # address -> sim time last heard by the box
        self._radio_sweep = 0.0

    async def run(self, progress: Callable[[str], None] | None, *, warm_up_s: float) -> None:
        world = self._world
        speed = world.time_factor
        # Fast-forward quietly so the store is already busy (shelves still say what they hold).
        for out in world.step(min(warm_up_s, world.scenario.duration_s)):
            if isinstance(out, StockReport):
                self._send(out)
        # From here simulated time follows the wall clock: stamps (truth, EIDs, sightings)
        # read the same clock the pacing does.
        world.start_epoch = time.time() - world.now / speed
        start = time.monotonic() - world.now / speed
        next_progress = world.now + _PROGRESS_S
        duration = world.scenario.duration_s
        while world.now < duration:
            target = min(duration, world.now + _TICK_S * speed)
            await asyncio.sleep(max(0.0, start + target / speed - time.monotonic()))
            for out in world.step(target):
                self._send(out)
            if progress is not None and world.now >= next_progress:
                next_progress += _PROGRESS_S
                progress(self._line())
        if self._pending:
            await asyncio.wait(self._pending, timeout=5.0)
        for task in list(self._pending):  # a phone that got no answer in time gives up
            task.cancel()
        await asyncio.gather(*self._pending, return_exceptions=True)

    def _line(self) -> str:
        r, w = self._report, self._world
        return (
            f"sim  {w.now:7.0f}/{w.scenario.duration_s:.0f} s  present {w.present():3d}  "
            f"batches {r.sent['node_batch']:,}  sightings {r.sent['app_sightings']:,}  "
            f"redemptions {r.sent['redemption']:,}  shown {r.offers_shown:,}  "
            f"staff alerts {r.staff_alerts:,}  errors {sum(r.errors.values()):,}"
        )

    def _send(self, out: Output) -> None:
        w = self._world
        now = time.time()
        if isinstance(out, NodeBatchOut):
            # Ages are simulated seconds; the gateway reads them against its wall clock.
            adverts = [
                dataclasses.replace(a, age_ms=round(a.age_ms / w.time_factor)) for a in out.adverts
            ]
            payload = encode_batch(out.node, out.seq, now, adverts)
            self._publish(self._nodes[out.node], f"nodes/{out.node}/adv", payload, "node_batch")
        elif isinstance(out, NodeTelemetry):
            payload = encode_telemetry(
                out.node,
                t=now,
                uptime_s=round(out.uptime_s / w.time_factor, 1),
                heard=out.heard,
                forwarded=out.forwarded,
                batches=out.batches,
                free_heap=out.free_heap,
                wifi_rssi=out.wifi_rssi,
            )
            link = self._nodes[out.node]
            self._publish(link, f"nodes/{out.node}/telemetry", payload, "telemetry")
        elif isinstance(out, StockReport):
            payload = encode_stock(out.shelf, [StockItem(*item) for item in out.items], now)
            topic = f"shelves/{out.shelf}/stock"
            self._publish(self._devices, topic, payload, "stock", qos=1, retain=True)
        elif isinstance(out, DoorCount):
            payload = encode_door_count(Counted(out.door, out.entered, out.left, now))
            self._publish(self._devices, f"doors/{out.door}/count", payload, "door_count")
        elif isinstance(out, RedemptionOut):
            payload = encode_redemption(
                Redemption(
                    v=1,
                    lane=out.lane,
                    offer_id=out.offer_id,
                    shopper_id=out.shopper_id,
                    at=now,
                    receipt=out.receipt,
                )
            )
            topic = f"pos/{out.lane}/redemptions"
            self._publish(self._devices, topic, payload, "redemption", qos=1)
        elif isinstance(out, AppSightings):
            sightings = [
                self._sighting(beacon, rssi, now - (w.now - t) / w.time_factor)
                for beacon, rssi, t in out.sightings
            ]
            self._call(
                "POST",
                "/v1/me/sightings",
                out.shopper_id,
                {"sightings": sightings},
                "app_sightings",
            )
        elif isinstance(out, HelpTap):
            self._call("POST", "/v1/me/help", out.shopper_id, None, "help")
        elif isinstance(out, RadioHeard):
            self._radio(out)

    def _radio(self, out: RadioHeard) -> None:
        """What the box's own adapter hears goes to the emulated BlueZ, which bleak scans;
        a device silent for a while disappears, as BlueZ lets it."""
        if self._bluez is None:
            return
        if self._bluez.advertise_payload(out.address, out.payload, rssi=out.rssi):
            self._report.sent["radio"] += 1
        self._radio_last[out.address] = out.t
        if out.t - self._radio_sweep >= _RADIO_SWEEP_S:
            self._radio_sweep = out.t
            for address, last in list(self._radio_last.items()):
                if out.t - last > _RADIO_EXPIRE_S:
                    del self._radio_last[address]
                    self._bluez.remove(address)

    def _sighting(self, beacon_id: str, rssi: int, at: float) -> dict[str, Any]:
        b = self._beacons[beacon_id]
        if b.frame == "ibeacon":
            return {"uuid": b.uuid, "major": b.major, "minor": b.minor, "rssi": rssi, "at": at}
        return {"namespace": b.namespace, "instance": b.instance, "rssi": rssi, "at": at}

    def _publish(
        self,
        link: MqttLink,
        topic: str,
        payload: bytes,
        kind: str,
        *,
        qos: int = 0,
        retain: bool = False,
    ) -> None:
        try:
            link.publish(f"{self._prefix}/{topic}", payload, qos=qos, retain=retain)
        except LinkDownError:
            self._report.errors[f"{kind}_link_down"] += 1  # devices drop what they cannot send
            return
        self._report.sent[kind] += 1

    def _call(
        self, method: str, path: str, shopper: str, body: dict[str, Any] | None, kind: str
    ) -> None:
        token = self._tokens.get(shopper)
        if token is None:
            return
        if len(self._pending) >= self._max_pending:
            self._report.errors[f"{kind}_backlog"] += 1  # a phone with no signal gives up
            return
        task = asyncio.create_task(self._request(method, path, token, body, kind))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _request(
        self, method: str, path: str, token: str, body: dict[str, Any] | None, kind: str
    ) -> None:
        try:
            response = await self._http.request(method, path, json_body=body, token=token)
        except HttpError as exc:
            self._report.errors[f"{kind}_{exc.kind}"] += 1
            return
        if response.status >= 400:
            # 403 is expected for a help tap whose consent does not allow it, and 429 when
            # an app overdoes it: counted, as a real app would shrug.
            self._report.errors[f"{kind}_http_{response.status}"] += 1
            return
        self._report.sent[kind] += 1

    async def listen(self, link: MqttLink) -> None:
        """The messaging service and a staff device: phone cards and staff alerts."""
        while True:
            message = await link.inbox.get()
            if message.topic.endswith("/phone/messages"):
                try:
                    card = _phone_message.decode(message.payload)
                except msgspec.DecodeError:
                    self._report.errors["phone_message_bad"] += 1
                    continue
                self._world.shown(card.shopper, card.card.offer_id)
                self._report.offers_shown += 1
            else:
                try:
                    alerts = _staff_alerts.decode(message.payload).alerts
                except msgspec.DecodeError:
                    self._report.errors["staff_alerts_bad"] += 1
                    continue
                fresh = {a.alert_id for a in alerts} - self._alerts_seen
                self._alerts_seen |= fresh
                self._report.staff_alerts += len(fresh)


def _write_truth(path: Path, world: World, *, append: bool) -> None:
    """Ground truth as JSON lines: one stay per line, Unix times (``end`` null: still there)."""
    lines = []
    for stay in world.truth():
        end = None if stay.end is None else world.epoch(stay.end)
        lines.append(
            json.dumps(
                {
                    "shopper": stay.shopper,
                    "zone": stay.zone,
                    "start": world.epoch(stay.start),
                    "end": end,
                }
            )
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a" if append else "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + ("\n" if lines else ""))
