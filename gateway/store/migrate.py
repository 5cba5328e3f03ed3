"""Store migrations: bring a store written by an older gateway up to this gateway's schema.

The store's schema version is ``meta/schema_version``; the schema this code reads and writes
is :data:`gateway.store.codec.CURRENT_VERSION`. :data:`MIGRATIONS` maps a version ``N`` to the
function that takes a store from ``N`` to ``N + 1``. A migration is a plain, named function
with a docstring saying what it changes::

    def _split_keys(txn: Any, db: Database) -> None:
        \"\"\"Schema 2: ``keys`` holds ``eid:``/``irk:`` entries; move IRKs to ``irks``.\"\"\"
        ...

    MIGRATIONS[1] = _split_keys

It gets the write transaction and the open :class:`~gateway.store.database.Database` (for its
handles and helpers), must do all its work in that transaction, never commit or abort it,
and raises :class:`~gateway.errors.StoreError` for data it cannot convert. The table is empty
while the schema is 1.

:func:`migrate` (``moments store migrate``), with the gateway stopped:

1. takes the store's lock (:func:`~gateway.store.backup.hold_lock`, which a running gateway
   holds) for the whole run and checks, as ``moments store restore`` does, that no process
   has the LMDB environment open; a gateway cannot start meanwhile;
2. reads the schema version; at the current one there is nothing to do (no backup), a newer
   one is refused, and a gap in the table is refused before anything is written;
3. takes a backup with :func:`~gateway.store.backup.backup` into
   ``<data_dir>/backups/pre-migrate-<from>-to-<to>-<UTC time>`` (its manifest says the old
   schema, so ``moments store restore --force`` of it is the way back);
4. applies each migration in its own write transaction, which also sets
   ``meta/schema_version`` to the version it reached: a crash or a failing migration leaves
   the store consistent at the last completed version, and the error names the backup.

``dry_run`` reads the version and says what would be done (the backup folder included)
without taking the lock or writing anything, so it also works while the gateway runs.

Why the gateway never migrates by itself. :meth:`Database.open` refuses a store at an older
schema with a :class:`StoreError` that says to run ``moments store migrate``, rather than
migrating at start: the backup must be taken by a process that does not have the environment
open (py-lmdb cannot open one environment twice in a process, see
:mod:`gateway.store.backup`), a migration of a large store would stall the start behind the
service manager's timeout, and an upgrade should change data only when an operator (or
``deploy/install.sh --upgrade``) asks for it, with the backup named in its output.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import lmdb

from gateway.clock import Clock, SystemClock
from gateway.errors import MomentsError, StoreError
from gateway.store import codec
from gateway.store.backup import DATA_FILE, backup, hold_lock, lmdb_unused
from gateway.store.database import Database, open_readonly, parse_schema_version

__all__ = ["MIGRATIONS", "Migration", "MigrationReport", "Step", "migrate", "plan"]

log = logging.getLogger(__name__)

Migration = Callable[[Any, Database], None]
"""A migration: ``(write transaction, database) -> None``, from version N to N + 1."""

MIGRATIONS: dict[int, Migration] = {}
"""Version N -> the migration from N to N + 1. Empty while the schema is 1."""

BACKUPS_DIR: Final = "backups"
_SCHEMA_KEY: Final = b"schema_version"


@dataclass(frozen=True, slots=True)
class Step:
    """One migration of the plan: from ``from_version`` to ``from_version + 1``."""

    from_version: int
    name: str

    @property
    def to_version(self) -> int:
        return self.from_version + 1

    def to_json(self) -> dict[str, object]:
        return {"from": self.from_version, "to": self.to_version, "name": self.name}


@dataclass(frozen=True, slots=True)
class MigrationReport:
    """What :func:`migrate` did (or, with ``dry_run``, would do). ``from_version`` is None when
    there is no store yet (a new one is created at the current schema)."""

    from_version: int | None
    to_version: int
    backup: Path | None
    applied: tuple[Step, ...]
    dry_run: bool

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"action": "migrate", "from": self.from_version}
        out["to"] = self.to_version
        if self.backup is not None:
            out["backup"] = str(self.backup)
        out["applied"] = [step.to_json() for step in self.applied]
        if self.dry_run:
            out["dry_run"] = True
        return out


def plan(from_version: int, to_version: int) -> tuple[Step, ...]:
    """The migrations from ``from_version`` to ``to_version``; refuses a gap in the table."""
    steps: list[Step] = []
    for version in range(from_version, to_version):
        migration = MIGRATIONS.get(version)
        if migration is None:
            raise StoreError(
                f"no migration from schema {version} to {version + 1} in this gateway: "
                "nothing was changed"
            )
        steps.append(Step(version, migration.__name__.strip("_")))
    return tuple(steps)


def migrate(
    db_path: Path, *, map_size: int, dry_run: bool = False, clock: Clock | None = None
) -> MigrationReport:
    """Bring the store at ``db_path`` to this gateway's schema, a backup first (see the
    module notes); the gateway must be stopped unless ``dry_run``."""
    now = (clock or SystemClock()).now()
    target = codec.CURRENT_VERSION
    if not (db_path / DATA_FILE).is_file():
        return MigrationReport(None, target, None, (), dry_run)
    if dry_run:
        return _report(db_path, _read_version(db_path), target, now, dry_run=True)
    with hold_lock(db_path):
        with lmdb_unused(db_path):
            pass  # nobody has it open; the lock keeps a gateway from opening it meanwhile
        report = _report(db_path, _read_version(db_path), target, now, dry_run=False)
        if report.backup is None:
            return report
        info = backup(db_path, report.backup, clock=clock)
        log.info(
            "store backed up before a migration",
            extra={"backup": str(info.path), "schema_version": info.schema_version},
        )
        _apply(db_path, map_size, report.applied, info.path)
    log.info(
        "store migrated",
        extra={"from_version": report.from_version, "to_version": report.to_version},
    )
    return report


def _report(
    db_path: Path, version: int, target: int, now: float, *, dry_run: bool
) -> MigrationReport:
    if version > target:
        raise StoreError(
            f"store at {db_path} has schema {version}, newer than this gateway's {target}: "
            "upgrade the gateway"
        )
    steps = plan(version, target)
    dest = _backup_path(db_path, version, target, now) if steps else None
    return MigrationReport(version, target, dest, steps, dry_run)


def _apply(db_path: Path, map_size: int, steps: tuple[Step, ...], backup_path: Path) -> None:
    db = Database(db_path, map_size=map_size)
    db.open(older_schema_ok=True)
    try:
        for step in steps:
            _apply_one(db, step, backup_path)
    finally:
        db.close()


def _apply_one(db: Database, step: Step, backup_path: Path) -> None:
    migration = MIGRATIONS[step.from_version]
    where = (
        f"the store stays at schema {step.from_version}; to go back to the store as it was, "
        f"restore the backup: moments store restore --from {backup_path} --force"
    )
    try:
        with db.env.begin(write=True) as txn:
            found = db.schema_version(txn)
            if found != step.from_version:
                raise StoreError(f"expected schema {step.from_version}, found {found}")
            migration(txn, db)
            db.set_schema_version(txn, step.to_version)
    except (MomentsError, lmdb.Error) as exc:
        raise StoreError(
            f"migration {step.name} ({step.from_version} to {step.to_version}) failed: "
            f"{exc}; {where}"
        ) from exc
    except BaseException as exc:  # a bug in the migration: its transaction was aborted
        exc.add_note(where)
        raise
    log.info("store migration applied", extra={"migration": step.name, "to": step.to_version})


def _read_version(db_path: Path) -> int:
    """The store's schema version, read without writing (a gateway may have it open)."""
    try:
        env = open_readonly(db_path, registered=True)
    except lmdb.Error as exc:
        raise StoreError(f"cannot open the store at {db_path}: {exc}") from exc
    try:
        for attempt in range(2):
            try:
                with env.begin(buffers=False) as txn:
                    meta = env.open_db(b"meta", txn=txn, create=False)
                    raw: bytes | None = txn.get(_SCHEMA_KEY, db=meta)
                break
            except lmdb.MapResizedError:
                if attempt:
                    raise
                env.set_mapsize(0)  # a running gateway grew the map: adopt its size
            except lmdb.NotFoundError as exc:
                raise StoreError(f"{db_path} is not a gateway store: no meta database") from exc
    except lmdb.Error as exc:
        raise StoreError(f"cannot read the schema of the store at {db_path}: {exc}") from exc
    finally:
        env.close()
    return parse_schema_version(raw, db_path)


def _backup_path(db_path: Path, from_version: int, to_version: int, now: float) -> Path:
    stamp = datetime.fromtimestamp(now, UTC).strftime("%Y%m%dT%H%M%SZ")
    base = f"pre-migrate-{from_version}-to-{to_version}-{stamp}"
    folder = db_path.parent / BACKUPS_DIR
    candidate = folder / base
    n = 1
    while candidate.exists():
        n += 1
        candidate = folder / f"{base}-{n}"
    return candidate
