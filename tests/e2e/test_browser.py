"""The kiosk page in a real headless Chromium: it shows generic content, then the opted-in
shopper's offer appears without a reload when she walks up (MQTT -> SSE -> DOM); both screens
are readable (language, contrast, sizes, no overflow, portrait and landscape) and kept as
screenshots in ``artifacts/``; and the page follows a gateway that restarts."""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, Route, async_playwright

from firmware_sim.scenario import demo_records
from gateway.config import Config
from gateway.render import Renderer, templates_dir
from tests.support.broker import Broker
from tests.support.peers import ALICE, Publisher, serve

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"

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
LANDSCAPE = {"width": 1280, "height": 720}
PORTRAIT = {"width": 720, "height": 1280}

# What the page shows, read from the browser: every element with text of its own, with its
# computed colour, the first opaque background behind it, and its font size.
READ_SCREEN = """() => {
  const opaque = (el) => {
    for (let e = el; e; e = e.parentElement) {
      const bg = getComputedStyle(e).backgroundColor;
      if (!/^rgba\\(.*,\\s*0\\)$/.test(bg) && bg !== "transparent") return bg;
    }
    return "rgb(255, 255, 255)";
  };
  const texts = [];
  for (const el of document.querySelectorAll("body *")) {
    const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    const style = getComputedStyle(el);
    if (!own || style.display === "none" || style.visibility === "hidden") continue;
    texts.push({
      text: el.textContent.trim().slice(0, 40),
      selector: el.tagName.toLowerCase() + "." + [...el.classList].join("."),
      color: style.color,
      background: opaque(el),
      fontSize: parseFloat(style.fontSize),
    });
  }
  const title = document.querySelector(".title");
  const amount = document.querySelector(".price .now .amount");
  return {
    lang: document.documentElement.getAttribute("lang"),
    titleSize: title ? parseFloat(getComputedStyle(title).fontSize) : 0,
    price: amount ? {color: getComputedStyle(amount).color, background: opaque(amount)} : null,
    overflowX: document.documentElement.scrollWidth > window.innerWidth,
    overflowY: document.documentElement.scrollHeight > window.innerHeight,
    texts,
  };
}"""

pytestmark = [pytest.mark.browser]


def chromium_path() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    raise RuntimeError("Chromium is not installed: ./scripts/test installs Debian's chromium")


def _rgb(css: str) -> tuple[float, float, float]:
    r, g, b = (float(x) for x in re.findall(r"[\d.]+", css)[:3])
    return r, g, b


def contrast(foreground: str, background: str) -> float:
    """The WCAG 2 contrast ratio of two computed CSS colours."""

    def luminance(css: str) -> float:
        def channel(c: float) -> float:
            c /= 255
            return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

        r, g, b = _rgb(css)
        return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b)

    high, low = sorted((luminance(foreground), luminance(background)), reverse=True)
    return (high + 0.05) / (low + 0.05)


async def check_readable(page: Page, *, price: bool, title_px: float = 32) -> dict[str, Any]:
    """The accessibility facts every screen must hold, read from the real page."""
    facts: dict[str, Any] = await page.evaluate(READ_SCREEN)
    assert facts["lang"], "the page must say its language"
    assert facts["titleSize"] >= title_px, facts["titleSize"]
    assert not facts["overflowX"] and not facts["overflowY"], "the screen must fit, no scrolling"
    low = [
        (t["selector"], t["text"], round(contrast(t["color"], t["background"]), 2))
        for t in facts["texts"]
        if contrast(t["color"], t["background"]) < 4.5
    ]
    assert low == [], f"text below 4.5:1 contrast: {low}"
    if price:
        assert facts["price"] is not None, "no price on the screen"
        assert contrast(facts["price"]["color"], facts["price"]["background"]) >= 4.5
    return facts


async def keep(page: Page, name: str) -> None:
    """A screenshot of the page, kept as a test artifact."""
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / name))


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


