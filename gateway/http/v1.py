"""The ``/v1`` endpoints: the shopper app, kiosk and staff devices, and the store's admin.

Each entry of :data:`ENDPOINTS` states who may call it; :mod:`gateway.http.api` enforces that,
the rate limits and the body schema before a handler runs. Handlers are thin: the rules and
their effects live in :mod:`gateway.shoppers`.
"""

from __future__ import annotations

from typing import Any, Final

from gateway.errors import ApiError, AuthError
from gateway.helpdesk import Help
from gateway.http.api import Call, Endpoint, Param
from gateway.http.schemas import (
    ConsentUpdate,
    ConsentView,
    EidRegistered,
    EidRegistration,
    ErasureDone,
    Explanation,
    HelpAnswer,
    IrkRegistration,
    IssuedToken,
    IssueToken,
    KioskContent,
    LinkCode,
    LinkCodeRequest,
    Messages,
    PhoneOffers,
    PreferencesBody,
    PurposeView,
    RedemptionAnswer,
    RedemptionBody,
    Register,
    Registered,
    Revoked,
    SightingResult,
    Sightings,
    StaffAlert,
    StaffAlerts,
    TokenAnswer,
)
from gateway.redemptions import Redemption, RedemptionError, check_redemption
from gateway.store import ConsentRecord
from gateway.store.records import PreferencesRecord

__all__ = ["ENDPOINTS"]

_SHOPPER: Final = ("shopper",)


def _consent_view(record: ConsentRecord) -> ConsentView:
    return ConsentView(
        shopper_id=record.shopper_id,
        purposes={
            name: PurposeView(
                granted=state.granted,
                at=state.at,
                notice_version=state.notice_version,
                channel=state.channel,
                expires_at=state.expires_at,
            )
            for name, state in sorted(record.purposes.items())
        },
        no_marketing=record.no_marketing,
    )


# ----- public -----


async def register(call: Call) -> Registered:
    body: Register = call.body
    shopper_id, token, claims, record = await call.gateway.shoppers.register(
        first_name=body.first_name,
        nickname=body.nickname,
        locale=body.locale,
        consents=body.consents,
        notice_version=body.notice_version,
        link_code=body.link_code,
    )
    return Registered(
        shopper_id=shopper_id,
        token=token,
        expires_at=claims.expires_at,
        consents=_consent_view(record),
    )


# ----- the shopper -----


async def refresh_token(call: Call) -> TokenAnswer:
    assert call.claims is not None
    token, claims = await call.gateway.shoppers.refresh(call.claims)
    return TokenAnswer(token=token, expires_at=claims.expires_at)


async def log_out(call: Call) -> None:
    assert call.claims is not None
    await call.gateway.shoppers.revoke(call.claims)


async def get_consents(call: Call) -> ConsentView:
    return _consent_view(call.gateway.shoppers.consent(call.subject))


async def put_consents(call: Call) -> ConsentView:
    body: ConsentUpdate = call.body
    record = await call.gateway.shoppers.change_consents(
        call.subject,
        {name: (choice.granted, choice.expires_at) for name, choice in body.purposes.items()},
        no_marketing=body.no_marketing,
        notice_version=body.notice_version,
    )
    return _consent_view(record)


def _preferences(record: PreferencesRecord) -> PreferencesBody:
    return PreferencesBody(
        max_per_visit=record.max_per_visit,
        max_per_day=record.max_per_day,
        quiet_hours=record.quiet_hours,
    )


async def get_preferences(call: Call) -> PreferencesBody:
    return _preferences(call.gateway.shoppers.preferences(call.subject))


async def put_preferences(call: Call) -> PreferencesBody:
    body: PreferencesBody = call.body
    current = call.gateway.shoppers.preferences(call.subject)
    record = PreferencesRecord(
        shopper_id=call.subject,
        max_per_visit=body.max_per_visit,
        max_per_day=body.max_per_day,
        quiet_hours=body.quiet_hours,
        locale=current.locale,
    )
    return _preferences(await call.gateway.shoppers.set_preferences(record))


async def my_data(call: Call) -> dict[str, Any]:
    return call.gateway.shoppers.export(call.subject)


