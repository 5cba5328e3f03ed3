"""HQ's own LMDB (``--data DIR``): sequences, the log of signed messages, the latest records,
and the events received from stores.

Keys are UTF-8 parts joined by NUL; ``SEQ`` is 8 bytes big-endian, so keys sort by sequence.

==========  ===============================  ===========================================
database    key                              value
==========  ===============================  ===========================================
``seq``     store NUL stream                 the last sequence issued (8 bytes BE)
``log``     store NUL stream NUL SEQ         the signed message exactly as sent
``state``   store NUL stream NUL id          the record's JSON as HQ last sent it (for
                                             ``config``, id is the message's SEQ and position)
``events``  store NUL SEQ                    the event's type: the idempotency key, seen
``counts``  name                             a counter (8 bytes BE)
==========  ===============================  ===========================================

Issuing is one write transaction: read the stream's last sequence, number and seal the new
messages, append them to the log, apply them to ``state`` the way a store applies them
(put, delete; a snapshot replaces the stream; a config put replaces the config), drop log
entries older than ``keep``, record the new last sequence. A message is therefore logged
before it is sent: a store that misses it sees a gap with the next one and gets it back by
resync. ``state`` is what a store that applied everything holds; a resync from before the
oldest kept message is answered with a snapshot of it. A snapshot of the ``keys`` stream
always lists the key that signs it (a store revokes the keys a keys snapshot leaves out).

Several processes may open the same folder (LMDB locks); one process opens it once. The
``Ledger`` owns the environment and one worker thread, ``hq-ledger``: async callers run every
operation there through :meth:`Ledger.run`, so no LMDB call (nor its fsync) blocks the loop.
"""

from __future__ import annotations

import asyncio
import secrets
import struct
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, TypeVar, cast

import lmdb
import msgspec

from gateway.clock import Clock, SystemClock
from gateway.errors import StoreError
from gateway.hq import records as rec
from gateway.hq.defaults import DEFAULT_KEEP
from gateway.hq.keys import Signer
from gateway.sync.envelope import Event, Message

__all__ = ["Answer", "Issued", "Ledger"]

T = TypeVar("T")

DEFAULT_MAP_SIZE: Final = 4 << 30
_DATABASES: Final = (b"seq", b"log", b"state", b"events", b"counts")
_SEQ: Final = struct.Struct(">Q")
_SEP: Final = b"\x00"

_encoder: Final = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class Issued:
    """Messages just numbered, sealed and logged for one store's stream, in order."""

    store: str
    stream: str
    first_seq: int
    last_seq: int
    wires: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Answer:
    """What to send a store that asked for ``stream`` after ``since``."""

    kind: Literal["replay", "snapshot", "empty"]
    last_seq: int
    wires: tuple[bytes, ...]


