"""Errors shown where they happen: the area beside a control, the sentence or the folded
traceback it shows, and buttons that say why they are off."""

from __future__ import annotations

import html
import traceback

import ipywidgets as widgets

ERROR_STYLE = (
    "color:#9b1c1c;background:#fdecec;border-left:4px solid #d33;padding:4px 8px;"
    "white-space:pre-wrap;font-size:13px"
)
TRACEBACK_STYLE = "white-space:pre-wrap;font-family:monospace;font-size:11px;margin:4px 0 0"
# Conditions a user can fix, which the library and the panels raise on purpose with a sentence
# that says what to do (WorkbenchError is a ValueError): shown as that sentence alone. Anything
# else is unexpected: its type is named and its traceback kept, folded away.
EXPECTED_ERRORS = (ValueError, FileNotFoundError)


def describe_error(error: BaseException | str) -> tuple[str, str]:
    """(the sentence to show, the traceback to fold away: '' for an expected condition)."""
    if not isinstance(error, BaseException):
        return str(error), ""
    if isinstance(error, EXPECTED_ERRORS):
        return str(error), ""
    lines = traceback.format_exception(type(error), error, error.__traceback__)
    return f"{type(error).__name__}: {error}", "".join(lines).rstrip()


class ErrorArea(widgets.HTML):
    """Where a control's error shows, beside it: one plain sentence for a condition the user
    can fix; an unexpected exception with its type, and its traceback behind a fold. A new
    error replaces the last one (they never pile up); empty, and invisible, when all is well.
    `message` is the sentence shown now and `details` the folded traceback ('' when none)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_class("wb-error")
        self.message = ""
        self.details = ""

    def show(self, error: BaseException | str, details: str = "") -> None:
        message, traced = describe_error(error)
        self.message, self.details = message, details or traced
        fold = ""
        if self.details:
            fold = (
                "<details><summary>traceback</summary>"
                f'<pre style="{TRACEBACK_STYLE}">{html.escape(self.details)}</pre></details>'
            )
        self.value = f'<div style="{ERROR_STYLE}">{html.escape(message)}{fold}</div>'

    def clear(self) -> None:
        self.message = self.details = ""
        self.value = ""

    @property
    def shown(self) -> bool:
        return bool(self.value)


def set_enabled(button: widgets.Button, reason: str | None, tooltip: str = "") -> None:
    """Enable `button` (with `tooltip`), or disable it with `reason` as its tooltip: a greyed
    button says why it is off when the pointer rests on it."""
    button.disabled = reason is not None
    button.tooltip = reason or tooltip
