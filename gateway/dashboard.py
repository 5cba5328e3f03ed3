"""The staff dashboard's view model (sans-I/O): what ``/staff`` shows, from one reading of the
gateway's state (:class:`Reading`) and the configuration.

``gateway.http.staff`` reads the gateway once a second into a :class:`Reading` and sends
:func:`build`'s answer to the page when it differs from the last one. Nothing here knows a
shopper's id: the reading already holds only counts per zone and the help desk's staff view,
and :func:`build` keeps of a help request only what staff may see (name, zone, waiting
time, level, who took it).

What is shown
    zones       the outline (when configured), anonymous devices heard there in the last two
                minutes and opted-in shoppers present now; ``shade`` (0 to 1) is their sum
                against the fullest zone (at least :data:`FULL_AT`), for the map's fill
    kiosks      what each screen shows now: an offer's title, or "store news"
    nodes       scanner nodes (:func:`node_status`): ``offline`` when the node's status says
                so (its will), ``online`` when it says online and was heard within
                :data:`NODE_ONLINE_S`, ``silent`` when it says online (or said nothing but
                was heard once) and was not heard since, ``unknown`` when never seen; with the
                Wi-Fi signal of its last telemetry
    beacons     fixed beacons with the fleet's condition (``ok``, ``silent``, ``low_battery``,
                ``never_heard``, ``starting``)
    help        shoppers waiting for staff, longest waiting first
    figures     today's counts: visitors are the door counters' entries today when any door
                counter has counted today, else the distinct anonymous devices heard in the
                store today, each once whatever the zones that heard it (an upper bound:
                phones change their random address; ``visitors_source`` says which);
                opted-in shoppers recognised today, offers shown and redemptions
                (``gateway.today``); conversion against the holdout (:class:`Holdout`):
                redemptions attributed to a showing per offer shown beside redemptions
                attributed to a hold-out per offer held out, today, pooled over the offers
                that keep a holdout (each exposure once per shopper and moment),
                with the relative lift and a warning when the counts are too small to say
                much (``gateway.lift``; an arm's redemptions are capped at its exposures, as
                the lift report caps them, since a redemption may follow a showing of an
                earlier day); ``hourly``, a series per figure from local midnight to now,
                for the sparklines; ``missing`` names the figures this gateway cannot give
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

from gateway.config import Config, Point
from gateway.lift import Arm, lift
from gateway.today import DayFigures

__all__ = [
    "ANONYMOUS_DEVICES",
    "DOORS",
    "FULL_AT",
    "NODE_ONLINE_S",
    "STORE_NEWS",
    "BeaconView",
    "Dashboard",
    "Figures",
    "HelpView",
    "Holdout",
    "KioskTile",
    "NodeView",
    "Reading",
    "ZoneView",
    "build",
    "node_status",
]

NODE_ONLINE_S: Final = 60.0
FULL_AT: Final = 20  # a zone with this many devices (or the fullest zone, if more) is darkest
STORE_NEWS: Final = "store news"
DOORS: Final = "doors"
ANONYMOUS_DEVICES: Final = "anonymous devices"


@dataclass(frozen=True, slots=True)
class Reading:
    """The gateway's state at ``now``, as the dashboard needs it (counts, never ids)."""

    now: float
    anonymous_total: int = 0  # distinct anonymous devices in the store today
    anonymous_hourly: Sequence[int] = ()  # of those, by the local hour first heard
    occupancy: Mapping[str, int] = field(default_factory=dict)  # zone: devices heard just now
    present: Mapping[str, int] = field(default_factory=dict)  # zone: opted-in shoppers now
    showing: Mapping[str, str | None] = field(default_factory=dict)  # kiosk: offer title
    node_last_heard: Mapping[str, float] = field(default_factory=dict)  # node: last message
    node_state: Mapping[str, str] = field(default_factory=dict)  # node: online/offline, said
    node_wifi_rssi: Mapping[str, int | None] = field(default_factory=dict)  # last telemetry
    door_entries: int | None = None  # entries today over every door; None: no door counted
    door_hourly: Sequence[int] = ()  # entries per local hour today, midnight first
    beacons: Mapping[str, str] = field(default_factory=dict)  # beacon: condition
    help: Sequence[Mapping[str, Any]] = ()  # HelpDesk's staff view of each alert
    today: DayFigures | None = None  # today's tallies; None: not readable now
    hour: int = 23  # the local hour of ``now`` (the hourly series end there)


