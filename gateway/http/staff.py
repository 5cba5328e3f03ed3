"""The staff dashboard: ``GET /staff`` (the page) and ``GET /staff/stream`` (its live data).

Staff open the page once with their token (``/staff?token=...``, role ``staff`` or
``admin``); the token moves into an HttpOnly, SameSite=Strict cookie for ``/staff`` (Secure
when the request came over HTTPS, directly or from a trusted proxy) and the
address bar is cleaned, as kiosk screens are set up. Without a token the page answers 401 with
a page that says what to do; a token of another role, 403.

The stream is Server-Sent Events: every second the handler reads the gateway's state into a
:class:`~gateway.dashboard.Reading` (counts per zone, door entries, what the scanner nodes say
of themselves; never a shopper's id), builds the view
model and sends it as one ``dashboard`` event when it changed, with a keep-alive comment when
nothing did for a while.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from html import escape
from typing import TYPE_CHECKING, Final

import msgspec
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from gateway.dashboard import Reading, build
from gateway.errors import AuthError, StoreError
from gateway.http.api import error_response
from gateway.today import DayFigures
from gateway.tokens import Claims, check_not_revoked

if TYPE_CHECKING:
    from gateway.runtime import Gateway

__all__ = ["STAFF_COOKIE", "StaffBoard", "read_gateway", "staff_routes"]

log = logging.getLogger(__name__)

STAFF_COOKIE: Final = "moments_staff"
POLL_S: Final = 1.0
KEEPALIVE_S: Final = 15.0
RECHECK_S: Final = 10.0  # how often a stream checks its token again (revoked, expired)
_json = msgspec.json.Encoder()


def _gateway(request: Request) -> Gateway:
    gateway: Gateway = request.state.gateway
    return gateway


def _token(request: Request) -> tuple[str, str]:
    """The token and where it came from: the Authorization header, the cookie, the query."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip(), "header"
    query = request.query_params.get("token", "")
    if query:  # a new token given on purpose beats the one kept in the cookie
        return query, "query"
    return request.cookies.get(STAFF_COOKIE, ""), "cookie"


def _claims(request: Request, gateway: Gateway) -> Claims:
    token, _where = _token(request)
    if not token:
        raise AuthError("token_missing", "the staff dashboard needs a staff token")
    claims = gateway.shoppers.tokens.verify(token, now=gateway.clock.now())
    check_not_revoked(gateway.db, claims)
    if claims.role not in ("staff", "admin"):
        raise AuthError("forbidden", "this token is not a staff token", status=403)
    return claims


def _refused_page(exc: AuthError) -> Response:
    html = (
        '<!doctype html><html lang="en"><meta charset=utf-8><title>Staff sign-in needed</title>'
        f"<p>The staff dashboard needs a staff token ({escape(exc.code)}): open "
        "<code>/staff?token=...</code> once with a token from "
        "<code>moments token issue --role staff</code>.</p></html>"
    )
    response = HTMLResponse(html, status_code=exc.status, headers={"Cache-Control": "no-store"})
    response.delete_cookie(STAFF_COOKIE, path="/staff")  # a refused token is not kept
    return response


async def staff_page(request: Request) -> Response:
    gateway = _gateway(request)
    try:
        claims = _claims(request, gateway)
    except AuthError as exc:
        return _refused_page(exc)
    token, where = _token(request)
    if where == "query":
        # Out of the address bar and the history, into a cookie only /staff receives.
        response = RedirectResponse("/staff", status_code=303)
        response.set_cookie(
            STAFF_COOKIE,
            token,
            max_age=max(1, int(claims.expires_at - gateway.clock.now())),
            path="/staff",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",  # behind a trusted TLS proxy, or TLS
        )
        return response
    html = gateway.renderer.render("staff.html.j2", store=gateway.config.store_id)
    return HTMLResponse(html, headers={"Cache-Control": "no-store"})


async def staff_stream(request: Request) -> Response:
    gateway = _gateway(request)
    try:
        _claims(request, gateway)
    except AuthError as exc:
        return error_response(exc.code, str(exc), exc.status)

    async def stream() -> AsyncIterator[bytes]:
        clients = gateway.metrics.sse_clients.labels(stream="staff")
        clients.inc()
        try:
            async for chunk in _updates(request, gateway):
                yield chunk
        finally:
            clients.dec()

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


