"""The command line of the benchmarks: ``python -m bench [--json] [--quick] [--only NAME]``.

The CPU-bound benchmark (``decode_vs_beacontools``) runs first and pins itself to the first
allowed core; so do the store ones that follow (``ingest_adv_per_s``, ``snapshot_profiles_per_s``,
``delta_apply_p99_ms``); ``outbox_events_per_s`` keeps to the first core and puts its broker on
the second. For the HTTP ones it then picks two cores (the first two this process may run on:
servers on the first, load on the second, and this orchestrating process moves to the second as
well so that the first is left to the server under test). It runs each selected benchmark (all
by default, ``--only NAME`` to choose), prints human-readable lines and, with ``--json``, one
``{"results": [...]}`` object as the very last line of standard output. Exit status: 0 when
every benchmark measured, 1 when one failed (the reason goes to standard error), 2 for bad usage,
130 when interrupted (143 on SIGTERM). Every process a benchmark started is stopped before the exit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

from bench import decision, decode, http_offer, ingest, outbox, presence, staff, sync
from bench import signal as signal_to_screen
from bench.broker import find_mosquitto
from bench.errors import BenchError
from bench.results import Result

__all__ = ["main"]

REPO = Path(__file__).resolve().parent.parent
WARMUP_S = 2
DURATION_S = 5
QUICK_DURATION_S = 2
HTTP_NAMES = (http_offer.NAME, http_offer.P99_NAME)
SYNC_NAMES = (sync.SNAPSHOT_NAME, sync.DELTA_NAME)
NAMES = (
    decode.NAME,
    ingest.NAME,
    decision.NAME,
    staff.NAME,
    *SYNC_NAMES,
    outbox.NAME,
    signal_to_screen.NAME,
    *HTTP_NAMES,
    *presence.NAMES,
)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    duration = args.duration or (QUICK_DURATION_S if args.quick else DURATION_S)
    selected = set(args.only or NAMES)
    results: list[Result] = []
    try:
        if decode.NAME in selected:
            results += decode.run(decode.Settings.for_mode(quick=args.quick), _say)
        if ingest.NAME in selected:
            results += ingest.run(ingest.Settings.for_mode(quick=args.quick), _say)
        if decision.NAME in selected:
            results += decision.run(decision.Settings.for_mode(quick=args.quick), _say)
        if staff.NAME in selected:
            results += staff.run(staff.Settings.for_mode(quick=args.quick), _say)
        if selected.intersection(SYNC_NAMES):
            snapshot = sync.SnapshotSettings.for_mode(quick=args.quick)
            delta = sync.DeltaSettings.for_mode(quick=args.quick)
            results += asyncio.run(
                _run(
                    sync.run(
                        snapshot if sync.SNAPSHOT_NAME in selected else None,
                        delta if sync.DELTA_NAME in selected else None,
                        _say,
                    )
                )
            )
        if outbox.NAME in selected:
            _, broker_core = _cores()
            _check_tools("taskset")
            settings = outbox.Settings.for_mode(quick=args.quick)
            results += asyncio.run(_run(outbox.run(settings, broker_core, _say)))
        if signal_to_screen.NAME in selected:
            server_core, load_core = _cores()
            _check_tools("taskset")
            screen = signal_to_screen.Settings.for_mode(quick=args.quick)
            results += asyncio.run(
                _run(signal_to_screen.run(screen, server_core, load_core, REPO, _say))
            )
        if selected.intersection(HTTP_NAMES):
            server_core, load_core = _cores()
            _check_tools("taskset", "wrk")
            os.sched_setaffinity(0, {load_core})
            http_settings = http_offer.Settings(
                duration_s=duration,
                warmup_s=WARMUP_S,
                rounds=args.rounds,
                connections=args.connections,
                server_core=server_core,
                load_core=load_core,
            )
            results += asyncio.run(_run(http_offer.run(http_settings, REPO, _say)))
        if selected.intersection(presence.NAMES):
            results += presence.run(presence.Settings.for_mode(quick=args.quick), _say)
    except BenchError as exc:
        print(f"bench: FAILED: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted; every process it started has been stopped", file=sys.stderr)
        return 130
    except asyncio.CancelledError:  # SIGTERM
        print("bench: terminated; every process it started has been stopped", file=sys.stderr)
        return 143
    results = [r for r in results if r.name in selected]
    print()
    for result in results:
        arrow = "higher is better" if result.higher_is_better else "lower is better"
        digits = result.digits
        print(
            f"{result.name:<26} {result.value:>10.{digits}f} {result.unit:<5} vs "
            f"{result.baseline} {result.baseline_value:.{digits}f} {result.unit}: "
            f"ratio {result.ratio:.4f} ({arrow})"
        )
    if args.json:
        print(json.dumps({"results": [r.to_json() for r in results]}), flush=True)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/bench",
        description="Run the Moments benchmarks, each against a baseline measured in the same run.",
    )
    parser.add_argument(
        "--json", action="store_true", help='print {"results": [...]} as the last line of output'
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=(
            f"{QUICK_DURATION_S} s per measured run, not {DURATION_S}; fewer decode runs, "
            "fewer records, events and deltas"
        ),
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=NAMES,
        metavar="NAME",
        help=f"run only this benchmark (repeatable): {', '.join(NAMES)}",
    )
    parser.add_argument(
        "--duration", type=_positive, default=0, metavar="S", help="seconds per measured run"
    )
    parser.add_argument(
        "--rounds", type=_positive, default=2, help="alternating runs per target (default 2)"
    )
    parser.add_argument(
        "--connections", type=_positive, default=32, help="wrk connections (default 32)"
    )
    return parser


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


async def _run(work: Coroutine[Any, Any, list[Result]]) -> list[Result]:
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    # SIGTERM unwinds like Ctrl-C does, through every finally that stops a child process.
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await work
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def _say(line: str) -> None:
    print(line, flush=True)


def _cores() -> tuple[int, int]:
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        raise BenchError(f"needs two CPU cores (server and load apart), this process has {cores}")
    return cores[0], cores[1]


def _check_tools(*tools: str) -> None:
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        raise BenchError(f"missing {', '.join(missing)} (./scripts/bench installs them)")
    find_mosquitto()
