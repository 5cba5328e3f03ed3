"""The store side of HQ → store sync on a real LMDB, with real Ed25519 keys and sealed messages."""

from __future__ import annotations

import asyncio
import base64
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.clock import ManualClock
from gateway.store import (
    ConsentRecord,
    Database,
    EidKeyRecord,
    IdentityRecord,
    IrkRecord,
    OfferRecord,
    ProfileRecord,
    PurposeState,
    Writer,
)
from gateway.store.records import TemplateRecord
from gateway.sync.apply import (
    Outcome,
    StreamApplier,
    erase_op,
    restore_keyring,
    sweep_tombstones_op,
)
from gateway.sync.envelope import Keyring, Message, ResyncRequest, decode_event, seal
from gateway.sync.outbox import pending

STORE = "store-1"
DAY = 86_400.0


def public_bytes(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def offer(offer_id: str, title: str = "T") -> OfferRecord:
    return OfferRecord(offer_id=offer_id, title=title)  # no end: valid_until is None


def wire(record: Any) -> Any:
    return msgspec.to_builtins(record)


@dataclass
class Hq:
    """HQ's side, as the reference HQ would sign and sequence messages."""

    keys: dict[str, Ed25519PrivateKey] = field(
        default_factory=lambda: {"hq-a": Ed25519PrivateKey.generate()}
    )
    seqs: dict[str, int] = field(default_factory=dict)
    issued_at: int = 1_795_378_600_123

    def keyring(self) -> Keyring:
        return Keyring([(k, public_bytes(v)) for k, v in self.keys.items()])

    def send(
        self,
        stream: str,
        body: dict[str, Any],
        *,
        kind: str = "delta",
        seq: int | None = None,
        key_id: str = "hq-a",
        store: str = STORE,
        signer: Ed25519PrivateKey | None = None,
    ) -> bytes:
        if seq is None:
            seq = self.seqs.get(stream, 0) + 1
            self.seqs[stream] = seq
        message = Message(
            store=store,
            stream=stream,  # type: ignore[arg-type]
            seq=seq,
            kind=kind,  # type: ignore[arg-type]
            issued_at=self.issued_at,
            body=body,
        )
        return seal(message, key_id, signer or self.keys[key_id])

    def put(self, stream: str, *records: Any, **kw: Any) -> bytes:
        return self.send(stream, {"op": "put", "records": [wire(r) for r in records]}, **kw)

    def delete(self, stream: str, *ids: str, **kw: Any) -> bytes:
        return self.send(stream, {"op": "delete", "records": [{"id": i} for i in ids]}, **kw)

    def snapshot(
        self, stream: str, snapshot: str, items: list[list[Any]], watermark: int, start: int = 1
    ) -> list[bytes]:
        count = sum(len(chunk) for chunk in items)
        out = [
            self.send(
                stream,
                {"snapshot": snapshot, "count": count},
                kind="snapshot_begin",
                seq=start,
            )
        ]
        for i, chunk in enumerate(items, start=1):
            out.append(
                self.send(
                    stream,
                    {"snapshot": snapshot, "records": [wire(r) for r in chunk]},
                    kind="snapshot_item",
                    seq=start + i,
                )
            )
        out.append(
            self.send(
                stream,
                {"snapshot": snapshot, "watermark": watermark},
                kind="snapshot_end",
                seq=start + len(items) + 1,
            )
        )
        return out


@dataclass
class Store:
    db: Database
    writer: Writer
    applier: StreamApplier
    keyring: Keyring
    clock: ManualClock
    requests: list[ResyncRequest] = field(default_factory=list)

    async def deliver(self, message: bytes) -> str:
        """Plan, write and commit one message; the result, or ``rejected:<reason>``."""
        outcome: Outcome = self.applier.plan(message)
        if outcome.op is None:
            return f"rejected:{outcome.reason}"
        result = await self.writer.write(outcome.op)
        request = self.applier.committed(outcome, result)
        if request is not None:
            self.requests.append(request)
        return result

    def offers(self) -> dict[str, str]:
        return {o.offer_id: o.title for o in self.db.offers()}


@pytest.fixture
def hq() -> Hq:
    return Hq()


@pytest.fixture
async def store(tmp_path: Path, hq: Hq) -> AsyncIterator[Store]:
    db = Database(tmp_path / "store", map_size=1 << 20)
    db.open()
    writer = Writer(db)
    writer.start()
    keyring = hq.keyring()
    clock = ManualClock(wall=1_795_378_600.0)
    yield Store(db, writer, StreamApplier(db, STORE, keyring, clock=clock), keyring, clock)
    await writer.aclose()
    db.close()


# ----- deltas -----


async def test_deltas_apply_in_order(store: Store, hq: Hq) -> None:
    assert await store.deliver(hq.put("offers", offer("o1"), offer("o2"))) == "applied"
    assert await store.deliver(hq.put("offers", offer("o1", "New"))) == "applied"
    assert await store.deliver(hq.delete("offers", "o2")) == "applied"
    assert store.offers() == {"o1": "New"}
    state = store.db.sync_state("offers")
    assert state.last == 3 and not state.stopped
    assert store.db.sync_state("templates").last == 0  # streams are independent
    template = TemplateRecord(template_id="offer", source="<p>{{ title }}</p>", version=2)
    assert await store.deliver(hq.put("templates", template)) == "applied"
    assert store.db.template("offer") == template
    assert store.applier.counts().messages == {
        ("offers", "applied"): 3,
        ("templates", "applied"): 1,
    }


async def test_a_duplicate_is_a_counted_no_op(store: Store, hq: Hq) -> None:
    first = hq.put("offers", offer("o1"))
    assert await store.deliver(first) == "applied"
    assert await store.deliver(hq.put("offers", offer("o1", "Two"))) == "applied"
    assert await store.deliver(first) == "duplicate"  # QoS 1 redelivery of seq 1
    assert store.offers() == {"o1": "Two"}
    assert store.db.sync_state("offers").last == 2
    assert store.applier.counts().messages[("offers", "duplicate")] == 1


async def test_a_gap_stops_the_stream_until_the_resync_fills_it(store: Store, hq: Hq) -> None:
    assert await store.deliver(hq.put("offers", offer("o1"))) == "applied"
    lost = hq.put("offers", offer("o2"))  # seq 2 never arrives
    assert await store.deliver(hq.put("offers", offer("o3"))) == "gap"
    assert store.requests == [ResyncRequest(store=STORE, stream="offers", since=1)]
    assert await store.deliver(hq.put("offers", offer("o4"))) == "stopped"  # already asked
    assert len(store.requests) == 1
    assert store.offers() == {"o1": "T"}  # nothing after the gap was applied
    state = store.db.sync_state("offers")
    assert state.stopped and state.last == 1 and state.seen == 4
    assert store.applier.resync_request("offers").since == 1
    # HQ answers the resync with everything after 1.
    assert await store.deliver(lost) == "applied"
    assert store.db.sync_state("offers").stopped
    assert await store.deliver(hq.put("offers", offer("o3"), seq=3)) == "applied"
    assert await store.deliver(hq.put("offers", offer("o4"), seq=4)) == "applied"
    state = store.db.sync_state("offers")
    assert not state.stopped and state.last == 4
    assert set(store.offers()) == {"o1", "o2", "o3", "o4"}
    counts = store.applier.counts().messages
    assert counts[("offers", "gap")] == 1 and counts[("offers", "stopped")] == 1


# ----- rejections -----


def _forged(hq: Hq) -> bytes:
    return hq.put("offers", offer("x"), signer=Ed25519PrivateKey.generate())


def _unknown_key(hq: Hq) -> bytes:
    return hq.put("offers", offer("x"), key_id="hq-z", signer=Ed25519PrivateKey.generate())


def _other_store(hq: Hq) -> bytes:
    return hq.put("offers", offer("x"), store="store-2")


def _malformed(hq: Hq) -> bytes:
    return b'{"key_id": "hq-a", "payload": '


def _unsigned_garbage(hq: Hq) -> bytes:
    payload = b"not json at all"
    sig = hq.keys["hq-a"].sign(payload)
    return msgspec.json.encode(
        {
            "key_id": "hq-a",
            "payload": base64.b64encode(payload).decode(),
            "sig": base64.b64encode(sig).decode(),
        }
    )


def _wrong_record_type(hq: Hq) -> bytes:
    return hq.put("offers", ProfileRecord(shopper_id="s1"))


def _bad_key_record(hq: Hq) -> bytes:
    return hq.send("keys", {"op": "put", "records": [{"key_id": "k", "public_key": "00"}]})


def _bad_snapshot_body(hq: Hq) -> bytes:
    return hq.send("offers", {"snapshot": "a/b", "count": 1}, kind="snapshot_begin")


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (_forged, "bad_signature"),
        (_unknown_key, "unknown_key"),
        (_other_store, "wrong_store"),
        (_malformed, "malformed"),
        (_unsigned_garbage, "malformed"),
        (_wrong_record_type, "bad_body"),
        (_bad_key_record, "bad_body"),
        (_bad_snapshot_body, "bad_body"),
    ],
)
async def test_rejected_messages_apply_nothing(
    store: Store, hq: Hq, make: Any, reason: str
) -> None:
    assert await store.deliver(hq.put("offers", offer("o1"))) == "applied"
    before = store.db.sync_state("offers")
    assert await store.deliver(make(hq)) == f"rejected:{reason}"
    assert store.offers() == {"o1": "T"}
    assert store.db.sync_state("offers") == before
    assert store.db.sync_state("keys").last == 0
    rejected = store.applier.counts().rejected
    assert sum(rejected.values()) == 1
    assert next(iter(rejected))[1] == reason


