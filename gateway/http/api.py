"""The ``/v1`` API's plumbing: one table of endpoints, each stating who may call it.

An :class:`Endpoint` names its method and path, the roles whose tokens may call it (none: a
public endpoint), the msgspec type of its JSON body and of its answer. :func:`routes` turns the
table into Starlette routes that, for every request, in this order:

1. authenticate: ``Authorization: Bearer <token>``, verified (signature, expiry), not revoked,
   of an allowed role (401 for a missing or bad token, 403 for the wrong role);
2. rate-limit: per token (its ``jti``), or per client address on a public endpoint; beyond the
   bucket, 429 with ``Retry-After``;
3. decode the body with its type (size-capped; 422 naming the field on a mismatch);
4. call the handler, encode its answer with its status.

Every refusal is JSON ``{"error": CODE, "message": TEXT}`` with a stable code; nothing that
arrives can raise past this module as a traceback (an unexpected exception is logged and
answered with 500 ``internal``). :func:`openapi_paths` writes the same table into the OpenAPI
document, so the contract and the code cannot drift.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.errors import ApiError, AuthError, StoreError
from gateway.tokens import Claims, Role, check_not_revoked

if TYPE_CHECKING:
    from gateway.runtime import Gateway

__all__ = [
    "MAX_BODY_BYTES",
    "Call",
    "Endpoint",
    "ErrorBody",
    "Param",
    "error_response",
    "json_response",
    "openapi_paths",
    "routes",
]

log = logging.getLogger(__name__)

MAX_BODY_BYTES: Final = 64 * 1024
_encoder = msgspec.json.Encoder()


class ErrorBody(msgspec.Struct, frozen=True):
    """Every refusal: a stable code to act on and a message for a person."""

    error: str
    message: str


@dataclass(frozen=True, slots=True)
class Param:
    """A path parameter, validated against ``pattern`` before the handler runs."""

    name: str
    pattern: str = r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$"
    description: str = ""


@dataclass(slots=True)
class Call:
    """What a handler gets: the request, the gateway, the caller's claims, the decoded body."""

    request: Request
    gateway: Gateway
    claims: Claims | None
    body: Any
    path: dict[str, str]

    @property
    def subject(self) -> str:
        assert self.claims is not None, "a public endpoint has no subject"
        return self.claims.subject


