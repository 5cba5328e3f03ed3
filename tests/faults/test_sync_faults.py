"""HQ sync under faults, with real processes: the gateway SIGKILLed while it applies snapshots
and while it drains its outbox, HQ's broker killed under load or absent for a while, messages
lost in transit and an outage longer than HQ's log.

Each kill loop is seeded (``MOMENTS_FAULT_SEED`` to replay one; the seed is printed) and
``MOMENTS_SOAK=1`` makes the loops ten times longer. The figures each test measures are printed
(``pytest -s`` shows them; a failure shows them too).
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import pytest

from firmware_sim.adverts import ibeacon
from firmware_sim.scenario import APP_UUID, demo_records
from gateway.store import (
    ConsentRecord,
    IdentityRecord,
    ProfileRecord,
    Purpose,
    PurposeState,
    Record,
)
from tests.faults.conftest import Site
from tests.faults.harness import (
    STORE,
    GatewayProcess,
    HqDesk,
    StoreView,
    enqueue_events,
    read_received,
    read_store,
    seed_store,
    wait_until,
)
from tests.support.peers import Publisher

pytestmark = pytest.mark.mqtt

SOAK: Final = os.environ.get("MOMENTS_SOAK") == "1"
SNAPSHOT_KILLS: Final = 500 if SOAK else 50
OUTBOX_KILLS: Final = 200 if SOAK else 20
PROFILES: Final = 2000
ID_SPACE: Final = 2500  # each snapshot names 2,000 of these ids; consecutive ones overlap
AT_MS: Final = 1_795_378_600_000


def _seed() -> int:
    given = os.environ.get("MOMENTS_FAULT_SEED")
    return int(given) if given else random.SystemRandom().randrange(2**32)


# ----- 1. SIGKILL while snapshots are applied -----


def _snapshot_ids(n: int) -> frozenset[str]:
    return frozenset(f"p-{(i + 7 * n) % ID_SPACE:05d}" for i in range(PROFILES))


def _snapshot_records(n: int) -> list[dict[str, Any]]:
    """Snapshot ``n``: 2,000 profiles, every one marked ``snap-n``; the ids shift with ``n`` so
    that a half-done swap would also show in which ids are there."""
    return [
        {"type": "profile", "shopper_id": shopper, "first_name": "P", "segments": [f"snap-{n}"]}
        for shopper in sorted(_snapshot_ids(n))
    ]


@dataclass
class SnapshotLedger:
    """What HQ published: snapshot number -> its (first, last) sequence."""

    spans: dict[int, tuple[int, int]] = field(default_factory=dict)
    errors: list[BaseException] = field(default_factory=list)

    def publish(self, desk: HqDesk, numbers: Sequence[int]) -> None:
        try:
            for n in numbers:
                summary = desk.publish("profiles", _snapshot_records(n), snapshot=True)
                self.spans[n] = summary.stores[STORE]
        except BaseException as exc:  # re-raised by the test's thread
            self.errors.append(exc)


def _applied_snapshot(view: StoreView, spans: dict[int, tuple[int, int]]) -> tuple[int, int]:
    """The snapshot the store holds (0 for none) and its last applied sequence, after checking
    that the stream is whole: every record from one snapshot, all of that snapshot's records,
    and a last sequence within that snapshot's span of the stream."""
    state = view.sync.get("profiles")
    last = 0 if state is None else state.last
    if not view.profiles:
        assert last == 0, f"no profiles but the stream is at {last}"
        return 0, 0
    marks = {tuple(p.segments) for p in view.profiles.values()}
    assert len(marks) == 1, f"records of several snapshots side by side: {sorted(marks)[:5]}"
    (mark,) = marks
    n = int(mark[0].removeprefix("snap-"))
    assert set(view.profiles) == _snapshot_ids(n), f"snapshot {n} is not whole"
    # The end of snapshot n, or of a snapshot HQ made of the same records to answer a resync
    # before it published snapshot n + 1.
    upper = spans[n + 1][0] if n + 1 in spans else float("inf")
    assert spans[n][1] <= last < upper, f"snapshot {n} {spans[n]} held at sequence {last}"
    return n, last


