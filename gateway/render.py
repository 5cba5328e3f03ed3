"""Rendering with Jinja2 in its immutable sandbox, autoescaped, with ``StrictUndefined``.

Two kinds of template
    *Built-in* templates ship in ``templates/`` (the kiosk page, its cards, the phone card).
    *HQ templates* arrive through the ``templates`` stream, each a :class:`TemplateRecord`
    (``template_id``, ``source``, ``version``); an offer names the one it wants in its
    ``template_id``. :func:`check_template` vets a source when it arrives (``gateway.sync.apply``
    refuses it with the reason, and the previous version stays); :meth:`Renderer.load_hq`
    compiles the stored ones once per version. :meth:`Renderer.render_card` uses the HQ
    template of that id if one is loaded, else the built-in card of the channel.

What an HQ template may do
    It gets only the card's plain values (:data:`CARD_FIELDS`: text, numbers, booleans,
    None; never a record or any other object) and runs in its own sandbox
    (:class:`_HqEnvironment`) with these limits, checked while it runs:

    * source at most :data:`MAX_SOURCE_BYTES`, output at most :data:`MAX_OUTPUT_BYTES`;
    * a render finishes within :data:`MAX_RENDER_S` (``time.perf_counter``): the deadline is
      checked at every loop step, call, concatenation, operator and piece of output, so a
      loop that runs too long is stopped, not waited for; ``range`` gives at most 100,000
      numbers (the sandbox's own limit);
    * calls (macros, recursive loops) nest at most :data:`MAX_CALL_DEPTH` deep;
    * no text, list or number it builds may grow past the output limit (``*``, ``+``, ``~``,
      ``**``, ``join``, ``replace`` are sized before they run) and ``%`` does not format text;
    * attributes: the sandbox's rules (nothing private, nothing that mutates), and on text,
      lists and dicts only the methods that cannot amplify (no ``center``, ``format``, ...);
    * filters: a fixed list of harmless ones (no ``safe``: escaping cannot be turned off,
      nor can ``{% autoescape %}`` change it), plus ``price``; no ``include``/``import``.

    :func:`check_template` compiles the source and renders it with three sample cards
    (:data:`_SAMPLES`: a discounted kiosk offer with a greeting, a phone card whose regular
    price is unknown, a kiosk card without a price), under the same limits, and applies the
    price rule below to what they show. The answer is ``None``, or the reason it was refused.

The price rule: no offer shows a price without the regular one beside it
    The built-in cards (``templates/_card.html.j2``, ``price_tag``) show:

    * ``price < regular_price``: the price, and beside it the regular price struck through
      (``<s>``, labelled for screen readers), with the saving;
    * ``price`` equal to ``regular_price``, or no ``price``: the regular price alone;
    * no ``regular_price`` (or a price above it, which is bad data): **no price at all**,
      since nothing proves the price is not a discount.

    An HQ template is held to the same rule on its samples: showing the sample price without
    the sample regular price, or showing a price whose regular price is unknown, refuses it.

Money
    ``price`` and ``regular_price`` reach a card template as whole cents (``int``), the
    convention of :mod:`gateway.pricing`: a card value given as an ``int`` is cents, a
    ``float`` is an amount in currency units (``12.9``) and is converted exactly
    (:func:`~gateway.pricing.to_cents`). Templates format them with the ``price`` filter,
    ``{{ price | price(currency, locale) }}`` (:func:`~gateway.pricing.format_price`; a
    locale it does not know is written as English).

Memo
    ``render_fragment`` and ``render_card`` remember their last outputs: rendering is a pure
    function of the template and plain values, and the sandbox's checks cost tens of
    microseconds that a kiosk need not pay again for the same offer. The key holds each
    value's type (``1 == True == 1.0`` render differently) and, for an HQ template, the
    version loaded, so a new version is never answered from the memo of the old.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from contextlib import closing
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any, Final, Literal, cast, get_args

import jinja2
import lmdb
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError, TemplateRuntimeError, UndefinedError
from jinja2.filters import do_replace, sync_do_join
from jinja2.nodes import EvalContext
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import pass_eval_context

from gateway.errors import RenderError, StoreError
from gateway.logs import RateLimitedLog
from gateway.pricing import format_price, to_cents
from gateway.store import codec
from gateway.store.database import Database
from gateway.store.records import OfferRecord, TemplateRecord

__all__ = [
    "BUILTIN_CARDS",
    "CARD_FIELDS",
    "MAX_CALL_DEPTH",
    "MAX_OUTPUT_BYTES",
    "MAX_RENDER_S",
    "MAX_SOURCE_BYTES",
    "Channel",
    "Renderer",
    "Scalar",
    "card_values",
    "check_template",
    "templates_dir",
    "templates_from",
]

log = logging.getLogger(__name__)

Scalar = str | int | float | bool | None
Channel = Literal["kiosk", "phone"]

MAX_SOURCE_BYTES: Final = 64 * 1024
MAX_OUTPUT_BYTES: Final = 64 * 1024
MAX_RENDER_S: Final = 0.050
MAX_CALL_DEPTH: Final = 16
_MAX_INT_BITS: Final = 4096  # no number a template computes is larger
_FRAGMENT_CACHE: Final = 512
_PLAIN: Final = (str, int, float, bool, type(None))  # exact types: no str subclass (Markup)

BUILTIN_CARDS: Final[Mapping[Channel, str]] = {
    "kiosk": "kiosk/offer.html.j2",
    "phone": "phone/card.html.j2",
}
_GENERIC: Final = "kiosk/generic.html.j2"
_CARD_TEMPLATES: Final = frozenset({*BUILTIN_CARDS.values(), _GENERIC})

CARD_FIELDS: Final[Mapping[str, Scalar]] = {
    "offer_id": None,
    "title": "",
    "body": "",
    "price": None,  # cents once in the template (see Money)
    "regular_price": None,
    "currency": "EUR",
    "greeting": "",  # the shopper's nickname, only when they asked to be greeted
    "locale": "en",  # the language of title and body; the card's lang attribute
    "kind": "offer",
    "social_proof": "",
    "store_name": "",
    "channel": "kiosk",
}
"""Every value a card template gets, with its default: the whole context, always."""


def templates_dir() -> Path:
    """Where the shipped templates are: inside the installed wheel, or the source checkout."""
    packaged = Path(__file__).parent / "_templates"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "templates"


def templates_from(db: Database) -> list[TemplateRecord]:
    """Every HQ template in the store (the ``templates`` table), for :meth:`Renderer.load_hq`."""
    try:
        with db.env.begin(db=db.handle("templates"), buffers=False) as txn:
            rows = list(txn.cursor())
    except lmdb.Error as exc:
        raise StoreError(f"scan of templates failed: {exc}") from exc
    return [codec.decode_as(TemplateRecord, value) for _key, value in rows]


def card_values(
    offer: OfferRecord,
    *,
    price: float | int | None,
    regular_price: float | int | None,
    locale: str = "en",
    offer_locale: str = "en",
    greeting: str = "",
    social_proof: str = "",
    store_name: str = "",
) -> dict[str, Scalar]:
    """The card values of ``offer`` for a shopper reading ``locale``: its words in that
    locale (the variant of that exact tag, else of its language, else the offer's own words,
    which are in ``offer_locale``), the prices to show (the offer's, or a quote's) and the
    optional lines. Pass ``greeting`` only when the shopper asked to be greeted."""
    language = re.split(r"[-_]", locale, maxsplit=1)[0].lower()
    for tag in (locale, language):
        variant = offer.locales.get(tag)
        if variant is not None:
            title, body, shown = variant.title, variant.body, tag
            break
    else:
        title, body, shown = offer.title, offer.body, offer_locale
    return {
        "offer_id": offer.offer_id,
        "title": title,
        "body": body,
        "price": price,
        "regular_price": regular_price,
        "currency": offer.currency,
        "greeting": greeting,
        "locale": shown,
        "kind": offer.kind,
        "social_proof": social_proof,
        "store_name": store_name,
    }


# ----- money in templates -----


def _cents(value: object, currency: str) -> int:
    """A card's price in cents: an ``int`` is cents, a ``float`` an amount (``ValueError``)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"a price must be a number, got {value!r}")
    if isinstance(value, float):
        return to_cents(value, currency)
    if value < 0:
        raise ValueError(f"a price must be >= 0, got {value!r}")
    return value


