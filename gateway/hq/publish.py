"""Publishing HQ's records to stores: number, seal and log per store, send at QoS 1, await the
broker's acknowledgements.

Per store the messages are issued in one ledger transaction (logged before they are sent, see
``gateway.hq.ledger``), then sent through an :class:`~gateway.hq.mqtt.AckWindow`, so the next
store's messages are issued while the last ones' PUBACKs are still coming. A lost connection or
a stalled broker ends the run with an ``error`` in the summary: what was issued but not
acknowledged is still in the log, and a store picks it up by resync when the next message
shows it the gap.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final

from gateway.errors import LinkError
from gateway.hq.defaults import DEFAULT_BATCH, DEFAULT_PREFIX, DEFAULT_TIMEOUT_S, DEFAULT_WINDOW
from gateway.hq.errors import InputError
from gateway.hq.keys import Signer
from gateway.hq.ledger import Issued, Ledger
from gateway.hq.mqtt import AckWindow, MqttSession
from gateway.hq.records import Op, check_address

__all__ = [
    "PROGRESS_EVERY",
    "PublishRequest",
    "PublishSummary",
    "publish",
    "publish_to_broker",
    "stores_to_publish",
    "stream_topic",
]

PROGRESS_EVERY: Final = 1000


def stream_topic(prefix: str, store: str, stream: str) -> str:
    return f"{prefix}/{store}/hq/{stream}"


@dataclass(frozen=True, slots=True)
class PublishRequest:
    """What to publish. ``records`` ``None`` with ``snapshot`` re-sends HQ's current state."""

    stores: tuple[str, ...]
    stream: str
    records: tuple[dict[str, Any], ...] | None
    op: Op = "put"
    snapshot: bool = False
    batch: int = DEFAULT_BATCH

    def __post_init__(self) -> None:
        if not self.stores:
            raise ValueError("no stores to publish to")
        if self.batch < 1:
            raise ValueError("batch must be at least 1")
        if self.records is None and not self.snapshot:
            raise ValueError("a delta needs records")
        if self.snapshot and self.op != "put":
            raise ValueError("a snapshot carries records, not deletes")
        for store in self.stores:
            check_address(store, self.stream)


@dataclass(frozen=True, slots=True)
class PublishSummary:
    stream: str
    kind: str
    op: str
    records: int
    messages: int
    acked: int
    seconds: float
    stores: dict[str, tuple[int, int]] = field(default_factory=dict)
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error and self.acked == self.messages

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ok": self.ok,
            "stream": self.stream,
            "kind": self.kind,
            "op": self.op,
            "records": self.records,
            "messages": self.messages,
            "acked": self.acked,
            "unacked": self.messages - self.acked,
            "seconds": round(self.seconds, 3),
            "stores": {s: {"first_seq": a, "last_seq": b} for s, (a, b) in self.stores.items()},
        }
        if self.error:
            out["error"] = self.error
        return out


async def publish(
    request: PublishRequest,
    *,
    ledger: Ledger,
    signer: Signer,
    session: MqttSession,
    prefix: str = DEFAULT_PREFIX,
    window: int = DEFAULT_WINDOW,
    ack_wait_s: float = DEFAULT_TIMEOUT_S,
    progress: Callable[[int], None] | None = None,
) -> PublishSummary:
    """Issue and send ``request`` to each of its stores over a connected ``session``."""
    started = time.monotonic()

    def on_ack(acked: int) -> None:
        if progress is not None and acked % PROGRESS_EVERY == 0:
            progress(acked)

    acks = AckWindow(session, size=window, timeout=ack_wait_s, on_ack=on_ack)
    stores: dict[str, tuple[int, int]] = {}
    messages = 0
    error = ""
    try:
        for store in request.stores:
            issued = await ledger.run(partial(_issue, ledger, request, store, signer))
            stores[store] = (issued.first_seq, issued.last_seq)
            messages += len(issued.wires)
            topic = stream_topic(prefix, store, request.stream)
            for wire in issued.wires:
                await acks.send(topic, wire)
        await acks.drain()
    except LinkError as exc:
        error = str(exc)
    return PublishSummary(
        stream=request.stream,
        kind="snapshot" if request.snapshot else "delta",
        op=request.op,
        records=0 if request.records is None else len(request.records),
        messages=messages,
        acked=acks.acked,
        seconds=time.monotonic() - started,
        stores=stores,
        error=error,
    )


def _issue(ledger: Ledger, request: PublishRequest, store: str, signer: Signer) -> Issued:
    if request.snapshot:
        return ledger.issue_snapshot(
            store, request.stream, signer, records=request.records, batch=request.batch
        )
    assert request.records is not None
    return ledger.issue_delta(
        store, request.stream, request.op, request.records, signer, batch=request.batch
    )


async def publish_to_broker(
    request: PublishRequest,
    *,
    ledger: Ledger,
    signer: Signer,
    broker: tuple[str, int],
    prefix: str = DEFAULT_PREFIX,
    ack_wait_s: float = DEFAULT_TIMEOUT_S,
    progress: Callable[[int], None] | None = None,
) -> PublishSummary:
    """Connect (``LinkError`` before anything is issued if the broker is not there), publish,
    disconnect."""
    host, port = broker
    session = MqttSession(
        host=host,
        port=port,
        client_id=f"moments-hq-pub-{secrets.token_hex(4)}",
        connect_timeout=min(ack_wait_s, 10.0),
        max_inflight=DEFAULT_WINDOW,
    )
    await session.connect()
    try:
        return await publish(
            request,
            ledger=ledger,
            signer=signer,
            session=session,
            prefix=prefix,
            ack_wait_s=ack_wait_s,
            progress=progress,
        )
    finally:
        await session.aclose()


def stores_to_publish(ledger: Ledger, named: Sequence[str], all_stores: bool) -> tuple[str, ...]:
    """The stores named, or with ``all_stores`` every store HQ has published to."""
    if not all_stores:
        return tuple(dict.fromkeys(named))
    known = ledger.stores()
    if not known:
        raise InputError("HQ has not published to any store yet: name them with --store")
    return tuple(known)
