"""Learning without forgetting (Li & Hoiem, 2016): while fine-tuning, keep the model's answers
on reference rows close to the base model's.

`LearningWithoutForgetting(model, tokenizer, reference_rows, strength=...)` holds rows of what
the model must keep (other tasks, general instructions). Every training micro-batch it takes the
next few of them, in a fixed cycle, and the loss gains

    strength * T^2 * mean over their response tokens of KL(base_T || model_T)

where `_T` is the next-token softmax at temperature T. Unlike EWC it anchors outputs, not
weights, so it works for LoRA too: there the base distribution comes from the same model with
its adapter switched off (no second copy). Pass it as `train(..., regularizer=lwf)`; like EWC it
records itself in config.yaml and `lwf_from_config` rebuilds it when the run resumes.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Literal

from workbench.data.loading import Examples, load_data
from workbench.errors import WorkbenchError
from workbench.model.generation import eval_mode
from workbench.model.loss import (
    accepts_logits_to_keep,
    index_logits_supported,
    response_logits,
    soft_kl,
)
from workbench.runs.directory import RunDirectory, checkpoint_step
from workbench.runs.files import write_atomic
from workbench.tokens.collators import CompletionCollator
from workbench.tokens.templates import Template, get_template
from workbench.tokens.tokenizing import tokenize_examples

REFERENCE_FILE = "data/lwf_reference.jsonl"
Base = Literal["auto", "adapter", "copy"]


class LearningWithoutForgetting:
    """The LwF penalty: `strength * T^2 * KL(base_T || model_T)` on the next reference batch.

    - `base`: where the base model's distribution comes from. 'adapter': the trained model
      itself with its LoRA adapter off (no memory cost; the model must carry the adapter when
      the penalty is computed, as `train(..., method=Method(kind='lora'))` makes it). 'copy': a
      frozen copy of `model` made here, for full or freeze fine-tuning: it costs a second
      model's memory (weights only, no gradients or optimizer state). 'auto': 'adapter' when
      `model` already carries an adapter, else 'copy'.
    - `batch_size` reference rows per training micro-batch, taken in order and cycled;
      `batches_taken` says how many batches earlier micro-batches took (a resumed run
      continues the cycle where it stopped).
    - `penalty(model)` is differentiable; `last_penalty` keeps its latest value.
    """

    def __init__(
        self,
        model,
        tokenizer,
        reference_rows: Examples,
        template: Template | str | None = None,
        *,
        strength: float = 1.0,
        temperature: float = 2.0,
        batch_size: int = 4,
        max_rows: int = 32,
        max_length: int = 256,
        base: Base = "auto",
        batches_taken: int = 0,
    ) -> None:
        problems = []
        if strength < 0:
            problems.append(f"`strength`={strength} must be 0 or more (try 0.1-10).")
        if temperature <= 0:
            problems.append(f"`temperature`={temperature} must be positive (try 1-4).")
        if batch_size < 1 or max_rows < 1:
            problems.append(f"`batch_size`={batch_size} and `max_rows`={max_rows}: at least 1.")
        if base not in ("auto", "adapter", "copy"):
            problems.append(f"`base`={base!r}: use 'auto', 'adapter' or 'copy'.")
        if not len(reference_rows):
            problems.append("no reference rows: pass rows of what the model must keep.")
        if problems:
            raise WorkbenchError("Invalid LwF settings:\n  - " + "\n  - ".join(problems))
        template = get_template(template, reference_rows.format)
        self.strength, self.temperature = float(strength), float(temperature)
        self.reference_rows = reference_rows.select(range(min(max_rows, len(reference_rows))))
        if base == "auto":
            base = "adapter" if hasattr(model, "disable_adapter") else "copy"
        self.base: Base = base
        self.settings = {
            "temperature": self.temperature,
            "batch_size": batch_size,
            "max_rows": max_rows,
            "max_length": max_length,
            "base": base,
            "template": template.name,
        }
        self.batches = _reference_batches(
            self.reference_rows, template, tokenizer, batch_size, max_length
        )
        self.batches_taken = batches_taken
        self.frozen = _frozen_copy(model) if base == "copy" else None
        self.last_penalty: float | None = None  # the latest value added to the loss

    def penalty(self, model):
        """strength * T^2 * KL(base || model) on the next reference batch, a scalar tensor."""
        import torch

        batch = self.batches[self.batches_taken % len(self.batches)]
        self.batches_taken += 1
        device = next(model.parameters()).device
        batch = {k: v.to(device) for k, v in batch.items()}
        current, mask = _response_logits(model, batch)
        with torch.no_grad():
            base, _ = self._base_logits(model, batch, device)
        per_token = soft_kl(current, base, self.temperature)
        kl = (per_token * mask).sum() / mask.sum()
        value = self.strength * self.temperature**2 * kl
        self.last_penalty = float(value.detach())
        return value

    __call__ = penalty

    def anchored_weights(self) -> list[str]:
        """None: LwF anchors the model's outputs, not its weights (so it suits LoRA too)."""
        return []

    def _base_logits(self, model, batch, device):
        if self.frozen is not None:
            self.frozen.to(device)
            return _response_logits(self.frozen, batch)
        if not hasattr(model, "disable_adapter"):
            raise WorkbenchError(
                "LwF `base`='adapter' needs a model with a LoRA adapter to switch off, but this "
                "one has none (full fine-tuning?). Build the LwF with base='copy' instead."
            )
        with model.disable_adapter(), eval_mode(model):
            return _response_logits(model, batch)

    def to_config(self) -> dict[str, Any]:
        """What config.yaml records so that `lwf_from_config` can rebuild this penalty."""
        return {"kind": "lwf", "strength": self.strength, **self.settings}

    def save(self, run_dir: str | Path) -> dict[str, Any]:
        """Write the reference rows into the run directory; returns the config entry."""
        lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self.reference_rows.rows)
        write_atomic(Path(run_dir) / REFERENCE_FILE, lines)
        return {
            **self.to_config(),
            "reference": REFERENCE_FILE,
            "format": self.reference_rows.format,
        }