async def test_a_revoked_key_is_rejected(store: Store, hq: Hq) -> None:
    store.keyring.revoke("hq-a")
    assert await store.deliver(hq.put("offers", offer("o1"))) == "rejected:revoked_key"
    assert store.offers() == {}
    assert store.db.sync_state("offers").last == 0


async def test_keys_rotate_through_the_keys_stream(store: Store, hq: Hq) -> None:
    new = Ed25519PrivateKey.generate()
    hq.keys["hq-b"] = new
    # Before it is announced, the new key is unknown.
    early = hq.put("offers", offer("early"), key_id="hq-b", seq=1)
    assert await store.deliver(early) == "rejected:unknown_key"
    add_b = {"key_id": "hq-b", "public_key": public_bytes(new).hex(), "status": "active"}
    assert await store.deliver(hq.send("keys", {"op": "put", "records": [add_b]})) == "applied"
    assert store.keyring.status("hq-b") == "active"
    assert await store.deliver(hq.put("offers", offer("o1"), key_id="hq-b")) == "applied"
    # The new key revokes the old one.
    revoke_a = {
        "key_id": "hq-a",
        "public_key": public_bytes(hq.keys["hq-a"]).hex(),
        "status": "revoked",
    }
    revoke = hq.send("keys", {"op": "put", "records": [revoke_a]}, key_id="hq-b")
    assert await store.deliver(revoke) == "applied"
    assert store.keyring.status("hq-a") == "revoked"
    assert await store.deliver(hq.put("offers", offer("o2"))) == "rejected:revoked_key"
    assert await store.deliver(hq.put("offers", offer("o2"), seq=2, key_id="hq-b")) == "applied"
    assert set(store.offers()) == {"o1", "o2"}
    # The revocation is durable and holds over the configured bootstrap key after a restart.
    records = store.db.keyring_records()
    assert {(r.key_id, r.status) for r in records} == {("hq-a", "revoked"), ("hq-b", "active")}
    del hq.keys["hq-b"]
    restarted = hq.keyring()  # only hq-a is configured
    restore_keyring(restarted, records)
    assert restarted.status("hq-a") == "revoked" and restarted.status("hq-b") == "active"
    # A revoked key offered again stays revoked.
    again = {**revoke_a, "status": "active"}
    msg = hq.send("keys", {"op": "put", "records": [again]}, key_id="hq-b", signer=new)
    assert await store.deliver(msg) == "applied"
    assert store.keyring.status("hq-a") == "revoked"
    assert store.applier.counts().skipped == {("keys", "revoked_key"): 1}


