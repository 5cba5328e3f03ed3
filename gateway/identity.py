"""Who is this? From a decoded beacon frame to an opted-in shopper, or to nobody.

A shopper's app advertises a beacon identity registered at opt-in (an iBeacon triple or an
Eddystone-UID today; rotating EIDs and resolvable addresses come with their resolvers). The
identity table maps it to the shopper. A match counts only while the shopper's ``presence``
consent is active, checked on every sighting against the store: without it the device is
anonymous, exactly like a stranger's phone.
"""

from __future__ import annotations

from beacons.frames import EddystoneUID, Frame, IBeacon
from gateway.store import Database, Purpose

__all__ = ["identity_key", "resolve_shopper"]


def identity_key(frame: Frame) -> str | None:
    """The identity-table key of a frame that can name a shopper's device, else None."""
    if isinstance(frame, IBeacon):
        return f"ibeacon:{frame.uuid}:{frame.major}:{frame.minor}"
    if isinstance(frame, EddystoneUID):
        return f"eddystone_uid:{frame.namespace}:{frame.instance}"
    return None


def resolve_shopper(db: Database, frame: Frame, now: float) -> str | None:
    """The shopper id behind ``frame`` if that shopper currently consents to presence."""
    key = identity_key(frame)
    if key is None:
        return None
    identity = db.identity(key)
    if identity is None:
        return None
    consent = db.consent(identity.shopper_id)
    if consent is None or not consent.allows(Purpose.PRESENCE, now):
        return None
    return identity.shopper_id
