"""The shopper in control, store side, on a real LMDB with the real writer: the consent ledger,
local consent changes, HQ's decisions in the ledger, preferences, decisions and counters."""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.clock import ManualClock
from gateway.consents import (
    MAX_DECISIONS,
    ConsentChange,
    RefusedChange,
    append_ledger_in,
    bump_counter_in,
    change_consents_op,
    counter,
    counters,
    decision,
    decisions,
    in_quiet_hours,
    ledger,
    preferences,
    record_decision_in,
    refusal,
    set_preferences_op,
    sweep_counters_op,
    validate_preferences,
)
from gateway.errors import PayloadError, StoreError
from gateway.store import ConsentRecord, Database, Purpose, PurposeState, Writer
from gateway.store.hlc import from_ms
from gateway.store.records import DecisionRecord, PreferencesRecord
from gateway.sync.apply import StreamApplier, erase_op
from gateway.sync.envelope import Keyring, Message, decode_event, seal
from gateway.sync.merge import merge_purpose
from gateway.sync.outbox import depth, pending
from tests.support.store import opened, run

STORE = "store-1"
NOW = 1_795_378_600.0
T0 = from_ms(int(NOW * 1000))  # the hybrid clock at NOW


def hlc(n: int) -> int:
    return T0 + n


def grant(purpose: str, channel: str = "app", expires_at: float | None = None) -> ConsentChange:
    return ConsentChange(purpose, True, "notice-3", channel, expires_at)


def withdraw(purpose: str, channel: str = "app") -> ConsentChange:
    return ConsentChange(purpose, False, "notice-3", channel)


async def change(
    writer: Writer,
    db: Database,
    shopper: str,
    *changes: ConsentChange,
    at: int,
    no_marketing: bool | None = None,
) -> ConsentRecord:
    op = change_consents_op(
        db, STORE, shopper, changes, hlc=hlc(at), now=NOW + at, no_marketing=no_marketing
    )
    record: ConsentRecord = await writer.write(op)
    return record


# ----- the ledger -----


async def test_the_ledger_is_append_only_and_in_clock_order(db: Database, writer: Writer) -> None:
    await change(writer, db, "s1", grant("analytics"), at=300)
    await change(writer, db, "s1", grant("presence"), withdraw("staff_assist"), at=100)
    await change(writer, db, "s1", withdraw("analytics"), at=200)
    await change(writer, db, "s10", grant("presence"), at=150)  # another shopper, same prefix
    entries = ledger(db, "s1")
    assert [(e.hlc - T0, e.purpose, e.granted) for e in entries] == [
        (100, "presence", True),
        (100, "staff_assist", False),
        (200, "analytics", False),
        (300, "analytics", True),
    ]
    assert all(e.shopper_id == "s1" and e.channel == "app" for e in entries)
    assert entries[0].at == NOW + 100 and entries[0].notice_version == "notice-3"
    assert [e.shopper_id for e in ledger(db, "s10")] == ["s10"]
    # Appending an entry whose key is taken never overwrites it.
    forged = msgspec.structs.replace(entries[0], granted=False, notice_version="forged")
    assert run(db, functools.partial(append_ledger_in, db=db, entry=forged)) is False
    assert run(db, functools.partial(append_ledger_in, db=db, entry=entries[0])) is False
    assert ledger(db, "s1") == entries
    assert ledger(db, "nobody") == []


async def test_a_withdrawal_after_a_grant_wins(db: Database, writer: Writer) -> None:
    granted = await change(writer, db, "s1", grant("presence"), at=10)
    assert granted.allows(Purpose.PRESENCE, NOW + 20)
    withdrawn = await change(writer, db, "s1", withdraw("presence", "kiosk"), at=20)
    assert not withdrawn.allows(Purpose.PRESENCE, NOW + 20)
    assert db.consent("s1") == withdrawn
    assert withdrawn.purposes["presence"].channel == "kiosk"
    assert [(e.granted, e.channel) for e in ledger(db, "s1")] == [(True, "app"), (False, "kiosk")]


