"""HQ sync at run time: the link to HQ's broker, the stream applier, resync requests, and the
outbox relay, owned together and started by the composition root when ``[hq] enabled``.

HQ's signed receipts (``{prefix}/{store}/hq/receipts``) go to the relay, which deletes the
outbox entries they cover. Other incoming HQ messages are handled one at a time, in arrival
order: verify and plan
(:class:`~gateway.sync.apply.StreamApplier`), commit through the store's single writer, then
let the applier see the result (a newly trusted key must be in the keyring before the next
message is checked). A gap, a snapshot that went wrong or a forced full resync makes the
applier ask for a resync, which goes to HQ as an MQTT 5 request (response topic and
correlation data). Rejected messages are counted by stream and reason; nothing of them is
applied.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any, Final

from beacons.backoff import Backoff
from gateway.clock import Clock
from gateway.config import Config
from gateway.errors import LinkError, StoreError
from gateway.logs import RateLimitedLog
from gateway.metrics import Metrics
from gateway.mqtt import InboundMessage, MqttLink, Tls, Will
from gateway.store import Database, Writer
from gateway.sync.apply import StreamApplier, restore_keyring, sweep_tombstones_op
from gateway.sync.envelope import (
    STREAMS,
    Keyring,
    ResyncRequest,
    Stream,
    SyncError,
    encode_resync,
    open_receipt,
)
from gateway.sync.relay import OutboxRelay

__all__ = ["RESYNC_RETRY_S", "SWEEP_EVERY_S", "HqSync"]

RESYNC_RETRY_S = 30.0
SWEEP_EVERY_S = 3600.0


def _stream(name: str) -> Stream:
    assert name in STREAMS
    return name  # type: ignore[return-value]


log = logging.getLogger(__name__)

_LANDED: Final = frozenset({"applied", "staged", "snapshot_applied"})


class HqSync:
    """Owns the HQ link, the applier and the relay. ``run()`` is started in the gateway's
    task group; ``aclose()`` stops it."""

    def __init__(
        self, config: Config, *, db: Database, writer: Writer, clock: Clock, metrics: Metrics
    ) -> None:
        hq = config.hq
        self._config = config
        self._db = db
        self._writer = writer
        self._clock = clock
        self._metrics = metrics
        self._store = config.store_id
        prefix = config.broker.topic_prefix
        self._prefix = prefix
        self._response_topic = f"{prefix}/{config.store_id}/hq/response"
        self._resync_topic = f"{prefix}/hq/requests/resync"
        self._receipt_topic = f"{prefix}/{config.store_id}/hq/receipts"
        self.keyring = Keyring((k.id, bytes.fromhex(k.public_key)) for k in hq.trusted_keys)
        self.applier = StreamApplier(db, config.store_id, self.keyring, clock=clock)
        status_topic = f"{prefix}/{config.store_id}/gateway/status"
        self.link = MqttLink(
            name="hq",
            host=hq.host,
            port=hq.port,
            client_id=hq.client_id or f"moments-store-{config.store_id}",
            subscriptions=[(f"{prefix}/{config.store_id}/hq/+", 1)],
            keepalive=hq.keepalive_s,
            connect_timeout=hq.connect_timeout_s,
            backoff=Backoff(hq.backoff_min_s, hq.backoff_max_s),
            session_expiry=hq.session_expiry_s,
            username=hq.username,
            password=hq.password,
            will=Will(status_topic, b'{"v":1,"state":"offline"}'),
            birth=Will(status_topic, b'{"v":1,"state":"online"}'),
            tls=Tls(hq.ca_file, hq.cert_file, hq.key_file) if hq.tls else None,
            inbox_size=4096,
        )
        self.relay = OutboxRelay(
            db,
            writer,
            self.link,
            store_id=config.store_id,
            prefix=prefix,
            perishable_expiry_s=hq.perishable_expiry_s,
            max_bytes=hq.outbox_budget_mb << 20,
            receipt_timeout_s=hq.receipt_timeout_s if hq.delete_on == "receipt" else None,
            clock=clock,
        )
        self._applied = metrics.sync_messages
        self._rejected = metrics.sync_rejected
        self._lag = metrics.sync_lag
        self._receipt_rejects = RateLimitedLog(log)
        self._closed = asyncio.Event()

    async def run(self) -> None:
        """Restore the keyring from the store, then run link, consumer and relay together."""
        restore_keyring(self.keyring, self._db.keyring_records())
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self.link.run(), name="hq-link")
            tasks.create_task(self.relay.run(), name="outbox-relay")
            tasks.create_task(self._consume(), name="hq-consumer")
            tasks.create_task(self._keep_asking(), name="hq-resync")
            tasks.create_task(self._sweep(), name="tombstone-sweep")

    async def aclose(self) -> None:
        await self.relay.aclose()
        await self.link.aclose()
        self._closed.set()

    def status(self) -> dict[str, Any]:
        return {**self.link.status(), "outbox": self.relay.status(), "keys": self.keyring.active()}

    async def _consume(self) -> None:
        inbox = self.link.inbox
        closed = asyncio.create_task(self._closed_wait())
        try:
            while True:
                getter = asyncio.create_task(inbox.get())
                done, _ = await asyncio.wait({getter, closed}, return_when=asyncio.FIRST_COMPLETED)
                if closed in done:
                    getter.cancel()
                    return
                await self._handle(getter.result())
        finally:
            closed.cancel()

    async def _closed_wait(self) -> None:
        await self._closed.wait()

    async def _handle(self, message: InboundMessage) -> None:
        if message.topic == self._receipt_topic:
            self._take_receipt(message.payload)
            return
        outcome = self.applier.plan(message.payload)
        if outcome.op is None:
            self._rejected.labels(stream=outcome.stream, reason=outcome.reason).inc()
            return
        try:
            result = await self._writer.write(outcome.op)
        except StoreError as exc:
            self._rejected.labels(stream=outcome.stream, reason="store_failed").inc()
            log.error(
                "sync message not applied", extra={"stream": outcome.stream, "error": str(exc)}
            )
            return
        self._applied.labels(stream=outcome.stream, result=str(result)).inc()
        if outcome.issued_at > 0 and result in _LANDED:  # not a redelivery or a gap
            lag_s = self._clock.now() - outcome.issued_at / 1000
            self._lag.labels(stream=outcome.stream).set(max(0.0, lag_s))
        request = self.applier.committed(outcome, result)
        if request is not None:
            await self._ask(request)

    def _take_receipt(self, wire: bytes) -> None:
        """HQ's signed receipt for outbox entries: verified, then handed to the relay."""
        try:
            receipt = open_receipt(wire, self.keyring, self._store)
        except SyncError as exc:
            self._rejected.labels(stream="receipts", reason=exc.reason).inc()
            self._receipt_rejects.warning(
                exc.reason, "HQ receipt rejected", why=exc.reason, detail=exc.detail
            )
            return
        self._applied.labels(stream="receipts", result="applied").inc()
        self.relay.receipt(receipt.ranges)

    async def _keep_asking(self) -> None:
        """A stopped stream asks again every ``RESYNC_RETRY_S`` until HQ has filled it: a
        request or its answer may have been lost with the link."""
        while not self._closed.is_set():
            try:
                async with asyncio.timeout(RESYNC_RETRY_S):
                    await self._closed.wait()
            except TimeoutError:
                pass
            if not self.link.is_up:
                continue
            for stream in STREAMS:
                try:
                    state = self._db.sync_state(stream)
                except StoreError:
                    continue
                if state.stopped:
                    await self._ask(self.applier.resync_request(_stream(stream)))

    async def _sweep(self) -> None:
        """Once an hour, drop tombstones older than ``hq.tombstone_days``; the applier then
        forces a full resync of the shopper streams (the stopped streams are asked for by
        ``_keep_asking``)."""
        retention_s = self._config.hq.tombstone_days * 86_400.0
        while not self._closed.is_set():
            try:
                swept = await self._writer.write(
                    sweep_tombstones_op(self._db, self._clock.now(), retention_s=retention_s)
                )
            except StoreError as exc:
                log.error("tombstone sweep failed", extra={"error": str(exc)})
            else:
                if swept.dropped:
                    log.info(
                        "expired tombstones dropped; full resync forced",
                        extra={"dropped": len(swept.dropped), "streams": list(swept.resync)},
                    )
            try:
                async with asyncio.timeout(SWEEP_EVERY_S):
                    await self._closed.wait()
            except TimeoutError:
                pass

    async def _ask(self, request: ResyncRequest) -> None:
        try:
            await self.link.publish_acked(
                self._resync_topic,
                encode_resync(request),
                qos=1,
                response_topic=self._response_topic,
                correlation=os.urandom(16),
            )
        except LinkError as exc:
            # The stream stays stopped and _keep_asking asks again.
            log.warning(
                "resync request not sent",
                extra={"stream": request.stream, "since": request.since, "error": str(exc)},
            )
            return
        log.info("resync requested", extra={"stream": request.stream, "since": request.since})
