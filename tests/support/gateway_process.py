"""``moments run`` as a real process on a test's Mosquitto, ready when its broker link is up."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx

from gateway.config import Config, load_config
from tests.support.broker import free_port

__all__ = ["running_gateway"]


@asynccontextmanager
async def running_gateway(
    config_file: Path, folder: Path, broker_port: int, *, env: dict[str, str] | None = None
) -> AsyncIterator[tuple[Config, str]]:
    """The gateway of ``config_file`` with its data in ``folder`` (the radio off unless ``env``
    says otherwise); yields its configuration (with the test's overrides) and its HTTP base
    URL; stops it (TERM, then KILL) after."""
    http_port = free_port()
    overrides = {
        "MOMENTS_DATA_DIR": str(folder / "var"),
        "MOMENTS_BROKER__PORT": str(broker_port),
        "MOMENTS_BROKER__BACKOFF_MIN_S": "0.1",
        "MOMENTS_BROKER__BACKOFF_MAX_S": "0.5",
        "MOMENTS_HTTP__PORT": str(http_port),
        "MOMENTS_RADIO__ENABLED": "false",
        "MOMENTS_LOG__FORMAT": "text",
        **(env or {}),
    }
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("MOMENTS_")}
    log_path = folder / "gateway.log"
    log = log_path.open("wb")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "run", "-c", str(config_file),
        env={**inherited, **overrides}, stdout=log, stderr=log,
    )  # fmt: skip
    base = f"http://127.0.0.1:{http_port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=2) as client:
            async with asyncio.timeout(20):
                while True:
                    assert process.returncode is None, log_path.read_text()
                    try:
                        health = (await client.get("/healthz")).json()
                    except httpx.TransportError:
                        health = {}
                    if health.get("components", {}).get("broker", {}).get("state") == "up":
                        break
                    await asyncio.sleep(0.1)
        yield load_config(config_file, environ=overrides), base
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()
        log.close()
