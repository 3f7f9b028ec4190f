"""Small pieces every panel shares: an inline error area, HTML tables, a static fallback."""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from typing import Any

import ipywidgets as widgets

ERROR_STYLE = (
    "color:#9b1c1c;background:#fdecec;border-left:4px solid #d33;padding:4px 8px;"
    "white-space:pre-wrap;font-family:monospace;font-size:12px"
)
TABLE_STYLE = "border-collapse:collapse;font-size:12px"
CELL_STYLE = "border:1px solid #ddd;padding:2px 6px;text-align:left;vertical-align:top"


def escape(value: Any, limit: int | None = None) -> str:
    """`value` as HTML-safe text, cut to `limit` characters with an ellipsis."""
    text = str(value)
    if limit is not None and len(text) > limit:
        text = text[: limit - 1] + "…"
    return html.escape(text)


def html_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], limit: int = 200) -> str:
    """A small bordered HTML table; every cell is escaped and cut to `limit` characters."""
    head = "".join(f'<th style="{CELL_STYLE}">{escape(h)}</th>' for h in headers)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td style="{CELL_STYLE};white-space:pre-wrap">{escape(c, limit)}</td>' for c in row
        )
        + "</tr>"
        for row in rows
    )
    return (
        f'<table style="{TABLE_STYLE}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
    )


def text_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], limit: int = 60) -> str:
    """The same table as plain text, one row a line, cells separated by ' | '."""
    lines = [" | ".join(headers)]
    for row in rows:
        cells = [str(c).replace("\n", " ") for c in row]
        lines.append(" | ".join(c if len(c) <= limit else c[: limit - 1] + "…" for c in cells))
    return "\n".join(lines)


class ErrorArea(widgets.HTML):
    """A red box that shows the latest error inline; empty (and invisible) when all is well."""

    def show(self, error: BaseException | str) -> None:
        message = str(error)
        if isinstance(error, BaseException) and not isinstance(error, ValueError):
            message = f"{type(error).__name__}: {message}"  # unexpected: say what it was
        self.value = f'<div style="{ERROR_STYLE}">{escape(message)}</div>'

    def clear(self) -> None:
        self.value = ""

    @property
    def message(self) -> str:
        """The error text shown now, unescaped ('' when none)."""
        if not self.value:
            return ""
        inner = self.value[self.value.index(">") + 1 : self.value.rindex("</div>")]
        return html.unescape(inner)


class StaticFallback:
    """Mixin for panels: a readable `text/html` and `text/plain` where widgets cannot render.

    Jupyter shows the widget view when a frontend can; nbconvert to HTML without widget state,
    a terminal or a plain log shows the static summary instead. Subclasses implement
    `static_html()` and `static_text()`.
    """

    dom_class = ""  # a CSS class on the panel's root, for styling and browser tests

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.dom_class:
            self.add_class(self.dom_class)

    def static_html(self) -> str:
        raise NotImplementedError

    def static_text(self) -> str:
        raise NotImplementedError

    def _repr_mimebundle_(self, **kwargs):
        bundle = dict(super()._repr_mimebundle_(**kwargs) or {})
        bundle["text/html"] = self.static_html()
        bundle["text/plain"] = self.static_text()
        return bundle


def heading(text: str) -> widgets.HTML:
    """A small bold section title."""
    return widgets.HTML(f"<b>{escape(text)}</b>")
