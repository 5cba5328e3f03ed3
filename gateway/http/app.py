"""The Starlette application. Its lifespan runs the :class:`~gateway.runtime.Gateway`; handlers
reach the gateway through the lifespan state, never through a global."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from html import escape
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from gateway import __version__
from gateway.clock import Clock
from gateway.config import Config
from gateway.errors import AuthError, RenderError, StoreError
from gateway.http.api import error_response
from gateway.http.api import routes as api_routes
from gateway.http.openapi import openapi_document
from gateway.http.staff import StaffBoard, staff_routes
from gateway.http.v1 import ENDPOINTS
from gateway.metrics import CONTENT_TYPE, GatewayCollector
from gateway.readiness import readiness
from gateway.render import templates_dir
from gateway.runtime import Gateway
from gateway.tokens import Claims, check_not_revoked

__all__ = ["create_app"]

KEEPALIVE_S = 15.0
KIOSK_COOKIE = "moments_kiosk"
_json = msgspec.json.Encoder()


def _gateway(request: Request) -> Gateway:
    gateway: Gateway = request.state.gateway
    return gateway


def _kiosk_id(request: Request, gateway: Gateway) -> str:
    kiosk_id: str = request.path_params["kiosk_id"]
    if kiosk_id not in gateway.hub:
        raise HTTPException(404, f"no kiosk {kiosk_id!r}")
    return kiosk_id


def _kiosk_token(request: Request) -> tuple[str, str]:
    """The kiosk's token and where it came from: the Authorization header, the cookie the
    page set, or the ``token`` query parameter of the URL the screen was set up with."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip(), "header"
    cookie = request.cookies.get(KIOSK_COOKIE, "")
    if cookie:
        return cookie, "cookie"
    return request.query_params.get("token", ""), "query"


def _kiosk_claims(request: Request, gateway: Gateway, kiosk_id: str) -> Claims | None:
    """None when kiosk pages are open (``api.kiosk_pages_need_token = false``); else the
    claims of a kiosk token for this kiosk (or an admin token); ``AuthError`` otherwise."""
    if not gateway.config.api.kiosk_pages_need_token:
        return None
    token, _where = _kiosk_token(request)
    if not token:
        raise AuthError("token_missing", f"kiosk {kiosk_id} needs its kiosk token")
    claims = gateway.shoppers.tokens.verify(token, now=gateway.clock.now())
    check_not_revoked(gateway.db, claims)
    if claims.role == "admin" or (claims.role == "kiosk" and claims.subject == kiosk_id):
        return claims
    raise AuthError("forbidden", f"this token is not for kiosk {kiosk_id}", status=403)


def _refused_page(kiosk_id: str, exc: AuthError) -> Response:
    html = (
        "<!doctype html><meta charset=utf-8><title>Kiosk not set up</title>"
        f"<p>This screen needs the token of kiosk {escape(kiosk_id)} "
        f"({escape(exc.code)}): open <code>/kiosk/{escape(kiosk_id)}?token=...</code> once "
        "with a token from <code>moments token issue --role kiosk</code>.</p>"
    )
    return HTMLResponse(html, status_code=exc.status, headers={"Cache-Control": "no-store"})


async def index(request: Request) -> Response:
    gateway = _gateway(request)
    html = gateway.renderer.render(
        "index.html.j2", store=gateway.config.store_id, kiosks=gateway.config.kiosks
    )
    return HTMLResponse(html)


async def kiosk_page(request: Request) -> Response:
    gateway = _gateway(request)
    kiosk_id = _kiosk_id(request, gateway)
    try:
        claims = _kiosk_claims(request, gateway, kiosk_id)
    except AuthError as exc:
        return _refused_page(kiosk_id, exc)
    if claims is not None and _kiosk_token(request)[1] == "query":
        # Set up once: the token moves into a cookie for this kiosk's pages and streams,
        # and out of the address bar and the browser's history.
        response = RedirectResponse(f"/kiosk/{kiosk_id}", status_code=303)
        response.set_cookie(
            KIOSK_COOKIE,
            _kiosk_token(request)[0],
            max_age=max(1, int(claims.expires_at - gateway.clock.now())),
            path=f"/kiosk/{kiosk_id}",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",  # behind a trusted TLS proxy, or TLS
        )
        return response
    view = gateway.hub.current(kiosk_id)
    kiosk = next(k for k in gateway.config.kiosks if k.id == kiosk_id)
    html = gateway.renderer.render(
        "kiosk/page.html.j2",
        kiosk_id=kiosk_id,
        kiosk_name=kiosk.name or kiosk_id,
        version=view.version,
        personal=view.personal,
        content=view.html,
    )
    return HTMLResponse(html, headers={"Cache-Control": "no-store"})


