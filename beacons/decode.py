"""Beacon frame decoders: advertisement bytes in, ``Frame`` (or ``None``) out.

Entry points, all pure and synchronous:

* ``decode_advertisement(payload)``: a raw payload (AD structures);
* ``decode_manufacturer_data(company_id, data)`` and ``decode_service_data(uuid16, data)``:
  one AD structure's contents, key already split off;
* ``decode_bleak(manufacturer_data, service_data)``: the mappings of bleak's
  ``AdvertisementData`` (company id -> bytes, UUID string -> bytes);
* ``decode_hex(text)``: hex text for the CLI, always a dictionary, never raising.

Contract: a frame when one is found; ``None`` for a well-formed advertisement without a
frame we know; ``DecodeError`` for malformed bytes; no other exception, whatever the
bytes.  Frames shorter than their layout are rejected; bytes past the layout (Eddystone
RFU bytes, vendor padding) are ignored.  When several frames are present the first
manufacturer data frame wins, then the first service data frame, in payload order.

Layouts (multi-byte fields big-endian unless noted):

* iBeacon, manufacturer data of Apple (0x004C): ``02 15``, UUID 16, major u16,
  minor u16, measured power i8.
* AltBeacon, manufacturer data of any company: ``BE AC``, beacon id 20, reference
  RSSI i8, manufacturer reserved u8.
* Eddystone, service data of UUID 0xFEAA, first byte the frame type:
  0x00 UID (Tx power i8, namespace 10, instance 6, 2 RFU optional);
  0x10 URL (Tx power i8, scheme code, 0-17 encoded bytes);
  0x20 TLM version 0x00 (battery mV u16, temperature 8.8 signed, adv count u32,
  uptime u32 in 0.1 s) or version 0x01 eTLM (ciphertext 12, salt u16, MIC u16);
  0x30 EID (Tx power i8, EID 8).
"""

from __future__ import annotations

from collections.abc import Mapping
from struct import Struct

from beacons.adstructs import (
    AD_TYPE_MANUFACTURER_DATA as _AD_MANUFACTURER,
)
from beacons.adstructs import (
    AD_TYPE_SERVICE_DATA_16 as _AD_SERVICE_16,
)
from beacons.adstructs import (
    MAX_PAYLOAD,
)
from beacons.errors import DecodeError
from beacons.frames import (
    AltBeacon,
    EddystoneEID,
    EddystoneETLM,
    EddystoneTLM,
    EddystoneUID,
    EddystoneURL,
    Frame,
    FrameDict,
    IBeacon,
)

__all__ = [
    "APPLE_COMPANY_ID",
    "EDDYSTONE_UUID16",
    "decode_advertisement",
    "decode_bleak",
    "decode_hex",
    "decode_manufacturer_data",
    "decode_service_data",
]

APPLE_COMPANY_ID = 0x004C
EDDYSTONE_UUID16 = 0xFEAA

# Manufacturer data, counted after the 2-byte company id.
_IBEACON = Struct(">16sHHb")  # after the 02 15 prefix
_IBEACON_LEN = 2 + _IBEACON.size
_ALTBEACON = Struct(">20sbB")  # after the BE AC beacon code
_ALTBEACON_LEN = 2 + _ALTBEACON.size

# Eddystone service data, counted after the 2-byte UUID; offsets after the header.
_UID = Struct(">b10s6s")  # after frame type
_UID_LEN = 1 + _UID.size
_URL = Struct(">bB")  # after frame type: Tx power, scheme
_URL_LEN = 1 + _URL.size
_URL_MAX_ENCODED = 17
_TLM = Struct(">HhII")  # after frame type and version
_TLM_LEN = 2 + _TLM.size
_ETLM = Struct(">12sHH")  # after frame type and version
_ETLM_LEN = 2 + _ETLM.size
_EID = Struct(">b8s")  # after frame type
_EID_LEN = 1 + _EID.size

_FRAME_UID = 0x00
_FRAME_URL = 0x10
_FRAME_TLM = 0x20
_FRAME_EID = 0x30
_TLM_PLAIN = 0x00
_TLM_ENCRYPTED = 0x01
_TEMPERATURE_UNSUPPORTED = -0x8000  # raw 0x8000 read as signed

_URL_SCHEMES = ("http://www.", "https://www.", "http://", "https://")
_URL_EXPANSIONS = (
    ".com/",
    ".org/",
    ".edu/",
    ".net/",
    ".info/",
    ".biz/",
    ".gov/",
    ".com",
    ".org",
    ".edu",
    ".net",
    ".info",
    ".biz",
    ".gov",
)


