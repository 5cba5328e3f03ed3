"""The reference HQ (``moments hq``): the other end of the HQ ⇄ store sync contract
(``docs/PROTOCOL.md``), good enough for tests, demos and small fleets.

- ``keys``: HQ's Ed25519 signing keys in a folder; rotation and revocation announced on the
  ``keys`` stream, signed by the key already trusted.
- ``records``: record files in, validated records and message bodies out (sans-I/O).
- ``ledger``: HQ's LMDB: per store and stream the last sequence, the log of signed messages
  (``keep`` per stream) and the latest records; the events received, by idempotency key.
- ``mqtt``: one MQTT 5 connection on the asyncio loop, with PUBACK futures and properties.
- ``publish``: number, seal, log and send records to stores; await the acknowledgements.
- ``serve``: count store events exactly once; answer resync requests (replay or snapshot).
- ``cli``: ``register(subparsers)`` for ``moments hq`` (argparse only); ``commands``: the
  handlers it loads when one runs; ``python -m gateway.hq`` runs them alone.

- ``defaults``: the defaults, plain constants (shown by ``--help``).

Errors are drawn in ``gateway.hq.errors``. The public names below load their module on first
use (PEP 562), so that ``moments`` registers the ``hq`` commands without loading LMDB, paho
and the crypto behind them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from gateway.hq.errors import HqError, InputError, KeysError
    from gateway.hq.keys import KeyDir, KeyInfo, Signer
    from gateway.hq.ledger import Answer, Issued, Ledger
    from gateway.hq.mqtt import AckWindow, Delivery, MqttSession
    from gateway.hq.publish import PublishRequest, PublishSummary, publish, publish_to_broker
    from gateway.hq.serve import ServeOptions, Server

__all__ = [
    "AckWindow",
    "Answer",
    "Delivery",
    "HqError",
    "InputError",
    "Issued",
    "KeyDir",
    "KeyInfo",
    "KeysError",
    "Ledger",
    "MqttSession",
    "PublishRequest",
    "PublishSummary",
    "ServeOptions",
    "Server",
    "Signer",
    "publish",
    "publish_to_broker",
]

_HOME: Final = {
    "HqError": "errors",
    "InputError": "errors",
    "KeysError": "errors",
    "KeyDir": "keys",
    "KeyInfo": "keys",
    "Signer": "keys",
    "Answer": "ledger",
    "Issued": "ledger",
    "Ledger": "ledger",
    "AckWindow": "mqtt",
    "Delivery": "mqtt",
    "MqttSession": "mqtt",
    "PublishRequest": "publish",
    "PublishSummary": "publish",
    "publish": "publish",
    "publish_to_broker": "publish",
    "ServeOptions": "serve",
    "Server": "serve",
}


def __getattr__(name: str) -> object:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value: object = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value
