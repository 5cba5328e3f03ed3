"""Audience rules: which shoppers an offer is for, in a small, safe JSON language.

HQ attaches a rule to an offer. The gateway compiles it once, when the offer arrives
(:func:`compile_rule`): every operator, variable, type and limit is checked up front and the
result is a :class:`Rule`, a tree of closures that is called per request with a
:class:`Context` and never looks at the JSON again. A rule that fails validation raises
:class:`RuleError`, whose ``reason`` is a stable label and whose message points at the place;
the caller refuses the offer, reports that to HQ and keeps the previous version. Evaluation
never raises and reads nothing but the context. No I/O, no clock: the caller passes the time.

The spelling is JsonLogic's (https://jsonlogic.com), with static types and without its
coercions and truthiness: ``1`` is not ``"1"``, and a string is not a condition.

Grammar
-------
A rule is already-parsed JSON (``dict``, ``list``, ``str``, ``int``, ``float``, ``bool``,
``None``)::

    rule       = condition
    condition  = expression of type boolean
    expression = literal | variable | operation
    operation  = {operator: [expression, ...]}      exactly one key; arguments in a list
                 {"!": expression}                  the one argument of "!"/"not" may be bare
    variable   = {"var": name} | {"var": [name]} | {"var": [name, default]}
    literal    = null | true | false | number | string | list
    list       = [item, ...]                        strings, numbers or booleans, all one kind;
                                                    no null, no nested lists, no operations

The top-level ``true`` means everyone, ``false`` no one.

Operators
---------
Every operator's result is a boolean, never null.

``{"==": [a, b]}``, ``{"!=": [a, b]}``
    Equality of two strings, two numbers (``1 == 1.0``) or two booleans. Lists cannot be
    compared (use ``in`` or ``overlaps``). ``null`` may be compared with a variable only.
``{"<": [a, b]}``, ``{"<=": [a, b]}``, ``{">": [a, b]}``, ``{">=": [a, b]}``
    Numbers only; strings are refused (no lexical order of locales or zones).
``{"<": [lo, x, hi]}``, ``{"<=": [lo, x, hi]}``
    Between: ``lo < x < hi``, ``lo <= x <= hi`` (JsonLogic's three-argument form; only for
    ``<`` and ``<=``).
``{"in": [needle, list]}``
    Membership: ``needle`` (a string, number or boolean) is an item of ``list``, a list
    literal or a list variable, e.g. ``{"in": ["vip", {"var": "segments"}]}`` or
    ``{"in": [{"var": "time.weekday"}, [5, 6]]}``. The needle's kind must be the items'.
``{"in": [needle, string]}``
    Substring, as in JsonLogic: both are strings and ``needle`` occurs in ``string``,
    case-sensitively (``{"in": ["fr", {"var": "profile.locale"}]}`` matches ``"fr-BE"``; it
    also matches ``"fra"``, so prefer a list of locales when that matters). The empty string
    occurs in every string.
``{"overlaps": [list, list]}``
    The two lists share at least one item: ``{"overlaps": [{"var": "segments"}, ["a", "b"]]}``
    is "in segment a or b". Not JsonLogic; it is not called ``some`` because JsonLogic's
    ``some`` takes a predicate over the items, and a JsonLogic tool would read this one
    differently.
``{"and": [c, ...]}``, ``{"or": [c, ...]}``
    One or more conditions, evaluated left to right, stopping at the first that decides.
``{"!": [c]}``, ``{"!": c}``, ``{"not": c}``
    Negation of a condition. ``not`` is an alias; the canonical spelling is ``{"!": [c]}``.
``{"var": name}``, ``{"var": [name, default]}``
    The value of a variable of the catalogue below; ``default`` (a literal of the variable's
    type) stands in when the value is missing.

Variables
---------
The catalogue is :data:`VARIABLES` (name -> :class:`Variable`); a name outside it is an error
(``unknown_var``). Rules never see a shopper's names or ids: of the profile only the locale,
the segments and the kiosk greeting choice are variables.

========================== ============================ ================================
name                       type                         meaning
========================== ============================ ================================
``profile.locale``         string                       the shopper's locale, "fr-BE"
``profile.segments``       list of strings              the shopper's segments
``segments``               list of strings              alias of ``profile.segments``
``profile.greet_on_kiosk`` boolean                      the shopper lets kiosks greet
                                                        them by name
``visit.zone``             string                       the zone of the visit
``visit.trigger``          string: entered, dwell,      what set off the decision
                           near_kiosk, app_open, signal
``visit.dwell_s``          number (>= 0)                seconds spent in the zone
``visit.kiosk``            string                       the kiosk's id (missing on a
                                                        phone)
``visit.visits_today``     number (integer >= 0)        the shopper's visits today
``channel``                string: kiosk, phone         where the offer would show
``time.hour``              number (integer 0-23)        local hour
``time.weekday``           number (integer 0-6)         local weekday, 0 is Monday
``time.minute_of_day``     number (integer 0-1439)      local minutes since midnight
========================== ============================ ================================

Any variable may be missing (``None`` in the :class:`Context`): no profile, a phone has no
kiosk, a trigger without dwell time. A string literal compared with, or listed for, a
variable of enumerated values must be one of them (``"dwel"`` is ``bad_literal``).

Semantics of missing values
---------------------------
Unknown never qualifies a shopper for an offer:

* every comparison with a missing value is false: ``==``, ``!=``, ``<``, ``<=``, ``>``,
  ``>=``, ``in`` (missing needle or haystack) and ``overlaps``. So
  ``{"!=": [{"var": "visit.kiosk"}, "k1"]}`` is false on a phone; to include the unknown,
  negate: ``{"!": {"==": [{"var": "visit.kiosk"}, "k1"]}}``;
* except against the ``null`` literal: ``{"==": [v, null]}`` is true exactly when ``v`` is
  missing, ``{"!=": [v, null]}`` exactly when it is known (and ``null == null`` is true);
* a boolean variable used as a condition is true only when it is known and true;
* a variable with a default is never missing.

Static checks
-------------
Types are checked at compile time: comparing a string variable with a number, ``<`` on
strings, ``in`` on a number, a list where a scalar belongs, a non-boolean where a condition
belongs, or a default of the wrong type are all ``type_mismatch``. With the :class:`Context`
checking its own values on construction, a compiled rule cannot fail at run time.

Limits
------
Operations nest at most :data:`MAX_DEPTH` (16) deep (``var`` counts as an operation); a rule
has at most :data:`MAX_NODES` (256) nodes (an operation, a variable or a literal is one node;
a list literal is one node however long); a list literal has at most :data:`MAX_LIST` (256)
items; a string at most :data:`MAX_STRING` (256) characters. Integers lie within
``+-2**53`` (exact in every JSON reader) and floats are finite.

Errors
------
:class:`RuleError` (a :class:`~gateway.errors.PayloadError`). Its ``path`` names the place in
JSON-pointer style from ``rule``: operator keys and argument indexes, e.g.
``rule/and/1/in/0: unknown variable "profile.first_name"``. Its ``reason`` is one of
:data:`REASONS`:

==================== =====================================================================
``unknown_operator`` an object that is not one operation of the list above
``unknown_var``      a variable outside the catalogue, or a name that is not a string
``type_mismatch``    a value of the wrong type for its place
``arity``            the wrong number of arguments, or arguments not in a list
``too_deep``         operations nested deeper than ``MAX_DEPTH``
``too_large``        more than ``MAX_NODES`` nodes, a list or a string over its limit
``bad_literal``      not a JSON value, an operation where a literal belongs, a nested or
                     mixed list, null in a list, a number out of range, a string that is
                     not valid Unicode, a value its enumerated variable never takes
==================== =====================================================================

Canonical source
----------------
:attr:`Rule.source` is compact JSON with ``not`` spelled ``{"!": [c]}``, ``{"var": [name]}``
as ``{"var": name}``, aliases resolved, a ``null`` default dropped; compiling it gives the
same source. :attr:`Rule.vars` holds the canonical names of the variables the rule reads.

:func:`evaluate` is a slow, plain interpreter of the same semantics, kept as the reference
the compiled closures are tested against.
"""

