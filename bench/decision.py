"""``decision_p99_us``: the decision engine alone, 500 active offers, 100,000 profiles.

Each decision takes a random shopper of 100,000 (profile and consent in memory: the engine
alone, no store reads), a random moment (zone, trigger, hour), and decides for the kiosk
channel with a fresh per-moment propensity draw, exactly as ``gateway.moments`` feeds it:
the shopper's standing choices, every offer's eligibility rules in order (channel, window,
daypart, trigger, purposes, segments, a compiled audience rule, stock, holdout, caps), the
ranking and the arbitration. The offers mix every rule the engine knows.

Baseline, measured in the same run: ``offer_scan_p99_us``, the p99 of the cheapest possible
pass over the same 500 offers (each one's validity window checked, nothing else): what any
engine must at least do, so the ratio is what the real rules cost on top of a bare scan.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from bench.cpu import pinned
from bench.results import Result
from gateway.engine import LiveOffer, Moment, StaticPass, decide, live_offer, static_pass
from gateway.learning import Learner
from gateway.store import ConsentRecord, OfferRecord, ProfileRecord, Purpose, PurposeState
from gateway.store.records import Caps, Trigger

__all__ = ["NAME", "Settings", "run"]

NAME: Final = "decision_p99_us"
BASELINE: Final = "offer_scan_p99_us"
NOW: Final = 1_795_378_600.0
SEGMENTS: Final = tuple(f"seg-{n}" for n in range(40))
ZONES: Final = ("entrance", "coffee", "bakery", "tea", "checkout")

Out = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Settings:
    offers: int
    profiles: int
    decisions: int

    @classmethod
    def for_mode(cls, *, quick: bool) -> Settings:
        return cls(500, 100_000, 5_000 if quick else 20_000)


def _offer(i: int, rng: random.Random) -> OfferRecord:
    fields: dict[str, Any] = {
        "offer_id": f"offer-{i:04d}",
        "title": f"Offer {i}",
        "priority": rng.choice((0, 0, 0, 1, 2)),
        "value": round(rng.uniform(0.5, 5.0), 2),
        "segments": rng.sample(SEGMENTS, rng.choice((0, 1, 2))),
        "generic": i % 50 == 0,
    }
    if i % 3 == 0:
        fields["audience"] = {
            "and": [
                {"in": [rng.choice(SEGMENTS), {"var": "segments"}]},
                {">=": [{"var": "time.hour"}, rng.randrange(0, 12)]},
            ]
        }
    if i % 4 == 0:
        fields["triggers"] = [Trigger(on="entered", zone=rng.choice(ZONES))]
    if i % 5 == 0:
        fields["dayparts"] = [(rng.randrange(0, 12), rng.randrange(12, 24))]
    if i % 7 == 0:
        fields["caps"] = Caps(per_visit=1, per_shopper=3, global_per_day=1000)
    if i % 11 == 0:
        fields["holdout"] = 0.1
    if i % 13 == 0:
        fields["stock_skus"] = [f"sku-{i}"]
    return OfferRecord(**fields)


def run(settings: Settings, out: Out) -> list[Result]:
    rng = random.Random(1234)
    offers: list[LiveOffer] = [live_offer(_offer(i, rng)) for i in range(settings.offers)]
    granted = {
        p.value: PurposeState(granted=True, at=NOW - 60, notice_version="n1") for p in Purpose
    }
    profiles = [
        ProfileRecord(shopper_id=f"s{n}", segments=rng.sample(SEGMENTS, 3))
        for n in range(settings.profiles)
    ]
    consents = [ConsentRecord(shopper_id=p.shopper_id, purposes=granted) for p in profiles]
    learner = Learner()
    stock = {f"sku-{i}": i % 2 == 0 for i in range(settings.offers)}.get
    counts = {f"visit:{o.offer_id}": rng.randrange(0, 2) for o in offers[::7]}
    statics: dict[tuple[str | None, int], StaticPass] = {}

    def one(k: int) -> float:
        n = rng.randrange(settings.profiles)
        moment = Moment(trigger="entered", zone=rng.choice(ZONES), hour=rng.randrange(24))
        draws: dict[str, float] = {}
        moment_rng = random.Random(rng.getrandbits(64))

        def score(offer_id: str) -> float:  # as gateway.moments draws: all, once a moment
            if not draws:
                for oid in sorted(o.offer_id for o in offers):
                    draws[oid] = learner.sample(oid, "all", moment_rng)
            return draws.get(offer_id, 0.5)

        started = time.perf_counter_ns()
        static = statics.get((moment.zone, moment.hour))
        if static is None:  # once a moment, as gateway.moments keeps it
            static = statics[moment.zone, moment.hour] = static_pass(offers, "kiosk", moment)
        decide(
            NOW,
            "kiosk",
            shopper_id=profiles[n].shopper_id,
            profile=profiles[n],
            consent=consents[n],
            offers=offers,
            moment=moment,
            scores=score,
            stock=stock,
            counts=counts,
            static=static,
        )
        return (time.perf_counter_ns() - started) / 1000

    def scan(k: int) -> float:
        started = time.perf_counter_ns()
        valid = 0
        for offer in offers:
            valid += offer.record.valid_at(NOW)
        return (time.perf_counter_ns() - started) / 1000

    with pinned():
        for k in range(500):  # warm up both
            one(k)
            scan(k)
        ours: list[float] = []
        theirs: list[float] = []
        for k in range(settings.decisions):  # interleaved: the same noise for both
            ours.append(one(k))
            theirs.append(scan(k))
    p99, base = _p99(ours), _p99(theirs)
    out(
        f"{NAME}: {settings.offers} offers, {settings.profiles} profiles, "
        f"{settings.decisions} decisions: median {statistics.median(ours):.1f} us, "
        f"p99 {p99:.1f} us; bare scan median {statistics.median(theirs):.1f} us, "
        f"p99 {base:.1f} us"
    )
    return [Result(NAME, p99, "us", BASELINE, base, higher_is_better=False, digits=1)]


def _p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
