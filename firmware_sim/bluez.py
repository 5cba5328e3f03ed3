"""A simulated BlueZ: ``org.bluez`` on a private D-Bus system bus, for the real bleak to scan.

The gateway's radio adapter (``beacons.bleak_source``) talks to BlueZ through bleak's BlueZ
backend over the D-Bus system bus.  A Bluetooth radio cannot exist on a build machine, so
this module puts the part of BlueZ that bleak's scanner uses on a bus of our own, and the
gateway runs unchanged against it with ``DBUS_SYSTEM_BUS_ADDRESS`` pointing there:

* ``PrivateBus``: Debian's ``dbus-daemon`` on a unix socket in a temporary folder, with a
  minimal system-bus-like configuration that allows everything; yields the address.
* ``FakeBlueZ``: owns ``org.bluez`` on that bus (dbus-fast's service API) and exports, as
  BlueZ does,

  - the object manager (``GetManagedObjects`` on ``/``; ``InterfacesAdded`` and
    ``InterfacesRemoved`` when objects come and go);
  - ``/org/bluez/<adapter>`` with ``org.bluez.Adapter1``: ``Powered`` true, ``Discovering``
    following ``StartDiscovery``/``StopDiscovery`` (with ``PropertiesChanged``), and
    ``SetDiscoveryFilter(a{sv})`` checked against BlueZ's filter keys;
  - ``/org/bluez/<adapter>/dev_XX_XX_XX_XX_XX_XX`` with ``org.bluez.Device1`` per
    advertiser: created by its first advertisement heard while discovering, updated with
    ``PropertiesChanged`` (only the properties whose value changed, as BlueZ does), and
    removed with ``remove()`` when the shopper has left.

* ``bluez_fields``: an advertisement payload (AD structures, as ``firmware_sim.adverts``
  builds them) turned into what BlueZ publishes: ``ManufacturerData`` (company id -> bytes),
  ``ServiceData`` (128-bit UUID string -> bytes), ``UUIDs``, ``Name`` and ``TxPower``.

Where this differs from BlueZ (none of it matters to bleak's scanner):

* dbus-fast sends ``InterfacesAdded``/``InterfacesRemoved`` from the object's own path,
  BlueZ from ``/``; bleak matches on ``arg0path`` only.
* ``Name`` and ``TxPower`` are not Device1 properties here: beacons rarely send them and a
  dbus-fast property cannot be absent.  ``bluez_fields`` still reports them.
* No ``AdvertisementMonitorManager1``: bleak's passive scan is refused with
  ``UnknownMethod``, exactly as on a BlueZ without experimental features, so bleak (and the
  gateway) scan actively.  No ``AgentManager1``/``ProfileManager1``: scanning needs neither.
* Discovery is counted, not tracked per D-Bus client; RSSI is not invalidated when
  discovery stops, and devices do not expire by themselves (call ``remove()``).
* RSSI changes are always signalled (BlueZ may hold back changes smaller than 8 dBm).
"""

# No ``from __future__ import annotations``: dbus-fast reads the method annotations at
# class creation, and a deferred ``None`` return annotation would not parse.

import asyncio
import contextlib
import os
import selectors
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Annotated, Any, Self, TypeVar

from dbus_fast import BusType, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.annotations import DBusSignature
from dbus_fast.constants import PropertyAccess, RequestNameReply
from dbus_fast.errors import DBusError
from dbus_fast.service import ServiceInterface, dbus_method, dbus_property

from beacons.adstructs import iter_ad_structures

__all__ = [
    "BLUEZ_SERVICE",
    "BluezFields",
    "FakeBlueZ",
    "PrivateBus",
    "bluez_fields",
    "device_path",
    "uuid16_to_128",
]

_K = TypeVar("_K", int, str)

BLUEZ_SERVICE = "org.bluez"
_BASE_UUID_SUFFIX = "-0000-1000-8000-00805f9b34fb"

# D-Bus signatures for dbus-fast's service decorators (looked up by name in this module).
DBusBool = Annotated[bool, DBusSignature("b")]
DBusStr = Annotated[str, DBusSignature("s")]
DBusInt16 = Annotated[int, DBusSignature("n")]
DBusPath = Annotated[str, DBusSignature("o")]
DBusStrList = Annotated[list[str], DBusSignature("as")]
DBusFilter = Annotated[dict[str, Variant], DBusSignature("a{sv}")]
DBusManufacturerData = Annotated[dict[int, Variant], DBusSignature("a{qv}")]
DBusServiceData = Annotated[dict[str, Variant], DBusSignature("a{sv}")]

