"""The HTTP API against its own contract: schemathesis generates requests (valid and invalid
ones) from the OpenAPI document the running app serves at ``/openapi.json``, and every answer
must be no server error, with a documented status, a documented content type and a body in
the documented schema.

The cases are built from ``openapi_document`` when the module is collected (one test per
operation, ``schema.parametrize()``), and the app fixture checks that ``/openapi.json`` serves
exactly that document. (``schemathesis.pytest.from_fixture``, which would load it from the
app, fails with pytest 9.2: schemathesis 4.32 reads ``request.node._nodeid``, gone there.)

The app runs for real (``serve``: a real socket, a real LMDB and a real broker) on its own
loop in a thread, since schemathesis waits for each answer. Each request carries a token of a
role its operation's ``x-roles`` allows: a shopper's for the app's endpoints (a fresh shopper
for those that end the token or the shopper: log-out, refresh, erasure), an admin's for the
others. The Server-Sent Events stream (it never ends) and ``/metrics`` (Prometheus text, not
JSON) are left out. Bounded and deterministic: a fixed seed, derandomized generation, no
shrinking, at most 25 generated cases per operation and phase.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from schemathesis import Case
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from firmware_sim.scenario import demo_records
from gateway import __version__
from gateway.http.openapi import openapi_document
from tests.privacy.conftest import GENEROUS_LIMITS, AppThread, store_config, with_unreachable_hq
from tests.support.broker import Broker

pytestmark = pytest.mark.mqtt

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# Operations that end the caller's token or the caller: each case gets a shopper of its own.
ENDING = {("DELETE", "/v1/me"), ("DELETE", "/v1/me/token"), ("POST", "/v1/me/token")}
EVERYTHING = dict.fromkeys(
    (
        "presence",
        "personalization",
        "kiosk_display",
        "phone_messages",
        "staff_assist",
        "analytics",
    ),
    True,
)
# The document /openapi.json serves (the app fixture checks that it does).
DOCUMENT = json.loads(json.dumps(openapi_document(__version__)))
ROLES = {
    (method.upper(), path): operation.get("x-roles", ["public"])
    for path, item in DOCUMENT["paths"].items()
    for method, operation in item.items()
}
SETTINGS: dict[str, Any] = {
    "seed": 20_251_122,
    "generation": {
        "mode": "all",
        "max-examples": 25,
        "deterministic": True,
        "no-shrink": True,
        "database": "none",
        # The tokens are ours (by role, below), never generated: a request without one is
        # answered 401 before anything else is looked at, so it would only waste a case.
        "with-security-parameters": False,
    },
    "phases": {"stateful": {"enabled": False}},
    "request-timeout": 10,
}


def without_uniform_tuples(node: Any) -> Any:
    """The same document with each tuple of identical items (``prefixItems`` of equal schemas,
    ``items: false``, as many items as the prefix) written as the equivalent plain array.

    Schemathesis 4.32 rewrites ``prefixItems`` into the draft 7 ``items: [...]`` for response
    schemas too, then validates responses with a draft 2020-12 validator, which rejects that
    schema (``quiet_hours`` of the preferences): a bug of the tool, not of the contract."""
    if isinstance(node, list):
        return [without_uniform_tuples(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: without_uniform_tuples(value) for key, value in node.items()}
    prefix = out.get("prefixItems")
    if (
        isinstance(prefix, list)
        and prefix
        and all(item == prefix[0] for item in prefix)
        and out.get("items") is False
        and out.get("minItems") == out.get("maxItems") == len(prefix)
    ):
        del out["prefixItems"]
        out["items"] = prefix[0]
    return out


CONTRACT = schemathesis.openapi.from_dict(
    without_uniform_tuples(DOCUMENT), config=schemathesis.Config.from_dict(SETTINGS)
).exclude(path=["/kiosk/{kiosk_id}/events", "/metrics"])


class Callers:
    """Tokens for the generated requests, by the roles an operation allows."""

    def __init__(self, app: AppThread, roles: dict[tuple[str, str], list[str]]) -> None:
        self._app = app
        self._roles = roles
        self._session = requests.Session()
        gateway = app.served.gateway
        self.admin, _claims = app.run(gateway.shoppers.issue("admin", "contract-desk"))
        self.shopper = self.new_shopper(link=True)

    def new_shopper(self, *, link: bool = False) -> str:
        """A shopper who granted everything (Alice, linked at the desk, or a new one)."""
        body: dict[str, Any] = {"consents": EVERYTHING, "notice_version": "n1"}
        if link:
            code = self._session.post(
                f"{self._app.served.base}/v1/admin/link-codes",
                json={"shopper_id": "shopper-alice"},
                headers={"Authorization": f"Bearer {self.admin}"},
                timeout=10,
            )
            assert code.status_code == 201, code.text
            body["link_code"] = code.json()["code"]
        answer = self._session.post(f"{self._app.served.base}/v1/register", json=body, timeout=10)
        assert answer.status_code == 201, answer.text
        token: str = answer.json()["token"]
        return token

    def headers_for(self, case: Case) -> dict[str, str]:
        method, path = case.method.upper(), case.path
        roles = self._roles.get((method, path), ["public"])
        if "shopper" in roles:
            token = self.new_shopper() if (method, path) in ENDING else self.shopper
        elif "public" in roles:
            return {}
        else:
            token = self.admin
        return {"Authorization": f"Bearer {token}"}

    def close(self) -> None:
        self._session.close()


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, module_broker: Broker) -> Iterator[AppThread]:
    """One app for every operation of the contract (their state carries over, as in use)."""
    data = tmp_path_factory.mktemp("contract") / "var"
    config = with_unreachable_hq(store_config(data, module_broker.port, **GENEROUS_LIMITS))
    with AppThread(config) as running:
        gateway = running.served.gateway
        running.run(gateway.writer.write(gateway.db.put_op(demo_records(time.time()))))
        # The contract the cases are generated from is the one the running app serves.
        served = running.run(running.served.client.get("/openapi.json"))
        assert served.json() == DOCUMENT
        yield running


@pytest.fixture(scope="module")
def callers(app: AppThread) -> Iterator[Callers]:
    callers = Callers(app, ROLES)
    yield callers
    callers.close()


@CONTRACT.parametrize()
def test_every_answer_is_in_the_contract(case: Case, app: AppThread, callers: Callers) -> None:
    case.call_and_validate(
        base_url=app.served.base, headers=callers.headers_for(case), checks=CHECKS
    )
