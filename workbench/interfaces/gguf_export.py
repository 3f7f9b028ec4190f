"""Export a fine-tuned model as ONE GGUF file, for llama.cpp and Ollama, with a Modelfile beside it.

`export_gguf(run_or_folder)` merges a run's adapter (or takes a saved model folder), then writes
the weights, the hyperparameters llama.cpp reads, the byte-level BPE tokenizer (tokens, merges,
special token ids) and the chat template into `<name>.<type>.gguf`, and an Ollama `Modelfile`
next to it. Only the Llama layout (SmolLM2, Llama, the tiny test models) is mapped; any other
architecture is refused before a byte is written.

The metadata keys mirror the embedded SmolLM2 GGUF (`gguf.GGUFReader` on it lists them). As in
llama.cpp's `convert_hf_to_gguf.py`, the q/k projections are permuted to llama.cpp's rotary
layout; transformers' GGUF loader (`LlamaTensorProcessor._reverse_permute_weights`) undoes
exactly this permutation, so the file loads back into the same model.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Literal

import numpy as np

from workbench.errors import WorkbenchError
from workbench.interfaces.export import merge_adapter
from workbench.runs.directory import RunDirectory
from workbench.runs.files import write_atomic

GgufType = Literal["f16", "q8_0"]
GGUF_TYPES = ("f16", "q8_0")
Q8_BLOCK = 32  # Q8_0 quantises rows in blocks of 32 values; shorter or ragged rows stay f16

# llama.cpp chooses its pre-tokenizer (how text is split before the merges) by name; these are
# the Hugging Face pre-tokenizers whose llama.cpp names are known.
BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True}
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
PRE_TOKENIZERS = {
    json.dumps(dict(BYTE_LEVEL, use_regex=True), sort_keys=True): "gpt-2",
    json.dumps(
        {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Digits", "individual_digits": True},
                dict(BYTE_LEVEL, use_regex=True),
            ],
        },
        sort_keys=True,
    ): "smollm",
    json.dumps(
        {
            "type": "Sequence",
            "pretokenizers": [
                {
                    "type": "Split",
                    "pattern": {"Regex": LLAMA3_SPLIT},
                    "behavior": "Isolated",
                    "invert": False,
                },
                dict(BYTE_LEVEL, use_regex=False),
            ],
        },
        sort_keys=True,
    ): "llama-bpe",
}


def export_gguf(
    source: str | Path, out_path: str | Path | None = None, *, quantization: GgufType = "f16"
) -> Path:
    """Write a run's merged model (or a saved model folder) as one GGUF file plus a Modelfile.

    `source` is a run directory (its adapter is merged first) or a folder written by
    `save_pretrained`. `out_path` is a `.gguf` file or a folder (default `<source>/gguf/`).
    `quantization`: 'f16' (half precision) or 'q8_0' (8-bit blocks, about half the size).
    Returns the path of the .gguf file; the Modelfile is beside it.
    """
    if quantization not in GGUF_TYPES:
        raise ValueError(f"`quantization`={quantization!r}: use one of {', '.join(GGUF_TYPES)}.")
    source = Path(source)
    if (source / "config.json").is_file():
        return _export_folder(source, _out_file(source, out_path, quantization), quantization)
    if not RunDirectory(source).is_run:
        raise FileNotFoundError(
            f"{source} is neither a run directory (no config.yaml) nor a model folder (no "
            "config.json): pass runs/<id> or a folder written by save_pretrained."
        )
    out = _out_file(source, out_path, quantization)
    with tempfile.TemporaryDirectory(prefix=".gguf-merge-", dir=out.parent) as tmp:
        merged = merge_adapter(source, Path(tmp) / "merged")
        return _export_folder(merged, out, quantization, name=source.name)


def _out_file(source: Path, out_path, quantization: str) -> Path:
    # its own folder: beside a model's tokenizer files, transformers would read those instead
    out = Path(out_path) if out_path is not None else source / "gguf"
    if out.suffix != ".gguf":
        out = out / f"{source.name}.{quantization}.gguf"
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def _read_config(folder: Path):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(str(folder))


def _check_architecture(config, where: Path) -> None:
    """Refuse, naming the reason, what this exporter cannot write faithfully."""
    model_type = getattr(config, "model_type", None)
    if model_type != "llama":
        raise WorkbenchError(
            f"{where}: GGUF export supports the Llama architecture only (SmolLM2, Llama and "
            f"the tiny test models), and this model is `{model_type}`: only Llama-family tensor "
            "names and layouts are mapped here. Use llama.cpp's convert_hf_to_gguf.py on the "
            "merged folder (python -m workbench export RUN --merged) for other architectures."
        )
    rope = getattr(config, "rope_parameters", None) or {}
    problems = []
    if rope.get("rope_type", "default") != "default":
        problems.append(f"rope_type={rope['rope_type']!r} (only plain RoPE is written)")
    for flag in ("attention_bias", "mlp_bias"):
        if getattr(config, flag, False):
            problems.append(f"{flag}=True (llama.cpp's Llama has no such biases)")
    if getattr(config, "hidden_act", "silu") != "silu":
        problems.append(f"hidden_act={config.hidden_act!r} (llama.cpp's Llama uses silu)")
    if problems:
        raise WorkbenchError(
            f"{where}: this Llama model cannot be written as GGUF here: "
            + "; ".join(problems)
            + ". Use llama.cpp's convert_hf_to_gguf.py on the merged folder instead."
        )


def _export_folder(folder: Path, out: Path, quantization: str, name: str | None = None) -> Path:
    """Load a saved model folder, write it as GGUF (atomically) and the Modelfile beside it."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = _read_config(folder)
    _check_architecture(config, folder)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    state = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    del model
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        _write_gguf(tmp, config, tokenizer, state, quantization, name or folder.name)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)  # never leave a partial file behind
        raise
    write_atomic(out.parent / "Modelfile", modelfile_text(out.name, tokenizer))
    return out


