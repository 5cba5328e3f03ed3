"""No consent, no effect: random sequences of a shopper's consent changes and actions, driven
through the real app over a real socket, with the privacy invariants checked after every step.

The shopper model is six purposes (granted or not), the "no marketing" objection and whether
the shopper was erased. After every step, on the app's own loop (so nothing moves while it is
read), and once every write the step caused has committed:

- the kiosk shows nothing personal unless presence, personalization and kiosk_display are all
  granted and there is no objection to marketing;
- nothing waits for the phone without phone_messages (and nothing with the objection), and
  nothing personal without personalization;
- the shopper has no open staff alert without staff_assist, and is in no zone without presence;
- an analytics event in the outbox (a visit, an impression, a phone decision) names the shopper
  only if analytics was granted when it was recorded;
- the store's consent record is the model's, and after an erasure nothing of the shopper is
  left but the erasure event.

Every withdrawal is followed at once by the requests that would show it was not yet in force
(the "very next request" sees it).

``test_a_change_racing_a_walk_in_wins`` drives the gateway directly to pin the interleavings
the HTTP machine reaches only by chance: a withdrawal or an erasure in flight together with the
writes a shopper's walk-in causes (a phone offer, a visit, an impression).
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import httpx
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    precondition,
    rule,
    run_state_machine_as_test,
)

from beacons.frames import IBeacon
from firmware_sim.scenario import STORE_UUID, demo_records
from gateway.config import Config
from gateway.consents import counters, decisions
from gateway.runtime import Gateway
from gateway.store import ConsentRecord, ProfileRecord, Purpose
from gateway.sync.envelope import Event, decode_event
from gateway.sync.outbox import MAX_PENDING, PROTECTED_TYPES, pending
from tests.privacy.conftest import GENEROUS_LIMITS, AppThread, with_unreachable_hq
from tests.support.broker import Broker
from tests.support.peers import Served

pytestmark = pytest.mark.mqtt

PURPOSES = (
    "presence",
    "personalization",
    "kiosk_display",
    "phone_messages",
    "staff_assist",
    "analytics",
)
KIOSK = "kiosk-1"
COFFEE_BEACON = {"uuid": STORE_UUID, "major": 1, "minor": 2}  # bcn-coffee, in the kiosk's zone
SEGMENTS = ["coffee-lover", "loyalty-gold"]  # Alice's: the espresso offer is personal for them

MACHINE_SETTINGS = settings(
    max_examples=40,
    stateful_step_count=20,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


EVERYTHING = dict.fromkeys(PURPOSES, True)
# Opt-in: everything (the case with the most to withdraw), or any mix.
CONSENTS = st.just(EVERYTHING) | st.dictionaries(st.sampled_from(PURPOSES), st.booleans())
# A change: up to three purposes granted or withdrawn, or everything granted again.
CHANGES = st.dictionaries(st.sampled_from(PURPOSES), st.booleans(), max_size=3) | st.just(
    EVERYTHING
)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Model:
    """What the shopper decided, as the test understands it."""

    granted: dict[str, bool] = field(default_factory=lambda: dict.fromkeys(PURPOSES, False))
    no_marketing: bool = False
    erased: bool = False

    def allows(self, purpose: str) -> bool:
        return not self.erased and self.granted[purpose]

    def shows(self) -> bool:
        return not self.no_marketing and all(
            self.allows(p) for p in ("presence", "personalization", "kiosk_display")
        )

    def sends(self) -> bool:
        return not self.no_marketing and self.allows("phone_messages")


@dataclass(frozen=True)
class Snapshot:
    """The gateway's live state about one shopper, read in one go on its loop."""

    kiosk_personal: bool
    at_kiosk: str | None
    waiting: list[Any]
    help: list[Any]
    zone: str | None
    events: list[Event]
    last_seq: int
    consent: ConsentRecord | None
    profile: ProfileRecord | None


async def settle(gateway: Gateway) -> None:
    """Every write submitted so far has committed and its callbacks have run (the writer is
    first in, first out, and a phone decision is pushed a few loop turns after its commit)."""
    await gateway.writer.write(lambda _txn: None)
    for _ in range(8):
        await asyncio.sleep(0)


