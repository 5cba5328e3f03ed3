"""Who is this? From a decoded beacon frame (and the address it came from) to an opted-in
shopper, or to nobody.

A shopper's app is recognised by one of:

- a fixed beacon identity it advertises (an iBeacon triple or an Eddystone-UID), looked up in
  the ``identities`` table;
- a rotating Eddystone-EID, resolved in one dictionary lookup by ``beacons.resolver``'s table
  of the previous, current and next EIDs of every shopper whose consent allows presence;
- a resolvable private address, resolved against registered IRKs with caches of addresses that
  do and do not resolve.

The resolver tables hold only shoppers whose ``presence`` consent is active; they reload when
``meta/identity_generation`` moves (any consent, identity or key written, by any process) and
rebuild at each EID rotation boundary, both from the once-a-second tick, off the sighting path.
And a match counts only while the shopper's ``presence`` consent is active, read from the store
on every sighting, so a withdrawal takes effect before the tables have even reloaded.
"""

from __future__ import annotations

import logging

from beacons.errors import IdentityError
from beacons.frames import EddystoneEID, EddystoneUID, Frame, IBeacon
from beacons.irk import is_resolvable
from beacons.resolver import EidResolver, IrkResolver
from gateway.store import Database, EidKeyRecord, Purpose

__all__ = ["Identities", "identity_key"]

log = logging.getLogger(__name__)


def identity_key(frame: Frame) -> str | None:
    """The identity-table key of a frame with a fixed identity, else None."""
    if isinstance(frame, IBeacon):
        return f"ibeacon:{frame.uuid}:{frame.major}:{frame.minor}"
    if isinstance(frame, EddystoneUID):
        return f"eddystone_uid:{frame.namespace}:{frame.instance}"
    return None


class Identities:
    """Owns the EID and IRK resolvers and keeps them in step with the store."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self.eids = EidResolver()
        self.irks = IrkResolver()
        self._generation = -1

    def resolve(
        self, frame: Frame | None, address: str, now: float, *, key: str | None = None
    ) -> str | None:
        """The shopper behind a sighting, if that shopper currently consents to presence.
        ``key`` is ``identity_key(frame)`` when the caller has already computed it."""
        shopper: str | None = None
        if isinstance(frame, EddystoneEID):
            shopper = self.eids.resolve(bytes.fromhex(frame.eid), now)
        elif frame is not None:
            if key is None:
                key = identity_key(frame)
            if key is not None:
                identity = self._db.identity(key)
                shopper = identity.shopper_id if identity is not None else None
        if shopper is None and address and len(self.irks) and _resolvable(address):
            shopper = self.irks.resolve(address, now)
        if shopper is None:
            return None
        consent = self._db.consent(shopper)
        if consent is None or not consent.allows(Purpose.PRESENCE, now):
            return None
        return shopper

    def maintain(self, now: float) -> None:
        """Reload registrations when the store says they changed; roll EIDs at boundaries."""
        generation = self._db.identity_generation()
        if generation != self._generation:
            self._reload(now)
            self._generation = generation
        if self.eids.rebuild_due(now):
            self.eids.rebuild(now)
        self.irks.expire(now)

    def forget(self, shopper_id: str) -> None:
        """Drop a shopper from both resolvers at once (consent withdrawn, erasure)."""
        self.eids.remove(shopper_id)
        self.irks.remove(shopper_id)

    def _reload(self, now: float) -> None:
        wanted_eid: dict[str, EidKeyRecord] = {}
        wanted_irk: dict[str, bytes] = {}
        for record in self._db.resolver_keys():
            consent = self._db.consent(record.shopper_id)
            if consent is None or not consent.allows(Purpose.PRESENCE, now):
                continue
            if isinstance(record, EidKeyRecord):
                wanted_eid[record.shopper_id] = record
            else:
                wanted_irk[record.shopper_id] = record.irk
        for subject in list(self.eids.subjects()):
            registration = self.eids.registration(subject)
            want = wanted_eid.get(subject)
            if (
                want is None
                or registration is None
                or (
                    registration.identity_key,
                    registration.exponent,
                    registration.drift,
                    registration.epoch_offset,
                )
                != (want.identity_key, want.exponent, want.drift, want.epoch_offset)
            ):
                self.eids.remove(subject)
        for subject, record in wanted_eid.items():
            if subject not in self.eids:
                self.eids.add(
                    subject,
                    record.identity_key,
                    record.exponent,
                    record.drift,
                    now=now,
                    epoch_offset=record.epoch_offset,
                )
        for subject in list(self.irks.subjects()):
            if subject not in wanted_irk:
                self.irks.remove(subject)
        for subject, irk in wanted_irk.items():
            self.irks.add(subject, irk)  # replaces a changed key, keeps an unchanged one's cache
        log.info(
            "identity resolvers reloaded",
            extra={"eid_shoppers": len(self.eids), "irk_shoppers": len(self.irks)},
        )


def _resolvable(address: str) -> bool:
    try:
        return is_resolvable(address)
    except IdentityError:  # not an address at all: a node's bug, not a shopper
        return False
