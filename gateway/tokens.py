"""App and device tokens for the shopper API: issue, verify, revoke (sans-I/O core, LMDB edge).

Why a MAC and a server-held secret. The gateway is both the only issuer and the only verifier
of its tokens, so there is no third party that would need a public key: a symmetric
HMAC-SHA256 under a secret that never leaves the store is the smallest construction that is
enough, needs no key distribution and no asymmetric library, and verifies in microseconds on a
Raspberry Pi. The secret is 32 random bytes kept in ``meta/token_secret``, created the first
time a token is issued (:func:`secret_op`); a backup carries it, so restored tokens stay valid.

Wire format (one line of URL-safe ASCII, at most :data:`MAX_TOKEN_CHARS`)::

    mt1.<base64url-nopad(JSON claims)>.<base64url-nopad(HMAC-SHA256(secret, "mt1." + claims))>

``mt1`` names the format and its version and is covered by the MAC. Claims (JSON, unknown
fields refused)::

    r    role: shopper | kiosk | staff | admin
    s    subject: shopper id, kiosk id, staff id or admin name
    iat  issued at, integer seconds since the epoch
    exp  expires at, integer seconds since the epoch (refused from ``now >= exp``)
    j    jti: 32 lowercase hex characters, random, the token's own id
    g    the subject's token generation when the token was issued (see below)

:meth:`Tokens.verify` checks the shape, then the MAC with :func:`hmac.compare_digest`, and only
then parses the JSON: no parser ever sees bytes an attacker chose. Then the times: expired from
``exp``, and refused when ``iat`` lies more than :data:`MAX_CLOCK_SKEW_S` ahead (a token from
a clock that ran ahead, or a secret that leaked). Every refusal is an
:class:`~gateway.errors.AuthError` with a stable ``code``; messages never echo the token.

Revocation, two ways, both in the ``tokens`` database and both checked by
:func:`check_not_revoked` in one read transaction:

* by token: ``jti:<jti>`` -> ``exp`` (8 bytes big-endian). One lost phone, one kiosk replaced.
  The entry is needed only until the token expires by itself; :func:`sweep_op` drops it then.
* by subject: ``gen:<role>:<subject>`` -> generation (8 bytes big-endian). Every token carries
  the generation of its subject at issue time; :func:`revoke_subject_op` moves the generation on
  and so revokes every token issued before, without knowing their ids ("log out everywhere",
  and a shopper's erasure). The entry holds no more than the subject's id, like a tombstone.

Writes are operations (``op(txn) -> T``) for the store's single
:class:`~gateway.store.writer.Writer`; reads are short read transactions on the caller's thread,
with ``lmdb.Error`` translated into :class:`~gateway.errors.StoreError`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import os
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal, get_args

import lmdb
import msgspec

from gateway.errors import AuthError, StoreError
from gateway.store.database import Database, delete_under

__all__ = [
    "MAX_CLOCK_SKEW_S",
    "MAX_TOKEN_CHARS",
    "MIN_SECRET_BYTES",
    "ROLES",
    "SUBJECT_PATTERN",
    "Claims",
    "Role",
    "Tokens",
    "check_not_revoked",
    "generation",
    "read_secret",
    "require_role",
    "revoke_op",
    "revoke_subject_op",
    "secret_op",
    "sweep_op",
]

Role = Literal["shopper", "kiosk", "staff", "admin"]
ROLES: Final[tuple[Role, ...]] = get_args(Role)
SUBJECT_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}\Z"
"""A subject id. ``\\Z``, not ``$``: Python's ``$`` also matches before a final newline."""

MAX_TOKEN_CHARS: Final = 2048
MAX_CLOCK_SKEW_S: Final = 300
MIN_SECRET_BYTES: Final = 32

_VERIFIED_MEMO: Final = 4096  # tokens that verified, kept to skip their MAC next time
_PREFIX: Final = "mt1"
_MAC_CHARS: Final = 43  # 32 bytes of HMAC-SHA256, base64url without padding
_B64URL: Final = re.compile(r"[A-Za-z0-9_-]+\Z")
_SUBJECT: Final = re.compile(SUBJECT_PATTERN)
_SECRET_KEY: Final = b"token_secret"
_JTI_PREFIX: Final = b"jti:"
_GEN_PREFIX: Final = b"gen:"
_U64: Final = struct.Struct(">Q")
_INT64_MAX: Final = (1 << 63) - 1  # msgspec bounds are int64; 8 bytes BE hold them

_Count = Annotated[int, msgspec.Meta(ge=0, le=_INT64_MAX)]


