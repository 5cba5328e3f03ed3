"""Seeded mutation fuzzing of everything that parses bytes off the air or off the store broker.

Targets and the only outcomes each may have, whatever the input:

* ``decode_advertisement(bytes)``: a frame, ``None`` or ``DecodeError``; and it agrees with the
  same rules spelled out with the public pieces (``parse_advertisement`` then
  ``decode_manufacturer_data`` / ``decode_service_data``);
* ``decode_hex(str)``: a dictionary with ``type`` (a frame's ``to_dict()`` or
  ``{"type": None, "error": str}``) that JSON can encode, never an exception;
* ``decode_hci_event(bytes)``: a list of ``AdvertisingReport`` or ``DecodeError``;
* ``parse_batch(node, bytes, limits)``: a ``NodeBatch`` or ``NodeMessageError``.

Inputs are random byte strings (0 to 300 bytes) and stacked mutations (bit flips, byte
insertions and deletions, corrupted AD length bytes, truncation, duplicated AD structures,
splices) of a corpus of valid frames of every type, built from the public layouts with
``firmware_sim.adverts`` and byte literals.  Each test counts how many inputs reached each
outcome and requires every outcome at least once, so a fuzzer that only ever hits the first
length check fails loudly.

Reproduce: every test prints its seed (pytest shows it with a failure) and every assertion
message carries it; rerun with ``MOMENTS_FUZZ_SEED=<seed>``.  Soak: ``MOMENTS_FUZZ_ITERATIONS``
sets the number of decoder inputs per test (default 20,000); the node-message test runs
3/20 of that.
"""

from __future__ import annotations

import json
import os
import random
import string
import struct
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from beacons import (
    AdvertisingReport,
    AltBeacon,
    DecodeError,
    EddystoneEID,
    EddystoneETLM,
    EddystoneTLM,
    EddystoneUID,
    EddystoneURL,
    Frame,
    IBeacon,
    decode_advertisement,
    decode_hex,
    decode_manufacturer_data,
    decode_service_data,
    parse_advertisement,
)
from beacons.hci import decode_hci_event
from firmware_sim import adverts
from gateway.errors import NodeMessageError
from gateway.nodes import Advert, NodeBatch, NodeLimits, encode_batch, parse_batch

SEED_ENV = "MOMENTS_FUZZ_SEED"
ITERATIONS_ENV = "MOMENTS_FUZZ_ITERATIONS"
DEFAULT_ITERATIONS = 20_000

FRAME_TYPES = (
    IBeacon,
    AltBeacon,
    EddystoneUID,
    EddystoneURL,
    EddystoneTLM,
    EddystoneETLM,
    EddystoneEID,
)
FRAME_TAGS = frozenset(cls.TYPE for cls in FRAME_TYPES)


# --- seed and size ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fuzz:
    seed: int
    rng: random.Random
    iterations: int

    def where(self, what: str, value: object) -> str:
        """The prefix of every assertion message: how to reproduce, and the input."""
        shown = value.hex() if isinstance(value, bytes | bytearray) else repr(value)
        return f"fuzz seed {self.seed} ({SEED_ENV}={self.seed}): {what} {shown}"


def _iterations() -> int:
    text = os.environ.get(ITERATIONS_ENV, "")
    if not text:
        return DEFAULT_ITERATIONS
    try:
        value = int(text)
    except ValueError:
        pytest.fail(f"{ITERATIONS_ENV} must be a positive integer, got {text!r}")
    if value < 1:
        pytest.fail(f"{ITERATIONS_ENV} must be a positive integer, got {text!r}")
    return value


@pytest.fixture
def fuzz() -> Fuzz:
    text = os.environ.get(SEED_ENV, "")
    if text:
        try:
            seed = int(text)
        except ValueError:
            pytest.fail(f"{SEED_ENV} must be an integer, got {text!r}")
    else:
        seed = random.SystemRandom().randrange(2**32)
    print(f"fuzz seed {seed}: rerun with {SEED_ENV}={seed}")
    return Fuzz(seed, random.Random(seed), _iterations())


# --- the corpus: valid payloads of every type, from the public layouts ------------------

FLAGS = bytes.fromhex("020106")
EDDYSTONE_LIST = bytes.fromhex("0303aafe")


