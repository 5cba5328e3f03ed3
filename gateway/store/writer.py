"""The store's single writer: one thread, group commit, the event loop awaits its writes.

Every write is a function of a write transaction. The thread takes the first waiting
operation, then whatever else is already queued (up to ``batch`` operations), runs each in a
nested transaction so that one failing operation aborts alone, and commits them together: one
fsync for the group. Futures are resolved on the event loop only after the commit is durable,
so an acknowledged write survives a power cut.

When the map is full the group is aborted, the map doubles (on the event-loop thread, where no
read transaction can be open at that instant) and the group runs again: no write is lost.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future as ThreadFuture
from typing import Any, Generic, TypeVar

import lmdb

from gateway.errors import StoreError
from gateway.store.database import Database

__all__ = ["WriteOp", "Writer"]

log = logging.getLogger(__name__)

T = TypeVar("T")
WriteOp = Callable[[Any], T]
_STOP = object()


class _Pending(Generic[T]):
    __slots__ = ("future", "op")

    def __init__(self, op: WriteOp[T], future: asyncio.Future[T]) -> None:
        self.op = op
        self.future = future


class Writer:
    """Owns the write side of the store. ``start()`` spawns the thread, ``aclose()`` joins it."""

    def __init__(self, db: Database, *, batch: int = 256, max_map_size: int = 1 << 40) -> None:
        self._db = db
        self._batch = batch
        self._max_map_size = max_map_size
        self._queue: queue.SimpleQueue[_Pending[Any] | object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.commits = 0
        self.ops = 0

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="lmdb-writer", daemon=True)
        self._thread.start()

    async def aclose(self) -> None:
        if self._thread is None:
            return
        self._queue.put(_STOP)
        await asyncio.to_thread(self._thread.join)
        self._thread = None

    def submit(self, op: WriteOp[T]) -> asyncio.Future[T]:
        """Queue a write; the returned future completes once it is durably committed."""
        if self._thread is None or self._loop is None:
            raise StoreError("store writer is not running")
        future: asyncio.Future[T] = self._loop.create_future()
        self._queue.put(_Pending(op, future))
        return future

    async def write(self, op: WriteOp[T]) -> T:
        return await self.submit(op)

    # ----- writer thread -----

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is _STOP:
                break
            group: list[_Pending[Any]] = [first]  # type: ignore[list-item]
            while len(group) < self._batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    break
                group.append(item)  # type: ignore[arg-type]
            self._commit_group(group)

    def _commit_group(self, group: list[_Pending[Any]]) -> None:
        while True:
            try:
                outcomes = self._apply(group)
            except lmdb.MapFullError:
                if not self._grow():
                    self._fail(group, StoreError("store is full and cannot grow further"))
                    return
                continue
            except lmdb.Error as exc:
                log.error("store commit failed", extra={"error": str(exc), "ops": len(group)})
                self._fail(group, StoreError(f"commit failed: {exc}"))
                return
            self.commits += 1
            self.ops += len(group)
            for pending, (ok, value) in zip(group, outcomes, strict=True):
                self._resolve(pending.future, ok, value)
            return

    def _apply(self, group: list[_Pending[Any]]) -> list[tuple[bool, Any]]:
        env = self._db.env
        outcomes: list[tuple[bool, Any]] = []
        with env.begin(write=True) as parent:
            for pending in group:
                child = env.begin(write=True, parent=parent)
                try:
                    value = pending.op(child)
                except lmdb.MapFullError:
                    child.abort()
                    raise
                except (lmdb.Error, StoreError, ValueError, KeyError, TypeError) as exc:
                    child.abort()
                    outcomes.append((False, exc))
                else:
                    child.commit()
                    outcomes.append((True, value))
        return outcomes

    def _grow(self) -> bool:
        env = self._db.env
        current = int(env.info()["map_size"])
        target = min(current * 2, self._max_map_size)
        if target <= current or self._loop is None:
            return False
        done: ThreadFuture[None] = ThreadFuture()

        def resize() -> None:
            try:
                env.set_mapsize(target)
            except lmdb.Error as exc:
                done.set_exception(exc)
            else:
                done.set_result(None)

        self._loop.call_soon_threadsafe(resize)
        try:
            done.result(timeout=30)
        except (lmdb.Error, TimeoutError) as exc:
            log.error("store map could not grow", extra={"error": str(exc)})
            return False
        log.warning("store map grown", extra={"from_bytes": current, "to_bytes": target})
        return True

    def _fail(self, group: list[_Pending[Any]], exc: Exception) -> None:
        for pending in group:
            self._resolve(pending.future, False, exc)

    def _resolve(self, future: asyncio.Future[Any], ok: bool, value: Any) -> None:
        assert self._loop is not None

        def settle() -> None:
            if future.done():
                return
            if ok:
                future.set_result(value)
            elif isinstance(value, StoreError):
                future.set_exception(value)
            else:
                error = StoreError(f"write failed: {type(value).__name__}: {value}")
                error.__cause__ = value
                future.set_exception(error)

        self._loop.call_soon_threadsafe(settle)
