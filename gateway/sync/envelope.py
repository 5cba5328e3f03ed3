"""The wire codec of HQ sync, sans-I/O: signed HQ messages, resync requests, store events.

Every HQ → store message travels in a signed envelope::

    {"key_id": "hq-2026-11", "payload": "<base64 payload bytes>", "sig": "<base64 Ed25519>"}

The signature covers the payload bytes exactly as carried, so nothing is canonicalised and a
verifier never parses what it has not verified. ``open_envelope`` checks, in this order: the
envelope's shape, the key (known, not revoked), the signature, then the payload's schema and
that it is addressed to this store; any failure raises :class:`SyncError` with a short
``reason`` for counting. Sequencing (duplicates, gaps) is the applier's job, not this module's.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal, TypeVar

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from gateway.errors import PayloadError

__all__ = [
    "ENVELOPE_VERSION",
    "EVENT_TYPES",
    "KINDS",
    "STREAMS",
    "Event",
    "Keyring",
    "Message",
    "Receipt",
    "ResyncRequest",
    "SyncError",
    "decode_event",
    "decode_resync",
    "encode_event",
    "encode_resync",
    "open_envelope",
    "open_receipt",
    "seal",
    "seal_receipt",
]

ENVELOPE_VERSION: Final = 1
STREAMS: Final = ("offers", "templates", "profiles", "consents", "keys", "config")
KINDS: Final = ("delta", "snapshot_begin", "snapshot_item", "snapshot_end")
EVENT_TYPES: Final = (
    "visit",
    "impression",
    "redemption",
    "consent",
    "erasure",
    "decision",
    "rejection",
)
MAX_WIRE_BYTES: Final = 1 << 20
MAX_RECEIPT_RANGES: Final = 4096

Stream = Literal["offers", "templates", "profiles", "consents", "keys", "config"]
Kind = Literal["delta", "snapshot_begin", "snapshot_item", "snapshot_end"]
EventType = Literal[
    "visit", "impression", "redemption", "consent", "erasure", "decision", "rejection"
]
_Id = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
_Seq = Annotated[int, msgspec.Meta(ge=0, le=2**62)]


class SyncError(PayloadError):
    """A sync message was rejected; ``reason`` is a stable label for counting."""


class _Envelope(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    key_id: _Id
    payload: str
    sig: str


class Message(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One HQ → store message (the payload of a signed envelope)."""

    v: int = ENVELOPE_VERSION
    store: _Id
    stream: Stream
    seq: Annotated[int, msgspec.Meta(ge=1, le=2**62)]
    kind: Kind
    issued_at: int = 0
    body: dict[str, Any]


