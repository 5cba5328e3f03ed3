"""HQ's defaults, in a module of plain constants so the command line can show them in
``--help`` without loading the machinery behind them."""

from __future__ import annotations

from typing import Final

__all__ = ["DEFAULT_BATCH", "DEFAULT_KEEP", "DEFAULT_PREFIX", "DEFAULT_TIMEOUT_S", "DEFAULT_WINDOW"]

DEFAULT_PREFIX: Final = "moments/v1"
"""The topic prefix, as the gateway's ``broker.topic_prefix``."""
DEFAULT_BATCH: Final = 50
"""Records per message."""
DEFAULT_KEEP: Final = 10_000
"""Messages kept in the log per store and stream."""
DEFAULT_WINDOW: Final = 100
"""Publishes awaiting their PUBACK at once."""
DEFAULT_TIMEOUT_S: Final = 30.0
"""The longest wait for the broker (an acknowledgement, a SUBACK) with no progress."""
