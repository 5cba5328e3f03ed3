"""What a ``moments sim load`` run sent and what came of it: the counts kept while it runs
(:class:`Tally`) and the report made from them (:class:`LoadReport`), printed as one JSON
object by :meth:`LoadReport.as_dict`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from firmware_sim.load_plan import LoadPlan

__all__ = ["LoadReport", "Tally"]


@dataclass(frozen=True, slots=True)
class LoadReport:
    """What a run sent and what came of it. ``elapsed_s`` is the sending phase."""

    plan: LoadPlan
    elapsed_s: float
    adverts: int
    batches: int
    sightings: int
    sightings_ok: int
    sightings_placed: int
    sightings_dropped: Mapping[str, int]
    stock_msgs: int
    redemptions: int
    device_acked: int
    behind: Mapping[str, int]
    errors: Mapping[str, int]

    @property
    def device_msgs(self) -> int:
        return self.stock_msgs + self.redemptions

    def rate(self, count: int) -> float:
        return count / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def as_dict(self) -> dict[str, Any]:
        """The report as one JSON object (for the final line of ``moments sim load``)."""
        plan = self.plan
        return {
            "elapsed_s": round(self.elapsed_s, 3),
            "plan": {
                "adverts_per_s": plan.adverts_per_s,
                "sightings_per_s": plan.sightings_per_s,
                "device_msgs_per_s": plan.device_msgs_per_s,
                "duration_s": plan.duration_s,
                "nodes": plan.nodes,
                "shoppers": plan.shoppers,
                "strangers": plan.strangers,
                "batch_s": plan.batch_s,
                "seed": plan.seed,
                "planned": plan.planned(),
            },
            "sent": {
                "adverts": self.adverts,
                "batches": self.batches,
                "sightings": self.sightings,
                "device_msgs": self.device_msgs,
                "stock": self.stock_msgs,
                "redemptions": self.redemptions,
            },
            "rates": {
                "adverts_per_s": round(self.rate(self.adverts), 1),
                "sightings_per_s": round(self.rate(self.sightings), 1),
                "device_msgs_per_s": round(self.rate(self.device_msgs), 1),
            },
            "sightings": {
                "ok": self.sightings_ok,
                "placed": self.sightings_placed,
                "dropped": dict(self.sightings_dropped),
            },
            "device_acked": self.device_acked,
            "behind": dict(self.behind),
            "errors": dict(self.errors),
        }


@dataclass(slots=True)
class Tally:
    """The counts of a run while it runs (the report is made from them at the end)."""

    adverts: int = 0
    batches: int = 0
    sightings: int = 0
    sightings_ok: int = 0
    placed: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    stock: int = 0
    redemptions: int = 0
    device_acked: int = 0
    behind: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)

    def error(self, kind: str, count: int = 1) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + count
