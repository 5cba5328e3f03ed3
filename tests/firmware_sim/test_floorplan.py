"""Tests of scenario files and the plane geometry under them: the shipped store loads and
agrees with the gateway configuration it prints, every kind of mistake in a scenario is
refused with a message naming the key and the problem, and the geometry answers exactly."""

from __future__ import annotations

import copy
import math
import random
import tomllib
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

import gateway.config
from firmware_sim.floorplan import (
    SCENARIOS,
    Scenario,
    ScenarioError,
    gateway_config,
    load_scenario,
    parse_scenario,
)
from firmware_sim.geometry import (
    Polygon,
    crossings,
    inside,
    polygon_area,
    polygons_overlap,
    random_point_in,
    segments_cross,
)

# Two 10 m x 10 m zones side by side, a scanner node in each, a kiosk, two beacons, a door,
# a till and one offer: the smallest scenario that exercises every check.
BASE: dict[str, Any] = {
    "name": "tiny",
    "store_id": "store-7",
    "zones": [
        {"id": "a", "name": "Zone A", "polygon": [[0, 0], [10, 0], [10, 10], [0, 10]]},
        {"id": "b", "polygon": [[10, 0], [20, 0], [20, 10], [10, 10]]},
    ],
    "nodes": [{"id": "n-a", "at": [5, 5]}, {"id": "n-b", "at": [15, 5]}],
    "kiosks": [{"id": "k1", "at": [5, 6], "scanner": "n-a"}],
    "beacons": [
        {"id": "b1", "at": [5, 4], "address": "AA:BB:CC:DD:EE:01"},
        {"id": "b2", "at": [15, 4], "address": "AA:BB:CC:DD:EE:02", "minor": 2},
    ],
    "doors": [{"id": "door", "at": [1, 1]}],
    "lanes": [{"id": "lane-1", "at": [18, 2]}],
    "offers": [{"offer_id": "o1", "title": "An offer"}],
}


def base() -> dict[str, Any]:
    return copy.deepcopy(BASE)


def refused(raw: dict[str, Any]) -> ScenarioError:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(raw, source="tiny.toml")
    assert str(info.value).startswith("tiny.toml: ")
    return info.value


# ----- the shipped scenario -----


def test_base_scenario_is_valid() -> None:
    s = parse_scenario(base(), source="tiny.toml")
    assert [z.id for z in s.zones] == ["a", "b"]
    assert s.zone_of_node() == {"n-a": "a", "n-b": "b"}


def test_supermarket_loads_by_path_and_by_name() -> None:
    by_name = load_scenario("supermarket")
    by_path = load_scenario(SCENARIOS / "supermarket.toml")
    assert by_name == by_path
    assert by_name.name == "supermarket"
    assert len(by_name.zones) >= 2
    assert by_name.offers


def test_every_node_is_in_exactly_the_zone_the_gateway_is_told() -> None:
    s = load_scenario("supermarket")
    told = gateway.config.Config(
        zones=msgspec.convert(
            tomllib.loads(gateway_config(s))["zones"], list[gateway.config.ZoneConfig]
        )
    ).zone_of_node()
    for node in s.nodes:
        holding = [z.id for z in s.zones if inside(node.at, s.polygon(z.id))]
        assert holding == [told[node.id]], node.id
    assert set(told) == {n.id for n in s.nodes}


@pytest.mark.parametrize("source", ["supermarket", "tiny"])
def test_gateway_config_passes_the_gateway_validation(source: str, tmp_path: Path) -> None:
    s = load_scenario(source) if source == "supermarket" else parse_scenario(base())
    text = gateway_config(s)
    parsed = tomllib.loads(text)
    raw = {"store_id": s.store_id, **parsed}
    config = msgspec.convert(raw, gateway.config.Config)
    # And through the gateway's own loader, cross-reference checks included.
    path = tmp_path / "moments.toml"
    path.write_text(f"store_id = {s.store_id!r}\n\n{text}", encoding="utf-8")
    loaded = gateway.config.load_config(path, environ={})
    assert loaded.zones == config.zones
    assert config.store_id == s.store_id

    zone_of_node = s.zone_of_node()
    assert [z.id for z in config.zones] == [z.id for z in s.zones]
    assert [z.name for z in config.zones] == [z.name or z.id for z in s.zones]
    assert config.zone_of_node() == zone_of_node
    assert [(k.id, k.zone, k.scanner) for k in config.kiosks] == [
        (k.id, s.zone_at(k.at), k.scanner) for k in s.kiosks
    ]
    assert [(b.id, b.zone, b.identity, b.address) for b in config.beacons] == [
        (b.id, s.zone_at(b.at), b.identity, b.address) for b in s.beacons
    ]
    assert [(b.silent_after_s, b.low_battery_mv) for b in config.beacons] == [
        (b.silent_after_s, b.low_battery_mv) for b in s.beacons
    ]


