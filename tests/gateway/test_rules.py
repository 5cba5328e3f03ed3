"""The audience rule language: each operator, the semantics of missing values, every error
reason with the place it points at, the limits, the canonical source, and properties: compiled
rules agree with the reference interpreter and never raise, garbage is refused only with
RuleError, rules are pure.

Speed (not asserted; timing belongs in bench/): on the development machine (an empty Python
call: about 30 ns), best of ``timeit.repeat("rule(ctx)", number=1_000_000, repeat=5)`` with
the full CTX below: the 5-node ``{"and": [{"in": ["vip", {"var": "segments"}]},
{"var": "profile.greet_on_kiosk"}]}`` takes about 0.34 us per evaluation, the 7-node
``{"and": [{"in": ["vip", {"var": "segments"}]}, {">=": [{"var": "time.hour"}, 17]}]}`` about
0.37 us, a 12-node rule (overlaps, between and an enum equality under "and") about 1.1 us, the
bare ``true`` 0.19 us (the call itself). Compiling the 12-node rule takes about 60 us; building
a full Context, checks included, a few us.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from datetime import datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gateway.rules
from gateway.errors import PayloadError
from gateway.rules import (
    CHANNELS,
    EVERYONE,
    MAX_DEPTH,
    MAX_LIST,
    MAX_NODES,
    MAX_STRING,
    OPERATORS,
    REASONS,
    TRIGGERS,
    VARIABLES,
    Context,
    Rule,
    RuleError,
    compile_rule,
    context,
    evaluate,
)
from gateway.store import ProfileRecord

CTX = Context(
    locale="fr-BE",
    segments=frozenset({"vip", "coffee"}),
    greet_on_kiosk=True,
    zone="bakery",
    trigger="dwell",
    dwell_s=42.5,
    kiosk="k1",
    visits_today=2,
    channel="kiosk",
    hour=18,
    weekday=4,
    minute_of_day=18 * 60 + 5,
)
NOTHING = Context()


def check(rule: object, ctx: Context = CTX) -> bool:
    """The compiled rule's answer, after checking the reference interpreter agrees."""
    answer = compile_rule(rule)(ctx)
    assert answer is evaluate(rule, ctx)
    return answer


def var(name: str, *default: object) -> dict[str, object]:
    return {"var": [name, *default]} if default else {"var": name}


