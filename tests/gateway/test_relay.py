"""The outbox relay and ``MqttLink.publish_acked`` against a real Mosquitto and a real LMDB.

HQ is played by a plain paho client on its own thread, subscribed at QoS 1 with a session that
survives a reconnect, as HQ's consumer would be.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import signal
import subprocess
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from beacons.backoff import Backoff
from gateway.clock import ManualClock
from gateway.errors import LinkDownError, LinkError
from gateway.linkstate import LinkState
from gateway.mqtt import MqttLink
from gateway.store import Database, Writer
from gateway.sync.envelope import EVENT_TYPES, decode_event
from gateway.sync.outbox import depth, enqueue_op, outbox_bytes, pending
from gateway.sync.relay import OutboxRelay
from tests.support.broker import Broker, free_port, mosquitto_binary, wait_for_port

pytestmark = pytest.mark.mqtt

STORE = "store-1"
PREFIX = "moments/v1"
EVENTS = f"{PREFIX}/+/events/#"
AT = 1_795_378_600_000
PERISHABLE = {"visit", "impression", "decision"}


@dataclass
class ConfiguredBroker(Broker):
    """A Mosquitto with extra configuration lines (persistence, an ACL). It runs as the test's
    user, so that it can read and write the test's private folders even when that is root."""

    extra: str = ""

    def start(self) -> None:
        conf = self.folder / "mosquitto.conf"
        user = pwd.getpwuid(os.getuid()).pw_name
        conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\nuser {user}\n"
            "log_type error\nlog_type warning\n" + self.extra
        )
        log = (self.folder / "mosquitto.log").open("ab")
        self.process = subprocess.Popen(
            [mosquitto_binary(), "-c", str(conf)], stdout=log, stderr=log
        )
        log.close()
        wait_for_port(self.port)


@pytest.fixture
def durable_broker(tmp_path: Path) -> Iterator[ConfiguredBroker]:
    """A broker that keeps sessions and queued messages across a restart, as HQ's does."""
    folder = tmp_path / "durable-broker"
    folder.mkdir()
    b = ConfiguredBroker(
        free_port(),
        folder,
        extra=f"persistence true\npersistence_location {folder}/\nmax_queued_messages 10000\n",
    )
    b.start()
    yield b
    b.stop()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[tuple[Database, Writer]]:
    db = Database(tmp_path / "store", map_size=1 << 26)
    db.open()
    writer = Writer(db)
    writer.start()
    yield db, writer
    await writer.aclose()
    db.close()


class Subscriber:
    """HQ's consumer in miniature: QoS 1, clean start off, resubscribes on every connect."""

    def __init__(self, port: int, topic: str = EVENTS) -> None:
        self._client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"hq-consumer-{port}",
            protocol=paho.MQTTv5,
        )
        self._client.reconnect_delay_set(0.1, 0.5)
        self._lock = threading.Lock()
        self._messages: list[paho.MQTTMessage] = []
        self._subscribed = threading.Event()
        self._topic = topic
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = lambda *_a: self._subscribed.set()
        self._client.on_message = self._on_message
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 600
        self._client.connect("127.0.0.1", port, clean_start=False, properties=props)
        self._client.loop_start()
        if not self._subscribed.wait(10):
            raise TimeoutError("no SUBACK within 10 s")

    def _on_connect(self, client: paho.Client, *_a: Any) -> None:
        client.subscribe(self._topic, qos=1)

    def _on_message(self, _c: paho.Client, _u: Any, message: paho.MQTTMessage) -> None:
        with self._lock:
            self._messages.append(message)

    @property
    def messages(self) -> list[paho.MQTTMessage]:
        with self._lock:
            return list(self._messages)

    def seqs(self) -> list[int]:
        return [decode_event(m.payload).seq for m in self.messages]

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


