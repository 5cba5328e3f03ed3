"""Per-key rate limits for the shopper API: a token bucket per key (sans-I/O, no threads).

Each key (a token's jti or subject, a client address) has a bucket of at most ``burst``
tokens that refills at ``rate_per_s``; a request takes one token or is refused with the time
until one is there, which the HTTP layer sends as ``Retry-After`` (rounded up to whole seconds,
at least 1). Time is an argument: pass a monotonic clock's reading (``Clock.monotonic()``), so
a wall-clock jump neither refills every bucket nor freezes them; a reading that goes backwards
counts as no time passing.

Memory is bounded: at most ``max_keys`` buckets, kept in least-recently-used order; beyond
that the least recently seen key is forgotten. A forgotten key comes back with a full bucket,
which is the stated price of the bound: pick ``max_keys`` above the number of clients active
within ``burst / rate_per_s`` seconds.

One instance belongs to one event loop; it is not thread-safe and needs no lock there.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Final

__all__ = ["RateLimiter"]

# A whole token, less what float arithmetic loses: a client that waits exactly the time it
# was told is let through, not refused for 1e-14 s.
_ONE: Final = 1.0 - 1e-9


class RateLimiter:
    """Token buckets keyed by string, deterministic for a given sequence of ``now`` values."""

    __slots__ = ("_buckets", "_burst", "_max_keys", "_rate")

    def __init__(self, rate_per_s: float, burst: int, *, max_keys: int = 10_000) -> None:
        if not (math.isfinite(rate_per_s) and rate_per_s > 0):
            raise ValueError(f"rate_per_s must be a positive number, got {rate_per_s!r}")
        if burst < 1:
            raise ValueError(f"burst must be at least 1, got {burst!r}")
        if max_keys < 1:
            raise ValueError(f"max_keys must be at least 1, got {max_keys!r}")
        self._rate = float(rate_per_s)
        self._burst = float(burst)
        self._max_keys = max_keys
        # key -> (tokens left, time of the last check); oldest first.
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        """How many keys have a bucket now (at most ``max_keys``)."""
        return len(self._buckets)

    def __contains__(self, key: object) -> bool:
        return key in self._buckets

    def check(self, key: str, now: float) -> float | None:
        """Take one token of ``key``'s bucket at ``now``: None when allowed, else the seconds
        until a token is there (nothing is taken then)."""
        bucket = self._buckets.get(key)
        if bucket is None:
            tokens, stamp = self._burst, now
        else:
            left, last = bucket
            stamp = max(now, last)  # time that went backwards is not counted twice
            tokens = min(self._burst, left + (stamp - last) * self._rate)
            self._buckets.move_to_end(key)
        if tokens >= _ONE:
            self._buckets[key] = (max(0.0, tokens - 1.0), stamp)
            wait = None
        else:
            self._buckets[key] = (tokens, stamp)
            wait = (stamp - now) + (1.0 - tokens) / self._rate
        if len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)
        return wait
