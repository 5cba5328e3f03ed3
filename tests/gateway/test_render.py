"""Tests of rendering: the shipped cards show what the decision allows and hold the price rule,
escape what they show and speak the card's language; HQ templates are compiled once per
version, used by id, and refused with a reason when they break the sandbox or its limits."""

from __future__ import annotations

import html
import logging
import re
from pathlib import Path

import pytest
from jinja2.exceptions import SecurityError, TemplateNotFound, UndefinedError
from markupsafe import Markup

from gateway import render
from gateway.errors import MomentsError, RenderError
from gateway.render import (
    MAX_OUTPUT_BYTES,
    MAX_SOURCE_BYTES,
    Renderer,
    Scalar,
    card_values,
    check_template,
    templates_dir,
    templates_from,
)
from gateway.store import Database, OfferRecord
from gateway.store.records import TemplateRecord, Variant

OFFER = "kiosk/offer.html.j2"
GENERIC = "kiosk/generic.html.j2"
PAGE = "kiosk/page.html.j2"
PHONE = "phone/card.html.j2"
CARDS = [OFFER, GENERIC, PHONE]

BEANS = OfferRecord(
    offer_id="espresso-beans-1kg",
    title="Espresso beans, 1 kg",
    body="Our single-origin roast.",
    regular_price=16.90,
    price=12.90,
    segments=["coffee-lover"],
)


def card(offer: OfferRecord | None) -> dict[str, Scalar]:
    """The plain values a kiosk card gets for an offer, as the kiosk director passes them."""
    if offer is None:
        return {"offer_id": None}
    return {
        "offer_id": offer.offer_id,
        "title": offer.title,
        "body": offer.body,
        "price": offer.price,
        "regular_price": offer.regular_price,
        "currency": offer.currency,
    }


def text(out: str) -> str:
    """What a reader sees: tags dropped, entities decoded, whitespace collapsed."""
    return re.sub(r"[ \t\r\n]+", " ", html.unescape(re.sub(r"<[^>]+>", " ", out))).strip()


def hq(template_id: str, source: str, version: int = 1) -> TemplateRecord:
    return TemplateRecord(template_id=template_id, source=source, version=version)


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer()


def test_shipped_templates_are_found() -> None:
    folder = templates_dir()

    for name in (OFFER, GENERIC, PAGE, PHONE, "_card.html.j2", "static/kiosk.css"):
        assert (folder / name).is_file()


# --- offers and the price rule ------------------------------------------------------------


@pytest.mark.parametrize("name", CARDS)
def test_a_discount_shows_the_price_with_the_regular_price_struck_beside_it(
    renderer: Renderer, name: str
) -> None:
    out = renderer.render_fragment(name, store_name="Moments", **card(BEANS))

    assert "Espresso beans, 1 kg" in out
    assert "Our single-origin roast." in out
    assert 'data-offer="espresso-beans-1kg"' in out
    start = out.index('<div class="price discounted">')
    tag = out[start : out.index("</div>", start)]
    assert '<span class="amount">€12.90</span>' in tag
    assert '<s class="amount">€16.90</s>' in tag  # struck through, in the same tag, after it
    assert tag.index("€12.90") < tag.index("€16.90")
    assert "Now €12.90 Regular price €16.90" in text(tag)  # labelled, not only struck


def test_the_saving_is_shown_and_its_percentage_never_overstated(renderer: Renderer) -> None:
    out = text(renderer.render_fragment(OFFER, **card(BEANS)))

    assert "You save €4.00" in out
    assert "\N{MINUS SIGN}23%" in out  # 4.00 / 16.90 is 23.7 %: rounded down


@pytest.mark.parametrize("name", CARDS)
@pytest.mark.parametrize(
    ("price", "regular_price", "shown"),
    [
        (12.90, None, None),  # no regular price: no price at all
        (None, None, None),
        (18.00, 16.90, None),  # a price above the regular one is bad data: no price
        (None, 16.90, "€16.90"),  # the regular price alone
        (16.90, 16.90, "€16.90"),  # no discount: the regular price alone
    ],
)
def test_no_price_without_the_regular_price_beside_it(
    renderer: Renderer,
    name: str,
    price: float | None,
    regular_price: float | None,
    shown: str | None,
) -> None:
    offer = OfferRecord(offer_id="o", title="Beans", price=price, regular_price=regular_price)

    out = renderer.render_fragment(name, **card(offer))

    assert "Beans" in out
    assert "discounted" not in out and "<s " not in out
    for amount in ("12.90", "18.00", "16.90"):
        assert (amount in out) is (shown is not None and amount in shown)
    if shown is None:
        assert 'class="price' not in out
    else:
        assert f"Price {shown}" in text(out)


