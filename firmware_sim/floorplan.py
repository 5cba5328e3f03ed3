"""Scenario files: a store's floor plan, its devices, its radio and its shoppers, in TOML.

A scenario describes one simulated store (``firmware_sim/scenarios/*.toml`` are examples;
``docs/SIMULATOR.md`` is the reference). Coordinates are metres on the floor. Loading checks
the whole file and raises :class:`ScenarioError` naming the file, the key and what was
expected: unknown keys, wrong types, duplicate ids, a polygon that is not one, zones that
overlap, a device outside every zone, a kiosk naming a scanner that does not exist, shares
that do not add up to 1.

:func:`gateway_config` turns a scenario into the zone, kiosk and beacon sections the gateway
needs (``moments sim config`` prints it), so the gateway and the simulation agree on the
store by construction.
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from firmware_sim.geometry import Point, Polygon, inside, polygon_area, polygons_overlap
from gateway.errors import MomentsError
from gateway.store import OfferRecord

__all__ = [
    "SCENARIOS",
    "BeaconSpec",
    "BoxSpec",
    "DoorSpec",
    "KioskSpec",
    "LaneSpec",
    "NodeSpec",
    "PopulationSpec",
    "RadioSpec",
    "Scenario",
    "ScenarioError",
    "ShelfSpec",
    "WallSpec",
    "ZoneSpec",
    "gateway_config",
    "load_scenario",
    "parse_scenario",
]

SCENARIOS = Path(__file__).parent / "scenarios"

_Id = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
_Metres = Annotated[float, msgspec.Meta(ge=-10_000, le=10_000)]
_XY = tuple[_Metres, _Metres]
_Share = Annotated[float, msgspec.Meta(ge=0, le=1)]
_PositiveS = Annotated[float, msgspec.Meta(gt=0, le=86_400 * 7)]
_Dbm = Annotated[float, msgspec.Meta(ge=-127, le=20)]
_Db = Annotated[float, msgspec.Meta(ge=0, le=60)]
_Count256 = Annotated[int, msgspec.Meta(ge=1, le=256)]
_Count20 = Annotated[int, msgspec.Meta(ge=1, le=20)]
_Speed = Annotated[float, msgspec.Meta(gt=0, le=10)]


class ScenarioError(MomentsError):
    """A scenario file is invalid: the message names the file, the key and the expectation."""

    def __init__(self, source: str, key: str, message: str) -> None:
        self.source = source
        self.key = key
        super().__init__(f"{source}: {key}: {message}")


class _Spec(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


class RadioSpec(_Spec, frozen=True, kw_only=True):
    # Log-distance path loss: rssi = tx_at_1m - 10 n log10(d) + shadowing (+ walls).
    path_loss_exponent: Annotated[float, msgspec.Meta(ge=1.0, le=6.0)] = 2.2
    # Shadowing: a Gauss-Markov process per (transmitter, receiver) link with this standard
    # deviation and correlation time (a body turning, a trolley passing), plus independent
    # per-packet fading.
    shadowing_db: _Db = 5.0
    shadowing_tau_s: Annotated[float, msgspec.Meta(ge=0, le=600)] = 0.0
    fading_db: _Db = 0.0
    sensitivity_dbm: _Dbm = -95.0
    # Airtime of one advertising packet (a 31-byte legacy advertisement at 1 Mb/s is about
    # 376 us) and the share of packets a scanner misses anyway (channel hops, Wi-Fi).
    packet_airtime_us: Annotated[float, msgspec.Meta(gt=0, le=10_000)] = 376.0
    base_loss: _Share = 0.05
    # Random advertising delay the Bluetooth specification adds to every interval (0-10 ms).
    adv_delay_max_ms: Annotated[float, msgspec.Meta(ge=0, le=10)] = 10.0


class ZoneSpec(_Spec, frozen=True, kw_only=True):
    id: _Id
    name: str = ""
    polygon: Annotated[list[_XY], msgspec.Meta(min_length=3, max_length=64)]
    # Mean time a shopper spends browsing here (exponentially distributed, at least 10 s).
    dwell_s: _PositiveS = 60.0
    # Relative popularity when shoppers pick the zones of their visit.
    weight: Annotated[float, msgspec.Meta(ge=0, le=1000)] = 1.0
    # Seconds a shopper with staff_assist may stay put here before staff are told.
    help_after_s: _PositiveS = 120.0


class WallSpec(_Spec, frozen=True, kw_only=True):
    start: _XY
    end: _XY
    attenuation_db: _Db = 6.0
    name: str = ""


class NodeSpec(_Spec, frozen=True, kw_only=True):
    id: _Id
    at: _XY
    batch_s: Annotated[float, msgspec.Meta(ge=0.1, le=10)] = 0.5
    telemetry_s: Annotated[float, msgspec.Meta(ge=1, le=3600)] = 30.0
    # Weaker advertisements are not forwarded (saves the store's Wi-Fi).
    min_rssi_dbm: _Dbm = -100.0


class KioskSpec(_Spec, frozen=True, kw_only=True):
    id: _Id
    at: _XY
    name: str = ""
    scanner: str = ""  # a node id: the kiosk's own scanner, for "near the kiosk"


class BeaconSpec(_Spec, frozen=True, kw_only=True):
    id: _Id
    at: _XY
    frame: Literal["ibeacon", "eddystone_uid"] = "ibeacon"
    uuid: str = "2f234454-cf6d-4a0f-adf2-f4911ba9ffa6"
    major: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 1
    minor: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 1
    namespace: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{20}$")] = "00" * 10
    instance: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{12}$")] = "00" * 6
    address: Annotated[str, msgspec.Meta(pattern=r"^([0-9A-F]{2}:){5}[0-9A-F]{2}$")]
    tx_at_1m_dbm: _Dbm = -59.0
    interval_ms: Annotated[float, msgspec.Meta(ge=20, le=10_240)] = 1000.0
    # Every tlm_every-th advertisement is Eddystone-TLM telemetry (0: none).
    tlm_every: Annotated[int, msgspec.Meta(ge=0, le=1000)] = 10
    battery_mv: Annotated[float, msgspec.Meta(ge=0, le=5000)] = 3000.0
    drain_mv_per_h: Annotated[float, msgspec.Meta(ge=0, le=10_000)] = 0.5
    silent_after_s: _PositiveS = 60.0
    low_battery_mv: Annotated[int, msgspec.Meta(ge=0, le=5000)] = 2600

    @property
    def identity(self) -> str:
        if self.frame == "ibeacon":
            return f"ibeacon:{self.uuid}:{self.major}:{self.minor}"
        return f"eddystone_uid:{self.namespace}:{self.instance}"


class BoxSpec(_Spec, frozen=True, kw_only=True):
    """The gateway box itself: its own Bluetooth radio hears what is near it (through the
    emulated BlueZ, ``moments sim run --bluez``). In a zone, it senses that zone; outside
    every zone (a back office), it only watches the store's beacons."""

    at: _XY
    min_rssi_dbm: _Dbm = -100.0


