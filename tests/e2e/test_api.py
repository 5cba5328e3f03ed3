"""The shopper app API against the real app on a real socket, a real LMDB and a real broker:
opt-in, tokens, consents in force before the answer, the phone, why, export and erasure."""

from __future__ import annotations

import asyncio
import json
import queue
import time
from typing import Any

import msgspec
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from beacons.eid import beacon_identity_key, eid_for_time, generate_resolver_keypair
from beacons.presence import ZoneEntered
from firmware_sim.scenario import demo_records
from gateway.config import Config, TrustedKeyConfig
from gateway.consents import decisions
from gateway.http.v1 import ENDPOINTS
from gateway.redemptions import exposures
from gateway.store.records import Caps
from gateway.sync.envelope import Event, decode_event
from gateway.sync.outbox import pending
from gateway.tokens import Tokens
from tests.support.broker import free_port
from tests.support.peers import Served, serve

pytestmark = pytest.mark.mqtt

APP_UUID = "2f234454-cf6d-4a0f-adf2-f4911ba9ffa6"
EVERYTHING = {
    "presence": True,
    "personalization": True,
    "kiosk_display": True,
    "phone_messages": True,
    "staff_assist": True,
    "analytics": True,
}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def admin_token(served: Served) -> str:
    token, _claims = await served.gateway.shoppers.issue("admin", "ops")
    return token


async def linked_alice(served: Served, consents: dict[str, bool]) -> tuple[str, str]:
    """Alice's HQ profile (coffee-lover) linked to her app with a desk code."""
    gateway = served.gateway
    await gateway.writer.write(gateway.db.put_op(demo_records(time.time())))
    admin = await admin_token(served)
    code = await served.client.post(
        "/v1/admin/link-codes", json={"shopper_id": "shopper-alice"}, headers=bearer(admin)
    )
    assert code.status_code == 201, code.text
    answer = await served.client.post(
        "/v1/register",
        json={"link_code": code.json()["code"], "consents": consents, "notice_version": "n1"},
    )
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["shopper_id"] == "shopper-alice"
    # The code is for one use only.
    again = await served.client.post("/v1/register", json={"link_code": code.json()["code"]})
    assert again.status_code == 422 and again.json()["error"] == "invalid_link_code"
    return body["shopper_id"], body["token"]


async def at_the_coffee_kiosk(served: Served, token: str) -> dict[str, Any]:
    """The app ranges the coffee aisle's beacon, strongly, for a few seconds."""
    now = time.time()
    sightings = [
        {"uuid": APP_UUID, "major": 1, "minor": 2, "rssi": -50, "at": now - 3 + k * 0.5}
        for k in range(7)
    ]
    answer = await served.client.post(
        "/v1/me/sightings", json={"sightings": sightings}, headers=bearer(token)
    )
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


async def until(check: Any, timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.02)


async def test_register_denies_everything_by_default(make_config: Any, broker: Any) -> None:
    async with serve(make_config(broker.port)) as served:
        answer = await served.client.post("/v1/register", json={"first_name": "Dana"})
        assert answer.status_code == 201
        body = answer.json()
        assert body["consents"]["purposes"] == {} and body["consents"]["no_marketing"] is False
        token = body["token"]
        mine = await served.client.get("/v1/me/consents", headers=bearer(token))
        assert mine.json() == body["consents"]
        offers = await served.client.get("/v1/me/offers", headers=bearer(token))
        assert offers.json() == {"offers": [], "reason": "phone messages not granted"}
        # Without presence, the app's sightings are counted and dropped, never placed.
        placed = await at_the_coffee_kiosk(served, token)
        assert placed == {"placed": 0, "dropped": {"no_consent": 7}}
        assert served.gateway.sensing.zone_of(body["shopper_id"]) is None
        # Asking for help without staff_assist is refused, with a reason.
        help_ = await served.client.post("/v1/me/help", headers=bearer(token))
        assert help_.status_code == 403 and help_.json()["error"] == "consent_required"


