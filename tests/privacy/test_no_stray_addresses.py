"""A busy hour, compressed: no Bluetooth address of anyone who did not opt in is ever written.

The real gateway runs with HQ sync on towards a port nobody listens on (so every event it
would send stays in the outbox) and its logs written as JSON lines to a file, the gateway's
own loggers at debug. Two scanner nodes publish an hour of batches over MQTT (one batch per
node per "minute"): 200 strangers' phones and tags from public, static random, resolvable and
non-resolvable private addresses (vendor noise, other apps' beacons, random EIDs, tags that
put their own address in their advertisement, undecodable bytes), Bob (he has the app, with an
IRK registered, and declined everything: his iBeacon and his rotating private addresses),
Alice (opted in: iBeacon and private addresses from her IRK), Chloe (opted in: EID) and the
store's beacons, plus malformed batches full of strangers' addresses.

Then the gateway stops and every file it wrote (the data folder, LMDB's files as raw bytes,
the log) and every outbox event decoded are searched for each non-consenting device's address
as text (``AA:BB:CC:DD:EE:FF`` in either case, with dashes, without separators) and as six raw
bytes in both byte orders. None may be found; a control file written into the same folder
shows the search finds each of those forms.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec
import pytest

from beacons.eid import eid_for_time
from beacons.irk import make_resolvable_address, parse_address
from firmware_sim.adverts import eddystone_eid, eddystone_tlm, eddystone_uid, ibeacon, phone_noise
from firmware_sim.scenario import APP_UUID, CHLOE_EID_KEY, EID_EXPONENT, STORE_UUID, demo_records
from gateway.config import Config
from gateway.logs import JsonFormatter
from gateway.nodes import Advert, encode_batch
from gateway.sync.envelope import Event, decode_event
from gateway.sync.outbox import MAX_PENDING, pending
from tests.privacy.conftest import with_unreachable_hq
from tests.support.broker import Broker
from tests.support.peers import Publisher, Served, serve

pytestmark = pytest.mark.mqtt

MINUTES = 60
STRANGERS = 200
PER_BATCH = 12  # strangers heard by a node in one batch
NODES = ("node-entrance", "node-coffee")
EVERYTHING = dict.fromkeys(
    (
        "presence",
        "personalization",
        "kiosk_display",
        "phone_messages",
        "staff_assist",
        "analytics",
    ),
    True,
)
ALICE_IRK = bytes.fromhex("a11ce0000000000000000000000000a1")
BOB_IRK = bytes.fromhex("b0b0000000000000000000000000b0b0")


# ----- the search -----


@dataclass(frozen=True)
class Found:
    where: str
    address: str
    form: str


class AddressSearch:
    """Finds any of a set of addresses, written as text (any case, ``:`` or ``-`` or nothing
    between the octets, either byte order) or as six raw bytes (either byte order)."""

    def __init__(self, addresses: set[bytes]) -> None:
        self._text: dict[bytes, tuple[str, str]] = {}
        self._raw: dict[bytes, tuple[str, str]] = {}
        for address in addresses:
            name = address.hex(":").upper()
            for order, octets in (("", address), (", reversed", address[::-1])):
                self._text[octets.hex().encode()] = (name, "text" + order)
                self._raw[octets] = (name, "raw bytes" + order)

    def search(self, where: str, blob: bytes) -> list[Found]:
        found: list[Found] = []
        # Text: separators dropped and case folded, every twelve-digit window of every run of
        # hex digits (an address inside a longer hex string is still found).
        folded = blob.lower().translate(None, b":-")
        for run in re.finditer(rb"[0-9a-f]{12,}", folded):
            digits = run.group()
            for i in range(len(digits) - 11):
                hit = self._text.get(digits[i : i + 12])
                if hit is not None:
                    found.append(Found(where, *hit))
        raw = self._raw
        for i in range(len(blob) - 5):
            hit = raw.get(blob[i : i + 6])
            if hit is not None:
                found.append(Found(where, *hit))
        return found

    def search_folder(self, folder: Path) -> list[Found]:
        found: list[Found] = []
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            found += self.search(str(path.relative_to(folder)), path.read_bytes())
        return found


# ----- the devices -----


@dataclass(frozen=True)
class Device:
    address: bytes  # most significant octet first
    payload: bytes

    def heard(self, rng: random.Random, rssi: int) -> Advert:
        text = self.address.hex(":")
        return Advert(
            self.payload, rssi, rng.randrange(0, 900), text.upper() if rng.random() < 0.5 else text
        )


def random_address(rng: random.Random, kind: int) -> bytes:
    """Public (as the vendor assigned it), static random, resolvable or non-resolvable
    private: the kinds of address a store hears."""
    octets = bytearray(rng.randbytes(6))
    if kind == 1:
        octets[0] |= 0xC0  # static random
    elif kind == 2:
        octets[0] = (octets[0] & 0x3F) | 0x40  # resolvable private
    elif kind == 3:
        octets[0] &= 0x3F  # non-resolvable private
    return bytes(octets)


def stranger(rng: random.Random, n: int) -> Device:
    address = random_address(rng, n % 4)
    kind = n % 6
    if kind == 0:
        payload = phone_noise(rng.randbytes(8))
    elif kind == 1:  # another app's or shop's beacon
        payload = ibeacon(str(uuid.UUID(bytes=rng.randbytes(16))), n, n)
    elif kind == 2:
        payload = eddystone_uid(rng.randbytes(10), rng.randbytes(6))
    elif kind == 3:  # someone else's EID: resolves to nobody
        payload = eddystone_eid(rng.randbytes(8))
    elif kind == 4:  # a tag that puts its own address in its service data, reversed
        frame = b"\x95\xfe\x50\x20\xaa\x01" + bytes([n % 256]) + address[::-1]
        payload = b"\x02\x01\x06" + bytes((len(frame) + 1, 0x16)) + frame
    else:  # undecodable: an AD structure that overruns the payload, then the address
        payload = b"\x02\x01\x06\x1e\xff" + address
    return Device(address, payload)


def private_address(rng: random.Random, irk: bytes) -> bytes:
    prand = bytearray(rng.randbytes(3))
    prand[0] = (prand[0] & 0x3F) | 0x40
    if prand[1:] == b"\x00\x00":
        prand[1] = 1
    return parse_address(make_resolvable_address(irk, bytes(prand)))


@dataclass
class Hour:
    """What the nodes hear, minute by minute, and the addresses that must never be written."""

    rng: random.Random
    strangers: list[Device]
    bob_static: bytes
    bob_private: list[bytes]
    alice_private: list[bytes]

    @classmethod
    def make(cls, seed: int = 20_251_122) -> Hour:
        rng = random.Random(seed)
        strangers = [stranger(rng, n) for n in range(STRANGERS)]
        bob_private = [private_address(rng, BOB_IRK) for _ in range(MINUTES // 10)]
        alice_private = [private_address(rng, ALICE_IRK) for _ in range(MINUTES // 10)]
        return cls(rng, strangers, random_address(rng, 1), bob_private, alice_private)

    def not_opted_in(self) -> set[bytes]:
        return {d.address for d in self.strangers} | {self.bob_static, *self.bob_private}

    def batch(self, minute: int, node: str, now: float) -> list[Advert]:
        rng = self.rng
        adverts = [
            d.heard(rng, rng.randrange(-95, -60)) for d in rng.sample(self.strangers, PER_BATCH)
        ]
        coffee = node == "node-coffee"
        rssi = -52 if coffee else -88
        # Bob browses the coffee aisle all hour: his app's iBeacon, and his phone's own
        # advertising from a private address that changes every ten minutes.
        bob_rpa = self.bob_private[minute // 10]
        adverts.append(Device(self.bob_static, ibeacon(APP_UUID, 100, 2)).heard(rng, rssi))
        adverts.append(Device(bob_rpa, phone_noise(b"bob-phone")).heard(rng, rssi))
        if 10 <= minute < 40:  # Alice at the coffee kiosk for half an hour
            alice_rpa = self.alice_private[minute // 10]
            adverts.append(Device(alice_rpa, ibeacon(APP_UUID, 100, 1)).heard(rng, rssi))
            adverts.append(Device(alice_rpa, phone_noise(b"alice-ph")).heard(rng, rssi))
        if not coffee:  # Chloe by the entrance, her EID rotating on its own clock
            eid = eddystone_eid(eid_for_time(CHLOE_EID_KEY, EID_EXPONENT, now))
            adverts.append(Device(random_address(rng, 2), eid).heard(rng, -55))
        beacon = 1 if not coffee else 2
        own = parse_address(f"C0:FF:EE:00:00:0{beacon}")
        adverts.append(Device(own, ibeacon(STORE_UUID, 1, beacon)).heard(rng, -60))
        adverts.append(
            Device(own, eddystone_tlm(3000, 21.0, minute, minute * 60.0)).heard(rng, -60)
        )
        rng.shuffle(adverts)
        return adverts

    def malformed(self, now: float) -> list[tuple[str, bytes]]:
        """(topic node, payload) of batches the gateway must refuse, each full of strangers."""
        some = [d.heard(self.rng, -70) for d in self.rng.sample(self.strangers, 20)]
        good = encode_batch("node-coffee", 9_000, now, some)
        doc = msgspec.json.decode(good)
        bad_hex = {**doc, "adv": [{**doc["adv"][0], "data": "zz" + doc["adv"][0]["data"]}]}
        bad_rssi = {**doc, "adv": [{**a, "rssi": 99} for a in doc["adv"]]}
        too_many = {**doc, "adv": doc["adv"] * 15}
        not_json = b'{"v": 1, "node": "node-coffee", "adv": [' + good[-300:]
        return [
            ("node-backroom", encode_batch("node-backroom", 1, now, some)),  # unknown node
            ("node-entrance", good),  # the payload names another node than the topic
            ("node-coffee", msgspec.json.encode(bad_hex)),
            ("node-coffee", msgspec.json.encode(bad_rssi)),
            ("node-coffee", msgspec.json.encode(too_many)),
            ("node-coffee", not_json),
        ]


# ----- the run -----


@pytest.fixture
def json_log(tmp_path: Path) -> Iterator[Path]:
    """The process's logs as JSON lines in a file for the test; the gateway's own at debug."""
    path = tmp_path / "logs" / "gateway.jsonl"
    path.parent.mkdir()
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(JsonFormatter())
    handler.setLevel(logging.DEBUG)
    root = logging.getLogger()
    ours = [logging.getLogger(name) for name in ("gateway", "beacons")]
    levels = [root.level, *(logger.level for logger in ours)]
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    for logger in ours:
        logger.setLevel(logging.DEBUG)
    try:
        yield path
    finally:
        root.removeHandler(handler)
        handler.close()
        for logger, level in zip((root, *ours), levels, strict=True):
            logger.setLevel(level)


def metric(served: Served, name: str, **labels: str) -> float:
    value = served.gateway.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def until(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not check():
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def app_with_irk(served: Served, shopper: str, consents: dict[str, bool], irk: bytes) -> None:
    """The shopper's app linked at the desk, with the phone's IRK registered."""
    client, gateway = served.client, served.gateway
    admin, _claims = await gateway.shoppers.issue("admin", "desk")
    code = await client.post(
        "/v1/admin/link-codes",
        json={"shopper_id": shopper},
        headers={"Authorization": f"Bearer {admin}"},
    )
    assert code.status_code == 201, code.text
    registered = await client.post(
        "/v1/register",
        json={"link_code": code.json()["code"], "consents": consents, "notice_version": "n1"},
    )
    assert registered.status_code == 201, registered.text
    answer = await client.put(
        "/v1/me/irk",
        json={"irk": irk.hex()},
        headers={"Authorization": f"Bearer {registered.json()['token']}"},
    )
    assert answer.status_code == 204, answer.text


async def subscribed(served: Served, publisher: Publisher) -> None:
    """Until the gateway hears the nodes (its subscription is in place): batches of a protocol
    version it does not speak, counted as dropped by a reason none of the hour's batches has."""
    future = msgspec.json.decode(encode_batch("node-coffee", 0, time.time(), []))
    probe = msgspec.json.encode({**future, "v": 2})

    def heard() -> bool:
        return bool(
            metric(served, "moments_dropped_total", source="node", reason="unsupported_version")
        )

    async with asyncio.timeout(20):
        while not heard():
            await asyncio.to_thread(publisher.raw, "node-coffee", probe)
            with contextlib.suppress(AssertionError):
                await until(heard, "a probe", timeout=0.5)


