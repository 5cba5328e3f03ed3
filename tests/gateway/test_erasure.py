"""A shopper's erasure and export on a real LMDB with the real writer: nothing of the shopper
is left in any database but the tombstone, the erasure event and the token generation."""

from __future__ import annotations

import base64
import hashlib
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.consents import (
    ConsentChange,
    bump_counter_in,
    change_consents_op,
    ledger,
    record_decision_in,
    set_preferences_op,
)
from gateway.erasure import ERASED_TABLES, erase_shopper_op, export
from gateway.errors import StoreError
from gateway.store import (
    DATABASES,
    Database,
    EidKeyRecord,
    IdentityRecord,
    IrkRecord,
    ProfileRecord,
    Writer,
)
from gateway.store.hlc import from_ms
from gateway.store.records import DecisionRecord, PreferencesRecord
from gateway.sync.envelope import decode_event
from gateway.sync.outbox import enqueue_op, outbox_bytes, pending
from tests.support.store import opened, run

STORE = "store-1"
NOW = 1_795_378_600.0
T0 = from_ms(int(NOW * 1000))
ANN = "ann-7f3a"
BOB = "bob-91c2"
EID_KEY = bytes(range(16))
IRK = bytes(range(100, 116))


def uid_key(shopper: str) -> str:
    return f"eddystone_uid:00112233445566778899:{hashlib.sha256(shopper.encode()).hexdigest()[:12]}"


def populate_ops(db: Database, shopper: str, n: int = 3) -> list[Callable[[Any], Any]]:
    """Write operations giving ``shopper`` something in every table that can hold them."""
    ops: list[Callable[[Any], Any]] = [
        db.put_op(
            [
                ProfileRecord(shopper_id=shopper, first_name="Ann", nickname="A", segments=["tea"]),
                IdentityRecord(key=f"ibeacon:{shopper}:1:2", shopper_id=shopper),
                IdentityRecord(key=uid_key(shopper), shopper_id=shopper),
                EidKeyRecord(shopper_id=shopper, identity_key=EID_KEY, exponent=10),
                IrkRecord(shopper_id=shopper, irk=IRK),
            ]
        ),
        set_preferences_op(
            db, PreferencesRecord(shopper_id=shopper, max_per_day=4, quiet_hours=(22, 7))
        ),
    ]
    for i in range(n):
        changes = [
            ConsentChange("presence", True, "n1", "app"),
            ConsentChange("analytics", i % 2 == 0, "n1", "kiosk"),
        ]
        ops.append(
            change_consents_op(db, STORE, shopper, changes, hlc=T0 + 10 * i + 1, now=NOW + i)
        )
        decision = DecisionRecord(
            decision_id=f"{shopper}-d{i}",
            shopper_id=shopper,
            at=NOW + i,
            hlc=T0 + 10 * i + 2,
            channel="phone",
            offer_id=f"o{i}",
            reason="your segment: tea",
            rejected=[("o9", "out_of_stock")],
            inputs={"personal": True},
        )
        ops.append(lambda txn, d=decision: record_decision_in(txn, db, d))
        ops.append(lambda txn, w=f"day:{i}": bump_counter_in(txn, db, shopper, "phone", w))
        ops.append(
            enqueue_op(db, STORE, "visit", {"zone": "z1", "shopper": shopper}, 1, perishable=True)
        )
        ops.append(enqueue_op(db, STORE, "impression", {"kiosk": "k1"}, 1, perishable=True))
    return ops


def occurrences(db: Database, needle: bytes) -> list[tuple[str, bytes, bytes]]:
    """Every row of every named database whose key or value holds ``needle``."""
    found: list[tuple[str, bytes, bytes]] = []
    with db.env.begin(buffers=False) as txn:
        for name in DATABASES:
            for key, value in txn.cursor(db=db.handle(name)):
                if needle in key or needle in value:
                    found.append((name, key, value))
    return found


def real_outbox_bytes(db: Database) -> int:
    with db.env.begin(db=db.handle("outbox")) as txn:
        return sum(len(k) + len(v) for k, v in txn.cursor())


def leftovers(db: Database, shopper: str) -> list[tuple[str, bytes]]:
    """What is left of ``shopper`` beyond the tombstone, the erasure event and the token
    generation."""
    out: list[tuple[str, bytes]] = []
    for name, key, _value in occurrences(db, shopper.encode()):
        if name == "tombstones" and key == f"shopper/{shopper}".encode():
            continue
        if name == "tokens" and key == b"gen:shopper:" + shopper.encode():
            continue
        if name == "outbox":
            [entry] = [e for e in pending(db, 4096) if e.seq == int.from_bytes(key, "big")]
            event = decode_event(entry.payload)
            if event.type == "erasure" and event.body == {"shopper": shopper, "hlc": T0 + 999}:
                continue
        out.append((name, key))
    return out