def _sync_messages(site: Site) -> float:
    return site.gateway.metric_total("moments_sync_messages_total") + site.gateway.metric_total(
        "moments_sync_rejected_total"
    )


def _wait_quiet(site: Site, *, quiet_s: float = 1.0, timeout: float = 30.0) -> None:
    """Until the gateway has handled no HQ message for ``quiet_s``."""
    seen = [_sync_messages(site), time.monotonic()]

    def settled() -> bool:
        now = _sync_messages(site)
        if now != seen[0]:
            seen[:] = [now, time.monotonic()]
            return False
        return time.monotonic() - seen[1] >= quiet_s

    wait_until(settled, timeout=timeout, what="HQ messages settled", interval=0.1)


@pytest.mark.timeout(3600 if SOAK else 180)
def test_sigkill_during_snapshot_apply_never_leaves_a_half_applied_stream(site: Site) -> None:
    """HQ publishes 2,000-record profile snapshots, 1 to 3 at a time, while the gateway is
    SIGKILLed 0.05 to 0.5 s after its HQ link comes up (the backlog flowing in) or after a
    publish starts, and restarted. After every kill the store opens and reads whole, the
    stream holds exactly one snapshot, staging agrees with the stream's state, and neither
    the snapshot nor the last applied sequence ever goes back."""
    seed = _seed()
    rng = random.Random(seed)
    site.start_serve()
    desk = site.open_desk()
    gateway = site.gateway
    hq = SnapshotLedger(spans={0: (0, 0)})
    figures: dict[str, object] = {"seed": seed, "kills": 0}
    published = held = last = mid_snapshot = 0
    started = time.monotonic()
    try:
        for kill in range(1, SNAPSHOT_KILLS + 1):
            gateway.start()
            assert gateway.wait_hq_up()["components"]["store"]["state"] == "ok"
            publisher: threading.Thread | None = None
            if rng.random() < 0.7:
                numbers = list(range(published + 1, published + 1 + rng.randint(1, 3)))
                published = numbers[-1]
                publisher = threading.Thread(target=hq.publish, args=(desk, numbers), daemon=True)
                publisher.start()
            time.sleep(rng.uniform(0.05, 0.5))
            gateway.kill()
            figures["kills"] = gateway.kills
            if publisher is not None:
                publisher.join(timeout=30)
                assert not publisher.is_alive(), "HQ's publish did not finish"
            if hq.errors:
                raise hq.errors[0]
            view = read_store(gateway.store_path)
            now_held, now_last = _applied_snapshot(view, hq.spans)
            assert now_last >= last, f"kill {kill}: the stream went back from {last} to {now_last}"
            assert now_held >= held, f"kill {kill}: back from snapshot {held} to {now_held}"
            held, last = now_held, now_last
            state = view.sync.get("profiles")
            staging = state.snapshot_staged if state is not None and state.snapshot else 0
            assert view.staged == staging, f"kill {kill}: {view.staged} staged, state {state}"
            mid_snapshot += staging > 0
            figures.update(held=held, last_seq=last, killed_mid_snapshot=mid_snapshot)
        figures["loop_s"] = round(time.monotonic() - started, 1)

        # No more kills: one more snapshot, and the store ends with it.
        gateway.start()
        gateway.wait_hq_up()
        final = published + 1
        hq.publish(desk, [final])
        if hq.errors:
            raise hq.errors[0]
        _wait_quiet(site)
        assert gateway.stop() == 0
        view = read_store(gateway.store_path)
        assert _applied_snapshot(view, hq.spans)[0] == final
        assert view.sync["profiles"].last == desk.ledger.last_seq(STORE, "profiles")
        assert view.staged == 0
        answers = site.serves[0].resync_answers()
        figures.update(
            snapshots_published=final,
            messages=desk.ledger.last_seq(STORE, "profiles"),
            resync_replays=sum(a["answer"] == "replay" for a in answers),
            resync_snapshots=sum(a["answer"] == "snapshot" for a in answers),
        )
    finally:
        _report("snapshot kills", figures)
    assert gateway.kills >= SNAPSHOT_KILLS


