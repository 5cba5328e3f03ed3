"""A scanner node that keeps one shopper standing in its zone, over the real store broker.

It publishes, as the node would, a batch of the shopper's phone advertisements (strong RSSI,
a little jitter) right away and then every ``interval_s``, through the gateway's own
:class:`~gateway.mqtt.MqttLink` driven by this event loop. Presence expires after some seconds
of silence, so the node keeps publishing for as long as it is entered.
"""

from __future__ import annotations

import asyncio
import random
import time
from types import TracebackType

from beacons.backoff import Backoff
from bench.errors import BenchError
from gateway.errors import LinkError
from gateway.mqtt import MqttLink
from gateway.nodes import Advert, encode_batch

__all__ = ["ScannerNode"]

CONNECT_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 5.0
ADVERTS_PER_BATCH = 3


class ScannerNode:
    def __init__(
        self,
        *,
        broker_port: int,
        topic_prefix: str,
        store_id: str,
        node: str,
        payload: bytes,
        rssi: int,
        interval_s: float = 1.0,
        seed: int = 7,
    ) -> None:
        self.node = node
        self.topic = f"{topic_prefix}/{store_id}/nodes/{node}/adv"
        self._payload = payload
        self._rssi = rssi
        self._interval_s = interval_s
        self._random = random.Random(seed)
        self._link = MqttLink(
            name=f"bench-{node}",
            host="127.0.0.1",
            port=broker_port,
            client_id=f"moments-bench-{node}",
            subscriptions=(),
            backoff=Backoff(0.2, 2.0),
            session_expiry=0,
        )
        self._link_task: asyncio.Task[None] | None = None
        self._publisher: asyncio.Task[None] | None = None
        self.published = 0
        self.failed = 0
        self.last_error = ""

    async def __aenter__(self) -> ScannerNode:
        loop = asyncio.get_running_loop()
        self._link_task = asyncio.create_task(self._link.run(), name=f"{self.node}-link")
        deadline = loop.time() + CONNECT_TIMEOUT_S
        while not self._link.is_up:
            if loop.time() >= deadline:
                await self.aclose()
                raise BenchError(f"{self.node}: no broker link after {CONNECT_TIMEOUT_S:.0f} s")
            await asyncio.sleep(0.05)
        self._publisher = asyncio.create_task(self._publish_forever(), name=f"{self.node}-adverts")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._publisher is not None:
            self._publisher.cancel()
            await asyncio.gather(self._publisher, return_exceptions=True)
            self._publisher = None
        await self._link.aclose()
        if self._link_task is not None:
            try:
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await self._link_task
            except TimeoutError:
                self._link_task.cancel()
            self._link_task = None

    def batch(self, seq: int) -> bytes:
        step_ms = round(self._interval_s * 1000 / ADVERTS_PER_BATCH)
        adverts = [
            Advert(self._payload, self._rssi + self._random.randint(-2, 2), k * step_ms, "")
            for k in range(ADVERTS_PER_BATCH)
        ]
        return encode_batch(self.node, seq, time.time(), adverts)

    async def _publish_forever(self) -> None:
        seq = 0
        while True:
            seq += 1
            try:
                self._link.publish(self.topic, self.batch(seq), qos=0)
                self.published += 1
            except LinkError as exc:  # LinkDownError included: the next batch will do
                self.failed += 1
                self.last_error = str(exc)
            await asyncio.sleep(self._interval_s)
