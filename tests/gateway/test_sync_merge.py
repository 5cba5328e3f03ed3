"""Ownership and consent merge rules (pure), with hypothesis for the algebra of consents."""

from __future__ import annotations

from functools import reduce

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.store.records import ConsentRecord, ProfileRecord, Purpose, PurposeState, Tombstone
from gateway.sync.merge import (
    HQ_PROFILE_FIELDS,
    TOMBSTONE_RETENTION_S,
    erasure,
    expired_tombstones,
    merge_consent,
    merge_profile,
    merge_purpose,
    merge_tombstone,
)

SHOPPER = "s1"
PURPOSES = [p.value for p in Purpose][:3]

states = st.builds(
    PurposeState,
    granted=st.booleans(),
    at=st.floats(min_value=0, max_value=2e9, allow_nan=False),
    notice_version=st.sampled_from(["", "n1", "n2"]),
    channel=st.sampled_from(["app", "kiosk", "staff"]),
    expires_at=st.none() | st.floats(min_value=0, max_value=2e9, allow_nan=False),
    hlc=st.integers(min_value=0, max_value=6),  # few values: ties happen often
)
consents = st.builds(
    ConsentRecord,
    shopper_id=st.just(SHOPPER),
    purposes=st.dictionaries(st.sampled_from(PURPOSES), states, max_size=3),
    no_marketing=st.booleans(),
)
# Erasures as they might arrive: not always canonical (purposes left in).
erasures = consents.map(
    lambda c: ConsentRecord(shopper_id=c.shopper_id, purposes=c.purposes, erased=True)
)
any_consents = st.one_of(consents, erasures)


def fold(records: list[ConsentRecord]) -> ConsentRecord:
    """What a replica holds after hearing ``records`` in this order (the first one is merged
    with itself, as it is with an empty local state)."""
    first, *rest = records
    return reduce(merge_consent, rest, merge_consent(first, first))


@settings(max_examples=150)
@given(any_consents, any_consents)
def test_consent_merge_is_commutative(a: ConsentRecord, b: ConsentRecord) -> None:
    assert merge_consent(a, b) == merge_consent(b, a)


@settings(max_examples=150)
@given(any_consents, any_consents, any_consents)
def test_consent_merge_is_associative(a: ConsentRecord, b: ConsentRecord, c: ConsentRecord) -> None:
    assert merge_consent(merge_consent(a, b), c) == merge_consent(a, merge_consent(b, c))


@settings(max_examples=150)
@given(any_consents, any_consents)
def test_consent_merge_is_idempotent(a: ConsentRecord, b: ConsentRecord) -> None:
    merged = merge_consent(a, b)
    assert merge_consent(merged, merged) == merged
    assert merge_consent(merged, b) == merged  # hearing b again changes nothing
    if not a.erased:
        assert merge_consent(a, a) == a


@settings(max_examples=100)
@given(
    st.lists(any_consents, min_size=1, max_size=6).flatmap(
        lambda xs: st.tuples(
            st.just(xs), st.permutations(xs), st.lists(st.sampled_from(xs), max_size=4)
        )
    )
)
def test_order_and_repetition_of_arrival_do_not_matter(
    case: tuple[list[ConsentRecord], list[ConsentRecord], list[ConsentRecord]],
) -> None:
    records, shuffled, repeats = case
    assert fold(records) == fold([*shuffled, *repeats])


@settings(max_examples=150)
@given(st.lists(consents, min_size=1, max_size=6))
def test_a_withdrawal_is_undone_only_by_a_causally_later_grant(
    records: list[ConsentRecord],
) -> None:
    merged = fold(records)
    for purpose in PURPOSES:
        seen = [r.purposes[purpose] for r in records if purpose in r.purposes]
        if not seen:
            assert purpose not in merged.purposes
            continue
        withdrawals = [s.hlc for s in seen if not s.granted]
        grants = [s.hlc for s in seen if s.granted]
        result = merged.purposes[purpose]
        if withdrawals:
            # Granted if and only if some grant is strictly after every withdrawal.
            assert result.granted == (bool(grants) and max(grants) > max(withdrawals))
        assert result.hlc == max(s.hlc for s in seen)