class StaffBoard:
    """The dashboard as its streams send it: read, built and encoded at most once a second
    however many dashboards are open (one per app, in the lifespan state)."""

    def __init__(self, gateway: Gateway, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._gateway = gateway
        self._monotonic = clock
        self._at = -math.inf
        self._data = b""

    def current(self) -> bytes:
        now = self._monotonic()
        if now - self._at >= POLL_S * 0.9:  # a second's tick may wake a little early
            self._data, self._at = self.rebuild(), now
        return self._data

    def rebuild(self) -> bytes:
        """The dashboard now, read afresh (what ``current`` does once a second)."""
        gateway = self._gateway
        return _json.encode(build(gateway.config, read_gateway(gateway)))


async def _updates(request: Request, gateway: Gateway) -> AsyncIterator[bytes]:
    """The dashboard whenever it changes, a keep-alive comment when it did not for a while;
    ends when the token is no longer good or the gateway stops."""
    board: StaffBoard = request.state.staff_board
    yield b"retry: 2000\n\n"
    last = b""
    quiet = 0.0
    checked = 0.0
    while not gateway.stopping.is_set():
        checked += POLL_S
        if checked >= RECHECK_S:  # a revoked or expired token ends the stream
            checked = 0.0
            try:
                _claims(request, gateway)
            except AuthError:
                return
        data = board.current()
        if data != last:
            last, quiet = data, 0.0
            yield b"event: dashboard\ndata: %s\n\n" % data
        elif quiet >= KEEPALIVE_S:
            quiet = 0.0
            yield b": keepalive\n\n"
        await asyncio.sleep(POLL_S)
        quiet += POLL_S


def read_gateway(gateway: Gateway) -> Reading:
    """The dashboard's reading of the gateway now: counts per zone, no shopper ids kept."""
    now = gateway.clock.now()
    present: dict[str, int] = {}
    for shopper in gateway.sensing.shoppers():
        zone = gateway.sensing.zone_of(shopper)
        if zone is not None:
            present[zone] = present.get(zone, 0) + 1
    offers = gateway.moments.offers()
    titles = {o.offer_id: o.record.title for o in offers}
    showing: dict[str, str | None] = {}
    for kiosk_id in gateway.hub.kiosk_ids():
        offer_id = gateway.hub.current(kiosk_id).offer_id
        showing[kiosk_id] = None if offer_id is None else titles.get(offer_id)
    fleet = gateway.sensing.fleet.status(now)["beacons"]
    assert isinstance(fleet, dict)
    beacons = {b: str(state["condition"]) for b, state in fleet.items()}
    try:  # read at most once a second, whatever the number of open dashboards
        today: DayFigures | None = gateway.today.figures(now)
    except StoreError as exc:
        log.warning("today's figures not read", extra={"error": str(exc)})
        today = None
    anonymous_total, anonymous_hourly = gateway.sensing.anonymous_store(now)
    devices = gateway.devices
    heard = dict(gateway.sensing.node_heard)
    wifi: dict[str, int | None] = {}
    for node, telemetry in devices.nodes.last_telemetry().items():
        # A node's telemetry is a sign of life too: a node in an empty store hears nothing.
        heard[node] = max(heard.get(node, telemetry.at), telemetry.at)
        wifi[node] = telemetry.wifi_rssi
    return Reading(
        now=now,
        anonymous_total=anonymous_total,
        anonymous_hourly=anonymous_hourly,
        occupancy=gateway.sensing.occupancy(now),
        present=present,
        showing=showing,
        node_last_heard=heard,
        node_state=devices.nodes.states(),
        node_wifi_rssi=wifi,
        door_entries=(
            None
            if today is None or not devices.doors.counted_today(now)
            else today.total("door_entries")
        ),
        door_hourly=(
            () if today is None else today.hourly["door_entries"][: gateway.today.keys(now)[1] + 1]
        ),
        beacons=beacons,
        help=[h.view() for h in gateway.shoppers.helpdesk.alerts.values()],
        today=today,
        hour=gateway.today.keys(now)[1],
    )


def staff_routes() -> list[Route]:
    return [Route("/staff/stream", staff_stream), Route("/staff", staff_page)]
