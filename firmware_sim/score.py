"""Scoring presence events against the simulator's ground truth, and the naive baseline.

Pure code: stays, events and readings in, a ``Score`` out. ``moments sim score`` prints
``format_report``; the bench takes ``presence_f1``, ``presence_delay_p95_s`` and
``flaps_vs_naive`` from two scores (the gateway's and the naive baseline's).

Truth
    Each ``Stay`` gives an entry at ``start`` and, when ``end`` is not None, an exit at
    ``end``. A closed stay is *scored* when ``end - start >= min_stay_s``; shorter ones (a
    shopper walking through) are *don't care*. An open stay (``end is None``) is scored for
    its entry when it started at least ``min_stay_s`` before the end of the run (``run_end``,
    by default the latest time in truth or events), else it is don't care; it has no exit.
    When the caller gives ``run_end`` (the run stopped then), the exit of a scored stay that
    ended less than ``leave_tolerance_s`` before it is don't care: no detector could be held
    to report it before the run stopped.
    Stays of one shopper in one zone must not overlap (ValueError).

Matching, per (shopper, zone, kind)
    1. Scored truth events, in time order, each take the closest unmatched observed event of
       the same kind within the tolerance (``enter_tolerance_s`` or ``leave_tolerance_s``,
       symmetric: a detection may come before the truth); ties go to the earlier event. A
       match is a true positive and gives a signed delay ``observed.t - truth.t``; a scored
       truth event with nothing to take is a false negative.
    2. Then don't-care stays absorb every still unmatched observed event of their shopper
       and zone in their window: an entered event from ``start - enter_tolerance_s`` to the
       later of ``start + enter_tolerance_s`` and ``end`` (no upper bound for an open stay),
       a left event within ``leave_tolerance_s`` of ``end``. Absorbed events are neither
       true nor false positives (``dont_care_events`` counts them). Scored truth goes first
       so that a transit just before a real stay cannot take the real stay's detection.
    3. Every observed event left over is a false positive. A left-over entered event is also
       a *flap* (a spurious entry, or a re-entry while the shopper stayed put).
    Events for shoppers with no truth at all are false positives (and flaps, when entered)
    and are also counted in ``unexpected_events`` / ``unexpected_shoppers``.

Figures
    precision = tp / (tp + fp), 1.0 when nothing was observed (nothing claimed, nothing
    wrong); recall = tp / (tp + fn), 1.0 when nothing was expected; F1 = 2PR / (P + R), 0.0
    when P + R = 0 (no tp, but both fp and fn). So nothing observed and nothing expected
    gives P = R = F1 = 1.0, and one side empty with the other not gives F1 = 0.0. Overall
    figures are micro-averaged: counts summed over both kinds and all zones.
    Delays are over matched scored events only: the median is the usual one (mean of the
    two middle values for an even count), p95 is the nearest-rank percentile (the
    ceil(0.95 n)-th smallest value); None when nothing matched.
    ``flaps_per_shopper_hour = flaps / shopper_hours``; ``shopper_hours`` must be > 0.

Naive baseline (``naive_presence``)
    Strongest raw RSSI wins, no hysteresis and no smoothing. Per shopper, readings in time
    order (readings from nodes without a zone are dropped first). Before a reading, a
    silence longer than ``leave_after_s`` since the shopper's previous reading emits left
    at previous + ``leave_after_s``. The reading then replaces its node's latest reading, and
    the shopper's zone is that of the node with the strongest latest reading among those
    heard within ``window_s`` of this reading (ties: the more recent, then the smaller node
    name). A change of zone emits left(old) then entered(new) at the reading's time. At the
    end, a shopper still in a zone gets left at last + ``leave_after_s`` only when that is not
    after the last reading of the run; otherwise the stay stays open.
"""

from __future__ import annotations

import math
import statistics
from bisect import bisect_left, bisect_right
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Literal

