"""Staff assist against the real app, a real LMDB and a real Mosquitto: a shopper who stays
in a zone raises an alert, one staff member takes it (over HTTP or MQTT), it escalates while
no one does, and the retained state never names the shopper."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import msgspec
import pytest

from gateway.config import Config
from tests.e2e.test_api import (
    EVERYTHING,
    AlertWatcher,
    at_the_coffee_kiosk,
    bearer,
    linked_alice,
)
from tests.support.peers import Publisher, serve

pytestmark = pytest.mark.mqtt

ACKS = "moments/v1/store-1/staff/acks"


def with_dwell(config: Config, zone: str, after_s: float) -> Config:
    zones = [
        msgspec.structs.replace(z, help_after_s=after_s) if z.id == zone else z
        for z in config.zones
    ]
    return msgspec.structs.replace(config, zones=zones)


async def test_acknowledging_over_http_first_wins_and_needs_a_staff_token(
    make_config: Any, broker: Any
) -> None:
    async with serve(make_config(broker.port)) as served:
        _shopper, token = await linked_alice(served, EVERYTHING)
        asked = await served.client.post("/v1/me/help", headers=bearer(token))
        assert asked.status_code == 202, asked.text
        alert_id = asked.json()["alert_id"]
        ack = f"/v1/staff/alerts/{alert_id}/ack"
        staff7, _ = await served.gateway.shoppers.issue("staff", "staff-7")
        staff9, _ = await served.gateway.shoppers.issue("staff", "staff-9")

        missing = await served.client.post(ack)
        assert missing.status_code == 401
        shopper = await served.client.post(ack, headers=bearer(token))
        assert shopper.status_code == 403 and shopper.json()["error"] == "forbidden"
        unknown = await served.client.post(
            "/v1/staff/alerts/000000000000/ack", headers=bearer(staff7)
        )
        assert unknown.status_code == 404 and unknown.json()["error"] == "not_found"

        taken = await served.client.post(ack, headers=bearer(staff7))
        assert taken.status_code == 200, taken.text
        body = taken.json()
        assert body["acknowledged_by"] == "staff-7" and body["acknowledged_at"] is not None
        assert (body["reason"], body["level"], body["name"]) == ("asked", 0, "Alice")
        again = await served.client.post(ack, headers=bearer(staff7))
        assert again.status_code == 200
        late = await served.client.post(ack, headers=bearer(staff9))
        assert late.status_code == 409 and late.json()["error"] == "already_acknowledged"

        # Still listed, so others see it is taken; never the shopper's id.
        listed = await served.client.get("/v1/staff/alerts", headers=bearer(staff9))
        [alert] = listed.json()["alerts"]
        assert alert["acknowledged_by"] == "staff-7"
        assert "shopper-alice" not in listed.text

        resolved = await served.client.post(
            f"/v1/staff/alerts/{alert_id}/resolve", headers=bearer(staff9)
        )
        assert resolved.status_code == 200 and resolved.json()["alert_id"] == alert_id
        assert served.gateway.shoppers.help == {}
        gone = await served.client.post(ack, headers=bearer(staff7))
        assert gone.status_code == 404


async def test_a_staff_device_acknowledges_over_mqtt_and_malformed_acks_are_counted(
    make_config: Any, broker: Any, publisher: Publisher
) -> None:
    async with serve(make_config(broker.port)) as served:
        watcher = AlertWatcher(broker.port)
        try:
            await asyncio.to_thread(watcher.until, lambda s: s == {"v": 1, "alerts": []})
            _shopper, token = await linked_alice(served, EVERYTHING)
            asked = await served.client.post("/v1/me/help", headers=bearer(token))
            alert_id = asked.json()["alert_id"]
            await asyncio.to_thread(watcher.until, lambda s: len(s["alerts"]) == 1)

            publisher.publish(f"{ACKS}/staff-7", b"not json")
            # JSON whose string is not UTF-8: counted like any bad JSON, the gateway carries on
            publisher.publish(f"{ACKS}/staff-7", b'{"v": 1, "alert_id": "\xff"}')
            ack = json.dumps({"v": 1, "alert_id": alert_id}).encode()
            publisher.publish(f"{ACKS}/staff-7", ack)
            publisher.publish(f"{ACKS}/staff-9", ack)  # too late: staff-7 has it

            state = await asyncio.to_thread(
                watcher.until,
                lambda s: bool(s["alerts"]) and s["alerts"][0]["acknowledged_by"] is not None,
            )
            [alert] = state["alerts"]
            assert alert["acknowledged_by"] == "staff-7"
            assert isinstance(alert["acknowledged_at"], float)
            registry = served.gateway.metrics.registry

            def dropped(reason: str) -> float:
                labels = {"source": "staff", "reason": reason}
                return registry.get_sample_value("moments_dropped_total", labels) or 0.0

            async with asyncio.timeout(10):
                while dropped("already_acknowledged") < 1:
                    await asyncio.sleep(0.02)
            assert dropped("bad_json") == 2
            assert served.gateway.shoppers.help[alert_id].acknowledged_by == "staff-7"
        finally:
            watcher.close()


async def test_a_shopper_who_stays_raises_a_dwell_alert_that_escalates_and_goes_with_consent(
    make_config: Any, broker: Any
) -> None:
    config = with_dwell(
        make_config(broker.port, MOMENTS_STAFF__ESCALATE_AFTER_S="2"), "coffee", 1.0
    )
    async with serve(config) as served:
        watcher = AlertWatcher(broker.port)
        try:
            await asyncio.to_thread(watcher.until, lambda s: s == {"v": 1, "alerts": []})
            _shopper, token = await linked_alice(served, EVERYTHING)
            await at_the_coffee_kiosk(served, token)
            state = await asyncio.to_thread(watcher.until, lambda s: len(s["alerts"]) == 1)
            [alert] = state["alerts"]
            assert (alert["reason"], alert["zone"], alert["name"]) == ("dwell", "coffee", "Alice")
            assert alert["level"] == 0 and alert["acknowledged_by"] is None
            assert "shopper-alice" not in json.dumps(state)
            # No one takes it: it escalates, from the tick's time.
            await at_the_coffee_kiosk(served, token)  # still there
            escalated = await asyncio.to_thread(
                watcher.until, lambda s: bool(s["alerts"]) and s["alerts"][0]["level"] >= 1
            )
            assert escalated["alerts"][0]["alert_id"] == alert["alert_id"]
            await served.client.put(
                "/v1/me/consents",
                json={"purposes": {"staff_assist": {"granted": False}}},
                headers=bearer(token),
            )
            assert served.gateway.shoppers.help == {}
            await asyncio.to_thread(watcher.until, lambda s: s["alerts"] == [])
        finally:
            watcher.close()
