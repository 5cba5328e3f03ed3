"""How the simulator's devices reach the gateway: one MQTT link per device, logged in as the
configuration's broker user, and the gateway's HTTP address.

``moments sim run`` (``live.py``), ``moments sim load`` (``load.py``) and ``moments sim
scripted`` (``runner.py``) all connect through :func:`sim_link` and :func:`default_base_url`,
so a broker that refuses anonymous clients (the shipped one) and an HTTP app on an IPv6 address
work for each of them alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from beacons.backoff import Backoff
from gateway.config import Config
from gateway.linkstate import LinkState
from gateway.mqtt import MqttLink, Will

__all__ = ["default_base_url", "sim_link"]

_EVERYWHERE = frozenset({"0.0.0.0", "::", ""})  # noqa: S104 (listening everywhere: connect locally)


def sim_link(
    config: Config,
    client_id: str,
    subscriptions: Sequence[tuple[str, int]] = (),
    *,
    will: Will | None = None,
    birth: Will | None = None,
    on_state: Callable[[LinkState], None] | None = None,
    connect_timeout_s: float | None = None,
) -> MqttLink:
    """A simulated device's link to the store broker of ``config`` (no persistent session)."""
    broker = config.broker
    return MqttLink(
        name=client_id,
        host=broker.host,
        port=broker.port,
        client_id=client_id,
        subscriptions=subscriptions,
        keepalive=broker.keepalive_s,
        connect_timeout=(
            broker.connect_timeout_s
            if connect_timeout_s is None
            else min(broker.connect_timeout_s, connect_timeout_s)
        ),
        backoff=Backoff(0.2, 5.0),
        session_expiry=0,
        username=broker.username,
        password=broker.password,
        will=will,
        birth=birth,
        on_state=on_state,
    )


def default_base_url(config: Config) -> str:
    """The gateway's HTTP app as a client on this box reaches it."""
    host = "127.0.0.1" if config.http.host in _EVERYWHERE else config.http.host
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{config.http.port}"
