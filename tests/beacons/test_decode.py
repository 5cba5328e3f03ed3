"""Pure tests of the beacon decoders over byte literals built from the public specs.

Sources of the layouts: Apple's Proximity Beacon specification (iBeacon), the AltBeacon
protocol specification v1.0, and Google's Eddystone protocol specification
(UID, URL, TLM plain and encrypted, EID frame layouts).
"""

from __future__ import annotations

import dataclasses
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beacons import (
    MAX_PAYLOAD,
    ADStructure,
    AltBeacon,
    BeaconError,
    DecodeError,
    EddystoneEID,
    EddystoneETLM,
    EddystoneTLM,
    EddystoneUID,
    EddystoneURL,
    IBeacon,
    decode_advertisement,
    decode_bleak,
    decode_hex,
    decode_manufacturer_data,
    decode_service_data,
    iter_ad_structures,
    parse_advertisement,
)

# No example database in the working tree, no timing in tests, seeds printed on failure.
FUZZ = settings(database=None, deadline=None, print_blob=True, max_examples=500)
ROUND_TRIP = settings(database=None, deadline=None, print_blob=True, max_examples=200)

EDDYSTONE_KEY = "0000feaa-0000-1000-8000-00805f9b34fb"


# --- payload builders (straight from the layouts in the specifications) ------------


def ad(ad_type: int, data: bytes) -> bytes:
    return bytes([len(data) + 1, ad_type]) + data


FLAGS = ad(0x01, b"\x06")  # LE General Discoverable, BR/EDR not supported
EDDYSTONE_UUID_LIST = ad(0x03, b"\xaa\xfe")  # complete list of 16-bit UUIDs: 0xFEAA


def mfg(company_id: int, data: bytes) -> bytes:
    return ad(0xFF, company_id.to_bytes(2, "little") + data)


def svc16(uuid16: int, data: bytes) -> bytes:
    return ad(0x16, uuid16.to_bytes(2, "little") + data)


def eddystone(frame: bytes) -> bytes:
    return FLAGS + EDDYSTONE_UUID_LIST + svc16(0xFEAA, frame)


def ibeacon_data(raw_uuid: bytes, major: int, minor: int, tx_power: int) -> bytes:
    return (
        b"\x02\x15"
        + raw_uuid
        + major.to_bytes(2, "big")
        + minor.to_bytes(2, "big")
        + tx_power.to_bytes(1, "big", signed=True)
    )


def uid_frame(tx_power: int, namespace: bytes, instance: bytes, rfu: bytes = b"\x00\x00") -> bytes:
    return b"\x00" + tx_power.to_bytes(1, "big", signed=True) + namespace + instance + rfu


def tlm_frame(battery_mv: int, raw_temp: int, adv_count: int, uptime_ds: int) -> bytes:
    return (
        b"\x20\x00"
        + battery_mv.to_bytes(2, "big")
        + raw_temp.to_bytes(2, "big")
        + adv_count.to_bytes(4, "big")
        + uptime_ds.to_bytes(4, "big")
    )


# --- literal vectors -------------------------------------------------------------

# Flags, then a 0x1A-long manufacturer data of Apple: iBeacon with the AirLocate UUID,
# major 1, minor 2, measured power -59 dBm (0xC5).
IBEACON_PAYLOAD = bytes.fromhex(
    "020106 1aff4c00 0215 e2c56db5dffb48d2b060d0f5a71096e0 0001 0002 c5"
)

# AltBeacon: length 0x1B, type 0xFF, company 0x0118 (LE), beacon code BE AC, 20-byte id,
# reference RSSI -66 (0xBE), manufacturer reserved 0x7F.
ALTBEACON_PAYLOAD = bytes.fromhex(
    "020106 1bff1801 beac 00112233445566778899aabbccddeeff01020304 be 7f"
)

# Eddystone-UID, service data length 0x17 (with the two RFU bytes), Tx power -20 dBm.
UID_PAYLOAD = bytes.fromhex("020106 0303aafe 1716aafe 00 ec 8b0ca750095477cb3e77 0123456789ab 0000")

# Eddystone-URL for https://goo.gl/S6zT6P (the specification's example), Tx power +18.
URL_PAYLOAD = bytes.fromhex("020106 0303aafe 1316aafe 10 12 03") + b"goo.gl/S6zT6P"

