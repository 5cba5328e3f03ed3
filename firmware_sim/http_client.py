"""A small HTTP/1.1 client over asyncio streams, for the simulators that drive a running
gateway's API (the load generator, the live store simulator).

Why not httpx or urllib
    The package's runtime dependencies have no HTTP client (httpx is a development extra), and
    ``urllib`` needs a thread per request in flight and opens a connection per request (a
    benchmark would measure TCP handshakes). This client keeps up to ``connections`` keep-alive
    connections to one server and sends one request at a time on each.

What it does
    * ``request(method, path, json_body=..., token=...)`` sends one request (a JSON body encoded
      with msgspec, a bearer token) and returns the status and body as a :class:`Response`.
      Any status is an answer, not an error: the caller decides what a 429 means.
    * At most ``connections`` requests are in flight; more wait their turn (back-pressure). With
      ``max_waiting`` set, a request that finds that many already waiting is refused at once
      (:class:`HttpError` of kind ``http_backlog``) instead of waiting.
    * A kept connection the server closed or reset while it was idle is replaced once,
      transparently (only when no byte of an answer came back).
    * Answers with ``Content-Length``, chunked answers, and answers ending with the connection.
    * Every wait has a timeout: the connect, then the request and its answer, each ``timeout_s``.

Errors
    Only :class:`HttpError`, raised from the failure it translates, with a stable ``kind``::

        MomentsError                      (gateway.errors)
        └── HttpError
              kind: connection_refused    nothing listens at the address
                    connection_failed     any other failure to connect, or reset mid-request
                    http_timeout          no connection or no full answer within timeout_s
                    http_bad_response     the answer is not HTTP/1.x as this client reads it
                    http_backlog          refused: max_waiting requests already wait
                    client_closed         the client was closed
"""

from __future__ import annotations

import asyncio
import contextlib
import urllib.parse
from dataclasses import dataclass
from types import TracebackType
from typing import Final

import msgspec

from gateway.errors import MomentsError

__all__ = [
    "HTTP_ERROR_KINDS",
    "HttpClient",
    "HttpError",
    "Response",
    "split_base_url",
]

HTTP_ERROR_KINDS: Final = frozenset(
    {
        "connection_refused",
        "connection_failed",
        "http_timeout",
        "http_bad_response",
        "http_backlog",
        "client_closed",
    }
)
_HEAD_LIMIT: Final = 64 * 1024  # the StreamReader's limit: a longer head is a bad response
_UNSAFE: Final = frozenset(" \r\n\0")  # never in a request line or header value