class _Wire(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """The claims as they travel; the one schema, decoded in one place."""

    r: Role
    s: Annotated[str, msgspec.Meta(pattern=SUBJECT_PATTERN)]
    iat: _Count
    exp: _Count
    j: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{32}\Z")]
    g: _Count


_ENCODER: Final = msgspec.json.Encoder()
_DECODER: Final = msgspec.json.Decoder(_Wire)


@dataclass(frozen=True, slots=True)
class Claims:
    """What a verified token says. Times are integer seconds since the epoch."""

    role: Role
    subject: str
    issued_at: int
    expires_at: int
    jti: str
    generation: int


def _claims(wire: _Wire) -> Claims:
    return Claims(wire.r, wire.s, wire.iat, wire.exp, wire.j, wire.g)


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


class Tokens:
    """Issues and verifies tokens under one secret (pure: time is an argument)."""

    __slots__ = ("_mac", "_verified")

    def __init__(self, secret: bytes) -> None:
        if not isinstance(secret, bytes) or len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"a token secret must be at least {MIN_SECRET_BYTES} bytes")
        # Keyed once; each token copies this state and feeds only its claims part.
        self._mac = hmac.new(secret, f"{_PREFIX}.".encode(), hashlib.sha256)
        self._verified: dict[str, Claims] = {}

    def _sign(self, claims_part: str) -> str:
        mac = self._mac.copy()
        mac.update(claims_part.encode("ascii"))
        return _b64encode(mac.digest())

    def issue(
        self, role: Role, subject: str, *, now: float, ttl_s: float, generation: int = 0
    ) -> tuple[str, Claims]:
        """A new token and its claims: issued at ``now`` (whole seconds, rounded down),
        expiring ``ttl_s`` later (rounded down, at least 1 s). ``ValueError`` for a role,
        subject, lifetime or generation the token format cannot carry."""
        if not math.isfinite(now) or not math.isfinite(ttl_s) or ttl_s < 1:
            raise ValueError(f"need a finite now and ttl_s >= 1, got {now!r} and {ttl_s!r}")
        issued = math.floor(now)
        wire = _Wire(
            r=role,
            s=subject,
            iat=issued,
            exp=math.floor(now + ttl_s),
            j=os.urandom(16).hex(),
            g=generation,
        )
        body = _ENCODER.encode(wire)
        try:
            _DECODER.decode(body)  # what this issues, verify() must accept: one schema
        except msgspec.ValidationError as exc:
            raise ValueError(f"cannot issue a token: {exc}") from exc
        claims_part = _b64encode(body)
        token = f"{_PREFIX}.{claims_part}.{self._sign(claims_part)}"
        return token, _claims(wire)

    def authenticate(self, token: str) -> Claims:
        """The claims of a token whose shape and MAC are right, whatever its times say (for
        revoking an expired token). Use :meth:`verify` to accept a request. A token seen
        recently is answered from a small memo of tokens that verified (a screen or an app
        sends the same one on every request); a token that failed is never kept."""
        known = self._verified.get(token)
        if known is not None:
            return known
        claims = self._authenticate(token)
        if len(self._verified) >= _VERIFIED_MEMO:
            self._verified.pop(next(iter(self._verified)))
        self._verified[token] = claims
        return claims

    def _authenticate(self, token: str) -> Claims:
        if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
            raise AuthError(
                "token_malformed", f"token is not a string of at most {MAX_TOKEN_CHARS} characters"
            )
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != _PREFIX:
            raise AuthError("token_malformed", f"token is not {_PREFIX}.<claims>.<mac>")
        _, claims_part, mac_part = parts
        if (
            not _B64URL.match(claims_part)
            or not _B64URL.match(mac_part)
            or len(mac_part) != _MAC_CHARS
        ):
            raise AuthError("token_malformed", "token parts are not base64url without padding")
        # Both sides are ASCII now; comparing the canonical encodings refuses any other
        # spelling of the same MAC bytes as well.
        if not hmac.compare_digest(self._sign(claims_part), mac_part):
            raise AuthError("token_bad_signature", "token signature does not match")
        try:
            body = base64.urlsafe_b64decode(claims_part + "=" * (-len(claims_part) % 4))
            wire = _DECODER.decode(body)
        except (binascii.Error, ValueError, msgspec.DecodeError) as exc:
            # msgspec.ValidationError is a DecodeError; a base64 error is a ValueError.
            raise AuthError("token_malformed", f"token claims do not decode: {exc}") from exc
        return _claims(wire)

    def verify(self, token: str, *, now: float) -> Claims:
        """The claims of a token that is well formed, signed under this secret and valid at
        ``now``. Raises :class:`AuthError` (``token_malformed``, ``token_bad_signature``,
        ``token_expired``). Revocation is checked apart: :func:`check_not_revoked`."""
        claims = self.authenticate(token)
        if now >= claims.expires_at:
            raise AuthError("token_expired", "token has expired")
        if claims.issued_at > now + MAX_CLOCK_SKEW_S:
            raise AuthError("token_expired", "token is issued in the future")
        return claims