def _report(tag: str, figures: dict[str, object]) -> None:
    print(f"\n[{tag}] " + " ".join(f"{k}={v}" for k, v in figures.items()))


# ----- store → HQ: what reached HQ -----


class EventsLost(AssertionError):
    """Events the store sent never reached HQ (or reached it more than once)."""


def _hq_recorded(site: Site) -> int:
    """How many distinct events HQ's ledger recorded (serve stopped or not: LMDB is shared)."""
    desk = site.open_desk()
    return desk.ledger.counts().get("events", 0)


def _assert_exactly_once_in_order(site: Site, total: int, *, arrival_order: bool = True) -> None:
    """HQ's ledger recorded ``total`` events and its ``--received`` file holds each of the
    store's events 1..total once, in sequence order; with ``arrival_order=False`` only once
    (HQ's ledger keeps them by sequence): a broker that lost events delivers later ones first,
    and the lost ones when the store sends them again."""
    recorded = _hq_recorded(site)
    if recorded != total:
        raise EventsLost(f"HQ recorded {recorded} of the store's {total} events")
    received = read_received(site.received)
    seqs = [seq for store, seq in received if store == STORE]
    missing = sorted(set(range(1, total + 1)) - set(seqs))
    if missing or len(seqs) != total:
        raise EventsLost(
            f"HQ wrote out {len(seqs)} events of {total}: {len(missing)} missing "
            f"(first {missing[:5]}), {len(seqs) - len(set(seqs))} twice"
        )
    if arrival_order:
        assert seqs == list(range(1, total + 1)), "events written out of sequence order"


def _depth(gateway: GatewayProcess) -> int:
    health = gateway.health()
    assert health is not None, "the gateway does not answer"
    depth: int = health["components"]["hq"]["outbox"]["depth"]
    return depth


def _wait_drained(gateway: GatewayProcess, timeout: float = 60.0) -> dict[str, Any]:
    health = gateway.wait_health(
        lambda h: h["components"]["hq"]["outbox"]["depth"] == 0,
        timeout=timeout,
        what="the outbox drained",
    )
    outbox: dict[str, Any] = health["components"]["hq"]["outbox"]
    return outbox


def _wait_broker_acked(gateway: GatewayProcess, count: int, timeout: float = 30.0) -> None:
    """Until the HQ broker has acknowledged ``count`` publishes of this gateway process (the
    entries stay in the outbox until HQ's receipt)."""
    gateway.wait_health(
        lambda h: h["components"]["hq"]["outbox"]["acked"] >= count,
        timeout=timeout,
        what=f"{count} events acknowledged by the HQ broker",
    )


def _wait_received_settled(site: Site, *, quiet_s: float = 0.5, timeout: float = 30.0) -> int:
    """Until HQ's ``--received`` file stops growing: its line count."""
    seen = [-1, time.monotonic()]

    def settled() -> int | None:
        now = len(read_received(site.received))
        if now != seen[0]:
            seen[:] = [now, time.monotonic()]
            return None
        return now if time.monotonic() - seen[1] >= quiet_s else None

    return wait_until(settled, timeout=timeout, what="HQ's received file settled", interval=0.05)


def _duplicates_at_hq(site: Site) -> int:
    return site.open_desk().ledger.counts().get("duplicates", 0)


# ----- 2. SIGKILL while the outbox drains -----