class HttpError(MomentsError):
    """A request got no usable answer. ``kind`` is one of :data:`HTTP_ERROR_KINDS`, a stable
    label for counting; the message says what happened."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind


@dataclass(frozen=True, slots=True)
class Response:
    """An answer: its status and its whole body."""

    status: int
    body: bytes


def split_base_url(base_url: str) -> tuple[str, int, str]:
    """(host, port, path prefix) of an ``http://HOST[:PORT][/PREFIX]`` URL; ``ValueError``
    for anything else (https included: this client speaks plain HTTP only)."""
    parts = urllib.parse.urlsplit(base_url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"base_url must be http://HOST[:PORT][/PREFIX], got {base_url!r}")
    try:
        port = parts.port or 80
    except ValueError as exc:
        raise ValueError(f"base_url has a bad port: {base_url!r}") from exc
    return parts.hostname, port, parts.path.rstrip("/")


def _plain(text: str) -> bool:
    """ASCII without spaces or line breaks: safe in a request line or a header value."""
    return text.isascii() and not _UNSAFE.intersection(text)


class _BadResponse(Exception):
    """The answer was not HTTP/1.x as this client reads it (never leaves this module)."""


_Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class HttpClient:
    """Keep-alive HTTP/1.1 to one server at ``base_url`` (``http://host:port[/prefix]``; request
    paths are appended to the prefix). The constructor only checks and stores its arguments;
    connections open on demand. Close with :meth:`aclose` or ``async with``."""

    def __init__(
        self,
        base_url: str,
        *,
        connections: int = 8,
        timeout_s: float = 10.0,
        max_waiting: int | None = None,
    ) -> None:
        self._host, self._port, self._prefix = split_base_url(base_url)
        if connections < 1:
            raise ValueError(f"connections must be >= 1, got {connections!r}")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
        if max_waiting is not None and max_waiting < 0:
            raise ValueError(f"max_waiting must be >= 0 or None, got {max_waiting!r}")
        self.base_url = base_url
        self._host_header = urllib.parse.urlsplit(base_url).netloc
        self._timeout_s = timeout_s
        self._max_waiting = max_waiting
        self._slots = asyncio.Semaphore(connections)
        self._waiting = 0
        self._in_flight = 0
        self._idle: list[_Connection] = []  # kept connections, most recently used last
        self._open: set[asyncio.StreamWriter] = set()
        self._closed = False

    @property
    def in_flight(self) -> int:
        """Requests sent or being sent and not yet answered."""
        return self._in_flight

    @property
    def waiting(self) -> int:
        """Requests waiting for one of the ``connections`` slots."""
        return self._waiting

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        json_body: object = None,
        token: str | None = None,
    ) -> Response:
        """Send ``method path`` (``json_body``, unless ``None``, as a JSON body; ``token`` as
        ``Authorization: Bearer``) and return the answer, whatever its status. Raises
        :class:`HttpError` when there is no usable answer."""
        if self._closed:
            raise HttpError("client_closed", "the client is closed")
        message = self._message(method, path, json_body, token)
        if (
            self._max_waiting is not None
            and self._slots.locked()
            and self._waiting >= self._max_waiting
        ):
            raise HttpError("http_backlog", f"{self._waiting} requests already wait")
        self._waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
        self._in_flight += 1
        try:
            return await self._exchange(message)
        finally:
            self._in_flight -= 1
            self._slots.release()

    async def aclose(self) -> None:
        """Close every connection; requests still in flight fail with ``client_closed`` or
        the error their connection's end causes. Idempotent."""
        self._closed = True
        self._idle.clear()
        writers, self._open = list(self._open), set()
        for writer in writers:
            writer.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._timeout_s):
                for writer in writers:
                    with contextlib.suppress(OSError):
                        await writer.wait_closed()
        for writer in writers:
            writer.transport.abort()  # whatever did not close in time

    # ----- one request -----

    def _message(self, method: str, path: str, json_body: object, token: str | None) -> bytes:
        if not method.isalpha() or not path.startswith("/") or not _plain(path):
            raise ValueError(f"bad request line: {method!r} {path!r}")
        if token is not None and not _plain(token):
            raise ValueError("a token must be ASCII without spaces or line breaks")
        lines = [
            f"{method.upper()} {self._prefix}{path} HTTP/1.1",
            f"Host: {self._host_header}",
        ]
        if token is not None:
            lines.append(f"Authorization: Bearer {token}")
        body = b""
        if json_body is not None:
            body = msgspec.json.encode(json_body)
            lines.append("Content-Type: application/json")
        if json_body is not None or method.upper() in {"POST", "PUT", "PATCH"}:
            lines.append(f"Content-Length: {len(body)}")
        head = "\r\n".join(lines) + "\r\n\r\n"
        return head.encode("ascii") + body

    async def _exchange(self, message: bytes) -> Response:
        """Send one request and read its answer on a kept connection or a new one. A kept
        connection the server has closed meanwhile is replaced once."""
        connection = self._idle.pop() if self._idle else None
        reused = connection is not None
        while True:
            if connection is None:
                connection = await self._connect()
            reader, writer = connection
            try:
                async with asyncio.timeout(self._timeout_s):
                    writer.write(message)
                    await writer.drain()
                    status, body, keep = await _read_response(reader)
            except asyncio.IncompleteReadError as exc:
                self._discard(connection)
                connection = None
                if reused and not exc.partial and not self._closed:
                    reused = False  # closed while idle: once more on a fresh connection
                    continue
                raise HttpError("http_bad_response", "the answer ended early") from exc
            except ConnectionError as exc:
                self._discard(connection)
                connection = None
                if reused and not self._closed:
                    reused = False  # reset while idle: once more on a fresh connection
                    continue
                raise HttpError("connection_failed", f"connection lost: {exc}") from exc
            except TimeoutError as exc:
                self._discard(connection)
                raise HttpError("http_timeout", f"no answer within {self._timeout_s:g} s") from exc
            except (_BadResponse, asyncio.LimitOverrunError, OSError) as exc:
                self._discard(connection)
                raise HttpError("http_bad_response", str(exc)) from exc
            except asyncio.CancelledError:
                self._discard(connection)  # the answer may still come: never reuse it
                raise
            if keep and not self._closed:
                self._idle.append(connection)
            else:
                self._discard(connection)
            return Response(status, body)

    async def _connect(self) -> _Connection:
        if self._closed:
            raise HttpError("client_closed", "the client is closed")
        where = f"{self._host}:{self._port}"
        try:
            async with asyncio.timeout(self._timeout_s):
                reader, writer = await asyncio.open_connection(
                    self._host, self._port, limit=_HEAD_LIMIT
                )
        except ConnectionRefusedError as exc:
            raise HttpError("connection_refused", f"{where} refused the connection") from exc
        except TimeoutError as exc:
            raise HttpError(
                "http_timeout", f"no connection to {where} within {self._timeout_s:g} s"
            ) from exc
        except OSError as exc:
            raise HttpError("connection_failed", f"cannot connect to {where}: {exc}") from exc
        self._open.add(writer)
        return reader, writer

    def _discard(self, connection: _Connection) -> None:
        connection[1].close()
        self._open.discard(connection[1])


# ----- reading an answer -----


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """(status, body, keep-alive) of one HTTP/1.x response."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError as exc:
        raise _BadResponse("response head too long") from exc
    lines = head.decode("latin-1").split("\r\n")
    status_line = lines[0].split(" ", 2)
    if len(status_line) < 2 or not status_line[0].startswith("HTTP/1."):
        raise _BadResponse(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
    try:
        status = int(status_line[1])
    except ValueError as exc:
        raise _BadResponse(f"bad status: {status_line[1][:20]!r}") from exc
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip().lower()
    keep = status_line[0] == "HTTP/1.1" and headers.get("connection") != "close"
    if headers.get("transfer-encoding", "") == "chunked":
        return status, await _read_chunked(reader), keep
    length = headers.get("content-length")
    if length is None:
        if status in {204, 304} or 100 <= status < 200:
            return status, b"", keep
        return status, await reader.read(), False
    if not length.isdigit():
        raise _BadResponse(f"bad content-length: {length[:20]!r}")
    return status, await reader.readexactly(int(length)), keep


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        size_line = (await reader.readuntil(b"\r\n")).split(b";", 1)[0].strip()
        try:
            size = int(size_line, 16)
        except ValueError as exc:
            raise _BadResponse("bad chunk size") from exc
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass  # trailers
            return bytes(body)
        body += await reader.readexactly(size)
        if await reader.readexactly(2) != b"\r\n":
            raise _BadResponse("chunk not followed by CRLF")
