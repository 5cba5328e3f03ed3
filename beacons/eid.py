"""Eddystone-EID: ephemeral identifiers and the resolver key exchange.

Computed exactly as Google's Eddystone-EID specification does (``eddystone-eid/
eid-computation.md`` in the ``google/eddystone`` repository).  A beacon holds three things: a
128-bit identity key shared with its resolver, its own 32-bit seconds counter (``counter``
here; it need not match any real clock) and a rotation exponent ``K`` in 0..15: it shows a new
EID every 2**K seconds.

Two AES-128 steps, each over one 16-byte block (all multi-byte fields big-endian):

* temporary key = AES(identity key, block) with the block
  ``00 x 11 | FF (salt) | 00 00 | counter bits 31..16``: it changes every 65536 seconds;
* EID = the first 8 bytes of AES(temporary key, block) with the block
  ``00 x 11 | K | counter with its K low bits cleared (4 bytes)``.

Registration (the specification's secure key exchange): the resolver and the beacon each hold
an X25519 key pair; the identity key is HKDF-SHA256 of their shared secret, with the salt the
resolver's public key followed by the beacon's public key, an empty info ("null context"), and
the key material truncated to its first 16 bytes.  An all-zero shared secret is refused, as the
specification requires.

Pure functions and one small caching class; bytes and integers in, bytes out.  Bad keys and
arguments raise ``IdentityError`` with a message naming the argument.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from struct import Struct

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from beacons.errors import IdentityError

__all__ = [
    "EID_LENGTH",
    "IDENTITY_KEY_LENGTH",
    "MAX_COUNTER",
    "MAX_EXPONENT",
    "TEMPORARY_KEY_PERIOD_S",
    "X25519_KEY_LENGTH",
    "EidCalculator",
    "X25519KeyPair",
    "beacon_identity_key",
    "compute_eid",
    "counter_for_time",
    "derive_identity_key",
    "eid_for_time",
    "generate_resolver_keypair",
    "temporary_key",
]

IDENTITY_KEY_LENGTH = 16
EID_LENGTH = 8
X25519_KEY_LENGTH = 32
MAX_EXPONENT = 15
MAX_COUNTER = 0xFFFF_FFFF
TEMPORARY_KEY_PERIOD_S = 1 << 16
"""The temporary key depends on the counter's top 16 bits only, so it lasts 65536 seconds."""

_SALT = 0xFF
_TEMPORARY_KEY_BLOCK = Struct(">11xB2xH")  # padding, salt, padding, counter bits 31..16
_EID_BLOCK = Struct(">11xBI")  # padding, K, counter with its K low bits cleared
_ZERO_SECRET = bytes(X25519_KEY_LENGTH)


def _aes_block_cipher(key: bytes) -> CipherContext:
    """An AES-128 context that encrypts one 16-byte block per ``update`` call.

    ECB over exactly one block is the bare AES block function the specification asks for; the
    context is stateless between blocks, so one context serves any number of calls.  Callers
    only ever pass whole 16-byte blocks (never a partial one, which ECB would buffer).
    """
    return Cipher(algorithms.AES(key), modes.ECB()).encryptor()  # noqa: S305


def _check_bytes(name: str, value: object, size: int) -> bytes:
    if not isinstance(value, bytes):
        raise IdentityError(f"{name} must be {size} bytes, got {type(value).__name__}")
    if len(value) != size:
        raise IdentityError(f"{name} must be {size} bytes, got {len(value)}")
    return value


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_exponent(exponent: int) -> int:
    if not _is_int(exponent) or not 0 <= exponent <= MAX_EXPONENT:
        raise IdentityError(
            f"rotation exponent must be an integer in 0..{MAX_EXPONENT}, got {exponent!r}"
        )
    return exponent


def _check_counter(counter: int) -> int:
    if not _is_int(counter) or not 0 <= counter <= MAX_COUNTER:
        raise IdentityError(
            f"beacon time counter must be an integer in 0..{MAX_COUNTER}, got {counter!r}"
        )
    return counter


def counter_for_time(beacon_time_s: float) -> int:
    """The beacon's 32-bit seconds counter at ``beacon_time_s`` (seconds since its epoch).

    Fractions of a second are dropped (the counter ticks once a second).  A time before the
    beacon's epoch, past the counter's range, or not finite raises ``IdentityError``.
    """
    if isinstance(beacon_time_s, bool) or not isinstance(beacon_time_s, int | float):
        raise IdentityError(f"beacon time must be a number of seconds, got {beacon_time_s!r}")
    if not math.isfinite(beacon_time_s):
        raise IdentityError(f"beacon time must be finite, got {beacon_time_s!r}")
    counter = math.floor(beacon_time_s)
    if not 0 <= counter <= MAX_COUNTER:
        raise IdentityError(
            f"beacon time must be in 0..{MAX_COUNTER} seconds, got {beacon_time_s!r}"
        )
    return counter