async def test_tokens_forged_expired_revoked_and_wrong_role_are_refused(
    make_config: Any, broker: Any
) -> None:
    async with serve(make_config(broker.port)) as served:
        client = served.client
        registered = (await client.post("/v1/register", json={})).json()
        token = registered["token"]
        shopper = registered["shopper_id"]

        async def code(path: str, headers: dict[str, str], method: str = "GET") -> tuple[int, str]:
            answer = await client.request(method, path, headers=headers)
            return answer.status_code, answer.json()["error"]

        assert await code("/v1/me/consents", {}) == (401, "token_missing")
        assert await code("/v1/me/consents", {"Authorization": "Basic abc"}) == (
            401,
            "token_malformed",
        )
        assert await code("/v1/me/consents", bearer("mt1.not.atoken")) == (401, "token_malformed")
        forged, _ = Tokens(b"x" * 32).issue("shopper", shopper, now=time.time(), ttl_s=60)
        assert await code("/v1/me/consents", bearer(forged)) == (401, "token_bad_signature")
        expired, _ = served.gateway.shoppers.tokens.issue(
            "shopper", shopper, now=time.time() - 120, ttl_s=60
        )
        assert await code("/v1/me/consents", bearer(expired)) == (401, "token_expired")
        # Wrong role: a shopper token on a staff or admin endpoint.
        assert await code("/v1/staff/alerts", bearer(token)) == (403, "forbidden")
        # A kiosk token is for its own kiosk only.
        admin = await admin_token(served)
        issued = await client.post(
            "/v1/admin/tokens", json={"role": "kiosk", "subject": "kiosk-1"}, headers=bearer(admin)
        )
        kiosk = issued.json()["token"]
        own = await client.get("/v1/kiosks/kiosk-1/content", headers=bearer(kiosk))
        assert own.status_code == 200 and own.json()["personal"] is False
        assert await code("/v1/kiosks/kiosk-2/content", bearer(kiosk)) == (403, "forbidden")
        assert await code("/v1/me/consents", bearer(kiosk)) == (403, "forbidden")
        # Refresh: the new token works, the old one is revoked.
        fresh = (await client.post("/v1/me/token", headers=bearer(token))).json()["token"]
        assert await code("/v1/me/consents", bearer(token)) == (401, "token_revoked")
        assert (await client.get("/v1/me/consents", headers=bearer(fresh))).status_code == 200
        # Log out.
        assert (await client.delete("/v1/me/token", headers=bearer(fresh))).status_code == 204
        assert await code("/v1/me/consents", bearer(fresh)) == (401, "token_revoked")
        # Revoking every kiosk-1 token.
        gone = await client.delete("/v1/admin/tokens/kiosk/kiosk-1", headers=bearer(admin))
        assert gone.status_code == 200 and gone.json()["generation"] == 1
        assert await code("/v1/kiosks/kiosk-1/content", bearer(kiosk)) == (401, "token_revoked")


