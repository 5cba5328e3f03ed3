"""Tests of the simulated store in motion: a run is a function of its scenario and seed, what
the nodes send is what the gateway accepts, the ground truth is consistent with the paths,
phones without the app stay anonymous, and shelves, tills and doors behave as a store does.

Every scenario here is small (a handful of shoppers, a few simulated minutes)."""

from __future__ import annotations

import copy
import hashlib
import itertools
import math
from collections import defaultdict
from typing import Any

import pytest

from beacons import decode_advertisement
from firmware_sim.floorplan import Scenario, parse_scenario
from firmware_sim.world import (
    AppSightings,
    DoorCount,
    HelpTap,
    NodeBatchOut,
    NodeTelemetry,
    Output,
    RedemptionOut,
    StockReport,
    World,
)
from gateway.nodes import NodeLimits, encode_batch, parse_batch
from gateway.store import ConsentRecord, EidKeyRecord, OfferRecord, ProfileRecord, Purpose

EPOCH = 1_780_000_000.0
STEP_S = 0.1  # the world's internal step

# Two 10 m x 10 m zones: "aisle" (browsed, with a shelf and a store beacon) and "front"
# (door and till, never browsed). A node in each.
SMALL: dict[str, Any] = {
    "name": "small",
    "seed": 11,
    "duration_s": 300,
    "radio": {"shadowing_db": 3.0, "base_loss": 0.05},
    "zones": [
        {"id": "aisle", "polygon": [[0, 0], [10, 0], [10, 10], [0, 10]], "dwell_s": 20},
        {"id": "front", "polygon": [[10, 0], [20, 0], [20, 10], [10, 10]], "weight": 0},
    ],
    "nodes": [{"id": "n-aisle", "at": [5, 5]}, {"id": "n-front", "at": [15, 5]}],
    "beacons": [{"id": "b-aisle", "at": [5, 9], "address": "AA:BB:CC:00:00:01"}],
    "shelves": [
        {
            "id": "shelf-1",
            "at": [2, 5],
            "items": [{"sku": "sku-a", "qty": 50}, {"sku": "sku-b", "qty": 50}],
            "pick_share": 0.5,
            "heartbeat_s": 60,
        }
    ],
    "doors": [{"id": "door", "at": [11, 1], "report_s": 5}],
    "lanes": [{"id": "lane-1", "at": [18, 5], "service_s": 10}],
    "population": {
        "shoppers": 8,
        "arrive_within_s": 40,
        "zones_per_visit": [1, 1],
        "stops_per_zone": [1, 2],
        "pay_share": 1.0,
        "phones": {"android_app": 0.4, "iphone_app": 0.3, "no_app": 0.3},
        "consents": {"everything": 0.5, "presence_only": 0.25, "nothing": 0.25},
        "segments": {"coffee-lover": 0.5},
        "help_share": 0.5,
    },
    "offers": [
        {"offer_id": "o1", "title": "One"},
        {"offer_id": "o2", "title": "Two"},
        {"offer_id": "card", "title": "A content card", "generic": True},
    ],
}


def small(**population: Any) -> Scenario:
    raw = copy.deepcopy(SMALL)
    raw["population"].update(population)
    return parse_scenario(raw, source="small")


def run(scenario: Scenario, until: float, *, chunk: float = 30.0) -> tuple[World, list[Output]]:
    world = World(scenario, start_epoch=EPOCH)
    out: list[Output] = []
    t = 0.0
    while t < until:
        t = min(until, t + chunk)
        out.extend(world.step(t))
    return world, out


def digest(outputs: list[Output]) -> str:
    return hashlib.sha256(repr(outputs).encode()).hexdigest()


@pytest.fixture(scope="module")
def base_run() -> tuple[World, list[Output]]:
    return run(small(), 240.0)


# ----- determinism and order -----


def test_same_seed_same_outputs() -> None:
    _, first = run(small(), 120.0)
    _, second = run(small(), 120.0)
    assert first, "a run with shoppers sends something"
    assert digest(first) == digest(second)
    _, other = run(small().with_changes(seed=12), 120.0)
    assert digest(other) != digest(first)


@pytest.mark.parametrize("chunk", [1.0, 7.0, 120.0])
def test_outputs_do_not_depend_on_how_time_is_stepped(chunk: float) -> None:
    _, reference = run(small(), 120.0, chunk=30.0)
    _, out = run(small(), 120.0, chunk=chunk)
    assert digest(out) == digest(reference)