@pytest.fixture
def subscribers() -> Iterator[Callable[[int], Subscriber]]:
    made: list[Subscriber] = []

    def make(port: int) -> Subscriber:
        made.append(Subscriber(port))
        return made[-1]

    yield make
    for s in made:
        s.close()


def make_link(port: int, name: str = "hq", subscriptions: tuple[str, ...] = ()) -> MqttLink:
    return MqttLink(
        name=name,
        host="127.0.0.1",
        port=port,
        client_id=f"{name}-{port}",
        subscriptions=[(topic, 1) for topic in subscriptions],
        backoff=Backoff(0.05, 0.2),
        connect_timeout=2.0,
    )


async def until(check: Callable[[], bool], seconds: float = 20.0) -> None:
    async with asyncio.timeout(seconds):
        while not check():
            await asyncio.sleep(0.02)


@asynccontextmanager
async def running(link: MqttLink, relay: OutboxRelay | None = None) -> AsyncIterator[None]:
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(link.run(), name="link")
        if relay is not None:
            tasks.create_task(relay.run(), name="relay")
        try:
            yield
        finally:
            if relay is not None:
                await relay.aclose()
            await link.aclose()


async def enqueue_many(db: Database, writer: Writer, n: int, start: int = 0) -> None:
    """``n`` events of every type in turn, each in its own write (the writer groups them)."""
    ops = []
    for i in range(start, start + n):
        kind = EVENT_TYPES[i % len(EVENT_TYPES)]
        op = enqueue_op(db, STORE, kind, {"i": i}, AT + i, perishable=kind in PERISHABLE)
        ops.append(writer.submit(op))
    await asyncio.gather(*ops)


# ----- publish_acked -----


async def test_publish_acked_completes_on_the_puback_with_properties(
    broker: Broker, subscribers: Callable[[int], Subscriber]
) -> None:
    hq = subscribers(broker.port)
    link = make_link(broker.port)
    async with running(link):
        await until(lambda: link.is_up)
        acks = [
            link.publish_acked(
                f"{PREFIX}/{STORE}/events/visit",
                b'{"n": %d}' % i,
                expiry_s=600,
                response_topic="reply/here",
                correlation=b"\x01\x02",
            )
            for i in range(30)
        ]
        assert link.inflight == 30
        await asyncio.wait_for(asyncio.gather(*acks), 10)
        assert link.inflight == 0
        qos0 = link.publish_acked(f"{PREFIX}/{STORE}/events/visit", b"zero", qos=0)
        await asyncio.wait_for(qos0, 10)
        await until(lambda: len(hq.messages) == 31)
    first = hq.messages[0]
    assert first.qos == 1
    assert 590 <= first.properties.MessageExpiryInterval <= 600
    assert first.properties.ResponseTopic == "reply/here"
    assert first.properties.CorrelationData == b"\x01\x02"
    assert [m.payload for m in hq.messages[:30]] == [b'{"n": %d}' % i for i in range(30)]


async def test_publish_acked_when_down_raises_at_once(tmp_path: Path) -> None:
    link = make_link(free_port())
    with pytest.raises(LinkDownError):
        link.publish_acked("t/x", b"x")
    async with running(link):
        await until(lambda: link.state is LinkState.BACKOFF)
        with pytest.raises(LinkDownError):
            link.publish_acked("t/x", b"x")
        with pytest.raises(ValueError, match="QoS"):
            link.publish_acked("t/x", b"x", qos=2)


