"""torch.compile for training, one decoder layer at a time, undone when training ends.

Why layer by layer: packed batches change shape at every step, and a whole compiled model
recompiled at every new shape, with dynamic shapes asked for or not (2026-11-23, a tiny Llama
on CPU: 5 graphs in 5 steps, 20-30 s each). Compiled layer by layer with dynamic shapes, the
same 5 steps made 2 graphs, both in the first step: the first layer's input needs no gradient,
the others' do, and every layer after the first reuses one graph.

Only `forward` is replaced, on each layer instance, so the weights, their names and what
`save_pretrained` writes do not change. Generation always runs eagerly: decoding one token at a
time through a compiled layer would compile again for the cache, for no gain.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext

COMPILED = "_workbench_compiled"


def decoder_layers(model) -> list:
    """The model's decoder layers (transformers' GradientCheckpointingLayer subclasses)."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    return [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]


def compile_layers(model) -> int:
    """Compile every decoder layer's forward in place (dynamic shapes); returns how many.

    Calling it again on a model whose layers are compiled changes nothing.
    """
    import torch

    layers = decoder_layers(model)
    if not layers:
        raise ValueError(
            f"`compile`: {type(model).__name__} has no transformers decoder layers to compile; "
            "set compile=False."
        )
    for layer in layers:
        if not getattr(layer, COMPILED, False):
            layer.forward = torch.compile(layer.forward, dynamic=True)
            setattr(layer, COMPILED, True)
    return len(layers)


def uncompile_layers(model) -> int:
    """Give the layers their own forward back; returns how many were compiled."""
    undone = 0
    for layer in decoder_layers(model):
        if getattr(layer, COMPILED, False):
            del layer.forward  # the instance attribute; the class's forward shows again
            delattr(layer, COMPILED)
            undone += 1
    return undone


def is_compiled(model) -> bool:
    return any(getattr(layer, COMPILED, False) for layer in decoder_layers(model))


@contextmanager
def eager(model):
    """Run compiled layers without compiling (for generation); a no-op on other models."""
    import torch

    stance = torch.compiler.set_stance("force_eager") if is_compiled(model) else nullcontext()
    with stance:
        yield


def compiling_callback():
    """A TrainerCallback that compiles the layers when training begins and undoes it at the end."""
    from transformers import TrainerCallback

    class CompiledLayers(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            compile_layers(model)

        def on_train_end(self, args, state, control, model=None, **kwargs):
            uncompile_layers(model)

    return CompiledLayers()
