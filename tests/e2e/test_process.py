"""``moments run`` as a process: defaults without a configuration file, degraded but up while
no broker is reachable, connected once one appears, and a clean stop on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.support.broker import Broker, free_port, wait_for_port

pytestmark = pytest.mark.mqtt


def _health(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
        assert response.status == 200
        result: dict[str, Any] = json.loads(response.read())
        return result


def _wait_health(port: int, predicate: Any, timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        last = _health(port)
        if predicate(last):
            return last
        time.sleep(0.1)
    raise AssertionError(f"health never matched: {last}")


def test_run_without_config_is_degraded_then_connects_and_stops_cleanly(tmp_path: Path) -> None:
    broker_port, http_port = free_port(), free_port()
    env = {
        **os.environ,
        "MOMENTS_DATA_DIR": str(tmp_path / "data"),
        # Only the ports move off the defaults, so the test cannot meet a broker or server
        # that already runs on this machine; everything else is the built-in default.
        "MOMENTS_BROKER__PORT": str(broker_port),
        "MOMENTS_HTTP__PORT": str(http_port),
        "MOMENTS_BROKER__BACKOFF_MAX_S": "1",
        # Wherever the tests run, the radio finds no system bus: a known, repeatable absence.
        "DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={tmp_path / 'no-system-bus'}",
    }
    env.pop("MOMENTS_CONFIG", None)
    log = (tmp_path / "gateway.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "run"], env=env, stdout=log, stderr=log
    )
    broker = Broker(broker_port, tmp_path)
    try:
        wait_for_port(http_port, timeout=20)
        health = _health(http_port)
        assert health["status"] == "degraded"
        assert health["components"]["broker"]["state"] in {"connecting", "backoff"}
        assert health["components"]["store"]["state"] == "ok"
        assert (tmp_path / "data" / "store" / "data.mdb").exists()
        # No Bluetooth here: the radio is reported unavailable, with the reason, not fatal.
        radio = _wait_health(
            http_port, lambda h: h["components"]["radio"]["state"] == "unavailable"
        )["components"]["radio"]
        assert radio["detail"]

        broker.start()
        health = _wait_health(
            http_port, lambda h: h["components"]["broker"]["state"] == "up", timeout=20
        )
        assert health["components"]["broker"]["broker"] == f"127.0.0.1:{broker_port}"

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)
        broker.stop()
        log.close()
    lines = [json.loads(line) for line in (tmp_path / "gateway.log").read_text().splitlines()]
    messages = [line["msg"] for line in lines]
    assert "gateway started" in messages
    assert "gateway stopped" in messages
    assert not [line for line in lines if line["level"] in {"error", "critical"}], lines
    assert all("Traceback" not in line["msg"] for line in lines)
    radio_warnings = [
        line
        for line in lines
        if line["logger"] == "beacons.bleak_source" and line["level"] == "warning"
    ]
    assert len(radio_warnings) == 1, radio_warnings  # one clear line, not one per retry


def test_run_refuses_a_bad_value_naming_key_value_and_expectation(tmp_path: Path) -> None:
    config = tmp_path / "moments.toml"
    config.write_text("[broker]\nport = 70000\n")
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "run", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "broker.port = 70000" in result.stderr
    assert "expected an integer <= 65535" in result.stderr
    assert str(config) in result.stderr
    assert "Traceback" not in result.stderr
