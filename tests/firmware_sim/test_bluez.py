"""The simulated BlueZ, scanned by the gateway's unchanged radio source through real bleak.

A private ``dbus-daemon`` is the system bus (``DBUS_SYSTEM_BUS_ADDRESS``), ``FakeBlueZ``
owns ``org.bluez`` on it, and ``BleakSource`` runs with bleak 3.x's real BlueZ backend: an
advertisement of the simulation travels Device1 -> D-Bus signal -> bleak's BlueZ manager ->
``BleakScanner`` -> the source's queue.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from dbus_fast import BusType, Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from beacons import EddystoneTLM, IBeacon, decode_advertisement, decode_bleak
from beacons.bleak_source import BleakSource, RadioSighting, SourceState
from firmware_sim.adverts import eddystone_tlm, ibeacon
from firmware_sim.bluez import FakeBlueZ, PrivateBus, bluez_fields, device_path, uuid16_to_128
from firmware_sim.scenario import APP_UUID, FIXED_BEACONS, SHOPPERS, demo_records
from gateway.config import Config
from tests.support.broker import Broker
from tests.support.peers import serve

pytestmark = pytest.mark.skipif(
    shutil.which("dbus-daemon") is None,
    reason="dbus-daemon not installed (Debian package dbus-daemon; ./scripts/test installs it)",
)

ALICE = next(d for d in SHOPPERS if d.name == "alice")
ENTRANCE_BEACON = next(d for d in FIXED_BEACONS if d.name == "bcn-entrance")
ALICE_ADDRESS = "5A:13:07:42:00:A1"  # a phone's resolvable private address
EDDYSTONE = "0000feaa-0000-1000-8000-00805f9b34fb"


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


@pytest.fixture
def system_bus(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with PrivateBus() as address:
        monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", address)
        yield address


@pytest.fixture
async def bluez(system_bus: str) -> AsyncIterator[FakeBlueZ]:
    async with FakeBlueZ(system_bus) as fake:
        yield fake


@pytest.fixture
async def client(system_bus: str) -> AsyncIterator[MessageBus]:
    bus = await MessageBus(bus_address=system_bus, bus_type=BusType.SYSTEM).connect()
    try:
        yield bus
    finally:
        bus.disconnect()
        async with asyncio.timeout(5):
            await bus.wait_for_disconnect()  # type: ignore[no-untyped-call]


async def call(bus: MessageBus, path: str, interface: str, member: str, *args: object) -> Message:
    signature = {"GetManagedObjects": "", "SetDiscoveryFilter": "a{sv}"}.get(member, "")
    async with asyncio.timeout(5):
        reply = await bus.call(
            Message(
                destination="org.bluez",
                path=path,
                interface=interface,
                member=member,
                signature=signature,
                body=list(args),
            )
        )
    assert reply is not None
    return reply


# --- payloads --------------------------------------------------------------------------------


def test_bluez_fields_of_the_simulations_payloads() -> None:
    assert ALICE.payload == ibeacon(APP_UUID, 100, 1)
    alice = bluez_fields(ALICE.payload)
    assert alice.service_data == {}
    assert list(alice.manufacturer_data) == [0x004C]
    assert decode_bleak(alice.manufacturer_data, {}) == IBeacon(APP_UUID, 100, 1, -59)

    tlm = bluez_fields(eddystone_tlm(3010, 21.5, 120_000, 86_400.0))
    assert tlm.manufacturer_data == {}
    assert list(tlm.service_data) == [EDDYSTONE]
    assert tlm.uuids == (EDDYSTONE,)
    assert decode_bleak({}, tlm.service_data) == decode_advertisement(
        eddystone_tlm(3010, 21.5, 120_000, 86_400.0)
    )
    assert uuid16_to_128(0xFEAA) == EDDYSTONE
    assert device_path("hci0", "c0:ff:ee:00:00:01") == "/org/bluez/hci0/dev_C0_FF_EE_00_00_01"


# --- BlueZ's D-Bus shape -------------------------------------------------------------------


async def test_adapter_discovery_and_devices_as_bluez_shows_them(
    bluez: FakeBlueZ, client: MessageBus
) -> None:
    signals: list[Message] = []
    # Only BlueZ's signals: the bus's own (NameAcquired, sent to every new connection) may
    # arrive after this handler is in place.
    client.add_message_handler(
        lambda m: (
            signals.append(m)
            if m.message_type is MessageType.SIGNAL and (m.path or "").startswith("/org/bluez")
            else None
        )
    )
    for rule in (
        "type='signal',interface='org.freedesktop.DBus.ObjectManager',arg0path='/org/bluez/'",
        "type='signal',interface='org.freedesktop.DBus.Properties',path_namespace='/org/bluez'",
    ):
        reply = await client.call(
            Message(
                destination="org.freedesktop.DBus",
                path="/org/freedesktop/DBus",
                interface="org.freedesktop.DBus",
                member="AddMatch",
                signature="s",
                body=[rule],
            )
        )
        assert reply is not None
        assert reply.message_type is MessageType.METHOD_RETURN

    objects = await call(client, "/", "org.freedesktop.DBus.ObjectManager", "GetManagedObjects")
    (managed,) = objects.body
    adapter = managed["/org/bluez/hci0"]["org.bluez.Adapter1"]
    assert adapter["Powered"].value is True
    assert adapter["Discovering"].value is False
    assert "central" in adapter["Roles"].value

    # Not discovering: the radio does not listen.
    assert not bluez.advertise(ALICE_ADDRESS, rssi=-60, manufacturer_data={76: b"x"})

    bad = await call(
        client,
        "/org/bluez/hci0",
        "org.bluez.Adapter1",
        "SetDiscoveryFilter",
        {"Colour": Variant("s", "blue")},
    )
    assert bad.error_name == "org.bluez.Error.InvalidArguments"
    ok = await call(
        client,
        "/org/bluez/hci0",
        "org.bluez.Adapter1",
        "SetDiscoveryFilter",
        {"Transport": Variant("s", "le"), "DuplicateData": Variant("b", False)},
    )
    assert ok.message_type is MessageType.METHOD_RETURN
    assert bluez.discovery_filter == {"Transport": "le", "DuplicateData": False}
    await call(client, "/org/bluez/hci0", "org.bluez.Adapter1", "StartDiscovery")
    assert bluez.discovering

    assert bluez.advertise_payload(ALICE_ADDRESS, ALICE.payload, rssi=-60)
    assert bluez.advertise_payload(ALICE_ADDRESS, ALICE.payload, rssi=-61)
    assert bluez.advertise_payload(ALICE_ADDRESS, ALICE.payload, rssi=-61)  # nothing changed
    assert bluez.remove(ALICE_ADDRESS)
    await call(client, "/org/bluez/hci0", "org.bluez.Adapter1", "StopDiscovery")
    stop_again = await call(client, "/org/bluez/hci0", "org.bluez.Adapter1", "StopDiscovery")
    assert stop_again.error_name == "org.bluez.Error.Failed"

    path = device_path("hci0", ALICE_ADDRESS)

    def seen() -> list[tuple[str | None, str | None, object]]:
        return [(m.member, m.path, m.body[0]) for m in signals]

    await until(lambda: len(signals) >= 5)
    await asyncio.sleep(0.05)  # nothing else is on its way
    assert seen() == [
        ("PropertiesChanged", "/org/bluez/hci0", "org.bluez.Adapter1"),
        ("InterfacesAdded", path, path),
        ("PropertiesChanged", path, "org.bluez.Device1"),
        ("InterfacesRemoved", path, path),
        ("PropertiesChanged", "/org/bluez/hci0", "org.bluez.Adapter1"),
    ]
    added = signals[1].body[1]["org.bluez.Device1"]
    assert added["Address"].value == ALICE_ADDRESS
    assert added["AddressType"].value == "random"
    assert added["Adapter"].value == "/org/bluez/hci0"
    assert added["RSSI"].value == -60
    assert added["ManufacturerData"].signature == "a{qv}"
    assert (
        added["ManufacturerData"].value[0x004C].value
        == bluez_fields(ALICE.payload).manufacturer_data[0x004C]
    )
    assert signals[2].body[1] == {"RSSI": Variant("n", -61)}
    assert signals[3].body[1] == ["org.bluez.Device1"]
    assert bluez.devices == []


# --- the gateway's radio source, unchanged, through bleak's BlueZ backend --------------------


async def test_bleak_source_hears_the_simulation(bluez: FakeBlueZ) -> None:
    source = BleakSource("hci0", clock=lambda: 1000.0, backoff=(0.05, 0.1))
    task = asyncio.create_task(source.run(), name="radio-under-test")
    try:
        await until(lambda: source.state is SourceState.SCANNING and bluez.discovering)
        status = source.status()
        assert status["mode"] == "active"  # no advertisement monitor API, as without -E
        assert "requires BlueZ >= 5.56" in status["passive_unavailable"]
        assert bluez.discovery_filter["Transport"] == "le"

        assert bluez.advertise_payload(ALICE_ADDRESS, ALICE.payload, rssi=-62)
        assert bluez.advertise_payload(
            ENTRANCE_BEACON.address,
            ENTRANCE_BEACON.telemetry,
            rssi=-71,
            address_type="public",
        )
        assert bluez.advertise_payload(ALICE_ADDRESS, ALICE.payload, rssi=-58)  # she came closer
        got: list[RadioSighting] = []
        async with asyncio.timeout(5):
            while len(got) < 3:
                got.append(await source.sightings.get())

        bluez.remove(ALICE_ADDRESS)  # she left: bleak forgets the device
        assert bluez.devices == [ENTRANCE_BEACON.address]
    finally:
        async with asyncio.timeout(5):
            await source.aclose()
            await task
    assert not bluez.discovering  # bleak stopped discovery on the way out

    frames = [(s.address, s.rssi, decode_bleak(s.manufacturer_data, s.service_data)) for s in got]
    tlm = decode_advertisement(ENTRANCE_BEACON.telemetry)
    assert isinstance(tlm, EddystoneTLM)
    assert frames == [
        (ALICE_ADDRESS, -62, IBeacon(APP_UUID, 100, 1, -59)),
        (ENTRANCE_BEACON.address, -71, tlm),
        (ALICE_ADDRESS, -58, IBeacon(APP_UUID, 100, 1, -59)),
    ]
    assert all(s.t == 1000.0 for s in got)
    assert decode_advertisement(ALICE.payload) == frames[0][2]
    assert source.status()["received"] == 3


# --- the whole gateway ----------------------------------------------------------------------


@pytest.mark.mqtt
async def test_gateway_sees_alice_through_its_own_radio(
    bluez: FakeBlueZ, make_config: Callable[..., Config], broker: Broker
) -> None:
    config = make_config(broker.port, MOMENTS_RADIO__ENABLED="true", MOMENTS_RADIO__ZONE="coffee")
    async with serve(config) as served:
        gateway = served.gateway
        await gateway.writer.write(gateway.db.put_op(demo_records(time.time())))
        assert gateway.radio is not None
        await until(lambda: bluez.discovering, timeout=10)
        # Alice lingers by the kiosk: her phone advertises, its RSSI wandering a little.
        async with asyncio.timeout(10):
            n = 0
            while gateway.sensing.zone_of("shopper-alice") != "coffee":
                bluez.advertise_payload(ALICE_ADDRESS, ALICE.payload, rssi=-55 - n % 3)
                n += 1
                await asyncio.sleep(0.05)
        status = gateway.radio.status()
        assert (status["state"], status["mode"]) == ("scanning", "active")
        assert status["received"] >= 1
