"""``staff_update_us``: what open staff dashboards cost the gateway's event loop a second.

Once a second while a ``/staff/stream`` is open (however many are: they share it), the
gateway reads its state into a ``Reading`` (today's figures from the store included), builds
the view model and encodes it as JSON (``gateway.http.staff.StaffBoard.rebuild``). Measured
as the median of many updates on a running ``Gateway`` (the example store's configuration,
its LMDB store holding 5,000 shoppers with EID keys and consent) after the ingest
benchmark's busy floor has been played through its sensing (500 devices in range, 20 % of
them opted-in shoppers who are then placed in zones; the rest counted anonymously), with
help requests open and today's figures counted.

Baseline, same run, same gateway: ``gateway_tick_us``, the median of the gateway's own
once-a-second work that runs whether or not anyone looks (``Gateway.tick_once``: the sensing
tick, HQ's templates, the consent recheck of every shopper present, the staff alerts, every
kiosk re-decided, the beacon fleet): the ratio says what open dashboards add on top of what
the gateway does each second anyway.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from bench.cpu import pinned
from bench.errors import BenchError
from bench.ingest import (
    BATCH,
    CONFIG,
    IN_RANGE,
    OPTED_IN_SHARE,
    SEED,
    T0,
    busy_floor,
    shopper_records,
)
from bench.results import Result
from gateway.clock import ManualClock
from gateway.config import load_config
from gateway.http.staff import StaffBoard
from gateway.runtime import Gateway

__all__ = ["BASELINE", "NAME", "Settings", "run"]

NAME: Final = "staff_update_us"
BASELINE: Final = "gateway_tick_us"
UNIT: Final = "us"
TICK_EVERY: Final = 20

Out = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Settings:
    updates: int

    @classmethod
    def for_mode(cls, *, quick: bool) -> Settings:
        return cls(500 if quick else 2_000)


def run(settings: Settings, out: Out) -> list[Result]:
    return asyncio.run(_run(settings, out))


def _median_us(work: Callable[[], Any], times: int) -> float:
    samples = []
    for _ in range(times):
        start = time.perf_counter_ns()
        work()
        samples.append((time.perf_counter_ns() - start) / 1000)
    return statistics.median(samples)


async def _run(settings: Settings, out: Out) -> list[Result]:
    with tempfile.TemporaryDirectory(prefix="moments-bench-staff-") as tmp:
        rng = random.Random(SEED)
        config = load_config(
            CONFIG,
            environ={
                "MOMENTS_DATA_DIR": tmp,
                "MOMENTS_RADIO__ENABLED": "false",
                "MOMENTS_BROKER__PORT": "1",  # no broker: the link backs off, nothing else
            },
        )
        clock = ManualClock(float(T0))
        gateway = Gateway(config, clock=clock)
        async with gateway.running():
            records, keys = shopper_records(rng)
            await gateway.writer.write(gateway.db.put_op(records))
            gateway.sensing.tick()  # loads the EID table of every consenting shopper
            messages = busy_floor(rng, keys)
            for i, message in enumerate(messages):
                gateway.sensing.handle(message)
                clock.advance(1.0 / TICK_EVERY)
                if i % TICK_EVERY == TICK_EVERY - 1:
                    gateway.sensing.tick()
            present = len(gateway.sensing.shoppers())
            if present < round(IN_RANGE * OPTED_IN_SHARE) // 2:
                raise BenchError(f"{NAME}: only {present} shoppers placed in a zone")
            for shopper in gateway.sensing.shoppers()[:10]:
                zone = gateway.sensing.zone_of(shopper)
                gateway.shoppers.helpdesk.ask(shopper, name="Sam", zone=zone, now=clock.now())
            await gateway.today.drain()
            staff = StaffBoard(gateway)

            def update() -> None:
                # What each second costs: today's figures read from the store again too.
                gateway.today.forget_reading()
                staff.rebuild()

            board = msgspec.json.decode(staff.rebuild())
            out(
                f"{NAME}: {present} shoppers present, "
                f"{board['figures']['visitors']} anonymous devices today, "
                f"{len(board['help'])} waiting for help, {len(messages) * BATCH} advertisements "
                f"played; {settings.updates} updates"
            )
            with pinned() as core:
                out(f"  pinned to core {core}")
                ours = _median_us(update, settings.updates)
                theirs = _median_us(gateway.tick_once, settings.updates)
            out(f"  dashboard update {ours:.1f} {UNIT}   gateway tick {theirs:.1f} {UNIT}")
    return [Result(NAME, ours, UNIT, BASELINE, theirs, higher_is_better=False)]
