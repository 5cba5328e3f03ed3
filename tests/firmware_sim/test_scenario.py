"""Tests of the simulated store: the payloads it puts on the air decode to the frames they
claim, the scripted path goes where the scenario says, the node batches are ones the gateway
accepts, and everything is deterministic for a seed."""

from __future__ import annotations

import itertools
import math
import random
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beacons import EddystoneEID, EddystoneUID, IBeacon, decode_advertisement, parse_advertisement
from beacons.eid import eid_for_time
from firmware_sim.adverts import eddystone_uid, ibeacon, phone_noise
from firmware_sim.radio import Radio
from firmware_sim.runner import BATCH_S, ScriptedStore
from firmware_sim.scenario import (
    APP_UUID,
    CHLOE_EID_KEY,
    DEVICES,
    EID_EXPONENT,
    FIXED_BEACONS,
    NODES,
    ROUND_S,
    SHOPPERS,
    Device,
    demo_records,
    position,
)
from gateway.nodes import NodeBatch, NodeLimits, parse_batch
from gateway.store import IdentityRecord

PROPERTY = settings(database=None, deadline=None, print_blob=True, max_examples=200)

ALICE, BOB, CHLOE, STRANGER = SHOPPERS
PREFIX = "moments/v1"
STORE = "store-1"
# Alice's walk: in by the entrance (2 s to 6 s), lingering at the coffee kiosk (10 s to 22 s).
DWELL = [10.0 + 0.5 * i for i in range(25)]
BROWSE = [2.0 + 0.5 * i for i in range(9)]


def sim_times(rounds: float = 1.0) -> list[float]:
    return [i * BATCH_S for i in range(int(rounds * ROUND_S / BATCH_S))]


def nearest_node(where: tuple[float, float]) -> str:
    return min(NODES, key=lambda node: math.dist(where, NODES[node]))


# --- advertisement payloads --------------------------------------------------------


@PROPERTY
@given(
    proximity=st.uuids(),
    major=st.integers(0, 0xFFFF),
    minor=st.integers(0, 0xFFFF),
    tx_power=st.integers(-128, 127),
)
def test_ibeacon_payload_decodes(
    proximity: uuid.UUID, major: int, minor: int, tx_power: int
) -> None:
    frame = decode_advertisement(ibeacon(str(proximity), major, minor, tx_power))

    assert frame == IBeacon(str(proximity), major, minor, tx_power)


def test_ibeacon_default_measured_power() -> None:
    frame = decode_advertisement(ibeacon(APP_UUID, 100, 1))

    assert frame == IBeacon(APP_UUID, 100, 1, -59)


@PROPERTY
@given(
    namespace=st.binary(min_size=10, max_size=10),
    instance=st.binary(min_size=6, max_size=6),
    tx_power=st.integers(-128, 127),
)
def test_eddystone_uid_payload_decodes(namespace: bytes, instance: bytes, tx_power: int) -> None:
    frame = decode_advertisement(eddystone_uid(namespace, instance, tx_power))

    assert frame == EddystoneUID(namespace.hex(), instance.hex(), tx_power)


@pytest.mark.parametrize(("namespace", "instance"), [(b"\0" * 9, b"\0" * 6), (b"\0" * 10, b"")])
def test_eddystone_uid_refuses_wrong_lengths(namespace: bytes, instance: bytes) -> None:
    with pytest.raises(ValueError, match="10-byte namespace"):
        eddystone_uid(namespace, instance)


@PROPERTY
@given(st.binary(max_size=16))
def test_phone_noise_is_well_formed_and_carries_no_beacon(token: bytes) -> None:
    payload = phone_noise(token)

    fields = parse_advertisement(payload)  # well-formed AD structures
    assert fields.manufacturer_data
    assert decode_advertisement(payload) is None


def test_every_payload_fits_one_legacy_advertisement() -> None:
    payloads = [
        ibeacon(APP_UUID, 0xFFFF, 0xFFFF),
        eddystone_uid(b"\xff" * 10, b"\xff" * 6),
        phone_noise(b"\xff" * 16),
    ]

    assert all(len(p) <= 31 for p in payloads)


# --- the scenario --------------------------------------------------------------------


def test_shoppers_decode_to_the_identities_the_store_knows() -> None:
    known = {r.key: r.shopper_id for r in demo_records(0.0) if isinstance(r, IdentityRecord)}

    for device, shopper in [(ALICE, "shopper-alice"), (BOB, "shopper-bob")]:
        frame = decode_advertisement(device.payload)
        assert isinstance(frame, IBeacon)
        assert frame.uuid == APP_UUID
        assert known[f"ibeacon:{frame.uuid}:{frame.major}:{frame.minor}"] == shopper
    assert decode_advertisement(STRANGER.payload) is None


@pytest.mark.parametrize("t", DWELL)
def test_alice_is_nearest_the_coffee_node_during_her_dwell(t: float) -> None:
    where = position(ALICE, t)

    assert where is not None
    assert nearest_node(where) == "node-coffee"
    assert math.dist(where, NODES["node-coffee"]) < 2.0


