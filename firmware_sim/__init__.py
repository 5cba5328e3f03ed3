"""A simulated store: shoppers with phones, ESP32 scanner nodes over MQTT, radio with noise.

The foundation's store is scripted (``scenario``): two zones, one kiosk, a shopper who opted in
and one who did not, walking the same path in turn. ``runner`` publishes what the scanner
nodes would hear, in the node protocol of ``docs/PROTOCOL.md``, to the store broker.
"""

__all__: list[str] = []
