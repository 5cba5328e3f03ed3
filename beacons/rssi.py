"""RSSI filtering and distance, sans-I/O: readings and their times in, an estimate out.

Nothing here touches a radio, a clock or a logger; the caller hands over each reading with
the time it was heard.

Three small pieces:

* ``RssiWindow``: the readings of one (subject, scanner) pair over the last ``window_s``
  seconds (at most ``max_readings`` of them) and a robust estimate of their level: the mean
  of the readings inside Tukey's fences, ``[Q1 - k * IQR, Q3 + k * IQR]`` with ``k = 1.5``.
  One reflected or lucky packet lands outside the fences and does not move the estimate;
  with no outliers it is the plain mean, the most efficient estimate under the Gaussian
  shadowing that indoor measurements show. The readings are kept in a sorted list updated
  with ``bisect`` on each arrival and expiry (a bounded list of at most 32 floats, never
  re-sorted), and a running sum, so an estimate costs two index look-ups for the quartiles
  and a loop over the outliers only.
  With a ``time_constant_s`` (the presence tracker passes one), the estimate is instead the
  mean of the readings inside the fences weighted by ``exp(-age / time_constant_s)``, age
  counted from the newest reading: a moving phone is followed with a lag of about one time
  constant rather than half the window. Each reading's weight is computed once, against an
  anchor time that moves before the weights could overflow, so an estimate costs one loop
  over at most ``max_readings`` readings and no exponential.
* ``Calibration``: per-scanner offsets in dB, added to what a scanner reports, because two
  receivers (antenna, enclosure, mounting height) report the same signal differently.
* ``distance_m`` and ``rssi_at_m``: the log-distance path-loss model and its inverse.

Why these defaults
------------------
* Noise. Indoor received power scatters log-normally around the path-loss line; the
  measurements collected in Rappaport's *Wireless Communications* (the table reproduced in
  Wikipedia's "Log-distance path loss model" article) give a standard deviation of 5.2 dB in
  a grocery store and 8.7 dB in a retail store, and BLE adds fast fading across its three
  advertising channels (Faragher and Harle, "Location Fingerprinting With Bluetooth Low
  Energy Beacons", IEEE JSAC 2015), so readings at a fixed spot jump by several dB from
  packet to packet. A single reading is worth little: we average over a window and drop
  outliers.
* Window of 5 s, at most 32 readings. The Android Beacon Library's default
  ``RunningAverageRssiFilter`` averages 20 s of readings after discarding the top and bottom
  10 % (a trimmed mean), and its documentation warns that the estimate then lags a moving
  phone by that long, and suggests 5 s as the faster setting. A shopper walking between zones
  needs the faster one. With an advertising interval of 100 ms to 1 s, 5 s holds between
  5 and 50 readings; the cap of 32 (the newest 3.2 s at 10 Hz) bounds memory and work per
  reading and still shrinks a 5 dB reading noise to under 1 dB.
* Tukey's fences (k = 1.5) rather than a fixed 10 % trim: they drop nothing when nothing is
  odd, so a small window keeps all its readings, and they drop every reading that is really
  odd (a packet caught on a strong reflection, or in a deep fade), up to a quarter of the
  window on either side, where a 10 % trim drops a fixed count whatever the readings.
* Measured power -59 dBm at 1 m: the value an iBeacon carries in its "measured power" byte
  is the RSSI at 1 m, and -59 dBm is the usual figure for a transmitter at 0 dBm (beacon
  vendors' calibration charts, and the default most libraries use when a beacon gives none).
* Path-loss exponent 2.2: ``n`` is 2 in free space; the same table gives 2.2 for a retail
  store and 1.8 for a grocery store (both at 914 MHz); a published BLE fit in a living room
  (Marolf, 2020, at 2.4 GHz) gives 2.4, and practitioners quote 2.2 to 2.4 indoors. Within
  the 1 to 3 m that matter for a kiosk the line of sight is usually clear, so the low end
  of the indoor range fits; a site survey should replace it.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from math import exp, isfinite, log10
from types import MappingProxyType
from typing import Final

__all__ = [
    "DEFAULT_MAX_READINGS",
    "DEFAULT_PATH_LOSS_EXPONENT",
    "DEFAULT_TX_AT_1M_DBM",
    "DEFAULT_WINDOW_S",
    "TUKEY_K",
    "Calibration",
    "RssiWindow",
    "distance_m",
    "quantile",
    "rssi_at_m",
    "tukey_mean",
]

DEFAULT_WINDOW_S: Final = 5.0
DEFAULT_MAX_READINGS: Final = 32
TUKEY_K: Final = 1.5
_REANCHOR: Final = 64.0  # time constants between weight anchors: exp(64) is far from overflow
DEFAULT_TX_AT_1M_DBM: Final = -59.0
DEFAULT_PATH_LOSS_EXPONENT: Final = 2.2


def quantile(sorted_values: Sequence[float], p: float) -> float:
    """The ``p`` quantile (0 to 1) of non-empty ascending values, interpolated linearly
    between the two nearest ranks (the "linear" method of most statistics packages)."""
    last = len(sorted_values) - 1
    h = p * last
    i = int(h)
    if i >= last:
        return sorted_values[last]
    low = sorted_values[i]
    return low + (h - i) * (sorted_values[i + 1] - low)


def tukey_mean(sorted_values: Sequence[float], k: float = TUKEY_K) -> float:
    """The mean of the non-empty ascending values that lie inside Tukey's fences."""
    q1 = quantile(sorted_values, 0.25)
    q3 = quantile(sorted_values, 0.75)
    spread = k * (q3 - q1)
    lo = bisect_left(sorted_values, q1 - spread)
    hi = bisect_right(sorted_values, q3 + spread)
    total = 0.0
    for i in range(lo, hi):
        total += sorted_values[i]
    return total / (hi - lo)