async def my_offers(call: Call) -> PhoneOffers:
    cards, reason = await call.gateway.shoppers.phone_offers(call.subject)
    return PhoneOffers(offers=cards, reason=reason)


async def why(call: Call) -> Explanation:
    record = call.gateway.shoppers.why(call.subject, call.path["offer_id"])
    personal = bool(record.inputs.get("personal"))
    based_on = ["your personalization consent", "your interests (segments) from your profile"]
    if not personal:
        based_on = ["nothing about you: it is the store's offer for everyone"]
    where = f"the kiosk {record.kiosk_id}" if record.kiosk_id else "your phone"
    text = f"We showed this on {where} because: {record.reason}. " + (
        "It was chosen from your profile's interests, which you allowed with personalization."
        if personal
        else "It is not based on anything about you."
    )
    return Explanation(
        offer_id=record.offer_id or "",
        decision_id=record.decision_id,
        at=record.at,
        channel=record.channel,
        explanation=text,
        based_on=based_on,
    )


async def my_messages(call: Call) -> Messages:
    return Messages(messages=call.gateway.shoppers.messages(call.subject))


async def post_sightings(call: Call) -> SightingResult:
    body: Sightings = call.body
    limit = call.gateway.config.api.max_sightings
    if len(body.sightings) > limit:
        raise ApiError("too_many", f"at most {limit} sightings per request", status=422)
    placed, dropped = call.gateway.shoppers.sightings(call.subject, body.sightings)
    return SightingResult(placed=placed, dropped=dropped)


async def put_eid(call: Call) -> EidRegistered:
    body: EidRegistration = call.body
    public = await call.gateway.shoppers.register_eid(
        call.subject, bytes.fromhex(body.beacon_public_key), body.exponent, body.beacon_time
    )
    return EidRegistered(resolver_public_key=public.hex(), exponent=body.exponent)


async def put_irk(call: Call) -> None:
    body: IrkRegistration = call.body
    await call.gateway.shoppers.register_irk(call.subject, bytes.fromhex(body.irk))


async def ask_help(call: Call) -> HelpAnswer:
    alert = call.gateway.shoppers.ask_help(call.subject)
    return HelpAnswer(alert_id=alert.alert_id, zone=alert.zone)


async def erase_me(call: Call) -> ErasureDone:
    report, at = await call.gateway.shoppers.erase(call.subject)
    return ErasureDone(shopper_id=call.subject, erased_at=at, removed=dict(report.removed))


# ----- devices -----


async def kiosk_content(call: Call) -> KioskContent:
    assert call.claims is not None
    kiosk_id = call.path["kiosk_id"]
    if call.claims.role == "kiosk" and call.claims.subject != kiosk_id:
        raise AuthError("forbidden", "a kiosk token is for its own kiosk only", status=403)
    if kiosk_id not in call.gateway.hub:
        raise ApiError("not_found", f"no kiosk {kiosk_id!r}", status=404)
    view = call.gateway.hub.current(kiosk_id)
    return KioskContent(
        kiosk_id=kiosk_id,
        version=view.version,
        personal=view.personal,
        offer_id=view.offer_id,
        html=view.html,
    )


def _staff_alert(alert: Help, now: float) -> StaffAlert:
    return StaffAlert(
        alert_id=alert.alert_id,
        name=alert.name,
        zone=alert.zone,
        since=alert.since,
        waited_s=round(max(0.0, now - alert.since), 1),
        reason=alert.reason,
        level=alert.level,
        acknowledged_by=alert.acknowledged_by,
        acknowledged_at=alert.acknowledged_at,
    )


async def staff_alerts(call: Call) -> StaffAlerts:
    now = call.gateway.clock.now()
    alerts = sorted(call.gateway.shoppers.help.values(), key=lambda h: h.since)
    return StaffAlerts(alerts=[_staff_alert(h, now) for h in alerts])


async def acknowledge_alert(call: Call) -> StaffAlert:
    alert = call.gateway.shoppers.acknowledge_help(call.path["alert_id"], call.subject)
    return _staff_alert(alert, call.gateway.clock.now())


