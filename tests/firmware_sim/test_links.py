"""The simulator's devices reach the gateway one way: logged in as the configured broker user,
at an HTTP address a client on the box can use (IPv6 in brackets)."""

from __future__ import annotations

import msgspec
import pytest

from firmware_sim.links import default_base_url, sim_link
from gateway.config import Config


def _config(**http: object) -> Config:
    config = Config()
    broker = msgspec.structs.replace(config.broker, username="gateway", password="s3cret")
    return msgspec.structs.replace(
        config, broker=broker, http=msgspec.structs.replace(config.http, **http)
    )


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:8080"),
        ("0.0.0.0", "http://127.0.0.1:8080"),  # listening everywhere: connect locally
        ("::", "http://127.0.0.1:8080"),
        ("::1", "http://[::1]:8080"),
        ("192.168.1.10", "http://192.168.1.10:8080"),
    ],
)
def test_the_base_url_a_client_on_the_box_uses(host: str, url: str) -> None:
    assert default_base_url(_config(host=host)) == url


def test_every_simulated_device_logs_in_as_the_configured_user() -> None:
    link = sim_link(_config(), "node-coffee")
    status = link.status()
    assert link.name == "node-coffee"
    assert (link._username, link._password) == ("gateway", "s3cret")
    assert status["state"] == "idle"
