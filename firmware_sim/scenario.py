"""The scripted demo store: floor, nodes, kiosk, three shoppers and their path, and the records
(profiles, consents, identities, offers) that HQ would have sent for them.

Floor (metres): the entrance node at x=0, the coffee-aisle node at x=20, the kiosk beside it.
Each round lasts ``ROUND_S`` seconds: Alice (opted in to everything; her app advertises an
iBeacon identity) walks in, browses by the entrance, goes to the coffee kiosk, lingers, and
leaves; then Bob (has the app, declined every purpose) walks the same path; then Chloe (opted
in; an Android app advertising a rotating Eddystone-EID) does. A phone without the app sits
near the entrance all along.
Two fixed store beacons (iBeacon, interleaved with Eddystone-TLM telemetry from the same static
address) stand by the nodes, so the gateway can watch the fleet's health.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

from beacons.eid import eid_for_time
from firmware_sim.adverts import eddystone_eid, eddystone_tlm, ibeacon, phone_noise
from gateway.store import (
    ConsentRecord,
    EidKeyRecord,
    IdentityRecord,
    OfferRecord,
    ProfileRecord,
    Purpose,
    PurposeState,
    Record,
)

__all__ = [
    "APP_UUID",
    "CHLOE_EID_KEY",
    "DEVICES",
    "EID_EXPONENT",
    "FIXED_BEACONS",
    "NODES",
    "ROUND_S",
    "SHOPPERS",
    "STORE_UUID",
    "Device",
    "demo_records",
    "position",
]

APP_UUID = "f7826da6-4fa2-4e98-8024-bc5b71e0893e"
STORE_UUID = "2f234454-cf6d-4a0f-adf2-f4911ba9ffa6"
ROUND_S = 90.0
# Chloe's EID identity key, agreed with the gateway at opt-in (a demo value, not a secret).
CHLOE_EID_KEY = bytes.fromhex("6d6f6d656e74732d64656d6f2d6b6579")
EID_EXPONENT = 10  # a new EID every 1024 s

NODES: dict[str, tuple[float, float]] = {
    "node-entrance": (0.0, 0.0),
    "node-coffee": (20.0, 0.0),
}

# (seconds into the shopper's walk, x, y); linear between points; absent outside.
_PATH: tuple[tuple[float, float, float], ...] = (
    (0.0, -3.0, 1.0),
    (2.0, 0.5, 1.0),
    (6.0, 1.5, 1.5),
    (10.0, 19.0, 1.0),
    (22.0, 19.5, 1.2),
    (27.0, 0.0, 1.0),
    (29.0, -4.0, 1.0),
)


@dataclass(frozen=True, slots=True)
class Device:
    name: str
    payload: bytes
    start_s: float  # when the walk starts within a round (ignored for fixed devices)
    fixed: tuple[float, float] | None = None
    address: str = ""  # only store-owned beacons have a static address worth reporting
    telemetry: bytes = b""  # interleaved with ``payload`` (every third advertisement)
    eid_key: bytes = b""  # an EID advertiser: the payload is computed for the time

    def payload_at(self, wall_ts: float) -> bytes:
        if self.eid_key:
            return eddystone_eid(eid_for_time(self.eid_key, EID_EXPONENT, wall_ts))
        return self.payload


SHOPPERS: tuple[Device, ...] = (
    Device("alice", ibeacon(APP_UUID, 100, 1), start_s=0.0),
    Device("bob", ibeacon(APP_UUID, 100, 2), start_s=30.0),
    Device("chloe", b"", start_s=60.0, eid_key=CHLOE_EID_KEY),
    Device(
        "stranger", phone_noise(b"\x5a\x13\x07\x42\x00\x11\x22\x33"), start_s=0.0, fixed=(3.0, 4.0)
    ),
)

FIXED_BEACONS: tuple[Device, ...] = (
    Device(
        "bcn-entrance",
        ibeacon(STORE_UUID, 1, 1),
        start_s=0.0,
        fixed=(0.5, 2.0),
        address="C0:FF:EE:00:00:01",
        telemetry=eddystone_tlm(3010, 21.5, 120_000, 86_400.0),
    ),
    Device(
        "bcn-coffee",
        ibeacon(STORE_UUID, 1, 2),
        start_s=0.0,
        fixed=(20.5, 2.0),
        address="C0:FF:EE:00:00:02",
        telemetry=eddystone_tlm(2950, 19.0, 98_000, 72_000.0),
    ),
)

DEVICES: tuple[Device, ...] = SHOPPERS + FIXED_BEACONS


def position(device: Device, t_in_round: float) -> tuple[float, float] | None:
    if device.fixed is not None:
        return device.fixed
    t = t_in_round - device.start_s
    if t < _PATH[0][0] or t > _PATH[-1][0]:
        return None
    for (t0, x0, y0), (t1, x1, y1) in pairwise(_PATH):
        if t0 <= t <= t1:
            f = (t - t0) / (t1 - t0)
            return (x0 + f * (x1 - x0), y0 + f * (y1 - y0))
    return None


def demo_records(now: float) -> list[Record]:
    """Profiles, consents, identities and offers for the demo store."""
    granted = {
        p.value: PurposeState(granted=True, at=now, notice_version="2026-01", channel="app")
        for p in Purpose
    }
    declined = {
        p.value: PurposeState(granted=False, at=now, notice_version="2026-01", channel="app")
        for p in Purpose
    }
    return [
        ProfileRecord(
            shopper_id="shopper-alice",
            first_name="Alice",
            nickname="Alice",
            segments=["coffee-lover", "loyalty-gold"],
            greet_on_kiosk=True,
        ),
        ConsentRecord(shopper_id="shopper-alice", purposes=granted),
        IdentityRecord(key=f"ibeacon:{APP_UUID}:100:1", shopper_id="shopper-alice"),
        ProfileRecord(shopper_id="shopper-bob", first_name="Bob", segments=["coffee-lover"]),
        ConsentRecord(shopper_id="shopper-bob", purposes=declined),
        IdentityRecord(key=f"ibeacon:{APP_UUID}:100:2", shopper_id="shopper-bob"),
        OfferRecord(
            offer_id="espresso-beans-1kg",
            title="Espresso beans, 1 kg",
            body="Our single-origin roast, picked for coffee lovers.",
            regular_price=16.90,
            price=12.90,
            segments=["coffee-lover"],
            priority=10,
        ),
        ProfileRecord(
            shopper_id="shopper-chloe",
            first_name="Chloe",
            nickname="Chloe",
            segments=["tea-lover"],
            greet_on_kiosk=False,
        ),
        ConsentRecord(shopper_id="shopper-chloe", purposes=granted),
        EidKeyRecord(shopper_id="shopper-chloe", identity_key=CHLOE_EID_KEY, exponent=EID_EXPONENT),
        OfferRecord(
            offer_id="green-tea",
            title="Green tea, 20 bags",
            body="First flush sencha, for tea lovers.",
            regular_price=4.90,
            price=3.50,
            segments=["tea-lover"],
            priority=10,
        ),
        OfferRecord(
            offer_id="croissants",
            title="Fresh croissants every morning",
            body="Baked in store from 7 am.",
            generic=True,
            priority=1,
        ),
    ]