async def test_a_keys_delete_revokes(store: Store, hq: Hq) -> None:
    assert await store.deliver(hq.delete("keys", "hq-a")) == "applied"
    assert store.keyring.status("hq-a") == "revoked"
    assert await store.deliver(hq.put("offers", offer("o1"))) == "rejected:revoked_key"


# ----- snapshots -----


async def test_a_snapshot_swaps_the_stream_atomically(store: Store, hq: Hq) -> None:
    assert await store.deliver(hq.put("offers", offer("o1"), offer("o2"))) == "applied"
    assert await store.deliver(hq.put("offers", offer("o9"), seq=5)) == "gap"
    # HQ numbers a snapshot after everything it issued (6 and 7 were lost with the gap).
    snapshot = hq.snapshot(
        "offers", "snap-1", [[offer("n1"), offer("n2")], [offer("n3")]], 9, start=6
    )
    for message in snapshot[:-1]:
        assert await store.deliver(message) == "staged"
        # A reader between the items sees the old stream whole.
        assert store.offers() == {"o1": "T", "o2": "T"}
    with store.db.env.begin(db=store.db.handle("offers"), buffers=False) as before:
        assert await store.deliver(snapshot[-1]) == "snapshot_applied"
        # A reader opened before the end still sees the old stream, whole.
        assert sorted(bytes(k) for k, _ in before.cursor()) == [b"o1", b"o2"]
    assert store.offers() == {"n1": "T", "n2": "T", "n3": "T"}
    state = store.db.sync_state("offers")
    assert state.last == 9 and not state.stopped and not state.snapshot
    with store.db.env.begin(db=store.db.handle("staging")) as txn:
        assert list(txn.cursor()) == []  # staging cleared
    # The stream continues after the watermark; the snapshot's own messages are duplicates.
    assert await store.deliver(hq.put("offers", offer("n4"), seq=10)) == "applied"
    for message in snapshot:
        assert await store.deliver(message) == "duplicate"
    assert len(store.offers()) == 4