def test_outputs_are_in_time_order_across_steps(base_run: tuple[World, list[Output]]) -> None:
    _, out = base_run
    times = [o.t for o in out]
    assert times == sorted(times)
    assert times[0] >= 0.0 and times[-1] < 240.0
    kinds = {type(o) for o in out}
    assert {NodeBatchOut, AppSightings, StockReport, DoorCount, RedemptionOut} <= kinds
    assert NodeTelemetry in kinds and HelpTap in kinds


# ----- node batches -----


def test_node_batches_are_what_the_gateway_accepts(base_run: tuple[World, list[Output]]) -> None:
    world, out = base_run
    batches = [o for o in out if isinstance(o, NodeBatchOut)]
    assert batches
    nodes = {n.id for n in world.scenario.nodes}
    last_seq: dict[str, int] = {}
    for b in batches:
        assert b.node in nodes
        assert 1 <= len(b.adverts) <= 256
        assert b.seq > last_seq.get(b.node, 0)
        last_seq[b.node] = b.seq
        payload = encode_batch(b.node, b.seq, world.epoch(b.t), list(b.adverts))
        parsed = parse_batch(b.node, payload, NodeLimits())
        assert parsed.node == b.node and parsed.seq == b.seq
        assert parsed.ts == pytest.approx(world.epoch(b.t))
        assert parsed.adverts == b.adverts
        for a in b.adverts:
            assert a.age_ms >= 0
            assert -127 <= a.rssi <= 20


def test_a_crowded_node_splits_its_batches_at_256() -> None:
    raw = copy.deepcopy(SMALL)
    for node in raw["nodes"]:
        node["batch_s"] = 5.0  # a slow flush: far more than 256 adverts heard in between
    raw["population"].update(shoppers=30, arrive_within_s=1, adv_interval_ms=20)
    world = World(parse_scenario(raw), start_epoch=EPOCH)
    batches = [o for o in world.step(30.0) if isinstance(o, NodeBatchOut)]
    assert max(len(b.adverts) for b in batches) == 256
    assert all(1 <= len(b.adverts) <= 256 for b in batches)
    for b in batches:
        parsed = parse_batch(
            b.node, encode_batch(b.node, b.seq, EPOCH, list(b.adverts)), NodeLimits()
        )
        assert parsed.adverts == b.adverts
    # The pieces of one flush carry consecutive sequence numbers.
    seqs = defaultdict(list)
    for b in batches:
        seqs[b.node].append(b.seq)
    assert all(v == list(range(1, len(v) + 1)) for v in seqs.values())


def test_app_sightings_come_from_tracked_iphones(base_run: tuple[World, list[Output]]) -> None:
    world, out = base_run
    reports = [o for o in out if isinstance(o, AppSightings)]
    assert reports
    beacons = {b.id for b in world.scenario.beacons}
    for r in reports:
        shopper = world.shopper(r.shopper_id)
        assert shopper is not None and shopper.tracked and shopper.phone == "iphone_app"
        for beacon, rssi, heard in r.sightings:
            assert beacon in beacons
            assert -127 <= rssi <= 20
            assert shopper.arrive <= heard <= r.t


# ----- ground truth -----


def test_truth_is_consistent_with_the_paths(base_run: tuple[World, list[Output]]) -> None:
    world, _ = base_run
    until = world.now
    truth = world.truth()
    assert truth
    tracked = {s.shopper_id for s in world.shoppers if s.tracked and s.arrive < until}
    assert {stay.shopper for stay in truth} == tracked
    by_shopper: dict[str, list[Any]] = defaultdict(list)
    for stay in truth:
        by_shopper[stay.shopper].append(stay)
    for shopper_id, its in by_shopper.items():
        shopper = world.shopper(shopper_id)
        assert shopper is not None
        for stay in its:
            end = until if stay.end is None else stay.end
            assert stay.start < end
            assert shopper.arrive <= stay.start and end <= min(until, shopper.leave) + 1e-9
            mid = shopper.position((stay.start + end) / 2.0)
            assert mid is not None
            assert world.scenario.zone_at(mid) == stay.zone
        for before, after in itertools.pairwise(its):
            assert before.end is not None
            assert before.end <= after.start + 1e-9  # in order, never overlapping
            assert before.zone != after.zone or before.end < after.start
        assert all(stay.end is not None for stay in its[:-1])


def test_truth_up_to_a_time_ends_open_stays() -> None:
    world = World(small(), start_epoch=EPOCH)
    some = [s for s in world.shoppers if s.tracked]
    assert some
    shopper = some[0]
    mid = (shopper.arrive + shopper.leave) / 2.0
    stays = [s for s in world.truth(until=mid) if s.shopper == shopper.shopper_id]
    assert stays[-1].end is None
    assert all(s.end is not None and s.end <= mid for s in stays[:-1])


