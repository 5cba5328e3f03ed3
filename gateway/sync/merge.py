"""Who owns what when HQ's view and the store's meet, and how consents merge (pure).

Ownership:

* **HQ owns** offers, templates and the HQ fields of a profile (:data:`HQ_PROFILE_FIELDS`):
  HQ's version replaces the store's.
* **The store owns** what it observed: a profile field not in :data:`HQ_PROFILE_FIELDS` is set
  by the store and kept when HQ's profile arrives. Today every profile field is HQ's; a field
  the store starts to observe is added to ``ProfileRecord`` and left out of that set, and
  :func:`merge_profile` keeps it without further change.

Consent merges purpose by purpose (:func:`merge_purpose`), with ``hlc`` the hybrid logical
clock timestamp of each decision:

* a withdrawal (``granted=False``) wins over any grant that is not causally after it: a grant
  wins only if its ``hlc`` is strictly greater than the withdrawal's;
* of two grants or two withdrawals, the later ``hlc`` wins;
* what is still tied (same ``hlc``, same decision) is settled by a fixed order of the rest of
  the state, so the result never depends on which side arrived first.

The winner is the maximum of a total order, so merging is commutative, associative and
idempotent: replicas that saw the same decisions in any order, any number of times, agree.
``no_marketing`` has no clock: an opt-out from either side holds (logical or). An **erasure**
(``erased=True``) dominates everything: the merge of anything with an erasure is the erasure,
without purposes.

Tombstones. Applying an erasure deletes the shopper's profile, consent, keys and identities
and keeps a :class:`~gateway.store.records.Tombstone` (kind, id, hlc, erased_at: no personal
data) that turns any later put of that shopper into a no-op. Tombstones are kept longer than
the longest outage a store is supported through (:data:`TOMBSTONE_RETENTION_S`, 30 days by
default, from configuration), because a message delayed by that outage could otherwise bring
the shopper back. :func:`expired_tombstones` lists those due to be dropped; once they are,
nothing protects the shopper's streams from a message older than the retention, so the streams
in :data:`ERASABLE_STREAMS` are fully resynced (a snapshot replaces them).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

import msgspec

from gateway.store.records import ConsentRecord, ProfileRecord, PurposeState, Tombstone

__all__ = [
    "ERASABLE_STREAMS",
    "HQ_PROFILE_FIELDS",
    "TOMBSTONE_RETENTION_S",
    "erasure",
    "expired_tombstones",
    "merge_consent",
    "merge_profile",
    "merge_purpose",
    "merge_tombstone",
]

HQ_PROFILE_FIELDS: Final[frozenset[str]] = frozenset(
    {"first_name", "nickname", "segments", "locale", "greet_on_kiosk", "origin"}
)
"""The profile fields HQ owns (HQ's value replaces the store's); every other field but the
key is the store's and is kept."""

TOMBSTONE_RETENTION_S: Final = 30 * 86_400.0
"""Default time a tombstone is kept: longer than the longest supported outage."""

ERASABLE_STREAMS: Final = ("profiles", "consents")
"""The HQ streams that carry shoppers' personal data: resynced in full when tombstones go."""

_KEY_FIELDS: Final = frozenset({"v", "shopper_id"})
_state_encoder = msgspec.msgpack.Encoder()


def merge_profile(
    local: ProfileRecord | None,
    incoming: ProfileRecord,
    *,
    hq_fields: frozenset[str] = HQ_PROFILE_FIELDS,
) -> ProfileRecord:
    """HQ's ``incoming`` profile with the store-owned fields of ``local`` kept."""
    if local is None:
        return incoming
    if local.shopper_id != incoming.shopper_id:
        raise ValueError(f"profiles of {local.shopper_id} and {incoming.shopper_id}")
    kept = {
        name: getattr(local, name)
        for name in incoming.__struct_fields__
        if name not in hq_fields and name not in _KEY_FIELDS
    }
    return msgspec.structs.replace(incoming, **kept) if kept else incoming


def _rank(state: PurposeState) -> tuple[int, bool, bytes]:
    # Later hlc first; on a tie a withdrawal (not granted) ranks above a grant; then the
    # encoded state, a total order on whatever is left, so the merge never depends on order.
    return (state.hlc, not state.granted, _state_encoder.encode(state))


def merge_purpose(a: PurposeState, b: PurposeState) -> PurposeState:
    """The decision that stands for one purpose (see the module notes)."""
    return a if _rank(a) >= _rank(b) else b


def erasure(shopper_id: str) -> ConsentRecord:
    """The canonical erased consent of ``shopper_id``: no purposes, nothing personal."""
    return ConsentRecord(shopper_id=shopper_id, erased=True)


def merge_consent(local: ConsentRecord, incoming: ConsentRecord) -> ConsentRecord:
    """The consent both sides agree on: purpose by purpose, an erasure dominating."""
    if local.shopper_id != incoming.shopper_id:
        raise ValueError(f"consents of {local.shopper_id} and {incoming.shopper_id}")
    if local.erased or incoming.erased:
        return erasure(local.shopper_id)
    purposes = dict(local.purposes)
    for name, state in incoming.purposes.items():
        mine = purposes.get(name)
        purposes[name] = state if mine is None else merge_purpose(mine, state)
    return ConsentRecord(
        v=max(local.v, incoming.v),
        shopper_id=local.shopper_id,
        purposes=dict(sorted(purposes.items())),
        no_marketing=local.no_marketing or incoming.no_marketing,
    )


def merge_tombstone(a: Tombstone, b: Tombstone) -> Tombstone:
    """Two records of the same erasure: the later clock and the later record time, so the
    tombstone is kept for the full retention after the last time it was (re)applied."""
    if (a.kind, a.id) != (b.kind, b.id):
        raise ValueError(f"tombstones of {a.kind}/{a.id} and {b.kind}/{b.id}")
    return Tombstone(
        kind=a.kind, id=a.id, hlc=max(a.hlc, b.hlc), erased_at=max(a.erased_at, b.erased_at)
    )


def expired_tombstones(
    tombstones: Iterable[Tombstone],
    now: float,
    *,
    retention_s: float = TOMBSTONE_RETENTION_S,
) -> list[Tombstone]:
    """The tombstones kept longer than ``retention_s`` at ``now``: to be dropped, after which
    :data:`ERASABLE_STREAMS` must be resynced in full."""
    return [t for t in tombstones if now - t.erased_at > retention_s]
