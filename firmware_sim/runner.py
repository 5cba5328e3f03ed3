"""Runs the scripted store against a broker: every node publishes a batch each half second."""

from __future__ import annotations

import asyncio
import logging
import random
import time

from firmware_sim.links import sim_link
from firmware_sim.radio import Radio
from firmware_sim.scenario import DEVICES, NODES, ROUND_S, demo_records, position
from firmware_sim.seeding import seed_records
from gateway.config import Config
from gateway.errors import LinkDownError
from gateway.mqtt import MqttLink
from gateway.nodes import Advert, encode_batch

__all__ = ["ScriptedStore", "run_demo_store"]

log = logging.getLogger(__name__)

BATCH_S = 0.5
ADVERTS_PER_BATCH = 3


class ScriptedStore:
    """Pure: sim time in, node batches out (one per node with anything to report)."""

    def __init__(self, *, store_id: str, prefix: str, seed: int) -> None:
        self._radio = Radio(random.Random(seed))
        self._topic = f"{prefix}/{store_id}/nodes/{{node}}/adv"
        self._seq = 0

    def batches(self, sim_t: float, wall_ts: float, speed: float) -> list[tuple[str, bytes]]:
        t_in_round = sim_t % ROUND_S
        out: list[tuple[str, bytes]] = []
        for node, at in NODES.items():
            adverts: list[Advert] = []
            for device in DEVICES:
                where = position(device, t_in_round)
                if where is None:
                    continue
                for k in range(ADVERTS_PER_BATCH):
                    rssi = self._radio.rssi(where, at)
                    if rssi is not None:
                        age_ms = round(k * BATCH_S / ADVERTS_PER_BATCH * 1000 / speed)
                        data = (
                            device.telemetry
                            if device.telemetry and k == 0
                            else device.payload_at(wall_ts)
                        )
                        adverts.append(Advert(data, rssi, age_ms, device.address))
            if adverts:
                self._seq += 1
                out.append(
                    (self._topic.format(node=node), encode_batch(node, self._seq, wall_ts, adverts))
                )
        return out


async def run_demo_store(
    config: Config, *, speed: float = 1.0, rounds: int = 0, seed: int = 7, seed_store: bool = True
) -> None:
    if seed_store:
        await _seed(config)
    link = sim_link(config, f"moments-sim-{config.store_id}")
    store = ScriptedStore(store_id=config.store_id, prefix=config.broker.topic_prefix, seed=seed)
    runner = asyncio.create_task(link.run(), name="sim-link")
    try:
        await _walk(link, store, speed=speed, rounds=rounds)
    finally:
        await link.aclose()
        await runner


async def _seed(config: Config) -> None:
    await seed_records(config, demo_records(time.time()))


async def _walk(link: MqttLink, store: ScriptedStore, *, speed: float, rounds: int) -> None:
    start = time.monotonic()
    step = 0
    while rounds == 0 or step * BATCH_S < rounds * ROUND_S:
        sim_t = step * BATCH_S
        await asyncio.sleep(max(0.0, start + sim_t / speed - time.monotonic()))
        for topic, payload in store.batches(sim_t, time.time(), speed):
            try:
                link.publish(topic, payload, qos=0)
            except LinkDownError:
                break  # nodes drop what they cannot send; the next batch will do
        step += 1