# Eddystone-TLM: 3000 mV, 24.5 C (0x1880), 1234567 advertisements, 12345.6 s up.
TLM_PAYLOAD = bytes.fromhex("020106 0303aafe 1116aafe 20 00 0bb8 1880 0012d687 0001e240")

# Encrypted TLM: 12 bytes of ciphertext, salt 0xBEEF, MIC 0x1234.
ETLM_PAYLOAD = bytes.fromhex("020106 0303aafe 1516aafe 20 01 a1a2a3a4a5a6a7a8a9aaabac beef 1234")

# Eddystone-EID, Tx power -7 dBm, 8-byte ephemeral id.
EID_PAYLOAD = bytes.fromhex("020106 0303aafe 0d16aafe 30 f9 0011223344556677")


# --- every frame type and field ---------------------------------------------------


def test_ibeacon_literal() -> None:
    assert decode_advertisement(IBEACON_PAYLOAD) == IBeacon(
        uuid="e2c56db5-dffb-48d2-b060-d0f5a71096e0", major=1, minor=2, tx_power=-59
    )


def test_ibeacon_big_endian_major_minor() -> None:
    data = ibeacon_data(bytes(range(16)), 0xABCD, 0x1234, 127)
    frame = decode_manufacturer_data(0x004C, data)
    assert frame == IBeacon("00010203-0405-0607-0809-0a0b0c0d0e0f", 0xABCD, 0x1234, 127)


def test_ibeacon_prefix_from_another_company_is_not_ibeacon() -> None:
    data = ibeacon_data(bytes(16), 1, 2, -59)
    assert decode_manufacturer_data(0x0059, data) is None
    assert decode_advertisement(FLAGS + mfg(0x0059, data)) is None


def test_other_apple_manufacturer_data_is_no_frame() -> None:
    # Apple uses other subtypes (e.g. 0x10, 0x12) in the same company id.
    assert decode_advertisement(FLAGS + mfg(0x004C, bytes.fromhex("1005031c2a4b5c"))) is None
    assert decode_manufacturer_data(0x004C, b"") is None
    assert decode_manufacturer_data(0x004C, b"\x02") is None


def test_altbeacon_literal() -> None:
    assert decode_advertisement(ALTBEACON_PAYLOAD) == AltBeacon(
        mfg_id=0x0118,
        beacon_id="00112233445566778899aabbccddeeff01020304",
        ref_rssi=-66,
        mfg_reserved=0x7F,
    )


def test_altbeacon_any_company_id_and_unsigned_reserved() -> None:
    data = b"\xbe\xac" + bytes(range(20, 40)) + b"\x00\xff"
    frame = decode_manufacturer_data(0xFFFF, data)
    assert frame == AltBeacon(0xFFFF, bytes(range(20, 40)).hex(), 0, 255)


def test_eddystone_uid_literal() -> None:
    assert decode_advertisement(UID_PAYLOAD) == EddystoneUID(
        namespace="8b0ca750095477cb3e77", instance="0123456789ab", tx_power=-20
    )


def test_eddystone_uid_without_rfu_bytes() -> None:
    frame = uid_frame(4, bytes(10), b"\xff" * 6, rfu=b"")
    assert len(frame) == 18
    assert decode_advertisement(eddystone(frame)) == EddystoneUID("00" * 10, "ff" * 6, 4)


def test_eddystone_without_uuid_list_still_decodes() -> None:
    payload = FLAGS + svc16(0xFEAA, uid_frame(0, bytes(10), bytes(6)))
    assert isinstance(decode_advertisement(payload), EddystoneUID)


def test_eddystone_url_literal() -> None:
    assert decode_advertisement(URL_PAYLOAD) == EddystoneURL("https://goo.gl/S6zT6P", 18)


@pytest.mark.parametrize(
    ("scheme", "prefix"),
    [(0x00, "http://www."), (0x01, "https://www."), (0x02, "http://"), (0x03, "https://")],
)
def test_eddystone_url_schemes(scheme: int, prefix: str) -> None:
    frame = decode_service_data(0xFEAA, bytes([0x10, 0xEE, scheme]) + b"example\x07")
    assert frame == EddystoneURL(prefix + "example.com", -18)


