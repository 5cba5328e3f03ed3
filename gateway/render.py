"""Rendering with Jinja2 in its sandbox, autoescaped, from the shipped ``templates/`` folder.

Templates are compiled once and cached by Jinja2. Every render gets only the values the
decision allowed: a kiosk template never receives a profile it may not show.

``render_fragment`` takes only plain values (text, numbers, booleans, None) and remembers its
last outputs: rendering is a pure function of the template and those values, and the sandbox's
checks on every attribute access cost tens of microseconds that a kiosk does not need to pay
again for the same offer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from gateway.errors import RenderError

__all__ = ["Renderer", "Scalar", "templates_dir"]

Scalar = str | int | float | bool | None
_FRAGMENT_CACHE = 512


def templates_dir() -> Path:
    """Where the shipped templates are: inside the installed wheel, or the source checkout."""
    packaged = Path(__file__).parent / "_templates"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "templates"


def _money(value: float | None, currency: str = "EUR") -> str:
    if value is None:
        return ""
    symbol = {"EUR": "€", "GBP": "£", "USD": "$"}.get(currency, currency + " ")
    return f"{symbol}{value:,.2f}"


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
        self._env.filters["money"] = _money
        self._fragments: dict[tuple[object, ...], str] = {}

    def render_fragment(self, name: str, **values: Scalar) -> str:
        """Render ``name`` with plain values, reusing the output for values seen recently."""
        # The type is part of the key: 1 == True == 1.0 and -0.0 == 0.0 render differently.
        key = (name, *((k, type(v), v) for k, v in sorted(values.items())))
        cached = self._fragments.get(key)
        if cached is not None:
            return cached
        html = self.render(name, **values)
        if len(self._fragments) >= _FRAGMENT_CACHE:
            self._fragments.pop(next(iter(self._fragments)))
        self._fragments[key] = html
        return html

    def render(self, name: str, **context: Any) -> str:
        try:
            return self._env.get_template(name).render(**context)
        except jinja2.TemplateError as exc:
            raise RenderError(f"template {name}: {exc}") from exc
