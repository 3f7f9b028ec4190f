"""WorkbenchApp: the whole fine-tune in one panel, in the order of the work.

Data -> Template -> Method -> Train -> Compare -> Preferences (DPO, or a reward model + RL), as
tabs sharing one `WorkbenchState`, Runs, the history of every run directory, and Other
objectives (a classification head, continued pre-training). The panels are linked by their
traits when the Workbench is built: the rows loaded in the Data tab flow into the Template tab,
its template and max_length back into the Data tab's lengths and into the Method tab, whose
memory prediction follows the training rows as the template tokenizes them. Every step calls
the public library (`workbench.load_model`, `train`, `evaluate_model`), so whatever is clicked
here is also one script ("copy as code") and a recipe for `python -m workbench train` ("copy as
recipe").
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import traitlets

import workbench
from workbench.data.loading import Examples
from workbench.evaluation.compare import evaluate_model, needs_base_measurement
from workbench.interfaces import code as codegen
from workbench.model.loading import model_origin
from workbench.model.methods import Method
from workbench.runs.hyperparameters import Hyperparameters
from workbench.tokens.templates import Template, get_template
from workbench.widgets._common import Panel, ShowsCode, shown_path
from workbench.widgets._errors import ErrorArea, set_enabled
from workbench.widgets._sequence import SequenceControls
from workbench.widgets._workbench_state import WorkbenchState
from workbench.widgets.classifier_panel import ClassifierPanel
from workbench.widgets.compare_view import CompareView
from workbench.widgets.dataset_preview import DatasetPreview
from workbench.widgets.lora_form import LoraForm
from workbench.widgets.preference_panel import PreferencePanel
from workbench.widgets.pretrain_panel import PretrainPanel
from workbench.widgets.rl_panel import RLPanel
from workbench.widgets.run_browser import RunBrowser
from workbench.widgets.template_editor import TemplateEditor
from workbench.widgets.training_monitor import TrainingMonitor

TITLES = (
    *("1 Data", "2 Template", "3 Method", "4 Train", "5 Compare", "6 Preferences", "7 Runs"),
    "8 Other objectives",
)
DATA, TEMPLATE, METHOD, TRAIN, COMPARE, PREFERENCES, RUNS, OTHER = range(8)
NO_COMPARISON = "<i>The comparison appears when a training run has ended.</i>"
TRAIN_TOOLTIP = "Train on the Data tab's rows with the Template and Method tabs' settings"


class WorkbenchApp(ShowsCode, Panel):
    """A model bar and eight tabs: Data, Template, Method, Train, Compare, Preferences, Runs,
    Other objectives.

    Children: `.model_name` (Text), `.load_button`, `.model_status`, `.model_error` (the model
    bar's errors), `.tabs` (Tab: its eight children are built once and stay, so the tab a person
    is on stays selected), `.data_path` (Text), `.data_button` ("Load data"), `.data_error`,
    `.data_panel` (DatasetPreview),
    `.template_panel` (TemplateEditor; it says what is missing until a tokenizer and rows
    exist), `.method_panel` (LoraForm), `.train_button` (disabled, its tooltip saying why,
    before a model is loaded and while a run trains), `.train_status`, `.train_error`, `.sequence`
    (SequenceControls: the run Train continues, a remedy against forgetting, importance
    tracking), `.monitor` (TrainingMonitor), `.compare_box` (the Compare tab: `.compare_panel`,
    a CompareView, once a run has ended; None before),
    `.preference_panel` (PreferencePanel: DPO on the trained model) and `.rl_panel` (RLPanel),
    chosen with `.preference_choice`, `.run_browser` (RunBrowser), `.classifier_panel`
    (ClassifierPanel, on the Data tab's rows) and `.pretrain_panel` (PretrainPanel), chosen
    with `.objective_choice` (both load their own copy of the model), `.copy_button` and
    `.recipe_button` (the script and the recipe, shown in `.code` and `.recipe`; their errors in
    `.error_html`, below them). Each button's error shows beside it, as one sentence when it is a
    condition to fix. `.state` is the shared WorkbenchState; `wait()` blocks until the last
    button's work and the run are done.
    """

    dom_class = "wb-workbench"

    before_rows = 8  # validation rows answered before and after training (the Compare tab)

    def __init__(
        self,
        model=None,
        tokenizer=None,
        data=None,
        *,
        template: Template | str | None = None,
        model_name: str | None = None,
        method: Method | None = None,
        hyperparameters: Hyperparameters | None = None,
    ) -> None:
        super().__init__()
        self.state = WorkbenchState(model=model, tokenizer=tokenizer)
        self._template_chosen = template is not None  # else: the one that suits the data
        self.state.template = get_template(template, "alpaca")
        if hyperparameters is not None:  # the Template tab starts from the given settings
            self.state.max_length = hyperparameters.max_length
            self.state.completion_only = hyperparameters.completion_only
        self._build_model_bar(model, model_name)
        self._build_data_tab(data)
        if not self._template_chosen and self.data_panel.examples is not None:
            self.state.template = get_template(None, self.data_panel.examples.format)
        self.template_panel = TemplateEditor(
            tokenizer,
            self.data_panel.examples,
            template=self.state.template,
            max_length=self.state.max_length,
            completion_only=self.state.completion_only,
        )
        self.method_panel = LoraForm(model, method=method, hyperparameters=hyperparameters)
        self._build_train_tab()
        self.compare_panel: CompareView | None = None
        self.preference_panel = PreferencePanel(template=self.state.template)
        self.rl_panel = RLPanel(template=self.state.template)
        self.preference_choice, self.preference_tab = _choice(
            {"DPO": self.preference_panel, "reward model + RL": self.rl_panel}
        )
        self.run_browser = RunBrowser()
        self.classifier_panel = ClassifierPanel(data=self.data_panel.examples)
        self.pretrain_panel = PretrainPanel()
        self.objective_choice, self.objective_tab = _choice(
            {"classification head": self.classifier_panel, "pre-training": self.pretrain_panel}
        )
        if model is not None:
            self._share_model_name(model)
        self._build_tabs()
        self._link_panels()
        self.tabs.observe(self._on_tab, names="selected_index")
        self._build_code("20em")
        self.recipe_button, self.recipe = self._code_button("copy as recipe", self.as_recipe)
        self._show_train_readiness()
        self.children = [
            widgets.HBox([self.model_name, self.quantization, self.load_button, self.model_status]),
            self.model_error,
            self.tabs,
            widgets.HBox([self.copy_button, self.recipe_button]),
            self.error_html,
            self.code,
            self.recipe,
        ]

    # -- building -------------------------------------------------------------------------
    def _build_model_bar(self, model, model_name: str | None) -> None:
        self.model_name = widgets.Text(
            value=model_name or workbench.DEFAULT_MODEL,
            description="Model",
            placeholder="embedded default, a local folder or a hub id",
            disabled=model is not None,
        )
        # QLoRA in the Method tab needs a 4-bit base: the model is loaded quantised here
        self.quantization = widgets.Dropdown(
            options=[("full precision", "full"), ("4-bit (QLoRA)", "4bit"), ("8-bit", "8bit")],
            value="full",  # not None: a Dropdown shows a None value as a blank box
            description="Weights",
            disabled=model is not None,
        )
        self.load_button = widgets.Button(
            description="Load model", icon="download", disabled=model is not None
        )
        self.model_status = widgets.HTML(self._model_text())
        self.model_error = ErrorArea()
        self.load_button.on_click(lambda _: self._in_background(self.load_model, self.model_error))

    def _build_data_tab(self, data) -> None:
        is_path = isinstance(data, (str, Path))
        self.data_path = widgets.Text(
            value=str(data) if is_path else "",
            description="Data",
            placeholder="path to .jsonl / .json / .csv / .parquet",
            layout=widgets.Layout(width="60%"),  # a whole path, not cut
        )
        self.data_button = widgets.Button(description="Load data", icon="folder-open")
        self.data_error = ErrorArea()
        self.data_button.on_click(lambda _: self.guard_at(self.data_error, self.load_data))
        settings = dict(tokenizer=self.state.tokenizer, template=self.state.template)
        if is_path:
            self.data_panel = DatasetPreview(source=data, **settings)
        else:
            self.data_panel = DatasetPreview(data, **settings)

    def _build_train_tab(self) -> None:
        self.train_button = widgets.Button(
            description="Train", icon="play", button_style="success", tooltip=TRAIN_TOOLTIP
        )
        self.train_status = widgets.HTML()
        self.train_error = ErrorArea()
        self.train_button.on_click(
            lambda _: self._in_background(self.start_training, self.train_error)
        )
        self.sequence = SequenceControls()
        self.monitor = TrainingMonitor()

    def _build_tabs(self) -> None:
        """The eight tabs, once. Their children stay: reassigning them would rebuild every
        view in them (a plotly figure whose view is rebuilt stops drawing: its old view still
        takes the updates, and fails) and would send the person back to the first tab."""
        self.compare_box = widgets.VBox([widgets.HTML(NO_COMPARISON)])
        data_bar = widgets.HBox([self.data_path, self.data_button])
        train_bar = widgets.HBox([self.train_button, self.train_status])
        self.tabs = widgets.Tab(
            children=[
                widgets.VBox([data_bar, self.data_error, self.data_panel]),
                self.template_panel,
                self.method_panel,
                widgets.VBox([train_bar, self.train_error, self.sequence, self.monitor]),
                self.compare_box,
                self.preference_tab,
                self.run_browser,
                self.objective_tab,
            ],
            titles=TITLES,
        )

    def _link_panels(self) -> None:
        """Wire the panels' traits once: each change flows on by itself, no tab pulls."""
        data, editor, form = self.data_panel, self.template_panel, self.method_panel
        # the rows loaded in the Data tab are the ones the Template tab previews
        traitlets.dlink((data, "examples"), (editor, "examples"))
        traitlets.dlink((data, "examples"), (self.classifier_panel, "examples"))
        # the Data tab measures token lengths as the Template tab tokenizes
        for name in ("tokenizer", "template", "max_length"):
            traitlets.dlink((editor, name), (data, name))
        # training takes max_length and completion_only from the Template tab (the Method tab
        # shows them greyed out), and the Method tab predicts memory for the training rows as
        # the template tokenizes them
        form.follow(editor)
        traitlets.dlink((data, "split"), (form, "training_examples"), transform=_train_part)
        self.sequence.follow(form)  # importance tracking defaults to on for LoRA
        data.observe(self._template_for_format, names="examples")
        for panel in (data, editor, form):  # a tab fixed: what Train said about it is gone
            panel.observe(self._forget_train_error, names="valid")

    def _forget_train_error(self, change) -> None:
        if change["new"]:
            self.train_error.clear()

    def _template_for_format(self, change) -> None:
        """Rows of another format (a `messages` file after an Alpaca one): unless the user
        chose a template, the Template tab switches to the one that suits them."""
        examples = change["new"]
        if self._template_chosen or examples is None:
            return
        suits = get_template(None, examples.format)
        if self.template_panel.template.name != suits.name:
            self.template_panel.template_name.value = suits.name

    def _on_tab(self, change) -> None:
        if change["new"] == RUNS:  # other processes may have written runs meanwhile
            self.run_browser.guard(self.run_browser.refresh)

    # -- the work behind the buttons ------------------------------------------------------
    def load_model(self) -> None:
        """Load the model named in `model_name`; the tabs that need it follow by themselves."""
        name = self.model_name.value.strip() or workbench.DEFAULT_MODEL
        self.model_status.value = f"<i>Loading {html.escape(name)} ...</i>"
        quantization = None if self.quantization.value == "full" else self.quantization.value
        model, tokenizer = workbench.load_model(name, quantization=quantization)
        self.state.model, self.state.tokenizer = model, tokenizer
        self.state.stage_runs, self.state.stage_rows = [], []  # a fresh model continues nothing
        self.sequence.show_previous(None, None)
        if self.quantization.value == "4bit":  # only adapters train on a 4-bit base
            self.method_panel.method_controls["kind"].value = "qlora"
        self.method_panel.set_model(model)
        self._share_model_name(model)
        self.template_panel.tokenizer = tokenizer  # the Data and Method tabs follow it
        self.model_status.value = self._model_text()
        self.model_name.disabled = self.quantization.disabled = True
        self.train_error.clear()  # e.g. "No model yet": the next press checks again

    def load_data(self) -> None:
        """Load the file named in `data_path` into the Data tab (problems are shown there)."""
        path = self.data_path.value.strip()
        if not path:
            raise ValueError("Type the path of a data file in `Data` first.")
        self.data_panel.load(path)

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
        editor, form = self.template_panel, self.method_panel
        if not editor.valid:
            raise ValueError(f"The Template tab has a problem: {editor.error.message}")
        state.template = editor.template
        state.completion_only, state.max_length = editor.completion_only, editor.max_length
        if not form.valid:
            raise ValueError(f"The Method tab has a problem: {form.error.message}")
        # max_length and completion_only reached the form from the Template tab (links)
        state.method, state.hyperparameters = form.method, form.hyperparameters
        return state

    def start_training(self) -> None:
        """Collect the tabs, plan the stage (after a run: its remedy), answer "before" rows for
        full fine-tuning, then start a run that continues the previous one's model."""
        state = self.collect()
        if state.run is not None and not state.run.done:
            raise ValueError("A run is still training: stop it (Train tab) before a new one.")
        self.train_status.value = "<i>Planning the stage ...</i>"  # EWC measures a Fisher
        plan, rows, continued_from = self.sequence.plan(state), state.train, state.continued_from
        self._set_compare(None)
        state.compare_rows = state.validation.select(range(self._compare_rows(state)))
        state.before = None
        if needs_base_measurement(state.method):  # no adapter to switch off later
            self.train_status.value = "<i>Answering validation rows before training ...</i>"
            state.before = evaluate_model(
                state.model, state.tokenizer, state.compare_rows, state.template
            )
        from workbench.training.finetune import train

        self.train_status.value = "<i>Tokenizing and starting ...</i>"
        run = train(
            state.model,
            state.tokenizer,
            plan.train,
            state.validation,
            template=state.template,
            method=state.method,
            settings=state.hyperparameters,
            regularizer=plan.regularizer,
            track_importance=plan.track_importance,
            parent=continued_from,
            start=False,
        )
        state.run = run
        self.monitor.attach(run)
        for event in ("finished", "stopped"):
            run.add_callback(
                event, lambda _e: self.guard_at(self.train_error, self._on_run_end, run, rows)
            )
        run.add_callback("failed", lambda _e: self._on_run_failed(run))
        run.start()
        self.train_status.value = f"Training <code>{html.escape(run.run_dir.name)}</code> ..."

    def _compare_rows(self, state: WorkbenchState) -> int:
        """How many validation rows the Compare tab answers before and after."""
        return min(self.before_rows, len(state.validation))

    def as_code(self) -> str:
        """Everything set up here as one script: load the model, load and split the data, the
        template, method and hyperparameters, train, then compare before and after."""
        state, settings = self._code_settings()
        data, rows = self.data_panel.rows_code(), self._compare_rows(state)
        continues = state.continued_from  # the script then trains this last stage alone
        return codegen.workbench_script(
            **settings, data=data, compare_rows=rows, continues=continues
        )

    def as_recipe(self) -> str:
        """The same settings as a recipe (YAML) for `python -m workbench train RECIPE.yaml`."""
        (state, settings), data = self._code_settings(), self.data_panel
        if not isinstance(data.source, (str, Path)):
            raise ValueError("A recipe names its data file: load the rows from a file (Data tab).")
        mapping = codegen.recipe_mapping(
            **settings,
            data_file=data.source,
            split=data.validation,
            seed=data.seed,
            columns=data.columns,
            drop_invalid=bool(state.examples.dropped),
        )
        rows, continues = self._compare_rows(state), state.continued_from
        return codegen.recipe_yaml(mapping, compare_rows=rows, continues=continues)

    def _code_settings(self) -> tuple[WorkbenchState, dict[str, Any]]:
        """The tabs read into the state, and the model and settings the code is written with."""
        state = self.collect()
        name, quantization = model_origin(state.model)
        return state, dict(
            model=name,
            quantization=quantization,
            template=state.template,
            method=state.method,
            hyperparameters=state.hyperparameters,
        )

    def _on_run_end(self, run, rows: Examples) -> None:
        """A run stopped or finished: its model goes to the Compare tab, and the next Train
        continues it (`rows`: the run's own training rows, before any replay)."""
        state = self.state
        state.model = run.model  # a second Train continues from these weights
        state.stage_runs, state.stage_rows = [*state.stage_runs, run], [*state.stage_rows, rows]
        self.sequence.show_previous(run, rows)
        view = CompareView(
            run.model, state.tokenizer, state.compare_rows, state.template, before=state.before
        )
        self._set_compare(view)
        if run.method.uses_lora:  # DPO and RL continue the adapter
            self.preference_panel.set_model(run.model, state.tokenizer, state.template, run.run_dir)
            self.rl_panel.set_model(run.model, state.tokenizer, state.template, run.run_dir)
        self.run_browser.guard(self.run_browser.refresh)
        self.train_status.value = (
            f"Run <code>{html.escape(run.run_dir.name)}</code> {run.status}: compare the "
            "answers in the Compare tab. Train again continues from these weights (below)."
        )
        self._show_train_readiness()

    def _on_run_failed(self, run) -> None:
        self.train_status.value = (
            f"<b>Run {html.escape(run.run_dir.name)} failed</b>: the reason is shown below."
        )
        self._show_train_readiness()

    def _set_compare(self, view: CompareView | None) -> None:
        """The Compare tab shows `view` (or its placeholder); its title says when one is there.
        The tab's box changes its child, the tabs keep theirs."""
        self.compare_panel = view
        self.compare_box.children = [view or widgets.HTML(NO_COMPARISON)]
        ready = " ✓" if view is not None else ""
        self.tabs.titles = TITLES[:COMPARE] + (TITLES[COMPARE] + ready,) + TITLES[PREFERENCES:]

    def wait(self, timeout: float | None = None) -> WorkbenchApp:
        """Block until the last button's work and the current run are done (tests, scripts)."""
        super().wait(timeout)
        if self.state.run is not None:
            self.state.run.wait(timeout)
        others = (self.preference_panel, self.rl_panel, self.classifier_panel, self.pretrain_panel)
        for panel in others:
            panel.wait(timeout)
        return self

    def _share_model_name(self, model) -> None:
        """The classification head and pre-training load their own copy of the model by its
        name, so the model the Train tab trains (and LoRA changes in place) stays as it is."""
        name, _ = model_origin(model)
        self.classifier_panel.set_model(model_name=name)
        self.pretrain_panel.set_model(model_name=name)

    # -- plumbing -------------------------------------------------------------------------
    def _in_background(self, fn, errors: ErrorArea) -> None:
        """A button's work on a thread, so the notebook stays responsive meanwhile; its errors
        show in `errors`, beside the button. Train and Load model are off until it is done."""
        if self.busy:  # refused, with its sentence
            self.in_background(fn, errors=errors)
            return
        self.load_button.disabled = True
        set_enabled(self.train_button, "Busy with the last request: a moment.")
        self.in_background(fn, then=self._after_work, errors=errors)

    def _after_work(self) -> None:
        self.load_button.disabled = self.state.model is not None
        if self.state.model is None:
            self.model_status.value = self._model_text()
        self._show_train_readiness()

    def train_blocked_by(self) -> str | None:
        """Why Train cannot start now (no model, a run still training), or None."""
        if self.state.model is None:
            return "Load a model first (Load model, above the tabs)."
        run = self.state.run
        if run is not None and not run.done:
            return "A run is training: stop it in the monitor below, or wait for it to end."
        return None

    def _show_train_readiness(self) -> None:
        """Train is enabled exactly when it can start; otherwise its tooltip says why (and,
        before a model is loaded, the status beside it)."""
        reason = self.train_blocked_by()
        set_enabled(self.train_button, reason, TRAIN_TOOLTIP)
        if self.state.model is None:
            self.train_status.value = f"<i>{html.escape(reason)}</i>"
        elif self.state.run is None:  # a run's own status line stays while it is shown
            self.train_status.value = "Set up the data, template and method, then Train."

    def _model_text(self) -> str:
        model = self.state.model
        if model is None:
            return "<i>No model loaded.</i>"
        name, _ = model_origin(model)
        shown = shown_path(name) if Path(str(name)).exists() else str(name)  # a folder, or an id
        return f"Model: <code>{html.escape(shown)}</code>"

    # -- without a widget frontend (StaticFallback) ----------------------------------------
    def _summary_lines(self) -> list[str]:
        state, run = self.state, self.state.run
        model = "none" if state.model is None else self.model_name.value
        rows = self.data_panel.examples
        template = self.template_panel.template
        return [
            f"model: {model}",
            f"data: {len(rows) if rows is not None else 'none'} rows",
            f"template: {template.name}",
            f"method: {self.method_panel.method.kind}",
            f"run: {f'{run.run_dir.name} ({run.status})' if run else 'not started'}",
        ]

    def static_text(self) -> str:
        return "\n".join(["WorkbenchApp", *self._summary_lines(), *self.errors[-5:]])

    def static_html(self) -> str:
        items = "".join(f"<li>{html.escape(line)}</li>" for line in self._summary_lines())
        areas = (self.model_error, self.data_error, self.train_error, self.error_html)
        parts = [f"<div><b>WorkbenchApp</b></div><ul>{items}</ul>", *(a.value for a in areas)]
        if self.state.run is not None:
            parts.append(self.monitor.static_html())
        if self.compare_panel is not None:
            parts.append(self.compare_panel.static_html())
        return "".join(parts)


def _choice(panels: dict[str, widgets.Widget]) -> tuple[widgets.ToggleButtons, widgets.VBox]:
    """ToggleButtons above `panels`, of which only the chosen one is shown."""
    toggle = widgets.ToggleButtons(options=list(panels))

    def show(change=None) -> None:
        for name, panel in panels.items():
            panel.layout.display = None if name == toggle.value else "none"

    show()
    toggle.observe(show, names="value")
    return toggle, widgets.VBox([toggle, *panels.values()])


def _train_part(split: tuple[Examples, Examples] | None) -> Examples | None:
    """The training rows of a (train, validation) split."""
    return split[0] if split else None


# The name before 0.2: it read as the library (`workbench`) itself. Kept for one release.
Workbench = WorkbenchApp