async def test_a_withdrawal_is_in_force_before_its_answer(make_config: Any, broker: Any) -> None:
    async with serve(make_config(broker.port)) as served:
        shopper, token = await linked_alice(served, EVERYTHING)
        hub = served.gateway.hub
        assert (await at_the_coffee_kiosk(served, token))["placed"] == 7
        await until(lambda: hub.current("kiosk-1").personal)
        assert hub.current("kiosk-1").offer_id == "espresso-beans-1kg"

        # The shopper can ask why the kiosk showed it.
        async def explained() -> Any:
            return await served.client.get(
                "/v1/me/offers/espresso-beans-1kg/why", headers=bearer(token)
            )

        async with asyncio.timeout(5):
            while (why := await explained()).status_code != 200:
                await asyncio.sleep(0.05)
        assert why.json()["channel"] in {"kiosk", "phone"}
        kiosk_why = [
            d
            for d in (await served.client.get("/v1/me/data", headers=bearer(token))).json()[
                "decisions"
            ]
            if d["channel"] == "kiosk"
        ]
        assert kiosk_why and kiosk_why[0]["kiosk_id"] == "kiosk-1"
        # kiosk_display withdrawn: the screen is generic when the answer arrives.
        answer = await served.client.put(
            "/v1/me/consents",
            json={"purposes": {"kiosk_display": {"granted": False}}},
            headers=bearer(token),
        )
        assert answer.status_code == 200
        assert answer.json()["purposes"]["kiosk_display"]["granted"] is False
        assert hub.current("kiosk-1").personal is False
        # The phone: an offer is waiting (presence + personalization + phone_messages).
        await until(lambda: len(served.gateway.shoppers.phone.peek(shopper)) > 0)
        withdraw = await served.client.put(
            "/v1/me/consents",
            json={"purposes": {"phone_messages": {"granted": False}}},
            headers=bearer(token),
        )
        assert withdraw.status_code == 200
        assert served.gateway.shoppers.phone.peek(shopper) == []
        messages = await served.client.get("/v1/me/messages", headers=bearer(token))
        assert messages.json() == {"messages": []}
        # Presence withdrawn: out of every zone and the resolvers at once.
        await served.client.put(
            "/v1/me/consents",
            json={"purposes": {"presence": {"granted": False}}},
            headers=bearer(token),
        )
        assert served.gateway.sensing.zone_of(shopper) is None
        # The ledger keeps every decision (proof), the state is the latest.
        data = (await served.client.get("/v1/me/data", headers=bearer(token))).json()
        assert len(data["ledger"]) == 6 + 3
        assert data["consent"]["purposes"]["presence"]["granted"] is False


async def test_phone_offer_why_and_no_marketing(make_config: Any, broker: Any) -> None:
    async with serve(make_config(broker.port)) as served:
        _shopper, token = await linked_alice(served, EVERYTHING)
        offers = (await served.client.get("/v1/me/offers", headers=bearer(token))).json()
        assert [o["offer_id"] for o in offers["offers"]] == ["espresso-beans-1kg"]
        card = offers["offers"][0]
        assert card["personal"] is True and card["regular_price"] == 16.90
        # The phone's HTML card: the price never without the regular one beside it.
        assert "Espresso beans" in card["html"] and "12.90" in card["html"]
        assert "16.90" in card["html"]
        why = await served.client.get("/v1/me/offers/espresso-beans-1kg/why", headers=bearer(token))
        assert why.status_code == 200
        assert why.json()["decision_id"] == card["decision_id"]
        assert "personalization" in why.json()["explanation"]
        nothing = await served.client.get("/v1/me/offers/green-tea/why", headers=bearer(token))
        assert nothing.status_code == 404 and nothing.json()["error"] == "not_found"
        objection = await served.client.put(
            "/v1/me/consents", json={"no_marketing": True}, headers=bearer(token)
        )
        assert objection.json()["no_marketing"] is True
        after = (await served.client.get("/v1/me/offers", headers=bearer(token))).json()
        assert after == {"offers": [], "reason": "shopper objects to marketing"}