def test_no_body_paragraph_for_an_empty_body(renderer: Renderer) -> None:
    offer = OfferRecord(offer_id="o", title="Beans")

    assert 'class="body"' not in renderer.render_fragment(OFFER, **card(offer))


@pytest.mark.parametrize(
    ("currency", "price", "shown"),
    [("EUR", 1234.5, "€1,234.50"), ("GBP", 3.0, "£3.00"), ("USD", 0.99, "$0.99")],
)
def test_money_uses_the_offer_currency(
    renderer: Renderer, currency: str, price: float, shown: str
) -> None:
    offer = OfferRecord(
        offer_id="o", title="T", price=price, regular_price=price + 1, currency=currency
    )

    assert shown in renderer.render_fragment(OFFER, **card(offer))


def test_a_currency_without_a_symbol_is_written_by_its_code(renderer: Renderer) -> None:
    out = renderer.render_fragment(OFFER, **card(BEANS) | {"currency": "CHF"})

    assert "CHF\u00a012.90" in out and "CHF\u00a016.90" in out


@pytest.mark.parametrize(
    ("values", "now", "was"),
    [
        ({"price": 1290, "regular_price": 1690}, "€12.90", "€16.90"),  # int: cents
        ({"price": 12.9, "regular_price": 16.9}, "€12.90", "€16.90"),  # float: an amount
        ({"price": 12.9, "regular_price": 1690}, "€12.90", "€16.90"),  # mixed, same cents
        ({"locale": "fr"}, "12,90\u00a0€", "16,90\u00a0€"),
        ({"locale": "de-AT"}, "12,90\u00a0€", "16,90\u00a0€"),
        ({"locale": "it"}, "€12.90", "€16.90"),  # a locale pricing lacks: written as English
    ],
)
def test_prices_are_cents_or_amounts_written_for_the_locale(
    renderer: Renderer, values: dict[str, Scalar], now: str, was: str
) -> None:
    out = renderer.render_card("offer", "kiosk", **card(BEANS) | values)

    assert f'<span class="amount">{now}</span>' in out
    assert f'<s class="amount">{was}</s>' in out


@pytest.mark.parametrize(
    ("values", "error"),
    [
        ({"currency": "<img src=x>"}, "currency"),
        ({"price": 12.905}, "fraction"),
        ({"price": -1}, ">= 0"),
        ({"price": "12.90"}, "number"),
        ({"price": True}, "number"),
        ({"colour": "red"}, "unknown card values: colour"),
        ({"title": Markup("<b>x</b>")}, "plain data"),  # a str subclass would skip escaping
        ({"title": ["x"]}, "plain data"),
    ],
)
def test_card_values_must_be_plain_and_make_sense(
    renderer: Renderer, values: dict[str, Scalar], error: str
) -> None:
    with pytest.raises(RenderError, match=error):
        renderer.render_card("offer", "kiosk", **card(BEANS) | values)


def test_an_unknown_channel_is_refused(renderer: Renderer) -> None:
    with pytest.raises(RenderError, match="channel"):
        renderer.render_card("offer", "tv", **card(BEANS))  # type: ignore[arg-type]


# --- escaping -----------------------------------------------------------------------

HOSTILE = '<script>alert("x")</script>'


@pytest.mark.parametrize("name", CARDS)
def test_card_fields_are_escaped(renderer: Renderer, name: str) -> None:
    out = renderer.render_fragment(
        name,
        offer_id='x" onmouseover="alert(1)',
        title=HOSTILE,
        body="<b>bold</b> & <i>more</i>",
        greeting=HOSTILE,
        social_proof="<img src=x>",
        store_name="<b>Shop</b>",
        kind='" x="',
        locale='en" onload="x',
        price=1.0,
        regular_price=2.0,
    )

    assert "<script>" not in out and "<b>" not in out and "<img" not in out
    assert 'onmouseover="' not in out and 'onload="' not in out and ' x="' not in out
    assert html.escape(HOSTILE) in out.replace("&#34;", "&quot;")
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; &lt;i&gt;more&lt;/i&gt;" in out


