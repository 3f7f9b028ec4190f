"""Take a run out of the notebook: the adapter, a merged standalone model, a training script.

- the LoRA adapter alone (a few MB) is saved and loaded by `workbench.runs.saved`.
- `merge_adapter`: base + adapter folded into one safetensors model that plain transformers
  loads (`AutoModelForCausalLM.from_pretrained`), without peft or this project.
- `export_script`: a standalone `train.py` + `config.yaml` + rendered data that reproduce the
  run with transformers' Trainer, in one process or under `accelerate launch` on many.
- `push_to_hub`: upload any of these folders when the user is online and asks for it.
- `export_gguf` (in `gguf_export.py`): the merged model as one GGUF file for llama.cpp and Ollama.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError
from workbench.model.loading import hub_unreachable, load_model, resolve_source
from workbench.model.methods import Method
from workbench.runs.directory import (
    CONFIG,
    RunDirectory,
    load_run_config,
    save_atomic_dir,
    write_atomic,
)
from workbench.runs.saved import load_adapter
from workbench.tokens.templates import Template

SCRIPT = Path(__file__).parent / "export_files" / "train.py"
ACCELERATE_CONFIGS = Path(__file__).parent / "export_files" / "accelerate"
# Where an embedded model came from, for scripts that run on machines without the workbench.
HUB_IDS = {"smollm2-135m-instruct": "HuggingFaceTB/SmolLM2-135M-Instruct"}


def _base_model(run_dir: Path, model, tokenizer):
    if model is not None:
        if tokenizer is None:
            raise WorkbenchError("Pass `tokenizer` together with `model`.")
        if hasattr(model, "peft_config"):
            raise WorkbenchError(
                "`model` already carries an adapter: pass a freshly loaded base model "
                "(load_model(...)), or leave it out to load the one named in config.yaml."
            )
        return model, tokenizer
    config = load_run_config(run_dir)
    if config.get("quantization"):
        warnings.warn(
            f"{run_dir}: the adapter was trained on a {config['quantization']} base; merging "
            "into quantised weights would lose precision, so the base is loaded in full "
            "precision and the adapter folded into it (the usual way to merge QLoRA). Its "
            "answers can differ slightly from the quantised run's. Pass `model=` to merge into "
            "a base of your choice.",
            stacklevel=3,
        )
    return load_model(config["model"], device="cpu")


def merge_adapter(
    run_dir: str | Path, out_dir: str | Path | None = None, *, model=None, tokenizer=None
) -> Path:
    """Fold a run's adapter into its base model; save a standalone safetensors model.

    The folder (default `<run_dir>/merged/`) loads with plain transformers; it also holds the
    run's config.yaml. `model`/`tokenizer`: the un-adapted base, if already loaded; otherwise
    the base named in config.yaml is loaded in full precision (also for a 4- or 8-bit run).
    """
    run_dir = Path(run_dir)
    directory = RunDirectory(run_dir)
    out = Path(out_dir) if out_dir is not None else run_dir / "merged"
    final = directory.final_artefact()
    if final is not None and final.name == "model":  # full fine-tuning: already standalone
        save_atomic_dir(lambda t: shutil.copytree(final, t), out)
        return out
    base, tokenizer = _base_model(run_dir, model, tokenizer)
    merged = load_adapter(base, directory.file("adapter")).merge_and_unload()
    for attribute in ("workbench_source",):  # ours, not a transformers attribute
        merged.__dict__.pop(attribute, None)

    def save(target: Path) -> None:
        merged.save_pretrained(target, safe_serialization=True)
        tokenizer.save_pretrained(target)
        if directory.file(CONFIG).is_file():
            shutil.copy2(directory.file(CONFIG), target / "workbench_config.yaml")

    save_atomic_dir(save, out)
    return out


def _rendered_rows(run_dir: Path, config: dict, split: str, tokenizer) -> str:
    """The rows of one split as JSONL of {"segments": [{"text", "learned", "eos"}, ...]},
    rendered with the run's template as training rendered them (every assistant turn of a
    conversation learned), so the script needs no template code."""
    examples = RunDirectory(run_dir).load_rows(split)
    template = Template(**config["template"])
    lines = []
    for i, row in enumerate(examples.rows):
        segments = template.segments(row, tokenizer, examples.where(i))
        pieces = [{"text": s.text, "learned": s.learned, "eos": s.eos} for s in segments]
        lines.append(json.dumps({"segments": pieces}, ensure_ascii=False))
    return "\n".join(lines) + "\n"


# The run settings train.py reads from config.yaml's `training:` (besides report_to).
TRAINING_KEYS = (
    "learning_rate",
    "lr_scheduler",
    "warmup",
    "epochs",
    "max_steps",
    "batch_size",
    "gradient_accumulation",
    "weight_decay",
    "max_grad_norm",
    "eval_every",
    "keep_checkpoints",
    "seed",
    "gradient_checkpointing",
)


def script_config(config: dict, model_path: str) -> dict[str, Any]:
    """The exported script's config.yaml, from a run's config.yaml."""
    method = Method.from_dict(config["method"])
    hp = dict(config["hyperparameters"])
    lora = None
    if method.uses_lora:
        if method.freeze_layers:
            raise WorkbenchError(
                f"`freeze_layers`={method.freeze_layers} with LoRA is not exported yet: the "
                "script would adapt every layer. Export a run without freeze_layers."
            )
        lora = dict(
            r=method.r,
            lora_alpha=method.alpha,
            lora_dropout=method.dropout,
            target_modules=method.target_modules,
            bias=method.bias,
            use_rslora=method.use_rslora,
            use_dora=method.use_dora,
        )
    ignored = _ignored_settings(config, hp, set(TRAINING_KEYS))
    if ignored:
        warnings.warn(
            "The exported script ignores these run settings, so it may train differently: "
            + "; ".join(ignored)
            + ". Edit train.py to add them if they matter.",
            stacklevel=2,
        )
    training = {k: hp[k] for k in TRAINING_KEYS}
    training["report_to"] = hp.get("report_to", "none")  # runs before the setting: none
    return {
        "model": model_path,
        "quantization": config.get("quantization"),
        "method": {"kind": method.kind, "freeze_layers": method.freeze_layers, "lora": lora},
        "training": training,
        "data": {
            "train": "data/train.jsonl",
            "validation": "data/validation.jsonl" if config["data"].get("validation") else None,
            "max_length": hp["max_length"],
            "truncation_side": hp["truncation_side"],
            "completion_only": hp["completion_only"],
        },
    }


# Run settings the script needs no code for: exported under `data:` or `training:` by name
# (max_length, truncation_side, completion_only, report_to); used only to evaluate
# (sample_max_new_tokens, eval_metric_rows); or changing how fast, not what, the run trains:
# `packing` lays the same rows end to end where the script pads them (the same losses, to
# 1e-4: tests/test_export.py), `compile` compiles the same computation, and `auto_batch` was
# resolved before config.yaml was written (its batch_size is the one trained).
NOT_EXPORTED = {
    "max_length",
    "truncation_side",
    "completion_only",
    "report_to",
    "sample_max_new_tokens",
    "eval_metric_rows",
    "packing",
    "compile",
    "auto_batch",
}


def _ignored_settings(config: dict, hp: dict, exported: set[str]) -> list[str]:
    """Each run setting the script leaves out, as `name=value` (never silently)."""
    ignored = {k: v for k, v in hp.items() if k not in exported | NOT_EXPORTED}
    found = [f"{k}={v!r}" for k, v in sorted(ignored.items()) if v not in (0, False, None)]
    regularizer = config.get("regularizer")
    if regularizer:  # EWC's penalty needs the Fisher diagonal: only the workbench computes it
        found.append(
            f"regularizer={regularizer.get('kind')!r} (strength={regularizer.get('strength')}): "
            "train.py trains without its penalty; retrain with the workbench "
            "(python -m workbench train <run>/config.yaml) to keep it"
        )
    if config.get("quantization") not in (None, "4bit", "8bit"):
        found.append(f"quantization={config['quantization']!r}: train.py loads 4bit or 8bit")
    return found


def export_script(run_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """Write `train.py`, `config.yaml`, `data/` and `accelerate/` configs that retrain the run
    without this project: `python train.py` or `accelerate launch train.py`."""
    import yaml
    from transformers import AutoTokenizer

    run_dir = Path(run_dir)
    config = load_run_config(run_dir)
    out = Path(out_dir) if out_dir is not None else run_dir / "export"
    source, _ = resolve_source(config["model"])
    tokenizer = AutoTokenizer.from_pretrained(source)
    settings = script_config(config, source)
    for split in ("train", "validation"):
        if config["data"].get(split):
            write_atomic(
                out / "data" / f"{split}.jsonl", _rendered_rows(run_dir, config, split, tokenizer)
            )
    hub = HUB_IDS.get(config["model"])
    note = (
        f"# `model` is this machine's copy of the embedded `{config['model']}` (dequantised from a "
        f"4-bit GGUF file).\n# Elsewhere use the hub original: model: {hub}\n"
        if hub
        else ""
    )
    header = f"# Exported from run {run_dir.name}; train with: python train.py\n{note}"
    write_atomic(out / "config.yaml", header + yaml.safe_dump(settings, sort_keys=False))
    write_atomic(out / "train.py", SCRIPT.read_text(encoding="utf-8"))
    for path in ACCELERATE_CONFIGS.glob("*.yaml"):
        write_atomic(out / "accelerate" / path.name, path.read_text(encoding="utf-8"))
    return out


def push_to_hub(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool = True,
    token: str | None = None,
    commit_message: str = "Upload from the fine-tuning workbench",
) -> str:
    """Upload a folder (adapter, merged model or exported script) to a hub model repository,
    creating it (private by default). Needs the network and a token (`huggingface-cli login`
    or `token=`). Returns the repository URL."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{folder} is not a folder: pass an adapter, merged or export folder."
        )
    _check_repo_id(repo_id)
    if os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True"):
        raise WorkbenchError(
            "HF_HUB_OFFLINE is set, so nothing is uploaded: unset it (and log in) to push."
        )
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    api.upload_folder(folder_path=str(folder), repo_id=repo_id, commit_message=commit_message)
    return str(url)


def check_can_push(repo_id: str) -> None:
    """Raise, in one line, when a push to `repo_id` cannot happen: a malformed id, or a hub
    that cannot be reached (HF_HUB_OFFLINE set, no connection). `python -m workbench export
    --push-to-hub` checks this before it writes anything."""
    _check_repo_id(repo_id)
    why = hub_unreachable()
    if why is not None:
        raise WorkbenchError(
            f"--push-to-hub {repo_id}: {why}, so nothing could be pushed and nothing was "
            "written. Connect to the network (unset HF_HUB_OFFLINE, log in with `hf auth "
            "login`), or export without --push-to-hub."
        )


def _check_repo_id(repo_id: str) -> None:
    if "/" not in repo_id:
        raise WorkbenchError(f"`repo_id`={repo_id!r}: use 'user-or-org/name'.")
