"""Tests of the kiosk decision: the rule order of the module docstring, consent purpose by
purpose (expiry included), segments, validity windows, priority and tie-break, the generic
fallback, and a property test that nothing personal happens without consent."""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.engine import KioskDecision, decide_for_kiosk
from gateway.store import ConsentRecord, OfferRecord, ProfileRecord, Purpose, PurposeState

PROPERTY = settings(database=None, deadline=None, print_blob=True, max_examples=200)

NOW = 1_000_000.0
SHOPPER = "shopper-alice"
KIOSK_PURPOSES = (Purpose.PRESENCE, Purpose.PERSONALIZATION, Purpose.KIOSK_DISPLAY)

BEANS = OfferRecord(offer_id="beans", title="Espresso beans", segments=["coffee"], priority=10)
TEA = OfferRecord(offer_id="tea", title="Green tea", segments=["tea"], priority=20)
FOR_ALL = OfferRecord(offer_id="for-all", title="Bags for life", priority=1)
CROISSANTS = OfferRecord(offer_id="croissants", title="Croissants", generic=True, priority=1)
BREAD = OfferRecord(offer_id="bread", title="Bread", generic=True, priority=5)


def consent(
    purposes: Iterable[Purpose] = KIOSK_PURPOSES,
    *,
    expires_at: float | None = None,
    no_marketing: bool = False,
    denied: Iterable[Purpose] = (),
) -> ConsentRecord:
    states = {
        p.value: PurposeState(granted=True, at=NOW - 100, expires_at=expires_at) for p in purposes
    }
    states |= {p.value: PurposeState(granted=False, at=NOW - 100) for p in denied}
    return ConsentRecord(shopper_id=SHOPPER, purposes=states, no_marketing=no_marketing)


def profile(*segments: str) -> ProfileRecord:
    return ProfileRecord(shopper_id=SHOPPER, first_name="Alice", segments=list(segments))


def decide(
    offers: Iterable[OfferRecord],
    *,
    shopper_id: str | None = SHOPPER,
    prof: ProfileRecord | None = None,
    cons: ConsentRecord | None = None,
    now: float = NOW,
) -> KioskDecision:
    return decide_for_kiosk(
        now,
        shopper_id,
        profile("coffee") if prof is None else prof,
        consent() if cons is None else cons,
        list(offers),
    )


def assert_generic(decision: KioskDecision, offer: OfferRecord | None) -> None:
    assert decision.personal is False
    assert decision.shopper_id is None
    assert decision.offer == offer
    assert decision.reason


# --- the happy path ------------------------------------------------------------------


def test_full_consent_and_a_matching_offer_is_personal() -> None:
    decision = decide([BEANS, CROISSANTS])

    assert decision.personal is True
    assert decision.shopper_id == SHOPPER
    assert decision.offer == BEANS
    assert decision.reason


# --- rule 1: no shopper, no presence, no marketing ------------------------------------


def test_no_shopper_shows_generic_content() -> None:
    assert_generic(decide([BEANS, CROISSANTS], shopper_id=None), CROISSANTS)


def test_no_shopper_and_no_generic_offer_shows_the_house_welcome() -> None:
    assert_generic(decide([BEANS], shopper_id=None), None)


def test_no_consent_record_is_generic() -> None:
    decision = decide_for_kiosk(NOW, SHOPPER, profile("coffee"), None, [BEANS, CROISSANTS])

    assert_generic(decision, CROISSANTS)


@pytest.mark.parametrize("missing", KIOSK_PURPOSES)
def test_each_kiosk_purpose_is_required(missing: Purpose) -> None:
    granted = [p for p in KIOSK_PURPOSES if p is not missing]

    assert_generic(decide([BEANS, CROISSANTS], cons=consent(granted)), CROISSANTS)


@pytest.mark.parametrize("denied", KIOSK_PURPOSES)
def test_an_explicit_refusal_is_not_consent(denied: Purpose) -> None:
    granted = [p for p in KIOSK_PURPOSES if p is not denied]

    decision = decide([BEANS, CROISSANTS], cons=consent(granted, denied=[denied]))

    assert_generic(decision, CROISSANTS)


def test_other_purposes_do_not_stand_in_for_the_kiosk_ones() -> None:
    others = [Purpose.PHONE_MESSAGES, Purpose.STAFF_ASSIST, Purpose.ANALYTICS]

    assert_generic(decide([BEANS, CROISSANTS], cons=consent(others)), CROISSANTS)


@pytest.mark.parametrize(
    "granted",
    [
        KIOSK_PURPOSES,
        (Purpose.PRESENCE,),
        (Purpose.PRESENCE, Purpose.KIOSK_DISPLAY),
        tuple(Purpose),
    ],
)
def test_no_marketing_shows_no_offer_at_all(granted: tuple[Purpose, ...]) -> None:
    decision = decide([BEANS, FOR_ALL, CROISSANTS], cons=consent(granted, no_marketing=True))

    assert decision.personal is False
    assert decision.shopper_id is None
    assert decision.offer is None