class StockItem(_Spec, frozen=True, kw_only=True):
    sku: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,63}$")]
    qty: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)]


class ShelfSpec(_Spec, frozen=True, kw_only=True):
    id: _Id
    at: _XY
    items: Annotated[list[StockItem], msgspec.Meta(min_length=1, max_length=256)]
    # Chance that a shopper browsing the shelf's zone takes one item of one SKU.
    pick_share: _Share = 0.3
    # Staff refill a SKU to its starting quantity this long after it falls to restock_at.
    restock_at: Annotated[int, msgspec.Meta(ge=0)] = 0
    restock_after_s: _PositiveS = 300.0
    heartbeat_s: _PositiveS = 300.0


class DoorSpec(_Spec, frozen=True, kw_only=True):
    id: _Id
    at: _XY
    report_s: _PositiveS = 10.0


class LaneSpec(_Spec, frozen=True, kw_only=True):
    id: _Id
    at: _XY
    service_s: _PositiveS = 40.0


class PhoneMix(_Spec, frozen=True, kw_only=True):
    android_app: _Share = 0.25  # advertises a rotating Eddystone-EID
    iphone_app: _Share = 0.25  # ranges the store's iBeacons, posts sightings to the API
    no_app: _Share = 0.5  # random, rotating addresses: counted anonymously, never identified


