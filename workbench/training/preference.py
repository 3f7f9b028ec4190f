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
from pathlib import Path

from workbench.data.loading import Examples
from workbench.errors import WorkbenchError
from workbench.evaluation.preferences import check_pairs
from workbench.model.methods import Method
from workbench.runs.hyperparameters import ObjectiveSettings
from workbench.runs.kinds import Kind, deprecated_name, register
from workbench.runs.run import Run
from workbench.runs.saved import load_run_model, template_for
from workbench.tokens.templates import Template
from workbench.training.trl_runs import (
    answer_samples,
    bridged_trainer,
    final_saver,
    model_to_train,
    pair_rows,
    record_new_run,
    require_lora,
    run_context,
    run_directory,
    trl_arguments,
)

# Hyperparameters that only instruction tuning uses: DPO keeps them at these values.


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
    template = template_for(template, parent, pairs.format)
    model, method = model_to_train(model, method, settings.seed, fields=("dropout",))
    require_lora(method, "DPO", "the reference is the same model with its SFT adapter frozen")
    run_dir = run_directory(run_dir, "dpo", pairs, "pairs")
    record_new_run(run_dir, "dpo", model, template, method, settings, pairs, validation, parent)
    shown = answer_samples(validation or pairs, template, tokenizer, samples)
    context = run_context(model, tokenizer, template, method, settings, shown)
    train_rows = pair_rows(pairs, template, tokenizer)
    val_rows = pair_rows(validation, template, tokenizer) if validation is not None else None

    def build_trainer(run: Run, resuming: bool):
        if resuming:
            raise WorkbenchError("DPO runs cannot be resumed yet: start a new one.")
        return _build_dpo_trainer(run, settings, train_rows, val_rows)

    run = Run(run_dir, context, build_trainer, save_final=final_saver(model, tokenizer))
    return run.start() if start else run


def _build_dpo_trainer(run: Run, settings: PreferenceSettings, train_rows, val_rows):
    """TRL's DPOTrainer with the Run's event bridge: the same events as an SFT run."""
    from trl import DPOConfig, DPOTrainer

    args = trl_arguments(
        run,
        settings,
        DPOConfig,
        has_validation=val_rows is not None,
        rows=len(train_rows),  # the plan's optimizer steps: warmup cap, too-short warning
        beta=settings.beta,
        max_length=settings.max_length,
        remove_unused_columns=True,  # DPOConfig's default: TRL drops the text columns itself
    )
    return bridged_trainer(DPOTrainer, run, args, train_rows, val_rows)


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
