"""Hot backup and restore of the store, on real LMDB environments in temporary folders, and the
``moments store`` commands that drive them."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import StoreError
from gateway.store import ConsentRecord, Database, ProfileRecord, Writer, decode, encode
from gateway.store.backup import (
    DATA_FILE,
    LOCK_FILE,
    MANIFEST_FILE,
    BackupInfo,
    backup,
    hold_lock,
    restore,
)
from gateway.store.cli import register
from gateway.store.codec import CURRENT_VERSION
from gateway.store.writer import WriteOp
from gateway.sync.outbox import enqueue_op
from tests.support.store import held_open_elsewhere

COUNT_KEY = b"test_shoppers"
NOW = 1_750_000_000.0

# ``backup`` in a process of its own, as ``moments store backup`` runs beside a live gateway.
BACKUP_IN_CHILD = """
import json, sys
from pathlib import Path
from gateway.store.backup import backup
print(json.dumps(backup(Path(sys.argv[1]), Path(sys.argv[2])).to_json()))
"""


class Clock:
    """A fixed wall clock."""

    def now(self) -> float:
        return NOW

    def monotonic(self) -> float:
        return 0.0


class Later(Clock):
    """The fixed wall clock, ``by`` seconds on."""

    def __init__(self, by: float) -> None:
        self._by = by

    def now(self) -> float:
        return NOW + self._by


def add_shopper(db: Database) -> WriteOp[int]:
    """One transaction: the next shopper's profile and consent, and the shopper count."""

    def op(txn: Any) -> int:
        meta = db.handle("meta")
        n = int(txn.get(COUNT_KEY, b"0", db=meta))
        sid = f"s{n:06}"
        profile = ProfileRecord(shopper_id=sid, first_name="x" * 300)
        txn.put(sid.encode(), encode(profile), db=db.handle("profiles"))
        txn.put(sid.encode(), encode(ConsentRecord(shopper_id=sid)), db=db.handle("consents"))
        txn.put(COUNT_KEY, str(n + 1).encode(), db=meta)
        return n + 1

    return op


def make_store(path: Path, shoppers: int) -> None:
    db = Database(path, map_size=1 << 22)
    db.open()
    try:
        for _ in range(shoppers):
            with db.env.begin(write=True) as txn:
                add_shopper(db)(txn)
    finally:
        db.close()


def contents(path: Path) -> tuple[int, list[str], list[str]]:
    """The shopper count and the profile and consent keys of the store at ``path``."""
    db = Database(path, map_size=1 << 22)
    db.open()
    try:
        with db.env.begin(buffers=False) as txn:
            count = int(txn.get(COUNT_KEY, b"0", db=db.handle("meta")))
            profiles = [k.decode() for k, _ in txn.cursor(db=db.handle("profiles"))]
            consents = [k.decode() for k, _ in txn.cursor(db=db.handle("consents"))]
            for _key, value in txn.cursor(db=db.handle("profiles")):
                assert isinstance(decode(value), ProfileRecord)
    finally:
        db.close()
    return count, profiles, consents


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# ----- backup -----


async def test_backup_of_a_live_store_is_consistent(tmp_path: Path) -> None:
    store, dest = tmp_path / "store", tmp_path / "backup"
    db = Database(store, map_size=1 << 16)  # small: the map grows while the backup runs
    db.open()
    writer = Writer(db, batch=16)
    writer.start()
    try:
        await asyncio.gather(*(writer.write(add_shopper(db)) for _ in range(50)))
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            BACKUP_IN_CHILD,
            str(store),
            str(dest),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        done = asyncio.ensure_future(child.communicate())
        while not done.done():  # the gateway keeps writing for the whole backup
            await asyncio.gather(*(writer.write(add_shopper(db)) for _ in range(8)))
        out, err = await done
        assert child.returncode == 0, err.decode()
        total = await writer.write(add_shopper(db))
    finally:
        await writer.aclose()
        db.close()

    shown = json.loads(out)
    assert shown["path"] == str(dest)
    assert shown["schema_version"] == CURRENT_VERSION
    assert sorted(p.name for p in dest.iterdir()) == [DATA_FILE, MANIFEST_FILE]
    assert leftovers(tmp_path) == []

    restore(dest, tmp_path / "restored", force=False)
    count, profiles, consents = contents(tmp_path / "restored")
    # One commit's state: every shopper with both records, and the count that goes with them.
    assert 50 <= count < total
    assert profiles == consents == [f"s{n:06}" for n in range(count)]


def test_backup_writes_a_manifest_that_describes_the_copy(tmp_path: Path) -> None:
    store, dest = tmp_path / "store", tmp_path / "backup"
    make_store(store, 20)
    info = backup(store, dest, clock=Clock())
    manifest = json.loads((dest / MANIFEST_FILE).read_text())
    assert manifest == {
        "manifest_version": 1,
        "schema_version": CURRENT_VERSION,
        "created_at": NOW,
        "size": (dest / DATA_FILE).stat().st_size,
        "sha256": info.sha256,
    }
    assert info == BackupInfo(dest, CURRENT_VERSION, NOW, manifest["size"], manifest["sha256"])
    assert info.size <= (store / DATA_FILE).stat().st_size  # compacted
    assert (dest / DATA_FILE).stat().st_mode & 0o077 == 0  # personal data: owner only


