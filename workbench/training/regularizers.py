"""Elastic Weight Consolidation: keep full fine-tuning near the weights that mattered before.

`fisher_ewc(model, tokenizer, reference_rows, strength=...)` measures, on a reference set the
base model should stay good at, how much each weight matters (the diagonal of the empirical
Fisher information: the mean squared gradient of the loss, one row at a time). During training
the loss gets `strength / 2 * sum_i F_i * (theta_i - theta*_i) ** 2`, where theta* are the
weights at the time of measuring. Pass it as `train(..., regularizer=ewc)`.

`attach_regularizer(trainer, regularizer)` is the one place a penalty joins the training loss.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from workbench.data.loading import Examples, load_data
from workbench.errors import WorkbenchError
from workbench.evaluation.generation import eval_mode
from workbench.runs.files import write_atomic
from workbench.tokens.collators import CompletionCollator
from workbench.tokens.templates import Template, get_template
from workbench.tokens.tokenizing import tokenize_examples

REFERENCE_FILE = "data/ewc_reference.jsonl"


class ElasticWeightConsolidation:
    """The EWC penalty: `strength / 2 * sum_i F_i (theta_i - theta*_i) ** 2` over trained weights.

    `fisher` and `reference` map parameter names to tensors (F_i and theta*_i). Build it with
    `fisher_ewc(...)`; `penalty(model)` is differentiable and zero at the reference weights.
    """

    def __init__(
        self,
        fisher: dict[str, Any],
        reference: dict[str, Any],
        strength: float,
        *,
        settings: dict[str, Any] | None = None,
        reference_rows: Examples | None = None,
    ) -> None:
        if strength < 0:
            raise WorkbenchError(f"EWC `strength`={strength} must be 0 or more (try 1-1000).")
        missing = sorted(set(fisher) ^ set(reference))
        if missing:
            raise WorkbenchError(f"EWC `fisher` and `reference` name different weights: {missing}")
        self.fisher, self.reference, self.strength = fisher, reference, float(strength)
        self.settings = settings or {}
        self.reference_rows = reference_rows
        self.last_penalty: float | None = None  # the latest value added to the loss

    def penalty(self, model):
        """strength/2 * sum F (theta - theta*)^2, as a differentiable scalar tensor."""
        import torch

        params = dict(model.named_parameters())
        unknown = [name for name in self.fisher if name not in params]
        if unknown:
            raise WorkbenchError(
                f"EWC was measured on a different model: it has no weight `{unknown[0]}` "
                f"(and {len(unknown) - 1} more). Build the EWC on the model you train "
                "(full fine-tuning; with LoRA the base stays frozen and needs no EWC)."
            )
        total = torch.zeros((), device=next(model.parameters()).device)
        for name, fisher in self.fisher.items():
            param = params[name]
            if param.requires_grad:
                total = total + (fisher * (param - self.reference[name]) ** 2).sum()
        value = 0.5 * self.strength * total
        self.last_penalty = float(value.detach())
        return value

    __call__ = penalty

    def to_config(self) -> dict[str, Any]:
        """What config.yaml records so that `resume_run` can rebuild this penalty."""
        return {"kind": "ewc", "strength": self.strength, **self.settings}

    def save(self, run_dir: Path) -> dict[str, Any]:
        """Write the reference rows into the run directory; returns the config entry."""
        config = self.to_config()
        if self.reference_rows is not None:
            lines = "".join(
                json.dumps(r, ensure_ascii=False) + "\n" for r in self.reference_rows.rows
            )
            write_atomic(Path(run_dir) / REFERENCE_FILE, lines)
            config.update(reference=REFERENCE_FILE, format=self.reference_rows.format)
        return config


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
) -> ElasticWeightConsolidation:
    """EWC anchored at the model's current weights, weighted by the Fisher on `reference_rows`.

    `normalize` divides the Fisher by its mean, so `strength` means the same for any model size
    (raw Fisher values of a language model are tiny, about 1e-8). Keeps a copy of the weights.
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
        fisher, reference, strength, settings=settings, reference_rows=rows
    )


def regularizer_from_config(
    config: dict[str, Any] | None, model, tokenizer, run_dir: str | Path, template: Template
):
    """Rebuild the penalty that config.yaml records (None when the run had none)."""
    if not config:
        return None
    if config.get("kind") != "ewc":
        raise WorkbenchError(
            f"{run_dir}/config.yaml: unknown `regularizer.kind`={config.get('kind')!r}; "
            "this version knows 'ewc'."
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