def _url_table() -> tuple[str | None, ...]:
    """Byte -> text; ``None`` for the reserved 0x0E-0x20 and 0x7F-0xFF."""
    table: list[str | None] = [None] * 256
    for code, text in enumerate(_URL_EXPANSIONS):
        table[code] = text
    for code in range(0x21, 0x7F):
        table[code] = chr(code)
    return tuple(table)


_URL_TABLE = _url_table()

_BLEAK_BASE_SUFFIX = "-0000-1000-8000-00805f9b34fb"
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


def _short(frame: str, got: int, need: int) -> DecodeError:
    return DecodeError(f"{frame} frame is {got} bytes, needs {need}")


def _dashed_uuid(raw: bytes) -> str:
    h = raw.hex()
    return f"{h[0:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def decode_manufacturer_data(company_id: int, data: bytes) -> Frame | None:
    """Decode manufacturer specific data (company id already split off).

    Returns an ``IBeacon`` or ``AltBeacon``, ``None`` for other data, and raises
    ``DecodeError`` for a recognised prefix followed by too few bytes.
    """
    size = len(data)
    if size < 2:
        return None
    first, second = data[0], data[1]
    if company_id == APPLE_COMPANY_ID and first == 0x02 and second == 0x15:
        if size < _IBEACON_LEN:
            raise _short("iBeacon", size, _IBEACON_LEN)
        raw_uuid, major, minor, tx_power = _IBEACON.unpack_from(data, 2)
        return IBeacon(_dashed_uuid(raw_uuid), major, minor, tx_power)
    if first == 0xBE and second == 0xAC:
        if size < _ALTBEACON_LEN:
            raise _short("AltBeacon", size, _ALTBEACON_LEN)
        beacon_id, ref_rssi, reserved = _ALTBEACON.unpack_from(data, 2)
        return AltBeacon(company_id, beacon_id.hex(), ref_rssi, reserved)
    return None


def _decode_url(data: bytes) -> EddystoneURL:
    size = len(data)
    if size < _URL_LEN:
        raise _short("Eddystone-URL", size, _URL_LEN)
    encoded = size - _URL_LEN
    if encoded > _URL_MAX_ENCODED:
        raise DecodeError(
            f"Eddystone-URL encoded part is {encoded} bytes, at most {_URL_MAX_ENCODED}"
        )
    tx_power, scheme = _URL.unpack_from(data, 1)
    if scheme >= len(_URL_SCHEMES):
        raise DecodeError(f"Eddystone-URL scheme code 0x{scheme:02x} is reserved")
    parts = [_URL_SCHEMES[scheme]]
    table = _URL_TABLE
    for index in range(_URL_LEN, size):
        text = table[data[index]]
        if text is None:
            raise DecodeError(
                f"Eddystone-URL byte 0x{data[index]:02x} at offset {index} is reserved"
            )
        parts.append(text)
    return EddystoneURL("".join(parts), tx_power)


def _decode_tlm(data: bytes) -> EddystoneTLM | EddystoneETLM | None:
    size = len(data)
    if size < 2:
        raise _short("Eddystone-TLM", size, 2)
    version = data[1]
    if version == _TLM_PLAIN:
        if size < _TLM_LEN:
            raise _short("Eddystone-TLM", size, _TLM_LEN)
        battery, raw_temp, adv_count, uptime = _TLM.unpack_from(data, 2)
        temperature = None if raw_temp == _TEMPERATURE_UNSUPPORTED else raw_temp / 256.0
        return EddystoneTLM(battery, temperature, adv_count, uptime / 10.0)
    if version == _TLM_ENCRYPTED:
        if size < _ETLM_LEN:
            raise _short("Eddystone-eTLM", size, _ETLM_LEN)
        etlm, salt, mic = _ETLM.unpack_from(data, 2)
        return EddystoneETLM(etlm.hex(), salt, mic)
    return None  # a TLM version from the future: well formed, not one we know


def decode_service_data(uuid16: int, data: bytes) -> Frame | None:
    """Decode 16-bit UUID service data (UUID already split off).

    Returns an Eddystone frame for UUID 0xFEAA, ``None`` for other UUIDs and for
    Eddystone frame types or TLM versions we do not know, and raises ``DecodeError``
    for an empty or truncated frame or a reserved URL byte.
    """
    if uuid16 != EDDYSTONE_UUID16:
        return None
    size = len(data)
    if size == 0:
        raise DecodeError("Eddystone service data is empty, needs a frame type byte")
    frame_type = data[0]
    if frame_type == _FRAME_UID:
        if size < _UID_LEN:
            raise _short("Eddystone-UID", size, _UID_LEN)
        tx_power, namespace, instance = _UID.unpack_from(data, 1)
        return EddystoneUID(namespace.hex(), instance.hex(), tx_power)
    if frame_type == _FRAME_URL:
        return _decode_url(data)
    if frame_type == _FRAME_TLM:
        return _decode_tlm(data)
    if frame_type == _FRAME_EID:
        if size < _EID_LEN:
            raise _short("Eddystone-EID", size, _EID_LEN)
        tx_power, eid = _EID.unpack_from(data, 1)
        return EddystoneEID(eid.hex(), tx_power)
    return None


