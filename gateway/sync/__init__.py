"""HQ sync: signed, sequenced streams from HQ; the outbox of events to HQ.

``envelope`` is the one codec of every message between a store and HQ (sans-I/O);
``docs/PROTOCOL.md`` ("HQ ⇄ store") is its contract.
"""
