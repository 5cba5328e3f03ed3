"""The records the gateway keeps in LMDB, one schema each, with a version field.

Every record is a frozen msgspec Struct tagged with its kind; ``v`` is the schema version of
that kind, checked on decode (see :mod:`gateway.store.codec`). Keys are UTF-8 strings chosen
so that a prefix scan finds related records.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

import msgspec

__all__ = [
    "Caps",
    "Channel",
    "ComeNowTerms",
    "ConsentEntry",
    "ConsentRecord",
    "DecisionRecord",
    "EidKeyRecord",
    "HqKeyRecord",
    "IdentityRecord",
    "IrkRecord",
    "OfferRecord",
    "PreferencesRecord",
    "ProfileRecord",
    "Purpose",
    "PurposeState",
    "SyncState",
    "TemplateRecord",
    "Tombstone",
    "Trigger",
    "TriggerKind",
    "Variant",
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
    # "store": created here (the shopper opted in through the app) and not yet known to HQ,
    # so a snapshot of HQ's profiles or consents that leaves it out does not delete it.
    origin: Literal["hq", "store"] = "hq"


class PurposeState(msgspec.Struct, frozen=True, kw_only=True):
    """One purpose's decision. ``hlc`` is the hybrid logical clock timestamp of the decision
    (``physical_ms << 16 | logical``, see :mod:`gateway.store.hlc`): the causal order used when
    a store's and HQ's views meet (``gateway.sync.merge``); 0 for a decision stamped before
    clocks were recorded."""

    granted: bool
    at: float
    notice_version: str = ""
    channel: str = "app"
    expires_at: float | None = None
    hlc: int = 0

    def active(self, now: float) -> bool:
        return self.granted and (self.expires_at is None or now < self.expires_at)


class ConsentRecord(_Record, tag="consent", frozen=True, kw_only=True):
    """A shopper's consents. ``erased`` marks an erasure travelling from HQ: it carries no
    purposes, and applying it erases the shopper and leaves a :class:`Tombstone`."""

    shopper_id: str
    purposes: dict[str, PurposeState] = msgspec.field(default_factory=dict)
    no_marketing: bool = False
    erased: bool = False

    def allows(self, purpose: Purpose, now: float) -> bool:
        state = self.purposes.get(purpose.value)
        return state is not None and state.active(now)


Channel = Literal["kiosk", "phone"]
PurposeName = Literal[
    "presence", "personalization", "kiosk_display", "phone_messages", "staff_assist", "analytics"
]
TriggerKind = Literal["entered", "dwell", "near_kiosk", "app_open", "signal"]
_Hour = Annotated[int, msgspec.Meta(ge=0, le=24)]
_Count = Annotated[int, msgspec.Meta(ge=0, le=10_000_000)]


class Trigger(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A moment an offer is for: ``on`` what, optionally in which ``zone``, after dwelling at
    least ``min_dwell_s``, or on which device ``signal`` (e.g. ``restocked:sku-123``)."""

    on: TriggerKind
    zone: str | None = None
    min_dwell_s: Annotated[float, msgspec.Meta(ge=0, le=86_400)] = 0.0
    signal: str | None = None


