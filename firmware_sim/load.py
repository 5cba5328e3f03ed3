"""The load generator behind ``moments sim load``: a running gateway under a chosen rate of
advertisements, app sightings and device messages, for a chosen time.

What it sends (``docs/PROTOCOL.md`` and ``docs/PRIVACY.md`` are the contracts)
    * **adverts**: scanner-node batches (QoS 0) every ``batch_s`` from ``nodes`` simulated
      nodes, carrying the phones the nodes hear. The node ids are the configuration's zone
      nodes, dealt round-robin (two simulated nodes may share an id when asked for more than
      the configuration has; each keeps its own ``seq``). The phones are ``shoppers``
      opted-in app shoppers (their app advertises an iBeacon identity the store knows) and
      ``strangers`` (no app: a vendor payload and a random address that rotates every
      :data:`STRANGER_ROTATE_S`, counted anonymously by the gateway).
    * **sightings**: ``POST /v1/me/sightings``, one sighting of one of the store's fixed
      beacons (``[[beacons]]``) per request, each with the token of the next shopper in turn.
      The API limits each token to ``api.rate_per_s``; above ``shoppers * api.rate_per_s``
      answers of 429 are expected (and counted).
    * **device messages**: shelf stock reports (QoS 1, retained) and POS redemptions (QoS 1),
      alternately, from a few load shelves and lanes. Receipts carry a random run id, so a
      second run is not taken for a till sending the same sale again.

The shoppers
    Written straight into the gateway's store, with their tokens, by
    :mod:`firmware_sim.load_shoppers` (``/v1/register`` allows far too few per minute).

Pacing
    Each kind runs its own loop on an absolute schedule against ``time.monotonic`` (ticks at
    ``k * tick`` from the start: no drift). At each tick it sends what the rate owes up to
    now; a late tick sends more, but at most :data:`CATCH_UP_TICKS` ticks' worth: what is
    owed beyond that is skipped and counted (``behind``), never sent as an unbounded burst.
    No kind ever sends more than ``rate * duration_s`` (:meth:`LoadPlan.planned`).

HTTP
    Sightings go through :class:`~firmware_sim.http_client.HttpClient` (keep-alive HTTP/1.1
    over asyncio streams) with :data:`HTTP_CONNECTIONS` connections, fed by that many workers
    from a bounded queue. At most that many requests are in flight; a request that finds the
    queue full is counted (``http_backlog``), not queued without bound.

Errors
    Counted by kind, never raised: ``http_<status>``, ``connection_refused``,
    ``connection_failed``, ``http_timeout``, ``http_bad_response``, ``http_backlog``,
    ``http_unfinished``, ``mqtt_link_down``, ``mqtt_publish_failed``, ``mqtt_refused``,
    ``mqtt_backlog``, ``mqtt_unacked``. The one error raised is at start: no broker
    reachable within the timeout (:class:`~gateway.errors.LinkError`).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import time
from collections.abc import Callable
from typing import Any, Final

import msgspec

from firmware_sim.adverts import phone_noise
from firmware_sim.http_client import HttpClient, HttpError
from firmware_sim.links import default_base_url, sim_link
from firmware_sim.load_plan import LoadPlan, add_arguments, owed, plan_from_args
from firmware_sim.load_report import LoadReport, Tally
from firmware_sim.load_shoppers import (
    LOAD_UUID,
    LoadShopper,
    load_shopper_id,
    random_address,
    set_up_shoppers,
)
from firmware_sim.scenario import STORE_UUID
from gateway.config import Config
from gateway.errors import LinkDownError, LinkError
from gateway.linkstate import LinkState
from gateway.mqtt import MqttLink
from gateway.nodes import Advert, encode_batch
from gateway.redemptions import Redemption, encode_redemption
from gateway.stock import StockItem, encode_stock

__all__ = [
    "LOAD_UUID",
    "LoadPlan",
    "LoadReport",
    "add_arguments",
    "load_shopper_id",
    "plan_from_args",
    "run_load",
]

STRANGER_ROTATE_S: Final = 300.0
TICK_S: Final = 0.1  # the sightings' and device messages' schedule
CATCH_UP_TICKS: Final = 4
HTTP_CONNECTIONS: Final = 32
HTTP_TIMEOUT_S: Final = 10.0
DEVICE_IN_FLIGHT: Final = 256
STARTUP_TIMEOUT_S: Final = 10.0
DRAIN_S: Final = 5.0
TOKEN_SLACK_S: Final = 3600.0
SHELVES: Final = 8
SKUS_PER_SHELF: Final = 4
LANES: Final = 4
SIGHTINGS_PATH: Final = "/v1/me/sightings"
_ADVERT_JSON_MAX: Final = 160  # one phone advert in a batch, JSON, generously
_TICK_SLACK: Final = 1e-6
PROGRESS_LAG_S: Final = 0.02


# ----- the report -----


def _node_ids(config: Config, count: int) -> tuple[list[str], bool]:
    """The simulated nodes' ids and whether the configuration places them in zones."""
    configured = [node for zone in config.zones for node in zone.nodes]
    if not configured:
        return [f"load-node-{k + 1}" for k in range(max(count, 1))], False
    count = count or len(configured)
    return [configured[k % len(configured)] for k in range(count)], True


