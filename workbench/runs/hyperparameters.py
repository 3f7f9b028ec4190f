"""Training hyperparameters, with defaults sized for the embedded 135M model on a laptop CPU.

`Hyperparameters.to_training_args()` is the one place they become transformers' TrainingArguments.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from workbench.errors import WorkbenchError
from workbench.settings import Settings

# A plan that `epochs` makes shorter than this many optimizer steps gets a warning before it
# starts: each step moves the weights by about one learning rate, so a handful of steps leaves
# the loss where it was (32 short documents at batch_size 8 made one step, and the held-out
# perplexity did not move). An explicit `max_steps` is the user's own number (a smoke test of
# 1-2 steps is a choice), so it is not warned about.
MIN_LEARNING_STEPS = 10


@dataclass
class Hyperparameters(Settings):
    """How training runs.

    Optimisation: `learning_rate`, `lr_scheduler`, `warmup`, `weight_decay`, `max_grad_norm`.
    Length of training: `epochs`, or `max_steps` when set (> 0; -1 trains `epochs`). Warmup
    never takes more than half of the optimizer steps (`warmup_steps`).
    Batches: `batch_size` x `gradient_accumulation` rows per optimizer step; `max_length`.
    Batches are packed without padding (`packing`) unless it is turned off.
    Speed: `compile` compiles the decoder layers (torch.compile) while training.
    Evaluation: every `eval_every` steps on the validation set (loss + sample answers, and exact
    match over the first `eval_metric_rows` validation rows); `early_stopping_patience`
    evaluations without a lower validation loss stop the run.
    Tracking: `report_to` also sends the Trainer's logs to TensorBoard (event files in the run
    directory's `tensorboard/` folder, offline), Weights & Biases or MLflow; off by default.
    """

    learning_rate: float = field(
        default=2e-4,
        metadata={"help": "LoRA tolerates 1e-4..5e-4; full fine-tuning wants ~1e-5..5e-5"},
    )
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = field(
        default="cosine",
        metadata={
            "label": "Learning-rate schedule",
            "help": "how the learning rate decays after warmup",
        },
    )
    warmup: float = field(
        default=0.05,
        metadata={
            "label": "Warmup",
            "help": "warmup as a fraction of the steps (<1) or a step count (>=1)",
        },
    )
    epochs: float = field(default=1.0, metadata={"help": "passes over the training data"})
    max_steps: int = field(
        default=-1,
        metadata={
            "label": "Steps (-1: by epochs)",
            "help": "optimizer steps to train; -1 trains `epochs` passes over the rows instead",
        },
    )
    batch_size: int = field(default=8, metadata={"help": "rows per forward pass"})
    gradient_accumulation: int = field(
        default=1,
        metadata={
            "label": "Batches per step",
            "help": "forward passes per optimizer step (effective batch = batch_size x this)",
        },
    )
    weight_decay: float = field(
        default=0.0,
        metadata={"help": "pulls weights towards zero; 0.01-0.1 regularises full fine-tuning"},
    )
    max_grad_norm: float = field(
        default=1.0, metadata={"label": "Gradient clipping", "help": "gradient clipping"}
    )
    max_length: int = field(
        default=256,
        metadata={"label": "Longest row (tokens)", "help": "longest row in tokens; cut beyond"},
    )
    truncation_side: Literal["right", "left"] = field(
        default="right",
        metadata={"help": "right cuts the end of the response; left cuts the start of the prompt"},
    )
    completion_only: bool = field(
        default=True,
        metadata={
            "label": "Learn the response only",
            "help": "learn only the response tokens (prompt labels are -100)",
        },
    )
    eval_every: int = field(
        default=20,
        metadata={"label": "Evaluate every (steps)", "help": "evaluate every N optimizer steps"},
    )
    early_stopping_patience: int = field(
        default=0,
        metadata={
            "label": "Patience (evaluations)",
            "help": "stop after N evaluations without improvement (0: off)",
        },
    )
    sample_max_new_tokens: int = field(
        default=24,
        metadata={
            "label": "Sample answer length",
            "help": "length of the sample answers generated at each evaluation",
        },
    )
    eval_metric_rows: int = field(
        default=16,
        metadata={
            "label": "Exact-match rows",
            "help": "validation rows answered for exact match at each evaluation (0: off)",
        },
    )
    seed: int = field(default=0, metadata={"help": "same seed, same data order and init"})
    gradient_checkpointing: bool = field(
        default=False,
        metadata={
            "label": "Recompute activations",
            "help": "recompute activations: less memory, ~30% slower; only when memory is short",
        },
    )
    keep_checkpoints: int = field(
        default=2, metadata={"label": "Checkpoints kept", "help": "newest checkpoints kept"}
    )
    auto_batch: bool = field(
        default=False,
        metadata={
            "label": "Largest batch that fits",
            "help": "on a GPU, raise batch_size to the largest whose predicted peak fits in free "
            "memory (fewer, larger steps: faster, but retune the learning rate)",
        },
    )
    packing: bool = field(
        default=True,
        metadata={
            "label": "Pack rows (no padding)",
            "help": "lay each batch's rows end to end without padding (attention stays inside "
            "each row): the same loss, no compute spent on padding",
        },
    )
    compile: bool = field(
        default=False,
        metadata={
            "label": "Compile layers",
            "help": "torch.compile each decoder layer while training: on a 2-core CPU the same "
            "tokens/s and ~30% less peak memory, after ~40 s of compiling the first time "
            "(cached after); on a GPU not measured yet",
        },
    )
    report_to: Literal["none", "tensorboard", "wandb", "mlflow"] = field(
        default="none",
        metadata={
            "label": "Also log to",
            "help": "experiment tracker for the Trainer's logs: tensorboard writes to "
            "<run_dir>/tensorboard (offline); wandb and mlflow need their package and, "
            "usually, an account or server; none: only the run directory's own files",
        },
    )

    def __post_init__(self) -> None:
        self.check_values()
        problems = []
        if self.max_grad_norm < 0:
            problems.append(
                f"`max_grad_norm`={self.max_grad_norm} must be 0 (no clipping) or more (1.0 is "
                "usual)."
            )
        positive = (
            "learning_rate",
            "batch_size",
            "gradient_accumulation",
            "max_length",
            "eval_every",
            "sample_max_new_tokens",
            "keep_checkpoints",
        )
        problems += [
            f"`{name}`={getattr(self, name)} must be positive."
            for name in positive
            if getattr(self, name) <= 0
        ]
        if self.epochs <= 0 and self.max_steps <= 0:
            problems.append("Set `epochs` > 0 or `max_steps` > 0: nothing would train.")
        if self.max_steps == 0:
            problems.append(
                f"`max_steps`={self.max_steps} would train nothing: set -1 to train `epochs` "
                "passes over the data, or a positive number of optimizer steps."
            )
        if self.warmup < 0:
            problems.append(f"`warmup`={self.warmup} must be 0 or more.")
        if self.weight_decay < 0:
            problems.append(f"`weight_decay`={self.weight_decay} must be 0 or more.")
        if self.eval_metric_rows < 0:
            problems.append(f"`eval_metric_rows`={self.eval_metric_rows} must be 0 (off) or more.")
        if self.early_stopping_patience < 0:
            problems.append("`early_stopping_patience` must be 0 (off) or more.")
        if self.lr_scheduler not in ("cosine", "linear", "constant", "constant_with_warmup"):
            problems.append(
                f"`lr_scheduler`={self.lr_scheduler!r}: use cosine, linear, "
                "constant or constant_with_warmup."
            )
        if self.truncation_side not in ("right", "left"):
            problems.append(f"`truncation_side`={self.truncation_side!r}: use 'right' or 'left'.")
        if self.learning_rate > 1e-2:
            problems.append(
                f"`learning_rate`={self.learning_rate} is far too high for "
                "fine-tuning (typical: 2e-4 for LoRA, 2e-5 for full)."
            )
        if problems:
            raise WorkbenchError("Invalid hyperparameters:\n  - " + "\n  - ".join(problems))

    def run_arguments(
        self,
        output_dir,
        model,
        *,
        has_validation: bool,
        rows: int | None = None,
        args_class=None,
        **extra,
    ):
        """`to_training_args` for `model`: the device and dtype read from its weights. Every
        kind of run (instruction tuning, DPO, reward model, GRPO, classifier, pre-training)
        builds its Trainer's arguments here. With `rows` (the training rows, blocks or pairs
        of an epoch), or a positive `max_steps`, the plan's optimizer steps are known: warmup
        is capped at half of them, and a plan too short to learn is warned about."""
        parameter = next(model.parameters())
        args = self.to_training_args(
            str(output_dir),
            device=str(parameter.device).split(":")[0],
            dtype=parameter.dtype,
            has_validation=has_validation,
            args_class=args_class,
            **extra,
        )
        if rows is None and self.max_steps <= 0:
            return args  # the plan's length is only known to the Trainer
        total = self.optimizer_steps(rows or 0, args.train_batch_size * args.world_size)
        self.check_plan(total, rows)
        warmup = self.warmup_steps(total)
        if warmup != args.get_warmup_steps(total):  # only a capped warmup changes the args
            args.warmup_steps = warmup
        return args

    def optimizer_steps(self, rows: int, batch_size: int | None = None) -> int:
        """The optimizer steps of the plan for `rows` training rows: `max_steps` when set, else
        `epochs` passes of batches of `batch_size` rows (default `batch_size`), as the Trainer
        counts them (a last, smaller batch and a last, partial accumulation each count)."""
        if self.max_steps > 0:
            return self.max_steps
        batches = math.ceil(rows / (batch_size or self.batch_size))
        per_epoch = max(math.ceil(batches / self.gradient_accumulation), 1)
        return math.ceil(self.epochs * per_epoch)

    def warmup_steps(self, total: int) -> int:
        """The warmup steps of a run of `total` optimizer steps: `warmup` (a share, or a step
        count), capped at half of the steps, rounding down. Warmup starts the learning rate at
        0, so a warmup as long as the run would train at a rate of 0 (a 1-step run: no step
        learned anything); with the cap a 1-step run has no warmup, a 2-step run one step."""
        wanted = int(self.warmup) if self.warmup >= 1 else math.ceil(total * self.warmup)
        return min(wanted, total // 2)

    def check_plan(self, total: int, rows: int | None = None) -> None:
        """Warn, before training starts, when `epochs` makes fewer than MIN_LEARNING_STEPS
        optimizer steps: how many, from what, and what to change."""
        if self.max_steps > 0 or total >= MIN_LEARNING_STEPS:
            return
        batches = f"batches of {self.batch_size}"
        if self.gradient_accumulation > 1:
            batches += f" x {self.gradient_accumulation} accumulated"
        warnings.warn(
            f"`epochs`={self.epochs:g} over {rows} training rows in {batches} makes only "
            f"{total} optimizer step(s): too few to learn much (each step moves the weights by "
            "about one learning rate). Raise `epochs`, lower `batch_size`, or set `max_steps` "
            f"(at least {MIN_LEARNING_STEPS}); or train on more rows.",
            stacklevel=4,
        )

    def not_applicable(self, defaults: dict[str, Any], what: str) -> list[str]:
        """A problem for each setting of `defaults` (name: the only value it may have) that
        `what` (e.g. "DPO") does not use but was changed."""
        return [
            f"`{name}`={getattr(self, name)!r} does not apply to {what}: leave it at {value!r}."
            for name, value in defaults.items()
            if getattr(self, name) != value
        ]

    def to_training_args(
        self,
        output_dir: str,
        *,
        device: str = "cpu",
        dtype=None,
        has_validation: bool = True,
        args_class=None,
        **extra,
    ):
        """The equivalent transformers.TrainingArguments (or `args_class`, a subclass such as
        TRL's DPOConfig, with its own settings in `extra`)."""
        import torch
        from transformers import TrainingArguments

        require_tracker(self.report_to)
        evaluating = "steps" if has_validation else "no"
        early = bool(self.early_stopping_patience) and has_validation
        arguments = dict(
            output_dir=output_dir,
            learning_rate=self.learning_rate,
            lr_scheduler_type=self.lr_scheduler,
            warmup_steps=self.warmup,
            num_train_epochs=self.epochs,
            max_steps=self.max_steps,
            per_device_train_batch_size=self.batch_size,
            per_device_eval_batch_size=self.batch_size,
            gradient_accumulation_steps=self.gradient_accumulation,
            weight_decay=self.weight_decay,
            max_grad_norm=self.max_grad_norm,
            eval_strategy=evaluating,
            eval_steps=self.eval_every,
            eval_on_start=has_validation,  # the base model's validation loss: the curve's start
            save_strategy="steps",
            save_steps=self.eval_every,
            # the Run's event bridge keeps `keep_checkpoints`, deleting old ones only after the
            # new one is marked complete (the Trainer's own rotation deletes them before)
            save_total_limit=None,
            load_best_model_at_end=early,
            metric_for_best_model="eval_loss" if early else None,
            greater_is_better=False if early else None,
            logging_steps=1,
            logging_nan_inf_filter=False,  # a NaN must reach us, not be averaged away
            include_num_input_tokens_seen="no",  # the collator counts them, without a sync
            seed=self.seed,
            data_seed=self.seed,
            **_checkpointing_argument(self.gradient_checkpointing),
            bf16=device.startswith("cuda") and dtype == torch.bfloat16,
            # GPUs without bfloat16 (Colab's T4) load the base in float16: mixed precision with
            # a loss scaler, the trainable (LoRA) weights kept in float32 by peft
            fp16=device.startswith("cuda") and dtype == torch.float16,
            use_cpu=device == "cpu",
            report_to=self.report_to,  # TensorBoard's folder: see `direct_trackers`
            disable_tqdm=True,  # the Run's events drive progress bars instead
            remove_unused_columns=False,
            dataloader_num_workers=0,
        )
        return (args_class or TrainingArguments)(**{**arguments, **extra})


# Settings that only instruction tuning uses: a run of another objective keeps their values.
SFT_ONLY = {
    "packing": False,
    "completion_only": True,
    "eval_metric_rows": 0,
    "auto_batch": False,
    "compile": False,
    "early_stopping_patience": 0,
}


@dataclass
class ObjectiveSettings(Hyperparameters):
    """The settings of a run on TRL's trainers or the project's PPO (DPO, a reward model, RL):
    instruction tuning's `Hyperparameters` (same fields, meanings and checks) with the defaults
    those runs share. The settings in `SFT_ONLY` do not apply to them and must keep their
    values. A subclass names its run (`what`, `title`) and adds its own problems in
    `own_problems()`."""

    what = "this run"  # e.g. "DPO": "`packing`=True does not apply to DPO"
    title = "settings"  # e.g. "preference settings": "Invalid preference settings: ..."

    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = field(
        default="linear", metadata={"help": "how the rate decays"}
    )
    warmup: float = field(default=0.0, metadata={"help": "fraction (<1) or steps (>=1)"})
    keep_checkpoints: int = field(default=1, metadata={"help": "newest checkpoints kept"})
    packing: bool = field(default=False, metadata={"help": "not used by this kind of run"})
    eval_metric_rows: int = field(default=0, metadata={"help": "not used by this kind of run"})

    def own_problems(self) -> list[str]:
        return []

    def __post_init__(self) -> None:
        self.check_values()
        problems = self.not_applicable(SFT_ONLY, self.what) + self.own_problems()
        if problems:
            raise WorkbenchError(f"Invalid {self.title}:\n  - " + "\n  - ".join(problems))
        super().__post_init__()


# The package each tracker needs (transformers only reports to those installed).
TRACKER_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}


