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
from workbench.tokens.templates import Template
from workbench.training.preference import PreferenceSettings
from workbench.widgets._common import heading
from workbench.widgets._run_panels import ContinuesTuning

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
    decoding = Decoding(max_new_tokens=32)  # how the compared answers are generated
    experiment: PreferenceExperiment | None = None

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
        super().__init__(model, tokenizer, template, parent)
        self.data_path = widgets.Text(
            value=str(data or SAMPLE), description="Pairs", layout=widgets.Layout(width="70%")
        )
        self.held_out = widgets.BoundedIntText(value=16, min=1, max=10_000, description="held out")
        self.beta = widgets.BoundedFloatText(value=settings.beta, min=0.001, max=10, step=0.05)
        self.beta.description = "beta"
        self._build_step_controls(
            settings.max_steps,
            settings.learning_rate,
            settings.batch_size,
            "pairs/step",
            most_batch=1024,
        )
        self._build_train_controls("Train DPO")
        self.margin_html = widgets.HTML()
        self.compare_box = widgets.VBox()
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
        return PreferenceSettings(
            beta=self.beta.value, **self._step_settings(), sample_max_new_tokens=24
        )

    @property
    def margins(self) -> list[float | None]:
        """The held-out margin (chosen minus rejected log-probability) before and after DPO."""
        return self._before_after(lambda e: (e.margin_before, e.margin_after))

    def start(self) -> None:
        """Start the library's preference experiment on the chosen pairs with the SFT model."""
        self._check_ready()
        self.status.value = "<i>Answering held-out prompts with the SFT model ...</i>"
        self.compare_box.children = []
        pairs = load_data(self.data_path.value.strip(), verbose=False)
        arguments = self._experiment_arguments()
        self._follow(preference_experiment(pairs, settings=self.settings, **arguments))

    def _on_end(self, experiment: PreferenceExperiment) -> None:
        """The run ended: the margin after DPO, and SFT against SFT+DPO side by side."""
        experiment.measure_after()
        self.margin_html.value = html.escape(experiment.summary())
        run = experiment.run
        self._show_comparison(experiment)  # the SFT answers were taken before DPO; now SFT+DPO
        self.status.value = f"DPO <code>{html.escape(run.run_dir.name)}</code> {run.status}."

    def static_text(self) -> str:
        return "\n".join([f"PreferencePanel: DPO run {self.run_summary()}", *self.errors[-5:]])

    def static_html(self) -> str:
        title = "<div><b>PreferencePanel</b></div>"
        results = [self.margin_html.value, self._monitor_html(), self._compare_html()]
        return "".join([title, self.error_html.value, *results])