class ConsentMix(_Spec, frozen=True, kw_only=True):
    everything: _Share = 0.7  # every purpose granted
    presence_only: _Share = 0.15  # presence and analytics: counted, never personalised
    nothing: _Share = 0.15  # has the app, declined every purpose


class PopulationSpec(_Spec, frozen=True, kw_only=True):
    shoppers: Annotated[int, msgspec.Meta(ge=0, le=100_000)] = 100
    # Arrivals are a Poisson process spread over the first arrive_within_s of the run (0:
    # the whole run).
    arrive_within_s: Annotated[float, msgspec.Meta(ge=0, le=86_400 * 7)] = 0.0
    zones_per_visit: tuple[_Count256, _Count256] = (1, 3)
    walk_mps: tuple[_Speed, _Speed] = (0.8, 1.4)
    # Places browsed in each zone (the dwell is split between them).
    stops_per_zone: tuple[_Count20, _Count20] = (1, 3)
    pay_share: _Share = 0.8
    phones: PhoneMix = msgspec.field(default_factory=PhoneMix)
    consents: ConsentMix = msgspec.field(default_factory=ConsentMix)
    segments: dict[str, _Share] = msgspec.field(default_factory=dict)
    phone_tx_at_1m_dbm: _Dbm = -59.0
    adv_interval_ms: Annotated[float, msgspec.Meta(ge=20, le=10_240)] = 1000.0
    address_rotation_s: _PositiveS = 900.0
    # iPhones with the app range every second and post what they heard this often.
    app_report_s: Annotated[float, msgspec.Meta(ge=1, le=600)] = 2.0
    # Redemption at the till: for an offer the shopper was shown, and the baseline for
    # everyone else (so lift is measurable against the holdout).
    redeem_shown: _Share = 0.35
    redeem_baseline: _Share = 0.05
    # Shoppers with staff_assist who tap "help" in the app during a visit.
    help_share: _Share = 0.05


