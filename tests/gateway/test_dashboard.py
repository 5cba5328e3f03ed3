"""The staff dashboard's view model: counts, statuses and help, from a reading and the config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from firmware_sim.floorplan import gateway_config, load_scenario
from gateway.config import Config, KioskConfig, ZoneConfig, load_config
from gateway.dashboard import (
    ANONYMOUS_DEVICES,
    DOORS,
    FULL_AT,
    NODE_ONLINE_S,
    STORE_NEWS,
    Reading,
    build,
    node_status,
)
from gateway.errors import ConfigError
from gateway.today import METRICS, DayFigures

SQUARE = [(0.0, 0.0), (10.0, 0.0), (10.0, 8.0), (0.0, 8.0)]


def _config(*, geometry: bool = True) -> Config:
    return Config(
        zones=[
            ZoneConfig(
                id="entrance",
                name="Entrance",
                nodes=["node-a"],
                polygon=SQUARE if geometry else [],
                node_at={"node-a": (5.0, 4.0)} if geometry else {},
            ),
            ZoneConfig(
                id="coffee",
                nodes=["node-b"],
                polygon=[(10.0, 0.0), (20.0, 0.0), (20.0, 8.0)] if geometry else [],
            ),
        ],
        kiosks=[KioskConfig(id="kiosk-1", zone="coffee", at=(15.0, 2.0) if geometry else None)],
    )


def test_zones_carry_counts_and_a_shade_against_the_fullest_zone() -> None:
    board = build(
        _config(),
        Reading(now=100.0, anonymous_total=90, occupancy={"coffee": 30}, present={"coffee": 2}),
    )
    entrance, coffee = board.zones
    assert (entrance.anonymous, entrance.present, entrance.shade) == (0, 0, 0.0)
    assert (coffee.anonymous, coffee.present, coffee.shade) == (30, 2, 1.0)
    assert coffee.name == "coffee"  # no name configured: the id
    quiet = build(_config(), Reading(now=100.0, occupancy={"coffee": FULL_AT // 2}))
    assert quiet.zones[1].shade == 0.5  # a quiet store is not painted full


def test_a_store_without_geometry_gets_a_list_not_a_map() -> None:
    assert build(_config(), Reading(now=0.0)).map is True
    assert build(_config(), Reading(now=0.0)).bounds == (0.0, 0.0, 20.0, 8.0)
    plain = build(_config(geometry=False), Reading(now=0.0))
    assert plain.map is False and plain.bounds is None
    assert [z.polygon for z in plain.zones] == [[], []]


def test_kiosks_show_the_offer_title_or_store_news() -> None:
    config = _config()
    assert build(config, Reading(now=0.0)).kiosks[0].showing == STORE_NEWS
    showing = build(config, Reading(now=0.0, showing={"kiosk-1": "Espresso beans"}))
    assert showing.kiosks[0].showing == "Espresso beans"
    assert showing.kiosks[0].at == (15.0, 2.0)


def test_nodes_are_online_when_heard_within_a_minute_else_silent_or_unknown() -> None:
    config = _config()
    unknown = build(config, Reading(now=1000.0))
    assert [(n.id, n.status) for n in unknown.nodes] == [
        ("node-a", "unknown"),
        ("node-b", "unknown"),
    ]
    heard = {"node-a": 1000.0 - NODE_ONLINE_S, "node-b": 1000.0 - NODE_ONLINE_S - 1}
    board = build(config, Reading(now=1000.0, node_last_heard=heard))
    assert [n.status for n in board.nodes] == ["online", "silent"]  # no word from either
    assert board.nodes[0].at == (5.0, 4.0) and board.nodes[1].at is None


@pytest.mark.parametrize(
    ("said", "heard_ago", "status"),
    [
        ("offline", 1.0, "offline"),  # its will: offline, whatever was heard last
        ("offline", None, "offline"),
        ("online", 1.0, "online"),
        ("online", NODE_ONLINE_S, "online"),
        ("online", NODE_ONLINE_S + 1, "silent"),
        ("online", None, "silent"),  # connected, never heard
        (None, None, "unknown"),
    ],
)
def test_node_status_rules(said: str | None, heard_ago: float | None, status: str) -> None:
    reading = Reading(
        now=1000.0,
        node_last_heard={} if heard_ago is None else {"node-a": 1000.0 - heard_ago},
        node_state={} if said is None else {"node-a": said},
    )
    assert node_status("node-a", reading) == status


def test_nodes_carry_the_wifi_signal_of_their_last_telemetry() -> None:
    board = build(_config(), Reading(now=0.0, node_wifi_rssi={"node-a": -71, "node-b": None}))
    assert [n.wifi_rssi for n in board.nodes] == [-71, None]
    assert build(_config(), Reading(now=0.0)).nodes[0].wifi_rssi is None


def test_help_keeps_only_what_staff_may_see_longest_waiting_first() -> None:
    alerts: list[dict[str, Any]] = [
        {
            "alert_id": "0123456789ab",
            "name": "Alice",
            "zone": "coffee",
            "since": 940.0,
            "reason": "asked",
            "level": 1,
            "acknowledged_by": None,
            "acknowledged_at": None,
        },
        {
            "alert_id": "ba9876543210",
            "name": "Bob",
            "zone": None,
            "since": 900.0,
            "reason": "dwell",
            "level": 2,
            "acknowledged_by": "sam",
            "acknowledged_at": 950.0,
        },
    ]
    board = build(_config(), Reading(now=1000.0, help=alerts))
    assert [(h.name, h.zone, h.waiting_s, h.level, h.acknowledged_by) for h in board.help] == [
        ("Bob", None, 100, 2, "sam"),
        ("Alice", "coffee", 60, 1, None),
    ]
    wire = msgspec.json.encode(board)
    assert b"alert_id" not in wire and b"0123456789ab" not in wire


def _day(**totals: dict[int, int]) -> DayFigures:
    """A day of tallies: metric -> {hour: count}."""
    hourly = {
        m: tuple(totals.get(m.replace(":", "_"), {}).get(h, 0) for h in range(24)) for m in METRICS
    }
    return DayFigures("day:2026-11-23", hourly)


def test_figures_sum_the_counts_and_say_what_is_missing() -> None:
    today = _day(
        recognised={9: 3, 10: 2},
        shown={9: 30, 10: 10},
        redeemed_treatment={10: 3},
        redeemed_unattributed={10: 1},
    )
    reading = Reading(
        now=0.0,
        anonymous_total=10,
        anonymous_hourly=[0] * 9 + [6, 4],
        present={"coffee": 2},
        today=today,
        hour=10,
    )
    figures = build(_config(), reading).figures
    assert (figures.visitors, figures.shoppers_present, figures.recognised) == (10, 2, 5)
    assert figures.visitors_source == ANONYMOUS_DEVICES
    assert (figures.offers_shown, figures.redemptions) == (40, 4)
    # one series per figure, from local midnight to the current hour
    assert figures.hourly["recognised"] == [0] * 9 + [3, 2]
    assert figures.hourly["offers_shown"] == [0] * 9 + [30, 10]
    assert figures.hourly["redemptions"] == [0] * 10 + [4]
    assert figures.hourly["visitors"] == [0] * 9 + [6, 4] and figures.missing == []
    none = build(_config(), Reading(now=0.0)).figures
    assert none.recognised is None and none.holdout is None
    assert "offers shown" in none.missing and "holdout" in none.missing


def test_conversion_against_the_holdout_pools_the_offers_and_warns_on_small_counts() -> None:
    today = _day(
        shown={10: 900},  # 500 of them of offers without a holdout: no control, left out
        shown_with_holdout={10: 400},
        redeemed_treatment={10: 90},
        redeemed_with_holdout={10: 40},
        held_out={10: 100},
        redeemed_control={10: 5},
        redeemed_unattributed={10: 7},  # in neither arm
    )
    holdout = build(_config(), Reading(now=0.0, today=today, hour=10)).figures.holdout
    assert holdout is not None
    assert (holdout.shown, holdout.redeemed_shown, holdout.held_out) == (400, 40, 100)
    assert (holdout.treated_rate, holdout.holdout_rate, holdout.lift) == (0.1, 0.05, 1.0)
    assert holdout.warning is None
    small = _day(shown_with_holdout={10: 12}, redeemed_with_holdout={10: 2}, held_out={10: 3})
    few = build(_config(), Reading(now=0.0, today=small, hour=10)).figures.holdout
    assert few is not None and few.lift is None and few.holdout_rate == 0.0
    assert few.warning is not None and "control has 3 exposed" in few.warning


def test_an_arm_never_converts_more_than_it_was_exposed() -> None:
    # Redemptions today may follow showings of an earlier day: capped, as the report caps them.
    today = _day(
        shown_with_holdout={10: 2}, redeemed_with_holdout={10: 5}, redeemed_control={10: 1}
    )
    holdout = build(_config(), Reading(now=0.0, today=today, hour=10)).figures.holdout
    assert holdout is not None
    assert (holdout.redeemed_shown, holdout.treated_rate) == (2, 1.0)
    assert (holdout.held_out, holdout.redeemed_held_out, holdout.holdout_rate) == (0, 0, None)


def test_door_counters_give_the_visitors_and_the_hourly_series_when_they_count() -> None:
    reading = Reading(now=0.0, anonymous_total=10, door_entries=42, door_hourly=[0, 12, 30])
    figures = build(_config(), reading).figures
    assert (figures.visitors, figures.visitors_source) == (42, DOORS)
    assert figures.hourly["visitors"] == [0, 12, 30]
    quiet = build(_config(), Reading(now=0.0, door_entries=0, door_hourly=[0])).figures
    assert (quiet.visitors, quiet.visitors_source) == (0, DOORS)  # a counter at zero counts


def test_equal_readings_give_equal_dashboards() -> None:
    reading = Reading(now=5.0, anonymous_total=1, beacons={"b": "silent"})
    config = _config()
    assert msgspec.json.encode(build(config, reading)) == msgspec.json.encode(
        build(config, reading)
    )


@pytest.mark.parametrize(
    ("geometry", "key"),
    [
        ("polygon = [[0, 0], [1, 0]]", "zones[0].polygon"),
        ("polygon = [[0, 0], [1, 0], [nan, 1]]", "zones[0].polygon[2][0]"),
        ("polygon = [[0, 0], [1, 0], [inf, 1]]", "zones[0].polygon[2][0]"),
        ('node_at = { "node-x" = [1, 2] }', "zones[0].node_at"),
    ],
)
def test_map_geometry_is_checked_when_the_config_is_read(
    tmp_path: Path, geometry: str, key: str
) -> None:
    path = tmp_path / "moments.toml"
    path.write_text(f'[[zones]]\nid = "a"\nnodes = ["node-a"]\n{geometry}\n', encoding="utf-8")
    with pytest.raises(ConfigError) as refused:
        load_config(path, environ={})
    assert refused.value.key == key


def test_sim_config_gives_a_map_ready_store(tmp_path: Path) -> None:
    path = tmp_path / "moments.toml"
    path.write_text(gateway_config(load_scenario("supermarket")), encoding="utf-8")
    config = load_config(path, environ={})
    board = build(config, Reading(now=0.0))
    assert board.map is True
    assert all(k.at is not None for k in board.kiosks)
    assert all(n.at is not None for n in board.nodes)
    assert all(b.at is not None for b in board.beacons)
