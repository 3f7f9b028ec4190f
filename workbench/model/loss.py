"""The training loss, computed only where it counts: logits for the response tokens alone.

A causal LM's output layer is `hidden x vocab` (49,152 words for SmolLM2), and the stock loss
computes logits for every position, prompt included, only to mask the prompt away. Here the
collator lists, on the CPU, the positions whose next token carries a label; the model is asked
for the logits of those alone (`logits_to_keep`), and cross-entropy runs on them: the same
loss, with the output layer's work and the logits' memory cut to the response tokens, and no
device sync to find them.

`workbench_trainer_class()` is transformers' Trainer with this loss, token counting without
a device sync, and the FLOPs count of every step from a parameter count made once instead of at
every step (regularisers such as EWC wrap its `compute_loss`: `workbench.ewc`).
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

from workbench.tokens.tokenizing import IGNORE_INDEX


@functools.cache
def index_logits_supported() -> bool:
    """Whether this transformers takes per-row positions, a 2D integer `logits_to_keep`."""
    try:
        import torch
        from transformers.modeling_utils import slice_logits_to_keep
    except ImportError:
        return False
    try:
        kept = slice_logits_to_keep(torch.zeros(2, 3, 1), torch.tensor([[0, 2], [1, 2]]))
    except Exception:  # noqa: BLE001 - an older signature: fall back to full logits
        return False
    return tuple(kept.shape) == (2, 2, 1)


def accepts_logits_to_keep(model) -> bool:
    """Whether the (unwrapped) model's forward takes `logits_to_keep`."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(base.forward).parameters


def response_loss(model, inputs: dict[str, Any], labels, num_items_in_batch=None):
    """Summed cross-entropy over the labelled tokens / `num_items_in_batch` (else their count).

    Returns (loss, outputs). Position t predicts token t+1. When `inputs` holds
    `logits_positions` and `logits_targets` (from `loss_positions`), only those positions are
    projected onto the vocabulary; otherwise every position is. Packed rows (restarting
    `position_ids`, no attention mask) keep attention inside each example.
    """
    import torch.nn.functional as F

    # no KV cache: training needs none, and with one transformers ignores the restarting
    # position ids of packed rows and lets attention cross from one example into the next
    inputs = {**inputs, "use_cache": False}
    positions = inputs.pop("logits_positions", None)
    chosen = inputs.pop("logits_targets", None)
    if positions is not None:
        outputs = model(**inputs, logits_to_keep=positions)
    else:
        outputs = model(**inputs)
        chosen = labels[:, 1:]
    logits = outputs.logits
    if positions is None:
        logits = logits[:, :-1]
    logits = logits.reshape(-1, logits.shape[-1])
    loss = F.cross_entropy(
        logits.float(), chosen.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
    )
    count = num_items_in_batch
    if count is None:
        count = (labels[:, 1:] != IGNORE_INDEX).sum()
    return loss / count, outputs


def workbench_trainer_class():
    """transformers.Trainer with `response_loss` (imported lazily: `import workbench` stays
    free of transformers)."""
    from transformers import Trainer

    class WorkbenchTrainer(Trainer):
        """Trainer whose loss projects only the response tokens onto the vocabulary."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            # our loss divides by the tokens of the whole accumulated batch, as the model's own
            # loss does when it accepts `num_items_in_batch`: the Trainer must not rescale it
            self.model_accepts_loss_kwargs = True
            self._flops_model, self._flops_per_token = None, 0  # see floating_point_ops

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            inputs = dict(inputs)
            tokens = inputs.pop("num_tokens", None)
            labels = inputs.pop("labels")
            if model.training and tokens is not None:
                self.state.num_input_tokens_seen += int(tokens) * self.args.world_size
            loss, outputs = response_loss(model, inputs, labels, num_items_in_batch)
            if (
                self.args.average_tokens_across_devices
                and num_items_in_batch is not None
                and self.args.world_size > 1
            ):
                loss = loss * self.args.world_size  # DDP averages gradients over processes
            return (loss, outputs) if return_outputs else loss

        def floating_point_ops(self, inputs) -> int:
            """The stock count (6 x tokens x non-embedding parameters), with the parameters
            counted once per model: the Trainer asks at every step, and counting walks every
            parameter (3 ms a step on the 30-layer deep-narrow shape, benchmarks/overhead.py)."""
            name = getattr(self.model, "main_input_name", "input_ids")  # as the stock count
            if name not in inputs:
                return super().floating_point_ops(inputs)
            if self._flops_model is not self.model:
                self._flops_model = self.model
                self._flops_per_token = super().floating_point_ops({name: _ONE_TOKEN})
            return inputs[name].numel() * self._flops_per_token

    return WorkbenchTrainer


class _OneToken:
    """Stands for a batch of one token: `floating_point_ops` asks only its `numel()`."""

    @staticmethod
    def numel() -> int:
        return 1


_ONE_TOKEN = _OneToken()


def soft_kl(student_logits, teacher_logits, temperature: float = 1.0):
    """Per-position KL(teacher_T || student_T) = sum_v p_t (log p_t - log p_s), shape [...].

    Both distributions are softmaxes of logits / T, computed in float32. Zero exactly when the
    logits are equal."""
    import torch.nn.functional as F

    student = F.log_softmax(student_logits.float() / temperature, dim=-1)
    teacher = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    return (teacher.exp() * (teacher - student)).sum(-1)


def response_logits(logits, inputs: dict[str, Any], *, all_positions: bool = False):
    """(logits, mask): the logits that predict a labelled token, and 1.0 where one does.

    With `logits_positions` in the batch (the collator's `select_logits`), a model asked for
    those alone returned [batch, width, vocab]; a model that returned every position
    (`all_positions`) has them picked out. Without positions, position t predicts token t+1."""
    positions = inputs.get("logits_positions")
    if positions is None:
        mask = inputs["labels"][:, 1:] != IGNORE_INDEX
        return logits[:, :-1], mask.to(logits.dtype)
    if all_positions:
        index = positions.unsqueeze(-1).expand(-1, -1, logits.shape[-1])
        logits = logits.gather(1, index)
    return logits, (inputs["logits_targets"] != IGNORE_INDEX).to(logits.dtype)