def ad(ad_type: int, body: bytes) -> bytes:
    return bytes((len(body) + 1, ad_type)) + body


def eddystone(frame: bytes) -> bytes:
    return FLAGS + EDDYSTONE_LIST + ad(0x16, b"\xaa\xfe" + frame)


IBEACON = adverts.ibeacon("e2c56db5-dffb-48d2-b060-d0f5a71096e0", 1, 2, -59)
ALTBEACON = FLAGS + ad(
    0xFF,
    b"\x18\x01\xbe\xac"
    + uuid.UUID("2f234454-cf6d-4a0f-adf2-f4911ba9ffa6").bytes
    + b"\x00\x01\x00\x02\xc5\x00",
)
CORPUS: tuple[bytes, ...] = (
    IBEACON,
    adverts.ibeacon("2f234454-cf6d-4a0f-adf2-f4911ba9ffa6", 65535, 0, -128),
    ALTBEACON,
    adverts.eddystone_uid(bytes.fromhex("edd1ebeac04e5defa017"), bytes.fromhex("0badc0ffee01")),
    eddystone(b"\x10\xec\x03example\x00shop"),  # https://example.com/shop
    eddystone(b"\x10\x00\x00goo.gl/S6zT6P"),  # http://www.goo.gl/S6zT6P
    adverts.eddystone_tlm(3000, 21.5, 12345, 3600.0),
    eddystone(b"\x20\x00" + struct.pack(">HHII", 0, 0x8000, 7, 25)),  # no temperature
    eddystone(b"\x20\x01" + bytes(range(12)) + struct.pack(">HH", 0x1234, 0xBEEF)),  # eTLM
    adverts.eddystone_eid(bytes.fromhex("7dd8169dae94258c")),
    adverts.phone_noise(b"\x01\x02\x03\x04\x05\x06\x07\x08"),  # no beacon frame
    FLAGS,
    FLAGS + ad(0x09, b"Kiosk") + b"\x00" * 8,  # zero length ends the payload, padding after
    # An iBeacon advertisement followed by an Eddystone-UID scan response (62 bytes).
    IBEACON + adverts.eddystone_uid(bytes(10), bytes(6))[3:],
    # Manufacturer data of another company, then Eddystone-EID service data.
    ad(0xFF, b"\x59\x00\x01\x02") + adverts.eddystone_eid(bytes(8))[3:],
)

assert all(len(entry) <= 62 for entry in CORPUS), "legacy advertisement + scan response"


def ad_offsets(payload: bytes) -> list[tuple[int, int]]:
    """``(start, end)`` of each AD structure, as far as the lengths can be followed."""
    spans = []
    offset = 0
    while offset < len(payload) and payload[offset]:
        end = offset + 1 + payload[offset]
        spans.append((offset, min(end, len(payload))))
        offset = end
    return spans


# --- mutations ----------------------------------------------------------------------------


def flip_bits(rng: random.Random, data: bytearray) -> None:
    for _ in range(rng.randint(1, 4)):
        if data:
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)


def insert_bytes(rng: random.Random, data: bytearray) -> None:
    at = rng.randint(0, len(data))
    data[at:at] = rng.randbytes(rng.randint(1, 4))


def delete_bytes(rng: random.Random, data: bytearray) -> None:
    if data:
        at = rng.randrange(len(data))
        del data[at : at + rng.randint(1, 4)]


def corrupt_length(rng: random.Random, data: bytearray) -> None:
    spans = ad_offsets(bytes(data))
    if not spans:
        flip_bits(rng, data)
        return
    start, _ = rng.choice(spans)
    data[start] = rng.choice(
        [0, 1, 2, 0xFF, rng.randrange(256), max(0, data[start] - 1), min(255, data[start] + 1)]
    )


def truncate(rng: random.Random, data: bytearray) -> None:
    del data[rng.randint(0, len(data)) :]


def duplicate_ad(rng: random.Random, data: bytearray) -> None:
    spans = ad_offsets(bytes(data))
    if not spans:
        data.extend(data)
        return
    start, end = rng.choice(spans)
    at = rng.choice([end, len(data), 0])
    data[at:at] = data[start:end] * rng.randint(1, 8)


