"""Benchmarks of the gateway, each measured against a baseline in the same run.

Run them with ``./scripts/bench`` (``--json`` prints one ``{"results": [...]}`` object as the last
line, ``--quick`` shortens every measurement). Modules, one noun each:

- ``runner``: the command line, the choice of cores, the human and JSON output;
- ``http_offer``: ``http_offer_vs_hello``, the personalized kiosk offer against hello world;
- ``hello_app``: the hello-world Starlette app served as that baseline;
- ``procs``: child processes that are always stopped; ``broker``: a private Mosquitto;
- ``shopper``: a scanner node that keeps a shopper in front of a kiosk over MQTT;
- ``probe``: a tiny asyncio HTTP client for readiness and checks; ``wrk``: the load generator;
- ``results``: the result row of the JSON contract; ``errors``: why a benchmark failed.
"""

__all__: list[str] = []
