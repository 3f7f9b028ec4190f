"""Workbench: the whole fine-tune in one panel, in the order of the work.

Data -> Template -> Method -> Train -> Compare -> Preferences (DPO), as tabs sharing one
`WorkbenchState`, and Runs, the history of every run directory. Every step
calls the public library (`workbench.load_model`, `workbench.train.train`, `evaluate_model`), so
whatever is clicked here can be written as a script.
"""

from __future__ import annotations

import html
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ipywidgets as widgets

import workbench
from widgets._common import ErrorArea, StaticFallback
from widgets.compare_view import CompareView
from widgets.dataset_preview import DatasetPreview
from widgets.lora_form import LoraForm
from widgets.preference_panel import PreferencePanel
from widgets.run_browser import RunBrowser
from widgets.template_editor import TemplateEditor
from widgets.training_monitor import TrainingMonitor
from workbench.adapters import Method
from workbench.data import Examples
from workbench.evaluation import Evaluation, evaluate_model
from workbench.hyperparameters import Hyperparameters
from workbench.templates import Template, get_template
from workbench.tokenize import tokenize_examples

TITLES = ("1 Data", "2 Template", "3 Method", "4 Train", "5 Compare", "6 Preferences", "7 Runs")
DATA, TEMPLATE, METHOD, TRAIN, COMPARE, PREFERENCES, RUNS = range(7)


@dataclass
class WorkbenchState:
    """What the tabs share: the model, the rows, the settings, the run and the "before"."""

    model: Any = None
    tokenizer: Any = None
    examples: Examples | None = None
    train: Examples | None = None
    validation: Examples | None = None
    template: Template | None = None
    completion_only: bool = True
    max_length: int = 256
    method: Method | None = None
    hyperparameters: Hyperparameters | None = None
    run: Any = None  # workbench.run.Run
    before: Evaluation | None = None  # base answers, measured before full fine-tuning
    compare_rows: Examples | None = None  # the validation rows the Compare tab answers


