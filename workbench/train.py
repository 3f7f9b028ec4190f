"""`train(...)`: fine-tune inside the kernel with transformers' Trainer, on a background thread.

The run directory (`runs/<id>/`) holds `config.yaml` (with the exact training and validation
rows in `data/`), so `resume_run(path)` or `python -m workbench resume path` can continue it.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

from workbench.adapters import Method, apply_method, count_parameters
from workbench.batching import PackedCollator
from workbench.config import write_atomic
from workbench.data import Examples, load_data
from workbench.errors import AllLabelsMaskedError, WorkbenchError
from workbench.generation import Decoding, generate
from workbench.hyperparameters import Hyperparameters
from workbench.loss import accepts_logits_to_keep, index_logits_supported, workbench_trainer_class
from workbench.run import Run, complete_checkpoints, save_atomic_dir
from workbench.templates import Template, default_template, get_template
from workbench.tokenize import CompletionCollator, tokenize_examples


def runs_root() -> Path:
    """Where run directories go: `$WORKBENCH_RUNS`, else ./runs."""
    return Path(os.environ.get("WORKBENCH_RUNS", "runs"))


def new_run_dir(label: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = runs_root() / f"{stamp}-{label}"
    suffix = 1
    while path.exists():
        suffix += 1
        path = runs_root() / f"{stamp}-{label}-{suffix}"
    return path


def train(
    model,
    tokenizer,
    train_data: Examples,
    validation: Examples | None = None,
    *,
    template: Template | str | None = None,
    method: Method | None = None,
    hyperparameters: Hyperparameters | None = None,
    run_dir: str | Path | None = None,
    samples: int = 3,
    regularizer=None,
    start: bool = True,
) -> Run:
    """Start fine-tuning and return the Run at once (training continues in the background).

    `template` defaults to the one that suits the data format. `samples` validation prompts are
    answered at every evaluation. The model is adapted in place (LoRA layers are injected);
    `run.model` is the model being trained, with the adapter switchable for before/after.
    `regularizer` (e.g. `workbench.fisher_ewc(...)`, full fine-tuning only) is added to the
    training loss and recorded in config.yaml, so a resumed run keeps it.
    """
    method = method or Method()
    hp = hyperparameters or Hyperparameters()
    if regularizer is not None and method.uses_lora:
        raise WorkbenchError(
            f"`regularizer` (EWC) with `kind`={method.kind!r}: LoRA leaves the base weights "
            "frozen, so there is nothing to anchor. Use kind='full' (or 'freeze'), or drop it."
        )
    template = (
        get_template(template) if template is not None else default_template(train_data.format)
    )

    def tokens_of(rows: Examples):
        return tokenize_examples(
            rows,
            template,
            tokenizer,
            max_length=hp.max_length,
            completion_only=hp.completion_only,
            truncation_side=hp.truncation_side,
        )

    train_tokens = tokens_of(train_data)
    _check_learnable(train_tokens, train_data)
    val_tokens = tokens_of(validation) if validation is not None and len(validation) else None
    already_adapted = method.uses_lora and hasattr(model, "peft_config")  # e.g. run.model again
    if already_adapted:
        existing = model.peft_config.get("default")
        if existing is not None and (existing.r, existing.lora_alpha) != (method.r, method.alpha):
            warnings.warn(
                f"The model already carries a LoRA adapter (r={existing.r}, alpha="
                f"{existing.lora_alpha}) from an earlier run; training continues that adapter "
                f"and ignores method r={method.r}, alpha={method.alpha}. Load a fresh model to "
                "train a new adapter.",
                stacklevel=2,
            )
    else:
        from transformers import set_seed

        set_seed(hp.seed)  # LoRA's initial weights come from this seed too
        model = apply_method(model, method)
    hp, fit = _size_batch(model, method, hp, train_tokens)
    run_dir = Path(run_dir) if run_dir else new_run_dir(f"{method.kind}-{_task_label(train_data)}")
    run_dir.mkdir(parents=True, exist_ok=True)
    has_validation = validation is not None and len(validation) > 0
    scored = min(hp.eval_metric_rows, len(validation)) if has_validation else 0
    sample_rows = (validation if has_validation else train_data).rows[: max(samples, scored)]
    _write_run_config(
        run_dir, model, template, method, hp, train_data, validation, sample_rows[:samples]
    )
    if regularizer is not None:
        _record_regularizer(run_dir, regularizer)
    pairs = [template.render(r, tokenizer) for r in sample_rows]
    sample_prompts, references = [p for p, _ in pairs], [r for _, r in pairs]

    def build_trainer(run: Run, resuming: bool):
        return _build_trainer(
            run,
            model,
            tokenizer,
            hp,
            train_tokens,
            val_tokens,
            sample_prompts,
            references,
            resuming,
            regularizer=regularizer,
        )

    run = Run(run_dir, build_trainer, on_success=lambda r: _save_final(r, model, tokenizer))
    run.model, run.tokenizer, run.template, run.method, run.hyperparameters = (
        model,
        tokenizer,
        template,
        method,
        hp,
    )
    run.parameters = count_parameters(model)
    run.fit = fit
    run.samples_shown, run.scored_rows = samples, scored  # the bridge answers max() of them
    run.truncation = train_tokens.report
    return run.start() if start else run


def _size_batch(model, method: Method, hp: Hyperparameters, tokens):
    """Apply `auto_batch` on a GPU, then warn when the predicted peak exceeds free memory."""
    from workbench.fitting import auto_batch_size, check_fit, row_statistics

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


def _task_label(data: Examples) -> str:
    tasks = list(data.tasks)
    return tasks[0] if len(tasks) == 1 else f"{len(tasks)}tasks"


def _check_learnable(tokens, data: Examples) -> None:
    report = tokens.report
    if len(report.without_loss) == report.rows:
        raise AllLabelsMaskedError(
            f"No row of {data.source} has a token to learn from (every label would be -100, "
            f"masked): {report}"
        )
    if report.truncated:
        warnings.warn(str(report), stacklevel=3)


def _record_regularizer(run_dir: Path, regularizer) -> None:
    """Add the regularizer (and its reference rows) to config.yaml, for resume."""
    import yaml

    config = load_run_config(run_dir)
    config["regularizer"] = regularizer.save(run_dir)
    write_atomic(
        run_dir / "config.yaml", yaml.safe_dump(config, sort_keys=False, allow_unicode=True)
    )


def _write_run_config(
    run_dir: Path,
    model,
    template: Template,
    method: Method,
    hp: Hyperparameters,
    train_data: Examples,
    validation: Examples | None,
    sample_rows: list[dict],
) -> None:
    import yaml

    data_dir = run_dir / "data"
    files = {"train": train_data, "validation": validation}
    for name, examples in files.items():
        if examples is not None:
            lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in examples.rows)
            write_atomic(data_dir / f"{name}.jsonl", lines)
    config = {
        "model": getattr(model, "workbench_source", None) or model.config.name_or_path,
        "quantization": "4bit"
        if getattr(model, "is_loaded_in_4bit", False)
        else ("8bit" if getattr(model, "is_loaded_in_8bit", False) else None),
        "template": {k: v for k, v in asdict(template).items() if k != "description"},
        "method": method.to_dict(),
        "hyperparameters": hp.to_dict(),
        "data": {
            "format": train_data.format,
            "train": "data/train.jsonl",
            "validation": "data/validation.jsonl" if validation is not None else None,
            "sources": sorted({train_data.source_of(i) for i in range(len(train_data))}),
            "rows": {"train": len(train_data), "validation": len(validation or [])},
        },
        "samples": len(sample_rows),
    }
    write_atomic(
        run_dir / "config.yaml", yaml.safe_dump(config, sort_keys=False, allow_unicode=True)
    )


# transformers' own Trainer still calls a renamed property; the warning is not for our users.
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


def _build_trainer(
    run: Run,
    model,
    tokenizer,
    hp: Hyperparameters,
    train_tokens,
    val_tokens,
    sample_prompts: list[str],
    references: list[str],
    resuming: bool,
    regularizer=None,
):
    from transformers import EarlyStoppingCallback, PrinterCallback

    device = str(next(model.parameters()).device).split(":")[0]
    args = hp.to_training_args(
        str(run.run_dir / "checkpoints"),
        device=device,
        dtype=next(model.parameters()).dtype,
        has_validation=val_tokens is not None,
    )
    if resuming:
        args.eval_on_start = False  # the resumed run already evaluated its start
    decoding = Decoding(max_new_tokens=hp.sample_max_new_tokens)
    callbacks = [_event_bridge(run, tokenizer, sample_prompts, references, decoding)]
    if hp.early_stopping_patience and val_tokens is not None:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=hp.early_stopping_patience))
    if hp.compile:
        from workbench.compiling import compiling_callback

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
    trainer.remove_callback(PrinterCallback)  # it prints raw log dicts; events replace it
    if regularizer is not None:  # e.g. EWC: its penalty joins the training loss
        from workbench.ewc import attach_regularizer

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


def _save_final(run: Run, model, tokenizer) -> dict[str, Any]:
    """Save the adapter (or the whole model for full fine-tuning) and the report."""
    name = "adapter" if hasattr(model, "peft_config") else "model"

    def save(folder: Path) -> None:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)

    save_atomic_dir(save, run.run_dir / name)
    summary: dict[str, Any] = {name: str(run.run_dir / name)}
    evaluations = [e for e in run.events if e["event"] == "evaluation"]
    if evaluations:
        summary["eval_loss"] = evaluations[-1]["eval_loss"]
    try:
        from workbench.report import write_report

        summary["report"] = str(write_report(run.run_dir))
    except ImportError as error:  # plotly missing: the run itself is still complete
        warnings.warn(f"No report.html: {error}", stacklevel=2)
    return summary


def _event_bridge(
    run: Run, tokenizer, prompts: list[str], references: list[str], decoding: Decoding
):
    """A TrainerCallback that turns Trainer hooks into the Run's events (defined here so that
    `import workbench` does not import transformers)."""
    from transformers import TrainerCallback

    class EventBridge(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            run.emit(
                "started",
                step=state.global_step,
                max_steps=state.max_steps,
                run_dir=str(run.run_dir),
                parameters=str(run.parameters),
                batch_size=args.per_device_train_batch_size,
                predicted_memory=str(run.fit) if getattr(run, "fit", None) else None,
            )

        def on_step_end(self, args, state, control, **kwargs):
            if run.stop_requested:  # stop after this step, with a checkpoint to resume from
                control.should_training_stop = True
                control.should_save = True
            return control

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs and not run.on_step_log(state, logs):
                control.should_training_stop = True
                control.should_save = False  # never checkpoint NaN weights
                control.should_evaluate = False
            return control

        def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
            loss = (metrics or {}).get("eval_loss")
            perplexity = math.exp(loss) if loss is not None and loss < 50 else None
            answers = generate(model, tokenizer, prompts, decoding) if model is not None else []
            scored = min(getattr(run, "scored_rows", 0), len(answers))
            run.emit(
                "evaluation",
                step=state.global_step,
                eval_loss=loss,
                perplexity=perplexity,
                exact_match=_exact_match(answers[:scored], references[:scored]),
                scored_rows=scored,
            )
            shown = getattr(run, "samples_shown", len(prompts))
            if answers and shown:
                rows = [
                    {"prompt": p, "reference": r, "answer": a}
                    for p, r, a in zip(prompts[:shown], references, answers)
                ]
                record = run.emit("samples", step=state.global_step, samples=rows)
                with open(run.run_dir / "samples.jsonl", "a", encoding="utf-8") as handle:
                    handle.write(json.dumps(record, ensure_ascii=False) + "\n")
                    handle.flush()
            run.restart_step_clock()

        def on_save(self, args, state, control, **kwargs):
            run.mark_checkpoint(state)

    return EventBridge()


def _exact_match(answers: list[str], references: list[str]) -> float | None:
    """Share of answers equal to their reference (normalised), None without rows."""
    if not answers:
        return None
    from workbench.metrics import load_metric

    result = load_metric("exact_match").compute(predictions=answers, references=references)
    return float(result["exact_match"])


def load_run_config(run_dir: str | Path) -> dict[str, Any]:
    """The parsed config.yaml of a run directory."""
    import yaml

    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {run_dir} a run directory?")
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def resume_run(run_dir: str | Path, model=None, tokenizer=None) -> Run:
    """Continue a stopped, failed or killed run from its newest complete checkpoint.

    Loads the model named in config.yaml unless `model` and `tokenizer` are given (a fresh,
    un-adapted base model).
    """
    from workbench.models import load_model

    run_dir = Path(run_dir)
    config = load_run_config(run_dir)
    if not complete_checkpoints(run_dir):
        raise WorkbenchError(f"{run_dir} has no complete checkpoint to resume from.")
    if model is None:
        model, tokenizer = load_model(config["model"], quantization=config.get("quantization"))
    data = config["data"]
    train_data = load_data(run_dir / data["train"], format=data["format"], verbose=False)
    validation = (
        load_data(run_dir / data["validation"], format=data["format"], verbose=False)
        if data.get("validation")
        else None
    )
    template = Template(**config["template"])
    from workbench.ewc import regularizer_from_config

    regularizer = regularizer_from_config(
        config.get("regularizer"), model, tokenizer, run_dir, template
    )
    run = train(
        model,
        tokenizer,
        train_data,
        validation,
        template=template,
        method=Method.from_dict(config["method"]),
        hyperparameters=Hyperparameters.from_dict(config["hyperparameters"]),
        run_dir=run_dir,
        samples=config.get("samples", 3),
        regularizer=regularizer,
        start=False,
    )
    return run.resume()
