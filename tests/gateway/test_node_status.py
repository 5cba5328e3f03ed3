"""Scanner nodes' status and telemetry: decoding, each drop reason, and the book."""

from __future__ import annotations

import pytest

from gateway.node_status import (
    NodeBook,
    NodeReportError,
    NodeReportLimits,
    NodeStatus,
    NodeTelemetry,
    State,
    encode_status,
    encode_telemetry,
    parse_status,
    parse_telemetry,
)

LIMITS = NodeReportLimits()
TELEMETRY = (
    b'{"v": 1, "node": "node-coffee", "t": 1795378600.5, "uptime_s": 86400.0, "heard": 120345,'
    b' "forwarded": 118002, "batches": 172800, "free_heap": 180000, "wifi_rssi": -57}'
)


def test_good_reports_decode() -> None:
    states: tuple[State, ...] = ("online", "offline")
    for state in states:
        payload = b'{"v": 1, "node": "node-coffee", "state": "%s"}' % state.encode()
        assert parse_status("node-coffee", payload, LIMITS) == NodeStatus("node-coffee", state)
    telemetry = parse_telemetry("node-coffee", TELEMETRY, LIMITS, now=5.0)
    assert telemetry == NodeTelemetry("node-coffee", 1795378600.5, 120345, 118002, -57, 180000, 5.0)
    wired = parse_telemetry(
        "n", b'{"v": 1, "node": "n", "t": 1.0, "heard": 0, "forwarded": 0}', LIMITS, now=0.0
    )
    assert wired.wifi_rssi is None and wired.free_heap is None


def test_the_encoders_write_what_the_parsers_read() -> None:
    assert parse_status("n", encode_status("n", "offline"), LIMITS) == NodeStatus("n", "offline")
    payload = encode_telemetry(
        "n", t=2.5, heard=10, forwarded=9, uptime_s=60.0, batches=3, free_heap=100, wifi_rssi=-70
    )
    assert parse_telemetry("n", payload, LIMITS, now=3.0) == NodeTelemetry(
        "n", 2.5, 10, 9, -70, 100, 3.0
    )


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{" + b" " * 3000 + b"}", "oversized_payload"),
        (b"nope", "bad_json"),
        (b"\xff", "bad_json"),
        (b"", "bad_json"),  # a retained status cleared
        (b'{"v": 1, "node": "n"}', "bad_field"),
        (b'{"v": 1, "node": "n", "state": "asleep"}', "bad_field"),
        (b'{"v": 1, "node": "", "state": "online"}', "bad_field"),
        (b'{"v": 3, "node": "n", "state": "online"}', "unsupported_version"),
        (b'{"v": 1, "node": "m", "state": "online"}', "node_mismatch"),
    ],
)
def test_each_status_drop_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(NodeReportError) as refused:
        parse_status("n", payload, LIMITS)
    assert refused.value.reason == reason


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{" + b" " * 3000 + b"}", "oversized_payload"),
        (b"{", "bad_json"),
        (b'{"v": 1, "node": "n", "heard": 0, "forwarded": 0}', "bad_field"),
        (b'{"v": 1, "node": "n", "t": 1, "heard": -1, "forwarded": 0}', "bad_field"),
        (
            b'{"v": 1, "node": "n", "t": 1, "heard": 0, "forwarded": 0, "wifi_rssi": 40}',
            "bad_field",
        ),
        (
            b'{"v": 1, "node": "n", "t": 1, "heard": 0, "forwarded": 0, "free_heap": -2}',
            "bad_field",
        ),
        (b'{"v": 0, "node": "n", "t": 1, "heard": 0, "forwarded": 0}', "unsupported_version"),
        (b'{"v": 1, "node": "x", "t": 1, "heard": 0, "forwarded": 0}', "node_mismatch"),
    ],
)
def test_each_telemetry_drop_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(NodeReportError) as refused:
        parse_telemetry("n", payload, LIMITS, now=0.0)
    assert refused.value.reason == reason


def test_the_book_keeps_the_last_word_and_the_last_telemetry() -> None:
    book = NodeBook()
    assert book.state("n") is None and book.telemetry("n") is None
    book.apply_status(NodeStatus("n", "online"))
    book.apply_status(NodeStatus("n", "offline"))  # its will
    assert book.state("n") == "offline" and book.states() == {"n": "offline"}
    first = NodeTelemetry("n", 1.0, 10, 9, -60, 1000, at=1.0)
    last = NodeTelemetry("n", 31.0, 20, 18, -70, 900, at=31.0)
    book.apply_telemetry(first)
    book.apply_telemetry(last)
    assert book.telemetry("n") == last and book.last_telemetry() == {"n": last}


def test_the_book_is_bounded() -> None:
    book = NodeBook(max_nodes=1)
    assert book.apply_status(NodeStatus("a", "online"))
    assert not book.apply_status(NodeStatus("b", "online"))
    assert not book.apply_telemetry(NodeTelemetry("b", 1.0, 0, 0, None, None))
    assert book.apply_telemetry(NodeTelemetry("a", 1.0, 0, 0, None, None))
    with pytest.raises(ValueError, match="max_nodes"):
        NodeBook(max_nodes=0)
