"""A simulated store: shoppers with phones, ESP32 scanner nodes over MQTT, radio with noise.

The foundation's store is scripted (``scenario``): two zones, one kiosk, a shopper who opted in
and one who did not, walking the same path in turn. ``runner`` publishes what the scanner
nodes would hear, in the node protocol of ``docs/PROTOCOL.md``, to the store broker.
``bluez`` emulates BlueZ on a private D-Bus bus (``org.bluez``: an adapter with discovery, and
devices appearing, changing and going as BlueZ signals them), so the gateway's unchanged bleak
source hears the simulation without a radio.
"""

__all__: list[str] = []
