"""Shelf stock: what a shelf publishes, decoded and bounded, and the book of what is in stock.

Sans-I/O. ``parse_stock(topic_shelf, payload, limits)`` takes the bytes of one MQTT message and
returns a validated :class:`StockReport` or raises :class:`StockError` with a short, stable
``reason`` (a metric label, the same labels as the scanner-node protocol where the fault is
the same). :class:`StockBook` folds reports into the latest quantity per SKU and says which
SKUs came back on the shelf. ``docs/PROTOCOL.md`` ("Shelves → gateway") is the contract.

Payload (JSON, UTF-8), topic ``{prefix}/{store}/shelves/{shelf}/stock``::

    {"v": 1, "shelf": "shelf-coffee-1", "t": 1795378600.5,
     "items": [{"sku": "sku-4711", "qty": 0}, {"sku": "sku-4712", "qty": 12}]}

A report is partial: it updates the SKUs it lists on that shelf and leaves every other alone.

The book
    Quantities are kept per (SKU, shelf), because one SKU may stand on several shelves (an
    aisle and an end cap); a SKU is in stock when any shelf's fresh quantity is above zero.
    ``in_stock(sku)`` is:

    * ``True``: some shelf reported more than zero within ``stale_after_s``;
    * ``False``: every shelf that reported it within ``stale_after_s`` reported zero;
    * ``None``: unknown. No shelf reported it, or every report is older than
      ``stale_after_s`` (the shelf went quiet), or it was pushed out by the bound.

    What the engine should do with ``None``: treat it as *in stock*. Most SKUs will never
    have a sensing shelf, a shelf that has gone quiet says nothing about the product, and
    hiding every stock-linked offer whenever a sensor fails would punish the store for a
    broken battery. Only a fresh, known zero hides an offer.

Restocks
    ``apply`` returns the SKUs whose state went from a known zero (``False``) to above zero
    (``True``), in the order the report lists them; the engine turns each into a ``signal``
    trigger ``restocked:<sku>``. Coming from unknown to above zero is not a restock: otherwise
    a gateway restart, or a shelf coming back after an outage, would announce every product.

Time
    Ages are measured on the injected clock's monotonic reading, so a wall-clock step does not
    make the book fresh or stale. A report's quantities are as old as its arrival, or, when
    it carries ``t`` (the shelf's wall clock) in the past, as old as ``now - t``: a retained
    report delivered when the gateway reconnects is as old as the shelf says, not new. A
    shelf clock ahead of the gateway counts as no age at all. For one (SKU, shelf) a report
    older than the one kept is ignored (MQTT may deliver a retained report after a live one).
    A report already stale when it arrives is ignored whole: it must not push a fresh SKU out
    of the bounded book.

Bounds
    At most ``max_skus`` SKUs, least recently updated first out (an evicted SKU is unknown);
    at most ``max_shelves_per_sku`` shelves per SKU, the oldest report out. ``prune()`` drops
    what has gone stale (for a periodic tick; reads ignore stale entries anyway).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Annotated, Final, NamedTuple

import msgspec

from gateway.clock import Clock
from gateway.errors import PayloadError
from gateway.payloads import decode_bounded

__all__ = [
    "PROTOCOL_VERSION",
    "RESTOCK_SIGNAL",
    "StockBook",
    "StockError",
    "StockItem",
    "StockLimits",
    "StockReport",
    "encode_stock",
    "parse_stock",
    "restock_signal",
]

PROTOCOL_VERSION: Final = 1
RESTOCK_SIGNAL: Final = "restocked:"
"""The prefix of the ``signal`` trigger a restock becomes: ``restocked:<sku>``."""

SHELF_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
"""A shelf id: one MQTT topic level, letters, digits and ``_.-``, 1 to 64 characters."""
SKU_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,63}$"
"""A SKU: letters, digits and ``_.:/-``, 1 to 64 characters, starting with a letter or digit."""
MAX_QTY: Final = 1_000_000

_ShelfId = Annotated[str, msgspec.Meta(pattern=SHELF_PATTERN)]
_Sku = Annotated[str, msgspec.Meta(pattern=SKU_PATTERN)]


class StockError(PayloadError):
    """A shelf's stock message was rejected. ``reason``: ``oversized_payload``, ``bad_json``
    (not JSON, not UTF-8), ``bad_field`` (a missing field, a wrong type, a value out of
    bounds; the detail names the path), ``unsupported_version``, ``shelf_mismatch`` (the
    payload's shelf is not the topic's), ``too_many_items``, ``duplicate_sku``."""


class _ItemIn(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    sku: _Sku
    qty: Annotated[int, msgspec.Meta(ge=0, le=MAX_QTY)]


class _ReportIn(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    v: int
    shelf: _ShelfId
    items: list[_ItemIn]
    t: Annotated[float, msgspec.Meta(ge=0, le=1e11)] | None = None


_decoder: Final = msgspec.json.Decoder(_ReportIn)


@dataclass(frozen=True, slots=True)
class StockLimits:
    max_payload_bytes: int = 16_384
    max_items: int = 256


class StockItem(NamedTuple):
    sku: str
    qty: int


@dataclass(frozen=True, slots=True)
class StockReport:
    """One shelf's report: the quantities of the SKUs it lists, and its own clock (or None)."""

    shelf: str
    items: tuple[StockItem, ...]
    t: float | None = None


