"""The records the gateway keeps in LMDB, one schema each, with a version field.

Every record is a frozen msgspec Struct tagged with its kind; ``v`` is the schema version of
that kind, checked on decode (see :mod:`gateway.store.codec`). Keys are UTF-8 strings chosen
so that a prefix scan finds related records.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import msgspec

__all__ = [
    "ConsentRecord",
    "EidKeyRecord",
    "IdentityRecord",
    "IrkRecord",
    "OfferRecord",
    "ProfileRecord",
    "Purpose",
    "PurposeState",
]


class Purpose(StrEnum):
    """What a shopper can consent to, purpose by purpose. Everything is denied by default."""

    PRESENCE = "presence"
    PERSONALIZATION = "personalization"
    KIOSK_DISPLAY = "kiosk_display"
    PHONE_MESSAGES = "phone_messages"
    STAFF_ASSIST = "staff_assist"
    ANALYTICS = "analytics"


class _Record(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=False):
    v: int = 1


class ProfileRecord(_Record, tag="profile", frozen=True, kw_only=True):
    shopper_id: str
    first_name: str = ""
    nickname: str = ""
    segments: list[str] = msgspec.field(default_factory=list)
    locale: str = "en"
    greet_on_kiosk: bool = False


class PurposeState(msgspec.Struct, frozen=True, kw_only=True):
    granted: bool
    at: float
    notice_version: str = ""
    channel: str = "app"
    expires_at: float | None = None

    def active(self, now: float) -> bool:
        return self.granted and (self.expires_at is None or now < self.expires_at)


class ConsentRecord(_Record, tag="consent", frozen=True, kw_only=True):
    shopper_id: str
    purposes: dict[str, PurposeState] = msgspec.field(default_factory=dict)
    no_marketing: bool = False

    def allows(self, purpose: Purpose, now: float) -> bool:
        state = self.purposes.get(purpose.value)
        return state is not None and state.active(now)


class OfferRecord(_Record, tag="offer", frozen=True, kw_only=True):
    offer_id: str
    version: int = 1
    title: str
    body: str = ""
    regular_price: float | None = None
    price: float | None = None
    currency: str = "EUR"
    segments: list[str] = msgspec.field(default_factory=list)
    priority: int = 0
    valid_from: float = 0.0
    valid_until: float = float("inf")
    template_id: str = "offer"
    generic: bool = False

    def valid_at(self, now: float) -> bool:
        return self.valid_from <= now < self.valid_until


class IdentityRecord(_Record, tag="identity", frozen=True, kw_only=True):
    """Maps a fixed beacon identity an opted-in shopper's app advertises to the shopper."""

    key: str
    shopper_id: str


class EidKeyRecord(_Record, tag="eid_key", frozen=True, kw_only=True):
    """An Eddystone-EID identity key agreed with the shopper's app (the gateway is the resolver).

    ``epoch_offset`` is the Unix time of the app's beacon clock zero; ``drift`` is how many
    rotation periods either side of now the resolver accepts."""

    shopper_id: str
    identity_key: bytes
    exponent: Annotated[int, msgspec.Meta(ge=0, le=15)]
    drift: Annotated[int, msgspec.Meta(ge=0, le=256)] = 1
    epoch_offset: float = 0.0


class IrkRecord(_Record, tag="irk", frozen=True, kw_only=True):
    """The identity resolving key of a shopper's phone (Bluetooth privacy)."""

    shopper_id: str
    irk: Annotated[bytes, msgspec.Meta(min_length=16, max_length=16)]
