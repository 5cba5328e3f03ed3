"""The gateway's one exception tree.

Third-party errors (``lmdb.Error``, paho return codes, ``BleakError``, jinja2's
``TemplateError``, msgspec's ``ValidationError``) are translated into these at the
module that talks to the library, with ``raise ... from exc``; nothing above that
boundary catches a third-party type.

    MomentsError
    ├── ConfigError            bad configuration: names the source, key, value, expectation
    ├── StoreError             the local LMDB store failed (open, read, write, grow)
    ├── LinkError              an MQTT link could not be set up or used
    │   └── LinkDownError      a publish was attempted while the link is down
    ├── PayloadError           an untrusted input was rejected; carries a short ``reason``
    │   ├── NodeMessageError   a scanner-node message failed validation
    │   ├── SyncError          an HQ message or receipt was rejected (gateway.sync.envelope)
    │   ├── RefusedChange      a change to a shopper's data was refused (gateway.consents)
    │   ├── RuleError          an offer's audience rule failed validation (gateway.rules)
    │   └── AckError           a staff device's acknowledgement was rejected (gateway.helpdesk)
    ├── AuthError              credentials refused; carries a stable ``code`` and HTTP status
    ├── ApiError               an API request refused for what it asks (code, HTTP status)
    ├── RenderError            a template failed to render
    ├── ScenarioError          a simulator scenario file is invalid (firmware_sim.floorplan)
    └── HttpError              the simulator's HTTP client failed (firmware_sim.http_client)
"""

from __future__ import annotations

__all__ = [
    "ApiError",
    "AuthError",
    "ConfigError",
    "LinkDownError",
    "LinkError",
    "MomentsError",
    "NodeMessageError",
    "PayloadError",
    "RenderError",
    "StoreError",
]


class MomentsError(Exception):
    """Root of every error the gateway raises on purpose."""


class ConfigError(MomentsError):
    """The configuration is invalid; the message names the source, key, value and expectation."""

    def __init__(self, source: str, key: str, value: object, expected: str) -> None:
        self.source = source
        self.key = key
        self.value = value
        self.expected = expected
        super().__init__(f"{source}: {key} = {value!r}: expected {expected}")


class StoreError(MomentsError):
    """The local store could not complete an operation."""


class LinkError(MomentsError):
    """An MQTT link could not be set up or used."""


class LinkDownError(LinkError):
    """The link is not connected right now."""


class PayloadError(MomentsError):
    """An untrusted input was rejected. ``reason`` is a short, stable label for counting."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


class NodeMessageError(PayloadError):
    """A scanner-node message was malformed or out of bounds."""


class AuthError(MomentsError):
    """A request's credentials were refused. ``code`` is a stable label for the API's JSON
    error (``token_missing``, ``token_malformed``, ``token_bad_signature``, ``token_expired``,
    ``token_revoked``, ``forbidden``); ``status`` the HTTP status (401, or 403 for a valid
    token of the wrong role or subject)."""

    def __init__(self, code: str, message: str, *, status: int = 401) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


class ApiError(MomentsError):
    """An API request refused for what it asks, not who asks: ``code`` is a stable label
    (``not_found``, ``invalid_request``, ``consent_required``, ``conflict``, ``erased``,
    ``rate_limited``, ``unavailable``), ``status`` the HTTP status, ``retry_after`` seconds
    for a 429 or 503."""

    def __init__(
        self, code: str, message: str, *, status: int = 400, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.retry_after = retry_after


class RenderError(MomentsError):
    """A template failed to render."""