async def test_a_snapshot_behind_what_was_seen_asks_again(store: Store, hq: Hq) -> None:
    assert await store.deliver(hq.put("offers", offer("o1"), seq=9)) == "gap"
    for message in hq.snapshot("offers", "s", [[offer("n1")]], 5):
        await store.deliver(message)
    assert store.db.sync_state("offers").last == 5
    assert store.requests[-1] == ResyncRequest(store=STORE, stream="offers", since=5)


async def test_snapshot_messages_out_of_order_are_rejected(store: Store, hq: Hq) -> None:
    assert await store.deliver(hq.put("offers", offer("o1"))) == "applied"
    item = hq.send(
        "offers", {"snapshot": "s1", "records": [wire(offer("x"))]}, kind="snapshot_item", seq=2
    )
    assert await store.deliver(item) == "snapshot_out_of_order"  # no begin
    end = hq.send("offers", {"snapshot": "s1", "watermark": 9}, kind="snapshot_end", seq=2)
    assert await store.deliver(end) == "snapshot_out_of_order"
    begin = hq.send("offers", {"snapshot": "s1", "count": 1}, kind="snapshot_begin", seq=2)
    assert await store.deliver(begin) == "staged"  # in line: its seq continues the stream
    wrong = hq.send(
        "offers", {"snapshot": "s2", "records": [wire(offer("x"))]}, kind="snapshot_item", seq=3
    )
    assert await store.deliver(wrong) == "snapshot_out_of_order"
    assert store.offers() == {"o1": "T"}
    assert store.db.sync_state("offers").snapshot_staged == 0
    rejected = store.applier.counts().rejected
    assert rejected == {("offers", "snapshot_out_of_order"): 3}
    assert store.requests == []


async def test_a_snapshot_with_a_missing_item_or_count_is_aborted(store: Store, hq: Hq) -> None:
    assert await store.deliver(hq.put("offers", offer("o1"))) == "applied"
    assert await store.deliver(hq.put("offers", offer("o3"), seq=3)) == "gap"
    messages = hq.snapshot("offers", "s1", [[offer("a")], [offer("b")]], 7, start=4)
    await store.deliver(messages[0])
    assert await store.deliver(messages[2]) == "gap"  # item at seq 5 lost: aborted
    assert store.db.sync_state("offers").snapshot == ""
    assert await store.deliver(messages[3]) == "snapshot_out_of_order"
    # A snapshot whose items do not add up to its count is not swapped in.
    short = hq.snapshot("offers", "s2", [[offer("a")], [offer("b")]], 11, start=8)
    bad_begin = hq.send("offers", {"snapshot": "s2", "count": 5}, kind="snapshot_begin", seq=8)
    for message in [bad_begin, *short[1:3]]:
        assert await store.deliver(message) == "staged"
    assert await store.deliver(short[3]) == "snapshot_mismatch"
    assert store.offers() == {"o1": "T"}
    state = store.db.sync_state("offers")
    assert state.stopped and state.last == 1
    assert store.requests[-1].since == 1
    # A delta arriving while a resync's snapshot is staged waits for it.
    await store.deliver(short[0])
    assert await store.deliver(hq.put("offers", offer("o12"), seq=12)) == "stopped"


