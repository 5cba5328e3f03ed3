"""A hybrid logical clock, persisted in the store, for a gateway that cannot trust its wall clock.

A Raspberry Pi has no real-time clock: it may boot in 1970, or with the time it had at its last
shutdown, until NTP corrects it, and NTP may then step the clock backwards. Events the gateway
stamps and exchanges with HQ still need an order that never goes backwards, so every stamp is a
hybrid logical clock (HLC) timestamp: an ``int`` made of the physical milliseconds since the
epoch, shifted left by 16 bits, and a 16-bit logical counter::

    timestamp = physical_ms << 16 | logical        (0 <= timestamp <= MAX_TIMESTAMP, 63 bits)

Ordering timestamps as integers orders them by physical time, then by counter.

Rules (Kulkarni et al., "Logical Physical Clocks", 2014), on integers:

* a local event: ``max(wall_ms << 16, last + 1)``. When the wall clock is ahead of everything
  issued so far the stamp is the wall time with counter 0; otherwise the counter of the last
  stamp goes up by one, and a counter at 0xFFFF carries into the physical part (one more
  millisecond), so a stamp is never below nor equal to the last one;
* a timestamp received from HQ: ``max(wall_ms << 16, last + 1, remote + 1)``, the standard
  receive rule (the largest physical part wins; on a tie the larger counter plus one).

The clock is *trusted* while the wall clock looks sane: not before ``trusted_after_ms``
(1 January 2024 by default, so a Pi that booted in 1970 is not) and not more than
``tolerance_ms`` behind the last timestamp issued or resumed from (so a clock stepped back, or
one far behind HQ's, is not). :meth:`HybridClock.stamp` returns the flag with each stamp so that
events stamped before the clock was trusted can be flagged for HQ. A wall clock that runs ahead
of true time cannot be detected locally.

Persistence. The last timestamp lives in the ``meta`` database under :data:`HLC_KEY`, as
decimal ASCII like the other counters there. The gateway persists it (``persist_op`` through the
:class:`~gateway.store.writer.Writer`) whenever :func:`persist_due` says so after issuing a
stamp, which is at least every :data:`PERSIST_EVERY_MS` of issued time and right after an HQ
timestamp has moved the clock forward, and once more on shutdown. On start, :func:`resume`
continues from the persisted value plus :data:`RESUME_GAP_MS` of physical time. The gap is
larger than the persist interval plus a commit's latency, so a restart, even after a power cut
that lost the last persist in flight, never issues a timestamp it had already issued.

A :class:`HybridClock` is used from the event-loop thread only; it is not thread-safe.
"""

from __future__ import annotations

from typing import Any, Final

import lmdb

from gateway.clock import Clock
from gateway.errors import PayloadError, StoreError
from gateway.store.database import Database
from gateway.store.writer import WriteOp

__all__ = [
    "HLC_KEY",
    "LOGICAL_BITS",
    "MAX_TIMESTAMP",
    "PERSIST_EVERY_MS",
    "RESUME_GAP_MS",
    "TOLERANCE_MS",
    "TRUSTED_AFTER_MS",
    "HybridClock",
    "from_ms",
    "load_last",
    "logical",
    "persist_due",
    "persist_op",
    "physical_ms",
    "resume",
    "to_seconds",
]

LOGICAL_BITS: Final = 16
_LOGICAL_MASK: Final = (1 << LOGICAL_BITS) - 1
MAX_TIMESTAMP: Final = (1 << 63) - 1
"""The largest timestamp: it fits a signed 64-bit integer (physical part up to the year 6429)."""
_MAX_PHYSICAL_MS: Final = MAX_TIMESTAMP >> LOGICAL_BITS

TRUSTED_AFTER_MS: Final = 1_704_067_200_000
"""2024-01-01T00:00:00Z: a wall clock reading earlier than this has not been set."""
TOLERANCE_MS: Final = 5 * 60_000
"""How far the wall clock may be behind the last timestamp and still be trusted."""
PERSIST_EVERY_MS: Final = 500
"""Issued time between two persists of the last timestamp."""
RESUME_GAP_MS: Final = 1_000
"""Physical time added to the persisted timestamp on start; must exceed ``PERSIST_EVERY_MS``
plus the latency of one commit."""

HLC_KEY: Final = b"hlc_last"


def physical_ms(ts: int) -> int:
    """The physical part of a timestamp: milliseconds since the epoch."""
    return ts >> LOGICAL_BITS


def logical(ts: int) -> int:
    """The logical counter of a timestamp (0 to 0xFFFF)."""
    return ts & _LOGICAL_MASK


def to_seconds(ts: int) -> float:
    """The physical part of a timestamp as seconds since the epoch (the counter is dropped)."""
    return physical_ms(ts) / 1000.0