async def test_a_busy_hour_writes_no_address_of_anyone_who_did_not_opt_in(
    make_config: Callable[..., Config],
    broker: Broker,
    publisher: Publisher,
    json_log: Path,
    tmp_path: Path,
) -> None:
    config = with_unreachable_hq(make_config(broker.port))
    data = config.data_path
    hour = Hour.make()
    events: list[Event] = []
    async with serve(config) as served:
        gateway = served.gateway
        await gateway.writer.write(gateway.db.put_op(demo_records(time.time())))
        await app_with_irk(served, "shopper-alice", EVERYTHING, ALICE_IRK)
        await app_with_irk(served, "shopper-bob", dict.fromkeys(EVERYTHING, False), BOB_IRK)
        await until(lambda: len(gateway.sensing.identities.irks) == 1, "Alice's IRK loaded")
        await subscribed(served, publisher)

        sent = 0
        for minute in range(MINUTES):
            for node in NODES:
                sent += 1
                payload = encode_batch(
                    node, sent, time.time(), hour.batch(minute, node, time.time())
                )
                await asyncio.to_thread(publisher.raw, node, payload)
        bad = hour.malformed(time.time())
        for node, payload in bad:
            await asyncio.to_thread(publisher.raw, node, payload)

        def dropped() -> float:
            return sum(
                metric(served, "moments_dropped_total", source="node", reason=reason)
                for reason in (
                    "unknown_node",
                    "node_mismatch",
                    "bad_hex",
                    "bad_field",
                    "oversized_batch",
                    "bad_json",
                )
            )

        await until(
            lambda: metric(served, "moments_node_messages_total") == sent and dropped() == len(bad),
            "every batch handled",
        )
        # The hour really happened: strangers counted anonymously, Alice and Chloe placed.
        anonymous = metric(served, "moments_sightings_total", kind="anonymous")
        assert anonymous >= MINUTES * len(NODES) * PER_BATCH * 5 / 6  # less the undecodable
        assert metric(served, "moments_dropped_total", source="node", reason="undecodable_advert")
        await until(
            lambda: metric(served, "moments_anonymous_devices", zone="coffee") > 0,
            "the anonymous count",
        )
        await until(lambda: gateway.hub.current("kiosk-1").personal, "Alice's kiosk content")
        await gateway.writer.write(lambda _txn: None)  # every event recorded has committed
        events = [decode_event(e.payload) for e in pending(gateway.db, MAX_PENDING)]
        assert {"visit", "impression"} <= {e.type for e in events}
    # The gateway has stopped: everything it wrote is on disk.
    search = AddressSearch(hour.not_opted_in())
    assert_nothing_written(search, data, json_log, events)
    assert_the_search_finds_one(search, data, hour.strangers[0].address)


