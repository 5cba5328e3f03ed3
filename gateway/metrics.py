"""Prometheus metrics, one registry per gateway instance (no module-level globals).

Two kinds live in the registry:

- counters, gauges and histograms that the code moves as things happen (:class:`Metrics`);
- gauges read from the gateway's parts when Prometheus scrapes (:class:`GatewayCollector`):
  the outbox, the HQ streams' positions, the links' and the radio's states, the LMDB
  environment's size, and the error counts the parts keep. Nothing is hooked into the parts
  for these; a scrape costs a few short read transactions (no table scans) and the
  ``status()`` of each link.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.errors import StoreError
from gateway.linkstate import LinkState
from gateway.store import Database
from gateway.sync.envelope import STREAMS
from gateway.sync.outbox import depth, oldest_age, outbox_bytes

__all__ = ["CONTENT_TYPE", "GatewayCollector", "Metrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST

# Decisions take microseconds to a few milliseconds; a template render up to the 50 ms limit.
_FAST_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)
_RADIO_STATES = ("starting", "scanning", "unavailable", "stopped", "disabled")


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.node_messages = Counter(
            "moments_node_messages", "Scanner-node messages accepted", registry=r
        )
        self.adverts = Counter("moments_adverts", "Advertisements received", ["source"], registry=r)
        self.dropped = Counter(
            "moments_dropped",
            "Inputs dropped, by where they came from and why",
            ["source", "reason"],
            registry=r,
        )
        self.sightings = Counter(
            "moments_sightings", "Advertisements by who they resolved to", ["kind"], registry=r
        )
        self.presence_events = Counter(
            "moments_presence_events", "Zone presence events", ["kind"], registry=r
        )
        self.decisions = Counter("moments_decisions", "Kiosk decisions", ["kind"], registry=r)
        self.decision_seconds = Histogram(
            "moments_decision_seconds",
            "Time to decide what a kiosk shows (the engine, not the render)",
            buckets=_FAST_BUCKETS,
            registry=r,
        )
        self.renders = Counter("moments_renders", "Templates rendered", registry=r)
        self.render_seconds = Histogram(
            "moments_render_seconds",
            "Time to render a kiosk card or fragment",
            buckets=_FAST_BUCKETS,
            registry=r,
        )
        self.sse_clients = Gauge(
            "moments_sse_clients",
            "Live Server-Sent Events streams open, by stream (kiosk, staff)",
            ["stream"],
            registry=r,
        )
        for stream in ("kiosk", "staff"):
            self.sse_clients.labels(stream=stream)
        self.link_up = Gauge("moments_link_up", "1 when the MQTT link is up", ["link"], registry=r)
        self.anonymous_devices = Gauge(
            "moments_anonymous_devices",
            "Distinct anonymous devices per zone in the current salt period",
            ["zone"],
            registry=r,
        )

        self.sync_messages = Counter(
            "moments_sync_messages",
            "HQ messages committed, by stream and result (applied, duplicate, gap, ...)",
            ["stream", "result"],
            registry=r,
        )
        self.sync_lag = Gauge(
            "moments_sync_lag_seconds",
            "Seconds from HQ issuing the last message of each stream that this store applied "
            "to its commit (HQ's clock against the store's; redeliveries left out)",
            ["stream"],
            registry=r,
        )
        self.sync_rejected = Counter(
            "moments_sync_rejected",
            "HQ messages rejected, by stream and reason (nothing of them applied)",
            ["stream", "reason"],
            registry=r,
        )
        self.consent_changes = Counter(
            "moments_consent_changes", "Consent decisions recorded on this store", registry=r
        )
        self.api_requests = Counter(
            "moments_api_requests",
            "API requests by endpoint and status",
            ["endpoint", "status"],
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _Status(Protocol):
    def status(self) -> dict[str, Any]: ...


class _RelayCounts(Protocol):
    """What the outbox relay counts (its attributes: its ``status()`` reads the store)."""

    failures: int
    expired: int
    dropped_over_budget: int


class GatewayCollector(Collector):
    """Reads the gateway's parts at scrape time.

    ``links`` maps a link's name (``store``, ``hq``) to anything with ``status()`` (an
    :class:`~gateway.mqtt.MqttLink`); ``radio`` is the radio source or None when disabled;
    ``relay`` the outbox relay when HQ sync runs. ``now`` is the gateway's clock.

    The HQ streams carry no time of application, so ``moments_sync_stream_idle_seconds``
    counts from when this collector first saw the stream's current sequence: it restarts
    at zero with the process, and moves by the scrape interval at worst.
    """

    def __init__(
        self,
        *,
        db: Database,
        links: Mapping[str, _Status],
        radio: _Status | None,
        relay: _RelayCounts | None,
        now: Callable[[], float],
        sync_enabled: bool,
    ) -> None:
        self._db = db
        self._links = links
        self._radio = radio
        self._relay = relay
        self._now = now
        self._sync_enabled = sync_enabled
        self._seen: dict[str, tuple[int, float]] = {}  # stream -> (last, first seen at)
        self._scrape_errors: dict[str, int] = {}

    def describe(self) -> Iterable[Metric]:
        # Nothing up front: the families are read at scrape time, and their names are not
        # among the registry's (``auto_describe`` would call collect() at registration).
        return ()

    def collect(self) -> Iterator[Metric]:
        now = self._now()
        yield from self._links_and_radio()
        yield from self._guarded("store", lambda: list(self._store()))
        yield from self._guarded("outbox", lambda: list(self._outbox(now)))
        if self._sync_enabled:
            yield from self._guarded("sync", lambda: list(self._streams(now)))
        yield self._errors()

    def _guarded(self, part: str, read: Callable[[], list[Metric]]) -> list[Metric]:
        """A part that cannot be read (the store closed, a read failing) is left out of
        this scrape and counted under ``moments_errors_total{component="metrics"}``."""
        try:
            return read()
        except StoreError:
            self._scrape_errors[part] = self._scrape_errors.get(part, 0) + 1
            return []

    def _links_and_radio(self) -> Iterator[Metric]:
        links = GaugeMetricFamily(
            "moments_link_state",
            "1 for each MQTT link's current state (idle, connecting, up, backoff, closed)",
            labels=["link", "state"],
        )
        for name, link in self._links.items():
            current = link.status()["state"]
            for state in LinkState:
                links.add_metric([name, state.value], 1.0 if state.value == current else 0.0)
        yield links
        radio = GaugeMetricFamily(
            "moments_radio_state", "1 for the radio scanner's current state", labels=["state"]
        )
        scanner = "disabled" if self._radio is None else self._radio.status()["state"]
        for name in _RADIO_STATES:
            radio.add_metric([name], 1.0 if name == scanner else 0.0)
        yield radio

    def _store(self) -> Iterator[Metric]:
        stat = self._db.stat()
        used, size = stat["used_bytes"], stat["map_size"]
        yield GaugeMetricFamily(
            "moments_store_used_bytes", "Bytes of the LMDB map in use", value=used
        )
        yield GaugeMetricFamily(
            "moments_store_map_size_bytes", "Size of the LMDB map (its upper bound)", value=size
        )
        yield GaugeMetricFamily(
            "moments_store_map_used_ratio",
            "Share of the LMDB map in use (the store is full at 1)",
            value=used / size if size else 0.0,
        )
        yield GaugeMetricFamily(
            "moments_store_readers", "LMDB reader slots in use", value=stat["readers"]
        )

    def _outbox(self, now: float) -> Iterator[Metric]:
        age = oldest_age(self._db, now)
        yield GaugeMetricFamily(
            "moments_outbox_depth", "Events waiting in the outbox for HQ", value=depth(self._db)
        )
        yield GaugeMetricFamily(
            "moments_outbox_bytes", "Bytes held by the outbox", value=outbox_bytes(self._db)
        )
        yield GaugeMetricFamily(
            "moments_outbox_oldest_age_seconds",
            "Age of the oldest event waiting in the outbox (0 when empty)",
            value=0.0 if age is None else age,
        )

    def _streams(self, now: float) -> Iterator[Metric]:
        last = GaugeMetricFamily(
            "moments_sync_stream_last_seq",
            "Last applied sequence of each HQ stream",
            labels=["stream"],
        )
        idle = GaugeMetricFamily(
            "moments_sync_stream_idle_seconds",
            "Seconds since this process saw the HQ stream's sequence move",
            labels=["stream"],
        )
        stopped = GaugeMetricFamily(
            "moments_sync_stream_stopped",
            "1 while an HQ stream waits for missing messages or a snapshot",
            labels=["stream"],
        )
        for stream in STREAMS:
            state = self._db.sync_state(stream)
            seen = self._seen.get(stream)
            if seen is None or seen[0] != state.last:
                seen = self._seen[stream] = (state.last, now)
            last.add_metric([stream], state.last)
            idle.add_metric([stream], max(0.0, now - seen[1]))
            stopped.add_metric([stream], 1.0 if state.stopped else 0.0)
        yield from (last, idle, stopped)

    def _errors(self) -> Metric:
        errors = CounterMetricFamily(
            "moments_errors",
            "Errors by component and reason, as the gateway's parts count them",
            labels=["component", "reason"],
        )
        for name, link in self._links.items():
            errors.add_metric([f"{name}_link", "inbox_full"], link.status().get("dropped", 0))
        if self._radio is not None:
            status = self._radio.status()
            errors.add_metric(["radio", "restart"], status.get("restarts", 0))
            errors.add_metric(["radio", "queue_full"], status.get("dropped", 0))
        if self._relay is not None:
            relay = self._relay
            errors.add_metric(["outbox", "publish_failed"], relay.failures)
            errors.add_metric(["outbox", "expired"], relay.expired)
            errors.add_metric(["outbox", "over_budget"], relay.dropped_over_budget)
        for part, count in sorted(self._scrape_errors.items()):
            errors.add_metric(["metrics", f"{part}_unreadable"], count)
        return errors
