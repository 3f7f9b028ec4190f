"""Penalties that anchor weights (EWC, synaptic intelligence): what they share
(`WeightAnchor`: a quadratic pull of each measured weight towards its reference value, weighed
by its importance), and the check every kind of run makes before it starts with one: it can
hold only weights that train."""

from __future__ import annotations

from typing import Any

from workbench.errors import WorkbenchError


class WeightAnchor:
    """The penalty `scale * strength * sum_i importance_i * (theta_i - theta*_i) ** 2` over the
    weights it measured: `importance` and `reference` map parameter names to tensors (the
    importance and theta*_i). `penalty(model)` is differentiable and zero at the reference.

    Each kind says, as class attributes, its name in messages (`what`), config.yaml's `kind`,
    its importance's name (`importance_name`: `fisher`, `omega`), the usual strengths
    (`strength_hint`), its `scale` and what to do when the model lacks a measured weight
    (`wrong_model_fix`).
    """

    what: str = "the penalty"
    kind: str = ""
    importance_name: str = "importance"
    strength_hint: str = ""
    scale: float = 1.0
    wrong_model_fix: str = ""

    def __init__(
        self,
        importance: dict[str, Any],
        reference: dict[str, Any],
        strength: float,
        *,
        settings: dict[str, Any] | None = None,
    ) -> None:
        if strength < 0:
            raise WorkbenchError(
                f"{self.what} `strength`={strength} must be 0 or more (try {self.strength_hint})."
            )
        differ = sorted(set(importance) ^ set(reference))
        if differ:
            raise WorkbenchError(
                f"{self.what} `{self.importance_name}` and `reference` name different weights: "
                f"{differ}"
            )
        self.importance, self.reference, self.strength = importance, reference, float(strength)
        self.settings = settings or {}
        self.last_penalty: float | None = None  # the latest value added to the loss

    def anchored_weights(self) -> list[str]:
        """The names of the weights the penalty holds near their reference."""
        return list(self.importance)

    def penalty(self, model):
        """scale * strength * sum importance (theta - theta*)^2, a differentiable scalar tensor."""
        import torch

        params = dict(model.named_parameters())
        unknown = [name for name in self.importance if name not in params]
        if unknown:
            raise WorkbenchError(
                f"{self.what} was measured on a different model: it has no weight "
                f"`{unknown[0]}` (and {len(unknown) - 1} more). {self.wrong_model_fix}"
            )
        total = torch.zeros((), device=next(model.parameters()).device)
        for name, importance in self.importance.items():
            param = params[name]
            if param.requires_grad:
                if importance.device != param.device:  # once: the model moved after measuring
                    self.importance[name] = importance = importance.to(param.device)
                    self.reference[name] = self.reference[name].to(param.device)
                total = total + (importance * (param - self.reference[name]) ** 2).sum()
        value = self.scale * self.strength * total
        self.last_penalty = float(value.detach())
        return value

    __call__ = penalty

    def to_config(self) -> dict[str, Any]:
        """What config.yaml records so that `resume` can rebuild this penalty."""
        return {"kind": self.kind, "strength": self.strength, **self.settings}

    def tensors(self) -> dict[str, Any]:
        """The importance and reference tensors, named `<part>/<weight>` as files store them."""
        tensors = {f"{self.importance_name}/{n}": t for n, t in self.importance.items()}
        tensors.update({f"reference/{n}": t for n, t in self.reference.items()})
        return tensors


def check_anchored_weights(regularizer, model) -> None:
    """Raise when a penalty anchors weights and none of them is trainable in `model` (e.g. EWC
    measured on a whole model, then given to a fresh LoRA model): it could hold nothing."""
    names = regularizer.anchored_weights()
    if not names:  # a penalty on the outputs (distillation) anchors no weights
        return
    params = dict(model.named_parameters())
    if any(n in params and params[n].requires_grad for n in names):
        return
    kind = regularizer.to_config().get("kind", "penalty")
    lora = hasattr(model, "peft_config")
    raise WorkbenchError(
        f"`regularizer` ({kind}) anchors {len(names)} weights (e.g. `{names[0]}`), but none of "
        "them is trainable in the model being trained"
        + (
            " (LoRA trains only its adapter; the base stays frozen). Build it on the model you "
            "go on training (after its earlier task, its adapter continued), or use "
            "kind='full' (or 'freeze') with a penalty measured on the whole model."
            if lora
            else ". Build it on the model you go on training."
        )
    )
