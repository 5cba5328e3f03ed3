"""How the HTTP app is served: the one uvicorn configuration ``moments run`` and the tests use.

Forwarded headers (``X-Forwarded-For``, ``X-Forwarded-Proto``) are believed only from
``http.trusted_proxies``: behind a TLS-terminating proxy there, ``request.url.scheme`` is
``https`` and ``request.client`` the shopper's address; from anyone else they are ignored.
"""

from __future__ import annotations

from typing import Any

import uvicorn

from gateway.config import Config

__all__ = ["uvicorn_config"]


def uvicorn_config(app: Any, config: Config, **overrides: Any) -> uvicorn.Config:
    """The server's configuration for ``app``; ``overrides`` replace any setting (tests pick
    a free port, the loop and the HTTP parser)."""
    settings: dict[str, Any] = {
        "host": config.http.host,
        "port": config.http.port,
        "loop": "uvloop",
        "http": "httptools",
        "lifespan": "on",
        "log_config": None,
        "access_log": False,
        "timeout_graceful_shutdown": 5,
        "server_header": False,
        "proxy_headers": True,
        "forwarded_allow_ips": list(config.http.trusted_proxies),
    }
    settings.update(overrides)
    return uvicorn.Config(app, **settings)