async def resolve_alert(call: Call) -> StaffAlert:
    alert = call.gateway.shoppers.resolve_help(call.path["alert_id"])
    return _staff_alert(alert, call.gateway.clock.now())


async def redeem(call: Call) -> RedemptionAnswer:
    body: Redemption = call.body
    try:
        check_redemption(body)
    except RedemptionError as exc:
        raise ApiError("invalid_request", str(exc), status=422) from exc
    recorded, attribution = await call.gateway.devices.redeem(body)
    return RedemptionAnswer(recorded=recorded, side=attribution.side)


# ----- admin -----


async def issue_token(call: Call) -> IssuedToken:
    body: IssueToken = call.body
    if body.role == "kiosk" and body.subject not in call.gateway.hub:
        raise ApiError("not_found", f"no kiosk {body.subject!r} in this store", status=404)
    token, claims = await call.gateway.shoppers.issue(body.role, body.subject, body.ttl_days)
    return IssuedToken(
        token=token,
        role=claims.role,
        subject=claims.subject,
        expires_at=claims.expires_at,
        jti=claims.jti,
    )


async def revoke_subject(call: Call) -> Revoked:
    role = call.path["role"]
    if role not in ("shopper", "kiosk", "staff", "admin"):
        raise ApiError("not_found", f"no role {role!r}", status=404)
    subject = call.path["subject"]
    generation = await call.gateway.shoppers.revoke_subject(role, subject)  # type: ignore[arg-type]
    return Revoked(role=role, subject=subject, generation=generation)


async def link_code(call: Call) -> LinkCode:
    body: LinkCodeRequest = call.body
    code, expires_at = await call.gateway.shoppers.link_code(body.shopper_id, body.ttl_min * 60)
    return LinkCode(code=code, shopper_id=body.shopper_id, expires_at=expires_at)


