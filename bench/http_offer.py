"""``http_offer_vs_hello``: the personalized kiosk offer against a hello-world Starlette app.

What is measured: requests per second (and latency percentiles) of ``GET /kiosk/kiosk-1/offer``
while the opted-in demo shopper Alice stands at the kiosk, so every request reads her consent,
profile and the offers from LMDB, decides, and renders the offer template with Jinja2. The
baseline is ``GET /`` on :mod:`bench.hello_app` under the same uvicorn set-up (uvloop, httptools,
no access log, no server header). Both servers are pinned to one core and the load (wrk) to
another; the two targets are measured alternately (hello, offer, hello, offer, ...) after a
warm-up each, and the median of each is reported.

Set-up, all private to the run and all stopped at the end: a Mosquitto on a free port, a data
folder seeded with the demo records before the gateway starts (``deploy/moments.example.toml``
plus ``MOMENTS_*`` overrides), the gateway (``moments run``), the hello server, and a simulated
scanner node ``node-coffee`` publishing Alice's iBeacon every second. The benchmark refuses to
report when the offer is not personal before the measurement, after it, or at any point during
it (the gateway's ``moments_decisions_total{kind="generic"}`` must not move).
"""

from __future__ import annotations

import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import AsyncExitStack, suppress
from dataclasses import dataclass
from pathlib import Path

import msgspec

from bench.broker import start_mosquitto
from bench.errors import BenchError
from bench.gateway import CONFIG_FILE, KIOSK, gateway_env, kiosk_token, moments_command
from bench.probe import http_get
from bench.procs import Child, Children, free_port, wait_ready
from bench.results import Result
from bench.shopper import ScannerNode
from bench.wrk import WrkReport, run_wrk
from firmware_sim.adverts import ibeacon
from firmware_sim.scenario import APP_UUID, demo_records
from firmware_sim.seeding import seed_records
from gateway.config import Config, load_config

__all__ = ["NAME", "P99_NAME", "Settings", "run"]

NAME = "http_offer_vs_hello"
P99_NAME = "http_offer_p99_vs_hello"
BASELINE = "hello_world_starlette"

OFFER_PATH = f"/kiosk/{KIOSK}/offer"
NODE = "node-coffee"
ALICE_MAJOR, ALICE_MINOR = 100, 1
ALICE_RSSI = -55
PERSONAL_HEADER = "x-moments-personal"
MIN_BATCHES_BEFORE = 3

READY_TIMEOUT_S = 30.0
PERSONAL_TIMEOUT_S = 15.0

_GENERIC = re.compile(r'^moments_decisions_total\{kind="generic"\}\s+(\S+)\s*$', re.MULTILINE)
_PERSONAL = re.compile(r'^moments_decisions_total\{kind="personal"\}\s+(\S+)\s*$', re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Settings:
    duration_s: int
    warmup_s: int
    rounds: int
    connections: int
    server_core: int
    load_core: int


Out = Callable[[str], None]


async def run(settings: Settings, repo: Path, out: Out) -> list[Result]:
    async with AsyncExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="moments-bench-")))
        children = await stack.enter_async_context(Children(folder))

        _, broker_port = await start_mosquitto(children, folder, core=settings.load_core)
        gateway_port, hello_port = free_port(), free_port()
        env = gateway_env(folder / "data", broker_port, gateway_port)
        config = load_config(repo / CONFIG_FILE, environ=env)
        await seed_records(config, demo_records(time.time()))
        # The kiosk's own token, as a real screen has it: every request is authenticated.
        auth = {"Authorization": f"Bearer {await kiosk_token(repo, env)}"}
        out(
            f"{NAME}: mosquitto :{broker_port}, gateway :{gateway_port}, hello :{hello_port}; "
            f"servers on core {settings.server_core}, wrk on core {settings.load_core}"
        )

        gateway = await _start_gateway(children, settings, repo, env)
        hello = await _start_hello(children, settings, repo, hello_port)
        took = await wait_ready(
            gateway,
            lambda: _gateway_ready(gateway_port),
            what="up with its broker link",
            timeout_s=READY_TIMEOUT_S,
        )
        out(f"  gateway ready in {took:.1f} s")
        await wait_ready(hello, lambda: _hello_ready(hello_port), what="answering", timeout_s=10)

        node = await stack.enter_async_context(_alice_at_kiosk(config, broker_port))
        took = await _wait_personal(gateway, gateway_port, node, auth)
        out(f"  Alice is at {KIOSK}: offer personal after {took:.1f} s ({node.published} batches)")

        hello_runs: list[WrkReport] = []
        offer_runs: list[WrkReport] = []
        hello_url = f"http://127.0.0.1:{hello_port}/"
        offer_url = f"http://127.0.0.1:{gateway_port}{OFFER_PATH}"
        for i in range(1, settings.rounds + 1):
            report = await _measure(hello_url, settings, auth)
            hello.check_alive()
            hello_runs.append(report)
            out(_line(f"round {i} hello", report))

            generic_before, personal_before = await _decision_counts(gateway_port)
            report = await _measure(offer_url, settings, auth)
            gateway.check_alive()
            generic_after, personal_after = await _decision_counts(gateway_port)
            if generic_after != generic_before:
                raise BenchError(
                    f"{generic_after - generic_before:.0f} generic (non-personal) offers were "
                    f"served during round {i}: Alice was not at the kiosk all along "
                    f"(node published {node.published}, failed {node.failed} {node.last_error})"
                )
            if personal_after - personal_before < report.requests:
                raise BenchError(
                    f"round {i}: {personal_after - personal_before:.0f} personal decisions for "
                    f"{report.requests} requests measured"
                )
            offer_runs.append(report)
            out(_line(f"round {i} offer", report))

        await _check_personal(gateway_port, auth, when="after the measurement")
        out(f"  offer still personal after the measurement ({node.published} batches published)")

    hello_rps = statistics.median(r.requests_per_s for r in hello_runs)
    offer_rps = statistics.median(r.requests_per_s for r in offer_runs)
    hello_p99 = statistics.median(r.latency_ms[99] for r in hello_runs)
    offer_p99 = statistics.median(r.latency_ms[99] for r in offer_runs)
    return [
        Result(NAME, offer_rps, "req/s", BASELINE, hello_rps, higher_is_better=True, digits=1),
        Result(P99_NAME, offer_p99, "ms", BASELINE, hello_p99, higher_is_better=False, digits=3),
    ]