# --- the bus -------------------------------------------------------------------------------

_BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_type="method_call"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"""


class PrivateBus:
    """A private ``dbus-daemon``, system-bus-like, for one simulation or one test.

    ``with PrivateBus() as address:`` starts the daemon and waits (at most
    ``start_timeout_s``) until it prints its address; leaving the block terminates it
    (then kills it after ``stop_timeout_s``) and removes its folder, on every exit path.
    ``FileNotFoundError`` when no ``dbus-daemon`` is installed; ``RuntimeError`` when it
    does not start.
    """

    def __init__(
        self,
        daemon: str | None = None,
        *,
        start_timeout_s: float = 5.0,
        stop_timeout_s: float = 5.0,
    ) -> None:
        self._daemon = daemon
        self._start_timeout_s = start_timeout_s
        self._stop_timeout_s = stop_timeout_s
        self._process: subprocess.Popen[bytes] | None = None
        self._folder: Path | None = None
        self.address = ""

    def __enter__(self) -> str:
        daemon = self._daemon or shutil.which("dbus-daemon")
        if daemon is None:
            raise FileNotFoundError("dbus-daemon is not installed (Debian package dbus-daemon)")
        # A short folder: unix socket paths are limited to about 100 bytes.
        self._folder = Path(tempfile.mkdtemp(prefix="moments-bus-"))
        try:
            socket_path = self._folder / "bus"
            config = self._folder / "bus.conf"
            config.write_text(_BUS_CONFIG.format(socket=socket_path))
            self._process = subprocess.Popen(
                [daemon, f"--config-file={config}", "--nofork", "--nopidfile", "--print-address=1"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            printed = self._read_address()
            if not printed.startswith(f"unix:path={socket_path}"):
                raise RuntimeError(f"dbus-daemon did not start: {printed!r}")
        except BaseException:
            self._stop()
            raise
        self.address = f"unix:path={socket_path}"
        return self.address

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop()

    def _read_address(self) -> str:
        """The first line the daemon prints (its address), or its error output."""
        process = self._process
        assert process is not None
        assert process.stdout is not None
        assert process.stderr is not None
        line = b""
        deadline = time.monotonic() + self._start_timeout_s
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            while not line.endswith(b"\n"):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not selector.select(remaining):
                    return f"no address within {self._start_timeout_s} s"
                chunk = os.read(process.stdout.fileno(), 256)
                if not chunk:  # exited
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        process.wait(timeout=self._stop_timeout_s)
                    return process.stderr.read().decode(errors="replace").strip()
                line += chunk
        return line.decode().strip()

    def _stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=self._stop_timeout_s)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=self._stop_timeout_s)
            for stream in (process.stdout, process.stderr):
                if stream is not None:
                    stream.close()
        folder, self._folder = self._folder, None
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


# --- payloads ------------------------------------------------------------------------------

_AD_UUID16_LISTS = frozenset({0x02, 0x03})
_AD_NAMES = frozenset({0x08, 0x09})
_AD_TX_POWER = 0x0A
_AD_SERVICE_DATA_16 = 0x16
_AD_MANUFACTURER_DATA = 0xFF


def uuid16_to_128(uuid16: int) -> str:
    """``0xFEAA`` -> ``"0000feaa-0000-1000-8000-00805f9b34fb"`` (the Bluetooth base UUID)."""
    return f"0000{uuid16:04x}{_BASE_UUID_SUFFIX}"


@dataclass(frozen=True, slots=True)
class BluezFields:
    """What BlueZ publishes on a Device1 for one advertisement payload."""

    manufacturer_data: dict[int, bytes] = field(default_factory=dict)
    service_data: dict[str, bytes] = field(default_factory=dict)
    uuids: tuple[str, ...] = ()
    name: str | None = None
    tx_power: int | None = None


def bluez_fields(payload: bytes) -> BluezFields:
    """Parse AD structures as BlueZ does for Device1 properties.

    Manufacturer specific data (0xFF) becomes company id -> data, 16-bit service data
    (0x16) becomes 128-bit UUID string -> data (a later structure with the same key wins,
    as in BlueZ), 16-bit UUID lists (0x02, 0x03) become ``uuids``.  Raises
    ``beacons.DecodeError`` for a malformed payload.
    """
    manufacturer: dict[int, bytes] = {}
    service: dict[str, bytes] = {}
    uuids: list[str] = []
    name: str | None = None
    tx_power: int | None = None
    for ad in iter_ad_structures(payload):
        data = ad.data
        if ad.ad_type == _AD_MANUFACTURER_DATA and len(data) >= 2:
            manufacturer[int.from_bytes(data[:2], "little")] = data[2:]
        elif ad.ad_type == _AD_SERVICE_DATA_16 and len(data) >= 2:
            service[uuid16_to_128(int.from_bytes(data[:2], "little"))] = data[2:]
        elif ad.ad_type in _AD_UUID16_LISTS:
            for i in range(0, len(data) - 1, 2):
                uuid = uuid16_to_128(int.from_bytes(data[i : i + 2], "little"))
                if uuid not in uuids:
                    uuids.append(uuid)
        elif ad.ad_type in _AD_NAMES:
            name = data.decode("utf-8", errors="replace")
        elif ad.ad_type == _AD_TX_POWER and len(data) == 1:
            tx_power = int.from_bytes(data, "little", signed=True)
    return BluezFields(manufacturer, service, tuple(uuids), name, tx_power)


def device_path(adapter: str, address: str) -> str:
    """BlueZ's object path of a remote device: ``/org/bluez/hci0/dev_AA_BB_CC_DD_EE_FF``."""
    return f"/org/bluez/{adapter}/dev_{address.upper().replace(':', '_')}"