from __future__ import annotations

import difflib
import itertools
import json
import math
import operator
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from operator import attrgetter
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, cast

from gateway.errors import PayloadError

if TYPE_CHECKING:
    from datetime import datetime

__all__ = [
    "ALIASES",
    "CHANNELS",
    "EVERYONE",
    "MAX_DEPTH",
    "MAX_LIST",
    "MAX_NODES",
    "MAX_STRING",
    "OPERATORS",
    "REASONS",
    "TRIGGERS",
    "VARIABLES",
    "Context",
    "ProfileFacts",
    "Rule",
    "RuleError",
    "Type",
    "Variable",
    "compile_rule",
    "context",
    "evaluate",
]

MAX_DEPTH: Final = 16
MAX_NODES: Final = 256
MAX_LIST: Final = 256
MAX_STRING: Final = 256
_MAX_INT: Final = 2**53

REASONS: Final = frozenset(
    {
        "unknown_operator",
        "unknown_var",
        "type_mismatch",
        "arity",
        "too_deep",
        "too_large",
        "bad_literal",
    }
)
TRIGGERS: Final = ("entered", "dwell", "near_kiosk", "app_open", "signal")
CHANNELS: Final = ("kiosk", "phone")


class RuleError(PayloadError):
    """An audience rule failed validation: ``reason`` (one of :data:`REASONS`), ``path``
    (where, e.g. ``rule/and/1/in/0``) and ``message`` (what is wrong there)."""

    def __init__(self, reason: str, path: str, message: str) -> None:
        self.path = path
        self.message = message
        super().__init__(reason, f"{path}: {message}")


