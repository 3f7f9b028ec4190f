"""Methods applied to models: 4-bit layers stay trainable on a CPU."""

from __future__ import annotations

import warnings

import pytest
import torch
from conftest import build_tiny_model

import workbench
from workbench.model.methods import Method, apply_method, keep_4bit_layers_trainable


@pytest.fixture
def model_4bit(tmp_path, tiny_tokenizer):
    # bitsandbytes quantises in blocks of 64 values: layers need at least that many outputs
    build_tiny_model(tiny_tokenizer, hidden=256).save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "4-bit on a CPU is slow"
        return workbench.load_model(str(tmp_path), quantization="4bit")


def _linear_4bit(model) -> list:
    return [m for m in model.modules() if hasattr(m, "support_avx512bf16_for_cpu")]


def _weights(layers) -> list[torch.Tensor]:
    from bitsandbytes.functional import dequantize_4bit

    return [dequantize_4bit(m.weight.data, m.weight.quant_state).clone() for m in layers]


def test_repacked_4bit_weights_are_restored(model_4bit):
    from bitsandbytes.functional import _convert_weight_packed_for_cpu

    model, _ = model_4bit
    layers = _linear_4bit(model)
    assert layers and not any(m.support_avx512bf16_for_cpu for m in layers)  # load_model did it
    original = _weights(layers)
    for m in layers:  # what bitsandbytes does at the first forward pass without gradients
        m.weight.data, m.weight.quant_state = _convert_weight_packed_for_cpu(
            m.weight.data, m.weight.quant_state
        )
    assert all(m.weight.quant_state.packing_format_for_cpu for m in layers)
    assert keep_4bit_layers_trainable(model) == len(layers)
    assert not any(m.weight.quant_state.packing_format_for_cpu for m in layers)
    for restored, weight in zip(_weights(layers), original):
        # the repacking keeps the block scales in bfloat16: the round trip is that close
        assert (restored - weight).norm() / weight.norm() < 5e-3
    assert keep_4bit_layers_trainable(model) == 0


def test_qlora_gradients_are_the_same_after_an_evaluation(model_4bit):
    from bitsandbytes.functional import has_avx512bf16

    if not has_avx512bf16():
        pytest.skip("this CPU has no AVX512-BF16, so bitsandbytes never repacks weights here")
    model, tokenizer = model_4bit
    model = apply_method(model, Method(kind="qlora", r=4))
    for name, param in model.named_parameters():
        if "lora_B" in name:  # nonzero, so gradients reach lora_A and the layers below
            torch.nn.init.normal_(param, std=0.02)
    ids = tokenizer("Where is my parcel? It has not arrived.", return_tensors="pt").input_ids

    def first_layer_gradients():
        model.train()
        model.zero_grad()
        model(input_ids=ids, labels=ids).loss.backward()
        return {
            n: p.grad.clone()
            for n, p in model.named_parameters()
            if "layers.0." in n and p.grad is not None
        }

    before = first_layer_gradients()
    model.eval()
    with torch.no_grad():  # an evaluation: where bitsandbytes would repack the weights
        model(input_ids=ids)
    after = first_layer_gradients()
    assert before and before.keys() == after.keys()
    for name in before:
        torch.testing.assert_close(after[name], before[name], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    ("method", "quantization", "name"),
    [
        (Method(), None, "LoRA r=16"),
        (Method(use_dora=True, r=8), None, "DoRA r=8"),
        (Method(use_rslora=True), None, "LoRA r=16 rsLoRA"),
        (Method(freeze_layers=20), None, "LoRA r=16 + freeze 20"),
        (Method(kind="qlora"), "4bit", "QLoRA r=16 (4bit)"),
        (Method(), "8bit", "LoRA r=16 (8bit base)"),
        (Method(kind="full"), None, "full"),
        (Method(kind="freeze", freeze_layers=20), None, "freeze 20"),
    ],
)
def test_each_method_has_a_name_that_tells_it_apart(method, quantization, name):
    assert method.describe(quantization) == name
