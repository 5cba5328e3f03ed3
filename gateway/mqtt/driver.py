"""Drives one paho-mqtt client from the asyncio event loop instead of paho's own thread.

paho tells us when its socket opens and closes and when it has bytes to write; the driver
registers the socket with the event loop and calls ``loop_read``/``loop_write`` when it is
ready. Callbacks that fire on another thread (the executor that runs the blocking TCP connect)
cross to the loop with ``call_soon_threadsafe``; on the loop's own thread they run at once, so
a socket is unregistered before paho closes it. Every MQTT client of the project (the store and
HQ links, the reference HQ's session) uses this one piece.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho

__all__ = ["LoopDriver"]


class LoopDriver:
    """Binds a paho client's socket callbacks to the running event loop."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = 0
        self._client: paho.Client | None = None
        self._fd: int | None = None

    def attach(self, client: paho.Client) -> None:
        """Take over ``client``'s networking; call from the event loop's thread."""
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self._client = client
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_socket_register_write
        client.on_socket_unregister_write = self._on_socket_unregister_write

    def in_loop(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the event loop: at once when already there, else scheduled."""
        assert self._loop is not None
        if threading.get_ident() == self._thread:
            fn()
        else:
            self._loop.call_soon_threadsafe(fn)

    def unwatch(self) -> None:
        """Forget the socket (paho closed it, or we are tearing down)."""
        if self._fd is not None and self._loop is not None:
            self._loop.remove_reader(self._fd)
            self._loop.remove_writer(self._fd)
        self._fd = None

    def _on_socket_open(self, _c: paho.Client, _u: Any, sock: Any) -> None:
        fd = sock.fileno()

        def watch() -> None:
            assert self._loop is not None
            self.unwatch()
            self._fd = fd
            self._loop.add_reader(fd, self._readable)

        self.in_loop(watch)

    def _on_socket_close(self, _c: paho.Client, _u: Any, _sock: Any) -> None:
        self.in_loop(self.unwatch)

    def _on_socket_register_write(self, _c: paho.Client, _u: Any, sock: Any) -> None:
        fd = sock.fileno()

        def watch() -> None:
            assert self._loop is not None
            if self._fd == fd:
                self._loop.add_writer(fd, self._writable)

        self.in_loop(watch)

    def _on_socket_unregister_write(self, _c: paho.Client, _u: Any, _sock: Any) -> None:
        def unwatch() -> None:
            assert self._loop is not None
            if self._fd is not None:
                self._loop.remove_writer(self._fd)

        self.in_loop(unwatch)

    def _readable(self) -> None:
        if self._client is not None:
            self._client.loop_read()

    def _writable(self) -> None:
        if self._client is not None:
            self._client.loop_write()
