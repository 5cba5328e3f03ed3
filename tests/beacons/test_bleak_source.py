"""The radio adapter, against real bleak wherever this machine allows it.

* Real bleak, no system bus at all: what a gateway without Bluetooth sees.
* Real bleak against a private ``dbus-daemon`` (skipped when the binary is missing):
  without BlueZ, with an emulated BlueZ that has no adapter, and with one whose adapter
  scans, so that an advertisement travels the whole real path (D-Bus signal -> bleak's
  BlueZ manager -> ``BleakScanner`` -> our callback -> queue).
* The radio itself cannot exist here, so the watchdog, back-off and overflow tests use a
  bleak *backend* (``BleakScanner(backend=...)``, bleak's own extension point): the
  scanner object is the real ``BleakScanner``, and the backend hands it ``BLEDevice`` and
  ``AdvertisementData`` built the way bleak's BlueZ backend builds them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from bleak import BleakScanner
from bleak.backends.scanner import AdvertisementData, AdvertisementDataCallback, BaseBleakScanner
from bleak.exc import (
    BleakBluetoothNotAvailableError,
    BleakBluetoothNotAvailableReason,
    BleakDBusError,
    BleakError,
)
from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.errors import InvalidAddressError

from beacons import EddystoneUID, IBeacon, decode_bleak
from beacons.bleak_source import BEACON_PATTERNS, BleakSource, RadioSighting, SourceState

LOGGER = "beacons.bleak_source"

# iBeacon manufacturer data of Apple (company id 0x004C split off, as bleak gives it):
# AirLocate UUID, major 1, minor 2, measured power -59 dBm.
IBEACON_MFG = bytes.fromhex("0215 e2c56db5dffb48d2b060d0f5a71096e0 0001 0002 c5")
IBEACON = IBeacon("e2c56db5-dffb-48d2-b060-d0f5a71096e0", 1, 2, -59)
EDDYSTONE_KEY = "0000feaa-0000-1000-8000-00805f9b34fb"
UID_FRAME = bytes.fromhex("00 ec 8b0ca750095477cb3e77 0123456789ab 0000")


# --- helpers -----------------------------------------------------------------------------


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait for a condition the code under test reaches by itself (bounded, not timed)."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


@contextlib.asynccontextmanager
async def running(source: BleakSource) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(source.run(), name="radio-source-under-test")
    try:
        yield task
    finally:
        async with asyncio.timeout(5):
            await source.aclose()
            await task


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.WARNING]


def infos_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == logging.INFO
    ]


# --- a radio for bleak's backend slot ------------------------------------------------------


class Radio:
    """The air and the controller behind ``RadioBackend``: what BlueZ would do."""

    def __init__(self) -> None:
        self.backends: list[RadioBackend] = []
        self.start_error: dict[str, BaseException | None] = {"active": None, "passive": None}
        self.stop_error: BaseException | None = None
        self.hang_start = False
        self.most_scanning = 0  # the most scanners ever running at once

    @property
    def scanning(self) -> list[RadioBackend]:
        return [b for b in self.backends if b.running]

    @property
    def modes(self) -> list[str]:
        return [b.mode for b in self.backends]

    def advertise(
        self,
        address: str,
        *,
        rssi: int,
        manufacturer_data: Mapping[int, bytes] | None = None,
        service_data: Mapping[str, bytes] | None = None,
        tx_power: int | None = None,
    ) -> None:
        for backend in self.scanning:
            backend.deliver(address, rssi, manufacturer_data or {}, service_data or {}, tx_power)


class RadioBackend(BaseBleakScanner):
    """A bleak scanner backend: same constructor as bleak's BlueZ backend, plus the radio."""

    def __init__(
        self,
        detection_callback: AdvertisementDataCallback | None,
        service_uuids: list[str] | None,
        scanning_mode: str,
        *,
        bluez: dict[str, Any],
        cb: dict[str, Any],
        radio: Radio,
        **kwargs: Any,
    ) -> None:
        super().__init__(detection_callback, service_uuids)
        if scanning_mode == "passive" and not bluez.get("or_patterns"):
            raise BleakError("passive scanning mode requires bluez or_patterns")
        self.mode = scanning_mode
        self.bluez = bluez
        self.radio = radio
        self.running = False
        self.stops = 0
        radio.backends.append(self)

    async def start(self) -> None:
        if self.radio.hang_start:
            await asyncio.Event().wait()
        error = self.radio.start_error[self.mode]
        if error is not None:
            raise error
        self.seen_devices = {}
        self.running = True
        self.radio.most_scanning = max(self.radio.most_scanning, len(self.radio.scanning))

    async def stop(self) -> None:
        self.stops += 1
        self.running = False
        if self.radio.stop_error is not None:
            raise self.radio.stop_error

    def deliver(
        self,
        address: str,
        rssi: int,
        manufacturer_data: Mapping[int, bytes],
        service_data: Mapping[str, bytes],
        tx_power: int | None,
    ) -> None:
        # As bleak's BlueZ backend does in _handle_advertising_data.
        path = f"/org/bluez/{self.bluez['adapter']}/dev_{address.replace(':', '_')}"
        props: dict[str, Any] = {
            "Address": address,
            "Alias": address.replace(":", "-"),
            "RSSI": rssi,
            "ManufacturerData": dict(manufacturer_data),
            "ServiceData": dict(service_data),
            "UUIDs": [],
        }
        advertisement = AdvertisementData(
            local_name=None,
            manufacturer_data={k: bytes(v) for k, v in manufacturer_data.items()},
            service_data={k: bytes(v) for k, v in service_data.items()},
            service_uuids=[],
            tx_power=tx_power,
            rssi=rssi,
            platform_data=(path, props),
        )
        device = self.create_or_update_device(
            path, address, None, {"path": path, "props": props}, advertisement
        )
        self.call_detection_callbacks(device, advertisement)