async def test_a_link_that_drops_fails_every_waiting_ack(broker: Broker) -> None:
    link = make_link(broker.port)
    async with running(link):
        await until(lambda: link.is_up)
        assert broker.process is not None
        # A frozen broker reads nothing and acknowledges nothing; then it dies.
        broker.process.send_signal(signal.SIGSTOP)
        acks = [link.publish_acked(f"t/acked/{i}", b"lost", retain=True) for i in range(5)]
        link.publish("t/plain", b"kept", qos=1, retain=True)
        await asyncio.sleep(0.2)
        assert link.inflight == 5
        assert not any(a.done() for a in acks)
        broker.process.kill()
        broker.stop()
        results = await asyncio.wait_for(asyncio.gather(*acks, return_exceptions=True), 10)
        assert all(isinstance(r, LinkDownError) for r in results)
        assert link.inflight == 0

        # Back up: paho sends the plain message again but forgot the abandoned ones.
        broker.start()
        await until(lambda: link.is_up)
        await asyncio.wait_for(link.publish_acked("t/marker", b"m", retain=True), 10)
        watcher = make_link(broker.port, name="watcher", subscriptions=("t/#",))
        async with running(watcher):
            seen: dict[str, bytes] = {}
            async with asyncio.timeout(10):
                while len(seen) < 2:
                    message = await watcher.inbox.get()
                    seen[message.topic] = message.payload
            await asyncio.sleep(0.3)
            while not watcher.inbox.empty():
                message = watcher.inbox.get_nowait()
                seen[message.topic] = message.payload
    assert seen == {"t/plain": b"kept", "t/marker": b"m"}


async def test_a_refused_publish_fails_its_ack(tmp_path: Path) -> None:
    acl = tmp_path / "acl"
    acl.write_text("topic read t/#\ntopic readwrite ok/#\n")
    folder = tmp_path / "acl-broker"
    folder.mkdir()
    broker = ConfiguredBroker(free_port(), folder, extra=f"acl_file {acl}\n")
    broker.start()
    try:
        link = make_link(broker.port)
        async with running(link):
            await until(lambda: link.is_up)
            with pytest.raises(LinkError, match="Not authorized"):
                await asyncio.wait_for(link.publish_acked("t/x", b"no"), 10)
            await asyncio.wait_for(link.publish_acked("ok/x", b"yes"), 10)
            assert link.is_up
    finally:
        broker.stop()


# ----- the relay -----


async def test_relay_drains_a_thousand_events_in_order(
    broker: Broker,
    store: tuple[Database, Writer],
    subscribers: Callable[[int], Subscriber],
) -> None:
    db, writer = store
    n = 1000
    hq = subscribers(broker.port)
    link = make_link(broker.port)
    # A long idle poll: the events arrive because of wake(), not because of polling.
    relay = OutboxRelay(db, writer, link, store_id=STORE, prefix=PREFIX, window=64, poll_s=30)
    async with running(link, relay):
        await until(lambda: link.is_up)
        await enqueue_many(db, writer, n)
        relay.wake()
        await until(lambda: len(hq.messages) >= n and depth(db) == 0, 40)
        status = relay.status()
    messages = hq.messages
    assert hq.seqs() == list(range(1, n + 1))
    for message in messages:
        event = decode_event(message.payload)
        assert message.topic == f"{PREFIX}/{STORE}/events/{event.type}"
        assert message.qos == 1
        assert (event.store, event.body, event.at) == (
            STORE,
            {"i": event.seq - 1},
            AT + event.seq - 1,
        )
        expiry = getattr(message.properties, "MessageExpiryInterval", None)
        if event.type in PERISHABLE:
            assert expiry is not None
            assert 3500 <= expiry <= 3600
        else:
            assert expiry is None
    assert status["depth"] == 0
    assert status["bytes"] == 0
    assert status["oldest_age_s"] is None
    assert (status["published"], status["acked"], status["redelivered"]) == (n, n, 0)
    assert link.inflight == 0


