"""The simulated store in motion: sans-I/O, simulated time in, device messages out.

:class:`World` owns the crowd, the radio channel and every device's state. ``step(until)``
advances simulated time and returns what the store's devices would have sent meanwhile, in
time order: scanner-node batches (what each node heard, as the node protocol carries it),
iPhone apps' sightings of the fixed beacons, shelves' stock reports, door counts, tills'
redemptions, help taps and node telemetry. Drivers put those on the wire in real time
(:mod:`firmware_sim.live`) or feed them straight into the gateway's sensing in simulated
time (:mod:`firmware_sim.replay`). The only input is :meth:`World.shown`: an offer a shopper
was shown, which makes them likelier to redeem it.

Advertising follows the Bluetooth rules: each device sends every interval plus a random
0-10 ms delay; a node hears a packet when the channel (:class:`~firmware_sim.radio.Channel`)
delivers it above the node's floor. Phones with the app's Android flavour send an
Eddystone-EID that rotates with their key; other phones send vendor data from a random
address that changes every ``address_rotation_s``; store beacons send iBeacon or
Eddystone-UID frames with Eddystone-TLM telemetry (battery draining) in between.
"""

from __future__ import annotations

import hashlib
import heapq
import math
import random
from dataclasses import dataclass, field
from itertools import pairwise

from beacons.eid import eid_for_time
from firmware_sim.adverts import eddystone_eid, eddystone_tlm, eddystone_uid, ibeacon, phone_noise
from firmware_sim.crowd import Knot, SimShopper, plan_crowd, stays
from firmware_sim.floorplan import BeaconSpec, Scenario
from firmware_sim.radio import Channel
from firmware_sim.score import Reading, Stay
from gateway.nodes import Advert
from gateway.store import (
    ConsentRecord,
    EidKeyRecord,
    ProfileRecord,
    Purpose,
    PurposeState,
    Record,
)

__all__ = [
    "EID_EXPONENT",
    "AppSightings",
    "DoorCount",
    "HelpTap",
    "NodeBatchOut",
    "NodeTelemetry",
    "Output",
    "RadioHeard",
    "RedemptionOut",
    "StockReport",
    "World",
]

EID_EXPONENT = 10  # a new EID every 1024 s
_STEP_S = 0.1
_RANGING_S = 1.0
_APP_BEACONS = 3  # the app reports the strongest few beacons of each ranging second
_MAX_BATCH = 256
_NOTICE = "sim-2026"


@dataclass(frozen=True, slots=True)
class NodeBatchOut:
    t: float
    node: str
    seq: int
    adverts: tuple[Advert, ...]


@dataclass(frozen=True, slots=True)
class RadioHeard:
    """An advertisement the gateway box's own radio heard (for the emulated BlueZ)."""

    t: float
    address: str
    payload: bytes
    rssi: int


@dataclass(frozen=True, slots=True)
class AppSightings:
    t: float
    shopper_id: str
    # (beacon id, RSSI, sim time heard)
    sightings: tuple[tuple[str, int, float], ...]


@dataclass(frozen=True, slots=True)
class StockReport:
    t: float
    shelf: str
    items: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class DoorCount:
    t: float
    door: str
    entered: int
    left: int


@dataclass(frozen=True, slots=True)
class RedemptionOut:
    t: float
    lane: str
    offer_id: str
    shopper_id: str | None
    receipt: str


@dataclass(frozen=True, slots=True)
class HelpTap:
    t: float
    shopper_id: str


@dataclass(frozen=True, slots=True)
class NodeTelemetry:
    t: float
    node: str
    uptime_s: float
    heard: int
    forwarded: int
    batches: int
    free_heap: int
    wifi_rssi: int


Output = (
    NodeBatchOut
    | AppSightings
    | StockReport
    | DoorCount
    | RedemptionOut
    | HelpTap
    | NodeTelemetry
    | RadioHeard
)


