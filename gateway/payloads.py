"""Decoding an untrusted JSON payload (from the broker or HTTP) into its schema, bounded.

Every device protocol (scanner nodes, their status and telemetry, shelves, doors, tills, staff
acknowledgements) decodes the same way: refuse an oversized payload before looking at it, then
let msgspec validate it against the protocol's struct, and turn every way that can fail into
the protocol's own :class:`~gateway.errors.PayloadError` with a stable reason:
``oversized_payload``, ``bad_field`` (the detail names the path) or ``bad_json`` (not JSON,
or not UTF-8). Nothing else escapes.
"""

from __future__ import annotations

from typing import TypeVar

import msgspec

from gateway.errors import PayloadError

__all__ = ["decode_bounded"]

_T = TypeVar("_T")


def decode_bounded(
    decoder: msgspec.json.Decoder[_T],
    payload: bytes,
    max_bytes: int,
    error: type[PayloadError],
) -> _T:
    """``payload`` decoded by ``decoder``, or ``error`` with the reason why not."""
    if len(payload) > max_bytes:
        raise error("oversized_payload", f"{len(payload)} bytes > {max_bytes}")
    try:
        return decoder.decode(payload)
    except msgspec.ValidationError as exc:
        raise error("bad_field", str(exc)) from exc
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise error("bad_json", str(exc)) from exc
