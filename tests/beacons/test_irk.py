"""Tests of resolvable private addresses: the ``ah`` sample data of the Bluetooth Core
Specification, the address marker, resolution, and address parsing.

Source of the vector: Bluetooth Core Specification, Vol 3, Part H, Appendix D.7 ("ah random
address hash function"): IRK ec0234a3 57c8ad05 341010a6 0a397d9b, prand 708194, AES-128 output
159d5fb7 2ebe2311 a48c1bdc c40dfbaa, ah = 0dfbaa; all most significant octet first.  The same
values are checked (in least-significant-first order) by google/bumble ``tests/smp_test.py``
(``test_ah``) and by the Linux kernel's SMP self-test.
"""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from beacons.errors import IdentityError
from beacons.irk import (
    ah,
    ah_block,
    ah_cipher,
    format_address,
    is_resolvable,
    make_resolvable_address,
    parse_address,
    resolves,
)

PROPERTY = settings(database=None, deadline=None, print_blob=True, max_examples=200)

SPEC_IRK = bytes.fromhex("ec0234a3 57c8ad05 341010a6 0a397d9b")
SPEC_PRAND = bytes.fromhex("708194")
SPEC_AES = bytes.fromhex("159d5fb7 2ebe2311 a48c1bdc c40dfbaa")
SPEC_HASH = bytes.fromhex("0dfbaa")
SPEC_ADDRESS = "70:81:94:0D:FB:AA"  # prand || hash
SPEC_ADDRESS_TAIL = bytes.fromhex("81940dfbaa")  # all but the most significant octet

irks = st.binary(min_size=16, max_size=16)
# prand: top two bits 0b01, the other 22 bits neither all 0 nor all 1.
prands = st.integers(min_value=0x40_0001, max_value=0x7F_FFFE).map(lambda n: n.to_bytes(3, "big"))


# --- the specification's sample data -----------------------------------------------------


def test_spec_sample_aes_output() -> None:
    encryptor = Cipher(algorithms.AES(SPEC_IRK), modes.ECB()).encryptor()

    assert encryptor.update(ah_block(SPEC_PRAND)) == SPEC_AES
    assert ah_block(SPEC_PRAND) == bytes(13) + SPEC_PRAND


def test_spec_sample_ah() -> None:
    """ah is the low 24 bits of the AES output: its last three octets."""
    assert ah(SPEC_IRK, SPEC_PRAND) == SPEC_HASH == SPEC_AES[-3:]


def test_spec_sample_address_resolves() -> None:
    assert is_resolvable(SPEC_ADDRESS)
    assert resolves(SPEC_IRK, SPEC_ADDRESS)
    assert resolves(SPEC_IRK, SPEC_ADDRESS.lower())
    assert resolves(SPEC_IRK, SPEC_PRAND + SPEC_HASH)


def test_the_over_the_air_order_is_the_reverse() -> None:
    """Over the air (and in bumble's test) the same address is least significant first."""
    over_the_air = bytes.fromhex("aafb0d948170")

    assert resolves(SPEC_IRK, bytes(reversed(over_the_air)))
    assert not resolves(SPEC_IRK, over_the_air)


def test_the_reference_order_of_the_irk_matters() -> None:
    assert not resolves(bytes(reversed(SPEC_IRK)), SPEC_ADDRESS)


@pytest.mark.parametrize("position", range(48))
def test_any_flipped_bit_stops_resolution(position: int) -> None:
    value = int.from_bytes(SPEC_PRAND + SPEC_HASH, "big") ^ (1 << position)

    assert not resolves(SPEC_IRK, value.to_bytes(6, "big"))


def test_another_irk_does_not_resolve() -> None:
    other = bytes([SPEC_IRK[0] ^ 1]) + SPEC_IRK[1:]

    assert not resolves(other, SPEC_ADDRESS)


def test_make_resolvable_address_reproduces_the_sample() -> None:
    assert make_resolvable_address(SPEC_IRK, SPEC_PRAND) == SPEC_ADDRESS


# --- the resolvable marker -------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "resolvable"),
    [
        (0x00, False),
        (0x3F, False),
        (0x40, True),
        (0x5A, True),
        (0x7F, True),
        (0x80, False),
        (0xBF, False),
        (0xC0, False),
        (0xFF, False),
    ],
)
def test_only_the_top_bits_01_mark_a_resolvable_address(first: int, resolvable: bool) -> None:
    address = bytes([first]) + SPEC_ADDRESS_TAIL

    assert is_resolvable(address) is resolvable
    assert is_resolvable(format_address(address)) is resolvable