# ---------------------------------------------------------------------------- operators


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        (True, True),
        (False, False),
        ({"==": [var("visit.zone"), "bakery"]}, True),
        ({"==": ["bakery", var("visit.zone")]}, True),
        ({"==": [var("visit.zone"), "tills"]}, False),
        ({"==": [var("visit.visits_today"), 2.0]}, True),  # 2 == 2.0
        ({"==": [var("profile.greet_on_kiosk"), True]}, True),
        ({"==": [var("visit.zone"), var("visit.zone")]}, True),
        ({"==": [1, 1]}, True),
        ({"!=": [var("visit.zone"), "tills"]}, True),
        ({"!=": [var("visit.zone"), "bakery"]}, False),
        ({"!=": [var("time.hour"), var("time.weekday")]}, True),
        ({"<": [var("time.hour"), 19]}, True),
        ({"<": [var("time.hour"), 18]}, False),
        ({"<=": [var("time.hour"), 18]}, True),
        ({">": [var("visit.dwell_s"), 42]}, True),
        ({">": [50, var("visit.dwell_s")]}, True),
        ({">=": [var("visit.dwell_s"), 42.5]}, True),
        ({">=": [var("visit.dwell_s"), var("visit.visits_today")]}, True),
        ({"<": [17, var("time.hour"), 19]}, True),
        ({"<": [18, var("time.hour"), 19]}, False),
        ({"<=": [18, var("time.hour"), 18]}, True),
        ({"<=": [var("time.weekday"), var("time.hour"), 20]}, True),
        ({"in": ["vip", var("segments")]}, True),
        ({"in": ["baby", var("profile.segments")]}, False),
        ({"in": [var("visit.zone"), ["tills", "bakery"]]}, True),
        ({"in": [var("time.weekday"), [5, 6]]}, False),
        ({"in": [var("channel"), ["kiosk"]]}, True),
        ({"in": [var("visit.zone"), []]}, False),
        ({"in": ["fr", var("profile.locale")]}, True),  # substring
        ({"in": ["", var("profile.locale")]}, True),
        ({"in": ["FR", var("profile.locale")]}, False),  # case-sensitive
        ({"in": [var("visit.kiosk"), "k1,k2"]}, True),
        ({"overlaps": [var("segments"), ["baby", "vip"]]}, True),
        ({"overlaps": [["baby", "new"], var("segments")]}, False),
        ({"overlaps": [var("segments"), []]}, False),
        ({"overlaps": [var("segments"), var("segments")]}, True),
        ({"and": [True, {"in": ["vip", var("segments")]}]}, True),
        ({"and": [True, False]}, False),
        ({"and": [True, True, True, False]}, False),
        ({"and": [True]}, True),
        ({"or": [False, {"in": ["vip", var("segments")]}]}, True),
        ({"or": [False, False, False]}, False),
        ({"!": [False]}, True),
        ({"!": False}, True),
        ({"not": {"==": [var("channel"), "phone"]}}, True),
        (var("profile.greet_on_kiosk"), True),
        ({"!": var("profile.greet_on_kiosk")}, False),
        ({"==": [{"<": [1, 2]}, True]}, True),
    ],
)
def test_operators(rule: object, expected: bool) -> None:
    assert check(rule) is expected


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        # Unknown never qualifies: every comparison with a missing value is false, != too.
        ({"==": [var("visit.zone"), "bakery"]}, False),
        ({"!=": [var("visit.zone"), "bakery"]}, False),
        ({"!=": [var("visit.zone"), var("visit.kiosk")]}, False),
        ({"<": [var("time.hour"), 19]}, False),
        ({">=": [var("visit.dwell_s"), 0]}, False),
        ({"<=": [0, var("time.hour"), 23]}, False),
        ({"in": ["vip", var("segments")]}, False),
        ({"in": [var("visit.zone"), ["bakery"]]}, False),
        ({"in": ["", var("profile.locale")]}, False),
        ({"overlaps": [var("segments"), ["vip"]]}, False),
        ({"==": [var("profile.greet_on_kiosk"), False]}, False),
        (var("profile.greet_on_kiosk"), False),
        # Negating is how a rule includes the unknown.
        ({"!": {"==": [var("visit.zone"), "bakery"]}}, True),
        ({"!": var("profile.greet_on_kiosk")}, True),
        # The null literal asks whether a value is missing.
        ({"==": [var("visit.kiosk"), None]}, True),
        ({"==": [None, var("visit.kiosk")]}, True),
        ({"!=": [var("visit.kiosk"), None]}, False),
        ({"==": [None, None]}, True),
        ({"!=": [None, None]}, False),
        # A default stands in for the missing value.
        ({"==": [var("visit.zone", "bakery"), "bakery"]}, True),
        ({">=": [var("visit.dwell_s", 0), 0]}, True),
        ({"==": [var("visit.kiosk", "k9"), None]}, False),
        ({"in": ["vip", var("segments", ["vip"])]}, True),
        ({"overlaps": [var("segments", []), ["vip"]]}, False),
        (var("profile.greet_on_kiosk", True), True),
    ],
)
def test_missing_values(rule: object, expected: bool) -> None:
    assert check(rule, NOTHING) is expected


def test_a_known_value_is_not_null() -> None:
    assert check({"==": [var("visit.kiosk"), None]}) is False
    assert check({"!=": [var("visit.kiosk"), None]}) is True


def test_everyone() -> None:
    assert EVERYONE(NOTHING) is True
    assert EVERYONE.source == "true"
    assert EVERYONE.vars == frozenset()


def test_vars_are_canonical_names() -> None:
    rule = compile_rule(
        {"and": [{"in": ["vip", var("segments")]}, {"<": [var("time.hour", 0), 12]}, True]}
    )
    assert rule.vars == {"profile.segments", "time.hour"}


def test_compiled_once_the_json_is_not_read_again() -> None:
    raw: dict[str, Any] = {"in": [var("visit.zone"), ["bakery"]]}
    rule = compile_rule(raw)
    raw["in"][1].append("tills")
    raw["in"][0]["var"] = "visit.kiosk"

    assert rule(Context(zone="tills", kiosk="tills")) is False
    assert rule(Context(zone="bakery")) is True


