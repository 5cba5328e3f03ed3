"""Received signal strength: log-distance path loss with Gaussian shadowing."""

from __future__ import annotations

import math
import random

__all__ = ["Radio"]


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