async def test_a_late_answer_to_an_older_request_is_a_duplicate(store: Store, hq: Hq) -> None:
    """Two snapshots answer two resync requests; the first arrives again after the second
    applied, while the stream is stopped by a new gap: it must not take the stream back."""
    assert await store.deliver(hq.put("offers", offer("o1"), seq=3)) == "gap"
    first = hq.snapshot("offers", "s1", [[offer("old")]], 6, start=4)
    second = hq.snapshot("offers", "s2", [[offer("new")]], 9, start=7)
    for message in [*first, *second]:
        await store.deliver(message)
    assert store.db.sync_state("offers").last == 9
    assert await store.deliver(hq.put("offers", offer("o2"), seq=11)) == "gap"
    assert store.db.sync_state("offers").stopped
    for message in first:
        assert await store.deliver(message) in {"duplicate", "snapshot_out_of_order"}
    assert store.offers() == {"new": "T"}
    state = store.db.sync_state("offers")
    assert state.last == 9 and state.stopped and not state.snapshot


async def test_a_profile_snapshot_merges_and_respects_tombstones(store: Store, hq: Hq) -> None:
    profiles = [ProfileRecord(shopper_id=s, first_name=s.upper()) for s in ("s1", "s2", "s3")]
    assert await store.deliver(hq.put("profiles", *profiles)) == "applied"
    await store.writer.write(erase_op(store.db, "s3", hlc=1, now=store.clock.now()))
    sync = hq.snapshot(
        "profiles",
        "p1",
        [[ProfileRecord(shopper_id="s1", first_name="Ann"), profiles[2]]],
        watermark=4,
        start=2,  # pushed in line: its sequence continues the stream
    )
    for message in sync:
        await store.deliver(message)
    assert store.db.profile("s1") == ProfileRecord(shopper_id="s1", first_name="Ann")
    assert store.db.profile("s2") is None  # left out of the snapshot
    assert store.db.profile("s3") is None  # erased: the snapshot cannot bring it back
    assert store.applier.counts().skipped == {("profiles", "erased"): 1}


async def test_a_snapshot_keeps_shoppers_who_opted_in_here_until_hq_lists_them(
    store: Store, hq: Hq
) -> None:
    """A shopper registered through the store's app is not in an HQ snapshot made before HQ
    heard of them: the snapshot must not delete them. Once HQ lists them, they are HQ's."""
    local = ProfileRecord(shopper_id="app-1", first_name="Dana", origin="store")
    await store.writer.write(store.db.put_op([local, ConsentRecord(shopper_id="app-1")]))
    for message in hq.snapshot("profiles", "p1", [[ProfileRecord(shopper_id="s1")]], 3):
        await store.deliver(message)
    assert store.db.profile("app-1") == local
    assert await store.deliver(hq.put("profiles", ProfileRecord(shopper_id="app-1"), seq=4)) == (
        "applied"
    )
    held = store.db.profile("app-1")
    assert held is not None and held.origin == "hq"
    later = hq.snapshot("profiles", "p2", [[ProfileRecord(shopper_id="s1")]], 7, start=5)
    for message in later:
        await store.deliver(message)
    assert store.db.profile("app-1") is None


async def test_an_offer_whose_audience_does_not_compile_is_refused_and_hq_told(
    store: Store, hq: Hq
) -> None:
    good = OfferRecord(offer_id="o1", title="T", audience={"in": ["vip", {"var": "segments"}]})
    assert await store.deliver(hq.put("offers", good)) == "applied"
    bad = msgspec.structs.replace(
        good, version=2, audience={"==": [{"var": "profile.first_name"}, "Ann"]}
    )
    assert await store.deliver(hq.put("offers", bad)) == "applied"  # the stream moves on
    [held] = store.db.offers()
    assert held.version == 1  # the previous version stays
    assert store.applier.counts().skipped == {("offers", "invalid_offer"): 1}
    [event] = [decode_event(e.payload) for e in pending(store.db, 10)]
    assert event.type == "rejection"
    assert event.body["id"] == "o1" and event.body["version"] == 2
    assert "profile.first_name" in event.body["why"]
    # In a snapshot too: the live version stays, the others are swapped in.
    snap = hq.snapshot("offers", "s1", [[bad, OfferRecord(offer_id="o2", title="U")]], 5, start=3)
    for message in snap:
        await store.deliver(message)
    assert {(o.offer_id, o.version) for o in store.db.offers()} == {("o1", 1), ("o2", 1)}


