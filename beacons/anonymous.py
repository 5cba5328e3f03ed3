"""Anonymous counting of devices whose owners did not opt in.

A device that does not resolve to a consenting shopper is only ever counted. Its identifier is
hashed with a keyed BLAKE2b whose key is random, lives in memory only, and is replaced (the old
one destroyed with every digest made under it) at each rotation boundary, so no pseudonym
outlives the period and none can be recomputed later. The caller supplies the time; nothing
here touches the disk, the network or a log.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable

__all__ = ["AnonymousCounter", "RecentCounter"]


class AnonymousCounter:
    """Distinct devices within the current rotation period (default: one day, starting at the
    store's local midnight when ``offset_s`` is its UTC offset in seconds): per zone, and in
    the whole store once however many zones heard it, by the hour it was first heard.

    Phones without the app change their random address every quarter of an hour or so, so a
    phone staying an hour may count as several devices: the store-wide count is an upper
    bound of the visitors, which door counters give exactly.

    Memory is bounded: at most ``max_devices`` distinct devices a period (a busy store hears a
    few tens of thousands of addresses a day; a transmitter inventing addresses hears no
    end). Past it, new devices are not counted and :attr:`saturated` says so until the
    period ends."""

    __slots__ = (
        "_entropy",
        "_first",
        "_hourly",
        "_key",
        "_keyed",
        "_max_devices",
        "_offset_s",
        "_period",
        "_period_s",
        "_seen",
        "saturated",
    )

    def __init__(
        self,
        period_s: float = 86_400.0,
        entropy: Callable[[int], bytes] = os.urandom,
        offset_s: float = 0.0,
        max_devices: int = 100_000,
    ) -> None:
        self._max_devices = max_devices
        self.saturated = False
        self._period_s = period_s
        self._offset_s = offset_s
        self._entropy = entropy
        self._key = b""
        self._keyed = hashlib.blake2b(digest_size=8)
        self._period = -1
        self._seen: dict[str, set[bytes]] = {}
        self._first: set[bytes] = set()  # every digest of the period, once
        self._hourly: list[int] = []  # devices by the hour of the period first heard

    def observe(self, zone: str, device: bytes, now: float) -> None:
        if not self._rotate(now):
            return  # heard in a period already over (a late reading): its key is gone
        hasher = self._keyed.copy()  # cheaper than keying a new hasher for every sighting
        hasher.update(device)
        digest = hasher.digest()
        if digest not in self._first:
            if len(self._first) >= self._max_devices:
                self.saturated = True
                return
            self._first.add(digest)
            hour = int(((now + self._offset_s) % self._period_s) // 3600)
            if hour >= len(self._hourly):
                self._hourly.extend([0] * (hour + 1 - len(self._hourly)))
            self._hourly[hour] += 1
        self._seen.setdefault(zone, set()).add(digest)

    def counts(self, now: float) -> dict[str, int]:
        self._rotate(now)
        return {zone: len(digests) for zone, digests in self._seen.items()}

    def total(self, now: float) -> int:
        """Distinct devices in the whole store this period."""
        self._rotate(now)
        return len(self._first)

    def hourly(self, now: float) -> list[int]:
        """Devices by the hour of the period they were first heard, up to the current hour."""
        self._rotate(now)
        hours = int(((now + self._offset_s) % self._period_s) // 3600) + 1
        return (self._hourly + [0] * hours)[:hours]

    def _rotate(self, now: float) -> bool:
        """Move to ``now``'s period when it is a later one; False for an earlier period (a
        late reading across the boundary must not start the day again)."""
        period = int((now + self._offset_s) // self._period_s)
        if period > self._period:
            self._period = period
            self._key = self._entropy(32)
            self._keyed = hashlib.blake2b(key=self._key, digest_size=8)
            self._seen = {}
            self._first = set()
            self._hourly = []
            self.saturated = False
        return period == self._period


class RecentCounter:
    """How full each zone is now: distinct devices heard in the last ``window_s`` (two minutes),
    each counted once, in the zone whose scanner heard it loudest lately (a phone is heard by
    the scanners of several zones; it stands in one). Same keyed hashing as
    :class:`AnonymousCounter`, with a key replaced every ``key_period_s`` (an hour); at each
    replacement the counts start again, since no digest made under the old key can be matched
    any more. Memory holds only the devices of the window."""

    __slots__ = (
        "_entropy",
        "_keyed",
        "_max_devices",
        "_period",
        "_period_s",
        "_pruned",
        "_where",
        "_window_s",
    )

    # A louder reading elsewhere moves a device at once; a reading older than this no longer
    # holds it where it was (the phone has walked on).
    HOLD_S = 10.0

    def __init__(
        self,
        window_s: float = 120.0,
        key_period_s: float = 3_600.0,
        entropy: Callable[[int], bytes] = os.urandom,
        max_devices: int = 50_000,
    ) -> None:
        self._max_devices = max_devices  # a bound on memory whatever the air holds
        self._window_s = window_s
        self._period_s = key_period_s
        self._entropy = entropy
        self._keyed = hashlib.blake2b(digest_size=8)
        self._period = -1
        # digest -> (zone, loudest recent RSSI there, when last heard)
        self._where: dict[bytes, tuple[str, float, float]] = {}
        self._pruned = 0.0

    def observe(self, zone: str, device: bytes, now: float, rssi: float = 0.0) -> None:
        self._rotate(now)
        hasher = self._keyed.copy()
        hasher.update(device)
        digest = hasher.digest()
        held = self._where.get(digest)
        if held is None and len(self._where) >= self._max_devices:
            self.counts(now)  # forget the devices gone quiet first
            if len(self._where) >= self._max_devices:
                return
        if held is None or held[0] == zone or rssi > held[1] or now - held[2] > self.HOLD_S:
            self._where[digest] = (zone, rssi, now)
        else:
            self._where[digest] = (held[0], held[1], max(held[2], now))
        if now - self._pruned >= self._window_s:  # bounded whether or not anyone asks
            self.counts(now)

    def counts(self, now: float) -> dict[str, int]:
        """Devices per zone heard within the window; forgets the older ones."""
        self._rotate(now)
        self._pruned = now
        horizon = now - self._window_s
        out: dict[str, int] = {}
        for digest, (zone, _rssi, t) in list(self._where.items()):
            if t < horizon:
                del self._where[digest]
            else:
                out[zone] = out.get(zone, 0) + 1
        return out

    def _rotate(self, now: float) -> None:
        period = int(now // self._period_s)
        if period > self._period:  # a late reading from the previous hour does not rotate back
            self._period = period
            self._keyed = hashlib.blake2b(key=self._entropy(32), digest_size=8)
            self._where = {}
