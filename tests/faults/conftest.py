"""One store and one HQ as real processes, owned by the ``site`` fixture and stopped by it.

The store's Mosquitto (``broker``, from ``tests/conftest.py``), HQ's Mosquitto (persistence on,
in the test's folder), a gateway process configured for both, and on demand HQ's serve process
and HQ's ledger in the test's process. Nothing is started that is not stopped in ``finally``.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.faults.harness import (
    DurableBroker,
    GatewayProcess,
    HqDesk,
    HqServe,
    new_hq_key,
    write_gateway_config,
)
from tests.support.broker import Broker, free_port


@pytest.fixture(scope="session")
def hq_keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """HQ's key folder (``moments hq keys new``) and the key as the gateway trusts it."""
    folder = tmp_path_factory.mktemp("hq-keys") / "keys"
    return folder, new_hq_key(folder)


@dataclass
class Site:
    """Everything one fault test runs; ``close()`` stops what is running, newest first."""

    root: Path
    store_broker: Broker
    hq_broker: DurableBroker
    keys: Path
    gateway: GatewayProcess
    received: Path
    serves: list[HqServe] = field(default_factory=list)
    desks: list[HqDesk] = field(default_factory=list)

    def start_serve(self, *, keep: int | None = None, received: Path | None = None) -> HqServe:
        """``moments hq serve`` on HQ's broker (the same kept session every time), subscribed
        before this returns; each instance logs to its own file."""
        serve = HqServe(
            data=self.root / "hq-data",
            keys=self.keys,
            broker_port=self.hq_broker.port,
            received=self.received if received is None else received,
            log_path=self.root / f"hq-serve-{len(self.serves) + 1}.log",
            keep=keep,
        )
        self.serves.append(serve)
        serve.start()
        serve.wait_serving()
        return serve

    def open_desk(self, *, keep: int = 10_000) -> HqDesk:
        """HQ's ledger in this process, opened once (LMDB allows one environment per process
        and folder): later calls return the same desk."""
        if self.desks:
            assert self.desks[0].keep == keep, "the ledger is already open with another keep"
            return self.desks[0]
        desk = HqDesk(self.root / "hq-data", self.keys, self.hq_broker.port, keep=keep)
        desk.open()
        self.desks.append(desk)
        return desk

    def close(self) -> None:
        try:
            self.gateway.stop()
        finally:
            try:
                for serve in reversed(self.serves):
                    serve.stop()
            finally:
                for desk in reversed(self.desks):
                    desk.close()


@pytest.fixture
def site(tmp_path: Path, broker: Broker, hq_keys: tuple[Path, dict[str, str]]) -> Iterator[Site]:
    folder = tmp_path / "hq-broker"
    folder.mkdir()
    hq_broker = DurableBroker(free_port(), folder)
    hq_broker.start()
    try:
        keys, trusted = hq_keys
        config = write_gateway_config(
            tmp_path / "moments.toml",
            store_port=broker.port,
            hq_port=hq_broker.port,
            http_port=free_port(),
            trusted_key=trusted,
        )
        with config.open("rb") as fh:
            http_port = int(tomllib.load(fh)["http"]["port"])
        gateway = GatewayProcess(
            config=config,
            data_dir=tmp_path / "data",
            http_port=http_port,
            log_path=tmp_path / "gateway.log",
        )
        site = Site(
            root=tmp_path,
            store_broker=broker,
            hq_broker=hq_broker,
            keys=keys,
            gateway=gateway,
            received=tmp_path / "received.jsonl",
        )
        try:
            yield site
        finally:
            site.close()
    finally:
        hq_broker.stop()