def from_ms(ms: int) -> int:
    """The first timestamp of a millisecond (counter 0)."""
    if not 0 <= ms <= _MAX_PHYSICAL_MS:
        raise ValueError(f"milliseconds out of range: {ms}")
    return ms << LOGICAL_BITS


def persist_due(issued: int, persisted: int, *, every_ms: int = PERSIST_EVERY_MS) -> bool:
    """Whether the last timestamp ``issued`` has run ``every_ms`` or more ahead of the one last
    ``persisted``; check after every stamp and update, and submit :func:`persist_op` when true."""
    return physical_ms(issued) - physical_ms(persisted) >= every_ms


def _check(ts: int, what: str) -> int:
    if not 0 <= ts <= MAX_TIMESTAMP:
        raise ValueError(f"{what} out of range: {ts}")
    return ts


class HybridClock:
    """Issues strictly increasing timestamps from an injected wall clock. See the module notes."""

    __slots__ = ("_clock", "_last", "_tolerance_ms", "_trusted_after_ms")

    def __init__(
        self,
        clock: Clock,
        *,
        last: int = 0,
        trusted_after_ms: int = TRUSTED_AFTER_MS,
        tolerance_ms: int = TOLERANCE_MS,
    ) -> None:
        self._clock = clock
        self._last = _check(last, "last timestamp")
        self._trusted_after_ms = trusted_after_ms
        self._tolerance_ms = tolerance_ms

    @property
    def last(self) -> int:
        """The last timestamp issued (or resumed from)."""
        return self._last

    @property
    def trusted(self) -> bool:
        """Whether the wall clock reads a sane time right now."""
        return self._sane(self._wall_ms())

    def now(self) -> int:
        """A timestamp for a local event, greater than every one issued before."""
        return self.stamp()[0]

    def stamp(self) -> tuple[int, bool]:
        """A timestamp for a local event and whether the wall clock was trusted when it was
        issued (if not, the stamp only orders the event: its physical part may be wrong)."""
        wall = self._wall_ms()
        trusted = self._sane(wall)
        self._last = max(wall << LOGICAL_BITS, self._last + 1)
        return self._last, trusted

    def update(self, remote: int) -> int:
        """Merge a timestamp received from HQ and return the new local timestamp, greater than
        both ``remote`` and every timestamp issued before."""
        if not 0 <= remote <= MAX_TIMESTAMP:
            raise PayloadError("hlc_out_of_range", f"remote timestamp {remote}")
        wall = self._wall_ms()
        self._last = max(wall << LOGICAL_BITS, self._last + 1, remote + 1)
        return self._last

    def _wall_ms(self) -> int:
        return min(max(int(self._clock.now() * 1000.0), 0), _MAX_PHYSICAL_MS)

    def _sane(self, wall_ms: int) -> bool:
        return (
            wall_ms >= self._trusted_after_ms
            and wall_ms >= physical_ms(self._last) - self._tolerance_ms
        )


# ----- persistence -----


def _parse(raw: bytes) -> int:
    try:
        value = int(raw.decode("ascii"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise StoreError(f"meta/{HLC_KEY.decode()} holds {raw!r}, not a timestamp") from exc
    if not 0 <= value <= MAX_TIMESTAMP:
        raise StoreError(f"meta/{HLC_KEY.decode()} holds {value}, out of range")
    return value


def load_last(db: Database) -> int:
    """The persisted last timestamp, 0 when none was ever persisted."""
    try:
        with db.env.begin(db=db.handle("meta"), buffers=False) as txn:
            raw: bytes | None = txn.get(HLC_KEY)
    except lmdb.Error as exc:
        raise StoreError(f"cannot read meta/{HLC_KEY.decode()}: {exc}") from exc
    return 0 if raw is None else _parse(raw)


def persist_op(db: Database, ts: int) -> WriteOp[int]:
    """A write operation storing ``max(stored, ts)`` and returning it: persists submitted out
    of order, or from two processes, never move the stored timestamp backwards."""
    _check(ts, "timestamp")
    meta = db.handle("meta")

    def persist(txn: Any) -> int:
        raw: bytes | None = txn.get(HLC_KEY, db=meta)
        stored = 0 if raw is None else _parse(bytes(raw))
        if ts <= stored:
            return stored
        txn.put(HLC_KEY, str(ts).encode("ascii"), db=meta)
        return ts

    return persist


def resume(
    db: Database,
    clock: Clock,
    *,
    gap_ms: int = RESUME_GAP_MS,
    trusted_after_ms: int = TRUSTED_AFTER_MS,
    tolerance_ms: int = TOLERANCE_MS,
) -> HybridClock:
    """A clock continuing from the persisted timestamp plus ``gap_ms`` of physical time, so it
    never reissues a timestamp issued before the restart (see the module notes)."""
    last = load_last(db)
    start = from_ms(physical_ms(last) + gap_ms) if last else 0
    return HybridClock(
        clock, last=start, trusted_after_ms=trusted_after_ms, tolerance_ms=tolerance_ms
    )
