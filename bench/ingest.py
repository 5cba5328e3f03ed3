"""``ingest_adv_per_s``: advertisements per second through the whole sensing path, one core.

What is measured: scanner-node messages (JSON, as they arrive from the broker) through
``gateway.sensing.Sensing.handle``: batch validation, frame decoding, identity (EID table,
identity table, IRK check, and the presence consent read from LMDB for every resolved
sighting), RSSI filtering and the presence state machine, anonymous counting; with the
once-a-second ``tick`` (resolver maintenance, presence timeouts) every 20 batches. The store is a
real LMDB holding 5,000 shoppers with EID keys and consent; 500 devices are in range, 20 %
opted-in Android phones advertising their current EID, 80 % anonymous (phones without the app,
iBeacons of other apps). Batches carry 50 advertisements from two scanner nodes.

Baseline, same run, same messages: only the first stage, validating the batch and decoding the
frames (``parse_batch`` + ``decode_advertisement``), so the ratio says what identity, consent and
presence cost on top of parsing. The issue's target is at least 50,000 advertisements per second.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import statistics
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from beacons import DecodeError, decode_advertisement
from beacons.eid import eid_for_time
from beacons.presence import PresenceEvent
from bench.cpu import gc_paused_seconds, pinned
from bench.errors import BenchError
from bench.results import Result
from firmware_sim.adverts import eddystone_eid, ibeacon, phone_noise
from gateway.clock import ManualClock
from gateway.config import load_config
from gateway.metrics import Metrics
from gateway.mqtt import InboundMessage
from gateway.nodes import Advert, NodeLimits, encode_batch, parse_batch
from gateway.sensing import Sensing
from gateway.store import (
    ConsentRecord,
    Database,
    EidKeyRecord,
    Purpose,
    PurposeState,
    Record,
    Writer,
)

__all__ = ["NAME", "Settings", "run"]

NAME = "ingest_adv_per_s"
BASELINE = "parse_and_decode_only"
UNIT = "adv/s"
SEED = 0x1A6E57
SHOPPERS = 5_000
IN_RANGE = 500
OPTED_IN_SHARE = 0.2
BATCH = 50
BATCHES = 400
TICK_EVERY = 20
EXPONENT = 10
# A moment at the start of a rotation period, so the runs never cross an EID boundary.
T0 = 1_800_000_000 - 1_800_000_000 % (1 << EXPONENT) + 5
CONFIG = Path(__file__).resolve().parent.parent / "deploy" / "moments.example.toml"
NODES = ("node-entrance", "node-coffee")

Out = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Settings:
    runs: int = 5

    @classmethod
    def for_mode(cls, *, quick: bool) -> Settings:
        return cls(3 if quick else 5)


def shopper_records(rng: random.Random) -> tuple[list[Record], list[bytes]]:
    granted = {p.value: PurposeState(granted=True, at=T0 - 86_400) for p in Purpose}
    records: list[Record] = []
    keys: list[bytes] = []
    for i in range(SHOPPERS):
        key = rng.randbytes(16)
        keys.append(key)
        shopper = f"shopper-{i:05}"
        records.append(ConsentRecord(shopper_id=shopper, purposes=granted))
        records.append(EidKeyRecord(shopper_id=shopper, identity_key=key, exponent=EXPONENT))
    return records, keys


def busy_floor(rng: random.Random, keys: list[bytes]) -> list[InboundMessage]:
    opted_in = round(IN_RANGE * OPTED_IN_SHARE)
    devices: list[tuple[bytes, str]] = [
        (eddystone_eid(eid_for_time(key, EXPONENT, T0)), "") for key in rng.sample(keys, opted_in)
    ]
    for i in range(IN_RANGE - opted_in):
        if i % 2:
            first = 0x40 | rng.randrange(0x40)  # a resolvable private address that is no one's
            address = f"{first:02X}:{rng.randbytes(5).hex(':').upper()}"
            devices.append((phone_noise(rng.randbytes(8)), address))
        else:
            other_app = ibeacon(str(_uuid(rng)), rng.randrange(1 << 16), rng.randrange(1 << 16))
            devices.append((other_app, ""))
    messages = []
    for seq in range(BATCHES):
        node = NODES[seq % 2]
        adverts = [
            Advert(data, max(-100, min(-35, round(rng.gauss(-70, 6)))), rng.randrange(500), addr)
            for data, addr in (rng.choice(devices) for _ in range(BATCH))
        ]
        payload = encode_batch(node, seq, float(T0), adverts)
        messages.append(InboundMessage(f"moments/v1/store-1/nodes/{node}/adv", payload, 0, False))
    return messages


def _uuid(rng: random.Random) -> str:
    raw = rng.randbytes(16).hex()
    return f"{raw[:8]}-{raw[8:12]}-{raw[12:16]}-{raw[16:20]}-{raw[20:]}"


def _baseline(messages: list[InboundMessage]) -> None:
    limits = NodeLimits()
    for message in messages:
        node = message.topic.split("/")[-2]
        for advert in parse_batch(node, message.payload, limits).adverts:
            with contextlib.suppress(DecodeError):
                decode_advertisement(advert.data)


def run(settings: Settings, out: Out) -> list[Result]:
    return asyncio.run(_run(settings, out))


async def _run(settings: Settings, out: Out) -> list[Result]:
    with tempfile.TemporaryDirectory(prefix="moments-bench-ingest-") as tmp:
        rng = random.Random(SEED)
        config = load_config(CONFIG, environ={"MOMENTS_DATA_DIR": tmp})
        db = Database(Path(tmp) / "store", map_size=256 << 20)
        db.open()
        writer = Writer(db)
        writer.start()
        try:
            records, keys = shopper_records(rng)
            await writer.write(db.put_op(records))
            clock = ManualClock(float(T0))
            events: list[PresenceEvent] = []
            sensing = Sensing(
                config=config, db=db, clock=clock, metrics=Metrics(), on_event=events.append
            )
            sensing.tick()  # loads the EID table of every consenting shopper
            if len(sensing.identities.eids) != SHOPPERS:
                raise BenchError(
                    f"{NAME}: the EID table holds {len(sensing.identities.eids)} shoppers"
                )
            messages = busy_floor(rng, keys)
            adverts = len(messages) * BATCH
            out(
                f"{NAME}: {SHOPPERS} shoppers with EID keys in LMDB, {IN_RANGE} devices in "
                f"range ({OPTED_IN_SHARE:.0%} opted in), {len(messages)} batches of {BATCH}"
            )

            def pipeline() -> None:
                for i, message in enumerate(messages):
                    sensing.handle(message)
                    clock.advance(1.0 / TICK_EVERY)
                    if i % TICK_EVERY == TICK_EVERY - 1:
                        sensing.tick()

            ours: list[float] = []
            theirs: list[float] = []
            with pinned() as core:
                pipeline()  # warm-up: presence tracks exist from here on, as in a busy store
                out(f"  pinned to core {core}")
                for i in range(1, settings.runs + 1):
                    ours.append(adverts / gc_paused_seconds(pipeline))
                    theirs.append(adverts / gc_paused_seconds(lambda: _baseline(messages)))
                    out(
                        f"  run {i}: pipeline {ours[-1]:>10.0f} {UNIT}   parse+decode only "
                        f"{theirs[-1]:>10.0f} {UNIT}"
                    )
            shoppers = {getattr(e, "subject", None) for e in events}
            if len(shoppers) != round(IN_RANGE * OPTED_IN_SHARE):
                raise BenchError(
                    f"{NAME}: {len(shoppers)} shoppers recognised, expected every opted-in one"
                )
            out(
                f"  median pipeline {statistics.median(ours):.0f} {UNIT}; "
                f"{len(events)} presence events for {len(shoppers)} shoppers"
            )
        finally:
            await writer.aclose()
            db.close()
    return [Result(NAME, max(ours), UNIT, BASELINE, max(theirs), higher_is_better=True)]
