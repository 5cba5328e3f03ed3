"""Bluetooth resolvable private addresses (RPAs) and the random address hash function ``ah``.

A phone using LE privacy advertises from an address that changes every few minutes.  Peers it
bonded with hold its Identity Resolving Key (IRK) and can tell that a new address is still that
phone; nobody else can.  Bluetooth Core Specification: ``ah`` in Vol 3, Part H, Section 2.2.2;
address generation and resolution in Vol 6, Part B, Section 1.3.2.

Byte order: everything here is written as the Core Specification writes its values and as
addresses are shown to people, most significant octet first.  An address
``"70:81:94:0D:FB:AA"`` (or the six bytes ``70 81 94 0d fb aa``) is ``prand || hash``: the top
24 bits are ``prand`` = 0x708194, whose two most significant bits are 0b01 for a resolvable
private address, and the low 24 bits are ``hash`` = 0x0dfbaa.  The address resolves with an
IRK when ``hash == ah(IRK, prand)``, where ``ah(k, r)`` is the low 24 bits of
``AES-128(k, 104 zero bits || r)``.  IRKs are taken in the same order (as in the
specification's sample data); a stack that stores them least significant octet first (as it
sends them over the air) needs ``bytes(reversed(irk))``, and so do over-the-air addresses.

Only random addresses can be resolvable: callers that know the address type should not pass
public addresses (which the two-bit check cannot tell apart).  Bad input raises
``IdentityError``.
"""

from __future__ import annotations

from struct import Struct

from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes

from beacons.errors import IdentityError

__all__ = [
    "ADDRESS_LENGTH",
    "HASH_LENGTH",
    "IRK_LENGTH",
    "PRAND_LENGTH",
    "ah",
    "ah_block",
    "ah_cipher",
    "format_address",
    "is_resolvable",
    "make_resolvable_address",
    "parse_address",
    "resolves",
]

ADDRESS_LENGTH = 6
IRK_LENGTH = 16
PRAND_LENGTH = 3
HASH_LENGTH = 3

_AH_BLOCK = Struct(">13x3s")  # r' = 104 zero bits || r
_HASH_OFFSET = _AH_BLOCK.size - HASH_LENGTH  # the low 24 bits of the AES output
_TEXT_LENGTH = 3 * ADDRESS_LENGTH - 1
_SEPARATORS = ":" * (ADDRESS_LENGTH - 1)
_TYPE_MASK = 0xC0  # the two most significant bits of the address
_RESOLVABLE = 0x40  # 0b01: resolvable private address


def _check_bytes(name: str, value: object, size: int) -> bytes:
    if not isinstance(value, bytes):
        raise IdentityError(f"{name} must be {size} bytes, got {type(value).__name__}")
    if len(value) != size:
        raise IdentityError(f"{name} must be {size} bytes, got {len(value)}")
    return value


def parse_address(address: str | bytes) -> bytes:
    """The six bytes (most significant first) of ``"AA:BB:CC:DD:EE:FF"`` (any case) or of six
    bytes given as they are."""
    if isinstance(address, bytes):
        if len(address) != ADDRESS_LENGTH:
            raise IdentityError(
                f"Bluetooth address must be {ADDRESS_LENGTH} bytes, got {len(address)}"
            )
        return address
    if not isinstance(address, str):
        raise IdentityError(
            f"Bluetooth address must be text or bytes, got {type(address).__name__}"
        )
    if len(address) == _TEXT_LENGTH and address[2::3] == _SEPARATORS:
        try:
            raw = bytes.fromhex(address.replace(":", ""))
        except ValueError:
            pass
        else:
            # Twelve characters make six bytes only if all twelve are hex digits
            # (fromhex would skip whitespace and return fewer).
            if len(raw) == ADDRESS_LENGTH:
                return raw
    raise IdentityError(f"Bluetooth address must look like AA:BB:CC:DD:EE:FF, got {address!r}")


def format_address(address: bytes) -> str:
    """``"AA:BB:CC:DD:EE:FF"`` for six bytes, most significant first."""
    return _check_bytes("Bluetooth address", address, ADDRESS_LENGTH).hex(":").upper()


def ah_cipher(irk: bytes) -> CipherContext:
    """An AES-128 context keyed with ``irk`` for repeated ``ah`` computations.

    Each ``update`` must get exactly one 16-byte block (ECB over one block is the bare AES
    function the specification names).  Building the context costs about ten blocks' worth of
    time, so a resolver builds one per IRK and keeps it.
    """
    key = _check_bytes("IRK", irk, IRK_LENGTH)
    return Cipher(algorithms.AES(key), modes.ECB()).encryptor()  # noqa: S305


def ah_block(prand: bytes) -> bytes:
    """The 16-byte AES input for ``prand``: 13 zero bytes, then ``prand``."""
    return _AH_BLOCK.pack(prand)


def ah(irk: bytes, prand: bytes) -> bytes:
    """The random address hash function: 3 bytes, ``AES-128(irk, 0**13 || prand)`` mod 2**24."""
    cipher = ah_cipher(irk)
    block = _AH_BLOCK.pack(_check_bytes("prand", prand, PRAND_LENGTH))
    return cipher.update(block)[_HASH_OFFSET:]


def is_resolvable(address: str | bytes) -> bool:
    """Whether ``address`` has the resolvable private address marker (top two bits 0b01)."""
    return parse_address(address)[0] & _TYPE_MASK == _RESOLVABLE


def resolves(irk: bytes, address: str | bytes) -> bool:
    """Whether ``address`` is a resolvable private address generated with ``irk``."""
    raw = parse_address(address)
    _check_bytes("IRK", irk, IRK_LENGTH)
    if raw[0] & _TYPE_MASK != _RESOLVABLE:
        return False
    return ah(irk, raw[:PRAND_LENGTH]) == raw[PRAND_LENGTH:]


def make_resolvable_address(irk: bytes, prand: bytes) -> str:
    """The resolvable private address ``prand || ah(irk, prand)`` as text.

    ``prand``'s two most significant bits must be 0b01, and its other 22 bits neither all 0
    nor all 1 (Vol 6, Part B, Section 1.3.2.2).
    """
    _check_bytes("prand", prand, PRAND_LENGTH)
    if prand[0] & _TYPE_MASK != _RESOLVABLE:
        raise IdentityError(f"prand must start with the bits 0b01, got {prand.hex()}")
    random_part = int.from_bytes(prand, "big") & 0x3F_FFFF
    if random_part in (0, 0x3F_FFFF):
        raise IdentityError(f"prand's random bits must not be all 0 or all 1, got {prand.hex()}")
    return format_address(prand + ah(irk, prand))
