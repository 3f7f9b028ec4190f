"""GGUF export on a tiny LoRA run: the file loads back into transformers as the merged model
(greedy answers, logits, token ids, chat template), the Modelfile names the file and the stop
token, and a non-Llama model is refused without leaving a file behind."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from workbench.errors import WorkbenchError
from workbench.interfaces.export import merge_adapter
from workbench.interfaces.gguf_export import export_gguf

PROMPTS = [
    "Classify: my parcel never arrived",
    "Classify: I was charged twice for one order",
    "How do I reset my password?",
]
TEXTS = PROMPTS + ["<|im_start|>user\nRefund 123 please?<|im_end|>\n", "  spaces\tand\nlines  "]
# Measured on this run (4 LoRA steps at 1e-2): f16 1.5e-4, q8_0 4.2e-3 (see README).
F16_TOLERANCE = 2e-3  # float16 keeps ~3 significant digits of each weight
Q8_TOLERANCE = 5e-2  # one scale per 32 weights, 8-bit values: ~28x the f16 error here


@pytest.fixture(scope="module")
def merged(lora_run, tmp_path_factory):
    """(model, tokenizer) of the merged safetensors folder: what the GGUF must reproduce."""
    folder = merge_adapter(lora_run.run_dir, tmp_path_factory.mktemp("merged") / "merged")
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(str(folder))


@pytest.fixture(scope="module")
def exported(lora_run):
    """{type: path} of the run exported as f16 and as q8_0 (the default folder, <run>/gguf/)."""
    return {q: export_gguf(lora_run.run_dir, quantization=q) for q in ("f16", "q8_0")}


def _load_gguf(path):
    folder, name = str(path.parent), path.name
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    return model.eval(), AutoTokenizer.from_pretrained(folder, gguf_file=name)


def _greedy_answers(model, tokenizer) -> list[list[int]]:
    answers = []
    for prompt in PROMPTS:
        chat = [{"role": "user", "content": prompt}]
        ids = tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt")
        ids = ids["input_ids"] if not torch.is_tensor(ids) else ids
        with torch.no_grad():
            out = model.generate(
                ids, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id
            )
        answers.append(out[0, ids.shape[1] :].tolist())
    return answers


def _max_logit_difference(a, b, tokenizer) -> float:
    ids = torch.tensor([tokenizer(" ".join(PROMPTS))["input_ids"]])
    with torch.no_grad():
        return (a(input_ids=ids).logits - b(input_ids=ids).logits).abs().max().item()


def test_the_run_is_written_as_one_gguf_file_with_a_modelfile(lora_run, exported):
    assert exported["f16"] == lora_run.run_dir / "gguf" / "lora-run.f16.gguf"
    assert exported["q8_0"].stat().st_size < 0.7 * exported["f16"].stat().st_size
    assert sorted(p.name for p in exported["f16"].parent.iterdir()) == [
        "Modelfile",
        "lora-run.f16.gguf",
        "lora-run.q8_0.gguf",
    ]  # no temporary file or merge folder left behind


def test_f16_gguf_answers_like_the_merged_model(merged, exported):
    model, tokenizer = merged
    gguf_model, _ = _load_gguf(exported["f16"])
    assert _greedy_answers(gguf_model, tokenizer) == _greedy_answers(model, tokenizer)
    assert _max_logit_difference(gguf_model, model, tokenizer) < F16_TOLERANCE


def test_q8_0_gguf_answers_like_the_merged_model_within_its_rounding(merged, exported):
    model, tokenizer = merged
    gguf_model, _ = _load_gguf(exported["q8_0"])
    assert _greedy_answers(gguf_model, tokenizer) == _greedy_answers(model, tokenizer)
    difference = _max_logit_difference(gguf_model, model, tokenizer)
    assert F16_TOLERANCE / 10 < difference < Q8_TOLERANCE  # really quantised, still close


def test_the_tokenizer_and_chat_template_travel_in_the_file(merged, exported):
    _, tokenizer = merged
    _, gguf_tokenizer = _load_gguf(exported["f16"])
    for text in TEXTS:
        assert gguf_tokenizer(text)["input_ids"] == tokenizer(text)["input_ids"], text
    assert gguf_tokenizer.chat_template == tokenizer.chat_template
    assert gguf_tokenizer.eos_token_id == tokenizer.eos_token_id
    assert gguf_tokenizer.pad_token_id == tokenizer.pad_token_id


def test_the_modelfile_names_the_file_the_template_and_the_stop_token(exported):
    modelfile = (exported["q8_0"].parent / "Modelfile").read_text()
    assert "FROM ./lora-run.q8_0.gguf\n" in modelfile  # the last export written
    assert "<|im_start|>{{ .Role }}" in modelfile
    assert 'PARAMETER stop "<|im_end|>"' in modelfile


def test_a_folder_with_another_architecture_is_refused_and_nothing_is_written(
    tiny_tokenizer, tmp_path
):
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=len(tiny_tokenizer))
    GPT2LMHeadModel(config).save_pretrained(tmp_path / "gpt2")
    with pytest.raises(WorkbenchError, match="Llama architecture only.*`gpt2`"):
        export_gguf(tmp_path / "gpt2", tmp_path / "out")
    assert not list((tmp_path / "out").iterdir())


def test_an_unknown_type_or_source_names_the_fix(tmp_path):
    with pytest.raises(ValueError, match="f16, q8_0"):
        export_gguf(tmp_path, quantization="q4_k")
    with pytest.raises(FileNotFoundError, match="neither a run directory"):
        export_gguf(tmp_path)
