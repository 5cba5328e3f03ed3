"""The foundation's thin path, real at every step: scanner-node messages over a real Mosquitto,
decoding, consent-checked identification, presence, a decision from a real LMDB, Jinja2
rendering, and the kiosk's live stream read over a real socket."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable

import pytest

from beacons.eid import eid_for_time
from firmware_sim.adverts import eddystone_eid, eddystone_tlm
from firmware_sim.scenario import CHLOE_EID_KEY, EID_EXPONENT, demo_records
from gateway.config import Config
from tests.support.broker import Broker
from tests.support.peers import ALICE, BOB, EventStream, Publisher, Served, serve

pytestmark = pytest.mark.mqtt


async def _seed(served: Served) -> None:
    gateway = served.gateway
    await gateway.writer.write(gateway.db.put_op(demo_records(time.time())))


async def _until_link_up(served: Served) -> None:
    async with asyncio.timeout(10):
        while (await served.health())["components"]["broker"]["state"] != "up":
            await asyncio.sleep(0.05)


async def test_opted_in_shopper_gets_personal_offer_live(
    broker: Broker, publisher: Publisher, make_config: Callable[..., Config]
) -> None:
    async with serve(make_config(broker.port)) as served:
        await _seed(served)
        await _until_link_up(served)
        async with served.client.stream(
            "GET", "/kiosk/kiosk-1/events", headers=await served.kiosk_headers()
        ) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            events = EventStream(response)
            first = await events.next_content()
            assert first["personal"] is False

            publisher.adverts("node-coffee", ALICE, rssi=-55)
            view = await events.until(personal=True)
            assert "Espresso beans, 1 kg" in view["html"]
            assert "€12.90" in view["html"] and "€16.90" in view["html"]
            assert "shopper-alice" not in view["html"]

            # The same decision, rendered on request, from fresh store reads.
            offer = await served.client.get(
                "/kiosk/kiosk-1/offer", headers=await served.kiosk_headers()
            )
            assert offer.status_code == 200
            assert offer.headers["x-moments-personal"] == "true"
            assert "Espresso beans" in offer.text

            # Alice walks to the entrance: the kiosk goes back to generic content.
            for _ in range(4):
                publisher.adverts("node-entrance", ALICE, rssi=-50)
            view = await events.until(personal=False)
            assert "Espresso beans" not in view["html"]
            assert "croissants" in view["html"]


async def test_shopper_without_consent_never_sees_own_content(
    broker: Broker, publisher: Publisher, make_config: Callable[..., Config]
) -> None:
    async with serve(make_config(broker.port)) as served:
        await _seed(served)
        await _until_link_up(served)
        before = (await served.client.get("/metrics")).text
        assert 'moments_sightings_total{kind="shopper"} 0.0' in before
        for _ in range(5):
            publisher.adverts("node-coffee", BOB, rssi=-50)
        metrics = await _wait_metric(served, 'moments_sightings_total{kind="anonymous"} 15.0', 15.0)
        assert metrics is not None
        # Bob declined presence: he is only counted anonymously and never placed in a zone.
        assert served.gateway.sensing.zone_of("shopper-bob") is None
        assert (
            'moments_sightings_total{kind="shopper"} 0.0'
            in (await served.client.get("/metrics")).text
        )
        offer = await served.client.get(
            "/kiosk/kiosk-1/offer", headers=await served.kiosk_headers()
        )
        assert offer.headers["x-moments-personal"] == "false"
        assert "Bob" not in offer.text and "Espresso beans" not in offer.text
        page = await served.client.get("/kiosk/kiosk-1", headers=await served.kiosk_headers())
        assert 'data-personal="false"' in page.text


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", "bad_json"),
        (
            b'{"v":1,"node":"node-coffee","seq":1,"ts":1,"adv":[{"rssi":"loud","data":"00"}]}',
            "bad_field",
        ),
        (
            b'{"v":1,"node":"node-coffee","seq":1,"ts":1,"adv":[{"rssi":-50,"data":"0201061"}]}',
            "bad_hex",
        ),
        (
            b'{"v":1,"node":"node-coffee","seq":1,"ts":1,"adv":['
            + b",".join([b'{"rssi":-50,"data":"020106"}'] * 300)
            + b"]}",
            "oversized_batch",
        ),
        (b'{"v":9,"node":"node-coffee","seq":1,"ts":1,"adv":[]}', "unsupported_version"),
        (b'{"v":1,"node":"node-other","seq":1,"ts":1,"adv":[]}', "node_mismatch"),
        (b"x" * 70_000, "oversized_payload"),
    ],
)
async def test_malformed_node_message_is_counted_logged_once_and_survived(
    broker: Broker,
    publisher: Publisher,
    make_config: Callable[..., Config],
    caplog: pytest.LogCaptureFixture,
    payload: bytes,
    reason: str,
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.sensing")
    async with serve(make_config(broker.port)) as served:
        await _seed(served)
        await _until_link_up(served)
        publisher.raw("node-coffee", payload)
        line = f'moments_dropped_total{{reason="{reason}",source="node"}} 1.0'
        assert await _wait_metric(served, line, 10.0) is not None
        records = [r for r in caplog.records if getattr(r, "reason", None) == reason]
        assert len(records) == 1, [r.getMessage() for r in caplog.records]
        assert records[0].exc_info is None  # a reason, not a traceback
        # Still serving, and still sensing: a good message after the bad one goes through.
        publisher.adverts("node-coffee", ALICE, rssi=-55)
        async with asyncio.timeout(10):
            while served.gateway.sensing.zone_of("shopper-alice") != "coffee":
                await asyncio.sleep(0.05)
        assert (await served.health())["components"]["broker"]["state"] == "up"


async def _wait_metric(served: Served, needle: str, timeout: float) -> str | None:
    async with asyncio.timeout(timeout):
        while True:
            text = (await served.client.get("/metrics")).text
            if needle in text:
                return text
            await asyncio.sleep(0.05)


async def test_fixed_beacon_low_battery_shows_in_health_and_as_a_retained_alert(
    broker: Broker, publisher: Publisher, make_config: Callable[..., Config]
) -> None:
    async with serve(make_config(broker.port)) as served:
        await _until_link_up(served)
        publisher.subscribe("moments/v1/store-1/alerts/beacons/#")
        telemetry = eddystone_tlm(2400, 18.5, 1000, 3600.0)
        publisher.adverts("node-coffee", telemetry, rssi=-60, addr="C0:FF:EE:00:00:02")
        async with asyncio.timeout(10):
            while True:
                beacons = (await served.health())["components"]["beacons"]
                if beacons["beacons"]["bcn-coffee"]["condition"] == "low_battery":
                    break
                await asyncio.sleep(0.1)
        assert beacons["state"] == "degraded"
        assert beacons["beacons"]["bcn-coffee"]["battery_mv"] == 2400
        assert beacons["beacons"]["bcn-coffee"]["temperature_c"] == 18.5
        alert = await asyncio.to_thread(publisher.next_message, 10.0)
        assert alert.topic == "moments/v1/store-1/alerts/beacons/bcn-coffee"
        body = json.loads(alert.payload)
        assert (body["condition"], body["battery_mv"], body["zone"]) == (
            "low_battery",
            2400,
            "coffee",
        )


async def test_android_shopper_with_rotating_eid_gets_her_offer(
    broker: Broker, publisher: Publisher, make_config: Callable[..., Config]
) -> None:
    async with serve(make_config(broker.port)) as served:
        await _seed(served)
        await _until_link_up(served)
        async with asyncio.timeout(5):  # the resolvers reload on the next tick
            while "shopper-chloe" not in served.gateway.sensing.identities.eids:
                await asyncio.sleep(0.05)
        async with served.client.stream(
            "GET", "/kiosk/kiosk-1/events", headers=await served.kiosk_headers()
        ) as response:
            events = EventStream(response)
            eid = eid_for_time(CHLOE_EID_KEY, EID_EXPONENT, time.time())
            for _ in range(4):
                publisher.adverts("node-coffee", eddystone_eid(eid), rssi=-52)
            view = await events.until(personal=True)
            assert "Green tea, 20 bags" in view["html"]
            assert "Chloe" not in view["html"]  # she did not ask to be greeted on screens
