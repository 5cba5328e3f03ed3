"""AD structures of a raw BLE advertisement payload.

A payload (legacy: up to 31 bytes of advertising data followed by up to 31 bytes of
scan response; extended advertising: up to 255 bytes here) is a sequence of AD
structures, each laid out as::

    +--------+---------+---------------------+
    | length | AD type | data (length-1)     |
    +--------+---------+---------------------+
      1 byte   1 byte    ``length`` counts type + data

A zero length marks the end of the significant part: the rest is padding and is not
read.  A length that runs past the end of the payload is a ``DecodeError``.

Two AD types matter to beacon decoding and are collected by ``parse_advertisement``:

* 0xFF manufacturer specific data: company id (little-endian u16) + bytes;
* 0x16 service data, 16-bit UUID: UUID (little-endian u16) + bytes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from struct import Struct

from beacons.errors import DecodeError

__all__ = [
    "AD_TYPE_MANUFACTURER_DATA",
    "AD_TYPE_SERVICE_DATA_16",
    "MAX_PAYLOAD",
    "ADStructure",
    "AdvertisementFields",
    "iter_ad_structures",
    "parse_advertisement",
]

MAX_PAYLOAD = 255
"""Longest payload accepted (legacy adv + scan response is 62; extended up to 255)."""

AD_TYPE_SERVICE_DATA_16 = 0x16
AD_TYPE_MANUFACTURER_DATA = 0xFF

_U16LE = Struct("<H")


@dataclass(frozen=True, slots=True)
class ADStructure:
    """One AD structure; ``length`` is the on-air length byte (type + data)."""

    length: int
    ad_type: int
    data: bytes


@dataclass(frozen=True, slots=True)
class AdvertisementFields:
    """The beacon-relevant AD structures of one payload, in payload order.

    Keys may repeat (a payload may carry two manufacturer data structures), so these
    are tuples of ``(key, data)`` pairs rather than mappings.
    """

    manufacturer_data: tuple[tuple[int, bytes], ...]
    service_data_16: tuple[tuple[int, bytes], ...]


def _check_size(payload: bytes) -> int:
    size = len(payload)
    if size > MAX_PAYLOAD:
        raise DecodeError(f"advertisement payload of {size} bytes exceeds {MAX_PAYLOAD}")
    return size


def _spans(payload: bytes, size: int) -> Iterator[tuple[int, int, int]]:
    """Yield ``(ad_type, data_start, data_end)`` for each AD structure, no copies."""
    offset = 0
    while offset < size:
        length = payload[offset]
        if length == 0:
            return
        end = offset + 1 + length
        if end > size:
            raise DecodeError(
                f"AD structure length {length} at offset {offset} overruns payload of {size} bytes"
            )
        yield payload[offset + 1], offset + 2, end
        offset = end


def iter_ad_structures(payload: bytes) -> Iterator[ADStructure]:
    """Iterate the AD structures of ``payload``, stopping at a zero length.

    The payload size is checked at once; an overrunning length raises ``DecodeError``
    when the iteration reaches it.
    """
    size = _check_size(payload)
    return (
        ADStructure(end - start + 1, ad_type, payload[start:end])
        for ad_type, start, end in _spans(payload, size)
    )


def parse_advertisement(payload: bytes) -> AdvertisementFields:
    """Walk the whole payload and collect manufacturer data and 16-bit service data.

    Raises ``DecodeError`` if the payload is too long, a structure overruns it, or a
    manufacturer/service data structure is too short for its 2-byte key.
    """
    size = _check_size(payload)
    manufacturer: list[tuple[int, bytes]] = []
    service: list[tuple[int, bytes]] = []
    for ad_type, start, end in _spans(payload, size):
        if ad_type == AD_TYPE_MANUFACTURER_DATA:
            target, what = manufacturer, "manufacturer specific data"
        elif ad_type == AD_TYPE_SERVICE_DATA_16:
            target, what = service, "16-bit service data"
        else:
            continue
        if end - start < 2:
            raise DecodeError(
                f"{what} at offset {start - 2} has {end - start} bytes, needs 2 for its 16-bit key"
            )
        (key,) = _U16LE.unpack_from(payload, start)
        target.append((key, payload[start + 2 : end]))
    return AdvertisementFields(tuple(manufacturer), tuple(service))