@pytest.mark.mqtt
async def test_kiosk_page_updates_live_when_shopper_arrives(
    broker: Broker, publisher: Publisher, make_config: Callable[..., Config], browser: Browser
) -> None:
    async with serve(make_config(broker.port)) as served:
        gateway = served.gateway
        await gateway.writer.write(gateway.db.put_op(demo_records(time.time())))
        page = await browser.new_page(viewport=LANDSCAPE, reduced_motion="reduce")
        # Set up as a screen is: once with its token, which moves into a cookie.
        token, _claims = await gateway.shoppers.issue("kiosk", "kiosk-1")
        await page.goto(f"{served.base}/kiosk/kiosk-1?token={token}")
        assert page.url == f"{served.base}/kiosk/kiosk-1"  # out of the address bar
        await page.wait_for_selector("#link.link-up", timeout=10_000)
        screen = page.locator("#screen")
        assert await screen.get_attribute("data-personal") == "false"
        assert "Espresso beans" not in await screen.inner_text()
        await check_readable(page, price=False)
        await keep(page, "kiosk-generic.png")
        navigations: list[str] = []
        page.on("framenavigated", lambda frame: navigations.append(frame.url))

        publisher.adverts("node-coffee", ALICE, rssi=-55)
        await page.wait_for_selector("#screen[data-personal='true']", timeout=10_000)
        text = await screen.inner_text()
        assert "Espresso beans, 1 kg" in text
        assert "€12.90" in text and "€16.90" in text
        assert navigations == []  # live update, no reload
        struck = page.locator("#screen .price .was s")
        assert await struck.inner_text() == "€16.90"
        assert await struck.evaluate("e => getComputedStyle(e).textDecorationLine") == (
            "line-through"
        )
        await check_readable(page, price=True)
        await keep(page, "kiosk-personal.png")

        await page.set_viewport_size(PORTRAIT)
        await check_readable(page, price=True)
        await keep(page, "kiosk-personal-portrait.png")


async def test_phone_card_is_readable_on_a_phone(browser: Browser) -> None:
    card = Renderer().render_card(
        "offer",
        "phone",
        offer_id="green-tea",
        title="Green tea, 20 bags",
        body="First flush sencha, for tea lovers.",
        price=350,
        regular_price=490,
        locale="fr",
        greeting="Chloe",
        store_name="Moments Market",
        social_proof="12 personnes l'ont pris aujourd'hui",
    )
    css = (templates_dir() / "static" / "card.css").read_text(encoding="utf-8")
    page = await browser.new_page(viewport={"width": 390, "height": 844})
    await page.set_content(
        f'<!doctype html><html lang="fr"><meta charset="utf-8"><style>{css}</style>'
        f'<body style="margin:0;padding:12px;background:#f3f1ec">{card}</body></html>'
    )

    facts = await check_readable(page, price=True, title_px=20)

    assert "3,50\u00a0€" in await page.locator(".price .now").inner_text()
    assert await page.locator(".price .was s").inner_text() == "4,90\u00a0€"
    assert await page.locator("article").get_attribute("lang") == "fr"
    assert facts["lang"] == "fr"
    await keep(page, "phone-card.png")


# --- the page and a gateway that restarts (the gateway's answers played by routes) ------


def _event(version: int, title: str) -> str:
    html = f'<article class="card generic" lang="en"><h1 class="title">{title}</h1></article>'
    data = json.dumps({"version": version, "html": html, "personal": False})
    return f"event: content\nid: {version}\ndata: {data}\n\n"


async def test_kiosk_page_follows_a_gateway_that_restarts(browser: Browser) -> None:
    """A restarted gateway counts versions from 1 again: the first view of each connection is
    shown whatever its version, a stale one within a connection is not; and when the browser
    gives up on the stream (an HTTP error), the page opens a new one by itself."""
    base = "http://kiosk.test"
    page_html = Renderer().render(
        "kiosk/page.html.j2", kiosk_id="k1", kiosk_name="K", version=0, personal=False, content=""
    )
    answers = [
        (200, "retry: 50\n\n" + _event(5, "Before the restart") + _event(4, "Stale")),
        (200, "retry: 50\n\n" + _event(1, "After the restart")),
        (503, "starting"),  # EventSource gives up on an HTTP error
        (200, "retry: 50\n\n" + _event(2, "Back again")),
    ]
    streams: list[int] = []

    async def answer(route: Route) -> None:
        path = route.request.url.removeprefix(base)
        if path == "/kiosk/k1":
            await route.fulfill(body=page_html, content_type="text/html")
        elif path.startswith("/static/"):
            await route.fulfill(path=templates_dir() / path.removeprefix("/"))
        elif path == "/kiosk/k1/events":
            status, body = answers[min(len(streams), len(answers) - 1)]
            streams.append(status)
            await route.fulfill(status=status, body=body, content_type="text/event-stream")
        else:
            await route.fulfill(status=404)

    page = await browser.new_page(viewport=LANDSCAPE)
    await page.add_init_script(
        "window.shown = [];"
        "new MutationObserver(() => {"
        "  const t = document.querySelector('#screen .title');"
        "  if (t && window.shown[window.shown.length - 1] !== t.textContent)"
        "    window.shown.push(t.textContent);"
        "}).observe(document, {subtree: true, childList: true});"
    )
    await page.route(f"{base}/**", answer)
    await page.goto(f"{base}/kiosk/k1")

    await page.wait_for_function("window.shown.includes('Back again')", timeout=15_000)

    assert await page.evaluate("window.shown.slice(0, 3)") == [
        "Before the restart",
        "After the restart",
        "Back again",
    ]
    assert streams[:4] == [200, 200, 503, 200]
    assert await page.locator("#screen").get_attribute("data-version") == "2"
