"""Hot backup and restore of the LMDB store, and the lock that says a gateway is using it.

Backup. :func:`backup` copies a store that a gateway may be writing to at that moment. It opens
the environment read-only but *with* LMDB's lock file, so its read transaction is registered in
the reader table and the gateway's writer does not reuse the pages being copied, and it copies
inside that one transaction with compaction (free pages are left out): the copy is the store as
one commit left it. It must run in another process than the gateway (``moments store backup``):
py-lmdb refuses to open an environment twice in one process, because LMDB's fcntl locks belong
to the process and closing the second handle would drop the first one's, and a copy beside the
Writer in the gateway's own process would race the Writer's map growth.

A backup is a folder::

    DEST/data.mdb        the compacted copy
    DEST/manifest.json   {"manifest_version": 1, "schema_version": 1, "created_at": 1.7e9,
                          "size": 131072, "sha256": "..."}

It is built in a hidden sibling folder and renamed into place, so ``DEST`` either holds a
complete backup or is what it was before (absent, or an empty folder).

Restore. :func:`restore` checks the manifest, copies ``data.mdb`` next to the store while
hashing it and refuses it unless size and SHA-256 match, checks that the copy opens and has the
manifest's schema version, then moves the current store aside (``store.before-restore-<UTC>``,
never deleted) and renames the copy into place: the store folder is always either the old store
or the complete new one. Without ``force`` it only fills an empty place and refuses to replace a
store that holds data.

Before the copy goes into place, its outbox sequence (``sync/outbox_seq``) is moved up to at
least the restore's time in milliseconds, and past the replaced store's own counter (a box
without a battery-backed clock may start with its clock behind until NTP sets it). HQ keeps
each event once by ``(store, seq)``: the store that ran between the backup and the restore used
sequences the copy does not know about, and events numbered again from the copy's counter
would be taken at HQ for those and dropped.
Sequences are far below a millisecond clock (a store makes far fewer than 1,000 events a
second, and the same holds after an earlier restore's jump), so the new events' sequences were
never used; the events already in the copy's outbox keep theirs, and HQ drops the ones it has.

The lock. The gateway holds :func:`hold_lock` on its store for as long as it has the store
open (enter it before ``Database.open()``, leave it after ``Database.close()``)::

    with hold_lock(config.data_path / "store"):
        ...  # open the Database, run, close it

It is an ``flock`` on ``moments.lock`` in the store folder: advisory, and released by the kernel
when the process ends, so a crashed gateway leaves no stale lock. :func:`restore` takes the same
lock without waiting and fails when it is held. As a second line it also takes, without
waiting, an exclusive fcntl lock on the first byte of LMDB's ``lock.mdb``: every process that
has the environment open (a gateway that predates the lock file, ``moments sim``, a backup in
progress) holds a shared lock there. Restore must therefore not be called from a process that
itself has the store open. Both locks are held until the new store is in place, and the new
store's ``moments.lock`` is locked before it is renamed in, so a gateway starting meanwhile
fails instead of opening a store that is being replaced.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import shutil
import struct
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Final

import lmdb
import msgspec

from gateway.clock import Clock, SystemClock
from gateway.errors import StoreError
from gateway.store import codec
from gateway.store.database import (
    DATABASES,
    OUTBOX_SEQ_KEY,
    open_readonly,
    parse_schema_version,
)

__all__ = [
    "DATA_FILE",
    "LOCK_FILE",
    "MANIFEST_FILE",
    "MANIFEST_VERSION",
    "BackupInfo",
    "RestoreInfo",
    "backup",
    "hold_lock",
    "lmdb_unused",
    "restore",
]

log = logging.getLogger(__name__)

DATA_FILE: Final = "data.mdb"
MANIFEST_FILE: Final = "manifest.json"
LOCK_FILE: Final = "moments.lock"
MANIFEST_VERSION: Final = 1
_LMDB_LOCK_FILE: Final = "lock.mdb"
_SCHEMA_KEY: Final = b"schema_version"
_U64: Final = struct.Struct(">Q")
_CHUNK: Final = 1 << 20


@dataclass(frozen=True, slots=True)
class BackupInfo:
    """What a backup folder holds, as its manifest describes it."""

    path: Path
    schema_version: int
    created_at: float
    size: int
    sha256: str

    def to_json(self) -> dict[str, object]:
        return {
            "path": str(self.path),
            "schema_version": self.schema_version,
            "created_at": self.created_at,
            "size": self.size,
            "sha256": self.sha256,
        }


@dataclass(frozen=True, slots=True)
class RestoreInfo:
    """What a restore did: ``previous`` is where the replaced store was moved, if any."""

    store: Path
    source: Path
    previous: Path | None
    schema_version: int
    size: int
    sha256: str
    outbox_seq: int = 0  # the outbox's last sequence now (the next event gets one more)

    def to_json(self) -> dict[str, object]:
        return {
            "store": str(self.store),
            "source": str(self.source),
            "previous": None if self.previous is None else str(self.previous),
            "schema_version": self.schema_version,
            "size": self.size,
            "sha256": self.sha256,
            "outbox_seq": self.outbox_seq,
        }


class _ManifestVersion(msgspec.Struct, frozen=True):
    manifest_version: int


class _Manifest(msgspec.Struct, frozen=True, kw_only=True):
    """The one schema of ``manifest.json``; encoded and decoded only here."""

    manifest_version: int = MANIFEST_VERSION
    schema_version: Annotated[int, msgspec.Meta(ge=1)]
    created_at: float
    size: Annotated[int, msgspec.Meta(ge=0)]
    sha256: Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{64}$")]


# ----- the lock -----


@contextlib.contextmanager
def hold_lock(db_path: Path) -> Iterator[None]:
    """Hold the store's advisory lock (``db_path / "moments.lock"``) or fail at once with a
    :class:`StoreError` when another process, or another holder in this one, has it."""
    try:
        db_path.mkdir(parents=True, exist_ok=True)
        fd = os.open(db_path / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise StoreError(f"cannot open the lock of the store at {db_path}: {exc}") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise StoreError(
                f"store at {db_path} is in use: {LOCK_FILE} is held{_holder(fd)}; "
                "stop the gateway first"
            ) from exc
        except OSError as exc:
            raise StoreError(f"cannot lock the store at {db_path}: {exc}") from exc
        with contextlib.suppress(OSError):  # the pid is only a hint for the message above
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        yield
    finally:
        os.close(fd)  # releases the flock


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return ""
    return f" by process {text}" if text.isdigit() else ""


@contextlib.contextmanager
def lmdb_unused(db_path: Path) -> Iterator[None]:
    """Hold LMDB's own lock byte exclusively: fails while any process has the store open."""
    try:
        fd = os.open(db_path / _LMDB_LOCK_FILE, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        fd = -1  # never opened by LMDB: nobody can have it open
    except OSError as exc:
        raise StoreError(f"cannot open LMDB's lock file in {db_path}: {exc}") from exc
    if fd < 0:
        yield
        return
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0)
        except OSError as exc:
            if exc.errno not in (errno.EACCES, errno.EAGAIN):
                raise StoreError(f"cannot lock LMDB's lock file in {db_path}: {exc}") from exc
            raise StoreError(
                f"store at {db_path} is open in another process (LMDB's {_LMDB_LOCK_FILE} is "
                "in use): stop the gateway and any other moments command first"
            ) from exc
        yield
    finally:
        os.close(fd)


