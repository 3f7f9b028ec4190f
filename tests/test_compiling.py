"""Compiled decoder layers: the same training, one compile for every shape, undone after."""

from __future__ import annotations

import pytest
from conftest import build_tiny_model, quick

pytestmark = pytest.mark.training  # each test builds and trains its own tiny model


@pytest.fixture
def fresh(tiny_tokenizer):
    return build_tiny_model(tiny_tokenizer, layers=3), tiny_tokenizer


def test_compiled_layers_train_like_eager_ones_and_are_undone_after(tiny_tokenizer, ticket_split):
    import torch._dynamo

    from workbench import train
    from workbench.model.compiling import decoder_layers

    losses = {}
    for compiled in (False, True):
        model = build_tiny_model(tiny_tokenizer, layers=3)
        torch._dynamo.reset()
        torch._dynamo.utils.counters.clear()
        settings = quick(max_steps=4, eval_every=2, compile=compiled)
        run = train(model, tiny_tokenizer, *ticket_split, hyperparameters=settings).wait()
        assert run.status == "finished", run.error
        losses[compiled] = run.losses
        graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
        if compiled:
            # the packed batches took 4 shapes; graphs: needs-no-grad and needs-grad input
            # layers while training, one for evaluation under no_grad, nothing per shape
            assert 1 <= graphs <= 4, graphs
        else:
            assert graphs == 0
        assert all("forward" not in vars(layer) for layer in decoder_layers(run.model))
    assert losses[True] == pytest.approx(losses[False], rel=1e-4)


def test_compile_layers_twice_wraps_once_and_uncompile_restores(fresh):
    from workbench.model.compiling import (
        compile_layers,
        decoder_layers,
        is_compiled,
        uncompile_layers,
    )

    model, _ = fresh
    assert compile_layers(model) == 3
    wrapped = [layer.forward for layer in decoder_layers(model)]
    compile_layers(model)
    assert [layer.forward for layer in decoder_layers(model)] == wrapped
    assert is_compiled(model)
    assert uncompile_layers(model) == 3
    assert not is_compiled(model)
    assert uncompile_layers(model) == 0


def test_generation_through_compiled_layers_runs_eagerly_with_the_same_answers(fresh):
    import torch._dynamo

    from workbench.model.compiling import compile_layers
    from workbench.model.generation import Decoding, generate

    model, tokenizer = fresh
    prompts = ["Reset my password", "Where is my order?"]
    decoding = Decoding(max_new_tokens=6)
    before = generate(model, tokenizer, prompts, decoding)
    compile_layers(model)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    assert generate(model, tokenizer, prompts, decoding) == before
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 0


def test_a_model_without_decoder_layers_is_refused_by_name():
    import torch

    from workbench.model.compiling import compile_layers

    with pytest.raises(ValueError, match="Sequential has no transformers decoder layers"):
        compile_layers(torch.nn.Sequential(torch.nn.Linear(2, 2)))
