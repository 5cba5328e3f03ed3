"""The store's devices at run time: shelves reporting stock, tills reporting redemptions, door
counters reporting entries, and scanner nodes reporting their own state and health.

Messages come from the store broker (``docs/PROTOCOL.md``)::

    {prefix}/{store}/shelves/{shelf}/stock        a shelf's stock (retained)
    {prefix}/{store}/pos/{lane}/redemptions       an offer redeemed at a till
    {prefix}/{store}/doors/{door}/count           a door counter's cumulative counts
    {prefix}/{store}/nodes/{node}/status          a node's online/offline (retained; its will)
    {prefix}/{store}/nodes/{node}/telemetry       a node's health

A malformed message is counted in
``moments_dropped_total{source="shelf"|"pos"|"door"|"node", reason}`` and logged once a minute
per reason; nothing else happens. Door counts go to the :class:`DoorBook` (entries today, for
the staff dashboard), node status and telemetry to the :class:`NodeBook`. Stock goes to the
:class:`StockBook` the decision engine reads (an offer whose SKUs are out is not shown). A
redemption is attributed to the shopper's last showing of the offer, or to their holdout,
within ``REDEMPTION_WINDOW_S``, recorded once per (lane, receipt) with its outbox event, and
taught to the propensity learner. The HTTP API hands redemptions in through :meth:`redeem` too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from functools import partial
from typing import Any, Final

from gateway.clock import Clock
from gateway.consents import bump_counter_in
from gateway.doors import DoorBook, DoorError, DoorLimits, parse_door_count
from gateway.engine import has_holdout
from gateway.errors import StoreError
from gateway.learning import ALL
from gateway.logs import RateLimitedLog
from gateway.metrics import Metrics
from gateway.moments import STORE_COUNTER, Moments
from gateway.mqtt import InboundMessage
from gateway.node_status import (
    NodeBook,
    NodeReportError,
    NodeReportLimits,
    parse_status,
    parse_telemetry,
)
from gateway.redemptions import (
    Attribution,
    Redemption,
    RedemptionError,
    RedemptionLimits,
    attribute,
    parse_redemption,
    record_redemption_op,
)
from gateway.stock import StockBook, StockError, StockLimits, parse_stock, restock_signal
from gateway.store import Database, Writer
from gateway.today import Today

__all__ = ["REDEMPTION_WINDOW_S", "Devices"]

log = logging.getLogger(__name__)

REDEMPTION_WINDOW_S: Final = 3 * 86_400.0


class Devices:
    def __init__(
        self,
        *,
        prefix: str,
        store_id: str,
        db: Database,
        writer: Writer,
        clock: Clock,
        metrics: Metrics,
        moments: Moments,
        tell_hq: bool,
        window_s: float = REDEMPTION_WINDOW_S,
        utc_offset_h: float = 0.0,
        nodes: frozenset[str] | None = None,
        today: Today | None = None,
    ) -> None:
        # The scanner nodes of the configuration: reports from any other id are dropped
        # (None: any id, for tests and tools without zones).
        self._known_nodes = nodes
        self._window_s = window_s
        self._base = f"{prefix}/{store_id}/"
        self._store = store_id
        self._db = db
        self._writer = writer
        self._clock = clock
        self._metrics = metrics
        self._moments = moments
        self._today = today
        self._tell_hq = tell_hq
        self.stock = StockBook(clock)
        self._stock_limits = StockLimits()
        self._redemption_limits = RedemptionLimits()
        self.doors = DoorBook(utc_offset_h=utc_offset_h)
        self._door_limits = DoorLimits()
        self.nodes = NodeBook()
        self._node_limits = NodeReportLimits()
        self._warn = RateLimitedLog(log)
        self._pending: set[asyncio.Future[Any]] = set()
        self.redeemed = 0
        self.on_signal: list[Callable[[str], None]] = []  # a device signal (restocked:<sku>)

    @property
    def subscriptions(self) -> list[tuple[str, int]]:
        return [
            (f"{self._base}shelves/+/stock", 1),
            (f"{self._base}pos/+/redemptions", 1),
            (f"{self._base}doors/+/count", 0),
            (f"{self._base}nodes/+/status", 1),
            (f"{self._base}nodes/+/telemetry", 0),
        ]

    def handle(self, message: InboundMessage) -> bool:
        """Take a device message; False when the topic is not a device's."""
        if not message.topic.startswith(self._base):
            return False
        parts = message.topic[len(self._base) :].split("/")
        if len(parts) == 3 and parts[0] == "shelves" and parts[2] == "stock":
            self._take_stock(parts[1], message.payload)
            return True
        if len(parts) == 3 and parts[0] == "pos" and parts[2] == "redemptions":
            try:
                redemption = parse_redemption(
                    message.payload, self._redemption_limits, topic_lane=parts[1]
                )
            except RedemptionError as exc:
                self._drop("pos", exc.reason, exc.detail, lane=parts[1])
                return True
            self._submit(redemption)
            return True
        if len(parts) == 3 and parts[0] == "doors" and parts[2] == "count":
            self._take_door_count(parts[1], message.payload)
            return True
        if len(parts) == 3 and parts[0] == "nodes" and parts[2] in ("status", "telemetry"):
            self._take_node_report(parts[1], parts[2], message.payload)
            return True
        return False

    def _take_door_count(self, door: str, payload: bytes) -> None:
        try:
            count = parse_door_count(door, payload, self._door_limits)
        except DoorError as exc:
            self._drop("door", exc.reason, exc.detail, door=door)
            return
        now = self._clock.now()
        entries = self.doors.apply(count, now)
        if entries is None:
            self._drop("door", "too_many_doors", "the door book is full", door=door)
        elif entries and self._today is not None:
            try:
                future = self._writer.submit(self._today.entries_op(entries, now))
            except StoreError as exc:  # stopping
                self._drop("door", "not_recorded", str(exc), door=door)
                return
            self._pending.add(future)
            future.add_done_callback(partial(self._done, "door"))

    def _take_node_report(self, node: str, kind: str, payload: bytes) -> None:
        if self._known_nodes is not None and node not in self._known_nodes:
            self._drop("node", "unknown_node", "report from a node in no zone", node=node)
            return
        try:
            if kind == "status":
                kept = self.nodes.apply_status(parse_status(node, payload, self._node_limits))
            else:
                telemetry = parse_telemetry(node, payload, self._node_limits, now=self._clock.now())
                kept = self.nodes.apply_telemetry(telemetry)
        except NodeReportError as exc:
            self._drop("node", exc.reason, exc.detail, node=node, kind=kind)
            return
        if not kept:
            self._drop("node", "too_many_nodes", "the node book is full", node=node, kind=kind)

    def _take_stock(self, shelf: str, payload: bytes) -> None:
        try:
            report = parse_stock(shelf, payload, self._stock_limits)
        except StockError as exc:
            self._drop("shelf", exc.reason, exc.detail, shelf=shelf)
            return
        restocked = self.stock.apply(report)
        if restocked:
            log.info("restocked", extra={"shelf": shelf, "skus": restocked})
            for sku in restocked:
                for on_signal in self.on_signal:
                    on_signal(restock_signal(sku))

    async def redeem(self, redemption: Redemption) -> tuple[bool, Attribution]:
        """Record one redemption (from a till or the API); ``(False, ...)`` for a receipt
        already recorded."""
        attribution = attribute(self._db, redemption, window_s=self._window_s)
        now = self._clock.now()
        op = record_redemption_op(
            self._db, self._store, redemption, attribution, now=now, tell_hq=self._tell_hq
        )
        today = self._today
        offer = next((o for o in self._db.offers() if o.offer_id == redemption.offer_id), None)
        with_holdout = offer is not None and has_holdout(offer)

        def record(txn: Any) -> bool:
            recorded = op(txn)
            if recorded and today is not None:  # today's figures, in the same transaction
                today.redeemed_in(txn, attribution.side, now, with_holdout=with_holdout)
            return recorded

        recorded: bool = await self._writer.write(record)
        if recorded:
            self.redeemed += 1
            name, day = self._moments.redeemed(redemption.offer_id, self._clock.now())
            await self._writer.write(partial(_bump_in, self._db, name, day))
            if attribution.side == "treatment" and redemption.shopper_id is not None:
                profile = self._db.profile(redemption.shopper_id)
                segments = profile.segments if profile is not None else ()
                learner = self._moments.learner
                segment = learner.segment_for(redemption.offer_id, segments) if segments else ALL
                learner.observe_redemption(redemption.offer_id, segment)
        return recorded, attribution

    def _submit(self, redemption: Redemption) -> None:
        future = asyncio.ensure_future(self.redeem(redemption))
        self._pending.add(future)
        future.add_done_callback(partial(self._done, "pos"))

    def _done(self, source: str, future: asyncio.Future[Any]) -> None:
        self._pending.discard(future)
        if future.cancelled():
            return
        exc = future.exception()
        if exc is not None:  # a store failure or a refused id: counted, the device is not told
            self._drop(source, "not_recorded", f"{type(exc).__name__}: {exc}")

    def _drop(self, source: str, reason: str, detail: str, **fields: object) -> None:
        self._metrics.dropped.labels(source=source, reason=reason).inc()
        self._warn.warning(
            f"{source}.{reason}",
            f"{source} message dropped",
            detail=detail,
            **fields,
        )


def _bump_in(db: Database, name: str, window: str, txn: Any) -> None:
    bump_counter_in(txn, db, STORE_COUNTER, name, window)
