"""ORPO: instruction tuning and preference tuning in one loss, on TRL's ORPOTrainer.

`train_orpo(model, tokenizer, pairs)` learns the chosen answers as instruction tuning does (their
negative log-likelihood) and, in the same step, raises the odds of the chosen answer over the
rejected one (the odds ratio, weighted by `beta`, ORPO's lambda). It needs no reference model:
nothing is compared with a frozen copy, so ORPO can start from a base model without SFT first,
and trains LoRA or every weight alike. The Run has the same events, files and panels as every
other run; its `step` events also carry the reward margin and accuracy. `resume_orpo(run_dir)`
continues a stopped run.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from workbench.data.loading import Examples
from workbench.evaluation.preferences import check_pairs
from workbench.model.methods import Method
from workbench.runs.building import check_new_run_dir
from workbench.runs.hyperparameters import ObjectiveSettings
from workbench.runs.kinds import Kind, register
from workbench.runs.run import Run
from workbench.tokens.templates import Template
from workbench.training.trl_runs import (
    RunParts,
    answer_samples,
    resume_on,
    rows_trainer,
    trl_run,
)
from workbench.training.trl_runs import pair_rows as orpo_rows  # the rows ORPOTrainer takes


@dataclass
class ORPOSettings(ObjectiveSettings):
    """How ORPO runs: the instruction-tuning `Hyperparameters` (same fields, meanings and
    checks) with ORPO's defaults, plus `beta`, the weight of the odds-ratio term against the
    chosen answers' log-likelihood (ORPO's lambda). `batch_size` counts pairs; `max_length`
    counts prompt + answer (TRL cuts longer answers). The settings in `SFT_ONLY` do not apply
    to ORPO and must keep their values.
    """

    what, title = "ORPO", "ORPO settings"

    learning_rate: float = field(  # half of SFT's LoRA rate: the preference term pushes too
        default=1e-4, metadata={"help": "LoRA ~1e-4; full fine-tuning ~5e-6 (the paper: 8e-6)"}
    )
    batch_size: int = field(default=4, metadata={"help": "pairs per forward pass"})
    eval_every: int = field(default=10, metadata={"help": "evaluate every N steps"})
    beta: float = field(  # the ORPO paper's lambda and TRL's default
        default=0.1,
        metadata={"help": "odds-ratio weight (lambda): 0.1 is usual; higher prefers harder"},
    )

    def own_problems(self) -> list[str]:
        if self.beta <= 0:
            return [f"`beta`={self.beta} must be positive (0.1 is usual)."]
        return []


def check_orpo_pairs(pairs: Examples) -> None:
    """Raise unless `pairs` are preference rows."""
    check_pairs(pairs, "ORPO")


def train_orpo(
    model,
    tokenizer,
    rows: Examples,
    validation: Examples | None = None,
    *,
    settings: ORPOSettings | None = None,
    method: Method | None = None,
    template: Template | str | None = None,
    parent: str | Path | None = None,
    run_dir: str | Path | None = None,
    start: bool = True,
) -> Run:
    """Start ORPO on the pair `rows` (prompt or instruction, chosen, rejected) and return the
    Run at once (training continues in the background).

    `model` is a base model, which gets `method` (default LoRA; 'full' works too), or an SFT
    run's model, whose adapter goes on learning. No reference model is kept, which is why ORPO
    can start from a base model without SFT. `parent` names an SFT run directory, and
    `template` defaults to its template ('alpaca' without one).
    """
    pairs = rows
    for given in (pairs, validation):
        if given is not None:
            check_orpo_pairs(given)
    check_new_run_dir(run_dir)
    settings = settings or ORPOSettings()
    parts = RunParts(
        model, tokenizer, pairs, validation, settings, method, template, parent, run_dir
    )
    run = _orpo_run(parts.to_train())
    return run.start() if start else run


def _orpo_run(parts: RunParts) -> Run:
    """The Run of an ORPO run; a new one records config.yaml and its rows."""
    pairs, validation, template = parts.rows, parts.validation, parts.template
    train_rows = orpo_rows(pairs, template, parts.tokenizer)
    val_rows = orpo_rows(validation, template, parts.tokenizer) if validation else None
    shown = answer_samples(validation or pairs, template, parts.tokenizer)
    return trl_run(
        "orpo", "pairs", parts, partial(_build_orpo_trainer, train_rows, val_rows), shown
    )


def _build_orpo_trainer(train_rows, val_rows, run: Run, settings: ORPOSettings, resuming: bool):
    """TRL's ORPOTrainer with the Run's event bridge: the same events as an SFT run."""
    with warnings.catch_warnings():  # "APIs here are unstable": TRL's version is pinned and
        warnings.filterwarnings("ignore", "You are importing from 'trl.experimental'")  # tested
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    return rows_trainer(
        ORPOTrainer,
        ORPOConfig,
        run,
        settings,
        train_rows,
        val_rows,
        resuming,
        beta=settings.beta,
        max_length=settings.max_length,
        remove_unused_columns=False,  # TRL's pair collator needs its own columns
    )


def resume_orpo(
    run_dir: str | Path, model=None, tokenizer=None, *, max_steps: int | None = None
) -> Run:
    """Continue a stopped, failed or killed ORPO run from its newest complete checkpoint, on
    `model` or the base model (and parent adapter) its config.yaml names, with its pairs."""
    return resume_on("orpo", ORPOSettings, _orpo_run, run_dir, model, tokenizer, max_steps)


register(
    Kind(
        stage="orpo",
        title="ORPO (instruction and preference tuning in one loss, no reference model)",
        function="train_orpo",
        rows="prompt/chosen/rejected pairs (`prompt` or `instruction`)",
        settings=ORPOSettings,
        resume=resume_orpo,
    )
)