async def test_an_older_grant_does_not_win_over_a_later_withdrawal(
    db: Database, writer: Writer
) -> None:
    await change(writer, db, "s1", withdraw("presence"), at=20)
    record = await change(writer, db, "s1", grant("presence"), at=10)  # causally before
    assert not record.allows(Purpose.PRESENCE, NOW + 30)
    assert record.purposes["presence"].hlc == hlc(20)
    # The grant is still proof that it was given: the ledger has both, in clock order.
    assert [(e.hlc - T0, e.granted) for e in ledger(db, "s1")] == [(10, True), (20, False)]
    # A grant causally after the withdrawal does win.
    record = await change(writer, db, "s1", grant("presence"), at=21)
    assert record.allows(Purpose.PRESENCE, NOW + 30)


async def test_deny_by_default(db: Database, writer: Writer) -> None:
    assert db.consent("s1") is None
    record = await change(writer, db, "s1", grant(Purpose.ANALYTICS), at=1)
    assert type(next(iter(record.purposes))) is str
    assert type(ledger(db, "s1")[0].purpose) is str
    assert set(record.purposes) == {"analytics"}
    for purpose in Purpose:
        assert record.allows(purpose, NOW + 1) is (purpose is Purpose.ANALYTICS)


async def test_an_expiring_grant_lapses(db: Database, writer: Writer) -> None:
    record = await change(writer, db, "s1", grant("kiosk_display", expires_at=NOW + 60), at=1)
    assert record.allows(Purpose.KIOSK_DISPLAY, NOW + 59)
    assert not record.allows(Purpose.KIOSK_DISPLAY, NOW + 60)
    assert ledger(db, "s1")[0].expires_at == NOW + 60


async def test_a_change_commits_state_ledger_generation_and_one_consent_event(
    db: Database, writer: Writer
) -> None:
    generation = db.identity_generation()
    await change(writer, db, "s1", grant("presence"), grant("analytics"), at=5)
    assert db.identity_generation() == generation + 1
    record = await change(
        writer,
        db,
        "s1",
        withdraw("analytics", "kiosk"),
        grant("kiosk_display", expires_at=NOW + 3600),
        at=9,
        no_marketing=True,
    )
    assert db.identity_generation() == generation + 2
    assert record.no_marketing
    assert set(record.purposes) == {"analytics", "kiosk_display", "presence"}
    entries = pending(db, 10)
    assert len(entries) == 2 and not any(e.perishable for e in entries)
    assert entries[1].topic == f"{STORE}/events/consent"
    event = decode_event(entries[1].payload)
    assert event.type == "consent" and event.at == int((NOW + 9) * 1000)
    # Only what this change decided, not the whole record.
    assert event.body == {
        "shopper": "s1",
        "purposes": {
            "analytics": {
                "granted": False,
                "hlc": hlc(9),
                "notice_version": "notice-3",
                "channel": "kiosk",
                "expires_at": None,
            },
            "kiosk_display": {
                "granted": True,
                "hlc": hlc(9),
                "notice_version": "notice-3",
                "channel": "app",
                "expires_at": NOW + 3600,
            },
        },
        "no_marketing": True,
    }
    assert decode_event(entries[0].payload).body["no_marketing"] is None  # left alone


async def test_replaying_a_change_is_a_no_op(db: Database, writer: Writer) -> None:
    first = await change(writer, db, "s1", grant("presence"), at=5)
    generation = db.identity_generation()
    again = await change(writer, db, "s1", grant("presence"), at=5)
    assert again == first
    assert depth(db) == 1 and len(ledger(db, "s1")) == 1
    assert db.identity_generation() == generation


async def test_another_decision_at_a_used_timestamp_is_refused(
    db: Database, writer: Writer
) -> None:
    await change(writer, db, "s1", grant("presence"), at=5)
    with pytest.raises(StoreError) as caught:
        await change(writer, db, "s1", withdraw("presence"), at=5)
    refused = refusal(caught.value)
    assert refused is not None and refused.reason == "ledger_conflict"
    assert db.consent("s1").allows(Purpose.PRESENCE, NOW)  # type: ignore[union-attr]
    assert depth(db) == 1 and len(ledger(db, "s1")) == 1