class ZoneView(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    polygon: list[Point]
    anonymous: int
    present: int
    shade: float


class KioskTile(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    zone: str
    at: Point | None
    showing: str


class NodeView(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    zone: str
    at: Point | None
    status: str
    wifi_rssi: int | None = None  # dBm, from the node's last telemetry


class BeaconView(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    zone: str
    at: Point | None
    status: str


class HelpView(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    zone: str | None
    zone_name: str | None
    waiting_s: int
    level: int
    acknowledged_by: str | None


class Holdout(msgspec.Struct, frozen=True, kw_only=True):
    """Today's conversion against the holdout, pooled over the offers."""

    shown: int  # the treatment's exposures: showings of offers that keep a holdout
    redeemed_shown: int  # redemptions attributed to those showings (capped at ``shown``)
    held_out: int  # the control's exposures
    redeemed_held_out: int  # redemptions attributed to a hold-out (capped at ``held_out``)
    treated_rate: float | None  # redeemed_shown / shown
    holdout_rate: float | None  # redeemed_held_out / held_out
    lift: float | None  # (treated - holdout) / holdout; None when undefined
    warning: str | None  # the counts are too small to say much


class Figures(msgspec.Struct, frozen=True, kw_only=True):
    visitors: int  # door entries today, or anonymous devices today over zones
    visitors_source: str  # "doors" or "anonymous devices"
    shoppers_present: int  # opted-in shoppers in a zone now
    recognised: int | None  # opted-in shoppers recognised today
    offers_shown: int | None
    redemptions: int | None  # every redemption today, attributed or not
    holdout: Holdout | None
    hourly: dict[str, list[int]]  # figure: per-hour series today (visitors, recognised, ...)
    missing: list[str]


class Dashboard(msgspec.Struct, frozen=True, kw_only=True):
    v: int
    store: str
    map: bool  # every zone has an outline: draw the map, else a list
    bounds: tuple[float, float, float, float] | None  # min x, min y, max x, max y
    zones: list[ZoneView]
    kiosks: list[KioskTile]
    nodes: list[NodeView]
    beacons: list[BeaconView]
    help: list[HelpView]
    figures: Figures


def build(config: Config, reading: Reading) -> Dashboard:
    """The dashboard for ``reading`` (a pure function: equal inputs, equal answers)."""
    zone_names = {z.id: z.name or z.id for z in config.zones}
    loads = {
        z.id: reading.occupancy.get(z.id, 0) + reading.present.get(z.id, 0) for z in config.zones
    }
    full = max([FULL_AT, *loads.values()])
    zones = [
        ZoneView(
            id=z.id,
            name=zone_names[z.id],
            polygon=list(z.polygon),
            anonymous=reading.occupancy.get(z.id, 0),
            present=reading.present.get(z.id, 0),
            shade=round(loads[z.id] / full, 3),
        )
        for z in config.zones
    ]
    kiosks = [
        KioskTile(
            id=k.id,
            name=k.name or k.id,
            zone=k.zone,
            at=k.at,
            showing=reading.showing.get(k.id) or STORE_NEWS,
        )
        for k in config.kiosks
    ]
    nodes = [
        NodeView(
            id=node,
            zone=z.id,
            at=z.node_at.get(node),
            status=node_status(node, reading),
            wifi_rssi=reading.node_wifi_rssi.get(node),
        )
        for z in config.zones
        for node in z.nodes
    ]
    beacons = [
        BeaconView(id=b.id, zone=b.zone, at=b.at, status=reading.beacons.get(b.id, "starting"))
        for b in config.beacons
    ]
    return Dashboard(
        v=1,
        store=config.store_id,
        map=bool(config.zones) and all(z.polygon for z in config.zones),
        bounds=_bounds(config),
        zones=zones,
        kiosks=kiosks,
        nodes=nodes,
        beacons=beacons,
        help=_help(reading, zone_names),
        figures=_figures(reading),
    )


def node_status(node: str, reading: Reading) -> str:
    """``offline``, ``online``, ``silent`` or ``unknown`` (the rules in the module notes)."""
    said = reading.node_state.get(node)
    if said == "offline":
        return "offline"
    heard = reading.node_last_heard.get(node)
    if heard is not None:
        return "online" if reading.now - heard <= NODE_ONLINE_S else "silent"
    return "silent" if said == "online" else "unknown"  # online by its word, never heard


def _help(reading: Reading, zone_names: Mapping[str, str]) -> list[HelpView]:
    """Only what staff may see of a request: never an id, the shopper's or the alert's."""
    waiting = sorted(reading.help, key=lambda h: float(h["since"]))
    return [
        HelpView(
            name=str(h["name"]),
            zone=h["zone"],
            zone_name=None if h["zone"] is None else zone_names.get(h["zone"], h["zone"]),
            waiting_s=max(0, int(reading.now - float(h["since"]))),
            level=int(h["level"]),
            acknowledged_by=h["acknowledged_by"],
        )
        for h in waiting
    ]


_REDEEMED: Final = ("redeemed:treatment", "redeemed:control", "redeemed:unattributed")


def _figures(reading: Reading) -> Figures:
    missing: list[str] = []
    hourly: dict[str, list[int]] = {}
    doors = reading.door_entries is not None
    hourly["visitors"] = list(reading.door_hourly if doors else reading.anonymous_hourly)
    today = reading.today
    recognised = offers_shown = redemptions = None
    holdout = None
    if today is None:
        missing += ["shoppers recognised today", "offers shown", "redemptions", "holdout"]
    else:
        hours = reading.hour + 1
        recognised = today.total("recognised")
        offers_shown = today.total("shown")
        redemptions = sum(today.total(m) for m in _REDEEMED)
        hourly["recognised"] = list(today.hourly.get("recognised", ()))[:hours]
        hourly["offers_shown"] = list(today.hourly.get("shown", ()))[:hours]
        hourly["redemptions"] = [
            sum(hour) for hour in zip(*(today.hourly.get(m, ()) for m in _REDEEMED), strict=False)
        ][:hours]
        holdout = _holdout(today)
    return Figures(
        visitors=reading.door_entries
        if reading.door_entries is not None
        else reading.anonymous_total,
        visitors_source=DOORS if doors else ANONYMOUS_DEVICES,
        shoppers_present=sum(reading.present.values()),
        recognised=recognised,
        offers_shown=offers_shown,
        redemptions=redemptions,
        holdout=holdout,
        hourly=hourly,
        missing=missing,
    )


def _holdout(today: DayFigures) -> Holdout:
    shown, held_out = today.total("shown_with_holdout"), today.total("held_out")
    treated = Arm(shown, min(shown, today.total("redeemed_with_holdout")))
    control = Arm(held_out, min(held_out, today.total("redeemed:control")))
    result = lift(treated, control)
    return Holdout(
        shown=treated.exposed,
        redeemed_shown=treated.conversions,
        held_out=control.exposed,
        redeemed_held_out=control.conversions,
        treated_rate=_round(result.treat_rate),
        holdout_rate=_round(result.control_rate),
        lift=_round(result.lift),
        warning=result.warning,
    )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _bounds(config: Config) -> tuple[float, float, float, float] | None:
    points = [p for z in config.zones for p in z.polygon]
    if not points:
        return None
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return min(xs), min(ys), max(xs), max(ys)
