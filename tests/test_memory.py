"""workbench.memory: parameter counts from a config (checked against peft on real models) and
the peak memory estimate (checked for sane relations, and its activation term against what
autograd actually keeps).

Order-of-magnitude check, measured once on a CPU (not asserted: RSS depends on the allocator
and the machine). A Llama with hidden 512, MLP 1376, 8 layers, vocab 32000 (tied; 46M params),
fp32, batch 8 x 256 tokens, two AdamW steps, peak RSS growth via resource.getrusage:
    lora:               measured 2533 MiB, estimated 2.01 GiB
    full:               measured 2057 MiB, estimated 2.21 GiB
    freeze (4 of 8):    measured 1544 MiB, estimated 1.58 GiB
"""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import ROOT
from transformers import (
    GPT2Config,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

from benchmarks.workloads import EMBEDDED_VOCABULARY, SHAPES, llama_shape
from workbench.errors import WorkbenchError
from workbench.model.memory import (
    activation_elements_per_token,
    count_trainable,
    estimate_memory,
    linear_shapes,
    parameter_layout,
)
from workbench.model.methods import Method, ParameterCount, apply_method, count_parameters

SMALL = dict(
    vocab_size=600, **llama_shape(hidden=32, intermediate=64, layers=3, heads=4, kv_heads=2)
)
# SmolLM2-135M's shape: the embedded default model.
SMOLLM2 = LlamaConfig(
    vocab_size=EMBEDDED_VOCABULARY, tie_word_embeddings=True, **SHAPES["smollm2-135m"]
)


def build(config_class, model_class, **changes):
    torch.manual_seed(0)
    config = config_class(**{**SMALL, **changes})
    return config, model_class(config)


@pytest.fixture(scope="module")
def tiny_llama():
    return build(LlamaConfig, LlamaForCausalLM, tie_word_embeddings=True)


@pytest.fixture(scope="module")
def biased_llama():
    return build(
        LlamaConfig, LlamaForCausalLM, tie_word_embeddings=False, attention_bias=True, mlp_bias=True
    )


# --- parameter counts ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "classes, changes",
    [
        ((LlamaConfig, LlamaForCausalLM), {"tie_word_embeddings": True}),
        ((LlamaConfig, LlamaForCausalLM), {"tie_word_embeddings": False, "attention_bias": True}),
        ((LlamaConfig, LlamaForCausalLM), {"mlp_bias": True, "head_dim": 16}),
        ((MistralConfig, MistralForCausalLM), {}),
        ((Qwen2Config, Qwen2ForCausalLM), {}),
        ((Qwen3Config, Qwen3ForCausalLM), {"head_dim": 8}),
    ],
)
def test_the_layout_counts_every_parameter_of_the_real_model(classes, changes):
    config, model = build(*classes, **changes)
    assert parameter_layout(config).total == count_parameters(model).total


@pytest.mark.parametrize(
    "method",
    [
        Method(),
        Method(use_dora=True),
        Method(use_rslora=True, r=4, alpha=8),
        Method(r=4, target_modules=["q_proj", "v_proj"]),
        Method(r=8, target_modules=["gate_proj", "down_proj"], freeze_layers=1),
        Method(use_dora=True, freeze_layers=2),
        Method(kind="full"),
        Method(kind="freeze", freeze_layers=1),
        Method(kind="freeze", freeze_layers=2),
    ],
    ids=repr,
)
def test_count_matches_peft_and_apply_method_exactly(tiny_llama, method):
    config, model = tiny_llama
    real = count_parameters(apply_method(copy.deepcopy(model), method))
    assert count_trainable(config, method) == real


@pytest.mark.parametrize(
    "method",
    [
        Method(bias="all"),
        Method(bias="lora_only", target_modules=["q_proj", "o_proj", "up_proj"]),
        Method(bias="lora_only", freeze_layers=1),
        Method(kind="freeze", freeze_layers=2),  # untied: the output head trains
        Method(use_dora=True, target_modules=["k_proj"]),
    ],
    ids=repr,
)
def test_count_matches_with_biases_and_an_untied_head(biased_llama, method):
    config, model = biased_llama
    real = count_parameters(apply_method(copy.deepcopy(model), method))
    assert count_trainable(config, method) == real


def test_qlora_counts_like_lora_and_a_model_or_dict_works_as_config(tiny_llama):
    config, model = tiny_llama
    lora = count_trainable(config, Method())
    assert count_trainable(config, Method(kind="qlora")) == lora
    assert count_trainable(model, Method()) == lora
    assert count_trainable({**config.to_dict(), "model_type": "llama"}, Method()) == lora
    assert isinstance(lora, ParameterCount) and 0 < lora.share < 1


def test_lora_count_is_the_textbook_formula(tiny_llama):
    config, _ = tiny_llama
    shapes = linear_shapes(config)
    q, v = shapes["q_proj"], shapes["v_proj"]
    expected = 3 * 8 * (q.in_features + q.out_features + v.in_features + v.out_features)
    method = Method(r=8, target_modules=["q_proj", "v_proj"])
    assert count_trainable(config, method).trainable == expected


