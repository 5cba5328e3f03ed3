"""Sensing with a real LMDB and an injected clock: fixed beacons, app sightings, consent."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from beacons import IBeacon, decode_advertisement
from beacons.presence import PresenceEvent, ZoneEntered
from firmware_sim.adverts import eddystone_tlm, ibeacon
from firmware_sim.scenario import APP_UUID, STORE_UUID, demo_records
from gateway.clock import ManualClock
from gateway.config import Config, load_config
from gateway.metrics import Metrics
from gateway.mqtt import InboundMessage
from gateway.nodes import Advert, encode_batch
from gateway.sensing import Sensing
from gateway.store import Database, Writer

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "moments.example.toml"
T0 = 1_800_000_000.0


@pytest.fixture
async def sensing(tmp_path: Path) -> AsyncIterator[tuple[Sensing, list[PresenceEvent], Metrics]]:
    config: Config = load_config(EXAMPLE, environ={"MOMENTS_DATA_DIR": str(tmp_path)})
    db = Database(tmp_path / "store", map_size=1 << 20)
    db.open()
    writer = Writer(db)
    writer.start()
    await writer.write(db.put_op(demo_records(T0)))
    events: list[PresenceEvent] = []
    metrics = Metrics()
    clock = ManualClock(T0 + 10)
    yield (
        Sensing(config=config, db=db, clock=clock, metrics=metrics, on_event=events.append),
        events,
        metrics,
    )
    await writer.aclose()
    db.close()


def message(node: str, *adverts: Advert) -> InboundMessage:
    payload = encode_batch(node, 1, T0, list(adverts))
    return InboundMessage(f"moments/v1/store-1/nodes/{node}/adv", payload, 0, False)


def value(metrics: Metrics, name: str, **labels: str) -> float:
    got = metrics.registry.get_sample_value(name, labels)
    return 0.0 if got is None else got


async def test_fixed_beacons_feed_fleet_health_not_presence_or_counts(
    sensing: tuple[Sensing, list[PresenceEvent], Metrics],
) -> None:
    s, events, metrics = sensing
    s.handle(
        message(
            "node-coffee",
            Advert(ibeacon(STORE_UUID, 1, 2), -60, 0, "C0:FF:EE:00:00:02"),
            Advert(eddystone_tlm(2400, 20.0, 5, 60.0), -60, 0, "C0:FF:EE:00:00:02"),
        )
    )
    assert events == []
    assert value(metrics, "moments_sightings_total", kind="fixed_beacon") == 2
    assert value(metrics, "moments_sightings_total", kind="anonymous") == 0
    alerts = s.fleet.check(T0 + 11)
    coffee = [a for a in alerts if a.beacon == "bcn-coffee"]
    assert [(a.condition, a.battery_mv) for a in coffee] == [("low_battery", 2400)]


async def test_telemetry_from_a_stranger_is_anonymous(
    sensing: tuple[Sensing, list[PresenceEvent], Metrics],
) -> None:
    s, events, metrics = sensing
    s.handle(message("node-coffee", Advert(eddystone_tlm(3000, 20.0, 5, 60.0), -60, 0, "AA:AA")))
    assert value(metrics, "moments_sightings_total", kind="anonymous") == 1
    assert events == []


async def test_app_sighting_places_a_consenting_shopper_in_the_beacon_zone(
    sensing: tuple[Sensing, list[PresenceEvent], Metrics],
) -> None:
    s, events, metrics = sensing
    frame = decode_advertisement(ibeacon(STORE_UUID, 1, 2))
    assert isinstance(frame, IBeacon)
    assert s.app_sighting("shopper-alice", frame, -58, T0 + 10) == "placed"
    assert events == [ZoneEntered("shopper-alice", "coffee", T0 + 10, -58.0)]
    # Bob declined presence: his app's report is refused and changes nothing.
    assert s.app_sighting("shopper-bob", frame, -50, T0 + 10) == "no_consent"
    assert s.zone_of("shopper-bob") is None
    # A beacon that is not the store's places nobody.
    other = decode_advertisement(ibeacon(APP_UUID, 100, 1))
    assert other is not None
    assert s.app_sighting("shopper-alice", other, -50, T0 + 10) == "unknown_beacon"
    assert value(metrics, "moments_dropped_total", source="app", reason="no_consent") == 1
    assert value(metrics, "moments_dropped_total", source="app", reason="unknown_beacon") == 1