def restock_signal(sku: str) -> str:
    """The ``signal`` of a restock of ``sku``: ``restocked:<sku>``."""
    return RESTOCK_SIGNAL + sku


def parse_stock(topic_shelf: str, payload: bytes, limits: StockLimits) -> StockReport:
    """Validate and decode one stock message published under ``topic_shelf``."""
    raw = decode_bounded(_decoder, payload, limits.max_payload_bytes, StockError)
    if raw.v != PROTOCOL_VERSION:
        raise StockError("unsupported_version", f"v={raw.v}, this gateway speaks 1")
    if raw.shelf != topic_shelf:
        raise StockError("shelf_mismatch", f"payload shelf does not match topic {topic_shelf}")
    if len(raw.items) > limits.max_items:
        raise StockError("too_many_items", f"{len(raw.items)} items > {limits.max_items}")
    seen: set[str] = set()
    for i, item in enumerate(raw.items):
        if item.sku in seen:
            raise StockError("duplicate_sku", f"items[{i}].sku {item.sku!r} is listed twice")
        seen.add(item.sku)
    return StockReport(raw.shelf, tuple(StockItem(i.sku, i.qty) for i in raw.items), raw.t)


def encode_stock(shelf: str, items: list[StockItem], t: float | None = None) -> bytes:
    """The reverse, for simulated shelves and tests: one place owns the wire shape."""
    return msgspec.json.encode(
        _ReportIn(
            v=PROTOCOL_VERSION,
            shelf=shelf,
            items=[_ItemIn(sku, qty) for sku, qty in items],
            t=t,
        )
    )


class _Seen(NamedTuple):
    qty: int
    born: float  # monotonic seconds when the quantity was true


class StockBook:
    """The latest quantity of each SKU per shelf, bounded, with ages (see the module notes).

    One book belongs to one event loop; it is not thread-safe and needs no lock there."""

    __slots__ = ("_clock", "_max_shelves", "_max_skus", "_skus", "_stale_after")

    def __init__(
        self,
        clock: Clock,
        *,
        max_skus: int = 10_000,
        max_shelves_per_sku: int = 8,
        stale_after_s: float = 900.0,
    ) -> None:
        if max_skus < 1 or max_shelves_per_sku < 1:
            raise ValueError("max_skus and max_shelves_per_sku must be at least 1")
        if not stale_after_s > 0:
            raise ValueError(f"stale_after_s must be > 0, got {stale_after_s!r}")
        self._clock = clock
        self._max_skus = max_skus
        self._max_shelves = max_shelves_per_sku
        self._stale_after = stale_after_s
        # sku -> shelf -> what that shelf last said; least recently updated SKU first.
        self._skus: OrderedDict[str, dict[str, _Seen]] = OrderedDict()

    def __len__(self) -> int:
        """How many SKUs the book holds (fresh or not yet pruned)."""
        return len(self._skus)

    def apply(self, report: StockReport) -> list[str]:
        """Fold ``report`` in; return the SKUs it restocked (known zero to above zero)."""
        mono = self._clock.monotonic()
        age = 0.0 if report.t is None else max(0.0, self._clock.now() - report.t)
        if age >= self._stale_after:
            return []
        born = mono - age
        restocked: list[str] = []
        for sku, qty in report.items:
            before = self._state(sku, mono)
            shelves = self._skus.get(sku)
            if shelves is None:
                shelves = self._skus[sku] = {}
            kept = shelves.get(report.shelf)
            if kept is not None and kept.born > born:
                continue  # an older report delivered late: keep the newer one
            if kept is None and len(shelves) >= self._max_shelves:
                del shelves[min(shelves, key=lambda shelf: shelves[shelf].born)]
            shelves[report.shelf] = _Seen(qty, born)
            self._skus.move_to_end(sku)
            if before is False and qty > 0:
                restocked.append(sku)
        while len(self._skus) > self._max_skus:
            self._skus.popitem(last=False)
        return restocked

    def in_stock(self, sku: str) -> bool | None:
        """True, False, or None when unknown (see the module notes: treat None as in stock)."""
        return self._state(sku, self._clock.monotonic())

    def quantity(self, sku: str) -> int | None:
        """The sum of the fresh quantities of ``sku`` over its shelves; None when unknown."""
        mono = self._clock.monotonic()
        fresh = [seen.qty for seen in self._skus.get(sku, {}).values() if self._fresh(seen, mono)]
        return sum(fresh) if fresh else None

    def prune(self) -> int:
        """Forget every report gone stale; return how many SKUs are now unknown and gone."""
        mono = self._clock.monotonic()
        gone = 0
        for sku in list(self._skus):
            shelves = self._skus[sku]
            for shelf in [s for s, seen in shelves.items() if not self._fresh(seen, mono)]:
                del shelves[shelf]
            if not shelves:
                del self._skus[sku]
                gone += 1
        return gone

    def _fresh(self, seen: _Seen, mono: float) -> bool:
        return mono - seen.born < self._stale_after

    def _state(self, sku: str, mono: float) -> bool | None:
        known = False
        for seen in self._skus.get(sku, {}).values():
            if self._fresh(seen, mono):
                if seen.qty > 0:
                    return True
                known = True
        return False if known else None
