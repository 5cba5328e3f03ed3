"""Tests of Eddystone-EID: published test vectors, an independent reference built from the
specification's block tables, rotation behaviour, the X25519/HKDF registration, and argument
checking.

Sources of the vectors (values only; no code taken):

* RadiusNetworks/ephemeral_calc, ``spec/encryptor_spec.rb``: identity key
  0102030405060708090A111213141516, K = 10; its two cases run at beacon time 0 and at 2000 s
  (the second constructs the encryptor 2000 s in the past, well inside period 1024..2047).
* RadiusNetworks/ephemeral_calc, ``spec/key_pair_spec.rb``: resolver and beacon X25519 key
  pairs, their shared secret and the identity key.
* sandeepmistry/node-eddystone-beacon-scanner, ``lib/eid.spec.js``: temporary key and EID at
  counter 1518080946, K = 12, with the scanner's identity key 00112233445566778899AABBCCDDEEFF
  (set in ``lib/eddystone-beacon-scanner.js``).
"""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given, settings
from hypothesis import strategies as st

from beacons.eid import (
    EID_LENGTH,
    MAX_COUNTER,
    TEMPORARY_KEY_PERIOD_S,
    EidCalculator,
    X25519KeyPair,
    beacon_identity_key,
    compute_eid,
    counter_for_time,
    derive_identity_key,
    eid_for_time,
    generate_resolver_keypair,
    temporary_key,
)
from beacons.errors import BeaconError, IdentityError

PROPERTY = settings(database=None, deadline=None, print_blob=True, max_examples=200)

keys = st.binary(min_size=16, max_size=16)
exponents = st.integers(min_value=0, max_value=15)
counters = st.integers(min_value=0, max_value=MAX_COUNTER)
x25519_privates = st.binary(min_size=32, max_size=32)


# --- an independent reference, written from the specification's two block tables --------


def aes(key: bytes, block: bytes) -> bytes:
    encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return encryptor.update(block) + encryptor.finalize()


def reference_temporary_key(identity_key: bytes, counter: int) -> bytes:
    # Offsets 0-10 padding 0x00, 11 salt 0xFF, 12-13 padding 0x00, 14-15 counter bits 31..16.
    block = bytes(11) + b"\xff" + bytes(2) + bytes([(counter >> 24) & 0xFF, (counter >> 16) & 0xFF])
    assert len(block) == 16
    return aes(identity_key, block)


def reference_eid(identity_key: bytes, exponent: int, counter: int) -> bytes:
    # Offsets 0-10 padding, 11 K, 12-15 the counter with its K lowest bits cleared.
    cleared = (counter >> exponent) << exponent
    block = bytes(11) + bytes([exponent]) + cleared.to_bytes(4, "big")
    return aes(reference_temporary_key(identity_key, counter), block)[:8]


# --- published vectors ------------------------------------------------------------------

RADIUS_IK = bytes.fromhex("0102030405060708090A111213141516")
SCANNER_IK = bytes.fromhex("00112233445566778899AABBCCDDEEFF")


@pytest.mark.parametrize(
    ("counter", "expected"),
    [(0, "a9b76a71c5f89290"), (2000, "4144413e45fefa58")],
)
def test_ephemeral_calc_vectors(counter: int, expected: str) -> None:
    assert compute_eid(RADIUS_IK, 10, counter).hex() == expected


def test_ephemeral_calc_vector_holds_for_its_whole_period() -> None:
    for counter in (1024, 1500, 2047):
        assert compute_eid(RADIUS_IK, 10, counter).hex() == "4144413e45fefa58"
    assert compute_eid(RADIUS_IK, 10, 1023).hex() == "a9b76a71c5f89290"
    assert compute_eid(RADIUS_IK, 10, 2048).hex() not in {"4144413e45fefa58", "a9b76a71c5f89290"}


def test_node_scanner_temporary_key_vector() -> None:
    key = temporary_key(SCANNER_IK, 1518080946)

    assert key.hex() == "b7c2d909d27d22df8343271162480210"


def test_node_scanner_eid_vector() -> None:
    assert compute_eid(SCANNER_IK, 12, 1518080946).hex() == "7dd8169dae94258c"
    assert eid_for_time(SCANNER_IK, 12, 1518080946.75).hex() == "7dd8169dae94258c"


