"""What the store's records say, for people: the lift report and a decision explained.

``moments report lift`` and ``moments explain DECISION_ID`` (``gateway/cli.py``) read the store
with short read transactions, whether or not the gateway runs, and print what this module
builds. Pure functions of what was read, apart from :func:`lift_report`, the one read.

The lift report
    One :class:`~gateway.lift.LiftRow` per offer with anything counted
    (:func:`gateway.redemptions.exposures`): the treatment arm is the impressions of the offer
    and the redemptions attributed to them, the control arm the holdout's exposures and the
    redemptions attributed to those. ``lift.format_table`` prints it, its warning column
    flags small samples. Below the table, notes: redemptions no decision explains
    (unattributed, not in either arm), and an arm with more redemptions than exposures (a
    redemption may come days after its impression, from counts begun at different times):
    its conversions are capped at its exposures so the rate stays a proportion, and the note
    says so.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from gateway.lift import Arm, LiftRow, format_table, lift
from gateway.redemptions import OfferTally, exposures
from gateway.store.database import Database
from gateway.store.records import DecisionRecord

__all__ = [
    "LiftReport",
    "build_report",
    "explain",
    "format_report",
    "lift_report",
    "report_json",
]

_NOTHING_YET: Final = "no offer has impressions or redemptions yet"


@dataclass(frozen=True, slots=True)
class LiftReport:
    """The rows of the table (offer id order), the tallies they came from, and the notes."""

    rows: tuple[LiftRow, ...]
    tallies: tuple[OfferTally, ...]
    notes: tuple[str, ...]


def _arm(offer: str, side: str, exposed: int, redeemed: int, notes: list[str]) -> Arm:
    if redeemed > exposed:
        notes.append(
            f"{offer}: {redeemed} {side} redemptions but {exposed} exposures; "
            f"its rate counts {exposed}"
        )
        redeemed = exposed
    return Arm(exposed, redeemed)


def build_report(tallies: Iterable[OfferTally]) -> LiftReport:
    """The report of ``tallies``, in offer id order."""
    ordered = sorted(tallies, key=lambda t: t.offer_id)
    notes: list[str] = []
    rows = tuple(
        LiftRow(
            t.offer_id,
            _arm(t.offer_id, "treatment", t.impressions_treatment, t.redemptions_treatment, notes),
            _arm(t.offer_id, "control", t.impressions_control, t.redemptions_control, notes),
        )
        for t in ordered
    )
    loose = [
        f"{t.offer_id} {t.redemptions_unattributed}" for t in ordered if t.redemptions_unattributed
    ]
    if loose:
        notes.append(
            "unattributed redemptions (no decision showed or held out the offer within the "
            f"window; in neither arm): {', '.join(loose)}"
        )
    if not rows:
        notes.append(_NOTHING_YET)
    return LiftReport(rows, tuple(ordered), tuple(notes))


def lift_report(db: Database) -> LiftReport:
    """The report of what the store has counted so far."""
    return build_report(exposures(db).values())


def format_report(report: LiftReport) -> str:
    """The table, then one ``note:`` line per note."""
    table = format_table(report.rows) if report.rows else ""
    return table + "".join(f"note: {note}\n" for note in report.notes)


def _interval(bounds: tuple[float, float] | None) -> list[float] | None:
    return None if bounds is None else [bounds[0], bounds[1]]


def report_json(report: LiftReport) -> dict[str, Any]:
    """The report as JSON: per offer both arms (exposures, redemptions, rate; conversions
    capped as the table's are), the unattributed redemptions, the difference and lift with
    their 95 % intervals (null where undefined) and the warning; then the notes."""
    offers = []
    for row, tally in zip(report.rows, report.tallies, strict=True):
        result = lift(row.treatment, row.control)
        offers.append(
            {
                "offer": row.offer_id,
                "treatment": {
                    "impressions": row.treatment.exposed,
                    "redemptions": row.treatment.conversions,
                    "rate": result.treat_rate,
                },
                "control": {
                    "impressions": row.control.exposed,
                    "redemptions": row.control.conversions,
                    "rate": result.control_rate,
                },
                "unattributed_redemptions": tally.redemptions_unattributed,
                "diff": result.diff,
                "diff_ci95": _interval(result.ci95),
                "lift": result.lift,
                "lift_ci95": _interval(result.lift_ci95),
                "warning": result.warning,
            }
        )
    return {"offers": offers, "notes": list(report.notes)}


def _when(at: float) -> str:
    stamp = dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    return f"{stamp} UTC ({at})"


def explain(record: DecisionRecord) -> str:
    """``record`` as readable text: when, whose, where, what was chosen and why, and each
    offer left out with the first rule that rejected it."""
    lines = [
        f"decision {record.decision_id}",
        f"  when      {_when(record.at)}",
        f"  shopper   {record.shopper_id}",
        f"  channel   {record.channel}",
    ]
    if record.kiosk_id is not None:
        lines.append(f"  kiosk     {record.kiosk_id}")
    chosen = record.offer_id if record.offer_id is not None else "none (generic content)"
    lines.append(f"  offer     {chosen}")
    lines.append(f"  reason    {record.reason or '(none given)'}")
    if record.inputs:
        lines.append(f"  inputs    {json.dumps(record.inputs, sort_keys=True, default=str)}")
    if record.rejected:
        lines.append(f"  rejected  {len(record.rejected)} offers, each by its first rule:")
        width = max(len(offer) for offer, _rule in record.rejected)
        lines.extend(f"    {offer.ljust(width)}  {rule}" for offer, rule in record.rejected)
    else:
        lines.append("  rejected  none")
    return "\n".join(lines) + "\n"
