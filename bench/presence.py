"""``presence_f1``, ``presence_delay_p95_s``, ``flaps_vs_naive``: zone presence against the truth.

What is measured: the shipped supermarket scenario (``firmware_sim/scenarios/supermarket.toml``:
nine zones, one scanner node each, 300 shoppers arriving over 30 minutes, 5 dB shadowing) is
played in simulated time through the gateway's own sensing with the default ``[presence]``
parameters (``moments sim score``), and its zone entries and exits are compared with the
simulator's ground truth: F1 of entered/left events (10 s tolerance on entries, 15 s on exits;
stays shorter than 10 s are not scored), the 95th percentile of the entry delay, and flaps per
shopper-hour (entries that match no real entry).

Baseline, from the same run: the naive presence (strongest raw RSSI wins, no hysteresis)
computed from the very readings the gateway heard. ``flaps_vs_naive`` is the ratio of the two
flap rates (target at most 0.2); ``presence_f1`` has an absolute target (at least 0.95).

The run is deterministic (seeded): these rows do not move with the machine's noise, only with
the code and the scenario. It takes about 20 s.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bench.errors import BenchError
from bench.results import Result
from firmware_sim.floorplan import load_scenario
from firmware_sim.replay import run_replay

__all__ = ["DELAY_NAME", "F1_NAME", "FLAPS_NAME", "NAMES", "Settings", "run"]

F1_NAME = "presence_f1"
DELAY_NAME = "presence_delay_p95_s"
FLAPS_NAME = "flaps_vs_naive"
NAMES = (F1_NAME, DELAY_NAME, FLAPS_NAME)


@dataclass(frozen=True, slots=True)
class Settings:
    scenario: str = "supermarket"
    shoppers: int = 300
    duration_s: float = 1800.0
    noise_db: float = 5.0

    @classmethod
    def for_mode(cls, *, quick: bool) -> Settings:
        del quick  # deterministic and ~20 s: the quick run measures the same store
        return cls()


def run(settings: Settings, say: Callable[[str], None]) -> list[Result]:
    scenario = load_scenario(settings.scenario).with_changes(
        duration_s=settings.duration_s,
        population__shoppers=settings.shoppers,
        radio__shadowing_db=settings.noise_db,
    )
    say(
        f"{F1_NAME}: {settings.scenario}, {settings.shoppers} shoppers, "
        f"{settings.duration_s / 60:.0f} min, {settings.noise_db:g} dB shadowing"
    )
    replay = run_replay(scenario)
    gateway, naive = replay.gateway, replay.naive
    say(
        f"{F1_NAME}: gateway F1 {gateway.f1:.3f} (P {gateway.precision:.3f}, R "
        f"{gateway.recall:.3f}), naive {naive.f1:.3f}; flaps/shopper-hour "
        f"{gateway.flaps_per_shopper_hour:.2f} vs {naive.flaps_per_shopper_hour:.2f}"
    )
    if gateway.delay_p95_s is None or naive.delay_p95_s is None:
        # Nothing matched: no delay to report (0.0 would read as the best possible one).
        raise BenchError(f"{DELAY_NAME}: no entry detected on time, so no delay to measure")
    return [
        Result(F1_NAME, gateway.f1, "f1", "naive_strongest_rssi", naive.f1, True, digits=4),
        Result(
            DELAY_NAME,
            gateway.delay_p95_s,
            "s",
            "naive_strongest_rssi",
            max(naive.delay_p95_s, 1e-9),
            False,
            digits=2,
        ),
        Result(
            FLAPS_NAME,
            gateway.flaps_per_shopper_hour,
            "flaps/h",
            "naive_strongest_rssi",
            max(naive.flaps_per_shopper_hour, 1e-9),
            False,
            digits=2,
        ),
    ]
