"""HQ's receipts on the wire: signed like stream messages, never mistaken for one."""

from __future__ import annotations

import base64

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.sync.envelope import (
    MAX_RECEIPT_RANGES,
    Keyring,
    Message,
    Receipt,
    SyncError,
    open_envelope,
    open_receipt,
    seal,
    seal_receipt,
)

STORE = "store-1"
KEY = Ed25519PrivateKey.generate()
RING = Keyring([("hq-1", KEY.public_key().public_bytes_raw())])


def sealed(receipt: Receipt, key: Ed25519PrivateKey = KEY, key_id: str = "hq-1") -> bytes:
    return seal_receipt(receipt, key_id, key)


def test_a_receipt_round_trips() -> None:
    receipt = Receipt(store=STORE, ranges=[(1, 40), (42, 42)], issued_at=1_795_378_600_123)
    assert open_receipt(sealed(receipt), RING, STORE) == receipt


def reason(wire: bytes, store: str = STORE) -> str:
    with pytest.raises(SyncError) as caught:
        open_receipt(wire, RING, store)
    return caught.value.reason


def test_a_forged_unknown_or_revoked_key_is_refused() -> None:
    receipt = Receipt(store=STORE, ranges=[(1, 1)])
    assert reason(sealed(receipt, Ed25519PrivateKey.generate())) == "bad_signature"
    assert reason(sealed(receipt, key_id="hq-9")) == "unknown_key"
    ring = Keyring([("hq-1", KEY.public_key().public_bytes_raw())])
    ring.revoke("hq-1")
    with pytest.raises(SyncError, match="revoked"):
        open_receipt(sealed(receipt), ring, STORE)


def test_another_stores_receipt_or_a_bad_range_is_refused() -> None:
    assert reason(sealed(Receipt(store="store-2", ranges=[(1, 1)]))) == "wrong_store"
    assert reason(sealed(Receipt(store=STORE, ranges=[(5, 4)]))) == "malformed"
    assert reason(sealed(Receipt(store=STORE, ranges=[(0, 4)]))) == "malformed"
    too_many = [(n, n) for n in range(1, MAX_RECEIPT_RANGES + 2)]
    assert reason(sealed(Receipt(store=STORE, ranges=too_many))) == "malformed"
    assert reason(b"{") == "malformed"
    assert reason(b"x" * (1 << 21)) == "oversized"


def test_a_stream_message_and_a_receipt_never_pass_for_each_other() -> None:
    """Both are signed by the same HQ key: the payload's shape must tell them apart."""
    message = Message(store=STORE, stream="offers", seq=1, kind="delta", body={"op": "put"})
    assert reason(seal(message, "hq-1", KEY)) == "malformed"
    with pytest.raises(SyncError) as caught:
        open_envelope(sealed(Receipt(store=STORE, ranges=[(1, 9)])), RING, STORE)
    assert caught.value.reason == "malformed"


def test_a_receipt_with_an_unknown_field_is_refused() -> None:
    payload = msgspec.json.encode(
        {"v": 1, "type": "receipt", "store": STORE, "ranges": [[1, 2]], "all": True}
    )
    envelope = {
        "key_id": "hq-1",
        "payload": base64.b64encode(payload).decode(),
        "sig": base64.b64encode(KEY.sign(payload)).decode(),
    }
    assert reason(msgspec.json.encode(envelope)) == "malformed"