class Workbench(StaticFallback, widgets.VBox):
    """A model bar and seven tabs: Data, Template, Method, Train, Compare, Preferences, Runs.

    Children: `.model_name` (Text), `.load_button`, `.model_status`, `.error_html`, `.tabs`
    (Tab), `.data_path` (Text), `.data_button` ("Load data"), `.data_panel` (DatasetPreview),
    `.template_panel` (TemplateEditor; None until a tokenizer and rows exist), `.method_panel`
    (LoraForm), `.train_button`, `.train_status`, `.monitor` (TrainingMonitor),
    `.compare_panel` (CompareView; None until a run ends), `.preference_panel`
    (PreferencePanel: DPO on the trained model), `.run_browser` (RunBrowser). `.state` is the shared
    WorkbenchState; `wait()` blocks until the last button's work and the run are done.
    """

    dom_class = "wb-workbench"

    before_rows = 8  # validation rows answered before and after training (the Compare tab)

    def __init__(
        self,
        model=None,
        tokenizer=None,
        data=None,
        *,
        template: Template | str = "alpaca",
        model_name: str | None = None,
        method: Method | None = None,
        hyperparameters: Hyperparameters | None = None,
    ) -> None:
        super().__init__()
        self.state = WorkbenchState(model=model, tokenizer=tokenizer)
        self.state.template = get_template(template)
        self._worker: threading.Thread | None = None
        self._errors: list[str] = []
        self.error_html = ErrorArea()
        self._build_model_bar(model, model_name)
        self._build_data_tab(data)
        self.template_panel: TemplateEditor | None = None
        self.method_panel = LoraForm(model, method=method, hyperparameters=hyperparameters)
        self._build_train_tab()
        self.compare_panel: CompareView | None = None
        self.preference_panel = PreferencePanel(template=self.state.template)
        self.run_browser = RunBrowser()
        self.tabs = widgets.Tab()
        self._show_tabs()
        self.tabs.observe(self._on_tab, names="selected_index")
        self.children = [
            widgets.HBox([self.model_name, self.load_button, self.model_status]),
            self.error_html,
            self.tabs,
        ]
        self._guard(self._build_template_panel)

    # -- building -------------------------------------------------------------------------
    def _build_model_bar(self, model, model_name: str | None) -> None:
        self.model_name = widgets.Text(
            value=model_name or workbench.DEFAULT_MODEL,
            description="Model",
            placeholder="embedded default, a local folder or a hub id",
            disabled=model is not None,
        )
        self.load_button = widgets.Button(
            description="Load model", icon="download", disabled=model is not None
        )
        self.model_status = widgets.HTML(self._model_text())
        self.load_button.on_click(lambda _: self._in_background(self.load_model))

    def _build_data_tab(self, data) -> None:
        is_path = isinstance(data, (str, Path))
        self.data_path = widgets.Text(
            value=str(data) if is_path else "",
            description="Data",
            placeholder="path to .jsonl / .json / .csv / .parquet",
        )
        self.data_button = widgets.Button(description="Load data", icon="folder-open")
        self.data_button.on_click(lambda _: self._guard(self.load_data))
        self.data_panel = self._guard(self._new_data_panel, data) or self._new_data_panel(None)

    def _new_data_panel(self, data) -> DatasetPreview:
        settings = dict(tokenizer=self.state.tokenizer, template=self.state.template)
        if data is None or isinstance(data, Examples):
            return DatasetPreview(data, **settings)
        return DatasetPreview(source=data, **settings)

    def _build_train_tab(self) -> None:
        self.train_button = widgets.Button(description="Train", icon="play", button_style="success")
        self.train_status = widgets.HTML("Set up the data, template and method, then Train.")
        self.train_button.on_click(lambda _: self._in_background(self.start_training))
        self.monitor = TrainingMonitor()

    def _show_tabs(self) -> None:
        """Reassign the tabs' children (a new panel replaces a placeholder or an old panel)."""
        waiting = "<i>{}</i>"
        template = self.template_panel or widgets.HTML(
            waiting.format("The template editor appears once a model is loaded and data chosen.")
        )
        compare = self.compare_panel or widgets.HTML(
            waiting.format("The comparison appears when a training run has ended.")
        )
        self.tabs.children = [
            widgets.VBox([widgets.HBox([self.data_path, self.data_button]), self.data_panel]),
            template,
            self.method_panel,
            widgets.VBox([widgets.HBox([self.train_button, self.train_status]), self.monitor]),
            compare,
            self.preference_panel,
            self.run_browser,
        ]
        ready = " ✓" if self.compare_panel is not None else ""
        self.tabs.titles = TITLES[:COMPARE] + (TITLES[COMPARE] + ready,) + TITLES[PREFERENCES:]

    def _build_template_panel(self) -> None:
        """(Re)build the template editor once a tokenizer and rows exist, or the rows changed."""
        examples = self.data_panel.examples
        current = self.template_panel
        if self.state.tokenizer is None or examples is None:
            return
        if current is not None and current.examples is examples:
            return
        self.template_panel = TemplateEditor(
            self.state.tokenizer,
            examples,
            template=current.template if current else self.state.template,
            max_length=current.max_length if current else self.state.max_length,
        )
        self._show_tabs()

    def _on_tab(self, change) -> None:
        if change["new"] == TEMPLATE:
            self._guard(self._build_template_panel)
        elif change["new"] == DATA and self.template_panel is not None:
            editor = self.template_panel  # lengths in the Data tab follow the edited template
            self._guard(self.data_panel.set_template, editor.template, editor.max_length)
        elif change["new"] == METHOD:
            self._guard(self._method_rows)
        elif change["new"] == RUNS:
            self._guard(self.run_browser.refresh)

    def _method_rows(self) -> None:
        """The Method tab predicts memory for the training rows as the template tokenizes them."""
        split, editor = self.data_panel.split, self.template_panel
        if split is None or editor is None or self.state.tokenizer is None:
            return
        # training takes max_length from the Template tab: the form shows the same
        self.method_panel.hyperparameter_controls["max_length"].value = editor.max_length
        self.method_panel.use_rows(
            tokenize_examples(
                split[0],
                editor.template,
                self.state.tokenizer,
                max_length=editor.max_length,
                completion_only=editor.completion_only,
            )
        )

    # -- the work behind the buttons ------------------------------------------------------
    def load_model(self) -> None:
        """Load the model named in `model_name`, then rebuild the tabs that need it."""
        name = self.model_name.value.strip() or workbench.DEFAULT_MODEL
        self.model_status.value = f"<i>Loading {html.escape(name)} ...</i>"
        model, tokenizer = workbench.load_model(name)
        self.state.model, self.state.tokenizer = model, tokenizer
        old = self.method_panel
        self.method_panel = LoraForm(model, method=old.method, hyperparameters=old.hyperparameters)
        self.data_panel = self._new_data_panel(self.data_panel.examples)  # token lengths now
        self.model_status.value = self._model_text()
        self.model_name.disabled = True
        self._show_tabs()
        self._build_template_panel()

    def load_data(self) -> None:
        """Load the file named in `data_path` into the Data tab (problems are shown there)."""
        path = self.data_path.value.strip()
        if not path:
            raise ValueError("Type the path of a data file in `Data` first.")
        self.data_panel = self._new_data_panel(path)
        self._show_tabs()
        self._build_template_panel()

    def collect(self) -> WorkbenchState:
        """Read every tab into the shared state; raises, naming the tab, if one is not ready."""
        state = self.state
        if state.model is None:
            raise ValueError("No model yet: press `Load model` first.")
        state.examples = self.data_panel.examples
        if state.examples is None:
            raise ValueError("No data yet: load a dataset in the Data tab (and fix its problems).")
        if self.data_panel.split is None:
            raise ValueError("The Data tab has no train/validation split: see its message.")
        state.train, state.validation = self.data_panel.split
        self._build_template_panel()
        editor = self.template_panel
        if editor.error.message:
            raise ValueError(f"The Template tab has a problem: {editor.error.message}")
        state.template = editor.template
        state.completion_only, state.max_length = editor.completion_only, editor.max_length
        if self.method_panel.error.message:
            raise ValueError(f"The Method tab has a problem: {self.method_panel.error.message}")
        state.method = self.method_panel.method
        state.hyperparameters = self.method_panel.hyperparameters.replace(
            max_length=state.max_length, completion_only=state.completion_only
        )
        return state

    def start_training(self) -> None:
        """Collect the tabs, answer "before" rows for full fine-tuning, then start a run."""
        state = self.collect()
        if state.run is not None and not state.run.done:
            raise ValueError("A run is still training: stop it (Train tab) before a new one.")
        self._set_compare(None)
        rows = min(self.before_rows, len(state.validation))
        state.compare_rows = state.validation.select(range(rows))
        state.before = None
        if not state.method.uses_lora:  # no adapter to switch off later: measure the base now
            self.train_status.value = "<i>Answering validation rows before training ...</i>"
            state.before = evaluate_model(
                state.model, state.tokenizer, state.compare_rows, state.template
            )
        from workbench.train import train

        self.train_status.value = "<i>Tokenizing and starting ...</i>"
        run = train(
            state.model,
            state.tokenizer,
            state.train,
            state.validation,
            template=state.template,
            method=state.method,
            hyperparameters=state.hyperparameters,
            start=False,
        )
        state.run = run
        self.monitor.attach(run)
        for event in ("finished", "stopped"):
            run.add_callback(event, lambda _e: self._guard(self._on_run_end, run))
        run.add_callback("failed", lambda _e: self._on_run_failed(run))
        run.start()
        self.train_status.value = f"Training <code>{html.escape(run.run_dir.name)}</code> ..."

    def _on_run_end(self, run) -> None:
        """A run stopped or finished: its model goes to the Compare tab."""
        state = self.state
        state.model = run.model  # a second Train continues from these weights
        view = CompareView(
            run.model, state.tokenizer, state.compare_rows, state.template, before=state.before
        )
        self._set_compare(view)
        if run.method.uses_lora:  # DPO continues the adapter
            self.preference_panel.set_model(run.model, state.tokenizer, state.template, run.run_dir)
        self._guard(self.run_browser.refresh)
        self.train_status.value = (
            f"Run <code>{html.escape(run.run_dir.name)}</code> {run.status}: compare the "
            "answers in the Compare tab. Train again continues from these weights."
        )

    def _on_run_failed(self, run) -> None:
        self.train_status.value = (
            f"<b>Run {html.escape(run.run_dir.name)} failed</b>: the reason is shown below."
        )

    def _set_compare(self, view: CompareView | None) -> None:
        self.compare_panel = view
        self._show_tabs()

    def wait(self, timeout: float | None = None) -> Workbench:
        """Block until the last button's work and the current run are done (tests, scripts)."""
        if self._worker is not None:
            self._worker.join(timeout)
        if self.state.run is not None:
            self.state.run.wait(timeout)
        self.preference_panel.wait(timeout)
        return self

    # -- plumbing -------------------------------------------------------------------------
    def _in_background(self, fn) -> None:
        """Run a button's work on a thread, so the notebook stays responsive meanwhile."""
        if self._worker is not None and self._worker.is_alive():
            self.show_error("Still busy with the last request; try again when it is done.")
            return
        self.train_button.disabled = self.load_button.disabled = True

        def work() -> None:
            try:
                self._guard(fn)
            finally:
                self.train_button.disabled = False
                self.load_button.disabled = self.state.model is not None
                if self.state.model is None:
                    self.model_status.value = self._model_text()

        self._worker = threading.Thread(target=work, name="workbench-app", daemon=True)
        self._worker.start()

    def _guard(self, fn, *args, **kwargs):
        """Call `fn`; an exception lands in the error area instead of being lost."""
        try:
            return fn(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 - shown to the user, not swallowed
            self.show_error(error)
            return None

    def show_error(self, error: BaseException | str) -> None:
        """Add an error to the red area (the last five stay visible)."""
        if isinstance(error, BaseException):
            last = traceback.format_exception(type(error), error, error.__traceback__)[-2:]
            error = f"{type(error).__name__}: {error}\n{''.join(last).strip()}"
        self._errors.append(error)
        self.error_html.show("\n\n".join(self._errors[-5:]))

    @property
    def errors(self) -> list[str]:
        return list(self._errors)

    def _model_text(self) -> str:
        model = self.state.model
        if model is None:
            return "<i>No model loaded.</i>"
        name = getattr(model, "workbench_source", None) or model.config.name_or_path
        return f"Model: <code>{html.escape(str(name))}</code>"

    # -- without a widget frontend (StaticFallback) ----------------------------------------
    def _summary_lines(self) -> list[str]:
        state, run = self.state, self.state.run
        model = "none" if state.model is None else self.model_name.value
        rows = self.data_panel.examples
        template = self.template_panel.template if self.template_panel else state.template
        return [
            f"model: {model}",
            f"data: {len(rows) if rows is not None else 'none'} rows",
            f"template: {template.name}",
            f"method: {self.method_panel.method.kind}",
            f"run: {f'{run.run_dir.name} ({run.status})' if run else 'not started'}",
        ]

    def static_text(self) -> str:
        return "\n".join(["Workbench", *self._summary_lines(), *self._errors[-5:]])

    def static_html(self) -> str:
        items = "".join(f"<li>{html.escape(line)}</li>" for line in self._summary_lines())
        parts = [f"<div><b>Workbench</b></div><ul>{items}</ul>", self.error_html.value]
        if self.state.run is not None:
            parts.append(self.monitor.static_html())
        if self.compare_panel is not None:
            parts.append(self.compare_panel.static_html())
        return "".join(parts)
