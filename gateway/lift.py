"""Measuring an offer's lift against its holdout: rates, intervals, warnings, the CLI table.

Pure arithmetic on counts; ``moments report lift`` reads the counts and prints
``format_table``.

An ``Arm`` is a group of shoppers (or impressions) and how many of them converted: the
treatment was shown the offer, the control (the holdout, see ``gateway.learning.in_holdout``)
was not. With rates t = x1 / n1 and c = x2 / n2:

Absolute difference, t - c, with Newcombe's hybrid score interval
    (Newcombe 1998, "Interval estimation for the difference between independent proportions:
    comparison of eleven methods", method 10). Each rate gets its Wilson score interval
    (l1, u1) and (l2, u2); then::

        low  = (t - c) - sqrt((t - l1)**2 + (u2 - c)**2)
        high = (t - c) + sqrt((u1 - t)**2 + (c - l2)**2)

    Unlike the Wald interval (t - c) +- z * sqrt(t(1-t)/n1 + c(1-c)/n2), it stays inside
    [-1, 1], is not degenerate when a rate is 0 or 1, and keeps close to its nominal 95 %
    coverage at the small counts and low rates of a store's offers, where Wald undercovers.

Relative lift, (t - c) / c, with the log-ratio (Katz) interval
    By the delta method, log(t / c) is approximately normal with variance
    1/x1 - 1/n1 + 1/x2 - 1/n2, so the interval is
    exp(log(t / c) +- z * sqrt(that)) - 1. It needs a conversion in both arms; otherwise it
    is None (and with no conversion in the control, the lift itself is undefined: None).

z is the 97.5th percentile of the standard normal, 1.959964.

Warnings
    An interval from a few dozen shoppers or a handful of conversions says little, and the
    normal approximations behind it are poor there. A result carries a warning when an arm
    has fewer than ``MIN_EXPOSED`` (30) exposures or fewer than ``MIN_CONVERSIONS`` (5)
    conversions, or when the control converts at 0 % (the lift is undefined).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from statistics import NormalDist
from typing import Final

__all__ = [
    "MIN_CONVERSIONS",
    "MIN_EXPOSED",
    "Z95",
    "Arm",
    "LiftResult",
    "LiftRow",
    "format_table",
    "lift",
    "wilson",
]

Z95: Final = NormalDist().inv_cdf(0.975)
MIN_EXPOSED: Final = 30
MIN_CONVERSIONS: Final = 5


@dataclass(frozen=True, slots=True)
class Arm:
    """How many were exposed (shoppers, or impressions) and how many of them converted."""

    exposed: int
    conversions: int

    def __post_init__(self) -> None:
        for name in ("exposed", "conversions"):
            count = getattr(self, name)
            if not isinstance(count, int) or isinstance(count, bool) or count < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {count!r}")
        if self.conversions > self.exposed:
            raise ValueError(
                f"conversions ({self.conversions}) cannot exceed exposed ({self.exposed})"
            )

    @property
    def rate(self) -> float | None:
        """conversions / exposed; None when nobody was exposed."""
        return self.conversions / self.exposed if self.exposed else None


@dataclass(frozen=True, slots=True)
class LiftResult:
    """Rates of both arms, the absolute difference and relative lift with their 95 %
    intervals (None where undefined), and a warning when the counts are too small."""

    treat_rate: float | None
    control_rate: float | None
    diff: float | None
    """treat_rate - control_rate"""
    ci95: tuple[float, float] | None
    """Newcombe's hybrid score interval of ``diff``."""
    lift: float | None
    """(treat_rate - control_rate) / control_rate"""
    lift_ci95: tuple[float, float] | None
    """Log-ratio interval of ``lift``."""
    warning: str | None


@dataclass(frozen=True, slots=True)
class LiftRow:
    """One offer's line of the report."""

    offer_id: str
    treatment: Arm
    control: Arm


