"""The staff dashboard (``/staff``) over a real socket and in a real headless Chromium: staff
tokens only, a live stream of JSON, a map whose zone darkens as devices arrive, and door
counts and scanner nodes' own status reaching the stream through the broker."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import msgspec
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from playwright.async_api import Browser, async_playwright

from firmware_sim.adverts import ibeacon
from firmware_sim.floorplan import gateway_config, load_scenario
from firmware_sim.live import run_live
from gateway.config import Config
from gateway.http.staff import StaffBoard
from gateway.learning import in_holdout
from tests.e2e.test_api import EVERYTHING, at_the_coffee_kiosk, bearer, linked_alice
from tests.e2e.test_browser import ARTIFACTS, CHROMIUM_ARGS, chromium_path, contrast
from tests.support.broker import Broker
from tests.support.gateway_process import running_gateway
from tests.support.peers import Publisher, serve

OTHER_UUID = "7d4a5b60-0c1e-4a8e-9d0f-3b2a1c0d9e8f"  # no shopper app's: anonymous devices


def _with_geometry(config: Config) -> Config:
    """The example store with its map: two zones side by side, their nodes, kiosk, beacons."""
    outline = {
        "entrance": [(0.0, 0.0), (10.0, 0.0), (10.0, 8.0), (0.0, 8.0)],
        "coffee": [(10.0, 0.0), (22.0, 0.0), (22.0, 8.0), (10.0, 8.0)],
    }
    zones = [
        msgspec.structs.replace(
            z,
            polygon=outline[z.id],
            node_at={n: (outline[z.id][0][0] + 5.0, 4.0) for n in z.nodes},
        )
        for z in config.zones
    ]
    kiosks = [msgspec.structs.replace(k, at=(18.0, 2.0)) for k in config.kiosks]
    beacons = [
        msgspec.structs.replace(b, at=(outline[b.zone][0][0] + 2.0, 6.0)) for b in config.beacons
    ]
    return msgspec.structs.replace(config, zones=zones, kiosks=kiosks, beacons=beacons)


async def _first_event(response: httpx.Response) -> dict[str, object]:
    event = ""
    async for line in response.aiter_lines():
        if line.startswith("event: "):
            event = line[len("event: ") :]
        elif line.startswith("data: ") and event == "dashboard":
            data: dict[str, object] = json.loads(line[len("data: ") :])
            return data
    raise AssertionError("the stream ended without a dashboard event")


@pytest.mark.mqtt
async def test_staff_pages_need_a_staff_token(
    broker: Broker, make_config: Callable[..., Config]
) -> None:
    async with serve(_with_geometry(make_config(broker.port))) as served:
        client, shoppers = served.client, served.gateway.shoppers
        refused = await client.get("/staff")
        assert refused.status_code == 401
        assert "staff token" in refused.text and refused.headers["content-type"].startswith(
            "text/html"
        )
        assert (await client.get("/staff/stream")).status_code == 401
        shopper, _ = await shoppers.issue("shopper", "shopper-1")
        assert (await client.get(f"/staff?token={shopper}")).status_code == 403
        bearer = {"Authorization": f"Bearer {shopper}"}
        assert (await client.get("/staff/stream", headers=bearer)).status_code == 403

        staff, _ = await shoppers.issue("staff", "sam")
        moved = await client.get(f"/staff?token={staff}")
        assert moved.status_code == 303 and moved.headers["location"] == "/staff"
        cookie = moved.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "path=/staff" in cookie
        page = await client.get("/staff", headers={"Authorization": f"Bearer {staff}"})
        assert page.status_code == 200 and '<html lang="en">' in page.text

        async with client.stream(
            "GET", "/staff/stream", headers={"Authorization": f"Bearer {staff}"}
        ) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            board = await _first_event(stream)
            registry = served.gateway.metrics.registry
            open_streams = {"stream": "staff"}
            assert registry.get_sample_value("moments_sse_clients", open_streams) == 1.0
        assert board["map"] is True and board["store"] == served.gateway.config.store_id
        zones = board["zones"]
        assert isinstance(zones, list) and [z["id"] for z in zones] == ["entrance", "coffee"]


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            await browser.close()


@pytest.mark.browser
@pytest.mark.mqtt
async def test_staff_map_darkens_a_zone_as_devices_arrive(
    broker: Broker,
    publisher: Publisher,
    make_config: Callable[..., Config],
    browser: Browser,
) -> None:
    async with serve(_with_geometry(make_config(broker.port))) as served:
        page = await browser.new_page(viewport={"width": 1280, "height": 800})
        token, _claims = await served.gateway.shoppers.issue("staff", "sam")
        await page.goto(f"{served.base}/staff?token={token}")
        assert page.url == f"{served.base}/staff"  # the token left the address bar
        coffee = page.locator("#map polygon.zone[data-zone='coffee']")
        await coffee.wait_for(timeout=10_000)
        assert await page.locator("#map polygon.zone").count() == 2
        assert await page.locator("html").get_attribute("lang") == "en"
        before = await coffee.get_attribute("fill")
        assert await coffee.get_attribute("data-shade") == "0"

        for i in range(25):  # 25 distinct devices no shopper app owns, in the coffee aisle
            publisher.adverts(
                "node-coffee", ibeacon(OTHER_UUID, 7, i + 1), addr=f"AA:BB:CC:00:00:{i:02X}"
            )
        await page.wait_for_selector(
            "#map polygon.zone[data-zone='coffee'][data-shade='1']", timeout=10_000
        )
        assert await coffee.get_attribute("fill") != before
        entrance = page.locator("#map polygon.zone[data-zone='entrance']")
        assert await entrance.get_attribute("data-shade") == "0"
        visitors = page.locator("#figures dd").first
        assert await visitors.inner_text() == "25"
        colours = await visitors.evaluate(
            "e => [getComputedStyle(e).color, getComputedStyle(e.parentElement).backgroundColor]"
        )
        assert contrast(colours[0], colours[1]) >= 4.5
        tiles = page.locator("#figures div")
        assert await tiles.count() == 6
        assert await tiles.last.locator("dt").inner_text() == "Conversion: shown vs holdout"
        assert await tiles.last.locator("dd").inner_text() == "nothing shown yet"

        ARTIFACTS.mkdir(exist_ok=True)  # kept with the kiosk screenshots (./artifacts)
        shot = ARTIFACTS / "staff-dashboard.png"
        await page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 0


async def _until(
    lines: AsyncIterator[str], done: Callable[[dict[str, Any]], bool], timeout: float = 10.0
) -> dict[str, Any]:
    """The next dashboard event on the stream's ``lines`` for which ``done`` holds."""

    async def read() -> dict[str, Any]:
        event = ""
        async for line in lines:
            if line.startswith("event: "):
                event = line[len("event: ") :]
            elif line.startswith("data: ") and event == "dashboard":
                board: dict[str, Any] = json.loads(line[len("data: ") :])
                if done(board):
                    return board
        raise AssertionError("the stream ended")

    return await asyncio.wait_for(read(), timeout)