def test_rules_compare_by_source() -> None:
    a = compile_rule({"not": {"var": ["profile.greet_on_kiosk"]}})
    b = compile_rule({"!": [var("profile.greet_on_kiosk")]})
    assert a == b
    assert hash(a) == hash(b)
    assert a != compile_rule(True)
    assert repr(b) == """Rule('{"!":[{"var":"profile.greet_on_kiosk"}]}')"""


# ---------------------------------------------------------------------------- canonical source


@pytest.mark.parametrize(
    ("rule", "source"),
    [
        (True, "true"),
        ({"not": {"==": [1, 1]}}, '{"!":[{"==":[1,1]}]}'),
        ({"!": [{"==": [1, 1.0]}]}, '{"!":[{"==":[1,1.0]}]}'),
        ({"in": ["vip", {"var": ["segments"]}]}, '{"in":["vip",{"var":"profile.segments"}]}'),
        ({"==": [{"var": ["visit.kiosk", None]}, "k1"]}, '{"==":[{"var":"visit.kiosk"},"k1"]}'),
        (
            {"==": [{"var": ["visit.zone", "bakery"]}, "café"]},
            '{"==":[{"var":["visit.zone","bakery"]},"café"]}',
        ),
        (
            {"overlaps": [var("segments", []), []]},
            '{"overlaps":[{"var":["profile.segments",[]]},[]]}',
        ),
    ],
)
def test_canonical_source(rule: object, source: str) -> None:
    compiled = compile_rule(rule)
    assert compiled.source == source
    assert compile_rule(json.loads(source)).source == source


# ---------------------------------------------------------------------------- errors

SIXTEEN_NOTS: object = var("profile.greet_on_kiosk")
for _ in range(MAX_DEPTH - 1):
    SIXTEEN_NOTS = {"!": SIXTEEN_NOTS}


