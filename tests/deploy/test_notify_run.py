"""``moments run`` under a Type=notify unit: READY=1 once it serves, WATCHDOG=1 pings from its
event loop at half the watchdog period, STOPPING=1 when told to stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import EXAMPLE
from tests.support.broker import free_port


def test_moments_run_talks_to_systemd(tmp_path: Path) -> None:
    address = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(0.5)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOMENTS_")}
    env.update(
        {
            "NOTIFY_SOCKET": address,
            "WATCHDOG_USEC": "1000000",
            "MOMENTS_DATA_DIR": str(tmp_path / "var"),
            "MOMENTS_HTTP__PORT": str(free_port()),
            "MOMENTS_BROKER__PORT": str(free_port()),  # no broker: degraded, still serving
            "MOMENTS_RADIO__ENABLED": "false",
        }
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "run", "-c", str(EXAMPLE)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    messages: list[str] = []
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and messages.count("WATCHDOG=1") < 2:
            try:
                messages.append(sock.recv(4096).decode())
            except TimeoutError:
                assert process.poll() is None, "the gateway exited"
        process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and "STOPPING=1" not in messages:
            try:
                messages.append(sock.recv(4096).decode())
            except TimeoutError:
                continue
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
        sock.close()
    assert messages[0] == "READY=1", messages
    assert messages.count("WATCHDOG=1") >= 2, messages
    assert "STOPPING=1" in messages, messages
