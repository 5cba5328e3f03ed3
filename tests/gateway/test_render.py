"""Tests of rendering: the shipped kiosk templates show what the decision allows, escape
what they show, and the sandbox refuses what a template must never do."""

from __future__ import annotations

import html
from pathlib import Path

import pytest
from jinja2.exceptions import SecurityError, TemplateNotFound, UndefinedError

from gateway.errors import MomentsError, RenderError
from gateway.render import Renderer, Scalar, templates_dir
from gateway.store import OfferRecord

OFFER = "kiosk/offer.html.j2"
GENERIC = "kiosk/generic.html.j2"
PAGE = "kiosk/page.html.j2"

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


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer()


def test_shipped_templates_are_found() -> None:
    folder = templates_dir()

    for name in (OFFER, GENERIC, PAGE):
        assert (folder / name).is_file()


# --- offers -----------------------------------------------------------------------


@pytest.mark.parametrize("name", [OFFER, GENERIC])
def test_offer_shows_title_body_price_and_regular_price(renderer: Renderer, name: str) -> None:
    out = renderer.render(name, greeting="", store_name="Moments", **card(BEANS))

    assert "Espresso beans, 1 kg" in out
    assert "Our single-origin roast." in out
    assert 'data-offer="espresso-beans-1kg"' in out
    assert '<span class="now">€12.90</span>' in out
    assert '<span class="was">was €16.90</span>' in out
    # The regular price is beside the price, in the same paragraph, after it.
    price = out[out.index('<p class="price">') : out.index("</p>", out.index('<p class="price">'))]
    assert price.index("€12.90") < price.index("€16.90")


@pytest.mark.parametrize("name", [OFFER, GENERIC])
@pytest.mark.parametrize(("price", "regular_price"), [(12.90, None), (None, 16.90), (None, None)])
def test_no_price_line_without_both_prices(
    renderer: Renderer, name: str, price: float | None, regular_price: float | None
) -> None:
    offer = OfferRecord(offer_id="o", title="Beans", price=price, regular_price=regular_price)

    out = renderer.render(name, greeting="", store_name="Moments", **card(offer))

    assert "Beans" in out
    assert 'class="price"' not in out
    assert "12.90" not in out
    assert "16.90" not in out
    assert "was" not in out


def test_no_body_paragraph_for_an_empty_body(renderer: Renderer) -> None:
    offer = OfferRecord(offer_id="o", title="Beans")

    assert 'class="body"' not in renderer.render(OFFER, greeting="", **card(offer))


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

    assert shown in renderer.render(OFFER, greeting="", **card(offer))


def test_unknown_currency_is_written_as_its_code(renderer: Renderer) -> None:
    offer = OfferRecord(offer_id="o", title="T", price=5.0, regular_price=6.0, currency="CHF")

    out = renderer.render(OFFER, greeting="", **card(offer))

    assert "CHF 5.00" in out
    assert "CHF 6.00" in out


# --- escaping -----------------------------------------------------------------------

HOSTILE = '<script>alert("x")</script>'


@pytest.mark.parametrize("name", [OFFER, GENERIC])
def test_offer_fields_are_escaped(renderer: Renderer, name: str) -> None:
    offer = OfferRecord(
        offer_id='x" onmouseover="alert(1)',
        title=HOSTILE,
        body="<b>bold</b> & <i>more</i>",
        price=1.0,
        regular_price=2.0,
        currency="<img src=x>",
    )

    out = renderer.render(name, greeting="", store_name="Moments", **card(offer))

    assert "<script>" not in out
    assert "<b>" not in out
    assert "<img" not in out
    assert 'onmouseover="' not in out
    assert html.escape(HOSTILE) in out.replace("&#34;", "&quot;")
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; &lt;i&gt;more&lt;/i&gt;" in out


def test_greeting_is_escaped(renderer: Renderer) -> None:
    out = renderer.render(OFFER, greeting=HOSTILE, **card(BEANS))

    assert "<script>" not in out
    assert "&lt;script&gt;" in out


def test_store_name_is_escaped(renderer: Renderer) -> None:
    out = renderer.render(GENERIC, store_name="<b>Shop</b>", **card(None))

    assert "<b>" not in out
    assert "Welcome to &lt;b&gt;Shop&lt;/b&gt;" in out


def test_page_escapes_its_fields_but_not_the_rendered_content(renderer: Renderer) -> None:
    content = renderer.render(OFFER, greeting="", **card(BEANS))

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


def test_page_marks_generic_content(renderer: Renderer) -> None:
    out = renderer.render(PAGE, kiosk_name="K", kiosk_id="k", version=1, personal=False, content="")

    assert 'data-personal="false"' in out


# --- greeting and the house welcome ----------------------------------------------------


def test_greeting_shown_when_passed(renderer: Renderer) -> None:
    out = renderer.render(OFFER, greeting="Alice", **card(BEANS))

    assert "Hi Alice, this one is for you" in out
    assert "Picked for you" not in out


def test_no_greeting_when_empty(renderer: Renderer) -> None:
    out = renderer.render(OFFER, greeting="", **card(BEANS))

    assert "Picked for you" in out
    assert "Hi " not in out


def test_generic_never_greets(renderer: Renderer) -> None:
    out = renderer.render(GENERIC, greeting="Alice", store_name="Moments", **card(BEANS))

    assert "Alice" not in out


def test_house_welcome_without_an_offer(renderer: Renderer) -> None:
    out = renderer.render(GENERIC, store_name="Moments Market", **card(None))

    assert "Welcome to Moments Market" in out
    assert "data-offer" not in out
    assert "€" not in out


# --- errors and the sandbox ----------------------------------------------------------


def test_missing_template_raises_render_error(renderer: Renderer) -> None:
    with pytest.raises(RenderError) as info:
        renderer.render("kiosk/nope.html.j2", **card(BEANS))

    assert "kiosk/nope.html.j2" in str(info.value)
    assert isinstance(info.value.__cause__, TemplateNotFound)
    assert isinstance(info.value, MomentsError)


def test_a_missing_value_is_an_error_not_a_blank(renderer: Renderer) -> None:
    with pytest.raises(RenderError) as info:
        renderer.render(GENERIC, **card(None))

    assert "store_name" in str(info.value)
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


# --- memoised fragments --------------------------------------------------------------


def test_render_fragment_gives_what_render_gives() -> None:
    renderer = Renderer()

    for name, values in [
        (OFFER, {"greeting": "Alice", **card(BEANS)}),
        (GENERIC, {"store_name": "Moments", **card(BEANS)}),
        (GENERIC, {"store_name": "Moments", **card(None)}),
    ]:
        assert renderer.render_fragment(name, **values) == renderer.render(name, **values)


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

    assert 'class="card personal"' in personal
    assert 'class="card generic"' in generic


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
            renderer.render_fragment(GENERIC, **card(None))  # store_name missing