# ---------------------------------------------------------------------------- types and catalogue

Kind = Literal["boolean", "number", "string", "list", "null"]
_SCALARS: Final = frozenset({"boolean", "number", "string"})


@dataclass(frozen=True, slots=True)
class Type:
    """A static type: ``kind``; for a list the kind of its ``item`` (None: an empty list
    literal, which fits any); for a string the only ``values`` it may take (an enumeration)."""

    kind: Kind
    item: Kind | None = None
    values: frozenset[str] | None = None

    def __str__(self) -> str:
        if self.kind == "list":
            return f"list of {self.item}s" if self.item else "empty list"
        return self.kind


_BOOLEAN: Final = Type("boolean")
_NUMBER: Final = Type("number")
_STRING: Final = Type("string")
_NULL: Final = Type("null")
_STRINGS: Final = Type("list", "string")


@dataclass(frozen=True, slots=True)
class Variable:
    """A variable of the catalogue: its ``type``, the :class:`Context` ``field`` holding it,
    what it means, and for numbers whether it is an ``integer`` within ``low``..``high``."""

    type: Type
    field: str
    doc: str
    integer: bool = False
    low: int | None = None
    high: int | None = None


_PROFILE_SEGMENTS: Final = Variable(_STRINGS, "segments", "the shopper's segments")

VARIABLES: Final[Mapping[str, Variable]] = MappingProxyType(
    {
        "profile.locale": Variable(_STRING, "locale", 'the shopper\'s locale, e.g. "fr-BE"'),
        "profile.segments": _PROFILE_SEGMENTS,
        "segments": _PROFILE_SEGMENTS,
        "profile.greet_on_kiosk": Variable(
            _BOOLEAN, "greet_on_kiosk", "the shopper lets kiosks greet them by name"
        ),
        "visit.zone": Variable(_STRING, "zone", "the zone of the visit"),
        "visit.trigger": Variable(
            Type("string", values=frozenset(TRIGGERS)), "trigger", "what set off the decision"
        ),
        "visit.dwell_s": Variable(_NUMBER, "dwell_s", "seconds spent in the zone", low=0),
        "visit.kiosk": Variable(_STRING, "kiosk", "the kiosk's id (missing on a phone)"),
        "visit.visits_today": Variable(
            _NUMBER, "visits_today", "the shopper's visits today", integer=True, low=0
        ),
        "channel": Variable(
            Type("string", values=frozenset(CHANNELS)), "channel", "where the offer would show"
        ),
        "time.hour": Variable(_NUMBER, "hour", "local hour", integer=True, low=0, high=23),
        "time.weekday": Variable(
            _NUMBER, "weekday", "local weekday, 0 is Monday", integer=True, low=0, high=6
        ),
        "time.minute_of_day": Variable(
            _NUMBER, "minute_of_day", "local minutes since midnight", integer=True, low=0, high=1439
        ),
    }
)
ALIASES: Final[Mapping[str, str]] = MappingProxyType({"segments": "profile.segments"})
# Profile fields that exist but that rules must never read.
_PERSONAL: Final = frozenset({"profile.first_name", "profile.nickname", "profile.shopper_id"})


# ---------------------------------------------------------------------------- the context


@dataclass(frozen=True, slots=True)
class Context:
    """What a rule may read about one decision; ``None`` is a missing value. Build it with
    :func:`context`, or directly: values are checked against the catalogue on construction
    (``TypeError``/``ValueError``), which is what lets evaluation never raise."""

    locale: str | None = None
    segments: frozenset[str] | None = None
    greet_on_kiosk: bool | None = None
    zone: str | None = None
    trigger: str | None = None
    dwell_s: float | None = None
    kiosk: str | None = None
    visits_today: int | None = None
    channel: str | None = None
    hour: int | None = None
    weekday: int | None = None
    minute_of_day: int | None = None

    def __post_init__(self) -> None:
        # This runs once per decision: one fast expression, and only when it fails the slow
        # walk over the catalogue that names the field (the tests keep the two in step).
        if not (
            (self.locale is None or type(self.locale) is str)
            and (
                self.segments is None
                or (
                    type(self.segments) is frozenset
                    and all(type(item) is str for item in self.segments)
                )
            )
            and (self.greet_on_kiosk is None or type(self.greet_on_kiosk) is bool)
            and (self.zone is None or type(self.zone) is str)
            and (self.trigger is None or (type(self.trigger) is str and self.trigger in TRIGGERS))
            and (
                self.dwell_s is None
                or (type(self.dwell_s) in (int, float) and 0 <= self.dwell_s < math.inf)
            )
            and (self.kiosk is None or type(self.kiosk) is str)
            and (
                self.visits_today is None
                or (type(self.visits_today) is int and self.visits_today >= 0)
            )
            and (self.channel is None or (type(self.channel) is str and self.channel in CHANNELS))
            and (self.hour is None or (type(self.hour) is int and 0 <= self.hour <= 23))
            and (self.weekday is None or (type(self.weekday) is int and 0 <= self.weekday <= 6))
            and (
                self.minute_of_day is None
                or (type(self.minute_of_day) is int and 0 <= self.minute_of_day <= 1439)
            )
        ):
            for variable in _FIELDS:
                value = getattr(self, variable.field)
                if value is not None:
                    _check_field(variable, value)


