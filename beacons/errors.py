"""Exceptions raised by the ``beacons`` package.

One small tree; catch the root to handle anything this package refuses::

    BeaconError                 root of every error raised by ``beacons``
     +-- DecodeError            bytes off the air (or hex text) that are malformed:
                                 a truncated frame, an AD structure overrunning its
                                 payload, a reserved URL byte, odd-length hex, ...
     +-- IdentityError          a bad key or argument for identity resolution: an
                                 identity key that is not 16 bytes, a rotation
                                 exponent outside 0..15, a malformed Bluetooth address,
                                 an X25519 exchange that yields the all-zero secret, ...
     +-- IllegalTransition      (``beacons.presence``) a presence event the state table has
                                 no row for: a bug, never caused by input

A ``DecodeError`` carries a short, specific ``reason`` such as
``"AD structure length 30 at offset 0 overruns payload of 12 bytes"``; it is also the
exception's message.  Valid input that simply carries no beacon frame we know is not
an error: the decoders return ``None`` for it.
"""

from __future__ import annotations

__all__ = ["BeaconError", "DecodeError", "IdentityError"]


class BeaconError(Exception):
    """Root of every exception raised by the ``beacons`` package."""


class DecodeError(BeaconError):
    """Malformed advertisement bytes (or hex text); ``reason`` says what is wrong."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class IdentityError(BeaconError):
    """A bad key or argument given to identity resolution (Eddystone-EID, IRK)."""
