"""Trainable parameters and peak training memory, from a model's config alone (no model touched).

`count_trainable(config, method)` counts exactly what `apply_method` would leave trainable, for
Llama-like decoders (llama, mistral, qwen2, qwen3, smollm): nothing is loaded or wrapped, so a
form can answer "how many parameters train?" on every keystroke. `estimate_memory` turns the
count into an estimate of peak training memory; it is an estimate, see its docstring.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from types import SimpleNamespace
from typing import Any

from workbench.errors import WorkbenchError
from workbench.model.methods import Method, ParameterCount

LLAMA_LIKE = ("llama", "mistral", "qwen2", "qwen3")
ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")
QUANTIZED_BYTES = 0.5 + 0.0625  # NF4: half a byte a weight, plus one fp32 scale per 64 weights
# Constants measured on an H100 (torch 2.11, transformers 5.23, bitsandbytes 0.50), with
# `python -m benchmarks.memory` on three shapes (135M-1B) x LoRA, QLoRA and full: see
# benchmarks/results/. The CPU figure is a Python process with torch and transformers imported.
CUDA_CONTEXT_BYTES = 768 * 2**20  # CUDA context and workspaces, outside PyTorch's allocator
PROCESS_BYTES = 512 * 2**20  # on a CPU: the interpreter, torch and transformers themselves
ALLOCATOR_SLACK = 0.07  # PyTorch's caching allocator reserves 1-15% above its peak allocation
ADAMW_BYTES = 8  # two fp32 states (exp_avg, exp_avg_sq) per trainable parameter
QLORA_ACTIVATION_BYTES = 4.7  # per activation element: fp32 (the upcast norms) + bf16 copies
SOFTMAX_BYTES = 8  # per logit: the fp32 log-softmax kept for backward and its gradient
# On a CPU the process's peak exceeds its peak of live tensors: glibc keeps freed blocks in its
# heap, fragmented by each step's mix of sizes. Measured peak RSS over predicted activations,
# embedded model, sample data packed, batches 4-16 (benchmarks/results/*-cpu-memory*.json):
CPU_HEAP_FACTOR = {"adapters": 2.5, "weights": 1.5}  # LoRA/QLoRA; full/freeze


class UnsupportedModelError(WorkbenchError):
    """The config is not a Llama-like decoder, so its parameters cannot be counted from it."""


@dataclass(frozen=True)
class LinearShape:
    """One linear layer of a decoder block: in and out features, and whether it has a bias."""

    in_features: int
    out_features: int
    bias: bool

    @property
    def parameters(self) -> int:
        return self.in_features * self.out_features + (self.out_features if self.bias else 0)


def _config(model_config: Any):
    """Accept a transformers config, a model (its `.config`) or a plain dict."""
    if isinstance(model_config, dict):
        return SimpleNamespace(**model_config)
    return getattr(model_config, "config", model_config)


def linear_shapes(model_config: Any) -> dict[str, LinearShape]:
    """The linear layers of one decoder block of a Llama-like config, by name (`q_proj`, ...)."""
    config = _config(model_config)
    model_type = getattr(config, "model_type", "llama")
    if model_type not in LLAMA_LIKE:
        raise UnsupportedModelError(
            f"Cannot count parameters of model_type={model_type!r} from its config: only "
            f"Llama-like decoders ({', '.join(LLAMA_LIKE)}) are known. Count on the model "
            "instead: workbench.count_parameters(model) after applying the method."
        )
    hidden, inner = config.hidden_size, config.intermediate_size
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    attention_bias = bool(getattr(config, "attention_bias", False))
    qkv_bias = attention_bias or model_type == "qwen2"  # Qwen2 always has q, k, v biases
    mlp_bias = bool(getattr(config, "mlp_bias", False))
    return {
        "q_proj": LinearShape(hidden, heads * head_dim, qkv_bias),
        "k_proj": LinearShape(hidden, kv_heads * head_dim, qkv_bias),
        "v_proj": LinearShape(hidden, kv_heads * head_dim, qkv_bias),
        "o_proj": LinearShape(heads * head_dim, hidden, attention_bias),
        "gate_proj": LinearShape(hidden, inner, mlp_bias),
        "up_proj": LinearShape(hidden, inner, mlp_bias),
        "down_proj": LinearShape(inner, hidden, mlp_bias),
    }


@dataclass(frozen=True)
class ParameterLayout:
    """Where a Llama-like model's parameters are: embeddings, decoder layers, head."""

    embeddings: int
    per_layer: int  # one decoder block, norms included
    per_layer_linear: int  # the linear layers of one block (what 4-bit loading quantises)
    layers: int
    final_norm: int
    lm_head: int  # 0 when tied to the embeddings

    @property
    def total(self) -> int:
        return self.embeddings + self.layers * self.per_layer + self.final_norm + self.lm_head


