"""Decoded beacon frames: immutable values, one class per frame format.

Every frame class has a class-level ``TYPE`` tag and a ``to_dict()`` that returns
``{"type": TYPE, <field>: <value>, ...}`` with exactly the field names of the class,
ready for JSON.  Identifiers are lower-case hex strings (the iBeacon UUID in the usual
dashed form); powers are signed dBm; the fields keep the units named in their docs.

``Frame`` is the union of all frame classes; ``FrameDict`` is the shape of
``to_dict()`` (and of the error dictionaries built by ``beacons.decode.decode_hex``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, TypeAlias

__all__ = [
    "AltBeacon",
    "EddystoneEID",
    "EddystoneETLM",
    "EddystoneTLM",
    "EddystoneUID",
    "EddystoneURL",
    "Frame",
    "FrameDict",
    "IBeacon",
]

FrameDict: TypeAlias = dict[str, str | int | float | None]


@dataclass(frozen=True, slots=True)
class IBeacon:
    """Apple iBeacon: proximity UUID, major, minor and measured power at 1 m (dBm)."""

    TYPE: ClassVar[str] = "ibeacon"

    uuid: str
    major: int
    minor: int
    tx_power: int

    def to_dict(self) -> FrameDict:
        return {
            "type": self.TYPE,
            "uuid": self.uuid,
            "major": self.major,
            "minor": self.minor,
            "tx_power": self.tx_power,
        }


@dataclass(frozen=True, slots=True)
class AltBeacon:
    """AltBeacon: 20-byte beacon id, reference RSSI at 1 m (dBm), manufacturer byte."""

    TYPE: ClassVar[str] = "altbeacon"

    mfg_id: int
    beacon_id: str
    ref_rssi: int
    mfg_reserved: int

    def to_dict(self) -> FrameDict:
        return {
            "type": self.TYPE,
            "mfg_id": self.mfg_id,
            "beacon_id": self.beacon_id,
            "ref_rssi": self.ref_rssi,
            "mfg_reserved": self.mfg_reserved,
        }


@dataclass(frozen=True, slots=True)
class EddystoneUID:
    """Eddystone-UID: 10-byte namespace, 6-byte instance, Tx power at 0 m (dBm)."""

    TYPE: ClassVar[str] = "eddystone_uid"

    namespace: str
    instance: str
    tx_power: int

    def to_dict(self) -> FrameDict:
        return {
            "type": self.TYPE,
            "namespace": self.namespace,
            "instance": self.instance,
            "tx_power": self.tx_power,
        }


@dataclass(frozen=True, slots=True)
class EddystoneURL:
    """Eddystone-URL: the expanded URL and Tx power at 0 m (dBm)."""

    TYPE: ClassVar[str] = "eddystone_url"

    url: str
    tx_power: int

    def to_dict(self) -> FrameDict:
        return {"type": self.TYPE, "url": self.url, "tx_power": self.tx_power}


@dataclass(frozen=True, slots=True)
class EddystoneTLM:
    """Unencrypted Eddystone-TLM (version 0x00).

    ``battery_mv`` is 0 when the beacon does not measure it; ``temperature_c`` is
    ``None`` when the beacon reports "not supported" (raw 0x8000); ``uptime_s`` is the
    0.1 s counter converted to seconds.
    """

    TYPE: ClassVar[str] = "eddystone_tlm"

    battery_mv: int
    temperature_c: float | None
    adv_count: int
    uptime_s: float

    def to_dict(self) -> FrameDict:
        return {
            "type": self.TYPE,
            "battery_mv": self.battery_mv,
            "temperature_c": self.temperature_c,
            "adv_count": self.adv_count,
            "uptime_s": self.uptime_s,
        }


@dataclass(frozen=True, slots=True)
class EddystoneETLM:
    """Encrypted Eddystone-TLM (version 0x01): 12-byte ciphertext, salt and MIC."""

    TYPE: ClassVar[str] = "eddystone_etlm"

    etlm: str
    salt: int
    mic: int

    def to_dict(self) -> FrameDict:
        return {"type": self.TYPE, "etlm": self.etlm, "salt": self.salt, "mic": self.mic}


@dataclass(frozen=True, slots=True)
class EddystoneEID:
    """Eddystone-EID: the 8-byte ephemeral identifier and Tx power at 0 m (dBm)."""

    TYPE: ClassVar[str] = "eddystone_eid"

    eid: str
    tx_power: int

    def to_dict(self) -> FrameDict:
        return {"type": self.TYPE, "eid": self.eid, "tx_power": self.tx_power}


Frame: TypeAlias = (
    IBeacon | AltBeacon | EddystoneUID | EddystoneURL | EddystoneTLM | EddystoneETLM | EddystoneEID
)
