"""Structured logging: one JSON object per line in production, plain text for a terminal.

Modules log through ``logging.getLogger(__name__)`` with lazy ``%s`` arguments and put the
fields that matter in ``extra={...}``; this formatter lifts those fields into the JSON object so
that operators and tests read data, not prose. Exceptions appear as type and message only unless
the level is debug: a traceback in a log is a defect report, not an operating record.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

__all__ = ["JsonFormatter", "RateLimitedLog", "TextFormatter", "configure_logging"]

_STANDARD = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys() | {"message", "asctime"}
)


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    """The ``extra`` fields of a record, and the exception as type and message."""
    out = {
        key: value
        for key, value in record.__dict__.items()
        if key not in _STANDARD and not key.startswith("_") and key != "color_message"
    }
    if record.exc_info and record.exc_info[1] is not None:
        exc = record.exc_info[1]
        out["error"] = f"{type(exc).__name__}: {exc}"
    return out


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line: ts, level, logger, msg, then the ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **_fields(record),
        }
        return json.dumps(out, default=str, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """For a terminal: time, level, logger, message, then ``key=value`` for each field."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text
        record.exc_info, record.exc_text = None, None
        try:
            line = super().format(record)
        finally:
            record.exc_info, record.exc_text = saved
        fields = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        return f"{line}  {fields}" if fields else line


def configure_logging(level: str = "info", fmt: str = "json") -> None:
    """Install one handler on the root logger (idempotent: replaces earlier ones)."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # uvicorn's access log is per request: far too chatty for a store box.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    for name in ("uvicorn", "uvicorn.error"):
        uv = logging.getLogger(name)
        uv.handlers.clear()
        uv.propagate = True


class RateLimitedLog:
    """Logs the first occurrence of each reason, then at most one line per ``interval`` seconds
    per reason with the number suppressed in between, so a flood of bad input cannot flood the
    log. Counting is the metrics' job; this only keeps the log readable."""

    __slots__ = ("_interval", "_last", "_logger", "_suppressed")

    def __init__(self, logger: logging.Logger, interval: float = 60.0) -> None:
        self._logger = logger
        self._interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, reason: str, msg: str, *args: object, **fields: object) -> None:
        now = time.monotonic()
        last = self._last.get(reason)
        if last is not None and now - last < self._interval:
            self._suppressed[reason] = self._suppressed.get(reason, 0) + 1
            return
        self._last[reason] = now
        suppressed = self._suppressed.pop(reason, 0)
        self._logger.warning(
            msg, *args, extra={"reason": reason, "suppressed": suppressed, **fields}
        )
