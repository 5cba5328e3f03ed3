"""One row of ``./scripts/bench --json``: a figure, its baseline from the same run, their ratio."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Result"]


@dataclass(frozen=True, slots=True)
class Result:
    name: str
    value: float
    unit: str
    baseline: str
    baseline_value: float
    higher_is_better: bool
    digits: int = 1

    @property
    def ratio(self) -> float:
        return self.value / self.baseline_value

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": round(self.value, self.digits),
            "unit": self.unit,
            "baseline": self.baseline,
            "baseline_value": round(self.baseline_value, self.digits),
            "ratio": round(self.ratio, 4),
            "higher_is_better": self.higher_is_better,
        }