def _price_filter(value: object, currency: str = "EUR", locale: str = "en") -> str:
    """``{{ cents | price(currency, locale) }}``: "€12.90", "12,90 €"; "" for None."""
    if value is None:
        return ""
    cents = _cents(value, currency)
    try:
        return format_price(cents, currency, locale)
    except ValueError:
        # A locale the table lacks is written as English; a bad currency fails again here.
        return format_price(cents, currency, "en")


def _card_context(channel: str, values: Mapping[str, object]) -> dict[str, Scalar]:
    """The complete, plain context of a card: defaults filled, prices in cents."""
    if channel not in get_args(Channel):
        raise RenderError(f"no channel {channel!r}: one of {', '.join(get_args(Channel))}")
    unknown = values.keys() - CARD_FIELDS.keys()
    if unknown:
        raise RenderError(f"unknown card values: {', '.join(sorted(unknown))}")
    context: dict[str, Any] = {**CARD_FIELDS, **values, "channel": channel}
    for key, value in context.items():
        if type(value) not in _PLAIN:
            raise RenderError(f"card value {key} must be plain data, got {type(value).__name__}")
    for key in ("price", "regular_price"):
        if context[key] is not None:
            try:
                context[key] = _cents(context[key], str(context["currency"]))
            except ValueError as exc:
                raise RenderError(f"card value {key}: {exc}") from exc
    return context