def test_the_house_welcome_escapes_the_store_name(renderer: Renderer) -> None:
    out = renderer.render_fragment(GENERIC, store_name="<b>Shop</b>", **card(None))

    assert "<b>" not in out
    assert "Welcome to &lt;b&gt;Shop&lt;/b&gt;" in out


def test_page_escapes_its_fields_but_not_the_rendered_content(renderer: Renderer) -> None:
    content = renderer.render_fragment(OFFER, **card(BEANS))

    out = renderer.render(
        PAGE,
        kiosk_name="<Coffee>",
        kiosk_id='k" x="1',
        version=3,
        personal=True,
        content=content,
    )

    assert "<title>&lt;Coffee&gt; · Moments</title>" in out
    assert 'x="1"' not in out
    assert content in out  # already escaped when rendered, inserted as is
    assert 'data-version="3"' in out
    assert 'data-personal="true"' in out
    assert 'id="screen"' in out and 'id="link"' in out


def test_page_marks_generic_content(renderer: Renderer) -> None:
    out = renderer.render(PAGE, kiosk_name="K", kiosk_id="k", version=1, personal=False, content="")

    assert 'data-personal="false"' in out


# --- language ------------------------------------------------------------------------


@pytest.mark.parametrize("name", CARDS)
@pytest.mark.parametrize("locale", ["en", "fr", "de-CH"])
def test_a_card_carries_its_language(renderer: Renderer, name: str, locale: str) -> None:
    out = renderer.render_fragment(name, locale=locale, **card(BEANS))

    assert f'lang="{locale}"' in out


def test_the_welcome_and_labels_speak_the_card_language(renderer: Renderer) -> None:
    welcome = renderer.render_fragment(GENERIC, store_name="Marché", locale="fr", **card(None))
    personal = renderer.render_fragment(OFFER, greeting="Lea", locale="de-AT", **card(BEANS))

    assert "Bienvenue chez Marché" in welcome
    assert "Hallo Lea, dieses Angebot ist für Sie" in personal
    assert "Jetzt 12,90\u00a0€ Normalpreis 16,90\u00a0€" in text(personal)


def test_the_page_language_defaults_to_english_or_follows_the_locale(
    renderer: Renderer,
) -> None:
    values = {"kiosk_name": "K", "kiosk_id": "k", "version": 1, "personal": False, "content": ""}

    assert '<html lang="en">' in renderer.render(PAGE, **values)
    assert '<html lang="fr">' in renderer.render(PAGE, locale="fr", **values)


@pytest.mark.parametrize(
    ("locale", "title", "shown"),
    [
        ("fr-CH", "Café suisse", "fr-CH"),  # the exact tag
        ("fr-BE", "Café", "fr"),  # its language
        ("de", "Espresso beans, 1 kg", "en"),  # the offer's own words
    ],
)
def test_card_values_pick_the_shopper_language(locale: str, title: str, shown: str) -> None:
    offer = OfferRecord(
        offer_id="o",
        title="Espresso beans, 1 kg",
        locales={"fr": Variant(title="Café"), "fr-CH": Variant(title="Café suisse")},
    )

    values = card_values(offer, price=12.9, regular_price=16.9, locale=locale)

    assert (values["title"], values["locale"]) == (title, shown)
    assert values["price"] == 12.9 and values["kind"] == "offer"


# --- greeting and the house welcome ----------------------------------------------------


@pytest.mark.parametrize("name", [OFFER, PHONE])
def test_greeting_shown_when_passed(renderer: Renderer, name: str) -> None:
    out = renderer.render_fragment(name, greeting="Alice", **card(BEANS))

    assert "Hi Alice, this one is for you" in out


@pytest.mark.parametrize("name", [OFFER, PHONE])
def test_no_greeting_when_empty(renderer: Renderer, name: str) -> None:
    out = renderer.render_fragment(name, greeting="", **card(BEANS))

    assert "Hi " not in out and 'class="greeting"' not in out


