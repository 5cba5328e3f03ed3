"""Tests of the identity resolvers: the EID table across rotation boundaries, within the drift
allowance, with epoch offsets and late or missing rebuilds, removal taking effect at once; the
IRK resolver's caches proven by their counters; and property tests of both against an oracle.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beacons.eid import MAX_COUNTER, eid_for_time
from beacons.errors import IdentityError
from beacons.irk import format_address, make_resolvable_address, resolves
from beacons.resolver import MAX_DRIFT, EidRegistration, EidResolver, IrkResolver

PROPERTY = settings(database=None, deadline=None, print_blob=True, max_examples=150)

KEY_A = bytes.fromhex("0102030405060708090a111213141516")
KEY_B = bytes.fromhex("00112233445566778899aabbccddeeff")
KEY_C = bytes.fromhex("f40d6f18e5882260e847e99ca33ac44f")

K = 10
P = 1 << K  # 1024 s
T0 = 5 * P + 100.0  # inside period 5


def eid(key: bytes, period: int, exponent: int = K) -> bytes:
    """The EID a beacon shows during ``period``."""
    return eid_for_time(key, exponent, period << exponent)


def resolver_with(*subjects: tuple[str, bytes], now: float = T0, drift: int = 1) -> EidResolver:
    resolver = EidResolver()
    for subject, key in subjects:
        resolver.add(subject, key, K, drift, now=now)
    return resolver


def fresh_table(resolver: EidResolver, now: float) -> dict[bytes, str]:
    """The table a new resolver builds from the same registrations at ``now``."""
    fresh = EidResolver()
    for subject in sorted(resolver.subjects()):
        registration = resolver.registration(subject)
        assert registration is not None
        fresh.add(
            subject,
            registration.identity_key,
            registration.exponent,
            registration.drift,
            now=now,
            epoch_offset=registration.epoch_offset,
        )
    return dict(fresh.table)


# --- EID: resolution within the window ----------------------------------------------------


def test_the_current_eid_resolves() -> None:
    resolver = resolver_with(("alice", KEY_A), ("bob", KEY_B))

    assert resolver.resolve(eid(KEY_A, 5), T0) == "alice"
    assert resolver.resolve(eid(KEY_B, 5), T0) == "bob"
    assert resolver.resolve(eid(KEY_C, 5), T0) is None
    assert resolver.resolve(bytes(8), T0) is None
    assert resolver.inline_rebuilds == 0


def test_previous_current_and_next_periods_resolve_by_default() -> None:
    resolver = resolver_with(("alice", KEY_A))

    for period in (4, 5, 6):
        assert resolver.resolve(eid(KEY_A, period), T0) == "alice"
    for period in (0, 1, 2, 3, 8, 9):
        assert resolver.resolve(eid(KEY_A, period), T0) is None


def test_the_table_holds_the_window_and_one_period_of_look_ahead() -> None:
    resolver = resolver_with(("alice", KEY_A))

    assert dict(resolver.table) == {eid(KEY_A, p): "alice" for p in (4, 5, 6, 7)}


@pytest.mark.parametrize("drift", [0, 1, 2, 3])
def test_the_drift_allowance_widens_the_window(drift: int) -> None:
    now = 10 * P + 1.0  # period 10
    resolver = resolver_with(("alice", KEY_A), now=now, drift=drift)

    for period in range(10 - drift, 10 + drift + 1):
        assert resolver.resolve(eid(KEY_A, period), now) == "alice"
    assert resolver.resolve(eid(KEY_A, 10 - drift - 1), now) is None
    assert resolver.resolve(eid(KEY_A, 10 + drift + 2), now) is None
    assert len(resolver.table) == 2 * drift + 2


def test_the_window_is_clipped_to_the_counter_range() -> None:
    resolver = EidResolver()
    resolver.add("early", KEY_A, K, 2, now=100.0)  # period 0: nothing before it
    resolver.add("late", KEY_B, K, 2, now=float(MAX_COUNTER))  # the last period: nothing after

    last = MAX_COUNTER >> K
    early = {eid(KEY_A, p): "early" for p in range(4)}
    late = {eid(KEY_B, p): "late" for p in range(last - 2, last + 1)}
    assert dict(resolver.table) == early | late


def test_the_epoch_offset_shifts_beacon_time() -> None:
    epoch = 1_700_000_000.0
    resolver = EidResolver()
    resolver.add("alice", KEY_A, K, now=epoch + 5000.0, epoch_offset=epoch)

    assert resolver.resolve(eid_for_time(KEY_A, K, 5000.0), epoch + 5000.0) == "alice"
    assert resolver.resolve(eid_for_time(KEY_A, K, epoch + 5000.0), epoch + 5000.0) is None
    assert resolver.registration("alice") == EidRegistration("alice", KEY_A, K, 1, epoch)


def test_before_the_beacon_epoch_only_its_first_periods_are_held() -> None:
    epoch = 1_000_000.0
    resolver = EidResolver()
    resolver.add("alice", KEY_A, K, 1, now=epoch - 10.0, epoch_offset=epoch)

    assert dict(resolver.table) == {eid(KEY_A, 0): "alice", eid(KEY_A, 1): "alice"}
    assert resolver.resolve(eid(KEY_A, 0), epoch + 1.0) == "alice"


# --- EID: rotation boundaries and rebuilds ---------------------------------------------


def test_a_rebuild_is_due_at_the_boundary_and_resolution_holds_until_it_runs() -> None:
    resolver = resolver_with(("alice", KEY_A))
    boundary = 6 * P

    assert resolver.next_rebuild_at == boundary
    assert not resolver.rebuild_due(boundary - 0.001)
    assert resolver.rebuild_due(boundary)
    # Not rebuilt yet: the new period's EID and its neighbours resolve from the look-ahead.
    for period in (5, 6, 7):
        assert resolver.resolve(eid(KEY_A, period), boundary + 1.0) == "alice"
    assert resolver.inline_rebuilds == 0
    assert resolver.rebuilds == 0


def test_a_rebuild_slides_the_window_computing_only_the_new_eid() -> None:
    resolver = resolver_with(("alice", KEY_A))
    before = resolver.eid_computations
    boundary = 6 * P

    assert resolver.rebuild(boundary) == 1

    assert resolver.eid_computations == before + 1
    assert dict(resolver.table) == {eid(KEY_A, p): "alice" for p in (5, 6, 7, 8)}
    assert resolver.resolve(eid(KEY_A, 4), boundary) is None
    assert not resolver.rebuild_due(boundary)
    assert resolver.next_rebuild_at == 7 * P


def test_a_rebuild_before_the_boundary_changes_nothing() -> None:
    resolver = resolver_with(("alice", KEY_A), ("bob", KEY_B))
    table = dict(resolver.table)
    before = resolver.eid_computations

    assert resolver.rebuild(T0 + 10.0) == 0

    assert dict(resolver.table) == table
    assert resolver.eid_computations == before


def test_rebuilds_touch_only_registrations_whose_period_changed() -> None:
    resolver = EidResolver()
    resolver.add("slow", KEY_A, 12, now=0.0)  # 4096 s periods
    resolver.add("fast", KEY_B, 4, now=0.0)  # 16 s periods
    resolver.add("shifted", KEY_C, 4, now=0.0, epoch_offset=5.0)  # boundaries at 16k + 5

    assert resolver.next_rebuild_at == 5.0  # "shifted" is in its period -1 until 5
    assert resolver.rebuild(5.0) == 1
    assert resolver.next_rebuild_at == 16.0
    assert resolver.rebuild(16.0) == 1
    assert resolver.rebuild(4096.0) == 3  # every registration, "fast" and "shifted" late
    assert dict(resolver.table) == fresh_table(resolver, 4096.0)


def test_many_registrations_cost_one_eid_each_per_rotation() -> None:
    keys = [i.to_bytes(16, "big") for i in range(1, 101)]
    resolver = EidResolver()
    for i, key in enumerate(keys):
        resolver.add(f"s{i}", key, K, now=T0)
    before = resolver.eid_computations

    assert resolver.rebuild(6 * P) == 100

    assert resolver.eid_computations - before == 100
    assert all(resolver.resolve(eid(key, 6), 6 * P) == f"s{i}" for i, key in enumerate(keys))


def test_a_large_rebuild_can_run_in_slices() -> None:
    keys = [i.to_bytes(16, "big") for i in range(1, 101)]
    resolver = EidResolver()
    for i, key in enumerate(keys):
        resolver.add(f"s{i}", key, K, now=T0)
    boundary = 6 * P

    slices = []
    while resolver.rebuild_due(boundary):
        slices.append(resolver.rebuild(boundary, limit=30))
        # Between slices every registration still resolves, moved or not.
        assert all(resolver.resolve(eid(k, 6), boundary) == f"s{i}" for i, k in enumerate(keys))

    assert slices == [30, 30, 30, 10]
    assert resolver.inline_rebuilds == 0
    assert dict(resolver.table) == fresh_table(resolver, boundary)


@pytest.mark.parametrize("limit", [0, -1, 1.5, True])
def test_a_bad_limit_is_refused(limit: object) -> None:
    with pytest.raises(IdentityError, match="limit must be a positive integer"):
        EidResolver().rebuild(0.0, limit=limit)  # type: ignore[arg-type]


def test_resolve_catches_up_when_the_caller_falls_behind() -> None:
    resolver = resolver_with(("alice", KEY_A))
    later = 9 * P + 3.0  # four periods on, no rebuild in between

    assert resolver.resolve(eid(KEY_A, 9), later) == "alice"

    assert resolver.inline_rebuilds == 1
    assert resolver.resolve(eid(KEY_A, 5), later) is None
    assert dict(resolver.table) == fresh_table(resolver, later)
    assert resolver.resolve(eid(KEY_A, 10), later + 1.0) == "alice"
    assert resolver.inline_rebuilds == 1


def test_resolve_catches_up_when_the_clock_steps_back() -> None:
    resolver = resolver_with(("alice", KEY_A))
    earlier = 2 * P + 7.0

    assert resolver.resolve(eid(KEY_A, 2), earlier) == "alice"

    assert resolver.inline_rebuilds == 1
    assert dict(resolver.table) == fresh_table(resolver, earlier)


def test_one_period_late_is_not_late_enough_to_rebuild_inline() -> None:
    resolver = resolver_with(("alice", KEY_A))

    assert resolver.resolve(eid(KEY_A, 6), 7 * P - 0.5) == "alice"
    assert resolver.inline_rebuilds == 0
    assert resolver.resolve(eid(KEY_A, 7), 7 * P) == "alice"
    assert resolver.inline_rebuilds == 1


# --- EID: registrations -------------------------------------------------------------------


def test_removal_takes_effect_immediately() -> None:
    resolver = resolver_with(("alice", KEY_A), ("bob", KEY_B))

    assert resolver.remove("alice")

    for period in range(3, 9):
        assert resolver.resolve(eid(KEY_A, period), T0) is None
    assert set(resolver.table.values()) == {"bob"}
    assert resolver.resolve(eid(KEY_B, 5), T0) == "bob"
    assert "alice" not in resolver
    assert len(resolver) == 1
    assert resolver.registration("alice") is None
    assert not resolver.remove("alice")


def test_a_removed_subject_stays_removed_across_rebuilds() -> None:
    resolver = resolver_with(("alice", KEY_A), ("bob", KEY_B))
    resolver.remove("alice")

    resolver.rebuild(6 * P)
    resolver.rebuild(20 * P)

    assert set(resolver.table.values()) == {"bob"}
    assert resolver.resolve(eid(KEY_A, 20), 20 * P) is None


def test_adding_again_replaces_the_key() -> None:
    resolver = resolver_with(("alice", KEY_A))

    resolver.add("alice", KEY_C, K, now=T0)

    assert resolver.resolve(eid(KEY_A, 5), T0) is None
    assert resolver.resolve(eid(KEY_C, 5), T0) == "alice"
    assert len(resolver) == 1
    assert len(resolver.table) == 4


def test_adding_takes_effect_at_once_and_leaves_others_alone() -> None:
    resolver = resolver_with(("alice", KEY_A))
    before = dict(resolver.table)

    resolver.add("bob", KEY_B, K, now=T0)

    assert resolver.resolve(eid(KEY_B, 5), T0) == "bob"
    assert before.items() <= dict(resolver.table).items()
    assert resolver.rebuilds == 0


def test_the_registration_keeps_its_key_out_of_repr() -> None:
    resolver = resolver_with(("alice", KEY_A))
    registration = resolver.registration("alice")

    assert registration is not None
    assert registration.period_s == P
    assert KEY_A.hex() not in repr(registration)
    assert repr(KEY_A) not in repr(registration)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"subject": ""}, "subject must be a non-empty string"),
        ({"identity_key": bytes(15)}, "identity key must be 16 bytes, got 15"),
        ({"exponent": 16}, r"rotation exponent must be an integer in 0\.\.15"),
        ({"drift": -1}, "drift allowance must be an integer in 0..256 periods"),
        ({"drift": MAX_DRIFT + 1}, "drift allowance must be an integer"),
        ({"drift": 1.0}, "drift allowance must be an integer"),
        ({"epoch_offset": float("nan")}, "epoch offset must be a finite number"),
        ({"epoch_offset": "0"}, "epoch offset must be a finite number"),
        ({"now": float("inf")}, "time must be a finite number of seconds"),
    ],
)
def test_bad_registrations_are_refused_and_change_nothing(
    arguments: dict[str, object], message: str
) -> None:
    resolver = resolver_with(("alice", KEY_A))
    table = dict(resolver.table)
    call: dict[str, object] = {
        "subject": "alice",
        "identity_key": KEY_B,
        "exponent": K,
        "drift": 1,
        "now": T0,
        "epoch_offset": 0.0,
    }
    call.update(arguments)

    with pytest.raises(IdentityError, match=message):
        resolver.add(**call)  # type: ignore[arg-type]

    assert dict(resolver.table) == table


def test_an_empty_resolver_never_needs_a_rebuild() -> None:
    resolver = EidResolver()

    assert not resolver.rebuild_due(1e9)
    assert resolver.resolve(bytes(8), 1e9) is None
    assert resolver.rebuilds == 0
    with pytest.raises(IdentityError, match="time must be a finite number"):
        resolver.rebuild(float("nan"))


# --- EID: property -------------------------------------------------------------------------

registrations = st.lists(
    st.tuples(
        st.binary(min_size=16, max_size=16),
        st.integers(min_value=0, max_value=5),  # exponent
        st.integers(min_value=0, max_value=2),  # drift
        st.integers(min_value=0, max_value=200),  # epoch offset
    ),
    min_size=1,
    max_size=4,
    unique_by=lambda r: r[0],
)
steps = st.lists(
    st.tuples(
        st.floats(min_value=0.0, max_value=90.0),  # time advance, up to several periods
        st.sampled_from(["rebuild", "nothing", "remove", "step-back"]),
    ),
    max_size=12,
)


@PROPERTY
@given(registrations, steps)
def test_every_eid_within_its_drift_resolves_whatever_the_rebuild_schedule(
    regs: list[tuple[bytes, int, int, int]], script: list[tuple[float, str]]
) -> None:
    now = 300.0
    resolver = EidResolver()
    for i, (key, exponent, drift, epoch) in enumerate(regs):
        resolver.add(f"s{i}", key, exponent, drift, now=now, epoch_offset=float(epoch))
    live = dict(enumerate(regs))

    for advance, action in script:
        now = now - advance / 3 if action == "step-back" else now + advance
        if action == "rebuild":
            resolver.rebuild(now)
            assert dict(resolver.table) == fresh_table(resolver, now) or not live
        elif action == "remove" and live:
            gone = min(live)
            del live[gone]
            resolver.remove(f"s{gone}")
        for i, (key, exponent, drift, _epoch) in live.items():
            registration = resolver.registration(f"s{i}")
            assert registration is not None
            period = registration.period_at(now)
            for delta in range(-drift - 3, drift + 4):
                p = period + delta
                if not 0 <= p <= MAX_COUNTER >> exponent:
                    continue
                found = resolver.resolve(eid(key, p, exponent), now)
                if abs(delta) <= drift:
                    assert found == f"s{i}"
                elif delta >= drift + 2 or delta <= -drift - 2:
                    assert found is None
        assert set(resolver.table.values()) == {f"s{i}" for i in live}


# --- IRK ------------------------------------------------------------------------------------

SPEC_IRK = bytes.fromhex("ec0234a357c8ad05341010a60a397d9b")
SPEC_ADDRESS = "70:81:94:0D:FB:AA"  # Core Specification Vol 3 Part H D.7: resolves with SPEC_IRK
STRANGER = make_resolvable_address(bytes(range(16)), b"\x55\x55\x55")  # nobody's IRK
STATIC = "C1:22:33:44:55:66"  # static random address: top bits 0b11
PUBLIC = "00:1A:7D:DA:71:13"  # public-looking address: top bits 0b00


def irk_resolver(**options: int | float) -> IrkResolver:
    resolver = IrkResolver(**options)  # type: ignore[arg-type]
    resolver.add("alice", SPEC_IRK)
    resolver.add("bob", KEY_B)
    return resolver


def test_an_address_resolves_and_the_second_lookup_is_a_cache_hit() -> None:
    resolver = irk_resolver()

    assert resolver.resolve(SPEC_ADDRESS, 0.0) == "alice"
    assert (resolver.misses, resolver.hits, resolver.aes_ops) == (1, 0, 1)

    assert resolver.resolve(SPEC_ADDRESS, 1.0) == "alice"
    assert (resolver.misses, resolver.hits, resolver.aes_ops) == (1, 1, 1)


def test_the_scan_stops_at_the_matching_irk() -> None:
    resolver = IrkResolver()
    keys = [i.to_bytes(16, "big") for i in range(1, 101)]
    for i, key in enumerate(keys):
        resolver.add(f"s{i}", key)
    address = make_resolvable_address(keys[49], b"\x4a\xbc\xde")

    assert resolver.resolve(address, 0.0) == "s49"
    assert resolver.aes_ops == 50
    for t in range(1, 100):
        assert resolver.resolve(address, float(t)) == "s49"
    assert resolver.aes_ops == 50
    assert resolver.hits == 99


def test_an_unknown_address_is_remembered_as_unknown() -> None:
    resolver = irk_resolver()

    assert resolver.resolve(STRANGER, 0.0) is None
    assert (resolver.misses, resolver.aes_ops, resolver.negative_cached) == (1, 2, 1)

    for t in range(1, 50):
        assert resolver.resolve(STRANGER, float(t)) is None
    assert (resolver.misses, resolver.aes_ops, resolver.negative_hits) == (1, 2, 49)


@pytest.mark.parametrize("address", [STATIC, PUBLIC, bytes.fromhex("c12233445566")])
def test_a_non_resolvable_address_costs_no_aes(address: str | bytes) -> None:
    resolver = irk_resolver()

    assert resolver.resolve(address, 0.0) is None
    assert resolver.resolve(address, 1.0) is None

    assert (resolver.aes_ops, resolver.misses, resolver.cached, resolver.negative_cached) == (
        0,
        0,
        0,
        0,
    )


def test_addresses_as_bytes_resolve_too() -> None:
    resolver = irk_resolver()

    assert resolver.resolve(bytes.fromhex("7081940dfbaa"), 0.0) == "alice"
    assert resolver.resolve(SPEC_ADDRESS.lower(), 0.0) == "alice"


def test_entries_expire_after_the_ttl() -> None:
    resolver = irk_resolver(ttl_s=60.0)
    resolver.resolve(SPEC_ADDRESS, 0.0)
    resolver.resolve(STRANGER, 0.0)

    assert resolver.resolve(SPEC_ADDRESS, 59.9) == "alice"
    assert resolver.resolve(STRANGER, 59.9) is None
    assert resolver.misses == 2

    assert resolver.resolve(SPEC_ADDRESS, 60.0) == "alice"
    assert resolver.resolve(STRANGER, 60.0) is None
    assert resolver.misses == 4
    assert (resolver.cached, resolver.negative_cached) == (1, 1)


def test_expire_drops_old_entries_without_a_lookup() -> None:
    resolver = irk_resolver(ttl_s=60.0)
    resolver.resolve(SPEC_ADDRESS, 0.0)
    resolver.resolve(STRANGER, 30.0)

    assert resolver.expire(59.0) == 0
    assert resolver.expire(61.0) == 1
    assert (resolver.cached, resolver.negative_cached) == (0, 1)
    assert resolver.expire(1000.0) == 1
    assert (resolver.cached, resolver.negative_cached) == (0, 0)


def test_the_positive_cache_is_bounded_oldest_first() -> None:
    resolver = IrkResolver(cache_size=2)
    resolver.add("alice", SPEC_IRK)
    first, second, third = (
        make_resolvable_address(SPEC_IRK, prand)
        for prand in (b"\x41\x00\x01", b"\x42\x00\x02", b"\x43\x00\x03")
    )
    for t, address in enumerate((first, second, third)):
        assert resolver.resolve(address, float(t)) == "alice"

    assert resolver.cached == 2
    assert resolver.resolve(third, 5.0) == "alice"
    assert resolver.resolve(second, 5.0) == "alice"
    assert resolver.misses == 3  # both still cached
    assert resolver.resolve(first, 5.0) == "alice"
    assert resolver.misses == 4  # the oldest was evicted


def test_the_negative_cache_is_bounded_oldest_first() -> None:
    resolver = IrkResolver(negative_cache_size=3)
    resolver.add("alice", SPEC_IRK)
    strangers = [make_resolvable_address(bytes(16), bytes([0x40 + i, 0, 1])) for i in range(5)]
    for t, address in enumerate(strangers):
        resolver.resolve(address, float(t))

    assert resolver.negative_cached == 3
    for address in strangers[2:]:
        assert resolver.resolve(address, 10.0) is None
    assert resolver.misses == 5
    assert resolver.resolve(strangers[0], 10.0) is None
    assert resolver.misses == 6


def test_adding_an_irk_lets_a_remembered_unknown_address_resolve() -> None:
    resolver = irk_resolver()
    carol_irk = bytes(range(16))
    assert resolver.resolve(STRANGER, 0.0) is None

    resolver.add("carol", carol_irk)

    assert resolver.negative_cached == 0
    assert resolver.resolve(STRANGER, 1.0) == "carol"


def test_adding_another_subject_keeps_the_positive_cache() -> None:
    resolver = irk_resolver()
    resolver.resolve(SPEC_ADDRESS, 0.0)

    resolver.add("carol", bytes(range(16)))

    assert resolver.resolve(SPEC_ADDRESS, 1.0) == "alice"
    assert (resolver.hits, resolver.aes_ops) == (1, 1)


def test_removal_takes_effect_immediately_and_clears_the_subjects_cache() -> None:
    resolver = irk_resolver()
    assert resolver.resolve(SPEC_ADDRESS, 0.0) == "alice"

    assert resolver.remove("alice")

    assert resolver.cached == 0
    assert resolver.resolve(SPEC_ADDRESS, 1.0) is None
    assert "alice" not in resolver
    assert len(resolver) == 1
    assert not resolver.remove("alice")


def test_replacing_an_irk_forgets_the_old_addresses() -> None:
    resolver = irk_resolver()
    assert resolver.resolve(SPEC_ADDRESS, 0.0) == "alice"

    resolver.add("alice", bytes(range(16)))

    assert resolver.resolve(SPEC_ADDRESS, 1.0) is None
    assert resolver.resolve(STRANGER, 1.0) == "alice"
    assert len(resolver) == 2


def test_a_cache_of_size_zero_scans_every_time() -> None:
    resolver = irk_resolver(cache_size=0, negative_cache_size=0)

    for t in range(3):
        assert resolver.resolve(SPEC_ADDRESS, float(t)) == "alice"
        assert resolver.resolve(STRANGER, float(t)) is None

    assert resolver.misses == 6
    assert resolver.aes_ops == 3 * (1 + 2)


def test_malformed_addresses_are_refused() -> None:
    resolver = irk_resolver()

    with pytest.raises(IdentityError, match="Bluetooth address must look like"):
        resolver.resolve("70:81:94:0D:FB", 0.0)
    with pytest.raises(IdentityError, match="Bluetooth address must be 6 bytes"):
        resolver.resolve(b"\x70\x81", 0.0)
    assert resolver.cached == resolver.negative_cached == 0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"cache_size": -1}, "cache_size must be a non-negative integer"),
        ({"negative_cache_size": 1.5}, "negative_cache_size must be a non-negative integer"),
        ({"ttl_s": 0.0}, "ttl_s must be a positive number of seconds"),
        ({"ttl_s": float("inf")}, "ttl_s must be a positive number of seconds"),
    ],
)
def test_bad_options(options: dict[str, float], message: str) -> None:
    with pytest.raises(IdentityError, match=message):
        IrkResolver(**options)  # type: ignore[arg-type]


def test_bad_registrations() -> None:
    resolver = IrkResolver()

    with pytest.raises(IdentityError, match="IRK must be 16 bytes, got 15"):
        resolver.add("alice", bytes(15))
    with pytest.raises(IdentityError, match="subject must be a non-empty string"):
        resolver.add("", SPEC_IRK)
    assert len(resolver) == 0


# --- IRK: property ---------------------------------------------------------------------------

irk_pool = [bytes([i]) * 16 for i in range(1, 6)]
address_pool = [
    make_resolvable_address(irk, bytes([0x40 | j, 0x12, 0x34])) for irk in irk_pool for j in (1, 2)
] + [STATIC, PUBLIC, format_address(bytes.fromhex("7fffff000000"))]
irk_ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(0, 3), st.integers(0, len(irk_pool) - 1)),
        st.tuples(st.just("remove"), st.integers(0, 3), st.just(0)),
        st.tuples(st.just("resolve"), st.integers(0, len(address_pool) - 1), st.just(0)),
        st.tuples(st.just("wait"), st.integers(1, 200), st.just(0)),
    ),
    max_size=40,
)


@PROPERTY
@given(irk_ops, st.integers(min_value=0, max_value=3))
def test_the_cached_answer_is_always_the_uncached_answer(
    ops: list[tuple[str, int, int]], size: int
) -> None:
    resolver = IrkResolver(cache_size=size, negative_cache_size=size, ttl_s=100.0)
    registered: dict[str, bytes] = {}
    now = 0.0
    for op, a, b in ops:
        if op == "add":
            registered.pop(f"s{a}", None)  # a replacement goes to the end of the scan order
            registered[f"s{a}"] = irk_pool[b]
            resolver.add(f"s{a}", irk_pool[b])
        elif op == "remove":
            assert resolver.remove(f"s{a}") == (registered.pop(f"s{a}", None) is not None)
        elif op == "wait":
            now += a
        else:
            address = address_pool[a]
            expected = next((s for s, irk in registered.items() if resolves(irk, address)), None)
            assert resolver.resolve(address, now) == expected
        assert resolver.cached <= size
        assert resolver.negative_cached <= size
    assert resolver.aes_ops <= resolver.misses * 4  # at most four subjects registered