async def test_the_erasure_cascade_leaves_only_the_tombstone_and_its_event(
    db: Database, writer: Writer
) -> None:
    for shopper in (ANN, BOB):
        for op in populate_ops(db, shopper):
            await writer.write(op)
    assert {name for name, _k, _v in occurrences(db, ANN.encode())} >= {
        "profiles",
        "consents",
        "identities",
        "keys",
        "consent_ledger",
        "preferences",
        "decisions",
        "counters",
        "outbox",
    }
    bob_before = {(n, k, v) for n, k, v in occurrences(db, BOB.encode())}
    generation = db.identity_generation()

    report = await writer.write(erase_shopper_op(db, STORE, ANN, hlc=T0 + 999, now=NOW + 50))

    assert not report.already_erased and report.shopper_id == ANN
    assert dict(report.removed) == {
        "profiles": 1,
        "consents": 1,
        "keys": 2,
        "identities": 2,
        "consent_ledger": 6,
        "preferences": 1,
        "decisions": 3,
        "counters": 3,
        "outbox": 6,  # three consent events and three visits that named her
    }
    assert leftovers(db, ANN) == []
    [tombstone] = db.tombstones()
    assert tombstone.id == ANN and tombstone.hlc == T0 + 999 and tombstone.erased_at == NOW + 50
    # The erasure event is the last in the outbox, never perishable.
    last = pending(db, 4096)[-1]
    assert last.seq == report.event_seq and not last.perishable
    assert last.topic == f"{STORE}/events/erasure"
    assert decode_event(last.payload).body == {"shopper": ANN, "hlc": T0 + 999}
    assert outbox_bytes(db) == real_outbox_bytes(db)
    # Every token issued to her is revoked; recognition tables reload.
    with db.env.begin() as txn:
        raw = txn.get(b"gen:shopper:" + ANN.encode(), db=db.handle("tokens"))
    assert raw == (1).to_bytes(8, "big")
    assert db.identity_generation() > generation
    # Bob is untouched, down to the byte.
    assert {(n, k, v) for n, k, v in occurrences(db, BOB.encode())} == bob_before


async def test_erasing_twice_is_a_no_op_with_a_report(db: Database, writer: Writer) -> None:
    for op in populate_ops(db, ANN, n=1):
        await writer.write(op)
    await writer.write(erase_shopper_op(db, STORE, ANN, hlc=T0 + 999, now=NOW))
    events = [e.seq for e in pending(db, 100)]
    report = await writer.write(erase_shopper_op(db, STORE, ANN, hlc=T0 + 1000, now=NOW + 1))
    assert report.already_erased and report.event_seq is None
    assert dict(report.removed) == dict.fromkeys(ERASED_TABLES, 0)
    assert [e.seq for e in pending(db, 100)] == events
    with db.env.begin() as txn:
        raw = txn.get(b"gen:shopper:" + ANN.encode(), db=db.handle("tokens"))
    assert raw == (1).to_bytes(8, "big")
    # A shopper never seen is erased too: the tombstone blocks a late arrival.
    report = await writer.write(erase_shopper_op(db, STORE, "never-seen", hlc=T0 + 5, now=NOW))
    assert not report.already_erased and sum(report.removed.values()) == 0


async def test_nothing_of_an_erased_shopper_comes_back(db: Database, writer: Writer) -> None:
    await writer.write(erase_shopper_op(db, STORE, ANN, hlc=T0 + 999, now=NOW))
    put, prefs, consent, decide, count, _visit, _impression = populate_ops(db, ANN, n=1)
    assert await writer.write(put) == 0  # profile, identities, keys: skipped
    assert await writer.write(decide) is False
    assert await writer.write(count) == 0
    for refused in (prefs, consent):
        with pytest.raises(StoreError):
            await writer.write(refused)
    assert leftovers(db, ANN) == []


def test_the_erasure_refuses_a_bad_id_or_clock(db: Database) -> None:
    with pytest.raises(ValueError, match="invalid_id"):
        erase_shopper_op(db, STORE, "a\x00b", hlc=T0, now=NOW)
    with pytest.raises(ValueError, match="out of range"):
        erase_shopper_op(db, STORE, ANN, hlc=0, now=NOW)