# ----- the HQ sandbox -----


class _LimitExceeded(TemplateRuntimeError):
    """A template went past one of the limits."""


@dataclass(slots=True)
class _Budget:
    deadline: float
    depth: int = 0


class _BoundedCodeGenerator(CodeGenerator):
    """Jinja's code generator, with every loop and concatenation checked by the environment
    and no way to change autoescaping."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._loop_iterables: set[int] = set()  # ids: the AST lives as long as the compilation

    def visit_For(self, node: nodes.For, frame: Frame) -> None:
        self._loop_iterables.add(id(node.iter))
        super().visit_For(node, frame)

    def visit(self, node: nodes.Node, *args: Any, **kwargs: Any) -> Any:
        if id(node) not in self._loop_iterables:
            return super().visit(node, *args, **kwargs)
        self.write("environment.bounded_iter(")
        super().visit(node, *args, **kwargs)
        self.write(")")
        return None

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        # As Jinja writes it, with the parts sized before they are joined.
        if frame.eval_ctx.volatile:
            join = "(markup_join if context.eval_ctx.volatile else str_join)"
        else:
            join = "markup_join" if frame.eval_ctx.autoescape else "str_join"
        self.write(f"{join}(environment.bounded_parts((")
        for part in node.nodes:
            self.visit(part, frame)
            self.write(", ")
        self.write(")))")

    def visit_EvalContextModifier(self, node: nodes.EvalContextModifier, frame: Frame) -> None:
        self.fail("a template may not change autoescaping", node.lineno)

    def visit_ScopedEvalContextModifier(
        self, node: nodes.ScopedEvalContextModifier, frame: Frame
    ) -> None:
        self.fail("a template may not change autoescaping", node.lineno)


def _weight(value: object, budget: int) -> int:
    """About how many characters ``str(value)`` has, counting no further than ``budget``."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, bool) or value is None:
        return 5
    if isinstance(value, int):
        return value.bit_length() // 3 + 1
    items: Iterable[object]
    if isinstance(value, dict):
        items = chain.from_iterable(value.items())
    elif isinstance(value, list | tuple | set | frozenset):
        items = value
    else:
        return 32  # a float, a range, a loop, a cycler: a short repr
    total = 2
    for item in items:
        total += 2 + _weight(item, budget - total)
        if total > budget:
            break
    return total