@dataclass(slots=True)
class _Advertiser:
    key: str
    tx_at_1m: float
    interval_s: float
    next_t: float
    shopper: SimShopper | None = None
    beacon: BeaconSpec | None = None
    sent: int = 0


@dataclass(slots=True)
class _Node:
    id: str
    at: tuple[float, float]
    batch_s: float
    telemetry_s: float
    min_rssi: float
    next_flush: float
    next_telemetry: float
    buffer: list[tuple[float, bytes, int, str]] = field(default_factory=list)
    seq: int = 0
    heard: int = 0
    forwarded: int = 0


@dataclass(slots=True)
class _Shelf:
    id: str
    start: dict[str, int]
    qty: dict[str, int]
    pick_share: float
    restock_at: int
    restock_after_s: float
    heartbeat_s: float
    zone: str
    next_heartbeat: float = 0.0
    restocking: set[str] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class _StopEnds:  # a shopper finishes browsing one place: they may take something
    zone: str | None


@dataclass(frozen=True, slots=True)
class _Pays:
    shopper: SimShopper


@dataclass(frozen=True, slots=True)
class _TapsHelp:
    shopper_id: str


@dataclass(frozen=True, slots=True)
class _Restock:
    shelf: _Shelf
    sku: str


@dataclass(frozen=True, slots=True)
class _DoorPass:
    door: str
    entering: bool


_Event = _StopEnds | _Pays | _TapsHelp | _Restock | _DoorPass
_Timed = tuple[float, int, _Event]


