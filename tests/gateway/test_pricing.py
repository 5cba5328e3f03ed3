"""Fair time-sensitive prices: the "come now" curve, quotes that always carry the regular
price, honouring a shown price until its window ends, and formatting for templates."""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.pricing import ComeNow, Quote, format_price, format_quote, honour, to_cents

NBSP = "\u00a0"
NNBSP = "\u202f"

# -- the "come now" curve ------------------------------------------------------------------


def test_the_discount_is_full_then_shrinks_linearly_then_gone() -> None:
    offer = ComeNow(regular_cents=1000, max_discount_pct=20, full_for_s=60, gone_after_s=300)

    assert offer.price_at(0) == 800
    assert offer.price_at(60) == 800
    assert offer.price_at(180) == 900  # half way down the slope: half the discount
    assert offer.price_at(240) == 950
    assert offer.price_at(300) == 1000
    assert offer.price_at(10_000) == 1000
    assert offer.price_at(math.inf) == 1000


def test_a_time_before_the_trigger_counts_as_the_trigger() -> None:
    offer = ComeNow(regular_cents=1000, max_discount_pct=20, full_for_s=60, gone_after_s=300)

    assert offer.price_at(-5) == 800
    assert offer.price_at(-math.inf) == 800


def test_prices_are_rounded_down_in_the_shoppers_favour() -> None:
    offer = ComeNow(regular_cents=999, max_discount_pct=20, full_for_s=0, gone_after_s=100)

    assert offer.price_at(0) == 799  # 799.2
    assert offer.price_at(99.999) == 998  # a sliver of discount still takes a cent off


def test_a_step_when_full_and_gone_coincide() -> None:
    offer = ComeNow(regular_cents=500, max_discount_pct=10, full_for_s=30, gone_after_s=30)

    assert offer.price_at(29.999) == 450
    assert offer.price_at(30) == 500


def test_the_discount_is_exact() -> None:
    offer = ComeNow(
        regular_cents=300, max_discount_pct=Decimal("33.3"), full_for_s=0, gone_after_s=1
    )

    assert offer.discount_pct_at(0) == Decimal("33.3")
    assert offer.price_at(0) == 200  # 300 * 0.667 = 200.1