# --- the D-Bus objects ---------------------------------------------------------------------

# BlueZ's SetDiscoveryFilter keys and their signatures (doc/org.bluez.Adapter.rst).
_FILTER_KEYS: Mapping[str, str] = {
    "UUIDs": "as",
    "RSSI": "n",
    "Pathloss": "q",
    "Transport": "s",
    "DuplicateData": "b",
    "Discoverable": "b",
    "Pattern": "s",
}
_TRANSPORTS = frozenset({"auto", "bredr", "le"})


class _InvalidArguments(DBusError):
    def __init__(self, text: str) -> None:
        super().__init__("org.bluez.Error.InvalidArguments", text)


class _Adapter(ServiceInterface):
    """``org.bluez.Adapter1``: the scanning part of it."""

    def __init__(self, address: str, name: str) -> None:
        super().__init__("org.bluez.Adapter1")
        self._address = address
        self._name = name
        self.discovering_clients = 0
        self.discovery_filter: dict[str, Any] = {}

    @dbus_method(name="SetDiscoveryFilter")
    def set_discovery_filter(self, properties: DBusFilter) -> None:
        accepted: dict[str, Any] = {}
        for key, variant in properties.items():
            signature = _FILTER_KEYS.get(key)
            if signature is None or variant.signature != signature:
                raise _InvalidArguments(f"invalid discovery filter entry {key!r}")
            accepted[key] = variant.value
        if accepted.get("Transport", "auto") not in _TRANSPORTS:
            raise _InvalidArguments(f"invalid transport {accepted['Transport']!r}")
        self.discovery_filter = accepted

    @dbus_method(name="StartDiscovery")
    def start_discovery(self) -> None:
        self.discovering_clients += 1
        if self.discovering_clients == 1:
            self.emit_properties_changed({"Discovering": True})

    @dbus_method(name="StopDiscovery")
    def stop_discovery(self) -> None:
        if self.discovering_clients == 0:
            raise DBusError("org.bluez.Error.Failed", "No discovery started")
        self.discovering_clients -= 1
        if self.discovering_clients == 0:
            self.discovery_filter = {}
            self.emit_properties_changed({"Discovering": False})

    @dbus_property(access=PropertyAccess.READ, name="Address")
    def address(self) -> DBusStr:
        return self._address

    @dbus_property(access=PropertyAccess.READ, name="AddressType")
    def address_type(self) -> DBusStr:
        return "public"

    @dbus_property(access=PropertyAccess.READ, name="Name")
    def name_(self) -> DBusStr:
        return self._name

    @dbus_property(access=PropertyAccess.READ, name="Alias")
    def alias(self) -> DBusStr:
        return self._name

    @dbus_property(access=PropertyAccess.READ, name="Powered")
    def powered(self) -> DBusBool:
        return True

    @dbus_property(access=PropertyAccess.READ, name="Discovering")
    def discovering(self) -> DBusBool:
        return self.discovering_clients > 0

    @dbus_property(access=PropertyAccess.READ, name="Roles")
    def roles(self) -> DBusStrList:
        return ["central", "peripheral"]

    @dbus_property(access=PropertyAccess.READ, name="UUIDs")
    def uuids(self) -> DBusStrList:
        return []


