"""HCI LE advertising report events: packet bytes in, ``AdvertisingReport`` values out.

What a raw HCI socket, a serial HCI controller or an ESP32 running in HCI mode delivers
when the host scans.  Pure and synchronous, like the rest of ``beacons``.

Packet (Bluetooth Core Specification, Vol 4, Part E, 5.4.4; multi-byte fields
little-endian)::

    [0x04]  H4 packet indicator of an event packet, optional (UART transports add it)
    0x3E    Event_Code: LE Meta event
    len     Parameter_Total_Length, the number of bytes that follow
    sub     Subevent_Code: 0x02 LE Advertising Report, 0x0D LE Extended Advertising Report
    n       Num_Reports

then ``n`` reports, one after the other (see "Array layout" below).

LE Advertising Report, subevent 0x02 (Vol 4, Part E, 7.7.65.2), per report::

    Event_Type u8 | Address_Type u8 | Address 6 | Data_Length u8 | Data | RSSI i8

LE Extended Advertising Report, subevent 0x0D (Vol 4, Part E, 7.7.65.13), per report::

    Event_Type u16 | Address_Type u8 | Address 6 | Primary_PHY u8 | Secondary_PHY u8 |
    Advertising_SID u8 | TX_Power i8 | RSSI i8 | Periodic_Advertising_Interval u16 |
    Direct_Address_Type u8 | Direct_Address 6 | Data_Length u8 | Data

Addresses travel least significant byte first; they are printed most significant first
(``"AA:BB:CC:DD:EE:FF"``).  RSSI and TX power 127 (0x7F) mean "not available" and
become ``None``.

Array layout.  The parameter table of 7.7.65.2 lists ``Event_Type[i]``,
``Address_Type[i]``, ... with sizes such as "Num_Reports x 1 octet"; those are total
sizes, not an order.  The order is fixed once for all commands and events in Vol 4,
Part E, 5.2 ("Data and parameter formats"): with several arrayed parameters A[i], B[i]
the bytes are ``A[0], B[0], A[1], B[1], ...`` unless a section says otherwise, and
7.7.65.2 and 7.7.65.13 do not.  So the reports are laid out report by report, which
is also how the Linux kernel (``hci_le_adv_report_evt``) and every controller read
them.  The tests pin this with multi-report packets whose reports all differ.

Limits: ``Num_Reports`` is 1 to 25 (0x01-0x19) for subevent 0x02 and 1 to 10 for
subevent 0x0D (ten extended reports of at least 24 bytes are all an event's 255
parameter bytes can hold).  A legacy ``Data_Length`` above the specification's 31 is
accepted while it stays inside the packet, as Linux does for controllers with
extended advertising.

Contract: ``decode_hci_event`` returns one ``AdvertisingReport`` per report, or raises
``DecodeError`` (and nothing else) with a specific reason for a packet that is not an
advertising report event or whose lengths do not add up.  A report whose *data* is
not a valid advertisement keeps ``frame=None`` and the reason in ``error``; the other
reports of the packet are unaffected.  Extended reports whose data status says the
data is incomplete are not decoded (``error`` says why).
"""

from __future__ import annotations

from dataclasses import dataclass
from struct import Struct

from beacons.decode import decode_advertisement
from beacons.errors import DecodeError
from beacons.frames import Frame

__all__ = [
    "H4_EVENT",
    "LE_ADVERTISING_REPORT",
    "LE_EXTENDED_ADVERTISING_REPORT",
    "LE_META_EVENT",
    "AdvertisingReport",
    "decode_hci_event",
]

H4_EVENT = 0x04
LE_META_EVENT = 0x3E
LE_ADVERTISING_REPORT = 0x02
LE_EXTENDED_ADVERTISING_REPORT = 0x0D

_NOT_AVAILABLE = 127
_LEGACY_MAX_REPORTS = 0x19
_EXTENDED_MAX_REPORTS = 10

# Event_Type, Address_Type, Address, Data_Length; Data and RSSI follow.
_LEGACY = Struct("<BB6sB")
_RSSI = Struct("<b")
# Event_Type, Address_Type, Address, Primary_PHY, Secondary_PHY, Advertising_SID,
# TX_Power, RSSI, Periodic_Advertising_Interval, Direct_Address_Type, Direct_Address,
# Data_Length; Data follows.
_EXTENDED = Struct("<HB6sBBBbbHB6sB")

# Extended Event_Type bits 5-6: data status.
_DATA_STATUS_SHIFT = 5
_DATA_STATUS_MASK = 0b11
_DATA_STATUS_REASONS = (
    "",
    "extended report data incomplete, more to come",
    "extended report data incomplete, truncated",
    "extended report data status 0b11 is reserved",
)


@dataclass(frozen=True, slots=True)
class AdvertisingReport:
    """One advertising (or scan response) report from an HCI event.

    ``event_type`` is the legacy 8-bit type (0x00 ADV_IND ... 0x04 SCAN_RSP) or, when
    ``extended`` is true, the 16-bit extended event type bit field.  ``frame`` is the
    beacon frame decoded from ``data`` (``None`` when there is none, or when ``data``
    is malformed, in which case ``error`` says why).  ``tx_power`` is only carried by
    extended reports.
    """

    event_type: int
    address_type: int
    address: str
    rssi: int | None
    data: bytes
    frame: Frame | None
    error: str | None = None
    tx_power: int | None = None
    extended: bool = False


def _address(raw: bytes) -> str:
    return raw[::-1].hex(":").upper()


def _decoded(data: bytes) -> tuple[Frame | None, str | None]:
    try:
        return decode_advertisement(data), None
    except DecodeError as exc:
        return None, exc.reason


