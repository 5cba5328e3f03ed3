"""Child processes of a benchmark: started with their output in a log file, always stopped.

``Children`` is the one owner. Used as ``async with Children(folder) as children``, it stops
every process it started, newest first, on the way out, whether the benchmark finished, failed
or was interrupted: SIGTERM, then SIGKILL when the process is still there after a timeout.
Output goes to a file in ``folder`` (a pipe nobody reads could fill up and stall the child);
its tail is shown when a child dies or never gets ready.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import suppress
from pathlib import Path
from types import TracebackType

from bench.errors import BenchError

__all__ = ["Child", "Children", "free_port", "wait_ready"]

STOP_TIMEOUT_S = 10.0
KILL_TIMEOUT_S = 5.0


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Child:
    def __init__(self, name: str, process: asyncio.subprocess.Process, log_path: Path) -> None:
        self.name = name
        self.process = process
        self.log_path = log_path

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    def log_tail(self, lines: int = 25) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def check_alive(self) -> None:
        if self.process.returncode is not None:
            raise BenchError(
                f"{self.name} exited with status {self.process.returncode}; its last output:\n"
                f"{self.log_tail()}"
            )

    async def stop(self) -> None:
        """SIGTERM, wait, SIGKILL, wait: every step bounded."""
        if self.process.returncode is not None:
            return
        with suppress(ProcessLookupError):
            self.process.terminate()
        try:
            async with asyncio.timeout(STOP_TIMEOUT_S):
                await self.process.wait()
        except TimeoutError:
            with suppress(ProcessLookupError):
                self.process.kill()
            try:
                async with asyncio.timeout(KILL_TIMEOUT_S):
                    await self.process.wait()
            except TimeoutError:
                print(
                    f"bench: could not stop {self.name} (pid {self.process.pid})", file=sys.stderr
                )


class Children:
    def __init__(self, folder: Path) -> None:
        self._folder = folder
        self._started: list[Child] = []

    async def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Child:
        log_path = self._folder / f"{name}.log"
        with log_path.open("wb") as log:
            try:
                process = await asyncio.create_subprocess_exec(
                    *argv,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=log,
                    stderr=asyncio.subprocess.STDOUT,
                    cwd=cwd,
                    env=None if env is None else dict(env),
                )
            except OSError as exc:
                raise BenchError(f"cannot start {name} ({argv[0]}): {exc}") from exc
        child = Child(name, process, log_path)
        self._started.append(child)
        return child

    async def aclose(self) -> None:
        while self._started:
            await self._started.pop().stop()

    async def __aenter__(self) -> Children:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


async def wait_ready(
    child: Child, ready: Callable[[], Awaitable[bool]], *, what: str, timeout_s: float
) -> float:
    """Poll ``ready()`` until it says yes; fail when the child dies or time runs out.

    Returns the seconds it took. Connection errors while polling count as "not yet".
    """
    loop = asyncio.get_running_loop()
    start = loop.time()
    deadline = start + timeout_s
    while True:
        child.check_alive()
        try:
            if await ready():
                return loop.time() - start
        except (OSError, TimeoutError):
            pass
        if loop.time() >= deadline:
            raise BenchError(
                f"{child.name} not {what} after {timeout_s:.0f} s; its last output:\n"
                f"{child.log_tail()}"
            )
        await asyncio.sleep(0.1)