def _node(board: dict[str, Any], node: str) -> dict[str, Any]:
    found: dict[str, Any] = next(n for n in board["nodes"] if n["id"] == node)
    return found


@pytest.mark.mqtt
async def test_door_counts_and_a_nodes_will_reach_the_staff_stream(
    broker: Broker, publisher: Publisher, make_config: Callable[..., Config]
) -> None:
    prefix = "moments/v1/store-1"
    async with serve(make_config(broker.port)) as served:
        token, _ = await served.gateway.shoppers.issue("staff", "sam")
        headers = {"Authorization": f"Bearer {token}"}
        async with served.client.stream("GET", "/staff/stream", headers=headers) as response:
            stream = response.aiter_lines()
            first = await _until(stream, lambda _b: True)
            assert first["figures"]["visitors_source"] == "anonymous devices"
            assert _node(first, "node-coffee")["status"] == "unknown"

            # A scanner node with a real will: online, telemetry, then it drops uncleanly.
            node = paho.Client(
                callback_api_version=CallbackAPIVersion.VERSION2,
                client_id="node-coffee",
                protocol=paho.MQTTv5,
            )
            status = f"{prefix}/nodes/node-coffee/status"
            offline = b'{"v": 1, "node": "node-coffee", "state": "offline"}'
            node.will_set(status, offline, qos=1, retain=True)
            node.connect(broker.host, broker.port)
            node.loop_start()
            try:
                online = b'{"v": 1, "node": "node-coffee", "state": "online"}'
                node.publish(status, online, qos=1, retain=True).wait_for_publish(5)
                telemetry = (
                    b'{"v": 1, "node": "node-coffee", "t": 1795378600.5, "heard": 10,'
                    b' "forwarded": 9, "free_heap": 180000, "wifi_rssi": -67}'
                )
                node.publish(f"{prefix}/nodes/node-coffee/telemetry", telemetry).wait_for_publish(5)
                board = await _until(
                    stream, lambda b: _node(b, "node-coffee")["status"] == "online"
                )
                assert _node(board, "node-coffee")["wifi_rssi"] == -67
            finally:
                node.loop_stop()
                sock = node.socket()
                assert sock is not None
                sock.close()  # no DISCONNECT: the broker publishes the will
            await _until(stream, lambda b: _node(b, "node-coffee")["status"] == "offline")

            door = f"{prefix}/doors/door-main/count"
            publisher.publish(door, b'{"v": 1, "door": "door-main", "in": 400, "out": 390}', qos=0)
            publisher.publish(door, b'{"v": 1, "door": "door-main", "in": 407, "out": 391}', qos=0)
            board = await _until(stream, lambda b: b["figures"]["visitors"] == 7)
            figures = board["figures"]
            assert figures["visitors_source"] == "doors"
            assert sum(figures["hourly"]["visitors"]) == 7

        publisher.publish(door, b'{"v": 1, "door": "door-back", "in": 1, "out": 0}', qos=0)
        publisher.publish(door, b"not json", qos=0)
        registry = served.gateway.metrics.registry

        def dropped(reason: str) -> float:
            labels = {"source": "door", "reason": reason}
            return registry.get_sample_value("moments_dropped_total", labels) or 0.0

        for _ in range(50):
            if dropped("door_mismatch") and dropped("bad_json"):
                break
            await asyncio.sleep(0.1)
        assert (dropped("door_mismatch"), dropped("bad_json")) == (1.0, 1.0)
        gateway = served.gateway
        await asyncio.sleep(0.2)  # the dropped ones are counted; nothing more was recorded
        assert gateway.today.figures(gateway.clock.now()).total("door_entries") == 7


