"""``outbox_events_per_s``: durable events per second acknowledged by a real Mosquitto.

What is measured: the drain of the outbox, only. Each round first enqueues ``events`` store
events (visits and impressions with a shopper's id, perishable, as ``EventRecorder`` makes
them: one ``enqueue_op`` each through the real :class:`Writer`, all submitted at once so they
group-commit; timed and printed, not part of the figure) into a real LMDB in a temporary
folder. Then the clock starts, a real :class:`OutboxRelay` (default window of 64) starts
publishing them over a real :class:`MqttLink` (MQTT 5, QoS 1, with the relay's message expiry)
to a private Mosquitto, deleting entries through the writer only once their PUBACK has come
(one durable commit per batch of PUBACKs come in meanwhile), and the clock stops once the
relay has had every one acknowledged and deleted; the outbox must then be empty with nothing
failed, expired or sent twice.

Baseline, same round, same topics and payloads (read back from the outbox), same broker:
``paho_qos1_no_persistence``, a plain paho-mqtt 2.x client (MQTT 5, its own network thread
started with ``loop_start``, default settings, so the same in-flight limit of 20 as the paho
client inside ``MqttLink``) publishing them all at QoS 1 with the same expiry property and
waiting for every PUBACK; nothing is read from or written to disk. Also printed (not a row):
the same messages through ``MqttLink.publish_acked`` with the relay's window but no LMDB, which
splits the cost between the link and the outbox's reads and durable deletes.

This process (event loop, writer thread, paho's thread) is pinned to the first core it may use,
the broker to the second. After an unreported warm-up round of 1,000 events, the figure is
the median round of each side.
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from bench.broker import start_mosquitto
from bench.cpu import pinned
from bench.errors import BenchError
from bench.procs import Child, Children
from bench.results import Result
from gateway.errors import LinkError
from gateway.mqtt import MqttLink
from gateway.store import Database, Writer
from gateway.sync.outbox import MAX_PENDING, depth, enqueue_op, pending
from gateway.sync.relay import OutboxRelay

__all__ = ["NAME", "Settings", "run"]

NAME: Final = "outbox_events_per_s"
BASELINE: Final = "paho_qos1_no_persistence"
UNIT: Final = "ev/s"
STORE: Final = "store-1"
PREFIX: Final = "moments/v1"
WINDOW: Final = 64  # OutboxRelay's default
EXPIRY_S: Final = 3600  # OutboxRelay's default perishable_expiry_s
MAP_SIZE: Final = 256 << 20
CONNECT_TIMEOUT_S: Final = 10.0
DRAIN_TIMEOUT_S: Final = 300.0
POLL_S: Final = 0.002
WARMUP_EVENTS: Final = 1_000

Out = Callable[[str], None]
_Message = tuple[str, bytes]


@dataclass(frozen=True, slots=True)
class Settings:
    events: int = 20_000
    rounds: int = 3

    @classmethod
    def for_mode(cls, *, quick: bool) -> Settings:
        return cls(5_000, 3) if quick else cls(20_000, 3)


async def run(settings: Settings, broker_core: int, out: Out) -> list[Result]:
    with tempfile.TemporaryDirectory(prefix="moments-bench-outbox-") as tmp, pinned() as core:
        folder = Path(tmp)
        async with Children(folder) as children:
            broker, port = await start_mosquitto(children, folder, core=broker_core)
            out(
                f"{NAME}: {settings.events} events per round, {settings.rounds} rounds; "
                f"mosquitto :{port} on core {broker_core}, this process on core {core}"
            )
            db = Database(folder / "store", map_size=MAP_SIZE)
            db.open()
            writer = Writer(db)
            try:
                writer.start()  # its thread inherits the pinned core
                return await _rounds(settings, db, writer, broker, port=port, out=out)
            finally:
                await writer.aclose()
                db.close()


async def _rounds(
    settings: Settings, db: Database, writer: Writer, broker: Child, *, port: int, out: Out
) -> list[Result]:
    link = MqttLink(
        name="bench-hq",
        host="127.0.0.1",
        port=port,
        client_id="moments-bench-relay",
        subscriptions=[],
    )
    link_task = asyncio.create_task(link.run(), name="bench-hq-link")
    ours: list[float] = []
    theirs: list[float] = []
    try:
        await _wait_up(link, broker)
        # A warm-up round, not reported: the first publishes and commits pay for set-up.
        warm = min(WARMUP_EVENTS, settings.events)
        await _enqueue(db, writer, warm, 0)
        messages = _outbox_messages(db, warm)
        await asyncio.to_thread(_paho_once, port, messages, 0)
        await _link_once(link, messages)
        await _drain(db, writer, link, warm)
        for i in range(1, settings.rounds + 1):
            enqueue_s = await _enqueue(db, writer, settings.events, i)
            messages = _outbox_messages(db, settings.events)
            theirs.append(settings.events / await asyncio.to_thread(_paho_once, port, messages, i))
            link_rate = settings.events / await _link_once(link, messages)
            ours.append(settings.events / await _drain(db, writer, link, settings.events))
            broker.check_alive()
            out(
                f"  round {i}: outbox relay {ours[-1]:>8.0f} {UNIT}   paho QoS 1 "
                f"{theirs[-1]:>8.0f} {UNIT}   (MqttLink alone {link_rate:.0f} {UNIT}; "
                f"enqueue {settings.events / enqueue_s:.0f} {UNIT})"
            )
    finally:
        await link.aclose()
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            await link_task
    ours_median, theirs_median = statistics.median(ours), statistics.median(theirs)
    out(f"  median outbox relay {ours_median:.0f} {UNIT}, paho QoS 1 {theirs_median:.0f} {UNIT}")
    return [Result(NAME, ours_median, UNIT, BASELINE, theirs_median, higher_is_better=True)]


async def _wait_up(link: MqttLink, broker: Child) -> None:
    deadline = time.monotonic() + CONNECT_TIMEOUT_S
    while not link.is_up:
        broker.check_alive()
        if time.monotonic() > deadline:
            raise BenchError(f"{NAME}: the MQTT link did not come up: {link.last_error}")
        await asyncio.sleep(0.01)


def _body(n: int) -> tuple[str, dict[str, Any]]:
    shopper = f"shopper-{n % 5_000:05}"
    if n % 4 == 0:
        return "visit", {"zone": f"zone-{n % 6}", "shopper": shopper}
    offer = f"offer-{n % 100:03}"
    return "impression", {
        "kiosk": f"kiosk-{n % 3}",
        "offer": offer,
        "personal": True,
        "shopper": shopper,
    }


async def _enqueue(db: Database, writer: Writer, events: int, round_: int) -> float:
    if depth(db):
        raise BenchError(f"{NAME}: the outbox holds {depth(db)} events before round {round_}")
    now_ms = int(time.time() * 1000)
    ops = []
    for n in range(events):
        kind, body = _body(n)
        ops.append(enqueue_op(db, STORE, kind, body, now_ms + n, perishable=True))
    gc.collect()
    start = time.perf_counter()
    seqs = await asyncio.gather(*(writer.submit(op) for op in ops))
    seconds = time.perf_counter() - start
    if len(set(seqs)) != events or depth(db) != events:
        raise BenchError(f"{NAME}: {depth(db)} events in the outbox after enqueuing {events}")
    return seconds


def _outbox_messages(db: Database, events: int) -> list[_Message]:
    messages: list[_Message] = []
    after = 0
    while batch := pending(db, MAX_PENDING, after=after):
        messages.extend((f"{PREFIX}/{e.topic}", e.payload) for e in batch)
        after = batch[-1].seq
    if len(messages) != events:
        raise BenchError(f"{NAME}: read {len(messages)} events back from the outbox, not {events}")
    return messages


async def _drain(db: Database, writer: Writer, link: MqttLink, events: int) -> float:
    relay = OutboxRelay(db, writer, link, store_id=STORE, prefix=PREFIX, window=WINDOW)
    gc.collect()
    start = time.perf_counter()
    task = asyncio.create_task(relay.run(), name="bench-outbox-relay")
    try:
        while relay.acked < events:
            if task.done():
                task.result()
                raise BenchError(f"{NAME}: the relay stopped after {relay.acked} events")
            if relay.failures:
                raise BenchError(f"{NAME}: a relay pass failed: {relay.last_error}")
            if time.perf_counter() - start > DRAIN_TIMEOUT_S:
                raise BenchError(f"{NAME}: {relay.acked} of {events} acknowledged in time")
            await asyncio.sleep(POLL_S)
        seconds = time.perf_counter() - start
    finally:
        await relay.aclose()
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            await task
    left = depth(db)
    counts = (relay.acked, relay.published, relay.redelivered, relay.expired, relay.failures)
    if left or counts != (events, events, 0, 0, 0):
        raise BenchError(
            f"{NAME}: {left} events left in the outbox; acked, published, redelivered, "
            f"expired, failures = {counts}, expected {events} acknowledged once each"
        )
    return seconds


async def _link_once(link: MqttLink, messages: list[_Message]) -> float:
    """The same messages through ``publish_acked``, at most ``WINDOW`` unacknowledged."""
    inflight: deque[asyncio.Future[None]] = deque()
    gc.collect()
    start = time.perf_counter()
    try:
        for topic, payload in messages:
            if len(inflight) >= WINDOW:
                await inflight.popleft()
            inflight.append(link.publish_acked(topic, payload, qos=1, expiry_s=EXPIRY_S))
        while inflight:
            await inflight.popleft()
    except LinkError as exc:
        raise BenchError(f"{NAME}: MqttLink.publish_acked failed: {exc}") from exc
    return time.perf_counter() - start


def _paho_once(port: int, messages: list[_Message], round_: int) -> float:
    """The baseline, on its own thread: a plain paho client publishing at QoS 1."""
    total = len(messages)
    connected = threading.Event()
    done = threading.Event()
    acked = 0
    refused: list[str] = []

    def on_connect(
        _c: paho.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Properties | None
    ) -> None:
        if reason.is_failure:
            refused.append(str(reason))
        connected.set()

    def on_publish(_c: paho.Client, _u: Any, _mid: int, reason: ReasonCode, _p: Properties) -> None:
        nonlocal acked
        acked += 1
        if reason.is_failure:
            refused.append(str(reason))
        if acked == total:
            done.set()

    client = paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=f"moments-bench-paho-{round_}",
        protocol=paho.MQTTv5,
    )
    client.on_connect = on_connect
    client.on_publish = on_publish
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.MessageExpiryInterval = EXPIRY_S
    client.connect("127.0.0.1", port, clean_start=True)
    client.loop_start()
    try:
        if not connected.wait(CONNECT_TIMEOUT_S) or refused:
            raise BenchError(f"{BASELINE}: no session with the broker {refused}")
        gc.collect()
        start = time.perf_counter()
        for topic, payload in messages:
            info = client.publish(topic, payload, qos=1, properties=props)
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                raise BenchError(f"{BASELINE}: publish failed: {paho.error_string(info.rc)}")
        if not done.wait(DRAIN_TIMEOUT_S):
            raise BenchError(f"{BASELINE}: {acked} of {total} PUBACKs in time")
        seconds = time.perf_counter() - start
    finally:
        client.disconnect()
        client.loop_stop()
    if refused:
        raise BenchError(f"{BASELINE}: the broker refused {len(refused)}: {refused[0]}")
    return seconds