def parameter_layout(model_config: Any) -> ParameterLayout:
    """The parameter counts of a Llama-like config, part by part."""
    config = _config(model_config)
    shapes = linear_shapes(config)
    hidden, heads = config.hidden_size, config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    norms = 2 * hidden + (2 * head_dim if config.model_type == "qwen3" else 0)  # qwen3: q/k norms
    linear = sum(shape.parameters for shape in shapes.values())
    embeddings = config.vocab_size * hidden
    tied = bool(getattr(config, "tie_word_embeddings", False))
    return ParameterLayout(
        embeddings=embeddings,
        per_layer=linear + norms,
        per_layer_linear=linear,
        layers=config.num_hidden_layers,
        final_norm=hidden,
        lm_head=0 if tied else embeddings,
    )


def targeted_modules(model_config: Any, method: Method) -> list[str]:
    """The linear layer names `method.target_modules` selects in this config."""
    names = list(linear_shapes(model_config))
    if method.target_modules == "all-linear":
        return names
    wanted = [method.target_modules] if isinstance(method.target_modules, str) else []
    wanted = wanted or list(method.target_modules)
    chosen = [n for n in names if any(w == n or w.endswith("." + n) for w in wanted)]
    unknown = [w for w in wanted if w.rsplit(".", 1)[-1] not in names]
    if not chosen:
        raise WorkbenchError(
            f"`target_modules`={method.target_modules!r} matches no linear layer of this model; "
            f"its linear layers are {', '.join(names)} (or use 'all-linear')."
        )
    if unknown:
        warnings.warn(
            f"`target_modules` {unknown} match no linear layer of this model and are ignored.",
            stacklevel=2,
        )
    return chosen


def count_trainable(model_config: Any, method: Method) -> ParameterCount:
    """Trainable and total parameters `apply_method(model, method)` would give, from the config.

    LoRA adds `r * (in + out)` per targeted linear layer in every layer above `freeze_layers`;
    DoRA adds `out` magnitude parameters per targeted layer; `bias='all'` trains every bias,
    `'lora_only'` the biases of targeted layers. 'full' trains everything; 'freeze' everything
    but the embeddings (and a tied output head) and the first `freeze_layers` layers.
    """
    layout = parameter_layout(model_config)
    trained_layers = layout.layers - method.freeze_layers
    if method.freeze_layers and trained_layers <= 0:
        raise WorkbenchError(
            f"`freeze_layers`={method.freeze_layers} leaves none of the model's "
            f"{layout.layers} layers to train: use at most {layout.layers - 1}."
        )
    if method.kind == "full":
        return ParameterCount(layout.total, layout.total)
    if method.kind == "freeze":
        frozen = layout.embeddings + method.freeze_layers * layout.per_layer
        return ParameterCount(layout.total - frozen, layout.total)
    shapes = linear_shapes(model_config)
    targets = targeted_modules(model_config, method)
    per_layer = sum(
        method.r * (shapes[n].in_features + shapes[n].out_features)
        + (shapes[n].out_features if method.use_dora else 0)
        for n in targets
    )
    adapters = per_layer * trained_layers
    biases = 0
    if method.bias == "all":
        biases = layout.layers * sum(s.out_features for s in shapes.values() if s.bias)
    elif method.bias == "lora_only":
        biases = trained_layers * sum(shapes[n].out_features for n in targets if shapes[n].bias)
    return ParameterCount(adapters + biases, layout.total + adapters)