__all__ = [
    "Counts",
    "Kind",
    "Observed",
    "Reading",
    "Score",
    "ScoreParams",
    "Stay",
    "ZoneScore",
    "events_from_stays",
    "flaps_vs_naive",
    "format_report",
    "naive_presence",
    "score",
]

Kind = Literal["entered", "left"]


@dataclass(frozen=True, slots=True)
class Stay:
    """Ground truth: the shopper was inside the zone's polygon from start to end."""

    shopper: str
    zone: str
    start: float
    end: float | None  # None: still there when the run ended


@dataclass(frozen=True, slots=True)
class Observed:
    """A presence event, from the gateway or the naive baseline."""

    shopper: str
    zone: str
    kind: Kind
    t: float


@dataclass(frozen=True, slots=True)
class Reading:
    """One raw reception: a scanner node in a zone heard the shopper's phone."""

    shopper: str
    node: str
    rssi: int
    t: float


@dataclass(frozen=True, slots=True)
class ScoreParams:
    enter_tolerance_s: float = 10.0  # an entered event matches a truth entry within +- this
    leave_tolerance_s: float = 15.0  # a left event matches a truth exit within +- this
    min_stay_s: float = 10.0  # truth stays shorter than this (walking through) are "don't care"


def _ratio(num: int, den: int) -> float:
    return num / den if den else 1.0


@dataclass(frozen=True, slots=True)
class Counts:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    @property
    def precision(self) -> float:
        """tp / (tp + fp); 1.0 when nothing was observed."""
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float:
        """tp / (tp + fn); 1.0 when nothing was expected."""
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def f1(self) -> float:
        """2PR / (P + R); 0.0 when P + R = 0."""
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    def as_dict(self) -> dict[str, int | float]:
        return {
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
        }


@dataclass(frozen=True, slots=True)
class ZoneScore:
    entered: Counts = Counts()
    left: Counts = Counts()

    @property
    def total(self) -> Counts:
        return self.entered + self.left

    def as_dict(self) -> dict[str, dict[str, int | float]]:
        return {"entered": self.entered.as_dict(), "left": self.left.as_dict()}


@dataclass(frozen=True, slots=True)
class Score:
    entered: Counts
    left: Counts
    per_zone: Mapping[str, ZoneScore]  # sorted by zone
    delay_median_s: float | None
    delay_p95_s: float | None
    leave_delay_median_s: float | None
    leave_delay_p95_s: float | None
    flaps: int
    shopper_hours: float
    unexpected_shoppers: int  # shoppers with events but no truth at all
    unexpected_events: int  # their events (also counted as false positives)
    dont_care_events: int  # observed events absorbed by don't-care truth
    params: ScoreParams = field(default=ScoreParams())

    @property
    def counts(self) -> Counts:
        return self.entered + self.left

    @property
    def tp(self) -> int:
        return self.counts.tp

    @property
    def fp(self) -> int:
        return self.counts.fp

    @property
    def fn(self) -> int:
        return self.counts.fn

    @property
    def precision(self) -> float:
        return self.counts.precision

    @property
    def recall(self) -> float:
        return self.counts.recall

    @property
    def f1(self) -> float:
        return self.counts.f1

    @property
    def flaps_per_shopper_hour(self) -> float:
        return self.flaps / self.shopper_hours

    def as_dict(self) -> dict[str, object]:
        """JSON-ready, with stable keys."""
        return {
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "entered": self.entered.as_dict(),
            "left": self.left.as_dict(),
            "per_zone": {zone: z.as_dict() for zone, z in self.per_zone.items()},
            "delay_median_s": self.delay_median_s,
            "delay_p95_s": self.delay_p95_s,
            "leave_delay_median_s": self.leave_delay_median_s,
            "leave_delay_p95_s": self.leave_delay_p95_s,
            "flaps": self.flaps,
            "flaps_per_shopper_hour": self.flaps_per_shopper_hour,
            "shopper_hours": self.shopper_hours,
            "unexpected_shoppers": self.unexpected_shoppers,
            "unexpected_events": self.unexpected_events,
            "dont_care_events": self.dont_care_events,
            "params": {
                "enter_tolerance_s": self.params.enter_tolerance_s,
                "leave_tolerance_s": self.params.leave_tolerance_s,
                "min_stay_s": self.params.min_stay_s,
            },
        }


