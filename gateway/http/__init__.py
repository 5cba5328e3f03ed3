"""The HTTP face of the gateway: kiosk pages and live streams, health, metrics, OpenAPI."""

from gateway.http.app import create_app

__all__ = ["create_app"]
