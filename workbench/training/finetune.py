"""`train(...)`: instruction tuning inside the kernel with transformers' Trainer, on a
background thread; the kind `sft` of the registry (`workbench.runs.kinds`).

The run directory (`runs/<id>/`) holds `config.yaml` (with the exact training and validation
rows in `data/`), so `resume(path)` or `python -m workbench resume path` can continue it.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from workbench.data.loading import Examples
from workbench.errors import AllLabelsMaskedError, WorkbenchError
from workbench.model.compiling import compiling_callback
from workbench.model.generation import cut_prompts
from workbench.model.loss import (
    accepts_logits_to_keep,
    index_logits_supported,
    workbench_trainer_class,
)
from workbench.model.methods import Method, apply_method
from workbench.runs.bridge import bridged, event_bridge
from workbench.runs.building import check_new_run_dir, model_saver, record_new_run, run_context
from workbench.runs.directory import RunDirectory, new_run_dir
from workbench.runs.fitting import auto_batch_size, check_fit, row_statistics
from workbench.runs.hyperparameters import Hyperparameters
from workbench.runs.kinds import Kind, register, renamed_argument
from workbench.runs.run import Run
from workbench.tokens.checks import check_dataset
from workbench.tokens.collators import CompletionCollator, PackedCollator
from workbench.tokens.templates import Template, get_template
from workbench.tokens.tokenizing import IGNORE_INDEX, tokenize_examples
from workbench.training.anchors import check_anchored_weights
from workbench.training.regularizers import attach_regularizer, regularizer_from_config
from workbench.training.resuming import open_run
from workbench.training.synaptic import ImportanceTracker


def train(
    model,
    tokenizer,
    rows: Examples,
    validation: Examples | None = None,
    *,
    settings: Hyperparameters | None = None,
    method: Method | None = None,
    template: Template | str | None = None,
    parent: Run | str | Path | None = None,
    run_dir: str | Path | None = None,
    start: bool = True,
    samples: int = 3,
    regularizer=None,
    track_importance: bool = False,
    hyperparameters: Hyperparameters | None = None,
    continued_from: Run | str | Path | None = None,
) -> Run:
    """Start fine-tuning and return the Run at once (training continues in the background).

    `template` defaults to the one that suits the data format. `samples` validation prompts are
    answered at every evaluation. The model is adapted in place (LoRA layers are injected);
    `run.model` is the model being trained, with the adapter switchable for before/after.
    `regularizer` (e.g. `workbench.fisher_ewc(...)` or `synaptic_intelligence(...)`) is added to
    the training loss and recorded in config.yaml, so a resumed run keeps it; the weights it
    anchors must be trainable here (with LoRA: measured on this adapter, after an earlier task).
    `track_importance` accumulates synaptic-intelligence importance while training and writes
    it to `importance/` when the run finishes. `parent` (an earlier run, whose `run.model`
    this trains further) is recorded in config.yaml as `continued_from`.
    `hyperparameters=` and `continued_from=` are the old names of `settings=` and `parent=`.
    """
    hyperparameters = renamed_argument(
        settings, hyperparameters, "hyperparameters", "settings", "train"
    )
    continued_from = renamed_argument(parent, continued_from, "continued_from", "parent", "train")
    check_new_run_dir(run_dir)
    if isinstance(continued_from, Run):
        continued_from = continued_from.run_dir
    if continued_from is not None and not RunDirectory(continued_from).is_run:
        raise WorkbenchError(
            f"`continued_from`={str(continued_from)!r} is not a run directory: pass the earlier "
            "Run (or its folder) whose model this run trains further."
        )
    run = prepare_run(
        model,
        tokenizer,
        rows,
        validation,
        template=template,
        method=method or Method(),
        hp=hyperparameters or Hyperparameters(),
        run_dir=run_dir,
        samples=samples,
        regularizer=regularizer,
        track_importance=track_importance,
        continued_from=continued_from,
        resuming=False,
    )
    return run.start() if start else run


def prepare_run(
    model,
    tokenizer,
    train_data: Examples,
    validation: Examples | None,
    *,
    template,
    method: Method,
    hp: Hyperparameters,
    run_dir,
    samples: int,
    regularizer,
    resuming: bool,
    objective=None,
    track_importance: bool = False,
    continued_from: str | Path | None = None,
) -> Run:
    """Tokenize, adapt the model, size the batch and build the Run. A new run records its
    config.yaml and rows; a resumed one reads them and changes nothing. `objective` (e.g.
    distillation.py's `DistillationObjective`) names the run's `stage`, adds its settings to
    config.yaml and changes the Trainer's loss through `objective.attach(trainer)`."""
    template = get_template(template, train_data.format)
    train_tokens = _tokens(train_data, template, tokenizer, hp)
    _check_learnable(train_tokens, train_data)
    if not resuming:  # a resumed run was checked when it started
        _warn_findings(train_data, validation, template, tokenizer, hp, train_tokens)
    has_validation = validation is not None and len(validation) > 0
    val_tokens = _tokens(validation, template, tokenizer, hp) if has_validation else None
    model = adapt_model(model, method, hp.seed)
    if regularizer is not None:  # it must anchor weights that this model trains
        check_anchored_weights(regularizer, model)
    tracker = None
    if track_importance:
        tracker = ImportanceTracker(model)
    hp, fit = _size_batch(model, method, hp, train_tokens)
    run_dir = Path(run_dir) if run_dir else new_run_dir(f"{method.kind}-{task_label(train_data)}")
    run_dir.mkdir(parents=True, exist_ok=True)
    scored = min(hp.eval_metric_rows, len(validation)) if has_validation else 0
    sample_rows = (validation if has_validation else train_data).rows[: max(samples, scored)]
    if not resuming:
        extra = {"samples": min(samples, len(sample_rows))}
        if regularizer is not None:  # recorded so that a resumed run keeps it
            extra["regularizer"] = regularizer.save(run_dir)
        if track_importance:  # so that a resumed run goes on tracking
            extra["track_importance"] = True
        if continued_from is not None:  # the run whose model this one trains further
            extra["continued_from"] = str(continued_from)
        if objective is not None:
            extra.update(objective.to_config())
        stage = objective.stage if objective is not None else "sft"
        record_new_run(run_dir, stage, model, template, method, hp, train_data, validation, **extra)
    pairs = [template.render(r, tokenizer) for r in sample_rows]
    shown_from = validation if has_validation else train_data
    prompts = cut_prompts(  # as the rows are trained: no longer than max_length
        [p for p, _ in pairs],
        tokenizer,
        hp.max_length,
        where=[shown_from.where(i) for i in range(len(pairs))],
    )
    references = [r for _, r in pairs]  # the bridge answers max(samples, scored) rows
    context = run_context(
        model,
        tokenizer,
        template,
        method,
        hp,
        (prompts, references),
        shown=samples,
        scored_rows=scored,
        fit=fit,
        truncation=train_tokens.report,
    )

    def build_trainer(run: Run, resuming: bool):  # run.hyperparameters: a resume may extend
        trainer = _build_trainer(
            run, run.hyperparameters, train_tokens, val_tokens, resuming, regularizer, tracker
        )
        if objective is not None:
            objective.attach(trainer)
        return trainer

    save_model = model_saver(model, tokenizer)

    def save_final(folder: Path) -> None:
        if tracker is not None:  # importance/ first: the adapter marks the run's end
            tracker.write(run_dir)
        save_model(folder)

    return Run(run_dir, context, build_trainer, save_final=save_final)


def _tokens(rows: Examples, template: Template, tokenizer, hp: Hyperparameters):
    return tokenize_examples(
        rows,
        template,
        tokenizer,
        max_length=hp.max_length,
        completion_only=hp.completion_only,
        truncation_side=hp.truncation_side,
    )


def adapt_model(model, method: Method, seed: int):
    """The model with the method applied (LoRA layers injected, layers frozen, ...); a model
    that already carries an adapter (an earlier run's `run.model`) continues it."""
    if not (method.uses_lora and hasattr(model, "peft_config")):
        from transformers import set_seed

        set_seed(seed)  # LoRA's initial weights come from this seed too
        return apply_method(model, method)
    existing = model.peft_config.get("default")
    if existing is not None and (existing.r, existing.lora_alpha) != (method.r, method.alpha):
        warnings.warn(
            f"The model already carries a LoRA adapter (r={existing.r}, alpha="
            f"{existing.lora_alpha}) from an earlier run; training continues that adapter "
            f"and ignores method r={method.r}, alpha={method.alpha}. Load a fresh model to "
            "train a new adapter.",
            stacklevel=4,
        )
    return model


def _size_batch(model, method: Method, hp: Hyperparameters, tokens):
    """Apply `auto_batch` on a GPU, then warn when the predicted peak exceeds free memory."""
    lengths, response = row_statistics(tokens)
    on_gpu = str(next(model.parameters()).device).startswith("cuda")
    if hp.auto_batch and on_gpu:
        chosen = auto_batch_size(model, method, hp, lengths, response)
        # config.yaml keeps the batch chosen, not the wish: a resumed run must not choose again
        hp = hp.replace(batch_size=chosen, auto_batch=False)
    fit = check_fit(model, method, hp, lengths, response)
    if fit is not None and not fit.fits:
        warnings.warn(str(fit), stacklevel=3)
    return hp, fit


def task_label(data: Examples) -> str:
    tasks = list(data.tasks)
    return tasks[0] if len(tasks) == 1 else f"{len(tasks)}tasks"


def _check_learnable(tokens, data: Examples) -> None:
    report = tokens.report
    if len(report.without_loss) == report.rows:
        raise AllLabelsMaskedError(
            f"No row of {data.source} has a token to learn from (every label would be "
            f"{IGNORE_INDEX}, masked): {report}"
        )
    if report.truncated:
        warnings.warn(str(report), stacklevel=3)


def _warn_findings(train_data, validation, template, tokenizer, hp, train_tokens) -> None:
    """Each warning or error of the pre-flight checks as a Python warning. The training rows
    are reused as tokenised (their labels mark the learned tokens when completion-only);
    truncation is left to `_check_learnable`, which already reports it."""
    findings = check_dataset(
        train_data,
        template,
        tokenizer,
        validation=validation,
        max_length=hp.max_length,
        completion_only=hp.completion_only,
        truncation_side=hp.truncation_side,
        tokenized=train_tokens,
    )
    for finding in findings:
        if finding.severity != "info" and finding.check != "truncation":
            warnings.warn(str(finding), stacklevel=4)


# transformers' own Trainer still calls a renamed property; the warning is not for our users.
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


def _build_trainer(
    run: Run, hp: Hyperparameters, train_tokens, val_tokens, resuming, regularizer, tracker=None
):
    """transformers' Trainer (the project's subclass) for an instruction-tuning run."""
    from transformers import EarlyStoppingCallback

    model, tokenizer = run.model, run.tokenizer

    args = hp.run_arguments(
        run.directory.checkpoints_dir,
        model,
        has_validation=val_tokens is not None,
        rows=len(train_tokens),  # the plan's optimizer steps: warmup cap, too-short warning
    )
    if resuming:
        args.eval_on_start = False  # the resumed run already evaluated its start
    # the importance tracker first: its file joins each checkpoint before the bridge marks it
    callbacks = ([tracker.callback()] if tracker is not None else []) + [event_bridge(run)]
    if hp.early_stopping_patience and val_tokens is not None:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=hp.early_stopping_patience))
    if hp.compile:
        callbacks.append(compiling_callback())
    trainer = workbench_trainer_class()(
        model=model,
        args=args,
        train_dataset=train_tokens.to_hf(),
        eval_dataset=val_tokens.to_hf() if val_tokens is not None else None,
        data_collator=training_collator(tokenizer, hp, select_logits=logits_selectable(model)),
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    bridged(trainer, run)
    if regularizer is not None:  # e.g. EWC: its penalty joins the training loss
        attach_regularizer(trainer, regularizer)
    return trainer


def training_collator(tokenizer, hp: Hyperparameters, *, select_logits: bool = True):
    """Packed rows of up to `max_length` tokens, or padded rows when `packing` is off; with
    `select_logits`, batches list the positions whose logits the loss needs."""
    if hp.packing:
        return PackedCollator(
            tokenizer.pad_token_id, row_length=hp.max_length, select_logits=select_logits
        )
    return CompletionCollator(
        tokenizer.pad_token_id, count_tokens=True, select_logits=select_logits
    )


def logits_selectable(model) -> bool:
    """Whether the loss can ask this model for the response positions' logits alone."""
    return index_logits_supported() and accepts_logits_to_keep(model)


def resume_instruction_tuning(
    run_dir: str | Path, model=None, tokenizer=None, *, max_steps: int | None = None
) -> Run:
    """Continue a stopped, failed or killed instruction-tuning run from its newest complete
    checkpoint (`workbench.resume` calls this for `stage: sft`).

    Loads the model named in config.yaml unless `model` and `tokenizer` are given (a fresh,
    un-adapted base model). A finished run is left unchanged (RunFinishedError) unless a larger
    `max_steps` extends it. Nothing in the directory is rewritten except by the training.
    """
    directory = RunDirectory(run_dir)
    config = directory.read_config()
    opened = open_run(run_dir, "sft", Hyperparameters, max_steps)
    model, tokenizer = opened.model(model, tokenizer)
    template = opened.template()
    run = prepare_run(
        model,
        tokenizer,
        opened.rows("train"),
        opened.rows("validation"),
        template=template,
        method=opened.method(),
        hp=opened.settings,
        run_dir=directory.path,
        samples=config.get("samples", 3),
        regularizer=regularizer_from_config(
            config.get("regularizer"), model, tokenizer, directory.path, template
        ),
        resuming=True,
        track_importance=bool(config.get("track_importance", False)),
    )
    return run.resume(max_steps)


register(
    Kind(
        stage="sft",
        title="instruction tuning",
        function="train",
        rows="Alpaca, prompt/completion, `messages`, ShareGPT or `text` rows",
        settings=Hyperparameters,
        resume=resume_instruction_tuning,
    )
)
