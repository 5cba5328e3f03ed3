"""Prometheus metrics, one registry per gateway instance (no module-level globals)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE", "Metrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST


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
        self.renders = Counter("moments_renders", "Templates rendered", registry=r)
        self.sse_clients = Gauge("moments_sse_clients", "Live kiosk streams open", registry=r)
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