ERRORS: list[tuple[object, str, str]] = [
    # unknown_operator
    (
        {"and": [True, {"if": [True, True, False]}]},
        "unknown_operator",
        'rule/and/1: unknown operator "if"',
    ),
    (
        {"or": [{"nt": True}]},
        "unknown_operator",
        'rule/or/0: unknown operator "nt" (did you mean "not"?)',
    ),
    (
        {},
        "unknown_operator",
        "rule: an operation is an object with exactly one key, got 0 keys",
    ),
    (
        {"==": [1, 1], "!=": [1, 2]},
        "unknown_operator",
        "rule: an operation is an object with exactly one key, got 2 keys",
    ),
    ({1: [True]}, "unknown_operator", "rule: unknown operator: a number"),
    # unknown_var
    (
        {"and": [True, {"in": [var("profile.first_name"), ["Ann"]]}]},
        "unknown_var",
        'rule/and/1/in/0: unknown variable "profile.first_name" (rules never see names or ids)',
    ),
    (
        {"==": [var("visit.zon"), "bakery"]},
        "unknown_var",
        'rule/==/0: unknown variable "visit.zon" (did you mean "visit.zone"?)',
    ),
    ({"==": [var(""), 1]}, "unknown_var", 'rule/==/0: unknown variable ""'),
    ({"!": {"var": 3}}, "unknown_var", "rule/!/var: a variable name is a string, got a number"),
    (
        {"!": {"var": [None]}},
        "unknown_var",
        "rule/!/var/0: a variable name is a string, got null",
    ),
    # type_mismatch
    (
        {"==": [var("visit.zone"), 3]},
        "type_mismatch",
        'rule/==: "==" cannot compare a string with a number',
    ),
    (
        {"!=": [var("time.hour"), True]},
        "type_mismatch",
        'rule/!=: "!=" cannot compare a number with a boolean',
    ),
    (
        {"<": [var("profile.locale"), "m"]},
        "type_mismatch",
        'rule/</0: "<" compares numbers, got string',
    ),
    (
        {"<=": [1, var("visit.zone"), 3]},
        "type_mismatch",
        'rule/<=/1: "<=" compares numbers, got string',
    ),
    (
        {">": [var("time.hour"), None]},
        "type_mismatch",
        'rule/>/1: ">" compares numbers, got null',
    ),
    (
        {"in": ["vip", 3]},
        "type_mismatch",
        'rule/in/1: "in" looks in a list or a string, got number',
    ),
    (
        {"in": [var("segments"), ["vip"]]},
        "type_mismatch",
        'rule/in/0: "in" looks for a string, number or boolean, got list of strings',
    ),
    (
        {"in": [var("time.hour"), var("segments")]},
        "type_mismatch",
        "rule/in: a number is never in a list of strings",
    ),
    (
        {"in": [3, var("profile.locale")]},
        "type_mismatch",
        'rule/in/0: "in" looks for a string in a string, got number',
    ),
    (
        {"overlaps": [var("segments"), "vip"]},
        "type_mismatch",
        'rule/overlaps/1: "overlaps" compares lists, got string',
    ),
    (
        {"overlaps": [var("segments"), [1, 2]]},
        "type_mismatch",
        "rule/overlaps: a list of strings never overlaps a list of numbers",
    ),
    (
        {"==": [var("segments"), ["vip"]]},
        "type_mismatch",
        'rule/==/0: "==" does not compare lists (use "in" or "overlaps")',
    ),
    (
        {"==": ["k1", None]},
        "type_mismatch",
        "rule/==/0: only a variable can be null, not a string literal",
    ),
    (
        {"==": [None, {"!": True}]},
        "type_mismatch",
        "rule/==/1: only a variable can be null, not an operation",
    ),
    ("yes", "type_mismatch", "rule: expected a condition (a boolean), got string"),
    (1, "type_mismatch", "rule: expected a condition (a boolean), got number"),
    (None, "type_mismatch", "rule: expected a condition (a boolean), got null"),
    (var("visit.zone"), "type_mismatch", "rule: expected a condition (a boolean), got string"),
    (
        {"and": [True, var("visit.zone")]},
        "type_mismatch",
        "rule/and/1: expected a condition (a boolean), got string",
    ),
    ({"!": [1]}, "type_mismatch", "rule/!/0: expected a condition (a boolean), got number"),
    (
        {"==": [var("time.hour", "noon"), 12]},
        "type_mismatch",
        "rule/==/0/var/1: the default of time.hour is a number, got string",
    ),
    (
        {"in": ["a", var("segments", [1])]},
        "type_mismatch",
        "rule/in/1/var/1: the default of profile.segments is a list of strings, "
        "got list of numbers",
    ),
    # arity
    ({"==": [1]}, "arity", 'rule/==: "==" takes 2 arguments, got 1'),
    ({"==": 1}, "arity", 'rule/==: "==" takes a list of 2 arguments, got a number'),
    ({">": [1, 2, 3]}, "arity", 'rule/>: ">" takes 2 arguments, got 3'),
    ({"<": [1, 2, 3, 4]}, "arity", 'rule/<: "<" takes 2 or 3 arguments, got 4'),
    ({"and": []}, "arity", 'rule/and: "and" takes 1 or more arguments, got 0'),
    ({"or": True}, "arity", 'rule/or: "or" takes a list of 1 or more arguments, got a boolean'),
    ({"!": [True, False]}, "arity", 'rule/!: "!" takes 1 argument, got 2'),
    ({"not": []}, "arity", 'rule/not: "not" takes 1 argument, got 0'),
    (
        {"!": {"var": []}},
        "arity",
        'rule/!/var: "var" takes a name or [name, default], got 0 items',
    ),
    # too_deep
    ({"!": SIXTEEN_NOTS}, "too_deep", "rule" + "/!" * 16 + ": operations nest at most 16 deep"),
    # too_large
    (
        {"or": [True] * MAX_NODES},
        "too_large",
        f"rule/or/{MAX_NODES - 1}: a rule has at most 256 nodes",
    ),
    (
        {"in": [var("visit.zone"), ["z"] * (MAX_LIST + 1)]},
        "too_large",
        "rule/in/1: a list has at most 256 items, got 257",
    ),
    (
        {"==": [var("visit.zone"), "z" * (MAX_STRING + 1)]},
        "too_large",
        "rule/==/1: a string has at most 256 characters, got 257",
    ),
    (
        {"in": [var("visit.zone"), ["a", "z" * (MAX_STRING + 1)]]},
        "too_large",
        "rule/in/1/1: a string has at most 256 characters, got 257",
    ),
    # bad_literal
    (
        {"in": [var("channel"), ["kiosk", "web"]]},
        "bad_literal",
        'rule/in/1/1: "web" is never a value of channel ("kiosk", "phone")',
    ),
    (
        {"==": ["dwel", var("visit.trigger")]},
        "bad_literal",
        'rule/==/0: "dwel" is never a value of visit.trigger '
        '("app_open", "dwell", "entered", "near_kiosk", "signal")',
    ),
    (
        {"==": [var("channel", "web"), "kiosk"]},
        "bad_literal",
        'rule/==/0/var/1: "web" is never a value of channel ("kiosk", "phone")',
    ),
    ({"<": [var("time.hour"), math.nan]}, "bad_literal", "rule/</1: a number is finite"),
    ({"<": [var("time.hour"), -math.inf]}, "bad_literal", "rule/</1: a number is finite"),
    (
        {"<": [var("time.hour"), 2**53 + 1]},
        "bad_literal",
        "rule/</1: an integer lies within +-2**53",
    ),
    (
        {"in": [1, [[1]]]},
        "bad_literal",
        "rule/in/1/0: a list item is a string, number or boolean, not a list",
    ),
    (
        {"in": [1, [1, var("time.hour")]]},
        "bad_literal",
        "rule/in/1/1: a list item is a literal, not an operation",
    ),
    ({"in": [1, [1, None]]}, "bad_literal", "rule/in/1/1: a list holds no null"),
    ({"in": [1, [1, "1"]]}, "bad_literal", "rule/in/1/1: a list of numbers holds a string"),
    ({"in": [1, (1,)]}, "bad_literal", "rule/in/1: not a JSON value: tuple"),
    (
        {"==": [var("visit.zone"), b"bakery"]},
        "bad_literal",
        "rule/==/1: not a JSON value: bytes",
    ),
    (
        {"==": [var("visit.zone"), "\ud800"]},
        "bad_literal",
        "rule/==/1: a string is valid Unicode",
    ),
    (
        {"==": [var("visit.zone", {"var": "visit.kiosk"}), "k1"]},
        "bad_literal",
        "rule/==/0/var/1: a default is a literal, not an operation",
    ),
]