def events_from_stays(stays: Iterable[Stay]) -> list[Observed]:
    """The events a perfect detector would emit for ``stays``, in time order."""
    out: list[Observed] = []
    for s in stays:
        out.append(Observed(s.shopper, s.zone, "entered", s.start))
        if s.end is not None:
            out.append(Observed(s.shopper, s.zone, "left", s.end))
    out.sort(key=lambda e: e.t)
    return out


def _percentile_nearest_rank(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def _delays(values: Sequence[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.median(values), _percentile_nearest_rank(values, 0.95)


@dataclass(slots=True)
class _Tally:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    def freeze(self) -> Counts:
        return Counts(self.tp, self.fp, self.fn)


def _check_stays(stays: Sequence[Stay]) -> None:
    by_key: defaultdict[tuple[str, str], list[Stay]] = defaultdict(list)
    for s in stays:
        if s.end is not None and s.end < s.start:
            raise ValueError(f"stay ends before it starts: {s!r}")
        by_key[(s.shopper, s.zone)].append(s)
    for group in by_key.values():
        group.sort(key=lambda s: s.start)
        for a, b in pairwise(group):
            if a.end is None or a.end > b.start:
                raise ValueError(f"overlapping stays: {a!r} and {b!r}")


_Key = tuple[str, str, Kind]  # shopper, zone, kind


@dataclass(frozen=True, slots=True)
class _TruthEvent:
    t: float
    scored: bool
    low: float  # the window a don't-care event absorbs observed events in
    high: float


def _truth_events(
    stays: Sequence[Stay], params: ScoreParams, run_end: float, *, ended: bool
) -> dict[_Key, list[_TruthEvent]]:
    """Truth events per (shopper, zone, kind), in time order."""
    out: defaultdict[_Key, list[_TruthEvent]] = defaultdict(list)
    enter_tol, leave_tol = params.enter_tolerance_s, params.leave_tolerance_s
    for s in stays:
        if s.end is None:
            scored = run_end - s.start >= params.min_stay_s
            high = math.inf
        else:
            scored = s.end - s.start >= params.min_stay_s
            high = max(s.start + enter_tol, s.end)
        out[(s.shopper, s.zone, "entered")].append(
            _TruthEvent(s.start, scored, s.start - enter_tol, high)
        )
        if s.end is not None:
            # An exit too close to the end of the run for any detector to have reported it
            # within the tolerance is don't care, not a miss.
            seen_through = not ended or run_end - s.end >= leave_tol
            out[(s.shopper, s.zone, "left")].append(
                _TruthEvent(s.end, scored and seen_through, s.end - leave_tol, s.end + leave_tol)
            )
    for events in out.values():
        events.sort(key=lambda e: e.t)
    return out


@dataclass(frozen=True, slots=True)
class _Matched:
    delays: list[float]  # one per true positive
    missed: int
    dont_care: int
    spurious: int


def _match(times: Sequence[float], wanted: Sequence[_TruthEvent], tol: float) -> _Matched:
    """Match one (shopper, zone, kind): ``times`` sorted, ``wanted`` in time order."""
    used = [False] * len(times)
    delays: list[float] = []
    missed = 0
    for ev in wanted:
        if not ev.scored:
            continue
        best: int | None = None
        for i in range(bisect_left(times, ev.t - tol), bisect_right(times, ev.t + tol)):
            if not used[i] and (best is None or abs(times[i] - ev.t) < abs(times[best] - ev.t)):
                best = i
        if best is None:
            missed += 1
        else:
            used[best] = True
            delays.append(times[best] - ev.t)
    dont_care = 0
    for ev in wanted:
        if ev.scored:
            continue
        for i in range(bisect_left(times, ev.low), bisect_right(times, ev.high)):
            if not used[i]:
                used[i] = True
                dont_care += 1
    return _Matched(delays, missed, dont_care, used.count(False))


def score(
    truth: Iterable[Stay],
    observed: Iterable[Observed],
    *,
    shopper_hours: float,
    params: ScoreParams = ScoreParams(),
    run_end: float | None = None,
) -> Score:
    """Score ``observed`` against ``truth`` (see the module docstring for the rules).

    ``run_end`` is when the run ended, for deciding whether an open stay lasted long enough
    to be scored; by default the latest time in truth or events."""
    if not shopper_hours > 0:
        raise ValueError(f"shopper_hours must be > 0, got {shopper_hours!r}")
    stays = list(truth)
    events = list(observed)
    _check_stays(stays)

    ended = run_end is not None
    if run_end is None:
        times = [s.start for s in stays]
        times += [s.end for s in stays if s.end is not None]
        times += [e.t for e in events]
        run_end = max(times, default=0.0)

    truth_by_key = _truth_events(stays, params, run_end, ended=ended)
    obs_by_key: defaultdict[_Key, list[float]] = defaultdict(list)
    for e in events:
        obs_by_key[(e.shopper, e.zone, e.kind)].append(e.t)

    tallies: defaultdict[tuple[str, Kind], _Tally] = defaultdict(_Tally)
    delays: dict[Kind, list[float]] = {"entered": [], "left": []}
    flaps = 0
    dont_care = 0
    for key in sorted(truth_by_key.keys() | obs_by_key.keys()):
        _shopper, zone, kind = key
        tol = params.enter_tolerance_s if kind == "entered" else params.leave_tolerance_s
        m = _match(sorted(obs_by_key.get(key, ())), truth_by_key.get(key, []), tol)
        tally = tallies[(zone, kind)]
        tally.tp += len(m.delays)
        tally.fn += m.missed
        tally.fp += m.spurious
        delays[kind] += m.delays
        dont_care += m.dont_care
        if kind == "entered":
            flaps += m.spurious

    known = {s.shopper for s in stays}
    strangers = [e for e in events if e.shopper not in known]

    zones = sorted({zone for zone, _kind in tallies})
    per_zone = {
        zone: ZoneScore(
            entered=tallies[(zone, "entered")].freeze(), left=tallies[(zone, "left")].freeze()
        )
        for zone in zones
    }
    entered = sum((z.entered for z in per_zone.values()), Counts())
    left = sum((z.left for z in per_zone.values()), Counts())
    delay_median, delay_p95 = _delays(delays["entered"])
    leave_median, leave_p95 = _delays(delays["left"])
    return Score(
        entered=entered,
        left=left,
        per_zone=per_zone,
        delay_median_s=delay_median,
        delay_p95_s=delay_p95,
        leave_delay_median_s=leave_median,
        leave_delay_p95_s=leave_p95,
        flaps=flaps,
        shopper_hours=shopper_hours,
        unexpected_shoppers=len({e.shopper for e in strangers}),
        unexpected_events=len(strangers),
        dont_care_events=dont_care,
        params=params,
    )


def flaps_vs_naive(gateway: Score, naive: Score) -> float:
    """Gateway flaps per shopper-hour over the naive baseline's: 0.0 when neither flaps,
    infinity when only the gateway does."""
    ours, theirs = gateway.flaps_per_shopper_hour, naive.flaps_per_shopper_hour
    if theirs == 0:
        return 0.0 if ours == 0 else math.inf
    return ours / theirs


def naive_presence(
    readings: Iterable[Reading],
    zone_of_node: Mapping[str, str],
    *,
    window_s: float = 1.5,
    leave_after_s: float = 8.0,
) -> list[Observed]:
    """Presence events of the naive baseline: strongest raw RSSI wins, no hysteresis.

    Events come out in time order (for one time, in the order they were emitted)."""
    if not window_s > 0 or not leave_after_s > 0:
        raise ValueError("window_s and leave_after_s must be > 0")
    by_shopper: defaultdict[str, list[Reading]] = defaultdict(list)
    run_last = -math.inf
    for r in readings:
        if r.node in zone_of_node:
            by_shopper[r.shopper].append(r)
            run_last = max(run_last, r.t)

    out: list[Observed] = []
    for shopper in sorted(by_shopper):
        rows = sorted(by_shopper[shopper], key=lambda r: r.t)
        latest: dict[str, tuple[int, float]] = {}
        zone: str | None = None
        last = -math.inf
        for r in rows:
            if zone is not None and r.t - last > leave_after_s:
                out.append(Observed(shopper, zone, "left", last + leave_after_s))
                zone = None
            latest[r.node] = (r.rssi, r.t)
            # Strongest, then most recent, then smallest node name.
            _key, node = min(
                ((-rssi, -t, n), n) for n, (rssi, t) in latest.items() if r.t - t <= window_s
            )
            now = zone_of_node[node]
            if now != zone:
                if zone is not None:
                    out.append(Observed(shopper, zone, "left", r.t))
                out.append(Observed(shopper, now, "entered", r.t))
                zone = now
            last = r.t
        if zone is not None and last + leave_after_s <= run_last:
            out.append(Observed(shopper, zone, "left", last + leave_after_s))
    out.sort(key=lambda e: e.t)
    return out


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def _pr(c: Counts) -> str:
    return f"{c.precision:.3f}/{c.recall:.3f}"


def format_report(gateway: Score, naive: Score) -> str:
    """A fixed-width table: per zone precision/recall, then the overall figures, gateway
    and naive side by side."""
    label_w, col_w = 24, 14
    lines: list[str] = []

    def row(label: str, cells: Sequence[str]) -> None:
        lines.append(f"{label:<{label_w}}" + "".join(f"{c:>{col_w}}" for c in cells).rstrip())

    lines.append(f"{'':<{label_w}}{'gateway':^{2 * col_w}}{'naive':^{2 * col_w}}".rstrip())
    row("zone (P/R)", ["entered", "left", "entered", "left"])
    empty = ZoneScore()
    for zone in sorted(gateway.per_zone.keys() | naive.per_zone.keys()):
        g = gateway.per_zone.get(zone, empty)
        n = naive.per_zone.get(zone, empty)
        row(zone, [_pr(g.entered), _pr(g.left), _pr(n.entered), _pr(n.left)])
    lines.append("")
    row("", ["gateway", "naive"])
    pairs: list[tuple[str, str, str]] = [
        ("precision", _fmt(gateway.precision), _fmt(naive.precision)),
        ("recall", _fmt(gateway.recall), _fmt(naive.recall)),
        ("F1", _fmt(gateway.f1), _fmt(naive.f1)),
        (
            "entry delay median s",
            _fmt(gateway.delay_median_s, ".2f"),
            _fmt(naive.delay_median_s, ".2f"),
        ),
        ("entry delay p95 s", _fmt(gateway.delay_p95_s, ".2f"), _fmt(naive.delay_p95_s, ".2f")),
        (
            "leave delay median s",
            _fmt(gateway.leave_delay_median_s, ".2f"),
            _fmt(naive.leave_delay_median_s, ".2f"),
        ),
        (
            "leave delay p95 s",
            _fmt(gateway.leave_delay_p95_s, ".2f"),
            _fmt(naive.leave_delay_p95_s, ".2f"),
        ),
        ("flaps", str(gateway.flaps), str(naive.flaps)),
        (
            "flaps / shopper-hour",
            _fmt(gateway.flaps_per_shopper_hour, ".2f"),
            _fmt(naive.flaps_per_shopper_hour, ".2f"),
        ),
        ("unexpected shoppers", str(gateway.unexpected_shoppers), str(naive.unexpected_shoppers)),
    ]
    for label, a, b in pairs:
        row(label, [a, b])
    row("flaps vs naive", [_fmt(flaps_vs_naive(gateway, naive), ".3f")])
    return "\n".join(lines) + "\n"
