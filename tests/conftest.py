"""Shared fixtures: a tiny tokenizer and Llama model built locally from a config (no hub); and
the test tiers (markers, see pyproject.toml and docs/testing.md)."""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    # One thread per worker, inherited by the subprocesses tests start (notebook kernels, CLI
    # commands): two workers of two threads each on two cores made steps 10-50x slower.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parent.parent
TIERS = ("unit", "training", "embedded", "notebooks", "browser", "faults")
# A test that asks for one of these fixtures (directly or through another fixture) builds and
# usually trains a model: tier `training` unless it is marked with a later tier already.
MODEL_FIXTURES = {
    "tiny", "tiny_model_dir", "lora_run", "tiny_llama", "teacher_dir", "biased_llama",
    "model_4bit", "quantizable_model_dir", "qlora_run", "lesson_model_dir",
}  # fmt: skip
SAMPLE_DATA = ROOT / "sample_data"
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _corpus() -> list[str]:
    texts = []
    added_later = {"preferences.jsonl", "multi_turn_chat.jsonl"}  # keep the tuned vocabulary
    for path in sorted(SAMPLE_DATA.glob("*.jsonl")):
        if path.name in added_later:
            continue
        texts.extend(path.read_text(encoding="utf-8").splitlines())
    texts.append("Below is an instruction that describes a task. ### Instruction: ### Response:")
    return texts


def build_tiny_tokenizer():
    """A byte-level BPE tokenizer (vocabulary 600) trained on the sample data in a second."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    backend.train_from_iterator(_corpus(), trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
    )
    tokenizer.chat_template = CHATML
    return tokenizer


def build_tiny_model(tokenizer, seed: int = 0, layers: int = 2, hidden: int = 32):
    """A randomly initialised Llama (hidden size 32 by default): milliseconds a step."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return LlamaForCausalLM(config)


def quick(**changes):
    """Hyperparameters for a few fast steps on the tiny model; `changes` override them."""
    from workbench.runs.hyperparameters import Hyperparameters

    settings = dict(
        max_steps=6,
        batch_size=4,
        eval_every=3,
        learning_rate=5e-3,
        max_length=256,
        sample_max_new_tokens=4,
    )
    settings.update(changes)
    return Hyperparameters(**settings)


@contextmanager
def held_at_step(run, step: int):
    """Start `run` and hold its training thread at `step` until the block ends (then it goes
    on; wait for it with run.wait())."""
    release, reached = threading.Event(), threading.Event()

    def hold(event):
        if event["step"] == step:
            reached.set()
            release.wait(30)

    run.add_callback("step", hold)
    run.start()
    try:
        assert reached.wait(60), f"the run never reached step {step}"
        yield run
    finally:
        release.set()


@pytest.fixture(scope="session")
def ticket_split():
    """(48 training rows, 8 validation rows) of the support tickets."""
    import workbench

    data = workbench.load_data(SAMPLE_DATA / "support_tickets.jsonl", verbose=False)
    rest, validation = workbench.split_data(data, 8, seed=0)
    return rest.select(range(48)), validation


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return build_tiny_tokenizer()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    """A local model folder (as save_pretrained writes it) for load_model tests."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    build_tiny_model(tiny_tokenizer).save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def tiny(tiny_model_dir):
    """A fresh (model, tokenizer) pair loaded through workbench.load_model."""
    import workbench

    return workbench.load_model(str(tiny_model_dir), device="cpu")


@pytest.fixture(autouse=True)
def _isolated_runs(tmp_path, monkeypatch):
    """Runs go to a temporary folder; the model cache stays shared (conversion takes 20 s)."""
    monkeypatch.setenv("WORKBENCH_RUNS", str(tmp_path / "runs"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    yield


@pytest.fixture(scope="module")
def lora_run(tiny_model_dir, ticket_split, tmp_path_factory):
    """A finished 4-step LoRA run on the tiny model, one per test module (no dropout, so
    several processes can repeat it exactly): the export and GGUF tests start from it."""
    import workbench
    from workbench.model.methods import Method

    model, tokenizer = workbench.load_model(str(tiny_model_dir))
    run = workbench.train(
        model,
        tokenizer,
        *ticket_split,
        method=Method(r=8, dropout=0.0),
        hyperparameters=quick(max_steps=4, eval_every=4, learning_rate=1e-2),
        run_dir=tmp_path_factory.mktemp("runs") / "lora-run",
        samples=1,
    ).wait()
    assert run.status == "finished", run.error
    return run


# The order tests are handed to pytest-xdist's workers: the slowest tiers first, so the long
# tests (the README's commands, the notebooks) start at once and the many short ones fill in at
# the end. In file order, the README's commands started last and kept one core busy alone.
SLOWEST_FIRST = ("embedded", "notebooks", "faults", "training", "browser", "unit")


def pytest_collection_modifyitems(config, items):
    """Give every test exactly one tier: its own marker, `training` when it uses a model
    fixture, else `unit` (no model weights: what `make test-fast` runs). Then order them
    slowest tier first (a stable sort: file order within a tier)."""
    tiers = {}
    for item in items:
        marked = [tier for tier in TIERS if item.get_closest_marker(tier)]
        if not marked:
            marked = ["training" if MODEL_FIXTURES & set(item.fixturenames) else "unit"]
            item.add_marker(getattr(pytest.mark, marked[0]))
        tiers[item.nodeid] = SLOWEST_FIRST.index(marked[0])
    items.sort(key=lambda item: tiers[item.nodeid])
