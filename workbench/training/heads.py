"""A classification head on the pretrained model: the body reads the text, a linear head picks
the label.

`classifier_from_causal_lm(model, labels)` puts transformers' sequence-classification head
(`LlamaForSequenceClassification` for Llama-family models) on the weights of a loaded causal LM,
without copying them; the head reads the hidden state of the last token that is not padding.
`ClassifierMethod` says what trains:

- `head`: the body is frozen, only the head (hidden size x labels weights) trains;
- `head+lora`: LoRA adapters on the body train too (PEFT's SEQ_CLS task, which keeps the head
  trainable and saves it with the adapter).

It is its own settings class, not a new `Method.kind`: `Method` is read by memory prediction,
batch sizing, export and code generation, none of which know a head. `ClassifierFields` says
which fields of a row the classifier reads and which holds the label. Training is in
`workbench.training.classification`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Literal

from workbench.data.loading import Examples
from workbench.errors import WorkbenchError
from workbench.evaluation.classifying import classifier_labels
from workbench.model.loading import load_model, model_origin
from workbench.model.methods import Method
from workbench.settings import Settings

ClassifierKind = Literal["head", "head+lora"]
# The fields a row's text comes from, and the field its label is in, for each data format
# (a `label` column, when every row has one, takes precedence).
DEFAULT_TEXT_FIELDS = {
    "alpaca": ("instruction", "input"),
    "prompt_completion": ("prompt",),
    "text": ("text",),
}
DEFAULT_LABEL_FIELD = {"alpaca": "output", "prompt_completion": "completion"}


@dataclass
class ClassifierMethod(Settings):
    """What trains: `kind` 'head' (the body frozen, only the head) or 'head+lora' (LoRA on the
    body as well); `r`, `alpha`, `dropout`, `target_modules`: LoRA settings, as in `Method`."""

    kind: ClassifierKind = field(default="head", metadata={"help": "head or head+lora"})
    r: int = field(default=16, metadata={"help": "LoRA rank (head+lora only)"})
    alpha: float = field(default=32, metadata={"help": "LoRA scale numerator (head+lora only)"})
    dropout: float = field(default=0.0, metadata={"help": "dropout on the LoRA input"})
    target_modules: str | list[str] = field(
        default="all-linear", metadata={"help": "'all-linear' or layer names (head+lora only)"}
    )

    def __post_init__(self) -> None:
        self.check_values()
        if self.kind not in ("head", "head+lora"):
            raise WorkbenchError(f"`kind`={self.kind!r}: use 'head' or 'head+lora'.")
        self.lora_method()  # the LoRA fields are checked as Method checks them

    @property
    def uses_lora(self) -> bool:
        return self.kind == "head+lora"

    def lora_method(self) -> Method:
        return Method(
            kind="lora",
            r=self.r,
            alpha=self.alpha,
            dropout=self.dropout,
            target_modules=self.target_modules,
        )

    def describe(self) -> str:
        return f"head + LoRA r={self.r}" if self.uses_lora else "head only"

    def to_peft(self, classifier):
        """PEFT's LoraConfig for head+lora: task SEQ_CLS, so the head is in modules_to_save."""
        from peft import TaskType

        config = self.lora_method().to_peft(classifier)
        config.task_type = TaskType.SEQ_CLS
        return config


@dataclass(frozen=True)
class ClassifierFields:
    """Where a row's text and label are: the text joins `text_fields` (empty ones skipped)."""

    text_fields: tuple[str, ...]
    label_field: str

    @classmethod
    def for_data(
        cls,
        data: Examples,
        text_fields: tuple[str, ...] | list[str] | None = None,
        label_field: str | None = None,
    ) -> ClassifierFields:
        """The given fields, or the defaults of the data's format."""
        if data.format not in DEFAULT_TEXT_FIELDS:
            raise WorkbenchError(
                f"{data.source}: a classifier reads {', '.join(DEFAULT_TEXT_FIELDS)} rows, not "
                f"{data.format!r}. Give the rows a `text` and a `label` column."
            )
        if label_field is None:
            has_label = all("label" in r for r in data.rows)
            label_field = "label" if has_label else DEFAULT_LABEL_FIELD.get(data.format)
        if label_field is None:
            raise WorkbenchError(
                f"{data.source}: no label column: add `label` to every row, or name the column "
                "with label_field=..."
            )
        return cls(tuple(text_fields or DEFAULT_TEXT_FIELDS[data.format]), label_field)

    def texts(self, data: Examples) -> list[str]:
        texts = []
        for i, row in enumerate(data.rows):
            text = "\n\n".join(str(row[f]) for f in self.text_fields if row.get(f))
            if not text.strip():
                raise WorkbenchError(
                    f"{data.where(i)}: no text in {', '.join(self.text_fields)}: fill them, or "
                    "choose other text_fields."
                )
            texts.append(text)
        return texts

    def labels(self, data: Examples) -> list[str]:
        values = []
        for i, row in enumerate(data.rows):
            value = row.get(self.label_field)
            if value is None or not str(value).strip():
                raise WorkbenchError(
                    f"{data.where(i)}: `{self.label_field}` (the label) is missing or empty."
                )
            values.append(str(value).strip())
        return values