class World:
    def __init__(
        self,
        scenario: Scenario,
        *,
        start_epoch: float,
        time_factor: float = 1.0,
        collect_readings: bool = False,
    ) -> None:
        self.scenario = scenario
        self.start_epoch = start_epoch
        # Simulated seconds per wall-clock second: stamps (``epoch``) follow the wall clock.
        self.time_factor = time_factor
        self.now = 0.0
        self._rng = random.Random(scenario.seed)
        radio = scenario.radio
        self.channel = Channel(
            random.Random(scenario.seed + 1),
            exponent=radio.path_loss_exponent,
            shadowing_db=radio.shadowing_db,
            shadowing_tau_s=radio.shadowing_tau_s,
            fading_db=radio.fading_db,
            sensitivity_dbm=radio.sensitivity_dbm,
            base_loss=radio.base_loss,
            packet_airtime_s=radio.packet_airtime_us / 1e6,
            walls=[(w.start, w.end, w.attenuation_db) for w in scenario.walls],
        )
        self._delay_max = radio.adv_delay_max_ms / 1000.0
        self.shoppers = plan_crowd(scenario, random.Random(scenario.seed + 2))
        self._by_id = {s.shopper_id: s for s in self.shoppers}
        self._arrivals = sorted(self.shoppers, key=lambda s: s.arrive)
        self._next_arrival = 0
        self._phones: dict[int, _Advertiser] = {}
        self._beacons = [
            _Advertiser(
                key=b.id,
                tx_at_1m=b.tx_at_1m_dbm,
                interval_s=b.interval_ms / 1000.0,
                next_t=self._rng.uniform(0.0, b.interval_ms / 1000.0),
                beacon=b,
            )
            for b in scenario.beacons
        ]
        self._beacon_frames = {b.id: _beacon_frame(b) for b in scenario.beacons}
        self._nodes = [
            _Node(
                id=n.id,
                at=n.at,
                batch_s=n.batch_s,
                telemetry_s=n.telemetry_s,
                min_rssi=n.min_rssi_dbm,
                next_flush=self._rng.uniform(0.0, n.batch_s),
                next_telemetry=self._rng.uniform(0.0, n.telemetry_s),
            )
            for n in scenario.nodes
        ]
        self._shelves = [
            _Shelf(
                id=s.id,
                start={i.sku: i.qty for i in s.items},
                qty={i.sku: i.qty for i in s.items},
                pick_share=s.pick_share,
                restock_at=s.restock_at,
                restock_after_s=s.restock_after_s,
                heartbeat_s=s.heartbeat_s,
                zone=scenario.zone_at(s.at) or "",
            )
            for s in scenario.shelves
        ]
        self._doors = {d.id: [0, 0] for d in scenario.doors}
        self._door_next = {d.id: d.report_s for d in scenario.doors}
        self._door_report_s = {d.id: d.report_s for d in scenario.doors}
        self._offers = [o.offer_id for o in scenario.offer_records() if not o.generic]
        self._shown: set[tuple[str, str]] = set()
        self._receipts = 0
        self._ranging_next: dict[int, float] = {}
        self._heard_by_app: dict[int, list[tuple[str, int, float]]] = {}
        self._report_next: dict[int, float] = {}
        self.collect_readings = collect_readings
        self.readings: list[Reading] = []
        self._timed: list[_Timed] = []
        self._radio_heard: list[RadioHeard] = []
        self._seq = 0
        for shopper in self.shoppers:
            self._plan_events(shopper)
        self._started = False

    # ----- inputs and views -----

    def epoch(self, t: float) -> float:
        """The Unix time of simulated time ``t``."""
        return self.start_epoch + t / self.time_factor

    def shown(self, shopper_id: str, offer_id: str) -> None:
        """The gateway showed ``offer_id`` to ``shopper_id`` (kiosk or phone)."""
        self._shown.add((shopper_id, offer_id))

    def shopper(self, shopper_id: str) -> SimShopper | None:
        return self._by_id.get(shopper_id)

    def truth(self, *, until: float | None = None) -> list[Stay]:
        """Ground truth for the shoppers presence may follow (the app and consent)."""
        end = self.now if until is None else until
        out: list[Stay] = []
        for shopper in self.shoppers:
            if shopper.tracked and shopper.arrive < end:
                out.extend(stays(self.scenario, shopper, until=end))
        return out

    def shopper_hours(self, *, until: float | None = None, tracked_only: bool = True) -> float:
        end = self.now if until is None else until
        total = 0.0
        for s in self.shoppers:
            if (s.tracked or not tracked_only) and s.arrive < end:
                total += min(end, s.leave) - s.arrive
        return total / 3600.0

    def present(self) -> int:
        return sum(1 for s in self.shoppers if s.arrive <= self.now <= s.leave)

    def records(self) -> list[Record]:
        """What HQ would hold for the app users: profiles, consents, EID keys, and offers."""
        at = self.start_epoch - 86_400.0
        out: list[Record] = []
        for s in self.shoppers:
            if not s.has_app:
                continue
            out.append(
                ProfileRecord(
                    shopper_id=s.shopper_id,
                    first_name=s.name,
                    nickname=s.name,
                    segments=s.segments,
                    greet_on_kiosk=s.consent == "everything",
                )
            )
            out.append(ConsentRecord(shopper_id=s.shopper_id, purposes=_purposes(s, at)))
            if s.eid_key:
                out.append(
                    EidKeyRecord(
                        shopper_id=s.shopper_id,
                        identity_key=s.eid_key,
                        exponent=EID_EXPONENT,
                        registered_at=at,
                    )
                )
        out.extend(self.scenario.offer_records())
        return out

    def beacon_frame(self, beacon_id: str) -> bytes:
        return self._beacon_frames[beacon_id]

    # ----- time -----

    def step(self, until: float) -> list[Output]:
        """Advance simulated time to ``until`` (seconds since the start); what was sent."""
        out: list[Output] = []
        if not self._started:
            self._started = True
            out.extend(self._stock_now(0.0))
        while self.now < until:
            t0 = self.now
            t1 = until if until - t0 <= _STEP_S * 1.001 else t0 + _STEP_S
            self._admit(t0, t1)
            self._timed_events(t1, out)
            self._advertise(t0, t1)
            out.extend(self._radio_heard)
            self._radio_heard.clear()
            self._range(t1, out)
            self._flush_nodes(t1, out)
            self._doors_report(t1, out)
            self._shelves_heartbeat(t1, out)
            self.now = t1
        out.sort(key=lambda o: o.t)
        return out

    def _admit(self, t0: float, t1: float) -> None:
        while (
            self._next_arrival < len(self._arrivals)
            and self._arrivals[self._next_arrival].arrive < t1
        ):
            s = self._arrivals[self._next_arrival]
            self._next_arrival += 1
            interval = self.scenario.population.adv_interval_ms / 1000.0
            self._phones[s.index] = _Advertiser(
                key=f"phone-{s.index}",
                tx_at_1m=self.scenario.population.phone_tx_at_1m_dbm,
                interval_s=interval,
                next_t=s.arrive + self._rng.uniform(0.0, interval),
                shopper=s,
            )
            if s.phone == "iphone_app" and s.tracked:
                self._ranging_next[s.index] = s.arrive + self._rng.uniform(0.0, _RANGING_S)
                self._report_next[s.index] = s.arrive + self.scenario.population.app_report_s
                self._heard_by_app[s.index] = []
        for index in [i for i, a in self._phones.items() if a.shopper and a.shopper.leave < t0]:
            self.channel.forget(self._phones[index].key)
            del self._phones[index]
            self._ranging_next.pop(index, None)
            self._report_next.pop(index, None)
            self._heard_by_app.pop(index, None)

    def _advertise(self, t0: float, t1: float) -> None:
        advertisers = self._beacons + list(self._phones.values())
        total_rate = sum(1.0 / a.interval_s for a in advertisers)
        for adv in advertisers:
            while adv.next_t < t1:
                te = adv.next_t
                adv.next_t += adv.interval_s + self._rng.uniform(0.0, self._delay_max)
                if te < t0:
                    continue
                self._emit(adv, te, total_rate - 1.0 / adv.interval_s)

    def _emit(self, adv: _Advertiser, te: float, others: float) -> None:
        if adv.shopper is not None:
            where = adv.shopper.position(te)
            if where is None:
                return
            data, addr = self._phone_payload(adv.shopper, te)
        else:
            assert adv.beacon is not None
            where = adv.beacon.at
            data, addr = self._beacon_payload(adv, te)
        adv.sent += 1
        reading_for = (
            adv.shopper.shopper_id
            if self.collect_readings
            and adv.shopper is not None
            and adv.shopper.tracked
            and adv.shopper.phone == "android_app"
            else None
        )
        for node in self._nodes:
            rssi = self.channel.receive(
                (adv.key, node.id), adv.tx_at_1m, where, node.at, te, other_rate_per_s=others
            )
            if rssi is None:
                continue
            node.heard += 1
            if rssi < node.min_rssi:
                continue
            node.buffer.append((te, data, rssi, addr))
            if reading_for is not None:
                self.readings.append(Reading(reading_for, node.id, rssi, self.epoch(te)))
        box = self.scenario.box
        if box is not None:
            rssi = self.channel.receive(
                (adv.key, "box"), adv.tx_at_1m, where, box.at, te, other_rate_per_s=others
            )
            if rssi is not None and rssi >= box.min_rssi_dbm:
                self._radio_heard.append(RadioHeard(te, addr, data, rssi))

    def _phone_payload(self, s: SimShopper, te: float) -> tuple[bytes, str]:
        window = int(te // self.scenario.population.address_rotation_s)
        addr = _random_address(self.scenario.seed, s.index, window)
        if s.phone == "android_app":
            eid = eid_for_time(s.eid_key, EID_EXPONENT, int(self.epoch(te)))
            return eddystone_eid(eid), addr
        token = hashlib.blake2b(addr.encode(), digest_size=8).digest()
        return phone_noise(token), addr

    def _beacon_payload(self, adv: _Advertiser, te: float) -> tuple[bytes, str]:
        b = adv.beacon
        assert b is not None
        if b.tlm_every and adv.sent % b.tlm_every == b.tlm_every - 1:
            battery = max(0.0, b.battery_mv - b.drain_mv_per_h * te / 3600.0)
            uptime = 86_400.0 + te
            return eddystone_tlm(round(battery), 21.0, adv.sent, uptime), b.address
        return self._beacon_frames[b.id], b.address

    def _range(self, t1: float, out: list[Output]) -> None:
        """iPhone apps range the store's beacons once a second and post the strongest few."""
        pop = self.scenario.population
        for index, first in list(self._ranging_next.items()):
            shopper = self._phones[index].shopper
            assert shopper is not None
            due = first
            while due < t1:
                self._range_once(index, shopper, due)
                due += _RANGING_S
            self._ranging_next[index] = due
            if self._report_next[index] < t1:
                heard = self._heard_by_app[index]
                if heard:
                    at = self._report_next[index]
                    out.append(AppSightings(at, shopper.shopper_id, tuple(heard)))
                    self._heard_by_app[index] = []
                self._report_next[index] += pop.app_report_s

    def _range_once(self, index: int, shopper: SimShopper, t: float) -> None:
        where = shopper.position(t)
        if where is None:
            return
        heard: list[tuple[int, str]] = []
        for b in self.scenario.beacons:
            rssi = self.channel.receive((b.id, f"phone-{index}"), b.tx_at_1m_dbm, b.at, where, t)
            if rssi is not None:
                heard.append((rssi, b.id))
        for rssi, beacon in sorted(heard, reverse=True)[:_APP_BEACONS]:
            self._heard_by_app[index].append((beacon, rssi, t))
            if self.collect_readings:
                self.readings.append(Reading(shopper.shopper_id, beacon, rssi, self.epoch(t)))

    def _flush_nodes(self, t1: float, out: list[Output]) -> None:
        for node in self._nodes:
            while node.next_flush < t1:
                tf = node.next_flush
                node.next_flush += node.batch_s
                ready = [a for a in node.buffer if a[0] <= tf]
                node.buffer = [a for a in node.buffer if a[0] > tf]
                for i in range(0, len(ready), _MAX_BATCH):
                    chunk = ready[i : i + _MAX_BATCH]
                    node.seq += 1
                    node.forwarded += len(chunk)
                    adverts = tuple(
                        Advert(data, rssi, round((tf - te) * 1000), addr)
                        for te, data, rssi, addr in chunk
                    )
                    out.append(NodeBatchOut(tf, node.id, node.seq, adverts))
            if node.next_telemetry < t1:
                t = node.next_telemetry
                node.next_telemetry += node.telemetry_s
                out.append(
                    NodeTelemetry(
                        t,
                        node.id,
                        uptime_s=3600.0 + t,
                        heard=node.heard,
                        forwarded=node.forwarded,
                        batches=node.seq,
                        free_heap=180_000 - (node.seq % 97) * 64,
                        wifi_rssi=-55 - (node.seq % 7),
                    )
                )

    # ----- shoppers' doings: shelves, tills, doors, help -----

    def _plan_events(self, s: SimShopper) -> None:
        self._push(s.arrive, _DoorPass(_nearest(self.scenario, s.knots[0]), entering=True))
        self._push(s.leave, _DoorPass(_nearest(self.scenario, s.knots[-1]), entering=False))
        for a, b in pairwise(s.knots):
            if (a.x, a.y) == (b.x, b.y) and b.t > a.t:
                self._push(b.t, _StopEnds(self.scenario.zone_at((b.x, b.y))))
        if s.pay_at is not None and s.lane:
            self._push(s.pay_at, _Pays(s))
        if s.help_at is not None:
            self._push(s.help_at, _TapsHelp(s.shopper_id))

    def _push(self, t: float, event: _Event) -> None:
        self._seq += 1
        heapq.heappush(self._timed, (t, self._seq, event))

    def _timed_events(self, t1: float, out: list[Output]) -> None:
        while self._timed and self._timed[0][0] < t1:
            t, _, event = heapq.heappop(self._timed)
            if isinstance(event, _StopEnds):
                self._pick(t, event.zone, out)
            elif isinstance(event, _Pays):
                self._pay(t, event.shopper, out)
            elif isinstance(event, _TapsHelp):
                out.append(HelpTap(t, event.shopper_id))
            elif isinstance(event, _Restock):
                shelf, sku = event.shelf, event.sku
                shelf.qty[sku] = shelf.start[sku]
                shelf.restocking.discard(sku)
                out.append(StockReport(t, shelf.id, ((sku, shelf.qty[sku]),)))
            else:
                self._doors[event.door][0 if event.entering else 1] += 1

    def _pick(self, t: float, zone: str | None, out: list[Output]) -> None:
        for shelf in self._shelves:
            if shelf.zone != zone or self._rng.random() >= shelf.pick_share:
                continue
            stocked = [sku for sku, q in shelf.qty.items() if q > 0]
            if not stocked:
                continue
            sku = self._rng.choice(stocked)
            shelf.qty[sku] -= 1
            out.append(StockReport(t, shelf.id, ((sku, shelf.qty[sku]),)))
            if shelf.qty[sku] <= shelf.restock_at and sku not in shelf.restocking:
                shelf.restocking.add(sku)
                self._push(t + shelf.restock_after_s, _Restock(shelf, sku))

    def _pay(self, t: float, s: SimShopper, out: list[Output]) -> None:
        pop = self.scenario.population
        card = s.shopper_id if s.has_app and s.consent != "nothing" else None
        for offer in self._offers:
            shown = card is not None and (card, offer) in self._shown
            if self._rng.random() < (pop.redeem_shown if shown else pop.redeem_baseline):
                self._receipts += 1
                receipt = f"R-{s.lane}-{self._receipts:06d}"
                out.append(RedemptionOut(t, s.lane or "", offer, card, receipt))

    def _doors_report(self, t1: float, out: list[Output]) -> None:
        for door, due in self._door_next.items():
            if due < t1:
                entered, left = self._doors[door]
                out.append(DoorCount(due, door, entered, left))
                self._door_next[door] = due + self._door_report_s[door]

    def _stock_now(self, t: float) -> list[Output]:
        out: list[Output] = []
        for shelf in self._shelves:
            shelf.next_heartbeat = t + shelf.heartbeat_s
            out.append(StockReport(t, shelf.id, tuple(shelf.qty.items())))
        return out

    def _shelves_heartbeat(self, t1: float, out: list[Output]) -> None:
        for shelf in self._shelves:
            if shelf.next_heartbeat < t1:
                out.append(StockReport(shelf.next_heartbeat, shelf.id, tuple(shelf.qty.items())))
                shelf.next_heartbeat += shelf.heartbeat_s


def _purposes(s: SimShopper, at: float) -> dict[str, PurposeState]:
    granted: set[Purpose]
    if s.consent == "everything":
        granted = set(Purpose)
    elif s.consent == "presence_only":
        granted = {Purpose.PRESENCE, Purpose.ANALYTICS}
    else:
        granted = set()
    return {
        p.value: PurposeState(granted=p in granted, at=at, notice_version=_NOTICE, channel="app")
        for p in Purpose
    }


def _beacon_frame(b: BeaconSpec) -> bytes:
    tx_0m = round(b.tx_at_1m_dbm + 41)  # Eddystone states its power at 0 m
    if b.frame == "ibeacon":
        return ibeacon(b.uuid, b.major, b.minor, round(b.tx_at_1m_dbm))
    return eddystone_uid(bytes.fromhex(b.namespace), bytes.fromhex(b.instance), tx_0m)


def _random_address(seed: int, index: int, window: int) -> str:
    """A resolvable-looking random private address, new for every rotation window."""
    raw = bytearray(hashlib.blake2b(f"{seed}/{index}/{window}".encode(), digest_size=6).digest())
    raw[0] = (raw[0] & 0x3F) | 0x40  # top bits 01: a resolvable private address
    return ":".join(f"{b:02x}" for b in raw)


def _nearest(scenario: Scenario, knot: Knot) -> str:
    return min(scenario.doors, key=lambda d: math.dist(d.at, (knot.x, knot.y))).id
