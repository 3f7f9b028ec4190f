"""Small pieces every panel shares: the `Panel` base class (errors shown where they happen,
guard, background work, static fallback), showing code, and HTML tables. The bases of the
panels that train runs are in `_run_panels`."""

from __future__ import annotations

import html
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import ipywidgets as widgets

from workbench.widgets._errors import ErrorArea

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


def findings_table(findings: Sequence[Any]) -> str:
    """Pre-flight findings (`workbench.check_dataset`) under a title with their count, one
    table row each; '' when there are none."""
    if not findings:
        return ""
    from workbench.tokens.checks import findings_summary

    rows = [[f.severity, f.check, f.where, f.what, f.fix] for f in findings]
    title = f"<b>Checks before training</b> ({findings_summary(list(findings))})"
    return title + html_table(["severity", "check", "where", "what", "fix"], rows)


def text_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], limit: int = 60) -> str:
    """The same table as plain text, one row a line, cells separated by ' | '."""
    lines = [" | ".join(headers)]
    for row in rows:
        cells = [str(c).replace("\n", " ") for c in row]
        lines.append(" | ".join(c if len(c) <= limit else c[: limit - 1] + "…" for c in cells))
    return "\n".join(lines)


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


class Panel(StaticFallback, widgets.VBox):
    """The base of every panel: a VBox whose errors show where they happen, one background
    worker, and the static fallback.

    A subclass calls `super().__init__()` first, places `error_html` in its `children`, and
    implements `static_html()` and `static_text()`. It then has:

    - `error_html` (ErrorArea), also reachable as `error`: the panel's own error area. A
      panel with several controls makes one more beside each control whose work can fail
      (`ErrorArea()`, placed next to it) and sends that work's errors there.
    - `show_error(error, area=None)`: show an error in `area` (default `error_html`), in place
      of what it showed; `errors` lists every error shown so far, oldest first.
    - `guard(fn, *args, **kwargs)`: `fn(...)`, or None with its exception shown in
      `error_html`; `guard_at(area, fn, ...)` the same for the control `area` sits beside, whose
      error goes away when its next attempt succeeds.
    - `in_background(fn, disable=..., then=..., errors=area)`: `fn` guarded on a thread, so the
      notebook stays responsive; its area is cleared when it starts. `busy` says whether it
      still runs, `wait()` blocks until it is done. Panels that own more work (a Run) extend
      `wait` and call `super().wait(timeout)`.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.error_html = ErrorArea()
        self._errors: list[str] = []
        self._worker: threading.Thread | None = None

    @property
    def error(self) -> ErrorArea:
        """The error area (the same widget as `error_html`)."""
        return self.error_html

    @property
    def errors(self) -> list[str]:
        """Every error shown so far, oldest first."""
        return list(self._errors)

    def show_error(self, error: BaseException | str, area: ErrorArea | None = None) -> None:
        """Show `error` in `area` (default: `error_html`), replacing what it showed."""
        area = area or self.error_html
        area.show(error)
        self._errors.append(area.message)

    def guard(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """`fn(*args, **kwargs)`; an exception lands in `error_html` and None is returned."""
        try:
            return fn(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 - shown to the user, not swallowed
            self.show_error(error)
            return None

    def guard_at(self, area: ErrorArea, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """`fn(*args, **kwargs)` for the control `area` sits beside: an exception shows there
        (and None is returned); a success clears what the last attempt left there."""
        try:
            result = fn(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 - shown to the user, not swallowed
            self.show_error(error, area)
            return None
        area.clear()
        return result

    def _shown_at(self, area: ErrorArea, fn: Callable[[], Any]) -> None:
        """`fn()`, its exception shown in `area` (which it leaves as it is otherwise)."""
        try:
            fn()
        except Exception as error:  # noqa: BLE001 - shown to the user, not swallowed
            self.show_error(error, area)

    @property
    def busy(self) -> bool:
        """Whether work started by `in_background` is still running."""
        return self._worker is not None and self._worker.is_alive()

    def in_background(
        self,
        fn: Callable[[], Any],
        *,
        disable: Sequence[widgets.Widget] = (),
        then: Callable[[], Any] | None = None,
        errors: ErrorArea | None = None,
    ) -> bool:
        """Run `fn` guarded on a thread; `disable` stay disabled meanwhile and get their state
        back after, then `then()` runs. `errors` (default `error_html`), the area beside the
        control that asked, is cleared as the work starts and shows its error. While busy, a
        second request is refused there with a sentence (a click must not start the same work
        twice). Returns whether `fn` started."""
        area = errors or self.error_html
        if self.busy:
            self.show_error("Still busy with the last request; try again when it is done.", area)
            return False
        area.clear()
        enabled = [not control.disabled for control in disable]
        for control in disable:
            control.disabled = True

        def work() -> None:
            try:
                self._shown_at(area, fn)
            finally:
                for control, was_enabled in zip(disable, enabled):
                    control.disabled = not was_enabled
                if then is not None:
                    self._shown_at(area, then)

        self._worker = threading.Thread(target=work, name=type(self).__name__, daemon=True)
        self._worker.start()
        return True

    def wait(self, timeout: float | None = None) -> Panel:
        """Block until the work started by the last button press is done (tests, scripts)."""
        if self._worker is not None:
            self._worker.join(timeout)
        return self


class CodeArea(widgets.Textarea):
    """Read-only code: hidden until `show(code)`; a user's edit is undone at once (the code is
    written from the panel's state, never read back), while selecting and copying still work.
    """

    def __init__(self, height: str = "10em") -> None:
        super().__init__(layout=widgets.Layout(width="100%", height=height, display="none"))
        self.add_class("wb-code")
        self._code = ""
        self.observe(self._undo_edit, names="value")

    def show(self, code: str) -> None:
        self._code = code
        self.value = code
        self.layout.display = None

    @property
    def shown(self) -> bool:
        return self.layout.display != "none"

    def _undo_edit(self, change) -> None:
        if change["new"] != self._code:
            self.value = self._code


class ShowsCode:
    """Mixin for panels that show the library code that rebuilds what they hold.

    The panel implements `as_code()` (the code as text; a ValueError says what is missing) and
    calls `_build_code()` in `__init__`, then places `copy_button` and `code` (a CodeArea) in
    its children. `show_code()` fills the area (the button's click); `_refresh_code()`, called
    after each change, keeps a shown area up to date.
    """

    def _build_code(self, height: str = "10em") -> None:
        self.copy_button, self.code = self._code_button("copy as code", self.as_code, height)

    def _code_button(
        self, description: str, write: Callable[[], str], height: str = "20em"
    ) -> tuple[widgets.Button, CodeArea]:
        """A button that shows `write()` in its own CodeArea (an error in the error area)."""
        button, area = widgets.Button(description=description, icon="code"), CodeArea(height)

        def show(_button=None) -> None:
            text = self.guard(write)
            if text is not None:
                area.show(text)

        button.on_click(show)
        return button, area

    def as_code(self) -> str:
        raise NotImplementedError

    def show_code(self) -> None:
        """Show `as_code()` in the code area, as the button does (an error: in the error area)."""
        self.copy_button.click()

    def _refresh_code(self) -> None:
        """Write the shown code again; when it cannot be written now, the area says why."""
        if not self.code.shown:
            return
        try:
            self.code.show(self.as_code())
        except (ValueError, OSError) as error:  # WorkbenchError is a ValueError too
            reason = str(error).replace("\n", "\n# ")
            self.code.show(f"# The code cannot be written now: {reason}")


def shown_path(path: str | Path) -> str:
    """A path as the panels show it: relative to the working directory when it lies inside
    it (runs/<id>/report.html, not /home/.../runs/<id>/report.html), else as it is."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return str(path)


# The width of a setting's label: the longest plain label fits, so no label is cut and the
# input boxes of a column line up.
LABEL_WIDTH = "13em"


def setting_control(settings: type, name: str, make: Callable[..., widgets.Widget], **options):
    """A control for field `name` of a settings class (`Hyperparameters`, `Method`, ...),
    labelled in plain words with the field's help as its tooltip (`Settings.field_text`):
    the panels and the library explain a setting with the same sentence."""
    label, help_text = settings.field_text(name)
    control = make(description=label, tooltip=help_text, **options)
    if not isinstance(control, widgets.Checkbox):  # a checkbox's label sits after the box
        control.style.description_width = LABEL_WIDTH
    return control


def heading(text: str) -> widgets.HTML:
    """A small bold section title."""
    return widgets.HTML(f"<b>{escape(text)}</b>")
