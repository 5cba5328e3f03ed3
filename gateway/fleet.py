"""The store's fixed beacons: are they alive, and how are their batteries?

Sans-I/O. Each configured beacon is *heard* when any scanner receives its identity frame
(iBeacon or Eddystone-UID) and reports *telemetry* when an Eddystone-TLM frame arrives from its
(static, store-owned) address. ``check(now)`` derives each beacon's condition and returns the
changes since the last check, which the runtime publishes as alerts; ``status(now)`` is what
``/healthz`` shows.

Conditions, worst first: ``never_heard`` (nothing in the first ``silent_after_s`` since the
fleet started watching), ``silent`` (nothing for ``silent_after_s``), ``low_battery`` (last TLM
below ``low_battery_mv``), ``ok``; ``starting`` until a beacon is heard or its first
``silent_after_s`` has passed, so a restart does not raise a wave of alerts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from beacons.frames import EddystoneTLM

__all__ = ["BeaconAlert", "BeaconFleet", "FixedBeacon"]


@dataclass(frozen=True, slots=True)
class FixedBeacon:
    id: str
    zone: str
    identity: str
    address: str = ""
    silent_after_s: float = 60.0
    low_battery_mv: int = 2600


@dataclass(frozen=True, slots=True)
class BeaconAlert:
    beacon: str
    zone: str
    condition: str
    previous: str
    t: float
    battery_mv: int | None


class _Health:
    __slots__ = ("adv_count", "battery_mv", "condition", "last_heard", "temperature_c", "uptime_s")

    def __init__(self) -> None:
        self.last_heard: float | None = None
        self.battery_mv: int | None = None
        self.temperature_c: float | None = None
        self.uptime_s: float | None = None
        self.adv_count: int | None = None
        self.condition = "starting"


class BeaconFleet:
    def __init__(self, beacons: Iterable[FixedBeacon]) -> None:
        self._beacons = {b.id: b for b in beacons}
        self._by_identity = {b.identity: b for b in self._beacons.values()}
        self._by_address = {b.address.upper(): b for b in self._beacons.values() if b.address}
        self._health = {b: _Health() for b in self._beacons}
        self._started: float | None = None

    def __len__(self) -> int:
        return len(self._beacons)

    def by_identity(self, identity: str) -> FixedBeacon | None:
        """The fixed beacon that advertises ``identity``, or None (then it may be a shopper)."""
        return self._by_identity.get(identity)

    def owns_address(self, address: str) -> bool:
        return address.upper() in self._by_address

    def heard(self, beacon: FixedBeacon, t: float) -> None:
        health = self._health[beacon.id]
        if health.last_heard is None or t > health.last_heard:
            health.last_heard = t

    def telemetry(self, address: str, tlm: EddystoneTLM, t: float) -> bool:
        """Record a TLM frame; False when the address is not one of the store's beacons."""
        beacon = self._by_address.get(address.upper())
        if beacon is None:
            return False
        health = self._health[beacon.id]
        health.battery_mv = tlm.battery_mv
        health.temperature_c = tlm.temperature_c
        health.uptime_s = tlm.uptime_s
        health.adv_count = tlm.adv_count
        self.heard(beacon, t)
        return True

    def check(self, now: float) -> list[BeaconAlert]:
        if self._started is None:
            self._started = now
        changes: list[BeaconAlert] = []
        for beacon in self._beacons.values():
            health = self._health[beacon.id]
            condition = self._condition(beacon, health, now, self._started)
            if condition != health.condition:
                changes.append(
                    BeaconAlert(
                        beacon.id, beacon.zone, condition, health.condition, now, health.battery_mv
                    )
                )
                health.condition = condition
        return changes

    def status(self, now: float) -> dict[str, object]:
        beacons: dict[str, object] = {}
        for beacon in self._beacons.values():
            health = self._health[beacon.id]
            beacons[beacon.id] = {
                "zone": beacon.zone,
                "condition": health.condition,
                "last_heard_s_ago": None
                if health.last_heard is None
                else round(now - health.last_heard, 1),
                "battery_mv": health.battery_mv,
                "temperature_c": health.temperature_c,
                "uptime_s": health.uptime_s,
            }
        failing = [b for b, h in self._health.items() if h.condition not in {"ok", "starting"}]
        state = "ok" if not failing else "degraded"
        if not self._beacons:
            state = "not_configured"
        return {"state": state, "alerts": sorted(failing), "beacons": beacons}

    @staticmethod
    def _condition(beacon: FixedBeacon, health: _Health, now: float, started: float) -> str:
        if health.last_heard is None:
            return "starting" if now - started <= beacon.silent_after_s else "never_heard"
        if now - health.last_heard > beacon.silent_after_s:
            return "silent"
        if health.battery_mv is not None and health.battery_mv < beacon.low_battery_mv:
            return "low_battery"
        return "ok"
