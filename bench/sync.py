"""HQ → store sync through the real applier and writer, against LMDB alone, one core.

``snapshot_profiles_per_s``: profile records per second landing in the store through a whole
``profiles`` snapshot, end to end on the store's side: ``snapshot_begin``, ``snapshot_item``
messages of 500 records each, ``snapshot_end``, every one sealed beforehand with a real Ed25519
key (HQ's work, not timed), then, timed and one message at a time as ``HqSync`` does it:
:meth:`StreamApplier.plan` (envelope parsed, signature verified, body validated), the op
committed durably by the real :class:`Writer` into a real LMDB in a temporary folder (items
staged, the end swapping them into ``profiles`` in one transaction) and
:meth:`StreamApplier.committed`. The store starts empty (a first sync, or a restore). Baseline,
same run, same records: ``direct_lmdb_one_txn``, the records encoded and put into an empty LMDB
in one durable write transaction (``Database.put_op`` of all of them, one op through the same
kind of writer). Each run uses a fresh store for each side; the figure is the median run.

``delta_apply_p99_ms``: the 99th percentile of the latency of one HQ delta (an ``offers`` put of
one offer, sealed beforehand) from the wire bytes to committed: ``plan``, the op's durable
commit through the writer, ``committed``, awaited one after the other. Baseline, interleaved
with it (a delta, then a baseline write, and so on) on the same store and writer:
``lmdb_durable_commit_p99_ms``, one durable commit of a write op putting the same record,
already encoded, under the same key. The garbage collector stays on in both (the gateway runs
with it); each side is collected before it is timed.

Both fail when what they measured is not what they claim: a message the applier did not
stage or apply, the profiles not all there after the snapshot (or staging not empty), a delta
not applied, the stream's last sequence not the one sent.
"""

from __future__ import annotations

import gc
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgspec
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench.cpu import pinned
from bench.errors import BenchError
from bench.results import Result
from gateway.clock import ManualClock
from gateway.store import Database, OfferRecord, ProfileRecord, Writer, encode, table_and_key
from gateway.sync.apply import OpResult, StreamApplier
from gateway.sync.envelope import Keyring, Kind, Message, Stream, seal

__all__ = ["DELTA_NAME", "SNAPSHOT_NAME", "DeltaSettings", "SnapshotSettings", "run"]

SNAPSHOT_NAME: Final = "snapshot_profiles_per_s"
SNAPSHOT_BASELINE: Final = "direct_lmdb_one_txn"
SNAPSHOT_UNIT: Final = "rec/s"
DELTA_NAME: Final = "delta_apply_p99_ms"
DELTA_BASELINE: Final = "lmdb_durable_commit_p99_ms"
DELTA_UNIT: Final = "ms"

SEED: Final = 0x5E4C
STORE: Final = "store-1"
KEY_ID: Final = "hq-bench-1"
ITEM_RECORDS: Final = 500
MAP_SIZE: Final = 1 << 30
T0: Final = 1_800_000_000.0
OFFERS: Final = 100
DELTA_WARMUP: Final = 20
_FIRST: Final = ("Alice", "Bruno", "Chloé", "Dmitri", "Eva", "Farid", "Grace", "Hugo", "Inès")
_SEGMENTS: Final = ("coffee", "bakery", "wine", "organic", "baby", "pets", "sports", "beauty")
_LOCALES: Final = ("en", "fr", "de", "nl", "es")

Out = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class SnapshotSettings:
    records: int = 100_000
    runs: int = 3

    @classmethod
    def for_mode(cls, *, quick: bool) -> SnapshotSettings:
        return cls(20_000, 3) if quick else cls(100_000, 3)


@dataclass(frozen=True, slots=True)
class DeltaSettings:
    deltas: int = 2_000

    @classmethod
    def for_mode(cls, *, quick: bool) -> DeltaSettings:
        return cls(500) if quick else cls(2_000)


async def run(
    snapshot: SnapshotSettings | None, delta: DeltaSettings | None, out: Out
) -> list[Result]:
    """The selected benchmarks of this module (``None``: not selected)."""
    signer = Ed25519PrivateKey.generate()
    public = signer.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    results: list[Result] = []
    with pinned() as core:  # the writer threads start in here and inherit the core
        if snapshot is not None:
            results.append(await _snapshot(snapshot, signer, public, core, out))
        if delta is not None:
            results.append(await _delta(delta, signer, public, core, out))
    return results


# ----- shared -----


