"""What the benchmarks train: model shapes and data, the same for every stack in a run.

Shapes are Llama configs built with random weights (speed and memory do not depend on the
values); `embedded` is the real SmolLM2-135M-Instruct, for loss comparisons. Data is either the
sample support tickets (the demo's data) or synthetic Alpaca-like rows: instruction, optional
input and a response whose lengths in words follow a skewed distribution like Alpaca's
(responses from a few words to a few hundred), written from a small vocabulary of ordinary
words. Only the lengths matter for speed; the text is generated here, not taken from Alpaca.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_DATA = ROOT / "sample_data"

# Llama shapes by name; `vocab_size` is the embedded model's, so every shape shares its tokenizer
SHAPES: dict[str, dict] = {
    "smollm2-135m": dict(
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        tie_word_embeddings=True,
    ),
    "smollm2-360m": dict(
        hidden_size=960,
        intermediate_size=2560,
        num_hidden_layers=32,
        num_attention_heads=15,
        num_key_value_heads=5,
        tie_word_embeddings=True,
    ),
    "llama-1b": dict(  # Llama-3.2-1B's layers (hidden 2048, 16 layers), SmolLM2's vocabulary
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        tie_word_embeddings=True,
    ),
}

VOCABULARY = """
the a of to and in is for that with as on it be are this by from or an was which can at
have not more use data model time people water energy city system first small new write
explain list describe three give example reasons how why what summary story short poem
email plan steps simple answer question sentence word number best health school market
travel food plant light color history science music language
"""
WORDS = tuple(VOCABULARY.split())


def tokenizer_dir(given: str | None) -> str:
    """The folder with the tokenizer (and config) every shape borrows: `given`, else the
    embedded model's cached conversion."""
    if given:
        return given
    from workbench.training.models import embedded_model_dir

    return str(embedded_model_dir())


def config_for(shape: str, tokenizer_dir: str | Path):
    """A transformers LlamaConfig for `shape`, with the tokenizer's vocabulary and ids."""
    from transformers import AutoConfig, LlamaConfig

    if shape not in SHAPES:
        raise ValueError(f"Unknown shape {shape!r}; known: {', '.join(SHAPES)} or 'embedded'.")
    base = AutoConfig.from_pretrained(tokenizer_dir)
    return LlamaConfig(
        vocab_size=base.vocab_size,
        max_position_embeddings=8192,
        bos_token_id=base.bos_token_id,
        eos_token_id=base.eos_token_id,
        pad_token_id=base.pad_token_id,
        head_dim=SHAPES[shape]["hidden_size"] // SHAPES[shape]["num_attention_heads"],
        **SHAPES[shape],
    )


def _words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(max(1, n)))


def alpaca_like_rows(n: int, seed: int = 0) -> list[dict]:
    """`n` instruction rows with Alpaca-like lengths (median response ~40 words, long tail)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        has_input = rng.random() < 0.4
        response_words = min(400, int(rng.lognormvariate(3.7, 0.9)))
        rows.append(
            {
                "instruction": _words(rng, int(rng.lognormvariate(2.5, 0.4))) + "?",
                "input": _words(rng, int(rng.lognormvariate(3.0, 0.6))) if has_input else "",
                "output": _words(rng, response_words) + ".",
                "task": "synthetic",
            }
        )
    return rows


def write_rows(rows: list[dict], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path
