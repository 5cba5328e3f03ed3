"""``moments hq serve``: HQ's consumer of store events and answerer of resync requests.

Several instances share the load through MQTT 5 shared subscriptions (group ``hq``)::

    $share/hq/{prefix}/+/events/#           events from every store's outbox
    $share/hq/{prefix}/hq/requests/resync   resync requests

Events are de-duplicated on their idempotency key ``(store, seq)`` in HQ's LMDB, which
instances on one machine share (several processes may open it): each event is counted once
however often it arrives. Once a batch is committed, each store gets a signed receipt on
``{prefix}/{store}/hq/receipts`` naming the sequences HQ now holds (duplicates included), and
only then does its outbox delete them: an event the broker acknowledged and then lost, or
handed to no one, is sent again by the store. Every message is acknowledged (manual PUBACK)
only after its effect is committed, so one that arrives during a crash is redelivered with the
session, and counted still once.

A resync request is answered on its *Response Topic*, which must be the store's
``{prefix}/{store}/hq/response``, echoing its *Correlation Data*, with the logged messages
after ``since`` when HQ still keeps them all, else with a new snapshot (see
``gateway.hq.ledger``).

Flow: the session's bounded inbox → one consumer task that takes events in batches (one LMDB
transaction per batch) and hands resync requests to a bounded queue (back-pressure) → one
answering task. A stop unsubscribes, finishes what was already delivered, then disconnects
ending the broker session, so no share of later traffic waits for an instance that is gone. A
lost connection is retried with jittered backoff until stopped.

With ``client_id`` set the broker keeps the session (``session_expiry``) across crashes and
redelivers what was in flight; without it each run is a fresh, random, unkept session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Annotated, Final

import msgspec

from beacons.backoff import Backoff
from gateway.errors import LinkError, MomentsError
from gateway.hq.defaults import (
    DEFAULT_BATCH,
    DEFAULT_PREFIX,
    DEFAULT_TIMEOUT_S,
    DEFAULT_WINDOW,
)
from gateway.hq.errors import HqError, KeysError
from gateway.hq.keys import KeyDir
from gateway.hq.ledger import Ledger
from gateway.hq.mqtt import AckWindow, Delivery, MqttSession
from gateway.logs import RateLimitedLog
from gateway.sync.envelope import (
    Event,
    Receipt,
    SyncError,
    decode_event,
    decode_resync,
    encode_event,
)
from gateway.sync.outbox import merge_ranges

__all__ = [
    "SHARE_GROUP",
    "ReceivedLog",
    "ServeOptions",
    "Server",
    "receipt_topic",
    "resync_topic",
]

log = logging.getLogger(__name__)

SHARE_GROUP: Final = "hq"


def resync_topic(prefix: str) -> str:
    return f"{prefix}/hq/requests/resync"


def receipt_topic(prefix: str, store: str) -> str:
    return f"{prefix}/{store}/hq/receipts"


class _Address(msgspec.Struct, frozen=True):
    """What an event must carry, at least, for HQ to receipt it even when it refuses it."""

    store: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
    seq: int


_address_decoder = msgspec.json.Decoder(_Address)


@dataclass(frozen=True, slots=True)
class ServeOptions:
    host: str
    port: int
    prefix: str = DEFAULT_PREFIX
    client_id: str = ""
    session_expiry: int = 3600
    received: Path | None = None
    batch: int = DEFAULT_BATCH
    event_batch: int = 256
    window: int = DEFAULT_WINDOW
    timeout: float = DEFAULT_TIMEOUT_S
    connect_timeout: float = 5.0
    backoff_min: float = 0.5
    backoff_max: float = 30.0
    inbox_size: int = 1024
    resync_queue: int = 64


class ReceivedLog:
    """``--received FILE``: each new event as one JSON line, appended by one write per batch
    (``O_APPEND``), so several instances may share the file without tearing lines."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._fd: int | None = None

    def open(self) -> None:
        try:
            self._fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            raise HqError(f"{self._path}: {exc}") from exc

    def append(self, lines: Sequence[bytes]) -> None:
        if self._fd is None:
            raise HqError(f"{self._path} is not open")
        data = b"".join(line + b"\n" for line in lines)
        try:
            while data:
                data = data[os.write(self._fd, data) :]
        except OSError as exc:
            raise HqError(f"{self._path}: {exc}") from exc

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class Server:
    """One HQ serve instance. ``run()`` serves until ``stop()``; the ledger and key folder are
    owned by the caller (instances in one process share one ``Ledger``)."""

    def __init__(self, options: ServeOptions, *, ledger: Ledger, keys: KeyDir) -> None:
        self._options = options
        self._ledger = ledger
        self._keys = keys
        self._stopping = asyncio.Event()
        self._rejects = RateLimitedLog(log)
        self._received: ReceivedLog | None = None
        self._client_id = options.client_id or f"moments-hq-{secrets.token_hex(4)}"
        self.counters: Counter[str] = Counter()
        self.ready = asyncio.Event()

    @property
    def topics(self) -> tuple[str, str]:
        prefix = self._options.prefix
        return (
            f"$share/{SHARE_GROUP}/{prefix}/+/events/#",
            f"$share/{SHARE_GROUP}/{resync_topic(prefix)}",
        )

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        options = self._options
        if options.received is not None:
            self._received = ReceivedLog(options.received)
            self._received.open()
        backoff = Backoff(options.backoff_min, options.backoff_max)
        try:
            while not self._stopping.is_set():
                session = self._new_session()
                try:
                    await session.connect()
                    await session.subscribe([(t, 1) for t in self.topics], wait_s=options.timeout)
                except LinkError as exc:
                    await session.aclose()
                    log.warning("HQ broker unavailable", extra={"error": str(exc)})
                    await self._pause(backoff.next())
                    continue
                backoff.reset()
                log.info(
                    "serving",
                    extra={
                        "broker": session.broker,
                        "client_id": self._client_id,
                        "topics": self.topics,
                    },
                )
                self.ready.set()
                try:
                    await self._serve(session)
                finally:
                    self.ready.clear()
                    await session.aclose(end_session=self._stopping.is_set())
                if not self._stopping.is_set():
                    log.warning(
                        "HQ broker link lost",
                        extra={"broker": session.broker, "error": session.last_error},
                    )
                    await self._pause(backoff.next())
        finally:
            if self._received is not None:
                self._received.close()
                self._received = None
        log.info("stopped", extra=dict(self.counters))

    def _new_session(self) -> MqttSession:
        options = self._options
        keep = bool(options.client_id)
        return MqttSession(
            host=options.host,
            port=options.port,
            client_id=self._client_id,
            clean_start=not keep,
            session_expiry=options.session_expiry if keep else 0,
            connect_timeout=options.connect_timeout,
            inbox_size=options.inbox_size,
            manual_ack=True,
            max_inflight=options.window,
        )

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stopping.wait()

    async def _serve(self, session: MqttSession) -> None:
        try:
            await self._serve_tasks(session)
        except* MomentsError as group:
            # A worker's failure (HQ's LMDB, the received file) ends the run as itself.
            raise group.exceptions[0]  # noqa: B904

    async def _serve_tasks(self, session: MqttSession) -> None:
        resyncs: asyncio.Queue[Delivery] = asyncio.Queue(maxsize=self._options.resync_queue)
        async with asyncio.TaskGroup() as group:
            workers = (
                group.create_task(self._consume(session, resyncs), name="hq-serve-events"),
                group.create_task(self._answer_all(session, resyncs), name="hq-serve-resync"),
            )
            stop = group.create_task(self._stopping.wait(), name="hq-serve-stop")
            lost = group.create_task(session.wait_lost(), name="hq-serve-lost")
            await asyncio.wait((stop, lost), return_when=asyncio.FIRST_COMPLETED)
            if self._stopping.is_set() and session.is_up:
                await self._drain(session, resyncs)
            for task in (*workers, stop, lost):
                task.cancel()

    async def _drain(self, session: MqttSession, resyncs: asyncio.Queue[Delivery]) -> None:
        """Stop new deliveries, then finish (and acknowledge) the ones already here."""
        try:
            await session.unsubscribe(self.topics, wait_s=self._options.timeout)
            async with asyncio.timeout(self._options.timeout):
                await session.inbox.join()
                await resyncs.join()
        except (LinkError, TimeoutError) as exc:
            log.warning("stopped with deliveries unfinished", extra={"error": str(exc)})

    # ----- events -----

    async def _consume(self, session: MqttSession, resyncs: asyncio.Queue[Delivery]) -> None:
        inbox = session.inbox
        requests = resync_topic(self._options.prefix)
        while True:
            batch = [await inbox.get()]
            while len(batch) < self._options.event_batch and not inbox.empty():
                batch.append(inbox.get_nowait())
            try:
                events: list[Delivery] = []
                for delivery in batch:
                    if delivery.topic == requests:
                        await resyncs.put(delivery)
                    else:
                        events.append(delivery)
                if events:
                    await self._take_events(session, events)
            finally:
                for _ in batch:
                    inbox.task_done()

    async def _take_events(self, session: MqttSession, deliveries: list[Delivery]) -> None:
        valid: list[tuple[Delivery, Event]] = []
        receipted: dict[str, list[int]] = {}
        for delivery in deliveries:
            try:
                valid.append((delivery, self._check_event(delivery)))
            except SyncError as exc:
                self._reject("event", exc, delivery)
                dead = self._address(delivery)
                if dead is not None:
                    # It will never become valid: receipted so the store's outbox moves on.
                    receipted.setdefault(dead[0], []).append(dead[1])
                    self.counters["events_dead_letter"] += 1
                session.ack(delivery)
        if not valid:
            self._send_receipts(session, receipted)
            return
        events = [event for _, event in valid]
        # Written out inside the ledger's transaction, before it commits: an event is never
        # remembered (and so never taken for a duplicate) without having been written.
        write_out = self._write_out if self._received is not None else None
        fresh = await self._ledger.run(partial(self._ledger.record_events, events, write_out))
        new_count = sum(fresh)
        self.counters["events_new"] += new_count
        self.counters["events_duplicate"] += len(events) - new_count
        # Committed: now the stores may delete them (duplicates too, their receipt was lost).
        for event in events:
            receipted.setdefault(event.store, []).append(event.seq)
        self._send_receipts(session, receipted)
        for delivery, _event in valid:
            session.ack(delivery)

    def _send_receipts(self, session: MqttSession, receipted: dict[str, list[int]]) -> None:
        """One signed receipt per store for what this batch recorded. Not waited for: a lost
        receipt only makes the store send those events again, and they are receipted again."""
        if not receipted:
            return
        try:
            signer = self._keys.signer()
        except KeysError as exc:
            self.counters["receipts_unsigned"] += 1
            self._rejects.warning(
                "receipt.unsigned", "cannot sign receipts: stores will send again", error=str(exc)
            )
            return
        issued_at = round(time.time() * 1000)
        for store, seqs in receipted.items():
            ranges = merge_ranges((seq, seq) for seq in seqs)
            receipt = Receipt(store=store, ranges=ranges, issued_at=issued_at)
            topic = receipt_topic(self._options.prefix, store)
            try:
                session.publish(topic, signer.seal_receipt(receipt), qos=1)
            except LinkError as exc:
                self.counters["receipts_unsent"] += 1
                log.info("receipt not sent", extra={"store": store, "error": str(exc)})
                continue
            self.counters["receipts"] += 1

    def _address(self, delivery: Delivery) -> tuple[str, int] | None:
        """``(store, seq)`` of an event HQ refuses, when it names them and came on that
        store's own topic; ``None`` when nothing in it can be trusted to name a store."""
        try:
            address = _address_decoder.decode(delivery.payload)
        except (msgspec.DecodeError, UnicodeDecodeError):
            return None
        if not 1 <= address.seq <= 2**62:
            return None
        if not delivery.topic.startswith(f"{self._options.prefix}/{address.store}/events/"):
            return None
        return address.store, address.seq

    def _write_out(self, events: list[Event]) -> None:
        assert self._received is not None
        self._received.append([encode_event(e) for e in events])

    def _check_event(self, delivery: Delivery) -> Event:
        event = decode_event(delivery.payload)
        expected = f"{self._options.prefix}/{event.store}/events/{event.type}"
        if delivery.topic != expected:
            raise SyncError("topic_mismatch", f"{event.store}/{event.type} on {delivery.topic}")
        if event.v != 1:
            raise SyncError("unsupported_version", f"v={event.v}")
        return event

    # ----- resync -----

    async def _answer_all(self, session: MqttSession, resyncs: asyncio.Queue[Delivery]) -> None:
        while True:
            delivery = await resyncs.get()
            try:
                await self._answer(session, delivery)
            except LinkError as exc:
                # Not acknowledged: the request comes back with the session.
                self.counters["resync_unfinished"] += 1
                log.warning("resync answer not sent", extra={"error": str(exc)})
            finally:
                resyncs.task_done()

    async def _answer(self, session: MqttSession, delivery: Delivery) -> None:
        prefix = self._options.prefix
        try:
            request = decode_resync(delivery.payload)
            if request.v != 1:
                raise SyncError("unsupported_version", f"v={request.v}")
            respond_to = f"{prefix}/{request.store}/hq/response"
            if delivery.response_topic is None:
                raise SyncError("no_response_topic", f"request of {request.store}")
            if delivery.response_topic != respond_to:
                raise SyncError("bad_response_topic", f"{delivery.response_topic} != {respond_to}")
        except SyncError as exc:
            self._reject("resync", exc, delivery)
            session.ack(delivery)
            return
        try:
            signer = self._keys.signer()
        except KeysError as exc:
            self.counters["resync_failed"] += 1
            log.error("cannot sign a resync answer", extra={"error": str(exc)})
            session.ack(delivery)  # the store asks again after its own timeout
            return
        answer = await self._ledger.run(
            partial(
                self._ledger.answer_resync,
                request.store,
                request.stream,
                request.since,
                signer,
                batch=self._options.batch,
            )
        )
        window = AckWindow(session, size=self._options.window, timeout=self._options.timeout)
        for wire in answer.wires:
            await window.send(respond_to, wire, correlation_data=delivery.correlation_data)
        await window.drain()
        session.ack(delivery)
        self.counters[f"resync_{answer.kind}"] += 1
        log.info(
            "resync answered",
            extra={
                "store": request.store,
                "stream": request.stream,
                "since": request.since,
                "answer": answer.kind,
                "messages": len(answer.wires),
                "last_seq": answer.last_seq,
            },
        )

    def _reject(self, what: str, exc: SyncError, delivery: Delivery) -> None:
        self.counters[f"{what}_rejected.{exc.reason}"] += 1
        self._rejects.warning(
            f"{what}.{exc.reason}",
            "rejected a store message",
            what=what,
            topic=delivery.topic,
            detail=exc.detail,
        )