RESOLVER_PRIVATE = bytes.fromhex("61136adab1bf302f1c49e860196aeefd8fbaa41518b4c226372d6cc469c47278")
RESOLVER_PUBLIC = bytes.fromhex("29769a045dcb811ba3025985b9de91eb9a57dadbceb68a1e6a3c2b1af4868e1f")
BEACON_PRIVATE = bytes.fromhex("6ea13b5ef3cc642fd6102c1d85c096b510f56efc488114a4562a987bf4525628")
BEACON_PUBLIC = bytes.fromhex("c63e6f89aab47552c8d621a59c81d0af203f6570a4bd7a267a08a17561c8bc2b")
SHARED_SECRET = bytes.fromhex("690821890fffb83bb348fb620d0a10e625fe3d919b5594e7b9258d50f829b90b")
IDENTITY_KEY = bytes.fromhex("f40d6f18e5882260e847e99ca33ac44f")


def test_ephemeral_calc_key_pairs_are_consistent() -> None:
    """The vector's keys really are X25519 pairs with that shared secret."""
    resolver = X25519PrivateKey.from_private_bytes(RESOLVER_PRIVATE)
    beacon = X25519PrivateKey.from_private_bytes(BEACON_PRIVATE)

    assert resolver.public_key().public_bytes_raw() == RESOLVER_PUBLIC
    assert beacon.public_key().public_bytes_raw() == BEACON_PUBLIC
    assert resolver.exchange(X25519PublicKey.from_public_bytes(BEACON_PUBLIC)) == SHARED_SECRET


def test_ephemeral_calc_identity_key_on_the_resolver_side() -> None:
    assert derive_identity_key(RESOLVER_PRIVATE, BEACON_PUBLIC) == IDENTITY_KEY
    assert derive_identity_key(RESOLVER_PRIVATE, BEACON_PUBLIC, RESOLVER_PUBLIC) == IDENTITY_KEY


def test_ephemeral_calc_identity_key_on_the_beacon_side() -> None:
    assert beacon_identity_key(BEACON_PRIVATE, RESOLVER_PUBLIC) == IDENTITY_KEY


def test_identity_key_is_hkdf_of_the_secret_salted_with_both_public_keys() -> None:
    """Salt = resolver public key || beacon public key, empty info, first 16 bytes; the
    specification's truncation of a longer output gives the same bytes."""
    longer = HKDF(hashes.SHA256(), 32, RESOLVER_PUBLIC + BEACON_PUBLIC, b"").derive(SHARED_SECRET)

    assert longer[:16] == IDENTITY_KEY


# --- the independent reference ----------------------------------------------------------


@PROPERTY
@given(keys, exponents, counters)
def test_matches_the_block_tables_of_the_specification(
    identity_key: bytes, exponent: int, counter: int
) -> None:
    assert temporary_key(identity_key, counter) == reference_temporary_key(identity_key, counter)
    assert compute_eid(identity_key, exponent, counter) == reference_eid(
        identity_key, exponent, counter
    )


@PROPERTY
@given(keys, exponents, st.lists(counters, min_size=1, max_size=20))
def test_a_calculator_agrees_with_the_functions_in_any_order(
    identity_key: bytes, exponent: int, sequence: list[int]
) -> None:
    calculator = EidCalculator(identity_key, exponent)
    for counter in sequence:
        assert calculator.eid(counter) == compute_eid(identity_key, exponent, counter)
        assert calculator.temporary_key(counter) == temporary_key(identity_key, counter)


# --- rotation ---------------------------------------------------------------------------