@pytest.mark.parametrize(
    ("code", "expansion"),
    [
        (0x00, ".com/"),
        (0x01, ".org/"),
        (0x02, ".edu/"),
        (0x03, ".net/"),
        (0x04, ".info/"),
        (0x05, ".biz/"),
        (0x06, ".gov/"),
        (0x07, ".com"),
        (0x08, ".org"),
        (0x09, ".edu"),
        (0x0A, ".net"),
        (0x0B, ".info"),
        (0x0C, ".biz"),
        (0x0D, ".gov"),
    ],
)
def test_eddystone_url_expansion_codes(code: int, expansion: str) -> None:
    data = b"\x10\x00\x02" + b"a" + bytes([code]) + b"b"
    assert decode_service_data(0xFEAA, data) == EddystoneURL(f"http://a{expansion}b", 0)


def test_eddystone_url_several_expansions_and_empty_body() -> None:
    data = b"\x10\x00\x00" + b"shop\x00x\x08"
    assert decode_service_data(0xFEAA, data) == EddystoneURL("http://www.shop.com/x.org", 0)
    assert decode_service_data(0xFEAA, b"\x10\x00\x03") == EddystoneURL("https://", 0)


@pytest.mark.parametrize("byte", [0x0E, 0x19, 0x20, 0x7F, 0x80, 0xFF])
def test_eddystone_url_reserved_bytes(byte: int) -> None:
    with pytest.raises(DecodeError, match=f"0x{byte:02x}"):
        decode_service_data(0xFEAA, b"\x10\x00\x02ab" + bytes([byte]))


def test_eddystone_url_printable_edges_are_kept() -> None:
    data = b"\x10\x00\x02" + b"!~"
    assert decode_service_data(0xFEAA, data) == EddystoneURL("http://!~", 0)


def test_eddystone_url_reserved_scheme() -> None:
    with pytest.raises(DecodeError, match="scheme"):
        decode_service_data(0xFEAA, b"\x10\x00\x04abc")


def test_eddystone_url_encoded_part_limit() -> None:
    assert decode_service_data(0xFEAA, b"\x10\x00\x02" + b"a" * 17) == EddystoneURL(
        "http://" + "a" * 17, 0
    )
    with pytest.raises(DecodeError, match="18 bytes"):
        decode_service_data(0xFEAA, b"\x10\x00\x02" + b"a" * 18)


def test_eddystone_tlm_literal() -> None:
    assert decode_advertisement(TLM_PAYLOAD) == EddystoneTLM(
        battery_mv=3000, temperature_c=24.5, adv_count=1234567, uptime_s=12345.6
    )


@pytest.mark.parametrize(
    ("raw", "celsius"),
    [
        (0x0000, 0.0),
        (0x1880, 24.5),
        (0x0001, 1 / 256),
        (0x7FFF, 127 + 255 / 256),
        (0xFF80, -0.5),
        (0xE700, -25.0),
        (0xFFFF, -1 / 256),
        (0x8001, -(127 + 255 / 256)),
    ],
)
def test_eddystone_tlm_temperature_fixed_point(raw: int, celsius: float) -> None:
    frame = decode_service_data(
        0xFEAA, tlm_frame(0, 0, 0, 0)[:4] + raw.to_bytes(2, "big") + bytes(8)
    )
    assert isinstance(frame, EddystoneTLM)
    assert frame.temperature_c == celsius


def test_eddystone_tlm_temperature_not_supported() -> None:
    frame = decode_service_data(0xFEAA, tlm_frame(0, 0x8000, 7, 10))
    assert frame == EddystoneTLM(battery_mv=0, temperature_c=None, adv_count=7, uptime_s=1.0)
    assert frame.to_dict()["temperature_c"] is None


def test_eddystone_tlm_counters_are_unsigned() -> None:
    frame = decode_service_data(0xFEAA, tlm_frame(0xFFFF, 0, 0xFFFFFFFF, 0xFFFFFFFF))
    assert frame == EddystoneTLM(0xFFFF, 0.0, 0xFFFFFFFF, 0xFFFFFFFF / 10)


