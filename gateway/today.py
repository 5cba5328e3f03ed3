"""Today's store-wide tallies, hour by hour: what the staff dashboard's figures are made of.

Counted (each in the store's local day and hour, ``api.utc_offset_h``):

=================  ==========================================================================
``recognised``     opted-in shoppers recognised in the store: the first zone entry of a
                   shopper on a day (presence needs their consent), once per shopper and day
``shown``          offers shown (once per shopper and moment, whatever the channel, as the
                   caps count them)
``shown_with_holdout``  of those, offers that keep a holdout (``engine.has_holdout``): the
                   treatment arm's exposures
``held_out``       offers held out by the holdout (the control arm's exposures; likewise once
                   per shopper, offer and moment)
``redeemed:SIDE``  redemptions at the tills by attribution: ``treatment``, ``control`` or
                   ``unattributed`` (``gateway.redemptions.attribute``)
``redeemed_with_holdout``  of the treatment's, those of offers that keep a holdout
``door_entries``   entries the door counters counted (each rise of a counter's ``in``)
=================  ==========================================================================

The conversion against the holdout compares ``redeemed_with_holdout / shown_with_holdout``
with ``redeemed:control / held_out``: offers without a holdout have no control arm, so their
showings would only dilute the treatment side.

Where it lives: the ``counters`` database under the store's pseudo shopper ``~store``, name
``today:METRIC:hHH``, window ``day:YYYY-MM-DD``; the hourly sweep drops a day's keys two days
after it ends, as it drops every day window. Each count is bumped in the transaction that
records what it counts (the decision, the redemption), so a restart neither loses nor doubles
one. Recognition writes its own small transaction: a per-shopper key ``SHOPPER \\x00
recognised \\x00 day:YYYY-MM-DD`` (swept likewise, erased with the shopper) says whether the
shopper was counted today, so a restart does not count them again; an in-memory set of today's
ids only spares the write for a shopper seen before.

:meth:`Today.figures` reads the day's keys in one read transaction, at most once a second
(every dashboard shares the reading), and returns counts, never an id.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from beacons.presence import PresenceEvent, ZoneEntered
from gateway.consents import STORE_COUNTER, bump_counter_in, counters_at
from gateway.errors import StoreError
from gateway.store.database import Database
from gateway.store.writer import WriteOp, Writer

__all__ = ["METRICS", "DayFigures", "Today", "hour_keys"]

log = logging.getLogger(__name__)

METRICS: Final = (
    "recognised",
    "shown",
    "shown_with_holdout",
    "held_out",
    "redeemed:treatment",
    "redeemed_with_holdout",
    "redeemed:control",
    "redeemed:unattributed",
    "door_entries",
)
_MAX_SEEN: Final = 50_000  # ids kept to spare writes; past it, the per-shopper key decides
_READ_EVERY_S: Final = 1.0


def hour_keys(t: float, utc_offset_h: float) -> tuple[str, int]:
    """The local day's window (``day:YYYY-MM-DD``) and hour (0-23) of ``t``."""
    local = dt.datetime.fromtimestamp(t, dt.UTC) + dt.timedelta(hours=utc_offset_h)
    return f"day:{local.date().isoformat()}", local.hour


@dataclass(frozen=True, slots=True)
class DayFigures:
    """The day's counts per metric, each as 24 hourly counts (local midnight first)."""

    day: str
    hourly: dict[str, tuple[int, ...]]

    def total(self, metric: str) -> int:
        return sum(self.hourly.get(metric, ()))


