"""The LMDB store on a real environment in a temporary folder."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from gateway.errors import StoreError
from gateway.store import (
    ConsentRecord,
    Database,
    EidKeyRecord,
    IdentityRecord,
    IrkRecord,
    OfferRecord,
    ProfileRecord,
    Purpose,
    PurposeState,
    Writer,
    decode,
    encode,
)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[tuple[Database, Writer]]:
    db = Database(tmp_path / "store", map_size=1 << 16)
    db.open()
    writer = Writer(db, batch=64)
    writer.start()
    yield db, writer
    await writer.aclose()
    db.close()


async def test_records_round_trip_through_lmdb(store: tuple[Database, Writer]) -> None:
    db, writer = store
    consent = ConsentRecord(
        shopper_id="s1",
        purposes={"presence": PurposeState(granted=True, at=10.0, notice_version="n1")},
    )
    records = [
        ProfileRecord(shopper_id="s1", first_name="Ann", segments=["a", "b"]),
        consent,
        IdentityRecord(key="ibeacon:x:1:2", shopper_id="s1"),
        OfferRecord(offer_id="o1", title="T", price=1.0, regular_price=2.0),
    ]
    assert await writer.write(db.put_op(records)) == 4
    assert db.profile("s1") == records[0]
    assert db.consent("s1") == consent
    assert db.consent("s1") is not None and db.consent("s1").allows(Purpose.PRESENCE, 11.0)  # type: ignore[union-attr]
    assert db.identity("ibeacon:x:1:2") == records[2]
    assert db.offers() == [records[3]]
    assert db.profile("nobody") is None


async def test_group_commit_many_concurrent_writes_and_map_growth(
    store: tuple[Database, Writer],
) -> None:
    db, writer = store
    # 64 KiB map to start: these writes need several doublings, none may be lost.
    records = [ProfileRecord(shopper_id=f"s{i:04}", first_name="x" * 400) for i in range(600)]
    counts = await asyncio.gather(*(writer.write(db.put_op([r])) for r in records))
    assert sum(counts) == 600
    assert writer.ops == 600
    assert writer.commits < 600  # grouped, not one fsync per write
    assert db.stat()["map_size"] > 1 << 16
    assert all(db.profile(r.shopper_id) == r for r in records)


async def test_a_failing_operation_aborts_alone(store: tuple[Database, Writer]) -> None:
    db, writer = store

    def broken(txn: Any) -> None:
        txn.put(b"half", b"written", db=db.handle("profiles"))
        raise ValueError("bad input")

    good = writer.submit(db.put_op([ProfileRecord(shopper_id="ok")]))
    bad = writer.submit(broken)
    assert await good == 1
    with pytest.raises(StoreError, match="bad input"):
        await bad
    with db.env.begin(db=db.handle("profiles")) as txn:
        assert txn.get(b"half") is None  # the failed operation left nothing behind
    assert db.profile("ok") is not None


async def test_writes_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "store"
    for round_ in range(2):
        db = Database(path, map_size=1 << 20)
        db.open()
        writer = Writer(db)
        writer.start()
        if round_ == 0:
            await writer.write(db.put_op([ProfileRecord(shopper_id="durable")]))
        else:
            assert db.profile("durable") == ProfileRecord(shopper_id="durable")
        await writer.aclose()
        db.close()


def test_codec_refuses_newer_schema_and_garbage() -> None:
    newer = msgspec.msgpack.encode({"type": "profile", "v": 99, "shopper_id": "s"})
    with pytest.raises(StoreError, match="newer than this gateway"):
        decode(newer)
    with pytest.raises(StoreError, match="undecodable"):
        decode(b"\xc1garbage")
    record = OfferRecord(offer_id="o", title="t")
    assert decode(encode(record)) == record


def test_store_refuses_a_newer_store_schema(tmp_path: Path) -> None:
    db = Database(tmp_path / "store", map_size=1 << 20)
    db.open()
    with db.env.begin(write=True) as txn:
        txn.put(b"schema_version", b"99", db=db.handle("meta"))
    db.close()
    with pytest.raises(StoreError, match="newer than this gateway"):
        Database(tmp_path / "store", map_size=1 << 20).open()


def test_store_refuses_a_schema_version_that_is_not_a_number(tmp_path: Path) -> None:
    db = Database(tmp_path / "store", map_size=1 << 20)
    db.open()
    with db.env.begin(write=True) as txn:
        txn.put(b"schema_version", b"one", db=db.handle("meta"))
    db.close()
    with pytest.raises(StoreError, match="not a number"):  # not a ValueError out of open()
        Database(tmp_path / "store", map_size=1 << 20).open()


def test_writer_must_be_started(tmp_path: Path) -> None:
    db = Database(tmp_path / "store", map_size=1 << 20)
    with pytest.raises(StoreError, match="not running"):
        Writer(db).submit(lambda txn: None)


def test_key_records_never_show_their_key() -> None:
    eid = EidKeyRecord(shopper_id="s1", identity_key=bytes(range(16)), exponent=10)
    irk = IrkRecord(shopper_id="s1", irk=bytes(range(16, 32)))
    for record, key in ((eid, eid.identity_key), (irk, irk.irk)):
        for text in (repr(record), str(record), f"{record}"):
            assert key.hex() not in text and repr(key) not in text and "<hidden>" in text
