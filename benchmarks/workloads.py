"""What the benchmarks train: model shapes and data, the same for every stack in a run.

Shapes are Llama configs built with random weights (speed and memory do not depend on the
values); `embedded` is the real SmolLM2-135M-Instruct, for loss comparisons. `deep-narrow` has
the 135M shape's depth with hidden size 16 and a 512-word tokenizer trained here on the synthetic
rows' words (`small_tokenizer`; with SmolLM2's 49,152 words the output layer and its softmax
would be most of the step): its arithmetic is negligible, so a step on it costs what the
framework around the arithmetic costs (`benchmarks/overhead.py`). Data is either the
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


def llama_shape(
    hidden: int, intermediate: int, layers: int, heads: int, kv_heads: int | None = None
) -> dict:
    """A decoder's sizes as the keyword arguments of LlamaConfig (and of the configs that name
    them as Llama does: Qwen2, Mistral, GPT-NeoX); without `kv_heads`, one per attention head."""
    shape = dict(
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
    )
    if kv_heads is not None:
        shape["num_key_value_heads"] = kv_heads
    return shape


# Llama shapes by name, all with tied embeddings; `vocab_size` is the embedded model's, so every
# shape shares its tokenizer
SHAPES: dict[str, dict] = {
    "smollm2-135m": llama_shape(hidden=576, intermediate=1536, layers=30, heads=9, kv_heads=3),
    # the 135M shape's 30 layers at hidden size 16: every layer, LoRA module and optimizer
    # tensor is still there, but a step's arithmetic is about 1,000x smaller (`step_flops`).
    # Intermediate 3x hidden, about the 135M shape's 2.7x; head size 8; grouped-query
    # attention, as in the 135M shape (9 heads, 3 kv)
    "deep-narrow": llama_shape(hidden=16, intermediate=48, layers=30, heads=2, kv_heads=1),
    "smollm2-360m": llama_shape(hidden=960, intermediate=2560, layers=32, heads=15, kv_heads=5),
    # Llama-3.2-1B's layers (hidden 2048, 16 layers), SmolLM2's vocabulary
    "llama-1b": llama_shape(hidden=2048, intermediate=8192, layers=16, heads=32, kv_heads=8),
}
EMBEDDED_VOCABULARY = 49152  # SmolLM2's tokenizer, which every shape borrows

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
    from workbench.model.loading import embedded_model_dir

    return str(embedded_model_dir())


def config_for(shape: str, tokenizer_dir: str | Path, tokenizer=None):
    """A transformers LlamaConfig for `shape`, with the vocabulary and ids of the tokenizer in
    `tokenizer_dir`, or of `tokenizer` when given."""
    from transformers import AutoConfig, LlamaConfig

    if shape not in SHAPES:
        raise ValueError(f"Unknown shape {shape!r}; known: {', '.join(SHAPES)} or 'embedded'.")
    if tokenizer is not None:
        vocab, bos, eos, pad = (
            len(tokenizer),
            tokenizer.bos_token_id,
            tokenizer.eos_token_id,
            tokenizer.pad_token_id,
        )
    else:
        base = AutoConfig.from_pretrained(tokenizer_dir)
        vocab, bos, eos, pad = (
            base.vocab_size,
            base.bos_token_id,
            base.eos_token_id,
            base.pad_token_id,
        )
    return LlamaConfig(
        vocab_size=vocab,
        max_position_embeddings=8192,
        bos_token_id=bos,
        eos_token_id=eos,
        pad_token_id=pad,
        head_dim=SHAPES[shape]["hidden_size"] // SHAPES[shape]["num_attention_heads"],
        tie_word_embeddings=True,
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


def small_tokenizer(vocab_size: int = 512):
    """A byte-level BPE tokenizer trained in about a second on the synthetic rows' words and the
    Alpaca template: the deep-narrow shape's, so that its output layer is small too."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from workbench.tokens.templates import get_template

    template = get_template("alpaca")
    texts = [" ".join(WORDS) + " ? .", *template.render(short_rows(1)[0])]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.train_from_iterator(
        texts * 4,
        trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=["<|endoftext|>", "<|im_end|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
    )


def short_rows(n: int, seed: int = 0) -> list[dict]:
    """`n` instruction rows of about 90 tokens each with the Alpaca template (instruction of
    6-10 words, response of 36-48): the overhead benchmark's rows, all about one size."""
    rng = random.Random(seed)
    return [
        {
            "instruction": _words(rng, rng.randint(6, 10)) + "?",
            "input": "",
            "output": _words(rng, rng.randint(36, 48)) + ".",
            "task": "synthetic",
        }
        for _ in range(n)
    ]


def step_flops(config, rows: list[tuple[int, int]], logits: int, lora_r: int = 16) -> dict:
    """Floating-point operations of one LoRA training step on `config` (a LlamaConfig).

    `rows`: (tokens, attended) per sequence the model runs, where `attended` is the sum of
    squared lengths of the stretches that attend to each other (a packed row computes its full
    width squared: the block-diagonal mask hides, it does not skip). `logits`: positions
    projected onto the vocabulary. Forward: 2 x multiply-adds of every linear layer (LoRA
    included) + attention's QK^T and AV (4 x attended x heads x head size per layer) + the
    output layer; backward: the same again for the activations' gradients plus the LoRA
    weights' (frozen weights get no gradient), so a step is about 2x forward.
    """
    h, layers = config.hidden_size, config.num_hidden_layers
    head = getattr(config, "head_dim", None) or h // config.num_attention_heads
    q, kv = config.num_attention_heads * head, config.num_key_value_heads * head
    shapes = [(h, q), (h, kv), (h, kv), (q, h)] + [(h, config.intermediate_size)] * 2
    shapes.append((config.intermediate_size, h))
    linear = sum(i * o for i, o in shapes)  # multiply-adds per token and layer
    lora = sum(lora_r * (i + o) for i, o in shapes)
    tokens = sum(t for t, _ in rows)
    attended = sum(a for _, a in rows)
    forward = layers * (2 * (linear + lora) * tokens + 4 * attended * q)
    forward += 2 * logits * h * config.vocab_size
    backward = forward + layers * 2 * lora * tokens  # activations' gradients + LoRA weights'
    return {"forward": forward, "step": forward + backward, "tokens": tokens, "logits": logits}


def write_rows(rows: list[dict], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def tiny_llama(
    tokenizer,
    *,
    layers: int = 2,
    hidden: int = 64,
    intermediate: int | None = None,
    kv_heads: int = 2,
    seed: int = 0,
    **config,
):
    """A random-weight Llama (seeded) with 4 heads and tied embeddings, sized for `tokenizer`:
    milliseconds a step. `intermediate` defaults to twice `hidden`; `config`: LlamaConfig's
    other arguments (`max_position_embeddings`, ...)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    shape = llama_shape(hidden, intermediate or 2 * hidden, layers, heads=4, kv_heads=kv_heads)
    return LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer),
            **shape,
            **config,
            tie_word_embeddings=True,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    )


def saved_model_folder(model, tokenizer, folder: Path) -> Path:
    """`model` and `tokenizer` saved to `folder` as save_pretrained writes them."""
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def tiny_model_folder(
    folder: Path,
    tokenizer=None,
    *,
    layers: int = 2,
    hidden: int = 64,
    intermediate: int | None = None,
    kv_heads: int = 2,
) -> Path:
    """`tiny_llama` with `tokenizer` (default: the embedded model's), saved as a local folder:
    the stand-in model of the benchmarks' `--quick` runs, and `choosing`'s tiny local
    candidate."""
    from transformers import AutoTokenizer

    from workbench.model.loading import embedded_model_dir

    tokenizer = tokenizer or AutoTokenizer.from_pretrained(embedded_model_dir())
    model = tiny_llama(
        tokenizer, layers=layers, hidden=hidden, intermediate=intermediate, kv_heads=kv_heads
    )
    return saved_model_folder(model, tokenizer, folder)