_STR_METHODS: Final = frozenset(
    {
        *("capitalize", "casefold", "count", "endswith", "find", "index", "isalnum", "isalpha"),
        *("isdecimal", "isdigit", "islower", "isnumeric", "isspace", "istitle", "isupper"),
        *("lower", "lstrip", "partition", "rfind", "rindex", "rpartition", "rsplit", "rstrip"),
        *("split", "splitlines", "startswith", "strip", "swapcase", "title", "upper"),
    }
)
_METHODS: Final[tuple[tuple[type, frozenset[str]], ...]] = (
    (str, _STR_METHODS),
    (dict, frozenset({"get", "items", "keys", "values"})),
    (list, frozenset({"count", "index"})),
    (tuple, frozenset({"count", "index"})),
)
_FILTERS: Final = frozenset(
    {
        *("abs", "batch", "capitalize", "count", "d", "default", "dictsort", "e", "escape"),
        *("filesizeformat", "first", "float", "forceescape", "groupby", "int", "items"),
        *("last", "length", "list", "lower", "map", "max", "min", "reject", "rejectattr"),
        *("reverse", "round", "select", "selectattr", "slice", "sort", "striptags", "title"),
        *("trim", "truncate", "unique", "upper", "urlencode", "wordcount", "xmlattr"),
    }
)


