"""``moments sim``: run, score, describe and load the simulated store.

Each command imports its machinery when it runs, so ``moments --help`` stays fast.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from firmware_sim.bluez import FakeBlueZ
    from firmware_sim.floorplan import Scenario
    from firmware_sim.live import LiveReport
    from gateway.config import Config

__all__ = ["register"]

_SCENARIO_HELP = (
    "a scenario file, or the name of a shipped one (default: supermarket; see "
    "firmware_sim/scenarios/ and docs/SIMULATOR.md)"
)


def register(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    help_of: Callable[[argparse.ArgumentParser], Callable[[argparse.Namespace], int]],
) -> None:
    sim = subparsers.add_parser(
        "sim",
        help="the simulated store: run it, score presence against it, load a gateway",
        description="A simulated store (floor plan, walking shoppers with phones, fixed "
        "beacons, scanner nodes, shelves, door, tills) for demos, tuning and load tests.",
    )
    sim.set_defaults(handler=help_of(sim))
    commands = sim.add_subparsers(title="sim commands", metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="run a scenario against a running gateway",
        description="Seed the app users of the scenario into the gateway's store, then play "
        "the store in real time (or --speed times faster): scanner nodes, shelves, door and "
        "tills over the store broker, iPhone apps' sightings and help taps over the HTTP API. "
        "Prints a progress line every 10 simulated seconds; stops after the scenario's "
        "duration (or, with --repeat, starts a new round with the next seed).",
    )
    run.add_argument("scenario", nargs="?", default="supermarket", help=_SCENARIO_HELP)
    run.add_argument("-c", "--config", type=Path, help="the gateway's TOML configuration file")
    _scenario_options(run)
    run.add_argument("--speed", type=float, default=1.0, help="time factor (2 = twice as fast)")
    run.add_argument("--repeat", action="store_true", help="play round after round until stopped")
    run.add_argument("--truth", type=Path, help="write the ground truth here (JSON lines)")
    run.add_argument(
        "--warm-up",
        type=float,
        default=0.0,
        help="simulated seconds to skip at the start of each round, so the store is busy",
    )
    run.add_argument("--base-url", default="", help="the gateway's HTTP address (default: config)")
    run.add_argument(
        "--bluez",
        action="store_true",
        help="start an emulated BlueZ on a private D-Bus bus for the box's own radio (the "
        "scenario's [box]); start the gateway with DBUS_SYSTEM_BUS_ADDRESS set to the address "
        "it prints",
    )
    run.add_argument(
        "--bluez-address-file", type=Path, help="also write that bus address to this file"
    )
    run.set_defaults(handler=_cmd_run)

    score = commands.add_parser(
        "score",
        help="score the gateway's presence against the ground truth",
        description="Play the scenario in simulated time through the gateway's own sensing "
        "(node batch parsing, decoding, EID resolution, consent, the presence tracker with "
        "the configuration's [presence] parameters) and compare its zone entries and exits "
        "with the ground truth: per-zone precision and recall, detection delays, flaps per "
        "shopper-hour, beside a naive baseline (strongest raw RSSI wins, no hysteresis).",
    )
    score.add_argument("scenario", nargs="?", default="supermarket", help=_SCENARIO_HELP)
    score.add_argument(
        "-c", "--config", type=Path, help="take the [presence] parameters from this file"
    )
    _scenario_options(score)
    score.add_argument("--json", action="store_true", help="print one JSON object instead")
    score.add_argument("--enter-tolerance", type=float, default=10.0, help="seconds (10)")
    score.add_argument("--leave-tolerance", type=float, default=15.0, help="seconds (15)")
    score.add_argument(
        "--min-stay", type=float, default=10.0, help="shorter stays are not scored (10 s)"
    )
    score.set_defaults(handler=_cmd_score)

    config = commands.add_parser(
        "config",
        help="print the gateway configuration for a scenario's floor",
        description="Print the store_id, [[zones]], [[kiosks]] and [[beacons]] the gateway "
        "needs for the scenario (TOML; every other key keeps its default).",
    )
    config.add_argument("scenario", nargs="?", default="supermarket", help=_SCENARIO_HELP)
    config.set_defaults(handler=_cmd_config)

    load = commands.add_parser(
        "load",
        help="drive a chosen load at a running gateway",
        description="Publish node batches, post app sightings and publish shelf and till "
        "messages at the chosen rates for --duration seconds; a progress line a second, then "
        "the report as one JSON line.",
    )
    from firmware_sim.load_plan import add_arguments

    add_arguments(load)
    load.set_defaults(handler=_cmd_load)

    scripted = commands.add_parser(
        "scripted",
        help="the small scripted store the tests use",
        description="Publish scanner-node messages for the scripted store (two zones, one "
        "kiosk, a shopper who opted in and one who did not), after seeding its records.",
    )
    scripted.add_argument("-c", "--config", type=Path, help="the gateway's configuration file")
    scripted.add_argument("--speed", type=float, default=1.0, help="time factor")
    scripted.add_argument("--rounds", type=int, default=0, help="rounds (0 = forever)")
    scripted.add_argument("--seed", type=int, default=7, help="random seed for the radio noise")
    scripted.add_argument("--no-seed-store", action="store_true", help="do not seed records")
    scripted.set_defaults(handler=_cmd_scripted)


def _scenario_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shoppers", type=int, help="shoppers in a round (scenario's default)")
    parser.add_argument("--duration", type=float, help="seconds of a round (scenario's default)")
    parser.add_argument("--seed", type=int, help="random seed (scenario's default)")
    parser.add_argument("--noise", type=float, help="shadowing standard deviation, dB")
    parser.add_argument("--tau", type=float, help="shadowing correlation time, s")


def _scenario(args: argparse.Namespace) -> Scenario:
    from firmware_sim.floorplan import load_scenario

    scenario = load_scenario(args.scenario)
    changes: dict[str, object] = {}
    if getattr(args, "shoppers", None) is not None:
        changes["population__shoppers"] = args.shoppers
    if getattr(args, "duration", None) is not None:
        changes["duration_s"] = args.duration
    if getattr(args, "seed", None) is not None:
        changes["seed"] = args.seed
    if getattr(args, "noise", None) is not None:
        changes["radio__shadowing_db"] = args.noise
    if getattr(args, "tau", None) is not None:
        changes["radio__shadowing_tau_s"] = args.tau
    return scenario.with_changes(**changes) if changes else scenario


def _text_logging(level: str) -> None:
    from gateway.logs import configure_logging

    configure_logging(level, "text")


def _cmd_run(args: argparse.Namespace) -> int:
    from gateway.config import load_config

    config = load_config(args.config)
    scenario = _scenario(args)
    _text_logging(config.log.level)
    if args.bluez and scenario.box is None:
        print(f"moments: --bluez needs a [box] in {args.scenario}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        if args.bluez:
            report = _run_with_bluez(config, scenario, args)
        else:
            report = asyncio.run(_live(config, scenario, args, None))
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: every link and the bus are closed by now
        print("moments sim: stopped", file=sys.stderr, flush=True)
        return 0
    print(json.dumps(report.as_dict()), flush=True)
    return 0


def _run_with_bluez(config: Config, scenario: Scenario, args: argparse.Namespace) -> LiveReport:
    from firmware_sim.bluez import FakeBlueZ, PrivateBus

    async def main(address: str) -> LiveReport:
        async with FakeBlueZ(address) as bluez:
            return await _live(config, scenario, args, bluez)

    with PrivateBus() as address:
        print(f"DBUS_SYSTEM_BUS_ADDRESS={address}", file=sys.stderr, flush=True)
        if args.bluez_address_file is not None:
            args.bluez_address_file.write_text(address + "\n", encoding="utf-8")
        return asyncio.run(main(address))


async def _live(
    config: Config, scenario: Scenario, args: argparse.Namespace, bluez: FakeBlueZ | None
) -> LiveReport:
    from firmware_sim.live import run_live

    return await run_live(
        config,
        scenario,
        speed=args.speed,
        repeat=args.repeat,
        truth_path=args.truth,
        base_url=args.base_url,
        warm_up_s=args.warm_up,
        bluez=bluez,
        progress=lambda line: print(line, file=sys.stderr, flush=True),
    )


def _cmd_score(args: argparse.Namespace) -> int:
    from firmware_sim.replay import run_replay
    from firmware_sim.score import ScoreParams, format_report
    from gateway.config import load_config

    presence = load_config(args.config).presence if args.config else None
    params = ScoreParams(
        enter_tolerance_s=args.enter_tolerance,
        leave_tolerance_s=args.leave_tolerance,
        min_stay_s=args.min_stay,
    )
    result = run_replay(_scenario(args), presence=presence, params=params)
    if args.json:
        print(json.dumps(result.as_dict()))
    else:
        print(
            f"{result.shoppers} shoppers, {result.tracked} followed by presence "
            f"({result.shopper_hours:.1f} shopper-hours); {result.adverts:,} advertisements "
            f"in {result.node_messages:,} node messages, {result.app_sightings:,} app sightings"
        )
        print(format_report(result.gateway, result.naive))
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    from firmware_sim.floorplan import gateway_config

    scenario = _scenario(args)
    print(f'store_id = "{scenario.store_id}"\n')
    print(gateway_config(scenario))
    return 0


def _cmd_load(args: argparse.Namespace) -> int:
    from firmware_sim.load import plan_from_args, run_load
    from gateway.config import load_config

    config = load_config(args.config)
    _text_logging(config.log.level)
    try:
        plan = plan_from_args(args)
    except ValueError as exc:
        print(f"moments: {exc}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    report = asyncio.run(run_load(config, plan, progress=lambda line: print(line, flush=True)))
    print(json.dumps(report.as_dict()), flush=True)
    return 0


def _cmd_scripted(args: argparse.Namespace) -> int:
    from firmware_sim.runner import run_demo_store
    from gateway.config import load_config

    config = load_config(args.config)
    _text_logging(config.log.level)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    asyncio.run(
        run_demo_store(
            config,
            speed=args.speed,
            rounds=args.rounds,
            seed=args.seed,
            seed_store=not args.no_seed_store,
        )
    )
    return 0