@pytest.mark.mqtt
async def test_todays_figures_follow_a_shopper_from_recognition_to_the_till(
    broker: Broker, make_config: Callable[..., Config]
) -> None:
    """Alice is recognised once however often she enters a zone, the offer her app is shown
    counts as shown, and the till's redemption lands on the treatment side of today's
    conversion against the holdout; the stream never carries her id."""
    async with serve(make_config(broker.port)) as served:
        gateway = served.gateway
        shopper, token = await linked_alice(served, EVERYTHING)
        # Every offer keeps a 1 % holdout, which Alice falls outside of: she is shown offers.
        offers_kept = [
            msgspec.structs.replace(o, holdout=0.01) for o in gateway.db.offers() if not o.generic
        ]
        assert not any(in_holdout(shopper, o.campaign or o.offer_id, 0.01) for o in offers_kept)
        await gateway.writer.write(gateway.db.put_op(offers_kept))
        staff, _ = await gateway.shoppers.issue("staff", "sam")
        async with served.client.stream(
            "GET", "/staff/stream", headers={"Authorization": f"Bearer {staff}"}
        ) as response:
            stream = response.aiter_lines()
            first = await _until(stream, lambda _b: True)
            assert first["figures"]["recognised"] == 0 and first["figures"]["offers_shown"] == 0

            await at_the_coffee_kiosk(served, token)
            offers = (await served.client.get("/v1/me/offers", headers=bearer(token))).json()
            offer_id = offers["offers"][0]["offer_id"]
            board = await _until(
                stream,
                lambda b: b["figures"]["recognised"] == 1 and b["figures"]["offers_shown"] >= 1,
            )
            assert board["figures"]["hourly"]["recognised"][-1] == 1
            gateway.moments.forget(shopper)  # she comes back into the aisle: still one
            await at_the_coffee_kiosk(served, token)

            till = {
                "v": 1,
                "lane": "lane-1",
                "offer_id": offer_id,
                "shopper_id": shopper,
                "at": gateway.clock.now(),
                "receipt": "R-1",
            }
            answer = await served.client.post("/v1/redemptions", json=till, headers=bearer(staff))
            assert answer.json() == {"recorded": True, "side": "treatment"}
            board = await _until(stream, lambda b: b["figures"]["redemptions"] == 1)
            figures = board["figures"]
            assert figures["recognised"] == 1
            holdout = figures["holdout"]
            assert holdout["redeemed_shown"] == 1 and holdout["shown"] == figures["offers_shown"]
            assert holdout["treated_rate"] == round(1 / holdout["shown"], 4)
            assert "small" in holdout["warning"] or "exposed" in holdout["warning"]
            assert shopper not in json.dumps(board)


