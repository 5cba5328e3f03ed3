"""Time-sensitive prices that shoppers find fair: the "come now" discount, quotes, formatting.

Pure functions of their inputs; times are arguments (seconds since a trigger, or a wall-clock
``now`` the caller reads from its clock).

Money
    Amounts are integers in the currency's minor unit ("cents": 1290 is EUR 12.90), never
    floats, so a price is exact and compares exactly. ``to_cents`` converts a decimal amount
    (``Decimal``, a string such as "12.90", or a float offer record's price, read through its
    shortest ``repr``), refusing a fraction of a cent. ``_MINOR_DIGITS`` says how many digits
    the minor unit has: 2 unless listed (JPY and KRW: 0).

The "come now" discount
    A shopper triggers an offer (walks into a zone) at t = 0. The discount is the whole
    ``max_discount_pct`` until ``full_for_s``, then shrinks linearly to nothing at
    ``gone_after_s``::

        d(t) = max_discount_pct                                        t <= full_for_s
             = max_discount_pct * (gone - t) / (gone - full)  full_for_s < t < gone_after_s
             = 0                                                       t >= gone_after_s

    and the price is ``regular * (1 - d(t) / 100)``, rounded down to a whole cent (the
    fraction goes to the shopper). It is computed in exact rational arithmetic (``Fraction``),
    so what the formula promises holds exactly: with 0 <= d <= 100 the price is never below
    0 nor above the regular price, and since d never grows with t and rounding down is
    monotonic, the price never falls as time passes: waiting never pays. A time before the
    trigger (clock skew) counts as t = 0.

Quotes, and honouring them
    A ``Quote`` is the price one offer was shown at, with the regular price beside it (the
    constructor refuses a quote without one, a price above it, or a negative price) and the
    end of its window, ``valid_until``. The decision record that stores it is the proof of
    what was shown. ``honour(previous, new, now)`` decides what to show next: while the
    previous quote's window is open, a higher new price is not shown (the previous quote is,
    unchanged), and a lower or equal one is, keeping the later of the two windows so that no
    price shown is ever raised before its window ends; once the window has ended, the new
    quote stands.

Formatting
    ``format_price`` writes an amount for a template in a tiny table of locales, after CLDR:
    "en" puts the symbol first ("€1,234.50"); "fr" ("1 234,50 €") and "de" ("1.234,50 €")
    put it last, after a no-break space (U+00A0) so that a price never wraps, and "fr" groups
    thousands with a narrow no-break space (U+202F). Symbols are known for EUR, GBP and USD;
    any other currency is written by its code ("SEK 12.90", "12,90 SEK"). A locale tag such
    as "fr-CH" or "de_AT" is read by its language. ``format_quote`` gives the price and the
    regular price together, so a template cannot show one without the other.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Final

__all__ = [
    "ComeNow",
    "Quote",
    "format_price",
    "format_quote",
    "honour",
    "to_cents",
]

_SYMBOLS: Final = {"EUR": "€", "GBP": "£", "USD": "$"}
_MINOR_DIGITS: Final = {"JPY": 0, "KRW": 0}
_CURRENCY: Final = re.compile(r"[A-Z]{3}")

_NBSP: Final = "\u00a0"
_NNBSP: Final = "\u202f"


@dataclass(frozen=True, slots=True)
class _Locale:
    decimal: str
    group: str
    symbol_first: bool


_LOCALES: Final = {
    "en": _Locale(decimal=".", group=",", symbol_first=True),
    "fr": _Locale(decimal=",", group=_NNBSP, symbol_first=False),
    "de": _Locale(decimal=",", group=".", symbol_first=False),
}


def _check_cents(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be a whole number of cents >= 0, got {value!r}")
    return value


def _check_currency(currency: object) -> str:
    if not (isinstance(currency, str) and _CURRENCY.fullmatch(currency)):
        raise ValueError(f"currency must be an ISO 4217 code such as 'EUR', got {currency!r}")
    return currency


def _digits(currency: str) -> int:
    return _MINOR_DIGITS.get(currency, 2)


def to_cents(amount: Decimal | str | int | float, currency: str = "EUR") -> int:
    """``amount`` (in whole currency units, e.g. "12.90") in the currency's minor unit.

    ``ValueError`` for a negative, non-finite or malformed amount, or one with a fraction
    of the minor unit ("12.905" EUR)."""
    _check_currency(currency)
    if isinstance(amount, bool):
        raise ValueError(f"not an amount: {amount!r}")
    try:
        exact = Decimal(repr(amount)) if isinstance(amount, float) else Decimal(amount)
    except InvalidOperation as exc:
        raise ValueError(f"not an amount: {amount!r}") from exc
    if not exact.is_finite() or exact < 0:
        raise ValueError(f"an amount must be finite and >= 0, got {amount!r}")
    minor = exact.scaleb(_digits(currency))
    if minor != minor.to_integral_value():
        raise ValueError(f"{amount!r} {currency} has a fraction of the smallest unit")
    return int(minor)


@dataclass(frozen=True, slots=True)
class ComeNow:
    """A discount that rewards coming now: full for ``full_for_s`` seconds after the trigger,
    then shrinking linearly to nothing at ``gone_after_s``."""

    regular_cents: int
    max_discount_pct: float | Decimal
    full_for_s: float
    gone_after_s: float

    def __post_init__(self) -> None:
        _check_cents("regular_cents", self.regular_cents)
        pct = self.max_discount_pct
        try:
            exact = None if isinstance(pct, bool) else Fraction(pct)
        except (TypeError, ValueError, OverflowError):  # NaN, infinity, not a number
            exact = None
        if exact is None or not (0 <= exact <= 100):
            raise ValueError(f"max_discount_pct must be from 0 to 100, got {pct!r}")
        if not (math.isfinite(self.full_for_s) and self.full_for_s >= 0):
            raise ValueError(f"full_for_s must be finite and >= 0, got {self.full_for_s!r}")
        if not (
            math.isfinite(self.gone_after_s)
            and self.gone_after_s >= self.full_for_s
            and self.gone_after_s > 0  # a discount gone at its own trigger was never offered
        ):
            raise ValueError(
                f"gone_after_s must be finite, > 0 and >= full_for_s ({self.full_for_s!r}), "
                f"got {self.gone_after_s!r}"
            )

    def discount_pct_at(self, since_trigger_s: float) -> Fraction:
        """The discount in percent, exactly, ``since_trigger_s`` seconds after the trigger."""
        t = since_trigger_s
        if math.isnan(t):
            raise ValueError("since_trigger_s must be a number, got NaN")
        if t >= self.gone_after_s:
            return Fraction(0)
        pct = Fraction(self.max_discount_pct)
        if t <= self.full_for_s:
            return pct
        left = Fraction(self.gone_after_s) - Fraction(t)
        return pct * left / (Fraction(self.gone_after_s) - Fraction(self.full_for_s))

    def price_at(self, since_trigger_s: float) -> int:
        """The price in cents ``since_trigger_s`` seconds after the trigger, rounded down;
        from 0 to the regular price, never falling as time passes."""
        exact = self.regular_cents * (1 - self.discount_pct_at(since_trigger_s) / 100)
        return min(self.regular_cents, max(0, math.floor(exact)))

    def quote(
        self, offer_id: str, currency: str, *, since_trigger_s: float, valid_until: float
    ) -> Quote:
        """The quote to show ``since_trigger_s`` seconds after the trigger, honoured until
        ``valid_until`` (wall-clock seconds)."""
        return Quote(
            offer_id=offer_id,
            regular_cents=self.regular_cents,
            price_cents=self.price_at(since_trigger_s),
            currency=currency,
            valid_until=valid_until,
        )


@dataclass(frozen=True, slots=True)
class Quote:
    """A price as shown for an offer, always with its regular price, and until when the
    shopper may have it (wall-clock seconds)."""

    offer_id: str
    regular_cents: int
    price_cents: int
    currency: str
    valid_until: float

    def __post_init__(self) -> None:
        if not (isinstance(self.offer_id, str) and self.offer_id):
            raise ValueError(f"offer_id must be a non-empty string, got {self.offer_id!r}")
        if self.regular_cents is None:
            raise ValueError("a price is never shown without the regular price beside it")
        regular = _check_cents("regular_cents", self.regular_cents)
        price = _check_cents("price_cents", self.price_cents)
        if price > regular:
            raise ValueError(f"price_cents {price} is above the regular price {regular}")
        _check_currency(self.currency)
        if not math.isfinite(self.valid_until):
            raise ValueError(f"valid_until must be finite, got {self.valid_until!r}")

    @property
    def discount_cents(self) -> int:
        """How much below the regular price the price is."""
        return self.regular_cents - self.price_cents

    def open_at(self, now: float) -> bool:
        """Whether the quote's window is still open at ``now``."""
        return now < self.valid_until


