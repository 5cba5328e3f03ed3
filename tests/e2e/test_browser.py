"""The kiosk page in a real headless Chromium: it shows generic content, then the opted-in
shopper's offer appears without a reload when she walks up (MQTT -> SSE -> DOM)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.async_api import async_playwright

from firmware_sim.scenario import demo_records
from gateway.config import Config
from tests.support.broker import Broker
from tests.support.peers import ALICE, Publisher, serve

pytestmark = [pytest.mark.browser, pytest.mark.mqtt]

CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    raise RuntimeError("Chromium is not installed: ./scripts/test installs Debian's chromium")


async def test_kiosk_page_updates_live_when_shopper_arrives(
    broker: Broker, publisher: Publisher, make_config: Callable[..., Config], tmp_path: Path
) -> None:
    async with serve(make_config(broker.port)) as served:
        gateway = served.gateway
        await gateway.writer.write(gateway.db.put_op(demo_records(time.time())))
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(
                executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True
            )
            try:
                page = await browser.new_page(viewport={"width": 1280, "height": 720})
                # Set up as a screen is: once with its token, which moves into a cookie.
                token, _claims = await gateway.shoppers.issue("kiosk", "kiosk-1")
                await page.goto(f"{served.base}/kiosk/kiosk-1?token={token}")
                assert page.url == f"{served.base}/kiosk/kiosk-1"  # out of the address bar
                await page.wait_for_selector("#link.link-up", timeout=10_000)
                screen = page.locator("#screen")
                assert await screen.get_attribute("data-personal") == "false"
                assert "Espresso beans" not in await screen.inner_text()
                navigations: list[str] = []
                page.on("framenavigated", lambda frame: navigations.append(frame.url))

                publisher.adverts("node-coffee", ALICE, rssi=-55)
                await page.wait_for_selector("#screen[data-personal='true']", timeout=10_000)
                text = await screen.inner_text()
                assert "Espresso beans, 1 kg" in text
                assert "€12.90" in text and "€16.90" in text
                assert navigations == []  # live update, no reload
                await page.screenshot(path=str(tmp_path / "kiosk-personal.png"))
            finally:
                await browser.close()
