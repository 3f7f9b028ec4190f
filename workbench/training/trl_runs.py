"""What the kinds of run built on TRL's trainers share: DPO, KTO, ORPO, reward model, GRPO/PPO.

Each of them builds its run the same way (`trl_run`, from its `RunParts`): a run directory whose
config.yaml and rows a new run records, a `RunContext` with the prompts answered at each
evaluation, and the final adapter without TRL's frozen `ref` copy (`final_saver`); the trainer
is TRL's with the kind's config (`trl_arguments`) and the Run's event bridge
(`bridged_trainer`). The model it trains comes from `model_to_train` (an SFT run's adapter goes
on learning, a bare model gets a fresh one from the method). KTO and ORPO also resume alike
(`resume_on`). Each kind keeps only what is its own: its rows, its settings and its trainer
(PPO's, in training/ppo.py, is the project's own on the Trainer). What every kind of run shares,
TRL or not, is in runs/building.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from workbench.data.loading import Examples
from workbench.errors import WorkbenchError
from workbench.evaluation.preferences import prompt_of
from workbench.model.methods import Method, apply_method
from workbench.runs.bridge import bridged, event_bridge
from workbench.runs.building import model_saver, record_new_run, run_context, run_directory
from workbench.runs.run import Run
from workbench.runs.saved import template_for
from workbench.tokens.templates import Template
from workbench.training.resuming import Resuming, open_run

# What `model_to_train` reads from an SFT run's adapter into the Method config.yaml records,
# beside its rank and alpha. DPO records the dropout only and GRPO/PPO neither: narrowing
# them would change their config.yaml, so each kind passes its own.
AdapterField = Literal["dropout", "target_modules"]
ADAPTER_FIELDS: tuple[AdapterField, ...] = ("dropout", "target_modules")


@dataclass(frozen=True)
class RunParts:
    """What the Run of a TRL kind is built from, whether it starts or resumes: the model it
    trains and its tokenizer, the training and validation rows, the kind's settings, the
    method, the template, the SFT run it started from (`parent`) and its directory (None: a
    new one). `resuming` says whether the directory already records them."""

    model: Any
    tokenizer: Any
    rows: Examples
    validation: Examples | None
    settings: Any
    method: Method | None
    template: Template | str | None
    parent: str | Path | None
    run_dir: str | Path | None
    resuming: bool = False

    @classmethod
    def resumed(cls, opened: Resuming, model, tokenizer, method: Method | None) -> RunParts:
        """The parts of a run resumed from its directory (`open_run`) on `model` with `method`:
        the rows, settings, template and parent its config.yaml records."""
        rows = (opened.rows("train"), opened.rows("validation"))
        how = (opened.settings, method, opened.template(), opened.config.get("parent"))
        return cls(model, tokenizer, *rows, *how, opened.directory.path, resuming=True)

    def to_train(self, fields: tuple[AdapterField, ...] = ADAPTER_FIELDS) -> RunParts:
        """The parts of a new run: the template (`template_for`: the one given, else the
        parent's, else the rows') and the model to train with its method (`model_to_train`)."""
        # the template first: when it cannot be found, the model is left without a new adapter
        template = template_for(self.template, self.parent, self.rows.format)
        model, method = model_to_train(self.model, self.method, self.settings.seed, fields=fields)
        return replace(self, model=model, method=method, template=template)


def adapter_method(model, fields: tuple[AdapterField, ...] = ADAPTER_FIELDS) -> Method:
    """The LoRA Method of the model's `default` adapter: its rank and alpha, and of `fields`
    ('dropout', 'target_modules') the ones named."""
    config = model.peft_config["default"]
    own: dict[str, Any] = {}
    if "dropout" in fields:
        own["dropout"] = config.lora_dropout
    if "target_modules" in fields:
        targets = config.target_modules
        own["target_modules"] = targets if isinstance(targets, str) else sorted(targets)
    return Method(kind="lora", r=config.r, alpha=config.lora_alpha, **own)


def model_to_train(
    model, method: Method | None, seed: int, *, fields: tuple[AdapterField, ...] = ADAPTER_FIELDS
) -> tuple[Any, Method]:
    """(model, method): the model's own adapter (an SFT run's), which goes on learning and is
    described by `adapter_method(model, fields)` unless `method` is given, or a fresh one
    from `method` (default LoRA; the seed fixes its initial weights)."""
    if hasattr(model, "peft_config"):
        if "ref" in model.peft_config:  # the reference an earlier DPO, KTO or GRPO run left
            model.delete_adapter("ref")
        return model, method or adapter_method(model, fields)
    from transformers import set_seed

    method = method or Method()
    set_seed(seed)
    return apply_method(model, method), method


def require_lora(method: Method, what: str, why: str) -> None:
    """Raise unless `method` trains a LoRA adapter: `what` (DPO, KTO, ...) keeps its reference
    as the same model with the starting adapter frozen, not as a second model; `why` says so."""
    if not method.uses_lora:
        raise WorkbenchError(
            f"`method.kind`={method.kind!r}: {what} here trains a LoRA adapter ({why}). "
            "Use kind='lora' or 'qlora'."
        )


def pair_rows(pairs: Examples, template: Template, tokenizer) -> list[dict[str, str]]:
    """The pair rows TRL's DPO, ORPO and reward trainers take: the prompt through the
    template, both answers."""
    return [
        {
            "prompt": prompt_of(r, template, tokenizer),
            "chosen": r["chosen"],
            "rejected": r["rejected"],
        }
        for r in pairs.rows
    ]


def answer_samples(
    rows: Examples, template: Template, tokenizer, count: int = 2
) -> tuple[list[str], list[str]]:
    """(prompts, reference answers) of the first rows with a desirable answer, answered at
    each evaluation: a pair's chosen answer, or an unpaired row labelled true."""
    wanted = [r for r in rows.rows if rows.format == "preference" or r.get("label") is True]
    wanted = wanted[:count]  # 2 held-out prompts by default, as DPO answers
    answers = [r["chosen"] if rows.format == "preference" else r["completion"] for r in wanted]
    return [prompt_of(r, template, tokenizer) for r in wanted], answers


