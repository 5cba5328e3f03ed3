"""The decision engine's rules one by one, and the moments that share one decision between
channels: eligibility order and first refusals, holdout share, caps that hold, come-now
prices that never rise while shown, and nothing personal without consent."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from beacons.presence import NearKiosk, ZoneDwelling, ZoneEntered
from gateway.engine import (
    CHECKS,
    Facts,
    LiveOffer,
    Moment,
    decide,
    first_refusal,
    live_offer,
    static_pass,
)
from gateway.moments import Moments
from gateway.render import card_values
from gateway.rules import Context, RuleError
from gateway.store import ConsentRecord, Database, OfferRecord, ProfileRecord, Purpose
from gateway.store import PurposeState as State
from gateway.store.records import Caps, ComeNowTerms, Trigger, Variant

NOW = 1_795_378_600.0  # 2026-11-22 20:16 UTC, a Sunday
ALL = {p.value: State(granted=True, at=NOW - 60, notice_version="n1") for p in Purpose}
CONSENT = ConsentRecord(shopper_id="s1", purposes=ALL)
PROFILE = ProfileRecord(shopper_id="s1", segments=["coffee"], locale="fr")


def offer(offer_id: str = "o1", **fields: object) -> LiveOffer:
    return live_offer(OfferRecord(offer_id=offer_id, title=offer_id.upper(), **fields))  # type: ignore[arg-type]


def facts(**overrides: object) -> Facts:
    values: dict[str, object] = {
        "now": NOW,
        "channel": "kiosk",
        "rules": Context(segments=frozenset({"coffee"}), locale="fr", channel="kiosk", hour=20),
        "moment": Moment(trigger="near_kiosk", zone="coffee", kiosk="k1", hour=20),
        "shopper_id": "s1",
        "consent": CONSENT,
    }
    values.update(overrides)
    return Facts(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"channels": ["phone"]}, "channel"),
        ({"valid_until": NOW - 1}, "window"),
        ({"dayparts": [(7, 11)]}, "daypart"),
        ({"triggers": [Trigger(on="dwell", min_dwell_s=30)]}, "trigger"),
        ({"triggers": [Trigger(on="entered", zone="bakery")]}, "trigger"),
        ({"segments": ["tea"]}, "segments"),
        ({"audience": {"==": [{"var": "profile.locale"}, "de"]}}, "audience"),
        ({"stock_skus": ["sku-out"]}, "stock"),
        ({"holdout": 1.0}, "holdout"),
        ({"caps": Caps(per_visit=1)}, "cap:per_visit"),
        ({"caps": Caps(per_shopper=2)}, "cap:per_shopper"),
        ({"caps": Caps(global_per_day=5)}, "cap:global_day"),
        ({"caps": Caps(budget=10)}, "cap:budget"),
    ],
)
def test_each_rule_refuses_with_its_own_name(fields: dict[str, object], why: str) -> None:
    counts = {"visit:o1": 1, "window:o1": 2, "day:o1": 5, "total:o1": 10}
    stock = {"sku-out": False, "sku-in": True}.get
    assert first_refusal(offer(**fields), facts(counts=counts, stock=stock)) == why
    assert first_refusal(offer(), facts(counts=counts, stock=stock)) is None


def test_the_first_refusal_is_the_first_rule_in_order() -> None:
    everything_wrong = offer(channels=["phone"], valid_until=NOW - 1, holdout=1.0)
    assert first_refusal(everything_wrong, facts()) == "channel"
    names = [name for name, _check in CHECKS]
    assert names[:4] == ["channel", "daypart", "trigger", "segments"]  # the moment, then who


def test_an_entered_trigger_also_holds_while_the_shopper_dwells_or_comes_near() -> None:
    entered = offer(triggers=[Trigger(on="entered", zone="coffee")])
    assert first_refusal(entered, facts()) is None
    dwell = offer(triggers=[Trigger(on="dwell", zone="coffee", min_dwell_s=30)])
    long = Moment(trigger="dwell", zone="coffee", dwell_s=60)
    assert first_refusal(dwell, facts(moment=long)) is None


def test_a_purpose_the_offer_needs_is_checked() -> None:
    needs = offer(purposes=["analytics"])
    partial = ConsentRecord(
        shopper_id="s1", purposes={k: v for k, v in ALL.items() if k != "analytics"}
    )
    assert first_refusal(needs, facts(consent=partial)) == "consent:analytics"


def test_an_audience_rule_that_does_not_compile_never_makes_an_offer() -> None:
    with pytest.raises(RuleError):
        offer(audience={"==": [{"var": "profile.first_name"}, "Ann"]})


def test_priority_is_a_tier_and_value_times_propensity_ranks_within_it() -> None:
    offers = [
        offer("low", priority=1, value=100.0),
        offer("a", priority=5, value=1.0),
        offer("b", priority=5, value=2.0),
    ]
    decision = decide(
        NOW, "kiosk", shopper_id="s1", profile=PROFILE, consent=CONSENT, offers=offers,
        scores={"a": 0.2, "b": 0.3, "low": 1.0}, max_items=3,
    )  # fmt: skip
    assert [o.offer_id for o in decision.offers] == ["b", "a", "low"]
    decision = decide(
        NOW, "kiosk", shopper_id="s1", profile=PROFILE, consent=CONSENT, offers=offers,
        scores={"a": 0.9, "b": 0.4, "low": 1.0},
    )  # fmt: skip
    assert [o.offer_id for o in decision.offers] == ["a"]  # 0.9 x 1 > 0.4 x 2; at most one


def test_a_held_out_shopper_gets_generic_content_and_the_decision_says_so() -> None:
    offers = [offer("o1", holdout=1.0), offer("bread", generic=True)]
    decision = decide(
        NOW, "kiosk", shopper_id="s1", profile=PROFILE, consent=CONSENT, offers=offers
    )
    assert decision.offer is not None and decision.offer.offer_id == "bread"
    assert not decision.personal
    assert decision.held_out == ("o1",) and ("o1", "holdout") in decision.rejected


def test_holdout_share_is_close_to_the_offers_share_and_sticky() -> None:
    held = offer("o1", holdout=0.2)
    counts = 0
    for n in range(5000):
        shopper = f"shopper-{n}"
        refusal = first_refusal(held, facts(shopper_id=shopper))
        assert refusal == first_refusal(held, facts(shopper_id=shopper))  # sticky
        counts += refusal == "holdout"
    assert abs(counts / 5000 - 0.2) < 0.02


@given(
    st.sets(st.sampled_from([p.value for p in Purpose])),
    st.booleans(),
    st.sampled_from(["kiosk", "phone"]),
)
def test_nothing_personal_without_the_channels_purposes(
    granted: set[str], no_marketing: bool, channel: str
) -> None:
    consent = ConsentRecord(
        shopper_id="s1",
        purposes={k: v for k, v in ALL.items() if k in granted},
        no_marketing=no_marketing,
    )
    decision = decide(
        NOW, channel, shopper_id="s1", profile=PROFILE, consent=consent,  # type: ignore[arg-type]
        offers=[offer("o1"), offer("bread", generic=True)],
    )  # fmt: skip
    need = {"kiosk": {"presence", "personalization", "kiosk_display"}}.get(
        channel, {"personalization", "phone_messages"}
    )
    if decision.personal:
        assert need <= granted and not no_marketing
    if no_marketing or (channel == "phone" and "phone_messages" not in granted):
        assert decision.offer is None


# ----- moments -----


@pytest.fixture
def moments(db: Database) -> Moments:
    return Moments(db=db, seed=7)


async def put_offers(db: Database, *offers: OfferRecord) -> None:
    with db.env.begin(write=True) as txn:
        db.put_op(list(offers))(txn)


async def test_one_decision_per_moment_for_every_channel(db: Database, moments: Moments) -> None:
    offers = [OfferRecord(offer_id=f"o{n}", title=f"O{n}", value=1.0) for n in range(8)]
    await put_offers(db, *offers)
    moments.on_presence(NearKiosk(subject="s1", kiosk="k1", t=NOW, distance_m=1.0))
    kiosk = moments.decide(NOW, "kiosk", "s1", PROFILE, CONSENT)
    phone = moments.decide(NOW, "phone", "s1", PROFILE, CONSENT)
    again = [moments.decide(NOW + k, "kiosk", "s1", PROFILE, CONSENT) for k in range(5)]
    assert kiosk.offer == phone.offer  # the same ranking on both channels
    assert kiosk.offer is not None
    assert {d.offer.offer_id for d in again if d.offer} == {kiosk.offer.offer_id}  # no flipping
    picks = set()
    for k in range(30):  # new moments draw again: over many, several offers get a turn
        moments.on_presence(ZoneEntered(subject="s1", zone="coffee", t=NOW + 60 * k, rssi=-50))
        chosen = moments.decide(NOW + 60 * k, "kiosk", "s1", PROFILE, CONSENT).offer
        assert chosen is not None
        picks.add(chosen.offer_id)
    assert len(picks) > 1


def test_a_hold_out_counts_once_per_moment_as_a_showing_does(moments: Moments) -> None:
    """Screens and the app decide again and again in one moment: the control arm's exposures
    must count like the treatment's, once per moment, or the holdout looks worse than it is."""
    moments.on_presence(ZoneEntered(subject="s1", zone="coffee", t=NOW, rssi=-50))
    assert moments.held_out("s1", ["o1", "o2"]) == ["o1", "o2"]
    assert moments.held_out("s1", ["o1", "o2"]) == []  # the same moment, decided again
    assert moments.held_out("s1", ["o2", "o3"]) == ["o3"]
    moments.on_presence(ZoneEntered(subject="s1", zone="bakery", t=NOW + 60, rssi=-50))
    assert moments.held_out("s1", ["o1"]) == ["o1"]  # a new moment counts again
    assert moments.held_out("nobody-tracked", ["o1"]) == ["o1"]
    assert moments.held_out(None, ["o1"]) == ["o1"]


