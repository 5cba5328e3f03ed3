"""Redemptions in a real LMDB: the lane codec (every rejection reason, fuzzing), attribution
(treatment, control, unattributed, the window's edges), recording (de-duplication by receipt,
the aggregates, the outbox event with and without ``analytics``)."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.consents import RefusedChange, forget_in, record_decision_in, sweep_counters_op
from gateway.errors import PayloadError
from gateway.redemptions import (
    DEFAULT_WINDOW_S,
    HOLDOUT_RULE,
    Attribution,
    OfferTally,
    Redemption,
    RedemptionError,
    RedemptionLimits,
    attribute,
    bump_exposure_in,
    check_redemption,
    encode_redemption,
    exposures,
    parse_redemption,
    record_redemption_op,
)
from gateway.store import ConsentRecord, Database, PurposeState, Writer
from gateway.store.records import DecisionRecord
from gateway.sync.envelope import decode_event
from gateway.sync.outbox import pending
from tests.support.store import run

FUZZ = settings(database=None, deadline=None, print_blob=True, max_examples=200)

STORE = "store-1"
LANE = "lane-3"
OFFER = "coffee-2for1"
SHOPPER = "app-3f9a1c07b2de4a11"
AT = 1_795_378_600.0
NOW = AT + 30
LIMITS = RedemptionLimits()


def message(**fields: Any) -> dict[str, Any]:
    return {
        "v": 1,
        "lane": LANE,
        "offer_id": OFFER,
        "shopper_id": SHOPPER,
        "at": AT,
        "receipt": "R-20261120-000123",
    } | fields


def wire(obj: object) -> bytes:
    return json.dumps(obj).encode()


def redemption(**fields: Any) -> Redemption:
    return parse_redemption(wire(message(**fields)), LIMITS)


def reason_of(payload: bytes, limits: RedemptionLimits = LIMITS, lane: str | None = LANE) -> str:
    with pytest.raises(RedemptionError) as info:
        parse_redemption(payload, limits, topic_lane=lane)
    assert isinstance(info.value, PayloadError)
    return info.value.reason


# --- the codec --------------------------------------------------------------------


def test_documented_example_parses() -> None:
    parsed = parse_redemption(wire(message()), LIMITS, topic_lane=LANE)

    assert parsed == Redemption(
        v=1,
        lane=LANE,
        offer_id=OFFER,
        shopper_id=SHOPPER,
        at=AT,
        receipt="R-20261120-000123",
    )
    assert parse_redemption(encode_redemption(parsed), LIMITS) == parsed


@pytest.mark.parametrize("absent", [{"shopper_id": None}, {}])
def test_the_shopper_is_optional(absent: dict[str, Any]) -> None:
    payload = message() | absent
    if not absent:
        del payload["shopper_id"]

    assert parse_redemption(wire(payload), LIMITS).shopper_id is None


def test_unknown_fields_are_tolerated_and_the_api_has_no_topic_lane() -> None:
    parsed = parse_redemption(wire(message(lane="lane-9", basket=12.5)), LIMITS)
    assert parsed.lane == "lane-9"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{", "bad_json"),
        (b"\xff", "bad_json"),
        (b"[]", "bad_field"),
        (wire({k: v for k, v in message().items() if k != "receipt"}), "bad_field"),
        (wire({k: v for k, v in message().items() if k != "at"}), "bad_field"),
        (wire(message(receipt="")), "bad_field"),
        (wire(message(receipt="R\x001")), "bad_field"),
        (wire(message(receipt="r" * 129)), "bad_field"),
        (wire(message(receipt="é" * 65)), "bad_field"),  # 65 characters, 130 bytes
        (wire(message(offer_id="")), "bad_field"),
        (wire(message(offer_id="o" * 201)), "bad_field"),
        (wire(message(offer_id="€" * 67)), "bad_field"),  # 67 characters, 201 bytes
        (wire(message(shopper_id="")), "bad_field"),
        (wire(message(shopper_id="s\x00")), "bad_field"),
        (wire(message(shopper_id=42)), "bad_field"),
        (wire(message(at=0)), "bad_field"),  # a till clock never set
        (wire(message(at=5e9)), "bad_field"),
        (wire(message(at="today")), "bad_field"),
        (wire(message(v=2)), "unsupported_version"),
        (wire(message(lane="lane-4")), "lane_mismatch"),
    ],
)
def test_every_rejection_reason(payload: bytes, reason: str) -> None:
    assert reason_of(payload) == reason


def test_a_lane_id_that_is_not_one_topic_level_is_a_bad_field() -> None:
    assert reason_of(wire(message(lane="a/b")), lane=None) == "bad_field"


def test_payload_size_limit_is_exact() -> None:
    payload = wire(message())
    assert parse_redemption(payload, RedemptionLimits(max_payload_bytes=len(payload)))
    limits = RedemptionLimits(max_payload_bytes=len(payload) - 1)
    assert reason_of(payload, limits) == "oversized_payload"


def test_check_redemption_checks_a_body_decoded_elsewhere() -> None:
    body = msgspec.json.decode(wire(message(v=3)), type=Redemption)
    with pytest.raises(RedemptionError, match="unsupported_version"):
        check_redemption(body)


REASONS = {"oversized_payload", "bad_json", "bad_field", "unsupported_version", "lane_mismatch"}


def check_outcome(payload: bytes) -> None:
    """A redemption that fits the store's keys, or a documented reason; nothing else."""
    reason: str | None = None
    try:
        parsed = parse_redemption(payload, LIMITS, topic_lane=LANE)
    except RedemptionError as exc:
        reason = exc.reason
    if reason is not None:
        assert reason in REASONS
        return
    assert parsed.lane == LANE
    assert 0 < len(parsed.offer_id.encode()) <= 200
    assert 0 < len(parsed.receipt.encode()) <= 128
    assert parsed.shopper_id is None or 0 < len(parsed.shopper_id.encode()) <= 200