def _reference_batches(rows: Examples, template, tokenizer, batch_size: int, max_length: int):
    """The reference rows tokenised and collated into batches, in order (on the CPU)."""
    data = tokenize_examples(rows, template, tokenizer, max_length=max_length)
    collate = CompletionCollator(tokenizer.pad_token_id, select_logits=True)
    features = [{"input_ids": e.input_ids, "labels": e.labels} for e in data.examples]
    return [collate(features[i : i + batch_size]) for i in range(0, len(features), batch_size)]


def _response_logits(model, batch: dict[str, Any]):
    """(logits, mask) at the reference rows' response positions (see `response_logits`)."""
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    if index_logits_supported() and accepts_logits_to_keep(model):
        logits = model(**inputs, use_cache=False, logits_to_keep=batch["logits_positions"]).logits
        return response_logits(logits, batch)
    logits = model(**inputs, use_cache=False).logits
    return response_logits(logits, batch, all_positions=True)


def _frozen_copy(model):
    """A copy of the model's current weights that never trains (eval mode, no gradients)."""
    frozen = copy.deepcopy(model)
    frozen.eval().requires_grad_(False)
    return frozen


def lwf_from_config(
    config: dict[str, Any], model, tokenizer, run_dir: str | Path, template: Template
) -> LearningWithoutForgetting:
    """Rebuild the LwF that config.yaml records, continuing the reference cycle where the newest
    complete checkpoint left it (one batch per micro-batch: steps x gradient_accumulation; an
    epoch whose batches do not divide by the accumulation makes a shorter last step, which
    this count does not see)."""
    directory = RunDirectory(run_dir)
    rows = load_data(
        directory.file(config["reference"]), format=config.get("format"), verbose=False
    )
    checkpoints = directory.complete_checkpoints()
    steps = checkpoint_step(checkpoints[-1]) if checkpoints else 0
    run_config = directory.read_config()
    accumulation = run_config.get("hyperparameters", {}).get("gradient_accumulation", 1)
    named = config.get("template")
    return LearningWithoutForgetting(
        model,
        tokenizer,
        rows,
        template if named in (None, template.name) else named,  # as EWC's rebuild
        strength=config["strength"],
        temperature=config.get("temperature", 2.0),
        batch_size=config.get("batch_size", 4),
        max_rows=config.get("max_rows", 32),
        max_length=config.get("max_length", 256),
        base=config.get("base", "auto"),
        batches_taken=steps * accumulation,
    )
