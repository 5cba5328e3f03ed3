"""The load generator: its plan refuses what it cannot run, and a short run against a real
Mosquitto and a real gateway process delivers node batches, shelf stock, till redemptions and
app sightings the gateway accepts, with a progress line while it runs."""

from __future__ import annotations

import argparse
import asyncio
import json
import queue
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as paho
import pytest

from firmware_sim.load import LoadPlan, add_arguments, plan_from_args, run_load
from gateway.config import Config, load_config
from gateway.errors import LinkError
from gateway.nodes import NodeLimits, parse_batch
from gateway.redemptions import RedemptionLimits, parse_redemption
from gateway.stock import StockLimits, parse_stock
from tests.conftest import EXAMPLE
from tests.support.broker import Broker, free_port
from tests.support.gateway_process import running_gateway
from tests.support.peers import Publisher

PREFIX = "moments/v1/store-1"


def plan(**changes: Any) -> LoadPlan:
    fields: dict[str, Any] = {
        "adverts_per_s": 200.0,
        "sightings_per_s": 10.0,
        "device_msgs_per_s": 10.0,
        "duration_s": 2.5,
        "nodes": 0,
        "shoppers": 5,
        "strangers": 20,
        "seed": 3,
    }
    return LoadPlan(**{**fields, **changes})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"adverts_per_s": -1.0}, "adverts_per_s must be a finite number >= 0"),
        ({"sightings_per_s": float("nan")}, "sightings_per_s must be a finite number >= 0"),
        ({"device_msgs_per_s": float("inf")}, "device_msgs_per_s must be a finite number >= 0"),
        ({"duration_s": 0.0}, "duration_s must be a finite number > 0"),
        ({"batch_s": 0.0}, "batch_s must be from 0.01 to 10 seconds"),
        (
            {"adverts_per_s": 0.0, "sightings_per_s": 0.0, "device_msgs_per_s": 0.0},
            "nothing to send",
        ),
        ({"nodes": -1}, "nodes must be a whole number from 0"),
        ({"shoppers": 70_000}, "shoppers must be a whole number from 0 to 65535"),
        ({"strangers": 1.5}, "strangers must be a whole number"),
        ({"shoppers": 0, "strangers": 0, "sightings_per_s": 0.0}, "needs phones"),
        ({"shoppers": 0}, "sightings_per_s > 0 needs shoppers >= 1"),
        ({"base_url": "https://gw:8443"}, "base_url must be http://"),
    ],
)
def test_the_plan_refuses_what_it_cannot_run(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        plan(**changes)


def test_options_make_a_plan() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        ["--adverts-per-s", "500", "--duration", "30", "--shoppers", "7", "--seed", "9"]
    )
    made = plan_from_args(args)
    assert made == LoadPlan(
        adverts_per_s=500.0,
        sightings_per_s=20.0,
        device_msgs_per_s=5.0,
        duration_s=30.0,
        nodes=0,
        shoppers=7,
        strangers=200,
        batch_s=0.5,
        seed=9,
        base_url="",
    )
    assert made.planned() == {"adverts": 15_000, "sightings": 600, "device_msgs": 150}
    with pytest.raises(ValueError, match="duration_s"):
        plan_from_args(parser.parse_args(["--duration", "-1"]))


async def test_no_broker_is_a_clear_startup_error(tmp_path: Path) -> None:
    port = free_port()
    config = load_config(
        EXAMPLE,
        environ={"MOMENTS_DATA_DIR": str(tmp_path / "var"), "MOMENTS_BROKER__PORT": str(port)},
    )
    with pytest.raises(LinkError, match=f"no broker reachable at 127.0.0.1:{port} within 1 s"):
        await run_load(config, plan(), progress=lambda _line: None, connect_timeout_s=1.0)
    assert not (tmp_path / "var" / "store").exists()  # nothing written without a broker


@dataclass
class RunningGateway:
    config: Config
    base: str


