"""A penalty that anchors weights (EWC, synaptic intelligence) can hold only weights that
train: the check every kind of run makes before it starts with one."""

from __future__ import annotations

from workbench.errors import WorkbenchError


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
