"""PretrainPanel: continued pre-training on raw domain text, from the notebook.

Name the documents (a .jsonl with a `text` column, or a folder of .txt files), held-out domain
text and general text, the block size, LoRA or full training and the steps, press Train: a
TrainingMonitor follows the run (loss on the held-out domain text, the model continuing the
opening of a few documents); afterwards the perplexity table before and after, on the domain
text (the gain) and on the general text (the forgetting). The run is
`workbench.training.pretraining.continue_pretraining`; the table is `perplexity_table`, also
stored in the run's report.
"""

from __future__ import annotations

import html
from pathlib import Path

import ipywidgets as widgets

from workbench.model.methods import Method
from workbench.runs.hyperparameters import Hyperparameters
from workbench.training.pretraining import (
    Perplexity,
    PretrainingSettings,
    perplexity,
    perplexity_table,
    read_documents,
    train_pretraining,
)
from workbench.widgets._common import heading, html_table, text_table
from workbench.widgets._run_panels import TakesModel

DOMAIN = Path("sample_data/domain")  # the shipped files (found from any folder)
# the step each method tolerates on the sample manual (benchmarks/pretraining.py)
LEARNING_RATE = {"lora": 5e-4, "full": 5e-5}


class PretrainPanel(TakesModel):
    """Continued pre-training measured by perplexity on held-out domain and general text.

    `model`/`tokenizer`: the model to train. Without them, `model_name` is loaded with
    `workbench.load_model` at the first Train (the Workbench passes its model's name, so the
    model of the Train tab is left as it is). Train again continues the trained model.

    Children: `.documents_path`, `.domain_path` (held-out domain text), `.general_path`,
    `.block_size`, `.method` ('lora' or 'full'), `.max_steps`, `.learning_rate`,
    `.batch_size` (blocks per step), `.train_button`, `.status`, `.error_html`, `.monitor`,
    `.perplexity_html`. Results: `.run`, `.before` (perplexity per set before training) and
    `.table` (perplexity_table's DataFrame: before, after, change).
    """

    dom_class = "wb-pretrain-panel"

    def __init__(
        self,
        model=None,
        tokenizer=None,
        *,
        model_name: str | None = None,
        documents: str | Path = DOMAIN / "manual_train.jsonl",
        held_out: str | Path = DOMAIN / "manual_held_out.jsonl",
        general: str | Path = DOMAIN / "general_text.jsonl",
        hyperparameters: Hyperparameters | None = None,
    ) -> None:
        super().__init__(model, tokenizer, model_name)
        self.before: dict[str, Perplexity] = {}
        self.table = None
        hp = hyperparameters or Hyperparameters(max_steps=40, batch_size=4)
        self._hyperparameters = hp
        wide = widgets.Layout(width="70%")
        self.documents_path = widgets.Text(str(documents), description="Documents", layout=wide)
        self.domain_path = widgets.Text(str(held_out), description="Held out", layout=wide)
        self.general_path = widgets.Text(str(general), description="General", layout=wide)
        self.block_size = widgets.BoundedIntText(
            value=256, min=2, max=32_768, description="block size"
        )
        self.method = widgets.ToggleButtons(options=(("LoRA", "lora"), ("full", "full")))
        self._build_step_controls(
            hp.max_steps, LEARNING_RATE["lora"], hp.batch_size, "blocks/step", most_steps=1_000_000
        )
        self._build_train_controls("Train")
        self.perplexity_html = widgets.HTML()
        self.method.observe(self._on_method, names="value")
        self.children = [
            self.documents_path,
            self.domain_path,
            self.general_path,
            widgets.HBox([self.block_size, self.method]),
            widgets.HBox([self.max_steps, self.learning_rate, self.batch_size]),
            widgets.HBox([self.train_button, self.status]),
            self.error_html,
            self.monitor,
            heading("Perplexity before and after (lower: the text is less surprising)"),
            self.perplexity_html,
        ]

    def _on_method(self, change) -> None:
        self.learning_rate.value = LEARNING_RATE[change["new"]]

    @property
    def hyperparameters(self) -> Hyperparameters:
        return self._hyperparameters.replace(**self._step_settings())

    def sets(self) -> dict[str, object]:
        """The named document sets measured before and after: held-out domain, general."""
        return {
            "domain": read_documents(self.domain_path.value.strip()),
            "general": read_documents(self.general_path.value.strip()),
        }

    # -- the work behind the button -------------------------------------------------------
    def start(self) -> None:
        """Read the documents, build the run, measure perplexity before it, start it."""
        if self.run is not None and not self.run.done:
            raise ValueError("Pre-training is still running: stop it in the monitor first.")
        hp, block = self.hyperparameters, self.block_size.value  # checked before any work
        documents = read_documents(self.documents_path.value.strip())
        sets = self.sets()
        model, tokenizer = self._model()
        self.perplexity_html.value, self.table = "", None
        settings = PretrainingSettings(**hp.to_dict(), block_size=block)
        run = train_pretraining(
            model,
            tokenizer,
            documents,
            sets["domain"],
            settings=settings,
            method=Method(kind=self.method.value),
            start=False,
        )
        # measured on the run's model before it trains: right for LoRA and full alike, and
        # for a second run that continues the first
        self.status.value = "<i>Measuring perplexity before training ...</i>"
        self.before = {
            name: perplexity(run.model, tokenizer, docs, block_size=block)
            for name, docs in sets.items()
        }
        self._follow(run, sets)

    def _on_end(self, run, sets: dict) -> None:
        """The run ended: perplexity after, beside before, also stored in the run's report;
        the next Train continues this model."""
        self.model = run.model
        self.table = perplexity_table(
            run.model,
            run.tokenizer,
            sets,
            block_size=self.block_size.value,
            before=self.before,
            run_dir=run.run_dir,
        )
        self.perplexity_html.value = html_table(*self.perplexity_rows())
        self.status.value = (
            f"Run <code>{html.escape(run.run_dir.name)}</code> {run.status}; Train again "
            "continues this model."
        )

    def perplexity_rows(self) -> tuple[list[str], list[list[str]]]:
        """(headers, rows) of the perplexity table, numbers to two decimals."""
        rows = [
            [
                name,
                *(
                    f"{value:+.2f}" if column == "change" else f"{value:.2f}"
                    for column, value in values.items()
                ),
            ]
            for name, values in self.table.to_dict(orient="index").items()
        ]
        return ["metric", *self.table.columns], rows

    # -- without a widget frontend (StaticFallback) ----------------------------------------
    def static_text(self) -> str:
        lines = [f"PretrainPanel: pre-training run {self.run_summary()}"]
        if self.table is not None:
            lines.append(text_table(*self.perplexity_rows()))
        return "\n".join([*lines, *self.errors[-5:]])

    def static_html(self) -> str:
        title = "<div><b>PretrainPanel</b></div>"
        return "".join(
            [title, self.error_html.value, self._monitor_html(), self.perplexity_html.value]
        )
