"""The OpenAPI document of the HTTP API, written out (it is a contract, kept next to the code)."""

from __future__ import annotations

from typing import Any

from gateway.http.api import openapi_paths
from gateway.http.v1 import ENDPOINTS

__all__ = ["openapi_document"]

_KIOSK_ID = {
    "name": "kiosk_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"},
}
_HTML = {"text/html": {"schema": {"type": "string"}}}
_NOT_FOUND = {
    "description": "No kiosk with that id",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
}


def openapi_document(version: str) -> dict[str, Any]:
    """The whole document: the pages and streams written out here, ``/v1`` from its table."""
    v1_paths, schemas = openapi_paths(ENDPOINTS)
    document = _pages(version)
    document["paths"].update(v1_paths)
    document["components"] = {
        "schemas": schemas,
        "securitySchemes": {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "A shopper app, kiosk, staff or admin token (`mt1.` tokens "
                "issued by this gateway); each operation's x-roles says which roles may call it.",
            }
        },
    }
    return document


_READINESS = {
    "application/json": {
        "schema": {
            "type": "object",
            "required": ["ready", "components", "reasons", "degraded"],
            "properties": {
                "ready": {"type": "boolean"},
                "components": {
                    "type": "object",
                    "description": "config, store, broker, radio, hq: each {ready, state, detail?}",
                },
                "reasons": {"type": "array", "items": {"type": "string"}},
                "degraded": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "what is missing but accepted (http.ready_without_sensing)",
                },
            },
        }
    }
}


def _pages(version: str) -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "Moments gateway", "version": version},
        "paths": {
            "/healthz": {
                "get": {
                    "summary": "Liveness, with each component's state",
                    "responses": {
                        "200": {
                            "description": "The gateway is up; status is ok or degraded",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "required": ["status", "components"],
                                        "properties": {
                                            "status": {"enum": ["ok", "degraded"]},
                                            "version": {"type": "string"},
                                            "store_id": {"type": "string"},
                                            "uptime_s": {"type": "number"},
                                            "components": {"type": "object"},
                                        },
                                    }
                                }
                            },
                        }
                    },
                }
            },
            "/readyz": {
                "get": {
                    "summary": "Readiness: the store is open and a sensing source is up",
                    "description": "Ready when the store is readable and the store broker "
                    "link is up or the radio is scanning (or the store serves without sensing "
                    "by its configuration: degraded says so); the HQ link never holds it back. "
                    "reasons says what does.",
                    "responses": {
                        "200": {"description": "Ready", "content": _READINESS},
                        "503": {"description": "Not ready", "content": _READINESS},
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "responses": {"200": {"description": "Prometheus text exposition format"}},
                }
            },
            "/kiosk/{kiosk_id}": {
                "get": {
                    "summary": "The kiosk screen; follows its live stream without reloading",
                    "parameters": [_KIOSK_ID],
                    "responses": {
                        "200": {"description": "HTML page", "content": _HTML},
                        "404": _NOT_FOUND,
                    },
                }
            },
            "/kiosk/{kiosk_id}/offer": {
                "get": {
                    "summary": "Decide and render, now, what the kiosk should show",
                    "description": "Reads the consent and profile of the shopper at the kiosk "
                    "afresh, decides and renders the HTML fragment. Personal only with the "
                    "shopper's presence, personalization and kiosk_display consent.",
                    "parameters": [_KIOSK_ID],
                    "responses": {
                        "200": {"description": "HTML fragment", "content": _HTML},
                        "404": _NOT_FOUND,
                    },
                }
            },
            "/kiosk/{kiosk_id}/events": {
                "get": {
                    "summary": "Live stream of the kiosk's content (Server-Sent Events)",
                    "description": "Event `content` with JSON data {version, html, personal}; "
                    "the current content is sent first on every connect; a comment every 15 s "
                    "keeps proxies from closing the stream.",
                    "parameters": [_KIOSK_ID],
                    "responses": {
                        "200": {
                            "description": "text/event-stream",
                            "content": {"text/event-stream": {}},
                        },
                        "404": _NOT_FOUND,
                    },
                }
            },
        },
    }