def test_an_address_without_the_marker_never_resolves() -> None:
    """Same hash and low prand bits, but a static random address (top bits 0b11)."""
    static = bytes([0xC0 | (SPEC_PRAND[0] & 0x3F)]) + SPEC_ADDRESS_TAIL

    assert not resolves(SPEC_IRK, static)


# --- parsing ------------------------------------------------------------------------------


def test_parse_and_format() -> None:
    raw = bytes.fromhex("708194 0dfbaa")

    assert parse_address("70:81:94:0d:fb:aa") == raw
    assert parse_address("70:81:94:0D:FB:AA") == raw
    assert parse_address(raw) is raw
    assert format_address(raw) == SPEC_ADDRESS


@pytest.mark.parametrize(
    "text",
    [
        "",
        "70:81:94:0D:FB",
        "70:81:94:0D:FB:AA:00",
        "708194:0DFBAA",
        "7081940DFBAA",
        "70-81-94-0D-FB-AA",
        "70:81:94:0D:FB:AG",
        " 0:81:94:0D:FB:AA",
        "70:81:94:0D:FB: A",
        "70:81:94:0D:FB:A ",
        "7:081:94:0D:FB:AA",
        "70:81:94:0D:FB:AÄ",
        "70:81:94:0D:FB:AA\n",
        "+0:81:94:0D:FB:AA",
    ],
)
def test_malformed_text_addresses(text: str) -> None:
    with pytest.raises(IdentityError, match="Bluetooth address must look like AA:BB:CC:DD:EE:FF"):
        parse_address(text)
    with pytest.raises(IdentityError):
        resolves(SPEC_IRK, text)
    with pytest.raises(IdentityError):
        is_resolvable(text)


@pytest.mark.parametrize(("raw", "size"), [(b"", 0), (bytes(5), 5), (bytes(7), 7)])
def test_malformed_byte_addresses(raw: bytes, size: int) -> None:
    with pytest.raises(IdentityError, match=f"Bluetooth address must be 6 bytes, got {size}"):
        parse_address(raw)


@pytest.mark.parametrize("value", [None, 0x708194_0DFBAA, bytearray(6), ["70"]])
def test_addresses_of_other_types(value: object) -> None:
    with pytest.raises(IdentityError, match="Bluetooth address must be text or bytes"):
        parse_address(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: ah(bytes(15), SPEC_PRAND), "IRK must be 16 bytes, got 15"),
        (lambda: ah("ec" * 16, SPEC_PRAND), "IRK must be 16 bytes, got str"),
        (lambda: ah(SPEC_IRK, bytes(4)), "prand must be 3 bytes, got 4"),
        (lambda: ah_cipher(bytes(32)), "IRK must be 16 bytes, got 32"),
        (lambda: resolves(bytes(8), SPEC_ADDRESS), "IRK must be 16 bytes, got 8"),
        (lambda: format_address(bytes(5)), "Bluetooth address must be 6 bytes, got 5"),
        (lambda: make_resolvable_address(SPEC_IRK, b"\xc0\x00\x01"), "start with the bits 0b01"),
        (lambda: make_resolvable_address(SPEC_IRK, b"\x40\x00\x00"), "not be all 0 or all 1"),
        (lambda: make_resolvable_address(SPEC_IRK, b"\x7f\xff\xff"), "not be all 0 or all 1"),
    ],
)
def test_bad_arguments(call: object, message: str) -> None:
    assert callable(call)
    with pytest.raises(IdentityError, match=message):
        call()


def test_an_irk_is_checked_even_for_an_address_that_cannot_resolve() -> None:
    with pytest.raises(IdentityError, match="IRK must be 16 bytes"):
        resolves(b"short", "C0:00:00:00:00:01")


# --- properties ---------------------------------------------------------------------------


@PROPERTY
@given(st.binary(min_size=6, max_size=6))
def test_format_and_parse_round_trip(raw: bytes) -> None:
    text = format_address(raw)

    assert parse_address(text) == raw
    assert parse_address(text.lower()) == raw
    assert is_resolvable(text) == (raw[0] >> 6 == 0b01)


@PROPERTY
@given(irks, prands)
def test_a_generated_address_resolves_with_its_irk(irk: bytes, prand: bytes) -> None:
    address = make_resolvable_address(irk, prand)

    assert is_resolvable(address)
    assert resolves(irk, address)
    assert parse_address(address)[:3] == prand


@PROPERTY
@given(irks, irks, prands)
def test_a_generated_address_matches_another_irk_only_by_a_hash_collision(
    irk: bytes, other: bytes, prand: bytes
) -> None:
    address = make_resolvable_address(irk, prand)

    assert resolves(other, address) == (ah(other, prand) == ah(irk, prand))
