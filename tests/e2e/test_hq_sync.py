"""HQ sync end to end: a second Mosquitto plays HQ's broker; HQ's messages are sealed with a
real Ed25519 key; the gateway applies them, asks for a resync on a gap, refuses a forgery, and
relays its outbox to HQ."""

from __future__ import annotations

import asyncio
import json
import queue
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec
import paho.mqtt.client as paho
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion

from firmware_sim.scenario import demo_records
from gateway.config import Config, HqConfig, TrustedKeyConfig
from gateway.store import OfferRecord
from gateway.sync.envelope import Message, Receipt, decode_event, seal, seal_receipt
from gateway.sync.outbox import pending
from tests.support.broker import Broker, free_port
from tests.support.peers import ALICE, Publisher, Served, serve

pytestmark = pytest.mark.mqtt
STORE = "store-1"


@pytest.fixture
def hq_broker(tmp_path: Path) -> Iterator[Broker]:
    folder = tmp_path / "hq-broker"
    folder.mkdir()
    broker = Broker(free_port(), folder)
    broker.start()
    yield broker
    broker.stop()


class HqPeer:
    """HQ's side on its broker: publishes sealed messages, watches resync requests and events."""

    def __init__(self, port: int, key: Ed25519PrivateKey) -> None:
        self.key = key
        self.received: queue.Queue[paho.MQTTMessage] = queue.Queue()
        self.backlog: list[paho.MQTTMessage] = []
        self.client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"hq-peer-{port}",
            protocol=paho.MQTTv5,
        )
        self.client.on_message = lambda _c, _u, msg: self.received.put(msg)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        for topic in ("moments/v1/hq/requests/resync", f"moments/v1/{STORE}/events/#"):
            self.client.subscribe(topic, qos=1)

    def send(self, stream: str, seq: int, body: dict[str, object], *, key_id: str = "hq-1") -> None:
        message = Message(store=STORE, stream=stream, seq=seq, kind="delta", body=body)  # type: ignore[arg-type]
        info = self.client.publish(
            f"moments/v1/{STORE}/hq/{stream}", seal(message, key_id, self.key), qos=1
        )
        info.wait_for_publish(timeout=5)

    def next(self, topic_part: str, timeout: float = 15.0) -> paho.MQTTMessage:
        """The next message on a topic containing ``topic_part``; others wait their turn."""
        for i, msg in enumerate(self.backlog):
            if topic_part in msg.topic:
                return self.backlog.pop(i)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = self.received.get(timeout=max(0.01, deadline - time.monotonic()))
            if topic_part in msg.topic:
                return msg
            self.backlog.append(msg)
        raise AssertionError(f"nothing on {topic_part}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _public_hex(key: Ed25519PrivateKey) -> str:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return raw.hex()


def _offer_body(offer: OfferRecord) -> dict[str, object]:
    return {"op": "put", "records": [msgspec.to_builtins(offer)]}


async def _until(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.05)


async def _hq_up(served: Served) -> None:
    async with asyncio.timeout(15):
        while (await served.health())["components"]["hq"]["state"] != "up":
            await asyncio.sleep(0.05)


async def test_hq_offer_reaches_the_kiosk_gaps_resync_forgeries_refused_outbox_relayed(
    broker: Broker,
    hq_broker: Broker,
    publisher: Publisher,
    make_config: Callable[..., Config],
) -> None:
    key = Ed25519PrivateKey.generate()
    hq = HqConfig(
        enabled=True,
        port=hq_broker.port,
        tls=False,
        backoff_min_s=0.1,
        backoff_max_s=0.5,
        trusted_keys=[TrustedKeyConfig(id="hq-1", public_key=_public_hex(key))],
    )
    config = msgspec.structs.replace(make_config(broker.port), hq=hq)
    peer = HqPeer(hq_broker.port, key)
    try:
        async with serve(config) as served:
            gateway = served.gateway
            await gateway.writer.write(gateway.db.put_op(demo_records(time.time())))
            await _hq_up(served)

            # 1. A signed offer from HQ is applied and shown to the shopper it targets.
            special = OfferRecord(
                offer_id="hq-roast-of-the-week",
                title="Roast of the week",
                regular_price=14.0,
                price=9.5,
                segments=["coffee-lover"],
                priority=99,
            )
            peer.send("offers", 1, _offer_body(special))
            await _until(lambda: any(o.offer_id == special.offer_id for o in gateway.db.offers()))
            assert gateway.db.sync_state("offers").last == 1
            for _ in range(4):
                publisher.adverts("node-coffee", ALICE, rssi=-52)
            await _until(lambda: gateway.hub.current("kiosk-1").offer_id == special.offer_id)
            assert "Roast of the week" in gateway.hub.current("kiosk-1").html

            # 2. A forgery (a key HQ never gave us) is refused; nothing of it is applied, not
            #    even read: its stream is "unknown" because an unverified payload is not parsed.
            forged = OfferRecord(offer_id="forged", title="Free everything", priority=1000)
            peer.send("offers", 2, _offer_body(forged), key_id="hq-evil")
            await _until(
                lambda: (
                    gateway.metrics.registry.get_sample_value(
                        "moments_sync_rejected_total",
                        {"stream": "unknown", "reason": "unknown_key"},
                    )
                    == 1.0
                )
            )
            assert all(o.offer_id != "forged" for o in gateway.db.offers())

            # 3. A gap (seq 3 after 1) stops the stream and asks HQ for a resync since 1.
            peer.send("offers", 3, _offer_body(forged.__replace__(offer_id="later")))
            request = await asyncio.to_thread(peer.next, "requests/resync")
            assert json.loads(request.payload) == {
                "v": 1,
                "store": STORE,
                "stream": "offers",
                "since": 1,
            }
            props = request.properties
            assert props is not None
            assert props.ResponseTopic == f"moments/v1/{STORE}/hq/response"
            assert len(props.CorrelationData) == 16
            assert all(o.offer_id != "later" for o in gateway.db.offers())

            # 4. What the store saw reached HQ through the outbox, at QoS 1, in order, with
            #    Alice's id because she granted analytics: her visit and the impression.
            events = []
            async with asyncio.timeout(15):
                while not {"visit", "impression"} <= {e.type for e in events}:
                    msg = await asyncio.to_thread(peer.next, "/events/")
                    events.append(decode_event(msg.payload))
            seqs = [e.seq for e in events]
            assert seqs == sorted(seqs)
            visit = next(e for e in events if e.type == "visit")
            assert visit.body.items() >= {"zone": "coffee", "shopper": "shopper-alice"}.items()
            # ``at`` is wall time in ms; the hybrid clock stamp rides in the body.
            assert abs(visit.at / 1000 - time.time()) < 60
            assert visit.body["hlc"] >> 16 == visit.at
            impression = next(e for e in events if e.type == "impression")
            assert impression.body["offer"] == special.offer_id
            assert impression.body["shopper"] == "shopper-alice"
            assert all(e.store == STORE for e in events)
            relay = gateway.sync.relay  # type: ignore[union-attr]
            # 5. The broker's PUBACK is not enough: the entries wait for HQ's signed receipt.
            await _until(lambda: relay.status()["awaiting_receipt"] >= len(events))
            assert relay.status()["depth"] >= len(events)
            forged = Receipt(store=STORE, ranges=[(1, 2**40)])
            peer.client.publish(
                f"moments/v1/{STORE}/hq/receipts",
                seal_receipt(forged, "hq-1", Ed25519PrivateKey.generate()),
                qos=1,
            )
            # HQ receipts what it got: these, and what else the store sent meanwhile (the
            # phone's decision summaries, for instance).
            highest = max(e.seq for e in pending(gateway.db, 1000))
            receipt = Receipt(store=STORE, ranges=[(1, highest)])
            peer.client.publish(
                f"moments/v1/{STORE}/hq/receipts", seal_receipt(receipt, "hq-1", key), qos=1
            )
            await _until(lambda: relay.status()["receipted"] >= len(events))
            rejected = gateway.metrics.registry.get_sample_value(
                "moments_sync_rejected_total", {"stream": "receipts", "reason": "bad_signature"}
            )
            assert rejected == 1
            await _until(lambda: relay.status()["depth"] == 0)
    finally:
        peer.close()
