"""The LMDB environment: opened once by the composition root, read from the event loop.

Reads are short synchronous read transactions on the event-loop thread (microseconds; never
held across an ``await``). Writes go through the single :class:`~gateway.store.writer.Writer`
thread. Durable settings only: ``sync`` and ``metasync`` on, no ``writemap``, so an
acknowledged write survives a power cut.

Named databases (keys are UTF-8):

==============  ====================  ===========================================
database        key                   value
==============  ====================  ===========================================
``profiles``    shopper id            :class:`ProfileRecord`
``consents``    shopper id            :class:`ConsentRecord`
``offers``      offer id              :class:`OfferRecord`
``identities``  beacon identity key   :class:`IdentityRecord` (see ``gateway.identity``)
``keys``        ``eid:``/``irk:`` id  :class:`EidKeyRecord`, :class:`IrkRecord`
``meta``        name                  raw bytes (schema version, clocks, watermarks, the
                                      app-token secret, the EID resolver's private key)
``sync``        stream name           last applied sequence and state (``gateway/sync``)
``keyring``     key id                trusted HQ signing keys
``staging``     snapshot/stream/id    snapshot items waiting for their ``snapshot_end``
``tombstones``  kind/id               erasures (no personal data), kept past the longest outage
``outbox``      sequence (8 bytes BE) events waiting for HQ's receipt
``templates``   template id           templates published by HQ
``consent_ledger`` shopper/hlc/purpose  every consent decision, append-only (proof)
``preferences`` shopper id            the shopper's contact preferences
``decisions``   shopper/hlc           decision records (what was chosen and why)
``counters``    shopper/name/window   caps: messages per visit and per day
``tokens``      ``jti:``/``gen:``/``link:`` revoked tokens, per-subject token generations,
                                      one-time link codes (hashed)
==============  ====================  ===========================================

A put of a shopper's profile, consent, keys or identities is a no-op while a
:class:`Tombstone` of that shopper is kept (``shopper_of`` says whose a record is): an erasure
is never undone by a late write, from HQ or from this store.

``meta/identity_generation`` counts the commits that changed who can be recognised (a
consent, an identity or a key), in the same transaction as the change, from this process or
any other; the identity resolvers reload when it moves.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import lmdb

from gateway.errors import StoreError
from gateway.store import codec
from gateway.store.records import (
    ConsentEntry,
    ConsentRecord,
    DecisionRecord,
    EidKeyRecord,
    HqKeyRecord,
    IdentityRecord,
    IrkRecord,
    OfferRecord,
    PreferencesRecord,
    ProfileRecord,
    SyncState,
    TemplateRecord,
    Tombstone,
)

__all__ = [
    "DATABASES",
    "HQ_CONFIG_KEY",
    "Database",
    "decision_key",
    "delete_under",
    "ledger_key",
    "open_readonly",
    "parse_schema_version",
    "shopper_keys",
    "shopper_of",
    "table_and_key",
    "tombstone_key",
]

log = logging.getLogger(__name__)

DATABASES: Final = (
    "profiles",
    "consents",
    "offers",
    "identities",
    "keys",
    "meta",
    # HQ sync and the outbox (gateway/sync/): last applied sequence per stream, trusted HQ
    # signing keys, snapshot staging, erasure tombstones, outgoing events, HQ templates.
    "sync",
    "keyring",
    "staging",
    "tombstones",
    "outbox",
    "templates",
    # The shopper in control (consent ledger, preferences), decisions, caps, app tokens.
    "consent_ledger",
    "preferences",
    "decisions",
    "counters",
    "tokens",
)
_TABLE_OF: Final[dict[type[Any], str]] = {
    ProfileRecord: "profiles",
    ConsentRecord: "consents",
    OfferRecord: "offers",
    IdentityRecord: "identities",
    EidKeyRecord: "keys",
    IrkRecord: "keys",
    TemplateRecord: "templates",
    HqKeyRecord: "keyring",
    Tombstone: "tombstones",
    SyncState: "sync",
    ConsentEntry: "consent_ledger",
    PreferencesRecord: "preferences",
    DecisionRecord: "decisions",
}
_SCHEMA_KEY: Final = b"schema_version"
_IDENTITY_GENERATION: Final = b"identity_generation"
_IDENTITY_KINDS: Final = (ConsentRecord, IdentityRecord, EidKeyRecord, IrkRecord)
_HLC: Final = struct.Struct(">Q")
HQ_CONFIG_KEY: Final = b"hq_config"
OUTBOX_SEQ_KEY: Final = b"outbox_seq"
"""In ``sync``: the outbox's last sequence (8 bytes, big-endian; ``gateway.sync.outbox``)."""
"""``meta`` key of the body of the last applied message of HQ's ``config`` stream (JSON)."""