async def kiosk_offer(request: Request) -> Response:
    gateway = _gateway(request)
    kiosk_id = _kiosk_id(request, gateway)
    try:
        _kiosk_claims(request, gateway, kiosk_id)
    except AuthError as exc:
        return error_response(exc.code, str(exc), exc.status)
    try:
        html, decision = gateway.kiosks.render_now(kiosk_id)
    except (StoreError, RenderError) as exc:
        return JSONResponse({"error": "unavailable", "detail": str(exc)}, status_code=503)
    return HTMLResponse(
        html,
        headers={"Cache-Control": "no-store", "X-Moments-Personal": str(decision.personal).lower()},
    )


async def kiosk_events(request: Request) -> Response:
    gateway = _gateway(request)
    kiosk_id = _kiosk_id(request, gateway)
    try:
        _kiosk_claims(request, gateway, kiosk_id)
    except AuthError as exc:
        return error_response(exc.code, str(exc), exc.status)

    async def stream() -> AsyncIterator[bytes]:
        with gateway.hub.subscribe(kiosk_id) as queue:
            gateway.metrics.sse_clients.labels(stream="kiosk").inc()
            try:
                yield b"retry: 2000\n\n"
                while not gateway.stopping.is_set():
                    try:
                        async with asyncio.timeout(KEEPALIVE_S):
                            view = await queue.get()
                    except TimeoutError:
                        yield b": keepalive\n\n"
                        continue
                    data = _json.encode(view.wire())
                    yield b"event: content\nid: %d\ndata: %s\n\n" % (view.version, data)
            finally:
                gateway.metrics.sse_clients.labels(stream="kiosk").dec()

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def healthz(request: Request) -> Response:
    return JSONResponse(_gateway(request).health())


async def readyz(request: Request) -> Response:
    """200 when the gateway can take traffic, 503 otherwise (``gateway.readiness``)."""
    gateway = _gateway(request)
    answer = readiness(
        gateway.health()["components"],
        store_id=gateway.config.store_id,
        sensing_required=not gateway.config.http.ready_without_sensing,
    )
    if gateway.stopping.is_set():  # shutting down: take no new traffic
        answer = {**answer, "ready": False, "reasons": [*answer["reasons"], "stopping"]}
    return JSONResponse(
        answer, status_code=200 if answer["ready"] else 503, headers={"Cache-Control": "no-store"}
    )


async def metrics(request: Request) -> Response:
    return Response(_gateway(request).metrics.render(), media_type=CONTENT_TYPE)


async def openapi(request: Request) -> Response:
    return JSONResponse(openapi_document(__version__))


async def not_found(request: Request, exc: Exception) -> Response:
    detail = exc.detail if isinstance(exc, HTTPException) else "not found"
    return error_response("not_found", str(detail), 404)


async def not_allowed(request: Request, exc: Exception) -> Response:
    return error_response("method_not_allowed", f"{request.method} is not allowed here", 405)


def _collector(gateway: Gateway) -> GatewayCollector:
    """What ``/metrics`` reads from the gateway's parts at scrape time."""
    sync = gateway.sync
    links = {"store": gateway.link} if sync is None else {"store": gateway.link, "hq": sync.link}
    return GatewayCollector(
        db=gateway.db,
        links=links,
        radio=gateway.radio,
        relay=None if sync is None else sync.relay,
        now=gateway.clock.now,
        sync_enabled=sync is not None,
    )


def create_app(config: Config, *, clock: Clock | None = None) -> Starlette:
    """The ASGI app. Nothing is opened until the server runs its lifespan."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        gateway = Gateway(config, clock=clock)
        app.state.gateway = gateway
        gateway.metrics.registry.register(_collector(gateway))
        async with gateway.running():
            yield {"gateway": gateway, "staff_board": StaffBoard(gateway)}

    routes = [
        # The screens' paths first: Starlette tries routes in order, and they are the busiest.
        Route("/kiosk/{kiosk_id}/offer", kiosk_offer),
        Route("/kiosk/{kiosk_id}/events", kiosk_events),
        Route("/kiosk/{kiosk_id}", kiosk_page),
        *staff_routes(),
        *api_routes(ENDPOINTS),
        Route("/", index),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics),
        Route("/openapi.json", openapi),
        Mount("/static", StaticFiles(directory=str(templates_dir() / "static")), name="static"),
    ]
    return Starlette(
        routes=routes, lifespan=lifespan, exception_handlers={404: not_found, 405: not_allowed}
    )