@pytest.mark.parametrize(("rule", "reason", "message"), ERRORS)
def test_errors_name_the_reason_and_the_place(rule: object, reason: str, message: str) -> None:
    with pytest.raises(RuleError) as caught:
        compile_rule(rule)

    err = caught.value
    assert err.reason == reason
    assert f"{err.path}: {err.message}" == message
    assert str(err) == f"{reason}: {message}"
    assert isinstance(err, PayloadError)


def test_every_reason_is_tested() -> None:
    assert {reason for _, reason, _ in ERRORS} == REASONS


def test_the_first_error_in_document_order_is_reported() -> None:
    with pytest.raises(RuleError) as caught:
        compile_rule({"and": [{"==": [var("nope"), 1]}, {"zz": []}]})
    assert caught.value.path == "rule/and/0/==/0"


# ---------------------------------------------------------------------------- limits


def nested(depth: int) -> object:
    """``depth`` operations nested: ``!`` around ``!`` ... around a variable."""
    rule: object = var("profile.greet_on_kiosk")
    for _ in range(depth - 1):
        rule = {"!": [rule]}
    return rule


def test_depth_limit() -> None:
    assert check(nested(MAX_DEPTH), NOTHING) is (MAX_DEPTH % 2 == 0)
    with pytest.raises(RuleError, match="too_deep") as caught:
        compile_rule(nested(MAX_DEPTH + 1))
    assert caught.value.path == "rule" + "/!/0" * MAX_DEPTH


