"""KTO: preference tuning from answers marked desirable or undesirable, on TRL's KTOTrainer.

`train_kto(model, tokenizer, rows)` needs no pairs: each row is one answer with a `label`
(true: desirable, false: undesirable), so thumbs-up/down feedback trains as it is; DPO's
prompt/chosen/rejected pairs also work (each pair becomes two rows). As in DPO
(training/preference.py) the adapter goes on learning and TRL keeps a frozen copy of it as a
second adapter (`ref`), the reference. The Run has the same events, files and panels as every
other run; its `step` events also carry `kl` and the reward margin. `resume_kto(run_dir)`
continues a stopped run. What it shares with the other TRL runs is in training/trl_runs.py.
"""

from __future__ import annotations

import random
import warnings
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from workbench.data.loading import Examples
from workbench.errors import WorkbenchError
from workbench.evaluation.preferences import prompt_of
from workbench.model.methods import Method
from workbench.runs.building import check_new_run_dir
from workbench.runs.hyperparameters import ObjectiveSettings
from workbench.runs.kinds import Kind, register
from workbench.runs.run import Run
from workbench.tokens.templates import Template
from workbench.training.trl_runs import (
    RunParts,
    answer_samples,
    require_lora,
    resume_on,
    rows_trainer,
    trl_run,
)


@dataclass
class KTOSettings(ObjectiveSettings):
    """How KTO runs: the instruction-tuning `Hyperparameters` (same fields, meanings and checks)
    with KTO's defaults, plus `beta`, `desirable_weight` and `undesirable_weight`. `batch_size`
    counts unpaired rows (a pair is two); `max_length` counts prompt + answer. The settings in
    `SFT_ONLY` do not apply to KTO and must keep their values.
    """

    what, title = "KTO", "KTO settings"

    learning_rate: float = field(  # KTO's loss is a sigmoid of DPO's log-ratio: DPO's rates
        default=5e-5, metadata={"help": "as DPO, ~10x less than SFT: 5e-6 full, 5e-5 LoRA"}
    )
    batch_size: int = field(  # the KL term is estimated from the other rows of each batch
        default=8, metadata={"help": "unpaired rows per forward pass (at least 2)"}
    )
    eval_every: int = field(default=10, metadata={"help": "evaluate every N steps"})
    beta: float = field(  # the KTO paper's and TRL's default, the same scale as DPO's beta
        default=0.1, metadata={"help": "KL strength: 0.1 is usual, higher stays closer"}
    )
    desirable_weight: float = field(  # pairs give as many desirable as undesirable rows: 1
        default=1.0,
        metadata={"help": "loss weight of desirable rows: raise it when they are the fewer"},
    )
    undesirable_weight: float = field(  # the paper keeps (weight x rows) even, or up to 4:3
        default=1.0,
        metadata={"help": "loss weight of undesirable rows: raise it when they are the fewer"},
    )

    def own_problems(self) -> list[str]:
        problems = (
            [f"`beta`={self.beta} must be positive (0.1 is usual)."] if self.beta <= 0 else []
        )
        problems += [
            f"`{name}`={getattr(self, name)} must be positive (1.0 for balanced rows)."
            for name in ("desirable_weight", "undesirable_weight")
            if getattr(self, name) <= 0
        ]
        if self.batch_size < 2:
            problems.append(
                f"`batch_size`={self.batch_size}: KTO estimates its KL term from the other "
                "rows of a batch, so it needs at least 2 (8 is usual)."
            )
        return problems


def check_kto_rows(rows: Examples) -> None:
    """Raise unless `rows` are pairs or unpaired rows whose `label` is true or false."""
    if rows.format == "preference":
        return
    if rows.format != "prompt_completion":
        raise WorkbenchError(
            f"{rows.source}: KTO needs unpaired rows (`prompt`, `completion`, `label`) or pairs "
            f"(`chosen`, `rejected` and `prompt` or `instruction`), but these are "
            f"{rows.format!r} rows. See sample_data/preferences.jsonl for pairs."
        )
    unlabelled = [
        rows.where(i) for i, r in enumerate(rows.rows) if not isinstance(r.get("label"), bool)
    ]
    if unlabelled:
        raise WorkbenchError(
            f"{len(unlabelled)} row(s) have no true/false `label` ({', '.join(unlabelled[:5])}): "
            "give each row `label`: true for a desirable answer, false for an undesirable one "
            "(or give pairs with `chosen` and `rejected`)."
        )


def kto_rows(rows: Examples, template: Template, tokenizer, seed: int) -> list[dict[str, Any]]:
    """The unpaired rows TRL's KTOTrainer takes (`prompt`, `completion`, `label`): a pair gives
    its chosen answer as desirable and its rejected one as undesirable. Shuffled with `seed`:
    KTO reads rows in order (its KL term pairs each prompt with a neighbour's answer), so
    unshuffled, a pair's two answers would share a batch and a file's labels come in blocks."""
    unpaired = []
    for row in rows.rows:
        prompt = prompt_of(row, template, tokenizer)
        if rows.format == "preference":
            unpaired.append({"prompt": prompt, "completion": row["chosen"], "label": True})
            unpaired.append({"prompt": prompt, "completion": row["rejected"], "label": False})
        else:
            unpaired.append(
                {"prompt": prompt, "completion": row["completion"], "label": row["label"]}
            )
    random.Random(seed).shuffle(unpaired)
    return unpaired