def overwrite(rng: random.Random, data: bytearray) -> None:
    if data:
        at = rng.randrange(len(data))
        chunk = rng.randbytes(rng.randint(1, 8))
        data[at : at + len(chunk)] = chunk


def splice(rng: random.Random, data: bytearray) -> None:
    data.extend(rng.choice(CORPUS)[rng.randint(0, 8) :])


Mutation = Callable[[random.Random, bytearray], None]
MUTATIONS: tuple[Mutation, ...] = (
    flip_bits,
    insert_bytes,
    delete_bytes,
    corrupt_length,
    truncate,
    duplicate_ad,
    overwrite,
    splice,
)


def mutate(rng: random.Random, seed_input: bytes) -> bytes:
    data = bytearray(seed_input)
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        rng.choice(MUTATIONS)(rng, data)
    return bytes(data)


def random_ad_structures(rng: random.Random) -> bytes:
    """Plausible-looking AD structures with random contents, to get past the layout walk."""
    out = bytearray()
    for _ in range(rng.randint(1, 4)):
        ad_type = rng.choice((0x01, 0x03, 0x09, 0x16, 0xFF, rng.randrange(256)))
        if ad_type == 0xFF:
            key = rng.choice((b"\x4c\x00\x02\x15", b"\x18\x01\xbe\xac", rng.randbytes(4)))
        elif ad_type == 0x16:
            key = b"\xaa\xfe" + bytes((rng.choice((0x00, 0x10, 0x20, 0x30, rng.randrange(256))),))
        else:
            key = b""
        out += ad(ad_type, key + rng.randbytes(rng.randint(0, 26)))
    return bytes(out)


def payload(rng: random.Random) -> bytes:
    roll = rng.random()
    if roll < 0.2:
        return rng.randbytes(rng.randint(0, 300))
    if roll < 0.35:
        return random_ad_structures(rng)
    return mutate(rng, rng.choice(CORPUS))


# --- decode_advertisement -------------------------------------------------------------------


def reference_decode(data: bytes) -> Frame | None:
    """The documented rules, spelled out with the public pieces."""
    fields = parse_advertisement(data)
    for company_id, body in fields.manufacturer_data:
        frame = decode_manufacturer_data(company_id, body)
        if frame is not None:
            return frame
    for uuid16, body in fields.service_data_16:
        frame = decode_service_data(uuid16, body)
        if frame is not None:
            return frame
    return None


def outcome_of(call: Callable[[], Any]) -> tuple[str, Any]:
    """``("value", result)``, ``("error", DecodeError)`` or ``("crash", other exception)``."""
    try:
        return "value", call()
    except DecodeError as exc:
        return "error", exc
    except Exception as exc:
        return "crash", exc


def test_decode_advertisement_fuzz(fuzz: Fuzz) -> None:
    outcomes: Counter[str] = Counter()
    for _ in range(fuzz.iterations):
        data = payload(fuzz.rng)
        where = fuzz.where("decode_advertisement", data)
        kind, value = outcome_of(lambda: decode_advertisement(data))  # noqa: B023
        assert kind != "crash", f"{where} raised {value!r}"
        if kind == "error":
            assert isinstance(value.reason, str), where
            assert value.reason, where
            assert str(value) == value.reason, where
            outcomes["DecodeError"] += 1
        elif value is None:
            outcomes["None"] += 1
        else:
            assert isinstance(value, FRAME_TYPES), f"{where} returned {value!r}"
            outcomes[value.TYPE] += 1

        ref_kind, ref_value = outcome_of(lambda: reference_decode(data))  # noqa: B023
        assert ref_kind != "crash", f"{where}: the reference raised {ref_value!r}"
        if kind == "error":
            assert ref_kind == "error", f"{where}: DecodeError {value}, reference {ref_value!r}"
        else:
            assert (ref_kind, ref_value) == (kind, value), (
                f"{where}: {value!r}, reference {ref_value!r}"
            )

    print(f"fuzz seed {fuzz.seed}: outcomes {dict(outcomes)}")
    missing = {"None", "DecodeError", *FRAME_TAGS} - set(outcomes)
    assert not missing, f"fuzz seed {fuzz.seed}: never reached {sorted(missing)}: {outcomes}"