def require_role(claims: Claims, *roles: Role) -> None:
    """Refuse (403 ``forbidden``) a valid token whose role is not one of ``roles``."""
    if claims.role not in roles:
        raise AuthError("forbidden", f"a {claims.role} token may not do this", status=403)


# ----- the store: writes are operations for the Writer -----


def secret_op(db: Database) -> Callable[[Any], bytes]:
    """A write operation returning the token secret, creating 32 random bytes the first time
    (in the same transaction, so two processes racing both end with the one stored)."""

    def secret(txn: Any) -> bytes:
        meta = db.handle("meta")
        found = txn.get(_SECRET_KEY, db=meta)
        if found is not None:
            return _checked_secret(bytes(found))
        fresh = os.urandom(MIN_SECRET_BYTES)
        txn.put(_SECRET_KEY, fresh, db=meta)
        return fresh

    return secret


def revoke_op(db: Database, claims: Claims) -> Callable[[Any], bool]:
    """A write operation listing ``claims.jti`` as revoked until the token expires; returns
    whether it was not listed before."""
    key = _JTI_PREFIX + claims.jti.encode()
    value = _U64.pack(claims.expires_at)

    def revoke(txn: Any) -> bool:
        return bool(txn.put(key, value, db=db.handle("tokens"), overwrite=False))

    return revoke


def revoke_subject_op(db: Database, role: Role, subject: str) -> Callable[[Any], int]:
    """A write operation moving the subject's generation on, which revokes every token of
    theirs issued before; returns the new generation."""
    key = _generation_key(role, subject)

    def bump(txn: Any) -> int:
        tokens = db.handle("tokens")
        current = _read_u64(txn.get(key, db=tokens), key)
        txn.put(key, _U64.pack(current + 1), db=tokens)
        return current + 1

    return bump


def sweep_op(db: Database, now: float) -> Callable[[Any], int]:
    """A write operation dropping revoked-token entries whose token has expired by ``now``
    (it is refused as expired from then on); returns how many it dropped."""

    def sweep(txn: Any) -> int:
        return delete_under(
            txn,
            db.handle("tokens"),
            _JTI_PREFIX,
            lambda key, value: now >= _read_u64(value, key),
        )

    return sweep


# ----- the store: short read transactions -----


def read_secret(db: Database) -> bytes | None:
    """The token secret, or None while no token was ever issued from this store."""
    try:
        with db.env.begin(db=db.handle("meta"), buffers=False) as txn:
            found: bytes | None = txn.get(_SECRET_KEY)
    except lmdb.Error as exc:
        raise StoreError(f"read of the token secret failed: {exc}") from exc
    return None if found is None else _checked_secret(found)


def generation(db: Database, role: Role, subject: str) -> int:
    """The subject's current token generation (0 when never revoked)."""
    key = _generation_key(role, subject)
    try:
        with db.env.begin(db=db.handle("tokens"), buffers=False) as txn:
            return _read_u64(txn.get(key), key)
    except lmdb.Error as exc:
        raise StoreError(f"read of a token generation failed: {exc}") from exc


def check_not_revoked(db: Database, claims: Claims) -> None:
    """Refuse (``token_revoked``) a token revoked by its id or by its subject's generation."""
    jti_key = _JTI_PREFIX + claims.jti.encode()
    gen_key = _generation_key(claims.role, claims.subject)
    try:
        with db.env.begin(db=db.handle("tokens"), buffers=False) as txn:
            listed = txn.get(jti_key) is not None
            current = _read_u64(txn.get(gen_key), gen_key)
    except lmdb.Error as exc:
        raise StoreError(f"read of token revocations failed: {exc}") from exc
    if listed or claims.generation < current:
        raise AuthError("token_revoked", "token has been revoked")


# ----- helpers -----


def _generation_key(role: str, subject: str) -> bytes:
    if role not in ROLES:
        raise ValueError(f"role {role!r} is not one of {', '.join(ROLES)}")
    if not _SUBJECT.match(subject):
        raise ValueError(f"subject {subject!r} does not match {SUBJECT_PATTERN}")
    return _GEN_PREFIX + f"{role}:{subject}".encode()


def _read_u64(raw: bytes | None, key: bytes) -> int:
    if raw is None:
        return 0
    if len(raw) != _U64.size:
        raise StoreError(f"tokens/{key.decode()} is {len(raw)} bytes, expected {_U64.size}")
    value: int = _U64.unpack(raw)[0]
    return value


def _checked_secret(raw: bytes) -> bytes:
    if len(raw) < MIN_SECRET_BYTES:
        raise StoreError(f"meta/token_secret is {len(raw)} bytes, expected {MIN_SECRET_BYTES}")
    return raw