def test_node_limit() -> None:
    # "or" plus 255 literals is 256 nodes; one more is too many.
    assert check({"or": [False] * (MAX_NODES - 2) + [True]}) is True
    with pytest.raises(RuleError, match="too_large"):
        compile_rule({"or": [False] * (MAX_NODES - 1) + [True]})
    # Each variable is a node, and its operation another.
    at_limit = {"or": [{"==": [var("visit.zone"), "z"]}] * ((MAX_NODES - 1) // 3)}
    assert compile_rule(at_limit).vars == {"visit.zone"}


def test_list_and_string_limits() -> None:
    longest = ["z" * MAX_STRING] * MAX_LIST
    assert check({"in": [var("visit.zone"), longest]}) is False
    assert check({"in": [var("visit.zone", "z" * MAX_STRING), longest]}, NOTHING) is True
    assert check({"<": [-(2**53), var("time.hour"), 2**53]}) is True


def test_hostile_nesting_is_refused_without_recursing() -> None:
    deep: object = True
    for _ in range(100_000):
        deep = {"!": deep}
    with pytest.raises(RuleError, match="too_deep"):
        compile_rule(deep)

    deep_list: object = 1
    for _ in range(100_000):
        deep_list = [deep_list]
    with pytest.raises(RuleError, match="bad_literal"):
        compile_rule({"in": [1, deep_list]})

    with pytest.raises(RuleError, match="too_large"):
        compile_rule({"and": [True] * 1_000_000})


# ---------------------------------------------------------------------------- context


def test_context_from_a_profile_never_reads_a_name() -> None:
    profile = ProfileRecord(
        shopper_id="s-1",
        first_name="Ann",
        nickname="Annie",
        segments=["vip", "vip", "tea"],
        locale="nl-BE",
        greet_on_kiosk=True,
    )
    ctx = context(
        profile=profile,
        zone="tea",
        trigger="near_kiosk",
        kiosk="k2",
        channel="kiosk",
        local_time=datetime(2024, 3, 2, 7, 45),  # a Saturday
    )

    assert ctx == Context(
        locale="nl-BE",
        segments=frozenset({"vip", "tea"}),
        greet_on_kiosk=True,
        zone="tea",
        trigger="near_kiosk",
        kiosk="k2",
        channel="kiosk",
        hour=7,
        weekday=5,
        minute_of_day=7 * 60 + 45,
    )
    assert not {"Ann", "Annie", "s-1"} & {str(value) for value in dataclasses.astuple(ctx)}
    assert context() == NOTHING


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("locale", 3, TypeError),
        ("segments", ["vip"], TypeError),
        ("segments", frozenset({1}), TypeError),
        ("greet_on_kiosk", 1, TypeError),
        ("trigger", "walked_by", ValueError),
        ("channel", "web", ValueError),
        ("dwell_s", "3", TypeError),
        ("dwell_s", True, TypeError),
        ("dwell_s", -1.0, ValueError),
        ("dwell_s", math.nan, ValueError),
        ("dwell_s", math.inf, ValueError),
        ("visits_today", 1.0, TypeError),
        ("hour", 24, ValueError),
        ("weekday", -1, ValueError),
        ("minute_of_day", 1440, ValueError),
        ("kiosk", b"k1", TypeError),
    ],
)
def test_context_refuses_values_outside_the_catalogue(
    field: str, value: object, error: type[Exception]
) -> None:
    with pytest.raises(error, match=f"Context.{field} "):
        Context(**{field: value})  # type: ignore[arg-type]


JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 1500),
    st.floats(),
    st.sampled_from([*TRIGGERS, *CHANNELS, "", "x"]),
    st.frozensets(st.sampled_from(["vip", 1])),
    st.lists(st.text(max_size=2), max_size=2),
)
FIELDS = sorted({v.field for v in VARIABLES.values()})


@given(values=st.fixed_dictionaries({}, optional=dict.fromkeys(FIELDS, JUNK)))
def test_context_fast_check_agrees_with_the_catalogue(values: dict[str, object]) -> None:
    """Context checks its fields in one fast expression and falls back to a walk over the
    catalogue to name the culprit: a value refused by one is refused by the other."""
    refused_by_catalogue = False
    for variable in {v.field: v for v in VARIABLES.values()}.values():
        value = values.get(variable.field)
        if value is not None:
            try:
                gateway.rules._check_field(variable, value)
            except (TypeError, ValueError):
                refused_by_catalogue = True
    try:
        Context(**values)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        assert refused_by_catalogue
    else:
        assert not refused_by_catalogue


def test_the_reference_lists_every_variable() -> None:
    doc = gateway.rules.__doc__ or ""
    for name, variable in VARIABLES.items():
        row = next(line for line in doc.splitlines() if line.startswith(f"``{name}``"))
        assert row.split(maxsplit=1)[1].startswith(str(variable.type)), name
    for op in OPERATORS:
        assert f'{{"{op}": ' in doc, op


