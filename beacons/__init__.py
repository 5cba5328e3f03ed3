"""BLE beacon decoding, sans-I/O: bytes in, frames out.

Nothing here touches a radio, a socket, a clock or a logger.  The scanner adapter hands
over advertisement bytes (a raw payload, or bleak's ``manufacturer_data`` and
``service_data`` mappings) and gets back an immutable frame value, ``None`` when the
advertisement carries no beacon frame we know, or a ``DecodeError`` when the bytes are
malformed.

Modules, one noun each:

* ``errors``: the exception tree (``BeaconError`` > ``DecodeError``);
* ``frames``: the frame values (iBeacon, AltBeacon, Eddystone UID/URL/TLM/eTLM/EID);
* ``adstructs``: walking the AD structures of a payload;
* ``decode``: the decoders from bytes (or hex text) to frames.
"""

from __future__ import annotations

from beacons.adstructs import (
    MAX_PAYLOAD,
    ADStructure,
    AdvertisementFields,
    iter_ad_structures,
    parse_advertisement,
)
from beacons.decode import (
    APPLE_COMPANY_ID,
    EDDYSTONE_UUID16,
    decode_advertisement,
    decode_bleak,
    decode_hex,
    decode_manufacturer_data,
    decode_service_data,
)
from beacons.errors import BeaconError, DecodeError
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
    "MAX_PAYLOAD",
    "ADStructure",
    "AdvertisementFields",
    "AltBeacon",
    "BeaconError",
    "DecodeError",
    "EddystoneEID",
    "EddystoneETLM",
    "EddystoneTLM",
    "EddystoneUID",
    "EddystoneURL",
    "Frame",
    "FrameDict",
    "IBeacon",
    "decode_advertisement",
    "decode_bleak",
    "decode_hex",
    "decode_manufacturer_data",
    "decode_service_data",
    "iter_ad_structures",
    "parse_advertisement",
]