@pytest.fixture
async def gateway(tmp_path: Path, broker: Broker) -> AsyncIterator[RunningGateway]:
    """``moments run`` as a process on the example store, its broker the test's Mosquitto."""
    async with running_gateway(EXAMPLE, tmp_path, broker.port) as (config, base):
        yield RunningGateway(config, base)


async def delivered(watcher: Publisher, count: int) -> list[paho.MQTTMessage]:
    """The messages the watcher received, once ``count`` have (or after 10 s, what came)."""
    out: list[paho.MQTTMessage] = []
    async with asyncio.timeout(10):
        while len(out) < count:
            try:
                out.append(watcher.received.get_nowait())
            except queue.Empty:
                await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)  # and nothing more than was sent comes after
    while not watcher.received.empty():
        out.append(watcher.received.get_nowait())
    return out


def app_adverts(metrics: str) -> float:
    for line in metrics.splitlines():
        if line.startswith('moments_adverts_total{source="app"}'):
            return float(line.split()[-1])
    return 0.0


@pytest.mark.mqtt
async def test_a_short_run_delivers_every_kind_within_the_plan(
    gateway: RunningGateway, broker: Broker
) -> None:
    watcher = Publisher(broker.host, broker.port)
    try:
        for topic in ("nodes/+/adv", "shelves/+/stock", "pos/+/redemptions", "probe"):
            watcher.subscribe(f"{PREFIX}/{topic}")
        # The broker handles a client's packets in order: the probe back means every
        # subscription above is in place.
        watcher.publish(f"{PREFIX}/probe", b"ready")
        assert watcher.next_message().topic == f"{PREFIX}/probe"

        lines: list[str] = []
        the_plan = plan()
        report = await run_load(gateway.config, the_plan, progress=lines.append)
        messages = await delivered(watcher, report.batches + report.device_msgs)
    finally:
        watcher.close()

    planned = the_plan.planned()
    assert planned == {"adverts": 500, "sightings": 25, "device_msgs": 25}
    assert report.errors == {}, report.errors

    # Node batches: each a valid batch from a zone node; every advert sent arrived.
    batches = [
        parse_batch(m.topic.split("/")[-2], bytes(m.payload), NodeLimits())
        for m in messages
        if m.topic.endswith("/adv")
    ]
    assert {b.node for b in batches} <= {"node-entrance", "node-coffee"}
    heard = sum(len(b.adverts) for b in batches)
    assert 1 <= report.adverts <= planned["adverts"]
    assert heard == report.adverts and len(batches) == report.batches

    # Shelf stock and till redemptions, alternately, QoS 1, every one acknowledged.
    stock = [
        parse_stock(m.topic.split("/")[-2], bytes(m.payload), StockLimits())
        for m in messages
        if m.topic.endswith("/stock")
    ]
    redemptions = [
        parse_redemption(bytes(m.payload), RedemptionLimits(), topic_lane=m.topic.split("/")[-2])
        for m in messages
        if m.topic.endswith("/redemptions")
    ]
    assert 1 <= len(stock) == report.stock_msgs
    assert 1 <= len(redemptions) == report.redemptions
    assert report.device_msgs <= planned["device_msgs"]
    assert report.device_acked == report.device_msgs
    assert len({r.receipt for r in redemptions}) == len(redemptions)

    # Sightings: answered 200 and placed (the shoppers consent to presence), and the gateway
    # counted each one.
    assert 1 <= report.sightings <= planned["sightings"]
    assert report.sightings_ok == report.sightings
    assert report.sightings_placed == report.sightings and not report.sightings_dropped
    async with httpx.AsyncClient(base_url=gateway.base, timeout=5) as client:
        metrics = (await client.get("/metrics")).text
    assert app_adverts(metrics) == report.sightings_ok

    # Progress: a line a second, then the last one; the report is one JSON line.
    assert any(line.startswith("load  1.0/2.5 s  adverts ") for line in lines), lines
    assert lines[-1].startswith("load  2.5/2.5 s") and lines[-1].endswith("errors 0")
    final = json.loads(json.dumps(report.as_dict()))
    assert final["sent"]["adverts"] == report.adverts
    assert final["plan"]["planned"] == planned