async def test_caps_hold_across_moments_and_visits(db: Database, moments: Moments) -> None:
    capped = OfferRecord(offer_id="o1", title="O1", caps=Caps(per_visit=1, per_shopper=2))
    await put_offers(db, capped)
    shown = 0
    for k in range(6):  # three visits of two moments each, an hour apart
        t = NOW + k * 1800 + (k // 2) * 3600
        moments.on_presence(ZoneEntered(subject="s1", zone="coffee", t=t, rssi=-50))
        decision = moments.decide(t, "kiosk", "s1", PROFILE, CONSENT)
        if decision.offer is not None:
            moments.shown("s1", decision.offer, t, PROFILE)
            shown += 1
        else:
            assert decision.rejected[0][1] in {"cap:per_visit", "cap:per_shopper"}
    assert shown == 2  # at most one per visit, at most two per day (its window)


async def test_a_come_now_price_never_rises_while_it_is_shown(
    db: Database, moments: Moments
) -> None:
    deal = OfferRecord(
        offer_id="o1",
        title="O1",
        regular_price=10.0,
        come_now=ComeNowTerms(max_discount_pct=30, full_for_s=60, gone_after_s=600),
    )
    await put_offers(db, deal)
    moments.on_presence(ZoneEntered(subject="s1", zone="coffee", t=NOW, rssi=-50))
    prices = [moments.quote("s1", deal, NOW + s).price for s in (0, 30, 120, 300, 599)]
    assert prices[0] == 7.0 and all(p == 7.0 for p in prices)  # honoured as first shown
    later = moments.quote("s1", deal, NOW + 700)
    assert later.price == 10.0 and later.regular_price == 10.0  # the window ended
    assert moments.quote(None, deal, NOW).price == 7.0  # anonymous: the curve's own price


def test_a_kept_static_pass_gives_the_same_decision() -> None:
    offers = [
        offer("a", dayparts=[(0, 12)]),
        offer("b", triggers=[Trigger(on="entered", zone="bakery")]),
        offer("c", channels=["phone"]),
        offer("d", segments=["coffee"], priority=1),
        offer("bread", generic=True),
    ]
    moment = Moment(trigger="entered", zone="coffee", hour=20)
    fresh = decide(
        NOW, "kiosk", shopper_id="s1", profile=PROFILE, consent=CONSENT, offers=offers,
        moment=moment,
    )  # fmt: skip
    kept = decide(
        NOW, "kiosk", shopper_id="s1", profile=PROFILE, consent=CONSENT, offers=offers,
        moment=moment, static=static_pass(offers, "kiosk", moment),
    )  # fmt: skip
    assert fresh == kept
    assert sorted(fresh.rejected) == [("a", "daypart"), ("b", "trigger"), ("c", "channel")]


async def test_social_proof_only_from_the_k_anonymity_floor(moments: Moments) -> None:
    deal = OfferRecord(offer_id="o1", title="O1")
    for n in range(1, 6):
        moments.redeemed("o1", NOW)
        proof = moments.social_proof(deal, NOW, floor=5)
        assert proof == ("5 people picked this up today" if n == 5 else "")
    assert moments.social_proof(deal, NOW + 86_400, floor=5) == ""  # a new day


def test_the_card_speaks_the_shoppers_language() -> None:
    deal = OfferRecord(
        offer_id="o1", title="Coffee", body="Fresh", locales={"fr": Variant(title="Café")}
    )
    fr = card_values(deal, price=None, regular_price=None, locale=PROFILE.locale)
    assert (fr["title"], fr["body"], fr["locale"]) == ("Café", "", "fr")
    en = card_values(deal, price=None, regular_price=None)
    assert (en["title"], en["body"]) == ("Coffee", "Fresh")


async def test_a_restock_signal_is_a_moment_for_everyone_in_the_store(
    db: Database, moments: Moments
) -> None:
    fresh = OfferRecord(
        offer_id="fresh",
        title="Back in stock",
        priority=5,
        triggers=[Trigger(on="signal", signal="restocked:sku-1")],
    )
    await put_offers(db, fresh, OfferRecord(offer_id="usual", title="Usual"))
    moments.on_presence(ZoneEntered(subject="s1", zone="coffee", t=NOW, rssi=-50))
    before = moments.decide(NOW, "kiosk", "s1", PROFILE, CONSENT)
    assert before.offer is not None and before.offer.offer_id == "usual"
    assert ("fresh", "trigger") in before.rejected
    assert moments.on_signal("restocked:sku-1", NOW + 5) == ["s1"]
    after = moments.decide(NOW + 5, "kiosk", "s1", PROFILE, CONSENT)
    assert after.offer is not None and after.offer.offer_id == "fresh"
    assert moments.zone_of("s1") == "coffee"  # still where they were


async def test_a_screen_keeps_its_offer_for_the_moment_it_was_shown_in(
    db: Database, moments: Moments
) -> None:
    """A cap of one per visit counts this moment's showing for the next moment, not against
    the decision it belongs to: the screen does not move on a second later."""
    at_kiosk = OfferRecord(
        offer_id="o1",
        title="O1",
        caps=Caps(per_visit=1),
        triggers=[Trigger(on="near_kiosk")],
    )
    await put_offers(db, at_kiosk)
    moments.on_presence(ZoneEntered(subject="s1", zone="coffee", t=NOW - 5, rssi=-50))
    moments.on_presence(NearKiosk(subject="s1", kiosk="k1", t=NOW, distance_m=1.0))
    first = moments.decide(NOW, "kiosk", "s1", PROFILE, CONSENT)
    assert first.offer is not None
    moments.shown("s1", first.offer, NOW, PROFILE)
    assert moments.shown("s1", first.offer, NOW, PROFILE) is None  # the phone: same showing
    again = moments.decide(NOW + 1, "kiosk", "s1", PROFILE, CONSENT)
    assert again.offer is not None and again.offer.offer_id == "o1"
    # Dwelling at the kiosk is a new trigger there: the kiosk's offer is still for it, but
    # this visit's one showing is used up.
    moments.on_presence(ZoneDwelling(subject="s1", zone="coffee", t=NOW + 30, seconds=30.0))
    later = moments.decide(NOW + 30, "kiosk", "s1", PROFILE, CONSENT)
    assert ("o1", "cap:per_visit") in later.rejected
    assert moments.showings("s1", "o1") == 1


async def test_what_the_learner_learned_survives_a_restart(db: Database) -> None:
    before = Moments(db=db, seed=7)
    for _ in range(10):
        before.learner.observe_impression("o1", "coffee")
    before.learner.observe_redemption("o1", "coffee")
    with db.env.begin(write=True) as txn:
        before.save_op()(txn)
    after = Moments(db=db, seed=7)
    assert after.restore() == 2  # (o1, coffee) and (o1, all)
    assert after.learner.propensity("o1", "coffee") == before.learner.propensity("o1", "coffee")


async def test_the_exploration_floor_puts_an_offer_first_now_and_then(
    db: Database,
) -> None:
    offers = [
        OfferRecord(offer_id=f"o{n}", title=f"O{n}", value=10.0 if n == 0 else 1.0)
        for n in range(5)
    ]
    await put_offers(db, *offers)
    moments = Moments(db=db, seed=3, exploration=0.3)
    for _ in range(20):  # the favourite is learned: it wins unless exploring
        moments.learner.observe_impression("o0", "all")
        moments.learner.observe_redemption("o0", "all")
    firsts = []
    for k in range(400):
        moments.on_presence(ZoneEntered(subject="s1", zone="coffee", t=NOW + k * 60, rssi=-50))
        chosen = moments.decide(NOW + k * 60, "kiosk", "s1", PROFILE, CONSENT).offer
        assert chosen is not None
        firsts.append(chosen.offer_id)
    others = sum(f != "o0" for f in firsts) / len(firsts)
    assert 0.15 < others < 0.35  # about the floor (0.3 x 4/5 of explorations land elsewhere)