def test_eddystone_etlm_literal() -> None:
    assert decode_advertisement(ETLM_PAYLOAD) == EddystoneETLM(
        etlm="a1a2a3a4a5a6a7a8a9aaabac", salt=0xBEEF, mic=0x1234
    )


def test_eddystone_tlm_unknown_version_is_no_frame() -> None:
    assert decode_service_data(0xFEAA, b"\x20\x02" + bytes(16)) is None


def test_eddystone_eid_literal() -> None:
    assert decode_advertisement(EID_PAYLOAD) == EddystoneEID(eid="0011223344556677", tx_power=-7)


def test_unknown_eddystone_frame_type_and_other_uuid_are_no_frame() -> None:
    assert decode_advertisement(eddystone(b"\x40\x00" + bytes(12))) is None
    assert decode_advertisement(FLAGS + svc16(0x180F, b"\x00" + bytes(17))) is None
    assert decode_service_data(0xFEAB, uid_frame(0, bytes(10), bytes(6))) is None


# --- to_dict ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (
            IBEACON_PAYLOAD,
            {
                "type": "ibeacon",
                "uuid": "e2c56db5-dffb-48d2-b060-d0f5a71096e0",
                "major": 1,
                "minor": 2,
                "tx_power": -59,
            },
        ),
        (
            ALTBEACON_PAYLOAD,
            {
                "type": "altbeacon",
                "mfg_id": 0x0118,
                "beacon_id": "00112233445566778899aabbccddeeff01020304",
                "ref_rssi": -66,
                "mfg_reserved": 127,
            },
        ),
        (
            UID_PAYLOAD,
            {
                "type": "eddystone_uid",
                "namespace": "8b0ca750095477cb3e77",
                "instance": "0123456789ab",
                "tx_power": -20,
            },
        ),
        (
            URL_PAYLOAD,
            {"type": "eddystone_url", "url": "https://goo.gl/S6zT6P", "tx_power": 18},
        ),
        (
            TLM_PAYLOAD,
            {
                "type": "eddystone_tlm",
                "battery_mv": 3000,
                "temperature_c": 24.5,
                "adv_count": 1234567,
                "uptime_s": 12345.6,
            },
        ),
        (
            ETLM_PAYLOAD,
            {
                "type": "eddystone_etlm",
                "etlm": "a1a2a3a4a5a6a7a8a9aaabac",
                "salt": 0xBEEF,
                "mic": 0x1234,
            },
        ),
        (EID_PAYLOAD, {"type": "eddystone_eid", "eid": "0011223344556677", "tx_power": -7}),
    ],
)
def test_to_dict_and_decode_hex(payload: bytes, expected: dict[str, object]) -> None:
    frame = decode_advertisement(payload)
    assert frame is not None
    assert frame.to_dict() == expected
    assert expected["type"] == frame.TYPE
    assert set(expected) == {"type"} | {f.name for f in dataclasses.fields(frame)}
    assert decode_hex(payload.hex()) == expected
    assert decode_hex("0x" + payload.hex().upper()) == expected
    spaced = " ".join(f"{b:02x}" for b in payload)
    assert decode_hex(f"\n  {spaced}\t\n") == expected


def test_frames_are_frozen_and_slotted() -> None:
    frame = decode_advertisement(IBEACON_PAYLOAD)
    assert frame is not None
    with pytest.raises(dataclasses.FrozenInstanceError):
        frame.major = 3  # type: ignore[misc]
    assert not hasattr(frame, "__dict__")


# --- malformed input ---------------------------------------------------------------


