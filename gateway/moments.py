"""Each shopper's current moment and the decision state that goes with it (event loop only).

A moment starts with a presence event: entering a zone, dwelling there, coming near a kiosk
(or, for the phone, the app asking with no presence: ``app_open``). For a moment, the
propensity of every offer is drawn once (Thompson sampling, ``gateway.learning``) with a
random generator seeded by the shopper and the moment, so the kiosk in front of the shopper
and their phone rank offers the same way, and a screen re-deciding every second does not flip
between offers: one decision per shopper per trigger, reused by every channel.

What the caps count lives here too: what each shopper was shown (this visit, and in each
offer's window) and what the store showed today and in total. The store's totals are kept in
the ``counters`` database (shopper ``~store``) so that a restart does not reset a budget; a
shopper's recent showings are rebuilt from their decision records on first sight.

A come-now price is quoted from the moment's start and, once shown, honoured until its
window ends (``gateway.pricing.honour``); the quote is recorded with the decision.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import random
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final

import lmdb
import msgspec

from beacons.presence import (
    LeftKiosk,
    NearKiosk,
    PresenceEvent,
    ZoneDwelling,
    ZoneEntered,
    ZoneLeft,
)
from gateway.consents import STORE_COUNTER, bump_counter_in, counter, decisions
from gateway.engine import (
    Decision,
    LiveOffer,
    Moment,
    StaticPass,
    decide,
    live_offer,
    static_pass,
)
from gateway.errors import StoreError
from gateway.learning import ALL, Learner, Propensity
from gateway.pricing import ComeNow, Quote, honour, to_cents
from gateway.rules import RuleError
from gateway.store import ConsentRecord, Database, OfferRecord, ProfileRecord
from gateway.store.records import Channel

__all__ = ["STORE_COUNTER", "Moments", "Showing"]

log = logging.getLogger(__name__)

_MAX_SHOPPERS: Final = 10_000
_MAX_SHOWN: Final = 256
_MAX_STATIC: Final = 4096
_EXPLORE: Final = 1e9  # a draw no value times a propensity can reach
_LEARNER_KEY: Final = b"learner_counts"


@dataclass(slots=True)
class _Shopper:
    moment: Moment
    started: float
    key: str
    visit_start: float
    last_seen: float
    scores: dict[str, float] = field(default_factory=dict)
    shown: deque[tuple[float, str]] = field(default_factory=lambda: deque(maxlen=_MAX_SHOWN))
    quotes: dict[str, Quote] = field(default_factory=dict)
    in_moment: set[str] = field(default_factory=set)  # offers shown in this moment
    held_in_moment: set[str] = field(default_factory=set)  # offers held out in this moment
    visits_today: int = 1
    visit_day: str = ""


@dataclass(frozen=True, slots=True)
class Showing:
    """An offer as a screen or a phone shows it: the record and the price it was quoted."""

    offer: OfferRecord
    price: float | None
    regular_price: float | None
    quote: Quote | None


class Moments:
    def __init__(
        self,
        *,
        db: Database,
        learner: Learner | None = None,
        utc_offset_h: float = 0.0,
        visit_gap_s: float = 1800.0,
        seed: int = 0,
        exploration: float = 0.05,
    ) -> None:
        self._db = db
        self.learner = learner or Learner()
        self._offset = dt.timedelta(hours=utc_offset_h)
        self._visit_gap_s = visit_gap_s
        self._seed = seed
        self._shoppers: OrderedDict[str, _Shopper] = OrderedDict()
        self._catalogue: tuple[list[OfferRecord] | None, list[LiveOffer]] = (None, [])
        self._store_counts: dict[str, int] = {}
        self.refused: dict[str, str] = {}  # offers that do not compile: id -> why
        self.stock: Callable[[str], bool | None] | None = None  # the shelves' latest word
        self._static: dict[tuple[Channel, Moment | None], StaticPass] = {}
        self.exploration = exploration

    # ----- moments -----

    def on_presence(self, event: PresenceEvent) -> None:
        subject = event.subject
        if isinstance(event, ZoneLeft):
            shopper = self._shoppers.get(subject)
            if shopper is not None and shopper.moment.zone == event.zone:
                self._begin(subject, Moment(trigger="app_open"), event.t)
            return
        if isinstance(event, ZoneEntered):
            moment = Moment(trigger="entered", zone=event.zone)
        elif isinstance(event, ZoneDwelling):
            current = self._shoppers.get(subject)
            kiosk = current.moment.kiosk if current and current.moment.zone == event.zone else None
            moment = Moment(trigger="dwell", zone=event.zone, dwell_s=event.seconds, kiosk=kiosk)
        elif isinstance(event, NearKiosk):
            zone = self.zone_of(subject)
            moment = Moment(trigger="near_kiosk", zone=zone, kiosk=event.kiosk)
        elif isinstance(event, LeftKiosk):
            moment = Moment(trigger="entered", zone=self.zone_of(subject))
        else:
            return
        self._begin(subject, moment, event.t)

    def on_signal(self, signal: str, t: float) -> list[str]:
        """A device signal (e.g. ``restocked:<sku>``) starts a moment for every shopper in a
        zone now, where they are; returns who they are."""
        touched: list[str] = []
        for shopper_id, shopper in list(self._shoppers.items()):
            if shopper.moment.zone is None:
                continue
            self._begin(
                shopper_id,
                Moment(trigger="signal", zone=shopper.moment.zone, signal=signal),
                t,
            )
            touched.append(shopper_id)
        return touched

    def visit_start(self, shopper_id: str) -> float | None:
        """When the shopper's current visit began (a gap of ``visit_gap_s`` starts a new one)."""
        shopper = self._shoppers.get(shopper_id)
        return None if shopper is None else shopper.visit_start

    def key_of(self, shopper_id: str) -> str | None:
        """The shopper's current moment (changes whenever a new one starts)."""
        shopper = self._shoppers.get(shopper_id)
        return None if shopper is None else shopper.key

    def zone_of(self, shopper_id: str) -> str | None:
        shopper = self._shoppers.get(shopper_id)
        return None if shopper is None else shopper.moment.zone

    def forget(self, shopper_id: str) -> None:
        self._shoppers.pop(shopper_id, None)

    def _begin(self, shopper_id: str, moment: Moment, t: float) -> None:
        local = self._local(t)
        moment = Moment(
            trigger=moment.trigger,
            zone=moment.zone,
            kiosk=moment.kiosk,
            dwell_s=moment.dwell_s,
            signal=moment.signal,
            hour=local.hour,
            weekday=local.weekday(),
            minute_of_day=local.hour * 60 + local.minute,
        )
        shopper = self._shoppers.get(shopper_id)
        key = f"{moment.trigger}:{moment.zone}:{moment.kiosk}:{moment.dwell_s}:{t:.3f}"
        if shopper is None:
            shopper = _Shopper(moment, t, key, visit_start=t, last_seen=t, visit_day=self._day(t))
            shopper.shown.extend(self._recent_showings(shopper_id))
            self._shoppers[shopper_id] = shopper
            if len(self._shoppers) > _MAX_SHOPPERS:
                self._shoppers.popitem(last=False)
        else:
            if t - shopper.last_seen > self._visit_gap_s:
                shopper.visit_start = t
                day = self._day(t)
                shopper.visits_today = shopper.visits_today + 1 if shopper.visit_day == day else 1
                shopper.visit_day = day
            shopper.moment, shopper.started, shopper.key = moment, t, key
            shopper.scores = {}
            shopper.in_moment = set()
            shopper.held_in_moment = set()
        shopper.last_seen = t
        self._shoppers.move_to_end(shopper_id)

    # ----- deciding -----

    def offers(self) -> list[LiveOffer]:
        """The store's offers with their rules compiled, once per change of the offers."""
        records = self._db.offers()  # the same list object until the offers change
        if records is self._catalogue[0]:
            return self._catalogue[1]
        live: list[LiveOffer] = []
        refused: dict[str, str] = {}
        for record in records:
            try:
                live.append(live_offer(record))
            except RuleError as exc:  # refused on arrival; only an old store can hold one
                refused[record.offer_id] = str(exc)
        self._catalogue, self.refused = (records, live), refused
        self._static.clear()
        return live

    def _static_pass(
        self, offers: list[LiveOffer], channel: Channel, moment: Moment | None
    ) -> StaticPass:
        """The moment's own rules' verdicts, kept for every decision in the same moment."""
        key = (channel, moment)
        found = self._static.get(key)
        if found is None:
            if len(self._static) >= _MAX_STATIC:
                self._static.clear()
            found = self._static[key] = static_pass(offers, channel, moment)
        return found

    def decide(
        self,
        now: float,
        channel: Channel,
        shopper_id: str | None,
        profile: ProfileRecord | None,
        consent: ConsentRecord | None,
        *,
        held: str = "",
        max_items: int = 1,
    ) -> Decision:
        """The decision for ``channel`` in the shopper's current moment (``app_open`` when
        presence has none), with this moment's propensity draws and the caps' counts."""
        offers = self.offers()
        shopper = None if shopper_id is None else self._shoppers.get(shopper_id)
        if shopper_id is not None and shopper is None:
            self._begin(shopper_id, Moment(trigger="app_open"), now)
            shopper = self._shoppers[shopper_id]
        scores: Callable[[str], float] | None = None
        counts: dict[str, int] = {}
        moment: Moment | None = None
        if shopper is not None and shopper_id is not None:
            moment = replace(shopper.moment, visits_today=shopper.visits_today)
            scores = self._scores(shopper_id, shopper, offers, profile)
            counts = self._counts(shopper, offers, now)
        else:
            counts = self._store_caps(offers, now)
        return decide(
            now,
            channel,
            shopper_id=shopper_id,
            profile=profile,
            consent=consent,
            offers=offers,
            moment=moment,
            scores=scores,
            stock=self.stock,
            counts=counts,
            held=held,
            max_items=max_items,
            static=self._static_pass(offers, channel, moment),
        )

    def _scores(
        self,
        shopper_id: str,
        shopper: _Shopper,
        offers: Sequence[LiveOffer],
        profile: ProfileRecord | None,
    ) -> Callable[[str], float]:
        """This moment's propensity draws, made at the first need and kept: one generator
        seeded by the shopper and the moment draws every offer in offer-id order, so a draw
        does not depend on which offers a channel found eligible, or in which order."""
        memo = shopper.scores

        def draw(offer_id: str) -> float:
            if not memo:
                seed = hashlib.blake2b(
                    f"{self._seed}|{shopper_id}|{shopper.key}".encode(), digest_size=8
                ).digest()
                rng = random.Random(int.from_bytes(seed, "big"))
                segments = tuple(profile.segments) if profile is not None else ()
                learner = self.learner
                ids = sorted(o.offer_id for o in offers)
                for oid in ids:
                    segment = learner.segment_for(oid, segments) if segments else ALL
                    memo[oid] = learner.sample(oid, segment, rng)
                if ids and rng.random() < self.exploration:
                    # The floor of exploration: now and then one offer, chosen uniformly,
                    # goes first in its priority tier, however little is known of it.
                    memo[ids[rng.randrange(len(ids))]] = _EXPLORE
            return memo.get(offer_id, 0.5)

        return draw

    def _counts(self, shopper: _Shopper, offers: Sequence[LiveOffer], now: float) -> dict[str, int]:
        counts = self._store_caps(offers, now)
        windows = {o.offer_id: o.record.caps.window_s for o in offers}
        for t, offer_id in shopper.shown:
            if offer_id in shopper.in_moment and t >= shopper.started:
                continue  # this moment's own showing: the decision stands for the moment
            if t >= shopper.visit_start:
                counts[f"visit:{offer_id}"] = counts.get(f"visit:{offer_id}", 0) + 1
            if t >= now - windows.get(offer_id, 86_400.0):
                counts[f"window:{offer_id}"] = counts.get(f"window:{offer_id}", 0) + 1
        return counts

    def _store_caps(self, offers: Sequence[LiveOffer], now: float) -> dict[str, int]:
        day = self._day(now)
        counts: dict[str, int] = {}
        for offer in offers:
            caps = offer.record.caps
            if caps.global_per_day is not None:
                counts[f"day:{offer.offer_id}"] = self._store_count(offer.offer_id, day)
            if caps.budget is not None:
                counts[f"total:{offer.offer_id}"] = self._store_count(offer.offer_id, "total")
        return counts

    def _store_count(self, offer_id: str, window: str, *, name_is_key: bool = False) -> int:
        """A store-wide count (``shown:<offer>`` by default, or the name given), read from
        LMDB once and then kept up to date here."""
        key = f"{offer_id}|{window}"
        if key not in self._store_counts:
            name = offer_id if name_is_key else f"shown:{offer_id}"
            try:
                self._store_counts[key] = counter(self._db, STORE_COUNTER, name, window)
            except StoreError:
                return 0
        return self._store_counts[key]

    # ----- what was shown -----

    def shown(
        self, shopper_id: str | None, offer: OfferRecord, now: float, profile: ProfileRecord | None
    ) -> tuple[str, str] | None:
        """Count a showing (caps, learning) once per moment; returns the arguments of the
        store's counters (for :meth:`count_op_in`, committed with the decision record), or
        None when this moment's showing of the offer was counted already."""
        if shopper_id is not None:
            shopper = self._shoppers.get(shopper_id)
            if shopper is not None:
                if offer.offer_id in shopper.in_moment:
                    return None  # one decision per moment: shown on every channel, counted once
                shopper.in_moment.add(offer.offer_id)
                shopper.shown.append((now, offer.offer_id))
            segments = profile.segments if profile is not None else ()
            segment = self.learner.segment_for(offer.offer_id, segments) if segments else ALL
            self.learner.observe_impression(offer.offer_id, segment)
        day = self._day(now)
        for window in (day, "total"):
            key = f"{offer.offer_id}|{window}"
            self._store_counts[key] = self._store_count(offer.offer_id, window) + 1
        return (offer.offer_id, day)

    def held_out(self, shopper_id: str | None, offer_ids: Sequence[str]) -> list[str]:
        """Of the offers the holdout kept from the shopper in a decision, those not counted
        yet in this moment: a control exposure counts once per moment, as a showing does,
        however often screens and the app decide again in it."""
        shopper = None if shopper_id is None else self._shoppers.get(shopper_id)
        if shopper is None:
            return list(offer_ids)
        fresh = [o for o in offer_ids if o not in shopper.held_in_moment]
        shopper.held_in_moment.update(fresh)
        return fresh

    def count_op_in(self, txn: Any, offer_id: str, day: str) -> None:
        """The store's counters of one showing, inside the caller's transaction."""
        for window in (day, "total"):
            bump_counter_in(txn, self._db, STORE_COUNTER, f"shown:{offer_id}", window)

    def quote(self, shopper_id: str | None, offer: OfferRecord, now: float) -> Showing:
        """The price to show: the offer's own, or its come-now price honoured as shown."""
        terms = offer.come_now
        regular = offer.regular_price if offer.regular_price is not None else offer.price
        if terms is None or regular is None:
            return Showing(offer, offer.price, offer.regular_price, None)
        shopper = None if shopper_id is None else self._shoppers.get(shopper_id)
        started = now if shopper is None else shopper.started
        try:
            curve = ComeNow(
                to_cents(regular, offer.currency),
                terms.max_discount_pct,
                terms.full_for_s,
                terms.gone_after_s,
            )
            new = curve.quote(
                offer.offer_id,
                offer.currency,
                since_trigger_s=now - started,
                valid_until=started + terms.gone_after_s,
            )
        except ValueError as exc:  # refused on arrival; an older store may still hold one
            log.warning("come-now terms unusable", extra={"offer": offer.offer_id, "why": str(exc)})
            return Showing(offer, offer.price, offer.regular_price, None)
        if shopper is not None:
            new = honour(shopper.quotes.get(offer.offer_id), new, now)
            shopper.quotes[offer.offer_id] = new
        return Showing(offer, new.price_cents / 100, new.regular_cents / 100, new)

    def showings(self, shopper_id: str, offer_id: str) -> int:
        """How many times the offer counted as shown to the shopper (once per moment)."""
        shopper = self._shoppers.get(shopper_id)
        return 0 if shopper is None else sum(oid == offer_id for _t, oid in shopper.shown)

    def quoted(self, shopper_id: str, offer_id: str) -> Quote | None:
        """The come-now quote last shown to the shopper for the offer (for its record)."""
        shopper = self._shoppers.get(shopper_id)
        return None if shopper is None else shopper.quotes.get(offer_id)

    # ----- learning, kept -----

    def save_op(self) -> Callable[[Any], None]:
        """A write op keeping the learner's counts in ``meta`` (hourly and at shutdown), so a
        restart does not forget what impressions and redemptions taught."""
        rows = [
            [offer_id, segment, p.impressions, p.redemptions]
            for (offer_id, segment), p in self.learner.counts().items()
        ]
        raw = msgspec.json.encode(rows)
        meta = self._db.handle("meta")

        def save(txn: Any) -> None:
            txn.put(_LEARNER_KEY, raw, db=meta)

        return save

    def restore(self) -> int:
        """Load the counts :meth:`save_op` kept; returns how many keys (0 when none, or when
        what is kept does not read: the learner then starts from its prior)."""
        try:
            with self._db.env.begin(db=self._db.handle("meta"), buffers=False) as txn:
                raw = txn.get(_LEARNER_KEY)
        except lmdb.Error as exc:
            log.warning("learner counts not read", extra={"error": str(exc)})
            return 0
        if raw is None:
            return 0
        try:
            rows = msgspec.json.decode(raw, type=list[tuple[str, str, int, int]])
            self.learner.load(
                {(o, seg): Propensity(impressions=i, redemptions=r) for o, seg, i, r in rows}
            )
        except (msgspec.DecodeError, ValueError) as exc:
            log.warning("learner counts unreadable; starting afresh", extra={"error": str(exc)})
            return 0
        return len(rows)

    # ----- what a card says -----

    def picked_today(self, offer_id: str, now: float) -> int:
        """Redemptions of the offer in the store today (the social proof's count)."""
        return self._store_count(f"redeemed:{offer_id}", self._day(now), name_is_key=True)

    def redeemed(self, offer_id: str, now: float) -> tuple[str, str]:
        """Count a redemption for today's social proof; the caller commits the counter
        (``STORE_COUNTER``, the returned name and window) with it."""
        day = self._day(now)
        key = f"redeemed:{offer_id}|{day}"
        self._store_counts[key] = self.picked_today(offer_id, now) + 1
        return f"redeemed:{offer_id}", day

    def social_proof(self, offer: OfferRecord, now: float, floor: int) -> str:
        """ "14 people picked this up today", only from ``floor`` people on (k-anonymity)."""
        n = self.picked_today(offer.offer_id, now)
        return f"{n} people picked this up today" if n >= floor else ""

    # ----- helpers -----

    def _recent_showings(self, shopper_id: str) -> list[tuple[float, str]]:
        try:
            records = decisions(self._db, shopper_id, limit=_MAX_SHOWN)
        except StoreError:
            return []
        return sorted((r.at, r.offer_id) for r in records if r.offer_id is not None)

    def _local(self, t: float) -> dt.datetime:
        return dt.datetime.fromtimestamp(t, dt.UTC) + self._offset

    def _day(self, now: float) -> str:
        return f"day:{self._local(now).date().isoformat()}"