def final_saver(model, tokenizer) -> Callable[[Path], None]:
    """The Run's `save_final`: the trained adapter `default`, not TRL's frozen `ref` copy (or,
    for a model without adapter, the whole model), and the tokenizer."""
    if hasattr(model, "peft_config"):
        return model_saver(model, tokenizer, selected_adapters=["default"])
    return model_saver(model, tokenizer)


def trl_arguments(
    run: Run,
    settings,
    args_class,
    *,
    has_validation: bool,
    rows: int | None = None,
    resuming: bool = False,
    **own: Any,
):
    """TRL's `args_class` (DPOConfig, KTOConfig, ...) from the settings, as for instruction
    tuning, plus the kind's `own` fields. `rows` (the training rows) lets the plan cap its
    warmup and warn when too short; a resumed run does not evaluate its start again."""
    args = settings.run_arguments(
        run.directory.checkpoints_dir,
        run.model,
        has_validation=has_validation,
        rows=rows,
        args_class=args_class,
        **own,
    )
    if resuming:
        args.eval_on_start = False  # the resumed run already measured its start
    return args


def bridged_trainer(
    trainer_class,
    run: Run,
    args,
    train_rows: list[dict[str, Any]],
    val_rows: list[dict[str, Any]] | None,
    **own: Any,
):
    """TRL's `trainer_class` on the Run's model, tokenizer and rows, with the Run's event
    bridge (the same events as an SFT run); `own` adds the kind's arguments (reward_funcs)."""
    import datasets
    from datasets.utils import logging as datasets_logging

    # TRL prepares the rows with datasets' map, one progress bar a pass ("Adding EOS ...",
    # "Tokenizing ..."): noise above the panels for rows that take a second. Off meanwhile.
    bars = datasets_logging.is_progress_bar_enabled()
    datasets_logging.disable_progress_bar()
    try:
        trainer = trainer_class(
            model=run.model,
            args=args,
            train_dataset=datasets.Dataset.from_list(train_rows),
            eval_dataset=datasets.Dataset.from_list(val_rows) if val_rows else None,
            processing_class=run.tokenizer,
            callbacks=[event_bridge(run)],
            **own,
        )
    finally:
        if bars:
            datasets_logging.enable_progress_bar()
    return bridged(trainer, run)