# ---------------------------------------------------------------------------- properties

SEGMENTS = ["vip", "new", "coffee", "baby"]
POOLS: dict[str, list[str]] = {
    "profile.locale": ["en", "fr-BE", "nl-BE", "fr"],
    "visit.zone": ["entrance", "bakery", "tills"],
    "visit.kiosk": ["k1", "k2"],
    "visit.trigger": list(TRIGGERS),
    "channel": list(CHANNELS),
}
NUMBER_VARS = ["visit.dwell_s", "visit.visits_today", "time.hour", "time.weekday"]
NUMBER_VARS += ["time.minute_of_day"]

contexts = st.builds(
    Context,
    locale=st.none() | st.sampled_from(POOLS["profile.locale"]),
    segments=st.none() | st.frozensets(st.sampled_from(SEGMENTS)),
    greet_on_kiosk=st.none() | st.booleans(),
    zone=st.none() | st.sampled_from(POOLS["visit.zone"]),
    trigger=st.none() | st.sampled_from(TRIGGERS),
    dwell_s=st.none() | st.integers(0, 100) | st.floats(0, 100),
    kiosk=st.none() | st.sampled_from(POOLS["visit.kiosk"]),
    visits_today=st.none() | st.integers(0, 4),
    channel=st.none() | st.sampled_from(CHANNELS),
    hour=st.none() | st.integers(0, 23),
    weekday=st.none() | st.integers(0, 6),
    minute_of_day=st.none() | st.integers(0, 1439),
)
numbers = st.integers(-2, 30) | st.floats(-2, 100, allow_nan=False)


