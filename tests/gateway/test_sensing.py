"""Sensing with a real LMDB and an injected clock: fixed beacons, app sightings, consent."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from beacons import IBeacon, decode_advertisement
from beacons.eid import eid_for_time
from beacons.irk import make_resolvable_address
from beacons.presence import PresenceEvent, ZoneEntered
from firmware_sim.adverts import eddystone_eid, eddystone_tlm, ibeacon, phone_noise
from firmware_sim.scenario import (
    APP_UUID,
    CHLOE_EID_KEY,
    EID_EXPONENT,
    STORE_UUID,
    demo_records,
)
from gateway.clock import ManualClock
from gateway.config import Config, load_config
from gateway.metrics import Metrics
from gateway.mqtt import InboundMessage
from gateway.nodes import Advert, encode_batch
from gateway.sensing import Sensing
from gateway.store import (
    ConsentRecord,
    Database,
    IrkRecord,
    PurposeState,
    Record,
    Writer,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "moments.example.toml"
T0 = 1_800_000_000.0


@dataclass
class Rig:
    sensing: Sensing
    events: list[PresenceEvent]
    metrics: Metrics
    clock: ManualClock
    db: Database
    writer: Writer

    async def put(self, *records: Record) -> None:
        await self.writer.write(self.db.put_op(list(records)))


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    config: Config = load_config(EXAMPLE, environ={"MOMENTS_DATA_DIR": str(tmp_path)})
    db = Database(tmp_path / "store", map_size=1 << 20)
    db.open()
    writer = Writer(db)
    writer.start()
    await writer.write(db.put_op(demo_records(T0)))
    events: list[PresenceEvent] = []
    metrics = Metrics()
    clock = ManualClock(T0 + 10)
    sensing = Sensing(config=config, db=db, clock=clock, metrics=metrics, on_event=events.append)
    yield Rig(sensing, events, metrics, clock, db, writer)
    await writer.aclose()
    db.close()


def message(node: str, *adverts: Advert) -> InboundMessage:
    payload = encode_batch(node, 1, T0, list(adverts))
    return InboundMessage(f"moments/v1/store-1/nodes/{node}/adv", payload, 0, False)


def value(metrics: Metrics, name: str, **labels: str) -> float:
    got = metrics.registry.get_sample_value(name, labels)
    return 0.0 if got is None else got


async def test_fixed_beacons_feed_fleet_health_not_presence_or_counts(
    rig: Rig,
) -> None:
    s, events, metrics = rig.sensing, rig.events, rig.metrics
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
    rig: Rig,
) -> None:
    s, events, metrics = rig.sensing, rig.events, rig.metrics
    s.handle(message("node-coffee", Advert(eddystone_tlm(3000, 20.0, 5, 60.0), -60, 0, "AA:AA")))
    assert value(metrics, "moments_sightings_total", kind="anonymous") == 1
    assert events == []


async def test_app_sighting_places_a_consenting_shopper_in_the_beacon_zone(
    rig: Rig,
) -> None:
    s, events, metrics = rig.sensing, rig.events, rig.metrics
    frame = decode_advertisement(ibeacon(STORE_UUID, 1, 2))
    assert isinstance(frame, IBeacon)
    # The app reports its ranging once a second; three readings confirm the entry.
    for i in range(3):
        assert s.app_sighting("shopper-alice", frame, -58, T0 + 10 + i) == "placed"
    assert events == [ZoneEntered("shopper-alice", "coffee", T0 + 12, -58.0)]
    # Bob declined presence: his app's report is refused and changes nothing.
    assert s.app_sighting("shopper-bob", frame, -50, T0 + 10) == "no_consent"
    assert s.zone_of("shopper-bob") is None
    # A beacon that is not the store's places nobody.
    other = decode_advertisement(ibeacon(APP_UUID, 100, 1))
    assert other is not None
    assert s.app_sighting("shopper-alice", other, -50, T0 + 10) == "unknown_beacon"
    assert value(metrics, "moments_dropped_total", source="app", reason="no_consent") == 1
    assert value(metrics, "moments_dropped_total", source="app", reason="unknown_beacon") == 1


def _walk_up(s: Sensing, clock: ManualClock, payload: bytes, addr: str = "") -> None:
    """Several strong sightings over a few seconds: enough for any enter confirmation."""
    for _ in range(8):
        s.handle(message("node-coffee", Advert(payload, -52, 0, addr)))
        clock.advance(0.5)


async def test_rotating_eid_resolves_and_a_withdrawal_stops_it_at_once(
    rig: Rig,
) -> None:
    s, events, clock = rig.sensing, rig.events, rig.clock
    s.tick()  # loads the resolvers from the store: Chloe's EID key is there
    assert "shopper-chloe" in s.identities.eids
    payload = eddystone_eid(eid_for_time(CHLOE_EID_KEY, EID_EXPONENT, clock.now()))
    _walk_up(s, clock, payload)
    assert s.zone_of("shopper-chloe") == "coffee"

    # Chloe withdraws presence: the very next sighting is anonymous, before any reload.
    withdrawn = ConsentRecord(
        shopper_id="shopper-chloe",
        purposes={"presence": PurposeState(granted=False, at=clock.now())},
    )
    await rig.put(withdrawn)
    s.forget("shopper-chloe")
    assert s.zone_of("shopper-chloe") is None
    before = len(events)
    _walk_up(s, clock, payload)
    assert s.zone_of("shopper-chloe") is None
    assert all(getattr(e, "subject", None) != "shopper-chloe" for e in events[before:])
    s.tick()  # and the reload takes her key out of the resolver table
    assert "shopper-chloe" not in s.identities.eids


async def test_resolvable_private_address_resolves_through_the_irk(
    rig: Rig,
) -> None:
    s, metrics, clock = rig.sensing, rig.metrics, rig.clock
    irk = bytes(range(16))
    granted = {"presence": PurposeState(granted=True, at=T0)}
    await rig.put(
        ConsentRecord(shopper_id="shopper-dana", purposes=granted),
        IrkRecord(shopper_id="shopper-dana", irk=irk),
    )
    s.tick()
    address = make_resolvable_address(irk, bytes.fromhex("4a1b2c"))
    _walk_up(s, clock, phone_noise(b"dana-phone"), addr=address)
    assert s.zone_of("shopper-dana") == "coffee"
    # A phone whose address does not resolve stays anonymous.
    other = make_resolvable_address(bytes(16), bytes.fromhex("4a1b2c"))
    before = value(metrics, "moments_sightings_total", kind="anonymous")
    _walk_up(s, clock, phone_noise(b"other-phone"), addr=other)
    assert value(metrics, "moments_sightings_total", kind="anonymous") == before + 8