def test_gateway_config_quotes_awkward_names() -> None:
    raw = base()
    raw["zones"][0]["name"] = 'Wine "cellar" \\ spirits'
    s = parse_scenario(raw)
    parsed = tomllib.loads(gateway_config(s))
    assert parsed["zones"][0]["name"] == 'Wine "cellar" \\ spirits'


# ----- what a scenario may not say -----


def test_unknown_key() -> None:
    raw = base()
    raw["zones"][0]["colour"] = "red"
    err = refused(raw)
    assert "zones[0]" in err.key
    assert "colour" in str(err)
    assert "unknown" in str(err).lower()


def test_wrong_type() -> None:
    raw = base()
    raw["zones"][1]["dwell_s"] = "long"
    err = refused(raw)
    assert "zones[1].dwell_s" in err.key
    assert "float" in str(err) and "str" in str(err)


def test_polygon_with_two_points() -> None:
    raw = base()
    raw["zones"][0]["polygon"] = [[0, 0], [10, 0]]
    err = refused(raw)
    assert "zones[0].polygon" in err.key
    assert "length >= 3" in str(err)


def test_zero_area_polygon() -> None:
    raw = base()
    raw["zones"][1]["polygon"] = [[10, 0], [15, 0], [20, 0]]
    err = refused(raw)
    assert err.key == "zones[1].polygon"
    assert "less than 1 m²" in str(err)


def test_overlapping_zones() -> None:
    raw = base()
    raw["zones"][1]["polygon"] = [[8, 1], [20, 1], [20, 9], [8, 9]]
    err = refused(raw)
    assert err.key == "zones[1].polygon"
    assert "overlaps zone 'a'" in str(err)


def test_node_outside_every_zone() -> None:
    raw = base()
    raw["nodes"].append({"id": "n-far", "at": [50, 50]})
    err = refused(raw)
    assert err.key == "nodes[2].at"
    assert "'n-far'" in str(err) and "in no zone" in str(err)


def test_kiosk_naming_an_unknown_scanner() -> None:
    raw = base()
    raw["kiosks"][0]["scanner"] = "n-zz"
    err = refused(raw)
    assert err.key == "kiosks[0].scanner"
    assert "no node 'n-zz'" in str(err)


def test_zone_with_no_node() -> None:
    raw = base()
    raw["zones"].append({"id": "c", "polygon": [[20, 0], [30, 0], [30, 10], [20, 10]]})
    err = refused(raw)
    assert err.key == "zones[2]"
    assert "'c'" in str(err) and "no scanner node" in str(err)


@pytest.mark.parametrize("kind", ["zones", "nodes", "kiosks", "beacons", "doors", "lanes"])
def test_duplicate_ids(kind: str) -> None:
    raw = base()
    twin = copy.deepcopy(raw[kind][0])
    if kind == "zones":
        twin["polygon"] = [[0, 10], [10, 10], [10, 20], [0, 20]]
        raw["nodes"].append({"id": "n-c", "at": [5, 15]})
    if kind == "beacons":
        twin["address"] = "AA:BB:CC:DD:EE:09"
        twin["minor"] = 9
    raw[kind].append(twin)
    err = refused(raw)
    assert err.key == kind
    assert f"{twin['id']!r} appears more than once" in str(err)


def test_duplicate_beacon_addresses() -> None:
    raw = base()
    raw["beacons"][1]["address"] = raw["beacons"][0]["address"]
    err = refused(raw)
    assert err.key == "beacons[].address"
    assert "'AA:BB:CC:DD:EE:01' appears more than once" in str(err)


def test_duplicate_beacon_identities() -> None:
    raw = base()
    raw["beacons"][1]["minor"] = 1
    err = refused(raw)
    assert err.key == "beacons[] identity"
    assert "appears more than once" in str(err)


def test_phone_shares_not_adding_to_one() -> None:
    raw = base()
    raw["population"] = {"phones": {"android_app": 0.5, "iphone_app": 0.5, "no_app": 0.5}}
    err = refused(raw)
    assert err.key == "population.phones"
    assert "add up to 1" in str(err) and "1.5" in str(err)


def test_consent_shares_not_adding_to_one() -> None:
    raw = base()
    raw["population"] = {"consents": {"everything": 0.2, "presence_only": 0.2, "nothing": 0.2}}
    err = refused(raw)
    assert err.key == "population.consents"
    assert "add up to 1" in str(err)