class Today:
    """Owns today's tallies: bumps them in the callers' transactions, writes recognitions,
    and reads the day back for the dashboard (event loop only)."""

    def __init__(
        self,
        *,
        db: Database,
        writer: Writer | None,
        utc_offset_h: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = db
        self._writer = writer
        self._offset_h = utc_offset_h
        self._monotonic = clock
        self._seen_day = ""
        self._seen: set[str] = set()
        self._pending: set[asyncio.Future[bool]] = set()
        self._cache: tuple[float, DayFigures] | None = None

    def keys(self, t: float) -> tuple[str, int]:
        return hour_keys(t, self._offset_h)

    # ----- counting, in the caller's transaction -----

    def bump_in(self, txn: Any, metric: str, t: float, by: int = 1) -> None:
        """``by`` (one) more of ``metric`` at ``t``, inside ``txn`` (the transaction
        recording it)."""
        if metric not in METRICS:
            raise ValueError(f"metric {metric!r}; expected one of {METRICS}")
        day, hour = self.keys(t)
        bump_counter_in(txn, self._db, STORE_COUNTER, f"today:{metric}:h{hour:02d}", day, by=by)

    def shown_in(self, txn: Any, t: float, *, with_holdout: bool) -> None:
        """One offer shown at ``t``, inside ``txn``; ``with_holdout``: the offer keeps one."""
        self.bump_in(txn, "shown", t)
        if with_holdout:
            self.bump_in(txn, "shown_with_holdout", t)

    def redeemed_in(self, txn: Any, side: str, t: float, *, with_holdout: bool) -> None:
        """One redemption attributed to ``side`` at ``t``, inside ``txn``."""
        self.bump_in(txn, f"redeemed:{side}", t)
        if side == "treatment" and with_holdout:
            self.bump_in(txn, "redeemed_with_holdout", t)

    def entries_op(self, entries: int, t: float) -> WriteOp[None]:
        """A write operation adding door-counter ``entries`` at ``t``."""

        def add(txn: Any) -> None:
            self.bump_in(txn, "door_entries", t, entries)

        return add

    # ----- recognitions -----

    def on_presence(self, event: PresenceEvent) -> None:
        """A shopper's zone entry: counted when it is their first today (see the notes)."""
        if not isinstance(event, ZoneEntered) or self._writer is None:
            return
        day, _hour = self.keys(event.t)
        if day != self._seen_day:
            self._seen_day, self._seen = day, set()
        if event.subject in self._seen:
            return
        if len(self._seen) >= _MAX_SEEN:
            self._seen.clear()
        self._seen.add(event.subject)
        try:
            future = self._writer.submit(self.recognise_op(event.subject, event.t))
        except StoreError as exc:  # stopping
            self._seen.discard(event.subject)
            log.warning("recognition not recorded", extra={"error": str(exc)})
            return
        self._pending.add(future)
        future.add_done_callback(self._recorded)

    def forget(self, shopper_id: str) -> None:
        """Presence withdrawn or the shopper erased: their id leaves today's set (the store's
        key still says whether they were counted)."""
        self._seen.discard(shopper_id)

    def seen_today(self) -> int:
        """How many shopper ids today's set holds (memory only)."""
        return len(self._seen)

    def recognise_op(self, shopper_id: str, t: float) -> WriteOp[bool]:
        """A write operation counting the shopper as recognised on ``t``'s day unless they
        were already (or are erased); True when counted."""
        day, hour = self.keys(t)

        def recognise(txn: Any) -> bool:
            if bump_counter_in(txn, self._db, shopper_id, "recognised", day) != 1:
                return False
            bump_counter_in(txn, self._db, STORE_COUNTER, f"today:recognised:h{hour:02d}", day)
            return True

        return recognise

    def _recorded(self, future: asyncio.Future[bool]) -> None:
        self._pending.discard(future)
        if future.cancelled():
            return
        exc = future.exception()
        if exc is not None:
            log.warning("recognition not recorded", extra={"error": str(exc)})
        elif future.result():
            self.forget_reading()  # the next reading shows it

    async def drain(self) -> None:
        """Wait for the recognitions in flight (before the writer stops)."""
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    # ----- reading -----

    def forget_reading(self) -> None:
        """The next :meth:`figures` reads the store again (benchmarks, tests)."""
        self._cache = None

    def figures(self, now: float) -> DayFigures:
        """The day of ``now`` so far; read at most once a second (StoreError when the store
        cannot be read)."""
        day, _hour = self.keys(now)
        tick = self._monotonic()
        if self._cache is not None:
            read_at, cached = self._cache
            if cached.day == day and tick - read_at < _READ_EVERY_S:
                return cached
        figures = self._read(day)
        self._cache = (tick, figures)
        return figures

    def _read(self, day: str) -> DayFigures:
        names = [f"today:{m}:h{h:02d}" for m in METRICS for h in range(24)]
        counts = counters_at(self._db, STORE_COUNTER, names, day)
        return DayFigures(
            day, {m: tuple(counts[i * 24 : (i + 1) * 24]) for i, m in enumerate(METRICS)}
        )
