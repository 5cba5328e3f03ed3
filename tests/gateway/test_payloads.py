"""Every device protocol decodes through one bounded decoder: whatever the bytes, a
PayloadError with a stable reason, never another exception."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from gateway.doors import DoorLimits, parse_door_count
from gateway.errors import PayloadError
from gateway.helpdesk import parse_ack
from gateway.node_status import NodeReportLimits, parse_status, parse_telemetry
from gateway.nodes import NodeLimits, parse_batch
from gateway.redemptions import RedemptionLimits, parse_redemption
from gateway.stock import StockLimits, parse_stock

PARSERS: dict[str, Callable[[bytes], object]] = {
    "ack": lambda b: parse_ack("staff-1", b),
    "door": lambda b: parse_door_count("d", b, DoorLimits()),
    "status": lambda b: parse_status("n", b, NodeReportLimits()),
    "telemetry": lambda b: parse_telemetry("n", b, NodeReportLimits(), now=0.0),
    "batch": lambda b: parse_batch("n", b, NodeLimits()),
    "redemption": lambda b: parse_redemption(b, RedemptionLimits()),
    "stock": lambda b: parse_stock("s", b, StockLimits()),
}
BAD = [
    # a JSON string that is not UTF-8: bad JSON where it is read, a missing field elsewhere
    (b'{"v": 1, "alert_id": "\xff"}', ("bad_json", "bad_field")),
    (b"\xff\xfe", ("bad_json",)),
    (b"", ("bad_json",)),
    (b"[]", ("bad_field",)),
    (b"{" + b" " * 70_000 + b"}", ("oversized_payload",)),
]


@pytest.mark.parametrize("name", sorted(PARSERS))
@pytest.mark.parametrize(("payload", "reason"), BAD)
def test_bad_bytes_are_a_payload_error_with_a_reason(
    name: str, payload: bytes, reason: tuple[str, ...]
) -> None:
    with pytest.raises(PayloadError) as caught:
        PARSERS[name](payload)
    assert caught.value.reason in reason