def test_a_personal_card_says_it_was_picked(renderer: Renderer) -> None:
    assert "Picked for you" in renderer.render_fragment(OFFER, **card(BEANS))


def test_generic_never_greets(renderer: Renderer) -> None:
    out = renderer.render_fragment(GENERIC, greeting="Alice", store_name="Moments", **card(BEANS))

    assert "Alice" not in out


def test_house_welcome_without_an_offer(renderer: Renderer) -> None:
    out = renderer.render_fragment(GENERIC, store_name="Moments Market", **card(None))

    assert "Welcome to Moments Market" in out
    assert "data-offer" not in out
    assert "€" not in out


def test_house_welcome_without_a_store_name(renderer: Renderer) -> None:
    assert '<h1 class="title">Welcome</h1>' in renderer.render_fragment(GENERIC, **card(None))


def test_optional_lines_appear_only_when_given(renderer: Renderer) -> None:
    bare = renderer.render_fragment(OFFER, **card(BEANS))
    full = renderer.render_fragment(
        OFFER, social_proof="12 people took this today", store_name="Corner Shop", **card(BEANS)
    )

    assert 'class="proof"' not in bare and 'class="store"' not in bare
    assert "12 people took this today" in full and "Corner Shop" in full


# --- HQ templates ----------------------------------------------------------------------

GOOD = (
    '<div class="hq" lang="{{ locale }}">{{ title }} for {{ channel }}'
    "{% if regular_price is not none and price is not none %}"
    " {{ price | price(currency, locale) }}"
    " instead of {{ regular_price | price(currency, locale) }}"
    "{% endif %}</div>"
)


def test_an_hq_template_is_used_by_id_on_every_channel() -> None:
    renderer = Renderer()

    assert renderer.load_hq([hq("autumn", GOOD)]) == {}

    for channel in ("kiosk", "phone"):
        out = renderer.render_card("autumn", channel, **card(BEANS))
        assert out == (
            f'<div class="hq" lang="en">Espresso beans, 1 kg for {channel}'
            " €12.90 instead of €16.90</div>"
        )
    assert renderer.hq_versions() == {"autumn": 1}


def test_an_unknown_template_id_gets_the_channel_builtin_card() -> None:
    renderer = Renderer()
    renderer.load_hq([hq("autumn", GOOD)])

    kiosk = renderer.render_card("offer", "kiosk", **card(BEANS))
    phone = renderer.render_card("offer", "phone", **card(BEANS))

    assert kiosk == renderer.render_fragment(OFFER, **card(BEANS))
    assert phone == renderer.render_fragment(PHONE, **card(BEANS))
    assert 'class="card personal' in kiosk and 'class="phone-card' in phone


def test_an_hq_template_escapes_what_it_shows() -> None:
    renderer = Renderer()
    renderer.load_hq([hq("t", "<p>{{ greeting }} {{ title }}</p>")])

    out = renderer.render_card("t", "kiosk", greeting=HOSTILE, title="<b>x</b>")

    assert out == f"<p>{html.escape(HOSTILE, quote=False)} &lt;b&gt;x&lt;/b&gt;</p>".replace(
        '"', "&#34;"
    )


def test_a_new_version_replaces_the_old_and_is_never_answered_from_its_memo() -> None:
    renderer = Renderer()
    renderer.load_hq([hq("t", "<p>one {{ title }}</p>", version=1)])
    assert renderer.render_card("t", "kiosk", title="A") == "<p>one A</p>"

    renderer.load_hq([hq("t", "<p>two {{ title }}</p>", version=2)])

    assert renderer.render_card("t", "kiosk", title="A") == "<p>two A</p>"
    assert renderer.hq_versions() == {"t": 2}


def test_an_unchanged_version_is_not_compiled_again() -> None:
    renderer = Renderer()
    renderer.load_hq([hq("t", "<p>{{ title }}</p>")])
    first = renderer.render_card("t", "kiosk", title="A")

    renderer.load_hq([hq("t", "<p>{{ title }}</p>")])

    assert renderer.render_card("t", "kiosk", title="A") is first  # the same compilation's memo


