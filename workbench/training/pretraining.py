"""Continued pre-training: keep training a model on raw domain text, every token learned.

`continue_pretraining(model, tokenizer, documents)` cuts the documents into fixed-length blocks
(`workbench.tokens.blocks`: EOS after each document, every token learned) and trains on them
with the project's Trainer, as if the text were the tail of the pre-training data. It returns a
`Run` like `train()` does (events, monitor, Stop/Resume, run directory with `stage: pretrain`,
report); `resume_pretraining(run_dir)` continues one from its directory. At each evaluation the
monitor shows how the model continues the opening of a few documents.

`perplexity(...)` measures a model on documents cut the same way (token-weighted over the
blocks); `perplexity_table(...)` gives before/after for named sets, e.g. held-out domain text
(the gain) and general text (the forgetting), and can store it in the run's report.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from workbench.data.documents import Documents as Documents  # re-exported
from workbench.data.documents import read_documents
from workbench.data.loading import Examples
from workbench.model.compiling import compiling_callback
from workbench.model.generation import adapter_disabled, eval_mode
from workbench.model.loss import workbench_trainer_class
from workbench.model.methods import Method
from workbench.runs.bridge import bridged, event_bridge
from workbench.runs.building import (
    check_new_run_dir,
    model_saver,
    record_new_run,
    run_context,
    run_directory,
)
from workbench.runs.fitting import check_fit
from workbench.runs.hyperparameters import Hyperparameters, as_hyperparameters
from workbench.runs.kinds import Kind, deprecated_name, register
from workbench.runs.report import save_comparison, write_report
from workbench.runs.run import Run
from workbench.tokens.blocks import BlockCollator, TokenBlocks, token_blocks
from workbench.tokens.templates import TEMPLATES
from workbench.training.finetune import adapt_model
from workbench.training.resuming import open_run

STAGE = "pretrain"
# Instruction-tuning settings that blocks of raw text make meaningless: `block_size` sets the
# length, every token is learned, and there are no answers to score.
NOT_USED = (
    "max_length",
    "truncation_side",
    "completion_only",
    "packing",
    "eval_metric_rows",
    "auto_batch",  # the batch is `batch_size` blocks
)
SAMPLE_PROMPT_TOKENS = 24  # the opening of a document the monitor asks the model to continue


@dataclass
class PretrainingSettings(Hyperparameters):
    """Continued pre-training's settings: instruction tuning's `Hyperparameters` (the same
    fields, meanings and checks) and the two knobs raw text adds."""

    block_size: int = field(
        default=256,
        metadata={"help": "tokens per training block; longer blocks see more context, cost more"},
    )
    drop_duplicates: bool = field(
        default=False,
        metadata={"help": "drop documents that repeat an earlier one (kept with a warning)"},
    )


# -- the run ------------------------------------------------------------------------------
def train_pretraining(
    model,
    tokenizer,
    rows: Documents,
    validation: Documents | None = None,
    *,
    settings: PretrainingSettings | Hyperparameters | None = None,
    method: Method | None = None,
    run_dir: str | Path | None = None,
    start: bool = True,
    samples: int = 2,
) -> Run:
    """Start continued pre-training on the documents `rows` and return the Run at once
    (training continues in the background).

    Documents (`text` rows, a folder of `.txt` files, or strings) are joined with EOS and cut
    into blocks of `settings.block_size` tokens; every token is learned. `validation`
    documents give the validation loss (and perplexity) at each evaluation, and the opening of
    `samples` of them is continued by the model. LoRA (the default `method`) or full training;
    a model that already carries an adapter continues it, so `train(run.model, ...)` afterwards
    instruction-tunes the same adapter. Documents that repeat an earlier one are trained on
    (with a warning) unless `settings.drop_duplicates`.
    """
    check_new_run_dir(run_dir)
    settings = settings or PretrainingSettings()
    block_size = getattr(settings, "block_size", PretrainingSettings.block_size)
    read = {"drop_duplicates": getattr(settings, "drop_duplicates", False)}
    hp = as_hyperparameters(settings)
    _warn_not_used(hp)
    validation = read_documents(validation, **read) if validation is not None else None
    run = _prepare(
        model,
        tokenizer,
        read_documents(rows, **read),
        validation,
        block_size=block_size,
        method=method or Method(),
        hp=hp,
        run_dir=run_dir,
        samples=samples,
        resuming=False,
    )
    return run.start() if start else run


def continue_pretraining(
    model,
    tokenizer,
    documents: Documents,
    validation: Documents | None = None,
    *,
    block_size: int = 256,
    method: Method | None = None,
    hyperparameters: Hyperparameters | None = None,
    run_dir: str | Path | None = None,
    samples: int = 2,
    drop_duplicates: bool = False,
    start: bool = True,
) -> Run:
    """The old form of `train_pretraining` (kept for one release)."""
    deprecated_name("continue_pretraining", "train_pretraining")
    base = hyperparameters or Hyperparameters()
    settings = PretrainingSettings(
        **base.to_dict(), block_size=block_size, drop_duplicates=drop_duplicates
    )
    return train_pretraining(
        model, tokenizer, documents, validation, settings=settings, method=method,
        run_dir=run_dir, start=start, samples=samples,
    )  # fmt: skip


def _warn_not_used(hp: Hyperparameters) -> None:
    defaults = Hyperparameters()
    changed = [n for n in NOT_USED if getattr(hp, n) != getattr(defaults, n)]
    if changed:
        warnings.warn(
            f"{', '.join(f'`{n}`' for n in changed)}: not used by continued pre-training, "
            "ignored (blocks are `block_size` tokens long, every token is learned, no answers "
            "are scored).",
            stacklevel=3,
        )


def _prepare(
    model,
    tokenizer,
    documents: Examples,
    validation: Examples | None,
    *,
    block_size: int,
    method: Method,
    hp: Hyperparameters,
    run_dir,
    samples: int,
    resuming: bool,
) -> Run:
    """Cut the blocks, adapt the model and build the Run. A new run records its config.yaml
    (with `block_size`) and documents; a resumed one reads them and changes nothing."""
    train_blocks = token_blocks(_texts(documents), tokenizer, block_size)
    has_validation = validation is not None and len(validation) > 0
    val_blocks = token_blocks(_texts(validation), tokenizer, block_size) if has_validation else None
    model = adapt_model(model, method, hp.seed)
    fit = _check_fit(model, method, hp, train_blocks)
    run_dir = run_directory(run_dir, STAGE, documents, "text")
    template = TEMPLATES["text"]
    if not resuming:
        held = validation if has_validation else None
        extra = {"block_size": block_size, "samples": samples}
        record_new_run(run_dir, STAGE, model, template, method, hp, documents, held, **extra)
    shown = (validation if has_validation else documents).rows[:samples]
    openings = _openings([r["text"] for r in shown], tokenizer, hp)
    context = run_context(model, tokenizer, template, method, hp, openings, fit=fit)

    def build_trainer(run: Run, resuming: bool):  # run.hyperparameters: a resume may extend
        return _build_trainer(run, run.hyperparameters, train_blocks, val_blocks, resuming)

    return Run(run_dir, context, build_trainer, save_final=model_saver(model, tokenizer))


def _texts(documents: Examples) -> list[str]:
    return [row["text"] for row in documents.rows]


def _openings(texts: list[str], tokenizer, hp: Hyperparameters) -> tuple[list[str], list[str]]:
    """(prompt, reference) per document: its first tokens, and the text that follows them."""
    prompts, references = [], []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) <= SAMPLE_PROMPT_TOKENS:
            continue  # too short to have a continuation to compare with
        end = SAMPLE_PROMPT_TOKENS + hp.sample_max_new_tokens
        prompts.append(tokenizer.decode(ids[:SAMPLE_PROMPT_TOKENS]))
        references.append(tokenizer.decode(ids[SAMPLE_PROMPT_TOKENS:end]).strip())
    return prompts, references


def _check_fit(model, method: Method, hp: Hyperparameters, blocks: TokenBlocks):
    """The predicted memory peak for batches of blocks (every token learned); a warning when
    it exceeds the free memory."""
    lengths = [len(b) for b in blocks.blocks]
    fit = check_fit(model, method, hp.replace(max_length=blocks.block_size), lengths, 1.0)
    if fit is not None and not fit.fits:
        warnings.warn(str(fit), stacklevel=4)
    return fit


def _build_trainer(run: Run, hp: Hyperparameters, train_blocks, val_blocks, resuming: bool):
    """The project's Trainer with the block collator and the Run's event bridge."""
    from transformers import EarlyStoppingCallback

    model = run.model
    args = hp.run_arguments(
        run.directory.checkpoints_dir,
        model,
        has_validation=val_blocks is not None,
        rows=len(train_blocks),  # the plan's optimizer steps: warmup cap, too-short warning
    )
    if resuming:
        args.eval_on_start = False  # the resumed run already evaluated its start
    callbacks = [event_bridge(run)]
    if hp.early_stopping_patience and val_blocks is not None:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=hp.early_stopping_patience))
    if hp.compile:
        callbacks.append(compiling_callback())
    trainer = workbench_trainer_class()(
        model=model,
        args=args,
        train_dataset=train_blocks.to_hf(),
        eval_dataset=val_blocks.to_hf() if val_blocks is not None else None,
        data_collator=BlockCollator(run.tokenizer.pad_token_id),
        processing_class=run.tokenizer,
        callbacks=callbacks,
    )
    return bridged(trainer, run)


def resume_pretraining(
    run_dir: str | Path, model=None, tokenizer=None, *, max_steps: int | None = None
) -> Run:
    """Continue a stopped, failed or killed continued pre-training run from its newest
    complete checkpoint, with the documents and block size its config.yaml records. Loads the
    model named there unless `model` and `tokenizer` (a fresh base model) are given."""
    opened = open_run(
        run_dir, STAGE, Hyperparameters, max_steps,
        otherwise="resume instruction tuning with workbench.resume(path)",
    )  # fmt: skip
    model, tokenizer = opened.model(model, tokenizer)
    run = _prepare(
        model,
        tokenizer,
        opened.rows("train"),
        opened.rows("validation"),
        block_size=int(opened.config["block_size"]),
        method=opened.method(),
        hp=opened.settings,
        run_dir=opened.directory.path,
        samples=opened.config.get("samples", 2),
        resuming=True,
    )
    return run.resume(max_steps)


# -- perplexity ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Perplexity:
    """A model's perplexity on documents: exp of the mean loss over every predicted token
    (token-weighted over the blocks; each block's first token has no context and is not
    predicted)."""

    value: float
    loss: float  # mean cross-entropy per predicted token, in nats
    tokens: int  # predicted tokens
    blocks: int

    def __float__(self) -> float:
        return self.value

    def __str__(self) -> str:
        return f"perplexity {self.value:.2f} (loss {self.loss:.3f} over {self.tokens:,} tokens)"


def perplexity(
    model,
    tokenizer,
    documents: Documents,
    *,
    block_size: int = 256,
    adapter: bool = True,
    batch_size: int = 4,
) -> Perplexity:
    """The perplexity of `model` on `documents`, cut into blocks as continued pre-training
    cuts them. `adapter=False` measures a PEFT model's base weights (the adapter switched off
    inside the call): the "before" of a LoRA run on the same model."""
    import torch
    import torch.nn.functional as F

    blocks = token_blocks(_texts(read_documents(documents)), tokenizer, block_size)
    collate = BlockCollator(tokenizer.pad_token_id)
    device = next(model.parameters()).device
    total, count = 0.0, 0
    with eval_mode(model), torch.no_grad(), adapter_disabled(model, not adapter):
        for start in range(0, len(blocks), batch_size):
            batch = collate([{"input_ids": b} for b in blocks.blocks[start : start + batch_size]])
            labels = batch["labels"][:, 1:].to(device)
            logits = model(
                input_ids=batch["input_ids"].to(device),
                attention_mask=batch["attention_mask"].to(device),
                use_cache=False,
            ).logits[:, :-1]
            total += F.cross_entropy(
                logits.float().reshape(-1, logits.shape[-1]),
                labels.reshape(-1),
                ignore_index=-100,
                reduction="sum",
            ).item()
            count += int((labels != -100).sum())
    loss = total / count
    return Perplexity(math.exp(min(loss, 700.0)), loss, count, len(blocks))


def perplexity_table(
    model,
    tokenizer,
    sets: dict[str, Documents],
    *,
    block_size: int = 256,
    before: dict[str, Perplexity] | None = None,
    run_dir: str | Path | None = None,
):
    """Perplexity before and after training on each named set of documents, as a DataFrame
    (`before`, `after`, `change` = after - before). `before` defaults to the model with its adapter
    switched off (LoRA); for full training, pass the values measured before it. With
    `run_dir`, the table goes into the run's comparison.json (report.html and the run history
    show it)."""
    import pandas as pd

    rows = {}
    for name, documents in sets.items():
        was = before[name] if before and name in before else None
        if was is None:
            was = perplexity(model, tokenizer, documents, block_size=block_size, adapter=False)
        now = perplexity(model, tokenizer, documents, block_size=block_size)
        rows[f"{name} perplexity"] = {
            "before": float(was),
            "after": float(now),
            "change": float(now) - float(was),
        }
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "metric"
    if run_dir is not None:
        save_perplexities(run_dir, table)
    return table


def save_perplexities(run_dir: str | Path, table) -> Path:
    """Store a `perplexity_table` as the run's before/after comparison (there are no answers
    to show) and rebuild its report.html; returns the report's path."""
    import pandas as pd

    no_answers = pd.DataFrame(columns=["prompt", "reference", "before", "after"])
    save_comparison(run_dir, table, no_answers)
    return write_report(run_dir)


register(
    Kind(
        stage=STAGE,
        title="continued pre-training",
        function="train_pretraining",
        rows="`text` rows, a folder of `.txt` files, or strings",
        settings=PretrainingSettings,
        resume=resume_pretraining,
    )
)
