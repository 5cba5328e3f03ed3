"""The shoppers of a simulated store: who they are, what phone they carry, where they walk.

Everything is drawn up front from the scenario and a seed (:func:`plan_crowd`), so a run is
the same every time and the ground truth is exact. A visit: arrive through a door (Poisson
arrivals), walk to one to a few zones picked by popularity, browse one to three places in
each (the zone's mean dwell split between them), then, for most, queue at the least busy
till, pay, and leave by a door. Walks are straight lines at the shopper's own pace; walls
only attenuate radio, they do not steer people (the zones are what is scored).

The ground truth (:func:`stays`) is computed from the path exactly: each straight leg is cut
where it crosses a zone's edge, so a stay starts and ends at the instant the shopper crossed.
"""

from __future__ import annotations

import bisect
import math
import random
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Literal

from firmware_sim.floorplan import Scenario
from firmware_sim.geometry import Point, crossings, random_point_in
from firmware_sim.score import Stay

__all__ = ["Knot", "SimShopper", "plan_crowd", "stays"]

PhoneKind = Literal["android_app", "iphone_app", "no_app"]
ConsentKind = Literal["everything", "presence_only", "nothing"]

_NAMES = (
    "Alex", "Billie", "Chen", "Dana", "Eli", "Farah", "Gus", "Hana", "Ivo", "Jo", "Kai",
    "Lena", "Mo", "Nia", "Omar", "Pia", "Quinn", "Rae", "Sam", "Tess", "Uma", "Vic", "Wen",
    "Yara", "Zoe",
)  # fmt: skip
_MIN_DWELL_S = 10.0


@dataclass(frozen=True, slots=True)
class Knot:
    t: float  # seconds since the start of the run
    x: float
    y: float


@dataclass(slots=True)
class SimShopper:
    index: int
    name: str
    phone: PhoneKind
    consent: ConsentKind
    segments: list[str]
    knots: list[Knot]
    lane: str | None = None
    pay_at: float | None = None  # when the sale completes at the till
    help_at: float | None = None  # when they tap "help" in the app
    eid_key: bytes = b""
    _times: list[float] = field(default_factory=list)

    @property
    def shopper_id(self) -> str:
        """The id HQ knows them by (app users only; others are never identified)."""
        return f"sim-{self.index:05d}"

    @property
    def has_app(self) -> bool:
        return self.phone != "no_app"

    @property
    def tracked(self) -> bool:
        """Whether presence may follow them (the app and presence consent)."""
        return self.has_app and self.consent != "nothing"

    @property
    def arrive(self) -> float:
        return self.knots[0].t

    @property
    def leave(self) -> float:
        return self.knots[-1].t

    def position(self, t: float) -> Point | None:
        """Where they are at ``t`` (linear between knots), or None outside their visit."""
        knots = self.knots
        if t < knots[0].t or t > knots[-1].t:
            return None
        if not self._times:
            self._times = [k.t for k in knots]
        i = bisect.bisect_right(self._times, t)
        if i >= len(knots):
            return (knots[-1].x, knots[-1].y)
        a, b = knots[i - 1], knots[i]
        span = b.t - a.t
        f = 0.0 if span <= 0 else (t - a.t) / span
        return (a.x + f * (b.x - a.x), a.y + f * (b.y - a.y))


def plan_crowd(scenario: Scenario, rng: random.Random) -> list[SimShopper]:
    pop = scenario.population
    window = pop.arrive_within_s or scenario.duration_s
    rate = pop.shoppers / window if window > 0 else 0.0
    shoppers: list[SimShopper] = []
    t = 0.0
    for index in range(pop.shoppers):
        t += rng.expovariate(rate) if rate > 0 else 0.0
        shoppers.append(_visit(scenario, rng, index, min(t, window)))
    _queue_at_tills(scenario, rng, shoppers)
    return shoppers


def _pick(rng: random.Random, shares: dict[str, float]) -> str:
    roll = rng.random()
    acc = 0.0
    last = ""
    for key, share in shares.items():
        acc += share
        last = key
        if roll < acc:
            return key
    return last