def test_error_tree() -> None:
    assert issubclass(DecodeError, BeaconError)
    assert issubclass(BeaconError, Exception)
    err = DecodeError("odd-length hex")
    assert err.reason == "odd-length hex"
    assert str(err) == "odd-length hex"


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (
            FLAGS + mfg(0x004C, ibeacon_data(bytes(16), 1, 2, 3)[:-1]),
            "iBeacon frame is 22 bytes, needs 23",
        ),
        (FLAGS + mfg(0x0118, b"\xbe\xac" + bytes(21)), "AltBeacon frame is 23 bytes, needs 24"),
        (
            eddystone(uid_frame(0, bytes(10), bytes(5), rfu=b"")),
            "Eddystone-UID frame is 17 bytes, needs 18",
        ),
        (eddystone(b"\x10\x00"), "Eddystone-URL frame is 2 bytes, needs 3"),
        (eddystone(tlm_frame(1, 2, 3, 4)[:-1]), "Eddystone-TLM frame is 13 bytes, needs 14"),
        (eddystone(b"\x20"), "Eddystone-TLM frame is 1 bytes, needs 2"),
        (eddystone(b"\x20\x01" + bytes(15)), "Eddystone-eTLM frame is 17 bytes, needs 18"),
        (eddystone(b"\x30\x00" + bytes(7)), "Eddystone-EID frame is 9 bytes, needs 10"),
        (eddystone(b""), "Eddystone service data is empty"),
    ],
)
def test_truncated_frames(payload: bytes, match: str) -> None:
    with pytest.raises(DecodeError, match=match):
        decode_advertisement(payload)


def test_overrunning_length() -> None:
    payload = FLAGS + bytes([30, 0xFF]) + bytes(7)
    assert len(payload) == 12
    with pytest.raises(DecodeError, match="length 30 at offset 3 overruns payload of 12 bytes"):
        decode_advertisement(payload)


def test_lone_length_byte_at_the_end_overruns() -> None:
    with pytest.raises(DecodeError, match="overruns"):
        decode_advertisement(FLAGS + b"\x05")


def test_overrun_after_a_valid_frame_is_still_an_error() -> None:
    with pytest.raises(DecodeError, match="overruns"):
        decode_advertisement(IBEACON_PAYLOAD + b"\x09\x09abc")


def test_key_shorter_than_two_bytes() -> None:
    with pytest.raises(DecodeError, match="manufacturer specific data"):
        decode_advertisement(FLAGS + ad(0xFF, b"\x4c"))
    with pytest.raises(DecodeError, match="16-bit service data"):
        decode_advertisement(FLAGS + ad(0x16, b""))


def test_zero_length_ends_the_significant_part() -> None:
    # Everything after the zero length is padding, even bytes that would overrun.
    payload = IBEACON_PAYLOAD + b"\x00" + b"\xff\xff\xff"
    assert isinstance(decode_advertisement(payload), IBeacon)
    assert decode_advertisement(FLAGS + b"\x00" + IBEACON_PAYLOAD) is None
    assert decode_advertisement(bytes(31)) is None


def test_payload_size_limit() -> None:
    filler = ad(0x09, b"n" * 253)  # complete local name, 255 bytes in all
    assert len(filler) == MAX_PAYLOAD
    assert decode_advertisement(filler) is None
    with pytest.raises(DecodeError, match="256 bytes exceeds 255"):
        decode_advertisement(filler + b"\x00")


def test_unknown_company_ids_and_empty_payload() -> None:
    assert decode_advertisement(b"") is None
    assert decode_advertisement(FLAGS) is None
    assert decode_advertisement(FLAGS + mfg(0x0006, b"\x01\x09\x20\x02")) is None
    assert decode_advertisement(FLAGS + mfg(0x1234, b"")) is None
    assert decode_manufacturer_data(0xBEEF, bytes(30)) is None


def test_manufacturer_frame_wins_over_service_data() -> None:
    payload = EID_PAYLOAD + mfg(0x004C, ibeacon_data(bytes(16), 5, 6, -1))
    assert isinstance(decode_advertisement(payload), IBeacon)


def test_scan_response_concatenated() -> None:
    adv = FLAGS + ad(0x09, b"shelf-7")  # 31-byte legacy budget, no frame in it
    scan_response = EID_PAYLOAD[3:]
    assert decode_advertisement(adv + scan_response) == EddystoneEID("0011223344556677", -7)


# --- AD structures -------------------------------------------------------------------


def test_iter_ad_structures() -> None:
    structures = list(iter_ad_structures(UID_PAYLOAD + b"\x01\x0a\x00\xff"))
    assert structures[:2] == [ADStructure(2, 0x01, b"\x06"), ADStructure(3, 0x03, b"\xaa\xfe")]
    assert structures[2].length == 0x17
    assert structures[2].ad_type == 0x16
    assert structures[3] == ADStructure(1, 0x0A, b"")  # length 1: type, no data
    assert len(structures) == 4