def require_tracker(report_to: str) -> None:
    """Raise when the package that `report_to` names is not installed, saying how to get it."""
    package = TRACKER_PACKAGES.get(report_to)
    if package is not None and importlib.util.find_spec(package) is None:
        raise WorkbenchError(
            f"`report_to`={report_to!r} needs the {package} package, which is not installed: "
            f"pip install {package} (or set report_to='none')."
        )


def direct_trackers(trainer, folder: str | Path) -> None:
    """Make the Trainer's TensorBoard callback write its event files in `folder` (the run
    directory's `tensorboard/`): transformers 5 has no `logging_dir` argument any more, and its
    default, `<output_dir>/runs/<time>_<host>`, would mix them into the checkpoints folder."""
    from transformers.integrations import TensorBoardCallback

    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, TensorBoardCallback):
            callback.logging_dir = str(folder)


def _checkpointing_argument(enabled: bool) -> dict:
    """transformers 5 renamed gradient_checkpointing to activation_checkpointing."""
    import inspect

    from transformers import TrainingArguments

    names = inspect.signature(TrainingArguments.__init__).parameters
    key = (
        "activation_checkpointing"
        if "activation_checkpointing" in names
        else ("gradient_checkpointing")
    )
    return {key: enabled}


def as_hyperparameters(settings: Hyperparameters) -> Hyperparameters:
    """Instruction tuning's `Hyperparameters` out of a kind's settings class (its own knobs,
    such as `block_size`, left out): what the run engine and config.yaml's `hyperparameters`
    section take."""
    if type(settings) is Hyperparameters:
        return settings
    names = {f.name for f in dataclasses.fields(Hyperparameters) if f.init}
    return Hyperparameters(**{name: getattr(settings, name) for name in names})
