"""The outbox relay: publishes outbox entries to HQ in order, deleting each once HQ has it.

One pass, while the link is up: read the pending entries after the last one sent, publish them
with ``publish_acked`` to ``{prefix}/{store}/events/{type}`` at QoS 1 (at most ``window``
waiting for their PUBACK). What "HQ has it" means is the relay's ``receipt_timeout_s``:

* ``None``: the broker's PUBACK. Entries are deleted, oldest first, as PUBACKs arrive. Right
  only for a broker that saves a message before acknowledging it; Mosquitto does not (it
  saves every ``autosave_interval``), so a broker crash would lose what it acknowledged.
* a number of seconds (the gateway's default): HQ's signed receipt, which ``moments hq serve``
  sends after the events are committed in its ledger (``receipt()`` takes it). A PUBACK only
  moves the entry to "awaiting receipt"; the receipt deletes it. When the oldest entry has
  waited ``receipt_timeout_s`` after its PUBACK, the pass ends and the next one sends again
  from the oldest entry still in the outbox: a broker that lost what it acknowledged, or a
  broker with no subscriber yet to hand it to, costs a delay, never an event. At most
  ``max_unreceipted`` entries are out without a receipt.

Nothing is deleted before that point, so a crash or a lost link never loses an event; it only
sends some again.

A pass ends on any failure (the link dropped, a PUBACK did not come within ``ack_timeout_s``,
the broker refused a message, a store write failed). The relay then waits a jittered backoff,
waits for the link, and starts the next pass from the oldest entry still in the outbox: order
is preserved, and entries sent again (counted as ``redelivered``) carry the same ``(store,
seq)`` idempotency key, so HQ's de-duplication turns at-least-once into exactly-once.

Perishable entries carry an MQTT 5 message expiry (``perishable_expiry_s``, or less if the entry
has its own deadline); one already past its deadline is deleted unsent (``expired``). With a
``max_bytes`` budget the relay drops perishable entries, oldest first, whenever the outbox is
over it, whether or not the link is up (``dropped_over_budget``).

Call ``wake()`` after an enqueue so the relay does not wait for its next poll. Everything runs
on the event loop; the link is any object shaped like :class:`~gateway.mqtt.link.MqttLink`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import OrderedDict, deque
from collections.abc import Iterable
from typing import Any, Final, NamedTuple, Protocol

from beacons.backoff import Backoff
from gateway.clock import Clock, SystemClock
from gateway.errors import LinkDownError, LinkError, StoreError
from gateway.store.database import Database
from gateway.store.writer import Writer
from gateway.sync.outbox import (
    PendingEvent,
    depth,
    enforce_budget_op,
    merge_ranges,
    oldest_age,
    outbox_bytes,
    pending,
    remove_op,
    remove_ranges_op,
)

__all__ = ["AckedLink", "OutboxRelay"]

log = logging.getLogger(__name__)

_LINK_POLL_S: Final = 0.1  # how often a relay waiting for its link looks at it


class AckedLink(Protocol):
    """What the relay needs of an MQTT link."""

    @property
    def is_up(self) -> bool: ...

    def publish_acked(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        expiry_s: int | None = None,
        response_topic: str | None = None,
        correlation: bytes | None = None,
    ) -> asyncio.Future[None]: ...


class _Sent(NamedTuple):
    seq: int
    deadline: float  # clock.monotonic() by which its PUBACK must have come
    ack: asyncio.Future[None]


class OutboxRelay:
    """Owns the publishing side of the outbox. ``run()`` is its task; ``aclose()`` stops it."""

    def __init__(
        self,
        db: Database,
        writer: Writer,
        link: AckedLink,
        *,
        store_id: str,
        prefix: str,
        window: int = 64,
        perishable_expiry_s: int = 3600,
        max_bytes: int | None = None,
        ack_timeout_s: float = 30.0,
        receipt_timeout_s: float | None = None,
        max_unreceipted: int = 4096,
        poll_s: float = 1.0,
        backoff: Backoff | None = None,
        clock: Clock | None = None,
    ) -> None:
        if not 1 <= window <= 1024:
            raise ValueError(f"window must be within 1..1024, not {window}")
        self._db = db
        self._writer = writer
        self._link = link
        self._store_id = store_id
        self._prefix = prefix.rstrip("/")
        self._window = window
        self._perishable_expiry_s = perishable_expiry_s
        self._max_bytes = max_bytes
        self._ack_timeout_s = ack_timeout_s
        self._receipt_timeout_s = receipt_timeout_s
        self._max_unreceipted = max(window, max_unreceipted)
        self._poll_s = poll_s
        self._backoff = backoff or Backoff(0.2, 30.0)
        self._clock = clock or SystemClock()
        self._signal = asyncio.Event()  # wake(), an acknowledgement, aclose()
        self._closed = asyncio.Event()
        self._inflight: deque[_Sent] = deque()
        # Acknowledged by the broker, waiting for HQ's receipt: seq -> deadline, in PUBACK order.
        self._awaiting: OrderedDict[int, float] = OrderedDict()
        self._early: set[int] = set()  # receipted while their PUBACK was still to come
        self._receipts: list[tuple[int, int]] = []  # ranges receipted, not yet deleted
        self._highest_sent = 0
        self.published = 0
        self.acked = 0
        self.redelivered = 0
        self.dropped_over_budget = 0
        self.expired = 0
        self.receipted = 0
        self.failures = 0
        self.last_error = ""

    # ----- public -----

    def wake(self) -> None:
        """Something was enqueued: look at the outbox now rather than at the next poll."""
        self._signal.set()

    def receipt(self, ranges: Iterable[tuple[int, int]]) -> None:
        """HQ's verified receipt: the entries within these inclusive ranges are recorded at HQ.
        They are deleted by the relay's task, in or between passes."""
        self._receipts.extend(ranges)
        self._signal.set()

    def status(self) -> dict[str, Any]:
        age = oldest_age(self._db, self._clock.now())
        out: dict[str, Any] = {
            "depth": depth(self._db),
            "bytes": outbox_bytes(self._db),
            "oldest_age_s": None if age is None else round(age, 3),
            "inflight": len(self._inflight),
            "awaiting_receipt": len(self._awaiting),
            "receipted": self.receipted,
            "published": self.published,
            "acked": self.acked,
            "redelivered": self.redelivered,
            "dropped_over_budget": self.dropped_over_budget,
            "expired": self.expired,
            "failures": self.failures,
        }
        if self.last_error:
            out["last_error"] = self.last_error
        return out

    async def run(self) -> None:
        """Relay until ``aclose()``: passes while the link is up, backoff after a failure."""
        while not self._closed.is_set():
            await self._enforce_budget()
            await self._take_receipts()
            if not self._link.is_up:
                await self._pause(_LINK_POLL_S)
                continue
            try:
                await self._pass()
            except (LinkError, StoreError) as exc:
                self._forget_pass()
                self.failures += 1
                self.last_error = str(exc)
                level = logging.INFO if isinstance(exc, LinkDownError) else logging.WARNING
                log.log(
                    level,
                    "outbox relay pass ended",
                    extra={"error": self.last_error, "acked": self.acked},
                )
                await self._pause(self._backoff.next())
        self._forget_pass()

    async def aclose(self) -> None:
        self._closed.set()
        self._signal.set()

    # ----- one pass -----

    async def _pass(self) -> None:
        """Publish from the oldest pending entry on; returns only when closed, else raises."""
        inflight, awaiting = self._inflight, self._awaiting
        self._forget_pass()
        after = 0
        done: list[int] = []
        while not self._closed.is_set():
            self._signal.clear()
            await self._take_receipts()
            acked = 0
            while inflight and inflight[0].ack.done():
                sent = inflight.popleft()
                _raise_if_failed(sent)
                acked += 1
                if self._receipt_timeout_s is None:
                    done.append(sent.seq)
                elif sent.seq in self._early:
                    self._early.discard(sent.seq)
                else:
                    awaiting[sent.seq] = self._clock.monotonic() + self._receipt_timeout_s
            self.acked += acked
            if done:
                await self._writer.write(remove_op(self._db, *done))
                done = []
                if acked:
                    self._backoff.reset()
            await self._enforce_budget()
            if not self._link.is_up:
                raise LinkDownError("link is down")
            room = min(
                self._window - len(inflight),
                self._max_unreceipted - len(inflight) - len(awaiting),
            )
            if room > 0:
                now_ms = int(self._clock.now() * 1000)
                for entry in pending(self._db, room, after=after):
                    after = entry.seq
                    if entry.perishable and entry.expires_at and entry.expires_at <= now_ms:
                        done.append(entry.seq)
                        self.expired += 1
                        continue
                    inflight.append(self._publish(entry, now_ms))
            if done:
                continue  # expired entries to delete
            await self._wait(self._overdue())

    def _overdue(self) -> float:
        """Seconds until the oldest PUBACK or receipt is overdue; raises once one is."""
        now = self._clock.monotonic()
        timeout = self._poll_s
        if self._inflight:
            timeout = self._inflight[0].deadline - now
            if timeout <= 0:
                raise LinkError(
                    f"no PUBACK for outbox entry {self._inflight[0].seq} "
                    f"within {self._ack_timeout_s} s"
                )
        if self._awaiting:
            seq, deadline = next(iter(self._awaiting.items()))
            if deadline <= now:
                raise LinkError(
                    f"no receipt from HQ for outbox entry {seq} within "
                    f"{self._receipt_timeout_s} s of its PUBACK: sending again"
                )
            timeout = min(timeout, deadline - now)
        return timeout

    async def _wait(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(min(seconds, self._poll_s)):
                await self._signal.wait()

    async def _take_receipts(self) -> None:
        """Delete what HQ's receipts cover; entries still on their way to the broker are
        remembered so their PUBACK does not start a wait for a receipt that already came."""
        if not self._receipts:
            return
        spans = merge_ranges(self._receipts)
        self._receipts = []
        removed = await self._writer.write(remove_ranges_op(self._db, spans))
        self.receipted += removed
        for first, last in spans:
            for seq in [seq for seq in self._awaiting if first <= seq <= last]:
                del self._awaiting[seq]
            self._early.update(s.seq for s in self._inflight if first <= s.seq <= last)
        if removed:
            self._backoff.reset()

    def _forget_pass(self) -> None:
        """A new pass sends everything still in the outbox again: nothing is waited for."""
        self._inflight.clear()
        self._awaiting.clear()
        self._early.clear()

    def _publish(self, entry: PendingEvent, now_ms: int) -> _Sent:
        expiry: int | None = None
        if entry.perishable:
            expiry = self._perishable_expiry_s
            if entry.expires_at:
                expiry = min(expiry, max(1, math.ceil((entry.expires_at - now_ms) / 1000)))
        ack = self._link.publish_acked(
            f"{self._prefix}/{entry.topic}", entry.payload, qos=1, expiry_s=expiry
        )
        ack.add_done_callback(self._on_ack)
        self.published += 1
        if entry.seq <= self._highest_sent:
            self.redelivered += 1
        self._highest_sent = max(self._highest_sent, entry.seq)
        return _Sent(entry.seq, self._clock.monotonic() + self._ack_timeout_s, ack)

    def _on_ack(self, ack: asyncio.Future[None]) -> None:
        if not ack.cancelled():
            ack.exception()  # retrieved here; a failed pass may have abandoned this future
        self._signal.set()

    # ----- budget and waiting -----

    async def _enforce_budget(self) -> None:
        if self._max_bytes is None or outbox_bytes(self._db) <= self._max_bytes:
            return
        dropped = await self._writer.write(enforce_budget_op(self._db, self._max_bytes))
        if dropped:
            self.dropped_over_budget += dropped
            log.warning(
                "outbox over budget: perishable events dropped",
                extra={"dropped": dropped, "max_bytes": self._max_bytes},
            )

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._closed.wait()


def _raise_if_failed(sent: _Sent) -> None:
    if sent.ack.cancelled():
        raise LinkDownError(f"publish of outbox entry {sent.seq} was cancelled")
    exc = sent.ack.exception()
    if isinstance(exc, LinkDownError):
        raise LinkDownError(f"outbox entry {sent.seq} not acknowledged: {exc}") from exc
    if exc is not None:
        raise LinkError(f"outbox entry {sent.seq} not acknowledged: {exc}") from exc