class Caps(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How often an offer may be shown: to one shopper per ``window_s`` and per visit, in the
    whole store per day, and in total (``budget``). ``None``: no such cap."""

    per_shopper: _Count | None = None
    window_s: Annotated[float, msgspec.Meta(gt=0, le=366 * 86_400)] = 86_400.0
    per_visit: _Count | None = None
    global_per_day: _Count | None = None
    budget: _Count | None = None


class ComeNowTerms(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A "come now" discount off the regular price: full for ``full_for_s`` after the
    trigger, then shrinking to nothing at ``gone_after_s`` (``gateway.pricing.ComeNow``)."""

    max_discount_pct: Annotated[float, msgspec.Meta(ge=0, le=100)]
    full_for_s: Annotated[float, msgspec.Meta(ge=0, le=86_400)] = 300.0
    gone_after_s: Annotated[float, msgspec.Meta(gt=0, le=86_400)] = 1800.0


class Variant(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The offer's words in another language."""

    title: str
    body: str = ""


class OfferRecord(_Record, tag="offer", frozen=True, kw_only=True):
    """An offer or a content card from HQ. Everything after ``generic`` arrived with the
    decision engine; its defaults keep an older record what it was (any channel, any moment,
    everyone in its ``segments``, no caps)."""

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
    valid_until: float | None = None  # None: no end (JSON has no infinity)
    template_id: str = "offer"
    generic: bool = False
    kind: Literal["offer", "tip", "review", "social_proof"] = "offer"
    campaign: str = ""  # the holdout's unit; empty: the offer id
    channels: list[Channel] = msgspec.field(default_factory=lambda: ["kiosk", "phone"])
    dayparts: list[tuple[_Hour, _Hour]] = msgspec.field(default_factory=list)
    triggers: list[Trigger] = msgspec.field(default_factory=list)
    audience: Any = True  # a rule of gateway.rules, compiled when the offer arrives
    purposes: list[PurposeName] = msgspec.field(default_factory=list)
    caps: Caps = msgspec.field(default_factory=Caps)
    stock_skus: list[str] = msgspec.field(default_factory=list)
    value: Annotated[float, msgspec.Meta(ge=0, le=1_000_000)] = 1.0
    holdout: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.0
    come_now: ComeNowTerms | None = None
    locales: dict[str, Variant] = msgspec.field(default_factory=dict)

    def valid_at(self, now: float) -> bool:
        return self.valid_from <= now and (self.valid_until is None or now < self.valid_until)


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
    registered_at: float = 0.0  # 0: before registration times were kept

    def __repr__(self) -> str:  # never the key in a log line or a traceback
        return (
            f"EidKeyRecord(shopper_id={self.shopper_id!r}, identity_key=<hidden>, "
            f"exponent={self.exponent})"
        )


class IrkRecord(_Record, tag="irk", frozen=True, kw_only=True):
    """The identity resolving key of a shopper's phone (Bluetooth privacy)."""

    shopper_id: str
    irk: Annotated[bytes, msgspec.Meta(min_length=16, max_length=16)]
    registered_at: float = 0.0  # 0: before registration times were kept

    def __repr__(self) -> str:  # never the key in a log line or a traceback
        return f"IrkRecord(shopper_id={self.shopper_id!r}, irk=<hidden>)"


class TemplateRecord(_Record, tag="template", frozen=True, kw_only=True):
    """A template published by HQ (the ``templates`` stream)."""

    template_id: str
    source: str
    version: int = 1


class HqKeyRecord(_Record, tag="hq_key", frozen=True, kw_only=True):
    """An HQ signing key this store has been told about through the ``keys`` stream. A
    revoked key stays stored as revoked, so it can never come back; ``public_key`` is empty
    for a key revoked by id only (one the store knew from its configuration)."""

    key_id: str
    public_key: Annotated[bytes, msgspec.Meta(max_length=32)] = b""
    status: Literal["active", "revoked"] = "active"


class Tombstone(_Record, tag="tombstone", frozen=True, kw_only=True):
    """An erasure, without personal data: what was erased (``kind``, ``id``), the erasure's
    hybrid logical clock timestamp and when this store recorded it (seconds since the epoch).
    While it is kept, no put brings back anything of that shopper."""

    kind: Literal["shopper"] = "shopper"
    id: str
    hlc: int = 0
    erased_at: float


class SyncState(_Record, tag="sync_state", frozen=True, kw_only=True):
    """Where one HQ stream stands on this store (``gateway.sync.apply`` has the rules).

    ``last`` is the last applied sequence. ``stopped`` is set by a gap (``seen`` is the highest
    sequence seen past it) or by a forced full resync (``full``); while stopped only the
    missing deltas or a snapshot move the stream on. ``snapshot`` is the id of the snapshot
    being staged, ``snapshot_next`` the sequence its next message must carry, ``snapshot_count``
    the records announced by its begin and ``snapshot_staged`` those staged so far;
    ``done_snapshot``/``done_seq`` name the last snapshot applied and its end's sequence, so a
    re-delivered message of it is a duplicate."""

    stream: str
    last: int = 0
    stopped: bool = False
    seen: int = 0
    full: bool = False
    snapshot: str = ""
    snapshot_next: int = 0
    snapshot_count: int = 0
    snapshot_staged: int = 0
    done_snapshot: str = ""
    done_seq: int = 0


class ConsentEntry(_Record, tag="consent_entry", frozen=True, kw_only=True):
    """One consent decision as it reached this store: an entry of the append-only
    ``consent_ledger`` (the proof of consent; ``gateway.consents`` has the rules). The fields
    of :class:`PurposeState` plus whose and which purpose; ``channel`` is where the decision
    was made on this store (``app``, ``kiosk``, ``staff``) or ``hq`` for one that arrived
    through HQ's consents stream."""

    shopper_id: str
    purpose: str
    granted: bool
    hlc: int
    at: float
    notice_version: str = ""
    channel: Literal["app", "kiosk", "hq", "staff"]
    expires_at: float | None = None

    def state(self) -> PurposeState:
        """The decision as a purpose state (what the consent record holds)."""
        return PurposeState(
            granted=self.granted,
            at=self.at,
            notice_version=self.notice_version,
            channel=self.channel,
            expires_at=self.expires_at,
            hlc=self.hlc,
        )


class PreferencesRecord(_Record, tag="preferences", frozen=True, kw_only=True):
    """How often, and when, a shopper wants to hear from the store. ``None`` leaves a cap to
    the store's defaults; ``quiet_hours`` is ``(start, end)`` in local hours, ``start``
    included and ``end`` excluded, wrapping midnight when ``end < start``."""

    shopper_id: str
    max_per_visit: Annotated[int, msgspec.Meta(ge=0, le=50)] | None = None
    max_per_day: Annotated[int, msgspec.Meta(ge=0, le=200)] | None = None
    quiet_hours: (
        tuple[Annotated[int, msgspec.Meta(ge=0, le=23)], Annotated[int, msgspec.Meta(ge=0, le=23)]]
        | None
    ) = None
    locale: str = "en"


class DecisionRecord(_Record, tag="decision", frozen=True, kw_only=True):
    """One decision about a shopper, kept so they can ask "why am I seeing this":
    the offer chosen (``None``: generic content), why, and for each offer left out the first
    rule that rejected it; ``inputs`` are the facts the decision read (no key material)."""

    decision_id: str
    shopper_id: str
    at: float
    hlc: int
    channel: Literal["kiosk", "phone"]
    kiosk_id: str | None = None
    offer_id: str | None = None
    reason: str = ""
    rejected: list[tuple[str, str]] = msgspec.field(default_factory=list)
    inputs: dict[str, Any] = msgspec.field(default_factory=dict)