def format_bytes(n: float) -> str:
    """Bytes as MiB, or GiB from 1 GiB on."""
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


@dataclass(frozen=True)
class MemoryEstimate:
    """Estimated peak memory of one training step, in bytes, term by term."""

    weights: int  # the model's weights (4-bit linear layers with QLoRA)
    adapters: int  # LoRA/DoRA weights (fp32); 0 for full and freeze (those are in `weights`)
    gradients: int  # one gradient per trainable parameter
    optimizer: int  # AdamW's two states per trainable parameter
    activations: int  # what the forward pass keeps for the backward pass, and the logits
    overhead: int = 0  # CUDA context and allocator slack on a GPU; the process itself on a CPU
    parameters: ParameterCount | None = None

    @property
    def total(self) -> int:
        return (
            self.weights
            + self.adapters
            + self.gradients
            + self.optimizer
            + self.activations
            + self.overhead
        )

    def terms(self) -> dict[str, int]:
        """Each term by name, for a table."""
        return {
            "weights": self.weights,
            "adapters": self.adapters,
            "gradients": self.gradients,
            "optimizer": self.optimizer,
            "activations": self.activations,
            "overhead": self.overhead,
        }

    def __str__(self) -> str:
        parts = ", ".join(
            f"{name} {format_bytes(value)}" for name, value in self.terms().items() if value
        )
        return f"~{format_bytes(self.total)} estimated peak ({parts})"


def activation_elements_per_token(model_config: Any, method: Method) -> tuple[int, int]:
    """(elements kept per token in one trained-through decoder layer, per token for the logits).

    A Llama block with PyTorch's scaled-dot-product attention (no seq x seq matrix kept) keeps
    about `6h + 3q + 2kv + 4i` (h hidden, q and kv the query and key widths, i the MLP width):
    the RMSNorms' inputs and outputs, q, k after RoPE and v, the attention output and its
    reshaped copy, the MLP input, the gate, silu(gate), up and their product. With LoRA the
    frozen norm weights keep 2h less, each targeted layer adds `r` plus, with dropout > 0, its
    dropped-out input (`in`), and DoRA adds about `3 out`. The loss at its peak holds the
    logits, the fp32 log-softmax and both their gradients: about `4 vocab` per token.
    Checked against the tensors autograd saves for a small Llama: within about 25%.
    """
    config = _config(model_config)
    shapes = linear_shapes(config)
    hidden, inner = config.hidden_size, config.intermediate_size
    q_dim, kv_dim = shapes["q_proj"].out_features, shapes["k_proj"].out_features
    per_layer = 6 * hidden + 3 * q_dim + 2 * kv_dim + 4 * inner
    if method.uses_lora:
        per_layer -= 2 * hidden
        for name in targeted_modules(config, method):
            shape = shapes[name]
            per_layer += method.r + (shape.in_features if method.dropout > 0 else 0)
            per_layer += 3 * shape.out_features if method.use_dora else 0
    return per_layer, 4 * config.vocab_size