@pytest.fixture
def radio() -> Radio:
    return Radio()


def source_on(radio: Radio, **kwargs: Any) -> BleakSource:
    kwargs.setdefault("backoff", (0.01, 0.02))
    scanner_factory = functools.partial(BleakScanner, backend=RadioBackend, radio=radio)
    return BleakSource(scanner_factory=scanner_factory, **kwargs)


# --- (b) sightings, through the real BleakScanner front end --------------------------------


async def test_sighting_from_bleak_objects(radio: Radio) -> None:
    source = source_on(radio, clock=lambda: 1234.5)
    async with running(source):
        await until(lambda: source.state is SourceState.SCANNING)
        radio.advertise(
            "F0:E1:D2:C3:B4:A5",
            rssi=-61,
            tx_power=-4,
            manufacturer_data={0x004C: IBEACON_MFG},
            service_data={EDDYSTONE_KEY: UID_FRAME},
        )
        async with asyncio.timeout(2):
            sighting = await source.sightings.get()
    assert sighting == RadioSighting(
        address="F0:E1:D2:C3:B4:A5",
        rssi=-61,
        tx_power=-4,
        manufacturer_data={0x004C: IBEACON_MFG},
        service_data={EDDYSTONE_KEY: UID_FRAME},
        t=1234.5,
    )
    assert source.status()["received"] == 1


async def test_passive_scan_asks_for_the_beacon_patterns(radio: Radio) -> None:
    source = source_on(radio, adapter="hci1")
    async with running(source):
        await until(lambda: source.state is SourceState.SCANNING)
        status = source.status()
        assert (status["state"], status["mode"], status["adapter"]) == (
            "scanning",
            "passive",
            "hci1",
        )
        assert "passive_unavailable" not in status
        (backend,) = radio.backends
        assert backend.bluez == {"adapter": "hci1", "or_patterns": list(BEACON_PATTERNS)}
    assert backend.stops == 1
    assert not backend.running
    assert source.status()["state"] == "stopped"