# ----- backup -----


def backup(db_path: Path, dest: Path, *, clock: Clock | None = None) -> BackupInfo:
    """Copy the store at ``db_path``, live or not, into the new folder ``dest`` (absent or
    empty) with its manifest, and return what was written. Run it in another process than
    the gateway's."""
    now = (clock or SystemClock()).now()
    if not (db_path / DATA_FILE).is_file():
        raise StoreError(f"no store at {db_path}: {DATA_FILE} is missing")
    _check_destination(db_path, dest)
    try:
        env = open_readonly(db_path, registered=True)
    except lmdb.Error as exc:
        raise StoreError(f"cannot open the store at {db_path} for a backup: {exc}") from exc
    try:
        try:
            staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
        except OSError as exc:
            raise StoreError(f"cannot create a folder next to {dest}: {exc}") from exc
        try:
            info = _write_backup(env, staging, dest, now)
        finally:
            shutil.rmtree(staging, ignore_errors=True)  # gone already when all went well
    finally:
        env.close()
    log.info("store backed up", extra={"size": info.size, "schema_version": info.schema_version})
    return info


def _check_destination(db_path: Path, dest: Path) -> None:
    if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
        raise StoreError(f"backup destination {dest} exists and is not a folder")
    if dest.is_dir() and any(dest.iterdir()):
        raise StoreError(f"backup destination {dest} exists and is not empty")
    if dest.resolve().is_relative_to(db_path.resolve()):
        raise StoreError(f"backup destination {dest} is inside the store folder {db_path}")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create the folder of {dest}: {exc}") from exc


def _write_backup(env: lmdb.Environment, staging: Path, dest: Path, now: float) -> BackupInfo:
    try:
        schema_version = _copy(env, staging / DATA_FILE)
        digest, size = _hash(staging / DATA_FILE)
        manifest = _Manifest(
            schema_version=schema_version, created_at=now, size=size, sha256=digest
        )
        _write_new(staging / MANIFEST_FILE, msgspec.json.format(msgspec.json.encode(manifest)))
        _fsync_dir(staging)
    except OSError as exc:
        raise StoreError(f"cannot write the backup next to {dest}: {exc}") from exc
    try:
        staging.rename(dest)  # replaces dest only if it is an empty folder
        _fsync_dir(dest.parent)
    except OSError as exc:
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
            raise StoreError(f"backup destination {dest} is not empty any more") from exc
        raise StoreError(f"cannot move the backup into {dest}: {exc}") from exc
    return BackupInfo(dest, schema_version, now, size, digest)