def estimate_memory(
    model_config: Any,
    method: Method,
    *,
    batch_size: int,
    seq_length: int,
    dtype_bytes: int = 4,
    device: str = "cpu",
    gradient_checkpointing: bool = False,
    response_fraction: float = 1.0,
) -> MemoryEstimate:
    """Estimated peak memory of one training step with AdamW. An estimate, not a measurement.

    `batch_size x seq_length` is the tokens of one forward pass (packed rows: the mean row
    length; padded rows: the longest); `response_fraction` of them get logits (the loss asks
    only for the positions whose next token carries a label; 1.0 for the stock loss).
    - weights: parameters x `dtype_bytes`; with 'qlora' the decoder's linear layers take
      0.5625 byte each (NF4 plus fp32 block scales) and the rest (embeddings, norms, head)
      4 bytes, as peft's `prepare_model_for_kbit_training` upcasts them to fp32.
    - adapters and gradients: LoRA/DoRA weights are fp32 (peft upcasts them), and so are their
      gradients. Full and freeze keep one gradient per trainable weight in `dtype_bytes`, of
      which about half are counted: they appear as backward frees the activations (fitted on
      the measurements; all of them would over-predict full fine-tuning by up to 13%).
    - optimizer: AdamW's two states, fp32 for adapters, in the weights' dtype otherwise.
    - activations: `tokens x layers_trained x A_layer x bytes + logits`, with A_layer from
      `activation_elements_per_token` (`6h + 3q + 2kv + 4i`, plus LoRA inputs); QLoRA keeps
      them at 4.7 bytes an element (measured 2.25-2.4x LoRA's bf16 figure). Logits:
      `tokens x response_fraction x vocab x (dtype_bytes + fp32 copy + 8)`. Layers below
      `freeze_layers` keep nothing; gradient checkpointing keeps one `h` per layer and one
      layer in full.
    - overhead: on a GPU the CUDA context (768 MiB) and 7% allocator slack over the rest; on a
      CPU the process itself (512 MiB).
    - on a CPU the activations count 2.5x (LoRA) or 1.5x (full): what the heap keeps beyond
      the live tensors, measured with packed rows of the sample data. Rows all of one length
      fragment less: there the estimate is up to ~50% high.
    """
    if batch_size < 1 or seq_length < 1 or dtype_bytes < 1:
        raise WorkbenchError(
            f"`batch_size`={batch_size}, `seq_length`={seq_length} and `dtype_bytes`="
            f"{dtype_bytes} must all be at least 1."
        )
    config = _config(model_config)
    layout = parameter_layout(config)
    count = count_trainable(config, method)
    if method.kind == "qlora":
        quantized = layout.layers * layout.per_layer_linear
        weights = round(quantized * QUANTIZED_BYTES) + (layout.total - quantized) * 4
    else:
        weights = layout.total * dtype_bytes
    per_layer, _ = activation_elements_per_token(config, method)
    layers = layout.layers - method.freeze_layers
    kept = layers * per_layer
    if gradient_checkpointing:
        kept = layers * config.hidden_size + per_layer
    tokens = batch_size * seq_length
    qlora = method.kind == "qlora"
    element_bytes = QLORA_ACTIVATION_BYTES if qlora else dtype_bytes
    logit_dtype = 4 if qlora else dtype_bytes  # QLoRA's output layer is upcast to fp32
    logit_bytes = logit_dtype + (4 if logit_dtype < 4 else 0) + SOFTMAX_BYTES
    logits = tokens * response_fraction * config.vocab_size * logit_bytes
    if method.uses_lora:
        gradients, optimizer = count.trainable * 4, count.trainable * ADAMW_BYTES
    else:
        gradients = count.trainable * dtype_bytes // 2  # half coexist with the activations
        optimizer = count.trainable * 2 * dtype_bytes
    on_gpu = str(device).startswith("cuda")
    heap = 1.0 if on_gpu else CPU_HEAP_FACTOR["adapters" if method.uses_lora else "weights"]
    estimate = MemoryEstimate(
        weights=weights,
        adapters=count.trainable * 4 if method.uses_lora else 0,
        gradients=gradients,
        optimizer=optimizer,
        activations=round((tokens * kept * element_bytes + logits) * heap),
        parameters=count,
    )
    overhead = (
        CUDA_CONTEXT_BYTES + round(ALLOCATOR_SLACK * estimate.total) if on_gpu else PROCESS_BYTES
    )
    return replace(estimate, overhead=overhead)