_FIELDS: Final = tuple(dict.fromkeys(VARIABLES.values()))


def _check_field(variable: Variable, value: object) -> None:
    """Refuse a value of a context field that the catalogue does not allow (exact types)."""
    name, kind, got = f"Context.{variable.field}", variable.type.kind, type(value).__name__
    if kind == "list":
        if type(value) is not frozenset or not all(type(item) is str for item in value):
            raise TypeError(f"{name} must be a frozenset of str, got {got}")
    elif kind == "boolean":
        if type(value) is not bool:
            raise TypeError(f"{name} must be a bool, got {got}")
    elif kind == "string":
        if type(value) is not str:
            raise TypeError(f"{name} must be a str, got {got}")
        if variable.type.values is not None and value not in variable.type.values:
            raise ValueError(f"{name} must be one of {sorted(variable.type.values)}, got {value!r}")
    else:
        wanted = "an int" if variable.integer else "a number"
        if type(value) not in ((int,) if variable.integer else (int, float)):
            raise TypeError(f"{name} must be {wanted}, got {got}")
        number = cast("float", value)
        low, high = variable.low, variable.high
        if (
            not math.isfinite(number)
            or (low is not None and number < low)
            or (high is not None and number > high)
        ):
            raise ValueError(f"{name} must be {wanted} within {low}..{high}, got {value!r}")


class ProfileFacts(Protocol):
    """The part of a profile a rule may know (:class:`gateway.store.ProfileRecord` fits):
    never a name or an id."""

    @property
    def segments(self) -> Iterable[str]: ...

    @property
    def locale(self) -> str: ...

    @property
    def greet_on_kiosk(self) -> bool: ...


def context(
    *,
    profile: ProfileFacts | None = None,
    zone: str | None = None,
    trigger: str | None = None,
    dwell_s: float | None = None,
    kiosk: str | None = None,
    visits_today: int | None = None,
    channel: str | None = None,
    local_time: datetime | None = None,
) -> Context:
    """The context of one decision: the profile's locale, segments and greeting choice (no
    profile: all missing), the visit, and the hour, weekday and minute of ``local_time`` (the
    store's local time, read by the caller from its clock)."""
    hour = weekday = minute = None
    if local_time is not None:
        hour, weekday = local_time.hour, local_time.weekday()
        minute = hour * 60 + local_time.minute
    return Context(
        locale=None if profile is None else profile.locale,
        segments=None if profile is None else frozenset(profile.segments),
        greet_on_kiosk=None if profile is None else profile.greet_on_kiosk,
        zone=zone,
        trigger=trigger,
        dwell_s=dwell_s,
        kiosk=kiosk,
        visits_today=visits_today,
        channel=channel,
        hour=hour,
        weekday=weekday,
        minute_of_day=minute,
    )


_NOTHING: Final = Context()

# ---------------------------------------------------------------------------- compiled rules

_Get = Callable[[Context], Any]
_Test = Callable[[Context], bool]


class Rule:
    """A compiled rule: call it with a :class:`Context` for a bool. ``source`` is the canonical
    JSON, ``vars`` the canonical names of the variables it reads. Equal sources, equal rules."""

    __slots__ = ("_test", "source", "vars")

    def __init__(self, test: _Test, source: str, variables: frozenset[str]) -> None:
        self._test = test
        self.source = source
        self.vars = variables

    def __call__(self, ctx: Context) -> bool:
        return self._test(ctx)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Rule) and other.source == self.source

    def __hash__(self) -> int:
        return hash(self.source)

    def __repr__(self) -> str:
        return f"Rule({self.source!r})"


