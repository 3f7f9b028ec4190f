"""Training a classification head (`workbench.training.heads`) as a Run.

`train_classifier(...)` trains it with transformers' Trainer and the Run's event bridge, so it
has what `train()` has: events, the live monitor, Stop/Resume, a run directory (`stage:
classify`) and report.html; every evaluation adds accuracy and a confusion matrix to the
`evaluation` event (`eval_accuracy`, `eval_confusion_matrix`, `eval_confusion_labels`).
`resume_classifier(run_dir)` continues a stopped run from disk, and `load_trained_classifier`
loads a finished one.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

from workbench.data.loading import Examples
from workbench.errors import WorkbenchError
from workbench.evaluation.classifying import confusion_matrix
from workbench.runs.bridge import bridged, event_bridge
from workbench.runs.building import check_new_run_dir, model_saver, record_new_run, run_context
from workbench.runs.directory import RunDirectory, new_run_dir
from workbench.runs.hyperparameters import Hyperparameters, as_hyperparameters
from workbench.runs.kinds import Kind, deprecated_name, register, renamed_argument
from workbench.runs.run import Run
from workbench.tokens.templates import Template
from workbench.training.heads import (
    ClassifierFields,
    ClassifierKind,
    ClassifierMethod,
    adapt_classifier,
    checked_labels,
    load_classifier,
)
from workbench.training.resuming import open_run

STAGE = "classify"  # config.yaml's `stage` for classifier runs
# A fresh head starts from random weights and needs larger steps than LoRA alone. Measured on
# the ticket topics (embedded model, 64 held-out rows, steps of 8 rows): the head alone reached
# 0.84 with 3e-3 for 60 steps (0.48 with 1e-3 for 30); head + LoRA 1.00 with 1e-3 for 60 steps
# (0.48 with 5e-4 and 0.34 with 2e-4, for 30 steps). benchmarks/four_ways.py
DEFAULT_LEARNING_RATE = {"head": 3e-3, "head+lora": 1e-3}


@dataclass
class ClassifierSettings(Hyperparameters):
    """A classification head's settings: instruction tuning's `Hyperparameters` (those about
    answers and packing do not apply) and where the labels come from."""

    labels: list[str] | None = field(
        default=None, metadata={"help": "the classes, in order; None: those found in the rows"}
    )
    text_fields: list[str] | None = field(
        default=None, metadata={"help": "columns joined into the text; None: chosen by format"}
    )
    label_field: str | None = field(
        default=None, metadata={"help": "the column holding the label; None: `output`"}
    )
    packing: bool = field(default=False, metadata={"help": "not used by a classifier"})
    eval_metric_rows: int = field(default=0, metadata={"help": "not used by a classifier"})


def train_classifier(
    model,
    tokenizer,
    rows: Examples,
    validation: Examples | None = None,
    *,
    settings: ClassifierSettings | Hyperparameters | None = None,
    method: ClassifierKind | ClassifierMethod = "head",
    run_dir: str | Path | None = None,
    start: bool = True,
    labels: list[str] | None = None,
    text_fields: tuple[str, ...] | list[str] | None = None,
    label_field: str | None = None,
    hyperparameters: Hyperparameters | None = None,
) -> Run:
    """Train a classification head on labelled rows and return the Run at once.

    `model` is a causal LM (it gets a head for `settings.labels`, inferred from the rows when
    None) or a classifier from `load_classifier`. The text comes from `settings.text_fields`
    and the label from `settings.label_field` (defaults: see `ClassifierFields.for_data`; for
    the support tickets, the instruction and message, and `output`). Of the settings, the ones
    about answers and packing (packing, completion_only, eval_metric_rows,
    sample_max_new_tokens, auto_batch, compile) do not apply. Every evaluation reports accuracy
    and a confusion matrix. `labels=`, `text_fields=`, `label_field=` and `hyperparameters=`
    are the old spellings of the settings (kept for one release).
    """
    check_new_run_dir(run_dir)
    settings = renamed_argument(settings, hyperparameters, "hyperparameters", "settings",
                                "train_classifier")  # fmt: skip
    method = method if isinstance(method, ClassifierMethod) else ClassifierMethod(kind=method)
    given = {"labels": labels, "text_fields": text_fields, "label_field": label_field}
    for name, value in given.items():
        if value is not None:
            deprecated_name(f"train_classifier({name}=...)", f"ClassifierSettings({name}=...)")
        else:
            given[name] = getattr(settings, name, None)
    fields = ClassifierFields.for_data(rows, given["text_fields"], given["label_field"])
    labels = checked_labels(given["labels"] or sorted(set(fields.labels(rows))))
    hp = as_hyperparameters(settings) if settings is not None else Hyperparameters(
        learning_rate=DEFAULT_LEARNING_RATE[method.kind], packing=False, eval_metric_rows=0
    )  # fmt: skip
    data = rows
    run = _prepare_run(
        model, tokenizer, data, validation, labels, fields, method, hp, run_dir, resuming=False
    )
    return run.start() if start else run


def _prepare_run(
    model, tokenizer, data, validation, labels, fields, method, hp, run_dir, *, resuming
) -> Run:
    """Check and tokenize the rows, put the head on, build the Run (a new run records its
    config.yaml and rows; a resumed one reads them and changes nothing)."""
    for name in ("auto_batch", "compile"):
        if getattr(hp, name):
            warnings.warn(
                f"`{name}`=True does not apply to classifier runs: ignored.", stacklevel=3
            )
    has_validation = validation is not None and len(validation) > 0
    train_set = _dataset(data, fields, labels, tokenizer, hp)
    val_set = _dataset(validation, fields, labels, tokenizer, hp) if has_validation else None
    classifier = adapt_classifier(model, labels, method, tokenizer, hp.seed)
    template = Template(
        name="classify",
        prompt="\n\n".join(f"{{{f}}}" for f in fields.text_fields),
        response=f"{{{fields.label_field}}}",
        description="what the classifier reads (prompt) and the label it predicts (response)",
    )
    task = next(iter(data.tasks), "rows") if len(data.tasks) == 1 else f"{len(data.tasks)}tasks"
    label = method.kind.replace("+", "-")  # head-lora: no `+` in folder names
    run_dir = Path(run_dir) if run_dir else new_run_dir(f"{label}-{task}")
    run_dir.mkdir(parents=True, exist_ok=True)
    if not resuming:
        held = validation if has_validation else None
        extra = {
            "labels": labels,
            "text_fields": list(fields.text_fields),
            "label_field": fields.label_field,
        }
        record_new_run(run_dir, STAGE, classifier, template, method, hp, data, held, **extra)
    context = run_context(classifier, tokenizer, template, method, hp)

    def build_trainer(run: Run, resuming: bool):  # run.hyperparameters: a resume may extend
        return _build_trainer(run, run.hyperparameters, train_set, val_set, labels, resuming)

    # head only: the whole classifier; head + LoRA: the adapter, which holds the head
    return Run(run_dir, context, build_trainer, save_final=model_saver(classifier, tokenizer))


def _dataset(rows: Examples, fields: ClassifierFields, labels: list[str], tokenizer, hp):
    """input_ids, attention_mask and the label index of each row, cut at `max_length`."""
    import datasets

    index = {label: i for i, label in enumerate(labels)}
    texts, values = fields.texts(rows), fields.labels(rows)
    for i, value in enumerate(values):
        if value not in index:
            raise WorkbenchError(
                f"{rows.where(i)}: label {value!r} is not one of {labels}: fix the row, or add "
                "the label to `labels`."
            )
    side, tokenizer.truncation_side = tokenizer.truncation_side, hp.truncation_side
    try:
        encoded = tokenizer(texts, truncation=True, max_length=hp.max_length)
    finally:
        tokenizer.truncation_side = side
    cut = sum(len(ids) >= hp.max_length for ids in encoded["input_ids"])
    if cut:
        warnings.warn(
            f"{rows.source}: {cut} of {len(texts)} texts reach max_length={hp.max_length} and "
            f"may be cut ({hp.truncation_side} side): raise max_length to keep them whole.",
            stacklevel=4,
        )
    return datasets.Dataset.from_dict(
        {
            "input_ids": encoded["input_ids"],
            "attention_mask": encoded["attention_mask"],
            "labels": [index[v] for v in values],
        }
    )


def accuracy_metrics(labels: list[str]):
    """The Trainer's `compute_metrics`: accuracy, and the confusion matrix (rows: true
    label, columns: predicted) with its labels, at every evaluation."""

    def compute(prediction) -> dict:
        logits = prediction.predictions
        logits = logits[0] if isinstance(logits, tuple) else logits
        predicted, truth = logits.argmax(-1), prediction.label_ids
        return {
            "accuracy": float((predicted == truth).mean()),
            "confusion_matrix": confusion_matrix(truth, predicted, len(labels)),
            "confusion_labels": list(labels),
        }

    return compute


def _build_trainer(run: Run, hp: Hyperparameters, train_set, val_set, labels, resuming: bool):
    """transformers' Trainer with the Run's event bridge: the same events as an SFT run."""
    from transformers import (
        DataCollatorWithPadding,
        EarlyStoppingCallback,
        Trainer,
    )

    args = hp.run_arguments(
        run.directory.checkpoints_dir,
        run.model,
        has_validation=val_set is not None,
        rows=len(train_set),  # the plan's optimizer steps: warmup cap, too-short warning
        include_num_input_tokens_seen="non_padding",  # tokens/s in the step events
        label_names=["labels"],
    )
    if resuming:
        args.eval_on_start = False  # the resumed run already evaluated its start
    callbacks = [event_bridge(run)]
    if hp.early_stopping_patience and val_set is not None:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=hp.early_stopping_patience))
    trainer = Trainer(
        model=run.model,
        args=args,
        train_dataset=train_set,
        eval_dataset=val_set,
        data_collator=DataCollatorWithPadding(run.tokenizer),
        processing_class=run.tokenizer,
        compute_metrics=accuracy_metrics(labels),
        callbacks=callbacks,
    )
    return bridged(trainer, run)


def resume_classifier(
    run_dir: str | Path, model=None, tokenizer=None, *, max_steps: int | None = None
) -> Run:
    """Continue a stopped, failed or killed classifier run from its newest complete
    checkpoint (a finished one only with a larger `max_steps`). Loads the base model that
    config.yaml names unless `model` and `tokenizer` (a fresh causal LM) are given."""
    opened = open_run(run_dir, STAGE, Hyperparameters, max_steps)
    config = opened.config
    model, tokenizer = opened.model(model, tokenizer)
    run = _prepare_run(
        model,
        tokenizer,
        opened.rows("train"),
        opened.rows("validation"),
        config["labels"],
        ClassifierFields(tuple(config["text_fields"]), config["label_field"]),
        opened.method(ClassifierMethod),
        opened.settings,
        opened.directory.path,
        resuming=True,
    )
    return run.resume(max_steps)


def load_trained_classifier(run_dir: str | Path):
    """(classifier, tokenizer) of a finished classifier run: its `model/` (head only) or its
    base model with `adapter/` (head + LoRA, the head saved with the adapter)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    directory = RunDirectory(run_dir)
    config = directory.read_config()
    folder = directory.final_artefact()
    if config.get("stage") != STAGE or folder is None:
        raise FileNotFoundError(
            f"{directory.path} holds no finished classifier run (stage {config.get('stage')!r}, "
            f"final folder {folder}): train_classifier(...) and let it finish first."
        )
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if folder.name == "model":
        return AutoModelForSequenceClassification.from_pretrained(folder), tokenizer
    from peft import PeftModel

    base, _ = load_classifier(config["model"], config["labels"])
    return PeftModel.from_pretrained(base, folder), tokenizer


register(
    Kind(
        stage=STAGE,
        title="classification head",
        function="train_classifier",
        rows="labelled rows (a text and a label column)",
        settings=ClassifierSettings,
        resume=resume_classifier,
    )
)
