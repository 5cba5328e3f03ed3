"""Fixed-beacon fleet health, pure, with explicit times."""

from __future__ import annotations

from beacons import EddystoneTLM
from gateway.fleet import BeaconFleet, FixedBeacon

ENTRANCE = FixedBeacon("bcn-1", "entrance", "ibeacon:u:1:1", "C0:FF:EE:00:00:01", 60.0, 2600)
COFFEE = FixedBeacon("bcn-2", "coffee", "ibeacon:u:1:2", "", 30.0, 2600)


def tlm(mv: int) -> EddystoneTLM:
    return EddystoneTLM(battery_mv=mv, temperature_c=21.0, adv_count=10, uptime_s=5.0)


def test_starting_grace_then_never_heard_then_ok_then_silent() -> None:
    fleet = BeaconFleet([ENTRANCE, COFFEE])
    assert fleet.check(0.0) == []  # both "starting": a restart raises no alerts
    assert fleet.status(0.0)["state"] == "ok"
    fleet.heard(ENTRANCE, 10.0)
    alerts = fleet.check(31.0)
    assert [(a.beacon, a.condition, a.previous) for a in alerts] == [
        ("bcn-1", "ok", "starting"),
        ("bcn-2", "never_heard", "starting"),
    ]
    assert fleet.status(31.0)["alerts"] == ["bcn-2"]
    assert fleet.status(31.0)["state"] == "degraded"
    assert fleet.check(32.0) == []  # changes only, not a repeat every tick
    alerts = fleet.check(71.0)
    assert [(a.beacon, a.condition) for a in alerts] == [("bcn-1", "silent")]


def test_low_battery_from_telemetry_by_address() -> None:
    fleet = BeaconFleet([ENTRANCE])
    assert fleet.telemetry("c0:ff:ee:00:00:01", tlm(3000), 1.0)  # case-insensitive
    assert [a.condition for a in fleet.check(2.0)] == ["ok"]
    assert fleet.telemetry("C0:FF:EE:00:00:01", tlm(2500), 3.0)
    alerts = fleet.check(4.0)
    assert [(a.condition, a.battery_mv) for a in alerts] == [("low_battery", 2500)]
    status = fleet.status(4.0)
    beacon = status["beacons"]["bcn-1"]  # type: ignore[index]
    assert beacon["battery_mv"] == 2500
    assert beacon["last_heard_s_ago"] == 1.0


def test_unknown_addresses_and_identities_are_not_the_fleet() -> None:
    fleet = BeaconFleet([ENTRANCE])
    assert not fleet.telemetry("AA:BB:CC:DD:EE:FF", tlm(3000), 1.0)
    assert fleet.by_identity("ibeacon:u:1:9") is None
    assert fleet.by_identity("ibeacon:u:1:1") is ENTRANCE
    assert BeaconFleet([]).status(0.0)["state"] == "not_configured"


def test_an_old_sighting_does_not_move_last_heard_back() -> None:
    fleet = BeaconFleet([COFFEE])
    fleet.heard(COFFEE, 50.0)
    fleet.heard(COFFEE, 20.0)  # a batch that arrived late
    fleet.check(50.0)
    assert [a.condition for a in fleet.check(79.0)] == []
    assert [a.condition for a in fleet.check(81.0)] == ["silent"]