def _copy(env: lmdb.Environment, target: Path) -> int:
    """Copy the environment into ``target`` in one read transaction; its schema version."""
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        for attempt in range(2):
            try:
                with env.begin(buffers=False) as txn:
                    meta = env.open_db(b"meta", txn=txn, create=False)
                    raw = txn.get(_SCHEMA_KEY, db=meta)
                    env.copyfd(fd, compact=True, txn=txn)
                break
            except lmdb.MapResizedError:
                # The gateway grew the map between our open and our read: adopt its size.
                if attempt:
                    raise
                env.set_mapsize(0)
            except lmdb.NotFoundError as exc:
                raise StoreError("not a gateway store: it has no meta database") from exc
        os.fsync(fd)
    except lmdb.Error as exc:
        raise StoreError(f"copy of the store failed: {exc}") from exc
    finally:
        os.close(fd)
    return parse_schema_version(raw, "the copied store")


# ----- restore -----


def restore(src: Path, db_path: Path, *, force: bool, clock: Clock | None = None) -> RestoreInfo:
    """Put the backup in ``src`` in place of the store at ``db_path`` (see the module notes);
    ``force`` allows replacing a store that holds data, which is moved aside, not deleted."""
    now = (clock or SystemClock()).now()
    manifest = _read_manifest(src)
    _check_source(src, manifest)
    if db_path.exists() and not db_path.is_dir():
        raise StoreError(f"{db_path} exists and is not a store folder")
    try:
        db_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create the folder of {db_path}: {exc}") from exc
    with contextlib.ExitStack() as stack:
        if db_path.exists():
            stack.enter_context(hold_lock(db_path))
            stack.enter_context(lmdb_unused(db_path))
            if (db_path / DATA_FILE).exists() and not force:
                raise StoreError(
                    f"a store already exists at {db_path}: use --force to replace it "
                    "(it is moved aside, not deleted)"
                )
        try:
            staging = Path(tempfile.mkdtemp(prefix=f".{db_path.name}.restore-", dir=db_path.parent))
        except OSError as exc:
            raise StoreError(f"cannot create a folder next to {db_path}: {exc}") from exc
        stack.callback(shutil.rmtree, staging, ignore_errors=True)  # gone when all went well
        stack.enter_context(hold_lock(staging))
        _stage(src, staging, manifest)
        # The replaced store's counter too: the wall clock of a box without a battery-backed
        # clock may be behind an earlier restore's jump until NTP has set it.
        replaced = _outbox_seq(db_path) if (db_path / DATA_FILE).exists() else 0
        outbox_seq = _advance_outbox(staging, max(int(now * 1000), replaced + 1))
        previous = _swap(db_path, staging, now)
    log.info(
        "store restored",
        extra={"size": manifest.size, "schema_version": manifest.schema_version},
    )
    return RestoreInfo(
        db_path,
        src,
        previous,
        manifest.schema_version,
        manifest.size,
        manifest.sha256,
        outbox_seq,
    )


def _read_manifest(src: Path) -> _Manifest:
    path = src / MANIFEST_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise StoreError(f"{src} is not a backup: it has no {MANIFEST_FILE}") from exc
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {exc}") from exc
    try:
        version = msgspec.json.decode(data, type=_ManifestVersion).manifest_version
        if version > MANIFEST_VERSION:
            raise StoreError(
                f"{path} has manifest version {version}, newer than this gateway's "
                f"{MANIFEST_VERSION}: upgrade the gateway"
            )
        return msgspec.json.decode(data, type=_Manifest)
    except msgspec.DecodeError as exc:
        raise StoreError(f"{path} is not a valid backup manifest: {exc}") from exc


def _check_source(src: Path, manifest: _Manifest) -> None:
    if manifest.schema_version > codec.CURRENT_VERSION:
        raise StoreError(
            f"backup in {src} has schema {manifest.schema_version}, newer than this gateway's "
            f"{codec.CURRENT_VERSION}: upgrade the gateway"
        )
    try:
        size = (src / DATA_FILE).stat().st_size
    except FileNotFoundError as exc:
        raise StoreError(f"backup in {src} has no {DATA_FILE}") from exc
    except OSError as exc:
        raise StoreError(f"cannot read the backup in {src}: {exc}") from exc
    if size != manifest.size:
        raise StoreError(
            f"backup in {src} is damaged: {DATA_FILE} has {size} bytes, "
            f"the manifest says {manifest.size}"
        )


