"""Helpers for CPU-bound benchmarks: one core, the garbage collector paused while timing."""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["gc_paused_seconds", "pinned"]


@contextmanager
def pinned() -> Iterator[int]:
    """Run on the first core this process may use; give the old affinity back afterwards."""
    allowed = os.sched_getaffinity(0)
    core = min(allowed)
    os.sched_setaffinity(0, {core})
    try:
        yield core
    finally:
        os.sched_setaffinity(0, allowed)


def gc_paused_seconds(work: Callable[[], object]) -> float:
    """Seconds ``work()`` takes, collected before and with the garbage collector paused."""
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter()
        work()
        return time.perf_counter() - start
    finally:
        if was_enabled:
            gc.enable()
