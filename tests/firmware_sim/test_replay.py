"""Scoring a scenario through the gateway's own sensing: deterministic, better than the naive
baseline, and never places anyone who did not opt in; and the ``moments sim`` commands."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib

import msgspec

from firmware_sim.floorplan import load_scenario
from firmware_sim.replay import replay_config, run_replay
from gateway.config import Config

SMALL = {"duration_s": 300.0, "population__shoppers": 40}


def test_replay_is_deterministic_and_beats_the_naive_baseline() -> None:
    scenario = load_scenario("supermarket").with_changes(**SMALL)
    first = run_replay(scenario)
    again = run_replay(scenario)

    assert first.as_dict() == again.as_dict()
    assert first.tracked > 0 and first.adverts > 0 and first.app_sightings > 0
    assert first.gateway.tp > 0
    assert first.gateway.f1 > first.naive.f1
    assert first.gateway.flaps_per_shopper_hour < first.naive.flaps_per_shopper_hour
    # Shoppers without the app, or who declined, are never placed in a zone.
    assert first.gateway.unexpected_shoppers == 0


def test_another_seed_is_another_store() -> None:
    scenario = load_scenario("supermarket").with_changes(**SMALL)
    other = run_replay(scenario.with_changes(seed=2))
    assert other.as_dict() != run_replay(scenario).as_dict()


def test_replay_config_is_the_scenarios_floor() -> None:
    scenario = load_scenario("supermarket")
    config = replay_config(scenario)
    assert isinstance(config, Config)
    assert config.zone_of_node() == scenario.zone_of_node()
    assert {k.id for k in config.kiosks} == {k.id for k in scenario.kiosks}


def moments(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_sim_score_prints_json() -> None:
    result = moments("sim", "score", "supermarket", "--shoppers", "20", "--duration", "120",
                     "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["shoppers"] == 20
    assert set(out) >= {"gateway", "naive", "flaps_vs_naive", "tracked"}
    assert 0.0 <= out["gateway"]["f1"] <= 1.0


def test_sim_score_prints_a_table() -> None:
    result = moments("sim", "score", "--shoppers", "10", "--duration", "60")
    assert result.returncode == 0, result.stderr
    assert "F1" in result.stdout and "naive" in result.stdout


def test_sim_config_is_a_valid_gateway_configuration() -> None:
    result = moments("sim", "config", "supermarket")
    assert result.returncode == 0, result.stderr
    config = msgspec.convert(tomllib.loads(result.stdout), Config)
    assert len(config.zones) == 9 and len(config.kiosks) == 2


def test_a_bad_scenario_is_a_clear_error(tmp_path: object) -> None:
    result = moments("sim", "score", "no-such-scenario")
    assert result.returncode != 0
    assert "no-such-scenario" in result.stderr and "Traceback" not in result.stderr