def test_walk_speed_low_above_high() -> None:
    raw = base()
    raw["population"] = {"walk_mps": [1.4, 0.8]}
    err = refused(raw)
    assert err.key == "population.walk_mps"
    assert "low <= high" in str(err)


def test_paying_shoppers_need_a_lane() -> None:
    raw = base()
    del raw["lanes"]
    raw["population"] = {"pay_share": 0.5}
    err = refused(raw)
    assert err.key == "lanes"
    assert "pay_share" in str(err) and "POS lane" in str(err)
    raw["population"] = {"pay_share": 0.0}
    parse_scenario(raw)  # nobody pays: no lane needed


def test_invalid_offer() -> None:
    raw = base()
    raw["offers"].append({"offer_id": "o2"})  # no title
    err = refused(raw)
    assert err.key == "offers[1]"
    assert "not a valid offer" in str(err) and "title" in str(err)


def test_file_that_is_not_toml(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("zones = [\n", encoding="utf-8")
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert info.value.source == str(path)
    assert info.value.key == "file"
    assert "not valid TOML" in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert str(path) in str(info.value)
    assert info.value.key == "file"
    assert "cannot be read" in str(info.value)


def test_unknown_bare_name() -> None:
    with pytest.raises(ScenarioError) as info:
        load_scenario("no-such-store")
    assert "no-such-store" in str(info.value)
    assert "cannot be read" in str(info.value)


# ----- changes -----


def test_with_changes_changes_and_checks_again() -> None:
    s = load_scenario("supermarket")
    small = s.with_changes(population__shoppers=5, duration_s=60)
    assert isinstance(small, Scenario)
    assert small.population.shoppers == 5
    assert small.duration_s == 60
    assert small.zones == s.zones
    assert small.population.phones == s.population.phones
    assert s.population.shoppers != 5  # the original is untouched
    with pytest.raises(ScenarioError) as info:
        s.with_changes(population__walk_mps=[1.2, 0.9])
    assert info.value.key == "population.walk_mps"
    assert "(changed)" in info.value.source
    with pytest.raises(ScenarioError) as info:
        s.with_changes(radio__shadowing_db=-1)
    assert "radio.shadowing_db" in info.value.key


# ----- geometry -----

SQUARE: Polygon = ((0.0, 0.0), (10.0, 0.0), (10.0, 10.0), (0.0, 10.0))
# An L: the 2 x 2 square without its upper right quarter.
ELL: Polygon = ((0.0, 0.0), (2.0, 0.0), (2.0, 1.0), (1.0, 1.0), (1.0, 2.0), (0.0, 2.0))


def test_inside_square() -> None:
    assert inside((5, 5), SQUARE)
    assert inside((0.01, 9.99), SQUARE)
    assert not inside((-0.01, 5), SQUARE)
    assert not inside((5, 10.01), SQUARE)
    assert not inside((11, 11), SQUARE)


def test_inside_ell() -> None:
    assert inside((0.5, 0.5), ELL)
    assert inside((1.5, 0.5), ELL)
    assert inside((0.5, 1.5), ELL)
    assert not inside((1.5, 1.5), ELL)  # the missing quarter
    assert not inside((2.5, 0.5), ELL)
    assert polygon_area(ELL) == pytest.approx(3.0)
    assert polygon_area(tuple(reversed(ELL))) == pytest.approx(-3.0)


def test_crossings_fractions() -> None:
    # From x = -1 to x = 3 at y = 5: in at x = 0, a quarter of the way; it ends inside.
    assert crossings((-1, 5), (3, 5), SQUARE) == [pytest.approx(0.25)]
    # Right across: in at x = 0 and out at x = 10 of a walk from -10 to 30.
    assert sorted(crossings((-10, 5), (30, 5), SQUARE)) == [
        pytest.approx(0.25),
        pytest.approx(0.5),
    ]
    # Through the L's notch: enters at y = 0, leaves at y = 1 (the notch), walk 0 -> 4 at x 1.5.
    assert sorted(crossings((1.5, -1), (1.5, 3), ELL)) == [
        pytest.approx(0.25),
        pytest.approx(0.5),
    ]
    assert crossings((2, 2), (8, 8), SQUARE) == []  # wholly inside
    assert crossings((20, 0), (20, 10), SQUARE) == []  # wholly outside


def test_segments_cross() -> None:
    assert segments_cross((0, 0), (2, 2), (0, 2), (2, 0))
    assert not segments_cross((0, 0), (1, 1), (1, 1), (2, 0))  # touching at an end
    assert not segments_cross((0, 0), (2, 0), (0, 1), (2, 1))  # parallel
    assert not segments_cross((0, 0), (1, 0), (2, -1), (2, 1))  # would cross if longer


def _rect(x0: float, y0: float, x1: float, y1: float) -> Polygon:
    return ((x0, y0), (x1, y0), (x1, y1), (x0, y1))


@pytest.mark.parametrize(
    ("p", "q", "expected"),
    [
        (_rect(0, 0, 10, 10), _rect(5, 5, 15, 15), True),  # corners overlap
        (_rect(0, 0, 10, 10), _rect(10, 0, 20, 10), False),  # a shared edge
        (_rect(0, 0, 10, 10), _rect(10, 10, 20, 20), False),  # a shared corner
        (_rect(0, 0, 10, 10), _rect(2, 10, 4, 12), False),  # part of an edge
        (_rect(0, 0, 10, 10), _rect(2, 2, 4, 4), True),  # nested
        (_rect(2, 2, 4, 4), _rect(0, 0, 10, 10), True),  # nested, the other way
        (_rect(0, 0, 10, 10), _rect(0, 0, 10, 10), True),  # the same
        (_rect(0, 0, 10, 10), _rect(0, 0, 10, 5), True),  # nested on shared edges
        (_rect(0, 0, 10, 10), _rect(20, 0, 30, 10), False),  # apart
        (_rect(0, 0, 10, 10), _rect(4, -5, 6, 15), True),  # a bar through, no corner inside
        (ELL, _rect(1.2, 1.2, 3, 3), False),  # in the L's notch
        (ELL, _rect(0.5, 0.5, 3, 3), True),
    ],
)
def test_polygons_overlap(p: Polygon, q: Polygon, expected: bool) -> None:
    assert polygons_overlap(p, q) is expected
    assert polygons_overlap(q, p) is expected


def test_polygons_overlap_aligned_rows() -> None:
    # [0,10]x[0,10] and [0,10]x[8,18] share 20 m² of floor.
    assert polygons_overlap(_rect(0, 0, 10, 10), _rect(0, 8, 10, 18))


def test_overlapping_aligned_zones_are_refused() -> None:
    # Zone b's left side typed as 8 instead of 10: 20 m² of zone a belong to both.
    raw = base()
    raw["zones"][1]["polygon"] = [[8, 0], [20, 0], [20, 10], [8, 10]]
    err = refused(raw)
    assert "overlaps zone 'a'" in str(err)


def _distance_to_edges(p: tuple[float, float], polygon: Polygon) -> float:
    best = math.inf
    for (ax, ay), (bx, by) in zip(polygon, polygon[1:] + polygon[:1], strict=True):
        ex, ey = bx - ax, by - ay
        f = max(0.0, min(1.0, ((p[0] - ax) * ex + (p[1] - ay) * ey) / (ex * ex + ey * ey)))
        best = min(best, math.dist(p, (ax + f * ex, ay + f * ey)))
    return best


@given(seed=st.integers(0, 2**32 - 1), margin=st.sampled_from([0.0, 0.1, 0.3]))
def test_random_point_in_stays_inside_with_margin(seed: int, margin: float) -> None:
    rng = random.Random(seed)
    for polygon in (SQUARE, ELL, _rect(0, 0, 13, 9)):
        for _ in range(5):
            p = random_point_in(polygon, rng, margin=margin)
            assert inside(p, polygon)
            assert _distance_to_edges(p, polygon) >= margin - 1e-9


@given(seed=st.integers(0, 2**32 - 1))
def test_random_point_in_a_large_zone_keeps_the_walking_margin(seed: int) -> None:
    rng = random.Random(seed)
    polygon = _rect(13, 0, 27, 9)
    p = random_point_in(polygon, rng, margin=0.75)
    assert inside(p, polygon)
    assert _distance_to_edges(p, polygon) >= 0.75


def test_names_with_quotes_and_line_breaks_stay_valid_gateway_toml() -> None:
    raw = base()
    raw["zones"][0]["name"] = 'Fruit "&"\nveg \\ more'
    scenario = parse_scenario(raw)
    parsed = tomllib.loads(gateway_config(scenario))
    assert parsed["zones"][0]["name"] == 'Fruit "&"\nveg \\ more'


def test_unbounded_crowd_ranges_are_refused() -> None:
    raw = base()
    raw["population"] = {"stops_per_zone": [1, 1_000_000_000]}
    err = refused(raw)
    assert "stops_per_zone" in str(err)