def _write_gguf(path: Path, config, tokenizer, state: dict, quantization: str, name: str) -> None:
    import gguf

    writer = gguf.GGUFWriter(path, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    try:
        _add_hyperparameters(writer, config, quantization, name)
        _add_tokenizer(writer, tokenizer, config.vocab_size)
        _add_tensors(writer, state, config, quantization)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()


def _add_hyperparameters(writer, config, quantization: str, name: str) -> None:
    """The `llama.*` keys llama.cpp (and transformers' GGUF loader) read the shape from."""
    import gguf

    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    writer.add_name(name)
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads or config.num_attention_heads)
    writer.add_rope_freq_base(float(config.rope_parameters["rope_theta"]))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_vocab_size(config.vocab_size)
    writer.add_rope_dimension_count(head_dim)
    if head_dim != config.hidden_size // config.num_attention_heads:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    file_type = {"f16": gguf.LlamaFileType.MOSTLY_F16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}
    writer.add_file_type(file_type[quantization])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _tokenizer_json(tokenizer) -> dict:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise WorkbenchError(
            f"{type(tokenizer).__name__} has no fast (tokenizers) backend: GGUF export needs "
            "one to read the vocabulary and merges. Save the model with a fast tokenizer."
        )
    spec = json.loads(backend.to_str())
    model, pre = spec["model"], spec.get("pre_tokenizer")
    pre_name = PRE_TOKENIZERS.get(json.dumps(pre, sort_keys=True))
    if model.get("type") != "BPE" or spec.get("normalizer") or pre_name is None:
        raise WorkbenchError(
            "GGUF export writes byte-level BPE tokenizers only (GPT-2 style, as SmolLM2 and "
            f"Llama 3 use); this one is {model.get('type')} with pre-tokenizer "
            f"{json.dumps(pre)[:120]} and normalizer {spec.get('normalizer')}. Use llama.cpp's "
            "convert_hf_to_gguf.py on the merged folder for other tokenizers."
        )
    return {"merges": model.get("merges") or [], "pre": pre_name}