def test_a_template_no_longer_listed_is_dropped() -> None:
    renderer = Renderer()
    renderer.load_hq([hq("t", "<p>{{ title }}</p>")])

    renderer.load_hq([])

    assert renderer.hq_versions() == {}
    assert 'class="card personal' in renderer.render_card("t", "kiosk", **card(BEANS))


def test_a_refused_version_keeps_the_one_loaded_before_and_is_tried_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    renderer = Renderer()
    renderer.load_hq([hq("t", "<p>{{ title }}</p>", version=1)])

    with caplog.at_level(logging.WARNING, logger="gateway.render"):
        for _ in range(3):
            refused = renderer.load_hq([hq("t", "<p>{{ title.__class__ }}</p>", version=2)])
            assert list(refused) == ["t"] and refused["t"].startswith("unsafe:")

    assert renderer.hq_versions() == {"t": 1}
    assert renderer.render_card("t", "kiosk", title="A") == "<p>A</p>"
    assert [r.getMessage() for r in caplog.records] == [
        "HQ template refused; the version loaded before stays"
    ]


def test_an_hq_template_failing_on_real_values_falls_back_to_the_builtin_card(
    caplog: pytest.LogCaptureFixture,
) -> None:
    renderer = Renderer()
    renderer.load_hq([hq("t", "<p>{{ title }}{% if title == 'boom' %}{{ 1 / 0 }}{% endif %}</p>")])

    with caplog.at_level(logging.WARNING, logger="gateway.render"):
        out = renderer.render_card("t", "kiosk", **card(BEANS) | {"title": "boom"})

    assert out == renderer.render_fragment(OFFER, **card(BEANS) | {"title": "boom"})
    [record] = caplog.records
    assert record.getMessage() == "HQ template failed; the built-in card is shown"
    assert "ZeroDivisionError" in record.why  # type: ignore[attr-defined]


def test_templates_from_reads_the_store(tmp_path: Path) -> None:
    db = Database(tmp_path / "store", map_size=1 << 20)
    db.open()
    records = [hq("a", "<p>{{ title }}</p>"), hq("b", "<i>{{ body }}</i>", version=3)]
    with db.env.begin(write=True) as txn:
        db.put_op(list(records))(txn)

    assert templates_from(db) == records
    db.close()