@pytest.mark.parametrize("t", BROWSE)
def test_alice_is_nearest_the_entrance_while_browsing(t: float) -> None:
    where = position(ALICE, t)

    assert where is not None
    assert nearest_node(where) == "node-entrance"


def test_bob_walks_the_same_path_half_a_round_later() -> None:
    for t in [0.0, 2.5, 10.0, 17.3, 29.0]:
        assert position(BOB, t + 30.0) == position(ALICE, t)


def test_chloe_walks_the_same_path_after_bob_advertising_a_rotating_eid() -> None:
    for t in [0.0, 2.5, 10.0, 17.3, 29.0]:
        assert position(CHLOE, t + 60.0) == position(ALICE, t)
    t0 = 1_700_000_000.0 - 1_700_000_000.0 % 1024  # the start of a rotation period
    first = decode_advertisement(CHLOE.payload_at(t0))
    assert isinstance(first, EddystoneEID)
    assert first.eid == eid_for_time(CHLOE_EID_KEY, EID_EXPONENT, t0).hex()
    assert CHLOE.payload_at(t0 + 1023) == CHLOE.payload_at(t0)
    assert CHLOE.payload_at(t0 + 1024) != CHLOE.payload_at(t0)


def test_shoppers_are_absent_outside_their_walk() -> None:
    assert position(ALICE, -0.1) is None
    assert position(ALICE, 29.1) is None
    assert position(ALICE, 45.0) is None
    assert position(BOB, 10.0) is None
    assert position(BOB, 59.9) is None


def test_the_path_is_continuous() -> None:
    points = [p for p in (position(ALICE, i * 0.01) for i in range(2901)) if p is not None]

    assert len(points) == 2901
    assert max(math.dist(a, b) for a, b in itertools.pairwise(points)) < 0.2


def test_a_fixed_device_stays_put() -> None:
    device = Device("still", b"", start_s=0.0, fixed=(1.0, 2.0))

    assert {position(device, t) for t in (0.0, 17.0, 59.0, 1e6)} == {(1.0, 2.0)}
    assert position(STRANGER, 33.3) == STRANGER.fixed


# --- node batches ----------------------------------------------------------------------


def collect(seed: int, rounds: float = 1.0, speed: float = 1.0) -> list[tuple[str, bytes]]:
    store = ScriptedStore(store_id=STORE, prefix=PREFIX, seed=seed)
    out: list[tuple[str, bytes]] = []
    for i, t in enumerate(sim_times(rounds)):
        out += store.batches(t, 1_700_000_000.0 + i, speed)
    return out


def parse_all(messages: list[tuple[str, bytes]]) -> list[NodeBatch]:
    batches = []
    for topic, payload in messages:
        prefix, store, nodes, node, leaf = topic.rsplit("/", 4)
        assert (prefix, store, nodes, leaf) == (PREFIX, STORE, "nodes", "adv")
        assert node in NODES
        batches.append(parse_batch(node, payload, NodeLimits()))
    return batches


def test_batches_are_accepted_by_the_gateway() -> None:
    messages = collect(seed=7)
    batches = parse_all(messages)
    payloads = {device.payload for device in DEVICES} | {d.telemetry for d in FIXED_BEACONS}
    payloads |= {CHLOE.payload_at(1_700_000_000.0 + i) for i in range(len(sim_times()))}
    store_addresses = {device.address for device in FIXED_BEACONS}

    assert len(batches) > 100
    for batch in batches:
        assert batch.adverts
        for advert in batch.adverts:
            assert advert.data in payloads
            assert -127 <= advert.rssi <= 20
            assert 0 <= advert.age_ms < BATCH_S * 1000
            # Only the store's own beacons carry an address; phones' are never invented.
            if advert.data in payloads - {d.payload for d in FIXED_BEACONS} - {
                d.telemetry for d in FIXED_BEACONS
            }:
                assert advert.addr == ""
            else:
                assert advert.addr in store_addresses


def test_sequence_numbers_grow_and_timestamps_are_the_wall_clock() -> None:
    store = ScriptedStore(store_id=STORE, prefix=PREFIX, seed=7)
    seqs = []
    for i, t in enumerate(sim_times(0.25)):
        for topic, payload in store.batches(t, 1000.0 + i, 1.0):
            batch = parse_batch(topic.split("/")[-2], payload, NodeLimits())
            assert batch.ts == 1000.0 + i
            seqs.append(batch.seq)

    assert seqs == list(range(1, len(seqs) + 1))


def test_ages_shrink_with_speed() -> None:
    slow = [a.age_ms for b in parse_all(collect(seed=3, rounds=0.2)) for a in b.adverts]
    fast = [a.age_ms for b in parse_all(collect(seed=3, rounds=0.2, speed=4.0)) for a in b.adverts]

    assert max(slow) > 0
    assert max(fast) * 4 == pytest.approx(max(slow), abs=4)


