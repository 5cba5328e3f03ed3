"""BLE beacons, sans-I/O: bytes and an injected time in, frames and presence events out.

Nothing here touches a socket, a clock or a logger, except ``bleak_source``, the one thin
adapter around a real radio (import it explicitly; importing ``beacons`` does not load
bleak). The adapter hands over advertisement bytes (a raw payload, an HCI report, or bleak's
``manufacturer_data`` and ``service_data`` mappings) and gets back an immutable frame value,
``None`` when the advertisement carries no beacon frame we know, or a ``DecodeError`` when the
bytes are malformed.

Modules, one noun each:

* ``errors``: the exception tree (``BeaconError`` > ``DecodeError``, ``IdentityError``);
* ``frames``: the frame values (iBeacon, AltBeacon, Eddystone UID/URL/TLM/eTLM/EID);
* ``adstructs``: walking the AD structures of a payload;
* ``decode``: the decoders from bytes (or hex text) to frames;
* ``hci``: HCI LE (extended) advertising reports to frames plus the radio fields;
* ``eid``: Eddystone-EID computation and the X25519 + HKDF key registration;
* ``irk``: resolvable private addresses (the Bluetooth Core ``ah`` function);
* ``resolver``: the EID lookup table and the cached IRK resolver;
* ``anonymous``: counting devices of people who did not opt in, with a rotating keyed hash;
* ``rssi``: the windowed robust signal estimate, calibration, distance;
* ``presence``: the zone presence state machine, as a table;
* ``backoff``: jittered exponential backoff (a pure policy);
* ``bleak_source``: the radio adapter (the only I/O).
"""

from __future__ import annotations

from beacons.adstructs import (
    MAX_PAYLOAD,
    ADStructure,
    AdvertisementFields,
    iter_ad_structures,
    parse_advertisement,
)
from beacons.anonymous import AnonymousCounter
from beacons.backoff import Backoff
from beacons.decode import (
    APPLE_COMPANY_ID,
    EDDYSTONE_UUID16,
    decode_advertisement,
    decode_bleak,
    decode_hex,
    decode_manufacturer_data,
    decode_service_data,
)
from beacons.eid import compute_eid, derive_identity_key, eid_for_time, temporary_key
from beacons.errors import BeaconError, DecodeError, IdentityError
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
from beacons.hci import AdvertisingReport, decode_hci_event
from beacons.irk import ah, is_resolvable, resolves
from beacons.presence import (
    IllegalTransition,
    LeftKiosk,
    NearKiosk,
    PresenceEvent,
    PresenceParams,
    PresenceTracker,
    ZoneDwelling,
    ZoneEntered,
    ZoneLeft,
)
from beacons.resolver import EidResolver, IrkResolver
from beacons.rssi import Calibration, RssiWindow, distance_m

__all__ = [
    "APPLE_COMPANY_ID",
    "EDDYSTONE_UUID16",
    "MAX_PAYLOAD",
    "ADStructure",
    "AdvertisementFields",
    "AdvertisingReport",
    "AltBeacon",
    "AnonymousCounter",
    "Backoff",
    "BeaconError",
    "Calibration",
    "DecodeError",
    "EddystoneEID",
    "EddystoneETLM",
    "EddystoneTLM",
    "EddystoneUID",
    "EddystoneURL",
    "EidResolver",
    "Frame",
    "FrameDict",
    "IBeacon",
    "IdentityError",
    "IllegalTransition",
    "IrkResolver",
    "LeftKiosk",
    "NearKiosk",
    "PresenceEvent",
    "PresenceParams",
    "PresenceTracker",
    "RssiWindow",
    "ZoneDwelling",
    "ZoneEntered",
    "ZoneLeft",
    "ah",
    "compute_eid",
    "decode_advertisement",
    "decode_bleak",
    "decode_hci_event",
    "decode_hex",
    "decode_manufacturer_data",
    "decode_service_data",
    "derive_identity_key",
    "distance_m",
    "eid_for_time",
    "is_resolvable",
    "iter_ad_structures",
    "parse_advertisement",
    "resolves",
    "temporary_key",
]
