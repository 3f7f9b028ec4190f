"""Will this run fit? The predicted peak against free memory, before training starts.

`check_fit` compares `workbench.memory.estimate_memory` for the batches a run will train on
with the memory free on its device, and when the run would not fit, says which change would
(a smaller batch with more accumulation, gradient checkpointing, QLoRA). `auto_batch_size`
picks the largest batch whose predicted peak fits, for `Hyperparameters(auto_batch=True)`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from workbench.model.memory import (
    MemoryEstimate,
    UnsupportedModelError,
    estimate_memory,
    format_bytes,
)
from workbench.model.methods import Method
from workbench.runs.hyperparameters import Hyperparameters

HEADROOM = 0.9  # use at most this share of free memory: the allocator fragments
# auto_batch aims lower: with packed rows of varying shapes, PyTorch's caching allocator held
# 77.8 GiB on an 80 GiB H100 for 48.6 GiB of tensors (135M model, 256 rows; estimate 40.5)
AUTO_BATCH_SHARE = 0.5
MAX_TOKENS_PER_STEP = 65536  # beyond this a small model gains nothing from a bigger batch


@dataclass(frozen=True)
class Fit:
    """The predicted peak of a run, the memory free for it, and a change that fits, if any."""

    estimate: MemoryEstimate
    available: int
    device: str
    advice: str | None = None

    @property
    def fits(self) -> bool:
        return self.estimate.total <= self.available

    def __str__(self) -> str:
        verdict = "fits" if self.fits else "does NOT fit"
        text = (
            f"Predicted peak {format_bytes(self.estimate.total)} {verdict} in "
            f"{format_bytes(self.available)} usable on {self.device}"
        )
        return text + (f". {self.advice}" if self.advice else ".")


def row_statistics(tokens) -> tuple[list[int], float]:
    """(token length of each row, share of all tokens that carry loss) of tokenized rows, as
    `workbench.tokenize_examples` returns them: what the estimate needs of the data."""
    examples = getattr(tokens, "examples", tokens)
    lengths = [len(e.input_ids) for e in examples]
    return lengths, sum(e.loss_tokens for e in examples) / max(1, sum(lengths))


def available_memory(device: str) -> int:
    """Bytes the run can use: free GPU memory plus what this process's tensors already hold
    (the model's weights are in the estimate), or the RAM available on a CPU."""
    if device.startswith("cuda"):
        import torch

        free, _total = torch.cuda.mem_get_info()
        return int((free + torch.cuda.memory_allocated()) * HEADROOM)
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            info = dict(line.split(":", 1) for line in handle)
        return int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


@dataclass(frozen=True)
class Target:
    """What the estimate needs of a model: its config, bytes per weight, and its device."""

    config: Any
    dtype_bytes: int
    device: str

    @classmethod
    def of(cls, model) -> Target:
        """A loaded model: its config, the bytes of its weights and their device. A bare config
        (nothing loaded yet): float32 weights (4 bytes each) on the CPU."""
        if not hasattr(model, "parameters"):
            return cls(model, 4, "cpu")
        parameter = next(model.parameters())
        return cls(model.config, parameter.element_size(), str(parameter.device))


def capped_lengths(lengths: list[int] | None, max_length: int) -> list[int] | None:
    """Token lengths as `max_length` cuts them (rows tokenized with a larger limit shrink);
    None stays None."""
    if max_length <= 0:
        raise ValueError(f"`max_length`={max_length} must be positive: rows need a token each.")
    return None if lengths is None else [min(n, max_length) for n in lengths]


def _estimate(target: Target, method: Method, hp: Hyperparameters, lengths, response: float):
    # packed rows hold the batch's real tokens; padded rows pad every row to the longest
    per_row = sum(lengths) / len(lengths) if hp.packing else max(lengths)
    return estimate_memory(
        target.config,
        method,
        batch_size=hp.batch_size,
        seq_length=max(1, round(per_row)),
        dtype_bytes=target.dtype_bytes,
        device=target.device,
        gradient_checkpointing=hp.gradient_checkpointing,
        response_fraction=response if hp.packing else 1.0,
    )


def fit_for(
    target: Target, method: Method, hp: Hyperparameters, lengths: list[int], response: float
) -> Fit:
    """The Fit of training `target` with these settings on rows of `lengths` tokens, of which
    a `response` share carries loss. Raises UnsupportedModelError for unknown shapes."""
    estimate = _estimate(target, method, hp, lengths, response)
    available = available_memory(target.device)
    if estimate.total <= available:
        return Fit(estimate, available, target.device)
    advice = _advice(target, method, hp, lengths, response, available)
    return Fit(estimate, available, target.device, advice)


def predict_fit(
    target: Target,
    method: Method,
    hp: Hyperparameters,
    row_lengths: list[int] | None = None,
    response: float = 1.0,
) -> Fit:
    """The Fit `train()` will report for rows of `row_lengths` tokens (cut at `hp.max_length`)
    of which a `response` share carries loss. Without rows (None or empty): every row at
    `hp.max_length` tokens, every logit kept, an upper bound. Raises UnsupportedModelError
    for shapes the estimate does not know."""
    lengths = capped_lengths(row_lengths, hp.max_length)
    if lengths:
        return fit_for(target, method, hp, lengths, response)
    return fit_for(target, method, hp, [hp.max_length], 1.0)


def check_fit(model, method: Method, hp: Hyperparameters, lengths: list[int], response: float):
    """`fit_for` a loaded model; None when its shape cannot be estimated."""
    try:
        return fit_for(Target.of(model), method, hp, lengths, response)
    except UnsupportedModelError:
        return None


def _advice(target: Target, method, hp, lengths, response, available) -> str:
    batch = hp.batch_size
    while batch > 1:
        batch //= 2
        accumulation = hp.gradient_accumulation * hp.batch_size // batch
        smaller = hp.replace(batch_size=batch, gradient_accumulation=accumulation)
        estimate = _estimate(target, method, smaller, lengths, response)
        if estimate.total <= available:
            return (
                f"Try batch_size={batch} with gradient_accumulation={accumulation}: the same "
                f"effective batch, predicted to need {format_bytes(estimate.total)}"
            )
    one_row = hp.replace(batch_size=1, gradient_checkpointing=True)
    if _estimate(target, method, one_row, lengths, response).total <= available:
        return "Try batch_size=1 with gradient_checkpointing=True: predicted to fit"
    return "Even one row does not fit: use QLoRA (4-bit weights) or a smaller model"


def auto_batch_size(model, method: Method, hp: Hyperparameters, lengths, response) -> int:
    """The largest power-of-two batch (from `hp.batch_size` up) predicted to fit in half the
    usable memory, with at most MAX_TOKENS_PER_STEP tokens a step and four steps an epoch."""
    target = Target.of(model)
    available = available_memory(target.device) * AUTO_BATCH_SHARE
    mean = sum(lengths) / len(lengths)
    best = hp.batch_size
    batch = hp.batch_size * 2
    while batch * mean <= MAX_TOKENS_PER_STEP and batch * 4 <= len(lengths):
        estimate = _estimate(target, method, hp.replace(batch_size=batch), lengths, response)
        if estimate.total > available:
            break
        best, batch = batch, batch * 2
    return best