def wilson(conversions: int, exposed: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of the proportion conversions / exposed (exposed > 0)."""
    if exposed <= 0:
        raise ValueError(f"exposed must be > 0, got {exposed!r}")
    Arm(exposed, conversions)  # validates the counts
    n = exposed
    p = conversions / n
    z2 = z * z
    denominator = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denominator
    # At 0 and n conversions the bounds are 0 and 1 exactly; float arithmetic leaves 1e-17.
    low = 0.0 if conversions == 0 else max(0.0, centre - half)
    high = 1.0 if conversions == n else min(1.0, centre + half)
    return low, high


def _newcombe(treatment: Arm, control: Arm) -> tuple[float, float]:
    t = treatment.conversions / treatment.exposed
    c = control.conversions / control.exposed
    l1, u1 = wilson(treatment.conversions, treatment.exposed)
    l2, u2 = wilson(control.conversions, control.exposed)
    d = t - c
    return (
        max(-1.0, d - math.hypot(t - l1, u2 - c)),
        min(1.0, d + math.hypot(u1 - t, c - l2)),
    )


def _log_ratio(treatment: Arm, control: Arm) -> tuple[float, float]:
    x1, n1 = treatment.conversions, treatment.exposed
    x2, n2 = control.conversions, control.exposed
    centre = math.log((x1 / n1) / (x2 / n2))
    half = Z95 * math.sqrt(max(0.0, 1 / x1 - 1 / n1 + 1 / x2 - 1 / n2))
    return math.exp(centre - half) - 1, math.exp(centre + half) - 1


def _warning(treatment: Arm, control: Arm) -> str | None:
    notes: list[str] = []
    for name, arm in (("treatment", treatment), ("control", control)):
        if arm.exposed < MIN_EXPOSED:
            notes.append(f"{name} has {arm.exposed} exposed (< {MIN_EXPOSED})")
        if arm.conversions < MIN_CONVERSIONS:
            notes.append(f"{name} has {arm.conversions} conversions (< {MIN_CONVERSIONS})")
    if control.exposed and not control.conversions:
        notes.append("control converts at 0%: lift undefined")
    return "; ".join(notes) or None


def lift(treatment: Arm, control: Arm) -> LiftResult:
    """Compare the treatment arm with the control arm (the holdout)."""
    t, c = treatment.rate, control.rate
    diff = ci95 = relative = relative_ci95 = None
    if t is not None and c is not None:
        diff = t - c
        ci95 = _newcombe(treatment, control)
        if c > 0:
            relative = diff / c
            if t > 0:
                relative_ci95 = _log_ratio(treatment, control)
    return LiftResult(
        treat_rate=t,
        control_rate=c,
        diff=diff,
        ci95=ci95,
        lift=relative,
        lift_ci95=relative_ci95,
        warning=_warning(treatment, control),
    )


# -- the CLI table -------------------------------------------------------------------------

_HEADER: Final = (
    "offer",
    "impressions",
    "redemptions",
    "treat conv",
    "holdout",
    "control conv",
    "lift",
    "lift 95% CI",
    "diff 95% CI (pp)",
    "warning",
)
_LEFT: Final = frozenset({0, len(_HEADER) - 1})  # text columns; the others are numbers
_NA: Final = "n/a"


def _pct(value: float | None, *, signed: bool = False) -> str:
    if value is None:
        return _NA
    return f"{value * 100:+.1f}%" if signed else f"{value * 100:.2f}%"


def _interval(bounds: tuple[float, float] | None, *, unit: str) -> str:
    if bounds is None:
        return _NA
    low, high = (b * 100 for b in bounds)
    return f"[{low:+.1f}{unit}, {high:+.1f}{unit}]"


def _cells(row: LiftRow) -> tuple[str, ...]:
    result = lift(row.treatment, row.control)
    return (
        row.offer_id,
        str(row.treatment.exposed),
        str(row.treatment.conversions),
        _pct(result.treat_rate),
        str(row.control.exposed),
        _pct(result.control_rate),
        _pct(result.lift, signed=True),
        _interval(result.lift_ci95, unit="%"),
        _interval(result.ci95, unit=""),
        result.warning or "",
    )


def format_table(rows: Iterable[LiftRow]) -> str:
    """The report as plain text: a header, a rule, one aligned line per offer (in the order
    given). Rates are percentages; the difference's interval is in percentage points; "n/a"
    where a figure is undefined."""
    table = [_HEADER, *(_cells(row) for row in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(_HEADER))]
    rule = tuple("-" * w for w in widths)
    lines = []
    for line in (table[0], rule, *table[1:]):
        cells = (
            cell.ljust(width) if i in _LEFT else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(line, widths, strict=True))
        )
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines) + "\n"
