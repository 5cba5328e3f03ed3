"""The reference HQ (``moments hq``) against a real Mosquitto and real LMDB folders.

Stores are played by plain paho clients on paho's own thread (independent of the code under
test); every HQ message they receive is checked with the store's own codec, ``open_envelope``
and a ``Keyring``, exactly as a gateway would check it.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.hq import KeyDir, Ledger, PublishRequest, ServeOptions, Server, publish_to_broker
from gateway.hq.cli import main as hq_main
from gateway.hq.errors import InputError
from gateway.hq.records import load_records
from gateway.sync.envelope import (
    Event,
    Keyring,
    Message,
    ResyncRequest,
    encode_event,
    encode_resync,
    open_envelope,
    open_receipt,
)
from tests.support.broker import Broker

pytestmark = pytest.mark.mqtt

REPO = Path(__file__).resolve().parents[2]
PREFIX = "moments/v1"


# ----- peers and helpers -----


class Peer:
    """A store (or an observer) as an independent MQTT 5 client on paho's thread."""

    def __init__(self, port: int, client_id: str) -> None:
        self.messages: queue.Queue[paho.MQTTMessage] = queue.Queue()
        self._subacks: queue.Queue[int] = queue.Queue()
        self._client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=paho.MQTTv5,
        )
        self._client.on_message = lambda _c, _u, msg: self.messages.put(msg)
        self._client.on_subscribe = lambda _c, _u, mid, _codes, _p: self._subacks.put(mid)
        self._client.connect("127.0.0.1", port)
        self._client.loop_start()

    def subscribe(self, topic: str) -> None:
        result, _mid = self._client.subscribe(topic, qos=1)
        assert result == paho.MQTT_ERR_SUCCESS
        self._subacks.get(timeout=5)

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        response_topic: str | None = None,
        correlation: bytes | None = None,
    ) -> None:
        props = None
        if response_topic is not None or correlation is not None:
            props = Properties(PacketTypes.PUBLISH)
            if response_topic is not None:
                props.ResponseTopic = response_topic
            if correlation is not None:
                props.CorrelationData = correlation
        info = self._client.publish(topic, payload, qos=1, properties=props)
        info.wait_for_publish(timeout=5)
        assert info.is_published()

    def take(self, count: int, timeout: float = 10.0) -> list[paho.MQTTMessage]:
        deadline = time.monotonic() + timeout
        return [
            self.messages.get(timeout=max(0.01, deadline - time.monotonic())) for _ in range(count)
        ]

    def assert_quiet(self, seconds: float = 0.3) -> None:
        with pytest.raises(queue.Empty):
            self.messages.get(timeout=seconds)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


@pytest.fixture
def peer(broker: Broker) -> Iterator[Peer]:
    p = Peer(broker.port, "test-store-peer")
    yield p
    p.close()


@pytest.fixture
def keys(tmp_path: Path) -> KeyDir:
    folder = KeyDir(tmp_path / "keys")
    folder.create("hq-old")
    return folder


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    with Ledger(tmp_path / "hq", keep=3) as led:
        yield led


def keyring_of(*infos: tuple[str, bytes]) -> Keyring:
    return Keyring(infos)


def offers(*ids: str) -> list[dict[str, Any]]:
    return [{"type": "offer", "offer_id": i, "title": f"Offer {i}", "price": 1.5} for i in ids]


def write_json(path: Path, data: object) -> Path:
    path.write_bytes(msgspec.json.encode(data))
    return path


def opened(msg: paho.MQTTMessage, keyring: Keyring, store: str = "store-1") -> Message:
    return open_envelope(bytes(msg.payload), keyring, store)


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    code = hq_main(list(args))
    out = capsys.readouterr().out.strip().splitlines()
    return code, (json.loads(out[-1]) if out else {})


