"""The load generator's shoppers: opted-in app shoppers written straight into the gateway's
store, with their tokens.

``/v1/register`` is limited to ``api.register_per_min`` (10) per client, far too few for 50
shoppers in a benchmark, so the shoppers are written into the gateway's store the way
``firmware_sim.seeding.seed_records`` writes the demo (profile, consent with ``presence`` and
``personalization``, an iBeacon identity; LMDB lets a running gateway see them, and the
identity write moves the generation so its resolvers reload), and their tokens are issued from
the store's secret exactly as ``moments token issue`` does. The records keep fixed ids
(``load-shopper-00001``...), so a second run reuses them.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from typing import Final

from firmware_sim.adverts import ibeacon
from firmware_sim.seeding import seed_records
from gateway.config import Config
from gateway.store import (
    ConsentRecord,
    IdentityRecord,
    ProfileRecord,
    Purpose,
    PurposeState,
    Record,
)
from gateway.store.hlc import from_ms

__all__ = [
    "LOAD_MAJOR",
    "LOAD_UUID",
    "MAX_SHOPPERS",
    "LoadShopper",
    "load_shopper_id",
    "random_address",
    "set_up_shoppers",
    "shopper_records",
]

LOAD_UUID: Final = "6c6f6164-0000-4000-8000-6d6f6d656e74"
"""The iBeacon proximity UUID the load shoppers' apps advertise (major :data:`LOAD_MAJOR`,
minor the shopper's number)."""
LOAD_MAJOR: Final = 4242
MAX_SHOPPERS: Final = 65_535  # an iBeacon minor
_SEGMENTS: Final = ("coffee-lover", "tea-lover", "loyalty-gold")


def load_shopper_id(number: int) -> str:
    """The id of load shopper ``number`` (from 1)."""
    return f"load-shopper-{number:05d}"


@dataclass(frozen=True, slots=True)
class LoadShopper:
    """An opted-in load shopper: its id, its token, the iBeacon its app advertises and its
    phone's (random) address."""

    shopper_id: str
    token: str
    payload: bytes  # the iBeacon the app advertises
    address: str


def shopper_records(count: int, now: float, notice_version: str) -> list[Record]:
    """Shoppers 1 to ``count``: a profile, a consent to presence and personalization given
    in the app at ``now``, and the iBeacon identity their app advertises."""
    hlc = from_ms(math.floor(now * 1000))
    granted = {
        p.value: PurposeState(
            granted=True, at=now, notice_version=notice_version, channel="app", hlc=hlc
        )
        for p in (Purpose.PRESENCE, Purpose.PERSONALIZATION)
    }
    records: list[Record] = []
    for number in range(1, count + 1):
        shopper = load_shopper_id(number)
        records += [
            ProfileRecord(
                shopper_id=shopper,
                nickname=f"Load {number}",
                segments=[_SEGMENTS[number % len(_SEGMENTS)]],
                origin="store",
            ),
            ConsentRecord(shopper_id=shopper, purposes=granted),
            IdentityRecord(key=f"ibeacon:{LOAD_UUID}:{LOAD_MAJOR}:{number}", shopper_id=shopper),
        ]
    return records


async def set_up_shoppers(
    config: Config, count: int, *, ttl_s: float, rng: random.Random
) -> list[LoadShopper]:
    """Write ``count`` shoppers into the gateway's store and issue their tokens (valid for
    ``ttl_s``) from its secret."""
    if count == 0:
        return []
    ids = [load_shopper_id(n) for n in range(1, count + 1)]
    records = shopper_records(count, time.time(), config.api.notice_version)
    tokens = await seed_records(config, records, token_for=ids, ttl_s=ttl_s)
    return [
        LoadShopper(shopper, tokens[shopper], ibeacon(LOAD_UUID, LOAD_MAJOR, number),
                    random_address(rng))
        for number, shopper in enumerate(ids, start=1)
    ]  # fmt: skip


def random_address(rng: random.Random) -> str:
    """A random private resolvable address, as a phone's Bluetooth stack makes them."""
    raw = bytearray(rng.randbytes(6))
    raw[0] = 0x40 | (raw[0] & 0x3F)
    return ":".join(f"{b:02x}" for b in raw)
