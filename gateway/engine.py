"""The decision engine: what a screen or a phone shows for a moment, and why (no I/O).

One decision, in this order, every step keeping the first reason that stopped something:

1. **The shopper's standing choices** (:func:`gate`): a "no marketing" objection shows no
   offer at all; no shopper, no ``presence``, no ``personalization``, no profile, and on a
   shared screen no ``kiosk_display`` (on a phone no ``phone_messages``) leave only generic
   content; the shopper's own quiet hours and limits (the caller's ``held``) come next.
2. **Eligibility, offer by offer** (:func:`first_refusal`): channel, validity window,
   daypart, trigger, the purposes the offer needs, its audience (the old ``segments`` list and
   the compiled rule of ``gateway.rules``), stock by the latest shelf signal, the holdout (a
   deterministic share of shoppers who are the offer's control group), and its caps (per
   shopper in a window, per visit, for the store per day, in total). Each refused offer is
   recorded with the first rule that refused it.
3. **Ranking**: HQ's ``priority`` is a tier; within the top tier, expected value: the offer's
   ``value`` times a propensity draw (``scores``: Thompson samples of ``gateway.learning``,
   drawn once per moment by the caller so that every channel sees the same order).
4. **Arbitration**: at most ``max_items`` per screen.

Nothing personal is decided without the purposes that allow it, and generic content (an offer
marked ``generic``, or the house welcome) is what is left otherwise. Offers arrive as
:class:`LiveOffer` (their audience rule compiled once, :func:`live_offer`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from gateway.learning import in_holdout
from gateway.rules import EVERYONE, Context, Rule, RuleError, compile_rule
from gateway.store import ConsentRecord, OfferRecord, ProfileRecord, Purpose
from gateway.store.records import Channel, Trigger, TriggerKind

__all__ = [
    "CHECKS",
    "STATIC",
    "Decision",
    "Facts",
    "KioskDecision",
    "LiveOffer",
    "Moment",
    "PhoneDecision",
    "StaticPass",
    "decide",
    "decide_for_kiosk",
    "decide_for_phone",
    "first_refusal",
    "gate",
    "has_holdout",
    "live_offer",
    "static_pass",
]

_PERSONAL_ON: dict[Channel, tuple[Purpose, ...]] = {
    "kiosk": (Purpose.PRESENCE, Purpose.PERSONALIZATION, Purpose.KIOSK_DISPLAY),
    "phone": (Purpose.PERSONALIZATION, Purpose.PHONE_MESSAGES),
}
_GATE_REASON: dict[Purpose, str] = {
    Purpose.PRESENCE: "no presence consent",
    Purpose.PERSONALIZATION: "personalization not granted",
    Purpose.KIOSK_DISPLAY: "kiosk display not granted",
    Purpose.PHONE_MESSAGES: "phone messages not granted",
}


@dataclass(frozen=True, slots=True)
class Moment:
    """What happened: the trigger, where, and the store's local time."""

    trigger: TriggerKind = "entered"
    zone: str | None = None
    kiosk: str | None = None
    dwell_s: float = 0.0
    signal: str | None = None
    hour: int = 12
    weekday: int = 0
    minute_of_day: int = 720
    visits_today: int = 0