async def snapshot(gateway: Gateway, shopper: str, after: int) -> Snapshot:
    await settle(gateway)
    events: list[Event] = []
    last = after
    while True:
        batch = pending(gateway.db, MAX_PENDING, after=last)
        if not batch:
            break
        events += [decode_event(e.payload) for e in batch]
        last = batch[-1].seq
    return Snapshot(
        kiosk_personal=gateway.hub.current(KIOSK).personal,
        at_kiosk=gateway.kiosks.shopper_at(KIOSK),
        waiting=gateway.shoppers.phone.peek(shopper),
        help=[h for h in gateway.shoppers.help.values() if h.shopper_id == shopper],
        zone=gateway.sensing.zone_of(shopper),
        events=events,
        last_seq=last,
        consent=gateway.db.consent(shopper),
        profile=gateway.db.profile(shopper),
    )


def names(event: Event, shopper: str) -> bool:
    return shopper.encode() in msgspec.json.encode(event.body)


def sightings_now() -> dict[str, Any]:
    """The app ranged the coffee aisle's beacon strongly for the last few seconds."""
    now = time.time()
    return {
        "sightings": [{**COFFEE_BEACON, "rssi": -50, "at": now - 3 + k * 0.5} for k in range(7)]
    }


class Enforcement(RuleBasedStateMachine):
    """One shopper per example, on the app the test serves (the class attributes)."""

    app: ClassVar[AppThread]
    admin: ClassVar[str]
    numbers: ClassVar[Iterator[int]]

    def __init__(self) -> None:
        super().__init__()
        self.model = Model()
        self.shopper = ""
        self.token = ""
        self.nickname = ""
        self.seen = 0  # outbox sequence checked so far
        self.analytics_before = False
        self.steps = 0

    # ----- plumbing -----

    @property
    def served(self) -> Served:
        return self.app.served

    def request(
        self, method: str, path: str, *, json: Any = None, token: str | None = None
    ) -> httpx.Response:
        headers = bearer(self.token if token is None else token)
        return self.app.run(self.served.client.request(method, path, json=json, headers=headers))

    def refused_after_erasure(self, answer: httpx.Response) -> bool:
        if not self.model.erased:
            return False
        assert answer.status_code == 401, answer.text
        assert answer.json()["error"] == "token_revoked"
        return True

    def begin(self) -> None:
        self.steps += 1
        self.analytics_before = self.model.allows("analytics")

    def check(self) -> None:
        """The invariants, on the app's loop, once everything the step caused has committed."""
        model, shopper = self.model, self.shopper
        now = self.app.run(snapshot(self.served.gateway, shopper, self.seen))
        if now.kiosk_personal:
            assert now.at_kiosk == shopper and model.shows(), (now, model)
        if not model.sends():
            assert now.waiting == [], (now.waiting, model)
        if not model.allows("personalization"):
            assert not any(card.personal for card in now.waiting), (now.waiting, model)
        if not model.allows("staff_assist"):
            assert now.help == [], (now.help, model)
        if not model.allows("presence"):
            assert now.zone is None, (now.zone, model)
        analytics = self.analytics_before or model.allows("analytics")
        for event in now.events:
            if event.type not in PROTECTED_TYPES and names(event, shopper):
                assert analytics, (event, model)
        self.seen = now.last_seq
        if model.erased:
            assert now.consent is None and now.profile is None
            assert now.waiting == [] and now.help == [] and now.zone is None
            everything = self.app.run(snapshot(self.served.gateway, shopper, 0)).events
            assert [e.type for e in everything if names(e, shopper)] == ["erasure"]
            return
        stored = now.consent or ConsentRecord(shopper_id=shopper)  # none yet: nothing granted
        for purpose in PURPOSES:
            state = stored.purposes.get(purpose)
            assert (state is not None and state.granted) == model.granted[purpose], purpose
        assert stored.no_marketing == model.no_marketing

    # ----- steps -----

    @initialize(consents=CONSENTS)
    def opt_in(self, consents: dict[str, bool]) -> None:
        number = next(self.numbers)
        self.shopper, self.nickname = f"shopper-p{number}", f"P{number}"
        self.token = self.app.run(self._link(consents))
        self.model.granted.update(consents)
        self.begin()
        self.seen = 0
        self.check()

    async def _link(self, consents: dict[str, bool]) -> str:
        """A fresh HQ profile (Alice's interests) linked to an app with a desk code."""
        gateway, client = self.served.gateway, self.served.client
        profile = ProfileRecord(
            shopper_id=self.shopper,
            first_name=self.nickname,
            nickname=self.nickname,
            segments=SEGMENTS,
            greet_on_kiosk=True,
        )
        await gateway.writer.write(gateway.db.put_op([profile]))
        code = await client.post(
            "/v1/admin/link-codes", json={"shopper_id": self.shopper}, headers=bearer(self.admin)
        )
        assert code.status_code == 201, code.text
        answer = await client.post(
            "/v1/register",
            json={"link_code": code.json()["code"], "consents": consents, "notice_version": "n1"},
        )
        assert answer.status_code == 201, answer.text
        assert answer.json()["shopper_id"] == self.shopper
        token: str = answer.json()["token"]
        return token

    @rule(purposes=CHANGES, no_marketing=st.none() | st.booleans())
    def change_consents(self, purposes: dict[str, bool], no_marketing: bool | None) -> None:
        self.begin()
        was = Model(dict(self.model.granted), self.model.no_marketing, self.model.erased)
        body: dict[str, Any] = {
            "purposes": {p: {"granted": g} for p, g in purposes.items()},
            "notice_version": "n2",
        }
        if no_marketing is not None:
            body["no_marketing"] = no_marketing
        answer = self.request("PUT", "/v1/me/consents", json=body)
        if self.refused_after_erasure(answer):
            self.check()
            return
        assert answer.status_code == 200, answer.text
        self.model.granted.update(purposes)
        if no_marketing is not None:
            self.model.no_marketing = no_marketing
        view = answer.json()
        assert view["no_marketing"] == self.model.no_marketing
        for purpose in PURPOSES:
            shown = view["purposes"].get(purpose, {}).get("granted", False)
            assert shown == self.model.granted[purpose], (purpose, view)
        # In force before the answer: the state right now, before any other request ...
        self.check()
        # ... and the very next requests already see every withdrawal.
        self.probe(was)

    def probe(self, was: Model) -> None:
        model = self.model

        def lost(*purposes: str) -> bool:
            return any(was.allows(p) and not model.allows(p) for p in purposes)

        objected = model.no_marketing and not was.no_marketing
        if lost("presence"):
            answer = self.request("POST", "/v1/me/sightings", json=sightings_now())
            assert answer.json() == {"placed": 0, "dropped": {"no_consent": 7}}, answer.text
        if lost("phone_messages") or objected:
            assert self.request("GET", "/v1/me/messages").json() == {"messages": []}
            assert self.request("GET", "/v1/me/offers").json()["offers"] == []
        if lost("personalization"):
            offers = self.request("GET", "/v1/me/offers").json()["offers"]
            assert not any(o["personal"] for o in offers), offers
            messages = self.request("GET", "/v1/me/messages").json()["messages"]
            assert not any(m["personal"] for m in messages), messages
        if lost("presence", "personalization", "kiosk_display") or objected:
            content = self.request("GET", f"/v1/kiosks/{KIOSK}/content", token=self.admin)
            assert content.status_code == 200 and content.json()["personal"] is False
        if lost("staff_assist"):
            answer = self.request("POST", "/v1/me/help")
            assert answer.status_code == 403 and answer.json()["error"] == "consent_required"
            alerts = self.request("GET", "/v1/staff/alerts", token=self.admin).json()["alerts"]
            assert all(a["name"] != self.nickname for a in alerts), alerts
        self.check()

    @rule()
    def sighted_at_the_coffee_kiosk(self) -> None:
        self.begin()
        answer = self.request("POST", "/v1/me/sightings", json=sightings_now())
        if not self.refused_after_erasure(answer):
            assert answer.status_code == 200, answer.text
            if self.model.allows("presence"):
                assert answer.json() == {"placed": 7, "dropped": {}}
            else:
                assert answer.json() == {"placed": 0, "dropped": {"no_consent": 7}}
        self.check()

    @rule()
    def asks_for_offers(self) -> None:
        self.begin()
        answer = self.request("GET", "/v1/me/offers")
        if not self.refused_after_erasure(answer):
            assert answer.status_code == 200, answer.text
            offers = answer.json()["offers"]
            if not self.model.sends():
                assert offers == [], offers
            elif self.model.allows("personalization"):
                assert [(o["offer_id"], o["personal"]) for o in offers] == [
                    ("espresso-beans-1kg", True)
                ]
            else:
                assert [(o["offer_id"], o["personal"]) for o in offers] == [("croissants", False)]
        self.check()

    @rule()
    def collects_messages(self) -> None:
        self.begin()
        answer = self.request("GET", "/v1/me/messages")
        if not self.refused_after_erasure(answer):
            assert answer.status_code == 200, answer.text
            messages = answer.json()["messages"]
            if not self.model.sends():
                assert messages == [], messages
            if not self.model.allows("personalization"):
                assert not any(m["personal"] for m in messages), messages
        self.check()

    @rule()
    def asks_for_help(self) -> None:
        self.begin()
        answer = self.request("POST", "/v1/me/help")
        if not self.refused_after_erasure(answer):
            if self.model.allows("staff_assist"):
                assert answer.status_code == 202, answer.text
            else:
                assert answer.status_code == 403, answer.text
                assert answer.json()["error"] == "consent_required"
        self.check()

    @precondition(lambda self: self.steps >= 12 and not self.model.erased)
    @rule()
    def erases_everything(self) -> None:
        self.begin()
        answer = self.request("DELETE", "/v1/me")
        if not self.refused_after_erasure(answer):
            assert answer.status_code == 200, answer.text
            assert answer.json()["shopper_id"] == self.shopper
            self.model.erased = True
        self.check()

    def teardown(self) -> None:
        """The next example's shopper stands alone: this one leaves the store for good."""
        if self.shopper and not self.model.erased:
            answer = self.request("DELETE", "/v1/me")
            assert answer.status_code == 200, answer.text