_OFFER_ID = Param("offer_id", description="an offer id")
_KIOSK_ID = Param("kiosk_id", r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", "a kiosk id")
_ALERT_ID = Param("alert_id", r"^[0-9a-f]{12}$", "an alert id from GET /v1/staff/alerts")

ENDPOINTS: Final = (
    Endpoint(
        "POST",
        "/v1/register",
        register,
        "Opt in: create (or link) a shopper, get a token",
        (),
        body=Register,
        answer=Registered,
        status=201,
        errors=(422,),
        tags=("shopper",),
    ),
    Endpoint(
        "POST",
        "/v1/me/token",
        refresh_token,
        "A fresh token; this one stops working",
        _SHOPPER,
        answer=TokenAnswer,
        tags=("shopper",),
    ),
    Endpoint(
        "DELETE",
        "/v1/me/token",
        log_out,
        "Log out: this token stops working",
        _SHOPPER,
        status=204,
        tags=("shopper",),
    ),
    Endpoint(
        "GET",
        "/v1/me/consents",
        get_consents,
        "My consents, purpose by purpose",
        _SHOPPER,
        answer=ConsentView,
        tags=("shopper",),
    ),
    Endpoint(
        "PUT",
        "/v1/me/consents",
        put_consents,
        "Grant or withdraw purposes; a withdrawal is in force before this answers",
        _SHOPPER,
        body=ConsentUpdate,
        answer=ConsentView,
        tags=("shopper",),
    ),
    Endpoint(
        "GET",
        "/v1/me/preferences",
        get_preferences,
        "My contact preferences",
        _SHOPPER,
        answer=PreferencesBody,
        tags=("shopper",),
    ),
    Endpoint(
        "PUT",
        "/v1/me/preferences",
        put_preferences,
        "Set how many messages at most, and quiet hours",
        _SHOPPER,
        body=PreferencesBody,
        answer=PreferencesBody,
        tags=("shopper",),
    ),
    Endpoint(
        "GET",
        "/v1/me/data",
        my_data,
        "Everything this store holds about me",
        _SHOPPER,
        tags=("shopper",),
    ),
    Endpoint(
        "GET",
        "/v1/me/offers",
        my_offers,
        "Offers for my phone now",
        _SHOPPER,
        answer=PhoneOffers,
        tags=("shopper",),
    ),
    Endpoint(
        "GET",
        "/v1/me/offers/{offer_id}/why",
        why,
        "Why I was shown this offer",
        _SHOPPER,
        answer=Explanation,
        params=(_OFFER_ID,),
        tags=("shopper",),
    ),
    Endpoint(
        "GET",
        "/v1/me/messages",
        my_messages,
        "Collect the offers waiting for my phone",
        _SHOPPER,
        answer=Messages,
        tags=("shopper",),
    ),
    Endpoint(
        "POST",
        "/v1/me/sightings",
        post_sightings,
        "Beacons my app ranged (placed in their zones only with my presence consent)",
        _SHOPPER,
        body=Sightings,
        answer=SightingResult,
        tags=("shopper",),
    ),
    Endpoint(
        "PUT",
        "/v1/me/eid",
        put_eid,
        "Eddystone-EID key exchange: the gateway is my resolver (X25519 + HKDF)",
        _SHOPPER,
        body=EidRegistration,
        answer=EidRegistered,
        tags=("shopper",),
    ),
    Endpoint(
        "PUT",
        "/v1/me/irk",
        put_irk,
        "Register my phone's identity resolving key",
        _SHOPPER,
        body=IrkRegistration,
        status=204,
        tags=("shopper",),
    ),
    Endpoint(
        "POST",
        "/v1/me/help",
        ask_help,
        "Ask staff for help (needs staff_assist)",
        _SHOPPER,
        answer=HelpAnswer,
        status=202,
        tags=("shopper",),
    ),
    Endpoint(
        "DELETE",
        "/v1/me",
        erase_me,
        "Erase everything about me here and tell HQ; my tokens stop working",
        _SHOPPER,
        answer=ErasureDone,
        tags=("shopper",),
    ),
    Endpoint(
        "GET",
        "/v1/kiosks/{kiosk_id}/content",
        kiosk_content,
        "What a kiosk shows now (a kiosk token for its own kiosk, or admin)",
        ("kiosk", "admin"),
        answer=KioskContent,
        params=(_KIOSK_ID,),
        tags=("devices",),
    ),
    Endpoint(
        "GET",
        "/v1/staff/alerts",
        staff_alerts,
        "Shoppers waiting for help",
        ("staff", "admin"),
        answer=StaffAlerts,
        tags=("devices",),
    ),
    Endpoint(
        "POST",
        "/v1/staff/alerts/{alert_id}/ack",
        acknowledge_alert,
        "Take an alert: the first staff member wins (409 for the others)",
        ("staff", "admin"),
        answer=StaffAlert,
        errors=(404, 409),
        params=(_ALERT_ID,),
        tags=("devices",),
    ),
    Endpoint(
        "POST",
        "/v1/staff/alerts/{alert_id}/resolve",
        resolve_alert,
        "Close an alert (the shopper was helped); answers it as it was",
        ("staff", "admin"),
        answer=StaffAlert,
        errors=(404,),
        params=(_ALERT_ID,),
        tags=("devices",),
    ),
    Endpoint(
        "POST",
        "/v1/redemptions",
        redeem,
        "A till's redemption of an offer, attributed to the shopper's last showing",
        ("staff", "admin"),
        body=RedemptionBody,
        answer=RedemptionAnswer,
        tags=("devices",),
    ),
    Endpoint(
        "POST",
        "/v1/admin/tokens",
        issue_token,
        "Issue a kiosk, staff or admin token",
        ("admin",),
        body=IssueToken,
        answer=IssuedToken,
        status=201,
        errors=(404,),
        tags=("admin",),
    ),
    Endpoint(
        "DELETE",
        "/v1/admin/tokens/{role}/{subject}",
        revoke_subject,
        "Revoke every token of a subject",
        ("admin",),
        answer=Revoked,
        params=(Param("role", r"^(shopper|kiosk|staff|admin)$"), Param("subject")),
        tags=("admin",),
    ),
    Endpoint(
        "POST",
        "/v1/admin/link-codes",
        link_code,
        "A one-time code that links an app to an existing shopper profile",
        ("admin",),
        body=LinkCodeRequest,
        answer=LinkCode,
        status=201,
        errors=(404,),
        tags=("admin",),
    ),
)
