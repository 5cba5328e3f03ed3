"""The plan of a ``moments sim load`` run: what to send, how fast and for how long, checked
when it is made, and the command-line options that describe it.

A plan refuses what it cannot run (a negative or infinite rate, nothing to send, adverts
without phones, sightings without shoppers, an address that is not ``http://``) with a
``ValueError`` that names the field. :meth:`LoadPlan.planned` is the most each kind sends:
the pacing loops of :mod:`firmware_sim.load` never go beyond it.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from firmware_sim.http_client import split_base_url
from firmware_sim.load_shoppers import MAX_SHOPPERS

__all__ = ["LoadPlan", "add_arguments", "owed", "plan_from_args"]

_EPSILON: Final = 1e-9


@dataclass(frozen=True, slots=True)
class LoadPlan:
    """What to send, how fast and for how long. Rates are per second: ``adverts_per_s``
    advertisements (in node batches), ``sightings_per_s`` sighting requests,
    ``device_msgs_per_s`` shelf and till messages. ``nodes`` 0: one per zone node of the
    configuration. ``base_url`` empty: ``http://{http.host}:{http.port}`` of the
    configuration."""

    adverts_per_s: float
    sightings_per_s: float
    device_msgs_per_s: float
    duration_s: float
    nodes: int
    shoppers: int
    strangers: int
    batch_s: float = 0.5
    seed: int = 7
    base_url: str = ""

    def __post_init__(self) -> None:
        for name in ("adverts_per_s", "sightings_per_s", "device_msgs_per_s"):
            value = getattr(self, name)
            if not _number(value) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if not (_number(self.duration_s) and math.isfinite(self.duration_s)) or (
            self.duration_s <= 0
        ):
            raise ValueError(f"duration_s must be a finite number > 0, got {self.duration_s!r}")
        if not (_number(self.batch_s) and 0.01 <= self.batch_s <= 10):
            raise ValueError(f"batch_s must be from 0.01 to 10 seconds, got {self.batch_s!r}")
        if self.adverts_per_s == self.sightings_per_s == self.device_msgs_per_s == 0:
            raise ValueError("nothing to send: every rate is 0")
        for name, high in (("nodes", 10_000), ("shoppers", MAX_SHOPPERS), ("strangers", 10**6)):
            value = getattr(self, name)
            if not _integer(value) or not 0 <= value <= high:
                raise ValueError(f"{name} must be a whole number from 0 to {high}, got {value!r}")
        if not _integer(self.seed):
            raise ValueError(f"seed must be a whole number, got {self.seed!r}")
        if self.adverts_per_s > 0 and self.shoppers + self.strangers == 0:
            raise ValueError("adverts_per_s > 0 needs phones: shoppers or strangers >= 1")
        if self.sightings_per_s > 0 and self.shoppers == 0:
            raise ValueError("sightings_per_s > 0 needs shoppers >= 1 (sightings need a token)")
        if self.base_url:
            split_base_url(self.base_url)

    def planned(self) -> dict[str, int]:
        """The most each kind sends in ``duration_s``: ``floor(rate * duration_s)``."""
        return {
            "adverts": owed(self.adverts_per_s, self.duration_s),
            "sightings": owed(self.sightings_per_s, self.duration_s),
            "device_msgs": owed(self.device_msgs_per_s, self.duration_s),
        }


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def owed(rate: float, elapsed: float) -> int:
    """What ``rate`` per second owes after ``elapsed`` seconds: ``floor(rate * elapsed)``."""
    return math.floor(rate * elapsed + _EPSILON)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``moments sim load``."""
    parser.add_argument("-c", "--config", type=Path, help="the gateway's TOML configuration file")
    parser.add_argument(
        "--adverts-per-s", type=float, default=1000.0, help="advertisements per second (1000)"
    )
    parser.add_argument(
        "--sightings-per-s",
        type=float,
        default=20.0,
        help="app sighting requests per second (20); each shopper's token allows api.rate_per_s",
    )
    parser.add_argument(
        "--device-msgs-per-s",
        type=float,
        default=5.0,
        help="shelf stock and till redemption messages per second, alternately (5)",
    )
    parser.add_argument("--duration", type=float, default=60.0, help="seconds to run (60)")
    parser.add_argument(
        "--nodes",
        type=int,
        default=0,
        help="scanner nodes to spread adverts over (0: the configuration's zone nodes)",
    )
    parser.add_argument(
        "--shoppers", type=int, default=50, help="opted-in app shoppers, written into the store"
    )
    parser.add_argument(
        "--strangers", type=int, default=200, help="phones without the app (anonymous)"
    )
    parser.add_argument(
        "--batch-s", type=float, default=0.5, help="a node's batch period, seconds (0.5)"
    )
    parser.add_argument("--seed", type=int, default=7, help="random seed (7)")
    parser.add_argument(
        "--base-url",
        default="",
        help="the gateway's HTTP address (default: http://<http.host>:<http.port>)",
    )


def plan_from_args(args: argparse.Namespace) -> LoadPlan:
    """The plan the options describe; ``ValueError`` names what is wrong."""
    return LoadPlan(
        adverts_per_s=args.adverts_per_s,
        sightings_per_s=args.sightings_per_s,
        device_msgs_per_s=args.device_msgs_per_s,
        duration_s=args.duration,
        nodes=args.nodes,
        shoppers=args.shoppers,
        strangers=args.strangers,
        batch_s=args.batch_s,
        seed=args.seed,
        base_url=args.base_url,
    )
