"""The gateway as the HTTP and signal benchmarks run it: the `moments` command of this
environment, its environment for a run, and a kiosk token issued the way an installer does."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Final

import msgspec

from bench.errors import BenchError

__all__ = ["CONFIG_FILE", "KIOSK", "gateway_env", "kiosk_token", "moments_command"]

CONFIG_FILE: Final = Path("deploy") / "moments.example.toml"
KIOSK: Final = "kiosk-1"
TOKEN_TIMEOUT_S: Final = 30.0


def moments_command() -> Path:
    """The ``moments`` console script installed beside this Python."""
    moments = Path(sys.executable).with_name("moments")
    if not moments.exists():
        raise BenchError(f"{moments} is missing: run ./scripts/bench, which installs the package")
    return moments


def gateway_env(data: Path, broker_port: int, http_port: int, **overrides: str) -> dict[str, str]:
    """This process's environment without any MOMENTS_* setting, plus the run's own (and
    ``overrides``, the benchmark's: each module's docstring says why)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOMENTS_")}
    env.update(
        MOMENTS_DATA_DIR=str(data),
        MOMENTS_BROKER__PORT=str(broker_port),
        MOMENTS_HTTP__PORT=str(http_port),
        MOMENTS_LOG__LEVEL="warning",
        **overrides,
    )
    return env


async def kiosk_token(repo: Path, env: dict[str, str], kiosk: str = KIOSK) -> str:
    """``moments token issue`` for the kiosk against the run's store (before the gateway
    starts, or while it runs), bounded in time."""
    process = await asyncio.create_subprocess_exec(
        str(moments_command()),
        "token",
        "issue",
        "-c",
        str(CONFIG_FILE),
        "--role",
        "kiosk",
        "--subject",
        kiosk,
        cwd=repo,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(TOKEN_TIMEOUT_S):
            stdout, stderr = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise BenchError(f"moments token issue took over {TOKEN_TIMEOUT_S:.0f} s") from None
    if process.returncode != 0:
        raise BenchError(f"moments token issue failed ({process.returncode}): {stderr.decode()}")
    token: str = msgspec.json.decode(stdout)["token"]
    return token