@FUZZ
@given(st.binary(max_size=2000))
def test_fuzz_bytes(payload: bytes) -> None:
    check_outcome(payload)


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=20,
)
_redemption_ish = st.fixed_dictionaries(
    {},
    optional={
        "v": st.sampled_from([0, 1, 2]) | _json,
        "lane": st.sampled_from([LANE, "lane-4", "", "a/b"]) | _json,
        "offer_id": st.text(max_size=210) | _json,
        "shopper_id": st.none() | st.text(max_size=210) | _json,
        "at": st.floats() | st.sampled_from([AT]) | _json,
        "receipt": st.text(max_size=140) | _json,
    },
)


@FUZZ
@given(_redemption_ish | _json, st.booleans())
def test_fuzz_json_shaped(obj: object, ascii_only: bool) -> None:
    check_outcome(json.dumps(obj, ensure_ascii=ascii_only).encode())


# --- attribution ------------------------------------------------------------------

_hlc = iter(range(1, 1_000_000))


def decide(
    db: Database,
    at: float,
    *,
    offer: str | None = None,
    rejected: list[tuple[str, str]] | None = None,
    shopper: str = SHOPPER,
) -> str:
    """Keep a decision record and return its id."""
    n = next(_hlc)
    record = DecisionRecord(
        decision_id=f"d{n}",
        shopper_id=shopper,
        at=at,
        hlc=n << 16,
        channel="kiosk",
        kiosk_id="kiosk-1",
        offer_id=offer,
        reason="test",
        rejected=rejected or [],
    )
    assert run(db, lambda txn: record_decision_in(txn, db, record))
    return record.decision_id


def test_the_latest_decision_that_showed_the_offer_is_the_treatment(db: Database) -> None:
    decide(db, AT - 3600, offer=OFFER)
    latest = decide(db, AT - 60, offer=OFFER)
    decide(db, AT - 30, offer="tea-5")  # another offer

    assert attribute(db, redemption()) == Attribution("treatment", latest)


def test_a_holdout_decision_is_the_control(db: Database) -> None:
    decide(db, AT - 7200, rejected=[(OFFER, HOLDOUT_RULE)])
    held = decide(db, AT - 600, offer="tea-5", rejected=[(OFFER, HOLDOUT_RULE)])
    decide(db, AT - 60, rejected=[(OFFER, "segment")])  # left out by another rule: no side
    decide(db, AT - 30, rejected=[("tea-5", HOLDOUT_RULE)])  # another offer held out

    assert attribute(db, redemption()) == Attribution("control", held)


def test_a_decision_that_showed_the_offer_wins_over_a_later_holdout(db: Database) -> None:
    shown = decide(db, AT - 3600, offer=OFFER)
    decide(db, AT - 60, rejected=[(OFFER, HOLDOUT_RULE)])

    assert attribute(db, redemption()) == Attribution("treatment", shown)


