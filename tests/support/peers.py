"""Test peers: a plain paho publisher (an independent MQTT client, on paho's own thread) and
the real gateway app served by uvicorn over a real socket inside the test's event loop."""

from __future__ import annotations

import asyncio
import json
import queue
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import paho.mqtt.client as paho
import uvicorn
from paho.mqtt.enums import CallbackAPIVersion

from firmware_sim.adverts import ibeacon
from firmware_sim.scenario import APP_UUID
from gateway.config import Config
from gateway.http import create_app
from gateway.http.serving import uvicorn_config
from gateway.nodes import Advert, encode_batch
from gateway.runtime import Gateway
from tests.support.broker import free_port

ALICE = ibeacon(APP_UUID, 100, 1)
BOB = ibeacon(APP_UUID, 100, 2)


class Publisher:
    def __init__(self, host: str, port: int, store_id: str = "store-1") -> None:
        self._client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"test-pub-{port}",
            protocol=paho.MQTTv5,
        )
        self.received: queue.Queue[paho.MQTTMessage] = queue.Queue()
        self._client.on_message = lambda _c, _u, msg: self.received.put(msg)
        self._client.connect(host, port)
        self._client.loop_start()
        self._store = store_id
        self._seq = 0

    def subscribe(self, topic: str) -> None:
        result, _mid = self._client.subscribe(topic, qos=1)
        assert result == paho.MQTT_ERR_SUCCESS

    def next_message(self, timeout: float = 10.0) -> paho.MQTTMessage:
        return self.received.get(timeout=timeout)

    def raw(self, node: str, payload: bytes) -> None:
        self.publish(f"moments/v1/{self._store}/nodes/{node}/adv", payload)

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        """Any device's message (a shelf, a till), acknowledged by the broker."""
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(timeout=5)
        assert info.is_published()

    def adverts(
        self, node: str, payload: bytes, rssi: int = -55, count: int = 3, addr: str = ""
    ) -> None:
        self._seq += 1
        adverts = [Advert(payload, rssi, i * 100, addr) for i in range(count)]
        self.raw(node, encode_batch(node, self._seq, 1_700_000_000.0, adverts))

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


@dataclass
class Served:
    gateway: Gateway
    base: str
    client: httpx.AsyncClient

    async def kiosk_headers(self, kiosk_id: str = "kiosk-1") -> dict[str, str]:
        """The Authorization header of a fresh kiosk token for ``kiosk_id``."""
        token, _claims = await self.gateway.shoppers.issue("kiosk", kiosk_id)
        return {"Authorization": f"Bearer {token}"}

    async def health(self) -> dict[str, Any]:
        response = await self.client.get("/healthz")
        assert response.status_code == 200
        result: dict[str, Any] = response.json()
        return result


@asynccontextmanager
async def serve(config: Config) -> AsyncIterator[Served]:
    """Run the real app under uvicorn on a free port; stop it cleanly afterwards."""
    port = free_port()
    app = create_app(config)
    server = uvicorn.Server(
        uvicorn_config(
            app, config, host="127.0.0.1", port=port, loop="none", timeout_graceful_shutdown=3
        )
    )
    task = asyncio.create_task(server.serve(), name="uvicorn")
    async with asyncio.timeout(15):
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("server stopped during start-up")
            await asyncio.sleep(0.02)
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            yield Served(app.state.gateway, base, client)
    finally:
        app.state.gateway.stopping.set()
        server.should_exit = True
        async with asyncio.timeout(15):
            await task


class EventStream:
    """Reads the kiosk's Server-Sent Events as (event, data) pairs."""

    def __init__(self, response: httpx.Response) -> None:
        self._lines = response.aiter_lines()

    async def next_content(self, timeout: float = 10.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            event, data = "", ""
            async for line in self._lines:
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    data = line[5:].strip()
                elif line == "" and event == "content":
                    result: dict[str, Any] = json.loads(data)
                    return result
                elif line == "":
                    event, data = "", ""
        raise AssertionError("event stream ended")

    async def until(self, personal: bool, timeout: float = 10.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                view = await self.next_content(timeout)
                if view["personal"] is personal:
                    return view
