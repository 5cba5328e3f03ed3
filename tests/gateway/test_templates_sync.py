"""HQ templates arriving through the ``templates`` stream, on a real LMDB with real Ed25519 keys:
each is checked before it is stored; a refused one leaves the previous version in place and
HQ gets a ``rejection`` event with the reason; the renderer then uses what the store holds."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from gateway.clock import ManualClock
from gateway.render import Renderer, templates_from
from gateway.store import Database, Writer
from gateway.store.records import TemplateRecord
from gateway.sync.apply import StreamApplier
from gateway.sync.envelope import Keyring, Message, decode_event, seal
from gateway.sync.outbox import pending

STORE = "store-1"
GOOD_V1 = TemplateRecord(template_id="autumn", source="<p>one {{ title }}</p>", version=1)
GOOD_V2 = TemplateRecord(template_id="autumn", source="<p>two {{ title }}</p>", version=2)
ESCAPE = TemplateRecord(template_id="autumn", source="{{ ''.__class__.__mro__ }}", version=3)
BROKEN = TemplateRecord(template_id="autumn", source="<p>{{ title }</p>", version=4)


@dataclass
class Hq:
    """HQ's side: signs and sequences messages as the reference HQ does."""

    key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    seqs: dict[str, int] = field(default_factory=dict)

    def keyring(self) -> Keyring:
        public = self.key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return Keyring([("hq-a", public)])

    def send(self, body: dict[str, Any], *, kind: str = "delta", seq: int | None = None) -> bytes:
        if seq is None:
            seq = self.seqs.get("templates", 0) + 1
        self.seqs["templates"] = seq
        message = Message(
            store=STORE,
            stream="templates",
            seq=seq,
            kind=kind,  # type: ignore[arg-type]
            issued_at=1_795_378_600_123,
            body=body,
        )
        return seal(message, "hq-a", self.key)

    def put(self, *records: TemplateRecord) -> bytes:
        return self.send({"op": "put", "records": [msgspec.to_builtins(r) for r in records]})

    def snapshot(self, snapshot: str, records: list[TemplateRecord]) -> list[bytes]:
        start = self.seqs.get("templates", 0) + 1
        items = [msgspec.to_builtins(r) for r in records]
        return [
            self.send({"snapshot": snapshot, "count": len(items)}, kind="snapshot_begin"),
            self.send({"snapshot": snapshot, "records": items}, kind="snapshot_item"),
            self.send({"snapshot": snapshot, "watermark": start + 2}, kind="snapshot_end"),
        ]


@dataclass
class Store:
    db: Database
    writer: Writer
    applier: StreamApplier

    async def deliver(self, message: bytes) -> str:
        outcome = self.applier.plan(message)
        assert outcome.op is not None, outcome.reason
        result = await self.writer.write(outcome.op)
        self.applier.committed(outcome, result)
        return result

    def versions(self) -> dict[str, int]:
        return {t.template_id: t.version for t in templates_from(self.db)}

    def rejections(self) -> list[dict[str, Any]]:
        events = [decode_event(e.payload) for e in pending(self.db, 10)]
        return [e.body for e in events if e.type == "rejection"]


@pytest.fixture
def hq() -> Hq:
    return Hq()


@pytest.fixture
async def store(tmp_path: Path, hq: Hq) -> AsyncIterator[Store]:
    db = Database(tmp_path / "store", map_size=1 << 20)
    db.open()
    writer = Writer(db)
    writer.start()
    clock = ManualClock(wall=1_795_378_600.0)
    yield Store(db, writer, StreamApplier(db, STORE, hq.keyring(), clock=clock))
    await writer.aclose()
    db.close()


async def test_a_sound_template_is_stored_and_used_by_id(store: Store, hq: Hq) -> None:
    assert await store.deliver(hq.put(GOOD_V1)) == "applied"
    renderer = Renderer()

    assert renderer.load_hq(templates_from(store.db)) == {}

    assert renderer.render_card("autumn", "kiosk", title="Pumpkins") == "<p>one Pumpkins</p>"
    assert await store.deliver(hq.put(GOOD_V2)) == "applied"
    renderer.load_hq(templates_from(store.db))
    assert renderer.render_card("autumn", "phone", title="Pumpkins") == "<p>two Pumpkins</p>"
    assert store.rejections() == []


@pytest.mark.parametrize(
    ("refused", "why"),
    [(ESCAPE, "unsafe: access to attribute '__class__'"), (BROKEN, "syntax error on line 1")],
)
async def test_a_refused_template_keeps_the_previous_version_and_hq_hears_why(
    store: Store, hq: Hq, refused: TemplateRecord, why: str
) -> None:
    assert await store.deliver(hq.put(GOOD_V1)) == "applied"

    assert await store.deliver(hq.put(refused)) == "applied"  # the stream moves on

    assert store.db.template("autumn") == GOOD_V1
    assert store.db.sync_state("templates").last == 2
    assert store.applier.counts().skipped == {("templates", "invalid_template"): 1}
    [rejection] = store.rejections()
    assert rejection["stream"] == "templates"
    assert (rejection["id"], rejection["version"]) == ("autumn", refused.version)
    assert rejection["why"].startswith(why)
    renderer = Renderer()
    renderer.load_hq(templates_from(store.db))
    assert renderer.render_card("autumn", "kiosk", title="A") == "<p>one A</p>"


async def test_a_refused_template_never_seen_before_is_not_stored(store: Store, hq: Hq) -> None:
    assert await store.deliver(hq.put(ESCAPE)) == "applied"

    assert store.versions() == {}
    assert [r["id"] for r in store.rejections()] == ["autumn"]


async def test_a_snapshot_keeps_the_live_version_of_a_template_it_brings_unusable(
    store: Store, hq: Hq
) -> None:
    other = TemplateRecord(template_id="old", source="<i>{{ title }}</i>")
    assert await store.deliver(hq.put(GOOD_V1, other)) == "applied"
    fresh = TemplateRecord(template_id="winter", source="<b>{{ title }}</b>")

    results = [await store.deliver(m) for m in hq.snapshot("s1", [ESCAPE, fresh])]

    assert results == ["staged", "staged", "snapshot_applied"]
    # "autumn" keeps its live version; "old", left out, goes; "winter" comes in.
    assert store.versions() == {"autumn": 1, "winter": 1}
    assert store.db.template("autumn") == GOOD_V1
    assert [(r["id"], r["version"]) for r in store.rejections()] == [("autumn", 3)]
