"""Preference tuning after instruction tuning: Direct Preference Optimisation with TRL's DPOTrainer.

`train_preferences(model, tokenizer, pairs)` continues the SFT adapter on prompt/chosen/rejected
rows and returns a `Run` with the same events as `train()` (its `step` events also carry
`reward_margin`, `reward_accuracy`, ...), so TrainingMonitor and the run history show it. The
reference model is the SFT adapter itself: TRL keeps a frozen copy of it as a second adapter
(`ref`) on the same model, so no second model is loaded. `preference_margin` measures how
much more likely the model finds the chosen answers than the rejected ones.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.adapters import Method, apply_method, count_parameters
from workbench.config import Settings, write_atomic
from workbench.data import Examples
from workbench.errors import WorkbenchError
from workbench.generation import Decoding
from workbench.run import Run, save_atomic_dir
from workbench.templates import Template, get_template


@dataclass
class PreferenceSettings(Settings):
    """How DPO runs.

    The objective: `beta` (how far the model may move from the SFT reference; lower moves
    further). Optimisation: `learning_rate`, `lr_scheduler`, `warmup`, `max_steps` (or
    `epochs`), `batch_size` pairs x `gradient_accumulation` per step. Data: `max_length`
    tokens of prompt + answer. Evaluation every `eval_every` steps.
    """

    beta: float = field(
        default=0.1, metadata={"help": "KL strength: 0.1 is usual, 0.5 stays close"}
    )
    learning_rate: float = field(
        default=5e-5, metadata={"help": "DPO wants ~10x less than SFT: 5e-6 full, 5e-5 LoRA"}
    )
    lr_scheduler: str = field(default="linear", metadata={"help": "how the rate decays"})
    warmup: float = field(default=0.0, metadata={"help": "fraction (<1) or steps (>=1)"})
    epochs: float = field(default=1.0, metadata={"help": "passes over the pairs"})
    max_steps: int = field(default=-1, metadata={"help": "if > 0, overrides epochs"})
    batch_size: int = field(default=4, metadata={"help": "pairs per forward pass"})
    gradient_accumulation: int = field(default=1, metadata={"help": "passes per step"})
    max_length: int = field(default=256, metadata={"help": "prompt + answer tokens; cut beyond"})
    eval_every: int = field(default=10, metadata={"help": "evaluate every N steps"})
    sample_max_new_tokens: int = field(default=24, metadata={"help": "sample answer length"})
    seed: int = field(default=0, metadata={"help": "same seed, same order"})
    keep_checkpoints: int = field(default=1, metadata={"help": "newest checkpoints kept"})

    def __post_init__(self) -> None:
        problems = [
            f"`{name}`={getattr(self, name)} must be positive."
            for name in ("beta", "learning_rate", "batch_size", "gradient_accumulation")
            + ("max_length", "eval_every", "sample_max_new_tokens", "keep_checkpoints")
            if getattr(self, name) <= 0
        ]
        if self.epochs <= 0 and self.max_steps <= 0:
            problems.append("Set `epochs` > 0 or `max_steps` > 0: nothing would train.")
        if self.learning_rate > 1e-2:
            problems.append(f"`learning_rate`={self.learning_rate} is far too high for DPO.")
        if problems:
            raise WorkbenchError("Invalid preference settings:\n  - " + "\n  - ".join(problems))


def prompt_of(row: dict[str, Any], template: Template, tokenizer=None) -> str:
    """The prompt of a preference row: `instruction`/`input` through the SFT template, or the
    row's `prompt` as it is."""
    if row.get("instruction"):
        return template.render_prompt(row, tokenizer)
    return row["prompt"]


def _check_pairs(pairs: Examples) -> None:
    if pairs.format != "preference":
        raise WorkbenchError(
            f"{pairs.source}: DPO needs preference rows (`chosen`, `rejected` and `prompt` or "
            f"`instruction`), but these are {pairs.format!r} rows. See "
            "sample_data/preferences.jsonl."
        )


def as_answer_rows(pairs: Examples) -> Examples:
    """Preference rows as instruction rows whose reference answer is the chosen one (for
    evaluate_model and CompareView)."""
    _check_pairs(pairs)
    rows = [
        {**{k: v for k, v in r.items() if k not in ("chosen", "rejected")}, "output": r["chosen"]}
        for r in pairs.rows
    ]
    return Examples(rows, "alpaca", pairs.source, list(pairs.locations), sources=pairs.sources)


@dataclass
class Margin:
    """Summed log-probabilities of the chosen minus the rejected answers, averaged; and the
    share of pairs where the chosen answer is the likelier one."""

    mean: float
    accuracy: float
    per_pair: list[float]