def test_iter_ad_structures_checks_size_eagerly() -> None:
    with pytest.raises(DecodeError, match="exceeds"):
        iter_ad_structures(bytes(300))


def test_parse_advertisement_keeps_order_and_duplicates() -> None:
    payload = mfg(0x004C, b"a") + svc16(0xFEAA, b"x") + mfg(0x004C, b"b") + svc16(0x180F, b"")
    fields = parse_advertisement(payload)
    assert fields.manufacturer_data == ((0x004C, b"a"), (0x004C, b"b"))
    assert fields.service_data_16 == ((0xFEAA, b"x"), (0x180F, b""))


# --- bleak's AdvertisementData shape -------------------------------------------------


def test_decode_bleak_service_data() -> None:
    frame = decode_bleak({}, {EDDYSTONE_KEY: uid_frame(-4, bytes(range(10)), bytes(6))})
    assert frame == EddystoneUID("00010203040506070809", "000000000000", -4)
    upper = decode_bleak({}, {EDDYSTONE_KEY.upper(): b"\x30\x01" + bytes(8)})
    assert upper == EddystoneEID("00" * 8, 1)


def test_decode_bleak_manufacturer_data() -> None:
    data = ibeacon_data(uuid.UUID("e2c56db5-dffb-48d2-b060-d0f5a71096e0").bytes, 1, 2, -59)
    assert decode_bleak({0x004C: data}, {}) == decode_advertisement(IBEACON_PAYLOAD)


def test_decode_bleak_skips_other_uuids() -> None:
    frame_bytes = uid_frame(0, bytes(10), bytes(6))
    service_data = {
        "0000180f-0000-1000-8000-00805f9b34fb": frame_bytes,
        "1234feaa-0000-1000-8000-00805f9b34fb": frame_bytes,
        "0000feaa-0000-1000-8000-00805f9b34fc": frame_bytes,
        "0000+eaa-0000-1000-8000-00805f9b34fb": frame_bytes,
        "not a uuid": frame_bytes,
    }
    assert decode_bleak({0x0006: b"\x01\x02"}, service_data) is None


def test_decode_bleak_malformed_is_decode_error() -> None:
    with pytest.raises(DecodeError, match="Eddystone-UID"):
        decode_bleak({}, {EDDYSTONE_KEY: b"\x00\x00"})


# --- decode_hex ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("020", "odd-length hex"),
        ("0x0", "odd-length hex"),
        ("02 01 0", "odd-length hex"),
        ("0201zz", "non-hex character 'z' at position 4"),
        ("0x0x", "non-hex character 'x' at position 1"),
        ("", "no beacon frame found"),
        ("0x", "no beacon frame found"),
        ("020106", "no beacon frame found"),
        ("1eff", "AD structure length 30 at offset 0 overruns payload of 2 bytes"),
    ],
)
def test_decode_hex_errors(text: str, error: str) -> None:
    assert decode_hex(text) == {"type": None, "error": error}


# --- properties ----------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=300))
def test_decode_advertisement_total_on_arbitrary_bytes(payload: bytes) -> None:
    reason = None
    try:
        frame = decode_advertisement(payload)
    except DecodeError as exc:
        frame, reason = None, exc.reason
    assert frame is None or frame.to_dict()["type"] == frame.TYPE
    assert reason is None or reason  # a DecodeError always says why


_MFG_PREFIXES = st.sampled_from([b"\x02\x15", b"\xbe\xac", b"", b"\x02"])
_EDDYSTONE_HEADS = st.sampled_from(
    [b"\x00", b"\x10", b"\x10\x00\x01", b"\x20\x00", b"\x20\x01", b"\x20", b"\x30", b""]
)
_STRUCTURES = st.one_of(
    st.tuples(
        st.sampled_from([0x004C, 0x0118]) | st.integers(0, 0xFFFF), _MFG_PREFIXES, st.binary()
    ).map(lambda t: mfg(t[0], t[1] + t[2])),
    st.tuples(st.just(0xFEAA) | st.integers(0, 0xFFFF), _EDDYSTONE_HEADS, st.binary()).map(
        lambda t: svc16(t[0], t[1] + t[2])
    ),
    st.tuples(st.integers(0, 0xFF), st.binary(max_size=40)).map(lambda t: ad(t[0], t[1])),
    st.binary(max_size=4),
)