async def until(predicate: Any, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


@asynccontextmanager
async def serving(
    ledger: Ledger, keys: KeyDir, broker: Broker, received: Path | None = None
) -> AsyncIterator[Server]:
    server = Server(
        ServeOptions(host=broker.host, port=broker.port, received=received, batch=2, timeout=5),
        ledger=ledger,
        keys=keys,
    )
    task = asyncio.create_task(server.run(), name="hq-serve-under-test")
    try:
        async with asyncio.timeout(10):
            await server.ready.wait()
        yield server
    finally:
        server.stop()
        async with asyncio.timeout(10):
            await task


def event(seq: int, store: str = "store-1", kind: str = "impression") -> bytes:
    return encode_event(
        Event(store=store, seq=seq, type=kind, at=1_795_378_600_123, body={"offer": "o1"})  # type: ignore[arg-type]
    )


# ----- keys -----


def test_keys_new_rotate_revoke_announce_verifiable_keys(
    tmp_path: Path, broker: Broker, peer: Peer, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "keys"
    code, made = run_cli(capsys, "keys", "new", "--dir", str(folder), "--id", "hq-2026-11")
    assert code == 0
    assert made["key_id"] == "hq-2026-11"
    old_public = bytes.fromhex(made["public_key"])
    assert len(old_public) == 32
    assert stat.S_IMODE((folder / "hq-2026-11.key").stat().st_mode) == 0o600
    assert (folder / "hq-2026-11.pub").read_text().strip() == made["public_key"]
    # A second "new" on the same folder is refused: rotation is the way to change keys.
    assert hq_main(["keys", "new", "--dir", str(folder)]) == 2
    assert "rotate" in capsys.readouterr().err

    peer.subscribe(f"{PREFIX}/store-1/hq/keys")
    common = ["--data", str(tmp_path / "hq"), "--broker", f"127.0.0.1:{broker.port}"]
    code, rotated = run_cli(
        capsys,
        "keys",
        "rotate",
        "--dir",
        str(folder),
        "--id",
        "hq-2026-12",
        *common,
        "--store",
        "store-1",
    )
    assert code == 0, rotated
    assert rotated["previous"] == "hq-2026-11"
    assert rotated["current"] == "hq-2026-12"
    new_public = bytes.fromhex(rotated["public_key"])

    # A store that trusts only the old key accepts the announcement and learns the new key.
    keyring = keyring_of(("hq-2026-11", old_public))
    [msg] = peer.take(1)
    announced = opened(msg, keyring)
    assert (announced.stream, announced.seq, announced.kind) == ("keys", 1, "delta")
    assert json.loads(msg.payload)["key_id"] == "hq-2026-11"
    assert announced.body["op"] == "put"
    records = {r["key_id"]: r for r in announced.body["records"]}
    assert records["hq-2026-12"] == {
        "key_id": "hq-2026-12",
        "public_key": new_public.hex(),
        "status": "active",
    }
    for record in announced.body["records"]:
        keyring.add(record["key_id"], bytes.fromhex(record["public_key"]))
    assert KeyDir(folder).current().key_id == "hq-2026-12"

    # Revoking the current key is refused; revoking the old one is announced by the new key.
    assert (
        hq_main(
            [
                "keys",
                "revoke",
                "--dir",
                str(folder),
                "--id",
                "hq-2026-12",
                *common,
                "--store",
                "store-1",
            ]
        )
        == 2
    )
    capsys.readouterr()
    code, revoked = run_cli(
        capsys,
        "keys",
        "revoke",
        "--dir",
        str(folder),
        "--id",
        "hq-2026-11",
        *common,
        "--all-stores",
    )
    assert code == 0, revoked
    assert revoked["status"] == "revoked"
    [msg] = peer.take(1)
    revocation = opened(msg, keyring)
    assert json.loads(msg.payload)["key_id"] == "hq-2026-12"
    assert revocation.seq == 2
    assert revocation.body["records"] == [
        {"key_id": "hq-2026-11", "public_key": old_public.hex(), "status": "revoked"}
    ]
    assert not (folder / "hq-2026-11.key").exists()
    assert KeyDir(folder).get("hq-2026-11").status == "revoked"


def test_rotation_without_a_broker_leaves_the_old_key_current(
    tmp_path: Path, keys: KeyDir, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["keys", "rotate", "--dir", str(keys.path), "--data", str(tmp_path / "hq")]
    code = hq_main([*args, "--broker", "127.0.0.1:1", "--store", "store-1", "--timeout", "2"])
    assert code == 1
    assert "broker" in capsys.readouterr().err
    assert keys.current().key_id == "hq-old"
    pending = keys.pending()
    assert pending is not None
    # Trying again resumes the same new key rather than making another.
    assert keys.prepare_rotation().key_id == pending.key_id


# ----- publish -----


def test_publish_gives_each_store_consecutive_sequences(
    tmp_path: Path, broker: Broker, peer: Peer, keys: KeyDir, capsys: pytest.CaptureFixture[str]
) -> None:
    peer.subscribe(f"{PREFIX}/+/hq/offers")
    first = write_json(tmp_path / "a.json", offers("o1", "o2", "o3"))
    second = write_json(tmp_path / "b.json", offers("o4"))
    common = [
        "publish",
        "--data",
        str(tmp_path / "hq"),
        "--keys",
        str(keys.path),
        "--broker",
        f"127.0.0.1:{broker.port}",
        "--stream",
        "offers",
        "--batch",
        "2",
    ]
    code, summary = run_cli(capsys, *common, "--store", "store-1", "--store", "store-2", str(first))
    assert code == 0, summary
    assert summary["ok"] is True
    assert (summary["records"], summary["messages"], summary["acked"]) == (3, 4, 4)
    assert summary["stores"] == {
        "store-1": {"first_seq": 1, "last_seq": 2},
        "store-2": {"first_seq": 1, "last_seq": 2},
    }
    code, summary = run_cli(capsys, *common, "--all-stores", str(second))
    assert code == 0, summary
    assert summary["stores"]["store-1"] == {"first_seq": 3, "last_seq": 3}

    keyring = keyring_of(("hq-old", keys.current().public_key))
    seen: dict[str, list[Message]] = {"store-1": [], "store-2": []}
    for msg in peer.take(6):
        store = msg.topic.split("/")[2]
        assert msg.topic == f"{PREFIX}/{store}/hq/offers"
        assert msg.qos == 1
        seen[store].append(opened(msg, keyring, store))
    for messages in seen.values():
        assert [m.seq for m in messages] == [1, 2, 3]
        records = [r["offer_id"] for m in messages for r in m.body["records"]]
        assert records == ["o1", "o2", "o3", "o4"]
        assert {m.kind for m in messages} == {"delta"}
    peer.assert_quiet()


def test_publish_snapshot_and_delete(
    tmp_path: Path, broker: Broker, peer: Peer, keys: KeyDir, capsys: pytest.CaptureFixture[str]
) -> None:
    peer.subscribe(f"{PREFIX}/store-1/hq/offers")
    common = [
        "publish",
        "--data",
        str(tmp_path / "hq"),
        "--keys",
        str(keys.path),
        "--broker",
        f"127.0.0.1:{broker.port}",
        "--stream",
        "offers",
        "--store",
        "store-1",
    ]
    assert (
        run_cli(capsys, *common, str(write_json(tmp_path / "a.json", offers("o1", "o2"))))[0] == 0
    )
    gone = write_json(tmp_path / "gone.json", [{"id": "o1"}])
    assert run_cli(capsys, *common, "--delete", str(gone))[0] == 0
    code, summary = run_cli(capsys, *common, "--snapshot", "--batch", "1")
    assert code == 0, summary
    assert summary["kind"] == "snapshot"
    keyring = keyring_of(("hq-old", keys.current().public_key))
    _put, delete, begin, item, end = (opened(m, keyring) for m in peer.take(5))
    assert delete.body == {"op": "delete", "records": [{"id": "o1"}]}
    assert [begin.kind, item.kind, end.kind] == ["snapshot_begin", "snapshot_item", "snapshot_end"]
    assert begin.body["count"] == 1
    assert [r["offer_id"] for r in item.body["records"]] == ["o2"]
    assert end.body["watermark"] == end.seq == 5
    assert begin.body["snapshot"] == item.body["snapshot"] == end.body["snapshot"]


def test_publish_refuses_a_bad_record_naming_file_and_path(
    tmp_path: Path, keys: KeyDir, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = write_json(tmp_path / "bad.json", [*offers("o1"), {"type": "offer", "title": "x"}])
    with pytest.raises(InputError, match=r"bad\.json: \$\[1\]"):
        load_records(bad, "offers", "put")
    # Each stream carries its one record shape; a delete names a record by its id only.
    with pytest.raises(InputError, match='"type": "offer"'):
        load_records(
            write_json(tmp_path / "p.json", [{"type": "profile", "shopper_id": "s"}]),
            "offers",
            "put",
        )
    with pytest.raises(InputError, match="only"):
        load_records(
            write_json(tmp_path / "d.json", [{"id": "o1", "type": "offer"}]), "offers", "delete"
        )
    with pytest.raises(InputError, match="no deletes"):
        load_records(write_json(tmp_path / "c.json", [{"id": "x"}]), "config", "delete")
    code = hq_main(
        [
            "publish",
            "--data",
            str(tmp_path / "hq"),
            "--keys",
            str(keys.path),
            "--broker",
            "127.0.0.1:1",
            "--stream",
            "offers",
            "--store",
            "store-1",
            str(bad),
        ]
    )
    assert code == 2
    assert "$[1]" in capsys.readouterr().err


# ----- the ledger alone -----


def test_ledger_keeps_the_newest_messages_and_the_latest_records(
    ledger: Ledger, keys: KeyDir
) -> None:
    signer = keys.signer()
    ledger.issue_delta("store-1", "offers", "put", offers("a", "b", "c", "d", "e"), signer, batch=1)
    assert ledger.kept("store-1", "offers") == [3, 4, 5]
    ledger.issue_delta("store-1", "offers", "delete", [{"id": "b"}], signer, batch=1)
    assert [r["offer_id"] for r in ledger.records("store-1", "offers")] == ["a", "c", "d", "e"]
    assert ledger.last_seq("store-2", "offers") == 0
    assert ledger.answer_resync("store-1", "offers", 3, signer, batch=10).kind == "replay"
    assert ledger.answer_resync("store-1", "offers", 6, signer, batch=10).kind == "empty"
    # After a rotation, a replay carries the current key's signature, not the old one's.
    new = keys.prepare_rotation("hq-new")
    keys.promote(new.key_id)
    answer = ledger.answer_resync("store-1", "offers", 4, keys.signer(), batch=10)
    keyring = keyring_of(("hq-new", new.public_key))
    assert [open_envelope(w, keyring, "store-1").seq for w in answer.wires] == [5, 6]
    # A keys snapshot always lists the key that signs it: a store revokes what it leaves out.
    issued = ledger.issue_snapshot("store-1", "keys", keys.signer(), batch=10)
    _begin, item, _end = (open_envelope(w, keyring, "store-1") for w in issued.wires)
    assert item.body["records"] == [keys.signer().record()]
    # A config put replaces the whole config, as the store keeps it.
    whole = ledger.issue_delta("store-1", "config", "put", [{"a": 1}, {"b": 2}], signer, batch=1)
    assert len(whole.wires) == 1
    ledger.issue_delta("store-1", "config", "put", [{"c": 3}], signer, batch=10)
    assert ledger.records("store-1", "config") == [{"c": 3}]


# ----- serve -----


async def test_serve_counts_an_event_published_twice_once(
    tmp_path: Path, broker: Broker, peer: Peer, ledger: Ledger, keys: KeyDir
) -> None:
    received = tmp_path / "received.jsonl"
    async with serving(ledger, keys, broker, received) as server:
        for payload in (event(1), event(1), event(2, kind="visit")):
            await asyncio.to_thread(peer.publish, f"{PREFIX}/store-1/events/impression", payload)
        # Wrong topic for its type, and not an event at all: rejected, never counted.
        await asyncio.to_thread(peer.publish, f"{PREFIX}/store-1/events/visit", event(3))
        await asyncio.to_thread(peer.publish, f"{PREFIX}/store-1/events/visit", b"{")
        await until(lambda: sum(server.counters.values()) >= 5)
    lines = [json.loads(line) for line in received.read_text().splitlines()]
    assert [(e["store"], e["seq"]) for e in lines] == [("store-1", 1)]
    assert server.counters["events_new"] == 1
    assert server.counters["events_duplicate"] == 1
    assert server.counters["event_rejected.topic_mismatch"] == 2
    assert server.counters["event_rejected.malformed"] == 1
    assert ledger.counts() == {"events": 1, "events.impression": 1, "duplicates": 1}


async def test_serve_receipts_what_it_recorded_and_what_it_will_never_take(
    broker: Broker, peer: Peer, ledger: Ledger, keys: KeyDir
) -> None:
    """Each batch ends with one signed receipt per store, after the commit: new events,
    duplicates (their first receipt may have been lost) and refused events that name their
    store on its own topic (they would otherwise block that store's outbox for ever)."""
    peer.subscribe(f"{PREFIX}/+/hq/receipts")
    ring = keyring_of(("hq-old", keys.current().public_key))
    async with serving(ledger, keys, broker) as server:
        for seq in (1, 2, 1):
            await asyncio.to_thread(peer.publish, f"{PREFIX}/store-1/events/impression", event(seq))
        await asyncio.to_thread(
            peer.publish, f"{PREFIX}/store-2/events/visit", event(7, "store-2", "visit")
        )
        await asyncio.to_thread(peer.publish, f"{PREFIX}/store-1/events/visit", event(3))
        await asyncio.to_thread(peer.publish, f"{PREFIX}/store-2/events/visit", event(4))
        await asyncio.to_thread(peer.publish, f"{PREFIX}/store-1/events/visit", b"{")
        await until(lambda: sum(v for k, v in server.counters.items() if "event" in k) >= 7)
        await until(lambda: server.counters["receipts"] >= 1)
        await asyncio.sleep(0.3)
    covered: dict[str, set[int]] = {}
    while not peer.messages.empty():
        msg = peer.messages.get_nowait()
        store = msg.topic.split("/")[2]
        receipt = open_receipt(bytes(msg.payload), ring, store)
        assert receipt.issued_at > 0
        for first, last in receipt.ranges:
            covered.setdefault(store, set()).update(range(first, last + 1))
    # store-1's 3 came on a topic of the wrong type: dead letter, receipted; store-1's 4 came
    # on store-2's topic: nothing in it can be trusted, no receipt for either store.
    assert covered == {"store-1": {1, 2, 3}, "store-2": {7}}
    assert server.counters["events_dead_letter"] == 1


async def test_serve_answers_resync_with_replay_or_snapshot(
    broker: Broker, peer: Peer, ledger: Ledger, keys: KeyDir
) -> None:
    response = f"{PREFIX}/store-1/hq/response"
    await asyncio.to_thread(peer.subscribe, response)
    keyring = keyring_of(("hq-old", keys.current().public_key))
    async with serving(ledger, keys, broker) as server:
        summary = await publish_to_broker(
            PublishRequest(("store-1",), "offers", tuple(offers("a", "b", "c", "d", "e")), batch=1),
            ledger=ledger,
            signer=keys.signer(),
            broker=(broker.host, broker.port),
        )
        assert summary.ok
        assert ledger.kept("store-1", "offers") == [3, 4, 5]

        async def ask(since: int, correlation: bytes) -> None:
            request = encode_resync(ResyncRequest(store="store-1", stream="offers", since=since))
            await asyncio.to_thread(
                peer.publish,
                f"{PREFIX}/hq/requests/resync",
                request,
                response_topic=response,
                correlation=correlation,
            )

        # Still kept: the messages after `since`, as logged.
        await ask(3, b"\x01" * 16)
        replay = await asyncio.to_thread(peer.take, 2)
        assert [m.topic for m in replay] == [response, response]
        assert [m.properties.CorrelationData for m in replay] == [b"\x01" * 16] * 2
        assert [opened(m, keyring).seq for m in replay] == [4, 5]
        assert [opened(m, keyring).body["records"][0]["offer_id"] for m in replay] == ["d", "e"]

        # Dropped from the log: a snapshot of the current records, watermark = its last seq.
        await ask(1, b"\x02" * 16)
        snapshot = await asyncio.to_thread(peer.take, 5)  # begin, 3 items of <= 2, end
        assert {m.properties.CorrelationData for m in snapshot} == {b"\x02" * 16}
        begin, *items, end = (opened(m, keyring) for m in snapshot)
        assert (begin.kind, begin.seq, begin.body["count"]) == ("snapshot_begin", 6, 5)
        assert [i.kind for i in items] == ["snapshot_item"] * 3
        assert [r["offer_id"] for i in items for r in i.body["records"]] == list("abcde")
        assert (end.kind, end.seq, end.body["watermark"]) == ("snapshot_end", 10, 10)
        assert ledger.last_seq("store-1", "offers") == 10
        await until(lambda: server.counters["resync_snapshot"] == 1)
        assert server.counters["resync_replay"] == 1

        # A request whose response topic is another store's is refused and not answered.
        request = encode_resync(ResyncRequest(store="store-1", stream="offers", since=3))
        await asyncio.to_thread(
            peer.publish,
            f"{PREFIX}/hq/requests/resync",
            request,
            response_topic=f"{PREFIX}/store-2/hq/response",
            correlation=b"\x03" * 16,
        )
        await until(lambda: server.counters["resync_rejected.bad_response_topic"] == 1)
        peer.assert_quiet()


async def test_two_instances_sharing_the_subscription_count_each_event_once(
    tmp_path: Path, broker: Broker, peer: Peer, ledger: Ledger, keys: KeyDir
) -> None:
    received = tmp_path / "received.jsonl"
    async with (
        serving(ledger, keys, broker, received) as one,
        serving(ledger, keys, broker, received) as two,
    ):
        for seq in range(1, 41):
            for _ in range(2):  # every event arrives twice, to either instance
                await asyncio.to_thread(
                    peer.publish, f"{PREFIX}/store-1/events/impression", event(seq)
                )
        both = (one, two)
        await until(
            lambda: (
                sum(s.counters["events_new"] + s.counters["events_duplicate"] for s in both) == 80
            )
        )
    seqs = sorted(json.loads(line)["seq"] for line in received.read_text().splitlines())
    assert seqs == list(range(1, 41))
    assert one.counters["events_new"] + two.counters["events_new"] == 40
    # The broker shared the deliveries between the two instances.
    assert one.counters["events_new"] + one.counters["events_duplicate"] > 0
    assert two.counters["events_new"] + two.counters["events_duplicate"] > 0
    assert ledger.counts()["events"] == 40


def test_serve_command_runs_until_sigterm(
    tmp_path: Path, broker: Broker, peer: Peer, keys: KeyDir
) -> None:
    received = tmp_path / "received.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOMENTS_")}
    log_file = tmp_path / "serve.log"

    def logged() -> list[dict[str, Any]]:
        return [json.loads(line) for line in log_file.read_text().splitlines() if line]

    def wait_for(what: str, ready: Any) -> None:
        deadline = time.monotonic() + 10
        while not ready():
            assert process.poll() is None, f"serve ended early: {log_file.read_text()}"
            assert time.monotonic() < deadline, f"{what} never happened: {log_file.read_text()}"
            time.sleep(0.05)

    with log_file.open("wb") as log_out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gateway.hq",
                "serve",
                "--data",
                str(tmp_path / "hq"),
                "--keys",
                str(keys.path),
                "--broker",
                f"127.0.0.1:{broker.port}",
                "--received",
                str(received),
                "--log-format",
                "json",
            ],
            cwd=tmp_path,
            env=env,
            stderr=log_out,
        )
    try:
        wait_for("serving", lambda: any(line["msg"] == "serving" for line in logged()))
        peer.publish(f"{PREFIX}/store-7/events/visit", event(9, store="store-7", kind="visit"))
        wait_for("the event", lambda: received.exists() and received.read_text())
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)
    assert [json.loads(line)["seq"] for line in received.read_text().splitlines()] == [9]
    rest = logged()
    stopped = [line for line in rest if line["msg"] == "stopped"]
    assert stopped and stopped[0]["events_new"] == 1


def test_yaml_record_files_when_pyyaml_is_installed(tmp_path: Path) -> None:
    pytest.importorskip("yaml")
    source = tmp_path / "offers.yaml"
    source.write_text("- type: offer\n  offer_id: o1\n  title: Coffee\n  price: 2.5\n")
    assert load_records(source, "offers", "put") == [
        {"type": "offer", "offer_id": "o1", "title": "Coffee", "price": 2.5}
    ]


def test_registering_hq_loads_none_of_its_machinery(tmp_path: Path) -> None:
    """``moments`` registers ``hq`` on every start: that must stay cheap."""
    script = (
        "import argparse, sys\n"
        "from gateway.hq.cli import register\n"
        "parser = argparse.ArgumentParser(prog='moments')\n"
        "register(parser.add_subparsers())\n"
        "args = parser.parse_args(['hq', 'keys', 'new', '--dir', 'k'])\n"
        "assert callable(args.handler)\n"
        "heavy = [m for m in ('gateway.hq.ledger', 'gateway.hq.mqtt') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        check=False,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