async def test_eid_key_exchange_makes_the_app_recognisable(make_config: Any, broker: Any) -> None:
    async with serve(make_config(broker.port)) as served:
        registered = (
            await served.client.post("/v1/register", json={"consents": {"presence": True}})
        ).json()
        token, shopper = registered["token"], registered["shopper_id"]
        app = generate_resolver_keypair()  # the app's own X25519 pair
        answer = await served.client.put(
            "/v1/me/eid",
            json={"beacon_public_key": app.public.hex(), "exponent": 10, "beacon_time": 5000},
            headers=bearer(token),
        )
        assert answer.status_code == 200, answer.text
        resolver_public = bytes.fromhex(answer.json()["resolver_public_key"])
        identity_key = beacon_identity_key(app.private, resolver_public)
        eid = eid_for_time(identity_key, 10, 5000 + 2)
        identities = served.gateway.sensing.identities
        assert identities.eids.resolve(eid, time.time()) == shopper
        data = (await served.client.get("/v1/me/data", headers=bearer(token))).json()
        [held] = data["identities"]["keys"]
        assert held["kind"] == "eddystone_eid" and held["registered_at"] > 0
        assert identity_key.hex() not in str(data)  # the export never shows key material
        bad = await served.client.put(
            "/v1/me/eid",
            json={"beacon_public_key": "00" * 32, "exponent": 10},
            headers=bearer(token),
        )
        assert bad.status_code == 422 and bad.json()["error"] == "invalid_key"
        # Presence withdrawn: the EID leaves the resolver table before the answer.
        await served.client.put(
            "/v1/me/consents",
            json={"purposes": {"presence": {"granted": False}}},
            headers=bearer(token),
        )
        assert identities.eids.resolve(eid, time.time()) is None


async def test_erasure_removes_everything_and_the_token_stops_working(
    make_config: Any, broker: Any
) -> None:
    async with serve(make_config(broker.port)) as served:
        shopper, token = await linked_alice(served, EVERYTHING)
        await at_the_coffee_kiosk(served, token)
        await until(lambda: served.gateway.hub.current("kiosk-1").personal)
        helped = await served.client.post("/v1/me/help", headers=bearer(token))
        assert helped.status_code == 202
        assert len(served.gateway.shoppers.help) == 1
        erased = await served.client.delete("/v1/me", headers=bearer(token))
        assert erased.status_code == 200, erased.text
        assert erased.json()["shopper_id"] == shopper
        assert served.gateway.hub.current("kiosk-1").personal is False
        assert served.gateway.shoppers.help == {}
        assert served.gateway.db.profile(shopper) is None
        assert served.gateway.db.consent(shopper) is None
        after = await served.client.get("/v1/me/consents", headers=bearer(token))
        assert after.status_code == 401 and after.json()["error"] == "token_revoked"


async def test_errors_are_json_with_a_code_and_rate_limits_answer_429(
    make_config: Any, broker: Any
) -> None:
    config: Config = make_config(broker.port, MOMENTS_API__RATE_PER_S="1", MOMENTS_API__BURST="3")
    async with serve(config) as served:
        client = served.client
        token = (await client.post("/v1/register", json={})).json()["token"]
        bad = await client.put("/v1/me/consents", content=b"{", headers=bearer(token))
        assert bad.status_code == 400 and bad.json()["error"] == "invalid_json"
        wrong = await client.put(
            "/v1/me/consents",
            json={"purposes": {"tracking": {"granted": True}}},
            headers=bearer(token),
        )
        assert wrong.status_code == 422 and "purposes" in wrong.json()["message"]
        codes = [
            (await client.get("/v1/me/consents", headers=bearer(token))).status_code
            for _ in range(4)
        ]
        assert codes[-1] == 429
        limited = await client.get("/v1/me/consents", headers=bearer(token))
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        assert limited.json()["error"] == "rate_limited"
        missing = await client.get("/v1/nothing-here")
        assert missing.status_code == 404 and missing.json()["error"] == "not_found"
        method = await client.patch("/v1/me/consents", headers=bearer(token))
        assert method.status_code == 405 and method.json()["error"] == "method_not_allowed"


async def test_openapi_describes_every_v1_endpoint_and_who_may_call_it(
    make_config: Any, broker: Any
) -> None:
    async with serve(make_config(broker.port)) as served:
        document = (await served.client.get("/openapi.json")).json()
    for endpoint in ENDPOINTS:
        operation = document["paths"][endpoint.path][endpoint.method.lower()]
        assert operation["description"].startswith("Who may call:")
        assert operation["x-roles"] == (list(endpoint.who) or ["public"])
        assert "429" in operation["responses"]
    assert "ErrorBody" in document["components"]["schemas"]


