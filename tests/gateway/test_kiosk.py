"""The kiosk director survives its store failing under it: the screen keeps its view."""

from __future__ import annotations

from pathlib import Path

from gateway.clock import ManualClock
from gateway.config import KioskConfig
from gateway.kiosk import KioskDirector, KioskHub
from gateway.metrics import Metrics
from gateway.render import Renderer
from gateway.store import Database


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
