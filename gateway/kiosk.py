"""Kiosk screens: what each one shows now, and the live streams that follow it.

``KioskHub`` owns, per kiosk, the current view (rendered HTML, a version that only grows, and
whether it is personal) and the subscribers of its live stream. Each subscriber has a small
bounded queue; a view is a state, not a message, so when a slow screen's queue is full the
stale views in it are dropped and only the newest is kept (counted in ``coalesced``).

``KioskDirector`` decides and renders: which opted-in shopper stands at which kiosk (from
presence events), and, on every change and on every request, re-reads that shopper's consent
and profile from the store, decides, and renders. Consent is never cached here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from beacons.presence import LeftKiosk, NearKiosk, PresenceEvent, ZoneEntered, ZoneLeft
from gateway.clock import Clock
from gateway.config import KioskConfig
from gateway.engine import KioskDecision, decide_for_kiosk
from gateway.errors import RenderError, StoreError
from gateway.logs import RateLimitedLog
from gateway.metrics import Metrics
from gateway.moments import Moments
from gateway.render import Renderer, Scalar, card_values
from gateway.store import ConsentRecord, Database, ProfileRecord

__all__ = ["KioskDirector", "KioskHub", "KioskView"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class KioskView:
    kiosk_id: str
    version: int
    html: str
    personal: bool
    offer_id: str | None
    reason: str

    def wire(self) -> dict[str, object]:
        """What a screen receives: never the shopper id or any other identifier."""
        return {"version": self.version, "html": self.html, "personal": self.personal}


class KioskHub:
    def __init__(self, kiosk_ids: list[str], *, queue_size: int = 4) -> None:
        self._views: dict[str, KioskView] = {
            k: KioskView(k, 0, "", False, None, "starting") for k in kiosk_ids
        }
        self._subscribers: dict[str, set[asyncio.Queue[KioskView]]] = {k: set() for k in kiosk_ids}
        self._queue_size = queue_size
        self.coalesced = 0

    def __contains__(self, kiosk_id: str) -> bool:
        return kiosk_id in self._views

    def kiosk_ids(self) -> list[str]:
        return list(self._views)

    def current(self, kiosk_id: str) -> KioskView:
        return self._views[kiosk_id]

    def clients(self) -> int:
        return sum(len(s) for s in self._subscribers.values())

    def publish(self, kiosk_id: str, html: str, decision: KioskDecision) -> KioskView | None:
        """Make ``html`` the kiosk's view if it differs; returns the new view or None."""
        old = self._views[kiosk_id]
        if old.html == html and old.personal == decision.personal:
            return None
        offer_id = decision.offer.offer_id if decision.offer else None
        view = KioskView(
            kiosk_id, old.version + 1, html, decision.personal, offer_id, decision.reason
        )
        self._views[kiosk_id] = view
        for queue in self._subscribers[kiosk_id]:
            while queue.full():
                queue.get_nowait()
                self.coalesced += 1
            queue.put_nowait(view)
        return view

    @contextmanager
    def subscribe(self, kiosk_id: str) -> Iterator[asyncio.Queue[KioskView]]:
        queue: asyncio.Queue[KioskView] = asyncio.Queue(maxsize=self._queue_size)
        queue.put_nowait(self._views[kiosk_id])
        self._subscribers[kiosk_id].add(queue)
        try:
            yield queue
        finally:
            self._subscribers[kiosk_id].discard(queue)