async def test_broker_restart_mid_drain_loses_nothing_and_keeps_order(
    durable_broker: ConfiguredBroker,
    store: tuple[Database, Writer],
    subscribers: Callable[[int], Subscriber],
) -> None:
    db, writer = store
    n = 1000
    await enqueue_many(db, writer, n)
    hq = subscribers(durable_broker.port)
    link = make_link(durable_broker.port)
    relay = OutboxRelay(
        db, writer, link, store_id=STORE, prefix=PREFIX, window=64, backoff=Backoff(0.05, 0.2)
    )
    async with running(link, relay):
        await until(lambda: len(hq.messages) >= 300)
        assert depth(db) > 0  # mid-drain
        durable_broker.stop()
        durable_broker.start()
        await until(lambda: depth(db) == 0 and len(set(hq.seqs())) >= n, 40)
        await asyncio.sleep(0.3)  # let redeliveries still on the wire arrive
        status = relay.status()
    seqs = hq.seqs()
    # At least once: every event arrived; duplicates are redeliveries of the same (store, seq)
    # with the same bytes; HQ's de-duplication leaves exactly 1..N in order.
    assert list(dict.fromkeys(seqs)) == list(range(1, n + 1))
    first: dict[int, bytes] = {}
    for message in hq.messages:
        event = decode_event(message.payload)
        assert event.store == STORE
        assert first.setdefault(event.seq, message.payload) == message.payload
    assert status["failures"] >= 1
    assert status["published"] - status["redelivered"] == n
    assert status["depth"] == 0


async def test_relay_drops_perishable_events_over_budget_while_the_link_is_down(
    store: tuple[Database, Writer],
) -> None:
    db, writer = store
    await enqueue_many(db, writer, 60)
    everything = pending(db, 100)
    perishable = [e.seq for e in everything if e.perishable]
    assert len(perishable) == sum(
        EVENT_TYPES[i % len(EVENT_TYPES)] in PERISHABLE for i in range(60)
    )
    # Room for every event that must stay and about half of the perishable ones.
    budget = outbox_bytes(db) - outbox_bytes(db) // 4
    link = make_link(free_port())  # nothing listens there
    relay = OutboxRelay(db, writer, link, store_id=STORE, prefix=PREFIX, max_bytes=budget)
    async with running(link, relay):
        await until(lambda: relay.dropped_over_budget > 0)
        assert not link.is_up
    left = pending(db, 100)
    assert outbox_bytes(db) <= budget
    assert relay.published == 0
    # Every consent, erasure and redemption is still there; perishable ones went oldest first.
    assert [e.seq for e in left if not e.perishable] == [
        e.seq for e in everything if not e.perishable
    ]
    dropped = relay.dropped_over_budget
    assert 0 < dropped < len(perishable)
    assert [e.seq for e in left if e.perishable] == perishable[dropped:]


async def test_an_expired_event_is_deleted_unsent(
    broker: Broker,
    store: tuple[Database, Writer],
    subscribers: Callable[[int], Subscriber],
) -> None:
    db, writer = store
    clock = ManualClock(wall=AT / 1000)
    hq = subscribers(broker.port)
    link = make_link(broker.port)
    relay = OutboxRelay(db, writer, link, store_id=STORE, prefix=PREFIX, clock=clock)
    for seq, expires_at in ((1, AT - 1), (2, AT + 90_000)):
        op = enqueue_op(db, STORE, "impression", {}, AT - 5, perishable=True, expires_at=expires_at)
        assert await writer.write(op) == seq
    await writer.write(enqueue_op(db, STORE, "redemption", {}, AT, perishable=False))
    async with running(link, relay):
        await until(lambda: len(hq.messages) == 2 and depth(db) == 0)
    assert hq.seqs() == [2, 3]
    assert hq.messages[0].properties.MessageExpiryInterval <= 90
    assert relay.expired == 1


# ----- HQ's receipts -----


