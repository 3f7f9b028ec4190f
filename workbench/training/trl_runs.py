"""What the kinds of run built on TRL's trainers share: DPO, KTO, ORPO, reward model, GRPO/PPO.

Each of them builds its run the same way: a run directory (`run_directory`) whose config.yaml
and rows a new run records (`record_new_run`), the model it trains (`model_to_train`: an SFT
run's adapter goes on learning, a bare model gets a fresh one from the method), a `RunContext`
with the prompts answered at each evaluation (`run_context`), TRL's config from the settings
(`trl_arguments`) and TRL's trainer wearing the Run's event bridge (`bridged_trainer`), and the
final adapter without TRL's frozen `ref` copy (`final_saver`). KTO and ORPO also resume alike
(`resume_on`). Each kind keeps only what is its own: its rows, its settings and its trainer
(PPO's, in training/ppo.py, is the project's own on the Trainer).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from workbench.data.loading import Examples
from workbench.errors import RunDirectoryInUseError, WorkbenchError
from workbench.evaluation.preferences import prompt_of
from workbench.model.methods import Method, apply_method, count_parameters
from workbench.runs.bridge import bridged, event_bridge
from workbench.runs.directory import RunDirectory, new_run_dir
from workbench.runs.run import Run, RunContext
from workbench.tokens.templates import Template
from workbench.training.resuming import open_run

# What `model_to_train` reads from an SFT run's adapter into the Method config.yaml records,
# beside its rank and alpha. DPO records the dropout only and GRPO/PPO neither: narrowing
# them would change their config.yaml, so each kind passes its own.
AdapterField = Literal["dropout", "target_modules"]
ADAPTER_FIELDS: tuple[AdapterField, ...] = ("dropout", "target_modules")


def check_new_run_dir(run_dir: str | Path | None) -> None:
    """Raise `RunDirectoryInUseError` when `run_dir` already holds a run (never reused)."""
    if run_dir is not None and RunDirectory(run_dir).is_run:
        raise RunDirectoryInUseError(Path(run_dir))


def run_directory(run_dir: str | Path | None, stage: str, rows: Examples, unnamed: str) -> Path:
    """The run's directory, created: `run_dir`, or a new one named `<stage>-<first task>`
    (`unnamed` when the rows name no task)."""
    path = Path(run_dir) if run_dir else new_run_dir(f"{stage}-{next(iter(rows.tasks), unnamed)}")
    path.mkdir(parents=True, exist_ok=True)
    return path


def record_new_run(
    run_dir: Path,
    stage: str,
    model,
    template: Template,
    method: Method,
    settings,
    rows: Examples,
    validation: Examples | None,
    parent: str | Path | None,
    **extra: Any,
) -> None:
    """Write config.yaml and data/ of a new run: `extra` keys (a reward, ...) come before
    `parent`, the SFT run directory it started from (None without one)."""
    RunDirectory(run_dir).record_run(
        stage=stage,
        model=model,
        template=template,
        method=method,
        hyperparameters=settings,
        train=rows,
        validation=validation,
        **extra,
        parent=str(parent) if parent else None,
    )


def run_context(
    model,
    tokenizer,
    template: Template,
    method: Method,
    settings,
    samples: tuple[list[str], list[str]] | None = None,
    max_new_tokens: int | None = None,
) -> RunContext:
    """The RunContext of a TRL run: `samples` are (prompts, reference answers) answered at each
    evaluation, in at most `max_new_tokens` tokens (default: `settings.sample_max_new_tokens`)."""
    prompts, references = samples or ([], [])
    if max_new_tokens is None:
        max_new_tokens = settings.sample_max_new_tokens
    return RunContext(
        model=model,
        tokenizer=tokenizer,
        template=template,
        method=method,
        hyperparameters=settings,
        parameters=count_parameters(model),
        sample_prompts=prompts,
        references=references,
        samples_shown=len(prompts),
        sample_max_new_tokens=max_new_tokens,
    )


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

    def save_final(folder: Path) -> None:
        if hasattr(model, "peft_config"):
            model.save_pretrained(folder, selected_adapters=["default"])
        else:
            model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)

    return save_final


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

    trainer = trainer_class(
        model=run.model,
        args=args,
        train_dataset=datasets.Dataset.from_list(train_rows),
        eval_dataset=datasets.Dataset.from_list(val_rows) if val_rows else None,
        processing_class=run.tokenizer,
        callbacks=[event_bridge(run)],
        **own,
    )
    return bridged(trainer, run)


def resume_on(
    stage: str,
    settings_class: type,
    build_run: Callable[..., Run],
    run_dir: str | Path,
    model,
    tokenizer,
    max_steps: int | None,
) -> Run:
    """Resume a run of `stage` (KTO, ORPO) from `run_dir` on `model` or the base model its
    config.yaml names, with the `parent` run's adapter when that is still there. `build_run`
    is the kind's own (model, tokenizer, rows, validation, settings, method, template, parent,
    run_dir, resuming) -> Run."""
    opened = open_run(run_dir, stage, settings_class, max_steps)
    parent = opened.config.get("parent")
    if model is None:
        model, tokenizer = opened.model()
        adapter = Path(parent or "") / "adapter"
        if parent and (adapter / "adapter_config.json").is_file():
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(adapter), is_trainable=True)
    model, method = model_to_train(model, opened.method(), opened.settings.seed)
    rows = (opened.rows("train"), opened.rows("validation"))
    how = (opened.settings, method, opened.template(), parent, opened.directory.path)
    run = build_run(model, tokenizer, *rows, *how, resuming=True)
    return run.resume(max_steps)