async def _start_gateway(
    children: Children, settings: Settings, repo: Path, env: dict[str, str]
) -> Child:
    argv = [
        "taskset", "-c", str(settings.server_core),
        str(moments_command()), "run", "-c", str(CONFIG_FILE),
    ]  # fmt: skip
    return await children.start("gateway", argv, cwd=repo, env=env)


async def _start_hello(children: Children, settings: Settings, repo: Path, port: int) -> Child:
    argv = [
        "taskset", "-c", str(settings.server_core),
        sys.executable, "-m", "uvicorn", "bench.hello_app:app",
        "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--no-server-header",
        "--log-level", "warning", "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    return await children.start("hello", argv, cwd=repo)


def _alice_at_kiosk(config: Config, broker_port: int) -> ScannerNode:
    return ScannerNode(
        broker_port=broker_port,
        topic_prefix=config.broker.topic_prefix,
        store_id=config.store_id,
        node=NODE,
        payload=ibeacon(APP_UUID, ALICE_MAJOR, ALICE_MINOR),
        rssi=ALICE_RSSI,
        interval_s=1.0,
    )


async def _gateway_ready(port: int) -> bool:
    response = await http_get(port, "/healthz", timeout_s=2.0)
    if response.status != 200:
        return False
    health = msgspec.json.decode(response.body)
    return bool(health["components"]["broker"]["state"] == "up")


async def _hello_ready(port: int) -> bool:
    response = await http_get(port, "/", timeout_s=2.0)
    return response.status == 200 and response.body == b"hello"


async def _wait_personal(
    gateway: Child, port: int, node: ScannerNode, auth: dict[str, str]
) -> float:
    async def personal() -> bool:
        if node.published < MIN_BATCHES_BEFORE:
            return False
        response = await http_get(port, OFFER_PATH, headers=auth)
        return response.status == 200 and response.headers.get(PERSONAL_HEADER) == "true"

    try:
        return await wait_ready(
            gateway, personal, what="serving Alice a personal offer", timeout_s=PERSONAL_TIMEOUT_S
        )
    except BenchError:
        with suppress(OSError, TimeoutError):  # say what the offer looks like, when it answers
            await _check_personal(port, auth, when=f"after {node.published} batches from {NODE}")
        raise


async def _check_personal(port: int, auth: dict[str, str], *, when: str) -> None:
    response = await http_get(port, OFFER_PATH, headers=auth)
    header = response.headers.get(PERSONAL_HEADER)
    if response.status != 200 or header != "true":
        raise BenchError(
            f"GET {OFFER_PATH} {when}: status {response.status}, {PERSONAL_HEADER}: {header!r} "
            f"(expected 200 and 'true'); body: {response.body[:300]!r}"
        )


async def _decision_counts(port: int) -> tuple[float, float]:
    response = await http_get(port, "/metrics")
    text = response.body.decode()
    generic, personal = _GENERIC.search(text), _PERSONAL.search(text)
    if response.status != 200 or personal is None:
        raise BenchError(f"cannot read the decision counters from /metrics ({response.status})")
    return (float(generic.group(1)) if generic else 0.0), float(personal.group(1))


async def _measure(url: str, settings: Settings, headers: dict[str, str]) -> WrkReport:
    """Both targets get the same request, the bearer header included (hello ignores it)."""
    core, connections = settings.load_core, settings.connections
    await run_wrk(
        url, core=core, connections=connections, duration_s=settings.warmup_s, headers=headers
    )
    return await run_wrk(
        url, core=core, connections=connections, duration_s=settings.duration_s, headers=headers
    )


def _line(label: str, report: WrkReport) -> str:
    p = report.latency_ms
    return (
        f"  {label:<14} {report.requests_per_s:>10.1f} req/s   "
        f"p50 {p[50]:.2f} ms  p90 {p[90]:.2f} ms  p99 {p[99]:.2f} ms  ({report.requests} requests)"
    )