@PROPERTY
@given(keys, exponents, st.integers(min_value=1, max_value=(MAX_COUNTER >> 15) - 1))
def test_the_eid_changes_exactly_at_multiples_of_the_period(
    identity_key: bytes, exponent: int, n: int
) -> None:
    period = 1 << exponent
    boundary = n * period
    calculator = EidCalculator(identity_key, exponent)
    this = calculator.eid(boundary)

    assert calculator.eid(boundary - 1) != this
    assert calculator.eid(boundary + period - 1) == this
    assert calculator.eid(boundary + period // 2) == this
    assert calculator.eid(boundary + period) != this


@PROPERTY
@given(keys, st.integers(min_value=1, max_value=0xFFFF - 1), st.integers(0, 0xFFFF))
def test_the_temporary_key_changes_every_65536_seconds(
    identity_key: bytes, window: int, offset: int
) -> None:
    start = window * TEMPORARY_KEY_PERIOD_S
    key = temporary_key(identity_key, start)

    assert temporary_key(identity_key, start + offset) == key
    assert temporary_key(identity_key, start - 1) != key
    assert temporary_key(identity_key, start + TEMPORARY_KEY_PERIOD_S) != key


def test_the_temporary_key_does_not_depend_on_the_exponent() -> None:
    calculators = [EidCalculator(RADIUS_IK, k) for k in (0, 7, 15)]

    assert {c.temporary_key(123_456) for c in calculators} == {temporary_key(RADIUS_IK, 123_456)}


def test_different_exponents_give_different_eids_at_the_same_counter() -> None:
    eids = {compute_eid(RADIUS_IK, k, 0) for k in range(16)}

    assert len(eids) == 16
    assert all(len(eid) == EID_LENGTH for eid in eids)


def test_counter_edges() -> None:
    assert compute_eid(RADIUS_IK, 15, MAX_COUNTER) == reference_eid(RADIUS_IK, 15, MAX_COUNTER)
    assert temporary_key(RADIUS_IK, MAX_COUNTER) == reference_temporary_key(RADIUS_IK, MAX_COUNTER)


def test_time_is_floored_to_the_counter() -> None:
    assert counter_for_time(0.0) == 0
    assert counter_for_time(1023.999) == 1023
    assert counter_for_time(1024) == 1024
    assert eid_for_time(RADIUS_IK, 10, 1023.999) == compute_eid(RADIUS_IK, 10, 0)
    assert eid_for_time(RADIUS_IK, 10, 1024.0) == compute_eid(RADIUS_IK, 10, 1024)


def test_calculator_reports_its_period() -> None:
    calculator = EidCalculator(RADIUS_IK, 10)

    assert (calculator.exponent, calculator.period_s) == (10, 1024)


# --- registration -----------------------------------------------------------------------


def beacon_side_reference(beacon_private: bytes, resolver_public: bytes) -> bytes:
    """What a beacon computes, written out with the primitives: X25519, then HKDF-SHA256
    salted with resolver public || beacon public, empty info, 16 bytes."""
    beacon = X25519PrivateKey.from_private_bytes(beacon_private)
    secret = beacon.exchange(X25519PublicKey.from_public_bytes(resolver_public))
    beacon_public = beacon.public_key().public_bytes_raw()
    return HKDF(hashes.SHA256(), 16, resolver_public + beacon_public, b"").derive(secret)


@PROPERTY
@given(x25519_privates, x25519_privates)
def test_the_key_exchange_is_symmetric(resolver_private: bytes, beacon_private: bytes) -> None:
    resolver_public = X25519PrivateKey.from_private_bytes(resolver_private).public_key()
    beacon_public = X25519PrivateKey.from_private_bytes(beacon_private).public_key()

    on_resolver = derive_identity_key(resolver_private, beacon_public.public_bytes_raw())
    on_beacon = beacon_identity_key(beacon_private, resolver_public.public_bytes_raw())

    assert on_resolver == on_beacon
    assert on_beacon == beacon_side_reference(beacon_private, resolver_public.public_bytes_raw())
    assert len(on_resolver) == 16


def test_registration_round_trip() -> None:
    """The specification's flow: the resolver publishes its key, the beacon derives the
    identity key and sends its public key with its first EID, the resolver checks it."""
    resolver = generate_resolver_keypair()
    beacon = generate_resolver_keypair()  # any X25519 pair will do for the beacon
    beacon_key = beacon_identity_key(beacon.private, resolver.public)
    initial_eid = eid_for_time(beacon_key, 10, 65_280)

    resolver_key = derive_identity_key(resolver.private, beacon.public, resolver.public)

    assert resolver_key == beacon_key
    assert eid_for_time(resolver_key, 10, 65_280) == initial_eid


def test_generated_key_pairs_are_fresh_and_private_keys_stay_out_of_repr() -> None:
    one, two = generate_resolver_keypair(), generate_resolver_keypair()

    assert one != two
    assert len(one.private) == len(one.public) == 32
    assert X25519PrivateKey.from_private_bytes(one.private).public_key().public_bytes_raw() == (
        one.public
    )
    assert repr(one.private) not in repr(one)
    assert "private" not in repr(one)
    assert repr(one.public) in repr(one)


def test_a_low_order_public_key_is_refused() -> None:
    """The specification: verify that the shared secret is not zero."""
    with pytest.raises(IdentityError, match="shared secret is zero: the beacon public key"):
        derive_identity_key(RESOLVER_PRIVATE, bytes(32))
    with pytest.raises(IdentityError, match="shared secret is zero: the resolver public key"):
        beacon_identity_key(BEACON_PRIVATE, bytes(32))


def test_a_mismatched_resolver_public_key_is_refused() -> None:
    with pytest.raises(IdentityError, match="does not belong to the resolver private key"):
        derive_identity_key(RESOLVER_PRIVATE, BEACON_PUBLIC, BEACON_PUBLIC)


# --- arguments --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (bytes(15), "identity key must be 16 bytes, got 15"),
        (bytes(17), "identity key must be 16 bytes, got 17"),
        (bytes(32), "identity key must be 16 bytes, got 32"),
        ("00" * 16, "identity key must be 16 bytes, got str"),
        (bytearray(16), "identity key must be 16 bytes, got bytearray"),
    ],
)
def test_bad_identity_keys(key: object, message: str) -> None:
    with pytest.raises(IdentityError, match=message):
        compute_eid(key, 10, 0)  # type: ignore[arg-type]
    with pytest.raises(IdentityError, match=message):
        temporary_key(key, 0)  # type: ignore[arg-type]


