"""Tests of anonymous counting: distinct devices per zone and period, a key that changes at
every period boundary, and no raw device identifier kept anywhere in the object."""

from __future__ import annotations

from collections.abc import Iterator

from hypothesis import given, settings
from hypothesis import strategies as st

from beacons.anonymous import AnonymousCounter

PROPERTY = settings(database=None, deadline=None, print_blob=True, max_examples=200)

PERIOD = 100.0
ALICE = bytes.fromhex("6c1deb000001")
BOB = bytes.fromhex("6c1deb000002")


class Entropy:
    """A deterministic stand-in for os.urandom: a different key at each call, recorded."""

    def __init__(self) -> None:
        self.requests: list[int] = []

    def __call__(self, n: int) -> bytes:
        self.requests.append(n)
        return bytes([len(self.requests)]) * n


def counter(entropy: Entropy | None = None) -> AnonymousCounter:
    return AnonymousCounter(period_s=PERIOD, entropy=entropy or Entropy())


def reachable(obj: object) -> Iterator[object]:
    """Every value held by the counter, through its slots and the containers inside them."""
    assert not hasattr(obj, "__dict__")
    stack: list[object] = []
    for cls in type(obj).__mro__:
        for name in getattr(cls, "__slots__", ()):
            if hasattr(obj, name):
                stack.append(getattr(obj, name))
    while stack:
        value = stack.pop()
        yield value
        if isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, (set, frozenset, list, tuple)):
            stack.extend(value)


def held_bytes(obj: object) -> set[bytes]:
    return {bytes(v) for v in reachable(obj) if isinstance(v, (bytes, bytearray, memoryview))}


# --- counting -----------------------------------------------------------------------


def test_nothing_counted_yet() -> None:
    assert counter().counts(0.0) == {}


def test_distinct_devices_are_counted_per_zone() -> None:
    c = counter()
    c.observe("entrance", ALICE, 1.0)
    c.observe("entrance", BOB, 2.0)
    c.observe("coffee", ALICE, 3.0)

    assert c.counts(4.0) == {"entrance": 2, "coffee": 1}


def test_the_same_device_twice_counts_once() -> None:
    c = counter()
    for t in range(10):
        c.observe("entrance", ALICE, float(t))

    assert c.counts(10.0) == {"entrance": 1}


def test_one_key_per_period() -> None:
    entropy = Entropy()
    c = counter(entropy)
    for t in range(50):
        c.observe("entrance", bytes([t]), float(t))
    c.counts(99.9)

    assert len(entropy.requests) == 1
    # A key of at least 128 bits.
    assert entropy.requests[0] >= 16


# --- rotation ---------------------------------------------------------------------


def test_counts_reset_at_the_period_boundary() -> None:
    c = counter()
    c.observe("entrance", ALICE, 10.0)
    c.observe("coffee", BOB, 99.999)

    assert c.counts(99.999) == {"entrance": 1, "coffee": 1}
    assert c.counts(100.0) == {}


def test_a_device_seen_in_two_periods_counts_once_in_each() -> None:
    c = counter()
    c.observe("entrance", ALICE, 10.0)
    c.observe("entrance", ALICE, 110.0)
    c.observe("entrance", BOB, 120.0)

    assert c.counts(130.0) == {"entrance": 2}


def test_each_period_gets_a_new_key() -> None:
    entropy = Entropy()
    c = counter(entropy)

    c.observe("entrance", ALICE, 10.0)
    c.observe("entrance", ALICE, 110.0)
    c.counts(250.0)

    assert len(entropy.requests) == 3


def test_no_pseudonym_outlives_its_period() -> None:
    """After the boundary, neither the old key nor any digest made under it is held, and the
    same device gets a different pseudonym."""
    c = counter()
    c.observe("entrance", ALICE, 10.0)
    before = held_bytes(c)

    c.observe("entrance", ALICE, 110.0)
    after = held_bytes(c)

    assert before
    assert after
    assert before.isdisjoint(after)
    assert c.counts(110.0) == {"entrance": 1}


def test_a_constant_key_would_be_visible_as_reused_pseudonyms() -> None:
    """Control for the test above: with the same key in every period the digest repeats,
    so that test would fail if the counter kept its key across a boundary."""
    c = AnonymousCounter(period_s=PERIOD, entropy=lambda n: b"k" * n)
    c.observe("entrance", ALICE, 10.0)
    before = held_bytes(c)

    c.observe("entrance", ALICE, 110.0)

    assert before & held_bytes(c)


