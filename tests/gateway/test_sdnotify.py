"""The sd_notify client against real AF_UNIX datagram sockets, as systemd's own would be."""

from __future__ import annotations

import logging
import os
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.sdnotify import Notifier


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    """A notify socket bound to a path, as ``NOTIFY_SOCKET`` names it."""
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(5)
        yield str(path), sock


@pytest.fixture
def abstract_listener() -> Iterator[tuple[str, socket.socket]]:
    """A notify socket in the abstract namespace: ``NOTIFY_SOCKET=@name``."""
    name = f"moments-test-{secrets.token_hex(8)}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        yield "@" + name, sock


def received(sock: socket.socket) -> bytes:
    return sock.recv(4096)


def nothing_waiting(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        sock.recv(4096)
    except BlockingIOError:
        return True
    return False


def test_notifications_reach_a_path_socket(listener: tuple[str, socket.socket]) -> None:
    address, sock = listener
    notifier = Notifier({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "30000000"}, pid=42)
    assert notifier.enabled
    notifier.ready()
    assert received(sock) == b"READY=1"
    notifier.watchdog()
    assert received(sock) == b"WATCHDOG=1"
    notifier.status("serving: 3 kiosks")
    assert received(sock) == b"STATUS=serving: 3 kiosks"
    notifier.stopping()
    assert received(sock) == b"STOPPING=1"


def test_notifications_reach_an_abstract_socket(
    abstract_listener: tuple[str, socket.socket],
) -> None:
    address, sock = abstract_listener
    notifier = Notifier({"NOTIFY_SOCKET": address})
    notifier.ready()
    assert received(sock) == b"READY=1"
    notifier.stopping()
    assert received(sock) == b"STOPPING=1"


def test_a_status_stays_on_one_line(listener: tuple[str, socket.socket]) -> None:
    address, sock = listener
    Notifier({"NOTIFY_SOCKET": address}).status("degraded\nREADY=1\nbroker down")
    assert received(sock) == b"STATUS=degraded READY=1 broker down"


def test_without_systemd_everything_is_a_no_op(caplog: pytest.LogCaptureFixture) -> None:
    for environ in ({}, {"NOTIFY_SOCKET": ""}, {"NOTIFY_SOCKET": "relative/path"}):
        notifier = Notifier({**environ, "WATCHDOG_USEC": "30000000"})
        assert not notifier.enabled
        assert notifier.watchdog_interval_s is None
        notifier.ready()
        notifier.watchdog()
        notifier.status("x")
        notifier.stopping()
    assert caplog.records == []


def test_watchdog_interval_is_half_the_period() -> None:
    environ = {"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "30000000"}
    assert Notifier(environ, pid=7).watchdog_interval_s == 15.0
    assert Notifier({**environ, "WATCHDOG_PID": "7"}, pid=7).watchdog_interval_s == 15.0
    assert Notifier({**environ, "WATCHDOG_PID": str(os.getpid())}).watchdog_interval_s == 15.0


def test_no_watchdog_for_another_process_or_a_bad_value(
    listener: tuple[str, socket.socket],
) -> None:
    address, sock = listener
    environ = {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "30000000"}
    for other in (
        {**environ, "WATCHDOG_PID": "8"},
        {**environ, "WATCHDOG_PID": "eight"},
        {**environ, "WATCHDOG_USEC": "0"},
        {**environ, "WATCHDOG_USEC": "-5"},
        {"NOTIFY_SOCKET": address},
    ):
        notifier = Notifier(other, pid=7)
        assert notifier.watchdog_interval_s is None
        notifier.watchdog()
    assert nothing_waiting(sock)


def test_a_socket_that_is_gone_is_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = Notifier(
        {"NOTIFY_SOCKET": str(tmp_path / "gone"), "WATCHDOG_USEC": "2000000"}, pid=1
    )
    with caplog.at_level(logging.WARNING, logger="gateway.sdnotify"):
        notifier.ready()
        for _ in range(5):
            notifier.watchdog()
        notifier.stopping()
    assert len(caplog.records) == 1
    record = caplog.records[0]
    assert record.__dict__["reason"] == "notify_failed"
    assert record.__dict__["notification"] == "READY"
    assert record.__dict__["error"].startswith("FileNotFoundError")


def test_a_socket_nobody_reads_does_not_block(
    listener: tuple[str, socket.socket], caplog: pytest.LogCaptureFixture
) -> None:
    """A full receive queue makes a send fail at once (logged), never wait."""
    address, _sock = listener
    notifier = Notifier({"NOTIFY_SOCKET": address})
    with caplog.at_level(logging.WARNING, logger="gateway.sdnotify"):
        for _ in range(10_000):
            notifier.status("x" * 512)
    assert [r.__dict__["error"].split(":")[0] for r in caplog.records] == ["BlockingIOError"]
