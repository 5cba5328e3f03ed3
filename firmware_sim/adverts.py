"""Advertisement payloads as phones and beacons put them on the air (AD structures)."""

from __future__ import annotations

import struct
import uuid

__all__ = ["eddystone_eid", "eddystone_tlm", "eddystone_uid", "ibeacon", "phone_noise"]

_FLAGS = bytes((0x02, 0x01, 0x06))  # LE General Discoverable, BR/EDR not supported
_IBEACON = struct.Struct(">HHb")


def ibeacon(proximity_uuid: str, major: int, minor: int, tx_power: int = -59) -> bytes:
    body = (
        b"\x4c\x00\x02\x15"
        + uuid.UUID(proximity_uuid).bytes
        + _IBEACON.pack(major, minor, tx_power)
    )
    return _FLAGS + bytes((len(body) + 1, 0xFF)) + body


def eddystone_uid(namespace: bytes, instance: bytes, tx_power: int = -18) -> bytes:
    if len(namespace) != 10 or len(instance) != 6:
        raise ValueError("Eddystone-UID needs a 10-byte namespace and a 6-byte instance")
    frame = b"\xaa\xfe\x00" + struct.pack(">b", tx_power) + namespace + instance + b"\x00\x00"
    service_list = b"\x03\x03\xaa\xfe"
    return _FLAGS + service_list + bytes((len(frame) + 1, 0x16)) + frame


_TLM = struct.Struct(">BBHhII")


def eddystone_eid(eid: bytes, tx_power: int = -18) -> bytes:
    """Eddystone-EID, as an Android app advertising its rotating identifier sends it."""
    if len(eid) != 8:
        raise ValueError("an EID is 8 bytes")
    frame = b"\xaa\xfe\x30" + struct.pack(">b", tx_power) + eid
    service_list = b"\x03\x03\xaa\xfe"
    return _FLAGS + service_list + bytes((len(frame) + 1, 0x16)) + frame


def eddystone_tlm(battery_mv: int, temperature_c: float, adv_count: int, uptime_s: float) -> bytes:
    """Unencrypted Eddystone-TLM: battery, temperature in 8.8 fixed point, counts, 0.1 s uptime."""
    frame = b"\xaa\xfe" + _TLM.pack(
        0x20, 0x00, battery_mv, round(temperature_c * 256), adv_count, round(uptime_s * 10)
    )
    service_list = b"\x03\x03\xaa\xfe"
    return _FLAGS + service_list + bytes((len(frame) + 1, 0x16)) + frame


def phone_noise(token: bytes) -> bytes:
    """What a phone without the app sends: flags and some vendor data, no beacon frame."""
    body = b"\x06\x00\x01\x09\x20" + token[:8]
    return _FLAGS + bytes((len(body) + 1, 0xFF)) + body