def assert_nothing_written(
    search: AddressSearch, data: Path, json_log: Path, events: list[Event]
) -> None:
    records = [json.loads(line) for line in json_log.read_text().splitlines()]
    assert any(r["msg"] == "scanner-node message rejected" for r in records)
    assert any(r["msg"] == "gateway stopped" for r in records)
    found = search.search_folder(data)
    found += search.search(json_log.name, json_log.read_bytes())
    for event in events:
        found += search.search(f"outbox event {event.seq}", msgspec.json.encode(event))
    assert found == []


def assert_the_search_finds_one(search: AddressSearch, data: Path, target: bytes) -> None:
    """The control: each form of one stranger's address, written into the same folder, is
    found (and nothing else is)."""
    forms = {
        "upper": target.hex(":").upper().encode(),
        "lower": target.hex(":").encode(),
        "dashes": target.hex("-").upper().encode(),
        "plain": target.hex().encode(),
        "in-hex": b"0201061aff" + target.hex().upper().encode() + b"c5",
        "plain-reversed": target[::-1].hex().encode(),
        "raw": target,
        "raw-reversed": target[::-1],
    }
    control = data / "control"
    control.mkdir()
    for name, form in forms.items():
        (control / name).write_bytes(b"\x00junk " + form + b" junk\xff")
    hits = search.search_folder(data)
    name = target.hex(":").upper()
    assert {h.where for h in hits} == {f"control/{n}" for n in forms}
    assert {h.address for h in hits} == {name}
    assert {(h.where, h.form) for h in hits} >= {
        ("control/raw", "raw bytes"),
        ("control/raw-reversed", "raw bytes, reversed"),
        ("control/upper", "text"),
        ("control/plain-reversed", "text, reversed"),
    }