def test_backup_fills_an_empty_folder_and_refuses_anything_else(tmp_path: Path) -> None:
    store = tmp_path / "store"
    make_store(store, 3)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert backup(store, empty).path == empty
    with pytest.raises(StoreError, match="exists and is not empty"):
        backup(store, empty)
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="exists and is not a folder"):
        backup(store, tmp_path / "file")
    with pytest.raises(StoreError, match="inside the store folder"):
        backup(store, store / "copy")
    with pytest.raises(StoreError, match="no store at"):
        backup(tmp_path / "nothing", tmp_path / "b2")
    assert leftovers(tmp_path) == []


def test_backup_in_the_process_that_has_the_store_open_is_refused(tmp_path: Path) -> None:
    store = tmp_path / "store"
    db = Database(store, map_size=1 << 20)
    db.open()
    try:
        with pytest.raises(StoreError, match="already open in this process"):
            backup(store, tmp_path / "backup")
    finally:
        db.close()
    assert not (tmp_path / "backup").exists()
    assert leftovers(tmp_path) == []


# ----- restore -----


def test_restore_round_trip_keeps_the_replaced_store_aside(tmp_path: Path) -> None:
    store, dest = tmp_path / "store", tmp_path / "backup"
    make_store(store, 10)
    info = backup(store, dest)
    make_store(store, 5)  # written after the backup
    assert contents(store)[0] == 15

    with pytest.raises(StoreError, match=r"already exists.*--force"):
        restore(dest, store, force=False)
    assert contents(store)[0] == 15

    done = restore(dest, store, force=True, clock=Clock())
    aside = tmp_path / "store.before-restore-20250615T150640Z"
    assert done.previous == aside
    assert (done.store, done.source, done.sha256) == (store, dest, info.sha256)
    assert contents(store)[0] == 10
    assert contents(aside)[0] == 15
    assert (store / LOCK_FILE).exists()

    second = restore(dest, store, force=True, clock=Clock())  # same second: a new name
    assert second.previous == tmp_path / "store.before-restore-20250615T150640Z-2"
    assert leftovers(tmp_path) == []


def _enqueue(path: Path, events: int) -> list[int]:
    """Queue ``events`` HQ events in the store at ``path``; their outbox sequences."""
    db = Database(path, map_size=64 << 20)
    db.open()
    try:
        seqs = []
        for i in range(events):
            with db.env.begin(write=True) as txn:
                op = enqueue_op(db, "store-1", "visit", {"zone": "coffee"}, i, perishable=True)
                seqs.append(op(txn))
        return seqs
    finally:
        db.close()


def test_events_after_a_restore_never_reuse_a_sequence_hq_may_hold(tmp_path: Path) -> None:
    store, dest = tmp_path / "store", tmp_path / "backup"
    make_store(store, 1)
    before = _enqueue(store, 3)
    backup(store, dest)
    sent_since = _enqueue(store, 4)  # made (and perhaps received by HQ) after the backup
    done = restore(dest, store, force=True, clock=Clock())
    assert done.outbox_seq == int(NOW * 1000) and done.to_json()["outbox_seq"] == done.outbox_seq
    after = _enqueue(store, 2)
    assert after == [done.outbox_seq + 1, done.outbox_seq + 2]
    assert not set(after) & set(before + sent_since)
    # A second restore a minute later: on from the clock again, past everything made since.
    again = restore(dest, store, force=True, clock=Later(60.0))
    assert again.outbox_seq == int((NOW + 60.0) * 1000) > after[-1]
    # A clock behind (a box without a battery-backed clock, before NTP): past the replaced
    # store's own counter all the same.
    backup(store, tmp_path / "later")
    made = _enqueue(store, 1)
    behind = restore(tmp_path / "later", store, force=True, clock=Clock())
    assert behind.outbox_seq == made[0] + 1 > int(NOW * 1000)
    assert _enqueue(store, 1) == [made[0] + 2]


def test_a_store_of_real_size_is_restored(tmp_path: Path) -> None:
    """A compacted copy has no free page: the outbox sequence's write must find room."""
    store, dest = tmp_path / "store", tmp_path / "backup"
    db = Database(store, map_size=64 << 20)
    db.open()
    try:
        with db.env.begin(write=True) as txn:
            for i in range(24):  # 24 MiB of data, past LMDB's default 10 MiB map
                txn.put(f"blob-{i}".encode(), os.urandom(1 << 20), db=db.handle("meta"))
    finally:
        db.close()
    info = backup(store, dest)
    assert info.size > 20 << 20
    done = restore(dest, tmp_path / "elsewhere" / "store", force=False, clock=Clock())
    assert done.outbox_seq == int(NOW * 1000)
    assert _enqueue(done.store, 1) == [done.outbox_seq + 1]


