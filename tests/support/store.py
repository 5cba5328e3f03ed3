"""A real LMDB store for tests: opened in a temporary folder, and one write operation run
in its own transaction, as the writer thread runs it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gateway.store import Database

__all__ = ["opened", "run"]


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