def honour(previous: Quote | None, new: Quote, now: float) -> Quote:
    """The quote to show at ``now``, given the one shown last for this offer (or None).

    While ``previous`` is open, a higher new price gives ``previous`` unchanged; a lower or
    equal one gives ``new`` with the later of the two windows. Once it is closed, ``new``.
    ``ValueError`` when the two quotes are of different offers or currencies."""
    if previous is None:
        return new
    if (previous.offer_id, previous.currency) != (new.offer_id, new.currency):
        raise ValueError(
            f"cannot honour a quote of {previous.offer_id!r} in {previous.currency} "
            f"with one of {new.offer_id!r} in {new.currency}"
        )
    if not previous.open_at(now):
        return new
    if new.price_cents > previous.price_cents:
        return previous
    if new.valid_until >= previous.valid_until:
        return new
    return replace(new, valid_until=previous.valid_until)


def format_price(cents: int, currency: str, locale: str = "en") -> str:
    """``cents`` of ``currency`` written for ``locale`` ("en", "fr" or "de", or a tag of one
    of those languages): "€12.90", "12,90 €". ``ValueError`` for a negative amount, a bad
    currency code or a locale not in the table."""
    _check_cents("cents", cents)
    _check_currency(currency)
    language = re.split(r"[-_]", locale, maxsplit=1)[0].lower()
    style = _LOCALES.get(language)
    if style is None:
        raise ValueError(f"locale {locale!r} is not one of {', '.join(_LOCALES)}")
    digits = _digits(currency)
    whole, fraction = divmod(cents, 10**digits)
    number = f"{whole:,}".replace(",", style.group)
    if digits:
        number += f"{style.decimal}{fraction:0{digits}d}"
    symbol = _SYMBOLS.get(currency)
    if not style.symbol_first:
        return f"{number}{_NBSP}{symbol or currency}"
    if symbol is None:
        return f"{currency}{_NBSP}{number}"
    return f"{symbol}{number}"


def format_quote(quote: Quote, locale: str = "en") -> tuple[str, str]:
    """(price, regular price) of ``quote``, written for ``locale``: a template gets both."""
    return (
        format_price(quote.price_cents, quote.currency, locale),
        format_price(quote.regular_cents, quote.currency, locale),
    )