async def test_consent_decision_and_erasure_events_queue_for_hq(
    make_config: Any, broker: Any
) -> None:
    """With HQ sync on (HQ unreachable here, so the events wait in the outbox): each consent
    change, phone decision and the erasure commits its event with it; the erasure takes the
    shopper's queued events with it and leaves only its own."""
    base: Config = make_config(broker.port)
    key = TrustedKeyConfig(id="hq-1", public_key="11" * 32)
    hq = msgspec.structs.replace(
        base.hq, enabled=True, port=free_port(), tls=False, trusted_keys=[key]
    )
    config = msgspec.structs.replace(base, hq=hq)
    async with serve(config) as served:
        shopper, token = await linked_alice(served, EVERYTHING)
        await served.client.get("/v1/me/offers", headers=bearer(token))

        def queued() -> list[Event]:
            return [decode_event(e.payload) for e in pending(served.gateway.db, 1000)]

        kinds = [e.type for e in queued() if e.body.get("shopper") == shopper]
        assert kinds.count("consent") == 1 and kinds.count("decision") == 1
        consent = next(e for e in queued() if e.type == "consent")
        assert set(consent.body["purposes"]) == set(EVERYTHING)
        assert all(p["granted"] for p in consent.body["purposes"].values())
        assert (await served.client.delete("/v1/me", headers=bearer(token))).status_code == 200
        naming = [e for e in queued() if shopper in msgspec.json.encode(e.body).decode()]
        assert [e.type for e in naming] == ["erasure"]


async def test_kiosk_pages_and_streams_need_that_kiosks_token(
    make_config: Any, broker: Any
) -> None:
    async with serve(make_config(broker.port)) as served:
        client = served.client
        bare = await client.get("/kiosk/kiosk-1")
        assert bare.status_code == 401 and "needs the token of kiosk kiosk-1" in bare.text
        for path in ("/kiosk/kiosk-1/offer", "/kiosk/kiosk-1/events"):
            answer = await client.get(path)
            assert answer.status_code == 401 and answer.json()["error"] == "token_missing"
        shopper = (await client.post("/v1/register", json={})).json()["token"]
        wrong = await client.get("/kiosk/kiosk-1/offer", headers=bearer(shopper))
        assert wrong.status_code == 403 and wrong.json()["error"] == "forbidden"
        token, _ = await served.gateway.shoppers.issue("kiosk", "kiosk-1")
        setup = await client.get(f"/kiosk/kiosk-1?token={token}")
        assert setup.status_code == 303 and setup.headers["location"] == "/kiosk/kiosk-1"
        cookie = setup.headers["set-cookie"]
        assert (
            "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/kiosk/kiosk-1" in cookie
        )
        screen = {"Cookie": f"moments_kiosk={token}"}  # what the browser sends back
        page = await client.get("/kiosk/kiosk-1", headers=screen)
        assert page.status_code == 200 and 'data-kiosk="kiosk-1"' in page.text
        offer = await client.get("/kiosk/kiosk-1/offer", headers=screen)
        assert offer.status_code == 200
        # Revoked: the screen's cookie stops working too.
        await served.gateway.shoppers.revoke_subject("kiosk", "kiosk-1")
        gone = await client.get("/kiosk/kiosk-1/offer", headers=screen)
        assert gone.status_code == 401 and gone.json()["error"] == "token_revoked"


