"""Redemptions at the tills: the POS lane protocol, attribution, and the lift aggregates.

Payload (JSON, UTF-8), topic ``{prefix}/{store}/pos/{lane}/redemptions``, or the body of the
API the lead wires (the same shape, no topic lane to match)::

    {"v": 1, "lane": "lane-3", "offer_id": "coffee-2for1", "shopper_id": "app-3f9a1c07b2de4a11",
     "at": 1795378600.5, "receipt": "R-20261120-000123"}

``shopper_id`` is optional (null or left out): the shopper of the loyalty card scanned with the
sale. ``parse_redemption`` validates it sans-I/O and raises :class:`RedemptionError` with a
short, stable ``reason``. ``docs/PROTOCOL.md`` ("POS lanes → gateway") is the contract.

Attribution (:func:`attribute`, reads only)
    Among the shopper's kept decision records (``gateway.consents.decisions``) made in the
    window ``[at - window_s, at]`` (both ends included; a decision after the sale did not
    cause it):

    1. the latest that showed the offer (``offer_id`` is it): ``treatment``, with its id;
    2. else the latest that left the offer out by the holdout (``(offer, "holdout")`` in its
       ``rejected``): ``control``, with its id;
    3. else ``unattributed`` (no shopper, no such decision, or the shopper was erased).

    ``rejected`` keeps the *first* rule that rejected each offer, so ``holdout`` there means
    the offer was eligible and held out only by the holdout: the engine must apply the
    holdout after every eligibility rule.

Recording (:func:`record_redemption_op`), one transaction
    * de-duplication by (lane, receipt): a receipt already recorded is a no-op (returns
      False, nothing counted, nothing sent);
    * one more redemption in the offer's aggregate for its side;
    * with ``tell_hq``, a non-perishable ``redemption`` event for HQ::

          {"offer": OFFER_ID, "side": "treatment" | "control" | "unattributed",
           "redeemed_at": SECONDS}

      plus ``"shopper"`` and ``"decision"`` only when the shopper's ``analytics`` consent
      allows it when the event is made (read in the same transaction). The decision id goes
      with the shopper: HQ may hold that decision with the shopper's id (a ``decision`` event
      made while they allowed analytics), so the id alone would tie the sale to them.

Where it lives (the ``counters`` database, whose keys are ``shopper \\x00 name \\x00 window``
and whose values are 8-byte big-endian counts; ``~`` starts no shopper id this store issues
or a token subject accepts, so these never mix with a shopper's caps):

====================================================  ===========================================
key                                                   count
====================================================  ===========================================
``~store \\x00 OFFER_ID \\x00 impressions:treatment``  times the offer was shown (the engine, with
                                                      :func:`bump_exposure_in`), once per shopper
                                                      and moment
``~store \\x00 OFFER_ID \\x00 impressions:control``    times it was held out (the engine,
                                                      likewise, also once per moment)
``~store \\x00 OFFER_ID \\x00 redemptions:SIDE``       redemptions by side, ``unattributed`` too
``~redeemed \\x00 LANE/RECEIPT \\x00 day:YYYY-MM-DD``  1: a receipt recorded on that (UTC) day
====================================================  ===========================================

The aggregates' windows name no day, so ``gateway.consents.sweep_counters_op`` keeps them. The
de-duplication keys carry the day they were recorded, so the same hourly sweep drops them two
days after that day ends: a receipt is recognised again for at least 48 hours after it was
first recorded (the keys of the recording day and the two before it are checked).
"""

from __future__ import annotations

import datetime as dt
import math
import struct
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal

import msgspec

from gateway.consents import MAX_DECISIONS, STORE_COUNTER, RefusedChange, counters, decisions
from gateway.errors import PayloadError
from gateway.payloads import decode_bounded
from gateway.store import codec
from gateway.store.database import Database
from gateway.store.records import ConsentRecord, Purpose
from gateway.store.writer import WriteOp
from gateway.sync.outbox import enqueue_in

__all__ = [
    "DEDUP_COUNTERS",
    "DEFAULT_WINDOW_S",
    "HOLDOUT_RULE",
    "LANE_PATTERN",
    "PROTOCOL_VERSION",
    "SIDES",
    "Attributed",
    "Attribution",
    "OfferTally",
    "Redemption",
    "RedemptionError",
    "RedemptionLimits",
    "Side",
    "attribute",
    "bump_exposure_in",
    "check_redemption",
    "encode_redemption",
    "exposures",
    "parse_redemption",
    "record_redemption_op",
]

PROTOCOL_VERSION: Final = 1
DEFAULT_WINDOW_S: Final = 3 * 86_400.0
HOLDOUT_RULE: Final = "holdout"
"""The rule name the engine writes in a decision's ``rejected`` for an offer held out."""
DEDUP_COUNTERS: Final = "~redeemed"
"""The pseudo shopper id the receipts' de-duplication keys are kept under in ``counters``."""