class _Store:
    """A fresh LMDB store in a temporary folder with its writer and an applier."""

    def __init__(self, prefix: str, public: bytes) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix=prefix)
        self.db = Database(Path(self._tmp.name) / "store", map_size=MAP_SIZE)
        self.writer = Writer(self.db)
        self.applier = StreamApplier(
            self.db, STORE, Keyring([(KEY_ID, public)]), clock=ManualClock(T0)
        )

    async def __aenter__(self) -> _Store:
        try:
            self.db.open()
            self.writer.start()
        except BaseException:
            self.db.close()
            self._tmp.cleanup()
            raise
        return self

    async def __aexit__(self, *_exc: object) -> None:
        try:
            await self.writer.aclose()
        finally:
            self.db.close()
            self._tmp.cleanup()

    def entries(self, table: str) -> int:
        with self.db.env.begin() as txn:
            return int(txn.stat(self.db.handle(table))["entries"])

    async def apply(self, wire: bytes, name: str) -> OpResult:
        """One HQ message as ``HqSync`` handles it: plan, durable write, committed."""
        outcome = self.applier.plan(wire)
        if outcome.op is None:
            raise BenchError(
                f"{name}: the applier rejected a message (stream {outcome.stream}): "
                f"{outcome.reason} ({outcome.detail})"
            )
        result = await self.writer.write(outcome.op)
        self.applier.committed(outcome, result)
        return result


def _sealed(signer: Ed25519PrivateKey, stream: Stream, seq: int, kind: Kind, body: Any) -> bytes:
    message = Message(
        store=STORE,
        stream=stream,
        seq=seq,
        kind=kind,
        issued_at=int(T0 * 1000),
        body=body,
    )
    return seal(message, KEY_ID, signer)


# ----- snapshot -----


def _profiles(n: int) -> list[ProfileRecord]:
    rng = random.Random(SEED)
    return [
        ProfileRecord(
            shopper_id=f"shopper-{i:07}",
            first_name=rng.choice(_FIRST),
            nickname=f"{rng.choice(_FIRST).lower()}{rng.randrange(100)}",
            segments=sorted(rng.sample(_SEGMENTS, rng.randrange(1, 4))),
            locale=rng.choice(_LOCALES),
            greet_on_kiosk=rng.random() < 0.5,
        )
        for i in range(n)
    ]


def _snapshot_wires(signer: Ed25519PrivateKey, records: list[ProfileRecord]) -> list[bytes]:
    snapshot = "profiles-bench-1"
    wires = [
        _sealed(
            signer, "profiles", 1, "snapshot_begin", {"snapshot": snapshot, "count": len(records)}
        )
    ]
    for start in range(0, len(records), ITEM_RECORDS):
        chunk = msgspec.to_builtins(records[start : start + ITEM_RECORDS])
        body = {"snapshot": snapshot, "records": chunk}
        wires.append(_sealed(signer, "profiles", len(wires) + 1, "snapshot_item", body))
    seq = len(wires) + 1
    wires.append(
        _sealed(signer, "profiles", seq, "snapshot_end", {"snapshot": snapshot, "watermark": seq})
    )
    return wires