class AlertWatcher:
    """A staff device: follows the retained staff alert state on the store broker."""

    def __init__(self, port: int, topic: str = "moments/v1/store-1/staff/alerts") -> None:
        self.states: queue.Queue[dict[str, Any]] = queue.Queue()
        self._client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5
        )
        self._client.on_message = lambda _c, _u, msg: self.states.put(json.loads(msg.payload))
        self._client.connect("127.0.0.1", port)
        self._client.subscribe(topic, qos=1)
        self._client.loop_start()

    def until(self, check: Any, timeout: float = 15.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            state = self.states.get(timeout=max(0.01, deadline - time.monotonic()))
            if check(state):
                return state

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


async def test_staff_alerts_show_only_a_name_and_go_when_consent_does(
    make_config: Any, broker: Any
) -> None:
    async with serve(make_config(broker.port)) as served:
        watcher = AlertWatcher(broker.port)
        try:
            # Published at start, empty: whatever an earlier run left retained is cleared.
            await asyncio.to_thread(watcher.until, lambda s: s == {"v": 1, "alerts": []})
            _shopper, token = await linked_alice(served, EVERYTHING)
            await at_the_coffee_kiosk(served, token)
            asked = await served.client.post("/v1/me/help", headers=bearer(token))
            assert asked.status_code == 202 and asked.json()["zone"] == "coffee"
            state = await asyncio.to_thread(watcher.until, lambda s: len(s["alerts"]) == 1)
            [alert] = state["alerts"]
            # Only what staff_assist allows: a name, the zone, times, why, and who took it.
            # No shopper id, no segments.
            assert set(alert) == {
                "alert_id",
                "name",
                "zone",
                "since",
                "reason",
                "level",
                "acknowledged_by",
                "acknowledged_at",
            }
            assert alert["name"] == "Alice" and alert["zone"] == "coffee"
            staff, _ = await served.gateway.shoppers.issue("staff", "staff-7")
            listed = await served.client.get("/v1/staff/alerts", headers=bearer(staff))
            assert [a["name"] for a in listed.json()["alerts"]] == ["Alice"]
            await served.client.put(
                "/v1/me/consents",
                json={"purposes": {"staff_assist": {"granted": False}}},
                headers=bearer(token),
            )
            assert served.gateway.shoppers.help == {}
            await asyncio.to_thread(watcher.until, lambda s: s["alerts"] == [])
        finally:
            watcher.close()


async def test_housekeeping_drops_expired_revocations_and_unused_link_codes(
    make_config: Any, broker: Any
) -> None:
    async with serve(make_config(broker.port)) as served:
        shoppers = served.gateway.shoppers
        await served.gateway.writer.write(served.gateway.db.put_op(demo_records(time.time())))
        _token, old = shoppers.tokens.issue(
            "shopper", "shopper-bob", now=time.time() - 120, ttl_s=60
        )
        await shoppers.revoke(old)
        code, _ = await shoppers.link_code("shopper-bob", ttl_s=0.01)
        await asyncio.sleep(0.05)
        dropped = await shoppers.housekeeping()
        assert dropped["revocations"] == 1 and dropped["link_codes"] == 1
        late = await served.client.post("/v1/register", json={"link_code": code})
        assert late.status_code == 422


async def test_phone_messages_respect_the_shoppers_caps_and_quiet_hours(
    make_config: Any, broker: Any
) -> None:
    async with serve(make_config(broker.port)) as served:
        shopper, token = await linked_alice(served, EVERYTHING)
        shoppers = served.gateway.shoppers

        async def arrive(zone: str, t: float) -> None:
            entered = ZoneEntered(subject=shopper, zone=zone, t=t, rssi=-50.0)
            served.gateway.moments.on_presence(entered)  # as the gateway does: moments first
            shoppers.on_presence(entered)
            await shoppers.settled()  # the decision's write, then the queue

        prefs = {"max_per_visit": 1, "max_per_day": 2, "quiet_hours": None}
        assert (
            await served.client.put("/v1/me/preferences", json=prefs, headers=bearer(token))
        ).json() == prefs
        now = time.time() // 86_400 * 86_400 + 10 * 3600  # 10:00 UTC today: one whole day
        await arrive("entrance", now)
        await arrive("coffee", now + 1)  # same visit: the visit's one message is used up
        assert len(shoppers.phone.peek(shopper)) == 1
        await arrive("coffee", now + 3600)  # a new visit, the day's second message
        await arrive("entrance", now + 7200)  # a third visit: the day's limit holds
        taken = (await served.client.get("/v1/me/messages", headers=bearer(token))).json()
        assert len(taken["messages"]) == 2
        assert shoppers.phone.peek(shopper) == []
        # Quiet hours from 10 to 11 (store time is UTC here), two days on (fresh caps).
        hour = 10
        quiet = {"max_per_visit": None, "max_per_day": None, "quiet_hours": [hour, (hour + 1) % 24]}
        await served.client.put("/v1/me/preferences", json=quiet, headers=bearer(token))
        await arrive("coffee", now + 2 * 86_400)
        assert shoppers.phone.peek(shopper) == []
        await arrive("coffee", now + 2 * 86_400 + 3600)  # the hour after: not quiet
        assert len(shoppers.phone.peek(shopper)) == 1


async def test_a_withdrawal_from_hq_is_in_force_within_a_tick(
    make_config: Any, broker: Any
) -> None:
    """A consent HQ withdrew arrives through the consents stream, not through this API: the
    once-a-second recheck takes the shopper out of the zones, their queued cards and alerts."""
    async with serve(make_config(broker.port)) as served:
        shopper, token = await linked_alice(served, EVERYTHING)
        gateway = served.gateway
        await at_the_coffee_kiosk(served, token)
        await until(lambda: gateway.sensing.zone_of(shopper) == "coffee")
        await until(lambda: len(gateway.shoppers.phone.peek(shopper)) > 0)
        await served.client.post("/v1/me/help", headers=bearer(token))
        held = gateway.db.consent(shopper)
        assert held is not None
        withdrawn = {
            name: msgspec.structs.replace(state, granted=False, hlc=state.hlc + 1)
            for name, state in held.purposes.items()
            if name in {"presence", "personalization", "staff_assist"}
        }
        record = msgspec.structs.replace(held, purposes={**held.purposes, **withdrawn})
        await gateway.writer.write(gateway.db.put_op([record]))  # as HQ's stream would
        await until(lambda: gateway.sensing.zone_of(shopper) is None, timeout=10)
        assert gateway.shoppers.phone.peek(shopper) == []
        assert gateway.shoppers.help == {}
        assert gateway.hub.current("kiosk-1").personal is False


async def test_stock_and_redemptions_close_the_loop(
    make_config: Any, broker: Any, publisher: Any
) -> None:
    """An offer whose product is out by the shelf's last word is not shown; once restocked
    it is; the till's redemption over MQTT is attributed to that showing, once per receipt,
    and the lift report counts it."""
    async with serve(make_config(broker.port)) as served:
        gateway = served.gateway
        shopper, token = await linked_alice(served, EVERYTHING)
        beans = next(o for o in gateway.db.offers() if o.offer_id == "espresso-beans-1kg")
        stocked = msgspec.structs.replace(beans, stock_skus=["sku-beans"])
        await gateway.writer.write(gateway.db.put_op([stocked]))
        await until(lambda: gateway.link.is_up)
        shelf = "moments/v1/store-1/shelves/shelf-7/stock"

        def stock(qty: int) -> None:
            body = {"v": 1, "shelf": "shelf-7", "items": [{"sku": "sku-beans", "qty": qty}]}
            publisher.publish(shelf, msgspec.json.encode(body), qos=1)

        stock(0)
        await until(lambda: gateway.devices.stock.in_stock("sku-beans") is False)
        out = (await served.client.get("/v1/me/offers", headers=bearer(token))).json()
        assert all(o["offer_id"] != "espresso-beans-1kg" for o in out["offers"])
        stock(12)
        await until(lambda: gateway.devices.stock.in_stock("sku-beans") is True)
        gateway.moments.forget(shopper)  # a new moment: the offers are drawn again
        shown = (await served.client.get("/v1/me/offers", headers=bearer(token))).json()
        assert [o["offer_id"] for o in shown["offers"]] == ["espresso-beans-1kg"]
        till = {
            "v": 1,
            "lane": "lane-3",
            "offer_id": "espresso-beans-1kg",
            "shopper_id": shopper,
            "at": time.time(),
            "receipt": "R-1001",
        }
        for _ in range(2):  # the till sends it twice: recorded once
            publisher.publish(
                "moments/v1/store-1/pos/lane-3/redemptions", msgspec.json.encode(till), qos=1
            )
        await until(lambda: gateway.devices.redeemed == 1)
        await asyncio.sleep(0.3)
        assert gateway.devices.redeemed == 1
        staff, _ = await gateway.shoppers.issue("staff", "till-desk")
        again = await served.client.post(
            "/v1/redemptions", json={**till, "receipt": "R-1002"}, headers=bearer(staff)
        )
        assert again.json() == {"recorded": True, "side": "treatment"}
        extra = await served.client.post(
            "/v1/redemptions", json={**till, "receipt": "R-1003", "x": 1}, headers=bearer(staff)
        )
        assert extra.status_code == 422  # unknown fields are refused, as in every body
        bad = await served.client.post(
            "/v1/redemptions", json={**till, "v": 2}, headers=bearer(staff)
        )
        assert bad.status_code == 422
        tallies = exposures(gateway.db)["espresso-beans-1kg"]
        assert tallies.redemptions_treatment == 2 and tallies.impressions_treatment >= 1


async def test_a_cap_holds_under_a_burst_of_channels(make_config: Any, broker: Any) -> None:
    """The kiosk in front of the shopper, their app asking twenty times at once and presence
    events in the middle: an offer capped at one showing per visit is shown once."""
    async with serve(make_config(broker.port)) as served:
        gateway = served.gateway
        shopper, token = await linked_alice(served, EVERYTHING)
        beans = next(o for o in gateway.db.offers() if o.offer_id == "espresso-beans-1kg")
        capped = msgspec.structs.replace(beans, caps=Caps(per_visit=1))
        await gateway.writer.write(gateway.db.put_op([capped]))
        now = time.time()

        async def ask() -> Any:
            return (await served.client.get("/v1/me/offers", headers=bearer(token))).json()

        async def walk(k: int) -> None:
            gateway.moments.on_presence(
                ZoneEntered(subject=shopper, zone="coffee", t=now + k * 0.01, rssi=-50.0)
            )
            gateway.kiosks.on_presence(
                ZoneEntered(subject=shopper, zone="coffee", t=now + k * 0.01, rssi=-50.0)
            )
            gateway.shoppers.on_presence(
                ZoneEntered(subject=shopper, zone="coffee", t=now + k * 0.01, rssi=-50.0)
            )

        await asyncio.gather(*(ask() for _ in range(20)), *(walk(k) for k in range(5)))
        await gateway.shoppers.settled()  # the decisions' writes
        # One showing per visit, whatever the channels: every record of it is the same moment.
        assert gateway.moments.showings(shopper, "espresso-beans-1kg") == 1
        records = decisions(gateway.db, shopper, limit=200)
        assert any(r.offer_id == "espresso-beans-1kg" for r in records)


async def test_a_queued_phone_card_is_pushed_for_the_messaging_service(
    make_config: Any, broker: Any
) -> None:
    async with serve(make_config(broker.port)) as served:
        watcher = AlertWatcher(broker.port, "moments/v1/store-1/phone/messages")
        try:
            shopper, token = await linked_alice(served, EVERYTHING)
            await until(lambda: served.gateway.link.is_up)
            await at_the_coffee_kiosk(served, token)
            pushed = await asyncio.to_thread(watcher.until, lambda m: m["shopper"] == shopper)
            assert pushed["card"]["offer_id"] == "espresso-beans-1kg"
            assert pushed["card"]["regular_price"] == 16.9
        finally:
            watcher.close()