class Receipt(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """HQ → store, signed like a message: these events of ``store`` are recorded at HQ, so
    the store may delete them from its outbox. ``ranges`` are inclusive ``[first, last]``
    outbox sequences. ``type`` keeps a receipt and a stream message from ever passing for
    each other, whatever key signed them."""

    v: int = ENVELOPE_VERSION
    type: Literal["receipt"] = "receipt"
    store: _Id
    ranges: Annotated[list[tuple[_Seq, _Seq]], msgspec.Meta(max_length=MAX_RECEIPT_RANGES)]
    issued_at: int = 0


class ResyncRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Store → HQ: send me everything of ``stream`` after ``since``."""

    v: int = ENVELOPE_VERSION
    store: _Id
    stream: Stream
    since: _Seq


class Event(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Store → HQ: one outbox entry; ``(store, seq)`` is its idempotency key."""

    v: int = ENVELOPE_VERSION
    store: _Id
    seq: Annotated[int, msgspec.Meta(ge=1, le=2**62)]
    type: EventType
    at: int
    body: dict[str, Any]


_Signed = TypeVar("_Signed", Message, Receipt)
_envelope_decoder = msgspec.json.Decoder(_Envelope)
_message_decoder = msgspec.json.Decoder(Message)
_receipt_decoder = msgspec.json.Decoder(Receipt)
_resync_decoder = msgspec.json.Decoder(ResyncRequest)
_event_decoder = msgspec.json.Decoder(Event)
_encoder = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class _Key:
    public: Ed25519PublicKey
    revoked: bool


class Keyring:
    """The HQ signing keys this store trusts: added and revoked through the ``keys`` stream
    (itself signed by a key already trusted), bootstrapped from the configuration."""

    def __init__(self, keys: Iterable[tuple[str, bytes]] = ()) -> None:
        self._keys: dict[str, _Key] = {}
        for key_id, public in keys:
            self.add(key_id, public)

    def add(self, key_id: str, public: bytes) -> None:
        if key_id in self._keys and self._keys[key_id].revoked:
            raise SyncError("revoked_key", f"key {key_id} was revoked and cannot come back")
        try:
            self._keys[key_id] = _Key(Ed25519PublicKey.from_public_bytes(public), False)
        except ValueError as exc:
            raise SyncError("bad_key", f"key {key_id}: {exc}") from exc

    def revoke(self, key_id: str) -> None:
        key = self._keys.get(key_id)
        if key is not None:
            self._keys[key_id] = _Key(key.public, True)

    def status(self, key_id: str) -> str:
        key = self._keys.get(key_id)
        return "unknown" if key is None else "revoked" if key.revoked else "active"

    def active(self) -> list[str]:
        return sorted(k for k, v in self._keys.items() if not v.revoked)

    def verify(self, key_id: str, payload: bytes, signature: bytes) -> None:
        key = self._keys.get(key_id)
        if key is None:
            raise SyncError("unknown_key", f"key {key_id} is not trusted")
        if key.revoked:
            raise SyncError("revoked_key", f"key {key_id} was revoked")
        try:
            key.public.verify(signature, payload)
        except InvalidSignature:
            raise SyncError("bad_signature", f"signature by {key_id} does not verify") from None


def seal(message: Message, key_id: str, private_key: Ed25519PrivateKey) -> bytes:
    """The wire bytes of ``message`` signed by ``private_key`` (HQ's side)."""
    return _sign(_encoder.encode(message), key_id, private_key)


def seal_receipt(receipt: Receipt, key_id: str, private_key: Ed25519PrivateKey) -> bytes:
    """The wire bytes of ``receipt`` signed by ``private_key`` (HQ's side)."""
    return _sign(_encoder.encode(receipt), key_id, private_key)


def open_envelope(wire: bytes, keyring: Keyring, store: str) -> Message:
    """Verify and decode an HQ message for ``store``; ``SyncError`` on any failure."""
    return _addressed(_message_decoder, _verified(wire, keyring), store)


def open_receipt(wire: bytes, keyring: Keyring, store: str) -> Receipt:
    """Verify and decode HQ's receipt for ``store``; ``SyncError`` on any failure, including
    a range whose first sequence is above its last."""
    receipt = _addressed(_receipt_decoder, _verified(wire, keyring), store)
    for first, last in receipt.ranges:
        if first < 1 or first > last:
            raise SyncError("malformed", f"receipt range [{first}, {last}]")
    return receipt


def _addressed(decoder: msgspec.json.Decoder[_Signed], payload: bytes, store: str) -> _Signed:
    """A verified payload decoded, of this envelope version, addressed to ``store``."""
    try:
        decoded = decoder.decode(payload)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise SyncError("malformed", str(exc)) from exc
    if decoded.v != ENVELOPE_VERSION:
        raise SyncError("unsupported_version", f"v={decoded.v}")
    if decoded.store != store:
        raise SyncError("wrong_store", f"for {decoded.store}, this is {store}")
    return decoded


def _sign(payload: bytes, key_id: str, private_key: Ed25519PrivateKey) -> bytes:
    envelope = _Envelope(
        key_id=key_id,
        payload=base64.b64encode(payload).decode(),
        sig=base64.b64encode(private_key.sign(payload)).decode(),
    )
    return _encoder.encode(envelope)


def _verified(wire: bytes, keyring: Keyring) -> bytes:
    """The payload of a signed envelope, once its shape, key and signature check out."""
    if len(wire) > MAX_WIRE_BYTES:
        raise SyncError("oversized", f"{len(wire)} bytes > {MAX_WIRE_BYTES}")
    try:
        envelope = _envelope_decoder.decode(wire)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise SyncError("malformed", str(exc)) from exc
    try:
        payload = base64.b64decode(envelope.payload, validate=True)
        signature = base64.b64decode(envelope.sig, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SyncError("malformed", f"bad base64: {exc}") from exc
    keyring.verify(envelope.key_id, payload, signature)
    return payload


def encode_resync(request: ResyncRequest) -> bytes:
    return _encoder.encode(request)


def decode_resync(wire: bytes) -> ResyncRequest:
    try:
        return _resync_decoder.decode(wire)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise SyncError("malformed", str(exc)) from exc


def encode_event(event: Event) -> bytes:
    return _encoder.encode(event)


def decode_event(wire: bytes) -> Event:
    try:
        return _event_decoder.decode(wire)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise SyncError("malformed", str(exc)) from exc