@FUZZ
@given(st.lists(_STRUCTURES, max_size=6).map(b"".join))
def test_decode_advertisement_total_on_structured_bytes(payload: bytes) -> None:
    try:
        frame = decode_advertisement(payload)
    except DecodeError:
        return
    assert frame is None or frame.to_dict()["type"] == frame.TYPE


@FUZZ
@given(st.text())
def test_decode_hex_never_raises(text: str) -> None:
    result = decode_hex(text)
    assert "type" in result
    if result["type"] is None:
        assert isinstance(result["error"], str)


@FUZZ
@given(st.binary(max_size=300).map(bytes.hex))
def test_decode_hex_never_raises_on_valid_hex(text: str) -> None:
    result = decode_hex(text)
    assert result["type"] is None or isinstance(result["type"], str)


@ROUND_TRIP
@given(
    raw_uuid=st.binary(min_size=16, max_size=16),
    major=st.integers(0, 0xFFFF),
    minor=st.integers(0, 0xFFFF),
    tx_power=st.integers(-128, 127),
)
def test_ibeacon_round_trip(raw_uuid: bytes, major: int, minor: int, tx_power: int) -> None:
    payload = FLAGS + mfg(0x004C, ibeacon_data(raw_uuid, major, minor, tx_power))
    assert decode_advertisement(payload) == IBeacon(
        str(uuid.UUID(bytes=raw_uuid)), major, minor, tx_power
    )


@ROUND_TRIP
@given(
    tx_power=st.integers(-128, 127),
    namespace=st.binary(min_size=10, max_size=10),
    instance=st.binary(min_size=6, max_size=6),
    rfu=st.sampled_from([b"", b"\x00\x00"]),
)
def test_eddystone_uid_round_trip(
    tx_power: int, namespace: bytes, instance: bytes, rfu: bytes
) -> None:
    payload = eddystone(uid_frame(tx_power, namespace, instance, rfu))
    assert decode_advertisement(payload) == EddystoneUID(namespace.hex(), instance.hex(), tx_power)


@ROUND_TRIP
@given(
    battery=st.integers(0, 0xFFFF),
    raw_temp=st.integers(0, 0xFFFF),
    adv_count=st.integers(0, 0xFFFFFFFF),
    uptime_ds=st.integers(0, 0xFFFFFFFF),
)
def test_eddystone_tlm_round_trip(
    battery: int, raw_temp: int, adv_count: int, uptime_ds: int
) -> None:
    frame = decode_advertisement(eddystone(tlm_frame(battery, raw_temp, adv_count, uptime_ds)))
    assert isinstance(frame, EddystoneTLM)
    assert (frame.battery_mv, frame.adv_count) == (battery, adv_count)
    assert frame.uptime_s * 10 == pytest.approx(uptime_ds)
    if raw_temp == 0x8000:
        assert frame.temperature_c is None
    else:
        assert frame.temperature_c is not None
        assert round(frame.temperature_c * 256) % 0x10000 == raw_temp


_URL_EXPANSIONS = [".com/", ".org/", ".edu/", ".net/", ".info/", ".biz/", ".gov/"]
_URL_EXPANSIONS += [e.rstrip("/") for e in _URL_EXPANSIONS]
_URL_PIECES = st.one_of(
    st.integers(0x21, 0x7E).map(lambda b: (bytes([b]), chr(b))),
    st.integers(0, 13).map(lambda c: (bytes([c]), _URL_EXPANSIONS[c])),
)


@ROUND_TRIP
@given(
    scheme=st.integers(0, 3),
    tx_power=st.integers(-128, 127),
    pieces=st.lists(_URL_PIECES, max_size=17),
)
def test_eddystone_url_round_trip(
    scheme: int, tx_power: int, pieces: list[tuple[bytes, str]]
) -> None:
    encoded = b"".join(p[0] for p in pieces)
    expected = ("http://www.", "https://www.", "http://", "https://")[scheme]
    expected += "".join(p[1] for p in pieces)
    frame_bytes = b"\x10" + tx_power.to_bytes(1, "big", signed=True) + bytes([scheme]) + encoded
    assert decode_advertisement(eddystone(frame_bytes)) == EddystoneURL(expected, tx_power)
