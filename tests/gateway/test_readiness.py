"""Readiness from the components' states (sans-I/O): the store and one sensing source."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.readiness import readiness


def components(
    store: str = "ok", broker: str = "up", radio: str = "disabled", hq: str = "not_configured"
) -> dict[str, dict[str, Any]]:
    return {
        "store": {"state": store, "map_size": 1, "used_bytes": 1, "readers": 0},
        "broker": {"state": broker, "broker": "127.0.0.1:1883"},
        "radio": {"state": radio},
        "hq": {"state": hq},
        "kiosks": {"state": "ok"},
    }


def test_store_and_broker_up_is_ready() -> None:
    answer = readiness(components())
    assert answer["ready"] is True
    assert answer["reasons"] == []
    assert answer["components"]["store"] == {"ready": True, "state": "ok"}
    assert answer["components"]["broker"]["ready"] is True
    assert set(answer["components"]) == {"config", "store", "broker", "radio", "hq"}
    assert answer["components"]["config"]["ready"] is True
    assert answer["degraded"] == []


@pytest.mark.parametrize(
    ("broker", "radio", "ready"),
    [
        ("up", "disabled", True),
        ("up", "unavailable", True),
        ("backoff", "scanning", True),
        ("connecting", "scanning", True),
        ("backoff", "disabled", False),  # radio off by configuration: the broker is needed
        ("backoff", "unavailable", False),
        ("connecting", "starting", False),
    ],
)
def test_one_sensing_source_is_enough(broker: str, radio: str, ready: bool) -> None:
    answer = readiness(components(broker=broker, radio=radio))
    assert answer["ready"] is ready
    if not ready:
        (reason,) = answer["reasons"]
        assert reason.startswith("no sensing source")
        assert broker in reason and radio in reason


def test_a_failed_store_is_not_ready_and_says_why() -> None:
    parts = components()
    parts["store"] = {"state": "failed", "detail": "store is not open"}
    answer = readiness(parts)
    assert answer["ready"] is False
    assert answer["components"]["store"] == {
        "ready": False,
        "state": "failed",
        "detail": "store is not open",
    }
    assert answer["reasons"] == ["store is failed (store is not open)"]


@pytest.mark.parametrize("hq", ["not_configured", "backoff", "connecting", "up"])
def test_hq_never_holds_readiness_back(hq: str) -> None:
    answer = readiness(components(hq=hq))
    assert answer["ready"] is True
    assert answer["components"]["hq"]["ready"] is (hq == "up")


def test_a_missing_component_is_unknown_and_not_ready() -> None:
    answer = readiness({"broker": {"state": "up"}})
    assert answer["ready"] is False
    assert answer["components"]["store"] == {"ready": False, "state": "unknown"}
    assert answer["reasons"] == ["store is unknown"]


def test_a_store_may_declare_it_serves_without_sensing() -> None:
    down = components(broker="backoff", radio="disabled")
    answer = readiness(down, store_id="store-9", sensing_required=False)
    assert answer["ready"] is True and answer["reasons"] == []
    (why,) = answer["degraded"]
    assert why.startswith("no sensing source") and "backoff" in why
    assert answer["components"]["config"]["detail"] == "store store-9"
    # the store is never optional
    failed = components(store="failed", broker="backoff")
    assert readiness(failed, sensing_required=False)["ready"] is False