def open_readonly(path: Path, *, registered: bool) -> lmdb.Environment:
    """The store at ``path`` opened read-only from outside the gateway (lmdb.Error when it
    cannot be). ``registered``: through LMDB's lock file, so the read transaction is in the
    reader table and a running gateway's writer keeps its pages (a live store); without it,
    for a store nobody else has open (a staged copy, or under the store's lock)."""
    return lmdb.open(
        str(path),
        readonly=True,
        create=False,
        subdir=True,
        lock=registered,
        readahead=False,
        max_dbs=len(DATABASES) + 4,
    )


def parse_schema_version(raw: bytes | None, where: object) -> int:
    """``meta/schema_version`` as stored (ASCII digits); StoreError naming ``where``."""
    if raw is None:
        raise StoreError(f"{where} is not a gateway store: meta has no schema_version")
    try:
        return int(bytes(raw).decode("ascii"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise StoreError(
            f"{where}: meta/schema_version holds {bytes(raw)!r}, not a number"
        ) from exc


def table_and_key(record: codec.Record) -> tuple[str, bytes]:
    """Where a record lives: its database and its key."""
    match record:
        case ProfileRecord() | ConsentRecord() | PreferencesRecord():
            key = record.shopper_id
        case OfferRecord():
            key = record.offer_id
        case IdentityRecord():
            key = record.key
        case EidKeyRecord():
            key = f"eid:{record.shopper_id}"
        case IrkRecord():
            key = f"irk:{record.shopper_id}"
        case TemplateRecord():
            key = record.template_id
        case HqKeyRecord():
            key = record.key_id
        case Tombstone():
            return "tombstones", tombstone_key(record.kind, record.id)
        case SyncState():
            key = record.stream
        case ConsentEntry():
            return "consent_ledger", ledger_key(record.shopper_id, record.hlc, record.purpose)
        case DecisionRecord():
            return "decisions", decision_key(record.shopper_id, record.hlc)
    return _TABLE_OF[type(record)], key.encode()


def delete_under(
    txn: Any, handle: Any, prefix: bytes, doomed: Callable[[bytes, bytes], bool]
) -> int:
    """Inside a write transaction: delete the entries under ``prefix`` for which
    ``doomed(key, value)`` says so; returns how many."""
    keys: list[bytes] = []
    with txn.cursor(db=handle) as cursor:
        found = cursor.set_range(prefix)
        while found:
            key = bytes(cursor.key())
            if not key.startswith(prefix):
                break
            if doomed(key, bytes(cursor.value())):
                keys.append(key)
            found = cursor.next()
    for key in keys:
        txn.delete(key, db=handle)
    return len(keys)


def tombstone_key(kind: str, id_: str) -> bytes:
    """The ``tombstones`` key of an erasure: ``kind/id``."""
    return f"{kind}/{id_}".encode()


def ledger_key(shopper_id: str, hlc: int, purpose: str) -> bytes:
    """The ``consent_ledger`` key of a decision: ``shopper \\x00 hlc (8 bytes BE) \\x00
    purpose``, so a shopper's entries are one prefix and come out in clock order."""
    return b"%s\x00%s\x00%s" % (shopper_id.encode(), _HLC.pack(hlc), purpose.encode())


def decision_key(shopper_id: str, hlc: int) -> bytes:
    """The ``decisions`` key of a decision record: ``shopper \\x00 hlc (8 bytes BE)``."""
    return b"%s\x00%s" % (shopper_id.encode(), _HLC.pack(hlc))


def shopper_keys(shopper_id: str) -> tuple[tuple[str, bytes], ...]:
    """Where a shopper's profile, consent and keys live (identities are found by a scan)."""
    return (
        ("profiles", shopper_id.encode()),
        ("consents", shopper_id.encode()),
        ("keys", f"eid:{shopper_id}".encode()),
        ("keys", f"irk:{shopper_id}".encode()),
    )


def shopper_of(record: codec.Record) -> str | None:
    """The shopper whose personal data ``record`` is, or None: what a tombstone blocks."""
    match record:
        case (
            ProfileRecord()
            | ConsentRecord()
            | IdentityRecord()
            | EidKeyRecord()
            | IrkRecord()
            | ConsentEntry()
            | PreferencesRecord()
            | DecisionRecord()
        ):
            return record.shopper_id
        case _:
            return None


class Database:
    """Owns the LMDB environment. ``open()`` does the I/O; the constructor only stores."""

    def __init__(self, path: Path, *, map_size: int) -> None:
        self._path = path
        self._map_size = map_size
        self._env: Any = None
        self._dbs: dict[str, Any] = {}
        # Decoded offers, valid for the transaction id they were read at: any write, from this
        # process or another, moves the id on and the next read decodes afresh.
        self._offers: tuple[int, list[OfferRecord]] = (-1, [])

    @property
    def path(self) -> Path:
        return self._path

    @property
    def env(self) -> Any:
        if self._env is None:
            raise StoreError("store is not open")
        return self._env

    def handle(self, name: str) -> Any:
        return self._dbs[name]

    def open(self, *, older_schema_ok: bool = False) -> None:
        """Open (or create) the environment and its databases. A new store is written at
        the current schema; a store at a newer schema is refused, and so is one at an older
        schema unless ``older_schema_ok`` (only :mod:`gateway.store.migrate` says so: the
        gateway never migrates by itself, see that module)."""
        try:
            self._path.mkdir(parents=True, exist_ok=True)
            env = lmdb.open(
                str(self._path),
                map_size=self._map_size,
                max_dbs=len(DATABASES) + 4,
                subdir=True,
                sync=True,
                metasync=True,
                writemap=False,
                map_async=False,
                readahead=False,
                max_readers=126,
            )
        except (lmdb.Error, OSError) as exc:
            raise StoreError(f"cannot open store at {self._path}: {exc}") from exc
        try:
            stale = env.reader_check()
            if stale:
                log.warning("cleared stale LMDB readers", extra={"stale_readers": stale})
            with env.begin(write=True) as txn:
                for name in DATABASES:
                    self._dbs[name] = env.open_db(name.encode(), txn=txn, create=True)
                meta = self._dbs["meta"]
                version = txn.get(_SCHEMA_KEY, db=meta)
                if version is None:
                    txn.put(_SCHEMA_KEY, str(codec.CURRENT_VERSION).encode(), db=meta)
                else:
                    self._check_schema(
                        parse_schema_version(version, self._path), older_ok=older_schema_ok
                    )
        except lmdb.Error as exc:
            env.close()
            raise StoreError(f"cannot initialise store at {self._path}: {exc}") from exc
        except StoreError:
            env.close()
            raise
        self._env = env

    def _check_schema(self, version: int, *, older_ok: bool) -> None:
        current = codec.CURRENT_VERSION
        if version > current:
            raise StoreError(
                f"store at {self._path} has schema {version}, newer than this "
                f"gateway's {current}: upgrade the gateway"
            )
        if version < current and not older_ok:
            raise StoreError(
                f"store at {self._path} has schema {version}, older than this gateway's "
                f"{current}: stop the gateway and run `moments store migrate` (it takes a "
                "backup first)"
            )

    def schema_version(self, txn: Any) -> int:
        """The store's schema version (``meta/schema_version``) as ``txn`` sees it."""
        return parse_schema_version(txn.get(_SCHEMA_KEY, db=self._dbs["meta"]), self._path)

    def set_schema_version(self, txn: Any, version: int) -> None:
        """Inside a write transaction: record that the store is now at schema ``version``."""
        txn.put(_SCHEMA_KEY, str(version).encode(), db=self._dbs["meta"])

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None
            self._dbs.clear()

    # ----- writes: operations for the Writer thread -----

    def put_op(self, records: list[codec.Record]) -> Callable[[Any], int]:
        """A write operation that stores ``records`` (all or none) and returns how many; the
        records of an erased shopper (a tombstone is kept) are skipped, not counted."""
        encoded = [
            (*table_and_key(r), codec.encode(r), shopper_of(r), isinstance(r, _IDENTITY_KINDS))
            for r in records
        ]

        def put(txn: Any) -> int:
            written = 0
            identity = False
            for table, key, value, shopper, identity_kind in encoded:
                if shopper is not None and self.erased_in(txn, shopper):
                    continue
                txn.put(key, value, db=self._dbs[table])
                written += 1
                identity = identity or identity_kind
            if identity:
                self.bump_identity_generation(txn)
            return written

        return put

    # ----- helpers for write operations (run inside the writer's transaction) -----

    def erased_in(self, txn: Any, shopper_id: str) -> bool:
        """Whether a tombstone of ``shopper_id`` is kept, as seen by ``txn``."""
        found = txn.get(tombstone_key("shopper", shopper_id), db=self._dbs["tombstones"])
        return found is not None

    def bump_identity_generation(self, txn: Any) -> None:
        """Move ``meta/identity_generation`` on, in ``txn``: who can be recognised changed."""
        meta = self._dbs["meta"]
        current = int(txn.get(_IDENTITY_GENERATION, b"0", db=meta))
        txn.put(_IDENTITY_GENERATION, str(current + 1).encode(), db=meta)

    # ----- reads: short read transactions, never across an await -----

    def _get(self, table: str, key: str) -> bytes | None:
        try:
            with self.env.begin(db=self._dbs[table], buffers=False) as txn:
                value: bytes | None = txn.get(key.encode())
                return value
        except lmdb.Error as exc:
            raise StoreError(f"read of {table}/{key} failed: {exc}") from exc

    def profile(self, shopper_id: str) -> ProfileRecord | None:
        raw = self._get("profiles", shopper_id)
        return None if raw is None else codec.decode_as(ProfileRecord, raw)

    def consent(self, shopper_id: str) -> ConsentRecord | None:
        raw = self._get("consents", shopper_id)
        return None if raw is None else codec.decode_as(ConsentRecord, raw)

    def identity(self, key: str) -> IdentityRecord | None:
        raw = self._get("identities", key)
        return None if raw is None else codec.decode_as(IdentityRecord, raw)

    def identity_generation(self) -> int:
        raw = self._get("meta", _IDENTITY_GENERATION.decode())
        return 0 if raw is None else int(raw)

    def _scan(self, table: str) -> list[tuple[bytes, bytes]]:
        try:
            with self.env.begin(db=self._dbs[table], buffers=False) as txn:
                return list(txn.cursor())
        except lmdb.Error as exc:
            raise StoreError(f"scan of {table} failed: {exc}") from exc

    def template(self, template_id: str) -> TemplateRecord | None:
        raw = self._get("templates", template_id)
        return None if raw is None else codec.decode_as(TemplateRecord, raw)

    def sync_state(self, stream: str) -> SyncState:
        """Where HQ stream ``stream`` stands (a fresh state when nothing was applied yet)."""
        raw = self._get("sync", stream)
        return SyncState(stream=stream) if raw is None else codec.decode_as(SyncState, raw)

    def keyring_records(self) -> list[HqKeyRecord]:
        """The HQ signing keys received through the ``keys`` stream, active and revoked."""
        return [codec.decode_as(HqKeyRecord, value) for _key, value in self._scan("keyring")]

    def tombstones(self) -> list[Tombstone]:
        """Every erasure tombstone kept (no personal data)."""
        return [codec.decode_as(Tombstone, value) for _key, value in self._scan("tombstones")]

    def hq_config(self) -> bytes | None:
        """The JSON body of the last applied message of HQ's ``config`` stream, if any."""
        return self._get("meta", HQ_CONFIG_KEY.decode())

    def resolver_keys(self) -> list[EidKeyRecord | IrkRecord]:
        """Every shopper's EID identity key and IRK (for the resolvers; never logged)."""
        try:
            with self.env.begin(db=self._dbs["keys"], buffers=False) as txn:
                rows = list(txn.cursor())
        except lmdb.Error as exc:
            raise StoreError(f"scan of keys failed: {exc}") from exc
        out: list[EidKeyRecord | IrkRecord] = []
        for _key, value in rows:
            record = codec.decode(value)
            if not isinstance(record, EidKeyRecord | IrkRecord):
                raise StoreError(f"unexpected {type(record).__name__} in keys")
            out.append(record)
        return out

    def offers(self) -> list[OfferRecord]:
        """Every offer, decoded once per store change (the list must not be mutated)."""
        try:
            with self.env.begin(db=self._dbs["offers"], buffers=False) as txn:
                txn_id = txn.id()
                if txn_id == self._offers[0]:
                    return self._offers[1]
                rows = list(txn.cursor())
        except lmdb.Error as exc:
            raise StoreError(f"scan of offers failed: {exc}") from exc
        offers = [codec.decode_as(OfferRecord, value) for _key, value in rows]
        self._offers = (txn_id, offers)
        return offers

    def stat(self) -> dict[str, int]:
        try:
            info = self.env.info()
            stat = self.env.stat()
        except lmdb.Error as exc:
            raise StoreError(f"cannot read store statistics: {exc}") from exc
        return {
            "map_size": int(info["map_size"]),
            "used_bytes": int((info["last_pgno"] + 1) * stat["psize"]),
            "readers": int(info["num_readers"]),
        }
