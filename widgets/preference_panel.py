"""PreferencePanel: DPO after instruction tuning, from the notebook.

Pick a preference file (prompt/chosen/rejected), set beta and the steps, press Train DPO: the
SFT model's adapter goes on learning while a TrainingMonitor shows the DPO loss and reward
margins; afterwards a CompareView puts the SFT answers next to the SFT+DPO answers.
"""

from __future__ import annotations

import html
import threading
import traceback
from pathlib import Path

import ipywidgets as widgets

from widgets._common import ErrorArea, StaticFallback, heading
from widgets.compare_view import CompareView
from widgets.training_monitor import TrainingMonitor
from workbench.data import load_data
from workbench.evaluation import evaluate_model
from workbench.generation import Decoding
from workbench.preference import (
    PreferenceSettings,
    as_answer_rows,
    preference_margin,
    train_preferences,
)
from workbench.splits import split_data
from workbench.templates import Template, get_template

SAMPLE = Path(__file__).resolve().parent.parent / "sample_data" / "preferences.jsonl"


class PreferencePanel(StaticFallback, widgets.VBox):
    """DPO on top of an instruction-tuned model.

    Children: `.data_path`, `.held_out` (pairs kept out of training), `.beta`,
    `.learning_rate`, `.max_steps`, `.batch_size`, `.train_button`, `.status`, `.error_html`,
    `.monitor` (TrainingMonitor), `.margin_html`, `.compare_box` (the CompareView when the run
    ends). `.run`, `.compare_panel` and `.margins` (held-out margin before, after) hold results.
    """

    dom_class = "wb-preference-panel"
    compare_rows = 8  # held-out prompts answered by SFT and SFT+DPO
    decoding = Decoding(max_new_tokens=32)  # how those answers are generated

    def __init__(
        self,
        model=None,
        tokenizer=None,
        *,
        template: Template | str = "alpaca",
        data: str | Path | None = None,
        parent: str | Path | None = None,
        settings: PreferenceSettings | None = None,
    ) -> None:
        settings = settings or PreferenceSettings(max_steps=20)
        self.model, self.tokenizer, self.parent = model, tokenizer, parent
        self.template = get_template(template)
        self.run = None
        self.compare_panel: CompareView | None = None
        self.margins: list[float | None] = [None, None]
        self._before = None
        self._worker: threading.Thread | None = None
        self._errors: list[str] = []
        self.data_path = widgets.Text(
            value=str(data or SAMPLE), description="Pairs", layout=widgets.Layout(width="70%")
        )
        self.held_out = widgets.BoundedIntText(value=16, min=1, max=10_000, description="held out")
        self.beta = widgets.BoundedFloatText(value=settings.beta, min=0.001, max=10, step=0.05)
        self.beta.description = "beta"
        self.learning_rate = widgets.FloatText(value=settings.learning_rate, description="lr")
        self.max_steps = widgets.BoundedIntText(
            value=settings.max_steps, min=1, max=100_000, description="steps"
        )
        self.batch_size = widgets.BoundedIntText(
            value=settings.batch_size, min=1, max=1024, description="pairs/step"
        )
        self.train_button = widgets.Button(
            description="Train DPO", icon="play", button_style="success"
        )
        self.status = widgets.HTML(self._waiting_text())
        self.error_html = ErrorArea()
        self.monitor = TrainingMonitor()
        self.margin_html = widgets.HTML()
        self.compare_box = widgets.VBox()
        self.train_button.on_click(lambda _: self._in_background(self.start))
        super().__init__(
            children=[
                self.data_path,
                widgets.HBox([self.held_out, self.beta, self.learning_rate]),
                widgets.HBox([self.max_steps, self.batch_size]),
                widgets.HBox([self.train_button, self.status]),
                self.error_html,
                self.monitor,
                self.margin_html,
                heading("SFT against SFT+DPO on held-out prompts"),
                self.compare_box,
            ]
        )

    def set_model(self, model, tokenizer, template: Template | str, parent=None) -> None:
        """The instruction-tuned model (e.g. a finished run's `run.model`) that DPO continues."""
        self.model, self.tokenizer, self.parent = model, tokenizer, parent
        self.template = get_template(template)
        self.status.value = self._waiting_text()

    def _waiting_text(self) -> str:
        if self.model is None:
            return "<i>Train an instruction-tuned model first (Train tab); DPO continues it.</i>"
        return "Ready: DPO continues the instruction-tuned adapter."

    @property
    def settings(self) -> PreferenceSettings:
        steps = self.max_steps.value
        return PreferenceSettings(
            beta=self.beta.value,
            learning_rate=self.learning_rate.value,
            max_steps=steps,
            batch_size=self.batch_size.value,
            eval_every=max(1, steps // 4),
            sample_max_new_tokens=24,
        )

    def start(self) -> None:
        """Split the pairs, answer held-out prompts with the SFT model, then start DPO."""
        if self.model is None:
            raise ValueError("No instruction-tuned model yet: train one in the Train tab first.")
        if self.run is not None and not self.run.done:
            raise ValueError("DPO is still training: stop it in the monitor first.")
        settings = self.settings
        pairs = load_data(self.data_path.value.strip(), verbose=False)
        train_pairs, held_out = split_data(pairs, self.held_out.value, seed=settings.seed)
        rows = as_answer_rows(held_out.select(range(min(self.compare_rows, len(held_out)))))
        self.status.value = "<i>Answering held-out prompts with the SFT model ...</i>"
        self._before = evaluate_model(
            self.model, self.tokenizer, rows, self.template, decoding=self.decoding
        )
        before = preference_margin(self.model, self.tokenizer, held_out, self.template)
        self.margins = [before.mean, None]
        self.compare_box.children = []
        run = train_preferences(
            self.model,
            self.tokenizer,
            train_pairs,
            held_out,
            template=self.template,
            settings=settings,
            parent=self.parent,
            start=False,
        )
        self.run = run
        self.monitor.attach(run)
        for event in ("finished", "stopped"):
            run.add_callback(event, lambda _e: self._guard(self._on_end, run, rows, held_out))
        run.start()
        self.status.value = f"DPO <code>{html.escape(run.run_dir.name)}</code> ..."

    def _on_end(self, run, rows, held_out) -> None:
        after = preference_margin(run.model, self.tokenizer, held_out, self.template)
        self.margins[1] = after.mean
        self.margin_html.value = (
            "Held-out log-probability margin, chosen minus rejected: "
            f"<b>{self.margins[0]:.3g} → {after.mean:.3g}</b> "
            f"(chosen likelier in {100 * after.accuracy:.0f}% of {len(held_out)} pairs)"
        )
        view = CompareView(
            run.model,
            self.tokenizer,
            rows,
            self.template,
            before=self._before,
            titles=("SFT", "SFT+DPO"),
            decoding=self.decoding,
        )
        view.run_comparison()  # the SFT answers were taken before DPO; now the SFT+DPO ones
        self.compare_panel = view
        self.compare_box.children = [view]
        self.status.value = f"DPO <code>{html.escape(run.run_dir.name)}</code> {run.status}."

    def wait(self, timeout: float | None = None) -> PreferencePanel:
        """Block until the button's work, the run and the comparison are done."""
        if self._worker is not None:
            self._worker.join(timeout)
        if self.run is not None:
            self.run.wait(timeout)
        return self

    # -- plumbing -------------------------------------------------------------------------
    def _in_background(self, fn) -> None:
        if self._worker is not None and self._worker.is_alive():
            self._show("Still busy with the last request; try again when it is done.")
            return
        self.train_button.disabled = True

        def work() -> None:
            try:
                self._guard(fn)
            finally:
                self.train_button.disabled = False

        self._worker = threading.Thread(target=work, name="preference-panel", daemon=True)
        self._worker.start()

    def _guard(self, fn, *args):
        try:
            return fn(*args)
        except Exception as error:  # noqa: BLE001 - shown to the user, not swallowed
            last = traceback.format_exception(type(error), error, error.__traceback__)[-2:]
            self._show(f"{type(error).__name__}: {error}\n{''.join(last).strip()}")
            return None

    def _show(self, message: str) -> None:
        self._errors.append(message)
        self.error_html.show("\n\n".join(self._errors[-5:]))

    @property
    def errors(self) -> list[str]:
        return list(self._errors)

    def static_text(self) -> str:
        run = f"{self.run.run_dir.name} ({self.run.status})" if self.run else "not started"
        return "\n".join([f"PreferencePanel: DPO run {run}", *self._errors[-5:]])

    def static_html(self) -> str:
        parts = ["<div><b>PreferencePanel</b></div>", self.error_html.value, self.margin_html.value]
        if self.run is not None:
            parts.append(self.monitor.static_html())
        if self.compare_panel is not None:
            parts.append(self.compare_panel.static_html())
        return "".join(parts)
