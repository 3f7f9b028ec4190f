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
from workbench.evaluation.preferences import check_pairs, prompt_of
from workbench.model.methods import Method, apply_method, count_parameters
from workbench.runs.bridge import bridged, event_bridge
from workbench.runs.directory import RunDirectory, new_run_dir
from workbench.runs.hyperparameters import ObjectiveSettings
from workbench.runs.kinds import Kind, deprecated_name, register
from workbench.runs.run import Run, RunContext
from workbench.runs.saved import load_run_model, template_for
from workbench.tokens.templates import Template

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


def trl_rows(pairs: Examples, template: Template, tokenizer) -> list[dict[str, str]]:
    return [
        {
            "prompt": prompt_of(r, template, tokenizer),
            "chosen": r["chosen"],
            "rejected": r["rejected"],
        }
        for r in pairs.rows
    ]


def _dpo_config(
    settings: PreferenceSettings, output_dir: Path, model, has_validation: bool, rows: int
):
    """TRL's DPOConfig: the Trainer settings as for instruction tuning, plus DPO's own."""
    from trl import DPOConfig

    return settings.run_arguments(
        output_dir,
        model,
        has_validation=has_validation,
        rows=rows,  # the plan's optimizer steps: warmup cap, too-short warning
        args_class=DPOConfig,
        beta=settings.beta,
        max_length=settings.max_length,
        remove_unused_columns=True,  # DPOConfig's default: TRL drops the text columns itself
    )


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
    model, method = _with_adapter(model, method, settings.seed)
    task = next(iter(pairs.tasks), "pairs")
    run_dir = Path(run_dir) if run_dir else new_run_dir(f"dpo-{task}")
    run_dir.mkdir(parents=True, exist_ok=True)
    RunDirectory(run_dir).record_run(
        stage="dpo",
        model=model,
        template=template,
        method=method,
        hyperparameters=settings,
        train=pairs,
        validation=validation,
        parent=str(parent) if parent else None,
    )
    sample_rows = (validation if validation is not None and len(validation) else pairs).rows
    prompts = [prompt_of(r, template, tokenizer) for r in sample_rows[:samples]]
    context = RunContext(
        model=model,
        tokenizer=tokenizer,
        template=template,
        method=method,
        hyperparameters=settings,
        parameters=count_parameters(model),
        sample_prompts=prompts,
        references=[r["chosen"] for r in sample_rows[:samples]],
        samples_shown=len(prompts),
        sample_max_new_tokens=settings.sample_max_new_tokens,
    )
    train_rows = trl_rows(pairs, template, tokenizer)
    val_rows = trl_rows(validation, template, tokenizer) if validation is not None else None

    def build_trainer(run: Run, resuming: bool):
        if resuming:
            raise WorkbenchError("DPO runs cannot be resumed yet: start a new one.")
        return _build_dpo_trainer(run, settings, train_rows, val_rows)

    def save_final(folder: Path) -> None:  # the DPO-tuned adapter, not TRL's frozen `ref` copy
        model.save_pretrained(folder, selected_adapters=["default"])
        tokenizer.save_pretrained(folder)

    run = Run(run_dir, context, build_trainer, save_final=save_final)
    return run.start() if start else run


def _build_dpo_trainer(run: Run, settings: PreferenceSettings, train_rows, val_rows):
    """TRL's DPOTrainer with the Run's event bridge: the same events as an SFT run."""
    import datasets
    from trl import DPOTrainer

    directory = run.directory
    args = _dpo_config(
        settings, directory.checkpoints_dir, run.model, val_rows is not None, len(train_rows)
    )
    trainer = DPOTrainer(
        model=run.model,
        args=args,
        train_dataset=datasets.Dataset.from_list(train_rows),
        eval_dataset=datasets.Dataset.from_list(val_rows) if val_rows else None,
        processing_class=run.tokenizer,
        callbacks=[event_bridge(run)],
    )
    return bridged(trainer, run)


def _with_adapter(model, method: Method | None, seed: int):
    """(model, method): the model's own SFT adapter, or a fresh one from `method`."""
    if hasattr(model, "peft_config"):
        if "ref" in model.peft_config:  # left by an earlier DPO run on this model
            model.delete_adapter("ref")
        method = method or _method_of(model)
    else:
        from transformers import set_seed

        method = method or Method()
        set_seed(seed)
        model = apply_method(model, method)
    if not method.uses_lora:
        raise WorkbenchError(
            f"`method.kind`={method.kind!r}: DPO here trains a LoRA adapter (the reference is "
            "the same model with its SFT adapter frozen). Use kind='lora' or 'qlora'."
        )
    return model, method


def _method_of(model) -> Method:
    config = model.peft_config["default"]
    return Method(kind="lora", r=config.r, alpha=config.lora_alpha, dropout=config.lora_dropout)


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
