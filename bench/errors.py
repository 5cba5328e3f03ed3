"""Why a benchmark failed. One type: a benchmark that cannot measure what it claims stops loudly."""

from __future__ import annotations

__all__ = ["BenchError"]


class BenchError(Exception):
    """The benchmark could not be set up, or what it measured is not what it claims to measure."""