def distance_m(
    rssi_dbm: float,
    tx_at_1m_dbm: float = DEFAULT_TX_AT_1M_DBM,
    n: float = DEFAULT_PATH_LOSS_EXPONENT,
) -> float:
    """Distance in metres by the log-distance model: ``10 ** ((tx_at_1m - rssi) / (10 n))``.

    ``tx_at_1m_dbm`` is the beacon's measured power (the RSSI expected at 1 m) and ``n`` the
    path-loss exponent: 2 in free space, about 2 to 2.5 in an open shop floor with a clear
    line of sight, 3 and more through shelving and people. Each 10 n dB weaker is ten times
    farther, so a 5 dB error at n = 2.2 is a factor of 1.7 in distance: good enough to tell
    "at the kiosk" from "across the aisle", not for positioning.
    """
    return float(10.0 ** ((tx_at_1m_dbm - rssi_dbm) / (10.0 * n)))


def rssi_at_m(
    distance: float,
    tx_at_1m_dbm: float = DEFAULT_TX_AT_1M_DBM,
    n: float = DEFAULT_PATH_LOSS_EXPONENT,
) -> float:
    """The mean RSSI the log-distance model expects at ``distance`` metres (its inverse)."""
    return tx_at_1m_dbm - 10.0 * n * log10(distance)


@dataclass(frozen=True, slots=True)
class Calibration:
    """Per-scanner offsets in dB, added to the RSSI each scanner reports.

    Measure each scanner against a reference (the same phone at 1 m) and store the
    difference; a scanner not listed reports as is.
    """

    offsets_db: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "offsets_db", MappingProxyType(dict(self.offsets_db)))

    def apply(self, scanner: str, rssi_dbm: float) -> float:
        offset = self.offsets_db.get(scanner)
        return float(rssi_dbm) if offset is None else rssi_dbm + offset


