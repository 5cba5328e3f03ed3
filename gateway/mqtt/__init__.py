"""MQTT links driven from the asyncio event loop."""

from gateway.mqtt.link import InboundMessage, MqttLink, Will

__all__ = ["InboundMessage", "MqttLink", "Will"]