class _HqEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox HQ templates run in (see the module notes for its limits)."""

    code_generator_class = _BoundedCodeGenerator
    intercepted_binops = frozenset({"+", "*", "**", "%"})

    def __init__(self) -> None:
        super().__init__(
            loader=jinja2.DictLoader({}),  # nothing to include, import or extend
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            auto_reload=False,
            trim_blocks=True,
            lstrip_blocks=True,
            finalize=self._finalize,
        )
        self.filters = {name: f for name, f in self.filters.items() if name in _FILTERS}
        self.filters.update(price=_price_filter, join=_bounded_join, replace=_bounded_replace)
        self.globals = {
            name: value
            for name, value in self.globals.items()
            if name in ("range", "dict", "cycler", "joiner")
        }
        self._local = threading.local()

    # ----- the render budget of this thread -----

    def _tick(self) -> _Budget | None:
        budget: _Budget | None = getattr(self._local, "budget", None)
        if budget is not None and time.perf_counter() > budget.deadline:
            raise _LimitExceeded(f"rendering took longer than {MAX_RENDER_S * 1000:.0f} ms")
        return budget

    def render_limited(self, template: jinja2.Template, context: Mapping[str, Scalar]) -> str:
        """Render ``template`` within the time and size limits (``_LimitExceeded``)."""
        self._local.budget = _Budget(deadline=time.perf_counter() + MAX_RENDER_S)
        try:
            parts: list[str] = []
            size = 0
            generated = cast(Generator[str, None, None], template.generate(context))
            with closing(generated) as pieces:
                for piece in pieces:
                    size += len(piece)
                    if size > MAX_OUTPUT_BYTES:
                        raise _LimitExceeded(f"output over {MAX_OUTPUT_BYTES} bytes")
                    self._tick()
                    parts.append(piece)
            self._tick()
        finally:
            self._local.budget = None
        html = "".join(parts)
        if len(html.encode()) > MAX_OUTPUT_BYTES:
            raise _LimitExceeded(f"output over {MAX_OUTPUT_BYTES} bytes")
        return html

    # ----- what the generated code calls -----

    def bounded_iter(self, iterable: Iterable[Any]) -> Iterator[Any]:
        for item in iterable:
            self._tick()
            yield item

    def bounded_parts(self, parts: tuple[Any, ...]) -> tuple[Any, ...]:
        self._tick()
        if _weight(parts, MAX_OUTPUT_BYTES) > MAX_OUTPUT_BYTES:
            raise _LimitExceeded(f"a value over {MAX_OUTPUT_BYTES} characters")
        return parts

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        budget = self._tick()
        if budget is None:
            return super().call(context, obj, *args, **kwargs)
        if budget.depth >= MAX_CALL_DEPTH:
            raise _LimitExceeded(f"calls nested deeper than {MAX_CALL_DEPTH}")
        budget.depth += 1
        try:
            return super().call(context, obj, *args, **kwargs)
        finally:
            budget.depth -= 1

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        self._tick()
        if operator == "%" and isinstance(left, str):
            raise SecurityError("% does not format text in a template: use the filters")
        if _grows_too_much(operator, left, right):
            raise _LimitExceeded(f"a value over the size limit ({operator})")
        result = self.binop_table[operator](left, right)
        return _checked(result) if operator == "+" else result

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if not super().is_safe_attribute(obj, attr, value):
            return False
        for kind, names in _METHODS:
            if isinstance(obj, kind):
                return attr in names
        return True

    def wrap_str_format(self, value: Any) -> None:
        return None  # str.format is not on the list of methods: refused like the others

    def _finalize(self, value: Any) -> Any:
        return _checked(value)


def _int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _grows_too_much(operator: str, left: Any, right: Any) -> bool:
    """Whether ``left <operator> right`` would make a number or a sequence past the limits,
    told before it is computed."""
    if operator == "**" and _int(left) and _int(right) and right > 0 and abs(left) > 1:
        return bool(left.bit_length() * right > _MAX_INT_BITS)
    if operator != "*":
        return False
    if _int(left) and _int(right):
        return bool(left.bit_length() + right.bit_length() > _MAX_INT_BITS)
    for seq, times in ((left, right), (right, left)):
        if isinstance(seq, str | list | tuple) and _int(times) and times > 0:
            return bool(_weight(seq, MAX_OUTPUT_BYTES) * times > MAX_OUTPUT_BYTES)
    return False


def _checked(value: Any) -> Any:
    if _weight(value, MAX_OUTPUT_BYTES) > MAX_OUTPUT_BYTES:
        raise _LimitExceeded(f"a value over {MAX_OUTPUT_BYTES} characters")
    return value


@pass_eval_context
def _bounded_join(
    eval_ctx: EvalContext, value: Iterable[Any], d: str = "", attribute: str | int | None = None
) -> str:
    items = list(value)
    if _weight(items, MAX_OUTPUT_BYTES) + len(d) * len(items) > MAX_OUTPUT_BYTES:
        raise _LimitExceeded(f"a value over {MAX_OUTPUT_BYTES} characters")
    return sync_do_join(eval_ctx, items, d, attribute)


@pass_eval_context
def _bounded_replace(
    eval_ctx: EvalContext, s: str, old: str, new: str, count: int | None = None
) -> str:
    text, old, new = str(s), str(old), str(new)
    times = text.count(old) if old else len(text) + 1
    if count is not None:
        times = min(times, max(count, 0))
    if len(text) + times * (len(new) - len(old)) > MAX_OUTPUT_BYTES:
        raise _LimitExceeded(f"a value over {MAX_OUTPUT_BYTES} characters")
    result: str = do_replace(eval_ctx, s, old, new, count)
    return result


# ----- checking an HQ template -----

_SAMPLE: Final[Mapping[str, Scalar]] = {
    "offer_id": "sample-offer",
    "title": "Espresso beans, 1 kg",
    "body": "Our single-origin roast.",
    "price": 123456,
    "regular_price": 234567,
    "currency": "EUR",
    "greeting": "Sam",
    "locale": "en",
    "kind": "offer",
    "social_proof": "12 people took this today",
    "store_name": "Sample Store",
}
_SAMPLES: Final[tuple[tuple[str, Channel, Mapping[str, Scalar]], ...]] = (
    ("a discounted kiosk offer", "kiosk", _SAMPLE),
    (
        "a phone card without a regular price",
        "phone",
        {**_SAMPLE, "regular_price": None, "greeting": "", "body": "", "locale": "fr-CH"},
    ),
    (
        "a kiosk card without a price",
        "kiosk",
        {**_SAMPLE, "price": None, "regular_price": None, "kind": "tip", "social_proof": ""},
    ),
)
# The sample price (1234.56) and regular price (2345.67) however a template writes them.
_SAMPLE_PRICE: Final = re.compile(r"(?<!\d)1\D?234\D?56(?!\d)")
_SAMPLE_REGULAR: Final = re.compile(r"(?<!\d)2\D?345\D?67(?!\d)")
# What a foreign template can raise, translated into a reason at this one boundary.
_FAILURES: Final = (
    jinja2.TemplateError,
    ArithmeticError,
    LookupError,
    TypeError,
    ValueError,
    AttributeError,
    RecursionError,
)


def _reason(exc: BaseException) -> str:
    match exc:
        case jinja2.TemplateSyntaxError():
            return f"syntax error on line {exc.lineno}: {exc.message}"
        case SecurityError():
            return f"unsafe: {exc}"
        case _LimitExceeded() | OverflowError():
            return f"over a limit: {exc}"
        case RecursionError():
            return "over a limit: nested too deeply"
        case UndefinedError():
            return f"undefined: {exc}"
        case _:
            return f"fails: {type(exc).__name__}: {exc}"


def _compile_checked(
    env: _HqEnvironment, source: str
) -> tuple[jinja2.Template, None] | tuple[None, str]:
    """``source`` compiled and test-rendered with the samples, or the reason it cannot be."""
    size = len(source.encode())
    if size > MAX_SOURCE_BYTES:
        return None, f"over a limit: source of {size} bytes, over {MAX_SOURCE_BYTES}"
    try:
        template = env.from_string(source)
    except _FAILURES as exc:
        return None, _reason(exc)
    for name, channel, values in _SAMPLES:
        try:
            html = env.render_limited(template, _card_context(channel, values))
        except _FAILURES as exc:
            return None, f"{_reason(exc)} (rendering {name})"
        shows_price = _SAMPLE_PRICE.search(html) is not None
        if values["regular_price"] is None and shows_price:
            return None, f"price rule: {name} shows a price whose regular price is unknown"
        if shows_price and _SAMPLE_REGULAR.search(html) is None:
            return None, f"price rule: {name} shows the price without the regular price"
    return template, None


def check_template(source: str) -> str | None:
    """Whether an HQ template may be used: None, or the reason it is refused."""
    return _compile_checked(_HqEnvironment(), source)[1]


# ----- the renderer -----


@dataclass(frozen=True, slots=True)
class _HqTemplate:
    template_id: str
    version: int
    source: str
    template: jinja2.Template
    serial: int  # which compilation: part of the memo key


class Renderer:
    def __init__(self, folder: Path | None = None) -> None:
        self._env = ImmutableSandboxedEnvironment(
            loader=jinja2.FileSystemLoader(str(folder or templates_dir())),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            auto_reload=False,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self._env.filters["price"] = _price_filter
        self._hq_env = _HqEnvironment()
        self._hq: dict[str, _HqTemplate] = {}
        self._refused: dict[str, tuple[int, str, str]] = {}  # id -> version, source, why
        self._serial = 0
        self._fragments: dict[tuple[object, ...], str] = {}
        self._warn = RateLimitedLog(log)

    # ----- HQ templates -----

    def check(self, source: str) -> str | None:
        """Whether an HQ template may be used: None, or the reason it is refused."""
        return _compile_checked(self._hq_env, source)[1]

    def load_hq(self, records: Iterable[TemplateRecord]) -> dict[str, str]:
        """Make ``records`` the HQ templates: each version compiled and checked once, the ids
        not listed dropped. A version that fails its check is not used (the version loaded
        before stays, if any) and not tried again; the answer maps the id of each template
        refused, now or before, to the reason."""
        loaded: dict[str, _HqTemplate] = {}
        refused: dict[str, tuple[int, str, str]] = {}
        for record in records:
            current = self._hq.get(record.template_id)
            seen = (record.version, record.source)
            if current is not None and (current.version, current.source) == seen:
                loaded[record.template_id] = current
                continue
            before = self._refused.get(record.template_id)
            if before is not None and before[:2] == seen:
                why: str | None = before[2]
                template = None
            else:
                template, why = _compile_checked(self._hq_env, record.source)
            if template is None:
                refused[record.template_id] = (*seen, why or "")
                if before is None or before[:2] != seen:
                    self._warn.warning(
                        "hq_template_refused",
                        "HQ template refused; the version loaded before stays",
                        template=record.template_id,
                        version=record.version,
                        why=why,
                    )
                if current is not None:
                    loaded[record.template_id] = current
                continue
            self._serial += 1
            loaded[record.template_id] = _HqTemplate(
                record.template_id, *seen, template, self._serial
            )
        self._hq, self._refused = loaded, refused
        return {template_id: why for template_id, (_v, _s, why) in refused.items()}

    def hq_versions(self) -> dict[str, int]:
        """The HQ templates in use: id -> version."""
        return {template_id: hq.version for template_id, hq in self._hq.items()}

    # ----- rendering -----

    def render_card(self, template_id: str, channel: Channel, **values: Scalar) -> str:
        """An offer's card: the HQ template ``template_id`` if loaded, else the channel's
        built-in card. ``values`` are among :data:`CARD_FIELDS` (the others get their
        defaults). Where an HQ template fails on these values, the failure is logged and the
        built-in card shown (and remembered for these values, like any output)."""
        context = _card_context(channel, values)
        hq = self._hq.get(template_id)
        if hq is None:
            return self._memo(("card", BUILTIN_CARDS[channel]), context, self._builtin(channel))
        return self._memo(("hq", template_id, hq.serial), context, self._hq_render(hq, channel))

    def render_fragment(self, name: str, **values: Scalar) -> str:
        """Render the built-in ``name`` with plain values, reusing the output for values seen
        recently. The card templates get the whole card context (:data:`CARD_FIELDS`)."""
        context: Mapping[str, object] = values
        if name in _CARD_TEMPLATES:
            context = _card_context("phone" if name.startswith("phone/") else "kiosk", values)
        else:
            for key, value in values.items():
                if type(value) not in _PLAIN:
                    raise RenderError(f"{name}: {key} must be plain data")
        return self._memo(("fragment", name), context, lambda ctx: self.render(name, **ctx))

    def render(self, name: str, **context: Any) -> str:
        """Render the built-in ``name`` (no memo, any context: the pages use this)."""
        try:
            return self._env.get_template(name).render(**context)
        except _FAILURES as exc:
            raise RenderError(f"template {name}: {exc}") from exc

    # ----- helpers -----

    def _builtin(self, channel: Channel) -> Callable[[Mapping[str, object]], str]:
        return lambda context: self.render(BUILTIN_CARDS[channel], **context)

    def _hq_render(
        self, hq: _HqTemplate, channel: Channel
    ) -> Callable[[Mapping[str, Scalar]], str]:
        def render(context: Mapping[str, Scalar]) -> str:
            try:
                return self._hq_env.render_limited(hq.template, context)
            except _FAILURES as exc:
                self._warn.warning(
                    "hq_template_failed",
                    "HQ template failed; the built-in card is shown",
                    template=hq.template_id,
                    version=hq.version,
                    why=_reason(exc),
                )
            return self.render(BUILTIN_CARDS[channel], **context)

        return render

    def _memo(
        self,
        head: tuple[object, ...],
        context: Mapping[str, object],
        produce: Callable[[Mapping[str, Any]], str],
    ) -> str:
        # The type is part of the key: 1 == True == 1.0 and -0.0 == 0.0 render differently.
        key = (*head, *((k, type(v), v) for k, v in sorted(context.items())))
        cached = self._fragments.get(key)
        if cached is not None:
            return cached
        html = produce(context)
        if len(self._fragments) >= _FRAGMENT_CACHE:
            self._fragments.pop(next(iter(self._fragments)))
        self._fragments[key] = html
        return html