async def test_config_stream_stores_the_body(store: Store, hq: Hq) -> None:
    body = {"op": "put", "records": [{"name": "quiet_hours", "value": [22, 7]}]}
    assert await store.deliver(hq.send("config", body)) == "applied"
    assert msgspec.json.decode(store.db.hq_config() or b"") == body
    await store.deliver(hq.put("config", seq=5))  # gap
    for message in hq.snapshot("config", "c1", [[{"name": "a", "value": 1}]], 9, start=7):
        await store.deliver(message)
    assert msgspec.json.decode(store.db.hq_config() or b"") == {
        "op": "put",
        "records": [{"name": "a", "value": 1}],
    }


# ----- consent, erasure, tombstones -----


def consent(shopper: str, **purposes: tuple[bool, int]) -> ConsentRecord:
    return ConsentRecord(
        shopper_id=shopper,
        purposes={p: PurposeState(granted=g, at=float(h), hlc=h) for p, (g, h) in purposes.items()},
    )


async def test_consents_merge_through_the_applier(store: Store, hq: Hq) -> None:
    # The store recorded a withdrawal (at hlc 10) that HQ has not seen yet.
    local = consent("s1", presence=(False, 10), analytics=(True, 3))
    assert await store.writer.write(store.db.put_op([local])) == 1
    generation = store.db.identity_generation()
    stale_grant = hq.put("consents", consent("s1", presence=(True, 5), analytics=(True, 4)))
    assert await store.deliver(stale_grant) == "applied"
    stored = store.db.consent("s1")
    assert stored is not None
    assert not stored.purposes["presence"].granted  # the withdrawal holds
    assert stored.purposes["analytics"].hlc == 4
    assert store.db.identity_generation() > generation
    assert await store.deliver(hq.put("consents", consent("s1", presence=(True, 10)))) == "applied"
    assert not store.db.consent("s1").purposes["presence"].granted  # type: ignore[union-attr]
    assert await store.deliver(hq.put("consents", consent("s1", presence=(True, 11)))) == "applied"
    assert store.db.consent("s1").purposes["presence"].granted  # type: ignore[union-attr]


async def test_an_erasure_removes_the_shopper_and_its_tombstone_blocks_later_puts(
    store: Store, hq: Hq
) -> None:
    personal = [
        ProfileRecord(shopper_id="s1", first_name="Ann"),
        consent("s1", presence=(True, 1)),
        IdentityRecord(key="ibeacon:x:1:2", shopper_id="s1"),
        IdentityRecord(key="ibeacon:x:1:3", shopper_id="s2"),
        EidKeyRecord(shopper_id="s1", identity_key=bytes(16), exponent=10),
        IrkRecord(shopper_id="s1", irk=bytes(16)),
    ]
    assert await store.writer.write(store.db.put_op(personal)) == 6
    erased = ConsentRecord(shopper_id="s1", erased=True)
    assert await store.deliver(hq.put("consents", erased)) == "applied"
    assert store.db.profile("s1") is None and store.db.consent("s1") is None
    assert store.db.identity("ibeacon:x:1:2") is None
    assert store.db.identity("ibeacon:x:1:3") is not None  # another shopper's
    assert store.db.resolver_keys() == []
    [tombstone] = store.db.tombstones()
    assert tombstone.id == "s1" and tombstone.kind == "shopper"
    assert tombstone.erased_at == store.clock.now()
    assert tombstone.hlc == hq.issued_at << 16
    # Late puts, from HQ or from this store, are no-ops while the tombstone is kept.
    late_profile = hq.put("profiles", ProfileRecord(shopper_id="s1", first_name="Ann"))
    assert await store.deliver(late_profile) == "applied"
    assert await store.deliver(hq.put("consents", consent("s1", presence=(True, 99)))) == "applied"
    assert store.db.profile("s1") is None and store.db.consent("s1") is None
    assert await store.writer.write(store.db.put_op(personal[2:3] + personal[4:])) == 0
    assert store.db.resolver_keys() == [] and store.db.identity("ibeacon:x:1:2") is None
    assert store.applier.counts().skipped == {
        ("profiles", "erased"): 1,
        ("consents", "erased"): 1,
    }