class Ledger:
    """Owns HQ's LMDB environment and its worker thread. ``open()`` does the I/O."""

    def __init__(
        self,
        path: Path,
        *,
        keep: int = DEFAULT_KEEP,
        map_size: int = DEFAULT_MAP_SIZE,
        clock: Clock | None = None,
    ) -> None:
        if keep < 1:
            raise ValueError("keep must be at least 1")
        self._path = path
        self._keep = keep
        self._map_size = map_size
        self._clock = clock or SystemClock()
        self._env: Any = None
        self._dbs: dict[bytes, Any] = {}
        self._worker: ThreadPoolExecutor | None = None

    @property
    def keep(self) -> int:
        return self._keep

    # ----- life -----

    def open(self) -> None:
        try:
            self._path.mkdir(parents=True, exist_ok=True)
            env = lmdb.open(
                str(self._path),
                map_size=self._map_size,
                max_dbs=len(_DATABASES),
                subdir=True,
                sync=True,
                metasync=True,
                writemap=False,
                readahead=False,
            )
        except (lmdb.Error, OSError) as exc:
            raise StoreError(f"cannot open HQ data at {self._path}: {exc}") from exc
        try:
            env.reader_check()
            with env.begin(write=True) as txn:
                self._dbs = {name: env.open_db(name, txn=txn, create=True) for name in _DATABASES}
        except lmdb.Error as exc:
            env.close()
            raise StoreError(f"cannot initialise HQ data at {self._path}: {exc}") from exc
        self._env = env
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hq-ledger")

    def close(self) -> None:
        if self._worker is not None:
            self._worker.shutdown(wait=True)
            self._worker = None
        if self._env is not None:
            self._env.close()
            self._env = None
            self._dbs = {}

    def __enter__(self) -> Ledger:
        self.open()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    async def run(self, operation: Callable[[], T]) -> T:
        """Run a ledger operation on the ledger's own thread."""
        if self._worker is None:
            raise StoreError("HQ data is not open")
        return await asyncio.get_running_loop().run_in_executor(self._worker, operation)

    # ----- issuing (HQ → store) -----

    def issue_delta(
        self,
        store: str,
        stream: str,
        op: rec.Op,
        records: Sequence[dict[str, Any]],
        signer: Signer,
        *,
        batch: int,
    ) -> Issued:
        """Number, seal and log ``records`` as delta messages of ``batch`` records at most."""
        planned = rec.delta_bodies(stream, op, records, batch)
        with self._write() as txn:
            return self._issue(txn, store, stream, planned, signer)

    def issue_snapshot(
        self,
        store: str,
        stream: str,
        signer: Signer,
        *,
        records: Sequence[dict[str, Any]] | None = None,
        batch: int,
    ) -> Issued:
        """A whole snapshot of ``records`` (or of HQ's current state of the stream when
        ``None``), numbered, sealed and logged in one transaction."""
        with self._write() as txn:
            if records is None:
                records = list(self._state(txn, store, stream))
            if stream == "keys" and all(r["key_id"] != signer.key_id for r in records):
                records = [signer.record(), *records]
            first = self._last(txn, store, stream) + 1
            snapshot = f"{stream}-{first}-{secrets.token_hex(4)}"
            planned = rec.snapshot_bodies(snapshot, records, first, batch)
            return self._issue(txn, store, stream, planned, signer)

    def _issue(
        self, txn: Any, store: str, stream: str, planned: Sequence[rec.Planned], signer: Signer
    ) -> Issued:
        rec.check_address(store, stream)
        last = self._last(txn, store, stream)
        issued_at = round(self._clock.now() * 1000)
        wires: list[bytes] = []
        log = self._dbs[b"log"]
        for offset, (kind, body) in enumerate(planned, start=1):
            seq = last + offset
            message = Message(
                store=store,
                stream=cast(Any, stream),
                seq=seq,
                kind=kind,
                issued_at=issued_at,
                body=body,
            )
            wire = signer.seal(message)
            txn.put(_log_key(store, stream, seq), wire, db=log)
            self._apply(txn, store, stream, seq, kind=kind, body=body)
            wires.append(wire)
        new_last = last + len(planned)
        txn.put(_join(store, stream), _SEQ.pack(new_last), db=self._dbs[b"seq"])
        self._trim(txn, store, stream, new_last - self._keep)
        return Issued(store, stream, last + 1, new_last, tuple(wires))

    def _apply(
        self, txn: Any, store: str, stream: str, seq: int, *, kind: str, body: dict[str, Any]
    ) -> None:
        """Bring HQ's state of the stream to what a store holds once it applied this."""
        state = self._dbs[b"state"]
        config = stream == rec.CONFIG_STREAM
        put = kind == "snapshot_item" or (kind == "delta" and body["op"] == "put")
        if kind == "snapshot_begin" or (config and kind == "delta"):
            self._delete_prefix(txn, state, _join(store, stream) + _SEP)
        if put:
            for position, record in enumerate(body["records"]):
                ident = f"{seq:020d}.{position:06d}" if config else rec.record_id(stream, record)
                txn.put(_join(store, stream, ident), _encoder.encode(record), db=state)
        elif kind == "delta":
            for item in body["records"]:
                txn.delete(_join(store, stream, item["id"]), db=state)

    def _trim(self, txn: Any, store: str, stream: str, up_to: int) -> None:
        """Drop this stream's log entries with ``seq <= up_to``."""
        if up_to < 1:
            return
        prefix = _join(store, stream) + _SEP
        cursor = txn.cursor(db=self._dbs[b"log"])
        if not cursor.set_range(prefix):
            return
        while True:
            key = cursor.key()
            if not key.startswith(prefix) or _SEQ.unpack(key[len(prefix) :])[0] > up_to:
                return
            if not cursor.delete():
                return

    # ----- resync (store → HQ) -----

    def answer_resync(
        self, store: str, stream: str, since: int, signer: Signer, *, batch: int
    ) -> Answer:
        """The logged messages after ``since`` when all are still kept (re-sealed by the
        current key when another signed them), else a new snapshot of the stream."""
        with self._read() as txn:
            last = self._last(txn, store, stream)
            if since >= last:
                return Answer("empty", last, ())
            logged = self._logged_after(txn, store, stream, since)
        if logged is not None:
            return Answer("replay", last, tuple(signer.reseal(wire) for wire in logged))
        issued = self.issue_snapshot(store, stream, signer, batch=batch)
        return Answer("snapshot", issued.last_seq, issued.wires)

    def _logged_after(self, txn: Any, store: str, stream: str, since: int) -> list[bytes] | None:
        prefix = _join(store, stream) + _SEP
        cursor = txn.cursor(db=self._dbs[b"log"])
        if not cursor.set_range(prefix + _SEQ.pack(since + 1)):
            return None
        out: list[bytes] = []
        expected = since + 1
        for key, value in cursor:
            if not key.startswith(prefix):
                break
            if _SEQ.unpack(key[len(prefix) :])[0] != expected:
                return None
            out.append(value)
            expected += 1
        return out or None

    # ----- events (store → HQ) -----

    def record_events(
        self,
        events: Sequence[Event],
        write_out: Callable[[list[Event]], None] | None = None,
    ) -> list[bool]:
        """Remember each event by its idempotency key ``(store, seq)``; ``True`` for the ones
        not seen before (they are counted; duplicates are counted as such). ``write_out``
        receives the new events before the transaction commits: if it fails, nothing is
        remembered and the broker's redelivery is new again, so no event is counted without
        having been written out."""
        fresh: list[bool] = []
        counts: dict[str, int] = {}
        with self._write() as txn:
            db = self._dbs[b"events"]
            for event in events:
                key = event.store.encode() + _SEP + _SEQ.pack(event.seq)
                new = bool(txn.put(key, event.type.encode(), db=db, overwrite=False))
                fresh.append(new)
                for name in (f"events.{event.type}", "events") if new else ("duplicates",):
                    counts[name] = counts.get(name, 0) + 1
            self._add_counts(txn, counts)
            new_events = [event for event, new in zip(events, fresh, strict=True) if new]
            if write_out is not None and new_events:
                write_out(new_events)
        return fresh

    def _add_counts(self, txn: Any, counts: dict[str, int]) -> None:
        db = self._dbs[b"counts"]
        for name, n in counts.items():
            old = txn.get(name.encode(), db=db)
            txn.put(name.encode(), _SEQ.pack(n + (_SEQ.unpack(old)[0] if old else 0)), db=db)

    # ----- reading -----

    def counts(self) -> dict[str, int]:
        with self._read() as txn:
            cursor = txn.cursor(db=self._dbs[b"counts"])
            return {key.decode(): _SEQ.unpack(value)[0] for key, value in cursor}

    def last_seq(self, store: str, stream: str) -> int:
        with self._read() as txn:
            return self._last(txn, store, stream)

    def kept(self, store: str, stream: str) -> list[int]:
        """The sequences still in the log of a store's stream."""
        prefix = _join(store, stream) + _SEP
        with self._read() as txn:
            cursor = txn.cursor(db=self._dbs[b"log"])
            if not cursor.set_range(prefix):
                return []
            out: list[int] = []
            for key in cursor.iternext(keys=True, values=False):
                if not key.startswith(prefix):
                    break
                out.append(_SEQ.unpack(key[len(prefix) :])[0])
            return out

    def records(self, store: str, stream: str) -> list[dict[str, Any]]:
        """HQ's current state of a store's stream."""
        with self._read() as txn:
            return list(self._state(txn, store, stream))

    def stores(self) -> list[str]:
        """Every store HQ has issued a message to."""
        with self._read() as txn:
            cursor = txn.cursor(db=self._dbs[b"seq"])
            found = {key.split(_SEP, 1)[0].decode() for key in cursor.iternext(values=False)}
        return sorted(found)

    # ----- helpers -----

    def _state(self, txn: Any, store: str, stream: str) -> Iterator[dict[str, Any]]:
        prefix = _join(store, stream) + _SEP
        cursor = txn.cursor(db=self._dbs[b"state"])
        if not cursor.set_range(prefix):
            return
        for key, value in cursor:
            if not key.startswith(prefix):
                return
            record: dict[str, Any] = msgspec.json.decode(value)
            yield record

    def _last(self, txn: Any, store: str, stream: str) -> int:
        value = txn.get(_join(store, stream), db=self._dbs[b"seq"])
        return 0 if value is None else int(_SEQ.unpack(value)[0])

    @staticmethod
    def _delete_prefix(txn: Any, db: Any, prefix: bytes) -> None:
        cursor = txn.cursor(db=db)
        if not cursor.set_range(prefix):
            return
        while cursor.key().startswith(prefix):
            if not cursor.delete():
                return

    def _env_or_fail(self) -> Any:
        if self._env is None:
            raise StoreError("HQ data is not open")
        return self._env

    def _write(self) -> _Txn:
        return _Txn(self._env_or_fail(), write=True, path=self._path)

    def _read(self) -> _Txn:
        return _Txn(self._env_or_fail(), write=False, path=self._path)


