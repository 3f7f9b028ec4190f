"""ClassifierPanel: a classification head on the model, trained from the notebook.

The rows come from the Data tab (the Workbench passes them) or from a file; the label is one of
their fields (`output` for the support tickets). Choose "head only" or "head + LoRA", the steps
and the learning rate, press Train classifier: a TrainingMonitor follows the run (validation
accuracy at every evaluation); afterwards the confusion matrix of the held-out rows and, per
row, the predicted label and every label's probability. The run is
`workbench.training.classification.train_classifier`; the scoring is
`workbench.evaluation.classifying.evaluate_classifier`.
"""

from __future__ import annotations

import html
from pathlib import Path

import ipywidgets as widgets
import traitlets

from workbench.data.loading import Examples, load_data
from workbench.data.splits import split_data
from workbench.evaluation.classifying import ClassifierEvaluation, evaluate_classifier
from workbench.runs.hyperparameters import Hyperparameters
from workbench.training.classification import (
    DEFAULT_LEARNING_RATE,
    ClassifierSettings,
    train_classifier,
)
from workbench.training.heads import ClassifierFields
from workbench.widgets._common import heading, html_table, text_table
from workbench.widgets._run_panels import TakesModel

SAMPLE = "sample_data/support_tickets.jsonl"  # the shipped file (found from any folder)
METHODS = (("head only", "head"), ("head + LoRA", "head+lora"))