async def _sync_once(wires: list[bytes], records: list[ProfileRecord], public: bytes) -> float:
    async with _Store("moments-bench-snapshot-", public) as store:
        gc.collect()
        start = time.perf_counter()
        results = [await store.apply(wire, SNAPSHOT_NAME) for wire in wires]
        seconds = time.perf_counter() - start
        expected = ["staged"] * (len(wires) - 1) + ["snapshot_applied"]
        if results != expected:
            wrong = next(
                i for i, (a, b) in enumerate(zip(results, expected, strict=True)) if a != b
            )
            raise BenchError(
                f"{SNAPSHOT_NAME}: message {wrong + 1} of {len(wires)} was {results[wrong]!r}, "
                f"expected {expected[wrong]!r}"
            )
        landed, staged = store.entries("profiles"), store.entries("staging")
        if landed != len(records) or staged:
            raise BenchError(
                f"{SNAPSHOT_NAME}: {landed} profiles in the store after the snapshot of "
                f"{len(records)} ({staged} still staged)"
            )
        state = store.db.sync_state("profiles")
        if state.last != len(wires) or state.stopped or state.snapshot:
            raise BenchError(f"{SNAPSHOT_NAME}: the profiles stream ended as {state}")
        for record in (records[0], records[len(records) // 2], records[-1]):
            if store.db.profile(record.shopper_id) != record:
                raise BenchError(f"{SNAPSHOT_NAME}: profile {record.shopper_id} differs")
    return seconds


async def _direct_once(records: list[ProfileRecord], public: bytes) -> float:
    async with _Store("moments-bench-direct-", public) as store:
        gc.collect()
        start = time.perf_counter()
        written = await store.writer.write(store.db.put_op(list(records)))
        seconds = time.perf_counter() - start
        landed = store.entries("profiles")
        if written != len(records) or landed != len(records):
            raise BenchError(
                f"{SNAPSHOT_BASELINE}: {written} written, {landed} in the store, "
                f"expected {len(records)}"
            )
    return seconds


async def _snapshot(
    settings: SnapshotSettings,
    signer: Ed25519PrivateKey,
    public: bytes,
    core: int,
    out: Out,
) -> Result:
    records = _profiles(settings.records)
    wires = _snapshot_wires(signer, records)
    size = sum(map(len, wires))
    out(
        f"{SNAPSHOT_NAME}: {len(records)} profiles in {len(wires)} signed messages "
        f"({ITEM_RECORDS} records per item, {size / 1e6:.1f} MB on the wire), pinned to core {core}"
    )
    warm = records[: 2 * ITEM_RECORDS]
    await _sync_once(_snapshot_wires(signer, warm), warm, public)
    await _direct_once(warm, public)
    ours: list[float] = []
    theirs: list[float] = []
    for i in range(1, settings.runs + 1):
        ours.append(len(records) / await _sync_once(wires, records, public))
        theirs.append(len(records) / await _direct_once(records, public))
        out(
            f"  run {i}: sync snapshot {ours[-1]:>10.0f} {SNAPSHOT_UNIT}   "
            f"direct one txn {theirs[-1]:>10.0f} {SNAPSHOT_UNIT}"
        )
    ours_median, theirs_median = statistics.median(ours), statistics.median(theirs)
    out(
        f"  median sync snapshot {ours_median:.0f} {SNAPSHOT_UNIT} "
        f"({len(records) / ours_median:.2f} s), direct {theirs_median:.0f} {SNAPSHOT_UNIT} "
        f"({len(records) / theirs_median:.2f} s)"
    )
    return Result(
        SNAPSHOT_NAME,
        ours_median,
        SNAPSHOT_UNIT,
        SNAPSHOT_BASELINE,
        theirs_median,
        higher_is_better=True,
    )


# ----- deltas -----


def _offer(i: int) -> OfferRecord:
    n = i % OFFERS
    return OfferRecord(
        offer_id=f"offer-{n:03}",
        version=i // OFFERS + 1,
        title=f"Two for one on blend {n}",
        body="Freshly roasted this week, in store only.",
        regular_price=7.9,
        price=round(3.95 + (i % 7) * 0.1, 2),
        segments=[_SEGMENTS[n % len(_SEGMENTS)]],
        priority=n % 5,
        valid_from=T0 - 86_400,
        valid_until=T0 + 7 * 86_400,
    )


def _put_op(table: Any, key: bytes, value: bytes) -> Callable[[Any], None]:
    def put(txn: Any) -> None:
        txn.put(key, value, db=table)

    return put


def _p99(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[98]


async def _delta(
    settings: DeltaSettings,
    signer: Ed25519PrivateKey,
    public: bytes,
    core: int,
    out: Out,
) -> Result:
    total = DELTA_WARMUP + settings.deltas
    offers = [_offer(i) for i in range(total)]
    wires = [
        _sealed(
            signer, "offers", i + 1, "delta", {"op": "put", "records": [msgspec.to_builtins(o)]}
        )
        for i, o in enumerate(offers)
    ]
    encoded = [(table_and_key(o)[1], encode(o)) for o in offers]
    out(
        f"{DELTA_NAME}: {settings.deltas} sequential offer deltas ({len(wires[-1])} bytes signed) "
        f"after {DELTA_WARMUP} warm-up, each followed by a baseline commit; pinned to core {core}"
    )
    ours: list[float] = []
    theirs: list[float] = []
    async with _Store("moments-bench-delta-", public) as store:
        table = store.db.handle("offers")
        gc.collect()
        for i, wire in enumerate(wires):
            start = time.perf_counter()
            result = await store.apply(wire, DELTA_NAME)
            middle = time.perf_counter()
            await store.writer.write(_put_op(table, *encoded[i]))
            end = time.perf_counter()
            if result != "applied":
                raise BenchError(f"{DELTA_NAME}: delta {i + 1} was {result!r}, not applied")
            if i >= DELTA_WARMUP:
                ours.append((middle - start) * 1000)
                theirs.append((end - middle) * 1000)
        state = store.db.sync_state("offers")
        if state.last != total or state.stopped:
            raise BenchError(f"{DELTA_NAME}: the offers stream ended as {state}, expected {total}")
        stored = {o.offer_id: o for o in store.db.offers()}
        latest = {o.offer_id: o for o in offers}
        if stored != latest:
            raise BenchError(f"{DELTA_NAME}: the offers in the store are not the last ones sent")
        counts = store.applier.counts().messages
        if counts.get(("offers", "applied"), 0) != total:
            raise BenchError(f"{DELTA_NAME}: the applier counted {dict(counts)}")
    ours_p99, theirs_p99 = _p99(ours), _p99(theirs)
    out(
        f"  delta apply: median {statistics.median(ours):.3f} ms, p99 {ours_p99:.3f} ms, "
        f"max {max(ours):.3f} ms"
    )
    out(
        f"  durable commit only: median {statistics.median(theirs):.3f} ms, "
        f"p99 {theirs_p99:.3f} ms, max {max(theirs):.3f} ms"
    )
    return Result(
        DELTA_NAME,
        ours_p99,
        DELTA_UNIT,
        DELTA_BASELINE,
        theirs_p99,
        higher_is_better=False,
        digits=3,
    )