def rows_trainer(
    trainer_class,
    args_class,
    run: Run,
    settings,
    train_rows: list[dict[str, Any]],
    val_rows: list[dict[str, Any]] | None,
    resuming: bool,
    **own: Any,
):
    """TRL's `trainer_class` (DPOTrainer, KTOTrainer, ...) with its `args_class` from the
    settings plus the kind's `own` fields, on the rows (counted for the plan's warmup cap and
    too-short warning), with the Run's event bridge."""
    args = trl_arguments(
        run,
        settings,
        args_class,
        has_validation=val_rows is not None,
        rows=len(train_rows),
        resuming=resuming,
        **own,
    )
    return bridged_trainer(trainer_class, run, args, train_rows, val_rows)


def trl_run(
    stage: str,
    unnamed: str,
    parts: RunParts,
    trainer: Callable[[Run, Any, bool], Any],
    samples: tuple[list[str], list[str]] | None = None,
    max_new_tokens: int | None = None,
    *,
    recorded_model: Any = None,
    recorded: dict[str, Any] | None = None,
) -> Run:
    """The Run of a TRL kind in `parts.run_dir` (or a new `<stage>-<first task>`, `unnamed`
    without one): a new run records config.yaml, naming `recorded_model` (default the model)
    and the `recorded` keys, and its rows; `samples` and `max_new_tokens` are `run_context`'s.
    The trainer is `trainer(run, run.hyperparameters, resuming)` (a resume may extend the
    settings); the final save keeps the trained adapter, not TRL's `ref`."""
    model, tokenizer, settings = parts.model, parts.tokenizer, parts.settings
    run_dir = run_directory(parts.run_dir, stage, parts.rows, unnamed)
    if not parts.resuming:
        named = model if recorded_model is None else recorded_model
        how = (parts.template, parts.method, settings, parts.rows, parts.validation)
        parent = str(parts.parent) if parts.parent else None  # config.yaml's last key
        record_new_run(run_dir, stage, named, *how, **(recorded or {}), parent=parent)
    context = run_context(
        model, tokenizer, parts.template, parts.method, settings, samples, max_new_tokens
    )

    def build_trainer(run: Run, resuming: bool):
        return trainer(run, run.hyperparameters, resuming)

    return Run(run_dir, context, build_trainer, save_final=final_saver(model, tokenizer))


def resume_on(
    stage: str,
    settings_class: type,
    build_run: Callable[[RunParts], Run],
    run_dir: str | Path,
    model,
    tokenizer,
    max_steps: int | None,
) -> Run:
    """Resume a run of `stage` (KTO, ORPO) from `run_dir` on `model` or the base model its
    config.yaml names, with the `parent` run's adapter when that is still there. `build_run`
    is the kind's own RunParts -> Run."""
    opened = open_run(run_dir, stage, settings_class, max_steps)
    parent = opened.config.get("parent")
    if model is None:
        model, tokenizer = opened.model()
        adapter = Path(parent or "") / "adapter"
        if parent and (adapter / "adapter_config.json").is_file():
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(adapter), is_trainable=True)
    model, method = model_to_train(model, opened.method(), opened.settings.seed)
    run = build_run(RunParts.resumed(opened, model, tokenizer, method))
    return run.resume(max_steps)
