"""The shopper in control, at run time: what the ``/v1`` API does, and the effects of every
consent change on what is running.

Owned by the :class:`~gateway.runtime.Gateway` and called from the event loop (HTTP handlers
and presence events). Every change is one write operation through the store's single writer
(ledger, state, outbox event together), and its effects on live state happen after the commit
and before the caller answers, so a withdrawal is in force for the very next request:

=====================  ==============================================================
withdrawn              effect, before the HTTP answer
=====================  ==============================================================
``presence``           out of the EID/IRK resolver tables and every zone; kiosks clear
``personalization``,   every kiosk re-decides from the store (generic content for them)
``kiosk_display``
``phone_messages``,    queued phone messages cancelled
``personalization``
``staff_assist``       their open staff alerts withdrawn
"no marketing"         all of the above that show or send anything
erasure                all of the above; tokens of the shopper stop working
=====================  ==============================================================
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import secrets
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import Any, Final

import msgspec
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from beacons.eid import derive_identity_key, generate_resolver_keypair
from beacons.errors import IdentityError
from beacons.frames import EddystoneUID, Frame, IBeacon
from beacons.presence import NearKiosk, PresenceEvent, ZoneEntered
from gateway.config import Config
from gateway.consents import (
    ConsentChange,
    RefusedChange,
    bump_counter_in,
    change_consents_op,
    counter,
    decisions,
    in_quiet_hours,
    preferences,
    record_decision_in,
    refusal,
    set_preferences_op,
    sweep_counters_op,
)
from gateway.engine import KioskDecision, PhoneDecision, has_holdout
from gateway.erasure import ErasureReport, erase_shopper_op, export
from gateway.errors import ApiError, AuthError, RenderError, StoreError
from gateway.helpdesk import AckOutcome, Help, HelpDesk
from gateway.kiosk import KioskDirector, KioskView
from gateway.metrics import Metrics
from gateway.moments import Moments
from gateway.phone import PhoneQueue
from gateway.pricing import Quote
from gateway.ratelimit import RateLimiter
from gateway.redemptions import bump_exposure_in
from gateway.render import Renderer, card_values
from gateway.sensing import Sensing
from gateway.store import (
    ConsentRecord,
    Database,
    EidKeyRecord,
    IrkRecord,
    ProfileRecord,
    Purpose,
    Writer,
)
from gateway.store.database import delete_under
from gateway.store.hlc import HybridClock
from gateway.store.records import DecisionRecord, PreferencesRecord
from gateway.sync.outbox import enqueue_in
from gateway.today import Today
from gateway.tokens import (
    Claims,
    Role,
    Tokens,
    generation,
    revoke_op,
    revoke_subject_op,
    secret_op,
)
from gateway.tokens import sweep_op as token_sweep_op

__all__ = ["Card", "Shoppers"]

log = logging.getLogger(__name__)

_RESOLVER_KEY: Final = b"eid_resolver_private"
_LINK_PREFIX: Final = b"link:"
_SHOWING: Final = (Purpose.PRESENCE, Purpose.PERSONALIZATION, Purpose.KIOSK_DISPLAY)
_SENDING: Final = (Purpose.PHONE_MESSAGES, Purpose.PERSONALIZATION)
_DAY_CAP_DEFAULT: Final = 3
_VISIT_CAP_DEFAULT: Final = 1


class Card(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """An offer for the phone, with the decision that chose it (also the API's answer)."""

    offer_id: str
    title: str
    body: str
    price: float | None
    regular_price: float | None
    currency: str
    personal: bool
    decision_id: str
    html: str = ""  # the card rendered for the phone (HQ's template for the offer, or ours)


class Shoppers:
    def __init__(
        self,
        *,
        config: Config,
        db: Database,
        writer: Writer,
        clock: Any,
        metrics: Metrics,
        kiosks: KioskDirector,
        sensing: Sensing,
        moments: Moments | None = None,
        renderer: Renderer | None = None,
        today: Today | None = None,
    ) -> None:
        api = config.api
        self._config = config
        self._db = db
        self._writer = writer
        self._clock = clock
        self._metrics = metrics
        self._kiosks = kiosks
        self._sensing = sensing
        self._moments = moments or Moments(db=db, utc_offset_h=config.api.utc_offset_h)
        self._renderer = renderer or Renderer()
        self._today = today or Today(db=db, writer=None, utc_offset_h=api.utc_offset_h)
        self._store = config.store_id
        self.hlc: HybridClock | None = None
        self._tokens: Tokens | None = None
        self._resolver: tuple[bytes, bytes] | None = None  # X25519 private, public
        self.phone: PhoneQueue[Card] = PhoneQueue(per_shopper=api.phone_queue)
        self.helpdesk = HelpDesk(
            help_after_s=config.help_after_s(),
            escalate_after_s=config.staff.escalate_after_s,
            away_after_s=config.staff.away_after_s,
        )
        self._device_limit = RateLimiter(api.rate_per_s, api.burst)
        self._public_limit = RateLimiter(api.register_per_min / 60.0, api.register_per_min)
        self.on_enqueued: list[Callable[[], None]] = []  # an outbox event was committed
        self.on_phone: list[Callable[[bytes], None]] = []  # a card queued for a phone
        self._pending: set[asyncio.Future[Any]] = set()

    # ----- lifecycle -----

    async def start(self, hlc: HybridClock) -> None:
        """Load (creating once) the token secret and the EID resolver key pair."""
        self.hlc = hlc
        self._tokens = Tokens(await self._writer.write(secret_op(self._db)))
        private: bytes = await self._writer.write(_resolver_key_op(self._db))
        public = X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()
        self._resolver = (private, public)

    @property
    def tokens(self) -> Tokens:
        if self._tokens is None:
            raise ApiError("unavailable", "the gateway is starting", status=503, retry_after=1)
        return self._tokens

    def limiter_for(self, who: tuple[Role, ...]) -> RateLimiter:
        return self._device_limit if who else self._public_limit

    def _stamp(self) -> int:
        if self.hlc is None:
            raise ApiError("unavailable", "the gateway is starting", status=503, retry_after=1)
        return self.hlc.now()

    async def housekeeping(self) -> dict[str, int]:
        """Hourly: drop what has outlived its use (revocations of expired tokens, unused link
        codes past their time, caps counters of windows long over)."""
        now = self._clock.now()
        dropped = {
            "revocations": await self._writer.write(token_sweep_op(self._db, now)),
            "link_codes": await self._writer.write(_sweep_links_op(self._db, now)),
            "counters": await self._writer.write(sweep_counters_op(self._db, now)),
        }
        if any(dropped.values()):
            log.info("housekeeping", extra=dropped)
        return dropped

    # ----- registration and tokens -----

    async def register(
        self,
        *,
        first_name: str,
        nickname: str,
        locale: str,
        consents: Mapping[Any, bool],
        notice_version: str,
        link_code: str | None,
    ) -> tuple[str, str, Claims, ConsentRecord]:
        now = self._clock.now()
        if link_code is not None:
            shopper_id = await self._writer.write(_take_link_op(self._db, link_code, now))
            if shopper_id is None:
                raise ApiError("invalid_link_code", "unknown or expired link code", status=422)
        else:
            shopper_id = f"app-{secrets.token_hex(8)}"
            profile = ProfileRecord(
                shopper_id=shopper_id,
                first_name=first_name,
                nickname=nickname,
                locale=locale,
                origin="store",
            )
            await self._writer.write(self._db.put_op([profile]))
        record = await self.change_consents(
            shopper_id,
            {purpose: (granted, None) for purpose, granted in consents.items()},
            no_marketing=None,
            notice_version=notice_version,
        )
        token, claims = await self.issue("shopper", shopper_id)
        log.info("shopper registered", extra={"linked": link_code is not None})
        return shopper_id, token, claims, record

    async def issue(
        self, role: Role, subject: str, ttl_days: float | None = None
    ) -> tuple[str, Claims]:
        api = self._config.api
        days = ttl_days or (api.shopper_token_days if role == "shopper" else api.device_token_days)
        return self.tokens.issue(
            role,
            subject,
            now=self._clock.now(),
            ttl_s=days * 86_400.0,
            generation=generation(self._db, role, subject),
        )

    async def refresh(self, claims: Claims) -> tuple[str, Claims]:
        token, fresh = await self.issue(claims.role, claims.subject)
        await self._writer.write(revoke_op(self._db, claims))
        return token, fresh

    async def revoke(self, claims: Claims) -> None:
        await self._writer.write(revoke_op(self._db, claims))

    async def revoke_subject(self, role: Role, subject: str) -> int:
        generation: int = await self._writer.write(revoke_subject_op(self._db, role, subject))
        return generation

    async def link_code(self, shopper_id: str, ttl_s: float) -> tuple[str, float]:
        if self._db.profile(shopper_id) is None:
            raise ApiError("not_found", f"no profile {shopper_id!r} on this store", status=404)
        code = secrets.token_urlsafe(12).replace("-", "a").replace("_", "b")
        expires_at = self._clock.now() + ttl_s
        await self._writer.write(_put_link_op(self._db, code, shopper_id, expires_at))
        return code, expires_at

    async def settled(self) -> None:
        """Until the decisions and records already started are written (tests, shutdown)."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    def _enqueued(self) -> None:
        for wake in self.on_enqueued:
            wake()

    # ----- consents and preferences -----

    def consent(self, shopper_id: str) -> ConsentRecord:
        return self._db.consent(shopper_id) or ConsentRecord(shopper_id=shopper_id)

    async def change_consents(
        self,
        shopper_id: str,
        purposes: Mapping[str, tuple[bool, float | None]],
        *,
        no_marketing: bool | None,
        notice_version: str,
        channel: str = "app",
    ) -> ConsentRecord:
        now = self._clock.now()
        before = self.consent(shopper_id)
        changes = [
            ConsentChange(
                purpose=purpose,
                granted=granted,
                notice_version=notice_version or self._config.api.notice_version,
                channel=channel,
                expires_at=expires_at,
            )
            for purpose, (granted, expires_at) in purposes.items()
        ]
        if not changes and no_marketing is None:
            return before
        try:
            after: ConsentRecord = await self._writer.write(
                change_consents_op(
                    self._db,
                    self._store,
                    shopper_id,
                    changes,
                    hlc=self._stamp(),
                    now=now,
                    no_marketing=no_marketing,
                    tell_hq=self._config.hq.enabled,
                )
            )
        except (RefusedChange, StoreError) as exc:
            raise _refused(exc) from exc
        self._metrics.consent_changes.inc(len(changes) + (no_marketing is not None))
        self._enqueued()
        self.enforce(shopper_id, before, after, now)
        return after

    def enforce(
        self, shopper_id: str, before: ConsentRecord, after: ConsentRecord, now: float
    ) -> None:
        """Put a consent change into force on everything running (see the module's table)."""

        def lost(*purposes: Purpose) -> bool:
            return any(before.allows(p, now) and not after.allows(p, now) for p in purposes) or (
                after.no_marketing and not before.no_marketing
            )

        if not after.allows(Purpose.PRESENCE, now):
            self._sensing.forget(shopper_id)
            self._moments.forget(shopper_id)
            self._kiosks.forget(shopper_id)
            self._today.forget(shopper_id)
        if lost(*_SHOWING) or after.no_marketing:
            self._kiosks.refresh_all()
        if lost(*_SENDING) or not after.allows(Purpose.PHONE_MESSAGES, now):
            self.phone.cancel(shopper_id)
        if not after.allows(Purpose.STAFF_ASSIST, now):
            self._withdraw_help(shopper_id)

    def preferences(self, shopper_id: str) -> PreferencesRecord:
        return preferences(self._db, shopper_id) or PreferencesRecord(shopper_id=shopper_id)

    async def set_preferences(self, record: PreferencesRecord) -> PreferencesRecord:
        try:
            await self._writer.write(set_preferences_op(self._db, record))
        except (RefusedChange, StoreError) as exc:
            raise _refused(exc) from exc
        return record

    # ----- data, erasure -----

    def export(self, shopper_id: str) -> dict[str, Any]:
        data: dict[str, Any] = export(self._db, shopper_id)
        data["waiting_phone_messages"] = len(self.phone.peek(shopper_id))
        data["open_help_requests"] = self.helpdesk.open_for(shopper_id)
        return data

    async def erase(self, shopper_id: str) -> tuple[ErasureReport, float]:
        now = self._clock.now()
        report: ErasureReport = await self._writer.write(
            erase_shopper_op(
                self._db,
                self._store,
                shopper_id,
                hlc=self._stamp(),
                now=now,
                tell_hq=self._config.hq.enabled,
            )
        )
        self._enqueued()
        self._sensing.forget(shopper_id)
        self._moments.forget(shopper_id)
        self._kiosks.forget(shopper_id)
        self._today.forget(shopper_id)
        self._kiosks.refresh_all()
        self.phone.cancel(shopper_id)
        self._withdraw_help(shopper_id)
        log.info("shopper erased", extra={"removed": sum(report.removed.values())})
        return report, now

    # ----- offers for the phone, and why -----

    async def phone_offers(self, shopper_id: str) -> tuple[list[Card], str]:
        """What the phone may show now (the app asked): one decision, recorded."""
        decision = self._decide_phone(shopper_id, self._clock.now(), count_caps=False)
        if decision.offer is None:
            return [], decision.reason
        shown = self._shown(shopper_id, decision)
        card = await self._record(shopper_id, decision, shown, channel="phone", bump=False)
        return [card], decision.reason

    def on_kiosk_view(
        self, view: KioskView, shopper_id: str | None, decision: KioskDecision
    ) -> None:
        """A kiosk changed what it shows to a recognised shopper: the decision is recorded
        (what was chosen, every offer left out and why, a held-out shopper's control
        exposure), the showing counted for the caps and the learning, in one transaction."""
        if shopper_id is None or self.hlc is None:
            return
        if not (view.personal and view.offer_id is not None) and not decision.held_out:
            return
        now = self._clock.now()
        offer = decision.offer if view.personal else None
        profile = self._db.profile(shopper_id)
        shown = self._moments.shown(shopper_id, offer, now, profile) if offer else None
        record = DecisionRecord(
            decision_id=secrets.token_hex(8),
            shopper_id=shopper_id,
            at=now,
            hlc=self._stamp(),
            channel="kiosk",
            kiosk_id=view.kiosk_id,
            offer_id=view.offer_id if view.personal else None,
            reason=view.reason,
            rejected=list(decision.rejected),
            inputs={
                "personal": view.personal,
                "held_out": list(decision.held_out),
                **_quote_inputs(
                    self._moments.quoted(shopper_id, offer.offer_id) if offer else None
                ),
            },
        )

        held_out = self._moments.held_out(shopper_id, decision.held_out)
        today = self._today
        with_holdout = offer is not None and has_holdout(offer)

        def write(txn: Any) -> None:
            record_decision_in(txn, self._db, record)
            if shown is not None:
                self._moments.count_op_in(txn, *shown)
                bump_exposure_in(txn, self._db, shown[0], "treatment")
                today.shown_in(txn, now, with_holdout=with_holdout)
            for offer_id in held_out:
                bump_exposure_in(txn, self._db, offer_id, "control")
                today.bump_in(txn, "held_out", now)

        try:
            future = self._writer.submit(write)
        except StoreError as exc:  # stopping: the screen's content is not affected
            log.warning("kiosk decision not recorded", extra={"error": str(exc)})
            return
        self._pending.add(future)
        future.add_done_callback(self._recorded)

    def _recorded(self, future: asyncio.Future[Any]) -> None:
        self._pending.discard(future)
        if not future.cancelled() and future.exception() is not None:
            log.warning("kiosk decision not recorded", extra={"error": str(future.exception())})

    def why(self, shopper_id: str, offer_id: str) -> DecisionRecord:
        for record in decisions(self._db, shopper_id, limit=200):
            if record.offer_id == offer_id:
                return record
        raise ApiError("not_found", f"no decision showed you offer {offer_id!r}", status=404)

    def messages(self, shopper_id: str) -> list[Card]:
        consent = self.consent(shopper_id)
        now = self._clock.now()
        if consent.no_marketing or not consent.allows(Purpose.PHONE_MESSAGES, now):
            self.phone.cancel(shopper_id)  # belt and braces: nothing leaves without consent
            return []
        return self.phone.take(shopper_id)

    def on_presence(self, event: PresenceEvent) -> None:
        """An entry or an approach may queue one offer for the phone, within the caps."""
        if not isinstance(event, ZoneEntered | NearKiosk):
            return
        # The visit (for the per-visit limit) is the moments' own: they saw this event first.
        self._phone_moment(event.subject, event.t)

    def on_signal(self, shopper_id: str, t: float) -> None:
        """A device signal (a shelf restocked) started a moment for a shopper in the store:
        it may queue one offer for the phone, within the caps, like an entry."""
        self._phone_moment(shopper_id, t)

    def _phone_moment(self, shopper_id: str, t: float) -> None:
        try:
            decision = self._decide_phone(shopper_id, t, count_caps=True)
        except StoreError as exc:
            log.warning("phone decision failed", extra={"error": str(exc)})
            return
        if decision.offer is None:
            return
        shown = self._shown(shopper_id, decision)
        future = asyncio.ensure_future(
            self._record(shopper_id, decision, shown, channel="phone", bump=True)
        )
        self._pending.add(future)
        future.add_done_callback(partial(self._queued, shopper_id))

    def _queued(self, shopper_id: str, future: asyncio.Future[Card]) -> None:
        self._pending.discard(future)
        if future.cancelled():
            return
        exc = future.exception()
        if exc is not None:
            log.warning("phone message not queued", extra={"error": str(exc)})
            return
        # Consent may have changed while the decision was written: checked again, the personal
        # part too (a withdrawal committed in the same group was enforced before this runs).
        card = future.result()
        consent = self.consent(shopper_id)
        now = self._clock.now()
        if consent.no_marketing or not consent.allows(Purpose.PHONE_MESSAGES, now):
            return
        if card.personal and not consent.allows(Purpose.PERSONALIZATION, now):
            return
        self.phone.push(shopper_id, card)
        payload = msgspec.json.encode({"v": 1, "shopper": shopper_id, "card": card})
        for push in self.on_phone:
            push(payload)

    def _visit_start(self, shopper_id: str, now: float) -> float:
        start = self._moments.visit_start(shopper_id)
        return now if start is None else start

    def _decide_phone(self, shopper_id: str, now: float, *, count_caps: bool) -> PhoneDecision:
        consent = self._db.consent(shopper_id)
        profile = self._db.profile(shopper_id)
        prefs = self.preferences(shopper_id)
        local = dt.datetime.fromtimestamp(now, dt.UTC) + dt.timedelta(
            hours=self._config.api.utc_offset_h
        )
        quiet = in_quiet_hours(prefs, local.hour)
        capped = ""
        if count_caps:
            day = f"day:{local.date().isoformat()}"
            visit = f"visit:{int(self._visit_start(shopper_id, now))}"
            max_day = _DAY_CAP_DEFAULT if prefs.max_per_day is None else prefs.max_per_day
            max_visit = _VISIT_CAP_DEFAULT if prefs.max_per_visit is None else prefs.max_per_visit
            if counter(self._db, shopper_id, "phone", day) >= max_day:
                capped = "the shopper's daily limit is reached"
            elif counter(self._db, shopper_id, "phone", visit) >= max_visit:
                capped = "the shopper's limit for this visit is reached"
        held = "the shopper's quiet hours" if quiet else capped
        return self._moments.decide(now, "phone", shopper_id, profile, consent, held=held)

    def _shown(self, shopper_id: str, decision: PhoneDecision) -> tuple[str, str] | None:
        """Count a showing at once, before any await: the next decision (this channel or
        another, this tick or the next) already sees it against the caps."""
        assert decision.offer is not None
        profile = self._db.profile(shopper_id)
        return self._moments.shown(shopper_id, decision.offer, self._clock.now(), profile)

    async def _record(
        self,
        shopper_id: str,
        decision: PhoneDecision,
        shown: tuple[str, str] | None,
        *,
        channel: str,
        bump: bool,
    ) -> Card:
        assert decision.offer is not None
        now = self._clock.now()
        decision_id = secrets.token_hex(8)
        showing = self._moments.quote(shopper_id, decision.offer, now)
        record = DecisionRecord(
            decision_id=decision_id,
            shopper_id=shopper_id,
            at=now,
            hlc=self._stamp(),
            channel="phone",
            offer_id=decision.offer.offer_id,
            reason=decision.reason,
            rejected=list(decision.rejected),
            inputs={
                "personal": decision.personal,
                "held_out": list(decision.held_out),
                **_quote_inputs(showing.quote),
            },
        )
        local = dt.datetime.fromtimestamp(now, dt.UTC) + dt.timedelta(
            hours=self._config.api.utc_offset_h
        )
        visit = f"visit:{int(self._visit_start(shopper_id, now))}"
        windows = (f"day:{local.date().isoformat()}", visit) if bump else ()

        summary: dict[str, Any] = {
            "decision": decision_id,
            "channel": "phone",
            "offer": decision.offer.offer_id,
            "personal": decision.personal,
            "reason": decision.reason,
        }
        consent = self._db.consent(shopper_id)
        if consent is not None and consent.allows(Purpose.ANALYTICS, now):
            summary["shopper"] = shopper_id
        at_ms = round(now * 1000)

        held_out = self._moments.held_out(shopper_id, decision.held_out)
        with_holdout = has_holdout(decision.offer)

        def write(txn: Any) -> None:
            record_decision_in(txn, self._db, record)
            for window in windows:
                bump_counter_in(txn, self._db, shopper_id, "phone", window)
            if shown is not None:  # counted once per moment, whatever the channel
                self._moments.count_op_in(txn, *shown)
                bump_exposure_in(txn, self._db, shown[0], "treatment")
                self._today.shown_in(txn, now, with_holdout=with_holdout)
            for offer_id in held_out:  # likewise
                bump_exposure_in(txn, self._db, offer_id, "control")
                self._today.bump_in(txn, "held_out", now)
            if self._config.hq.enabled:
                # The decision summary for HQ, in the same transaction as the record.
                enqueue_in(txn, self._db, self._store, "decision", summary, at_ms, perishable=True)

        await self._writer.write(write)
        self._enqueued()
        offer = decision.offer
        profile = self._db.profile(shopper_id)
        values = card_values(
            offer,
            price=showing.price,
            regular_price=showing.regular_price,
            locale=profile.locale if profile is not None else "en",
            store_name=self._store,
        )
        try:
            html = self._renderer.render_card(offer.template_id, "phone", **values)
        except RenderError as exc:  # the JSON card still goes; the app draws it itself
            log.warning("phone card not rendered", extra={"error": str(exc)})
            html = ""
        return Card(
            offer_id=offer.offer_id,
            title=str(values["title"]),
            body=str(values["body"]),
            price=showing.price,
            regular_price=showing.regular_price,
            currency=offer.currency,
            personal=decision.personal,
            decision_id=decision_id,
            html=html,
        )

    # ----- app sightings, keys -----

    def sightings(self, shopper_id: str, sightings: Iterable[Any]) -> tuple[int, dict[str, int]]:
        now = self._clock.now()
        placed = 0
        dropped: dict[str, int] = {}
        for s in sightings:
            frame = _frame_of(s)
            if frame is None:
                dropped["incomplete_beacon"] = dropped.get("incomplete_beacon", 0) + 1
                continue
            at = s.at if s.at is not None else now
            if at > now + 5 or at < now - 300:
                dropped["stale_or_future"] = dropped.get("stale_or_future", 0) + 1
                continue
            outcome = self._sensing.app_sighting(shopper_id, frame, s.rssi, at)
            if outcome == "placed":
                placed += 1
            else:
                dropped[outcome] = dropped.get(outcome, 0) + 1
        return placed, dropped

    async def register_eid(
        self, shopper_id: str, beacon_public: bytes, exponent: int, beacon_time: int
    ) -> bytes:
        assert self._resolver is not None
        private, public = self._resolver
        try:
            identity_key = derive_identity_key(private, beacon_public, public)
        except IdentityError as exc:
            raise ApiError("invalid_key", str(exc), status=422) from exc
        record = EidKeyRecord(
            shopper_id=shopper_id,
            identity_key=identity_key,
            exponent=exponent,
            epoch_offset=self._clock.now() - beacon_time,
            registered_at=self._clock.now(),
        )
        await self._put_identity(record)
        return public

    async def register_irk(self, shopper_id: str, irk: bytes) -> None:
        await self._put_identity(
            IrkRecord(shopper_id=shopper_id, irk=irk, registered_at=self._clock.now())
        )

    async def _put_identity(self, record: EidKeyRecord | IrkRecord) -> None:
        written = await self._writer.write(self._db.put_op([record]))
        if not written:
            raise AuthError("token_revoked", "this shopper was erased")
        self._sensing.identities.maintain(self._clock.now())

    # ----- help -----

    def ask_help(self, shopper_id: str) -> Help:
        now = self._clock.now()
        if not self.consent(shopper_id).allows(Purpose.STAFF_ASSIST, now):
            raise ApiError(
                "consent_required",
                "staff can only be alerted with your staff_assist consent",
                status=403,
            )
        return self.helpdesk.ask(
            shopper_id,
            name=self._staff_name(shopper_id),
            zone=self._sensing.zone_of(shopper_id),
            now=now,
        )

    def _staff_name(self, shopper_id: str) -> str:
        # What staff_assist allows staff to see: a nickname or first name, never more.
        profile = self._db.profile(shopper_id)
        return (profile.nickname or profile.first_name) if profile is not None else ""

    def acknowledge_help(self, alert_id: str, staff_id: str) -> Help:
        """A staff member takes an alert: the first wins (409 for the others, 404 for an
        alert that is not, or no longer, open)."""
        outcome, alert = self.helpdesk.acknowledge(alert_id, staff_id, self._clock.now())
        if outcome is AckOutcome.UNKNOWN or alert is None:
            raise ApiError("not_found", f"no open alert {alert_id!r}", status=404)
        if outcome is AckOutcome.TAKEN:
            raise ApiError(
                "already_acknowledged",
                f"alert {alert_id!r} was taken by {alert.acknowledged_by!r}",
                status=409,
            )
        return alert

    def resolve_help(self, alert_id: str) -> Help:
        """Staff closed an alert (helped, or nothing to do)."""
        alert = self.helpdesk.resolve(alert_id)
        if alert is None:
            raise ApiError("not_found", f"no open alert {alert_id!r}", status=404)
        return alert

    @property
    def help(self) -> dict[str, Help]:
        """The open help requests by alert id."""
        return self.helpdesk.alerts

    def _withdraw_help(self, shopper_id: str) -> None:
        self.helpdesk.withdraw(shopper_id)

    def recheck(self, now: float) -> None:
        """Once a second: consents also change through HQ's stream (or expire); what waits on
        a consent that no longer allows it is withdrawn here. Staff alerts escalate, time
        out, and dwell alerts are raised (consent checked as they are)."""
        dues = self.helpdesk.tick(now)
        for i, due in enumerate(dues):
            try:
                allowed = self.consent(due.shopper_id).allows(Purpose.STAFF_ASSIST, now)
                name = self._staff_name(due.shopper_id) if allowed else ""
            except StoreError:
                for undecided in dues[i:]:  # none is lost: they are due again next second
                    self.helpdesk.not_decided(undecided)
                raise
            if allowed:
                self.helpdesk.dwell(due.shopper_id, name=name, zone=due.zone, now=now)
        for shopper_id in self.helpdesk.shoppers():
            if not self.consent(shopper_id).allows(Purpose.STAFF_ASSIST, now):
                self._withdraw_help(shopper_id)
        for shopper_id in self.phone.shoppers():
            consent = self.consent(shopper_id)
            if consent.no_marketing or not consent.allows(Purpose.PHONE_MESSAGES, now):
                self.phone.cancel(shopper_id)
            elif not consent.allows(Purpose.PERSONALIZATION, now) and any(
                card.personal for card in self.phone.peek(shopper_id)
            ):
                self.phone.cancel(shopper_id)  # personal cards need personalization
        for shopper_id in self._sensing.shoppers():
            if not self.consent(shopper_id).allows(Purpose.PRESENCE, now):
                self._sensing.forget(shopper_id)
                self._kiosks.forget(shopper_id)


def _quote_inputs(quote: Quote | None) -> dict[str, Any]:
    """A come-now price as shown, kept in the decision record: the proof that honours it."""
    if quote is None:
        return {}
    return {
        "quote": {
            "price_cents": quote.price_cents,
            "regular_cents": quote.regular_cents,
            "currency": quote.currency,
            "valid_until": quote.valid_until,
        }
    }


def _refused(exc: Exception) -> Exception:
    """The API's error for a refused change; a store failure stays what it is."""
    refused = refusal(exc)
    if refused is None:
        return exc
    if refused.reason == "shopper_erased":
        return AuthError("token_revoked", "this shopper was erased")
    return ApiError(refused.reason, str(refused), status=422)


def _frame_of(s: Any) -> Frame | None:
    if s.uuid is not None and s.major is not None and s.minor is not None:
        return IBeacon(uuid=s.uuid.lower(), major=s.major, minor=s.minor, tx_power=-59)
    if s.namespace is not None and s.instance is not None:
        return EddystoneUID(
            namespace=s.namespace.lower(), instance=s.instance.lower(), tx_power=-20
        )
    return None


def _link_key(code: str) -> bytes:
    return _LINK_PREFIX + hashlib.sha256(code.encode()).digest()


def _put_link_op(
    db: Database, code: str, shopper_id: str, expires_at: float
) -> Callable[[Any], None]:
    value = msgspec.json.encode({"shopper_id": shopper_id, "expires_at": expires_at})

    def put(txn: Any) -> None:
        txn.put(_link_key(code), value, db=db.handle("tokens"))

    return put


def _take_link_op(db: Database, code: str, now: float) -> Callable[[Any], str | None]:
    """One use: the code is deleted whether or not it has expired."""

    def take(txn: Any) -> str | None:
        raw = txn.pop(_link_key(code), db=db.handle("tokens"))
        if raw is None:
            return None
        entry = msgspec.json.decode(raw)
        if entry["expires_at"] <= now or db.erased_in(txn, entry["shopper_id"]):
            return None
        return str(entry["shopper_id"])

    return take


def _sweep_links_op(db: Database, now: float) -> Callable[[Any], int]:
    """Drop link codes that expired unused."""

    def expired(_key: bytes, value: bytes) -> bool:
        try:
            return bool(msgspec.json.decode(value)["expires_at"] <= now)
        except (msgspec.DecodeError, KeyError, TypeError):
            return True  # unreadable: of no use to anyone

    def sweep(txn: Any) -> int:
        return delete_under(txn, db.handle("tokens"), _LINK_PREFIX, expired)

    return sweep


def _resolver_key_op(db: Database) -> Callable[[Any], bytes]:
    def get(txn: Any) -> bytes:
        meta = db.handle("meta")
        raw = txn.get(_RESOLVER_KEY, db=meta)
        if raw is None:
            raw = generate_resolver_keypair().private
            txn.put(_RESOLVER_KEY, raw, db=meta)
        return bytes(raw)

    return get
