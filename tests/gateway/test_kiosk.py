"""The kiosk director survives its store failing under it: the screen keeps its view."""

from __future__ import annotations

from pathlib import Path

from beacons.presence import ZoneEntered
from gateway.clock import ManualClock
from gateway.config import KioskConfig
from gateway.kiosk import KioskDirector, KioskHub
from gateway.metrics import Metrics
from gateway.render import Renderer
from gateway.store import (
    ConsentRecord,
    Database,
    OfferRecord,
    ProfileRecord,
    Purpose,
    PurposeState,
)


def test_a_store_failure_leaves_the_current_view_and_raises_nothing(tmp_path: Path) -> None:
    db = Database(tmp_path / "store", map_size=1 << 20)
    db.open()
    hub = KioskHub(["kiosk-1"])
    metrics = Metrics()
    director = KioskDirector(
        kiosks=[KioskConfig(id="kiosk-1", zone="coffee")],
        store_name="store-1",
        db=db,
        renderer=Renderer(),
        hub=hub,
        clock=ManualClock(),
        metrics=metrics,
    )
    director.refresh("kiosk-1")
    before = hub.current("kiosk-1")
    assert before.version == 1
    db.close()  # every read now raises StoreError
    director.refresh("kiosk-1")
    assert hub.current("kiosk-1") == before
    dropped = metrics.registry.get_sample_value(
        "moments_dropped_total", {"source": "kiosk", "reason": "StoreError"}
    )
    assert dropped == 1.0


def test_a_shared_screen_greets_by_nickname_only_when_asked_and_never_shows_more(
    tmp_path: Path,
) -> None:
    """With every purpose granted, the kiosk shows the offer; it greets the shopper only by
    nickname and only with greet_on_kiosk; never the first name, never the segments."""
    db = Database(tmp_path / "store", map_size=1 << 22)
    db.open()
    clock = ManualClock(wall=1_795_378_600.0)
    granted = {
        p.value: PurposeState(granted=True, at=clock.now(), notice_version="n1") for p in Purpose
    }
    offer = OfferRecord(offer_id="beans", title="Beans", segments=["coffee-lover"], price=1.0)
    hub = KioskHub(["kiosk-1"])
    director = KioskDirector(
        kiosks=[KioskConfig(id="kiosk-1", zone="coffee")],
        store_name="store-1",
        db=db,
        renderer=Renderer(),
        hub=hub,
        clock=clock,
        metrics=Metrics(),
    )
    for greet in (False, True):
        profile = ProfileRecord(
            shopper_id="s1",
            first_name="Alexandra",
            nickname="Alex",
            segments=["coffee-lover", "pregnancy"],
            greet_on_kiosk=greet,
        )
        with db.env.begin(write=True) as txn:
            db.put_op([profile, ConsentRecord(shopper_id="s1", purposes=granted), offer])(txn)
        director.on_presence(ZoneEntered(subject="s1", zone="coffee", t=clock.now(), rssi=-50))
        html = hub.current("kiosk-1").html
        assert hub.current("kiosk-1").personal and "Beans" in html
        assert "Alexandra" not in html and "pregnancy" not in html and "coffee-lover" not in html
        assert ("Alex" in html) is greet
    db.close()
