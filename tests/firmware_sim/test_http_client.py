"""The simulators' HTTP client against real servers on free ports: a Starlette app under uvicorn
for JSON, tokens and keep-alive, and a few lines of asyncio server for what a well-behaved
server never does (close a kept connection, stay silent, answer garbage)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from firmware_sim.http_client import HTTP_ERROR_KINDS, HttpClient, HttpError
from firmware_sim.http_client import Response as HttpResponse
from gateway.errors import MomentsError
from tests.support.broker import free_port

# ----- a real app under uvicorn -----


async def echo(request: Request) -> JSONResponse:
    assert request.client is not None
    body = await request.json() if await request.body() else None
    return JSONResponse(
        {
            "method": request.method,
            "path": request.url.path,
            "authorization": request.headers.get("authorization"),
            "content_type": request.headers.get("content-type"),
            "body": body,
            "client_port": request.client.port,
        },
        status_code=int(request.query_params.get("status", "200")),
    )


async def no_content(_request: Request) -> Response:
    return Response(status_code=204)


APP = Starlette(
    routes=[
        Route("/api/v1/me/sightings", echo, methods=["POST"]),
        Route("/api/v1/me/help", no_content, methods=["POST"]),
        Route("/api/echo", echo, methods=["GET"]),
    ]
)


@pytest.fixture
async def app_url() -> AsyncIterator[str]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            APP, host="127.0.0.1", port=port, lifespan="off", log_config=None, access_log=False
        )
    )
    task = asyncio.create_task(server.serve(), name="uvicorn")
    async with asyncio.timeout(10):
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("server stopped during start-up")
            await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}/api"
    finally:
        server.should_exit = True
        async with asyncio.timeout(10):
            await task


async def test_json_round_trip_with_a_bearer_token(app_url: str) -> None:
    async with HttpClient(app_url, connections=2, timeout_s=2) as client:
        sighting = {"uuid": "f7826da6-4fa2-4e98-8024-bc5b71e0893e", "major": 1, "rssi": -60}
        response = await client.request(
            "POST", "/v1/me/sightings", json_body={"sightings": [sighting]}, token="tok.en-1"
        )
        assert response.status == 200
        echoed = json.loads(response.body)
        assert echoed["method"] == "POST"
        assert echoed["path"] == "/api/v1/me/sightings"  # the base URL's prefix kept
        assert echoed["authorization"] == "Bearer tok.en-1"
        assert echoed["content_type"] == "application/json"
        assert echoed["body"] == {"sightings": [sighting]}

        # Any status is an answer; an empty 204 does not wait for the connection to end.
        refused = await client.request("POST", "/v1/me/sightings?status=429", json_body={})
        assert refused.status == 429
        helped = await client.request("POST", "/v1/me/help", token="tok.en-1")
        assert helped == HttpResponse(204, b"")


async def test_requests_reuse_one_kept_connection(app_url: str) -> None:
    async with HttpClient(app_url, connections=4, timeout_s=2) as client:
        ports = set()
        for _ in range(5):
            response = await client.request("GET", "/echo")
            assert response.status == 200
            ports.add(client_port(response))
        assert len(ports) == 1  # one after another: always the same connection

        # In parallel: never more connections than asked for.
        answers = await asyncio.gather(*(client.request("GET", "/echo") for _ in range(12)))
        assert len({client_port(a) for a in answers}) <= 4
        assert client.in_flight == 0 and client.waiting == 0


def client_port(response: HttpResponse) -> int:
    """The client's port as the app saw it: the same port, the same connection."""
    port: int = json.loads(response.body)["client_port"]
    return port


# ----- a bare server that misbehaves on purpose -----

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]

OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            await reader.readexactly(int(line.split(b":")[1]))
    return head


@asynccontextmanager
async def bare_server(handler: Handler) -> AsyncIterator[tuple[str, list[int]]]:
    """Serve ``handler(reader, writer, connection_number)``; yields the URL and a list that
    grows by one per connection accepted."""
    accepted: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(len(accepted) + 1)
        try:
            await handler(reader, writer, len(accepted))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", accepted
    finally:
        server.close()
        await server.wait_closed()