async def test_with_receipts_a_puback_keeps_the_entry_until_hq_receipts_it(
    broker: Broker,
    store: tuple[Database, Writer],
    subscribers: Callable[[int], Subscriber],
) -> None:
    db, writer = store
    hq = subscribers(broker.port)
    link = make_link(broker.port)
    relay = OutboxRelay(
        db, writer, link, store_id=STORE, prefix=PREFIX, receipt_timeout_s=60.0, poll_s=0.05
    )
    await enqueue_many(db, writer, 100)
    async with running(link, relay):
        await until(lambda: relay.acked == 100)
        assert depth(db) == 100  # the broker has them; HQ has said nothing yet
        assert relay.status()["awaiting_receipt"] == 100
        relay.receipt([(1, 40), (41, 60), (90, 10**12)])  # merged, a wide end is harmless
        await until(lambda: relay.receipted == 71)
        assert [e.seq for e in pending(db, 200)] == list(range(61, 90))
        assert relay.status()["awaiting_receipt"] == 29
        relay.receipt([(61, 89)])
        await until(lambda: depth(db) == 0)
        status = relay.status()
    assert hq.seqs() == list(range(1, 101))  # each sent once: the receipts came in time
    assert (status["redelivered"], status["failures"], status["receipted"]) == (0, 0, 100)
    assert outbox_bytes(db) == 0


async def test_without_a_receipt_in_time_the_relay_sends_again_from_the_oldest(
    broker: Broker,
    store: tuple[Database, Writer],
    subscribers: Callable[[int], Subscriber],
) -> None:
    """A broker that acknowledged and then lost events (or had no one to give them to): HQ
    receipts only what it got, and the rest goes again once the receipt is overdue."""
    db, writer = store
    clock = ManualClock(wall=AT / 1000)
    hq = subscribers(broker.port)
    link = make_link(broker.port)
    relay = OutboxRelay(
        db,
        writer,
        link,
        store_id=STORE,
        prefix=PREFIX,
        receipt_timeout_s=30.0,
        backoff=Backoff(0.01, 0.02),
        poll_s=0.05,
        clock=clock,
    )
    await enqueue_many(db, writer, 20)
    async with running(link, relay):
        await until(lambda: relay.acked == 20 and len(hq.messages) == 20)
        relay.receipt([(1, 5), (11, 20)])  # 6..10 "lost" on the way to HQ
        await until(lambda: relay.receipted == 15)
        await asyncio.sleep(0.2)
        assert len(hq.messages) == 20  # nothing overdue yet
        clock.advance(31.0)
        await until(lambda: len(hq.messages) == 25)
        assert hq.seqs()[20:] == [6, 7, 8, 9, 10]  # again, oldest first, only what is left
        relay.receipt([(6, 10)])
        await until(lambda: depth(db) == 0)
        status = relay.status()
    assert status["failures"] == 1 and status["redelivered"] == 5
    assert "no receipt from HQ for outbox entry 6" in status["last_error"]


async def test_a_receipt_before_the_puback_is_not_waited_for_again(
    store: tuple[Database, Writer],
) -> None:
    """HQ can be quicker than the broker's PUBACK to this store; the entry must not then wait
    for a second receipt (and be sent again when none comes)."""
    db, writer = store
    clock = ManualClock(wall=AT / 1000)
    link = HeldLink()
    relay = OutboxRelay(
        db, writer, link, store_id=STORE, prefix=PREFIX, receipt_timeout_s=5.0, clock=clock
    )
    await enqueue_many(db, writer, 3)
    task = asyncio.create_task(relay.run())
    try:
        await until(lambda: len(link.sent) == 3)
        relay.receipt([(1, 3)])
        await until(lambda: relay.receipted == 3)
        link.ack_all()
        await until(lambda: relay.acked == 3)
        clock.advance(60.0)
        await asyncio.sleep(0.2)
        assert relay.status()["awaiting_receipt"] == 0
        assert relay.failures == 0 and len(link.sent) == 3
    finally:
        await relay.aclose()
        await task


class HeldLink:
    """A link whose PUBACKs come only when the test says so."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, asyncio.Future[None]]] = []

    @property
    def is_up(self) -> bool:
        return True

    def publish_acked(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        expiry_s: int | None = None,
        response_topic: str | None = None,
        correlation: bytes | None = None,
    ) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.sent.append((topic, future))
        return future

    def ack_all(self) -> None:
        for _topic, future in self.sent:
            if not future.done():
                future.set_result(None)