@pytest.mark.parametrize("exponent", [-1, 16, 255, True, 1.0, "10", None])
def test_bad_exponents(exponent: object) -> None:
    with pytest.raises(IdentityError, match=r"rotation exponent must be an integer in 0\.\.15"):
        compute_eid(RADIUS_IK, exponent, 0)  # type: ignore[arg-type]


@pytest.mark.parametrize("counter", [-1, MAX_COUNTER + 1, 1.5, True, "0", None])
def test_bad_counters(counter: object) -> None:
    with pytest.raises(IdentityError, match=r"beacon time counter must be an integer in 0\.\."):
        compute_eid(RADIUS_IK, 10, counter)  # type: ignore[arg-type]
    with pytest.raises(IdentityError, match="beacon time counter"):
        temporary_key(RADIUS_IK, counter)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("beacon_time", "message"),
    [
        (-0.5, "beacon time must be in 0..4294967295 seconds"),
        (2.0**32, "beacon time must be in 0..4294967295 seconds"),
        (float("nan"), "beacon time must be finite"),
        (float("inf"), "beacon time must be finite"),
        ("12", "beacon time must be a number of seconds"),
        (None, "beacon time must be a number of seconds"),
    ],
)
def test_bad_beacon_times(beacon_time: object, message: str) -> None:
    with pytest.raises(IdentityError, match=message):
        eid_for_time(RADIUS_IK, 10, beacon_time)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: derive_identity_key(bytes(31), BEACON_PUBLIC), "resolver private key must be 32"),
        (lambda: derive_identity_key(RESOLVER_PRIVATE, bytes(33)), "beacon public key must be 32"),
        (
            lambda: derive_identity_key(RESOLVER_PRIVATE, BEACON_PUBLIC, b"x"),
            "resolver public key must be 32 bytes, got 1",
        ),
        (lambda: beacon_identity_key(b"", RESOLVER_PUBLIC), "beacon private key must be 32"),
        (lambda: beacon_identity_key(BEACON_PRIVATE, "ab"), "resolver public key must be 32"),
        (lambda: X25519KeyPair(bytes(32), bytes(3)), "X25519 public key must be 32 bytes"),
    ],
)
def test_bad_exchange_arguments(call: object, message: str) -> None:
    assert callable(call)
    with pytest.raises(IdentityError, match=message):
        call()


def test_identity_errors_are_beacon_errors() -> None:
    assert issubclass(IdentityError, BeaconError)
