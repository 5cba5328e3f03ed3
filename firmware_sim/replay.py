"""Score a scenario: run it through the gateway's own sensing in simulated time.

The world's scanner-node batches are encoded as the nodes publish them and handed to
:class:`gateway.sensing.Sensing` (the same object ``moments run`` feeds from the broker:
batch parsing, frame decoding, EID resolution against the store, the consent check, the
presence tracker with the configured parameters), with a clock that reads simulated time;
iPhone apps' sightings go through ``Sensing.app_sighting`` as the HTTP API hands them in.
Only the broker and the HTTP hop are left out, which is what makes a 30-minute store score
in seconds and the same every time.

The gateway's presence events are compared with the ground truth (:mod:`firmware_sim.score`),
beside a naive baseline computed from the same raw readings: strongest RSSI wins, no
hysteresis.
"""

from __future__ import annotations

import dataclasses
import tempfile
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from beacons import decode_advertisement
from beacons.presence import PresenceEvent, ZoneEntered, ZoneLeft
from firmware_sim.floorplan import Scenario, gateway_config
from firmware_sim.score import (
    Observed,
    Score,
    ScoreParams,
    flaps_vs_naive,
    naive_presence,
    score,
)
from firmware_sim.world import AppSightings, NodeBatchOut, World
from gateway.config import Config, PresenceConfig
from gateway.metrics import Metrics
from gateway.mqtt import InboundMessage
from gateway.nodes import encode_batch
from gateway.sensing import Sensing
from gateway.store import Database

__all__ = ["Replay", "replay_config", "run_replay"]

_START_EPOCH = 1_795_420_800.0  # 2026-11-23 10:00 UTC: a fixed start keeps runs identical


class _SimClock:
    __slots__ = ("t",)

    def __init__(self, t: float) -> None:
        self.t = t

    def now(self) -> float:
        return self.t

    def monotonic(self) -> float:
        return self.t


@dataclass(frozen=True, slots=True)
class Replay:
    gateway: Score
    naive: Score
    shoppers: int
    tracked: int
    shopper_hours: float
    node_messages: int
    adverts: int
    app_sightings: int

    @property
    def flaps_vs_naive(self) -> float:
        return flaps_vs_naive(self.gateway, self.naive)

    def as_dict(self) -> dict[str, Any]:
        return {
            "shoppers": self.shoppers,
            "tracked": self.tracked,
            "shopper_hours": round(self.shopper_hours, 3),
            "node_messages": self.node_messages,
            "adverts": self.adverts,
            "app_sightings": self.app_sightings,
            "flaps_vs_naive": self.flaps_vs_naive,
            "gateway": self.gateway.as_dict(),
            "naive": self.naive.as_dict(),
        }


def replay_config(scenario: Scenario, presence: PresenceConfig | None = None) -> Config:
    """The gateway configuration for the scenario's floor (zones, kiosks, beacons)."""
    raw = tomllib.loads(gateway_config(scenario))
    raw["store_id"] = scenario.store_id
    raw["radio"] = {"enabled": False}
    config = msgspec.convert(raw, Config)
    if presence is not None:
        config = msgspec.structs.replace(config, presence=presence)
    return config


def run_replay(
    scenario: Scenario,
    *,
    presence: PresenceConfig | None = None,
    params: ScoreParams | None = None,
    start_epoch: float | None = None,
    progress: Callable[[str], None] | None = None,
) -> Replay:
    config = replay_config(scenario, presence)
    start = start_epoch or scenario.start_epoch or _START_EPOCH
    world = World(scenario, start_epoch=start, collect_readings=True)
    with tempfile.TemporaryDirectory(prefix="moments-sim-") as folder:
        db = Database(Path(folder) / "store", map_size=1 << 28)
        db.open()
        try:
            with db.env.begin(write=True) as txn:
                db.put_op(world.records())(txn)
            feed = _Feed(config, db, world)
            feed.run(progress)
        finally:
            db.close()
    return _scored(config, world, feed, params or ScoreParams())


class _Feed:
    """The gateway's sensing, fed the world's messages on a clock reading simulated time."""

    def __init__(self, config: Config, db: Database, world: World) -> None:
        self.world = world
        self.observed: list[Observed] = []
        self.node_messages = self.adverts = self.app_sightings = 0
        self._clock = _SimClock(world.epoch(0.0))
        self._sensing = Sensing(
            config=config, db=db, clock=self._clock, metrics=Metrics(), on_event=self._event
        )
        self._prefix = f"{config.broker.topic_prefix}/{config.store_id}/nodes/"
        beacons = world.scenario.beacons
        self._frames = {b.id: decode_advertisement(world.beacon_frame(b.id)) for b in beacons}

    def _event(self, event: PresenceEvent) -> None:
        if isinstance(event, ZoneEntered):
            self.observed.append(Observed(event.subject, event.zone, "entered", event.t))
        elif isinstance(event, ZoneLeft):
            self.observed.append(Observed(event.subject, event.zone, "left", event.t))

    def run(self, progress: Callable[[str], None] | None) -> None:
        world, clock, sensing = self.world, self._clock, self._sensing
        duration = world.scenario.duration_s
        sensing.tick()
        second = 0
        while world.now < duration:
            second += 1
            for out in world.step(min(float(second), duration)):
                clock.t = world.epoch(out.t)
                if isinstance(out, NodeBatchOut):
                    self._batch(out)
                elif isinstance(out, AppSightings):
                    self._sightings(out)
            clock.t = world.epoch(world.now)
            sensing.tick()  # the gateway ticks once a second
            if progress is not None and second % 60 == 0:
                progress(f"replay {second:5d}/{duration:.0f} s  present {world.present()}")

    def _batch(self, out: NodeBatchOut) -> None:
        payload = encode_batch(out.node, out.seq, self._clock.t, list(out.adverts))
        self._sensing.handle(InboundMessage(f"{self._prefix}{out.node}/adv", payload, 0, False))
        self.node_messages += 1
        self.adverts += len(out.adverts)

    def _sightings(self, out: AppSightings) -> None:
        for beacon, rssi, t in out.sightings:
            frame = self._frames[beacon]
            if frame is not None:
                self._sensing.app_sighting(out.shopper_id, frame, rssi, self.world.epoch(t))
                self.app_sightings += 1


def _scored(config: Config, world: World, feed: _Feed, params: ScoreParams) -> Replay:
    end = world.epoch(world.now)
    truth = [
        dataclasses.replace(
            s, start=world.epoch(s.start), end=None if s.end is None else world.epoch(s.end)
        )
        for s in world.truth()
    ]
    hours = max(world.shopper_hours(), 1e-9)
    zone_of = dict(config.zone_of_node())
    zone_of.update({b.id: b.zone for b in config.beacons})
    naive = naive_presence(world.readings, zone_of, leave_after_s=config.presence.leave_after_s)
    return Replay(
        gateway=score(truth, feed.observed, shopper_hours=hours, params=params, run_end=end),
        naive=score(truth, naive, shopper_hours=hours, params=params, run_end=end),
        shoppers=len(world.shoppers),
        tracked=sum(1 for s in world.shoppers if s.tracked),
        shopper_hours=hours,
        node_messages=feed.node_messages,
        adverts=feed.adverts,
        app_sightings=feed.app_sightings,
    )
