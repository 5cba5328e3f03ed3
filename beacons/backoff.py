"""Jittered exponential backoff for every reconnect and restart loop (pure: no clock, no sleep)."""

from __future__ import annotations

import math
import random

__all__ = ["Backoff"]


class Backoff:
    """Delays that double from ``minimum`` up to ``maximum``, each drawn from the upper half of
    its step ("equal jitter"), so a fleet of nodes that lost the broker together does not come
    back together."""

    __slots__ = ("_attempt", "_max", "_min", "_rng")

    def __init__(self, minimum: float, maximum: float, rng: random.Random | None = None) -> None:
        self._min = minimum
        self._max = maximum
        self._rng = rng or random.Random()
        self._attempt = 0

    def next(self) -> float:
        step = min(self._max, math.ldexp(self._min, min(self._attempt, 32)))
        self._attempt += 1
        return step / 2 + self._rng.uniform(0, step / 2)

    def reset(self) -> None:
        self._attempt = 0