def test_periods_are_aligned_to_multiples_of_the_period() -> None:
    c = counter()
    c.observe("entrance", ALICE, 199.0)

    assert c.counts(199.5) == {"entrance": 1}
    assert c.counts(200.0) == {}


def test_default_period_is_a_day() -> None:
    c = AnonymousCounter(entropy=Entropy())
    c.observe("entrance", ALICE, 0.0)
    c.observe("entrance", BOB, 86_399.0)

    assert c.counts(86_399.9) == {"entrance": 2}
    assert c.counts(86_400.0) == {}


def test_the_store_counts_a_device_once_whatever_the_zones_that_heard_it() -> None:
    c = AnonymousCounter(entropy=Entropy())
    c.observe("entrance", ALICE, 3_600.0 * 9 + 5)
    c.observe("coffee", ALICE, 3_600.0 * 10 + 5)  # walked on: one device still
    c.observe("coffee", BOB, 3_600.0 * 10 + 9)
    now = 3_600.0 * 10 + 60
    assert c.counts(now) == {"entrance": 1, "coffee": 2}
    assert c.total(now) == 2
    assert c.hourly(now) == [0] * 9 + [1, 1]  # by the hour each was first heard


def test_the_day_starts_at_the_stores_local_midnight() -> None:
    c = AnonymousCounter(entropy=Entropy(), offset_s=2 * 3_600.0)  # UTC+2
    c.observe("entrance", ALICE, 86_400.0 - 3 * 3_600.0)  # 21:00 UTC, 23:00 local
    assert c.total(86_400.0 - 2 * 3_600.0 - 1) == 1 and c.hourly(86_400.0 - 7_201)[-1] == 1
    assert c.total(86_400.0 - 2 * 3_600.0) == 0  # local midnight, 22:00 UTC: a new day
    assert c.hourly(86_400.0 - 2 * 3_600.0) == [0]


def test_a_late_reading_from_the_day_before_does_not_start_the_day_again() -> None:
    c = AnonymousCounter(entropy=Entropy())
    c.observe("entrance", ALICE, 86_400.0 + 5)  # just after midnight
    c.observe("entrance", BOB, 86_400.0 - 0.5)  # heard before midnight, arrived after
    assert c.total(86_400.0 + 6) == 1 and c.counts(86_400.0 + 6) == {"entrance": 1}
    assert c.hourly(86_400.0 + 6) == [1]


def test_memory_is_bounded_whatever_the_air_holds() -> None:
    c = AnonymousCounter(entropy=Entropy(), max_devices=3)
    for i in range(10):  # a transmitter inventing addresses
        c.observe("entrance", bytes([i]) * 6, 10.0)
    c.observe("coffee", bytes([0]) * 6, 11.0)  # one already counted is still placed
    assert c.total(12.0) == 3 and c.saturated
    assert c.counts(12.0) == {"entrance": 3, "coffee": 1}
    assert c.total(86_400.0) == 0 and not c.saturated  # a new day starts afresh


# --- nothing raw is kept ----------------------------------------------------------


def test_the_raw_device_bytes_are_not_kept() -> None:
    c = counter()
    devices = [ALICE, BOB, b"\x00" * 16, bytes(range(32))]
    for i, device in enumerate(devices):
        c.observe(f"zone-{i % 2}", device, 5.0)
    c.counts(6.0)

    for value in held_bytes(c):
        for device in devices:
            assert device not in value
    for text in reachable(c):
        if isinstance(text, str):
            for device in devices:
                assert device.hex() not in text


def test_the_counter_has_no_instance_dict() -> None:
    c = counter()
    c.observe("entrance", ALICE, 1.0)

    assert not hasattr(c, "__dict__")
    assert all(not isinstance(v, AnonymousCounter) for v in reachable(c))


# --- property ---------------------------------------------------------------------


@PROPERTY
@given(
    st.lists(
        st.tuples(st.sampled_from(["entrance", "coffee", "bakery"]), st.binary(max_size=16)),
        max_size=60,
    )
)
def test_counts_are_the_distinct_devices_per_zone(sightings: list[tuple[str, bytes]]) -> None:
    c = counter()
    for i, (zone, device) in enumerate(sightings):
        c.observe(zone, device, i * 0.5)

    expected: dict[str, set[bytes]] = {}
    for zone, device in sightings:
        expected.setdefault(zone, set()).add(device)
    assert c.counts(99.0) == {zone: len(devices) for zone, devices in expected.items()}