@pytest.mark.mqtt
@pytest.mark.parametrize(("proxies", "secure"), [(["127.0.0.1"], True), (["10.0.0.9"], False)])
async def test_cookies_are_secure_behind_a_trusted_tls_proxy(
    broker: Broker, make_config: Callable[..., Config], proxies: list[str], secure: bool
) -> None:
    """The proxy terminates TLS and says so in X-Forwarded-Proto: believed from a trusted
    proxy (the staff and kiosk cookies are then marked Secure), ignored from anyone else."""
    config = make_config(broker.port)
    config = msgspec.structs.replace(
        config, http=msgspec.structs.replace(config.http, trusted_proxies=proxies)
    )
    async with serve(config) as served:
        shoppers = served.gateway.shoppers
        https = {"X-Forwarded-Proto": "https"}
        staff, _ = await shoppers.issue("staff", "sam")
        kiosk, _ = await shoppers.issue("kiosk", "kiosk-1")
        for path, token in (("/staff", staff), ("/kiosk/kiosk-1", kiosk)):
            moved = await served.client.get(f"{path}?token={token}", headers=https)
            assert moved.status_code == 303, path
            flags = [f.strip().lower() for f in moved.headers["set-cookie"].split(";")]
            assert ("secure" in flags) is secure, (path, flags)


@pytest.mark.browser
@pytest.mark.mqtt
async def test_the_simulated_supermarket_fills_the_staff_map(
    broker: Broker, browser: Browser, tmp_path: Path
) -> None:
    """The supermarket scenario's crowd walks in (its scanner nodes on the broker, its phones
    rotating their addresses) while the dashboard is open in Chromium: zones darken, the
    visitors count climbs, and the scanner nodes come online on the map."""
    scenario = load_scenario("supermarket").with_changes(duration_s=300.0, population__shoppers=80)
    config_file = tmp_path / "moments.toml"
    config_file.write_text(f'store_id = "{scenario.store_id}"\n' + gateway_config(scenario))
    async with running_gateway(config_file, tmp_path, broker.port) as (config, base):
        issue = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway.cli", "token", "issue", "--role", "staff",
            "--subject", "sam", "-c", str(config_file),
            env={**os.environ, "MOMENTS_DATA_DIR": str(config.data_path)},
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        issued, _ = await asyncio.wait_for(issue.communicate(), 60)
        assert issue.returncode == 0
        token = json.loads(issued)["token"]
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        await page.goto(f"{base}/staff?token={token}")
        zones = page.locator("#map polygon.zone")
        await zones.first.wait_for(timeout=10_000)
        assert await zones.count() == len(scenario.zones)
        shades = await zones.evaluate_all("z => z.map(e => Number(e.dataset.shade))")
        assert shades == [0] * len(scenario.zones)

        simulation = asyncio.create_task(
            run_live(config, scenario, speed=10.0, warm_up_s=120.0, progress=lambda _line: None)
        )
        try:
            await page.wait_for_function(
                "() => [...document.querySelectorAll('#map polygon.zone')]"
                ".some(z => Number(z.dataset.shade) >= 0.2)",
                timeout=20_000,
            )
            nodes_online = page.locator("#map .marker.ok[aria-label^='Node ']")
            await nodes_online.first.wait_for(timeout=10_000)
            # The door counter's entries (the scenario has one), once it has counted some.
            await page.wait_for_function(
                "() => Number(document.querySelector('#figures dd').textContent) > 0",
                timeout=20_000,
            )
            source = await page.locator("#figures dt").first.inner_text()
            assert source == "Visitors (doors)"
        finally:
            report = await simulation
        assert report.sent["node_batch"] > 0
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "staff-dashboard-supermarket.png"
        await page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 0


@pytest.mark.mqtt
async def test_a_revoked_staff_token_ends_an_open_stream(
    broker: Broker, make_config: Callable[..., Config], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("gateway.http.staff.RECHECK_S", 1.0)  # the token is checked each second
    async with serve(make_config(broker.port)) as served:
        shoppers = served.gateway.shoppers
        token, _ = await shoppers.issue("staff", "sam")
        headers = {"Authorization": f"Bearer {token}"}
        async with served.client.stream("GET", "/staff/stream", headers=headers) as response:
            lines = response.aiter_lines()
            await _until(lines, lambda _b: True)
            assert await shoppers.revoke_subject("staff", "sam") == 1

            async def drained() -> None:
                async for _line in lines:
                    pass  # keep-alives and updates until the gateway ends the stream

            await asyncio.wait_for(drained(), 10)
        again = await served.client.get("/staff/stream", headers=headers)
        assert again.status_code == 401


@pytest.mark.mqtt
async def test_open_dashboards_share_one_reading_a_second(
    broker: Broker, make_config: Callable[..., Config]
) -> None:
    async with serve(make_config(broker.port)) as served:
        now = [100.0]
        board = StaffBoard(served.gateway, clock=lambda: now[0])
        first = board.current()
        assert board.current() is first  # a second stream in the same second: no new reading
        now[0] += 1.0
        assert board.current() is not first  # the next second reads the gateway again
        assert json.loads(board.current())["store"] == served.gateway.config.store_id