def preference_margin(
    model, tokenizer, pairs: Examples, template: Template | str = "alpaca", max_length: int = 256
) -> Margin:
    """log p(chosen | prompt) - log p(rejected | prompt) under `model`, as tokens are trained."""
    import torch

    from workbench.generation import eval_mode
    from workbench.tokenize import IGNORE_INDEX, CompletionCollator, tokenize_pair

    _check_pairs(pairs)
    template = get_template(template)
    collate = CompletionCollator(tokenizer.pad_token_id)
    device = next(model.parameters()).device

    def total_logprob(prompt: str, answer: str) -> float:
        item = tokenize_pair(prompt, answer, tokenizer, max_length=max_length)
        batch = collate([{"input_ids": item.input_ids, "labels": item.labels}])
        batch = {k: v.to(device) for k, v in batch.items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        labels = batch["labels"][:, 1:]
        logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
        mask = labels != IGNORE_INDEX
        picked = logprobs.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        return float((picked * mask).sum())

    margins = []
    with eval_mode(model), torch.no_grad():
        for row in pairs.rows:
            prompt = prompt_of(row, template, tokenizer)
            margins.append(
                total_logprob(prompt, row["chosen"]) - total_logprob(prompt, row["rejected"])
            )
    mean = sum(margins) / len(margins) if margins else math.nan
    accuracy = sum(m > 0 for m in margins) / len(margins) if margins else math.nan
    return Margin(mean, accuracy, margins)


def _trl_rows(pairs: Examples, template: Template, tokenizer) -> list[dict[str, str]]:
    return [
        {
            "prompt": prompt_of(r, template, tokenizer),
            "chosen": r["chosen"],
            "rejected": r["rejected"],
        }
        for r in pairs.rows
    ]


def _write_config(run_dir, model, template, method, settings, pairs, validation, parent) -> None:
    from dataclasses import asdict

    import yaml

    for name, rows in (("train", pairs), ("validation", validation)):
        if rows is not None:
            text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows.rows)
            write_atomic(run_dir / "data" / f"{name}.jsonl", text)
    config = {
        "stage": "dpo",
        "parent": str(parent) if parent else None,
        "model": getattr(model, "workbench_source", None) or model.config.name_or_path,
        "template": {k: v for k, v in asdict(template).items() if k != "description"},
        "method": method.to_dict(),
        "hyperparameters": settings.to_dict(),
        "data": {
            "format": "preference",
            "train": "data/train.jsonl",
            "validation": "data/validation.jsonl" if validation is not None else None,
            "rows": {"train": len(pairs), "validation": len(validation or [])},
        },
    }
    write_atomic(
        run_dir / "config.yaml", yaml.safe_dump(config, sort_keys=False, allow_unicode=True)
    )


def _dpo_config(settings: PreferenceSettings, output_dir: Path, model, has_validation: bool):
    import torch
    from trl import DPOConfig

    device = str(next(model.parameters()).device).split(":")[0]
    return DPOConfig(
        output_dir=str(output_dir),
        beta=settings.beta,
        learning_rate=settings.learning_rate,
        lr_scheduler_type=settings.lr_scheduler,
        warmup_steps=settings.warmup,
        num_train_epochs=settings.epochs,
        max_steps=settings.max_steps,
        per_device_train_batch_size=settings.batch_size,
        per_device_eval_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.gradient_accumulation,
        max_length=settings.max_length,
        eval_strategy="steps" if has_validation else "no",
        eval_steps=settings.eval_every,
        eval_on_start=has_validation,
        save_strategy="steps",
        save_steps=settings.eval_every,
        save_total_limit=settings.keep_checkpoints,
        logging_steps=1,
        logging_nan_inf_filter=False,
        seed=settings.seed,
        data_seed=settings.seed,
        bf16=device == "cuda" and next(model.parameters()).dtype == torch.bfloat16,
        use_cpu=device == "cpu",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )


def train_preferences(
    model,
    tokenizer,
    pairs: Examples,
    validation: Examples | None = None,
    *,
    template: Template | str = "alpaca",
    settings: PreferenceSettings | None = None,
    method: Method | None = None,
    parent: str | Path | None = None,
    run_dir: str | Path | None = None,
    samples: int = 2,
    start: bool = True,
) -> Run:
    """Start DPO on `pairs` and return the Run at once (training continues in the background).

    `model` is normally the SFT run's model (`run.model`, a PEFT model): its adapter goes on
    learning and a frozen copy is the reference. A model without an adapter gets a fresh one
    from `method` (default LoRA) and the base is the reference. `parent` names the SFT run
    directory in the DPO run's config.
    """
    from workbench.train import new_run_dir

    _check_pairs(pairs)
    if validation is not None:
        _check_pairs(validation)
    settings = settings or PreferenceSettings()
    template = get_template(template)
    model, method = _with_adapter(model, method, settings.seed)
    task = next(iter(pairs.tasks), "pairs")
    run_dir = Path(run_dir) if run_dir else new_run_dir(f"dpo-{task}")
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_config(run_dir, model, template, method, settings, pairs, validation, parent)
    sample_rows = (validation if validation is not None and len(validation) else pairs).rows[
        :samples
    ]
    prompts = [prompt_of(r, template, tokenizer) for r in sample_rows]
    references = [r["chosen"] for r in sample_rows]
    train_rows = _trl_rows(pairs, template, tokenizer)
    val_rows = _trl_rows(validation, template, tokenizer) if validation is not None else None

    def build_trainer(run: Run, resuming: bool):
        if resuming:
            raise WorkbenchError("DPO runs cannot be resumed yet: start a new one.")
        rows = (train_rows, val_rows, prompts, references)
        return _build_dpo_trainer(run, model, tokenizer, settings, *rows)

    run = Run(run_dir, build_trainer, on_success=lambda r: _save_final(r, model, tokenizer))
    run.model, run.tokenizer, run.template, run.method = model, tokenizer, template, method
    run.hyperparameters = settings
    run.parameters = count_parameters(model)
    return run.start() if start else run