def _beacon_fields(config: Config) -> tuple[list[dict[str, Any]], bool]:
    """The store's fixed beacons as sighting fields, and whether they came from the
    configuration (else the demo's entrance beacon, which such a gateway does not know)."""
    found: list[dict[str, Any]] = []
    for beacon in config.beacons:
        kind, *rest = beacon.identity.split(":")
        if kind == "ibeacon":
            found.append({"uuid": rest[0], "major": int(rest[1]), "minor": int(rest[2])})
        else:
            found.append({"namespace": rest[0], "instance": rest[1]})
    if found:
        return found, True
    return [{"uuid": STORE_UUID, "major": 1, "minor": 1}], False


# ----- sightings over HTTP -----


class _SightingAnswer(msgspec.Struct, frozen=True):
    placed: int
    dropped: dict[str, int]


_answer_decoder: Final = msgspec.json.Decoder(_SightingAnswer)


class _SightingPosts:
    """``workers`` workers posting sightings through ``client``, fed by a queue of as many
    requests; an answer of 200 is decoded as a sighting answer into the tally, any other
    status and every :class:`~firmware_sim.http_client.HttpError` counted by kind."""

    def __init__(self, client: HttpClient, *, workers: int, tally: Tally) -> None:
        self._client = client
        self._workers = workers
        self._tally = tally
        self._jobs: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue(maxsize=workers)
        self._busy = 0

    def submit(self, token: str, body: dict[str, Any]) -> bool:
        """Queue one request; ``False`` when the queue is full (nothing queued)."""
        try:
            self._jobs.put_nowait((token, body))
        except asyncio.QueueFull:
            return False
        return True

    async def run(self) -> None:
        """The workers; runs until cancelled."""
        async with asyncio.TaskGroup() as group:
            for k in range(self._workers):
                group.create_task(self._worker(), name=f"load-http-{k}")

    async def drain(self, timeout_s: float) -> None:
        """Wait for the requests queued and in flight; count those still unanswered."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._jobs.join()
        unfinished = self._jobs.qsize() + self._busy
        if unfinished:
            self._tally.error("http_unfinished", unfinished)

    async def _worker(self) -> None:
        while True:
            token, body = await self._jobs.get()
            self._busy += 1
            try:
                response = await self._client.request(
                    "POST", SIGHTINGS_PATH, json_body=body, token=token
                )
            except HttpError as exc:
                self._tally.error(exc.kind)
            else:
                self._answered(response.status, response.body)
            finally:
                self._busy -= 1
                self._jobs.task_done()

    def _answered(self, status: int, body: bytes) -> None:
        tally = self._tally
        if status != 200:
            tally.error(f"http_{status}")
            return
        try:
            answer = _answer_decoder.decode(body)
        except msgspec.DecodeError:
            tally.error("http_bad_response")
            return
        tally.sightings_ok += 1
        tally.placed += answer.placed
        for reason, count in answer.dropped.items():
            tally.dropped[reason] = tally.dropped.get(reason, 0) + count


# ----- the run -----


class _Load:
    """One run's senders and counts; ``run`` drives them for the plan's duration."""

    def __init__(
        self,
        config: Config,
        plan: LoadPlan,
        link: MqttLink,
        shoppers: list[LoadShopper],
        rng: random.Random,
    ) -> None:
        self._plan = plan
        self._link = link
        self._shoppers = shoppers
        self._rng = rng
        self.tally = Tally()
        root = f"{config.broker.topic_prefix}/{config.store_id}"
        self._root = root
        self._nodes, self.nodes_known = _node_ids(config, plan.nodes)
        self._node_topics = [f"{root}/nodes/{node}/adv" for node in self._nodes]
        self._seqs = [0] * len(self._nodes)
        self._node_cursor = 0
        ingest = config.ingest
        self._chunk = max(
            1, min(ingest.max_batch, (ingest.max_payload_bytes - 256) // _ADVERT_JSON_MAX)
        )
        self._batch_ms = round(plan.batch_s * 1000)
        self._phones = plan.shoppers + plan.strangers
        self._strangers: dict[int, tuple[int, str, bytes]] = {}
        self._phases = [rng.uniform(0, STRANGER_ROTATE_S) for _ in range(plan.strangers)]
        self._beacons, self.beacons_known = _beacon_fields(config)
        self.base_url = plan.base_url or default_base_url(config)
        self._client = HttpClient(
            self.base_url, connections=HTTP_CONNECTIONS, timeout_s=HTTP_TIMEOUT_S
        )
        self._posts = _SightingPosts(self._client, workers=HTTP_CONNECTIONS, tally=self.tally)
        self._next_shopper = 0
        self._device_count = 0
        self._run_id = os.urandom(4).hex()
        self._pending: set[asyncio.Future[None]] = set()
        self._settling = True
        self._start = 0.0
        self._last: tuple[int, int, int] = (0, 0, 0)  # counts at the last progress line
        self._last_t = 0.0

    async def run(self, progress: Callable[[str], None]) -> LoadReport:
        plan = self._plan
        posts_task = asyncio.create_task(self._posts.run(), name="load-http")
        self._start = time.monotonic()
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(
                    self._pace("adverts", plan.adverts_per_s, plan.batch_s, self._send_adverts),
                    name="load-adverts",
                )
                group.create_task(
                    self._pace("sightings", plan.sightings_per_s, TICK_S, self._send_sightings),
                    name="load-sightings",
                )
                group.create_task(
                    self._pace("device", plan.device_msgs_per_s, TICK_S, self._send_device),
                    name="load-device",
                )
                group.create_task(self._progress(progress), name="load-progress")
            elapsed = time.monotonic() - self._start
            progress(self._line(plan.duration_s, plan.duration_s - self._last_t, self._last))
            await self._posts.drain(DRAIN_S)
            await self._drain_device(DRAIN_S)
        finally:
            posts_task.cancel()
            await asyncio.gather(posts_task, return_exceptions=True)
            await self._client.aclose()
        t = self.tally
        return LoadReport(
            plan=plan,
            elapsed_s=elapsed,
            adverts=t.adverts,
            batches=t.batches,
            sightings=t.sightings,
            sightings_ok=t.sightings_ok,
            sightings_placed=t.placed,
            sightings_dropped=dict(t.dropped),
            stock_msgs=t.stock,
            redemptions=t.redemptions,
            device_acked=t.device_acked,
            behind=dict(t.behind),
            errors=dict(t.errors),
        )

    # ----- pacing -----

    async def _pace(
        self, kind: str, rate: float, tick_s: float, send: Callable[[int], None]
    ) -> None:
        """Send what ``rate`` owes at each tick of an absolute schedule until the duration."""
        if rate <= 0:
            return
        duration = self._plan.duration_s
        burst = max(1, math.ceil(rate * tick_s * CATCH_UP_TICKS))
        accounted = 0
        k = 0
        while True:
            elapsed = min(time.monotonic() - self._start, duration)
            # What the schedule owes at the last tick passed (a tick woken a hair early, as
            # the event loop may, counts as passed), or at the end.
            ticks = math.floor(elapsed / tick_s + _TICK_SLACK)
            owed_now = owed(
                rate, duration if elapsed >= duration else min(ticks * tick_s, duration)
            )
            due = owed_now - accounted
            if due > burst:
                self.tally.behind[kind] = self.tally.behind.get(kind, 0) + due - burst
                due = burst
            if due > 0:
                send(due)
            accounted = owed_now
            if elapsed >= duration:
                return
            k = max(k + 1, ticks + 1)
            wake = self._start + min(k * tick_s, duration)
            await asyncio.sleep(max(0.0, wake - time.monotonic()))

    async def _progress(self, progress: Callable[[str], None]) -> None:
        """A line every whole second of the run (the last line comes from ``run``)."""
        k = 1
        while k < self._plan.duration_s:
            # Just after the whole second, so the senders' ticks due then have run.
            await asyncio.sleep(max(0.0, self._start + k + PROGRESS_LAG_S - time.monotonic()))
            progress(self._line(float(k), k - self._last_t, self._last))
            self._last_t, self._last = float(k), self._counts()
            k += 1

    def _counts(self) -> tuple[int, int, int]:
        t = self.tally
        return t.adverts, t.sightings, t.stock + t.redemptions

    def _line(self, at: float, dt: float, before: tuple[int, int, int]) -> str:
        now = self._counts()
        rates = [(c - b) / dt if dt > 0 else 0.0 for c, b in zip(now, before, strict=True)]
        errors = sum(self.tally.errors.values())
        return (
            f"load  {at:.1f}/{self._plan.duration_s:g} s"
            f"  adverts {now[0]:,} ({rates[0]:,.0f}/s)"
            f"  sightings {now[1]:,} ({rates[1]:,.0f}/s)"
            f"  device {now[2]:,} ({rates[2]:,.0f}/s)"
            f"  errors {errors:,}"
        )

    # ----- adverts -----

    def _send_adverts(self, count: int) -> None:
        nodes = len(self._nodes)
        each, extra = divmod(count, nodes)
        wall = time.time()
        for j in range(nodes if each else extra):
            k = (self._node_cursor + j) % nodes
            self._publish_node(k, each + (1 if j < extra else 0), wall)
        self._node_cursor = (self._node_cursor + extra) % nodes

    def _publish_node(self, k: int, count: int, wall: float) -> None:
        for first in range(0, count, self._chunk):
            size = min(self._chunk, count - first)
            if not self._link.is_up:
                self.tally.error("mqtt_link_down")
                continue
            adverts = [self._advert(wall) for _ in range(size)]
            payload = encode_batch(self._nodes[k], self._seqs[k], wall, adverts)
            self._seqs[k] += 1
            try:
                self._link.publish(self._node_topics[k], payload, qos=0)
            except LinkDownError:
                self.tally.error("mqtt_link_down")
                continue
            except LinkError:
                self.tally.error("mqtt_publish_failed")
                continue
            self.tally.adverts += size
            self.tally.batches += 1

    def _advert(self, wall: float) -> Advert:
        rng = self._rng
        phone = rng.randrange(self._phones)
        if phone < len(self._shoppers):
            shopper = self._shoppers[phone]
            data, address = shopper.payload, shopper.address
        else:
            address, data = self._stranger(phone - len(self._shoppers), wall)
        return Advert(data, rng.randint(-88, -45), rng.randint(0, self._batch_ms), address)

    def _stranger(self, k: int, wall: float) -> tuple[str, bytes]:
        """Stranger ``k``'s address and payload now: both change every rotation period."""
        epoch = math.floor((wall + self._phases[k]) / STRANGER_ROTATE_S)
        known = self._strangers.get(k)
        if known is None or known[0] != epoch:
            known = (epoch, random_address(self._rng), phone_noise(self._rng.randbytes(8)))
            self._strangers[k] = known
        return known[1], known[2]

    # ----- sightings -----

    def _send_sightings(self, count: int) -> None:
        wall = time.time()
        for _ in range(count):
            shopper = self._shoppers[self._next_shopper % len(self._shoppers)]
            beacon = self._beacons[self._next_shopper % len(self._beacons)]
            self._next_shopper += 1
            sighting = {**beacon, "rssi": self._rng.randint(-75, -50), "at": round(wall, 3)}
            if self._posts.submit(shopper.token, {"sightings": [sighting]}):
                self.tally.sightings += 1
            else:
                self.tally.error("http_backlog")

    # ----- shelves and tills -----

    def _send_device(self, count: int) -> None:
        for _ in range(count):
            if len(self._pending) >= DEVICE_IN_FLIGHT:
                self.tally.error("mqtt_backlog")
                continue
            n = self._device_count
            self._device_count += 1
            stock = n % 2 == 0
            topic, payload, retain = self._stock(n // 2) if stock else self._redemption(n // 2)
            try:
                future = self._link.publish_acked(topic, payload, qos=1, retain=retain)
            except LinkDownError:
                self.tally.error("mqtt_link_down")
                continue
            except LinkError:
                self.tally.error("mqtt_publish_failed")
                continue
            if stock:
                self.tally.stock += 1
            else:
                self.tally.redemptions += 1
            self._pending.add(future)
            future.add_done_callback(self._settled)

    def _stock(self, n: int) -> tuple[str, bytes, bool]:
        shelf_no = n % SHELVES + 1
        shelf = f"load-shelf-{shelf_no}"
        rng = self._rng
        skus = rng.sample(range(SKUS_PER_SHELF), rng.randint(1, SKUS_PER_SHELF))
        items = [
            StockItem(f"load-sku-{shelf_no}-{s + 1}", rng.choice((0, 0, 3, 8, 12))) for s in skus
        ]
        payload = encode_stock(shelf, items, t=time.time())
        return f"{self._root}/shelves/{shelf}/stock", payload, True

    def _redemption(self, n: int) -> tuple[str, bytes, bool]:
        lane = f"load-lane-{n % LANES + 1}"
        shopper = (
            self._shoppers[self._rng.randrange(len(self._shoppers))].shopper_id
            if self._shoppers
            else None
        )
        payload = encode_redemption(
            Redemption(
                v=1,
                lane=lane,
                offer_id=f"load-offer-{n % 5 + 1}",
                at=time.time(),
                receipt=f"load-{self._run_id}-{n:09d}",
                shopper_id=shopper,
            )
        )
        return f"{self._root}/pos/{lane}/redemptions", payload, False

    def _settled(self, future: asyncio.Future[None]) -> None:
        self._pending.discard(future)
        if future.cancelled():
            return
        exc = future.exception()
        if not self._settling:
            return  # already counted as unacknowledged by the drain
        if exc is None:
            self.tally.device_acked += 1
        elif isinstance(exc, LinkDownError):
            self.tally.error("mqtt_link_down")
        else:
            self.tally.error("mqtt_refused")

    async def _drain_device(self, timeout_s: float) -> None:
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=timeout_s)
        if self._pending:
            self.tally.error("mqtt_unacked", len(self._pending))
        self._settling = False


