"""Pure tests of the HCI LE advertising report decoder.

Layouts from the Bluetooth Core Specification, Vol 4, Part E: 5.4.4 (HCI event packet),
5.2 (arrayed parameters: A[0], B[0], A[1], B[1], ...), 7.7.65.2 (LE Advertising Report)
and 7.7.65.13 (LE Extended Advertising Report); the H4 packet indicator 0x04 from
Vol 4, Part A.
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beacons import DecodeError, EddystoneUID, Frame, IBeacon, decode_advertisement
from beacons.hci import AdvertisingReport, decode_hci_event

# No example database in the working tree, no timing in tests, seeds printed on failure.
FUZZ = settings(database=None, deadline=None, print_blob=True, max_examples=1000)
ROUND_TRIP = settings(database=None, deadline=None, print_blob=True, max_examples=300)

# Flags + iBeacon (AirLocate UUID, major 1, minor 2, measured power -59 dBm): 30 bytes.
IBEACON_DATA = bytes.fromhex("020106 1aff4c00 0215 e2c56db5dffb48d2b060d0f5a71096e0 0001 0002 c5")
IBEACON = IBeacon("e2c56db5-dffb-48d2-b060-d0f5a71096e0", 1, 2, -59)
# Flags + Eddystone-UID, Tx power -20 dBm: 31 bytes, the legacy maximum.
UID_DATA = bytes.fromhex("020106 0303aafe 1716aafe 00 ec 8b0ca750095477cb3e77 0123456789ab 0000")
UID = EddystoneUID("8b0ca750095477cb3e77", "0123456789ab", -20)

# One LE Advertising Report, with the H4 indicator, as a UART controller sends it:
# 04 | 3E | 2A (42 parameter bytes) | 02 subevent | 01 report |
# 03 ADV_NONCONN_IND | 01 random address | A5 B4 C3 D2 E1 F0 (F0:E1:D2:C3:B4:A5) |
# 1E (30 bytes of data) | data | BA (RSSI -70 dBm)
LEGACY_IBEACON_PACKET = bytes.fromhex(
    "04 3e 2a 02 01 03 01 a5b4c3d2e1f0 1e"
    "020106 1aff4c00 0215 e2c56db5dffb48d2b060d0f5a71096e0 0001 0002 c5"
    "ba"
)


# --- packet builders, straight from the layouts ----------------------------------------


def le_meta(params: bytes, *, h4: bool = True) -> bytes:
    return (b"\x04" if h4 else b"") + bytes([0x3E, len(params)]) + params


def legacy_report(
    event_type: int, address_type: int, address: str, data: bytes, rssi: int
) -> bytes:
    raw_address = bytes.fromhex(address.replace(":", ""))[::-1]
    return (
        bytes([event_type, address_type])
        + raw_address
        + bytes([len(data)])
        + data
        + rssi.to_bytes(1, "little", signed=True)
    )


def legacy_event(*reports: bytes, h4: bool = True) -> bytes:
    return le_meta(bytes([0x02, len(reports)]) + b"".join(reports), h4=h4)


def extended_report(
    event_type: int,
    address_type: int,
    address: str,
    data: bytes,
    *,
    rssi: int = -60,
    tx_power: int = 127,
    primary_phy: int = 0x01,
    secondary_phy: int = 0x00,
    sid: int = 0xFF,
    interval: int = 0,
    direct_type: int = 0,
    direct_address: bytes = bytes(6),
) -> bytes:
    return (
        event_type.to_bytes(2, "little")
        + bytes([address_type])
        + bytes.fromhex(address.replace(":", ""))[::-1]
        + bytes([primary_phy, secondary_phy, sid])
        + tx_power.to_bytes(1, "little", signed=True)
        + rssi.to_bytes(1, "little", signed=True)
        + interval.to_bytes(2, "little")
        + bytes([direct_type])
        + direct_address
        + bytes([len(data)])
        + data
    )


def extended_event(*reports: bytes, h4: bool = True) -> bytes:
    return le_meta(bytes([0x0D, len(reports)]) + b"".join(reports), h4=h4)


# --- legacy reports ----------------------------------------------------------------------


def test_legacy_literal_packet() -> None:
    assert decode_hci_event(LEGACY_IBEACON_PACKET) == [
        AdvertisingReport(
            event_type=0x03,
            address_type=0x01,
            address="F0:E1:D2:C3:B4:A5",
            rssi=-70,
            data=IBEACON_DATA,
            frame=IBEACON,
        )
    ]


def test_builder_matches_the_literal() -> None:
    built = legacy_event(legacy_report(0x03, 0x01, "F0:E1:D2:C3:B4:A5", IBEACON_DATA, -70))
    assert built == LEGACY_IBEACON_PACKET


def test_h4_indicator_is_optional() -> None:
    assert decode_hci_event(LEGACY_IBEACON_PACKET[1:]) == decode_hci_event(LEGACY_IBEACON_PACKET)


def test_two_reports_are_laid_out_report_by_report() -> None:
    # Every field differs between the two reports, and their data lengths differ, so
    # reading any field from the wrong place (e.g. all Event_Types first) gives other values.
    first = legacy_report(0x00, 0x00, "00:11:22:33:44:55", IBEACON_DATA, -40)
    second = legacy_report(0x04, 0x01, "C6:05:04:03:02:01", UID_DATA, 127)
    packet = legacy_event(first, second)
    # Report 1 runs from offset 5 (after 04 3E len 02 02) for 9 + 30 + 1 bytes.
    assert packet[5] == 0x00
    assert packet[5 + 40] == 0x04
    reports = decode_hci_event(packet)
    assert reports == [
        AdvertisingReport(0x00, 0x00, "00:11:22:33:44:55", -40, IBEACON_DATA, IBEACON),
        AdvertisingReport(0x04, 0x01, "C6:05:04:03:02:01", None, UID_DATA, UID),
    ]


def test_three_reports_with_empty_data() -> None:
    packet = legacy_event(
        legacy_report(0x04, 0x00, "01:02:03:04:05:06", b"", -90),
        legacy_report(0x00, 0x01, "AA:BB:CC:DD:EE:FF", IBEACON_DATA, -55),
        legacy_report(0x02, 0x03, "11:22:33:44:55:66", b"\x02\x01\x06", 20),
    )
    reports = decode_hci_event(packet)
    assert [(r.event_type, r.address, r.rssi, r.frame) for r in reports] == [
        (0x04, "01:02:03:04:05:06", -90, None),
        (0x00, "AA:BB:CC:DD:EE:FF", -55, IBEACON),
        (0x02, "11:22:33:44:55:66", 20, None),
    ]
    assert all(r.error is None for r in reports)


def test_bad_data_in_one_report_keeps_the_others() -> None:
    broken = b"\x1e\xff\x4c\x00"  # an AD structure claiming 30 bytes, 3 follow
    packet = legacy_event(
        legacy_report(0x00, 0x00, "00:00:00:00:00:01", IBEACON_DATA, -50),
        legacy_report(0x00, 0x00, "00:00:00:00:00:02", broken, -51),
        legacy_report(0x00, 0x00, "00:00:00:00:00:03", UID_DATA, -52),
    )
    first, second, third = decode_hci_event(packet)
    assert first.frame == IBEACON
    assert third.frame == UID
    assert second.frame is None
    assert second.data == broken
    assert second.error is not None
    assert "overruns" in second.error


def test_rssi_127_is_not_available() -> None:
    (report,) = decode_hci_event(legacy_event(legacy_report(0, 0, "00:00:00:00:00:01", b"", 127)))
    assert report.rssi is None


def test_legacy_data_longer_than_31_is_accepted_inside_the_packet() -> None:
    data = IBEACON_DATA + b"\x03\x03\xaa\xfe"  # 34 bytes, as Linux accepts on 5.x controllers
    (report,) = decode_hci_event(legacy_event(legacy_report(0, 0, "00:00:00:00:00:01", data, -1)))
    assert report.data == data
    assert report.frame == IBEACON


def test_twenty_five_reports() -> None:
    reports = [legacy_report(0x03, 0x01, f"00:00:00:00:00:{i:02X}", b"", -i) for i in range(25)]
    decoded = decode_hci_event(legacy_event(*reports))
    assert [r.address for r in decoded] == [f"00:00:00:00:00:{i:02X}" for i in range(25)]
    assert [r.rssi for r in decoded] == [-i for i in range(25)]


def test_report_is_frozen_and_slotted() -> None:
    (report,) = decode_hci_event(LEGACY_IBEACON_PACKET)
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.rssi = 0  # type: ignore[misc]
    assert not hasattr(report, "__dict__")


# --- extended reports ------------------------------------------------------------------

# Event_Type 0x0010: legacy PDU (bit 4), not connectable, not scannable, data complete.
LEGACY_PDU_NONCONN = 0x0010


def test_extended_report_fields() -> None:
    packet = extended_event(
        extended_report(
            LEGACY_PDU_NONCONN, 0x01, "F0:E1:D2:C3:B4:A5", IBEACON_DATA, rssi=-66, tx_power=-4
        )
    )
    assert decode_hci_event(packet) == [
        AdvertisingReport(
            event_type=LEGACY_PDU_NONCONN,
            address_type=0x01,
            address="F0:E1:D2:C3:B4:A5",
            rssi=-66,
            data=IBEACON_DATA,
            frame=IBEACON,
            tx_power=-4,
            extended=True,
        )
    ]


def test_extended_fixed_part_is_24_bytes() -> None:
    report = extended_report(0, 0, "00:00:00:00:00:01", b"")
    assert len(report) == 24


def test_two_extended_reports_with_unavailable_values() -> None:
    packet = extended_event(
        extended_report(0x0000, 0x00, "01:02:03:04:05:06", UID_DATA, rssi=127, tx_power=127),
        extended_report(
            0x0013,
            0xFF,  # anonymous advertising
            "00:00:00:00:00:00",
            IBEACON_DATA,
            rssi=-80,
            tx_power=7,
            interval=0x0320,
            sid=3,
            secondary_phy=0x02,
        ),
    )
    first, second = decode_hci_event(packet)
    assert (first.rssi, first.tx_power, first.frame, first.address) == (
        None,
        None,
        UID,
        "01:02:03:04:05:06",
    )
    assert (second.event_type, second.address_type, second.rssi, second.tx_power) == (
        0x0013,
        0xFF,
        -80,
        7,
    )
    assert second.frame == IBEACON


@pytest.mark.parametrize(
    ("status", "reason"),
    [(0b01, "more to come"), (0b10, "truncated"), (0b11, "reserved")],
)
def test_extended_incomplete_data_is_not_decoded(status: int, reason: str) -> None:
    packet = extended_event(extended_report(status << 5, 0, "00:00:00:00:00:01", IBEACON_DATA))
    (report,) = decode_hci_event(packet)
    assert report.frame is None
    assert report.error is not None
    assert reason in report.error
    assert report.data == IBEACON_DATA


def test_extended_long_data() -> None:
    data = bytes([200, 0xFF]) + bytes(199)  # one 200-byte manufacturer data structure
    (report,) = decode_hci_event(extended_event(extended_report(0, 0, "00:00:00:00:00:01", data)))
    assert report.data == data
    assert report.error is None
    assert report.frame is None


# --- malformed packets -----------------------------------------------------------------

GOOD = legacy_report(0x00, 0x00, "00:11:22:33:44:55", IBEACON_DATA, -40)


@pytest.mark.parametrize(
    ("packet", "reason"),
    [
        (b"", "shorter than its 2-byte event header"),
        (b"\x04", "shorter than its 2-byte event header"),
        (b"\x04\x3e", "shorter than its 2-byte event header"),
        (bytes.fromhex("040e0401030c00"), "event code 0x0e is not LE Meta"),
        (bytes.fromhex("3e0a0100"), "parameter length 10 overruns the packet"),
        (le_meta(b"\x02\x01") + b"\x00", "1 bytes follow the HCI event's 2 parameter bytes"),
        (le_meta(b"\x02"), "needs a subevent code and Num_Reports"),
        (le_meta(b""), "needs a subevent code and Num_Reports"),
        (le_meta(bytes.fromhex("0100")), "subevent 0x01 is not an advertising report"),
        (le_meta(bytes.fromhex("0b01")), "subevent 0x0b is not an advertising report"),
        (le_meta(b"\x02\x00"), "Num_Reports 0 is outside 1..25"),
        (le_meta(b"\x02\x1a" + GOOD), "Num_Reports 26 is outside 1..25"),
        (le_meta(b"\x0d\x00"), "Num_Reports 0 is outside 1..10"),
        (le_meta(b"\x0d\x0b"), "Num_Reports 11 is outside 1..10"),
        (le_meta(b"\x02\x01" + GOOD[:8]), "report 1 of 1 is truncated"),
        (le_meta(b"\x02\x02" + GOOD), "report 2 of 2 is truncated"),
        (le_meta(b"\x02\x01" + GOOD[:-1]), "Data_Length 30 at offset"),
        (le_meta(b"\x02\x01" + GOOD + b"\x00"), "1 bytes left over after the last of 1 reports"),
        (
            le_meta(b"\x0d\x01" + extended_report(0, 0, "00:00:00:00:00:01", b"")[:23]),
            "extended advertising report 1 of 1 is truncated",
        ),
        (
            le_meta(b"\x0d\x01" + extended_report(0, 0, "00:00:00:00:00:01", b"\x02\x01\x06")[:-1]),
            "Data_Length 3 at offset",
        ),
        (
            le_meta(b"\x0d\x01" + extended_report(0, 0, "00:00:00:00:00:01", b"") + b"\x00\x00"),
            "2 bytes left over",
        ),
    ],
)
def test_malformed_packets(packet: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as caught:
        decode_hci_event(packet)
    assert reason in caught.value.reason


def test_h4_without_le_meta_is_refused() -> None:
    # A Command Complete event (0x0E) behind the H4 indicator is not an advertising report.
    with pytest.raises(DecodeError, match="0x0e is not LE Meta"):
        decode_hci_event(bytes.fromhex("04 0e 04 01 03 0c 00"))


# --- properties ------------------------------------------------------------------------


def expected_decode(data: bytes) -> tuple[Frame | None, str | None]:
    try:
        return decode_advertisement(data), None
    except DecodeError as exc:
        return None, exc.reason


addresses = st.binary(min_size=6, max_size=6).map(lambda raw: raw.hex(":").upper())
rssis = st.integers(-128, 126)


@st.composite
def legacy_packets(
    draw: st.DrawFn, max_reports: int = 25
) -> tuple[bytes, list[tuple[int, int, str, bytes, int]]]:
    fields: list[tuple[int, int, str, bytes, int]] = []
    budget = 253  # 255 parameter bytes minus subevent code and Num_Reports
    for _ in range(draw(st.integers(1, max_reports))):
        if budget < 10:
            break
        data = draw(st.binary(max_size=min(31, budget - 10)))
        budget -= 10 + len(data)
        fields.append(
            (
                draw(st.integers(0, 255)),
                draw(st.integers(0, 255)),
                draw(addresses),
                data,
                draw(rssis),
            )
        )
    packet = legacy_event(*(legacy_report(*f) for f in fields), h4=draw(st.booleans()))
    return packet, fields


@ROUND_TRIP
@given(legacy_packets())
def test_round_trip_legacy(case: tuple[bytes, list[tuple[int, int, str, bytes, int]]]) -> None:
    packet, fields = case
    reports = decode_hci_event(packet)
    assert [(r.event_type, r.address_type, r.address, r.data, r.rssi) for r in reports] == [
        (event_type, address_type, address, data, rssi)
        for event_type, address_type, address, data, rssi in fields
    ]
    for report in reports:
        assert (report.frame, report.error) == expected_decode(report.data)


@st.composite
def extended_packets(
    draw: st.DrawFn, max_reports: int = 10
) -> tuple[bytes, list[tuple[int, str, bytes, int, int]]]:
    fields: list[tuple[int, str, bytes, int, int]] = []
    budget = 253
    for _ in range(draw(st.integers(1, max_reports))):
        if budget < 24:
            break
        data = draw(st.binary(max_size=min(229, budget - 24)))
        budget -= 24 + len(data)
        fields.append(
            (draw(st.integers(0, 0xFFFF)), draw(addresses), data, draw(rssis), draw(rssis))
        )
    packet = extended_event(
        *(
            extended_report(event_type, 0x01, address, data, rssi=rssi, tx_power=tx)
            for event_type, address, data, rssi, tx in fields
        )
    )
    return packet, fields


@ROUND_TRIP
@given(extended_packets())
def test_round_trip_extended(case: tuple[bytes, list[tuple[int, str, bytes, int, int]]]) -> None:
    packet, fields = case
    reports = decode_hci_event(packet)
    assert [(r.event_type, r.address, r.data, r.rssi, r.tx_power) for r in reports] == [
        (event_type, address, data, rssi, tx) for event_type, address, data, rssi, tx in fields
    ]
    assert all(r.extended for r in reports)


def _decodes_or_refuses(packet: bytes) -> None:
    """Any bytes: a list of reports, or a ``DecodeError`` with a reason; nothing else."""
    try:
        reports = decode_hci_event(packet)
    except DecodeError as exc:
        reason = exc.reason
        reports = []
    else:
        reason = ""
        assert 1 <= len(reports) <= 25
    assert bool(reason) != bool(reports)
    assert all(isinstance(r, AdvertisingReport) for r in reports)


@FUZZ
@given(st.binary(max_size=300))
def test_fuzz_arbitrary_bytes(packet: bytes) -> None:
    _decodes_or_refuses(packet)


@FUZZ
@given(st.binary(max_size=260))
def test_fuzz_behind_a_valid_header(params: bytes) -> None:
    # Reach the report parsers: a correct header, then anything.
    _decodes_or_refuses(le_meta(b"\x02" + params[:253]))
    _decodes_or_refuses(le_meta(b"\x0d" + params[:253]))


@st.composite
def mutated_packets(draw: st.DrawFn) -> bytes:
    # A few reports are enough to put every kind of field next to a mutation.
    if draw(st.booleans()):
        packet = draw(legacy_packets(max_reports=4))[0]
    else:
        packet = draw(extended_packets(max_reports=3))[0]
    # Mutate the parameters and, most of the time, let the header's length follow, so
    # that the mutation reaches the report parser instead of the header check.
    params = bytearray(packet[3:])
    for _ in range(draw(st.integers(1, 4))):
        operation = draw(st.sampled_from(("flip", "set", "cut", "insert", "delete")))
        at = draw(st.integers(0, max(0, len(params) - 1)))
        if operation == "flip" and params:
            params[at] ^= 1 << draw(st.integers(0, 7))
        elif operation == "set" and params:
            params[at] = draw(st.integers(0, 255))
        elif operation == "cut":
            del params[at:]
        elif operation == "insert":
            params[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif params:
            del params[at]
    if draw(st.integers(0, 9)) == 0:
        return packet[:3] + bytes(params)  # the header now lies about the length
    return le_meta(bytes(params[:255]), h4=draw(st.booleans()))


@FUZZ
@given(mutated_packets())
def test_fuzz_mutated_valid_packets(packet: bytes) -> None:
    _decodes_or_refuses(packet)
