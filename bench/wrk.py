"""The load generator: ``wrk`` pinned to its own core, and the parser of its report.

``parse_report`` is pure (text in, figures out) and refuses a report it cannot read in full;
``run_wrk`` runs one measurement under a bounded wait. A run that saw any socket error or any
non-2xx answer is refused: its requests per second would not be the figure it claims to be.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from bench.errors import BenchError

__all__ = ["PERCENTILES", "WrkReport", "parse_report", "run_wrk"]

PERCENTILES: Final = (50, 75, 90, 99)
_TO_MS: Final = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}

_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)\s*$", re.MULTILINE)
_TOTAL = re.compile(r"^\s*(\d+) requests in ([\d.]+)(\w+),", re.MULTILINE)
_PERCENTILE = re.compile(r"^\s*(\d+(?:\.\d+)?)%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.MULTILINE)
_SOCKET_ERRORS = re.compile(
    r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", re.MULTILINE
)
_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")


@dataclass(frozen=True, slots=True)
class WrkReport:
    requests_per_s: float
    requests: int
    latency_ms: dict[int, float]  # percentile -> milliseconds
    socket_errors: int
    non_2xx: int

    def problems(self) -> list[str]:
        out = []
        if self.requests == 0:
            out.append("no request completed")
        if self.socket_errors:
            out.append(f"{self.socket_errors} socket errors")
        if self.non_2xx:
            out.append(f"{self.non_2xx} answers were not 2xx or 3xx")
        return out


def parse_report(text: str) -> WrkReport:
    rps = _RPS.search(text)
    total = _TOTAL.search(text)
    if rps is None or total is None:
        raise BenchError(f"cannot read the wrk report:\n{text}")
    latency: dict[int, float] = {}
    for match in _PERCENTILE.finditer(text):
        percentile = float(match.group(1))
        if percentile.is_integer() and int(percentile) in PERCENTILES:
            latency[int(percentile)] = float(match.group(2)) * _TO_MS[match.group(3)]
    missing = [p for p in PERCENTILES if p not in latency]
    if missing:
        raise BenchError(
            f"wrk report lacks the latency percentiles {missing} (--latency?):\n{text}"
        )
    errors = _SOCKET_ERRORS.search(text)
    non_2xx = _NON_2XX.search(text)
    return WrkReport(
        requests_per_s=float(rps.group(1)),
        requests=int(total.group(1)),
        latency_ms=latency,
        socket_errors=sum(int(n) for n in errors.groups()) if errors else 0,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
    )


async def run_wrk(
    url: str,
    *,
    core: int,
    duration_s: int,
    connections: int,
    threads: int = 1,
    headers: Mapping[str, str] | None = None,
) -> WrkReport:
    """One wrk run pinned to ``core``; fails on a bad run rather than returning its figures."""
    argv = [
        "taskset", "-c", str(core),
        "wrk", f"-t{threads}", f"-c{connections}", f"-d{duration_s}s", "--latency",
    ]  # fmt: skip
    for name, value in (headers or {}).items():
        argv += ["-H", f"{name}: {value}"]
    argv.append(url)
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(duration_s + 30):
            out, _ = await process.communicate()
    except TimeoutError as exc:
        raise BenchError(f"wrk against {url} did not finish within {duration_s + 30} s") from exc
    finally:
        if process.returncode is None:
            process.kill()
            async with asyncio.timeout(5):
                await process.wait()
    text = out.decode(errors="replace")
    if process.returncode != 0:
        raise BenchError(f"wrk exited with status {process.returncode}:\n{text}")
    report = parse_report(text)
    problems = report.problems()
    if problems:
        raise BenchError(f"wrk against {url}: {'; '.join(problems)}:\n{text}")
    return report