def _build_dpo_trainer(
    run: Run, model, tokenizer, settings, train_rows, val_rows, prompts, references
):
    """TRL's DPOTrainer with the train() event bridge: the same events as an SFT run."""
    import datasets
    from transformers import PrinterCallback
    from trl import DPOTrainer

    from workbench.train import _event_bridge

    decoding = Decoding(max_new_tokens=settings.sample_max_new_tokens)
    args = _dpo_config(settings, run.run_dir / "checkpoints", model, val_rows is not None)
    trainer = DPOTrainer(
        model=model,
        args=args,
        train_dataset=datasets.Dataset.from_list(train_rows),
        eval_dataset=datasets.Dataset.from_list(val_rows) if val_rows else None,
        processing_class=tokenizer,
        callbacks=[_event_bridge(run, tokenizer, prompts, references, decoding)],
    )
    trainer.remove_callback(PrinterCallback)  # it prints raw log dicts; events replace it
    return trainer


def _with_adapter(model, method: Method | None, seed: int):
    """(model, method): the model's own SFT adapter, or a fresh one from `method`."""
    if hasattr(model, "peft_config"):
        if "ref" in model.peft_config:  # left by an earlier DPO run on this model
            model.delete_adapter("ref")
        method = method or _method_of(model)
    else:
        from transformers import set_seed

        method = method or Method()
        set_seed(seed)
        model = apply_method(model, method)
    if not method.uses_lora:
        raise WorkbenchError(
            f"`method.kind`={method.kind!r}: DPO here trains a LoRA adapter (the reference is "
            "the same model with its SFT adapter frozen). Use kind='lora' or 'qlora'."
        )
    return model, method


def _method_of(model) -> Method:
    config = model.peft_config["default"]
    return Method(kind="lora", r=config.r, alpha=config.lora_alpha, dropout=config.lora_dropout)


def _save_final(run: Run, model, tokenizer) -> dict[str, Any]:
    """Save the DPO-tuned adapter (not TRL's frozen `ref` copy) and the report."""

    def save(folder: Path) -> None:
        model.save_pretrained(folder, selected_adapters=["default"])
        tokenizer.save_pretrained(folder)

    save_atomic_dir(save, run.run_dir / "adapter")
    summary: dict[str, Any] = {"adapter": str(run.run_dir / "adapter")}
    steps = [e for e in run.events if e["event"] == "step" and e.get("reward_margin") is not None]
    if steps:
        summary["reward_margin"] = steps[-1]["reward_margin"]
    try:
        from workbench.report import write_report

        summary["report"] = str(write_report(run.run_dir))
    except ImportError as error:
        warnings.warn(f"No report.html: {error}", stacklevel=2)
    return summary


def dpo_from_run(
    sft_run_dir: str | Path,
    pairs: Examples,
    validation: Examples | None = None,
    *,
    settings: PreferenceSettings | None = None,
    start: bool = True,
) -> Run:
    """DPO on top of a finished SFT run directory: loads its base model and adapter."""
    from workbench.export import load_adapter
    from workbench.models import load_model
    from workbench.train import load_run_config

    sft_run_dir = Path(sft_run_dir)
    config = load_run_config(sft_run_dir)
    if not (sft_run_dir / "adapter").is_dir():
        raise FileNotFoundError(
            f"{sft_run_dir / 'adapter'} not found: DPO continues a finished LoRA run's adapter."
        )
    base, tokenizer = load_model(config["model"], quantization=config.get("quantization"))
    model = load_adapter(base, sft_run_dir / "adapter", trainable=True)
    model.workbench_source = config["model"]
    return train_preferences(
        model,
        tokenizer,
        pairs,
        validation,
        template=Template(**config["template"]),
        settings=settings,
        parent=sft_run_dir,
        start=start,
    )