def warn_if_unbalanced(rows: list[dict[str, Any]], settings: KTOSettings) -> None:
    """The KTO paper keeps desirable_weight x desirable rows / (undesirable_weight x undesirable
    rows) within [1, 4/3]; outside, say so with the weight that would bring it there."""
    desirable = sum(r["label"] for r in rows)
    undesirable = len(rows) - desirable
    if not desirable or not undesirable:
        return
    ratio = (settings.desirable_weight * desirable) / (settings.undesirable_weight * undesirable)
    if not 1.0 <= ratio <= 4 / 3:
        wanted = settings.undesirable_weight * undesirable / desirable
        warnings.warn(
            f"{desirable} desirable and {undesirable} undesirable rows with `desirable_weight`="
            f"{settings.desirable_weight:g} and `undesirable_weight`="
            f"{settings.undesirable_weight:g}: the KTO paper keeps weight x rows of the desirable "
            f"side 1 to 4/3 times the undesirable side's; try desirable_weight={wanted:.2f}.",
            stacklevel=3,
        )


def train_kto(
    model,
    tokenizer,
    rows: Examples,
    validation: Examples | None = None,
    *,
    settings: KTOSettings | None = None,
    method: Method | None = None,
    template: Template | str | None = None,
    parent: str | Path | None = None,
    run_dir: str | Path | None = None,
    start: bool = True,
) -> Run:
    """Start KTO on `rows` and return the Run at once (training continues in the background).

    `rows` are unpaired (`prompt`, `completion`, `label`: true desirable, false undesirable)
    or pairs (`chosen`, `rejected`, `prompt` or `instruction`), each two unpaired rows. `model`
    is normally an SFT run's model: its adapter goes on learning and a frozen copy is the
    reference; a model without an adapter gets a fresh one from `method` (LoRA) and the base is
    the reference. `parent` names the SFT run directory; `template` defaults to its template.
    """
    for given in (rows, validation):
        if given is not None:
            check_kto_rows(given)
    check_new_run_dir(run_dir)
    settings = settings or KTOSettings()
    parts = RunParts(
        model, tokenizer, rows, validation, settings, method, template, parent, run_dir
    )
    parts = parts.to_train()
    require_lora(
        parts.method, "KTO", "the reference is the same model with its starting adapter frozen"
    )
    run = _kto_run(parts)
    return run.start() if start else run


def _kto_run(parts: RunParts) -> Run:
    """The Run of a KTO run; a new one records config.yaml and its rows."""
    template, tokenizer, seed = parts.template, parts.tokenizer, parts.settings.seed
    train_rows = kto_rows(parts.rows, template, tokenizer, seed)
    val_rows = kto_rows(parts.validation, template, tokenizer, seed) if parts.validation else None
    if not parts.resuming:
        warn_if_unbalanced(train_rows, parts.settings)
    shown = answer_samples(parts.validation or parts.rows, template, tokenizer)
    return trl_run("kto", "rows", parts, partial(_build_kto_trainer, train_rows, val_rows), shown)


def _build_kto_trainer(train_rows, val_rows, run: Run, settings: KTOSettings, resuming: bool):
    """TRL's KTOTrainer with the Run's event bridge: the same events as an SFT run."""
    from trl import KTOConfig, KTOTrainer

    if "ref" in run.model.peft_config:  # TRL copies `default` into `ref` again; a resumed run
        run.model.delete_adapter("ref")  # then loads the checkpoint's `ref`, the first one
    return rows_trainer(
        KTOTrainer,
        KTOConfig,
        run,
        settings,
        train_rows,
        val_rows,
        resuming,
        beta=settings.beta,
        desirable_weight=settings.desirable_weight,
        undesirable_weight=settings.undesirable_weight,
        max_length=settings.max_length,
        remove_unused_columns=True,  # TRL keeps only its token ids and labels
    )


def resume_kto(
    run_dir: str | Path, model=None, tokenizer=None, *, max_steps: int | None = None
) -> Run:
    """Continue a stopped, failed or killed KTO run from its newest complete checkpoint, on
    `model` or the base model (and parent adapter) its config.yaml names, with its rows."""
    return resume_on("kto", KTOSettings, _kto_run, run_dir, model, tokenizer, max_steps)


register(
    Kind(
        stage="kto",
        title="KTO (preference tuning from desirable/undesirable answers)",
        function="train_kto",
        rows="unpaired prompt/completion rows with a true/false `label`, or "
        "prompt/chosen/rejected pairs (each pair two rows)",
        settings=KTOSettings,
        resume=resume_kto,
    )
)
