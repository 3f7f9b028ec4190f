"""PreferencePanel: DPO after instruction tuning, from the notebook.

Pick a preference file (prompt/chosen/rejected), set beta and the steps, press Train DPO: the
SFT model's adapter goes on learning while a TrainingMonitor shows the DPO loss and reward
margins; afterwards a CompareView puts the SFT answers next to the SFT+DPO answers. The
experiment itself (held-out split, margins before and after, the SFT answers) is
`workbench.experiments.preferences.preference_experiment`, which `workbench dpo` runs too.
"""

from __future__ import annotations

import html
from pathlib import Path

import ipywidgets as widgets

from workbench.data.loading import load_data
from workbench.experiments.preferences import PreferenceExperiment, preference_experiment
from workbench.model.generation import Decoding
from workbench.tokens.templates import Template, get_template
from workbench.training.preference import PreferenceSettings
from workbench.widgets._common import ContinuesTuning, heading
from workbench.widgets.compare_view import CompareView
from workbench.widgets.training_monitor import TrainingMonitor

SAMPLE = "sample_data/preferences.jsonl"  # the shipped file (found from any folder)


class PreferencePanel(ContinuesTuning):
    """DPO on top of an instruction-tuned model.

    Children: `.data_path`, `.held_out` (pairs kept out of training), `.beta`,
    `.learning_rate`, `.max_steps`, `.batch_size`, `.train_button`, `.status`, `.error_html`,
    `.monitor` (TrainingMonitor), `.margin_html`, `.compare_box` (the CompareView when the run
    ends). `.experiment` (the library's PreferenceExperiment), `.run`, `.compare_panel` and
    `.margins` (held-out margin before, after) hold results.
    """

    continues = "DPO"
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
        super().__init__()
        self.model, self.tokenizer, self.parent = model, tokenizer, parent
        self.template = get_template(template)
        self.experiment: PreferenceExperiment | None = None
        self.compare_panel: CompareView | None = None
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
        self.monitor = TrainingMonitor()
        self.margin_html = widgets.HTML()
        self.compare_box = widgets.VBox()
        self.train_button.on_click(lambda _: self.train_in_background())
        self.children = [
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

    @property
    def margins(self) -> list[float | None]:
        """The held-out margin (chosen minus rejected log-probability) before and after DPO."""
        if self.experiment is None:
            return [None, None]
        after = self.experiment.margin_after
        return [self.experiment.margin_before.mean, after.mean if after else None]

    def start(self) -> None:
        """Start the library's preference experiment on the chosen pairs with the SFT model."""
        self._check_ready()
        self.status.value = "<i>Answering held-out prompts with the SFT model ...</i>"
        self.compare_box.children = []
        experiment = preference_experiment(
            load_data(self.data_path.value.strip(), verbose=False),
            held_out=self.held_out.value,
            model=self.model,
            tokenizer=self.tokenizer,
            template=self.template,
            settings=self.settings,
            parent=self.parent,
            answer_rows=self.compare_rows,
            decoding=self.decoding,
            start=False,
        )
        self._follow(experiment)

    def _on_end(self, experiment: PreferenceExperiment) -> None:
        """The run ended: the margin after DPO, and SFT against SFT+DPO side by side."""
        experiment.measure_after()
        self.margin_html.value = html.escape(experiment.summary())
        run = experiment.run
        view = CompareView(
            run.model,
            self.tokenizer,
            experiment.answer_rows,
            self.template,
            before=experiment.answers_before,
            titles=("SFT", "SFT+DPO"),
            decoding=self.decoding,
        )
        view.run_comparison()  # the SFT answers were taken before DPO; now the SFT+DPO ones
        self.compare_panel = view
        self.compare_box.children = [view]
        self.status.value = f"DPO <code>{html.escape(run.run_dir.name)}</code> {run.status}."

    def static_text(self) -> str:
        return "\n".join([f"PreferencePanel: DPO run {self.run_summary()}", *self.errors[-5:]])

    def static_html(self) -> str:
        parts = ["<div><b>PreferencePanel</b></div>", self.error_html.value, self.margin_html.value]
        if self.run is not None:
            parts.append(self.monitor.static_html())
        if self.compare_panel is not None:
            parts.append(self.compare_panel.static_html())
        return "".join(parts)
