"""Tests of the scanner-node protocol codec: round trips, every rejection reason, exact
limits, and fuzzing that proves nothing but a batch or a NodeMessageError comes out."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import NodeMessageError, PayloadError
from gateway.nodes import (
    MAX_AD_BYTES,
    PROTOCOL_VERSION,
    Advert,
    NodeBatch,
    NodeLimits,
    encode_batch,
    parse_batch,
)

FUZZ = settings(database=None, deadline=None, print_blob=True, max_examples=200)

NODE = "esp32-coffee"
LIMITS = NodeLimits()
REASONS = {
    "oversized_payload",
    "bad_json",
    "bad_field",
    "unsupported_version",
    "node_mismatch",
    "oversized_batch",
    "bad_hex",
}
# Flags and an iBeacon from Apple's Proximity Beacon layout (AirLocate UUID, 1/2, -59 dBm).
IBEACON = bytes.fromhex("0201061aff4c000215e2c56db5dffb48d2b060d0f5a71096e000010002c5")


def advert_dict(**fields: Any) -> dict[str, Any]:
    return {"addr": "6c:1d:eb:00:00:01", "rssi": -61, "age_ms": 120, "data": IBEACON.hex()} | fields


def message(adv: Any = None, **fields: Any) -> dict[str, Any]:
    return {
        "v": 1,
        "node": NODE,
        "seq": 42,
        "ts": 1732300000.25,
        "adv": [advert_dict()] if adv is None else adv,
    } | fields


def wire(obj: object) -> bytes:
    return json.dumps(obj).encode()


def reason_of(payload: bytes, limits: NodeLimits = LIMITS, node: str = NODE) -> str:
    with pytest.raises(NodeMessageError) as info:
        parse_batch(node, payload, limits)
    return info.value.reason


# --- accepted messages ------------------------------------------------------------


def test_documented_example_parses() -> None:
    batch = parse_batch(NODE, wire(message()), LIMITS)

    assert batch == NodeBatch(
        node=NODE,
        seq=42,
        ts=1732300000.25,
        adverts=(Advert(data=IBEACON, rssi=-61, age_ms=120, addr="6c:1d:eb:00:00:01"),),
    )


def test_round_trip_through_encode_batch() -> None:
    adverts = [
        Advert(IBEACON, -61, 120, "6c:1d:eb:00:00:01"),
        Advert(b"\x02\x01\x06", -127, 0, ""),
        Advert(bytes(range(255)), 20, 600_000, "aa:bb:cc:dd:ee:ff"),
    ]

    payload = encode_batch(NODE, 7, 12.5, adverts)

    assert json.loads(payload)["v"] == PROTOCOL_VERSION
    assert parse_batch(NODE, payload, LIMITS) == NodeBatch(NODE, 7, 12.5, tuple(adverts))


_adverts = st.builds(
    Advert,
    data=st.binary(min_size=1, max_size=MAX_AD_BYTES),
    rssi=st.integers(-127, 20),
    age_ms=st.integers(0, 600_000),
    addr=st.text(max_size=17),
)


@FUZZ
@given(
    node=st.text(min_size=1, max_size=64),
    seq=st.integers(0, 2**53),
    ts=st.floats(min_value=0, max_value=1e12, allow_nan=False, allow_infinity=False),
    adverts=st.lists(_adverts, max_size=8),
)
def test_round_trip_property(node: str, seq: int, ts: float, adverts: list[Advert]) -> None:
    payload = encode_batch(node, seq, ts, adverts)

    assert parse_batch(node, payload, LIMITS) == NodeBatch(node, seq, ts, tuple(adverts))


def test_optional_advert_fields_take_their_defaults() -> None:
    payload = wire(message(adv=[{"rssi": -70, "data": "0201"}]))

    (advert,) = parse_batch(NODE, payload, LIMITS).adverts

    assert advert == Advert(data=b"\x02\x01", rssi=-70, age_ms=0, addr="")


def test_unknown_fields_are_tolerated_for_forward_compatibility() -> None:
    payload = wire(message(adv=[advert_dict(channel=37)], fw="1.2.3"))

    batch = parse_batch(NODE, payload, LIMITS)

    assert batch.adverts[0].data == IBEACON


def test_hex_is_accepted_in_either_case() -> None:
    payload = wire(message(adv=[advert_dict(data="0A0b")]))

    assert parse_batch(NODE, payload, LIMITS).adverts[0].data == b"\x0a\x0b"


def test_an_empty_batch_is_accepted() -> None:
    assert parse_batch(NODE, wire(message(adv=[])), LIMITS).adverts == ()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("rssi", -127),
        ("rssi", 20),
        ("age_ms", 0),
        ("age_ms", 600_000),
        ("addr", "a" * 17),
        ("data", "ab" * MAX_AD_BYTES),
    ],
)
def test_advert_bounds_are_inclusive(field: str, value: object) -> None:
    batch = parse_batch(NODE, wire(message(adv=[advert_dict(**{field: value})])), LIMITS)

    assert len(batch.adverts) == 1


@pytest.mark.parametrize(("field", "value"), [("seq", 0), ("seq", 2**53), ("ts", 0.0)])
def test_batch_bounds_are_inclusive(field: str, value: float) -> None:
    batch = parse_batch(NODE, wire(message(**{field: value})), LIMITS)

    assert getattr(batch, field) == value


def test_node_id_of_64_characters_is_accepted() -> None:
    node = "n" * 64

    assert parse_batch(node, wire(message(node=node)), LIMITS).node == node


# --- limits at the boundary ----------------------------------------------------------


def test_payload_exactly_at_the_size_limit_is_accepted() -> None:
    payload = wire(message())

    batch = parse_batch(NODE, payload, NodeLimits(max_payload_bytes=len(payload)))

    assert batch.seq == 42


def test_payload_one_byte_over_the_size_limit_is_refused() -> None:
    payload = wire(message())

    assert reason_of(payload, NodeLimits(max_payload_bytes=len(payload) - 1)) == (
        "oversized_payload"
    )


def test_size_is_checked_before_parsing() -> None:
    """An oversized message is refused by its size alone, even when it is not JSON."""
    assert reason_of(b"\xff" * 100, NodeLimits(max_payload_bytes=99)) == "oversized_payload"


@pytest.mark.parametrize("max_batch", [1, 3, 10])
def test_exactly_max_batch_adverts_are_accepted(max_batch: int) -> None:
    payload = wire(message(adv=[advert_dict()] * max_batch))

    batch = parse_batch(NODE, payload, NodeLimits(max_batch=max_batch))

    assert len(batch.adverts) == max_batch


@pytest.mark.parametrize("max_batch", [1, 3, 10])
def test_one_advert_over_max_batch_is_refused(max_batch: int) -> None:
    payload = wire(message(adv=[advert_dict()] * (max_batch + 1)))

    assert reason_of(payload, NodeLimits(max_batch=max_batch)) == "oversized_batch"


def test_default_limits() -> None:
    assert NodeLimits() == NodeLimits(max_payload_bytes=65_536, max_batch=256)


# --- every rejection reason ----------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [b"", b"{", b"not json", b'{"v": 1,}', wire(message()) + b" trailing", b"\xef\xbb\xbf{}"],
)
def test_bad_json(payload: bytes) -> None:
    assert reason_of(payload) == "bad_json"


@pytest.mark.parametrize(
    "obj",
    [
        [],
        "text",
        {k: v for k, v in message().items() if k != "v"},
        {k: v for k, v in message().items() if k != "adv"},
        message(seq=-1),
        message(seq=2**53 + 1),
        message(seq="42"),
        message(ts=-0.5),
        message(ts="now"),
        message(node=""),
        message(node="n" * 65),
        message(node=5),
        message(v="1"),
        message(adv={}),
        message(adv=["0201"]),
        message(adv=[advert_dict(rssi=21)]),
        message(adv=[advert_dict(rssi=-128)]),
        message(adv=[advert_dict(rssi=-60.5)]),
        message(adv=[advert_dict(rssi=True)]),
        message(adv=[advert_dict(rssi="-60")]),
        message(adv=[advert_dict(age_ms=-1)]),
        message(adv=[advert_dict(age_ms=600_001)]),
        message(adv=[advert_dict(addr="a" * 18)]),
        message(adv=[advert_dict(data="00" * (MAX_AD_BYTES + 2))]),
        message(adv=[advert_dict(data=None)]),
        message(adv=[{"data": "0201"}]),
    ],
)
def test_bad_field(obj: object) -> None:
    assert reason_of(wire(obj)) == "bad_field"


def test_bad_field_names_where() -> None:
    with pytest.raises(NodeMessageError) as info:
        parse_batch(NODE, wire(message(adv=[advert_dict(rssi=99)])), LIMITS)

    assert "adv[0].rssi" in info.value.detail


@pytest.mark.parametrize("version", [0, 2, -1, 10**30])
def test_unsupported_version(version: int) -> None:
    assert reason_of(wire(message(v=version))) == "unsupported_version"


def test_node_mismatch() -> None:
    assert reason_of(wire(message(node="esp32-entrance"))) == "node_mismatch"


def test_node_match_is_exact() -> None:
    assert reason_of(wire(message(node=NODE.upper()))) == "node_mismatch"


@pytest.mark.parametrize(
    ("data", "why"),
    [
        ("abc", "odd length"),
        ("0", "odd length"),
        ("zz", "not hex"),
        ("0g", "not hex"),
        ("\u00e9\u00e9", "not hex"),
        (" 0", "not hex"),
        ("", "empty"),
    ],
)
def test_bad_hex(data: str, why: str) -> None:
    with pytest.raises(NodeMessageError) as info:
        parse_batch(NODE, wire(message(adv=[advert_dict(data=data)])), LIMITS)

    assert info.value.reason == "bad_hex"
    assert why in info.value.detail


def test_bad_hex_names_the_advert_index() -> None:
    adv = [advert_dict(), advert_dict(), advert_dict(data="xyz0")]

    with pytest.raises(NodeMessageError) as info:
        parse_batch(NODE, wire(message(adv=adv)), LIMITS)

    assert "adv[2]" in info.value.detail


def test_error_is_a_payload_error_with_a_reason_in_its_message() -> None:
    with pytest.raises(PayloadError) as info:
        parse_batch(NODE, b"{", LIMITS)

    assert isinstance(info.value, NodeMessageError)
    assert str(info.value).startswith("bad_json")


def test_advert_one_byte_over_max_ad_bytes_is_refused() -> None:
    payload = wire(message(adv=[advert_dict(data="00" * (MAX_AD_BYTES + 1))]))

    assert reason_of(payload) == "bad_field"


@pytest.mark.parametrize(
    "payload",
    [
        b'{"v":1,"node":"\xff","seq":1,"ts":1,"adv":[]}',
        b'{"v":1,"node":"n","seq":1,"ts":1,"adv":[{"rssi":-50,"data":"\xc3"}]}',
        b'{"v":1,"node":"n","seq":1,"ts":1,"adv":[{"rssi":-50,"data":"00","addr":"\xed\xa0\x80"}]}',
    ],
)
def test_invalid_utf8_in_a_string_field_is_a_node_message_error(payload: bytes) -> None:
    with pytest.raises(NodeMessageError) as info:
        parse_batch("n", payload, LIMITS)

    assert info.value.reason == "bad_json"


# --- fuzzing: a batch or a NodeMessageError, nothing else ---------------------------


def check_outcome(payload: bytes, node: str = NODE, limits: NodeLimits = LIMITS) -> None:
    reason: str | None = None
    try:
        batch = parse_batch(node, payload, limits)
    except NodeMessageError as exc:
        reason = exc.reason
    if reason is not None:
        assert reason in REASONS
        return
    assert isinstance(batch, NodeBatch)
    assert batch.node == node
    assert len(payload) <= limits.max_payload_bytes
    assert len(batch.adverts) <= limits.max_batch
    for advert in batch.adverts:
        assert isinstance(advert.data, bytes)
        assert advert.data
        assert -127 <= advert.rssi <= 20
        assert 0 <= advert.age_ms <= 600_000


@FUZZ
@given(st.binary(max_size=2000))
def test_fuzz_bytes(payload: bytes) -> None:
    check_outcome(payload, limits=NodeLimits(max_payload_bytes=1024, max_batch=4))


@FUZZ
@given(st.text(max_size=1000))
def test_fuzz_text(text: str) -> None:
    check_outcome(text.encode("utf-8"), limits=NodeLimits(max_payload_bytes=1024, max_batch=4))


_json_leaves = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(["", "0201", "abc", "zz", NODE, IBEACON.hex()])
)
_json = st.recursive(
    _json_leaves,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=30,
)
_advert_ish = st.fixed_dictionaries(
    {},
    optional={
        "rssi": st.integers(-130, 25) | _json,
        "data": st.sampled_from(["0201", IBEACON.hex(), "", "0", "zz"]) | _json,
        "age_ms": st.integers(-1, 600_001) | _json,
        "addr": st.text(max_size=20) | _json,
    },
)
_message_ish = st.fixed_dictionaries(
    {},
    optional={
        "v": st.sampled_from([0, 1, 2]) | _json,
        "node": st.sampled_from([NODE, "other", ""]) | _json,
        "seq": st.integers(-1, 2**54) | _json,
        "ts": st.floats(allow_nan=False) | _json,
        "adv": st.lists(_advert_ish | _json, max_size=6) | _json,
        "extra": _json,
    },
)


@FUZZ
@given(_message_ish | _json, st.booleans())
def test_fuzz_json_shaped(obj: object, ascii_only: bool) -> None:
    check_outcome(
        json.dumps(obj, ensure_ascii=ascii_only).encode("utf-8"),
        limits=NodeLimits(max_payload_bytes=4096, max_batch=4),
    )