async def test_expired_tombstones_are_dropped_and_force_a_full_resync(store: Store, hq: Hq) -> None:
    now = store.clock.now()
    await store.writer.write(erase_op(store.db, "old", hlc=1, now=now - 31 * DAY))
    await store.writer.write(erase_op(store.db, "young", hlc=2, now=now - DAY))
    assert await store.deliver(hq.put("consents", consent("c1", presence=(True, 1)))) == "applied"
    sweep = await store.writer.write(sweep_tombstones_op(store.db, now))
    assert [t.id for t in sweep.dropped] == ["old"] and sweep.full_resync
    assert sweep.resync == ("profiles", "consents")
    assert [t.id for t in store.db.tombstones()] == ["young"]
    assert store.applier.resync_request("consents") == ResyncRequest(
        store=STORE, stream="consents", since=0
    )
    # Until the snapshot comes, the stream does not move.
    assert await store.deliver(hq.put("consents", consent("c2", presence=(True, 1)))) == "stopped"
    full = hq.snapshot("consents", "full", [[consent("c2", presence=(True, 1))]], 5, start=3)
    for message in full:
        await store.deliver(message)
    assert store.db.consent("c1") is None and store.db.consent("c2") is not None
    state = store.db.sync_state("consents")
    assert state.last == 5 and not state.full and not state.stopped
    nothing = await store.writer.write(sweep_tombstones_op(store.db, now))
    assert not nothing.full_resync and nothing.dropped == ()


# ----- any order, any repetition -----


@dataclass(frozen=True)
class _Step:
    op: str
    offer_id: str
    title: str


steps = st.lists(
    st.builds(
        _Step,
        op=st.sampled_from(["put", "put", "delete"]),
        offer_id=st.sampled_from(["o1", "o2", "o3"]),
        title=st.sampled_from(["a", "b", "c"]),
    ),
    min_size=1,
    max_size=10,
)


def _model(history: list[_Step]) -> dict[str, str]:
    state: dict[str, str] = {}
    for step in history:
        if step.op == "put":
            state[step.offer_id] = step.title
        else:
            state.pop(step.offer_id, None)
    return state


@settings(max_examples=40, deadline=None)
@given(
    steps.flatmap(
        lambda history: st.tuples(
            st.just(history),
            st.lists(st.integers(0, len(history) - 1), max_size=2 * len(history)),
        )
    )
)
def test_any_permutation_and_duplication_never_applies_out_of_order(
    case: tuple[list[_Step], list[int]],
) -> None:
    history, order = case
    hq = Hq()
    messages = [
        hq.put("offers", offer(s.offer_id, s.title))
        if s.op == "put"
        else hq.delete("offers", s.offer_id)
        for s in history
    ]
    with tempfile.TemporaryDirectory() as folder:
        asyncio.run(_drive(folder, hq, history, messages, order))


async def _drive(
    folder: str, hq: Hq, history: list[_Step], messages: list[bytes], order: list[int]
) -> None:
    db = Database(Path(folder) / "store", map_size=1 << 20)
    db.open()
    writer = Writer(db)
    writer.start()
    store = Store(db, writer, StreamApplier(db, STORE, hq.keyring()), hq.keyring(), ManualClock())
    try:
        last = 0
        for index in order:
            result = await store.deliver(messages[index])
            state = db.sync_state("offers")
            if result == "applied":
                # Only ever the next one, and the store then holds exactly that prefix.
                assert index == last and state.last == last + 1
                last += 1
                assert store.offers() == _model(history[:last])
            else:
                assert result in {"duplicate", "gap", "stopped"}
                assert state.last == last
        # HQ answers resync requests until the store has everything.
        while db.sync_state("offers").last < len(messages):
            since = store.applier.resync_request("offers").since
            for message in messages[since:]:
                await store.deliver(message)
        assert store.offers() == _model(history)
        assert not db.sync_state("offers").stopped
    finally:
        await writer.aclose()
        db.close()