async def test_no_marketing_objection_and_lifting_it(db: Database, writer: Writer) -> None:
    record = await change(writer, db, "s1", grant("personalization"), at=1)
    assert not record.no_marketing
    record = await change(writer, db, "s1", at=2, no_marketing=True)  # objection only
    assert record.no_marketing and record.purposes["personalization"].granted
    assert ledger(db, "s1")[-1].hlc == hlc(1)  # the objection is not a purpose decision
    record = await change(writer, db, "s1", grant("presence"), at=3)  # None: left alone
    assert record.no_marketing
    record = await change(writer, db, "s1", at=4, no_marketing=False)  # lifted by the shopper
    assert not record.no_marketing
    assert [decode_event(e.payload).body["no_marketing"] for e in pending(db, 10)] == [
        None,
        True,
        None,
        False,
    ]


async def test_an_erased_shopper_is_refused(db: Database, writer: Writer) -> None:
    await change(writer, db, "s1", grant("presence"), at=1)
    await writer.write(erase_op(db, "s1", hlc=hlc(2), now=NOW + 2))
    events = depth(db)
    with pytest.raises(StoreError) as caught:
        await change(writer, db, "s1", grant("presence"), at=3)
    refused = refusal(caught.value)
    assert refused is not None and refused.reason == "shopper_erased"
    assert isinstance(refused, PayloadError) and isinstance(refused, ValueError)
    assert db.consent("s1") is None and depth(db) == events
    assert [e.hlc for e in ledger(db, "s1")] == [hlc(1)]  # erase_op alone leaves the ledger
    with pytest.raises(StoreError) as caught:
        await writer.write(set_preferences_op(db, PreferencesRecord(shopper_id="s1")))
    assert refusal(caught.value).reason == "shopper_erased"  # type: ignore[union-attr]
    assert preferences(db, "s1") is None


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ([ConsentChange("location", True, "n1")], "unknown_purpose"),
        ([ConsentChange("Presence", True, "n1")], "unknown_purpose"),
        ([grant("presence"), withdraw("presence")], "invalid_change"),
        ([ConsentChange("presence", True, "")], "invalid_change"),  # a grant names its notice
        ([ConsentChange("presence", True, "n1", "hq")], "invalid_change"),  # HQ's own channel
        ([ConsentChange("presence", True, "n1", "app", NOW - 1)], "invalid_change"),
        ([ConsentChange("presence", False, "n1", "app", NOW + 60)], "invalid_change"),
        ([ConsentChange("presence", True, "n1", "app", float("inf"))], "invalid_change"),
        ([], "invalid_change"),  # nothing to change
    ],
)
def test_invalid_changes_are_refused_before_the_writer(
    db: Database, changes: list[ConsentChange], reason: str
) -> None:
    with pytest.raises(RefusedChange) as caught:
        change_consents_op(db, STORE, "s1", changes, hlc=hlc(1), now=NOW)
    assert caught.value.reason == reason
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize("shopper", ["", "a\x00b", "x" * 201])
def test_invalid_shopper_ids_are_refused(db: Database, shopper: str) -> None:
    with pytest.raises(RefusedChange, match="invalid_id"):
        change_consents_op(db, STORE, shopper, [grant("presence")], hlc=hlc(1), now=NOW)


def test_a_withdrawal_needs_no_notice_version(db: Database) -> None:
    record = run(
        db,
        change_consents_op(
            db, STORE, "s1", [ConsentChange("presence", False)], hlc=hlc(1), now=NOW
        ),
    )
    assert not record.purposes["presence"].granted


# ----- the fold: the state is the merge of the ledger -----

