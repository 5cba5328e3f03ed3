"""Shelf stock: the message codec (every rejection reason, exact limits, fuzzing) and the
stock book (transitions, restocks, several shelves, ages, late reports, bounds)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.clock import ManualClock
from gateway.errors import PayloadError
from gateway.stock import (
    PROTOCOL_VERSION,
    StockBook,
    StockError,
    StockItem,
    StockLimits,
    StockReport,
    encode_stock,
    parse_stock,
    restock_signal,
)

FUZZ = settings(database=None, deadline=None, print_blob=True, max_examples=200)

SHELF = "shelf-coffee-1"
LIMITS = StockLimits()
T0 = 1_795_378_600.0
STALE_S = 900.0


def message(items: Any = None, **fields: Any) -> dict[str, Any]:
    return {
        "v": 1,
        "shelf": SHELF,
        "t": T0,
        "items": [{"sku": "sku-4711", "qty": 0}, {"sku": "sku-4712", "qty": 12}]
        if items is None
        else items,
    } | fields


def wire(obj: object) -> bytes:
    return json.dumps(obj).encode()


def reason_of(payload: bytes, limits: StockLimits = LIMITS, shelf: str = SHELF) -> str:
    with pytest.raises(StockError) as info:
        parse_stock(shelf, payload, limits)
    assert isinstance(info.value, PayloadError)
    return info.value.reason


# --- the codec --------------------------------------------------------------------


def test_documented_example_parses() -> None:
    report = parse_stock(SHELF, wire(message()), LIMITS)

    assert report == StockReport(SHELF, (StockItem("sku-4711", 0), StockItem("sku-4712", 12)), T0)


def test_t_is_optional_and_unknown_fields_are_tolerated() -> None:
    payload = message(items=[{"sku": "sku-1", "qty": 3, "facing": 2}], fw="2.1")
    del payload["t"]

    assert parse_stock(SHELF, wire(payload), LIMITS) == StockReport(
        SHELF, (StockItem("sku-1", 3),), None
    )


def test_round_trip_through_encode_stock() -> None:
    items = [StockItem("a", 0), StockItem("B-2:x/y_z.9", 1_000_000)]

    payload = encode_stock(SHELF, items, t=12.5)

    assert json.loads(payload)["v"] == PROTOCOL_VERSION
    assert parse_stock(SHELF, payload, LIMITS) == StockReport(SHELF, tuple(items), 12.5)


def test_an_empty_report_is_accepted() -> None:
    assert parse_stock(SHELF, wire(message(items=[])), LIMITS).items == ()


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{", "bad_json"),
        (b"\xff\xfe{}", "bad_json"),
        (b"[]", "bad_field"),
        (wire(message(items=None) | {"items": "sku-1"}), "bad_field"),
        (wire({"v": 1, "shelf": SHELF}), "bad_field"),  # no items
        (wire(message(items=[{"sku": "sku-1"}])), "bad_field"),  # no qty
        (wire(message(items=[{"sku": "sku-1", "qty": -1}])), "bad_field"),
        (wire(message(items=[{"sku": "sku-1", "qty": 1_000_001}])), "bad_field"),
        (wire(message(items=[{"sku": "sku-1", "qty": 1.5}])), "bad_field"),
        (wire(message(items=[{"sku": "", "qty": 1}])), "bad_field"),
        (wire(message(items=[{"sku": "-leading", "qty": 1}])), "bad_field"),
        (wire(message(items=[{"sku": "x" * 65, "qty": 1}])), "bad_field"),
        (wire(message(items=[{"sku": "a b", "qty": 1}])), "bad_field"),
        (wire(message(t=-1)), "bad_field"),
        (wire(message(t="now")), "bad_field"),
        (wire(message(v=2)), "unsupported_version"),
        (wire(message(shelf="shelf-tea")), "shelf_mismatch"),
        (
            wire(message(items=[{"sku": "sku-1", "qty": 1}, {"sku": "sku-1", "qty": 2}])),
            "duplicate_sku",
        ),
    ],
)
def test_every_rejection_reason(payload: bytes, reason: str) -> None:
    assert reason_of(payload) == reason


def test_a_shelf_id_that_is_not_one_topic_level_is_a_bad_field() -> None:
    assert reason_of(wire(message(shelf="a/b")), shelf="a/b") == "bad_field"


def test_the_detail_names_the_path() -> None:
    with pytest.raises(StockError) as info:
        parse_stock(SHELF, wire(message(items=[{"sku": "s", "qty": -1}])), LIMITS)
    assert "$.items[0].qty" in info.value.detail


def test_payload_size_limit_is_exact() -> None:
    payload = wire(message())
    assert parse_stock(SHELF, payload, StockLimits(max_payload_bytes=len(payload)))
    assert (
        reason_of(payload, StockLimits(max_payload_bytes=len(payload) - 1)) == "oversized_payload"
    )


def test_item_count_limit_is_exact() -> None:
    items = [{"sku": f"sku-{i}", "qty": i} for i in range(4)]
    assert len(parse_stock(SHELF, wire(message(items=items)), StockLimits(max_items=4)).items) == 4
    assert reason_of(wire(message(items=items)), StockLimits(max_items=3)) == "too_many_items"


REASONS = {
    "oversized_payload",
    "bad_json",
    "bad_field",
    "unsupported_version",
    "shelf_mismatch",
    "too_many_items",
    "duplicate_sku",
}
FUZZ_LIMITS = StockLimits(max_payload_bytes=1024, max_items=4)


def check_outcome(payload: bytes) -> None:
    """A report within the limits, or a StockError with a documented reason; nothing else."""
    reason: str | None = None
    try:
        parsed = parse_stock(SHELF, payload, FUZZ_LIMITS)
    except StockError as exc:
        reason = exc.reason
    if reason is not None:
        assert reason in REASONS
        return
    assert parsed.shelf == SHELF
    assert len(parsed.items) <= FUZZ_LIMITS.max_items
    assert len({item.sku for item in parsed.items}) == len(parsed.items)
    assert all(0 <= item.qty <= 1_000_000 for item in parsed.items)


@FUZZ
@given(st.binary(max_size=2000))
def test_fuzz_bytes(payload: bytes) -> None:
    check_outcome(payload)


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=20,
)
_item_ish = st.fixed_dictionaries(
    {},
    optional={
        "sku": st.sampled_from(["sku-1", "sku-2", "", "-x", "a b"]) | _json,
        "qty": st.integers(-1, 1_000_001) | _json,
    },
)
_report_ish = st.fixed_dictionaries(
    {},
    optional={
        "v": st.sampled_from([0, 1, 2]) | _json,
        "shelf": st.sampled_from([SHELF, "other", ""]) | _json,
        "t": st.floats() | _json,
        "items": st.lists(_item_ish | _json, max_size=6) | _json,
        "extra": _json,
    },
)


@FUZZ
@given(_report_ish | _json)
def test_fuzz_json_shaped(obj: object) -> None:
    check_outcome(json.dumps(obj).encode())


_skus = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.:/-]{0,63}\Z")


@FUZZ
@given(
    items=st.dictionaries(_skus, st.integers(0, 1_000_000), max_size=16),
    t=st.none() | st.floats(0, 1e11),
)
def test_round_trip_property(items: dict[str, int], t: float | None) -> None:
    report = [StockItem(sku, qty) for sku, qty in items.items()]

    assert parse_stock(SHELF, encode_stock(SHELF, report, t), LIMITS) == StockReport(
        SHELF, tuple(report), t
    )


# --- the book ---------------------------------------------------------------------


def report(*items: tuple[str, int], shelf: str = SHELF, t: float | None = None) -> StockReport:
    return StockReport(shelf, tuple(StockItem(*item) for item in items), t)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(wall=T0)


@pytest.fixture
def book(clock: ManualClock) -> StockBook:
    return StockBook(clock, stale_after_s=STALE_S)


def test_a_sku_never_heard_of_is_unknown(book: StockBook) -> None:
    assert book.in_stock("sku-1") is None
    assert book.quantity("sku-1") is None


def test_first_reports_are_not_restocks(book: StockBook) -> None:
    assert book.apply(report(("sku-1", 5), ("sku-2", 0))) == []
    assert book.in_stock("sku-1") is True
    assert book.in_stock("sku-2") is False
    assert book.quantity("sku-1") == 5


def test_from_a_known_zero_to_above_zero_is_a_restock(book: StockBook) -> None:
    book.apply(report(("sku-1", 0), ("sku-2", 0), ("sku-3", 4)))

    assert book.apply(report(("sku-2", 3), ("sku-3", 9), ("sku-1", 1))) == ["sku-2", "sku-1"]
    assert book.in_stock("sku-1") is True
    # Already above zero, or back to zero: no restock.
    assert book.apply(report(("sku-1", 2), ("sku-2", 0))) == []
    assert book.in_stock("sku-2") is False
    assert restock_signal("sku-2") == "restocked:sku-2"


def test_zero_to_zero_is_not_a_restock(book: StockBook) -> None:
    book.apply(report(("sku-1", 0)))
    assert book.apply(report(("sku-1", 0))) == []


def test_a_sku_on_two_shelves_is_in_stock_while_either_has_some(book: StockBook) -> None:
    book.apply(report(("sku-1", 0), shelf="aisle"))
    assert book.apply(report(("sku-1", 6), shelf="endcap")) == ["sku-1"]

    # The aisle saying zero again does not take it out of stock, nor make a later report
    # from the end cap a restock: no flapping between two shelves.
    assert book.apply(report(("sku-1", 0), shelf="aisle")) == []
    assert book.in_stock("sku-1") is True
    assert book.apply(report(("sku-1", 5), shelf="endcap")) == []
    assert book.quantity("sku-1") == 5

    assert book.apply(report(("sku-1", 0), shelf="endcap")) == []
    assert book.in_stock("sku-1") is False
    assert book.apply(report(("sku-1", 2), shelf="aisle")) == ["sku-1"]


def test_a_quantity_goes_stale_and_the_sku_is_unknown_again(
    book: StockBook, clock: ManualClock
) -> None:
    book.apply(report(("sku-1", 0)))

    clock.advance(STALE_S - 0.001)
    assert book.in_stock("sku-1") is False
    clock.advance(0.001)
    assert book.in_stock("sku-1") is None
    assert book.quantity("sku-1") is None
    # Unknown to above zero is not a restock: the shelf may have been refilled long ago.
    assert book.apply(report(("sku-1", 8))) == []
    assert book.in_stock("sku-1") is True


def test_a_stale_shelf_does_not_count_beside_a_fresh_one(
    book: StockBook, clock: ManualClock
) -> None:
    book.apply(report(("sku-1", 9), shelf="aisle"))
    clock.advance(STALE_S / 2)
    book.apply(report(("sku-1", 0), shelf="endcap"))
    assert book.in_stock("sku-1") is True
    clock.advance(STALE_S / 2)
    assert book.in_stock("sku-1") is False  # the aisle's 9 is stale; the end cap's 0 is not


def test_a_report_is_as_old_as_its_shelf_clock_says(book: StockBook, clock: ManualClock) -> None:
    book.apply(report(("sku-1", 0), t=T0 - (STALE_S - 10)))
    assert book.in_stock("sku-1") is False
    clock.advance(10)
    assert book.in_stock("sku-1") is None


def test_a_report_already_stale_on_arrival_is_ignored(book: StockBook) -> None:
    book.apply(report(("sku-1", 0)))

    assert book.apply(report(("sku-1", 5), t=T0 - STALE_S)) == []
    assert book.in_stock("sku-1") is False
    assert book.apply(report(("sku-2", 5), t=T0 - STALE_S)) == []
    assert len(book) == 1


def test_a_shelf_clock_ahead_counts_as_no_age(book: StockBook, clock: ManualClock) -> None:
    book.apply(report(("sku-1", 1), t=T0 + 3600))
    clock.advance(STALE_S - 1)
    assert book.in_stock("sku-1") is True


def test_an_older_report_delivered_late_does_not_replace_a_newer_one(book: StockBook) -> None:
    book.apply(report(("sku-1", 0), t=T0 - 5))

    assert book.apply(report(("sku-1", 7), t=T0 - 60)) == []  # e.g. a retained message
    assert book.in_stock("sku-1") is False


class SteppingClock:
    """A wall clock that is stepped by hand while the monotonic one stands still."""

    def __init__(self) -> None:
        self.wall = T0
        self.mono = 100.0

    def now(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return self.mono


def test_a_wall_clock_step_does_not_change_ages() -> None:
    clock = SteppingClock()
    book = StockBook(clock, stale_after_s=STALE_S)
    book.apply(report(("sku-1", 3)))

    clock.wall += 10 * STALE_S
    assert book.in_stock("sku-1") is True
    clock.wall -= 20 * STALE_S
    assert book.in_stock("sku-1") is True
    clock.mono += STALE_S
    assert book.in_stock("sku-1") is None


def test_the_book_holds_at_most_max_skus_least_recently_updated_out(clock: ManualClock) -> None:
    book = StockBook(clock, max_skus=3)
    book.apply(report(("a", 0), ("b", 0), ("c", 0)))
    book.apply(report(("a", 0)))  # a is now the most recently updated

    book.apply(report(("d", 1)))

    assert len(book) == 3
    assert book.in_stock("b") is None  # pushed out: unknown
    assert [book.in_stock(s) for s in ("a", "c", "d")] == [False, False, True]
    # Coming back after being pushed out is not a restock.
    assert book.apply(report(("b", 4))) == []


def test_at_most_max_shelves_per_sku_the_oldest_report_out(clock: ManualClock) -> None:
    book = StockBook(clock, max_shelves_per_sku=2)
    book.apply(report(("sku-1", 5), shelf="s1"))
    clock.advance(1)
    book.apply(report(("sku-1", 0), shelf="s2"))
    clock.advance(1)
    book.apply(report(("sku-1", 0), shelf="s3"))  # s1, the oldest, goes

    assert book.in_stock("sku-1") is False
    assert book.quantity("sku-1") == 0


def test_prune_forgets_what_went_stale(book: StockBook, clock: ManualClock) -> None:
    book.apply(report(("a", 1), ("b", 0)))
    clock.advance(STALE_S / 2)
    book.apply(report(("b", 2), shelf="other"))
    clock.advance(STALE_S / 2)

    assert book.prune() == 1  # a; b keeps its fresh shelf
    assert len(book) == 1
    assert book.quantity("b") == 2
    assert book.prune() == 0


@pytest.mark.parametrize(
    "kwargs",
    [{"max_skus": 0}, {"max_shelves_per_sku": 0}, {"stale_after_s": 0.0}],
)
def test_bounds_must_make_sense(clock: ManualClock, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must be"):
        StockBook(clock, **kwargs)


@FUZZ
@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from(["s1", "s2", "s3"]),
            st.sampled_from(["a", "b", "c", "d", "e"]),
            st.integers(0, 3),
            st.floats(0, 400),
        ),
        max_size=40,
    )
)
def test_book_invariants(steps: list[tuple[str, str, int, float]]) -> None:
    clock = ManualClock(wall=T0)
    book = StockBook(clock, max_skus=3, max_shelves_per_sku=2, stale_after_s=STALE_S)
    for shelf, sku, qty, wait in steps:
        clock.advance(wait)
        before = book.in_stock(sku)
        restocked = book.apply(report((sku, qty), shelf=shelf))
        assert len(book) <= 3
        # A restock is exactly a known zero becoming above zero.
        assert restocked == ([sku] if before is False and book.in_stock(sku) is True else [])
        assert (book.quantity(sku) or 0) > 0 if book.in_stock(sku) else True