def test_a_quote_from_the_curve() -> None:
    offer = ComeNow(regular_cents=1290, max_discount_pct=50, full_for_s=120, gone_after_s=600)

    quote = offer.quote("coffee", "EUR", since_trigger_s=30, valid_until=1_700_000_900.0)

    assert quote == Quote("coffee", 1290, 645, "EUR", 1_700_000_900.0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"regular_cents": -1},
        {"regular_cents": 10.5},
        {"max_discount_pct": 100.01},
        {"max_discount_pct": -1},
        {"max_discount_pct": math.nan},
        {"max_discount_pct": Decimal("NaN")},
        {"max_discount_pct": math.inf},
        {"full_for_s": -1},
        {"full_for_s": math.nan},
        {"gone_after_s": 59},
        {"gone_after_s": math.inf},
    ],
)
def test_bad_curves_are_refused(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {
        "regular_cents": 1000,
        "max_discount_pct": 20,
        "full_for_s": 60,
        "gone_after_s": 300,
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        ComeNow(**args)  # type: ignore[arg-type]


def test_a_nan_time_is_refused() -> None:
    offer = ComeNow(regular_cents=1000, max_discount_pct=20, full_for_s=60, gone_after_s=300)

    with pytest.raises(ValueError, match="NaN"):
        offer.price_at(math.nan)


@st.composite
def curves(draw: st.DrawFn) -> ComeNow:
    full = draw(st.floats(min_value=0, max_value=86_400))
    return ComeNow(
        regular_cents=draw(st.integers(min_value=0, max_value=10**9)),
        max_discount_pct=draw(
            st.one_of(
                st.floats(min_value=0, max_value=100),
                st.decimals(min_value=0, max_value=100, places=2),
            )
        ),
        full_for_s=full,
        gone_after_s=full + draw(st.floats(min_value=0, max_value=86_400)) or 1.0,
    )


times = st.floats(allow_nan=False)


@given(curves(), times)
def test_a_price_is_never_negative_nor_above_the_regular(offer: ComeNow, t: float) -> None:
    assert 0 <= offer.price_at(t) <= offer.regular_cents


@given(curves(), times, times)
def test_waiting_never_pays(offer: ComeNow, t1: float, t2: float) -> None:
    early, late = sorted((t1, t2))

    assert offer.price_at(early) <= offer.price_at(late)


@given(curves())
def test_the_ends_of_the_curve(offer: ComeNow) -> None:
    assert offer.price_at(offer.gone_after_s) == offer.regular_cents
    exact = offer.regular_cents * (1 - Fraction(offer.max_discount_pct) / 100)
    assert offer.price_at(0) == math.floor(exact)


# -- quotes --------------------------------------------------------------------------------


def test_a_quote_carries_its_regular_price() -> None:
    quote = Quote("coffee", regular_cents=1290, price_cents=990, currency="EUR", valid_until=1.0)

    assert quote.discount_cents == 300
    assert format_quote(quote) == ("€9.90", "€12.90")
    assert format_quote(quote, "fr") == (f"9,90{NBSP}€", f"12,90{NBSP}€")


@pytest.mark.parametrize(
    ("regular", "price", "currency", "valid_until", "message"),
    [
        (None, 990, "EUR", 1.0, "regular price beside it"),
        (1290, 1291, "EUR", 1.0, "above the regular"),
        (1290, -1, "EUR", 1.0, "price_cents"),
        (1290, 9.9, "EUR", 1.0, "price_cents"),
        (-1, 0, "EUR", 1.0, "regular_cents"),
        (1290, 990, "eur", 1.0, "currency"),
        (1290, 990, "EURO", 1.0, "currency"),
        (1290, 990, "EUR", math.nan, "valid_until"),
        (1290, 990, "EUR", math.inf, "valid_until"),
    ],
)
def test_bad_quotes_are_refused(
    regular: object, price: object, currency: str, valid_until: float, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Quote("coffee", regular, price, currency, valid_until)  # type: ignore[arg-type]


def test_a_quote_needs_an_offer() -> None:
    with pytest.raises(ValueError, match="offer_id"):
        Quote("", 1290, 990, "EUR", 1.0)


# -- honouring a shown price ---------------------------------------------------------------

T0 = 1_700_000_000.0


def _quote(price: int, valid_until: float, regular: int = 1000) -> Quote:
    return Quote("coffee", regular, price, "EUR", valid_until)


def test_the_first_quote_stands() -> None:
    new = _quote(800, T0 + 600)

    assert honour(None, new, T0) is new


def test_a_shown_price_is_kept_until_its_window_ends() -> None:
    shown = _quote(800, T0 + 600)
    later = _quote(900, T0 + 1200)

    assert honour(shown, later, T0 + 300) is shown
    assert honour(shown, later, T0 + 599.9) is shown
    assert honour(shown, later, T0 + 600) is later  # the window has ended


def test_a_lower_price_is_shown_and_keeps_the_longer_window() -> None:
    shown = _quote(800, T0 + 600)

    assert honour(shown, _quote(700, T0 + 300), T0 + 100) == _quote(700, T0 + 600)
    assert honour(shown, _quote(700, T0 + 900), T0 + 100) == _quote(700, T0 + 900)
    assert honour(shown, _quote(800, T0 + 900), T0 + 100) == _quote(800, T0 + 900)


def test_quotes_of_different_offers_cannot_be_compared() -> None:
    with pytest.raises(ValueError, match="cannot honour"):
        honour(_quote(800, T0), Quote("tea", 1000, 800, "EUR", T0), T0)
    with pytest.raises(ValueError, match="cannot honour"):
        honour(_quote(800, T0), Quote("coffee", 1000, 800, "GBP", T0), T0)


steps = st.lists(
    st.tuples(
        st.floats(min_value=0, max_value=600),  # time since the previous decision
        st.integers(min_value=0, max_value=1000),  # the price the curve gives now
        st.floats(min_value=0, max_value=1800),  # how long the new quote is valid
    ),
    min_size=1,
    max_size=30,
)


@given(steps)
def test_honour_never_raises_a_shown_price_within_its_window(
    decisions: list[tuple[float, int, float]],
) -> None:
    now = T0
    shown: list[Quote] = []
    for wait, price, valid_for in decisions:
        now += wait
        previous = shown[-1] if shown else None
        quote = honour(previous, _quote(price, now + valid_for), now)
        for earlier in shown:
            if now < earlier.valid_until:
                assert quote.price_cents <= earlier.price_cents
                assert quote.valid_until >= earlier.valid_until
        assert quote.regular_cents == 1000
        shown.append(quote)


# -- money and formatting ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cents", "currency", "locale", "text"),
    [
        (1290, "EUR", "en", "€12.90"),
        (123_450, "EUR", "en", "€1,234.50"),
        (5, "GBP", "en", "£0.05"),
        (100_000_000, "USD", "en", "$1,000,000.00"),
        (0, "EUR", "en", "€0.00"),
        (1290, "SEK", "en", f"SEK{NBSP}12.90"),
        (1290, "EUR", "fr", f"12,90{NBSP}€"),
        (123_450, "EUR", "fr", f"1{NNBSP}234,50{NBSP}€"),
        (123_450, "EUR", "de", f"1.234,50{NBSP}€"),
        (1290, "CHF", "de", f"12,90{NBSP}CHF"),
        (1290, "EUR", "fr-CH", f"12,90{NBSP}€"),
        (1290, "EUR", "de_AT", f"12,90{NBSP}€"),
        (1290, "EUR", "EN-gb", "€12.90"),
        (1200, "JPY", "en", f"JPY{NBSP}1,200"),
        (1200, "JPY", "de", f"1.200{NBSP}JPY"),
    ],
)
def test_format_price(cents: int, currency: str, locale: str, text: str) -> None:
    assert format_price(cents, currency, locale) == text


@pytest.mark.parametrize(
    ("cents", "currency", "locale", "message"),
    [
        (-1, "EUR", "en", "cents"),
        (12.9, "EUR", "en", "cents"),
        (1290, "€", "en", "currency"),
        (1290, "EUR", "it", "locale"),
    ],
)
def test_format_price_refuses(cents: int, currency: str, locale: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        format_price(cents, currency, locale)


@pytest.mark.parametrize(
    ("amount", "currency", "cents"),
    [
        ("12.90", "EUR", 1290),
        ("12.9", "EUR", 1290),
        (12.9, "EUR", 1290),
        (0.1, "EUR", 10),
        (Decimal("1234.5"), "EUR", 123_450),
        (7, "EUR", 700),
        ("1200", "JPY", 1200),
    ],
)
def test_to_cents(amount: Decimal | str | int | float, currency: str, cents: int) -> None:
    assert to_cents(amount, currency) == cents


@pytest.mark.parametrize(
    ("amount", "currency"),
    [
        ("12.905", "EUR"),
        ("-1", "EUR"),
        ("abc", "EUR"),
        ("NaN", "EUR"),
        (math.inf, "EUR"),
        (True, "EUR"),
        ("12.5", "JPY"),
        ("1", "eur"),
    ],
)
def test_to_cents_refuses(amount: Decimal | str | int | float, currency: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the message varies with the fault
        to_cents(amount, currency)


@given(st.integers(min_value=0, max_value=10**12))
def test_formatted_prices_read_back(cents: int) -> None:
    text = format_price(cents, "EUR", "en")

    assert to_cents(text.removeprefix("€").replace(",", "")) == cents