def _add_tokenizer(writer, tokenizer, vocab_size: int) -> None:
    """Tokens, their types, merges, special ids and the chat template, as llama.cpp names them."""
    import gguf

    spec = _tokenizer_json(tokenizer)
    by_id = {i: token for token, i in tokenizer.get_vocab().items()}
    if len(by_id) > vocab_size or max(by_id) >= vocab_size:
        raise WorkbenchError(
            f"The tokenizer has {len(by_id)} tokens but the model's embedding only "
            f"{vocab_size} rows: resize the embeddings (model.resize_token_embeddings) first."
        )
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for i in range(vocab_size):  # ids the tokenizer never produces pad the table, as llama.cpp does
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
            continue
        tokens.append(by_id[i])
        if i not in added:
            types.append(gguf.TokenType.NORMAL)
        else:
            special = added[i].special
            types.append(gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(spec["pre"])
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(_merge_strings(spec["merges"]))
    _add_special_tokens(writer, tokenizer)
    template = tokenizer.chat_template
    if isinstance(template, dict):
        template = [{"name": k, "template": v} for k, v in template.items()]
    if template:
        writer.add_chat_template(template)


def _merge_strings(merges: list) -> list[str]:
    """`"a b"` per merge (GGUF's format); a real space inside a part becomes chr(288) ('Ġ', the
    byte-level spelling of a space), as gguf's own SpecialVocab does."""
    if merges and isinstance(merges[0], str):
        return list(merges)
    escape = lambda part: part.replace(" ", chr(ord(" ") + 256))  # noqa: E731
    return [f"{escape(a)} {escape(b)}" for a, b in merges]


def _add_special_tokens(writer, tokenizer) -> None:
    for kind in ("bos", "eos", "unk", "pad"):
        token_id = getattr(tokenizer, f"{kind}_token_id", None)
        if token_id is not None:
            getattr(writer, f"add_{kind}_token_id")(token_id)
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    writer.add_add_bos_token(bos is not None and len(full) > len(plain) and full[0] == bos)
    writer.add_add_eos_token(eos is not None and len(full) > len(plain) and full[-1] == eos)
    writer.add_add_space_prefix(False)


def llama_cpp_permute(weights: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's q/k row order (`LlamaModel.permute` in convert_hf_to_gguf.py): within each
    head, the two rotary halves interleaved instead of stacked."""
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def _add_tensors(writer, state: dict, config, quantization: str) -> None:
    """Every weight under its GGUF name: 1-D norms in f32, matrices in f16 or Q8_0."""
    import gguf

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    heads = config.num_attention_heads
    kv_heads = config.num_key_value_heads or heads
    tied = getattr(config, "tie_word_embeddings", False)
    for hf_name, data in state.items():
        if tied and hf_name == "lm_head.weight":
            continue  # llama.cpp reuses token_embd when output.weight is absent
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise WorkbenchError(
                f"Weight `{hf_name}` has no GGUF name in the Llama layout, so the file would be "
                "incomplete; nothing was written. Is this a modified Llama?"
            )
        if name.endswith("attn_q.weight"):
            data = llama_cpp_permute(data, heads)
        elif name.endswith("attn_k.weight"):
            data = llama_cpp_permute(data, kv_heads)
        _add_tensor(writer, name, data, quantization)


def _add_tensor(writer, name: str, data: np.ndarray, quantization: str) -> None:
    import gguf

    if data.ndim == 1:
        writer.add_tensor(name, data.astype(np.float32))
    elif quantization == "q8_0" and data.shape[-1] % Q8_BLOCK == 0:
        q8 = gguf.GGMLQuantizationType.Q8_0
        writer.add_tensor(name, gguf.quants.quantize(data.astype(np.float32), q8), raw_dtype=q8)
    else:
        writer.add_tensor(name, data.astype(np.float16))


# -- the Ollama Modelfile ------------------------------------------------------------------
CHATML_TEMPLATE = """{{- if .System }}<|im_start|>system
{{ .System }}<|im_end|>
{{ end }}{{- range .Messages }}{{- if ne .Role "system" }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}{{- end }}<|im_start|>assistant
"""
# A default system message written into a ChatML template as a literal ('\n' or a real newline).
DEFAULT_SYSTEM = re.compile(r"<\|im_start\|>system(?:\\n|\n)([^'\"{}+]+?)<\|im_end\|>")


def is_chatml(chat_template) -> bool:
    return isinstance(chat_template, str) and all(
        marker in chat_template for marker in ("<|im_start|>", "<|im_end|>")
    )


def modelfile_text(gguf_name: str, tokenizer) -> str:
    """An Ollama Modelfile: FROM the file, a TEMPLATE when the chat template is ChatML-like,
    its default system message, and the end-of-turn token as a stop word."""
    template = tokenizer.chat_template
    lines = [
        "# Ollama: ollama create NAME -f Modelfile && ollama run NAME",
        f"FROM ./{gguf_name}",
    ]
    stops = [tokenizer.eos_token] if tokenizer.eos_token else []
    if is_chatml(template):
        lines.append(f'TEMPLATE """{CHATML_TEMPLATE}"""')
        default_system = DEFAULT_SYSTEM.search(template)
        if default_system:
            lines.append(f'SYSTEM """{default_system.group(1)}"""')
        stops = ["<|im_end|>"] + [s for s in stops if s != "<|im_end|>"]
    else:
        lines.append(
            "# No TEMPLATE: the chat template is not ChatML-like. Write one for Ollama "
            "(https://github.com/ollama/ollama/blob/main/docs/template.md)."
        )
    lines += [f'PARAMETER stop "{stop}"' for stop in stops]
    return "\n".join(lines) + "\n"