@pytest.fixture
def app(make_config: Callable[..., Config], broker: Broker) -> Iterator[AppThread]:
    config = with_unreachable_hq(make_config(broker.port, **GENEROUS_LIMITS))
    with AppThread(config) as running:
        gateway = running.served.gateway
        running.run(gateway.writer.write(gateway.db.put_op(demo_records(time.time()))))
        yield running


def test_no_consent_no_effect_through_the_api(app: AppThread) -> None:
    gateway = app.served.gateway
    admin, _claims = app.run(gateway.shoppers.issue("admin", "privacy-desk"))
    Enforcement.app, Enforcement.admin = app, admin
    Enforcement.numbers = itertools.count(1)
    run_state_machine_as_test(Enforcement, settings=MACHINE_SETTINGS)


# ----- a withdrawal or an erasure racing a walk-in -----

# What the shopper does while walking in: withdraw some purposes (and perhaps object to
# marketing), or erase everything.
WITHDRAWALS = st.dictionaries(st.sampled_from(PURPOSES), st.just(False), min_size=1, max_size=3)
ACTIONS = st.tuples(WITHDRAWALS, st.none() | st.just(True)) | st.just("erase")


@dataclass(frozen=True)
class Aftermath:
    """What is left about the shopper once the walk-in and the change have both settled."""

    waiting: list[Any]
    collected: list[Any]
    consent: ConsentRecord | None
    profile: ProfileRecord | None
    kiosk_personal: bool
    naming: list[str]  # the types of the outbox events that name the shopper
    decisions: int
    counters: int