def test_no_marketing_shows_no_offer_whatever_else_is_granted() -> None:
    decision = decide([BEANS, CROISSANTS], cons=consent([], no_marketing=True))

    assert decision.offer is None


# --- expiry -------------------------------------------------------------------------


@pytest.mark.parametrize("expires_at", [NOW - 1.0, NOW])
def test_expired_consent_counts_as_not_granted(expires_at: float) -> None:
    decision = decide([BEANS, CROISSANTS], cons=consent(expires_at=expires_at))

    assert_generic(decision, CROISSANTS)


def test_consent_valid_until_later_is_granted() -> None:
    decision = decide([BEANS, CROISSANTS], cons=consent(expires_at=NOW + 1.0))

    assert decision.personal is True


@pytest.mark.parametrize("expired", KIOSK_PURPOSES)
def test_one_expired_kiosk_purpose_is_enough_to_stay_generic(expired: Purpose) -> None:
    record = consent()
    purposes = dict(record.purposes)
    purposes[expired.value] = PurposeState(granted=True, at=NOW - 100, expires_at=NOW - 10)
    record = ConsentRecord(shopper_id=SHOPPER, purposes=purposes)

    assert_generic(decide([BEANS, CROISSANTS], cons=record), CROISSANTS)


# --- rules 2 to 4 ------------------------------------------------------------------


def test_no_profile_is_generic() -> None:
    decision = decide_for_kiosk(NOW, SHOPPER, None, consent(), [BEANS, CROISSANTS])

    assert_generic(decision, CROISSANTS)


def test_an_offer_for_other_segments_is_not_shown() -> None:
    assert_generic(decide([TEA, CROISSANTS], prof=profile("coffee")), CROISSANTS)


def test_one_shared_segment_is_enough() -> None:
    offer = OfferRecord(offer_id="o", title="O", segments=["tea", "loyalty-gold"])

    decision = decide([offer], prof=profile("coffee", "loyalty-gold"))

    assert decision.personal is True
    assert decision.offer == offer


def test_an_offer_without_segments_is_for_everyone() -> None:
    decision = decide([FOR_ALL], prof=profile())

    assert decision.personal is True
    assert decision.offer == FOR_ALL


def test_a_shopper_without_segments_gets_no_segmented_offer() -> None:
    assert_generic(decide([BEANS, TEA], prof=profile()), None)


def test_generic_offers_are_never_personal() -> None:
    generic_for_coffee = OfferRecord(
        offer_id="g", title="G", segments=["coffee"], generic=True, priority=99
    )

    decision = decide([generic_for_coffee])

    assert_generic(decision, generic_for_coffee)


def test_no_matching_offer_falls_back_to_generic() -> None:
    assert_generic(decide([TEA, CROISSANTS, BREAD]), BREAD)


def test_every_step_gives_its_own_reason() -> None:
    offers = [BEANS, CROISSANTS]
    reasons = [
        decide(offers, shopper_id=None).reason,
        decide(offers, cons=consent([])).reason,
        decide(offers, cons=consent(no_marketing=True)).reason,
        decide(offers, cons=consent([Purpose.PRESENCE, Purpose.KIOSK_DISPLAY])).reason,
        decide(offers, cons=consent([Purpose.PRESENCE, Purpose.PERSONALIZATION])).reason,
        decide_for_kiosk(NOW, SHOPPER, None, consent(), offers).reason,
        decide([TEA, CROISSANTS]).reason,
        decide(offers).reason,
    ]

    assert all(reasons)
    assert len(set(reasons)) == len(reasons)


# --- validity windows ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("valid_from", "valid_until", "shown"),
    [
        (NOW, NOW + 10, True),  # from is inclusive
        (NOW - 10, NOW, False),  # until is exclusive
        (NOW - 10, NOW + 10, True),
        (NOW + 1, NOW + 10, False),  # not yet
        (NOW - 10, NOW - 1, False),  # over
    ],
)
def test_validity_window(valid_from: float, valid_until: float, shown: bool) -> None:
    personal = OfferRecord(
        offer_id="p", title="P", valid_from=valid_from, valid_until=valid_until, priority=50
    )
    generic = OfferRecord(
        offer_id="g",
        title="G",
        generic=True,
        valid_from=valid_from,
        valid_until=valid_until,
        priority=50,
    )

    assert (decide([personal, BEANS]).offer == personal) is shown
    assert (decide([generic, CROISSANTS], shopper_id=None).offer == generic) is shown


def test_without_any_valid_offer_the_house_welcome_shows() -> None:
    expired_generic = OfferRecord(
        offer_id="g", title="G", generic=True, valid_from=0.0, valid_until=NOW - 1
    )

    assert_generic(decide([expired_generic, TEA]), None)


