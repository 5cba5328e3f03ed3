"""Request and response bodies of the ``/v1`` API (msgspec: validated on decode, and the
source of the OpenAPI schemas). Unknown fields are refused so a typo is an error, not a
silent default."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from gateway.redemptions import Redemption
from gateway.shoppers import Card

__all__ = [
    "AppSighting",
    "ConsentUpdate",
    "ConsentView",
    "EidRegistered",
    "EidRegistration",
    "ErasureDone",
    "Explanation",
    "HelpAnswer",
    "IrkRegistration",
    "IssueToken",
    "IssuedToken",
    "KioskContent",
    "LinkCode",
    "LinkCodeRequest",
    "Messages",
    "PhoneOffers",
    "PreferencesBody",
    "PurposeChoice",
    "PurposeView",
    "RedemptionAnswer",
    "RedemptionBody",
    "Register",
    "Registered",
    "Revoked",
    "SightingResult",
    "Sightings",
    "StaffAlert",
    "StaffAlerts",
    "TokenAnswer",
]

PurposeName = Literal[
    "presence", "personalization", "kiosk_display", "phone_messages", "staff_assist", "analytics"
]
Id = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$")]
Name = Annotated[str, msgspec.Meta(max_length=40, pattern=r"^[^\x00-\x1f<>]*$")]
Hex16 = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-fA-F]{32}$")]
Hex32 = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-fA-F]{64}$")]
Uuid = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    ),
]
Time = Annotated[float, msgspec.Meta(ge=0, le=4_102_444_800)]  # up to 2100-01-01
Hour = Annotated[int, msgspec.Meta(ge=0, le=23)]


class _Body(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


# ----- consents -----


class PurposeChoice(_Body, frozen=True):
    granted: bool
    expires_at: Time | None = None


class ConsentUpdate(_Body, frozen=True):
    """Change some purposes (the others stay as they are) and, optionally, the standing
    objection to marketing. ``notice_version`` is the privacy notice the shopper was shown."""

    purposes: dict[PurposeName, PurposeChoice] = msgspec.field(default_factory=dict)
    no_marketing: bool | None = None
    notice_version: Annotated[str, msgspec.Meta(max_length=32)] = ""


class PurposeView(_Body, frozen=True):
    granted: bool
    at: float
    notice_version: str
    channel: str
    expires_at: float | None = None


class ConsentView(_Body, frozen=True):
    """The current state, derived from the consent ledger; a purpose not listed is denied."""

    shopper_id: str
    purposes: dict[str, PurposeView]
    no_marketing: bool


# ----- registration and tokens -----


class Register(_Body, frozen=True):
    """Opt in: a new shopper (or, with a one-time ``link_code`` from the store desk, an
    existing HQ profile). Nothing is granted unless ``consents`` says so."""

    first_name: Name = ""
    nickname: Name = ""
    locale: Annotated[str, msgspec.Meta(pattern=r"^[a-z]{2}(-[A-Z]{2})?$")] = "en"
    link_code: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9]{8,64}$")] | None = None
    consents: dict[PurposeName, bool] = msgspec.field(default_factory=dict)
    notice_version: Annotated[str, msgspec.Meta(max_length=32)] = ""


class TokenAnswer(_Body, frozen=True):
    token: str
    expires_at: float


class Registered(_Body, frozen=True):
    shopper_id: str
    token: str
    expires_at: float
    consents: ConsentView


class IssueToken(_Body, frozen=True):
    role: Literal["kiosk", "staff", "admin"]
    subject: Id
    # At least 0.001 days (86.4 s): a token lives at least a second, a tinier one cannot be made.
    ttl_days: Annotated[float, msgspec.Meta(ge=0.001, le=3650)] | None = None


class IssuedToken(_Body, frozen=True):
    token: str
    role: str
    subject: str
    expires_at: float
    jti: str


class Revoked(_Body, frozen=True):
    role: str
    subject: str
    generation: int


class LinkCodeRequest(_Body, frozen=True):
    shopper_id: Id
    ttl_min: Annotated[float, msgspec.Meta(gt=0, le=1440)] = 15.0


class LinkCode(_Body, frozen=True):
    code: str
    shopper_id: str
    expires_at: float


# ----- preferences -----


class PreferencesBody(_Body, frozen=True):
    """The shopper's own limits: at most this many messages per visit and per day (none:
    the store's defaults), and quiet hours ``[start, end)`` in the store's local time."""

    max_per_visit: Annotated[int, msgspec.Meta(ge=0, le=50)] | None = None
    max_per_day: Annotated[int, msgspec.Meta(ge=0, le=200)] | None = None
    quiet_hours: tuple[Hour, Hour] | None = None


# ----- offers, messages, why -----


class PhoneOffers(_Body, frozen=True):
    offers: list[Card]
    reason: str


class Messages(_Body, frozen=True):
    messages: list[Card]


class Explanation(_Body, frozen=True):
    offer_id: str
    decision_id: str
    at: float
    channel: str
    explanation: str
    based_on: list[str]


# ----- sightings and keys -----


class AppSighting(_Body, frozen=True):
    """One fixed beacon the app ranged: an iBeacon (uuid, major, minor) or an Eddystone-UID
    (namespace, instance), its RSSI, and when (Unix seconds; default: on arrival)."""

    rssi: Annotated[int, msgspec.Meta(ge=-127, le=20)]
    uuid: Uuid | None = None
    major: Annotated[int, msgspec.Meta(ge=0, le=65535)] | None = None
    minor: Annotated[int, msgspec.Meta(ge=0, le=65535)] | None = None
    namespace: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-fA-F]{20}$")] | None = None
    instance: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-fA-F]{12}$")] | None = None
    at: Time | None = None


class Sightings(_Body, frozen=True):
    sightings: Annotated[list[AppSighting], msgspec.Meta(min_length=1, max_length=1000)]


class SightingResult(_Body, frozen=True):
    placed: int
    dropped: dict[str, int]


class EidRegistration(_Body, frozen=True):
    """The app's half of the Eddystone-EID key exchange: its X25519 public key, the rotation
    exponent, and its beacon clock now (seconds since its own zero)."""

    beacon_public_key: Hex32
    exponent: Annotated[int, msgspec.Meta(ge=0, le=15)]
    beacon_time: Annotated[int, msgspec.Meta(ge=0, le=2**32 - 1)] = 0


class EidRegistered(_Body, frozen=True):
    resolver_public_key: str
    exponent: int


class IrkRegistration(_Body, frozen=True):
    irk: Hex16


# ----- help, kiosk, staff, erasure -----


class HelpAnswer(_Body, frozen=True):
    alert_id: str
    zone: str | None


class KioskContent(_Body, frozen=True):
    kiosk_id: str
    version: int
    personal: bool
    offer_id: str | None
    html: str


class StaffAlert(_Body, frozen=True):
    """One open alert as staff see it: never the shopper's id (``docs/PROTOCOL.md``)."""

    alert_id: str
    name: str
    zone: str | None
    since: float
    waited_s: float
    reason: Literal["asked", "dwell"]
    level: int
    acknowledged_by: str | None
    acknowledged_at: float | None


class StaffAlerts(_Body, frozen=True):
    alerts: list[StaffAlert]


class RedemptionBody(Redemption, frozen=True, forbid_unknown_fields=True):
    """A till's redemption as the API takes it: the till topic's message, refusing unknown
    fields like every other body (the MQTT path is lenient for older tills)."""


class RedemptionAnswer(_Body, frozen=True):
    """Recorded once per (lane, receipt); ``side``: ``treatment`` (the shopper was shown
    the offer), ``control`` (held out of it) or ``unattributed``. The decision it was
    attributed to stays in the store: staff need not know it."""

    recorded: bool
    side: str


class ErasureDone(_Body, frozen=True):
    shopper_id: str
    erased_at: float
    removed: dict[str, int]


def plain(value: Any) -> Any:
    """A struct as builtins (for the export, which has no fixed schema)."""
    return msgspec.to_builtins(value)
