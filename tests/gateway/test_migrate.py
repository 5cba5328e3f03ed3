"""Store migrations (``gateway.store.migrate``, ``moments store migrate``) on real LMDB stores in
temporary folders. The schema is 1 and the table empty, so the tests raise the code's schema
(``codec.CURRENT_VERSION``) and inject their own migrations."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import lmdb
import pytest

from gateway.errors import StoreError
from gateway.store import Database, ProfileRecord, codec, decode, encode
from gateway.store import migrate as migrate_module
from gateway.store.backup import MANIFEST_FILE, hold_lock, restore
from gateway.store.cli import register
from gateway.store.migrate import MIGRATIONS, migrate
from tests.support.store import held_open_elsewhere

NOW = 1_750_000_000.0
STAMP = "20250615T150640Z"
MAP_SIZE = 1 << 22
MARK = b"test_migrated"

MAIN = "import sys; from gateway.cli import main; sys.exit(main(sys.argv[1:]))"


class Clock:
    """A fixed wall clock."""

    def now(self) -> float:
        return NOW

    def monotonic(self) -> float:
        return 0.0


def make_store(path: Path, shoppers: int = 3) -> None:
    """A store written by a gateway at schema 1, with ``shoppers`` profiles."""
    db = Database(path, map_size=MAP_SIZE)
    db.open()
    try:
        with db.env.begin(write=True) as txn:
            for n in range(shoppers):
                sid = f"s{n}"
                txn.put(
                    sid.encode(), encode(ProfileRecord(shopper_id=sid)), db=db.handle("profiles")
                )
    finally:
        db.close()
    set_schema(path, 1)


def peek(path: Path) -> tuple[int, bytes | None, list[str]]:
    """The schema version, the test mark and the profile keys, read without ``Database``."""
    env = lmdb.open(str(path), readonly=True, max_dbs=32)
    try:
        with env.begin(buffers=False) as txn:
            meta = env.open_db(b"meta", txn=txn, create=False)
            profiles = env.open_db(b"profiles", txn=txn, create=False)
            raw = txn.get(b"schema_version", db=meta)
            assert raw is not None
            version = int(raw)
            mark = txn.get(MARK, db=meta)
            keys = [k.decode() for k, _ in txn.cursor(db=profiles)]
    finally:
        env.close()
    return version, mark, keys


def set_schema(path: Path, version: int) -> None:
    env = lmdb.open(str(path), max_dbs=32)
    try:
        with env.begin(write=True) as txn:
            meta = env.open_db(b"meta", txn=txn)
            txn.put(b"schema_version", str(version).encode(), db=meta)
    finally:
        env.close()


def _mark_profiles(txn: Any, db: Database) -> None:
    """Test schema 2: every profile gets a first name, and meta a mark."""
    handle = db.handle("profiles")
    for key, value in list(txn.cursor(db=handle)):
        profile = decode(bytes(value))
        assert isinstance(profile, ProfileRecord)
        txn.put(
            key, encode(ProfileRecord(shopper_id=profile.shopper_id, first_name="m")), db=handle
        )
    txn.put(MARK, b"2", db=db.handle("meta"))


def _half_done_then_fail(txn: Any, db: Database) -> None:
    """Test schema 3: writes, then fails; nothing of it may stay."""
    txn.put(MARK, b"3", db=db.handle("meta"))
    raise StoreError("cannot convert s1")


@pytest.fixture
def schema_2(monkeypatch: pytest.MonkeyPatch) -> None:
    """This code at schema 2, with a migration from 1."""
    monkeypatch.setattr(codec, "CURRENT_VERSION", 2)
    monkeypatch.setitem(MIGRATIONS, 1, _mark_profiles)


def backups(store: Path) -> list[str]:
    folder = store.parent / "backups"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


# ----- the library -----


def test_the_table_reaches_the_current_schema() -> None:
    assert migrate_module.plan(1, codec.CURRENT_VERSION) == ()
    for version, migration in MIGRATIONS.items():
        assert 1 <= version < codec.CURRENT_VERSION
        assert migration.__doc__, f"migration from {version} is undocumented"


def test_a_store_at_the_current_schema_has_nothing_to_do(tmp_path: Path) -> None:
    store = tmp_path / "store"
    make_store(store)
    report = migrate(store, map_size=MAP_SIZE, clock=Clock())
    assert report.to_json() == {"action": "migrate", "from": 1, "to": 1, "applied": []}
    assert backups(store) == []
    assert migrate(tmp_path / "none", map_size=MAP_SIZE).to_json() == {
        "action": "migrate",
        "from": None,
        "to": 1,
        "applied": [],
    }
    assert not (tmp_path / "none").exists()


@pytest.mark.usefixtures("schema_2")
def test_an_older_store_is_refused_by_open_and_migrated_after_a_backup(tmp_path: Path) -> None:
    store = tmp_path / "store"
    make_store(store)
    with pytest.raises(StoreError, match=r"older than this gateway's 2: .*moments store migrate"):
        Database(store, map_size=MAP_SIZE).open()

    report = migrate(store, map_size=MAP_SIZE, clock=Clock())

    dest = tmp_path / "backups" / f"pre-migrate-1-to-2-{STAMP}"
    assert report.to_json() == {
        "action": "migrate",
        "from": 1,
        "to": 2,
        "backup": str(dest),
        "applied": [{"from": 1, "to": 2, "name": "mark_profiles"}],
    }
    assert json.loads((dest / MANIFEST_FILE).read_text())["schema_version"] == 1
    assert peek(store) == (2, b"2", ["s0", "s1", "s2"])
    db = Database(store, map_size=MAP_SIZE)
    db.open()  # the gateway opens it now
    try:
        profile = db.profile("s1")
        assert profile is not None and profile.first_name == "m"
    finally:
        db.close()
    # The backup is the store as it was, and restores as such.
    restored = tmp_path / "restored"
    restore(dest, restored, force=False)
    assert peek(restored) == (1, None, ["s0", "s1", "s2"])

    # A second run has nothing to do and takes no second backup.
    again = migrate(store, map_size=MAP_SIZE, clock=Clock())
    assert again.to_json() == {"action": "migrate", "from": 2, "to": 2, "applied": []}
    assert backups(store) == [dest.name]


def test_a_failing_migration_leaves_the_last_completed_schema_and_names_the_backup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "store"
    make_store(store)
    monkeypatch.setattr(codec, "CURRENT_VERSION", 2)
    monkeypatch.setitem(MIGRATIONS, 1, _half_done_then_fail)
    with pytest.raises(StoreError, match=r"half_done_then_fail .*cannot convert s1") as failed:
        migrate(store, map_size=MAP_SIZE, clock=Clock())
    dest = tmp_path / "backups" / f"pre-migrate-1-to-2-{STAMP}"
    assert f"restore --from {dest} --force" in str(failed.value)
    assert "stays at schema 1" in str(failed.value)
    assert peek(store) == (1, None, ["s0", "s1", "s2"])
    assert json.loads((dest / MANIFEST_FILE).read_text())["schema_version"] == 1

    # Two steps, the second failing: the first one's work and version stay.
    monkeypatch.setattr(codec, "CURRENT_VERSION", 3)
    monkeypatch.setitem(MIGRATIONS, 1, _mark_profiles)
    monkeypatch.setitem(MIGRATIONS, 2, _half_done_then_fail)
    with pytest.raises(StoreError, match="stays at schema 2"):
        migrate(store, map_size=MAP_SIZE, clock=Clock())
    assert peek(store) == (2, b"2", ["s0", "s1", "s2"])
    assert backups(store) == [dest.name, f"pre-migrate-1-to-3-{STAMP}"]


def test_a_bug_in_a_migration_aborts_its_transaction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def _buggy(txn: Any, db: Database) -> None:
        """Test schema 2: a programming error after a write."""
        txn.put(MARK, b"2", db=db.handle("meta"))
        raise KeyError("oops")

    store = tmp_path / "store"
    make_store(store)
    monkeypatch.setattr(codec, "CURRENT_VERSION", 2)
    monkeypatch.setitem(MIGRATIONS, 1, _buggy)
    with pytest.raises(KeyError) as failed:
        migrate(store, map_size=MAP_SIZE, clock=Clock())
    assert any("moments store restore --from" in note for note in failed.value.__notes__)
    assert peek(store) == (1, None, ["s0", "s1", "s2"])


def test_a_gap_in_the_table_or_a_newer_store_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "store"
    make_store(store)
    monkeypatch.setattr(codec, "CURRENT_VERSION", 2)
    with pytest.raises(StoreError, match="no migration from schema 1 to 2"):
        migrate(store, map_size=MAP_SIZE, clock=Clock())
    monkeypatch.setattr(codec, "CURRENT_VERSION", 1)
    set_schema(store, 5)
    with pytest.raises(StoreError, match="schema 5, newer than this gateway's 1"):
        migrate(store, map_size=MAP_SIZE, clock=Clock())
    assert peek(store)[0] == 5
    assert backups(store) == []


@pytest.mark.usefixtures("schema_2")
def test_migrate_is_refused_while_the_gateway_holds_the_store(tmp_path: Path) -> None:
    store = tmp_path / "store"
    make_store(store)
    with hold_lock(store), pytest.raises(StoreError, match=r"in use: .*stop the gateway"):
        migrate(store, map_size=MAP_SIZE, clock=Clock())
    assert peek(store) == (1, None, ["s0", "s1", "s2"])
    assert backups(store) == []


@pytest.mark.usefixtures("schema_2")
def test_migrate_is_refused_while_another_process_has_the_store_open(tmp_path: Path) -> None:
    store = tmp_path / "store"
    make_store(store)
    with held_open_elsewhere(store), pytest.raises(StoreError, match="open in another process"):
        migrate(store, map_size=MAP_SIZE, clock=Clock())
    assert peek(store) == (1, None, ["s0", "s1", "s2"])
    assert backups(store) == []


@pytest.mark.usefixtures("schema_2")
def test_a_dry_run_says_what_it_would_do_and_changes_nothing(tmp_path: Path) -> None:
    store = tmp_path / "store"
    make_store(store)
    before = (store / "data.mdb").read_bytes()
    report = migrate(store, map_size=MAP_SIZE, dry_run=True, clock=Clock())
    assert report.to_json() == {
        "action": "migrate",
        "from": 1,
        "to": 2,
        "backup": str(tmp_path / "backups" / f"pre-migrate-1-to-2-{STAMP}"),
        "applied": [{"from": 1, "to": 2, "name": "mark_profiles"}],
        "dry_run": True,
    }
    # It works beside a running gateway: it takes no lock.
    with hold_lock(store):
        assert migrate(store, map_size=MAP_SIZE, dry_run=True, clock=Clock()) == report
    assert (store / "data.mdb").read_bytes() == before
    assert not (tmp_path / "backups").exists()


# ----- the command -----


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in list(os.environ):
        if name.startswith("MOMENTS_"):
            monkeypatch.delenv(name)
    path = tmp_path / "moments.toml"
    path.write_text(f"data_dir = {json.dumps(str(tmp_path / 'var'))}\n")
    return path


def moments(*argv: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOMENTS_")}
    return subprocess.run(
        [sys.executable, "-c", MAIN, *argv],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env=env,
    )


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="moments")
    register(parser.add_subparsers())
    args = parser.parse_args(argv)
    code: int = args.handler(args)
    return code


def test_the_command_prints_one_json_line_and_exits_by_outcome(
    tmp_path: Path, config: Path
) -> None:
    store = tmp_path / "var" / "store"
    make_store(store)
    done = moments("store", "migrate", "-c", str(config))
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("\n") == 1
    assert json.loads(done.stdout) == {"action": "migrate", "from": 1, "to": 1, "applied": []}

    dry = moments("store", "migrate", "--dry-run", "-c", str(config))
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["dry_run"] is True

    set_schema(store, 99)
    newer = moments("store", "migrate", "-c", str(config))
    assert newer.returncode == 1
    assert newer.stdout == ""
    assert newer.stderr.startswith("moments store: store at ") and newer.stderr.count("\n") == 1
    assert "newer than this gateway's" in newer.stderr

    bad = tmp_path / "bad.toml"
    bad.write_text("data_dir = 3\n")
    wrong = moments("store", "migrate", "-c", str(bad))
    assert wrong.returncode == 2
    assert wrong.stderr.startswith("moments store: configuration error:")


@pytest.mark.usefixtures("schema_2")
def test_the_command_migrates_and_fails_with_the_backup_named(
    tmp_path: Path,
    config: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    store = tmp_path / "var" / "store"
    make_store(store)
    assert run("store", "migrate", "-c", str(config)) == 0
    out, err = capsys.readouterr()
    shown = json.loads(out)
    assert (shown["from"], shown["to"], err) == (1, 2, "")
    assert shown["backup"].startswith(str(tmp_path / "var" / "backups" / "pre-migrate-1-to-2-"))
    assert [step["name"] for step in shown["applied"]] == ["mark_profiles"]

    monkeypatch.setattr(codec, "CURRENT_VERSION", 3)
    monkeypatch.setitem(MIGRATIONS, 2, _half_done_then_fail)
    assert run("store", "migrate", "-c", str(config)) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("moments store: migration half_done_then_fail (2 to 3) failed")
    assert "moments store restore --from " in err and err.count("\n") == 1
    assert peek(store)[0] == 2
