"""Shared parts of the privacy tests: the real app on its own event loop in a thread (for
synchronous drivers such as hypothesis state machines and schemathesis, which block while
they wait for an answer), and a configuration whose HQ link is on but unreachable, so the
events that would go to HQ stay in the outbox where a test can read them."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import pytest

from gateway.config import Config, TrustedKeyConfig, load_config
from tests.support.broker import Broker, free_port
from tests.support.peers import Served, serve

T = TypeVar("T")

# Generous limits: these tests make many requests with one token from one address, and the
# rate limits have tests of their own (tests/e2e/test_api.py).
GENEROUS_LIMITS = {
    "MOMENTS_API__RATE_PER_S": "1000",
    "MOMENTS_API__BURST": "1000",
    "MOMENTS_API__REGISTER_PER_MIN": "10000",
}


EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "moments.example.toml"


@pytest.fixture(scope="module")
def module_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """A real Mosquitto on a free port, for the tests of one module."""
    folder = tmp_path_factory.mktemp("broker")
    b = Broker(free_port(), folder)
    b.start()
    yield b
    b.stop()


def store_config(data_dir: Path, broker_port: int, **env: str) -> Config:
    """The example store's configuration on a data folder and broker of the test's own (as the
    ``make_config`` fixture, for fixtures wider than one test)."""
    environ = {
        "MOMENTS_DATA_DIR": str(data_dir),
        "MOMENTS_BROKER__PORT": str(broker_port),
        "MOMENTS_BROKER__BACKOFF_MIN_S": "0.1",
        "MOMENTS_BROKER__BACKOFF_MAX_S": "0.5",
        **env,
    }
    return load_config(EXAMPLE, environ=environ)


def with_unreachable_hq(config: Config) -> Config:
    """HQ sync on, towards a port nobody listens on: every event stays in the outbox."""
    hq = msgspec.structs.replace(
        config.hq,
        enabled=True,
        port=free_port(),
        tls=False,
        connect_timeout_s=1.0,
        backoff_min_s=0.5,
        backoff_max_s=2.0,
        trusted_keys=[TrustedKeyConfig(id="hq-test", public_key="11" * 32)],
    )
    return msgspec.structs.replace(config, hq=hq)


class AppThread:
    """``serve(config)`` on an event loop of its own, in a named thread.

    ``run(coro)`` runs a coroutine on that loop and waits for its result, so a synchronous
    test reads the gateway's live state between two requests without racing its loop, and
    ``served.client`` (bound to that loop) is used through it too. Leaving the ``with`` block
    stops the app and joins the thread; an error of the thread is raised in the test.
    """

    def __init__(self, config: Config, *, timeout: float = 30.0) -> None:
        self._config = config
        self._timeout = timeout
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="privacy-app", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._served: Served | None = None

    @property
    def served(self) -> Served:
        assert self._served is not None, "the app is not running"
        return self._served

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        assert self._loop is not None, "the app is not running"
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(self._timeout)

    def __enter__(self) -> AppThread:
        self._thread.start()
        if not self._ready.wait(self._timeout):
            raise TimeoutError("the app did not start")
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(self._timeout)
        if self._thread.is_alive():
            raise TimeoutError("the app did not stop")
        if self._error is not None and exc_info[0] is None:
            raise self._error

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # handed to the test's thread, raised there
            self._error = exc
        finally:
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with serve(self._config) as served:
            self._served = served
            self._ready.set()
            await self._stop.wait()
