"""Readiness: may this gateway take traffic now? Sans-I/O, from the components' states.

``/healthz`` says the process serves (always 200) and lists each component's state;
``/readyz`` answers from the same components, by these rules:

- the store must be open and readable (state ``ok``);
- at least one sensing source must be up: the store broker link (``up``) or the radio
  (``scanning``). A radio disabled by configuration is no source: with it off, a broker
  that is down means not ready. A store may declare that it serves without sensing for a
  while (``http.ready_without_sensing``): then the gateway is ready and says why it is
  degraded under ``degraded``;
- the HQ link never holds readiness back (the store keeps serving offline); its state is
  shown for information.

The configuration was valid, or the process would not have started: ``config`` is listed,
always ready, with the store it configures.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

__all__ = ["readiness"]

_UP: Final[Mapping[str, str]] = {
    "store": "ok",
    "broker": "up",
    "radio": "scanning",
    "hq": "up",
}


def readiness(
    components: Mapping[str, Mapping[str, Any]],
    *,
    store_id: str = "",
    sensing_required: bool = True,
) -> dict[str, Any]:
    """``{"ready": bool, "components": {name: {"ready", "state", ...}}, "reasons": [...],
    "degraded": [...]}`` from the ``components`` of :meth:`~gateway.runtime.Gateway.health`;
    ``reasons`` says what holds readiness back (empty when ready), ``degraded`` what is
    missing but accepted (no sensing, when ``sensing_required`` is False)."""
    detail: dict[str, dict[str, Any]] = {
        "config": {"ready": True, "state": "valid", "detail": f"store {store_id}"}
    }
    detail.update({name: _component(name, components.get(name)) for name in _UP})
    reasons: list[str] = []
    degraded: list[str] = []
    if not detail["store"]["ready"]:
        reasons.append(f"store is {_described(detail['store'])}")
    if not (detail["broker"]["ready"] or detail["radio"]["ready"]):
        (reasons if sensing_required else degraded).append(
            f"no sensing source: store broker is {_described(detail['broker'])}, "
            f"radio is {_described(detail['radio'])}"
        )
    return {"ready": not reasons, "components": detail, "reasons": reasons, "degraded": degraded}


def _component(name: str, status: Mapping[str, Any] | None) -> dict[str, Any]:
    if status is None:
        return {"ready": False, "state": "unknown"}
    state = str(status.get("state", "unknown"))
    out: dict[str, Any] = {"ready": state == _UP[name], "state": state}
    if status.get("detail"):
        out["detail"] = status["detail"]
    return out


def _described(component: Mapping[str, Any]) -> str:
    detail = component.get("detail")
    state = str(component["state"])
    return f"{state} ({detail})" if detail else state