# --- checking HQ templates ---------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "<p>{{ title }}</p>",
        GOOD,
        # Loops, macros, filters, text methods and small arithmetic are fine.
        "{% macro line(s) %}<li>{{ s | upper }}</li>{% endmacro %}"
        "<ul>{% for w in title.split() %}{{ line(w) }}{% endfor %}</ul>"
        "{{ [1, 2, 3] | join(', ') }} {{ 'x' * 10 }} {{ 2 ** 10 }} {{ title ~ body }}",
        "{% for i in range(1000) %}{{ i }}{% endfor %}",
        # The built-in kiosk card itself holds the price rule.
        (templates_dir() / "_card.html.j2").read_text(encoding="utf-8")
        + "{% set w = WORDS.en %}{{ price_tag(price, regular_price, currency, locale, w) }}",
    ],
)
def test_a_sound_template_passes_the_check(source: str) -> None:
    assert check_template(source) is None
    assert Renderer().check(source) is None


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("{% if %}", r"^syntax error on line 1: "),
        ("<p>\n{{ title }\n</p>", r"^syntax error on line 2: "),
        ("{{ nope }}", r"^undefined: 'nope' is undefined \(rendering a discounted kiosk offer\)$"),
        ("{% include 'kiosk/offer.html.j2' %}", r"TemplateNotFound"),
        # Escapes from the sandbox: only plain data is there, and no way out of it.
        ("{{ ''.__class__.__mro__ }}", r"^unsafe: access to attribute '__class__' of 'str'"),
        ("{{ cycler.__init__.__globals__ }}", r"^unsafe: access to attribute '__init__'"),
        ("{{ title.__class__.__base__.__subclasses__() }}", r"^unsafe: "),
        ("{{ self.__init__ }}", r"^unsafe: "),
        ("{{ lipsum() }} {{ namespace() }}", r"^undefined: 'lipsum' is undefined"),
        ("{{ {}.fromkeys(range(10), title) }}", r"^unsafe: access to attribute 'fromkeys'"),
        ("{{ '{0.__class__}'.format(title) }}", r"^unsafe: access to attribute 'format'"),
        ("{{ greeting | safe }}", r"^syntax error on line 1: No filter named 'safe'"),
        ("{% autoescape false %}{{ greeting }}{% endautoescape %}", r"autoescaping"),
        ("{{ '%s' % title }}", r"^unsafe: % does not format text"),
        # Limits: size, time, depth.
        ("x" * (MAX_SOURCE_BYTES + 1), r"^over a limit: source of 65537 bytes"),
        ("{% for i in range(1000) %}<b>{{ 'x' * 1000 }}</b>{% endfor %}", r"output over 65536"),
        ("{{ 'x' * 10**9 }}", r"^over a limit: a value over the size limit \(\*\)"),
        ("{{ title.center(10**9) }}", r"^unsafe: access to attribute 'center'"),
        ("{{ 'x' | center(10**9) }}", r"No filter named 'center'"),
        ("{{ range(100000) | join('x' * 60000) }}", r"a value over 65536 characters"),
        ("{{ 'x' | replace('', 'y' * 60000) }}", r"a value over 65536 characters"),
        ("{% set a = 'x' * 60000 %}{{ a ~ a }}", r"a value over 65536 characters"),
        ("{{ (2 ** 4000) ** 4000 }}", r"a value over the size limit \(\*\*\)"),
        ("{% for i in range(10**9) %}{% endfor %}", r"^over a limit: Range too big"),
        (
            "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
            r"^over a limit: rendering took longer than 50 ms",
        ),
        ("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", r"calls nested deeper than 16"),
        ("{% for x in [1] recursive %}{{ loop([x]) }}{% endfor %}", r"calls nested deeper"),
        ("{{ " + "(" * 400 + "1" + ")" * 400 + " }}", r"^over a limit: nested too deeply$"),
        ("{{ 1 / 0 }}", r"^fails: ZeroDivisionError"),
        # The price rule, on the samples.
        ("{{ price | price(currency, locale) }}", r"^price rule: a discounted kiosk offer shows "),
        ("{{ price }}", r"without the regular price$"),
        (
            "{{ price | price(currency, locale) }} {{ regular_price | price(currency, locale) }}",
            r"^price rule: a phone card without a regular price shows a price whose regular",
        ),
    ],
)
def test_a_template_that_breaks_a_rule_is_refused_with_the_reason(
    source: str, reason: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if "longer than" in reason:  # the time limit itself: the production one
        monkeypatch.setattr(render, "MAX_RENDER_S", 0.050)
    why = check_template(source)

    assert why is not None and re.search(reason, why), why
    assert Renderer().check(source) == why


def test_output_within_the_limit_passes() -> None:
    source = f"{{{{ 'x' * {MAX_OUTPUT_BYTES - 16} }}}}"

    assert check_template(source) is None


# --- the built-in sandbox (the pages and cards) ----------------------------------------


def test_missing_template_raises_render_error(renderer: Renderer) -> None:
    with pytest.raises(RenderError) as info:
        renderer.render("kiosk/nope.html.j2", **card(BEANS))

    assert "kiosk/nope.html.j2" in str(info.value)
    assert isinstance(info.value.__cause__, TemplateNotFound)
    assert isinstance(info.value, MomentsError)


def test_a_missing_value_is_an_error_not_a_blank(renderer: Renderer) -> None:
    with pytest.raises(RenderError) as info:
        renderer.render(PAGE, kiosk_id="k", version=1, personal=False, content="")

    assert "kiosk_name" in str(info.value)
    assert isinstance(info.value.__cause__, UndefinedError)


def test_template_syntax_error_raises_render_error(tmp_path: Path) -> None:
    (tmp_path / "broken.html.j2").write_text("{% if %}", encoding="utf-8")

    with pytest.raises(RenderError, match=r"broken\.html\.j2"):
        Renderer(tmp_path).render("broken.html.j2")


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__ }}",
        "{{ data.__class__.__subclasses__() }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ offer.__init__.__globals__ }}",
        "{{ data.append(4) }}",
        "{{ mapping.update(evil=1) }}",
        "{{ data.pop() }}",
        "{{ offer.valid_at.__func__.__code__ }}",
    ],
)
def test_sandbox_refuses_unsafe_access(tmp_path: Path, source: str) -> None:
    (tmp_path / "evil.html.j2").write_text(source, encoding="utf-8")
    data = [1, 2, 3]
    mapping = {"a": 1}

    with pytest.raises(RenderError) as info:
        Renderer(tmp_path).render("evil.html.j2", data=data, mapping=mapping, offer=BEANS)

    assert isinstance(info.value.__cause__, SecurityError)
    assert data == [1, 2, 3]
    assert mapping == {"a": 1}


