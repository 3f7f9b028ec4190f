"""Small pieces every panel shares: the `Panel` base class (errors shown where they happen,
guard, background work, static fallback), showing code, and HTML tables."""

from __future__ import annotations

import html
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import ipywidgets as widgets

from workbench.tokens.templates import Template, get_template
from workbench.widgets._errors import ErrorArea, set_enabled

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


class RunPanel(Panel):
    """A panel whose button starts training runs, one at a time (`run`: the newest, None
    before): `wait()` waits for the button's work and then for the run it started. A panel
    with a `train_button` that calls `start()` wires it to `train_in_background`: the button
    is off, its tooltip saying why, while the run trains, and on again when it ends."""

    run = None  # set by the panel (an attribute, or a property over its experiment)
    training_reason = "A run is training: stop it in the monitor below, or wait for it to end."

    def train_in_background(self) -> bool:
        """What the Train button does: `start()` on a thread (its error beside the button)."""
        if self.busy:  # refused, with its sentence
            return self.in_background(self.start)
        set_enabled(self.train_button, "Busy with the last press: the status beside says what.")
        return self.in_background(self.start, then=self.show_train_button)

    def show_train_button(self) -> None:
        """Train on exactly when neither the last press's work nor its run is going on."""
        running = self.run is not None and not self.run.done
        # the press's `then` calls this on the worker's own thread: that work is done
        pressing = self.busy and threading.current_thread() is not self._worker
        reason = self.training_reason if running or pressing else None
        set_enabled(self.train_button, reason, self.train_button.description)

    def follow_end(self, run) -> None:
        """Turn Train on again when `run` ends, however it ends."""
        for event in ("finished", "stopped", "failed"):
            run.add_callback(event, lambda _e: self.show_train_button())

    def wait(self, timeout: float | None = None) -> RunPanel:
        """Block until the button's work, the run and what follows it are done."""
        super().wait(timeout)
        if self.run is not None:
            self.run.wait(timeout)
        return self

    def run_summary(self) -> str:
        """`<run id> (<status>)`, or `not started`: the static text's line."""
        return f"{self.run.run_dir.name} ({self.run.status})" if self.run else "not started"


class ContinuesTuning(RunPanel):
    """A run panel that continues an instruction-tuned model (DPO, RL): `set_model(model,
    tokenizer, template, parent)` is called once one is trained; `continues` names what."""

    continues = "training"
    experiment: Any = None  # the library's experiment (its run, before/after measurements)

    @property
    def run(self):
        """The run, once started (None before)."""
        return self.experiment.run if self.experiment is not None else None

    def _check_ready(self) -> None:
        """Raise, saying what to do, when there is no model yet or a run is still going."""
        if self.model is None:
            raise ValueError("No instruction-tuned model yet: train one in the Train tab first.")
        if self.run is not None and not self.run.done:
            raise ValueError(f"{self.continues} is still training: stop it in the monitor first.")

    def _follow(self, experiment) -> None:
        """Show the experiment's run in the monitor, call `_on_end(experiment)` when it ends
        (finished or stopped), and start it."""
        self.experiment, run = experiment, experiment.run
        self.monitor.attach(run)
        for event in ("finished", "stopped"):
            run.add_callback(event, lambda _e: self.guard(self._on_end, experiment))
        self.follow_end(run)
        run.start()
        self.status.value = f"{self.continues} <code>{html.escape(run.run_dir.name)}</code> ..."

    def set_model(self, model, tokenizer, template: Template | str, parent=None) -> None:
        """The instruction-tuned model (e.g. a finished run's `run.model`) to continue."""
        self.model, self.tokenizer, self.parent = model, tokenizer, parent
        self.template = get_template(template)
        self.status.value = self._waiting_text()

    def _waiting_text(self) -> str:
        if self.model is None:
            return (
                "<i>Train an instruction-tuned model first (Train tab); "
                f"{self.continues} continues it.</i>"
            )
        return f"Ready: {self.continues} continues the instruction-tuned adapter."


class TakesModel(RunPanel):
    """A run panel given a model, or the name of one it loads at Train (the model bar's):
    `ready` and `named` (with `{}` for the name) say which, in its status line."""

    ready = "Ready: training continues the given model."
    named = "Ready: <code>{}</code> is loaded at Train."

    def set_model(self, model=None, tokenizer=None, *, model_name: str | None = None) -> None:
        """The model the next run starts from, or the name of one to load at Train."""
        self.model, self.tokenizer, self.model_name = model, tokenizer, model_name
        self.status.value = self._waiting_text()

    def _model(self):
        """(model, tokenizer): the given ones, or `model_name` loaded once."""
        if self.model is None and self.model_name:
            from workbench.model.loading import load_model

            self.status.value = f"<i>Loading {html.escape(self.model_name)} ...</i>"
            self.model, self.tokenizer = load_model(self.model_name)
        if self.model is None:
            raise ValueError(
                "No model: load one in the model bar (Workbench), or pass model and tokenizer "
                f"to {type(self).__name__}."
            )
        return self.model, self.tokenizer

    def _follow(self, run, *measured) -> None:
        """Show `run` in the monitor, call `_on_end(run, *measured)` when it ends (finished or
        stopped), and start it."""
        self.run = run
        self.monitor.attach(run)
        for event in ("finished", "stopped"):
            run.add_callback(event, lambda _e: self.guard(self._on_end, run, *measured))
        self.follow_end(run)
        run.start()
        self.status.value = f"Training <code>{html.escape(run.run_dir.name)}</code> ..."

    def _waiting_text(self) -> str:
        if self.model is not None:
            return self.ready
        if self.model_name:
            return self.named.format(html.escape(self.model_name))
        return "<i>No model: load one in the model bar (or pass model and tokenizer).</i>"


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


def heading(text: str) -> widgets.HTML:
    """A small bold section title."""
    return widgets.HTML(f"<b>{escape(text)}</b>")
