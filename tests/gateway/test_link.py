"""The asyncio-driven MQTT link against a real Mosquitto."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from beacons.backoff import Backoff
from gateway.errors import LinkDownError
from gateway.linkstate import IllegalTransition, LinkEvent, LinkMachine, LinkState
from gateway.mqtt import MqttLink, Tls, Will
from tests.support.broker import Broker, free_port

pytestmark = pytest.mark.mqtt


def _link(port: int, *, topics: tuple[str, ...] = ("t/#",), **kw: object) -> MqttLink:
    return MqttLink(
        name="test",
        host="127.0.0.1",
        port=port,
        client_id=f"link-{port}-{len(topics)}-{id(topics)}",
        subscriptions=[(t, 1) for t in topics],
        backoff=Backoff(0.05, 0.2),
        connect_timeout=2.0,
        **kw,  # type: ignore[arg-type]
    )


async def _until(link: MqttLink, state: LinkState, seconds: float = 10.0) -> None:
    async with asyncio.timeout(seconds):
        while link.state is not state:
            await asyncio.sleep(0.02)


async def test_publish_and_receive_through_the_broker(broker: Broker) -> None:
    states: list[LinkState] = []
    receiver = _link(broker.port, on_state=states.append)
    sender = _link(broker.port, topics=())
    tasks = [asyncio.create_task(receiver.run()), asyncio.create_task(sender.run())]
    try:
        await _until(receiver, LinkState.UP)
        await _until(sender, LinkState.UP)
        await asyncio.sleep(0.2)  # let the SUBACK land
        for i in range(50):
            sender.publish("t/x", f"m{i}".encode(), qos=1)
        got = [await asyncio.wait_for(receiver.inbox.get(), 5) for _ in range(50)]
        assert [m.payload for m in got] == [f"m{i}".encode() for i in range(50)]
        assert got[0].topic == "t/x"
        assert states[:2] == [LinkState.CONNECTING, LinkState.UP]
    finally:
        for link in (receiver, sender):
            await link.aclose()
        await asyncio.gather(*tasks)
    assert receiver.state is LinkState.CLOSED


async def test_no_broker_backs_off_then_connects_when_one_appears(tmp_path: Path) -> None:
    port = free_port()
    link = _link(port)
    task = asyncio.create_task(link.run())
    broker = Broker(port, tmp_path)
    try:
        await _until(link, LinkState.BACKOFF)
        assert "refused" in link.status()["detail"]
        with pytest.raises(LinkDownError):
            link.publish("t/x", b"nope")
        broker.start()
        await _until(link, LinkState.UP)
        # The broker goes away: the link notices, backs off, and comes back with it.
        broker.stop()
        await _until(link, LinkState.BACKOFF)
        broker.start()
        await _until(link, LinkState.UP)
    finally:
        await link.aclose()
        await task
        broker.stop()


async def test_inbox_overflow_drops_and_counts(broker: Broker) -> None:
    receiver = _link(broker.port, inbox_size=5)
    sender = _link(broker.port, topics=())
    tasks = [asyncio.create_task(receiver.run()), asyncio.create_task(sender.run())]
    try:
        await _until(receiver, LinkState.UP)
        await _until(sender, LinkState.UP)
        await asyncio.sleep(0.2)
        for i in range(20):
            sender.publish("t/y", str(i).encode(), qos=0)
        async with asyncio.timeout(5):
            while receiver.received < 20:
                await asyncio.sleep(0.02)
        assert receiver.inbox.qsize() == 5
        assert receiver.dropped == 15
    finally:
        for link in (receiver, sender):
            await link.aclose()
        await asyncio.gather(*tasks)


async def test_will_and_birth_are_retained_status(broker: Broker) -> None:
    watcher = _link(broker.port, topics=("status/#",))
    gateway = _link(
        broker.port,
        topics=(),
        will=Will("status/gw", b"offline"),
        birth=Will("status/gw", b"online"),
    )
    tasks = [asyncio.create_task(gateway.run())]
    try:
        await _until(gateway, LinkState.UP)
        tasks.append(asyncio.create_task(watcher.run()))
        message = await asyncio.wait_for(watcher.inbox.get(), 5)
        assert (message.topic, message.payload, message.retain) == ("status/gw", b"online", True)
    finally:
        for link in (gateway, watcher):
            await link.aclose()
        await asyncio.gather(*tasks)


def test_link_state_table_refuses_illegal_transitions() -> None:
    machine = LinkMachine()
    assert machine.fire(LinkEvent.START) is LinkState.CONNECTING
    with pytest.raises(IllegalTransition):
        machine.fire(LinkEvent.LOST)
    assert machine.fire(LinkEvent.CONNECTED) is LinkState.UP
    assert machine.fire(LinkEvent.CLOSE) is LinkState.CLOSED
    with pytest.raises(IllegalTransition):
        machine.fire(LinkEvent.RETRY)


def test_backoff_grows_with_jitter_and_resets() -> None:
    backoff = Backoff(1.0, 8.0, random.Random(1))
    delays = [backoff.next() for _ in range(6)]
    steps = [1, 2, 4, 8, 8, 8]
    assert all(s / 2 <= d <= s for d, s in zip(delays, steps, strict=True))
    backoff.reset()
    assert backoff.next() <= 1.0


async def test_tls_files_missing_keep_retrying_without_crashing(tmp_path: Path) -> None:
    link = _link(free_port(), tls=Tls(ca_file=str(tmp_path / "missing-ca.pem")))
    task = asyncio.create_task(link.run())
    try:
        await _until(link, LinkState.BACKOFF)
        assert "TLS set-up failed" in link.status()["detail"]
        assert not task.done()
    finally:
        await link.aclose()
        await task
    assert link.state is LinkState.CLOSED