@settings(max_examples=25, deadline=None)
@given(
    plan=st.lists(
        st.tuples(st.sampled_from([ANN, BOB]), st.integers(0, 6)), min_size=1, max_size=12
    ),
    erase=st.sampled_from([ANN, BOB]),
)
def test_after_an_erasure_nothing_of_the_shopper_is_left(
    plan: list[tuple[str, int]], erase: str
) -> None:
    with tempfile.TemporaryDirectory() as folder, opened(Path(folder)) as db:
        for i, (shopper, which) in enumerate(plan):
            ops = populate_ops(db, shopper, n=1)
            op = ops[which]
            if which == 2:  # a consent change: a fresh clock each time
                changes = [ConsentChange("presence", i % 2 == 0, "n1")]
                op = change_consents_op(db, STORE, shopper, changes, hlc=T0 + i + 1, now=NOW)
            run(db, op)
        other = BOB if erase == ANN else ANN
        other_before = occurrences(db, other.encode())
        run(db, erase_shopper_op(db, STORE, erase, hlc=T0 + 999, now=NOW))
        assert leftovers(db, erase) == []
        assert occurrences(db, other.encode()) == other_before
        assert outbox_bytes(db) == real_outbox_bytes(db)


# ----- export -----


async def test_export_holds_everything_but_key_bytes(db: Database, writer: Writer) -> None:
    for shopper in (ANN, BOB):
        for op in populate_ops(db, shopper, n=2):
            await writer.write(op)
    data = export(db, ANN)
    text = json.dumps(data)  # plain JSON
    for secret in (EID_KEY, IRK):
        assert secret.hex() not in text
        assert base64.b64encode(secret).decode() not in text
        assert str(list(secret)) not in text
    assert BOB not in text
    assert data["shopper_id"] == ANN and data["erased"] is False
    assert data["profile"] == {
        "first_name": "Ann",
        "nickname": "A",
        "segments": ["tea"],
        "locale": "en",
        "greet_on_kiosk": False,
        "origin": "hq",
    }
    purposes = data["consent"]["purposes"]
    assert set(purposes) == {
        "presence",
        "personalization",
        "kiosk_display",
        "phone_messages",
        "staff_assist",
        "analytics",
    }
    assert purposes["personalization"] is None  # never decided: denied
    assert purposes["presence"]["granted"] is True
    assert purposes["analytics"] == {
        "granted": False,
        "at": NOW + 1,
        "notice_version": "n1",
        "channel": "kiosk",
        "expires_at": None,
        "hlc": T0 + 11,
    }
    assert data["consent"]["no_marketing"] is False
    assert [(e["purpose"], e["granted"], e["hlc"]) for e in data["ledger"]] == [
        ("analytics", True, T0 + 1),
        ("presence", True, T0 + 1),
        ("analytics", False, T0 + 11),
        ("presence", True, T0 + 11),
    ]
    assert len(data["ledger"]) == len(ledger(db, ANN))
    assert data["preferences"] == {
        "max_per_visit": None,
        "max_per_day": 4,
        "quiet_hours": [22, 7],
        "locale": "en",
    }
    [newest, oldest] = data["decisions"]
    assert newest["decision_id"] == f"{ANN}-d1" and oldest["decision_id"] == f"{ANN}-d0"
    assert newest["reason"] == "your segment: tea" and newest["offer_id"] == "o1"
    assert newest["rejected"] == [{"offer_id": "o9", "rule": "out_of_stock"}]
    assert data["counters"] == [
        {"name": "phone", "window": "day:0", "count": 1},
        {"name": "phone", "window": "day:1", "count": 1},
    ]
    assert data["identities"] == {
        "beacons": [
            {"kind": "eddystone_uid", "id": uid_key(ANN)},
            {"kind": "ibeacon", "id": f"ibeacon:{ANN}:1:2"},
        ],
        "keys": [
            {"kind": "eddystone_eid", "registered": True, "registered_at": None},
            {"kind": "irk", "registered": True, "registered_at": None},
        ],
    }


async def test_export_of_an_unknown_or_erased_shopper(db: Database, writer: Writer) -> None:
    empty = export(db, "nobody")
    assert empty["profile"] is None and empty["ledger"] == [] and empty["erased"] is False
    assert all(state is None for state in empty["consent"]["purposes"].values())
    for op in populate_ops(db, ANN, n=1):
        await writer.write(op)
    await writer.write(erase_shopper_op(db, STORE, ANN, hlc=T0 + 999, now=NOW))
    data = export(db, ANN)
    assert data["erased"] is True
    assert data == {**empty, "shopper_id": ANN, "erased": True}
