"""Identity resolution: Eddystone-EIDs and resolvable private addresses to subjects.

Only shoppers who opted in are registered.  A registration maps a subject (the gateway's opaque
reference to a shopper) to the key material their phone advertises with; an identifier that
resolves to nobody is answered with ``None`` and stays anonymous.  Both resolvers are sans-I/O:
the caller passes the time (``now``, in seconds, always on the same clock) and does any
scheduling.  Neither is thread-safe: the owner calls every method from one thread (the event
loop).

``EidResolver``
    One dictionary ``EID -> subject`` answers every sighting with a single lookup.  For a
    registration with rotation period ``P = 2**K`` seconds, drift allowance ``d`` periods and
    epoch offset ``e`` (the beacon's counter reads ``now - e``), the beacon is in period
    ``q = floor(now - e) // P``, and the *window* is the periods ``q - d .. q + d``: with the
    default ``d = 1`` the previous, current and next EIDs, so a beacon whose clock is off by up
    to a period still resolves.  The table holds the window plus one period of look-ahead,
    ``q - d .. q + d + 1``, so that it still covers every window for a whole period after the
    earliest registration's boundary.  The caller runs ``rebuild(now)`` off the hot path once
    ``rebuild_due(now)`` (or at ``next_rebuild_at``), in slices with ``limit`` if it is large,
    and ``resolve`` stays correct meanwhile.  Should the caller fall more than a period behind
    (or the clock step backwards), ``resolve`` catches up by itself before its lookup
    (counted in ``inline_rebuilds``).

    A rebuild recomputes the table for ``now``: the result equals a table built from scratch.
    It only touches the registrations whose period changed (found through a heap of their
    boundaries), slides their windows (new EIDs are added before old ones are dropped) and
    computes only the EIDs it does not already hold, usually one per registration.  ``add``
    and ``remove`` change one registration's entries at once; a removal takes effect before it
    returns.  No AES context is kept per registration (each holds about a kilobyte): a slide
    builds the one it needs.

``IrkResolver``
    Resolving a resolvable private address means one AES block per registered IRK until one
    matches, so results are cached: a positive cache ``address -> subject`` and a negative
    cache of addresses that match no IRK, each bounded in size (oldest entry evicted first) and
    with entries that expire ``ttl_s`` after they were stored (phones change address about
    every 15 minutes, and no address is kept longer than needed).  A change of registrations
    drops exactly the entries it could make wrong: adding an IRK clears the negative cache
    (those addresses might resolve now); adding or removing a subject drops that subject's
    positive entries.  Addresses without the resolvable marker return ``None`` without any AES
    and are not cached.  Cache keys are the address values as given (text or bytes).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import KeysView
from dataclasses import dataclass, field
from types import MappingProxyType

from cryptography.hazmat.primitives.ciphers import CipherContext

from beacons.eid import MAX_COUNTER, EidCalculator
from beacons.errors import IdentityError
from beacons.irk import HASH_LENGTH, PRAND_LENGTH, ah_block, ah_cipher, parse_address

__all__ = [
    "DEFAULT_CACHE_SIZE",
    "DEFAULT_CACHE_TTL_S",
    "DEFAULT_NEGATIVE_CACHE_SIZE",
    "MAX_DRIFT",
    "EidRegistration",
    "EidResolver",
    "IrkResolver",
]

MAX_DRIFT = 256
"""The largest drift allowance, in rotation periods (the table holds 2 * drift + 2 EIDs)."""

DEFAULT_CACHE_SIZE = 1024
DEFAULT_NEGATIVE_CACHE_SIZE = 4096
DEFAULT_CACHE_TTL_S = 900.0

_TYPE_MASK = 0xC0
_RESOLVABLE = 0x40
_HASH_OFFSET = 16 - HASH_LENGTH


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_time(now: float) -> float:
    if not _is_real(now) or not math.isfinite(now):
        raise IdentityError(f"time must be a finite number of seconds, got {now!r}")
    return now


def _check_subject(subject: str) -> str:
    if not isinstance(subject, str) or not subject:
        raise IdentityError(f"subject must be a non-empty string, got {subject!r}")
    return subject


# --- Eddystone-EID ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EidRegistration:
    """One registered EID beacon (a shopper's phone); the identity key stays out of ``repr``.

    ``drift`` is the clock-drift allowance in rotation periods (0..``MAX_DRIFT``);
    ``epoch_offset`` is when, on the caller's clock, the beacon's counter read zero.
    """

    subject: str
    identity_key: bytes = field(repr=False)
    exponent: int
    drift: int = 1
    epoch_offset: float = 0.0

    def __post_init__(self) -> None:
        _check_subject(self.subject)
        EidCalculator(self.identity_key, self.exponent)  # validates the key and exponent
        drift = self.drift
        if not _is_int(drift) or not 0 <= drift <= MAX_DRIFT:
            raise IdentityError(
                f"drift allowance must be an integer in 0..{MAX_DRIFT} periods, got {drift!r}"
            )
        if not _is_real(self.epoch_offset) or not math.isfinite(self.epoch_offset):
            raise IdentityError(
                f"epoch offset must be a finite number of seconds, got {self.epoch_offset!r}"
            )

    @property
    def period_s(self) -> int:
        """The rotation period, 2**K seconds."""
        return 1 << self.exponent

    @property
    def last_period(self) -> int:
        """The last period the 32-bit counter reaches."""
        return MAX_COUNTER >> self.exponent

    def period_start(self, period: int) -> float:
        """When, on the caller's clock, rotation period ``period`` begins."""
        return self.epoch_offset + period * (1 << self.exponent)

    def period_at(self, now: float) -> int:
        """The rotation period at ``now`` (negative before the beacon's epoch).

        Consistent with ``period_start`` as floating point computes it:
        ``period_start(p) <= now < period_start(p + 1)`` for the returned ``p``.
        """
        period = math.floor(now - self.epoch_offset) >> self.exponent
        while self.period_start(period + 1) <= now:
            period += 1
        while self.period_start(period) > now:
            period -= 1
        return period


class _EidState:
    """A registration's entries in the table: period -> EID, for the EIDs it owns there."""

    __slots__ = ("owned", "registration", "seq")

    def __init__(self, registration: EidRegistration) -> None:
        self.registration = registration
        self.owned: dict[int, bytes] = {}
        self.seq = 0


class EidResolver:
    """Eddystone-EID to subject through one precomputed table (see the module docstring)."""

    __slots__ = (
        "_due_at",
        "_eid_computations",
        "_heap",
        "_inline_rebuilds",
        "_min_period",
        "_rebuilds",
        "_seq",
        "_states",
        "_table",
        "_valid_from",
        "_valid_until",
    )

    def __init__(self) -> None:
        self._states: dict[str, _EidState] = {}
        self._table: dict[bytes, str] = {}
        # (boundary at which the registration enters its next period, seq, subject);
        # entries whose seq no longer matches the registration's are skipped.
        self._heap: list[tuple[float, int, str]] = []
        self._seq = 0
        self._due_at = math.inf
        self._valid_from = -math.inf
        self._valid_until = math.inf
        self._min_period = math.inf
        self._rebuilds = 0
        self._inline_rebuilds = 0
        self._eid_computations = 0

    # -- the hot path --

    def resolve(self, eid: bytes, now: float) -> str | None:
        """The subject whose beacon shows ``eid`` (8 bytes) at ``now``, or ``None``."""
        if not self._valid_from <= now < self._valid_until:
            self._inline_rebuilds += 1
            self.rebuild(now)
        return self._table.get(eid)

    # -- keeping the table current --

    def rebuild_due(self, now: float) -> bool:
        """Whether some registration has entered a new period since its entries were made."""
        return not self._valid_from <= now < self._due_at

    @property
    def next_rebuild_at(self) -> float:
        """When ``rebuild_due`` next becomes true (``inf`` with no registrations)."""
        return self._due_at

    def rebuild(self, now: float, *, limit: int | None = None) -> int:
        """Bring the table to ``now``; returns how many registrations' windows moved.

        With ``limit``, at most that many move and the rest stay due (their entries still cover
        them for a period after their boundary), so an event loop can spread a large rebuild
        over several turns: call again while ``rebuild_due(now)``.  After the clock stepped
        backwards the rebuild is always complete.
        """
        _check_time(now)
        if limit is not None and (not _is_int(limit) or limit < 1):
            raise IdentityError(f"limit must be a positive integer, got {limit!r}")
        self._rebuilds += 1
        if now < self._valid_from:
            return self._recompute(now)
        heap, states, table = self._heap, self._states, self._table
        budget = -1 if limit is None else limit
        moved = 0
        while heap and heap[0][0] <= now and moved != budget:
            _, seq, subject = heapq.heappop(heap)
            state = states.get(subject)
            if state is not None and state.seq == seq:
                self._refresh(state, now, table)
                moved += 1
        self._update_bounds()
        return moved

    # -- registrations --

    def add(
        self,
        subject: str,
        identity_key: bytes,
        exponent: int,
        drift: int = 1,
        *,
        now: float,
        epoch_offset: float = 0.0,
    ) -> EidRegistration:
        """Register (or replace) ``subject``; its EIDs resolve as soon as this returns."""
        registration = EidRegistration(subject, identity_key, exponent, drift, epoch_offset)
        _check_time(now)
        self.remove(subject)
        state = _EidState(registration)
        self._states[subject] = state
        self._min_period = min(self._min_period, registration.period_s)
        self._refresh(state, now, self._table)
        self._update_bounds()
        return registration

    def remove(self, subject: str) -> bool:
        """Forget ``subject``; none of its EIDs resolves once this returns."""
        state = self._states.pop(subject, None)
        if state is None:
            return False
        table = self._table
        for eid in state.owned.values():
            if table.get(eid) == subject:
                del table[eid]
        state.owned = {}
        return True

    def registration(self, subject: str) -> EidRegistration | None:
        """``subject``'s registration, or ``None``."""
        state = self._states.get(subject)
        return None if state is None else state.registration

    def subjects(self) -> KeysView[str]:
        """The registered subjects (a live view)."""
        return self._states.keys()

    def __len__(self) -> int:
        return len(self._states)

    def __contains__(self, subject: object) -> bool:
        return subject in self._states

    # -- observation --

    @property
    def table(self) -> MappingProxyType[bytes, str]:
        """A read-only view of the table ``EID -> subject``."""
        return MappingProxyType(self._table)

    @property
    def rebuilds(self) -> int:
        """Calls of ``rebuild``, including those ``resolve`` made itself."""
        return self._rebuilds

    @property
    def inline_rebuilds(self) -> int:
        """Rebuilds ``resolve`` had to make because the caller had not."""
        return self._inline_rebuilds

    @property
    def eid_computations(self) -> int:
        """EIDs computed so far (one AES block each, plus one per temporary key)."""
        return self._eid_computations

    # -- internals --

    def _refresh(self, state: _EidState, now: float, table: dict[bytes, str]) -> None:
        """Make ``state``'s entries in ``table`` the look-ahead window at ``now``."""
        registration = state.registration
        subject = registration.subject
        exponent = registration.exponent
        period = registration.period_at(now)
        last = registration.last_period
        low = max(period - registration.drift, 0)
        high = min(period + registration.drift + 1, last)
        old = state.owned
        owned: dict[int, bytes] = {}
        calculator: EidCalculator | None = None
        for p in range(low, high + 1):
            eid = old.get(p)
            if eid is None:
                if calculator is None:
                    calculator = EidCalculator(registration.identity_key, exponent)
                eid = calculator.eid(p << exponent)
                self._eid_computations += 1
            # On an 8-byte collision with another subject's EID the first owner keeps it.
            if table.setdefault(eid, subject) == subject:
                owned[p] = eid
        for p, eid in old.items():
            if p not in owned and table.get(eid) == subject:
                del table[eid]
        state.owned = owned
        self._seq += 1
        state.seq = self._seq
        boundary = registration.period_start(period + 1) if period < last else math.inf
        heapq.heappush(self._heap, (boundary, self._seq, subject))
        self._valid_from = max(self._valid_from, registration.period_start(period))

    def _recompute(self, now: float) -> int:
        """Rebuild every registration's entries into a new table, then swap it in."""
        table: dict[bytes, str] = {}
        self._heap = []
        self._valid_from = -math.inf
        states = self._states.values()
        self._min_period = min((s.registration.period_s for s in states), default=math.inf)
        for state in states:
            self._refresh(state, now, table)
        self._table = table
        self._update_bounds()
        return len(self._states)

    def _update_bounds(self) -> None:
        # Every registration's entries cover its window until one period after its own
        # boundary; the earliest boundary plus the shortest period is a safe lower bound.
        self._due_at = self._heap[0][0] if self._heap else math.inf
        self._valid_until = self._due_at + self._min_period


# --- resolvable private addresses -------------------------------------------------------


class IrkResolver:
    """Resolvable private address to subject, with bounded, expiring caches."""

    __slots__ = (
        "_aes_ops",
        "_cache_size",
        "_ciphers",
        "_hits",
        "_keys",
        "_misses",
        "_negative",
        "_negative_hits",
        "_negative_size",
        "_positive",
        "_ttl_s",
    )

    def __init__(
        self,
        *,
        cache_size: int = DEFAULT_CACHE_SIZE,
        negative_cache_size: int = DEFAULT_NEGATIVE_CACHE_SIZE,
        ttl_s: float = DEFAULT_CACHE_TTL_S,
    ) -> None:
        for name, size in (
            ("cache_size", cache_size),
            ("negative_cache_size", negative_cache_size),
        ):
            if not _is_int(size) or size < 0:
                raise IdentityError(f"{name} must be a non-negative integer, got {size!r}")
        if not _is_real(ttl_s) or not math.isfinite(ttl_s) or ttl_s <= 0:
            raise IdentityError(f"ttl_s must be a positive number of seconds, got {ttl_s!r}")
        self._cache_size = cache_size
        self._negative_size = negative_cache_size
        self._ttl_s = float(ttl_s)
        # Only the AES context of each IRK is kept, not the key bytes.
        self._ciphers: dict[str, CipherContext] = {}
        self._keys: tuple[tuple[str, CipherContext], ...] = ()
        self._positive: dict[str | bytes, tuple[str, float]] = {}
        self._negative: dict[str | bytes, float] = {}
        self._hits = 0
        self._negative_hits = 0
        self._misses = 0
        self._aes_ops = 0

    def resolve(self, address: str | bytes, now: float) -> str | None:
        """The subject whose IRK generated ``address``, or ``None``.

        ``address`` is ``"AA:BB:CC:DD:EE:FF"`` text or six bytes, most significant first; a
        malformed one raises ``IdentityError``.
        """
        entry = self._positive.get(address)
        if entry is not None:
            if now < entry[1]:
                self._hits += 1
                return entry[0]
            del self._positive[address]
        expires = self._negative.get(address)
        if expires is not None:
            if now < expires:
                self._negative_hits += 1
                return None
            del self._negative[address]
        raw = parse_address(address)
        if raw[0] & _TYPE_MASK != _RESOLVABLE:
            return None
        self._misses += 1
        block = ah_block(raw[:PRAND_LENGTH])
        expected = raw[PRAND_LENGTH:]
        for subject, cipher in self._keys:
            self._aes_ops += 1
            if cipher.update(block)[_HASH_OFFSET:] == expected:
                self._store_positive(address, subject, now)
                return subject
        self._store_negative(address, now)
        return None

    def add(self, subject: str, irk: bytes) -> None:
        """Register (or replace) ``subject``'s IRK (16 bytes, most significant first)."""
        _check_subject(subject)
        cipher = ah_cipher(irk)
        if subject in self._ciphers:
            self._forget(subject)
        self._ciphers[subject] = cipher
        self._keys = tuple(self._ciphers.items())
        self._negative.clear()

    def remove(self, subject: str) -> bool:
        """Forget ``subject``; its addresses stop resolving (and leave the cache) at once."""
        if subject not in self._ciphers:
            return False
        self._forget(subject)
        self._keys = tuple(self._ciphers.items())
        return True

    def subjects(self) -> KeysView[str]:
        """The registered subjects (a live view)."""
        return self._ciphers.keys()

    def expire(self, now: float) -> int:
        """Drop every cache entry that has expired by ``now``; returns how many."""
        positive = {a: e for a, e in self._positive.items() if now < e[1]}
        negative = {a: t for a, t in self._negative.items() if now < t}
        dropped = len(self._positive) - len(positive) + len(self._negative) - len(negative)
        self._positive, self._negative = positive, negative
        return dropped

    def __len__(self) -> int:
        return len(self._ciphers)

    def __contains__(self, subject: object) -> bool:
        return subject in self._ciphers

    # -- observation --

    @property
    def hits(self) -> int:
        """Lookups answered by the positive cache."""
        return self._hits

    @property
    def negative_hits(self) -> int:
        """Lookups answered by the negative cache."""
        return self._negative_hits

    @property
    def misses(self) -> int:
        """Resolvable addresses checked against the IRKs (neither cache knew them)."""
        return self._misses

    @property
    def aes_ops(self) -> int:
        """AES blocks computed for ``ah`` so far."""
        return self._aes_ops

    @property
    def cached(self) -> int:
        """Entries in the positive cache."""
        return len(self._positive)

    @property
    def negative_cached(self) -> int:
        """Entries in the negative cache."""
        return len(self._negative)

    # -- internals --

    def _forget(self, subject: str) -> None:
        del self._ciphers[subject]
        positive = self._positive
        for address in [a for a, (s, _) in positive.items() if s == subject]:
            del positive[address]

    def _store_positive(self, address: str | bytes, subject: str, now: float) -> None:
        cache, size = self._positive, self._cache_size
        if size == 0:
            return
        while cache:  # expired entries first, then the oldest while full
            oldest = next(iter(cache))
            if len(cache) < size and now < cache[oldest][1]:
                break
            del cache[oldest]
        cache[address] = (subject, now + self._ttl_s)

    def _store_negative(self, address: str | bytes, now: float) -> None:
        cache, size = self._negative, self._negative_size
        if size == 0:
            return
        while cache:
            oldest = next(iter(cache))
            if len(cache) < size and now < cache[oldest]:
                break
            del cache[oldest]
        cache[address] = now + self._ttl_s