@dataclass(slots=True)
class _Advert:
    rssi: int
    manufacturer_data: dict[int, bytes]
    service_data: dict[str, bytes]
    uuids: list[str]


class _Device(ServiceInterface):
    """``org.bluez.Device1`` of one advertiser that has never been connected."""

    def __init__(self, adapter_path: str, address: str, address_type: str, advert: _Advert):
        super().__init__("org.bluez.Device1")
        self._adapter_path = adapter_path
        self._address = address
        self._address_type = address_type
        self.advert = advert

    @dbus_property(access=PropertyAccess.READ, name="Address")
    def address(self) -> DBusStr:
        return self._address

    @dbus_property(access=PropertyAccess.READ, name="AddressType")
    def address_type(self) -> DBusStr:
        return self._address_type

    @dbus_property(access=PropertyAccess.READ, name="Alias")
    def alias(self) -> DBusStr:
        return self._address.replace(":", "-")

    @dbus_property(access=PropertyAccess.READ, name="Adapter")
    def adapter(self) -> DBusPath:
        return self._adapter_path

    @dbus_property(access=PropertyAccess.READ, name="Paired")
    def paired(self) -> DBusBool:
        return False

    @dbus_property(access=PropertyAccess.READ, name="Bonded")
    def bonded(self) -> DBusBool:
        return False

    @dbus_property(access=PropertyAccess.READ, name="Trusted")
    def trusted(self) -> DBusBool:
        return False

    @dbus_property(access=PropertyAccess.READ, name="Blocked")
    def blocked(self) -> DBusBool:
        return False

    @dbus_property(access=PropertyAccess.READ, name="Connected")
    def connected(self) -> DBusBool:
        return False

    @dbus_property(access=PropertyAccess.READ, name="LegacyPairing")
    def legacy_pairing(self) -> DBusBool:
        return False

    @dbus_property(access=PropertyAccess.READ, name="ServicesResolved")
    def services_resolved(self) -> DBusBool:
        return False

    @dbus_property(access=PropertyAccess.READ, name="UUIDs")
    def uuids(self) -> DBusStrList:
        return list(self.advert.uuids)

    @dbus_property(access=PropertyAccess.READ, name="RSSI")
    def rssi(self) -> DBusInt16:
        return self.advert.rssi

    @dbus_property(access=PropertyAccess.READ, name="ManufacturerData")
    def manufacturer_data(self) -> DBusManufacturerData:
        return _variants(self.advert.manufacturer_data)

    @dbus_property(access=PropertyAccess.READ, name="ServiceData")
    def service_data(self) -> DBusServiceData:
        return _variants(self.advert.service_data)


def _variants(data: Mapping[_K, bytes]) -> dict[_K, Variant]:
    return {key: Variant("ay", bytes(value)) for key, value in data.items()}


# --- the service ---------------------------------------------------------------------------