def compile_rule(rule: object) -> Rule:
    """Validate ``rule`` (parsed JSON) and compile it into closures; :class:`RuleError` says
    why and where a rule is refused. Nothing else is raised."""
    compiler = _Compiler()
    node = compiler.expression(rule, "rule", 0)
    test = _test(node, "rule")
    source = json.dumps(node.canon, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return Rule(test, source, frozenset(compiler.vars))


@dataclass(frozen=True, slots=True)
class _Node:
    """A compiled expression: its type, how to get its value, its canonical JSON; ``value``
    is a literal's value (a list's as a frozenset), ``name`` a variable's canonical name."""

    type: Type
    get: _Get
    canon: object
    kind: Literal["literal", "var", "op"]
    constant: bool
    value: Any = None
    name: str = ""


def _constant(value: Any) -> _Get:
    def get(ctx: Context) -> Any:
        return value

    return get


def _test(node: _Node, path: str) -> _Test:
    """The node as a condition: booleans only; a boolean variable is true when known and true."""
    if node.type.kind != "boolean":
        raise RuleError("type_mismatch", path, f"expected a condition (a boolean), got {node.type}")
    if node.kind != "var":
        return node.get
    get = node.get

    def test(ctx: Context) -> bool:
        return get(ctx) is True

    return test


_ORDER: Final[Mapping[str, Callable[[Any, Any], bool]]] = MappingProxyType(
    {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
)


class _Compiler:
    """One compilation: counts nodes, collects variables."""

    def __init__(self) -> None:
        self.nodes = 0
        self.vars: set[str] = set()

    def expression(self, raw: object, path: str, depth: int) -> _Node:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise RuleError("too_large", path, f"a rule has at most {MAX_NODES} nodes")
        if isinstance(raw, dict):
            return self.operation(raw, path, depth + 1)
        return _literal(raw, path)

    def operation(self, raw: dict[Any, Any], path: str, depth: int) -> _Node:
        if depth > MAX_DEPTH:
            raise RuleError("too_deep", path, f"operations nest at most {MAX_DEPTH} deep")
        if len(raw) != 1:
            raise RuleError(
                "unknown_operator",
                path,
                f"an operation is an object with exactly one key, got {len(raw)} keys",
            )
        [(op, args)] = raw.items()
        build = _BUILDERS.get(op) if isinstance(op, str) else None
        if build is None:
            raise RuleError("unknown_operator", path, _unknown("operator", op, OPERATORS))
        return build(self, op, args, path, depth)

    def arguments(
        self, op: str, args: object, here: str, depth: int, *, low: int, high: int | None
    ) -> list[_Node]:
        wanted = _count(low, high)
        if not isinstance(args, list):
            raise RuleError(
                "arity", here, f'"{op}" takes a list of {wanted} arguments, got {_describe(args)}'
            )
        if len(args) < low or (high is not None and len(args) > high):
            raise RuleError("arity", here, f'"{op}" takes {wanted} arguments, got {len(args)}')
        return [self.expression(arg, f"{here}/{i}", depth) for i, arg in enumerate(args)]

    # -- operators -------------------------------------------------------------------------

    def var(self, op: str, args: object, path: str, depth: int) -> _Node:
        here = f"{path}/{op}"
        default: _Node | None = None
        name_at = here
        if isinstance(args, str):
            name: object = args
        elif isinstance(args, list):
            if not 1 <= len(args) <= 2:
                raise RuleError(
                    "arity", here, f'"var" takes a name or [name, default], got {len(args)} items'
                )
            name, name_at = args[0], f"{here}/0"
            if len(args) == 2:
                default = _literal(args[1], f"{here}/1", "a default")
        else:
            raise RuleError(
                "unknown_var", here, f"a variable name is a string, got {_describe(args)}"
            )
        if not isinstance(name, str):
            raise RuleError(
                "unknown_var", name_at, f"a variable name is a string, got {_describe(name)}"
            )
        variable = VARIABLES.get(name)
        if variable is None:
            message = (
                f"unknown variable {_show(name)} (rules never see names or ids)"
                if name in _PERSONAL
                else _unknown("variable", name, VARIABLES)
            )
            raise RuleError("unknown_var", path, message)
        canonical = ALIASES.get(name, name)
        self.vars.add(canonical)
        field_get: _Get = attrgetter(variable.field)
        if default is None or default.type.kind == "null":
            return _Node(variable.type, field_get, {"var": canonical}, "var", False, name=canonical)
        _check_default(variable.type, canonical, default, f"{here}/1")
        fallback = default.value

        def get(ctx: Context) -> Any:
            value = field_get(ctx)
            return fallback if value is None else value

        canon = {"var": [canonical, default.canon]}
        return _Node(variable.type, get, canon, "var", False, name=canonical)

    def equality(self, op: str, args: object, path: str, depth: int) -> _Node:
        here = f"{path}/{op}"
        a, b = self.arguments(op, args, here, depth, low=2, high=2)
        _check_equality(op, a, b, here)
        canon = {op: [a.canon, b.canon]}
        fn: _Test
        if a.type.kind == "null" or b.type.kind == "null":
            other = b if a.type.kind == "null" else a
            get = other.get
            if op == "==":

                def fn(ctx: Context) -> bool:
                    return get(ctx) is None

            else:

                def fn(ctx: Context) -> bool:
                    return get(ctx) is not None

        elif {a.kind, b.kind} == {"var", "literal"}:
            var, lit = (a, b) if a.kind == "var" else (b, a)
            get, x = var.get, lit.value
            if op == "==":

                def fn(ctx: Context) -> bool:
                    return bool(get(ctx) == x)

            else:

                def fn(ctx: Context) -> bool:
                    v = get(ctx)
                    return v is not None and bool(v != x)

        else:
            ga, gb = a.get, b.get
            if op == "==":

                def fn(ctx: Context) -> bool:
                    x, y = ga(ctx), gb(ctx)
                    return x is not None and y is not None and bool(x == y)

            else:

                def fn(ctx: Context) -> bool:
                    x, y = ga(ctx), gb(ctx)
                    return x is not None and y is not None and bool(x != y)

        return _operation(canon, fn, (a, b))

    def order(self, op: str, args: object, path: str, depth: int) -> _Node:
        here = f"{path}/{op}"
        nodes = self.arguments(op, args, here, depth, low=2, high=3 if op in ("<", "<=") else 2)
        for i, node in enumerate(nodes):
            if node.type.kind != "number":
                raise RuleError(
                    "type_mismatch", f"{here}/{i}", f'"{op}" compares numbers, got {node.type}'
                )
        cmp = _ORDER[op]
        fn: _Test
        if len(nodes) == 2:
            a, b = nodes
            ga, gb, x = a.get, b.get, b.value if b.kind == "literal" else a.value
            if a.kind == "var" and b.kind == "literal":

                def fn(ctx: Context) -> bool:
                    v = ga(ctx)
                    return v is not None and cmp(v, x)

            elif a.kind == "literal" and b.kind == "var":

                def fn(ctx: Context) -> bool:
                    v = gb(ctx)
                    return v is not None and cmp(x, v)

            else:

                def fn(ctx: Context) -> bool:
                    v, w = ga(ctx), gb(ctx)
                    return v is not None and w is not None and cmp(v, w)

        else:
            lo, mid, hi = nodes
            if lo.kind == "literal" and hi.kind == "literal":
                get, low, high = mid.get, lo.value, hi.value

                def fn(ctx: Context) -> bool:
                    v = get(ctx)
                    return v is not None and cmp(low, v) and cmp(v, high)

            else:
                gl, gm, gh = lo.get, mid.get, hi.get

                def fn(ctx: Context) -> bool:
                    u, v, w = gl(ctx), gm(ctx), gh(ctx)
                    return (
                        u is not None
                        and v is not None
                        and w is not None
                        and cmp(u, v)
                        and cmp(v, w)
                    )

        return _operation({op: [n.canon for n in nodes]}, fn, nodes)

    def member(self, op: str, args: object, path: str, depth: int) -> _Node:
        here = f"{path}/{op}"
        needle, hay = self.arguments(op, args, here, depth, low=2, high=2)
        kind = hay.type.kind
        if kind == "list":
            if needle.type.kind not in _SCALARS:
                raise RuleError(
                    "type_mismatch",
                    f"{here}/0",
                    f'"in" looks for a string, number or boolean, got {needle.type}',
                )
            item = hay.type.item
            if item is not None and item != needle.type.kind:
                raise RuleError("type_mismatch", here, f"a {needle.type} is never in a {hay.type}")
            if hay.kind == "literal":
                for i, value in enumerate(cast("list[object]", hay.canon)):
                    _check_enum(needle.type, needle.name, value, f"{here}/1/{i}")
        elif kind == "string":
            if needle.type.kind != "string":
                raise RuleError(
                    "type_mismatch",
                    f"{here}/0",
                    f'"in" looks for a string in a string, got {needle.type}',
                )
        else:
            raise RuleError(
                "type_mismatch", f"{here}/1", f'"in" looks in a list or a string, got {hay.type}'
            )
        fn: _Test
        if kind == "list" and hay.kind == "literal":
            get, items = needle.get, hay.value

            def fn(ctx: Context) -> bool:
                return get(ctx) in items  # a missing needle (None) is in no list literal

        elif needle.kind == "literal":
            get, x = hay.get, needle.value

            def fn(ctx: Context) -> bool:
                h = get(ctx)
                return h is not None and x in h

        else:
            gn, gh = needle.get, hay.get

            def fn(ctx: Context) -> bool:
                n, h = gn(ctx), gh(ctx)
                return n is not None and h is not None and n in h

        return _operation({op: [needle.canon, hay.canon]}, fn, (needle, hay))

    def overlaps(self, op: str, args: object, path: str, depth: int) -> _Node:
        here = f"{path}/{op}"
        a, b = self.arguments(op, args, here, depth, low=2, high=2)
        for i, node in enumerate((a, b)):
            if node.type.kind != "list":
                raise RuleError(
                    "type_mismatch", f"{here}/{i}", f'"overlaps" compares lists, got {node.type}'
                )
        if a.type.item is not None and b.type.item is not None and a.type.item != b.type.item:
            raise RuleError("type_mismatch", here, f"a {a.type} never overlaps a {b.type}")
        fn: _Test
        if a.kind == "literal" or b.kind == "literal":
            lit, other = (a, b) if a.kind == "literal" else (b, a)
            items, get = lit.value, other.get

            def fn(ctx: Context) -> bool:
                h = get(ctx)
                return h is not None and not items.isdisjoint(h)

        else:
            ga, gb = a.get, b.get

            def fn(ctx: Context) -> bool:
                x, y = ga(ctx), gb(ctx)
                return x is not None and y is not None and not x.isdisjoint(y)

        return _operation({op: [a.canon, b.canon]}, fn, (a, b))

    def logic(self, op: str, args: object, path: str, depth: int) -> _Node:
        here = f"{path}/{op}"
        nodes = self.arguments(op, args, here, depth, low=1, high=None)
        tests = tuple(_test(node, f"{here}/{i}") for i, node in enumerate(nodes))
        fn: _Test
        if len(tests) == 1:
            fn = tests[0]
        elif len(tests) == 2:
            first, second = tests
            if op == "and":

                def fn(ctx: Context) -> bool:
                    return first(ctx) and second(ctx)

            else:

                def fn(ctx: Context) -> bool:
                    return first(ctx) or second(ctx)

        elif op == "and":

            def fn(ctx: Context) -> bool:
                return all(test(ctx) for test in tests)

        else:

            def fn(ctx: Context) -> bool:
                return any(test(ctx) for test in tests)

        return _operation({op: [n.canon for n in nodes]}, fn, nodes)

    def negation(self, op: str, args: object, path: str, depth: int) -> _Node:
        here = f"{path}/{op}"
        if isinstance(args, list):
            if len(args) != 1:
                raise RuleError("arity", here, f'"{op}" takes 1 argument, got {len(args)}')
            raw, at = args[0], f"{here}/0"
        else:
            raw, at = args, here
        node = self.expression(raw, at, depth)
        test = _test(node, at)

        def fn(ctx: Context) -> bool:
            return not test(ctx)

        return _operation({"!": [node.canon]}, fn, (node,))


_Builder = Callable[[_Compiler, str, object, str, int], _Node]
_BUILDERS: Final[Mapping[str, _Builder]] = MappingProxyType(
    {
        "var": _Compiler.var,
        "==": _Compiler.equality,
        "!=": _Compiler.equality,
        "<": _Compiler.order,
        "<=": _Compiler.order,
        ">": _Compiler.order,
        ">=": _Compiler.order,
        "in": _Compiler.member,
        "overlaps": _Compiler.overlaps,
        "and": _Compiler.logic,
        "or": _Compiler.logic,
        "!": _Compiler.negation,
        "not": _Compiler.negation,
    }
)
OPERATORS: Final = frozenset(_BUILDERS)


def _operation(canon: object, fn: _Test, children: Iterable[_Node]) -> _Node:
    """An operation's node; one over constants only is folded into its value."""
    if all(child.constant for child in children):
        return _Node(_BOOLEAN, _constant(fn(_NOTHING)), canon, "op", True)
    return _Node(_BOOLEAN, fn, canon, "op", False)


# ---------------------------------------------------------------------------- static checks


def _check_equality(op: str, a: _Node, b: _Node, here: str) -> None:
    ka, kb = a.type.kind, b.type.kind
    if "null" in (ka, kb):
        other, i = (b, 1) if ka == "null" else (a, 0)
        if other.type.kind != "null" and other.kind != "var":
            what = "an operation" if other.kind == "op" else f"a {other.type} literal"
            raise RuleError(
                "type_mismatch", f"{here}/{i}", f"only a variable can be null, not {what}"
            )
        return
    for i, node in enumerate((a, b)):
        if node.type.kind == "list":
            raise RuleError(
                "type_mismatch",
                f"{here}/{i}",
                f'"{op}" does not compare lists (use "in" or "overlaps")',
            )
    if ka != kb:
        raise RuleError("type_mismatch", here, f'"{op}" cannot compare a {ka} with a {kb}')
    if b.kind == "literal":
        _check_enum(a.type, a.name, b.value, f"{here}/1")
    if a.kind == "literal":
        _check_enum(b.type, b.name, a.value, f"{here}/0")


def _check_enum(type_: Type, name: str, value: object, path: str) -> None:
    """A string literal met by a variable of enumerated values must be one of them."""
    values = type_.values
    if values is not None and value not in values:
        one_of = ", ".join(json.dumps(v) for v in sorted(values))
        raise RuleError(
            "bad_literal", path, f"{_show(value)} is never a value of {name} ({one_of})"
        )


def _check_default(wanted: Type, name: str, default: _Node, path: str) -> None:
    got = default.type
    if got.kind != wanted.kind or (got.kind == "list" and got.item not in (None, wanted.item)):
        raise RuleError("type_mismatch", path, f"the default of {name} is a {wanted}, got {got}")
    _check_enum(wanted, name, default.value, path)


# ---------------------------------------------------------------------------- literals


def _literal(raw: object, path: str, what: str = "a literal") -> _Node:
    if isinstance(raw, list):
        if len(raw) > MAX_LIST:
            raise RuleError(
                "too_large", path, f"a list has at most {MAX_LIST} items, got {len(raw)}"
            )
        item: Kind | None = None
        for i, value in enumerate(raw):
            kind = _scalar(value, f"{path}/{i}", "a list item")
            if kind == "null":
                raise RuleError("bad_literal", f"{path}/{i}", "a list holds no null")
            if item is not None and kind != item:
                raise RuleError("bad_literal", f"{path}/{i}", f"a list of {item}s holds a {kind}")
            item = kind
        items = list(raw)
        return _Node(
            Type("list", item),
            _constant(frozenset(items)),
            items,
            "literal",
            True,
            frozenset(items),
        )
    kind = _scalar(raw, path, what)
    type_ = {"boolean": _BOOLEAN, "number": _NUMBER, "string": _STRING, "null": _NULL}[kind]
    return _Node(type_, _constant(raw), raw, "literal", True, raw)


def _scalar(value: object, path: str, what: str) -> Kind:
    """The kind of a scalar literal, after its limits; anything else is refused."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        if abs(value) > _MAX_INT:
            raise RuleError("bad_literal", path, "an integer lies within +-2**53")
        return "number"
    if isinstance(value, float):
        if not math.isfinite(value):
            raise RuleError("bad_literal", path, "a number is finite")
        return "number"
    if isinstance(value, str):
        if len(value) > MAX_STRING:
            raise RuleError(
                "too_large", path, f"a string has at most {MAX_STRING} characters, got {len(value)}"
            )
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise RuleError("bad_literal", path, "a string is valid Unicode") from None
        return "string"
    if isinstance(value, dict):
        raise RuleError("bad_literal", path, f"{what} is a literal, not an operation")
    if isinstance(value, list):
        raise RuleError("bad_literal", path, f"{what} is a string, number or boolean, not a list")
    raise RuleError("bad_literal", path, f"not a JSON value: {type(value).__name__}")


def _count(low: int, high: int | None) -> str:
    if high is None:
        return f"{low} or more"
    return str(low) if low == high else f"{low} or {high}"


def _describe(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return f"the string {_show(value)}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"


def _show(value: object) -> str:
    """A short, safe rendering of an untrusted value for a message."""
    if not isinstance(value, str):
        return _describe(value)
    text = json.dumps(value[:40], ensure_ascii=True)
    return text if len(value) <= 40 else text[:-1] + '..."'


def _unknown(what: str, name: object, known: Iterable[str]) -> str:
    if not isinstance(name, str):
        return f"unknown {what}: {_describe(name)}"
    message = f"unknown {what} {_show(name)}"
    close = difflib.get_close_matches(name[:64], list(known), n=1)
    return f"{message} (did you mean {json.dumps(close[0])}?)" if close else message


EVERYONE: Final = compile_rule(True)

# ---------------------------------------------------------------------------- reference


def evaluate(rule: object, ctx: Context) -> bool:
    """The reference interpreter: validates ``rule`` with :func:`compile_rule` (raising
    :class:`RuleError`), then walks the JSON directly. Slow and plain on purpose; the compiled
    :class:`Rule` must always agree with it."""
    compile_rule(rule)
    return _interpret(rule, ctx) is True


def _interpret(node: Any, ctx: Context) -> Any:
    if not isinstance(node, dict):
        return node
    [(op, args)] = node.items()
    if op == "var":
        if isinstance(args, str):
            name, default = args, None
        else:
            name, default = args[0], args[1] if len(args) == 2 else None
        value = getattr(ctx, VARIABLES[name].field)
        return default if value is None else value
    if op in ("!", "not"):
        return _interpret(args[0] if isinstance(args, list) else args, ctx) is not True
    values = [_interpret(arg, ctx) for arg in args]
    if op == "and":
        return all(value is True for value in values)
    if op == "or":
        return any(value is True for value in values)
    if op in ("==", "!="):
        if args[0] is None or args[1] is None:
            equal = values[0] is None and values[1] is None
        elif values[0] is None or values[1] is None:
            return False
        else:
            equal = values[0] == values[1]
        return equal if op == "==" else not equal
    if any(value is None for value in values):
        return False
    if op in _ORDER:
        return all(_ORDER[op](x, y) for x, y in itertools.pairwise(values))
    if op == "in":
        return values[0] in values[1]
    assert op == "overlaps"
    return any(item in values[1] for item in values[0])