# --- priority and tie-break ------------------------------------------------------------


def test_highest_priority_wins_in_any_order() -> None:
    low = OfferRecord(offer_id="a-low", title="L", priority=1)
    mid = OfferRecord(offer_id="m-mid", title="M", segments=["coffee"], priority=5)
    high = OfferRecord(offer_id="z-high", title="H", segments=["coffee"], priority=9)

    for order in itertools.permutations([low, mid, high, TEA, CROISSANTS]):
        assert decide(order).offer == high


def test_ties_go_to_the_smallest_offer_id_in_any_order() -> None:
    tied = [OfferRecord(offer_id=i, title=i, priority=3) for i in ("b", "a", "c", "ab")]

    for order in itertools.permutations(tied):
        assert decide(order).offer == tied[1]


def test_generic_ties_go_to_the_smallest_offer_id_in_any_order() -> None:
    tied = [OfferRecord(offer_id=i, title=i, priority=3, generic=True) for i in ("b", "a", "c")]
    lower = OfferRecord(offer_id="0", title="0", priority=2, generic=True)

    for order in itertools.permutations([*tied, lower]):
        assert decide(order, shopper_id=None).offer == tied[1]


def test_negative_priorities_still_compare() -> None:
    worse = OfferRecord(offer_id="a", title="A", priority=-5)
    better = OfferRecord(offer_id="b", title="B", priority=-1)

    assert decide([worse, better]).offer == better


# --- property: nothing personal without consent ----------------------------------------

SEGMENTS = ["coffee", "tea", "gold"]
_times = st.sampled_from([NOW - 50.0, NOW - 1.0, NOW, NOW + 1.0, NOW + 50.0])
_purpose_state = st.builds(
    PurposeState,
    granted=st.booleans(),
    at=st.just(NOW - 100.0),
    expires_at=st.none() | _times,
)
_consents = st.none() | st.builds(
    ConsentRecord,
    shopper_id=st.just(SHOPPER),
    purposes=st.dictionaries(st.sampled_from([p.value for p in Purpose]), _purpose_state),
    no_marketing=st.booleans(),
)
_profiles = st.none() | st.builds(
    ProfileRecord,
    shopper_id=st.just(SHOPPER),
    segments=st.lists(st.sampled_from(SEGMENTS), unique=True),
)
_offers = st.lists(
    st.builds(
        OfferRecord,
        offer_id=st.sampled_from(["a", "b", "c", "d", "e"]),
        title=st.just("T"),
        segments=st.lists(st.sampled_from(SEGMENTS), unique=True, max_size=2),
        priority=st.integers(-2, 2),
        valid_from=st.sampled_from([0.0, NOW - 10.0, NOW, NOW + 10.0]),
        valid_until=st.sampled_from([NOW - 10.0, NOW, NOW + 10.0, float("inf")]),
        generic=st.booleans(),
    ),
    max_size=8,
)


def best(offers: Iterable[OfferRecord]) -> tuple[int, str] | None:
    ranked = sorted((-o.priority, o.offer_id) for o in offers)
    return (-ranked[0][0], ranked[0][1]) if ranked else None


def rank(offer: OfferRecord | None) -> tuple[int, str] | None:
    return None if offer is None else (offer.priority, offer.offer_id)


@PROPERTY
@given(
    shopper_id=st.none() | st.just(SHOPPER),
    prof=_profiles,
    cons=_consents,
    offers=_offers,
)
def test_nothing_personal_without_consent(
    shopper_id: str | None,
    prof: ProfileRecord | None,
    cons: ConsentRecord | None,
    offers: list[OfferRecord],
) -> None:
    decision = decide_for_kiosk(NOW, shopper_id, prof, cons, offers)

    if decision.offer is not None:
        assert decision.offer.valid_at(NOW)
    valid_generic = [o for o in offers if o.generic and o.valid_at(NOW)]

    if decision.personal:
        assert shopper_id is not None
        assert decision.shopper_id == shopper_id
        assert cons is not None
        assert not cons.no_marketing
        for purpose in KIOSK_PURPOSES:
            state = cons.purposes[purpose.value]
            assert state.granted
            assert state.expires_at is None or state.expires_at > NOW
        assert prof is not None
        offer = decision.offer
        assert offer is not None
        assert not offer.generic
        assert not offer.segments or set(offer.segments) & set(prof.segments)
        eligible = [
            o
            for o in offers
            if not o.generic
            and o.valid_at(NOW)
            and (not o.segments or set(o.segments) & set(prof.segments))
        ]
        assert rank(offer) == best(eligible)
    else:
        assert decision.shopper_id is None
        assert decision.offer is None or decision.offer.generic
        objected = cons is not None and cons.no_marketing
        if not objected:
            assert rank(decision.offer) == best(valid_generic)