class RssiWindow:
    """The readings of the last ``window_s`` seconds (at most ``max_readings``) and their
    robust level, kept up to date on each reading.

    Time only moves forward here through the readings themselves: the newest reading's time
    is "now" for the window, and ``expire(now)`` lets a caller move it on between readings.
    A reading older than the window is refused (``add`` returns ``False``); a late one inside
    it is inserted in time order.
    """

    __slots__ = (
        "_anchor",
        "_estimate",
        "_k",
        "_max",
        "_sorted",
        "_sum",
        "_tau",
        "_times",
        "_values",
        "_weights",
        "_window_s",
    )

    def __init__(
        self,
        window_s: float = DEFAULT_WINDOW_S,
        max_readings: int = DEFAULT_MAX_READINGS,
        k: float = TUKEY_K,
        time_constant_s: float = 0.0,
    ) -> None:
        if window_s <= 0:
            raise ValueError(f"window_s must be positive, not {window_s!r}")
        if max_readings < 1:
            raise ValueError(f"max_readings must be at least 1, not {max_readings!r}")
        if k < 0:
            raise ValueError(f"k must not be negative, not {k!r}")
        if not time_constant_s >= 0:
            raise ValueError(f"time_constant_s must not be negative, not {time_constant_s!r}")
        self._window_s = window_s
        self._max = max_readings
        self._k = k
        self._tau = time_constant_s
        self._anchor = 0.0  # the time at which a reading's weight is 1 (time weighting only)
        self._weights: list[float] = []  # aligned with _times; empty without time weighting
        self._times: list[float] = []  # ascending
        self._values: list[float] = []  # aligned with _times
        self._sorted: list[float] = []  # the same values, ascending
        self._sum = 0.0
        self._estimate: float | None = None

    def __len__(self) -> int:
        return len(self._times)

    @property
    def estimate(self) -> float | None:
        """The mean of the readings inside Tukey's fences, weighted by age when the window
        has a time constant; ``None`` when the window is empty."""
        return self._estimate

    @property
    def newest(self) -> float | None:
        """The time of the newest reading, ``None`` when the window is empty."""
        return self._times[-1] if self._times else None

    def readings(self) -> list[tuple[float, float]]:
        """The (time, rssi) pairs in the window, oldest first (a copy)."""
        return list(zip(self._times, self._values, strict=True))

    def add(self, t: float, rssi_dbm: float) -> bool:
        """Add one reading heard at ``t``; ``False`` if it is older than the window (or not a
        finite number: the list stays sorted only for numbers that compare)."""
        if not (isfinite(rssi_dbm) and isfinite(t)):
            return False
        times = self._times
        if not times or t >= times[-1]:
            times.append(t)
            self._values.append(rssi_dbm)
            if self._tau:
                self._weights.append(self._weight(t))
        elif t <= times[-1] - self._window_s:
            return False
        else:
            i = bisect_right(times, t)
            times.insert(i, t)
            self._values.insert(i, rssi_dbm)
            if self._tau:
                self._weights.insert(i, self._weight(t))
        insort(self._sorted, rssi_dbm)
        self._sum += rssi_dbm
        self._drop_older_than(times[-1] - self._window_s)
        while len(times) > self._max:
            self._drop_first()
        self._estimate = self._compute()
        return True

    def expire(self, now: float) -> None:
        """Drop the readings that are ``window_s`` or more older than ``now``."""
        times = self._times
        if times and times[0] <= now - self._window_s:
            self._drop_older_than(now - self._window_s)
            self._estimate = self._compute()

    def clear(self) -> None:
        self._times.clear()
        self._values.clear()
        self._weights.clear()
        self._sorted.clear()
        self._sum = 0.0
        self._estimate = None

    def _drop_older_than(self, cutoff: float) -> None:
        times = self._times
        while times and times[0] <= cutoff:
            self._drop_first()

    def _drop_first(self) -> None:
        del self._times[0]
        if self._weights:
            del self._weights[0]
        value = self._values.pop(0)
        ordered = self._sorted
        del ordered[bisect_left(ordered, value)]
        if ordered:
            self._sum -= value
        else:
            self._sum = 0.0  # no drift carried into the next burst of readings

    def _weight(self, t: float) -> float:
        """The weight ``exp((t - anchor) / tau)`` of a reading heard at ``t``: relative to a
        fixed anchor, so weights are computed once per reading and never change; the anchor
        moves (and the weights are rescaled) before they could overflow."""
        tau = self._tau
        if len(self._weights) == 0 or t - self._anchor > _REANCHOR * tau:
            scale = exp((self._anchor - t) / tau)
            self._weights[:] = [w * scale for w in self._weights]
            self._anchor = t
        return exp((t - self._anchor) / tau)

    def _compute(self) -> float | None:
        s = self._sorted
        n = len(s)
        if n == 0:
            return None
        if self._tau:
            return self._time_weighted(n)
        if n < 3:
            return self._sum / n  # two readings have no outlier to tell apart
        # The quartiles as ``quantile`` computes them, inlined: this runs on every reading.
        h = 0.25 * (n - 1)
        i = int(h)
        q1 = s[i] + (h - i) * (s[i + 1] - s[i])
        h = 0.75 * (n - 1)
        i = int(h)
        q3 = s[i] + (h - i) * (s[i + 1] - s[i])
        spread = self._k * (q3 - q1)
        lo = bisect_left(s, q1 - spread)
        hi = bisect_right(s, q3 + spread)
        total = self._sum
        for i in range(lo):
            total -= s[i]
        for i in range(hi, n):
            total -= s[i]
        return total / (hi - lo)

    def _time_weighted(self, n: int) -> float:
        """The time-weighted mean of the readings inside Tukey's fences."""
        values = self._values
        if n >= 3:
            s = self._sorted
            h = 0.25 * (n - 1)
            i = int(h)
            q1 = s[i] + (h - i) * (s[i + 1] - s[i])
            h = 0.75 * (n - 1)
            i = int(h)
            q3 = s[i] + (h - i) * (s[i + 1] - s[i])
            spread = self._k * (q3 - q1)
            lo, hi = q1 - spread, q3 + spread
        else:  # two readings have no outlier to tell apart
            lo, hi = min(values), max(values)
        # Deviations from a reading inside the fences: equal readings give exactly themselves.
        ref = self._sorted[n // 2]
        total = weight = 0.0
        for value, w in zip(values, self._weights, strict=True):
            if lo <= value <= hi:
                total += w * (value - ref)
                weight += w
        if weight > 0.0:
            return ref + total / weight
        return self._sum / n  # every weight underflowed: a time constant far below the window