class _Txn:
    """An LMDB transaction whose ``lmdb.Error`` leaves as ``StoreError`` (the one boundary)."""

    __slots__ = ("_env", "_path", "_txn", "_write")

    def __init__(self, env: Any, *, write: bool, path: Path) -> None:
        self._env = env
        self._write = write
        self._path = path
        self._txn: Any = None

    def __enter__(self) -> Any:
        try:
            self._txn = self._env.begin(write=self._write, buffers=False)
        except lmdb.Error as exc:
            raise StoreError(f"HQ data at {self._path}: {exc}") from exc
        return self._txn

    def __exit__(self, exc_type: object, exc: BaseException | None, _tb: object) -> None:
        txn, self._txn = self._txn, None
        if exc is not None:
            txn.abort()
            if isinstance(exc, lmdb.Error):
                raise StoreError(f"HQ data at {self._path}: {exc}") from exc
            return
        try:
            txn.commit()
        except lmdb.Error as failure:
            raise StoreError(f"HQ data at {self._path}: cannot commit: {failure}") from failure


def _join(*parts: str) -> bytes:
    return _SEP.join(part.encode() for part in parts)


def _log_key(store: str, stream: str, seq: int) -> bytes:
    return _join(store, stream) + _SEP + _SEQ.pack(seq)
