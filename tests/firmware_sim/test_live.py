"""The simulated supermarket against a real gateway process and a real Mosquitto: scanner
nodes announce themselves and publish batches and telemetry, shelves, the door and the tills
publish, iPhone apps post sightings over HTTP, and the gateway places the opted-in shoppers in
zones and decides for them, while everyone else stays anonymous."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from firmware_sim.bluez import FakeBlueZ, PrivateBus
from firmware_sim.floorplan import gateway_config, load_scenario
from firmware_sim.live import run_live
from gateway.config import Config
from tests.support.broker import Broker
from tests.support.gateway_process import running_gateway
from tests.support.peers import Publisher

PREFIX = "moments/v1/store-1"


def metric(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.fixture
async def gateway(tmp_path: Path, broker: Broker) -> AsyncIterator[tuple[Config, str]]:
    scenario = load_scenario("supermarket")
    config_file = tmp_path / "moments.toml"
    config_file.write_text(f'store_id = "{scenario.store_id}"\n' + gateway_config(scenario))
    async with running_gateway(config_file, tmp_path, broker.port) as running:
        yield running


async def test_the_simulated_store_runs_against_a_gateway(
    gateway: tuple[Config, str], broker: Broker, tmp_path: Path
) -> None:
    config, base = gateway
    scenario = load_scenario("supermarket").with_changes(
        duration_s=480.0, population__shoppers=60, population__help_share=1.0
    )
    watcher = Publisher("127.0.0.1", broker.port)
    watcher.subscribe(f"{PREFIX}/nodes/+/status")
    lines: list[str] = []
    truth = tmp_path / "truth.jsonl"
    try:
        report = await run_live(
            config, scenario, speed=20.0, warm_up_s=240.0, truth_path=truth,
            progress=lines.append,
        )  # fmt: skip
        await asyncio.sleep(0.3)
        statuses = []
        while not watcher.received.empty():
            statuses.append(json.loads(watcher.received.get_nowait().payload))
    finally:
        watcher.close()

    sent = report.sent
    for kind in ("node_batch", "telemetry", "stock", "door_count", "app_sightings"):
        assert sent[kind] > 0, (kind, report.as_dict())
    assert not [k for k in report.errors if "link_down" in k or "http_5" in k], report.errors
    assert lines and lines[-1].startswith("sim")
    nodes = {n.id for n in scenario.nodes}
    assert {s["node"] for s in statuses if s["state"] == "online"} == nodes
    assert {s["node"] for s in statuses if s["state"] == "offline"} == nodes  # clean stop
    stays = [json.loads(line) for line in truth.read_text().splitlines()]
    assert stays and all(s["shopper"].startswith("sim-") for s in stays)

    async with httpx.AsyncClient(base_url=base, timeout=5) as client:
        text = (await client.get("/metrics")).text
    assert metric(text, 'moments_presence_events_total{kind="entered"}') > 0
    assert metric(text, 'moments_sightings_total{kind="anonymous"}') > 0
    assert metric(text, 'moments_adverts_total{source="app"}') > 0
    assert metric(text, 'moments_decisions_total{kind="personal"}') > 0
    # The simulated door counter and nodes speak the protocol: nothing of theirs is dropped.
    mine = ('source="door"', 'reason="node_mismatch"', 'reason="too_many_nodes"')
    assert not [
        line
        for line in text.splitlines()
        if "moments_dropped_total{" in line
        and any(m in line for m in mine)
        and not line.endswith(" 0.0")
    ]


async def test_the_boxs_own_radio_hears_the_store_through_the_emulated_bluez(
    tmp_path: Path, broker: Broker
) -> None:
    scenario = load_scenario("supermarket").with_changes(duration_s=120.0, population__shoppers=10)
    config_file = tmp_path / "moments.toml"
    config_file.write_text(f'store_id = "{scenario.store_id}"\n' + gateway_config(scenario))
    with PrivateBus() as address:
        async with FakeBlueZ(address) as bluez:
            env = {"MOMENTS_RADIO__ENABLED": "true", "DBUS_SYSTEM_BUS_ADDRESS": address}
            async with running_gateway(config_file, tmp_path, broker.port, env=env) as (
                config,
                base,
            ):
                async with asyncio.timeout(20):
                    while not bluez.discovering:  # the gateway's bleak scanner is up
                        await asyncio.sleep(0.1)
                report = await run_live(
                    config, scenario, speed=20.0, bluez=bluez, progress=lambda _line: None
                )
                async with httpx.AsyncClient(base_url=base, timeout=5) as client:
                    text = (await client.get("/metrics")).text
                    health = (await client.get("/healthz")).json()
    assert report.sent["radio"] > 0
    assert metric(text, 'moments_adverts_total{source="radio"}') > 0
    # The box stands in the back office: it watches the store's beacons, places nobody.
    assert metric(text, 'moments_sightings_total{kind="fixed_beacon"}') > 0
    assert health["components"]["radio"]["state"] == "scanning"