@pytest.mark.timeout(3600 if SOAK else 120)
def test_sigkill_during_outbox_draining_delivers_every_event_once_in_order(site: Site) -> None:
    """Events are put in the outbox while the gateway is stopped (3,000, then 500 to 1,500
    before each restart); the gateway is SIGKILLed 0.05 to 0.5 s after its HQ link comes up,
    while it drains. After every kill every event gone from the outbox is at HQ; in the end
    the outbox is empty and HQ wrote every event out once, in sequence order."""
    seed = _seed()
    rng = random.Random(seed)
    site.start_serve()
    gateway = site.gateway
    figures: dict[str, object] = {"seed": seed, "kills": 0}
    total = draining = 0

    def enqueue(count: int) -> None:
        nonlocal total
        seqs = enqueue_events(gateway.store_path, count, at_ms=AT_MS + total)
        assert seqs == list(range(total + 1, total + count + 1)), "the outbox sequence went back"
        total += count

    started = time.monotonic()
    try:
        enqueue(3000)
        for kill in range(1, OUTBOX_KILLS + 1):
            gateway.start()
            assert gateway.wait_hq_up()["components"]["store"]["state"] == "ok"
            time.sleep(rng.uniform(0.05, 0.5))
            gateway.kill()
            figures["kills"] = gateway.kills
            view = read_store(gateway.store_path)
            left = len(view.outbox)
            # An entry leaves the outbox only once HQ's receipt says HQ recorded it (and HQ
            # writes it out before it commits): whatever is gone is at HQ.
            gone = set(range(1, total + 1)) - set(view.outbox)
            at_hq = {seq for store, seq in read_received(site.received) if store == STORE}
            assert gone <= at_hq, f"kill {kill}: {sorted(gone - at_hq)[:5]}... gone, not at HQ"
            assert view.outbox_seq == total
            draining += left > 0
            figures.update(killed_while_draining=draining, events=total)
            enqueue(rng.randint(500, 1500))
        figures.update(events=total, loop_s=round(time.monotonic() - started, 1))

        gateway.start()
        figures["final_drain"] = _wait_drained(gateway, timeout=600 if SOAK else 60)["acked"]
        assert gateway.stop() == 0
        assert read_store(gateway.store_path).outbox == ()
        wait_until(
            lambda: len(read_received(site.received)) >= total,
            timeout=300 if SOAK else 30,
            what=f"{total} events at HQ",
            interval=0.1,
        )
        assert site.serves[0].stop() == 0
        figures["duplicates_at_hq"] = _duplicates_at_hq(site)
    finally:
        _report("outbox kills", figures)
    _assert_exactly_once_in_order(site, total)
    assert gateway.kills >= OUTBOX_KILLS


# ----- 3. HQ's broker killed while 10,000 events drain -----

EVENTS: Final = 10_000


@pytest.mark.timeout(120)
def test_hq_broker_killed_while_10000_events_drain_loses_and_duplicates_none(site: Site) -> None:
    """The broker is SIGKILLed mid-drain, with the gateway and HQ's consumer running: publishes
    in flight, events acknowledged and held only in the broker's memory, receipts on their way.
    It restarts half a second later; both reconnect on their own backoff (HQ's consumer
    subscribes again; until then the broker drops what it gets). Whatever did not reach HQ is
    sent again after the receipt timeout, and HQ counts each event once."""
    serve = site.start_serve()
    gateway = site.gateway
    assert enqueue_events(gateway.store_path, EVENTS, at_ms=AT_MS)[-1] == EVENTS
    started = time.monotonic()
    gateway.start()
    gateway.wait_hq_up()
    gateway.wait_health(
        lambda h: h["components"]["hq"]["outbox"]["receipted"] >= EVENTS // 3,
        timeout=30,
        what="a third of the events receipted by HQ",
    )
    at_kill = len(read_received(site.received))
    site.hq_broker.kill()
    time.sleep(0.5)
    site.hq_broker.restart()
    outbox = _wait_drained(gateway)
    drained_s = time.monotonic() - started
    wait_until(
        lambda: len(read_received(site.received)) >= EVENTS,
        timeout=30,
        what=f"{EVENTS} events at HQ",
        interval=0.1,
    )
    assert gateway.stop() == 0
    assert serve.stop() == 0
    print(
        f"\n[hq broker kill] events={EVENTS} at_hq_when_killed={at_kill} "
        f"resent={outbox['redelivered']} duplicates_at_hq={_duplicates_at_hq(site)} "
        f"relay_failures={outbox['failures']} drain_s={drained_s:.1f}"
    )
    _assert_exactly_once_in_order(site, EVENTS, arrival_order=False)
    assert outbox["failures"] >= 1  # the pass the crash ended


LOST_EVENTS: Final = 3000