def test_restore_into_an_empty_place(tmp_path: Path) -> None:
    make_store(tmp_path / "store", 4)
    backup(tmp_path / "store", tmp_path / "backup")
    target = tmp_path / "new" / "store"
    done = restore(tmp_path / "backup", target, force=False)
    assert done.previous is None
    assert contents(target)[0] == 4


def test_restore_is_refused_while_a_gateway_holds_the_lock(tmp_path: Path) -> None:
    store = tmp_path / "store"
    make_store(store, 2)
    backup(store, tmp_path / "backup")
    with hold_lock(store):
        with pytest.raises(
            StoreError, match=re.escape(f"in use: moments.lock is held by process {os.getpid()};")
        ):
            restore(tmp_path / "backup", store, force=True)
        with pytest.raises(StoreError, match="in use"), hold_lock(store):
            pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backup", "store"]
    restore(tmp_path / "backup", store, force=True)  # released: now it goes through


def test_restore_is_refused_while_another_process_has_the_store_open(tmp_path: Path) -> None:
    store = tmp_path / "store"
    make_store(store, 2)
    backup(store, tmp_path / "backup")
    with held_open_elsewhere(store), pytest.raises(StoreError, match="open in another process"):
        restore(tmp_path / "backup", store, force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backup", "store"]


def test_restore_refuses_a_backup_whose_checksum_does_not_match(tmp_path: Path) -> None:
    store, dest = tmp_path / "store", tmp_path / "backup"
    make_store(store, 10)
    backup(store, dest)
    data = bytearray((dest / DATA_FILE).read_bytes())
    data[len(data) // 2] ^= 0x01
    (dest / DATA_FILE).write_bytes(bytes(data))
    with pytest.raises(StoreError, match="damaged: the SHA-256"):
        restore(dest, store, force=True)
    assert contents(store)[0] == 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backup", "store"]


def test_restore_refuses_what_is_not_a_usable_backup(tmp_path: Path) -> None:
    store, dest = tmp_path / "store", tmp_path / "backup"
    make_store(store, 1)
    backup(store, dest)
    manifest = json.loads((dest / MANIFEST_FILE).read_text())
    target = tmp_path / "target"

    def with_manifest(**changes: object) -> None:
        (dest / MANIFEST_FILE).write_text(json.dumps({**manifest, **changes}))

    with pytest.raises(StoreError, match=r"is not a backup: it has no manifest\.json"):
        restore(tmp_path, target, force=False)
    with_manifest(size=manifest["size"] + 1)
    with pytest.raises(StoreError, match=r"damaged: data\.mdb has"):
        restore(dest, target, force=False)
    with_manifest(schema_version=CURRENT_VERSION + 1)
    with pytest.raises(StoreError, match="newer than this gateway"):
        restore(dest, target, force=False)
    with_manifest(manifest_version=2)
    with pytest.raises(StoreError, match="manifest version 2"):
        restore(dest, target, force=False)
    with_manifest(sha256="not hex")
    with pytest.raises(StoreError, match="not a valid backup manifest"):
        restore(dest, target, force=False)
    (dest / MANIFEST_FILE).write_text("{")
    with pytest.raises(StoreError, match="not a valid backup manifest"):
        restore(dest, target, force=False)
    assert not target.exists()
    assert leftovers(tmp_path) == []


# ----- the commands -----


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in list(os.environ):
        if name.startswith("MOMENTS_"):
            monkeypatch.delenv(name)
    path = tmp_path / "moments.toml"
    path.write_text(f"data_dir = {json.dumps(str(tmp_path / 'var'))}\n")
    return path


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="moments")
    register(parser.add_subparsers())
    args = parser.parse_args(argv)
    code: int = args.handler(args)
    return code


def test_store_commands_back_up_and_restore(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "var" / "store"
    make_store(store, 6)
    dest = tmp_path / "backup"

    assert run("store", "backup", "--to", str(dest), "-c", str(config)) == 0
    out, err = capsys.readouterr()
    shown = json.loads(out)
    assert out.count("\n") == 1 and err == ""
    assert shown["action"] == "backup"
    assert shown["path"] == str(dest)
    assert shown["sha256"] == json.loads((dest / MANIFEST_FILE).read_text())["sha256"]

    assert run("store", "restore", "--from", str(dest), "-c", str(config)) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("moments store: a store already exists at")
    assert err.count("\n") == 1

    assert run("store", "restore", "--from", str(dest), "--force", "-c", str(config)) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["action"] == "restore"
    assert shown["store"] == str(store)
    assert shown["previous"].startswith(str(store) + ".before-restore-")
    assert contents(store)[0] == 6


def test_store_commands_report_errors_in_one_line(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("store", "backup", "--to", str(tmp_path / "b"), "-c", str(config)) == 1
    assert capsys.readouterr().err.startswith("moments store: no store at")

    bad = tmp_path / "bad.toml"
    bad.write_text("data_dir = 3\n")
    assert run("store", "backup", "--to", str(tmp_path / "b"), "-c", str(bad)) == 2
    err = capsys.readouterr().err
    assert err.startswith("moments store: configuration error:") and err.count("\n") == 1

    assert run("store") == 2
    assert "backup" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        run("store", "backup")
    assert exit_.value.code == 2
    assert "--to" in capsys.readouterr().err