async def run_load(
    config: Config,
    plan: LoadPlan,
    *,
    progress: Callable[[str], None],
    connect_timeout_s: float = STARTUP_TIMEOUT_S,
) -> LoadReport:
    """Run ``plan`` against the gateway that ``config`` describes and report what was sent.

    Raises :class:`~gateway.errors.LinkError` when no broker answers within
    ``connect_timeout_s``; every later failure is counted in the report instead."""
    rng = random.Random(plan.seed)
    up = asyncio.Event()

    def on_state(state: LinkState) -> None:
        if state is LinkState.UP:
            up.set()

    link = sim_link(
        config,
        f"moments-load-{config.store_id}-{os.urandom(3).hex()}",
        on_state=on_state,
        connect_timeout_s=connect_timeout_s,
    )
    link_task = asyncio.create_task(link.run(), name="load-mqtt")
    try:
        try:
            async with asyncio.timeout(connect_timeout_s):
                await up.wait()
        except TimeoutError:
            raise LinkError(
                f"no broker reachable at {config.broker.host}:{config.broker.port} within "
                f"{connect_timeout_s:g} s ({link.last_error or 'no answer'})"
            ) from None
        shoppers = await set_up_shoppers(
            config, plan.shoppers, ttl_s=plan.duration_s + TOKEN_SLACK_S, rng=rng
        )
        load = _Load(config, plan, link, shoppers, rng)
        _notes(config, plan, load, progress)
        return await load.run(progress)
    finally:
        await link.aclose()
        await link_task


def _notes(config: Config, plan: LoadPlan, load: _Load, progress: Callable[[str], None]) -> None:
    """Say up front what will make the gateway drop or refuse part of the load."""
    if plan.adverts_per_s > 0 and not load.nodes_known:
        progress("load  note: no zone nodes in the configuration; the gateway drops the batches")
    if plan.sightings_per_s > 0:
        if not load.beacons_known:
            progress("load  note: no [[beacons]] in the configuration; sightings are dropped")
        limit = plan.shoppers * config.api.rate_per_s
        if plan.sightings_per_s > limit:
            progress(
                f"load  note: {plan.sightings_per_s:g} sightings/s is over {limit:g}/s "
                f"({plan.shoppers} shoppers x api.rate_per_s): expect 429 answers"
            )
    progress(
        f"load  {plan.duration_s:g} s against {load.base_url} and "
        f"{config.broker.host}:{config.broker.port}"
    )