def test_unattributed_without_a_shopper_or_a_decision(db: Database) -> None:
    decide(db, AT - 60, offer=OFFER, shopper="someone-else")

    assert attribute(db, redemption(shopper_id=None)) == Attribution("unattributed")
    assert attribute(db, redemption()) == Attribution("unattributed")
    assert attribute(db, redemption(offer_id="tea-5")).side == "unattributed"


def test_the_window_includes_both_edges_and_nothing_after_the_sale(db: Database) -> None:
    edge = decide(db, AT - DEFAULT_WINDOW_S, offer=OFFER)
    assert attribute(db, redemption()) == Attribution("treatment", edge)

    at_sale = decide(db, AT, offer=OFFER)
    assert attribute(db, redemption()) == Attribution("treatment", at_sale)

    decide(db, AT + 0.001, offer=OFFER)  # after the sale: it did not cause it
    assert attribute(db, redemption()) == Attribution("treatment", at_sale)


def test_a_decision_just_outside_the_window_does_not_count(db: Database) -> None:
    decide(db, AT - DEFAULT_WINDOW_S - 0.001, offer=OFFER)
    held = decide(db, AT - 601, rejected=[(OFFER, HOLDOUT_RULE)])

    assert attribute(db, redemption()) == Attribution("control", held)
    assert attribute(db, redemption(), window_s=600).side == "unattributed"
    assert attribute(db, redemption(), window_s=601) == Attribution("control", held)


def test_an_erased_shopper_is_unattributed(db: Database) -> None:
    decide(db, AT - 60, offer=OFFER)
    run(db, lambda txn: forget_in(txn, db, SHOPPER))

    assert attribute(db, redemption()).side == "unattributed"


def test_the_window_must_make_sense(db: Database) -> None:
    with pytest.raises(ValueError, match="window_s"):
        attribute(db, redemption(), window_s=-1)


# --- recording and the aggregates -------------------------------------------------


def record(
    db: Database,
    r: Redemption,
    attribution: Attribution,
    *,
    now: float = NOW,
    tell_hq: bool = True,
) -> bool:
    done: bool = run(db, record_redemption_op(db, STORE, r, attribution, now=now, tell_hq=tell_hq))
    return done


def grant_analytics(db: Database, *, expires_at: float | None = None) -> None:
    state = PurposeState(granted=True, at=AT - 86_400, notice_version="n1", expires_at=expires_at)
    consent = ConsentRecord(shopper_id=SHOPPER, purposes={"analytics": state})
    assert run(db, db.put_op([consent])) == 1


def events(db: Database) -> list[dict[str, Any]]:
    out = []
    for entry in pending(db, 100):
        assert not entry.perishable
        assert entry.topic == f"{STORE}/events/redemption"
        event = decode_event(entry.payload)
        assert event.type == "redemption"
        assert event.at == int(NOW * 1000)
        out.append(event.body)
    return out


def test_exposures_and_redemptions_add_up_per_offer_and_side(db: Database) -> None:
    def show(txn: Any) -> list[int]:
        return [
            bump_exposure_in(txn, db, OFFER, "treatment"),
            bump_exposure_in(txn, db, OFFER, "treatment"),
            bump_exposure_in(txn, db, OFFER, "control"),
            bump_exposure_in(txn, db, "tea:5", "treatment"),  # a colon in an offer id is fine
        ]

    assert run(db, show) == [1, 2, 1, 1]
    assert record(db, redemption(receipt="r1"), Attribution("treatment", "d1"))
    assert record(db, redemption(receipt="r2"), Attribution("control", "d2"))
    assert record(db, redemption(receipt="r3"), Attribution("unattributed"))
    assert record(db, redemption(receipt="r4", offer_id="bakery"), Attribution("unattributed"))

    assert exposures(db) == {
        "bakery": OfferTally("bakery", redemptions_unattributed=1),
        OFFER: OfferTally(OFFER, 2, 1, 1, 1, 1),
        "tea:5": OfferTally("tea:5", impressions_treatment=1),
    }


def test_bump_exposure_refuses_a_bad_side_or_offer_id(db: Database) -> None:
    with pytest.raises(ValueError, match="side"):
        run(db, lambda txn: bump_exposure_in(txn, db, OFFER, "holdout"))  # type: ignore[arg-type]
    for bad in ("", "a\x00b", "o" * 257):
        with pytest.raises(RefusedChange, match="invalid_id"):
            run(db, lambda txn, bad=bad: bump_exposure_in(txn, db, bad, "control"))
    assert exposures(db) == {}