Handler = Callable[[Call], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Endpoint:
    method: str
    path: str
    handler: Handler
    summary: str
    who: tuple[Role, ...]  # () for a public endpoint
    body: type[Any] | None = None
    answer: type[Any] | None = None
    status: int = 200
    errors: tuple[int, ...] = ()
    params: tuple[Param, ...] = ()
    description: str = ""
    tags: tuple[str, ...] = field(default=())


def json_response(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    if status == 204:
        return Response(status_code=204, headers=headers)
    return Response(
        _encoder.encode(value),
        status_code=status,
        media_type="application/json",
        headers={"Cache-Control": "no-store", **(headers or {})},
    )


def error_response(
    code: str, message: str, status: int, *, retry_after: float | None = None
) -> Response:
    headers: dict[str, str] = {}
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="moments"'
    return json_response(ErrorBody(code, message), status, headers)


def routes(endpoints: Sequence[Endpoint]) -> list[Route]:
    """One Starlette route per path, dispatching on method (405 with ``Allow`` otherwise)."""
    by_path: dict[str, dict[str, Endpoint]] = {}
    for endpoint in endpoints:
        by_path.setdefault(endpoint.path, {})[endpoint.method] = endpoint
    return [
        Route(path, _dispatcher(methods), methods=sorted(methods))
        for path, methods in by_path.items()
    ]


def _dispatcher(methods: dict[str, Endpoint]) -> Callable[[Request], Awaitable[Response]]:
    async def dispatch(request: Request) -> Response:
        endpoint = methods[request.method]
        response = await _answer(endpoint, request)
        requests = request.state.gateway.metrics.api_requests
        label = f"{endpoint.method} {endpoint.path}"
        requests.labels(endpoint=label, status=response.status_code).inc()
        return response

    return dispatch


async def _answer(endpoint: Endpoint, request: Request) -> Response:
    try:
        return await _serve(endpoint, request)
    except AuthError as exc:
        return error_response(exc.code, str(exc), exc.status)
    except ApiError as exc:
        return error_response(exc.code, str(exc), exc.status, retry_after=exc.retry_after)
    except StoreError as exc:
        log.error(
            "store unavailable for a request", extra={"path": endpoint.path, "error": str(exc)}
        )
        return error_response(
            "unavailable", "the store is unavailable; try again", 503, retry_after=5
        )
    except Exception:
        log.exception("request failed", extra={"path": endpoint.path})
        return error_response("internal", "the gateway failed on this request", 500)


async def _serve(endpoint: Endpoint, request: Request) -> Response:
    gateway: Gateway = request.state.gateway
    path = {p.name: str(request.path_params.get(p.name, "")) for p in endpoint.params}
    claims = _authenticate(endpoint, request, gateway)
    # Per subject, not per token: refreshing a token does not refill the bucket.
    key = f"t:{claims.role}:{claims.subject}" if claims is not None else f"a:{_client(request)}"
    limiter = gateway.shoppers.limiter_for(endpoint.who)
    wait = limiter.check(key, gateway.clock.monotonic())
    if wait is not None:
        raise ApiError("rate_limited", "too many requests; slow down", status=429, retry_after=wait)
    for param in endpoint.params:
        if re.fullmatch(param.pattern, path[param.name]) is None:
            raise ApiError("not_found", f"no such {param.name}", status=404)
    body = await _decode_body(endpoint, request)
    answer = await endpoint.handler(Call(request, gateway, claims, body, path))
    if isinstance(answer, Response):
        return answer
    return json_response(answer, endpoint.status)


def _authenticate(endpoint: Endpoint, request: Request, gateway: Gateway) -> Claims | None:
    if not endpoint.who:
        return None
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if not header:
        raise AuthError("token_missing", "this endpoint needs a bearer token")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("token_malformed", "expected 'Authorization: Bearer <token>'")
    claims = gateway.shoppers.tokens.verify(token.strip(), now=gateway.clock.now())
    check_not_revoked(gateway.db, claims)
    if claims.role not in endpoint.who:
        raise AuthError(
            "forbidden",
            f"a {claims.role} token may not call this endpoint "
            f"(it is for {', '.join(endpoint.who)})",
            status=403,
        )
    return claims


def _client(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


async def _decode_body(endpoint: Endpoint, request: Request) -> Any:
    if endpoint.body is None:
        return None
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise ApiError("too_large", f"body over {MAX_BODY_BYTES} bytes", status=413)
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY_BYTES:
            raise ApiError("too_large", f"body over {MAX_BODY_BYTES} bytes", status=413)
    if not raw:
        raise ApiError("invalid_request", "a JSON body is required", status=422)
    try:
        return msgspec.json.decode(raw, type=endpoint.body)
    except msgspec.ValidationError as exc:
        raise ApiError("invalid_request", str(exc), status=422) from exc
    except msgspec.DecodeError as exc:
        raise ApiError("invalid_json", f"the body is not JSON: {exc}", status=400) from exc


# ----- OpenAPI -----

_STATUS_TEXT: Final = {
    400: "The body is not JSON",
    401: "No token, or a malformed, forged, expired or revoked one",
    403: "A valid token of a role or subject that may not call this",
    404: "Not found",
    409: "Conflicts with the current state",
    413: "The body is too large",
    422: "The body does not match the schema (the message names the field)",
    429: "Rate limited: retry after the Retry-After header's seconds",
    503: "The store is unavailable; retry",
}


def openapi_paths(endpoints: Sequence[Endpoint]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(paths, component schemas)`` of the endpoints, for the OpenAPI document."""
    types: list[Any] = [ErrorBody]
    for endpoint in endpoints:
        types += [t for t in (endpoint.body, endpoint.answer) if t is not None]
    unique = list(dict.fromkeys(types))
    refs, components = msgspec.json.schema_components(
        unique, ref_template="#/components/schemas/{name}"
    )
    ref_of = dict(zip(unique, refs, strict=True))
    error = {"application/json": {"schema": ref_of[ErrorBody]}}
    paths: dict[str, Any] = {}
    for endpoint in endpoints:
        operation: dict[str, Any] = {
            "summary": endpoint.summary,
            "operationId": f"{endpoint.method.lower()}_{_slug(endpoint.path)}",
            "description": " ".join(filter(None, (_who(endpoint), endpoint.description))),
            "x-roles": list(endpoint.who) or ["public"],
            "tags": list(endpoint.tags) or ["v1"],
        }
        if endpoint.who:
            operation["security"] = [{"bearer": []}]
        if endpoint.params:
            operation["parameters"] = [
                {
                    "name": p.name,
                    "in": "path",
                    "required": True,
                    "description": p.description or p.name,
                    "schema": {"type": "string", "pattern": p.pattern},
                }
                for p in endpoint.params
            ]
        if endpoint.body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": ref_of[endpoint.body]}},
            }
        responses: dict[str, Any] = {}
        if endpoint.status == 204:
            responses["204"] = {"description": "Done"}
        else:
            ok: dict[str, Any] = {"description": "Done"}
            schema = ref_of[endpoint.answer] if endpoint.answer is not None else {"type": "object"}
            ok["content"] = {"application/json": {"schema": schema}}
            responses[str(endpoint.status)] = ok
        codes = {429, 500, 503, *endpoint.errors}
        if endpoint.who:
            codes |= {401, 403}
        if endpoint.body is not None:
            codes |= {400, 413, 422}
        if endpoint.params:
            codes.add(404)
        for code in sorted(codes):
            text = _STATUS_TEXT.get(code, "The gateway failed on this request")
            responses[str(code)] = {"description": text, "content": error}
        operation["responses"] = responses
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = operation
    return paths, components


def _who(endpoint: Endpoint) -> str:
    if not endpoint.who:
        return "Who may call: anyone (rate-limited per client address)."
    return "Who may call: a " + " or ".join(endpoint.who) + " token."


def _slug(path: str) -> str:
    return "_".join(part.strip("{}") for part in path.strip("/").split("/"))
