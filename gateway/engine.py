"""Deciding what a kiosk shows: a pure function of the shopper, their consent, the offers and
the time. No I/O; the caller reads the store and passes the records in.

The foundation's single rule, applied in this order, each step keeping its reason:

1. a standing "no marketing" objection overrides everything: no offer at all, not even the
   generic one, while that shopper is at the kiosk;
2. no shopper, or no active ``presence`` consent: generic content;
3. without ``personalization`` *and* ``kiosk_display``: generic content (nothing personal may
   appear on a shared screen);
4. otherwise the valid offer of highest priority whose audience segments meet the shopper's
   (an offer with no segments is for everyone), ties broken by offer id;
5. no such offer: generic content.

Generic content is the valid ``generic`` offer of highest priority, or the house welcome.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gateway.store import ConsentRecord, OfferRecord, ProfileRecord, Purpose

__all__ = ["KioskDecision", "PhoneDecision", "decide_for_kiosk", "decide_for_phone"]


@dataclass(frozen=True, slots=True)
class KioskDecision:
    shopper_id: str | None
    offer: OfferRecord | None
    personal: bool
    reason: str


def decide_for_kiosk(
    now: float,
    shopper_id: str | None,
    profile: ProfileRecord | None,
    consent: ConsentRecord | None,
    offers: Sequence[OfferRecord],
) -> KioskDecision:
    if consent is not None and consent.no_marketing:
        return KioskDecision(None, None, False, "shopper objects to marketing")
    if shopper_id is None:
        return _generic(now, offers, "nobody opted in is at the kiosk")
    if consent is None or not consent.allows(Purpose.PRESENCE, now):
        return _generic(now, offers, "no presence consent")
    if not consent.allows(Purpose.PERSONALIZATION, now):
        return _generic(now, offers, "personalization not granted")
    if not consent.allows(Purpose.KIOSK_DISPLAY, now):
        return _generic(now, offers, "kiosk display not granted")
    if profile is None:
        return _generic(now, offers, "no profile")
    best = _best_for(now, profile, offers)
    if best is None:
        return _generic(now, offers, "no offer matches the shopper")
    return KioskDecision(shopper_id, best, True, "highest-priority offer for the shopper")


def _best_for(
    now: float, profile: ProfileRecord, offers: Sequence[OfferRecord]
) -> OfferRecord | None:
    """The valid personal offer of highest priority whose segments meet the shopper's."""
    segments = set(profile.segments)
    best: OfferRecord | None = None
    for offer in offers:
        if offer.generic or not offer.valid_at(now):
            continue
        if offer.segments and segments.isdisjoint(offer.segments):
            continue
        if best is None or (offer.priority, best.offer_id) > (best.priority, offer.offer_id):
            best = offer
    return best


def _generic(now: float, offers: Sequence[OfferRecord], reason: str) -> KioskDecision:
    best: OfferRecord | None = None
    for offer in offers:
        if not offer.generic or not offer.valid_at(now):
            continue
        if best is None or (offer.priority, best.offer_id) > (best.priority, offer.offer_id):
            best = offer
    return KioskDecision(None, best, False, reason)


@dataclass(frozen=True, slots=True)
class PhoneDecision:
    """What the shopper's phone may get now: an offer or nothing, with the first reason."""

    offer: OfferRecord | None
    personal: bool
    reason: str


def decide_for_phone(
    now: float,
    profile: ProfileRecord | None,
    consent: ConsentRecord | None,
    offers: Sequence[OfferRecord],
    *,
    quiet: bool = False,
    capped: str = "",
) -> PhoneDecision:
    """The phone's rules, in order: "no marketing" overrides everything; without
    ``phone_messages`` nothing is sent to the phone; quiet hours and the shopper's own caps
    come next; without ``personalization`` only generic content; else the kiosk's ranking."""
    if consent is not None and consent.no_marketing:
        return PhoneDecision(None, False, "shopper objects to marketing")
    if consent is None or not consent.allows(Purpose.PHONE_MESSAGES, now):
        return PhoneDecision(None, False, "phone messages not granted")
    if quiet:
        return PhoneDecision(None, False, "the shopper's quiet hours")
    if capped:
        return PhoneDecision(None, False, capped)
    if not consent.allows(Purpose.PERSONALIZATION, now):
        return PhoneDecision(_generic(now, offers, "").offer, False, "personalization not granted")
    if profile is None:
        return PhoneDecision(_generic(now, offers, "").offer, False, "no profile")
    best = _best_for(now, profile, offers)
    if best is None:
        return PhoneDecision(_generic(now, offers, "").offer, False, "no offer matches the shopper")
    return PhoneDecision(best, True, "highest-priority offer for the shopper")
