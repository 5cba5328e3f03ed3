from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import settings

import gateway.render
from gateway.config import Config, load_config
from tests.support.broker import Broker, free_port
from tests.support.peers import Publisher

# Property tests are deterministic by default, so a run of ./scripts/test is reproducible
# and CI never fails on a case no one can replay; HYPOTHESIS_PROFILE=explore draws new cases
# (a counterexample it finds is printed with its reproduce blob, to be pinned with @example).
settings.register_profile("repeatable", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("explore", deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _render_time_generous(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never depend on the machine's speed: a template's render-time limit (50 ms in
    production) is 5 s here, and a test of the limit itself sets it back."""
    monkeypatch.setattr(gateway.render, "MAX_RENDER_S", 5.0)


EXAMPLE = REPO / "deploy" / "moments.example.toml"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A real Mosquitto on a free port, for this test only."""
    folder = tmp_path / "broker"
    folder.mkdir()
    b = Broker(free_port(), folder)
    b.start()
    yield b
    b.stop()


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., Config]:
    """The example store's configuration, pointed at a temporary data folder."""

    def make(broker_port: int, **env: str) -> Config:
        environ = {
            "MOMENTS_DATA_DIR": str(tmp_path / "var"),
            "MOMENTS_BROKER__PORT": str(broker_port),
            "MOMENTS_BROKER__BACKOFF_MIN_S": "0.1",
            "MOMENTS_BROKER__BACKOFF_MAX_S": "0.5",
            "MOMENTS_LOG__FORMAT": "text",
            **env,
        }
        return load_config(EXAMPLE, environ=environ)

    return make


@pytest.fixture
def publisher(broker: Broker) -> Iterator[Publisher]:
    pub = Publisher(broker.host, broker.port)
    yield pub
    pub.close()
