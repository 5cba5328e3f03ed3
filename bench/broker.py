"""A private Mosquitto for one benchmark run: loopback only, anonymous, nothing persisted."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

from bench.errors import BenchError
from bench.procs import Child, Children, free_port, wait_ready

__all__ = ["find_mosquitto", "start_mosquitto"]

READY_TIMEOUT_S = 10.0


def find_mosquitto() -> str:
    """Debian installs the broker in /usr/sbin, which is not on every user's PATH."""
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])
    found = shutil.which("mosquitto", path=search)
    if found is None:
        raise BenchError("mosquitto not found (./scripts/bench installs it with apt-get)")
    return found


async def start_mosquitto(children: Children, folder: Path, *, core: int) -> tuple[Child, int]:
    """Start the broker pinned to ``core``; returns it and its port once it accepts connections."""
    port = free_port()
    conf = folder / "mosquitto.conf"
    # Nagle off, as a store broker should run: PUBACKs are small and latency-bound.
    conf.write_text(
        f"listener {port} 127.0.0.1\n"
        "allow_anonymous true\npersistence false\nset_tcp_nodelay true\n"
    )
    child = await children.start(
        "mosquitto", ["taskset", "-c", str(core), find_mosquitto(), "-c", str(conf)], cwd=folder
    )

    async def accepting() -> bool:
        async with asyncio.timeout(1.0):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.close()
        await writer.wait_closed()
        return True

    await wait_ready(child, accepting, what="accepting connections", timeout_s=READY_TIMEOUT_S)
    return child, port