async def walk_in_meets_change(
    gateway: Gateway, shopper: str, action: Any, *, change_first: bool
) -> Aftermath:
    """A shopper who granted everything walks into the coffee aisle (their app's sightings:
    the entry, the kiosk's personal content, a visit and an impression for HQ, a phone offer
    decided and recorded) while their withdrawal or erasure is on its way. The writer is held
    meanwhile, so neither has committed when the other is submitted, as on a busy store; the
    change is submitted just before or just after the walk-in's writes."""
    shoppers = gateway.shoppers
    profile = ProfileRecord(shopper_id=shopper, nickname="Q", segments=SEGMENTS)
    await gateway.writer.write(gateway.db.put_op([profile]))
    await shoppers.change_consents(
        shopper, {p: (True, None) for p in PURPOSES}, no_marketing=None, notice_version="n1"
    )
    inside, gate = threading.Event(), threading.Event()

    def hold(_txn: Any) -> None:
        inside.set()
        gate.wait(10)

    held = gateway.writer.submit(hold)
    await asyncio.to_thread(inside.wait, 10)  # the writer is busy: what follows queues up

    async def change() -> None:
        if action == "erase":
            await shoppers.erase(shopper)
            return
        withdrawn, no_marketing = action
        changes = {p: (g, None) for p, g in withdrawn.items()}
        await shoppers.change_consents(
            shopper, changes, no_marketing=no_marketing, notice_version="n2"
        )

    async def walk_in() -> None:
        beacon = IBeacon(uuid=STORE_UUID, major=1, minor=2, tx_power=-59)
        now = time.time()
        for k in range(7):
            gateway.sensing.app_sighting(shopper, beacon, -50, now - 3 + k * 0.5)
        for _ in range(5):  # the phone decision's write is submitted
            await asyncio.sleep(0)

    first, then = (change, walk_in) if change_first else (walk_in, change)
    started = asyncio.ensure_future(first())
    for _ in range(5):  # the first one's writes are submitted before the second one starts
        await asyncio.sleep(0)
    following = asyncio.ensure_future(then())
    for _ in range(5):
        await asyncio.sleep(0)
    gate.set()
    await held
    await started
    await following
    await settle(gateway)
    events = [decode_event(e.payload) for e in pending(gateway.db, MAX_PENDING)]
    aftermath = Aftermath(
        waiting=shoppers.phone.peek(shopper),
        collected=shoppers.messages(shopper),
        consent=gateway.db.consent(shopper),
        profile=gateway.db.profile(shopper),
        kiosk_personal=gateway.hub.current(KIOSK).personal,
        naming=[e.type for e in events if names(e, shopper)],
        decisions=len(decisions(gateway.db, shopper)),
        counters=len(counters(gateway.db, shopper)),
    )
    if action != "erase":
        await shoppers.erase(shopper)  # the next example's shopper stands alone
    return aftermath


@settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(action=ACTIONS, change_first=st.booleans())
def test_a_change_racing_a_walk_in_wins(app: AppThread, action: Any, change_first: bool) -> None:
    """Whichever commits first, what the change forbids is not left behind: nothing waits for
    the phone (nor reaches it) that the standing consent does not allow, a personal offer
    decided just before personalization was withdrawn is not delivered, and after an erasure
    nothing names the shopper but the erasure event, not even an event or a decision that was
    on its way to the store's disk when the erasure committed."""
    shopper = f"shopper-r{next(RACERS)}"
    after = app.run(
        walk_in_meets_change(app.served.gateway, shopper, action, change_first=change_first)
    )
    example = (action, change_first)
    if action == "erase":
        assert after.consent is None and after.profile is None, example
        assert after.waiting == [] and after.collected == [], example
        assert not after.kiosk_personal, example
        assert after.naming == ["erasure"], example
        assert after.decisions == 0 and after.counters == 0, example
        return
    assert after.consent is not None
    now = time.time()
    model = Model(
        {p: after.consent.allows(Purpose(p), now) for p in PURPOSES}, after.consent.no_marketing
    )
    assert not any(model.granted[p] for p in action[0]), example
    for cards in (after.waiting, after.collected):
        if not model.sends():
            assert cards == [], (cards, example)
        if not model.allows("personalization"):
            assert not any(card.personal for card in cards), (cards, example)
    if after.kiosk_personal:
        assert model.shows(), example


RACERS = itertools.count(1)
