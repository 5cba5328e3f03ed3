"""The radio: a thin adapter around bleak's ``BleakScanner``; the only I/O in ``beacons``.

bleak calls ``detection_callback`` on the event loop for every advertisement BlueZ
reports; each becomes a ``RadioSighting`` (plain values, time from the injected clock)
put into ``sightings``, a bounded queue.  When the queue is full the sighting is dropped
and counted (``dropped``): radio data is perishable and a slow consumer must never
stall the D-Bus reader.

``run()`` is the supervisor, until ``aclose()``:

* start a scanner, passive where BlueZ allows it (bleak needs ``or_patterns`` for that:
  BlueZ's advertisement monitor API, BlueZ >= 5.56 with experimental features); when a
  passive start fails and an active start then succeeds, passive scanning is not
  possible here, so the source stays active and says why in ``status()``;
* watchdog: a scanner that has heard nothing for ``watchdog_s`` is stopped and started
  again (``restarts``): BlueZ or the controller can go quiet without an error;
* on failure, state ``unavailable`` with a readable ``detail``, then retry after a
  jittered exponential backoff.  Missing D-Bus, BlueZ or adapter is a normal condition
  for this box (a gateway without a radio still serves the scanner nodes), so it is one
  log line per change of state or reason, and never an exception out of ``run()``.

States (``status()["state"]``), one table, one function that refuses anything else::

    starting     -> scanning | unavailable | stopped
    scanning     -> scanning (watchdog restart) | unavailable | stopped
    unavailable  -> scanning | unavailable (new reason) | stopped
    stopped      (final)

Third-party errors are translated here and nowhere else.  What bleak 3.x and dbus-fast
raise from ``start()``/``stop()``, found by running them against a missing socket, a
refusing socket, a non-D-Bus peer, a private dbus-daemon without BlueZ and an emulated
BlueZ without an adapter:

* ``FileNotFoundError`` / ``ConnectionRefusedError``: no system bus socket;
  ``ConnectionResetError``, ``EOFError``: the peer hung up during the handshake;
  ``PermissionError``: the socket exists but is not ours; ``OSError`` (EBADF): ``stop()``
  after the bus died.  All ``OSError`` or ``EOFError``.
* dbus-fast's ``DBusFastError`` subclasses: ``InvalidAddressError`` for a malformed
  ``DBUS_SYSTEM_BUS_ADDRESS``, ``InvalidMessageError`` for a peer that is not D-Bus.
* ``BleakDBusError`` (``org.freedesktop.DBus.Error.ServiceUnknown``): BlueZ not running;
  ``BleakError("adapter 'hci0' not found")``; ``BleakError`` for passive scanning
  without the advertisement monitor API; ``BleakBluetoothNotAvailableError`` when
  D-Bus authentication fails or the adapter is off.
* ``TimeoutError``: our own bound on a start or stop that gets no answer (a socket
  that accepts and never speaks would otherwise hang ``start()`` for ever).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
import sys
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from bleak import BleakScanner
from bleak.args.bluez import BlueZScannerArgs, OrPattern, OrPatternLike
from bleak.assigned_numbers import AdvertisementDataType
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import BleakBluetoothNotAvailableError, BleakDBusError, BleakError

from beacons.backoff import Backoff

if sys.platform == "linux":
    from dbus_fast.errors import DBusFastError, InvalidAddressError

    _DBUS_ERRORS: tuple[type[Exception], ...] = (DBusFastError,)
else:  # bleak's other backends do not use dbus-fast
    _DBUS_ERRORS = ()

__all__ = ["BEACON_PATTERNS", "BleakSource", "RadioSighting", "SourceState"]

log = logging.getLogger(__name__)

BEACON_PATTERNS: tuple[OrPatternLike, ...] = (
    # iBeacon: Apple's company id (little-endian) then the 02 15 iBeacon prefix.
    OrPattern(0, AdvertisementDataType.MANUFACTURER_SPECIFIC_DATA, b"\x4c\x00\x02\x15"),
    # AltBeacon: any company id, then the BE AC beacon code.
    OrPattern(2, AdvertisementDataType.MANUFACTURER_SPECIFIC_DATA, b"\xbe\xac"),
    # Eddystone: service data of UUID 0xFEAA (little-endian).
    OrPattern(0, AdvertisementDataType.SERVICE_DATA_UUID16, b"\xaa\xfe"),
)
"""What a passive scan asks BlueZ to report: the beacon formats ``beacons.decode`` knows."""

_SCANNER_ERRORS: tuple[type[BaseException], ...] = (
    BleakError,
    OSError,
    EOFError,
    *_DBUS_ERRORS,
)

_NO_BLUEZ = frozenset(
    {"org.freedesktop.DBus.Error.ServiceUnknown", "org.freedesktop.DBus.Error.NameHasNoOwner"}
)

ScanningMode = Literal["active", "passive"]


class SourceState(enum.StrEnum):
    STARTING = "starting"
    SCANNING = "scanning"
    UNAVAILABLE = "unavailable"
    STOPPED = "stopped"


_TRANSITIONS: Mapping[SourceState, frozenset[SourceState]] = {
    SourceState.STARTING: frozenset(
        {SourceState.SCANNING, SourceState.UNAVAILABLE, SourceState.STOPPED}
    ),
    SourceState.SCANNING: frozenset(
        {SourceState.SCANNING, SourceState.UNAVAILABLE, SourceState.STOPPED}
    ),
    SourceState.UNAVAILABLE: frozenset(
        {SourceState.SCANNING, SourceState.UNAVAILABLE, SourceState.STOPPED}
    ),
    SourceState.STOPPED: frozenset(),
}


def _check_transition(current: SourceState, new: SourceState) -> None:
    if new not in _TRANSITIONS[current]:
        raise RuntimeError(f"illegal radio source transition {current} -> {new}")


@dataclass(frozen=True, slots=True)
class RadioSighting:
    """One advertisement heard by the local radio.

    ``manufacturer_data`` maps company id to bytes and ``service_data`` maps a 128-bit
    UUID string to bytes, exactly as bleak reports them (``beacons.decode_bleak`` takes
    them as they are).  ``rssi`` is in dBm; ``tx_power`` is the advertised TX Power Level
    AD field, if any; ``t`` comes from the source's clock.
    """

    address: str
    rssi: int
    tx_power: int | None
    manufacturer_data: Mapping[int, bytes]
    service_data: Mapping[str, bytes]
    t: float


class BleakSource:
    """Owns one ``BleakScanner`` at a time; ``run()`` is its supervisor task.

    ``scanner_factory`` is called like ``BleakScanner`` (``detection_callback``,
    ``scanning_mode`` and ``bluez`` keyword arguments) and must return an object with
    ``async start()`` and ``async stop()``.  ``start_timeout_s`` bounds each start and
    stop; ``passive_patterns`` are the BlueZ or-patterns of a passive scan.
    """

    def __init__(
        self,
        adapter: str = "hci0",
        *,
        queue_size: int = 1024,
        watchdog_s: float = 30.0,
        backoff: tuple[float, float] = (1.0, 60.0),
        clock: Callable[[], float] = time.time,
        scanner_factory: Callable[..., Any] = BleakScanner,
        start_timeout_s: float = 10.0,
        passive_patterns: Sequence[OrPatternLike] = BEACON_PATTERNS,
        rng: random.Random | None = None,
    ) -> None:
        self._adapter = adapter
        self._watchdog_s = watchdog_s
        self._backoff = Backoff(backoff[0], backoff[1], rng or random.Random())
        self._clock = clock
        self._scanner_factory = scanner_factory
        self._start_timeout_s = start_timeout_s
        self._passive_patterns = list(passive_patterns)
        self.sightings: asyncio.Queue[RadioSighting] = asyncio.Queue(maxsize=queue_size)
        self.received = 0
        self.dropped = 0
        self.restarts = 0
        self._state = SourceState.STARTING
        self._detail = "not started"
        self._mode: ScanningMode | None = None
        self._passive_refused = ""
        self._scanner: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_heard = 0.0
        self._closing = False
        self._closed = asyncio.Event()
        self._running = False
        self._done = asyncio.Event()

    # ----- public -----

    @property
    def state(self) -> SourceState:
        return self._state

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "state": self._state.value,
            "adapter": self._adapter,
            "detail": self._detail,
            "mode": self._mode,
            "received": self.received,
            "dropped": self.dropped,
            "restarts": self.restarts,
        }
        if self._passive_refused:
            out["passive_unavailable"] = self._passive_refused
        return out

    async def run(self) -> None:
        """Scan, watch, restart, back off; returns only after ``aclose()`` (or cancel)."""
        if self._running:
            raise RuntimeError("BleakSource.run() is already running")
        if self._closing:
            return
        self._running = True
        self._loop = asyncio.get_running_loop()
        try:
            while not self._closing:
                if not await self._start():
                    await self._pause(self._backoff.next())
                    continue
                self._backoff.reset()
                heard_before = self.received
                quiet = await self._watch()
                await self._stop()
                if quiet and not self._closing:
                    self.restarts += 1
                    # A scanner that heard something and went quiet is news; one that
                    # never heard anything (an empty shop at night) restarts silently.
                    level = logging.INFO if self.received > heard_before else logging.DEBUG
                    log.log(
                        level,
                        "radio quiet for %s s on %s, restarting the scanner",
                        self._watchdog_s,
                        self._adapter,
                    )
        finally:
            # Cancelled or closing: the scanner is released either way.
            await self._stop()
            self._mode = None
            self._set_state(SourceState.STOPPED, "closed")
            self._done.set()

    async def aclose(self) -> None:
        """Stop scanning; when ``run()`` is active, wait (bounded) until it has let go."""
        self._closing = True
        self._closed.set()
        if self._running and not self._done.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._start_timeout_s + 1.0):
                    await self._done.wait()
        elif not self._running and self._state is not SourceState.STOPPED:
            self._set_state(SourceState.STOPPED, "closed")

    # ----- bleak's callback: the hot path -----

    def _on_advertisement(self, device: BLEDevice, adv: AdvertisementData) -> None:
        loop = self._loop
        if loop is not None:
            self._last_heard = loop.time()
        self.received += 1
        sighting = RadioSighting(
            device.address,
            adv.rssi,
            adv.tx_power,
            adv.manufacturer_data,
            adv.service_data,
            self._clock(),
        )
        try:
            self.sightings.put_nowait(sighting)
        except asyncio.QueueFull:
            self.dropped += 1

    # ----- one scanner's life -----

    async def _start(self) -> bool:
        """Start a scanner; ``True`` when scanning, ``False`` when unavailable or closing."""
        modes: tuple[ScanningMode, ...] = (
            ("active",) if self._passive_refused else ("passive", "active")
        )
        passive_error = ""
        for mode in modes:
            scanner: Any = None
            try:
                scanner = self._make_scanner(mode)
                started = await self._bounded(scanner.start(), "start")
            except _SCANNER_ERRORS as exc:
                reason = self._describe(exc)
                if mode == "passive":
                    passive_error = reason
                    continue
                self._set_state(SourceState.UNAVAILABLE, reason)
                return False
            if not started:  # closing while starting
                await self._release(scanner)
                return False
            self._scanner = scanner
            self._mode = mode
            if passive_error:
                self._passive_refused = passive_error
                log.info(
                    "passive scanning not possible on %s, scanning actively: %s",
                    self._adapter,
                    passive_error,
                )
            assert self._loop is not None
            self._last_heard = self._loop.time()
            self._set_state(SourceState.SCANNING, f"{mode} scan on {self._adapter}")
            return True
        return False  # pragma: no cover - the active attempt always returns

    def _make_scanner(self, mode: ScanningMode) -> Any:
        bluez: BlueZScannerArgs = {"adapter": self._adapter}
        if mode == "passive":
            bluez["or_patterns"] = self._passive_patterns
        return self._scanner_factory(
            detection_callback=self._on_advertisement, scanning_mode=mode, bluez=bluez
        )

    async def _watch(self) -> bool:
        """Wait until closing (``False``) or until nothing was heard for ``watchdog_s``."""
        assert self._loop is not None
        while not self._closing:
            remaining = self._last_heard + self._watchdog_s - self._loop.time()
            if remaining <= 0:
                return True
            await self._pause(remaining)
        return False

    async def _stop(self) -> None:
        scanner, self._scanner = self._scanner, None
        if scanner is not None:
            await self._release(scanner)

    async def _release(self, scanner: Any) -> None:
        try:
            async with asyncio.timeout(self._start_timeout_s):
                await scanner.stop()
        except _SCANNER_ERRORS as exc:
            # Typically the bus died under a running scan; the next start says more.
            log.debug("scanner stop on %s failed: %s", self._adapter, self._describe(exc))

    async def _bounded(self, operation: Coroutine[Any, Any, None], what: str) -> bool:
        """Await ``operation`` within ``start_timeout_s``; give it up when closing.

        Returns ``True`` when it finished, ``False`` when abandoned because of
        ``aclose()``; its own exceptions propagate, and ``TimeoutError`` when it
        takes too long (it is cancelled either way).
        """
        task = asyncio.create_task(operation, name=f"radio-scanner-{what}")
        closer = asyncio.create_task(self._closed.wait(), name="radio-close-wait")
        try:
            done, _ = await asyncio.wait(
                (task, closer),
                timeout=self._start_timeout_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            closer.cancel()
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if task in done:
            task.result()
            return True
        if closer in done:
            return False
        raise TimeoutError(f"scanner {what} got no answer within {self._start_timeout_s} s")

    async def _pause(self, seconds: float) -> None:
        """Sleep ``seconds``, or less when the source is closed meanwhile."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._closed.wait()

    # ----- state and its one log line -----

    def _set_state(self, new: SourceState, detail: str) -> None:
        old, old_detail = self._state, self._detail
        _check_transition(old, new)
        self._state, self._detail = new, detail
        if new is old and detail == old_detail:
            return
        if new is SourceState.UNAVAILABLE:
            log.warning("radio unavailable on %s: %s", self._adapter, detail)
        elif new is SourceState.SCANNING and new is not old:
            log.info("radio scanning: %s", detail)
        elif new is SourceState.STOPPED:
            log.info("radio stopped on %s", self._adapter)

    def _describe(self, exc: BaseException) -> str:
        """A sentence for ``status()`` and the log; no traceback, no class soup."""
        if isinstance(exc, TimeoutError):
            return f"no answer from D-Bus or BlueZ: {exc}"
        if isinstance(exc, FileNotFoundError | ConnectionRefusedError):
            return f"no D-Bus system bus: {exc}"
        if isinstance(exc, PermissionError):
            return f"no permission for the D-Bus system bus: {exc}"
        if isinstance(exc, EOFError | ConnectionError):
            return f"D-Bus system bus closed the connection: {str(exc) or type(exc).__name__}"
        if isinstance(exc, OSError):
            return f"D-Bus system bus connection failed: {exc}"
        if sys.platform == "linux" and isinstance(exc, InvalidAddressError):
            return f"invalid D-Bus system bus address: {exc}"
        if isinstance(exc, BleakDBusError):
            if exc.dbus_error in _NO_BLUEZ:
                return "BlueZ is not running (org.bluez is not on the D-Bus system bus)"
            return f"BlueZ refused: {exc}"
        if isinstance(exc, BleakBluetoothNotAvailableError):
            return f"Bluetooth not available ({exc.reason.name.lower()}): {exc.args[0]}"
        if isinstance(exc, BleakError):
            text = str(exc)
            if text == f"adapter '{self._adapter}' not found":
                return f"Bluetooth adapter {self._adapter} not found"
            return f"Bluetooth error: {text}"
        return f"D-Bus error: {exc}"