def variable(name: str, default: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    """A variable in any of its spellings, maybe with a default."""
    return st.one_of(
        st.just({"var": name}),
        st.just({"var": [name]}),
        st.just({"var": [name, None]}),
        default.map(lambda d: {"var": [name, d]}),
    )


def strings() -> st.SearchStrategy[object]:
    return st.sampled_from(sorted(POOLS)).flatmap(
        lambda name: st.tuples(
            variable(name, st.sampled_from(POOLS[name])),
            st.sampled_from(POOLS[name]) | variable(name, st.sampled_from(POOLS[name])),
        )
    )


def number_expr() -> st.SearchStrategy[object]:
    return numbers | st.sampled_from(NUMBER_VARS).flatmap(lambda name: variable(name, numbers))


segments_var = variable("segments", st.lists(st.sampled_from(SEGMENTS), max_size=3)) | variable(
    "profile.segments", st.lists(st.sampled_from(SEGMENTS), max_size=3)
)
segment_list = st.lists(st.sampled_from(SEGMENTS), max_size=4)
greet = variable("profile.greet_on_kiosk", st.booleans())


def swap(pair: tuple[object, object], flip: bool) -> list[object]:
    return [pair[1], pair[0]] if flip else [pair[0], pair[1]]


leaves = st.one_of(
    st.booleans(),
    greet,
    st.builds(
        lambda op, pair, flip: {op: swap(pair, flip)},
        st.sampled_from(["==", "!="]),
        strings(),
        st.booleans(),
    ),
    st.builds(
        lambda op, a, b: {op: [a, b]},
        st.sampled_from(["==", "!=", "<", "<=", ">", ">="]),
        number_expr(),
        number_expr(),
    ),
    st.builds(
        lambda op, a, b, c: {op: [a, b, c]},
        st.sampled_from(["<", "<="]),
        number_expr(),
        number_expr(),
        number_expr(),
    ),
    st.builds(
        lambda op, name, flip: {op: swap(({"var": name}, None), flip)},
        st.sampled_from(["==", "!="]),
        st.sampled_from(sorted(VARIABLES)),
        st.booleans(),
    ),
    st.builds(lambda op, v, b: {op: [v, b]}, st.sampled_from(["==", "!="]), greet, st.booleans()),
    st.builds(lambda s, v: {"in": [s, v]}, st.sampled_from(SEGMENTS), segments_var),
    st.sampled_from(sorted(POOLS)).flatmap(
        lambda name: st.builds(
            lambda needle, hay: {"in": [needle, hay]},
            variable(name, st.sampled_from(POOLS[name])) | st.sampled_from(POOLS[name]),
            st.lists(st.sampled_from(POOLS[name]), max_size=3),
        )
    ),
    st.builds(
        lambda needle, hay: {"in": [needle, hay]},
        number_expr(),
        st.lists(st.integers(0, 24), max_size=4),
    ),
    st.builds(
        lambda needle, hay: {"in": [needle, hay]},
        st.sampled_from(["fr", "en", "-", "", "BE"]) | variable("visit.zone", st.just("tills")),
        variable("profile.locale", st.just("en")) | st.sampled_from(["fr-BE", "en"]),
    ),
    st.builds(
        lambda a, b, flip: {"overlaps": swap((a, b), flip)},
        segments_var,
        segments_var | segment_list,
        st.booleans(),
    ),
)


def compounds(children: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    return st.one_of(
        st.builds(
            lambda op, cs: {op: cs},
            st.sampled_from(["and", "or"]),
            st.lists(children, min_size=1, max_size=3),
        ),
        st.builds(lambda op, c: {op: c}, st.sampled_from(["!", "not"]), children),
        st.builds(lambda op, c: {op: [c]}, st.sampled_from(["!", "not"]), children),
        st.builds(
            lambda op, a, b: {op: [a, b]},
            st.sampled_from(["==", "!="]),
            children,
            children | st.booleans(),
        ),
    )


def nest(levels: int) -> st.SearchStrategy[object]:
    return leaves if levels == 0 else leaves | compounds(nest(levels - 1))


NESTED = nest(3)


@st.composite
def well_typed_rules(draw: st.DrawFn) -> object:
    """Rules that compile, nested three levels deep (a composite, for a short repr)."""
    return draw(NESTED)


rules = well_typed_rules()

SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(rule=rules, ctxs=st.lists(contexts, min_size=1, max_size=4))
def test_compiled_rules_agree_with_the_reference(rule: object, ctxs: list[Context]) -> None:
    compiled = compile_rule(rule)
    assert isinstance(compiled, Rule)
    for ctx in ctxs:
        answer = compiled(ctx)
        assert type(answer) is bool
        assert answer is evaluate(rule, ctx)
        assert compiled(ctx) is answer  # pure: the same context, the same answer
        assert compiled(copy.copy(ctx)) is answer


@SETTINGS
@given(rule=rules, ctx=contexts)
def test_canonical_source_round_trips(rule: object, ctx: Context) -> None:
    compiled = compile_rule(rule)
    again = compile_rule(json.loads(compiled.source))

    assert again.source == compiled.source
    assert again.vars == compiled.vars
    assert again(ctx) is compiled(ctx)
    assert evaluate(json.loads(compiled.source), ctx) is compiled(ctx)


KEYS = st.sampled_from([*sorted(OPERATORS), "if", "+", "some", "missing", ""]) | st.text(max_size=4)
NAMES = st.sampled_from([*sorted(VARIABLES), "profile.first_name", "visit", ""])
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=6),
    st.sampled_from(["vip", "kiosk", "dwell", "fr", "x" * (MAX_STRING + 1), "\udcff"]),
    NAMES,
    st.sampled_from([b"x", (1,), frozenset({1}), 1j]),
)
# Well-typed rules among the leaves, so garbage also reaches deep into valid structure.
garbage = st.recursive(
    SCALARS | rules,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.builds(lambda k, v: {k: v}, KEYS, children),
        st.builds(lambda k, v: {k: v}, KEYS, st.lists(children, max_size=3)),
        st.builds(lambda name: {"var": name}, NAMES),
        st.dictionaries(KEYS, children, max_size=2),
    ),
    max_leaves=25,
)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rule=garbage, ctx=contexts)
def test_garbage_is_compiled_or_refused_with_rule_error(rule: object, ctx: Context) -> None:
    try:
        compiled = compile_rule(rule)
    except RuleError as err:
        refused: RuleError | None = err
    else:
        refused = None
        assert compiled(ctx) is evaluate(rule, ctx)
        assert compile_rule(json.loads(compiled.source)).source == compiled.source
    if refused is not None:
        assert refused.reason in REASONS
        assert refused.path.startswith("rule")