def test_only_tracked_shoppers_appear_in_the_truth() -> None:
    world = World(small(shoppers=30), start_epoch=EPOCH)
    kinds = {(s.phone, s.consent) for s in world.shoppers}
    assert any(not s.tracked for s in world.shoppers)
    assert len(kinds) > 3
    ids = {stay.shopper for stay in world.truth(until=10_000.0)}
    assert ids == {s.shopper_id for s in world.shoppers if s.tracked}


# ----- records -----


def test_records_follow_phones_and_consents() -> None:
    world = World(small(shoppers=80), start_epoch=EPOCH)
    records = world.records()
    profiles = {r.shopper_id: r for r in records if isinstance(r, ProfileRecord)}
    consents = {r.shopper_id: r for r in records if isinstance(r, ConsentRecord)}
    keys = {r.shopper_id: r for r in records if isinstance(r, EidKeyRecord)}
    offers = [r for r in records if isinstance(r, OfferRecord)]
    assert [o.offer_id for o in offers] == ["o1", "o2", "card"]
    seen: set[tuple[str, str]] = set()
    for s in world.shoppers:
        sid = s.shopper_id
        seen.add((s.phone, s.consent))
        if s.phone == "no_app":
            assert sid not in profiles and sid not in consents and sid not in keys
            continue
        assert profiles[sid].first_name == s.name
        assert profiles[sid].segments == s.segments
        assert profiles[sid].greet_on_kiosk is (s.consent == "everything")
        if s.phone == "android_app":
            assert keys[sid].identity_key == s.eid_key and len(s.eid_key) == 16
            assert keys[sid].registered_at < EPOCH
        else:
            assert sid not in keys
        granted = {p for p, state in consents[sid].purposes.items() if state.granted}
        assert set(consents[sid].purposes) == {p.value for p in Purpose}
        expected = {
            "everything": {p.value for p in Purpose},
            "presence_only": {Purpose.PRESENCE.value, Purpose.ANALYTICS.value},
            "nothing": set(),
        }[s.consent]
        assert granted == expected
        assert all(state.at < EPOCH for state in consents[sid].purposes.values())
    assert {p for p, _ in seen} == {"android_app", "iphone_app", "no_app"}
    assert {c for _, c in seen} == {"everything", "presence_only", "nothing"}


# ----- privacy -----


def test_phones_without_the_app_stay_anonymous_and_rotate() -> None:
    rotation = 30.0
    raw = copy.deepcopy(SMALL)
    raw["beacons"] = []
    raw["population"].update(
        shoppers=6,
        arrive_within_s=5,
        phones={"android_app": 0.0, "iphone_app": 0.0, "no_app": 1.0},
        address_rotation_s=rotation,
    )
    raw["zones"][0]["dwell_s"] = 200
    world, out = run(parse_scenario(raw), 150.0)
    windows_of: dict[str, set[int]] = defaultdict(set)
    per_window: dict[int, set[str]] = defaultdict(set)
    adverts = 0
    for b in out:
        if not isinstance(b, NodeBatchOut):
            continue
        for a in b.adverts:
            adverts += 1
            assert decode_advertisement(a.data) is None
            sent = b.t - a.age_ms / 1000.0
            if abs(sent / rotation - round(sent / rotation)) * rotation < 0.01:
                continue  # too close to a rotation to tell which side it was sent on
            window = math.floor(sent / rotation)
            windows_of[a.addr].add(window)
            per_window[window].add(a.addr)
    assert adverts > 100
    assert all(len(w) == 1 for w in windows_of.values()), "an address outlived its window"
    assert all(len(addrs) <= 6 for addrs in per_window.values())
    assert len(windows_of) > 6  # the same phones, new addresses
    assert not any(isinstance(o, AppSightings | HelpTap) for o in out)
    assert world.truth() == []


# ----- shelves -----


def one_item_shelf(restock_after_s: float) -> Scenario:
    raw = copy.deepcopy(SMALL)
    raw["shelves"] = [
        {
            "id": "shelf-1",
            "at": [2, 5],
            "items": [{"sku": "sku-last", "qty": 1}],
            "pick_share": 1.0,
            "restock_after_s": restock_after_s,
            "heartbeat_s": 15,
        }
    ]
    raw["population"].update(shoppers=10, arrive_within_s=120)
    return parse_scenario(raw)