def test_batches_are_deterministic_for_a_seed() -> None:
    assert collect(seed=11, rounds=0.5) == collect(seed=11, rounds=0.5)
    assert collect(seed=11, rounds=0.5) != collect(seed=12, rounds=0.5)


@pytest.mark.parametrize("seed", [1, 7, 42])
def test_coffee_node_hears_alice_loudest_during_her_dwell(seed: int) -> None:
    store = ScriptedStore(store_id=STORE, prefix=PREFIX, seed=seed)
    heard: dict[str, list[int]] = {node: [] for node in NODES}
    for t in DWELL:
        for topic, payload in store.batches(t, 0.0, 1.0):
            node = topic.split("/")[-2]
            batch = parse_batch(node, payload, NodeLimits())
            heard[node] += [a.rssi for a in batch.adverts if a.data == ALICE.payload]

    assert heard["node-coffee"]
    coffee = sum(heard["node-coffee"]) / len(heard["node-coffee"])
    entrance = sum(heard["node-entrance"]) / max(1, len(heard["node-entrance"]))
    assert coffee > entrance + 10
    assert coffee > -80  # a shopper at the kiosk is clearly "in" the coffee zone


def test_nobody_but_the_stranger_and_fixed_beacons_is_heard_after_the_walks() -> None:
    store = ScriptedStore(store_id=STORE, prefix=PREFIX, seed=5)
    payloads = set()
    for t in [89.5, ROUND_S + 89.5]:  # after Chloe, the last, has left, in two rounds
        for topic, payload in store.batches(t, 0.0, 1.0):
            batch = parse_batch(topic.split("/")[-2], payload, NodeLimits())
            payloads |= {a.data for a in batch.adverts}

    fixed = {d.payload for d in FIXED_BEACONS} | {d.telemetry for d in FIXED_BEACONS}
    assert payloads <= {STRANGER.payload} | fixed
    assert STRANGER.payload in payloads


# --- the radio -----------------------------------------------------------------------


def test_radio_loses_every_packet_at_full_loss() -> None:
    radio = Radio(random.Random(1), loss=1.0)

    assert all(radio.rssi((0.0, 0.0), (1.0, 0.0)) is None for _ in range(100))


def test_radio_follows_log_distance_path_loss_without_shadowing() -> None:
    radio = Radio(random.Random(1), loss=0.0, shadowing_db=0.0, tx_at_1m_dbm=-59.0, exponent=2.0)

    assert radio.rssi((0.0, 0.0), (1.0, 0.0)) == -59
    assert radio.rssi((0.0, 0.0), (10.0, 0.0)) == -79
    assert radio.rssi((0.0, 0.0), (0.0, 0.0)) == radio.rssi((0.0, 0.0), (0.5, 0.0))


def test_radio_misses_what_is_below_its_sensitivity() -> None:
    radio = Radio(random.Random(1), loss=0.0, shadowing_db=0.0, sensitivity_dbm=-80.0)

    assert radio.rssi((0.0, 0.0), (1.0, 0.0)) == -59
    assert radio.rssi((0.0, 0.0), (500.0, 0.0)) is None


@pytest.mark.parametrize(("tx", "expected"), [(100.0, 20), (-300.0, -127)])
def test_radio_clamps_to_the_rssi_range(tx: float, expected: int) -> None:
    radio = Radio(
        random.Random(1), tx_at_1m_dbm=tx, loss=0.0, shadowing_db=0.0, sensitivity_dbm=-1000.0
    )

    assert radio.rssi((0.0, 0.0), (1.0, 0.0)) == expected


_coord = st.floats(min_value=-1e4, max_value=1e4, allow_nan=False)


@PROPERTY
@given(
    seed=st.integers(0, 2**32),
    a=st.tuples(_coord, _coord),
    b=st.tuples(_coord, _coord),
    tx=st.floats(min_value=-200.0, max_value=200.0),
    shadowing=st.floats(min_value=0.0, max_value=30.0),
    loss=st.floats(min_value=0.0, max_value=1.0),
)
def test_radio_returns_none_or_a_bounded_int(
    seed: int,
    a: tuple[float, float],
    b: tuple[float, float],
    tx: float,
    shadowing: float,
    loss: float,
) -> None:
    radio = Radio(
        random.Random(seed),
        tx_at_1m_dbm=tx,
        shadowing_db=shadowing,
        loss=loss,
        sensitivity_dbm=-140.0,
    )
    again = Radio(
        random.Random(seed),
        tx_at_1m_dbm=tx,
        shadowing_db=shadowing,
        loss=loss,
        sensitivity_dbm=-140.0,
    )

    values = [radio.rssi(a, b) for _ in range(5)]

    for value in values:
        assert value is None or (type(value) is int and -127 <= value <= 20)
    assert values == [again.rssi(a, b) for _ in range(5)]