def _stage(src: Path, staging: Path, manifest: _Manifest) -> None:
    """Copy and verify the backup into ``staging``: what is renamed into place is what was
    checked."""
    try:
        digest, size = _copy_hashing(src / DATA_FILE, staging / DATA_FILE)
        _fsync_dir(staging)
    except OSError as exc:
        raise StoreError(f"cannot copy the backup from {src}: {exc}") from exc
    if (digest, size) != (manifest.sha256, manifest.size):
        raise StoreError(
            f"backup in {src} is damaged: the SHA-256 of {DATA_FILE} does not match its "
            "manifest; nothing was changed"
        )
    raw = _read_value(staging, b"meta", _SCHEMA_KEY, f"backup in {src} is not a gateway store")
    version = parse_schema_version(raw, f"backup in {src}")
    if version != manifest.schema_version:
        raise StoreError(
            f"backup in {src} has schema {version}, its manifest says {manifest.schema_version}"
        )


def _read_value(path: Path, table: bytes, key: bytes, what: str) -> bytes | None:
    """One value of the store at ``path``, which nothing writes meanwhile (read without
    LMDB's lock file); None when the table or the key is absent. StoreError says ``what``."""
    try:
        env = open_readonly(path, registered=False)
    except lmdb.Error as exc:
        raise StoreError(f"{what}: {exc}") from exc
    try:
        with env.begin(buffers=False) as txn:
            try:
                handle = env.open_db(table, txn=txn, create=False)
            except lmdb.NotFoundError:
                return None
            raw = txn.get(key, db=handle)
            return None if raw is None else bytes(raw)
    except lmdb.Error as exc:
        raise StoreError(f"{what}: {exc}") from exc
    finally:
        env.close()


def _outbox_seq(db_path: Path) -> int:
    """The outbox's last sequence in the store at ``db_path`` (0: none; the caller holds
    the store's locks, so nothing writes it meanwhile)."""
    raw = _read_value(
        db_path, b"sync", OUTBOX_SEQ_KEY, f"cannot read the outbox sequence of {db_path}"
    )
    return 0 if raw is None or len(raw) != _U64.size else int(_U64.unpack(raw)[0])


def _advance_outbox(staging: Path, floor: int) -> int:
    """Move the staged copy's outbox sequence up to ``floor`` (module notes); returns the
    sequence it holds after."""
    # A compacted copy has no free pages: room for the one page the write needs.
    map_size = (staging / DATA_FILE).stat().st_size + (16 << 20)
    try:
        env = lmdb.open(
            str(staging),
            create=False,
            lock=False,
            map_size=map_size,
            max_dbs=len(DATABASES) + 4,
        )
    except lmdb.Error as exc:
        raise StoreError(f"the restored copy does not open for writing: {exc}") from exc
    try:
        with env.begin(write=True) as txn:
            sync = env.open_db(b"sync", txn=txn)
            raw = txn.get(OUTBOX_SEQ_KEY, db=sync)
            seq = 0 if raw is None or len(raw) != _U64.size else int(_U64.unpack(raw)[0])
            if seq < floor:
                seq = floor
                txn.put(OUTBOX_SEQ_KEY, _U64.pack(seq), db=sync)
        env.sync(True)
    except lmdb.Error as exc:
        raise StoreError(f"cannot move the restored outbox's sequence on: {exc}") from exc
    finally:
        env.close()
    return seq


def _swap(db_path: Path, staging: Path, now: float) -> Path | None:
    previous: Path | None = None
    try:
        if db_path.exists():
            previous = _aside_path(db_path, now)
            db_path.rename(previous)
        staging.rename(db_path)
        _fsync_dir(db_path.parent)
    except OSError as exc:
        where = f"; the previous store is in {previous}" if previous is not None else ""
        raise StoreError(
            f"cannot put the restored store in place at {db_path}: {exc}{where}"
        ) from exc
    return previous


def _aside_path(db_path: Path, now: float) -> Path:
    stamp = datetime.fromtimestamp(now, UTC).strftime("%Y%m%dT%H%M%SZ")
    base = f"{db_path.name}.before-restore-{stamp}"
    candidate = db_path.with_name(base)
    n = 1
    while candidate.exists():
        n += 1
        candidate = db_path.with_name(f"{base}-{n}")
    return candidate


# ----- files -----


def _hash(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _copy_hashing(source: Path, target: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with source.open("rb") as fh, open(fd, "wb", closefd=False) as out:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
        os.fsync(fd)
    finally:
        os.close(fd)
    return digest.hexdigest(), size


def _write_new(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        with open(fd, "wb", closefd=False) as out:
            out.write(data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