def test_stock_never_negative_and_restocked_after_the_delay() -> None:
    restock_after = 30.0
    _, out = run(one_item_shelf(restock_after), 300.0)
    reports = [o for o in out if isinstance(o, StockReport)]
    assert reports[0].t == 0.0 and reports[0].items == (("sku-last", 1),)
    level: list[tuple[float, int]] = []
    for r in reports:
        assert r.shelf == "shelf-1"
        for sku, qty in r.items:
            assert sku == "sku-last"
            assert qty >= 0
            level.append((r.t, qty))
    emptied = [
        t for (t, q), (_, prev) in zip(level[1:], level, strict=False) if q == 0 and prev == 1
    ]
    assert emptied, "someone took the last item"
    for t in emptied:
        refill = [t2 for t2, q in level if q == 1 and t2 > t]
        assert refill, "restocked"
        assert refill[0] == pytest.approx(t + restock_after, abs=1e-6)
        # Empty in between (heartbeats say so too).
        assert all(q == 0 for t2, q in level if t < t2 < refill[0])


def test_pick_reports_are_decrements(base_run: tuple[World, list[Output]]) -> None:
    _, out = base_run
    stock = {"sku-a": 50, "sku-b": 50}
    for r in (o for o in out if isinstance(o, StockReport)):
        if len(r.items) == 1:  # a pick (or a restock) reports the one SKU that changed
            ((sku, qty),) = r.items
            assert qty == stock[sku] - 1
            stock[sku] = qty
        else:  # a heartbeat: the whole shelf
            assert dict(r.items) == stock
    assert sum(stock.values()) < 100


# ----- tills -----


def test_baseline_one_redeems_every_offer_for_every_payer() -> None:
    world, out = run(small(redeem_baseline=1.0, redeem_shown=0.0), 300.0)
    payers = [s for s in world.shoppers if s.pay_at is not None and s.pay_at < 300.0]
    assert len(payers) >= 4
    redemptions = [o for o in out if isinstance(o, RedemptionOut)]
    assert len({r.receipt for r in redemptions}) == len(redemptions)
    by_time: dict[float, list[RedemptionOut]] = defaultdict(list)
    for r in redemptions:
        by_time[r.t].append(r)
    assert sorted(by_time) == sorted(s.pay_at for s in payers if s.pay_at is not None)
    for s in payers:
        assert s.pay_at is not None
        its = by_time[s.pay_at]
        assert sorted(r.offer_id for r in its) == ["o1", "o2"]  # the generic card is not sold
        assert all(r.lane == s.lane == "lane-1" for r in its)
        card = s.shopper_id if s.tracked else None
        assert all(r.shopper_id == card for r in its)


def test_only_shown_offers_are_redeemed_when_the_baseline_is_zero() -> None:
    world = World(small(redeem_baseline=0.0, redeem_shown=1.0, shoppers=12), start_epoch=EPOCH)
    tracked = [s for s in world.shoppers if s.tracked and s.pay_at is not None]
    untracked = [s for s in world.shoppers if not s.tracked and s.pay_at is not None]
    assert tracked and untracked
    shown = {(s.shopper_id, "o1") for s in tracked[::2]} | {(tracked[1].shopper_id, "o2")}
    for shopper_id, offer_id in shown:
        world.shown(shopper_id, offer_id)
    for s in untracked:  # shown to someone the till cannot tie to a card: no effect
        world.shown(s.shopper_id, "o1")
    out = world.step(400.0)
    redeemed = {(r.shopper_id, r.offer_id) for r in out if isinstance(r, RedemptionOut)}
    assert redeemed == shown


# ----- doors -----


def test_door_counts_are_cumulative(base_run: tuple[World, list[Output]]) -> None:
    world, out = base_run
    counts = [o for o in out if isinstance(o, DoorCount)]
    assert len(counts) >= 40
    arrivals = sorted(s.arrive for s in world.shoppers)
    departures = sorted(s.leave for s in world.shoppers)
    previous = (0, 0)
    for c in counts:
        assert c.door == "door"
        assert c.entered >= previous[0] and c.left >= previous[1]
        assert c.entered >= c.left
        # A count stamped at t includes everyone through the door up to the end of that step.
        assert (
            sum(a < c.t for a in arrivals) <= c.entered <= sum(a < c.t + STEP_S for a in arrivals)
        )
        assert (
            sum(d < c.t for d in departures) <= c.left <= sum(d < c.t + STEP_S for d in departures)
        )
        previous = (c.entered, c.left)
    assert previous[0] == len(world.shoppers)
