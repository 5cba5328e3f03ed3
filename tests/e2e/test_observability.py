"""``/readyz`` and ``/metrics`` through the real app on a real socket, with a real broker
(or none) and a real LMDB store."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import msgspec
import pytest

from gateway.config import Config, TrustedKeyConfig
from tests.support.broker import Broker, free_port
from tests.support.peers import ALICE, Publisher, serve


async def until_ready(client: object, want: int, timeout: float = 10.0) -> dict[str, object]:
    async with asyncio.timeout(timeout):
        while True:
            response = await client.get("/readyz")  # type: ignore[attr-defined]
            if response.status_code == want:
                body: dict[str, object] = response.json()
                return body
            await asyncio.sleep(0.05)


@pytest.mark.mqtt
async def test_ready_with_the_broker_and_metrics_after_traffic(
    broker: Broker, publisher: Publisher, make_config: Callable[..., Config]
) -> None:
    config = make_config(broker.port, MOMENTS_RADIO__ENABLED="false")
    async with serve(config) as served:
        body = await until_ready(served.client, 200)
        assert body["ready"] is True and body["reasons"] == []
        components = body["components"]
        assert isinstance(components, dict)
        assert components["store"]["ready"] is True
        assert components["broker"] == {"ready": True, "state": "up"}
        assert components["radio"]["state"] == "disabled"
        assert components["hq"]["state"] == "not_configured"
        health = await served.client.get("/healthz")
        assert health.status_code == 200
        # The tick runs: systemd's watchdog is pinged; a tick late by a minute stops that.
        gateway = served.gateway
        assert gateway.beating()
        gateway.ticked_at = time.monotonic() - 60  # as if the tick had stopped a minute ago
        assert not gateway.beating()
        async with asyncio.timeout(5):  # the next tick beats again
            while not gateway.beating():
                await asyncio.sleep(0.05)

        publisher.adverts("node-entrance", ALICE, count=5)
        publisher.raw("node-entrance", b"not a batch")
        await asyncio.sleep(0.5)
        offer = await served.client.get(
            "/kiosk/kiosk-1/offer", headers=await served.kiosk_headers()
        )
        assert offer.status_code == 200

        text = (await served.client.get("/metrics")).text
        for name in (
            "moments_adverts_total",
            "moments_dropped_total",
            "moments_presence_events_total",
            "moments_decisions_total",
            "moments_decision_seconds_bucket",
            "moments_renders_total",
            "moments_render_seconds_bucket",
            'moments_sse_clients{stream="kiosk"}',
            'moments_sse_clients{stream="staff"} 0.0',
            "moments_consent_changes_total",
            "moments_outbox_depth",
            "moments_outbox_oldest_age_seconds",
            'moments_link_state{link="store",state="up"} 1.0',
            'moments_radio_state{state="disabled"} 1.0',
            "moments_store_used_bytes",
            "moments_store_map_size_bytes",
            "moments_store_map_used_ratio",
            "moments_errors_total",
        ):
            assert name in text, name
        assert 'moments_adverts_total{source="node"}' in text
        assert "moments_dropped_total{" in text
        # HQ sync is off: no stream positions.
        assert "moments_sync_stream_last_seq" not in text


async def test_not_ready_without_broker_when_the_radio_is_off(
    make_config: Callable[..., Config],
) -> None:
    config = make_config(free_port(), MOMENTS_RADIO__ENABLED="false")
    async with serve(config) as served:
        body = await until_ready(served.client, 503)
        assert body["ready"] is False
        reasons = body["reasons"]
        assert isinstance(reasons, list) and len(reasons) == 1
        reason = str(reasons[0])
        assert "no sensing source" in reason and "disabled" in reason
        assert body["components"]["store"]["ready"] is True  # type: ignore[index]
        # Alive all the same.
        health = await served.client.get("/healthz")
        assert health.status_code == 200 and health.json()["status"] == "degraded"
        openapi = (await served.client.get("/openapi.json")).json()
        assert set(openapi["paths"]["/readyz"]["get"]["responses"]) == {"200", "503"}


async def test_a_store_that_serves_without_sensing_is_ready_and_degraded(
    make_config: Callable[..., Config],
) -> None:
    config = make_config(
        free_port(), MOMENTS_RADIO__ENABLED="false", MOMENTS_HTTP__READY_WITHOUT_SENSING="true"
    )
    async with serve(config) as served:
        body = await until_ready(served.client, 200)
        assert body["ready"] is True and body["reasons"] == []
        degraded = body["degraded"]
        assert isinstance(degraded, list) and "no sensing source" in str(degraded[0])


async def test_sync_streams_and_hq_link_state_when_hq_is_on(
    make_config: Callable[..., Config],
) -> None:
    base = make_config(free_port(), MOMENTS_RADIO__ENABLED="false")
    hq = msgspec.structs.replace(
        base.hq,
        enabled=True,
        tls=False,
        port=free_port(),
        trusted_keys=[TrustedKeyConfig(id="hq-1", public_key="ab" * 32)],
    )
    config = msgspec.structs.replace(base, hq=hq)
    async with serve(config) as served:
        text = (await served.client.get("/metrics")).text
        assert 'moments_sync_stream_last_seq{stream="offers"} 0.0' in text
        assert 'moments_sync_stream_idle_seconds{stream="offers"}' in text
        assert 'moments_sync_stream_stopped{stream="offers"} 0.0' in text
        assert 'moments_link_state{link="hq",state="up"} 0.0' in text
        assert 'moments_errors_total{component="outbox",reason="publish_failed"}' in text
        body = await until_ready(served.client, 503)
        assert body["components"]["hq"]["ready"] is False  # type: ignore[index]