def test_mistakes_are_explained(tiny_llama):
    config, _ = tiny_llama
    with pytest.raises(WorkbenchError, match="`freeze_layers`=3 leaves none"):
        count_trainable(config, Method(freeze_layers=3))
    with pytest.raises(WorkbenchError, match="matches no linear layer.*q_proj"):
        count_trainable(config, Method(target_modules=["query"]))
    with pytest.warns(UserWarning, match=r"\['query'\]"):
        count_trainable(config, Method(target_modules=["q_proj", "query"]))
    with pytest.raises(WorkbenchError, match="model_type='gpt2'"):
        count_trainable(GPT2Config(), Method())


# --- memory estimate -----------------------------------------------------------------------


def estimate(method, batch_size=8, seq_length=256, **kwargs):
    return estimate_memory(SMOLLM2, method, batch_size=batch_size, seq_length=seq_length, **kwargs)


def test_qlora_saves_weights_but_keeps_fp32_activations():
    qlora = estimate(Method(kind="qlora"), dtype_bytes=2, device="cuda")
    lora = estimate(Method(), dtype_bytes=2, device="cuda")
    full = estimate(Method(kind="full"), dtype_bytes=2, device="cuda")
    assert qlora.weights < lora.weights < full.weights + full.gradients
    assert lora.total < full.total
    # measured on an H100: QLoRA's upcast norms make its activations fp32, so on a small model
    # it needs more memory than LoRA; on a 7B shape with short batches the weights dominate
    assert qlora.activations > lora.activations
    big = LlamaConfig(vocab_size=32000, **llama_shape(4096, 11008, layers=32, heads=32))
    small_batch = dict(batch_size=1, seq_length=512, dtype_bytes=2, device="cuda")
    assert (
        estimate_memory(big, Method(kind="qlora"), **small_batch).total
        < estimate_memory(big, Method(), **small_batch).total
    )


def test_memory_grows_with_batch_and_length_and_only_activations_do():
    base = estimate(Method())
    for bigger in (estimate(Method(), batch_size=16), estimate(Method(), seq_length=512)):
        assert bigger.total > base.total
        assert bigger.activations == pytest.approx(2 * base.activations, abs=1)
        assert (bigger.weights, bigger.optimizer) == (base.weights, base.optimizer)


def test_full_fine_tuning_adds_gradients_and_two_adamw_states_per_weight():
    full = estimate(Method(kind="full"), dtype_bytes=4)
    trainable = full.parameters.trainable
    assert trainable == full.parameters.total
    assert full.weights == 4 * trainable
    assert full.optimizer == 2 * 4 * trainable  # AdamW states in the weights' dtype
    assert full.gradients == 4 * trainable // 2  # half coexist with the activations at the peak
    assert full.adapters == 0


def test_lora_keeps_fp32_adapters_their_gradients_and_optimizer_states():
    lora = estimate(Method(), dtype_bytes=2)
    trainable = lora.parameters.trainable
    assert lora.adapters == lora.gradients == 4 * trainable
    assert lora.optimizer == 8 * trainable
    assert lora.weights == 2 * lora.parameters.total - 2 * trainable  # base only, in bf16


def test_freezing_layers_and_checkpointing_keep_fewer_activations():
    plain = estimate(Method())
    assert estimate(Method(freeze_layers=10)).activations < plain.activations
    assert estimate(Method(), gradient_checkpointing=True).activations < plain.activations
    assert estimate(Method(), device="cuda").overhead > plain.overhead > 0


def test_the_summary_reads_in_gib_or_mib():
    text = str(estimate(Method()))
    assert "estimated peak" in text and "GiB" in text and "activations" in text
    with pytest.raises(WorkbenchError, match="`batch_size`=0"):
        estimate(Method(), batch_size=0)


@pytest.mark.parametrize(
    "method",
    [Method(kind="full"), Method(), Method(dropout=0.0), Method(use_dora=True)],
    ids=repr,
)
def test_activation_term_is_close_to_what_autograd_keeps(tiny_llama, method):
    """Deterministic: counts the bytes of the tensors saved for backward (no loss, no logits)."""
    config, model = tiny_llama
    model = apply_method(copy.deepcopy(model), method)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in params:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    batch, length = 2, 32
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(input_ids=torch.randint(0, 600, (batch, length)))
    per_layer, _ = activation_elements_per_token(config, method)
    predicted = batch * length * config.num_hidden_layers * per_layer * 4
    assert 0.6 < predicted / sum(saved.values()) < 1.6


@pytest.mark.embedded
def test_predictions_stay_within_15_percent_of_the_committed_measurements():
    """The estimator against every peak measured on a GPU and, on a CPU, against the embedded
    model trained on packed sample rows (`python -m benchmarks.memory --rescore ...`)."""
    import argparse

    from benchmarks.memory import rescore

    results = ROOT / "benchmarks" / "results"
    files = sorted(results.glob("*-cuda-memory*.json")) + [
        results / "2026-11-23-cpu-memory-embedded.json"
    ]
    rows = rescore(argparse.Namespace(tokenizer_dir=None), [str(f) for f in files])
    assert len(rows) == 20
    worst = max(rows, key=lambda r: abs(r["error"]))
    assert abs(worst["error"]) < 0.15, worst