async def test_an_idle_kept_connection_the_server_closed_is_replaced_once() -> None:
    closed = asyncio.Event()

    async def once_then_close(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _n: int
    ) -> None:
        await read_request(reader)
        writer.write(OK)  # HTTP/1.1, no "Connection: close": the client keeps it
        await writer.drain()
        writer.close()
        await writer.wait_closed()
        closed.set()

    async with (
        bare_server(once_then_close) as (url, accepted),
        HttpClient(url, connections=1, timeout_s=2) as client,
    ):
        assert await client.request("POST", "/v1/me/help") == HttpResponse(200, b"ok")
        await closed.wait()
        await asyncio.sleep(0.05)  # the FIN has reached the client's socket
        assert await client.request("POST", "/v1/me/help") == HttpResponse(200, b"ok")
        assert accepted == [1, 2]


async def test_a_refused_connection_is_a_typed_error() -> None:
    port = free_port()  # bound and released: nothing listens there
    async with HttpClient(f"http://127.0.0.1:{port}", timeout_s=2) as client:
        with pytest.raises(HttpError) as caught:
            await client.request("GET", "/healthz")
    assert caught.value.kind == "connection_refused"
    assert isinstance(caught.value, MomentsError)
    assert isinstance(caught.value.__cause__, ConnectionRefusedError)


async def test_a_silent_server_is_a_timeout() -> None:
    async def silent(reader: asyncio.StreamReader, _writer: asyncio.StreamWriter, _n: int) -> None:
        await read_request(reader)
        await reader.read()  # until the client gives up and closes

    async with bare_server(silent) as (url, _accepted), HttpClient(url, timeout_s=0.2) as client:
        with pytest.raises(HttpError) as caught:
            await client.request("POST", "/v1/me/sightings", json_body={"sightings": []})
    assert caught.value.kind == "http_timeout"


@pytest.mark.parametrize(
    "answer",
    [
        b"SMTP ready\r\n\r\n",
        b"HTTP/1.1 two-hundred OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",  # then the connection ends
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
    ids=["not-http", "bad-status", "bad-length", "cut-short", "bad-chunk"],
)
async def test_a_malformed_answer_is_a_bad_response(answer: bytes) -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _n: int) -> None:
        await read_request(reader)
        writer.write(answer)
        await writer.drain()

    async with bare_server(garbage) as (url, accepted), HttpClient(url, timeout_s=2) as client:
        with pytest.raises(HttpError) as caught:
            await client.request("GET", "/")
        assert caught.value.kind == "http_bad_response"
        assert accepted == [1]  # a fresh connection's bad answer is not retried


async def test_chunked_answers_and_the_bounds() -> None:
    release = asyncio.Event()

    async def chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _n: int) -> None:
        while True:
            await read_request(reader)
            await release.wait()
            writer.write(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nX-Trailer: 1\r\n\r\n"
            )
            await writer.drain()

    async with bare_server(chunked) as (url, accepted):
        client = HttpClient(url, connections=1, timeout_s=2, max_waiting=1)
        first = asyncio.create_task(client.request("GET", "/a"))
        second = asyncio.create_task(client.request("GET", "/b"))
        await asyncio.sleep(0.05)
        assert (client.in_flight, client.waiting) == (1, 1)
        with pytest.raises(HttpError) as caught:
            await client.request("GET", "/c")  # one in flight, one waiting: refused at once
        assert caught.value.kind == "http_backlog"
        release.set()
        assert [r.body for r in await asyncio.gather(first, second)] == [b"abcde", b"abcde"]
        assert accepted == [1]

        await client.aclose()
        with pytest.raises(HttpError) as caught:
            await client.request("GET", "/d")
        assert caught.value.kind == "client_closed"
    assert {"connection_refused", "http_timeout", "http_bad_response"} <= HTTP_ERROR_KINDS


async def test_the_client_refuses_what_it_cannot_send() -> None:
    with pytest.raises(ValueError, match="base_url must be http://"):
        HttpClient("https://gateway:8443")
    async with HttpClient("http://127.0.0.1:9") as client:  # nothing is sent: no connection
        with pytest.raises(ValueError, match="bad request line"):
            await client.request("GET", "/a b")
        with pytest.raises(ValueError, match="token"):
            await client.request("GET", "/", token="a\r\nX-Evil: 1")