def _truncated(kind: str, index: int, count: int, need: int, left: int) -> DecodeError:
    return DecodeError(
        f"{kind} report {index + 1} of {count} is truncated: its fixed part needs {need} "
        f"bytes, {left} are left in the event"
    )


def _legacy_reports(packet: bytes, offset: int, end: int, count: int) -> list[AdvertisingReport]:
    reports: list[AdvertisingReport] = []
    fixed = _LEGACY.size
    for index in range(count):
        if offset + fixed > end:
            raise _truncated("advertising", index, count, fixed, end - offset)
        event_type, address_type, raw_address, length = _LEGACY.unpack_from(packet, offset)
        data_start = offset + fixed
        rssi_at = data_start + length
        if rssi_at + 1 > end:
            raise DecodeError(
                f"advertising report {index + 1} of {count}: Data_Length {length} at offset "
                f"{offset + fixed - 1} overruns the event (needs {length + 1} bytes with "
                f"RSSI, {end - data_start} left)"
            )
        data = packet[data_start:rssi_at]
        (raw_rssi,) = _RSSI.unpack_from(packet, rssi_at)
        frame, error = _decoded(data)
        reports.append(
            AdvertisingReport(
                event_type=event_type,
                address_type=address_type,
                address=_address(raw_address),
                rssi=None if raw_rssi == _NOT_AVAILABLE else raw_rssi,
                data=data,
                frame=frame,
                error=error,
            )
        )
        offset = rssi_at + 1
    if offset != end:
        raise DecodeError(f"{end - offset} bytes left over after the last of {count} reports")
    return reports


def _extended_reports(packet: bytes, offset: int, end: int, count: int) -> list[AdvertisingReport]:
    reports: list[AdvertisingReport] = []
    fixed = _EXTENDED.size
    for index in range(count):
        if offset + fixed > end:
            raise _truncated("extended advertising", index, count, fixed, end - offset)
        (
            event_type,
            address_type,
            raw_address,
            _primary_phy,
            _secondary_phy,
            _sid,
            tx_power,
            raw_rssi,
            _interval,
            _direct_type,
            _direct_address,
            length,
        ) = _EXTENDED.unpack_from(packet, offset)
        data_start = offset + fixed
        data_end = data_start + length
        if data_end > end:
            raise DecodeError(
                f"extended advertising report {index + 1} of {count}: Data_Length {length} "
                f"at offset {data_start - 1} overruns the event ({end - data_start} bytes left)"
            )
        data = packet[data_start:data_end]
        status = (event_type >> _DATA_STATUS_SHIFT) & _DATA_STATUS_MASK
        frame: Frame | None
        error: str | None
        if status:
            frame, error = None, _DATA_STATUS_REASONS[status]
        else:
            frame, error = _decoded(data)
        reports.append(
            AdvertisingReport(
                event_type=event_type,
                address_type=address_type,
                address=_address(raw_address),
                rssi=None if raw_rssi == _NOT_AVAILABLE else raw_rssi,
                data=data,
                frame=frame,
                error=error,
                tx_power=None if tx_power == _NOT_AVAILABLE else tx_power,
                extended=True,
            )
        )
        offset = data_end
    if offset != end:
        raise DecodeError(f"{end - offset} bytes left over after the last of {count} reports")
    return reports


def decode_hci_event(packet: bytes) -> list[AdvertisingReport]:
    """Decode an HCI LE (Extended) Advertising Report event, H4 indicator optional.

    Returns the reports in packet order.  Raises ``DecodeError`` (and nothing else) for
    an empty or truncated packet, an event that is not LE Meta, a subevent that is not
    an advertising report, a ``Num_Reports`` out of range, or lengths that overrun the
    event or leave bytes over.
    """
    size = len(packet)
    offset = 0
    if size and packet[0] == H4_EVENT:
        offset = 1  # event code 0x04 is not LE Meta, so 0x04 first can only be H4
    if size - offset < 2:
        raise DecodeError(
            f"HCI event packet of {size} bytes is shorter than its 2-byte event header"
        )
    event_code = packet[offset]
    if event_code != LE_META_EVENT:
        raise DecodeError(f"HCI event code 0x{event_code:02x} is not LE Meta (0x3e)")
    length = packet[offset + 1]
    start = offset + 2
    end = start + length
    if end > size:
        raise DecodeError(
            f"HCI event parameter length {length} overruns the packet "
            f"({size - start} bytes follow the header)"
        )
    if end < size:
        raise DecodeError(f"{size - end} bytes follow the HCI event's {length} parameter bytes")
    if length < 2:
        raise DecodeError(
            f"LE Meta event has {length} parameter bytes, needs a subevent code and Num_Reports"
        )
    subevent = packet[start]
    count = packet[start + 1]
    if subevent == LE_ADVERTISING_REPORT:
        if not 1 <= count <= _LEGACY_MAX_REPORTS:
            raise DecodeError(
                f"LE Advertising Report Num_Reports {count} is outside 1..{_LEGACY_MAX_REPORTS}"
            )
        return _legacy_reports(packet, start + 2, end, count)
    if subevent == LE_EXTENDED_ADVERTISING_REPORT:
        if not 1 <= count <= _EXTENDED_MAX_REPORTS:
            raise DecodeError(
                f"LE Extended Advertising Report Num_Reports {count} is outside "
                f"1..{_EXTENDED_MAX_REPORTS}"
            )
        return _extended_reports(packet, start + 2, end, count)
    raise DecodeError(
        f"LE Meta subevent 0x{subevent:02x} is not an advertising report (0x02 or 0x0d)"
    )