class FakeBlueZ:
    """``org.bluez`` with one adapter, on the bus at ``bus_address``.

    ``async with FakeBlueZ(address) as bluez:`` connects, claims the name and exports the
    adapter; leaving disconnects (the devices vanish with the connection).  While some
    client discovers, ``advertise()`` creates or updates a Device1 and returns ``True``;
    otherwise the advertisement is not heard and it returns ``False``.
    """

    def __init__(
        self,
        bus_address: str,
        *,
        adapter: str = "hci0",
        adapter_address: str = "00:1A:7D:DA:71:13",
        connect_timeout_s: float = 5.0,
    ) -> None:
        self._bus_address = bus_address
        self.adapter = adapter
        self.adapter_path = f"/org/bluez/{adapter}"
        self._adapter = _Adapter(adapter_address, f"moments-sim-{adapter}")
        self._connect_timeout_s = connect_timeout_s
        self._bus: MessageBus | None = None
        self._devices: dict[str, _Device] = {}

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def start(self) -> None:
        bus = MessageBus(bus_address=self._bus_address, bus_type=BusType.SYSTEM)
        self._bus = bus
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                await bus.connect()
                reply = await bus.request_name(BLUEZ_SERVICE)
        except BaseException:
            await self.aclose()
            raise
        if reply is not RequestNameReply.PRIMARY_OWNER:
            await self.aclose()
            raise RuntimeError(f"{BLUEZ_SERVICE} is already owned on {self._bus_address}")
        bus.export(self.adapter_path, self._adapter)

    async def aclose(self) -> None:
        bus, self._bus = self._bus, None
        self._devices.clear()
        if bus is None:
            return
        bus.disconnect()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._connect_timeout_s):
                await bus.wait_for_disconnect()  # type: ignore[no-untyped-call]

    # ----- what a client can see -----

    @property
    def discovering(self) -> bool:
        return self._adapter.discovering_clients > 0

    @property
    def discovery_filter(self) -> dict[str, Any]:
        return dict(self._adapter.discovery_filter)

    @property
    def devices(self) -> list[str]:
        return [device.address for device in self._devices.values()]

    # ----- the air -----

    def advertise(
        self,
        address: str,
        *,
        rssi: int,
        manufacturer_data: Mapping[int, bytes] | None = None,
        service_data: Mapping[str, bytes] | None = None,
        uuids: tuple[str, ...] | list[str] = (),
        address_type: str = "random",
    ) -> bool:
        """One advertisement from ``address`` heard at ``rssi`` dBm.

        As BlueZ does, manufacturer and service data accumulate per key across
        advertisements of one device, and an update signals only what changed.
        """
        bus = self._require_bus()
        if not self.discovering:
            return False
        address = address.upper()
        path = device_path(self.adapter, address)
        device = self._devices.get(path)
        if device is None:
            advert = _Advert(rssi, dict(manufacturer_data or {}), dict(service_data or {}), [])
            advert.uuids.extend(u for u in uuids if u not in advert.uuids)
            device = _Device(self.adapter_path, address, address_type, advert)
            self._devices[path] = device
            bus.export(path, device)  # InterfacesAdded, with every property
            return True
        advert = device.advert
        changed: dict[str, Any] = {}
        if rssi != advert.rssi:
            advert.rssi = rssi
            changed["RSSI"] = rssi
        if manufacturer_data and _merge(advert.manufacturer_data, manufacturer_data):
            changed["ManufacturerData"] = _variants(advert.manufacturer_data)
        if service_data and _merge(advert.service_data, service_data):
            changed["ServiceData"] = _variants(advert.service_data)
        new_uuids = [u for u in uuids if u not in advert.uuids]
        if new_uuids:
            advert.uuids.extend(new_uuids)
            changed["UUIDs"] = list(advert.uuids)
        if changed:
            device.emit_properties_changed(changed)
        return True

    def advertise_payload(
        self, address: str, payload: bytes, *, rssi: int, address_type: str = "random"
    ) -> bool:
        """``advertise()`` with the fields BlueZ takes from a raw AD-structure payload."""
        fields = bluez_fields(payload)
        return self.advertise(
            address,
            rssi=rssi,
            manufacturer_data=fields.manufacturer_data,
            service_data=fields.service_data,
            uuids=fields.uuids,
            address_type=address_type,
        )

    def remove(self, address: str) -> bool:
        """The device is gone (BlueZ's temporary-device timeout): ``InterfacesRemoved``."""
        bus = self._require_bus()
        path = device_path(self.adapter, address)
        device = self._devices.pop(path, None)
        if device is None:
            return False
        bus.unexport(path, device)
        return True

    def _require_bus(self) -> MessageBus:
        if self._bus is None:
            raise RuntimeError("FakeBlueZ is not started")
        return self._bus


def _merge(target: dict[_K, bytes], update: Mapping[_K, bytes]) -> bool:
    changed = False
    for key, value in update.items():
        if target.get(key) != value:
            target[key] = bytes(value)
            changed = True
    return changed