@dataclass(frozen=True, slots=True)
class LiveOffer:
    """An offer as the engine uses it: its record, its compiled audience rule, and the
    eligibility rules that can refuse it (those it has nothing for are left out once, here,
    rather than asked of every decision)."""

    record: OfferRecord
    audience: Rule = EVERYONE
    static: tuple[Check, ...] = field(default=(), compare=False)
    checks: tuple[Check, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        static, dynamic = _checks_for(self.record, self.audience)
        object.__setattr__(self, "static", static)
        object.__setattr__(self, "checks", dynamic)

    @property
    def offer_id(self) -> str:
        return self.record.offer_id

    @property
    def campaign(self) -> str:
        return self.record.campaign or self.record.offer_id


def live_offer(record: OfferRecord) -> LiveOffer:
    """The offer with its audience compiled; ``RuleError`` names what is wrong with it."""
    return LiveOffer(record, compile_rule(record.audience))


@dataclass(frozen=True, slots=True)
class Decision:
    """What to show (``offers``, best first; ``offer`` the first or None) and why, with every
    offer left out and the first rule that left it out."""

    shopper_id: str | None
    offer: OfferRecord | None
    personal: bool
    reason: str
    offers: tuple[OfferRecord, ...] = ()
    rejected: tuple[tuple[str, str], ...] = ()
    held_out: tuple[str, ...] = field(default=())


KioskDecision = Decision
PhoneDecision = Decision
Scores = Mapping[str, float] | Callable[[str], float]
"""Propensity draws by offer id: a table, or a function the engine calls for eligible offers."""


def gate(
    now: float,
    channel: Channel,
    shopper_id: str | None,
    profile: ProfileRecord | None,
    consent: ConsentRecord | None,
) -> tuple[bool | None, str]:
    """The shopper's standing choices: ``(None, why)`` nothing at all; ``(False, why)``
    generic content only; ``(True, "")`` personal offers may be considered."""
    if consent is not None and consent.no_marketing:
        return None, "shopper objects to marketing"
    if channel == "phone" and (consent is None or not consent.allows(Purpose.PHONE_MESSAGES, now)):
        return None, "phone messages not granted"
    if shopper_id is None:
        return False, "nobody opted in is at the kiosk"
    if consent is None:
        return False, "no presence consent" if channel == "kiosk" else "personalization not granted"
    for purpose in _PERSONAL_ON[channel]:
        if not consent.allows(purpose, now):
            return False, _GATE_REASON[purpose]
    if profile is None:
        return False, "no profile"
    return True, ""


@dataclass(frozen=True, slots=True)
class Facts:
    """What one decision knows, for the eligibility rules. ``counts`` holds what the caps
    count: ``visit:<id>`` and ``window:<id>`` (this shopper), ``day:<id>`` and ``total:<id>``
    (the store)."""

    now: float
    channel: Channel
    rules: Context
    moment: Moment | None = None
    shopper_id: str | None = None
    consent: ConsentRecord | None = None
    stock: Callable[[str], bool | None] | None = None
    counts: Mapping[str, int] = field(default_factory=dict)


Check = Callable[[OfferRecord, LiveOffer, Facts], "str | None"]


def _channel(r: OfferRecord, _o: LiveOffer, f: Facts) -> str | None:
    return None if f.channel in r.channels else "channel"


def _window(r: OfferRecord, _o: LiveOffer, f: Facts) -> str | None:
    return None if r.valid_at(f.now) else "window"


def _daypart(r: OfferRecord, _o: LiveOffer, f: Facts) -> str | None:
    if not r.dayparts or f.moment is None:
        return None
    hour = f.moment.hour
    return None if any(_in_daypart(hour, a, b) for a, b in r.dayparts) else "daypart"


def _trigger(r: OfferRecord, _o: LiveOffer, f: Facts) -> str | None:
    if not r.triggers or f.moment is None:
        return None
    moment = f.moment
    return None if any(_matches(t, moment) for t in r.triggers) else "trigger"


def _purposes(r: OfferRecord, _o: LiveOffer, f: Facts) -> str | None:
    for name in r.purposes:
        if f.consent is None or not f.consent.allows(Purpose(name), f.now):
            return f"consent:{name}"
    return None


def _segments(r: OfferRecord, _o: LiveOffer, f: Facts) -> str | None:
    if not r.segments or r.generic:
        return None
    mine = f.rules.segments
    return "segments" if mine is None or mine.isdisjoint(r.segments) else None


def _audience(_r: OfferRecord, o: LiveOffer, f: Facts) -> str | None:
    return None if o.audience(f.rules) else "audience"


def _stock(r: OfferRecord, _o: LiveOffer, f: Facts) -> str | None:
    known = f.stock
    if known is None or not any(known(sku) is False for sku in r.stock_skus):
        return None
    return "stock"


def has_holdout(r: OfferRecord) -> bool:
    """Does the offer keep a holdout (a control group its campaign's shoppers fall into)?"""
    return bool(r.holdout) and not r.generic


def _holdout(r: OfferRecord, o: LiveOffer, f: Facts) -> str | None:
    if not has_holdout(r) or f.shopper_id is None:
        return None
    return "holdout" if in_holdout(f.shopper_id, o.campaign, r.holdout) else None


def _caps(r: OfferRecord, _o: LiveOffer, f: Facts) -> str | None:
    caps, seen, oid = r.caps, f.counts, r.offer_id
    for cap, name, why in (
        (caps.per_visit, f"visit:{oid}", "cap:per_visit"),
        (caps.per_shopper, f"window:{oid}", "cap:per_shopper"),
        (caps.global_per_day, f"day:{oid}", "cap:global_day"),
        (caps.budget, f"total:{oid}", "cap:budget"),
    ):
        if cap is not None and seen.get(name, 0) >= cap:
            return why
    return None


CHECKS: Final[tuple[tuple[str, Check], ...]] = (
    ("channel", _channel),
    ("daypart", _daypart),
    ("trigger", _trigger),
    ("segments", _segments),
    ("consent", _purposes),
    ("audience", _audience),
    ("window", _window),
    ("stock", _stock),
    ("holdout", _holdout),
    ("caps", _caps),
)
"""The eligibility rules in the order they are tried; the first that refuses names why: the
moment's own (channel, daypart, trigger: :data:`STATIC`, shared by every decision in the same
moment, :func:`static_pass`), then who the shopper is (segments, through an index of the
offers by segment; the purposes the offer needs; its audience rule), then time, stock, the
holdout and the caps."""

STATIC: Final = frozenset({"channel", "daypart", "trigger"})


@dataclass(frozen=True, slots=True)
class StaticPass:
    """The offers the moment's own rules let through, and the ones they refused (and why);
    those let through indexed by segment (an offer for no segment is for everyone)."""

    eligible: tuple[LiveOffer, ...]
    rejected: tuple[tuple[LiveOffer, str], ...]
    by_segment: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def split(self, segments: frozenset[str] | None) -> tuple[list[LiveOffer], list[LiveOffer]]:
        """``(candidates, refused for their segments)`` for a shopper of ``segments``."""
        if not self.by_segment:
            return list(self.eligible), []
        wanted: set[str] = set()
        for segment in segments or ():
            wanted |= self.by_segment.get(segment, frozenset())
        candidates: list[LiveOffer] = []
        refused: list[LiveOffer] = []
        for offer in self.eligible:
            record = offer.record
            if not record.segments or record.generic or record.offer_id in wanted:
                candidates.append(offer)
            else:
                refused.append(offer)
        return candidates, refused


def static_pass(offers: Sequence[LiveOffer], channel: Channel, moment: Moment | None) -> StaticPass:
    """The verdicts of the rules that depend on nothing but the channel and the moment."""
    facts = Facts(now=0.0, channel=channel, rules=Context(), moment=moment)
    eligible: list[LiveOffer] = []
    rejected: list[tuple[LiveOffer, str]] = []
    for offer in offers:
        for check in offer.static:
            why = check(offer.record, offer, facts)
            if why is not None:
                rejected.append((offer, why))
                break
        else:
            eligible.append(offer)
    by_segment: dict[str, set[str]] = {}
    for offer in eligible:
        if not offer.record.generic:
            for segment in offer.record.segments:
                by_segment.setdefault(segment, set()).add(offer.offer_id)
    index = {segment: frozenset(ids) for segment, ids in by_segment.items()}
    return StaticPass(tuple(eligible), tuple(rejected), index)


def first_refusal(offer: LiveOffer, facts: Facts) -> str | None:
    """The first rule that keeps ``offer`` from this decision, or None when it is eligible."""
    record = offer.record
    segments: tuple[Check, ...] = (_segments,) if record.segments and not record.generic else ()
    for check in (*offer.static, *segments, *offer.checks):
        why = check(record, offer, facts)
        if why is not None:
            return why
    return None


def _dynamic_refusal(offer: LiveOffer, facts: Facts) -> str | None:
    record = offer.record
    for check in offer.checks:
        why = check(record, offer, facts)
        if why is not None:
            return why
    return None


def _checks_for(record: OfferRecord, audience: Rule) -> tuple[tuple[Check, ...], tuple[Check, ...]]:
    """The rules of :data:`CHECKS`, in order, that can refuse this offer: those of the
    moment (:data:`STATIC`), then the others."""
    caps = record.caps
    applies = {
        "channel": True,
        "window": True,
        "daypart": bool(record.dayparts),
        "trigger": bool(record.triggers),
        "consent": bool(record.purposes),
        "segments": bool(record.segments) and not record.generic,
        "audience": audience.source != EVERYONE.source,
        "stock": bool(record.stock_skus),
        "holdout": has_holdout(record),
        "caps": any(
            c is not None
            for c in (caps.per_visit, caps.per_shopper, caps.global_per_day, caps.budget)
        ),
    }
    static = tuple(check for name, check in CHECKS if applies[name] and name in STATIC)
    # Segments are not among the per-decision rules: the moment's index answers them.
    dynamic = tuple(
        check
        for name, check in CHECKS
        if applies[name] and name not in STATIC and name != "segments"
    )
    return static, dynamic


def decide(
    now: float,
    channel: Channel,
    *,
    shopper_id: str | None,
    profile: ProfileRecord | None,
    consent: ConsentRecord | None,
    offers: Sequence[LiveOffer],
    moment: Moment | None = None,
    scores: Scores | None = None,
    stock: Callable[[str], bool | None] | None = None,
    counts: Mapping[str, int] | None = None,
    held: str = "",
    max_items: int = 1,
    static: StaticPass | None = None,
) -> Decision:
    """Decide for one channel (see the module's docstring for the order); ``static`` is
    this moment's :func:`static_pass` of ``offers`` when the caller keeps it."""
    allowed, why = gate(now, channel, shopper_id, profile, consent)
    if allowed is None:
        return Decision(None, None, False, why)
    if held:  # the shopper's own quiet hours or limits
        return Decision(None, None, False, held)
    facts = Facts(
        now=now,
        channel=channel,
        rules=_context(profile if allowed else None, channel, moment),
        moment=moment,
        shopper_id=shopper_id if allowed else None,
        consent=consent,
        stock=stock,
        counts=counts or {},
    )
    rejected: list[tuple[str, str]] = []
    held_out: list[str] = []
    personal: list[LiveOffer] = []
    generic: list[LiveOffer] = []
    verdicts = static if static is not None else static_pass(offers, channel, moment)
    for offer, why in verdicts.rejected:
        if offer.record.generic or allowed:
            rejected.append((offer.offer_id, why))
    candidates, off_segment = verdicts.split(facts.rules.segments)
    if allowed:
        rejected.extend((offer.offer_id, "segments") for offer in off_segment)
    for offer in candidates:
        record = offer.record
        if not record.generic and not allowed:
            continue  # never considered: the gate's reason says why
        refusal = _dynamic_refusal(offer, facts)
        if refusal is not None:
            rejected.append((record.offer_id, refusal))
            if refusal == "holdout":
                held_out.append(record.offer_id)
        else:
            (generic if record.generic else personal).append(offer)
    chosen = _rank(personal, scores)[:max_items]
    if chosen:
        return Decision(
            shopper_id,
            chosen[0],
            True,
            "highest-priority offer for the shopper",
            tuple(chosen),
            tuple(rejected),
            tuple(held_out),
        )
    if allowed:
        why = "no offer matches the shopper"
    fallback = _rank(generic, None)[:max_items]
    return Decision(
        None,
        fallback[0] if fallback else None,
        False,
        why,
        tuple(fallback),
        tuple(rejected),
        tuple(held_out),
    )


def _rank(offers: Sequence[LiveOffer], scores: Scores | None) -> list[OfferRecord]:
    """Priority tier first; within it the expected value (value times the propensity draw,
    0.5 when none was drawn); the offer id breaks ties, so equal inputs give equal output.
    Only eligible offers are scored (a draw costs a microsecond or two)."""
    if scores is None:
        draw: Callable[[str], float] = lambda _offer_id: 0.5  # noqa: E731
    elif callable(scores):
        draw = scores
    else:
        table = scores
        draw = lambda offer_id: table.get(offer_id, 0.5)  # noqa: E731

    def key(offer: LiveOffer) -> tuple[int, float, str]:
        record = offer.record
        return (-record.priority, -record.value * draw(record.offer_id), record.offer_id)

    return [offer.record for offer in sorted(offers, key=key)]


def _context(profile: ProfileRecord | None, channel: Channel, moment: Moment | None) -> Context:
    if moment is None:
        return Context(
            locale=None if profile is None else profile.locale,
            segments=None if profile is None else frozenset(profile.segments),
            greet_on_kiosk=None if profile is None else profile.greet_on_kiosk,
            channel=channel,
        )
    return Context(
        locale=None if profile is None else profile.locale,
        segments=None if profile is None else frozenset(profile.segments),
        greet_on_kiosk=None if profile is None else profile.greet_on_kiosk,
        zone=moment.zone,
        trigger=moment.trigger,
        dwell_s=moment.dwell_s if moment.trigger == "dwell" else None,
        kiosk=moment.kiosk if channel == "kiosk" else None,
        visits_today=moment.visits_today,
        channel=channel,
        hour=moment.hour,
        weekday=moment.weekday,
        minute_of_day=moment.minute_of_day,
    )


def _in_daypart(hour: int, start: int, end: int) -> bool:
    """``[start, end)`` in local hours, wrapping midnight when ``end < start``."""
    if start <= end:
        return start <= hour < end
    return hour >= start or hour < end


def _matches(trigger: Trigger, moment: Moment) -> bool:
    if trigger.on != moment.trigger and not (
        (trigger.on == "entered" and moment.trigger in ("dwell", "near_kiosk"))
        or (trigger.on == "near_kiosk" and moment.trigger == "dwell" and moment.kiosk)
    ):
        return False
    if trigger.zone is not None and trigger.zone != moment.zone:
        return False
    if trigger.min_dwell_s and moment.dwell_s < trigger.min_dwell_s:
        return False
    return trigger.signal is None or trigger.signal == moment.signal


# ----- the foundation's entry points, kept for their callers -----


def _legacy(offers: Sequence[OfferRecord]) -> list[LiveOffer]:
    out: list[LiveOffer] = []
    for record in offers:
        try:
            out.append(live_offer(record))
        except RuleError:
            continue  # a rule that does not compile never reaches a screen
    return out


def decide_for_kiosk(
    now: float,
    shopper_id: str | None,
    profile: ProfileRecord | None,
    consent: ConsentRecord | None,
    offers: Sequence[OfferRecord],
) -> Decision:
    return decide(
        now,
        "kiosk",
        shopper_id=shopper_id,
        profile=profile,
        consent=consent,
        offers=_legacy(offers),
    )


def decide_for_phone(
    now: float,
    profile: ProfileRecord | None,
    consent: ConsentRecord | None,
    offers: Sequence[OfferRecord],
    *,
    quiet: bool = False,
    capped: str = "",
) -> Decision:
    held = "the shopper's quiet hours" if quiet else capped
    shopper_id = (
        profile.shopper_id
        if profile is not None
        else (consent.shopper_id if consent is not None else None)
    )
    return decide(
        now,
        "phone",
        shopper_id=shopper_id,
        profile=profile,
        consent=consent,
        offers=_legacy(offers),
        held=held,
    )