def classifier_from_causal_lm(model, labels: list[str], *, pad_token_id: int | None = None):
    """A sequence classifier (e.g. LlamaForSequenceClassification) on `model`'s weights.

    The body's tensors are shared with `model`, not copied; the head is new (normal init, as
    transformers initialises it). `id2label`/`label2id` and the pad token (the head reads the
    last token that is not padding) are recorded in its config. `pad_token_id` defaults to the
    model's (load_model sets it from the tokenizer).
    """
    import torch
    from transformers import AutoModelForSequenceClassification

    labels = checked_labels(labels)
    pad = pad_token_id if pad_token_id is not None else _pad_token_id(model)
    config = copy.deepcopy(model.config)
    config.num_labels = len(labels)
    config.id2label = dict(enumerate(labels))
    config.label2id = {label: i for i, label in enumerate(labels)}
    config.pad_token_id = pad
    config.use_cache = False  # a classifier reads each text once: no key/value cache
    parameter = next(model.parameters())
    with torch.device("meta"):  # no weights allocated: the body's come from `model`
        classifier = AutoModelForSequenceClassification.from_config(config, dtype=parameter.dtype)
    classifier.load_state_dict(model.state_dict(), strict=False, assign=True)
    for name, buffer in model.named_buffers():  # non-persistent buffers (rotary frequencies)
        owner, _, leaf = name.rpartition(".")
        classifier.get_submodule(owner)._buffers[leaf] = buffer
    head = torch.nn.Linear(
        config.hidden_size, len(labels), bias=False, device=parameter.device, dtype=parameter.dtype
    )
    torch.nn.init.normal_(head.weight, std=config.initializer_range)
    classifier.score = head
    # the name load_model was given (its folder, hub id or embedded name), as on the causal LM:
    # run configs name the base model by it
    classifier.workbench_source = model_origin(model)[0]
    meta = [n for n, p in classifier.named_parameters() if p.is_meta]
    if meta:
        raise WorkbenchError(
            f"{type(model).__name__} has no weights for {meta[:3]} of "
            f"{type(classifier).__name__}: this architecture's classifier does not fit it."
        )
    return classifier


def load_classifier(model_id_or_dir: str, labels: list[str], **load_settings):
    """(classifier, tokenizer): `load_model(model_id_or_dir, **load_settings)` with a new
    classification head for `labels`."""
    model, tokenizer = load_model(model_id_or_dir, **load_settings)
    return classifier_from_causal_lm(model, labels, pad_token_id=tokenizer.pad_token_id), tokenizer


def checked_labels(labels) -> list[str]:
    labels = [str(label) for label in labels]
    if len(labels) < 2 or len(set(labels)) != len(labels):
        raise WorkbenchError(f"`labels`={labels}: give two or more distinct labels.")
    return labels


def _pad_token_id(model) -> int:
    for config in (model.config, getattr(model, "generation_config", None)):
        if config is not None and getattr(config, "pad_token_id", None) is not None:
            return config.pad_token_id
    raise WorkbenchError(
        "The model has no pad token id, which the head needs to find each text's last token: "
        "pass pad_token_id=tokenizer.pad_token_id."
    )


def adapt_classifier(model, labels: list[str], method: ClassifierMethod, tokenizer, seed: int):
    """The classifier for `method`: a head put on a causal LM (or the given classifier's),
    then the body frozen (head) or LoRA injected (head+lora)."""
    from transformers import set_seed

    set_seed(seed)  # the head's initial weights (and LoRA's) come from this seed
    if is_classifier(model):
        if classifier_labels(model) != labels:
            raise WorkbenchError(
                f"The classifier's labels {classifier_labels(model)} differ from "
                f"`labels`={labels}: load a new one with load_classifier(..., labels)."
            )
        classifier = model
    else:
        classifier = classifier_from_causal_lm(model, labels, pad_token_id=tokenizer.pad_token_id)
    if method.uses_lora:
        from peft import get_peft_model

        return get_peft_model(classifier, method.to_peft(classifier))
    for parameter in classifier.parameters():
        parameter.requires_grad = False
    for parameter in classifier.score.parameters():
        parameter.requires_grad = True
    return classifier


def is_classifier(model) -> bool:
    return type(model).__name__.endswith("ForSequenceClassification")
