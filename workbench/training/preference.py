"""Preference tuning after instruction tuning: Direct Preference Optimisation with TRL's DPOTrainer.

`train_dpo(model, tokenizer, pairs)` continues the SFT adapter on prompt/chosen/rejected
rows and returns a `Run` with the same events as `train()` (its `step` events also carry
`reward_margin`, `reward_accuracy`, ...), so TrainingMonitor and the run history show it. The
reference model is the SFT adapter itself: TRL keeps a frozen copy of it as a second adapter
(`ref`) on the same model, so no second model is loaded. `preference_margin` measures how
much more likely the model finds the chosen answers than the rejected ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from workbench.data.loading import Examples
from workbench.errors import WorkbenchError
from workbench.evaluation.preferences import check_pairs
from workbench.model.methods import Method
from workbench.runs.hyperparameters import ObjectiveSettings
from workbench.runs.kinds import Kind, deprecated_name, register
from workbench.runs.run import Run
from workbench.runs.saved import load_run_model
from workbench.tokens.templates import Template
from workbench.training.trl_runs import (
    RunParts,
    answer_samples,
    pair_rows,
    require_lora,
    rows_trainer,
    trl_run,
)


@dataclass
class PreferenceSettings(ObjectiveSettings):
    """How DPO runs: the instruction-tuning `Hyperparameters` (same fields, meanings and checks)
    with DPO's defaults, plus `beta`, how far the model may move from the SFT reference (lower
    moves further). `max_length` counts prompt + answer. The settings in `SFT_ONLY` do not
    apply to DPO and must keep their values.
    """

    what, title = "DPO", "preference settings"

    learning_rate: float = field(
        default=5e-5, metadata={"help": "DPO wants ~10x less than SFT: 5e-6 full, 5e-5 LoRA"}
    )
    batch_size: int = field(default=4, metadata={"help": "pairs per forward pass"})
    eval_every: int = field(default=10, metadata={"help": "evaluate every N steps"})
    beta: float = field(
        default=0.1, metadata={"help": "KL strength: 0.1 is usual, 0.5 stays close"}
    )

    def own_problems(self) -> list[str]:
        return [f"`beta`={self.beta} must be positive (0.1 is usual)."] if self.beta <= 0 else []


def train_dpo(
    model,
    tokenizer,
    rows: Examples,
    validation: Examples | None = None,
    *,
    settings: PreferenceSettings | None = None,
    method: Method | None = None,
    template: Template | str | None = None,
    parent: str | Path | None = None,
    run_dir: str | Path | None = None,
    start: bool = True,
    samples: int = 2,
) -> Run:
    """Start DPO on preference `rows` (prompt/chosen/rejected) and return the Run at once
    (training continues in the background).

    `model` is normally the SFT run's model (`run.model`, a PEFT model): its adapter goes on
    learning and a frozen copy is the reference. A model without an adapter gets a fresh one
    from `method` (default LoRA) and the base is the reference. `parent` names the SFT run
    directory in the DPO run's config; `template` defaults to the parent's (else Alpaca).
    """
    pairs = rows
    check_pairs(pairs)
    if validation is not None:
        check_pairs(validation)
    settings = settings or PreferenceSettings()
    parts = RunParts(
        model, tokenizer, pairs, validation, settings, method, template, parent, run_dir
    )
    parts = parts.to_train(fields=("dropout",))
    require_lora(parts.method, "DPO", "the reference is the same model with its SFT adapter frozen")
    template = parts.template
    train_rows = pair_rows(pairs, template, tokenizer)
    val_rows = pair_rows(validation, template, tokenizer) if validation is not None else None
    shown = answer_samples(validation or pairs, template, tokenizer, samples)
    run = trl_run("dpo", "pairs", parts, partial(_build_dpo_trainer, train_rows, val_rows), shown)
    return run.start() if start else run


def _build_dpo_trainer(
    train_rows, val_rows, run: Run, settings: PreferenceSettings, resuming: bool
):
    """TRL's DPOTrainer with the Run's event bridge: the same events as an SFT run."""
    if resuming:
        raise WorkbenchError("DPO runs cannot be resumed yet: start a new one.")
    from trl import DPOConfig, DPOTrainer

    return rows_trainer(
        DPOTrainer,
        DPOConfig,
        run,
        settings,
        train_rows,
        val_rows,
        resuming,
        beta=settings.beta,
        max_length=settings.max_length,
        remove_unused_columns=True,  # DPOConfig's default: TRL drops the text columns itself
    )


def dpo_from_run(
    sft_run_dir: str | Path,
    pairs: Examples,
    validation: Examples | None = None,
    *,
    settings: PreferenceSettings | None = None,
    start: bool = True,
) -> Run:
    """DPO on top of a finished SFT run directory: loads its base model and adapter."""
    model, tokenizer, template = load_run_model(sft_run_dir, trainable=True)
    return train_dpo(
        model,
        tokenizer,
        pairs,
        validation,
        template=template,
        settings=settings,
        parent=sft_run_dir,
        start=start,
    )


def train_preferences(
    model,
    tokenizer,
    pairs: Examples,
    validation: Examples | None = None,
    *,
    template: Template | str = "alpaca",
    settings: PreferenceSettings | None = None,
    method: Method | None = None,
    parent: str | Path | None = None,
    run_dir: str | Path | None = None,
    samples: int = 2,
    start: bool = True,
) -> Run:
    """The old name of `train_dpo` (kept for one release)."""
    deprecated_name("train_preferences", "train_dpo")
    return train_dpo(
        model, tokenizer, pairs, validation, settings=settings, method=method,
        template=template, parent=parent, run_dir=run_dir, start=start, samples=samples,
    )  # fmt: skip


register(
    Kind(
        stage="dpo",
        title="DPO (direct preference optimisation)",
        function="train_dpo",
        rows="prompt/chosen/rejected pairs, after instruction tuning",
        settings=PreferenceSettings,
        cannot_resume="DPO runs cannot be resumed yet: start a new one (`workbench dpo`).",
        command="dpo",
    )
)
