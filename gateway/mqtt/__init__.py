"""MQTT links driven from the asyncio event loop."""

from gateway.mqtt.link import InboundMessage, MqttLink, Tls, Will

__all__ = ["InboundMessage", "MqttLink", "Tls", "Will"]