class EidCalculator:
    """The EIDs of one beacon (identity key and rotation exponent), reusing its AES contexts.

    The identity key's AES context is built once.  The temporary key and its context are kept
    for the 65536-second window they belong to (the caching the specification recommends), so
    a run of EIDs within a window costs one AES block each.  An AES context takes about ten
    times as long to build as a block takes to encrypt, and holds about a kilobyte: keep a
    calculator while computing a run of EIDs, not one per registered beacon forever.
    """

    __slots__ = ("_exponent", "_identity", "_mask", "_temporary", "_temporary_key", "_window")

    def __init__(self, identity_key: bytes, exponent: int) -> None:
        _check_bytes("identity key", identity_key, IDENTITY_KEY_LENGTH)
        self._exponent = _check_exponent(exponent)
        self._mask = MAX_COUNTER ^ ((1 << self._exponent) - 1)
        self._identity = _aes_block_cipher(identity_key)
        self._window = -1
        self._temporary_key = b""
        self._temporary: CipherContext | None = None

    @property
    def exponent(self) -> int:
        """The rotation exponent K: a new EID every 2**K seconds."""
        return self._exponent

    @property
    def period_s(self) -> int:
        """The rotation period, 2**K seconds."""
        return 1 << self._exponent

    def temporary_key(self, counter: int) -> bytes:
        """The 16-byte temporary key in force at ``counter``."""
        self._select(_check_counter(counter) >> 16)
        return self._temporary_key

    def eid(self, counter: int) -> bytes:
        """The 8-byte EID the beacon shows at ``counter``."""
        window = _check_counter(counter) >> 16
        cipher = self._temporary if window == self._window else None
        if cipher is None:
            cipher = self._select(window)
        block = _EID_BLOCK.pack(self._exponent, counter & self._mask)
        return cipher.update(block)[:EID_LENGTH]

    def _select(self, window: int) -> CipherContext:
        if window != self._window or self._temporary is None:
            key = self._identity.update(_TEMPORARY_KEY_BLOCK.pack(_SALT, window))
            self._temporary_key = key
            self._temporary = _aes_block_cipher(key)
            self._window = window
        return self._temporary


def temporary_key(identity_key: bytes, counter: int) -> bytes:
    """The 16-byte temporary key of a beacon with ``identity_key`` at ``counter``."""
    return EidCalculator(identity_key, 0).temporary_key(counter)


def compute_eid(identity_key: bytes, exponent: int, counter: int) -> bytes:
    """The 8-byte EID of a beacon with ``identity_key`` and rotation exponent K at ``counter``."""
    return EidCalculator(identity_key, exponent).eid(counter)


def eid_for_time(identity_key: bytes, exponent: int, beacon_time_s: float) -> bytes:
    """The EID at ``beacon_time_s`` seconds on the beacon's own clock (fractions dropped)."""
    calculator = EidCalculator(identity_key, exponent)
    return calculator.eid(counter_for_time(beacon_time_s))


# --- registration: X25519 and HKDF-SHA256 ---------------------------------------------


@dataclass(frozen=True, slots=True)
class X25519KeyPair:
    """A raw X25519 key pair (32 bytes each); the private key is kept out of ``repr``."""

    private: bytes = field(repr=False)
    public: bytes

    def __post_init__(self) -> None:
        _check_bytes("X25519 private key", self.private, X25519_KEY_LENGTH)
        _check_bytes("X25519 public key", self.public, X25519_KEY_LENGTH)


def generate_resolver_keypair() -> X25519KeyPair:
    """A fresh random X25519 key pair for a resolver (or, just the same, for a beacon)."""
    private = X25519PrivateKey.generate()
    return X25519KeyPair(
        private=private.private_bytes_raw(), public=private.public_key().public_bytes_raw()
    )


def _private_key(name: str, private: bytes) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(_check_bytes(name, private, X25519_KEY_LENGTH))


def _shared_secret(own: X25519PrivateKey, name: str, peer_public: bytes) -> bytes:
    peer = X25519PublicKey.from_public_bytes(_check_bytes(name, peer_public, X25519_KEY_LENGTH))
    try:
        secret = own.exchange(peer)
    except ValueError as exc:  # OpenSSL refuses to return the all-zero secret
        raise IdentityError(f"X25519 shared secret is zero: the {name} is invalid") from exc
    if secret == _ZERO_SECRET:
        raise IdentityError(f"X25519 shared secret is zero: the {name} is invalid")
    return secret


def _identity_key(secret: bytes, resolver_public: bytes, beacon_public: bytes) -> bytes:
    # HKDF-Expand's first block does not depend on the requested length, so asking for 16
    # bytes gives exactly the first 16 bytes of any longer output (the spec's truncation).
    hkdf = HKDF(
        algorithm=hashes.SHA256(),
        length=IDENTITY_KEY_LENGTH,
        salt=resolver_public + beacon_public,
        info=b"",
    )
    return hkdf.derive(secret)


def derive_identity_key(
    resolver_private: bytes, beacon_public: bytes, resolver_public: bytes | None = None
) -> bytes:
    """The 16-byte identity key, computed on the resolver's side of the exchange.

    ``resolver_public`` defaults to the public key of ``resolver_private``; when given it must
    be that key (a mismatch means the beacon was registered against another resolver).
    """
    private = _private_key("resolver private key", resolver_private)
    own_public = private.public_key().public_bytes_raw()
    if resolver_public is not None:
        _check_bytes("resolver public key", resolver_public, X25519_KEY_LENGTH)
        if resolver_public != own_public:
            raise IdentityError("resolver public key does not belong to the resolver private key")
    secret = _shared_secret(private, "beacon public key", beacon_public)
    return _identity_key(secret, own_public, beacon_public)


def beacon_identity_key(beacon_private: bytes, resolver_public: bytes) -> bytes:
    """The same identity key, computed on the beacon's (or the shopper app's) side."""
    private = _private_key("beacon private key", beacon_private)
    beacon_public = private.public_key().public_bytes_raw()
    secret = _shared_secret(private, "resolver public key", resolver_public)
    return _identity_key(secret, resolver_public, beacon_public)