class Scenario(_Spec, frozen=True, kw_only=True):
    name: str = "store"
    store_id: _Id = "store-1"
    # Where `moments sim score` starts the simulated clock (seconds since the epoch; 0: a fixed
    # default, 2026-11-23 10:00 UTC). A live run starts at the wall clock.
    start_epoch: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    duration_s: _PositiveS = 1800.0
    seed: int = 1
    radio: RadioSpec = msgspec.field(default_factory=RadioSpec)
    zones: Annotated[list[ZoneSpec], msgspec.Meta(min_length=1, max_length=256)]
    walls: list[WallSpec] = msgspec.field(default_factory=list)
    nodes: Annotated[list[NodeSpec], msgspec.Meta(min_length=1, max_length=256)]
    kiosks: list[KioskSpec] = msgspec.field(default_factory=list)
    beacons: list[BeaconSpec] = msgspec.field(default_factory=list)
    shelves: list[ShelfSpec] = msgspec.field(default_factory=list)
    doors: Annotated[list[DoorSpec], msgspec.Meta(min_length=1, max_length=64)]
    box: BoxSpec | None = None
    lanes: list[LaneSpec] = msgspec.field(default_factory=list)
    population: PopulationSpec = msgspec.field(default_factory=PopulationSpec)
    offers: list[dict[str, Any]] = msgspec.field(default_factory=list)

    def polygon(self, zone: str) -> Polygon:
        for z in self.zones:
            if z.id == zone:
                return tuple((x, y) for x, y in z.polygon)
        raise KeyError(zone)

    def zone_at(self, p: Point) -> str | None:
        for z in self.zones:
            if inside(p, tuple((x, y) for x, y in z.polygon)):
                return z.id
        return None

    def zone_of_node(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for n in self.nodes:
            zone = self.zone_at(n.at)
            if zone is not None:
                out[n.id] = zone
        return out

    def offer_records(self) -> list[OfferRecord]:
        return [msgspec.convert(o, OfferRecord) for o in self.offers]

    def with_changes(self, **changes: Any) -> Scenario:
        """A copy with top-level or ``population``/``radio`` keys changed and checked again."""
        raw = msgspec.to_builtins(self)
        for key, value in changes.items():
            section, _, leaf = key.partition("__")
            if leaf:
                raw[section][leaf] = value
            else:
                raw[key] = value
        return parse_scenario(raw, source=f"{self.name} (changed)")


def load_scenario(path: str | Path) -> Scenario:
    """Read and check a scenario file; a bare name is looked up among the shipped scenarios."""
    p = Path(path)
    if not p.exists() and p.suffix == "" and (SCENARIOS / f"{p.name}.toml").exists():
        p = SCENARIOS / f"{p.name}.toml"
    source = str(p)
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScenarioError(source, "file", f"cannot be read ({exc.strerror or exc})") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ScenarioError(source, "file", f"is not valid TOML ({exc})") from exc
    return parse_scenario(raw, source=source)


def parse_scenario(raw: dict[str, Any], *, source: str = "scenario") -> Scenario:
    try:
        scenario = msgspec.convert(raw, Scenario)
    except msgspec.ValidationError as exc:
        text = str(exc)
        key = "$"
        if " - at `" in text:
            text, _, where = text.rpartition(" - at `")
            key = where.rstrip("`")
        raise ScenarioError(source, key, text) from exc
    _check(scenario, source)
    return scenario


def _check(s: Scenario, source: str) -> None:
    def fail(key: str, message: str) -> None:
        raise ScenarioError(source, key, message)

    for kind, items in (
        ("zones", s.zones),
        ("nodes", s.nodes),
        ("kiosks", s.kiosks),
        ("beacons", s.beacons),
        ("shelves", s.shelves),
        ("doors", s.doors),
        ("lanes", s.lanes),
    ):
        _unique(fail, kind, (item.id for item in items))
    _unique(fail, "beacons[].address", (b.address for b in s.beacons))
    _unique(fail, "beacons[] identity", (b.identity for b in s.beacons))
    polygons: list[tuple[str, Polygon]] = []
    for i, z in enumerate(s.zones):
        poly = tuple((x, y) for x, y in z.polygon)
        if abs(polygon_area(poly)) < 1.0:
            fail(f"zones[{i}].polygon", f"zone {z.id!r} has less than 1 m² of floor")
        for other, other_poly in polygons:
            if polygons_overlap(poly, other_poly):
                fail(f"zones[{i}].polygon", f"zone {z.id!r} overlaps zone {other!r}")
        polygons.append((z.id, poly))
    placed: list[tuple[str, list[tuple[str, Point]]]] = [
        ("nodes", [(n.id, n.at) for n in s.nodes]),
        ("kiosks", [(k.id, k.at) for k in s.kiosks]),
        ("beacons", [(b.id, b.at) for b in s.beacons]),
        ("shelves", [(x.id, x.at) for x in s.shelves]),
        ("doors", [(d.id, d.at) for d in s.doors]),
        ("lanes", [(lane.id, lane.at) for lane in s.lanes]),
    ]
    for kind, where in placed:
        for i, (name, at) in enumerate(where):
            if s.zone_at(at) is None:
                fail(f"{kind}[{i}].at", f"{name!r} at {list(at)} is in no zone")
    nodes = {n.id for n in s.nodes}
    zoned = set(s.zone_of_node().values())
    for i, k in enumerate(s.kiosks):
        if k.scanner and k.scanner not in nodes:
            fail(f"kiosks[{i}].scanner", f"no node {k.scanner!r} (nodes: {sorted(nodes)})")
    for i, z in enumerate(s.zones):
        if z.id not in zoned:
            fail(f"zones[{i}]", f"zone {z.id!r} has no scanner node inside it")
    for i, w in enumerate(s.walls):
        if math.dist(w.start, w.end) < 0.01:
            fail(f"walls[{i}]", "a wall needs two distinct ends")
    pop = s.population
    for key, low_high in (
        ("zones_per_visit", pop.zones_per_visit),
        ("walk_mps", pop.walk_mps),
        ("stops_per_zone", pop.stops_per_zone),
    ):
        low, high = low_high
        if not 0 < low <= high:
            fail(f"population.{key}", f"expected 0 < low <= high, got {list(low_high)}")
    if pop.walk_mps[1] > 3.0:
        fail("population.walk_mps", "shoppers walk, they do not run: at most 3 m/s")
    for key, shares in (
        ("phones", msgspec.to_builtins(pop.phones)),
        ("consents", msgspec.to_builtins(pop.consents)),
    ):
        total = sum(shares.values())
        if abs(total - 1.0) > 1e-6:
            fail(f"population.{key}", f"shares must add up to 1, they add up to {total:g}")
    if pop.pay_share > 0 and not s.lanes:
        fail("lanes", "population.pay_share > 0 needs at least one POS lane")
    for i, offer in enumerate(s.offers):
        try:
            msgspec.convert(offer, OfferRecord)
        except msgspec.ValidationError as exc:
            fail(f"offers[{i}]", f"not a valid offer: {exc}")


def _unique(fail: Any, kind: str, ids: Iterable[str]) -> None:
    seen: set[str] = set()
    for item in ids:
        if item in seen:
            fail(kind, f"{item!r} appears more than once")
        seen.add(item)


def gateway_config(s: Scenario) -> str:
    """The gateway configuration's store sections (TOML) for this scenario's floor, with
    the geometry (zone outlines, node, kiosk and beacon positions) of the staff map."""
    zone_of_node = s.zone_of_node()
    lines = [
        f"# Zones, kiosks and fixed beacons of the simulated store {s.name!r}",
        "# (printed by `moments sim config`; paste below the rest of the configuration).",
        "",
    ]
    for z in s.zones:
        nodes = [n.id for n in s.nodes if zone_of_node.get(n.id) == z.id]
        node_at = ", ".join(f"{_q(n.id)} = {_xy(n.at)}" for n in s.nodes if n.id in nodes)
        lines += [
            "[[zones]]",
            f"id = {_q(z.id)}",
            f"name = {_q(z.name or z.id)}",
            f"nodes = [{', '.join(_q(n) for n in nodes)}]",
            f"polygon = [{', '.join(_xy(p) for p in z.polygon)}]",
            f"node_at = {{ {node_at} }}" if node_at else "node_at = {}",
            "",
        ]
    for k in s.kiosks:
        lines += [
            "[[kiosks]]",
            f"id = {_q(k.id)}",
            f"zone = {_q(s.zone_at(k.at) or '')}",
            f"name = {_q(k.name or k.id)}",
            f"scanner = {_q(k.scanner)}",
            f"at = {_xy(k.at)}",
            "",
        ]
    if s.box is not None:
        lines += [
            "[radio]",
            "# The box's own radio; in a zone it senses that zone, else it watches beacons.",
            f"zone = {_q(s.zone_at(s.box.at) or '')}",
            "",
        ]
    for b in s.beacons:
        lines += [
            "[[beacons]]",
            f"id = {_q(b.id)}",
            f"zone = {_q(s.zone_at(b.at) or '')}",
            f"identity = {_q(b.identity)}",
            f"address = {_q(b.address)}",
            f"silent_after_s = {b.silent_after_s}",
            f"low_battery_mv = {b.low_battery_mv}",
            f"at = {_xy(b.at)}",
            "",
        ]
    return "\n".join(lines)


def _xy(point: tuple[float, float]) -> str:
    """A floor position as the gateway's map reads it: ``[x, y]`` in metres."""
    return f"[{point[0]:g}, {point[1]:g}]"


def _q(text: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's: quotes, backslashes, control codes)."""
    return json.dumps(text)