def test_a_receipt_is_recorded_once_per_lane(db: Database) -> None:
    first = redemption()
    assert record(db, first, Attribution("treatment", "d1"))
    # The lane sends it again (a lost acknowledgement), even attributed differently now.
    assert not record(db, first, Attribution("control", "d2"))
    assert not record(db, first, Attribution("treatment", "d1"), now=NOW + 1)
    # The same receipt number from another lane is another sale.
    assert record(db, redemption(lane="lane-4"), Attribution("treatment", "d1"))

    assert exposures(db)[OFFER].redemptions_treatment == 2
    assert exposures(db)[OFFER].redemptions_control == 0
    assert len(events(db)) == 2


def test_a_receipt_is_recognised_for_two_days_across_midnight_and_the_sweep(
    db: Database,
) -> None:
    assert record(db, redemption(), Attribution("unattributed"))

    for later in (86_400.0, 2 * 86_400.0):
        run(db, sweep_counters_op(db, NOW + later))
        assert not record(db, redemption(), Attribution("unattributed"), now=NOW + later)

    # The hourly sweep drops the key once its day is two days over; the aggregates stay.
    assert run(db, sweep_counters_op(db, NOW + 4 * 86_400)) == 1
    assert exposures(db)[OFFER].redemptions_unattributed == 1


def test_without_tell_hq_nothing_is_queued(db: Database) -> None:
    assert record(db, redemption(), Attribution("treatment", "d1"), tell_hq=False)
    assert pending(db, 10) == []
    assert exposures(db)[OFFER].redemptions_treatment == 1


def test_the_event_names_no_one_without_analytics(db: Database) -> None:
    assert record(db, redemption(), Attribution("treatment", "d1"))

    assert events(db) == [{"offer": OFFER, "side": "treatment", "redeemed_at": AT}]


def test_the_event_names_the_shopper_and_decision_with_analytics(db: Database) -> None:
    grant_analytics(db)
    assert record(db, redemption(receipt="r1"), Attribution("control", "d7"))
    assert record(db, redemption(receipt="r2"), Attribution("unattributed"))
    assert record(db, redemption(receipt="r3", shopper_id=None), Attribution("unattributed"))

    assert events(db) == [
        {
            "offer": OFFER,
            "side": "control",
            "redeemed_at": AT,
            "shopper": SHOPPER,
            "decision": "d7",
        },
        {"offer": OFFER, "side": "unattributed", "redeemed_at": AT, "shopper": SHOPPER},
        {"offer": OFFER, "side": "unattributed", "redeemed_at": AT},
    ]


def test_analytics_is_read_when_the_event_is_made(db: Database) -> None:
    grant_analytics(db, expires_at=NOW)  # lapsed by the time the redemption is recorded

    assert record(db, redemption(), Attribution("treatment", "d1"))
    assert events(db) == [{"offer": OFFER, "side": "treatment", "redeemed_at": AT}]


def test_the_operation_refuses_bad_arguments_before_the_writer(db: Database) -> None:
    with pytest.raises(ValueError, match="now"):
        record_redemption_op(
            db, STORE, redemption(), Attribution("unattributed"), now=float("nan"), tell_hq=True
        )
    with pytest.raises(RedemptionError, match="unsupported_version"):
        record_redemption_op(
            db,
            STORE,
            msgspec.structs.replace(redemption(), v=2),
            Attribution("unattributed"),
            now=NOW,
            tell_hq=True,
        )


async def test_through_the_writer_in_one_transaction(db: Database, writer: Writer) -> None:
    grant_analytics(db)
    shown = decide(db, AT - 60, offer=OFFER)
    r = redemption()
    attribution = attribute(db, r)

    op = record_redemption_op(db, STORE, r, attribution, now=NOW, tell_hq=True)
    assert await writer.write(op)
    assert not await writer.write(op)

    assert exposures(db)[OFFER] == OfferTally(OFFER, redemptions_treatment=1)
    assert events(db) == [
        {
            "offer": OFFER,
            "side": "treatment",
            "redeemed_at": AT,
            "shopper": SHOPPER,
            "decision": shown,
        }
    ]