_changes = st.lists(
    st.tuples(
        st.lists(
            st.tuples(st.sampled_from([p.value for p in Purpose]), st.booleans()),
            min_size=1,
            max_size=3,
            unique_by=lambda c: c[0],
        ),
        st.sampled_from(["app", "kiosk", "staff"]),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=60, deadline=None)
@given(batches=_changes, stamps=st.lists(st.integers(1, 10_000), min_size=12, unique=True))
def test_the_state_is_the_merge_of_the_ledger(
    batches: list[tuple[list[tuple[str, bool]], str]], stamps: list[int]
) -> None:
    with tempfile.TemporaryDirectory() as folder, opened(Path(folder)) as db:
        for (decided, channel), stamp in zip(batches, stamps, strict=False):
            changes = [ConsentChange(p, g, "n1", channel) for p, g in decided]
            run(db, change_consents_op(db, STORE, "s1", changes, hlc=hlc(stamp), now=NOW))
        record = db.consent("s1")
        entries = ledger(db, "s1")
        assert record is not None
        assert len(entries) == sum(len(d) for d, _c in batches)
        assert [e.hlc for e in entries] == sorted(e.hlc for e in entries)
        folded: dict[str, PurposeState] = {}
        for entry in entries:
            before = folded.get(entry.purpose)
            state = entry.state()
            folded[entry.purpose] = state if before is None else merge_purpose(before, state)
        assert record.purposes == folded
        # The latest decision per purpose stands, a withdrawal winning a tie.
        for purpose, state in record.purposes.items():
            latest = max(e.hlc for e in entries if e.purpose == purpose)
            assert state.hlc == latest
        assert depth(db) == len(batches)  # one event a change


# ----- HQ's decisions join the ledger -----


class Hq:
    """HQ's side of the consents stream: signed, sequenced deltas."""

    def __init__(self) -> None:
        self.key = Ed25519PrivateKey.generate()
        self.seq = 0

    def keyring(self) -> Keyring:
        public = self.key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return Keyring([("hq-a", public)])

    def consents(self, *records: ConsentRecord) -> bytes:
        self.seq += 1
        body = {"op": "put", "records": [msgspec.to_builtins(r) for r in records]}
        message = Message(
            store=STORE,
            stream="consents",
            seq=self.seq,
            kind="delta",
            issued_at=int(NOW * 1000),
            body=body,
        )
        return seal(message, "hq-a", self.key)


def hq_consent(shopper: str, **purposes: tuple[bool, int]) -> ConsentRecord:
    return ConsentRecord(
        shopper_id=shopper,
        purposes={
            p: PurposeState(granted=g, at=NOW + h, hlc=hlc(h), notice_version="hq-n", channel="app")
            for p, (g, h) in purposes.items()
        },
    )


async def deliver(writer: Writer, applier: StreamApplier, wire: bytes) -> str:
    outcome = applier.plan(wire)
    assert outcome.op is not None, outcome.reason
    result: str = await writer.write(outcome.op)
    applier.committed(outcome, result)  # type: ignore[arg-type]
    return result


async def test_hq_decisions_that_change_the_state_land_in_the_ledger(
    db: Database, writer: Writer
) -> None:
    hq = Hq()
    applier = StreamApplier(db, STORE, hq.keyring(), clock=ManualClock(wall=NOW))
    await change(writer, db, "s1", withdraw("presence"), at=10)
    # HQ's stale grant of presence loses; its analytics grant is new to the store.
    stale = hq_consent("s1", presence=(True, 5), analytics=(True, 7))
    assert await deliver(writer, applier, hq.consents(stale)) == "applied"
    entries = ledger(db, "s1")
    assert [(e.purpose, e.hlc - T0, e.channel) for e in entries] == [
        ("analytics", 7, "hq"),
        ("presence", 10, "app"),
    ]
    assert entries[0].granted and entries[0].notice_version == "hq-n"
    assert entries[0].at == NOW + 7
    # The same record again (a later message): the state does not change, no entry.
    assert await deliver(writer, applier, hq.consents(stale)) == "applied"
    assert ledger(db, "s1") == entries
    # A later grant from HQ wins and is recorded.
    assert await deliver(writer, applier, hq.consents(hq_consent("s1", presence=(True, 11))))
    assert [(e.purpose, e.hlc - T0, e.channel) for e in ledger(db, "s1")][-1] == (
        "presence",
        11,
        "hq",
    )
    assert db.consent("s1").allows(Purpose.PRESENCE, NOW + 20)  # type: ignore[union-attr]
    # A shopper new to the store: every purpose HQ sends is an entry.
    await deliver(writer, applier, hq.consents(hq_consent("s2", staff_assist=(False, 3))))
    assert [(e.purpose, e.granted, e.channel) for e in ledger(db, "s2")] == [
        ("staff_assist", False, "hq")
    ]


async def test_an_hq_erasure_forgets_what_the_ledger_and_the_rest_hold(
    db: Database, writer: Writer
) -> None:
    hq = Hq()
    applier = StreamApplier(db, STORE, hq.keyring(), clock=ManualClock(wall=NOW))
    await change(writer, db, "s1", grant("presence"), at=1)
    await writer.write(set_preferences_op(db, PreferencesRecord(shopper_id="s1", max_per_day=3)))
    await writer.write(lambda txn: record_decision_in(txn, db, _decision("s1", 1)))
    await writer.write(lambda txn: bump_counter_in(txn, db, "s1", "phone", "day:2026-11-20"))
    await change(writer, db, "s2", grant("presence"), at=2)
    erased = ConsentRecord(shopper_id="s1", erased=True)
    assert await deliver(writer, applier, hq.consents(erased)) == "applied"
    assert ledger(db, "s1") == [] and preferences(db, "s1") is None
    assert decisions(db, "s1") == [] and counters(db, "s1") == {}
    assert [decode_event(e.payload).body["shopper"] for e in pending(db, 10)] == ["s2"]
    assert len(ledger(db, "s2")) == 1


# ----- preferences -----


async def test_preferences_round_trip(db: Database, writer: Writer) -> None:
    assert preferences(db, "s1") is None
    record = PreferencesRecord(
        shopper_id="s1", max_per_visit=2, max_per_day=5, quiet_hours=(22, 7), locale="fr-BE"
    )
    assert await writer.write(set_preferences_op(db, record)) == record
    assert preferences(db, "s1") == record
    lifted = PreferencesRecord(shopper_id="s1", max_per_visit=0)
    await writer.write(set_preferences_op(db, lifted))
    assert preferences(db, "s1") == lifted


@pytest.mark.parametrize(
    "fields",
    [
        {"max_per_visit": -1},
        {"max_per_visit": 51},
        {"max_per_day": 201},
        {"max_per_day": True},
        {"max_per_day": 2.0},
        {"quiet_hours": (22, 24)},
        {"quiet_hours": (-1, 6)},
        {"quiet_hours": (8, 8)},
        {"quiet_hours": (8,)},
        {"locale": ""},
        {"locale": "english please"},
        {"shopper_id": ""},
    ],
)
def test_invalid_preferences_are_refused(fields: dict[str, Any]) -> None:
    record = PreferencesRecord(**{"shopper_id": "s1", **fields})
    with pytest.raises(RefusedChange):
        validate_preferences(record)


def test_preference_limits_are_inclusive() -> None:
    validate_preferences(
        PreferencesRecord(shopper_id="s1", max_per_visit=50, max_per_day=200, quiet_hours=(0, 23))
    )
    validate_preferences(PreferencesRecord(shopper_id="s1", max_per_visit=0, max_per_day=0))


def test_quiet_hours_wrap_midnight() -> None:
    night = PreferencesRecord(shopper_id="s1", quiet_hours=(22, 7))
    assert [h for h in range(24) if in_quiet_hours(night, h)] == [0, 1, 2, 3, 4, 5, 6, 22, 23]
    lunch = PreferencesRecord(shopper_id="s1", quiet_hours=(12, 14))
    assert [h for h in range(24) if in_quiet_hours(lunch, h)] == [12, 13]
    assert not any(in_quiet_hours(PreferencesRecord(shopper_id="s1"), h) for h in range(24))
    assert not in_quiet_hours(None, 3)
    with pytest.raises(ValueError, match="hour"):
        in_quiet_hours(night, 24)


@given(start=st.integers(0, 23), end=st.integers(0, 23), hour=st.integers(0, 23))
def test_quiet_hours_cover_start_to_end(start: int, end: int, hour: int) -> None:
    if start == end:
        return
    prefs = PreferencesRecord(shopper_id="s1", quiet_hours=(start, end))
    quiet_span = (end - start) % 24
    assert in_quiet_hours(prefs, hour) == ((hour - start) % 24 < quiet_span)


# ----- decisions -----


def _decision(shopper: str, n: int, **fields: Any) -> DecisionRecord:
    return DecisionRecord(
        decision_id=f"d-{shopper}-{n}",
        shopper_id=shopper,
        at=NOW + n,
        hlc=hlc(n),
        channel="kiosk",
        kiosk_id="k1",
        offer_id=f"o{n}",
        reason="best match for your segments",
        rejected=[("o-x", "out_of_stock"), ("o-y", "daily_cap")],
        inputs={"segments": ["coffee"], "zone": "z1"},
        **fields,
    )


async def test_decisions_are_kept_newest_first_and_capped(db: Database, writer: Writer) -> None:
    def write_many(txn: Any) -> int:
        written = 0
        for n in range(1, MAX_DECISIONS + 6):
            written += record_decision_in(txn, db, _decision("s1", n))
            written += record_decision_in(txn, db, _decision("s10", n))  # same prefix
        return written

    assert await writer.write(write_many) == 2 * (MAX_DECISIONS + 5)
    kept = decisions(db, "s1", limit=1000)
    assert len(kept) == MAX_DECISIONS
    assert [d.hlc - T0 for d in kept] == list(range(MAX_DECISIONS + 5, 5, -1))
    assert [d.decision_id for d in decisions(db, "s1", limit=2)] == ["d-s1-205", "d-s1-204"]
    assert len(decisions(db, "s10", limit=1000)) == MAX_DECISIONS
    assert decisions(db, "s1", limit=0) == [] and decisions(db, "s2") == []
    assert len(decisions(db, "s1")) == 50
    # The oldest went, with their index entries.
    assert decision(db, "d-s1-5") is None
    found = decision(db, "d-s1-6")
    assert found is not None and found.rejected == [("o-x", "out_of_stock"), ("o-y", "daily_cap")]
    assert found.inputs == {"segments": ["coffee"], "zone": "z1"}
    with db.env.begin() as txn:
        assert txn.stat(db.handle("decisions"))["entries"] == 4 * MAX_DECISIONS


async def test_a_decision_is_kept_once(db: Database, writer: Writer) -> None:
    record = _decision("s1", 1)
    assert await writer.write(lambda txn: record_decision_in(txn, db, record)) is True
    assert await writer.write(lambda txn: record_decision_in(txn, db, record)) is False
    assert decisions(db, "s1") == [record] and decision(db, record.decision_id) == record
    bad = msgspec.structs.replace(record, decision_id="d2", channel="fax")
    with pytest.raises(RefusedChange, match="invalid_decision"):
        run(db, lambda txn: record_decision_in(txn, db, bad))


async def test_decisions_and_counters_of_an_erased_shopper_are_not_written(
    db: Database, writer: Writer
) -> None:
    await writer.write(erase_op(db, "s1", hlc=hlc(1), now=NOW))
    assert await writer.write(lambda txn: record_decision_in(txn, db, _decision("s1", 2))) is False
    assert await writer.write(lambda txn: bump_counter_in(txn, db, "s1", "phone", "w")) == 0
    assert decisions(db, "s1") == [] and counter(db, "s1", "phone", "w") == 0


# ----- counters -----


async def test_counters_count_per_shopper_name_and_window(db: Database, writer: Writer) -> None:
    def bump(shopper: str, name: str, window: str) -> Callable[[Any], int]:
        return lambda txn: bump_counter_in(txn, db, shopper, name, window)

    assert [await writer.write(bump("s1", "phone", "day:2026-11-20")) for _ in range(3)] == [
        1,
        2,
        3,
    ]
    assert await writer.write(bump("s1", "phone", "visit:1795378600")) == 1
    assert await writer.write(bump("s1", "kiosk", "day:2026-11-20")) == 1
    assert await writer.write(bump("s10", "phone", "day:2026-11-20")) == 1
    assert counter(db, "s1", "phone", "day:2026-11-20") == 3
    assert counter(db, "s1", "phone", "day:2026-11-21") == 0
    assert counters(db, "s1") == {
        ("kiosk", "day:2026-11-20"): 1,
        ("phone", "day:2026-11-20"): 3,
        ("phone", "visit:1795378600"): 1,
    }
    with db.env.begin() as txn:
        raw = txn.get(b"s1\x00phone\x00day:2026-11-20", db=db.handle("counters"))
    assert raw == (3).to_bytes(8, "big")
    with pytest.raises(RefusedChange):
        counter(db, "s1", "ph\x00one", "w")


def test_sweep_drops_only_counters_of_windows_long_over(db: Database) -> None:
    now = NOW  # 2026-11-22, 20:16 UTC
    windows = ["day:2026-11-10", "day:2026-11-21", f"visit:{int(now - 5 * 86_400)}"]
    windows += [f"visit:{int(now - 3600)}", "campaign:x"]
    for window in windows:
        run(db, lambda txn, w=window: bump_counter_in(txn, db, "s1", "phone", w))
    assert run(db, sweep_counters_op(db, now)) == 2
    assert set(counters(db, "s1")) == {
        ("phone", "day:2026-11-21"),
        ("phone", f"visit:{int(now - 3600)}"),
        ("phone", "campaign:x"),
    }