@settings(max_examples=100)
@given(st.lists(any_consents, max_size=5), st.lists(any_consents, max_size=5))
def test_erasure_dominates_everything(
    before: list[ConsentRecord], after: list[ConsentRecord]
) -> None:
    merged = fold([*before, erasure(SHOPPER), *after])
    assert merged == erasure(SHOPPER)
    assert merged.purposes == {} and merged.erased


def test_purpose_rules_by_example() -> None:
    withdrawn = PurposeState(granted=False, at=10.0, hlc=100)
    same_time_grant = PurposeState(granted=True, at=11.0, hlc=100)
    earlier_grant = PurposeState(granted=True, at=12.0, hlc=99)
    later_grant = PurposeState(granted=True, at=9.0, hlc=101)
    assert merge_purpose(withdrawn, same_time_grant) is withdrawn
    assert merge_purpose(earlier_grant, withdrawn) is withdrawn
    assert merge_purpose(withdrawn, later_grant) is later_grant
    older = PurposeState(granted=True, at=1.0, notice_version="n1", hlc=1)
    newer = PurposeState(granted=True, at=0.5, notice_version="n2", hlc=2)
    assert merge_purpose(older, newer) is newer  # the clock orders, not the wall time
    assert (
        merge_purpose(
            PurposeState(granted=False, at=1.0, hlc=3), PurposeState(granted=False, at=2.0, hlc=4)
        ).hlc
        == 4
    )


def test_consent_merge_takes_purposes_from_both_sides_and_keeps_an_opt_out() -> None:
    a = ConsentRecord(
        shopper_id=SHOPPER,
        purposes={"presence": PurposeState(granted=True, at=1.0, hlc=5)},
        no_marketing=True,
    )
    b = ConsentRecord(
        shopper_id=SHOPPER,
        purposes={"analytics": PurposeState(granted=True, at=1.0, hlc=6)},
    )
    merged = merge_consent(a, b)
    assert set(merged.purposes) == {"presence", "analytics"}
    assert merged.no_marketing
    with pytest.raises(ValueError, match="consents of"):
        merge_consent(a, ConsentRecord(shopper_id="other"))


def test_hq_owns_every_current_profile_field() -> None:
    fields = set(ProfileRecord.__struct_fields__) - {"v", "shopper_id"}
    assert fields == HQ_PROFILE_FIELDS


def test_profile_merge_replaces_hq_fields_and_keeps_store_fields() -> None:
    local = ProfileRecord(shopper_id=SHOPPER, first_name="Ann", greet_on_kiosk=True)
    incoming = ProfileRecord(shopper_id=SHOPPER, first_name="Anna", segments=["coffee"])
    assert merge_profile(None, incoming) is incoming
    assert merge_profile(local, incoming) == incoming  # every field is HQ's today
    # A field the store observes (here pretending greet_on_kiosk were one) is kept.
    store_owned = HQ_PROFILE_FIELDS - {"greet_on_kiosk"}
    merged = merge_profile(local, incoming, hq_fields=store_owned)
    assert merged.first_name == "Anna" and merged.segments == ["coffee"]
    assert merged.greet_on_kiosk is True
    with pytest.raises(ValueError, match="profiles of"):
        merge_profile(ProfileRecord(shopper_id="other"), incoming)


def test_tombstones_expire_after_the_retention_only() -> None:
    day = 86_400.0
    now = 1_800_000_000.0
    young = Tombstone(id="a", hlc=1, erased_at=now - 29 * day)
    exact = Tombstone(id="b", hlc=1, erased_at=now - TOMBSTONE_RETENTION_S)
    old = Tombstone(id="c", hlc=1, erased_at=now - 31 * day)
    assert expired_tombstones([young, exact, old], now) == [old]
    assert expired_tombstones([young, old], now, retention_s=10 * day) == [young, old]


def test_tombstone_merge_keeps_the_later_clock_and_time() -> None:
    a = Tombstone(id="a", hlc=5, erased_at=100.0)
    b = Tombstone(id="a", hlc=3, erased_at=200.0)
    assert merge_tombstone(a, b) == Tombstone(id="a", hlc=5, erased_at=200.0)
    with pytest.raises(ValueError, match="tombstones of"):
        merge_tombstone(a, Tombstone(id="b", erased_at=1.0))