class ClassifierPanel(TakesModel):
    """A classification head trained on labelled rows, measured on rows kept out.

    `model`/`tokenizer`: the causal LM the head goes on (its body is shared, not copied). Without
    them, `model_name` is loaded with `workbench.load_model` at the first Train (the Workbench
    passes its model's name, so the head goes on a fresh copy and the model of the Train tab is
    left as it is). `data`: rows (`examples`), a file path, or None: the rows come from
    `examples`, which the Workbench links to its Data tab.

    Children: `.data_path` (a file; empty: `examples`), `.rows_info`, `.label_field`,
    `.held_out`, `.method` ('head' or 'head+lora'), `.max_steps`, `.learning_rate`,
    `.batch_size`, `.train_button`, `.status`, `.error_html`, `.monitor`, `.accuracy_html`,
    `.confusion_html`, `.rows_html`. Results: `.run`, `.before` and `.after`
    (ClassifierEvaluation of the held-out rows with the untrained and the trained head).
    """

    ready = "Ready: the head goes on the given model."
    named = "Ready: the head goes on <code>{}</code>."
    dom_class = "wb-classifier-panel"
    examples = traitlets.Instance(Examples, allow_none=True, help="rows, e.g. the Data tab's")
    shown_rows = 20  # held-out rows listed with their probabilities

    def __init__(
        self,
        model=None,
        tokenizer=None,
        data: Examples | str | Path | None = SAMPLE,
        *,
        model_name: str | None = None,
        hyperparameters: Hyperparameters | None = None,
    ) -> None:
        super().__init__(model, tokenizer, model_name)
        self.before: ClassifierEvaluation | None = None
        self.after: ClassifierEvaluation | None = None
        self._build_controls(data, hyperparameters or Hyperparameters(max_steps=40))
        self._build_train_controls("Train classifier")
        self.accuracy_html, self.confusion_html, self.rows_html = (widgets.HTML() for _ in "abc")
        self.method.observe(self._on_method, names="value")
        self.observe(self._on_rows, names="examples")
        self.data_path.observe(self._on_rows, names="value")
        self.examples = data if isinstance(data, Examples) else None
        self._on_rows()
        self.children = [
            widgets.HBox([self.data_path, self.rows_info]),
            widgets.HBox([self.label_field, self.held_out, self.method]),
            widgets.HBox([self.max_steps, self.learning_rate, self.batch_size]),
            widgets.HBox([self.train_button, self.status]),
            self.error_html,
            self.monitor,
            self.accuracy_html,
            heading("Confusion matrix of the held-out rows (rows: true label, columns: predicted)"),
            self.confusion_html,
            heading("Held-out rows: the predicted label and every label's probability"),
            self.rows_html,
        ]

    def _build_controls(self, data, hp: Hyperparameters) -> None:
        self.data_path = widgets.Text(
            value=str(data) if isinstance(data, (str, Path)) else "",
            description="Rows",
            placeholder="a data file; empty: the rows of the Data tab",
            layout=widgets.Layout(width="60%"),
        )
        self.rows_info = widgets.HTML()
        self.label_field = widgets.Text(value="output", description="label field")
        self.held_out = widgets.BoundedIntText(value=32, min=1, max=100_000, description="held out")
        self.method = widgets.ToggleButtons(options=METHODS, value="head")
        self._build_step_controls(
            hp.max_steps, DEFAULT_LEARNING_RATE["head"], hp.batch_size, "batch"
        )
        self._hyperparameters = hp

    def _on_method(self, change) -> None:
        """A fresh head needs a larger step than LoRA: the library's default for each."""
        self.learning_rate.value = DEFAULT_LEARNING_RATE[change["new"]]

    def _on_rows(self, _change=None) -> None:
        if self.data_path.value.strip():
            self.rows_info.value = "<i>rows from the file</i>"
        elif self.examples is not None:
            self.rows_info.value = f"{len(self.examples)} rows from the Data tab"
        else:
            self.rows_info.value = "<i>no rows: type a file, or load rows in the Data tab</i>"

    @property
    def hyperparameters(self) -> Hyperparameters:
        return self._hyperparameters.replace(
            **self._step_settings(),
            packing=False,  # rows are classified one by one
            eval_metric_rows=0,  # no answers to generate
        )

    def rows(self) -> Examples:
        """The rows to train and measure on: the file typed, else `examples`."""
        path = self.data_path.value.strip()
        if path:
            return load_data(path, verbose=False)
        if self.examples is None:
            raise ValueError(
                "No rows: type the path of a data file in `Rows`, or load rows in the Data tab."
            )
        return self.examples

    # -- the work behind the button -------------------------------------------------------
    def start(self) -> None:
        """Split off the held-out rows, put a head on the model, measure the untrained head on
        the held-out rows and start training it."""
        if self.run is not None and not self.run.done:
            raise ValueError("The classifier is still training: stop it in the monitor first.")
        hp = self.hyperparameters  # checked before any work starts
        train_rows, held_out = split_data(self.rows(), self.held_out.value, seed=hp.seed)
        fields = ClassifierFields.for_data(held_out, label_field=self.label_field.value.strip())
        model, tokenizer = self._model()
        self.accuracy_html.value = self.confusion_html.value = self.rows_html.value = ""
        run = train_classifier(
            model,
            tokenizer,
            train_rows,
            held_out,
            settings=ClassifierSettings(
                **hp.to_dict(), text_fields=fields.text_fields, label_field=fields.label_field
            ),
            method=self.method.value,
            start=False,
        )
        texts, labels = fields.texts(held_out), fields.labels(held_out)
        cut = hp.max_length  # texts are cut as training cuts them
        self.before = evaluate_classifier(run.model, tokenizer, texts, labels, max_length=cut)
        self._follow(run, texts, labels)

    def _model(self):
        """(model, tokenizer) as `TakesModel` gives them, refused when an adapter is on it."""
        super()._model()
        if hasattr(self.model, "peft_config"):  # PEFT changed it in place: not a plain body
            raise ValueError(
                "The model carries a LoRA adapter from an earlier run: a head goes on a plain "
                "causal LM. Load a fresh one (workbench.load_model) or set model_name instead."
            )
        return self.model, self.tokenizer

    def _on_end(self, run, texts: list[str], labels: list[str]) -> None:
        """The run ended: the held-out rows scored with the trained head."""
        cut = run.hyperparameters.max_length
        self.after = evaluate_classifier(run.model, run.tokenizer, texts, labels, max_length=cut)
        self.accuracy_html.value = html.escape(
            f"Held-out accuracy over {len(texts)} rows: {self.before.accuracy:.2f} with the "
            f"untrained head → {self.after.accuracy:.2f} after {run.method.describe()} training."
        )
        self.confusion_html.value = html_table(*self.confusion_table())
        self.rows_html.value = html_table(*self.rows_table())
        self.status.value = f"Classifier <code>{html.escape(run.run_dir.name)}</code> {run.status}."

    def confusion_table(self) -> tuple[list[str], list[list]]:
        """(headers, rows) of the trained head's confusion matrix on the held-out rows."""
        labels, matrix = self.after.labels, self.after.confusion_matrix()
        return ["true \\ predicted", *labels], [[t, *row] for t, row in zip(labels, matrix)]

    def rows_table(self) -> tuple[list[str], list[list]]:
        """(headers, rows): the first `shown_rows` held-out rows, true and predicted label and
        each label's probability."""
        after = self.after
        headers = ["text", "label", "predicted", *(f"p({label})" for label in after.labels)]
        rows = [
            [text, truth, predicted, *(f"{p[label]:.2f}" for label in after.labels)]
            for text, truth, predicted, p in zip(
                after.texts, after.references, after.predictions, after.probabilities
            )
        ]
        return headers, rows[: self.shown_rows]

    # -- without a widget frontend (StaticFallback) ----------------------------------------
    def static_text(self) -> str:
        lines = [f"ClassifierPanel: classifier run {self.run_summary()}"]
        if self.after is not None:
            lines += [
                f"held-out accuracy {self.after.accuracy:.2f}",
                text_table(*self.confusion_table()),
            ]
        return "\n".join([*lines, *self.errors[-5:]])

    def static_html(self) -> str:
        title = "<div><b>ClassifierPanel</b></div>"
        results = [self.accuracy_html.value, self.confusion_html.value, self.rows_html.value]
        return "".join([title, self.error_html.value, self._monitor_html(), *results])