Side = Literal["treatment", "control"]
Attributed = Literal["treatment", "control", "unattributed"]
SIDES: Final[tuple[Side, ...]] = ("treatment", "control")

LANE_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
"""A lane id: one MQTT topic level, letters, digits and ``_.-``, 1 to 64 characters."""
_NO_NUL: Final = r"^[^\x00]+$"
_MAX_OFFER_BYTES: Final = 256
_MAX_BYTES: Final = {"offer_id": 200, "receipt": 128, "shopper_id": 200}
_EARLIEST: Final = 946_684_800.0  # 2000-01-01: a POS clock never set
_LATEST: Final = 4_102_444_800.0  # 2100-01-01
_U64: Final = struct.Struct(">Q")
_ONE: Final = _U64.pack(1)
_DEDUP_DAYS: Final = 3  # the recording day and the two before it (the sweep keeps 2 days)


class RedemptionError(PayloadError):
    """A redemption was rejected. ``reason``: ``oversized_payload``, ``bad_json`` (not JSON,
    not UTF-8), ``bad_field`` (a missing field, a wrong type, a value out of bounds; the
    detail names the path), ``unsupported_version``, ``lane_mismatch`` (the payload's lane
    is not the topic's)."""


class Redemption(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=False):
    """One redemption as a lane reports it (the wire shape, validated by :func:`parse_redemption`).

    Ids have no NUL: ``offer_id`` 1 to 200 bytes (UTF-8), ``shopper_id`` 1 to 200 bytes (the
    shopper id rules), ``receipt`` 1 to 128 bytes; ``lane`` one topic level (1 to 64 of
    letters, digits, ``_.-``); ``at`` seconds since the epoch, from 2000 to 2100 (the lane's
    clock)."""

    v: int
    lane: Annotated[str, msgspec.Meta(pattern=LANE_PATTERN)]
    offer_id: Annotated[str, msgspec.Meta(max_length=200, pattern=_NO_NUL)]
    at: Annotated[float, msgspec.Meta(ge=_EARLIEST, le=_LATEST)]
    receipt: Annotated[str, msgspec.Meta(max_length=128, pattern=_NO_NUL)]
    shopper_id: Annotated[str, msgspec.Meta(max_length=200, pattern=_NO_NUL)] | None = None


_decoder: Final = msgspec.json.Decoder(Redemption)


@dataclass(frozen=True, slots=True)
class RedemptionLimits:
    max_payload_bytes: int = 4096


def parse_redemption(
    payload: bytes, limits: RedemptionLimits, *, topic_lane: str | None = None
) -> Redemption:
    """Validate and decode one redemption; ``topic_lane`` is the lane of the MQTT topic it
    came on (None for the API, where there is no topic to match)."""
    redemption = decode_bounded(_decoder, payload, limits.max_payload_bytes, RedemptionError)
    return check_redemption(redemption, topic_lane=topic_lane)


def check_redemption(redemption: Redemption, *, topic_lane: str | None = None) -> Redemption:
    """What :func:`parse_redemption` checks beyond the schema, for a body decoded elsewhere
    (the API): the version, the lane against the topic's, the ids' sizes in bytes (UTF-8:
    the schema bounds characters)."""
    if redemption.v != PROTOCOL_VERSION:
        raise RedemptionError("unsupported_version", f"v={redemption.v}, this gateway speaks 1")
    if topic_lane is not None and redemption.lane != topic_lane:
        raise RedemptionError("lane_mismatch", f"payload lane does not match topic {topic_lane}")
    for field, value in (
        ("offer_id", redemption.offer_id),
        ("receipt", redemption.receipt),
        ("shopper_id", redemption.shopper_id),
    ):
        if value is not None and len(value.encode()) > _MAX_BYTES[field]:
            raise RedemptionError("bad_field", f"$.{field} over {_MAX_BYTES[field]} bytes")
    return redemption


def encode_redemption(redemption: Redemption) -> bytes:
    """The wire shape, for simulated lanes and tests."""
    return msgspec.json.encode(redemption)


# ----- attribution -----


@dataclass(frozen=True, slots=True)
class Attribution:
    """Which side of the offer's holdout a redemption counts on, and the decision why."""

    side: Attributed
    decision_id: str | None = None


_UNATTRIBUTED: Final = Attribution("unattributed")


def attribute(
    db: Database, redemption: Redemption, *, window_s: float = DEFAULT_WINDOW_S
) -> Attribution:
    """The side of ``redemption`` (see the module notes); reads only."""
    if not (math.isfinite(window_s) and window_s >= 0):
        raise ValueError(f"window_s must be finite and >= 0, got {window_s!r}")
    if redemption.shopper_id is None:
        return _UNATTRIBUTED
    offer, at = redemption.offer_id, redemption.at
    held_out: Attribution | None = None
    for record in decisions(db, redemption.shopper_id, MAX_DECISIONS):  # newest first
        if not at - window_s <= record.at <= at:
            continue
        if record.offer_id == offer:
            return Attribution("treatment", record.decision_id)
        if held_out is None and (offer, HOLDOUT_RULE) in record.rejected:
            held_out = Attribution("control", record.decision_id)
    return held_out or _UNATTRIBUTED