@pytest.mark.timeout(90)
def test_events_a_killed_hq_broker_acknowledged_but_had_not_saved_are_sent_again(
    site: Site,
) -> None:
    """HQ's consumer stalls (SIGSTOP) while the store drains, so the broker acknowledges
    events it only holds in memory; the broker is SIGKILLed and restarted; the consumer and
    then the store come back. Every event must still reach HQ once."""
    serve = site.start_serve()
    gateway = site.gateway
    enqueue_events(gateway.store_path, LOST_EVENTS, at_ms=AT_MS)
    gateway.start()
    gateway.wait_hq_up()
    serve.pause()  # HQ's consumer falls behind: the broker queues for it, in memory
    _wait_broker_acked(gateway, LOST_EVENTS // 2)
    gateway.pause()  # the store stays away until HQ's consumer is back
    site.hq_broker.kill()
    site.hq_broker.restart()
    serve.resume()
    serve.wait_serving(more_than=1)
    gateway.resume()
    _wait_drained(gateway)
    _wait_received_settled(site)
    assert gateway.stop() == 0
    assert serve.stop() == 0
    print(f"\n[hq broker kill, consumer behind] recorded_at_hq={_hq_recorded(site)}/{LOST_EVENTS}")
    _assert_exactly_once_in_order(site, LOST_EVENTS, arrival_order=False)


@pytest.mark.timeout(90)
def test_events_sent_after_an_hq_broker_restart_before_hq_serve_resubscribes_are_sent_again(
    site: Site,
) -> None:
    """HQ's consumer has everything so far and is paused; the broker is stopped cleanly (it
    saves) and restarted; the store reconnects first and drains, and only then the consumer.
    Every event must still reach HQ once."""
    serve = site.start_serve()
    gateway = site.gateway
    enqueue_events(gateway.store_path, LOST_EVENTS, at_ms=AT_MS)
    gateway.start()
    gateway.wait_hq_up()
    gateway.wait_health(
        lambda h: h["components"]["hq"]["outbox"]["depth"] <= LOST_EVENTS * 2 // 3,
        timeout=30,
        what="a third of the events through",
    )
    gateway.pause()
    _wait_received_settled(site)  # HQ's consumer has everything acknowledged so far
    serve.pause()  # and is slower to come back than the store, as its backoff often is
    site.hq_broker.stop()  # a clean stop: the broker saves sessions and queued messages
    site.hq_broker.restart()
    gateway.resume()
    # The store sends the rest; the broker acknowledges and drops it: no one subscribes yet.
    _wait_broker_acked(gateway, LOST_EVENTS)
    assert _depth(gateway) > 0  # without HQ's receipts nothing more leaves the outbox
    serve.resume()
    serve.wait_serving(more_than=1)
    _wait_drained(gateway)
    _wait_received_settled(site)
    assert gateway.stop() == 0
    assert serve.stop() == 0
    print(f"\n[hq broker restart, consumer late] recorded_at_hq={_hq_recorded(site)}/{LOST_EVENTS}")
    _assert_exactly_once_in_order(site, LOST_EVENTS, arrival_order=False)


@pytest.mark.timeout(60)
def test_an_event_hq_serve_failed_to_write_out_is_written_after_its_restart(site: Site) -> None:
    """``moments hq serve`` fails writing its ``--received`` file and stops; restarted with a
    writable file, it must write every event the broker redelivers to it."""
    # /dev/full accepts the open and fails every write with ENOSPC: a disk that filled up.
    failing = site.start_serve(received=Path("/dev/full"))
    gateway = site.gateway
    enqueue_events(gateway.store_path, 500, at_ms=AT_MS)
    gateway.start()
    _wait_broker_acked(gateway, 500)  # the broker acknowledged all of them
    assert failing.wait_exit() == 1  # serve stopped at its first failed write
    assert _depth(gateway) == 500  # no receipt came: nothing left the outbox
    site.start_serve()  # the same kept session: the broker redelivers what it did not ack
    _wait_drained(gateway)
    _wait_received_settled(site, quiet_s=1.0)
    assert gateway.stop() == 0
    assert site.serves[-1].stop() == 0
    print(
        f"\n[hq serve write failure] recorded_at_hq={_hq_recorded(site)}/500 "
        f"written_out={len(read_received(site.received))}/500"
    )
    _assert_exactly_once_in_order(site, 500)


# ----- 4. HQ unreachable: the store serves and queues, then drains in order -----


def _shoppers(now: float, count: int) -> list[Record]:
    """``count`` shoppers who granted everything, each with an iBeacon identity (major 200)."""
    granted = {
        p.value: PurposeState(granted=True, at=now, notice_version="2026-01", channel="app")
        for p in Purpose
    }
    out: list[Record] = []
    for k in range(1, count + 1):
        shopper = f"shopper-fault-{k}"
        out += [
            ProfileRecord(shopper_id=shopper, first_name=f"S{k}", segments=["coffee-lover"]),
            ConsentRecord(shopper_id=shopper, purposes=granted),
            IdentityRecord(key=f"ibeacon:{APP_UUID}:200:{k}", shopper_id=shopper),
        ]
    return out


@pytest.mark.timeout(90)
def test_hq_unreachable_the_store_serves_and_queues_then_drains_in_order(site: Site) -> None:
    """HQ's broker is not running: the kiosk still gets offers, shoppers' visits (real
    scanner-node adverts on the store broker) queue up in the outbox, and once HQ's broker and
    consumer are back every event reaches HQ once, in sequence order."""
    site.hq_broker.stop()  # HQ is unreachable from the start
    gateway = site.gateway
    now = time.time()
    seed_store(gateway.store_path, [*demo_records(now), *_shoppers(now, 12)])
    gateway.start()
    health = gateway.wait_health(
        lambda h: h["components"]["broker"]["state"] == "up", timeout=20, what="store broker up"
    )
    assert health["components"]["hq"]["state"] != "up"
    publisher = Publisher(site.store_broker.host, site.store_broker.port)
    depths = [_depth(gateway)]
    offers = 0
    try:
        for wave in ((1, 2, 3, 4), (5, 6, 7, 8), (9, 10, 11, 12)):
            for k in wave:
                for _ in range(4):
                    publisher.adverts("node-coffee", ibeacon(APP_UUID, 200, k), rssi=-52)
            # Each shopper's arrival is a visit (and the kiosk's new offer an impression).
            depths.append(_wait_depth_at_least(gateway, depths[-1] + len(wave)))
            assert gateway.offer_status() == 200
            offers += 1
            still = gateway.health()
            assert still is not None
            assert still["components"]["hq"]["state"] != "up"
    finally:
        publisher.close()
    assert depths == sorted(depths) and depths[-1] >= 12, depths

    # HQ comes back: its broker, then its consumer; the store, paused meanwhile, reconnects
    # after it (the test above has it the other way round).
    gateway.pause()
    site.hq_broker.restart()
    serve = site.start_serve()
    gateway.resume()
    outbox = _wait_drained(gateway)
    queued = depths[-1]
    assert gateway.stop() == 0
    total = read_store(gateway.store_path).outbox_seq
    wait_until(
        lambda: len(read_received(site.received)) >= total,
        timeout=30,
        what=f"{total} events at HQ",
        interval=0.1,
    )
    assert serve.stop() == 0
    events = _received_events(site)
    kinds = Counter(event["type"] for event in events)
    print(
        f"\n[hq unreachable] outbox_depth_by_wave={depths} offers_served={offers} "
        f"events={total} {dict(kinds)} published_after={outbox['published']}"
    )
    assert total >= queued
    _assert_exactly_once_in_order(site, total)
    visitors = {e["body"].get("shopper") for e in events if e["type"] == "visit"}
    assert {f"shopper-fault-{k}" for k in range(1, 13)} <= visitors


def _wait_depth_at_least(gateway: GatewayProcess, floor: int) -> int:
    def probe() -> int | None:
        depth = _depth(gateway)
        return depth if depth >= floor else None

    return wait_until(
        probe, timeout=20, what=f"{floor} events queued in the outbox", detail=gateway.tail
    )


def _received_events(site: Site) -> list[dict[str, Any]]:
    return [json.loads(line) for line in site.received.read_bytes().splitlines()]


# ----- 5. resync: from HQ's log after a gap, by snapshot after a long outage -----


def _offers(ids: range) -> list[dict[str, Any]]:
    return [
        {"type": "offer", "offer_id": f"offer-{i:04d}", "title": f"Offer {i}", "price": 1.5}
        for i in ids
    ]


def _profiles(ids: range, mark: str) -> list[dict[str, Any]]:
    return [
        {"type": "profile", "shopper_id": f"p-{i:04d}", "first_name": "P", "segments": [mark]}
        for i in ids
    ]


def _wait_applied(gateway: GatewayProcess, stream: str, result: str, count: int) -> None:
    wait_until(
        lambda: (
            gateway.metric("moments_sync_messages_total", {"stream": stream, "result": result})
            >= count
        ),
        timeout=20,
        what=f"{count} {stream} messages {result}",
        interval=0.05,
        detail=gateway.tail,
    )


@pytest.mark.timeout(60)
def test_a_gap_makes_the_store_resync_from_hqs_log(site: Site) -> None:
    """Seqs 2..4 are logged at HQ but never sent; seq 5 shows the store the gap; HQ answers
    the resync from its log and the store ends with every offer, its stream running at 5."""
    serve = site.start_serve()
    desk = site.open_desk()
    gateway = site.gateway
    gateway.start()
    gateway.wait_hq_up()
    desk.publish("offers", _offers(range(10)))  # seq 1
    _wait_applied(gateway, "offers", "applied", 1)
    # HQ's stamp against the store's clock: the same machine here, so well under a minute.
    offers = {"stream": "offers"}
    assert gateway.has_metric("moments_sync_lag_seconds", offers)
    assert 0.0 <= gateway.metric("moments_sync_lag_seconds", offers) < 60.0
    # HQ logged seqs 2..4 but its publisher died before sending them (lost in transit).
    lost = desk.issue_unsent("offers", _offers(range(10, 160)))
    assert (lost.first_seq, lost.last_seq) == (2, 4)
    desk.publish("offers", _offers(range(160, 170)))  # seq 5: the store sees the gap
    _wait_applied(gateway, "offers", "applied", 5)
    _wait_quiet(site, quiet_s=0.5)
    assert gateway.stop() == 0
    view = read_store(gateway.store_path)
    assert view.offers == {f"offer-{i:04d}" for i in range(170)}
    state = view.sync["offers"]
    assert (state.last, state.stopped) == (5, False)
    answers = serve.resync_answers()
    print(f"\n[gap] resync_answers={[(a['since'], a['answer'], a['messages']) for a in answers]}")
    assert [(a["stream"], a["since"], a["answer"]) for a in answers][:1] == [
        ("offers", 1, "replay")
    ]
    assert all(a["answer"] != "snapshot" for a in answers)


@pytest.mark.timeout(60)
def test_an_outage_longer_than_hqs_log_is_answered_with_a_snapshot(site: Site) -> None:
    """While the store is away (its session on HQ's broker expired) HQ sends 12 messages and
    keeps only its last 5; the next message shows the store a gap that HQ's log cannot fill,
    so HQ answers with a snapshot and the store ends with exactly HQ's records."""
    keep = 5
    serve = site.start_serve(keep=keep)
    desk = site.open_desk(keep=keep)
    gateway = site.gateway
    # The HQ broker forgets the store one second after it leaves: what HQ sends meanwhile is
    # lost, as after an outage longer than the store's session expiry.
    gateway.env["MOMENTS_HQ__SESSION_EXPIRY_S"] = "1"
    gateway.start()
    gateway.wait_hq_up()
    desk.publish("profiles", _profiles(range(100), "v0"))  # seqs 1-2
    _wait_applied(gateway, "profiles", "applied", 2)
    assert gateway.stop() == 0
    time.sleep(2.5)  # the store's session on HQ's broker expires

    for round_ in range(1, 7):  # 12 messages the store never receives
        desk.publish("profiles", _profiles(range(round_ * 10, round_ * 10 + 40), f"v{round_}"))
        desk.publish("profiles", [{"id": f"p-{round_ * 7:04d}"}], op="delete")
    kept = desk.ledger.kept(STORE, "profiles")
    assert kept[0] > 3, f"HQ still logs what the store missed: {kept}"

    gateway.start()
    gateway.wait_hq_up()
    desk.publish("profiles", _profiles(range(95, 105), "v7"))  # the store sees a gap
    _wait_applied(gateway, "profiles", "snapshot_applied", 1)
    _wait_quiet(site, quiet_s=0.5)
    assert gateway.stop() == 0
    view = read_store(gateway.store_path)
    hq = {r["shopper_id"]: r["segments"] for r in desk.ledger.records(STORE, "profiles")}
    assert {k: v.segments for k, v in view.profiles.items()} == hq
    assert view.sync["profiles"].last == desk.ledger.last_seq(STORE, "profiles")
    assert not view.sync["profiles"].stopped
    answers = serve.resync_answers()
    print(
        f"\n[long outage] hq_log_kept={kept} records={len(hq)} "
        f"resync_answers={[(a['since'], a['answer'], a['messages']) for a in answers]}"
    )
    assert [(a["stream"], a["since"], a["answer"]) for a in answers][:1] == [
        ("profiles", 2, "snapshot")
    ]


class WentBack(AssertionError):
    """The store took a stream back to an older state."""


@pytest.mark.timeout(60)
def test_a_late_resync_answer_never_takes_the_stream_back(site: Site) -> None:
    """Two resync requests wait at a stalled HQ while two snapshots (c1, c2) arrive and apply;
    the late answer to the first one replays c1 after the stream reached c2's end: it must be
    taken for a duplicate, not applied again."""
    serve = site.start_serve()
    desk = site.open_desk()
    gateway = site.gateway
    gateway.start()
    gateway.wait_hq_up()

    def count(result: str) -> float:
        return gateway.metric(
            "moments_sync_messages_total", {"stream": "profiles", "result": result}
        )

    def lose_one_then_send_one() -> None:
        """A delta HQ logged but never sent, then one it sent: the store sees a gap."""
        desk.issue_unsent("profiles", _profiles(range(1), "lost"))
        desk.publish("profiles", _profiles(range(1), "sent"))

    desk.publish("profiles", _profiles(range(120), "a"), snapshot=True)
    _wait_applied(gateway, "profiles", "snapshot_applied", 1)
    serve.pause()  # HQ answers resync requests late
    lose_one_then_send_one()  # gap 1: the store asks for a resync since snapshot a's end
    _wait_applied(gateway, "profiles", "gap", 1)
    desk.publish("profiles", _profiles(range(120), "c1"), snapshot=True)
    c2 = desk.publish("profiles", _profiles(range(120), "c2"), snapshot=True)
    _wait_applied(gateway, "profiles", "snapshot_applied", 3)
    reached = c2.stores[STORE][1]  # the stream is at snapshot c2's end
    lose_one_then_send_one()  # gap 2: stopped at c2's end, a second resync request
    _wait_applied(gateway, "profiles", "gap", 2)
    serve.resume()  # answers both requests, the first one with everything since a's end
    wait_until(lambda: len(serve.resync_answers()) >= 2, timeout=20, what="two resync answers")
    _wait_quiet(site, quiet_s=0.5)
    applied = count("snapshot_applied")
    answers = [(a["since"], a["answer"], a["messages"]) for a in serve.resync_answers()]
    assert gateway.stop() == 0
    view = read_store(gateway.store_path)
    print(
        f"\n[late resync answer] stream_at={reached} snapshots_applied={applied:.0f} "
        f"resync_answers={answers} end={view.sync['profiles'].last}"
    )
    assert view.sync["profiles"].last == desk.ledger.last_seq(STORE, "profiles")
    asked_from_behind = [since for since, _kind, _n in answers[1:] if since < reached]
    if applied != 3 or asked_from_behind:
        raise WentBack(
            f"after reaching {reached} the store applied {applied - 3:.0f} snapshot(s) again "
            f"and asked to resync from {asked_from_behind}"
        )