class KioskDirector:
    def __init__(
        self,
        *,
        kiosks: list[KioskConfig],
        store_name: str,
        db: Database,
        renderer: Renderer,
        hub: KioskHub,
        clock: Clock,
        metrics: Metrics,
        on_view: Callable[[KioskView, str | None, KioskDecision], None] | None = None,
        moments: Moments | None = None,
        social_proof_floor: int = 5,
    ) -> None:
        self._moments = moments
        self._proof_floor = social_proof_floor
        self._memo: dict[str, tuple[Any, Any, str, KioskDecision]] = {}
        self._kiosks = kiosks
        self._on_view = on_view
        self._warn = RateLimitedLog(log)
        self._store_name = store_name
        self._db = db
        self._renderer = renderer
        self._hub = hub
        self._clock = clock
        self._metrics = metrics
        self._personal = metrics.decisions.labels(kind="personal")
        self._generic = metrics.decisions.labels(kind="generic")
        self._by_zone: dict[str, list[str]] = {}
        for kiosk in kiosks:
            self._by_zone.setdefault(kiosk.zone, []).append(kiosk.id)
        self._zone_of_kiosk = {kiosk.id: kiosk.zone for kiosk in kiosks}
        # Who is in each kiosk zone, and who is near each kiosk; most recent arrival last.
        self._present: dict[str, list[str]] = {kiosk.zone: [] for kiosk in kiosks}
        self._near: dict[str, list[str]] = {kiosk.id: [] for kiosk in kiosks}

    def shopper_at(self, kiosk_id: str) -> str | None:
        """Who the kiosk speaks to: the latest recognised shopper near it (its own scanner says
        so), else the latest recognised arrival in its zone. A newcomer whose consent does not
        allow personal content on screens is still "who", so their arrival clears the previous
        shopper's personal content instead of showing it to them."""
        near = self._near[kiosk_id]
        if near:
            return near[-1]
        present = self._present[self._zone_of_kiosk[kiosk_id]]
        return present[-1] if present else None

    def refresh_all(self) -> None:
        for kiosk in self._kiosks:
            self.refresh(kiosk.id)

    def on_presence(self, event: PresenceEvent) -> None:
        if isinstance(event, NearKiosk | LeftKiosk):
            near = self._near.get(event.kiosk)
            if near is None:
                return
            _move_to_end(near, event.subject, keep=isinstance(event, NearKiosk))
            self.refresh(event.kiosk)
            return
        if not isinstance(event, ZoneEntered | ZoneLeft):
            return  # dwelling changes nothing on a screen (yet)
        present = self._present.get(event.zone)
        if present is None:
            return
        _move_to_end(present, event.subject, keep=isinstance(event, ZoneEntered))
        for kiosk_id in self._by_zone.get(event.zone, ()):
            self.refresh(kiosk_id)

    def forget(self, shopper_id: str) -> None:
        """Remove a shopper from every kiosk at once (consent withdrawn)."""
        touched: set[str] = set()
        for zone, present in self._present.items():
            if shopper_id in present:
                present.remove(shopper_id)
                touched.update(self._by_zone[zone])
        for kiosk_id, near in self._near.items():
            if shopper_id in near:
                near.remove(shopper_id)
                touched.add(kiosk_id)
        for kiosk_id in sorted(touched):
            self.refresh(kiosk_id)

    def render_now(self, kiosk_id: str) -> tuple[str, KioskDecision]:
        """Decide and render for whoever is at the kiosk, from fresh store reads. Within the
        same second, for the same shopper, records and offers, the answer is the one just
        given (the decision would be the same: one decision per moment)."""
        now = self._clock.now()
        shopper = self.shopper_at(kiosk_id)
        profile = self._db.profile(shopper) if shopper else None
        consent = self._db.consent(shopper) if shopper else None
        key = (shopper, int(now), self._db.offers(), self._moments_key(shopper))
        memo = self._memo.get(kiosk_id)
        if memo is not None and memo[0] == key and memo[1] == (profile, consent):
            (self._personal if memo[3].personal else self._generic).inc()
            return memo[2], memo[3]
        html, decision = self._render(kiosk_id, now, shopper, profile, consent)
        self._memo[kiosk_id] = (key, (profile, consent), html, decision)
        return html, decision

    def _moments_key(self, shopper: str | None) -> object:
        return None if self._moments is None or shopper is None else self._moments.key_of(shopper)

    def _render(
        self,
        kiosk_id: str,
        now: float,
        shopper: str | None,
        profile: ProfileRecord | None,
        consent: ConsentRecord | None,
    ) -> tuple[str, KioskDecision]:
        started = time.perf_counter()
        if self._moments is not None:
            decision = self._moments.decide(now, "kiosk", shopper, profile, consent)
        else:
            decision = decide_for_kiosk(now, shopper, profile, consent, self._db.offers())
        decided = time.perf_counter()
        self._metrics.decision_seconds.observe(decided - started)
        (self._personal if decision.personal else self._generic).inc()
        offer = decision.offer
        values: dict[str, Scalar] = {"offer_id": None, "store_name": self._store_name}
        if offer is not None:
            price, regular = offer.price, offer.regular_price
            proof = ""
            greet = decision.personal and profile is not None and profile.greet_on_kiosk
            locale = profile.locale if decision.personal and profile is not None else "en"
            if self._moments is not None:
                if decision.personal:
                    showing = self._moments.quote(shopper, offer, now)
                    price, regular = showing.price, showing.regular_price
                proof = self._moments.social_proof(offer, now, self._proof_floor)
            values = card_values(
                offer,
                price=price,
                regular_price=regular,
                locale=locale,
                # Only what a shared screen may show: a nickname, and only when asked for.
                greeting=profile.nickname if greet and profile is not None else "",
                social_proof=proof,
                store_name=self._store_name,
            )
        if decision.personal and offer is not None:
            html = self._renderer.render_card(offer.template_id, "kiosk", **values)
        else:
            html = self._renderer.render_fragment("kiosk/generic.html.j2", **values)
        self._metrics.render_seconds.observe(time.perf_counter() - decided)
        self._metrics.renders.inc()
        return html, decision

    def refresh(self, kiosk_id: str) -> None:
        """Decide, render and publish. Called from the sensing and tick loops, so a store or
        template failure is logged and counted and the screen keeps its current view: it must
        never take those loops (and the gateway) down."""
        try:
            html, decision = self.render_now(kiosk_id)
        except (StoreError, RenderError) as exc:
            self._metrics.dropped.labels(source="kiosk", reason=type(exc).__name__).inc()
            self._warn.warning(
                type(exc).__name__, "kiosk not refreshed", kiosk=kiosk_id, error=str(exc)
            )
            return
        view = self._hub.publish(kiosk_id, html, decision)
        if view is not None and self._on_view is not None:
            self._on_view(view, self.shopper_at(kiosk_id), decision)
        if view is not None:
            log.info(
                "kiosk content changed",
                extra={
                    "kiosk": kiosk_id,
                    "version": view.version,
                    "personal": view.personal,
                    "offer": view.offer_id,
                    "reason": view.reason,
                },
            )


def _move_to_end(subjects: list[str], subject: str, *, keep: bool) -> None:
    """Take ``subject`` out of ``subjects`` and, when ``keep``, put it back as the latest."""
    if subject in subjects:
        subjects.remove(subject)
    if keep:
        subjects.append(subject)