# ----- the aggregates -----


def _offer_raw(offer_id: str) -> bytes:
    raw = offer_id.encode()
    if not raw or len(raw) > _MAX_OFFER_BYTES or b"\x00" in raw:
        raise RefusedChange("invalid_id", f"offer id of {len(raw)} bytes, or with a NUL")
    return raw


def _tally_key(offer_id: str, metric: str) -> bytes:
    return b"\x00".join((STORE_COUNTER.encode(), _offer_raw(offer_id), metric.encode()))


def _bump_in(txn: Any, db: Database, key: bytes) -> int:
    handle = db.handle("counters")
    raw = txn.get(key, db=handle)
    count: int = (0 if raw is None else _U64.unpack(bytes(raw))[0]) + 1
    txn.put(key, _U64.pack(count), db=handle)
    return count


def bump_exposure_in(txn: Any, db: Database, offer_id: str, side: Side) -> int:
    """Inside ``txn`` (the caller's, with the decision it counts): one more exposure of the
    offer on ``side``, ``treatment`` (shown) or ``control`` (held out); returns the new count.
    ``RefusedChange`` (``invalid_id``) for an offer id that is empty, over 256 bytes or has a
    NUL; ``ValueError`` for another side."""
    if side not in SIDES:
        raise ValueError(f"side {side!r}; expected one of {SIDES}")
    return _bump_in(txn, db, _tally_key(offer_id, f"impressions:{side}"))


@dataclass(frozen=True, slots=True)
class OfferTally:
    """One offer's aggregates: exposures and redemptions by side."""

    offer_id: str
    impressions_treatment: int = 0
    impressions_control: int = 0
    redemptions_treatment: int = 0
    redemptions_control: int = 0
    redemptions_unattributed: int = 0


_FIELDS: Final = frozenset(
    f"{metric}:{side}"
    for metric, sides in (
        ("impressions", SIDES),
        ("redemptions", (*SIDES, "unattributed")),
    )
    for side in sides
)


def exposures(db: Database) -> dict[str, OfferTally]:
    """Every offer's aggregates, by offer id in order; an offer appears once something was
    counted for it. Rows of another shape under the pseudo shopper are ignored."""
    counts: dict[str, dict[str, int]] = {}
    for (offer_id, metric), count in counters(db, STORE_COUNTER).items():
        if metric in _FIELDS:
            counts.setdefault(offer_id, {})[metric.replace(":", "_")] = count
    return {offer: OfferTally(offer, **counts[offer]) for offer in sorted(counts)}


# ----- recording -----


def _dedup_keys(redemption: Redemption, now: float) -> list[bytes]:
    name = f"{redemption.lane}/{redemption.receipt}".encode()
    today = dt.datetime.fromtimestamp(now, dt.UTC).date()
    return [
        b"\x00".join((DEDUP_COUNTERS.encode(), name, f"day:{day.isoformat()}".encode()))
        for day in (today - dt.timedelta(days=n) for n in range(_DEDUP_DAYS))
    ]


def _analytics_in(txn: Any, db: Database, shopper_id: str, now: float) -> bool:
    raw = txn.get(shopper_id.encode(), db=db.handle("consents"))
    if raw is None:
        return False
    return codec.decode_as(ConsentRecord, bytes(raw)).allows(Purpose.ANALYTICS, now)


def record_redemption_op(
    db: Database,
    store_id: str,
    redemption: Redemption,
    attribution: Attribution,
    *,
    now: float,
    tell_hq: bool,
) -> WriteOp[bool]:
    """A write operation recording ``redemption`` as ``attribution`` says, at ``now`` (the
    gateway's clock: the de-duplication day, the consent check, the event's time); True when
    recorded, False for a receipt already recorded (see the module notes)."""
    check_redemption(redemption)
    if not math.isfinite(now):
        raise ValueError(f"now must be finite, got {now!r}")
    fresh_key, *older_keys = _dedup_keys(redemption, now)
    tally_key = _tally_key(redemption.offer_id, f"redemptions:{attribution.side}")
    shopper = redemption.shopper_id
    at_ms = int(now * 1000)

    def record(txn: Any) -> bool:
        handle = db.handle("counters")
        if any(txn.get(key, db=handle) is not None for key in (fresh_key, *older_keys)):
            return False
        txn.put(fresh_key, _ONE, db=handle)
        _bump_in(txn, db, tally_key)
        if tell_hq:
            body: dict[str, Any] = {
                "offer": redemption.offer_id,
                "side": attribution.side,
                "redeemed_at": redemption.at,
            }
            if shopper is not None and _analytics_in(txn, db, shopper, now):
                body["shopper"] = shopper
                if attribution.decision_id is not None:
                    body["decision"] = attribution.decision_id
            enqueue_in(txn, db, store_id, "redemption", body, at_ms, perishable=False)
        return True

    return record
