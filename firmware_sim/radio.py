"""Received signal strength: log-distance path loss with shadowing, walls and collisions.

:class:`Radio` is the scripted store's simple model; :class:`Channel` is the floor-plan
simulator's (walls, correlated shadowing, packet collisions)."""

from __future__ import annotations

import math
import random

from firmware_sim.geometry import segments_cross

__all__ = ["Channel", "Radio"]


class Radio:
    def __init__(
        self,
        rng: random.Random,
        *,
        tx_at_1m_dbm: float = -59.0,
        exponent: float = 2.2,
        shadowing_db: float = 2.0,
        sensitivity_dbm: float = -98.0,
        loss: float = 0.1,
    ) -> None:
        self._rng = rng
        self._tx = tx_at_1m_dbm
        self._n = exponent
        self._sigma = shadowing_db
        self._sensitivity = sensitivity_dbm
        self._loss = loss

    def rssi(self, a: tuple[float, float], b: tuple[float, float]) -> int | None:
        """One reception between two points, or None when the packet is not heard."""
        if self._rng.random() < self._loss:
            return None
        distance = max(0.5, math.dist(a, b))
        value = self._tx - 10.0 * self._n * math.log10(distance) + self._rng.gauss(0, self._sigma)
        if value < self._sensitivity:
            return None
        return max(-127, min(20, round(value)))


class Channel:
    """The store's radio channel between any transmitter and any receiver on the floor.

    Received power is the log-distance model, ``tx_at_1m - 10 n log10(d)``, minus the
    attenuation of every wall the straight line crosses, plus shadowing: a Gauss-Markov
    process per (transmitter, receiver) link with standard deviation ``shadowing_db`` and
    correlation time ``shadowing_tau_s`` (the same body in the way for a moment, not a new
    draw every packet), plus independent per-packet fading (``fading_db``). A packet is
    received when that power is at or above the sensitivity, survives the scanner's own
    misses (``base_loss``) and survives collisions: with advertisers sending ``rate`` packets a
    second in total on the same channel, a packet of airtime ``d`` survives when no other
    starts within ``d`` either side of it, probability ``exp(-2 d rate)`` (the unslotted-ALOHA
    result used by the BLE advertising collision models).
    """

    def __init__(
        self,
        rng: random.Random,
        *,
        exponent: float,
        shadowing_db: float,
        shadowing_tau_s: float,
        fading_db: float,
        sensitivity_dbm: float,
        base_loss: float,
        packet_airtime_s: float,
        walls: list[tuple[tuple[float, float], tuple[float, float], float]] | None = None,
    ) -> None:
        self._rng = rng
        self._n10 = 10.0 * exponent
        self._sigma = shadowing_db
        self._tau = shadowing_tau_s
        self._fading = fading_db
        self.sensitivity_dbm = sensitivity_dbm
        self._keep = 1.0 - base_loss
        self._airtime = packet_airtime_s
        self._walls = walls or []
        self._links: dict[tuple[str, str], tuple[float, float]] = {}
        self._wall_cache: dict[tuple[tuple[int, int], tuple[int, int]], float] = {}

    def mean_dbm(self, tx_at_1m: float, a: tuple[float, float], b: tuple[float, float]) -> float:
        """The model's mean received power (no shadowing, no fading), walls included."""
        return tx_at_1m - self._n10 * math.log10(max(0.5, math.dist(a, b))) - self._wall_loss(a, b)

    def power(
        self,
        link: tuple[str, str],
        tx_at_1m: float,
        a: tuple[float, float],
        b: tuple[float, float],
        t: float,
    ) -> float:
        """Received power of one packet on ``link`` at time ``t`` (dBm, not quantised)."""
        value = self.mean_dbm(tx_at_1m, a, b) + self._shadow(link, t)
        if self._fading > 0.0:
            value += self._rng.gauss(0.0, self._fading)
        return value

    def survival(self, other_rate_per_s: float) -> float:
        """Share of packets that are neither missed by the scanner nor lost to collisions."""
        return self._keep * math.exp(-2.0 * self._airtime * max(0.0, other_rate_per_s))

    def receive(
        self,
        link: tuple[str, str],
        tx_at_1m: float,
        a: tuple[float, float],
        b: tuple[float, float],
        t: float,
        *,
        other_rate_per_s: float = 0.0,
    ) -> int | None:
        """One packet: its RSSI as a receiver reports it (whole dBm), or None when lost."""
        if self._rng.random() >= self.survival(other_rate_per_s):
            return None
        value = self.power(link, tx_at_1m, a, b, t)
        if value < self.sensitivity_dbm:
            return None
        return max(-127, min(20, round(value)))

    def _shadow(self, link: tuple[str, str], t: float) -> float:
        if self._sigma <= 0.0:
            return 0.0
        previous = self._links.get(link)
        if previous is None or self._tau <= 0.0:
            value = self._rng.gauss(0.0, self._sigma)
        else:
            last_t, last = previous
            rho = math.exp(-max(0.0, t - last_t) / self._tau)
            value = rho * last + math.sqrt(1.0 - rho * rho) * self._rng.gauss(0.0, self._sigma)
        self._links[link] = (t, value)
        return value

    def forget(self, key: str) -> None:
        """Drop the shadowing state of every link with ``key`` at either end (a phone that left)."""
        for link in [k for k in self._links if key in k]:
            del self._links[link]

    def _wall_loss(self, a: tuple[float, float], b: tuple[float, float]) -> float:
        """Attenuation of the walls between two points, taken between the centres of their
        25 cm grid cells: deterministic whatever was asked before, and cacheable because one
        end of every link (a node, a beacon) stands still."""
        if not self._walls:
            return 0.0
        ca = (round(a[0] * 4), round(a[1] * 4))
        cb = (round(b[0] * 4), round(b[1] * 4))
        key = (ca, cb) if ca <= cb else (cb, ca)
        cached = self._wall_cache.get(key)
        if cached is None:
            pa = (key[0][0] / 4, key[0][1] / 4)
            pb = (key[1][0] / 4, key[1][1] / 4)
            cached = sum(db for start, end, db in self._walls if segments_cross(pa, pb, start, end))
            if len(self._wall_cache) > 500_000:
                self._wall_cache.clear()
            self._wall_cache[key] = cached
        return cached
