"""Fixtures shared by the gateway's unit tests: a real LMDB store and its writer thread."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from gateway.store import Database, Writer
from tests.support.store import opened


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    with opened(tmp_path / "store") as database:
        yield database


@pytest.fixture
async def writer(db: Database) -> AsyncIterator[Writer]:
    w = Writer(db)
    w.start()
    yield w
    await w.aclose()