def decode_advertisement(payload: bytes) -> Frame | None:
    """Decode the first beacon frame of a raw advertisement payload.

    Returns ``None`` for a well-formed payload without a known frame; raises
    ``DecodeError`` (and nothing else) for malformed bytes.

    This is the hot path, so it walks the payload in one plain loop (the same rules as
    ``parse_advertisement``: the whole layout is checked before any frame is decoded, and
    manufacturer data wins over service data) and keeps only the spans it needs.
    """
    size = len(payload)
    if size > MAX_PAYLOAD:
        raise DecodeError(f"advertisement payload of {size} bytes exceeds {MAX_PAYLOAD}")
    manufacturer: list[tuple[int, int]] | None = None
    service: list[tuple[int, int]] | None = None
    offset = 0
    while offset < size:
        length = payload[offset]
        if length == 0:
            break
        end = offset + 1 + length
        if end > size:
            raise DecodeError(
                f"AD structure length {length} at offset {offset} overruns payload of {size} bytes"
            )
        ad_type = payload[offset + 1]
        if ad_type in (_AD_MANUFACTURER, _AD_SERVICE_16):
            start = offset + 2
            if end - start < 2:
                what = (
                    "manufacturer specific data"
                    if ad_type == _AD_MANUFACTURER
                    else "16-bit service data"
                )
                raise DecodeError(
                    f"{what} at offset {offset} has {end - start} bytes, needs 2 for its 16-bit key"
                )
            if ad_type == _AD_MANUFACTURER:
                if manufacturer is None:
                    manufacturer = []
                manufacturer.append((start, end))
            else:
                if service is None:
                    service = []
                service.append((start, end))
        offset = end
    if manufacturer is not None:
        for start, end in manufacturer:
            key = payload[start] | (payload[start + 1] << 8)
            frame = decode_manufacturer_data(key, payload[start + 2 : end])
            if frame is not None:
                return frame
    if service is not None:
        for start, end in service:
            key = payload[start] | (payload[start + 1] << 8)
            frame = decode_service_data(key, payload[start + 2 : end])
            if frame is not None:
                return frame
    return None


def _uuid16_of(uuid: str) -> int | None:
    """The 16-bit alias of a Bluetooth base UUID string, else ``None``."""
    if len(uuid) != 36 or not uuid.startswith("0000"):
        return None
    if uuid[8:].lower() != _BLEAK_BASE_SUFFIX:
        return None
    short = uuid[4:8]
    for char in short:
        if char not in _HEX_DIGITS:
            return None
    return int(short, 16)


def decode_bleak(
    manufacturer_data: Mapping[int, bytes], service_data: Mapping[str, bytes]
) -> Frame | None:
    """Decode the first beacon frame from bleak's ``AdvertisementData`` mappings.

    ``manufacturer_data`` maps company id to bytes; ``service_data`` maps a 128-bit UUID
    string (e.g. ``"0000feaa-0000-1000-8000-00805f9b34fb"``) to bytes.  UUIDs outside
    the Bluetooth base range are skipped.  Same contract as ``decode_advertisement``.
    """
    for company_id, data in manufacturer_data.items():
        frame = decode_manufacturer_data(company_id, data)
        if frame is not None:
            return frame
    for uuid, data in service_data.items():
        uuid16 = _uuid16_of(uuid)
        if uuid16 is None:
            continue
        frame = decode_service_data(uuid16, data)
        if frame is not None:
            return frame
    return None


def _error(reason: str) -> FrameDict:
    return {"type": None, "error": reason}


def decode_hex(text: str) -> FrameDict:
    """Decode a payload written in hex, for the CLI; never raises.

    Whitespace anywhere is ignored and a leading ``0x`` is allowed.  Returns the
    frame's ``to_dict()``, or ``{"type": None, "error": reason}`` for bad hex, a
    malformed payload, or ``"no beacon frame found"``.
    """
    digits = "".join(text.split())
    if digits[:2] in ("0x", "0X"):
        digits = digits[2:]
    for position, char in enumerate(digits):
        if char not in _HEX_DIGITS:
            return _error(f"non-hex character {char!r} at position {position}")
    if len(digits) % 2:
        return _error("odd-length hex")
    try:
        frame = decode_advertisement(bytes.fromhex(digits))
    except DecodeError as exc:
        return _error(exc.reason)
    if frame is None:
        return _error("no beacon frame found")
    return frame.to_dict()