async def test_passive_refused_falls_back_to_active(
    radio: Radio, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    radio.start_error["passive"] = BleakError(
        "passive scanning on Linux requires BlueZ >= 5.56 with --experimental enabled"
    )
    source = source_on(radio, watchdog_s=0.05)
    async with running(source):
        await until(lambda: source.restarts >= 1)
        await until(lambda: source.state is SourceState.SCANNING)
    status = source.status()
    assert "passive scanning on Linux requires BlueZ" in status["passive_unavailable"]
    # Once refused, passive is not asked again: restarts go straight to active.
    assert radio.modes[:2] == ["passive", "active"]
    assert set(radio.modes[2:]) == {"active"}
    assert not warnings_of(caplog)
    assert sum("passive scanning not possible" in m for m in infos_of(caplog)) == 1


# --- (c) overflow ------------------------------------------------------------------------


async def test_queue_overflow_drops_and_counts(radio: Radio) -> None:
    source = source_on(radio, queue_size=2)
    async with running(source):
        await until(lambda: source.state is SourceState.SCANNING)
        for rssi in (-50, -51, -52, -53, -54):
            radio.advertise("00:11:22:33:44:55", rssi=rssi, manufacturer_data={76: IBEACON_MFG})
        status = source.status()
        assert (status["received"], status["dropped"]) == (5, 3)
        kept = [source.sightings.get_nowait().rssi for _ in range(source.sightings.qsize())]
        assert kept == [-50, -51]
        radio.advertise("00:11:22:33:44:55", rssi=-60)
        assert source.sightings.get_nowait().rssi == -60
        assert source.status()["dropped"] == 3


# --- (d) into the decoder ------------------------------------------------------------------


async def test_sighting_decodes_through_decode_bleak(radio: Radio) -> None:
    source = source_on(radio)
    async with running(source):
        await until(lambda: source.state is SourceState.SCANNING)
        radio.advertise("AA:BB:CC:DD:EE:01", rssi=-70, manufacturer_data={0x004C: IBEACON_MFG})
        radio.advertise("AA:BB:CC:DD:EE:02", rssi=-71, service_data={EDDYSTONE_KEY: UID_FRAME})
        first = source.sightings.get_nowait()
        second = source.sightings.get_nowait()
    assert decode_bleak(first.manufacturer_data, first.service_data) == IBEACON
    assert decode_bleak(second.manufacturer_data, second.service_data) == EddystoneUID(
        "8b0ca750095477cb3e77", "0123456789ab", -20
    )


# --- watchdog ------------------------------------------------------------------------------


async def test_watchdog_restarts_a_quiet_scanner(
    radio: Radio, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    source = source_on(radio, watchdog_s=0.05)
    async with running(source):
        await until(lambda: source.state is SourceState.SCANNING)
        radio.advertise("00:11:22:33:44:55", rssi=-40)  # heard once, then silence
        await until(lambda: source.restarts >= 3 and source.state is SourceState.SCANNING)
        first = radio.backends[0]
        assert first.stops == 1
        assert not first.running
    assert radio.most_scanning == 1  # a restart stops the old scanner first
    assert all(b.stops == 1 for b in radio.backends)
    restarts = [r for r in caplog.records if "restarting the scanner" in r.getMessage()]
    assert len(restarts) == source.restarts
    # One line when the radio goes quiet; quiet restarts after that stay at debug level.
    assert [r.levelno for r in restarts][:3] == [logging.INFO, logging.DEBUG, logging.DEBUG]
    assert not warnings_of(caplog)


async def test_watchdog_spares_a_scanner_that_hears_something(radio: Radio) -> None:
    # Margins, not timing: advertisements every 20 ms against a 1 s watchdog.
    source = source_on(radio, watchdog_s=1.0)
    async with running(source):
        await until(lambda: source.state is SourceState.SCANNING)
        for _ in range(75):
            radio.advertise("00:11:22:33:44:55", rssi=-40)
            await asyncio.sleep(0.02)
        assert source.restarts == 0
        assert len(radio.backends) == 1


async def test_a_failing_stop_does_not_stop_the_supervisor(radio: Radio) -> None:
    radio.stop_error = OSError(9, "Bad file descriptor")  # bleak's stop() after the bus died
    source = source_on(radio, watchdog_s=0.05)
    async with running(source) as task:
        await until(lambda: source.restarts >= 2 and source.state is SourceState.SCANNING)
        assert not task.done()


# --- unavailable, translated, recovered ----------------------------------------------------


@pytest.mark.parametrize(
    ("error", "detail"),
    [
        (
            FileNotFoundError(2, "No such file or directory"),
            "no D-Bus system bus: [Errno 2] No such file or directory",
        ),
        (
            ConnectionRefusedError(111, "Connection refused"),
            "no D-Bus system bus: [Errno 111] Connection refused",
        ),
        (
            PermissionError(13, "Permission denied"),
            "no permission for the D-Bus system bus: [Errno 13] Permission denied",
        ),
        (
            ConnectionResetError(104, "Connection reset by peer"),
            "D-Bus system bus closed the connection: [Errno 104] Connection reset by peer",
        ),
        (EOFError(), "D-Bus system bus closed the connection: EOFError"),
        (
            InvalidAddressError("address option did not contain a value"),
            "invalid D-Bus system bus address: address option did not contain a value",
        ),
        (
            BleakDBusError(
                "org.freedesktop.DBus.Error.ServiceUnknown",
                ["The name org.bluez was not provided by any .service files"],
            ),
            "BlueZ is not running (org.bluez is not on the D-Bus system bus)",
        ),
        (
            BleakDBusError("org.bluez.Error.NotReady", ["Resource Not Ready"]),
            "BlueZ refused: [org.bluez.Error.NotReady] Resource Not Ready",
        ),
        (BleakError("adapter 'hci0' not found"), "Bluetooth adapter hci0 not found"),
        (
            BleakBluetoothNotAvailableError(
                "No powered Bluetooth adapters found.",
                BleakBluetoothNotAvailableReason.POWERED_OFF,
            ),
            "Bluetooth not available (powered_off): No powered Bluetooth adapters found.",
        ),
    ],
)
async def test_errors_become_one_unavailable_state(
    radio: Radio, caplog: pytest.LogCaptureFixture, error: BaseException, detail: str
) -> None:
    radio.start_error = {"active": error, "passive": error}
    source = source_on(radio)
    async with running(source) as task:
        await until(lambda: source.state is SourceState.UNAVAILABLE)
        await until(lambda: len(radio.backends) >= 6)  # retried, with back-off
        assert not task.done()
        assert source.status()["detail"] == detail
    (record,) = warnings_of(caplog)
    assert record.name == LOGGER
    assert record.exc_info is None
    assert record.getMessage() == f"radio unavailable on hci0: {detail}"


async def test_unavailable_then_recovers(radio: Radio, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    missing = BleakError("adapter 'hci0' not found")
    radio.start_error = {"active": missing, "passive": missing}
    source = source_on(radio)
    async with running(source):
        await until(lambda: source.state is SourceState.UNAVAILABLE)
        await until(lambda: len(radio.backends) >= 4)
        radio.start_error = {"active": None, "passive": None}
        await until(lambda: source.state is SourceState.SCANNING)
        status = source.status()
        # Failing on both modes says nothing about passive: it is still the first choice.
        assert status["mode"] == "passive"
        assert "passive_unavailable" not in status
    assert len(warnings_of(caplog)) == 1
    assert infos_of(caplog) == ["radio scanning: passive scan on hci0", "radio stopped on hci0"]


async def test_a_start_that_never_answers_times_out(radio: Radio) -> None:
    radio.hang_start = True
    source = source_on(radio, start_timeout_s=0.05)
    async with running(source):
        await until(lambda: source.state is SourceState.UNAVAILABLE)
        assert source.status()["detail"].startswith("no answer from D-Bus or BlueZ")


async def test_aclose_during_a_hanging_start_is_prompt(radio: Radio) -> None:
    radio.hang_start = True
    source = source_on(radio, start_timeout_s=60.0)
    task = asyncio.create_task(source.run())
    await until(lambda: len(radio.backends) == 1)
    async with asyncio.timeout(2):
        await source.aclose()
        await task
    assert source.status()["state"] == "stopped"


async def test_cancelling_run_releases_the_scanner(radio: Radio) -> None:
    source = source_on(radio)
    task = asyncio.create_task(source.run())
    await until(lambda: source.state is SourceState.SCANNING)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(5):
            await task
    (backend,) = radio.backends
    assert (backend.running, backend.stops) == (False, 1)
    assert source.status()["state"] == "stopped"


async def test_a_bug_is_not_swallowed(radio: Radio) -> None:
    radio.start_error = {"active": ValueError("a bug"), "passive": ValueError("a bug")}
    source = source_on(radio)
    with pytest.raises(ValueError, match="a bug"):
        async with asyncio.timeout(5):
            await source.run()
    assert source.status()["state"] == "stopped"


async def test_status_before_run_and_after_an_early_aclose(radio: Radio) -> None:
    source = source_on(radio)
    assert source.status() == {
        "state": "starting",
        "adapter": "hci0",
        "detail": "not started",
        "mode": None,
        "received": 0,
        "dropped": 0,
        "restarts": 0,
    }
    await source.aclose()
    await source.run()  # returns at once
    assert source.status()["state"] == "stopped"
    assert radio.backends == []


# --- (a) real bleak, no system bus ---------------------------------------------------------


async def test_real_bleak_without_a_system_bus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={tmp_path / 'nonexistent'}")
    caplog.set_level(logging.INFO, logger=LOGGER)
    source = BleakSource(backoff=(5.0, 10.0))
    task = asyncio.create_task(source.run())
    await until(lambda: source.state is SourceState.UNAVAILABLE)
    await asyncio.sleep(0.1)
    assert not task.done()
    status = source.status()
    assert status["state"] == "unavailable"
    assert status["detail"] == "no D-Bus system bus: [Errno 2] No such file or directory"
    assert "D-Bus" in status["detail"]
    async with asyncio.timeout(2):  # "promptly": well inside the 5 s back-off
        await source.aclose()
        await task
    assert task.exception() is None
    assert source.status()["state"] == "stopped"
    (warning,) = warnings_of(caplog)
    assert warning.name == LOGGER
    assert warning.exc_info is None
    assert warning.getMessage() == (
        "radio unavailable on hci0: no D-Bus system bus: [Errno 2] No such file or directory"
    )


# --- real bleak on a private dbus-daemon ---------------------------------------------------

DBUS_DAEMON = shutil.which("dbus-daemon")
needs_dbus_daemon = pytest.mark.skipif(DBUS_DAEMON is None, reason="dbus-daemon not installed")

BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"""


@pytest.fixture
def system_bus(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """A private dbus-daemon, made the system bus of this test through the environment."""
    assert DBUS_DAEMON is not None
    folder = tmp_path_factory.mktemp("bus")  # short: unix socket paths are limited
    socket_path = folder / "bus"
    config = folder / "bus.conf"
    config.write_text(BUS_CONFIG.format(socket=socket_path))
    # The daemon prints its address once it listens (its socket file exists earlier).
    daemon = subprocess.Popen(
        [DBUS_DAEMON, f"--config-file={config}", "--nofork", "--nopidfile", "--print-address=1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert daemon.stdout is not None
        printed = daemon.stdout.readline().strip()
        daemon.stdout.close()
        if not printed.startswith(f"unix:path={socket_path}"):
            pytest.fail(f"dbus-daemon did not start (printed {printed!r})")
        address = f"unix:path={socket_path}"
        monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", address)
        yield address
    finally:
        daemon.terminate()
        daemon.wait(timeout=10)


class EmulatedBlueZ:
    """Answers, as ``org.bluez``, the D-Bus calls bleak makes to scan, and nothing more."""

    def __init__(self, bus: MessageBus, *, adapter: bool, monitor: bool) -> None:
        self.bus = bus
        self.calls: list[str] = []
        self.objects: dict[str, dict[str, dict[str, Variant]]] = {}
        if adapter:
            interfaces: dict[str, dict[str, Variant]] = {
                "org.bluez.Adapter1": {
                    "Address": Variant("s", "00:1A:7D:DA:71:13"),
                    "Powered": Variant("b", True),
                    "Roles": Variant("as", ["central", "peripheral"]),
                }
            }
            if monitor:
                interfaces["org.bluez.AdvertisementMonitorManager1"] = {}
            self.objects["/org/bluez/hci0"] = interfaces
        bus.add_message_handler(self._handle)

    @classmethod
    @contextlib.asynccontextmanager
    async def on(
        cls, address: str, *, adapter: bool, monitor: bool = False
    ) -> AsyncIterator[EmulatedBlueZ]:
        bus = await MessageBus(bus_address=address).connect()
        try:
            await bus.request_name("org.bluez")
            yield cls(bus, adapter=adapter, monitor=monitor)
        finally:
            bus.disconnect()
            await bus.wait_for_disconnect()  # type: ignore[no-untyped-call]

    def _handle(self, message: Message) -> Message | None:
        if message.message_type is not MessageType.METHOD_CALL or not message.member:
            return None
        self.calls.append(message.member)
        if message.member == "GetManagedObjects":
            return Message.new_method_return(message, "a{oa{sa{sv}}}", [self.objects])
        interfaces = self.objects.get(message.path or "", {})
        if message.interface in interfaces and message.member in {
            "SetDiscoveryFilter",
            "StartDiscovery",
            "StopDiscovery",
            "RegisterMonitor",
            "UnregisterMonitor",
        }:
            return Message.new_method_return(message)
        return Message.new_error(
            message, "org.freedesktop.DBus.Error.UnknownMethod", f"no {message.member}"
        )

    def advertise(self, address: str, rssi: int, manufacturer_data: dict[int, bytes]) -> None:
        path = f"/org/bluez/hci0/dev_{address.replace(':', '_')}"
        device = {
            "Adapter": Variant("o", "/org/bluez/hci0"),
            "Address": Variant("s", address),
            "Alias": Variant("s", address.replace(":", "-")),
            "RSSI": Variant("n", rssi),
            "ManufacturerData": Variant(
                "a{qv}", {k: Variant("ay", v) for k, v in manufacturer_data.items()}
            ),
        }
        self.bus.send(
            Message.new_signal(
                "/",
                "org.freedesktop.DBus.ObjectManager",
                "InterfacesAdded",
                "oa{sa{sv}}",
                [path, {"org.bluez.Device1": device}],
            )
        )


@needs_dbus_daemon
async def test_real_bleak_with_a_bus_but_no_bluez(
    system_bus: str, caplog: pytest.LogCaptureFixture
) -> None:
    source = BleakSource(backoff=(5.0, 10.0))
    async with running(source):
        await until(lambda: source.state is SourceState.UNAVAILABLE)
        detail = source.status()["detail"]
    assert detail == "BlueZ is not running (org.bluez is not on the D-Bus system bus)"
    assert [r.getMessage() for r in warnings_of(caplog)] == [f"radio unavailable on hci0: {detail}"]


@needs_dbus_daemon
async def test_real_bleak_with_bluez_but_no_adapter(
    system_bus: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with EmulatedBlueZ.on(system_bus, adapter=False):
        source = BleakSource(backoff=(5.0, 10.0))
        async with running(source):
            await until(lambda: source.state is SourceState.UNAVAILABLE)
            detail = source.status()["detail"]
    assert detail == "Bluetooth adapter hci0 not found"
    assert [r.getMessage() for r in warnings_of(caplog)] == [f"radio unavailable on hci0: {detail}"]


@needs_dbus_daemon
async def test_real_bleak_scans_actively_where_bluez_has_no_monitor_api(
    system_bus: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with EmulatedBlueZ.on(system_bus, adapter=True, monitor=False) as bluez:
        source = BleakSource(clock=lambda: 99.0)
        async with running(source):
            await until(lambda: source.state is SourceState.SCANNING)
            status = source.status()
            assert status["mode"] == "active"
            assert "requires BlueZ >= 5.56" in status["passive_unavailable"]
            bluez.advertise("F0:E1:D2:C3:B4:A5", -58, {0x004C: IBEACON_MFG})
            async with asyncio.timeout(5):
                sighting = await source.sightings.get()
        assert "StopDiscovery" in bluez.calls
    assert sighting == RadioSighting(
        "F0:E1:D2:C3:B4:A5", -58, None, {0x004C: IBEACON_MFG}, {}, 99.0
    )
    assert decode_bleak(sighting.manufacturer_data, sighting.service_data) == IBEACON
    assert not warnings_of(caplog)


@needs_dbus_daemon
async def test_real_bleak_scans_passively_where_bluez_can(system_bus: str) -> None:
    async with EmulatedBlueZ.on(system_bus, adapter=True, monitor=True) as bluez:
        source = BleakSource()
        async with running(source):
            await until(lambda: source.state is SourceState.SCANNING)
            assert source.status()["mode"] == "passive"
            bluez.advertise("C0:FF:EE:00:00:01", -75, {0x004C: IBEACON_MFG})
            async with asyncio.timeout(5):
                sighting = await source.sightings.get()
        assert bluez.calls.count("RegisterMonitor") == 1
        assert bluez.calls.count("UnregisterMonitor") == 1
        assert "StartDiscovery" not in bluez.calls
    assert (sighting.address, sighting.rssi) == ("C0:FF:EE:00:00:01", -75)
