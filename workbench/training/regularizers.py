"""Elastic Weight Consolidation: keep full fine-tuning near the weights that mattered before.

`fisher_ewc(model, tokenizer, reference_rows, strength=...)` measures, on a reference set the
base model should stay good at, how much each weight matters (the diagonal of the empirical
Fisher information: the mean squared gradient of the loss, one row at a time). During training
the loss gets `strength / 2 * sum_i F_i * (theta_i - theta*_i) ** 2`, where theta* are the
weights at the time of measuring. Pass it as `train(..., regularizer=ewc)`.

Sequential use: measured on a model after it trained task A (with LoRA, over the adapter's
weights, which are then the trainable ones), the same EWC holds those weights while the model goes
on to task B; `store_tensors=True` keeps the Fisher and the weights in the new run's directory,
because a resumed run could not measure them again on a fresh model.

Every penalty (EWC, `workbench.training.synaptic.SynapticIntelligence`, ...) offers `penalty(model)`
(also `__call__`), `last_penalty`, `anchored_weights()` (names; empty for a penalty on outputs),
`to_config()` and `save(run_dir)`; `REGULARIZER_KINDS` rebuilds each kind from config.yaml.
`attach_regularizer(trainer, regularizer)` is the one place a penalty joins the training loss.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from workbench.data.loading import Examples, load_data
from workbench.errors import WorkbenchError
from workbench.model.generation import eval_mode
from workbench.runs.files import write_atomic
from workbench.tokens.collators import CompletionCollator
from workbench.tokens.templates import Template, get_template
from workbench.tokens.tokenizing import tokenize_examples
from workbench.training.anchors import WeightAnchor
from workbench.training.lwf import lwf_from_config
from workbench.training.synaptic import SynapticIntelligence, load_tensors, save_tensors

REFERENCE_FILE = "data/ewc_reference.jsonl"
TENSORS_FILE = "regularizer/ewc.safetensors"  # the Fisher and reference weights, when stored


class ElasticWeightConsolidation(WeightAnchor):
    """The EWC penalty: `strength / 2 * sum_i F_i (theta_i - theta*_i) ** 2` over trained weights.

    `fisher` and `reference` map parameter names to tensors (F_i and theta*_i). Build it with
    `fisher_ewc(...)`; `penalty(model)` is differentiable and zero at the reference weights.
    """

    what, kind, importance_name = "EWC", "ewc", "fisher"
    strength_hint, scale = "1-1000", 0.5
    wrong_model_fix = (
        "Build the EWC on the model you train (full fine-tuning, or a LoRA model after its "
        "earlier task: its adapter)."
    )

    def __init__(
        self,
        fisher: dict[str, Any],
        reference: dict[str, Any],
        strength: float,
        *,
        settings: dict[str, Any] | None = None,
        reference_rows: Examples | None = None,
        store_tensors: bool = False,
    ) -> None:
        super().__init__(fisher, reference, strength, settings=settings)
        self.reference_rows = reference_rows
        self.store_tensors = store_tensors  # save() keeps the tensors, not only the rows

    @property
    def fisher(self) -> dict[str, Any]:
        """F_i by weight name: the importance EWC measured."""
        return self.importance

    def save(self, run_dir: Path) -> dict[str, Any]:
        """Write the reference rows (and, with `store_tensors`, the Fisher and reference weights)
        into the run directory; returns the config entry."""
        config = self.to_config()
        if self.reference_rows is not None:
            lines = "".join(
                json.dumps(r, ensure_ascii=False) + "\n" for r in self.reference_rows.rows
            )
            write_atomic(Path(run_dir) / REFERENCE_FILE, lines)
            config.update(reference=REFERENCE_FILE, format=self.reference_rows.format)
        if self.store_tensors:
            save_tensors(Path(run_dir) / TENSORS_FILE, self.tensors(), {"kind": "ewc"})
            config["tensors"] = TENSORS_FILE
        return config

    @classmethod
    def from_config(
        cls, config: dict[str, Any], model, tokenizer, run_dir: str | Path, template: Template
    ) -> ElasticWeightConsolidation:
        """The penalty config.yaml records: its stored tensors, else measured again on `model`
        (the fresh base model of a resumed full fine-tuning run) with the stored rows."""
        if config.get("tensors"):
            path = Path(run_dir) / config["tensors"]
            state, _ = load_tensors(path, what="run", parts=("fisher", "reference"))
            settings = {k: v for k, v in config.items() if k not in _NOT_SETTINGS}
            return cls(
                state["fisher"],
                state["reference"],
                config["strength"],
                settings=settings,
                store_tensors=True,
            )
        path = Path(run_dir) / config["reference"]
        rows = load_data(path, format=config.get("format"), verbose=False)
        return fisher_ewc(
            model,
            tokenizer,
            rows,
            template if config.get("template") in (None, template.name) else config["template"],
            strength=config["strength"],
            max_rows=config.get("max_rows", 32),
            normalize=config.get("normalize", True),
            max_length=config.get("max_length", 256),
            batch_size=config.get("batch_size", 1),
        )


_NOT_SETTINGS = ("kind", "strength", "tensors", "reference", "format")


def fisher_diagonal(
    model,
    tokenizer,
    examples: Examples,
    template: Template | str | None = None,
    *,
    max_rows: int = 32,
    max_length: int = 256,
    batch_size: int = 1,
) -> dict[str, Any]:
    """Mean squared gradient of the response loss per trainable weight.

    `batch_size` 1 (one row per backward pass) is the empirical Fisher; larger batches are
    faster and coarser (squared mean gradients of the batches). Measured in eval mode (no
    dropout), so the same model and rows give the same values.
    """
    import torch

    if not len(examples):
        raise WorkbenchError("EWC needs reference rows to measure the Fisher information on.")
    if max_rows < 1 or batch_size < 1:
        raise WorkbenchError(
            f"EWC `max_rows`={max_rows} and `batch_size`={batch_size} must be at least 1."
        )
    template = get_template(template, examples.format)
    rows = examples.select(range(min(max_rows, len(examples))))
    data = tokenize_examples(rows, template, tokenizer, max_length=max_length)
    collate = CompletionCollator(tokenizer.pad_token_id)
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if not params:
        raise WorkbenchError("EWC found no trainable weights: call it on the model to fine-tune.")
    fisher = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
    chunks = [data.examples[i : i + batch_size] for i in range(0, len(data.examples), batch_size)]
    try:
        with eval_mode(model):
            for chunk in chunks:
                batch = collate([{"input_ids": e.input_ids, "labels": e.labels} for e in chunk])
                batch = {k: v.to(model.device) for k, v in batch.items()}
                model.zero_grad(set_to_none=True)
                model(**batch).loss.backward()
                for name, param in params.items():
                    if param.grad is not None:
                        fisher[name] += param.grad.detach().float() ** 2
    finally:
        model.zero_grad(set_to_none=True)
    return {n: f / len(chunks) for n, f in fisher.items()}


def fisher_ewc(
    model,
    tokenizer,
    reference_rows: Examples,
    template: Template | str | None = None,
    *,
    strength: float = 100.0,
    max_rows: int = 32,
    normalize: bool = True,
    max_length: int = 256,
    batch_size: int = 1,
    store_tensors: bool = False,
) -> ElasticWeightConsolidation:
    """EWC anchored at the model's current weights, weighted by the Fisher on `reference_rows`.

    Covers the model's trainable weights: all of them for full fine-tuning, the LoRA A/B
    matrices of a PEFT model (e.g. after its first task, for the next one). `normalize` divides
    the Fisher by its mean, so `strength` means the same for any model size (raw Fisher values
    of a language model are tiny, about 1e-8). Keeps a copy of the weights. `store_tensors`
    makes the run it joins keep the Fisher and weights on disk (needed when the weights are not
    the base model's: a resumed run measures on a freshly loaded model otherwise).
    """
    template = get_template(template, reference_rows.format)
    fisher = fisher_diagonal(
        model,
        tokenizer,
        reference_rows,
        template,
        max_rows=max_rows,
        max_length=max_length,
        batch_size=batch_size,
    )
    if normalize:
        count = sum(f.numel() for f in fisher.values())
        mean = sum(float(f.sum()) for f in fisher.values()) / count
        if mean > 0:
            fisher = {n: f / mean for n, f in fisher.items()}
    params = dict(model.named_parameters())
    reference = {n: params[n].detach().clone() for n in fisher}
    settings = {
        "max_rows": max_rows,
        "normalize": normalize,
        "max_length": max_length,
        "batch_size": batch_size,
        "template": template.name,
    }
    rows = reference_rows.select(range(min(max_rows, len(reference_rows))))
    return ElasticWeightConsolidation(
        fisher,
        reference,
        strength,
        settings=settings,
        reference_rows=rows,
        store_tensors=store_tensors,
    )


def _synaptic_from_config(config, model, tokenizer, run_dir, template):
    return SynapticIntelligence.from_config(config, run_dir)


def _lwf_from_config(config, model, tokenizer, run_dir, template):
    return lwf_from_config(config, model, tokenizer, run_dir, template)


# config.yaml's `regularizer.kind` -> (config, model, tokenizer, run_dir, template) -> penalty
REGULARIZER_KINDS: dict[str, Callable[..., Any]] = {
    "ewc": ElasticWeightConsolidation.from_config,
    "si": _synaptic_from_config,
    "lwf": _lwf_from_config,
}


def regularizer_from_config(
    config: dict[str, Any] | None, model, tokenizer, run_dir: str | Path, template: Template
):
    """Rebuild the penalty that config.yaml records (None when the run had none)."""
    if not config:
        return None
    build = REGULARIZER_KINDS.get(config.get("kind"))
    if build is None:
        raise WorkbenchError(
            f"{run_dir}/config.yaml: unknown `regularizer.kind`={config.get('kind')!r}; "
            f"this version knows {', '.join(repr(k) for k in REGULARIZER_KINDS)}."
        )
    return build(config, model, tokenizer, run_dir, template)


def attach_regularizer(trainer, regularizer) -> None:
    """Add `regularizer(model)` to the training loss of `trainer` (evaluation loss unchanged).

    Wraps whatever `compute_loss` the trainer has (a subclass's own, too). Under gradient
    accumulation the penalty is shared out over the micro-batches, so each optimizer step adds
    it once, whether or not Trainer divides the loss afterwards. The logged training loss
    includes the penalty (EWC keeps its latest value in `last_penalty`).
    """
    compute_loss = trainer.compute_loss

    def compute_loss_with_penalty(model, inputs, return_outputs=False, **kwargs):
        result = compute_loss(model, inputs, return_outputs=return_outputs, **kwargs)
        if not model.training:
            return result
        loss, outputs = result if return_outputs else (result, None)
        scaled = getattr(trainer, "loss_is_scaled_for_ga", None)
        if scaled is None:
            scaled = (
                getattr(trainer, "model_accepts_loss_kwargs", False)
                and kwargs.get("num_items_in_batch") is not None
            ) or getattr(trainer, "compute_loss_func", None) is not None
        accumulation = getattr(trainer, "current_gradient_accumulation_steps", 1) or 1
        share = 1.0 / accumulation if scaled else 1.0
        loss = loss + share * regularizer(model).to(loss.dtype)
        return (loss, outputs) if return_outputs else loss

    trainer.compute_loss = compute_loss_with_penalty