def test_structure_preserving_ibeacon_mutations_still_decode(fuzz: Fuzz) -> None:
    """Random values in every iBeacon field (and the flags), lengths and prefixes kept: the
    fuzzer's inputs really reach the frame decoder and its field extraction."""
    template = bytearray(IBEACON)
    # Flags value at 2; the iBeacon AD starts at 3: length, 0xFF, 4C 00, 02 15, then 21 bytes.
    assert template[3:9] == bytes.fromhex("1aff4c000215"), fuzz.where("template", IBEACON)
    value_positions = [2, *range(9, 30)]
    for _ in range(max(1, fuzz.iterations // 10)):
        data = bytearray(template)
        for position in fuzz.rng.sample(value_positions, fuzz.rng.randint(1, 8)):
            data[position] = fuzz.rng.randrange(256)
        if fuzz.rng.random() < 0.3:  # trailing AD structures do not matter either
            data += ad(fuzz.rng.choice((0x09, 0x0A, 0x16)), fuzz.rng.randbytes(4))
        where = fuzz.where("iBeacon", bytes(data))
        frame = decode_advertisement(bytes(data))
        raw_uuid = bytes(data[9:25])
        major, minor, tx_power = struct.unpack(">HHb", data[25:30])
        assert frame == IBeacon(str(uuid.UUID(bytes=raw_uuid)), major, minor, tx_power), where


# --- decode_hex -------------------------------------------------------------------------------

ODD_CHARACTERS = " \t\n\r\x0b\x0c\u00a0\u2003\u3000xXgG-:,;0x\x00\udcff\u0660\uff10é🙂"


def hex_text(rng: random.Random) -> str:
    text = payload(rng).hex()
    roll = rng.random()
    if roll < 0.15:
        text = text.upper()
    elif roll < 0.3:
        text = "0x" + text
    elif roll < 0.4:
        text = "0X" + text.upper()
    chars = list(text)
    for _ in range(rng.choice((0, 0, 1, 2, 3))):
        at = rng.randint(0, len(chars))
        action = rng.random()
        if action < 0.5:
            chars.insert(at, rng.choice(ODD_CHARACTERS))
        elif action < 0.7:
            chars.insert(at, rng.choice(string.hexdigits))
        elif chars:
            del chars[min(at, len(chars) - 1)]
    if rng.random() < 0.05:
        chars = [chr(rng.randrange(0x110000)) for _ in range(rng.randint(0, 40))]
    return "".join(chars)


def test_decode_hex_fuzz(fuzz: Fuzz) -> None:
    outcomes: Counter[str] = Counter()
    for _ in range(fuzz.iterations):
        text = hex_text(fuzz.rng)
        where = fuzz.where("decode_hex", text)
        try:
            result = decode_hex(text)
        except Exception as exc:
            pytest.fail(f"{where} raised {exc!r}")
        assert isinstance(result, dict), f"{where} returned {result!r}"
        assert "type" in result, f"{where} returned {result!r}"
        json.dumps(result, allow_nan=False)
        if result["type"] is None:
            assert set(result) == {"type", "error"}, f"{where} returned {result!r}"
            assert isinstance(result["error"], str), f"{where} returned {result!r}"
            assert result["error"], f"{where} returned {result!r}"
            outcomes["no beacon" if result["error"] == "no beacon frame found" else "error"] += 1
        else:
            assert result["type"] in FRAME_TAGS, f"{where} returned {result!r}"
            outcomes["frame"] += 1

    print(f"fuzz seed {fuzz.seed}: outcomes {dict(outcomes)}")
    missing = {"frame", "no beacon", "error"} - set(outcomes)
    assert not missing, f"fuzz seed {fuzz.seed}: never reached {sorted(missing)}: {outcomes}"


def test_decode_hex_agrees_with_decode_advertisement(fuzz: Fuzz) -> None:
    for _ in range(max(1, fuzz.iterations // 4)):
        data = payload(fuzz.rng)
        where = fuzz.where("decode_hex of", data)
        try:
            frame = decode_advertisement(data)
        except DecodeError as exc:
            expected: dict[str, Any] = {"type": None, "error": exc.reason}
        else:
            expected = (
                frame.to_dict()
                if frame is not None
                else {"type": None, "error": "no beacon frame found"}
            )
        assert decode_hex(data.hex()) == expected, where
        assert decode_hex(" 0x" + data.hex().upper() + "\n") == expected, where


# --- HCI events -------------------------------------------------------------------------------

_LEGACY_HEAD = struct.Struct("<BB6sB")
_EXTENDED_HEAD = struct.Struct("<HB6sBBBbbHB6sB")


def legacy_report(rng: random.Random, data: bytes) -> bytes:
    rssi = rng.choice((-40, -70, -100, 127))
    head = _LEGACY_HEAD.pack(
        rng.choice((0, 2, 3, 4)), rng.randrange(2), rng.randbytes(6), len(data)
    )
    return head + data + struct.pack("<b", rssi)


def extended_report(rng: random.Random, data: bytes) -> bytes:
    event_type = rng.choice((0x0013, 0x0010, 0x0000, 0x0020, 0x0040))
    head = _EXTENDED_HEAD.pack(
        event_type,
        rng.randrange(2),
        rng.randbytes(6),
        1,
        rng.choice((0, 1, 3)),
        0xFF,
        rng.choice((-4, 0, 127)),
        rng.choice((-50, -90, 127)),
        0,
        0,
        bytes(6),
        len(data),
    )
    return head + data


def hci_event(rng: random.Random) -> bytes:
    """A valid LE (Extended) Advertising Report event carrying corpus payloads."""
    extended = rng.random() < 0.4
    reports = []
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        data = rng.choice(CORPUS)[:31]
        reports.append(extended_report(rng, data) if extended else legacy_report(rng, data))
    params = bytes((0x0D if extended else 0x02, len(reports))) + b"".join(reports)
    h4 = b"\x04" if rng.random() < 0.5 else b""
    return h4 + bytes((0x3E, len(params))) + params


def hci_input(rng: random.Random) -> bytes:
    roll = rng.random()
    if roll < 0.1:
        return rng.randbytes(rng.randint(0, 300))
    event = hci_event(rng)
    if roll < 0.3:
        return event
    data = bytearray(event)
    for _ in range(rng.choice((1, 1, 2))):
        mutation = rng.choice((flip_bits, insert_bytes, delete_bytes, truncate, overwrite))
        mutation(rng, data)
    if rng.random() < 0.3 and len(data) >= 3:  # keep the headers consistent with the length
        start = 1 if data[0] == 0x04 else 0
        data[start + 1] = max(0, min(255, len(data) - start - 2))
    return bytes(data)


def test_decode_hci_event_fuzz(fuzz: Fuzz) -> None:
    outcomes: Counter[str] = Counter()
    for _ in range(fuzz.iterations):
        packet = hci_input(fuzz.rng)
        where = fuzz.where("decode_hci_event", packet)
        kind, value = outcome_of(lambda: decode_hci_event(packet))  # noqa: B023
        assert kind != "crash", f"{where} raised {value!r}"
        if kind == "error":
            assert value.reason, where
            outcomes["DecodeError"] += 1
            continue
        assert isinstance(value, list), f"{where} returned {value!r}"
        assert 1 <= len(value) <= 25, f"{where} returned {len(value)} reports"
        outcomes["list"] += 1
        for report in value:
            assert isinstance(report, AdvertisingReport), f"{where} returned {report!r}"
            assert len(report.address) == 17, f"{where}: {report!r}"
            assert report.frame is None or isinstance(report.frame, FRAME_TYPES), where
            assert report.error is None or report.frame is None, f"{where}: {report!r}"
            assert report.rssi is None or -128 <= report.rssi <= 126, f"{where}: {report!r}"
            if report.frame is not None:
                outcomes["report with frame"] += 1
            elif report.error is not None:
                outcomes["report with error"] += 1
            else:
                outcomes["report without frame"] += 1

    print(f"fuzz seed {fuzz.seed}: outcomes {dict(outcomes)}")
    expected = {
        "DecodeError",
        "list",
        "report with frame",
        "report with error",
        "report without frame",
    }
    missing = expected - set(outcomes)
    assert not missing, f"fuzz seed {fuzz.seed}: never reached {sorted(missing)}: {outcomes}"


# --- scanner-node messages --------------------------------------------------------------------

NODE = "esp32-coffee"
JSON_ODDITIES: tuple[object, ...] = (
    None,
    True,
    0,
    -1,
    2**53 + 1,
    2**64,
    -(2**70),
    1e308,
    -0.0,
    0.5,
    "",
    "zz",
    "0",
    "é" * 40,
    "\u0000",
    [],
    {},
    [1, 2],
    {"v": 1},
)


def valid_batch(rng: random.Random) -> bytes:
    batch = [
        Advert(
            data=rng.choice(CORPUS),
            rssi=rng.randint(-127, 20),
            age_ms=rng.randint(0, 600_000),
            addr=rng.randbytes(6).hex(":"),
        )
        for _ in range(rng.randint(0, 5))
    ]
    return encode_batch(NODE, rng.randint(0, 2**53), rng.uniform(0, 2e9), batch)


def mutate_json(rng: random.Random, wire: bytes) -> bytes:
    """Change, drop or add one field somewhere in a batch, keeping it JSON."""
    message: dict[str, Any] = json.loads(wire)
    target: dict[str, Any] = message
    if message["adv"] and rng.random() < 0.5:
        target = rng.choice(message["adv"])
    key = rng.choice(sorted(target))
    roll = rng.random()
    if roll < 0.6:
        target[key] = rng.choice(JSON_ODDITIES)
    elif roll < 0.75:
        del target[key]
    elif roll < 0.85:
        target["extra"] = rng.choice(JSON_ODDITIES)
    elif isinstance(target.get("data"), str):
        target["data"] = target["data"][: rng.randint(0, 600)] + rng.choice(("", "0", "g0", "é"))
    else:
        message["adv"] = message["adv"] * rng.randint(0, 300)
    return json.dumps(message, ensure_ascii=rng.random() < 0.5).encode()


def node_input(rng: random.Random) -> tuple[str, bytes, NodeLimits]:
    wire = valid_batch(rng)
    roll = rng.random()
    if roll < 0.05:
        wire = rng.randbytes(rng.randint(0, 300))
    elif roll < 0.45:
        wire = mutate_json(rng, wire)
    elif roll < 0.9:
        data = bytearray(wire)
        for _ in range(rng.choice((1, 1, 2))):
            mutation = rng.choice((flip_bits, insert_bytes, delete_bytes, truncate, overwrite))
            mutation(rng, data)
        wire = bytes(data)
    topic_node = NODE if rng.random() < 0.95 else "esp32-other"
    limits = NodeLimits()
    if rng.random() < 0.1:
        limits = NodeLimits(max_payload_bytes=rng.randint(0, 2000), max_batch=rng.randint(0, 4))
    return topic_node, wire, limits


def test_parse_batch_fuzz(fuzz: Fuzz) -> None:
    outcomes: Counter[str] = Counter()
    for _ in range(max(1, fuzz.iterations * 3 // 20)):
        topic_node, wire, limits = node_input(fuzz.rng)
        where = fuzz.where(f"parse_batch({topic_node!r}, {limits})", wire)
        rejected: NodeMessageError | None = None
        try:
            batch = parse_batch(topic_node, wire, limits)
        except NodeMessageError as exc:
            rejected = exc
        except Exception as exc:
            pytest.fail(f"{where} raised {exc!r}")
        if rejected is not None:
            assert isinstance(rejected.reason, str), f"{where}: {rejected!r}"
            assert rejected.reason, f"{where}: {rejected!r}"
            outcomes[rejected.reason] += 1
            continue
        assert isinstance(batch, NodeBatch), f"{where} returned {batch!r}"
        assert batch.node == topic_node, f"{where} returned {batch!r}"
        assert len(wire) <= limits.max_payload_bytes, where
        assert len(batch.adverts) <= limits.max_batch, where
        for advert in batch.adverts:
            assert isinstance(advert.data, bytes), f"{where}: {advert!r}"
            assert 1 <= len(advert.data) <= 255, f"{where}: {advert!r}"
            assert -127 <= advert.rssi <= 20, f"{where}: {advert!r}"
        outcomes["NodeBatch"] += 1

    print(f"fuzz seed {fuzz.seed}: outcomes {dict(outcomes)}")
    expected = {"NodeBatch", "bad_json", "bad_field", "bad_hex", "node_mismatch"}
    missing = expected - set(outcomes)
    assert not missing, f"fuzz seed {fuzz.seed}: never reached {sorted(missing)}: {outcomes}"