def test_a_safe_template_from_a_folder_renders(tmp_path: Path) -> None:
    """Control for the sandbox test: the same folder and context render harmless markup."""
    (tmp_path / "ok.html.j2").write_text("{{ data | length }} {{ offer.title }}", encoding="utf-8")

    assert Renderer(tmp_path).render("ok.html.j2", data=[1, 2], offer=BEANS) == (
        "2 Espresso beans, 1 kg"
    )


# --- memoised fragments and cards --------------------------------------------------------


def test_render_fragment_gives_what_render_gives_with_the_whole_card() -> None:
    renderer = Renderer()
    defaults = {"greeting": "", "locale": "en", "kind": "offer", "social_proof": ""}

    for name, values in [
        (OFFER, {"greeting": "Alice", **card(BEANS)}),
        (GENERIC, {"store_name": "Moments", **card(BEANS)}),
        (GENERIC, {"store_name": "Moments", **card(None)}),
    ]:
        whole = {**defaults, "store_name": "", "channel": "kiosk", **values}
        whole |= {"price": 1290, "regular_price": 1690} if values["offer_id"] else {}
        assert renderer.render_fragment(name, **values) == renderer.render(name, **whole)


def test_a_card_is_remembered_not_rendered_again() -> None:
    renderer = Renderer()

    first = renderer.render_card("offer", "kiosk", **card(BEANS))
    again = renderer.render_card("offer", "kiosk", **card(BEANS))
    phone = renderer.render_card("offer", "phone", **card(BEANS))

    assert again is first
    assert phone != first


def test_render_fragment_is_keyed_by_every_value() -> None:
    renderer = Renderer()
    values = {"greeting": "", **card(BEANS)}

    first = renderer.render_fragment(OFFER, **values)
    cheaper = renderer.render_fragment(OFFER, **(values | {"price": 9.5}))
    greeted = renderer.render_fragment(OFFER, **(values | {"greeting": "Al"}))
    again = renderer.render_fragment(OFFER, **values)

    assert "€12.90" in first
    assert "€9.50" in cheaper
    assert "€12.90" not in cheaper
    assert "Hi Al," in greeted
    assert again == first


def test_render_fragment_ignores_keyword_order() -> None:
    renderer = Renderer()
    values = {"greeting": "", **card(BEANS)}

    forward = renderer.render_fragment(OFFER, **values)
    backward = renderer.render_fragment(OFFER, **dict(reversed(values.items())))

    assert backward == forward


def test_render_fragment_is_keyed_by_template() -> None:
    renderer = Renderer()
    values = {"greeting": "", "store_name": "Moments", **card(BEANS)}

    personal = renderer.render_fragment(OFFER, **values)
    generic = renderer.render_fragment(GENERIC, **values)

    assert 'class="card personal' in personal
    assert 'class="card generic' in generic


def test_render_fragment_stays_correct_past_its_cache_size() -> None:
    renderer = Renderer()

    outputs = [
        renderer.render_fragment(OFFER, greeting="", **(card(BEANS) | {"title": f"Offer {i}"}))
        for i in range(600)
    ]

    assert all(f"Offer {i}<" in out for i, out in enumerate(outputs))
    assert (
        renderer.render_fragment(OFFER, greeting="", **(card(BEANS) | {"title": "Offer 0"}))
        == (outputs[0])
    )


def test_render_fragment_errors_every_time() -> None:
    renderer = Renderer()

    for _ in range(2):
        with pytest.raises(RenderError):
            renderer.render_fragment(OFFER, **card(BEANS) | {"currency": "euro"})