def _visit(scenario: Scenario, rng: random.Random, index: int, arrive: float) -> SimShopper:
    pop = scenario.population
    phone: PhoneKind = _pick(rng, _shares(pop.phones))  # type: ignore[assignment]
    consent: ConsentKind = _pick(rng, _shares(pop.consents))  # type: ignore[assignment]
    segments = [s for s, share in pop.segments.items() if rng.random() < share]
    speed = rng.uniform(*pop.walk_mps)
    door = rng.choice(scenario.doors)
    knots = [Knot(arrive, *door.at)]
    browsable = [z for z in scenario.zones if z.weight > 0]
    count = min(len(browsable), rng.randint(*pop.zones_per_visit))
    chosen: list[str] = []
    pool = list(browsable)
    for _ in range(count):
        zone = rng.choices(pool, weights=[z.weight for z in pool])[0]
        pool.remove(zone)
        chosen.append(zone.id)
        polygon = scenario.polygon(zone.id)
        dwell = max(_MIN_DWELL_S, rng.expovariate(1.0 / zone.dwell_s))
        stops = rng.randint(*pop.stops_per_zone)
        for _ in range(stops):
            _walk_to(knots, random_point_in(polygon, rng, margin=0.75), speed)
            _stay(knots, dwell / stops)
    shopper = SimShopper(
        index=index,
        name=rng.choice(_NAMES),
        phone=phone,
        consent=consent,
        segments=segments,
        knots=knots,
        eid_key=rng.randbytes(16) if phone == "android_app" else b"",
    )
    if shopper.tracked and consent == "everything" and rng.random() < pop.help_share:
        first, last = knots[1].t, knots[-1].t
        shopper.help_at = rng.uniform(first, last) if last > first else first
    if scenario.lanes and rng.random() < pop.pay_share:
        shopper.lane = ""  # a till is assigned in arrival order (queues depend on everyone)
    else:
        _walk_to(knots, rng.choice(scenario.doors).at, speed)
    return shopper


def _shares(mix: object) -> dict[str, float]:
    return {name: float(getattr(mix, name)) for name in mix.__struct_fields__}  # type: ignore[attr-defined]


def _walk_to(knots: list[Knot], target: Point, speed: float) -> None:
    last = knots[-1]
    distance = math.dist((last.x, last.y), target)
    knots.append(Knot(last.t + distance / speed, target[0], target[1]))


def _stay(knots: list[Knot], seconds: float) -> None:
    last = knots[-1]
    knots.append(Knot(last.t + seconds, last.x, last.y))


def _queue_at_tills(scenario: Scenario, rng: random.Random, shoppers: list[SimShopper]) -> None:
    """First come, first served at the till that frees up first; those waiting stand in a
    line behind it (0.8 m apart), moving up as it shortens."""
    free_at = {lane.id: 0.0 for lane in scenario.lanes}
    spot = {lane.id: lane.at for lane in scenario.lanes}
    service = {lane.id: lane.service_s for lane in scenario.lanes}
    payers = sorted((s for s in shoppers if s.lane == ""), key=lambda s: s.knots[-1].t)
    for shopper in payers:
        speed = _speed_of(shopper)
        lane = min(free_at, key=lambda k: free_at[k])
        x, y = spot[lane]
        waiting_spot = (x + rng.uniform(-0.4, 0.4), y - 1.2 + rng.uniform(-0.3, 0.3))
        _walk_to(shopper.knots, waiting_spot, speed)
        reached = shopper.knots[-1].t
        start = max(reached, free_at[lane])
        if start > reached:
            _stay(shopper.knots, start - reached)
        _walk_to(shopper.knots, (x, y), 1.0)
        pay_at = shopper.knots[-1].t + service[lane] * rng.uniform(0.6, 1.4)
        _stay(shopper.knots, pay_at - shopper.knots[-1].t)
        free_at[lane] = pay_at
        shopper.lane, shopper.pay_at = lane, pay_at
        _walk_to(shopper.knots, rng.choice(scenario.doors).at, speed)


def _speed_of(shopper: SimShopper) -> float:
    """The pace of their first walk (every walk of a shopper uses one pace)."""
    for a, b in pairwise(shopper.knots):
        d = math.dist((a.x, a.y), (b.x, b.y))
        if d > 0 and b.t > a.t:
            return d / (b.t - a.t)
    return 1.0


def stays(scenario: Scenario, shopper: SimShopper, *, until: float) -> list[Stay]:
    """Where the shopper was, zone by zone, up to ``until`` (exact, from the path)."""
    polygons = [(z.id, scenario.polygon(z.id)) for z in scenario.zones]
    pieces: list[tuple[float, float, str | None]] = []
    for a, b in pairwise(shopper.knots):
        if a.t >= until:
            break
        cuts = {0.0, 1.0}
        if (a.x, a.y) != (b.x, b.y):
            for _, polygon in polygons:
                cuts.update(crossings((a.x, a.y), (b.x, b.y), polygon))
        ordered = sorted(cuts)
        for f0, f1 in pairwise(ordered):
            fm = (f0 + f1) / 2.0
            mid = (a.x + fm * (b.x - a.x), a.y + fm * (b.y - a.y))
            t0 = a.t + f0 * (b.t - a.t)
            t1 = min(until, a.t + f1 * (b.t - a.t))
            if t0 < t1:
                pieces.append((t0, t1, scenario.zone_at(mid)))
    out: list[Stay] = []
    current: str | None = None
    start = 0.0
    end = 0.0
    for t0, t1, zone in pieces:
        if zone != current:
            if current is not None:
                out.append(Stay(shopper.shopper_id, current, start, end))
            current, start = zone, t0
        end = t1
    if current is not None:
        still_there = shopper.leave > until
        out.append(Stay(shopper.shopper_id, current, start, None if still_there else end))
    return out
