"""A real LMDB store for tests: opened in a temporary folder, one write operation run in its
own transaction, as the writer thread runs it, and a store held open by another process."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gateway.store import Database

__all__ = ["held_open_elsewhere", "opened", "run"]


@contextmanager
def opened(path: Path) -> Iterator[Database]:
    db = Database(path, map_size=1 << 24)
    db.open()
    try:
        yield db
    finally:
        db.close()


def run(db: Database, op: Callable[[Any], Any]) -> Any:
    """One write operation in its own transaction, as the writer thread runs it."""
    with db.env.begin(write=True) as txn:
        return op(txn)


# A process that keeps the environment open (like a gateway without the lock) until stdin ends.
_HOLD_OPEN = """
import sys, lmdb
env = lmdb.open(sys.argv[1], max_dbs=32)
print("open", flush=True)
sys.stdin.read()
env.close()
"""


@contextmanager
def held_open_elsewhere(path: Path) -> Iterator[None]:
    """The store at ``path`` open in another process for the duration (it then exits 0)."""
    with subprocess.Popen(
        [sys.executable, "-c", _HOLD_OPEN, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as child:
        assert child.stdin is not None and child.stdout is not None
        assert child.stdout.readline() == "open\n"
        try:
            yield
        finally:
            child.stdin.close()
            assert child.wait(timeout=30) == 0
