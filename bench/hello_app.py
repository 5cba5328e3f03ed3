"""The baseline: the smallest Starlette app, one route answering ``hello``.

Served by the same uvicorn set-up as the gateway (uvloop, httptools, no access log)::

    python -m uvicorn bench.hello_app:app --loop uvloop --http httptools --no-access-log
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

__all__ = ["app"]


async def hello(request: Request) -> Response:
    return PlainTextResponse("hello")


app = Starlette(routes=[Route("/", hello)])
