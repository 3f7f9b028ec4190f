"""Knowledge distillation: train a smaller student to answer like a fine-tuned teacher.

`student_from_teacher(teacher, keep_layers=15)` copies a causal LM with a subset of its decoder
layers, each initialised from the teacher's weights. `distill(teacher, student, tokenizer, rows)`
trains the student on the task with

    loss = (1 - alpha) * CE(labels) + alpha * T^2 * KL(teacher_T || student_T)

over the response tokens only (labels != -100), where `_T` is the softmax at temperature T; the
T^2 keeps the soft term's gradients the same size whatever T is (Hinton et al., 2015). The run is
an ordinary instruction-tuning Run (events, monitor, run directory, resume) whose config.yaml says
`stage: distill` and records alpha, T and the teacher's origin.

Why not TRL: TRL 1.16's `DistillationTrainer` (and the experimental `GKDTrainer`) train
*on-policy*: the student generates the completions it is scored on, the loss is a generalised
JSD with no cross-entropy term on the labels, the sampling temperature doubles as the
divergence's, and GKD picks on- or off-policy batches with `random.random()`, so a resumed run
does not repeat the uninterrupted one. They also bring their own tokenisation (prompt columns).
The loss here is supervised (the dataset's own answers), needs the teacher only for one extra
forward pass, and is added to the project's Trainer through `DistillationObjective.attach`, the
same way `attach_regularizer` adds EWC: the collator, completion-only labels, packing, the
response-only logits of `loss.py` and the event bridge all stay as they are.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.data.loading import Examples
from workbench.errors import WorkbenchError
from workbench.model.loading import model_origin
from workbench.model.loss import accepts_logits_to_keep, response_logits, soft_kl
from workbench.model.methods import Method
from workbench.runs.building import check_new_run_dir
from workbench.runs.directory import new_run_dir
from workbench.runs.hyperparameters import Hyperparameters, as_hyperparameters
from workbench.runs.kinds import Kind, deprecated_name, register
from workbench.runs.run import Run
from workbench.tokens.templates import Template
from workbench.training.finetune import prepare_run, task_label
from workbench.training.resuming import open_run

STAGE = "distill"


@dataclass
class DistillationObjective:
    """The distillation term of a run's loss: the frozen `teacher`, `alpha` (the share of the
    soft term; 0 trains on the labels alone, 1 on the teacher alone) and `temperature`.

    `attach(trainer)` makes the trainer's training loss `(1 - alpha) * CE + alpha * T^2 * KL`;
    the evaluation loss stays the plain CE on the labels, so a distilled run and one trained on
    labels alone report comparable `eval_loss`. Each logged step also carries both terms,
    averaged over the micro-batches since the last log (`distill_ce`, `distill_kl`: `step`
    events, the monitor's curves). `last_kl` and `last_cross_entropy` hold the latest
    micro-batch's terms (0-d tensors, read only when logged: no device sync per batch)."""

    teacher: Any = field(repr=False)
    alpha: float = field(default=0.5, metadata={"help": "share of the teacher's term, 0-1"})
    temperature: float = field(
        default=2.0, metadata={"help": "softens both distributions: 1-4 usual, higher is softer"}
    )
    teacher_origin: str = field(default="", metadata={"help": "what the teacher was loaded from"})
    teacher_layers: list[int] | None = field(
        default=None,
        metadata={"help": "the teacher's layers the student was made of (student_from_teacher)"},
    )
    stage: str = field(default=STAGE, init=False)  # config.yaml's `stage` for these runs
    last_kl: Any = field(default=None, init=False, repr=False)
    last_cross_entropy: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        problems = []
        if not 0.0 <= self.alpha <= 1.0:
            problems.append(f"`alpha`={self.alpha} must be in [0, 1] (0.5 is usual).")
        if self.temperature <= 0:
            problems.append(f"`temperature`={self.temperature} must be positive (try 1-4).")
        if problems:
            raise WorkbenchError("Invalid distillation settings:\n  - " + "\n  - ".join(problems))

    def to_config(self) -> dict[str, Any]:
        """What config.yaml records (`resume_distillation` reads it back)."""
        return {
            "distillation": {
                "alpha": self.alpha,
                "temperature": self.temperature,
                "teacher": self.teacher_origin,
                "teacher_layers": self.teacher_layers,
            }
        }

    def attach(self, trainer) -> None:
        """Freeze the teacher (eval mode, no grad, on the student's device) and wrap the
        trainer's `compute_loss` with the distillation term (training batches only)."""
        import torch

        device = next(trainer.model.parameters()).device
        self.teacher.to(device).eval().requires_grad_(False)
        compute_loss = trainer.compute_loss
        args = trainer.args

        def compute_distilled_loss(model, inputs, return_outputs=False, num_items_in_batch=None):
            if not model.training:
                return compute_loss(
                    model,
                    inputs,
                    return_outputs=return_outputs,
                    num_items_in_batch=num_items_in_batch,
                )
            cross_entropy, outputs = compute_loss(
                model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch
            )
            with torch.no_grad():
                teacher_logits = self.teacher_logits(inputs)
            student_logits, mask = response_logits(outputs.logits, inputs)
            per_token = soft_kl(student_logits, teacher_logits, self.temperature)
            count = num_items_in_batch if num_items_in_batch is not None else mask.sum()
            kl = (per_token * mask).sum() / count
            if args.average_tokens_across_devices and num_items_in_batch is not None:
                kl = kl * args.world_size  # as the project's CE: DDP averages over processes
            self.last_kl, self.last_cross_entropy = kl.detach(), cross_entropy.detach()
            sums.append((self.last_cross_entropy, self.last_kl))
            soft = self.alpha * self.temperature**2 * kl
            loss = (1.0 - self.alpha) * cross_entropy + soft.to(cross_entropy.dtype)
            return (loss, outputs) if return_outputs else loss

        trainer.compute_loss = compute_distilled_loss
        sums: list = []  # (CE, KL) of each training micro-batch since the last log
        log = trainer.log

        def log_with_terms(logs, start_time=None):
            if "loss" in logs and sums:  # a training step's log: both terms beside the loss
                terms = torch.stack([torch.stack(pair).float() for pair in sums]).mean(0)
                logs = {**logs, "distill_ce": float(terms[0]), "distill_kl": float(terms[1])}
                sums.clear()
            return log(logs, start_time)

        trainer.log = log_with_terms

    def teacher_logits(self, inputs: dict[str, Any]):
        """The teacher's logits at the positions the student's loss uses."""
        model_inputs = {
            k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask", "position_ids")
        }
        positions = inputs.get("logits_positions")
        if positions is not None and accepts_logits_to_keep(self.teacher):
            return self.teacher(**model_inputs, use_cache=False, logits_to_keep=positions).logits
        logits = self.teacher(**model_inputs, use_cache=False).logits
        return response_logits(logits, inputs, all_positions=True)[0]


def _layers_to_keep(keep_layers: int | list[int], total: int) -> list[int]:
    """A count becomes that many layers spread evenly, the first and the last included."""
    if isinstance(keep_layers, int):
        if not 1 <= keep_layers <= total:
            raise WorkbenchError(
                f"`keep_layers`={keep_layers}: the teacher has {total} layers; keep 1 to {total} "
                f"(half is usual: {total // 2})."
            )
        if keep_layers == 1:
            return [total - 1]
        return sorted({round(i * (total - 1) / (keep_layers - 1)) for i in range(keep_layers)})
    keep = list(keep_layers)
    if not keep or keep != sorted(set(keep)) or keep[0] < 0 or keep[-1] >= total:
        raise WorkbenchError(
            f"`keep_layers`={keep}: list distinct layer numbers in increasing order, each from "
            f"0 to {total - 1} (e.g. every other one: list(range(0, {total}, 2)))."
        )
    return keep


def _layer_stack_name(model) -> str:
    """The name of the ModuleList of decoder layers (`model.layers` in Llama-family models)."""
    import torch

    count = model.config.num_hidden_layers
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == count:
            return name
    raise WorkbenchError(
        f"Could not find the {count} decoder layers of {type(model).__name__}: "
        "student_from_teacher supports Llama-family causal LMs."
    )


def student_from_teacher(teacher, keep_layers: int | list[int]):
    """A copy of the causal LM `teacher` with only the decoder layers `keep_layers` (a list of
    layer numbers, or a count spread evenly, first and last included), every weight copied
    from the teacher. Its config records the teacher layers it keeps (`teacher_layers`)."""
    if hasattr(teacher, "peft_config"):
        raise WorkbenchError(
            "The teacher carries a LoRA adapter: merge it first "
            "(`teacher = teacher.merge_and_unload()`), then build the student from it."
        )
    total = teacher.config.num_hidden_layers
    keep = _layers_to_keep(keep_layers, total)
    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = len(keep)
    if getattr(config, "layer_types", None):  # per-layer attention kinds (sliding, full)
        config.layer_types = [config.layer_types[i] for i in keep]
    # transformers saves extra config keys in config.json: the student's record of its origin
    config.teacher_layers = keep
    config.name_or_path = f"{_origin(teacher)} (layers {_ranges(keep)})"
    parameter = next(teacher.parameters())
    student = type(teacher)(config).to(device=parameter.device, dtype=parameter.dtype)
    stack = _layer_stack_name(teacher) + "."
    source = teacher.state_dict()
    weights = {}
    for name in student.state_dict():
        origin = name
        if name.startswith(stack):
            index, rest = name[len(stack) :].split(".", 1)
            origin = f"{stack}{keep[int(index)]}.{rest}"
        weights[name] = source[origin]
    student.load_state_dict(weights, strict=True)
    student.generation_config = copy.deepcopy(teacher.generation_config)
    return student


def _origin(model) -> str:
    """What the model was loaded from (`model_origin`), or a note that it was built in memory."""
    return model_origin(model)[0] or "a model built in memory"


def _ranges(numbers: list[int]) -> str:
    if numbers == list(range(numbers[0], numbers[-1] + 1)):
        return f"{numbers[0]}-{numbers[-1]}"
    return ",".join(str(n) for n in numbers)


@dataclass
class DistillationSettings(Hyperparameters):
    """Distillation's settings: instruction tuning's `Hyperparameters` and the mix of the two
    losses, `(1 - alpha) * CE(labels) + alpha * T^2 * KL(teacher_T || student_T)`."""

    alpha: float = field(
        default=0.5, metadata={"help": "weight of the teacher's KL term (0: labels only)"}
    )
    temperature: float = field(
        default=2.0, metadata={"help": "softens both distributions; 1 compares them as they are"}
    )


def train_distillation(
    model,
    tokenizer,
    rows: Examples,
    validation: Examples | None = None,
    *,
    teacher,
    settings: DistillationSettings | None = None,
    method: Method | None = None,
    template: Template | str | None = None,
    run_dir: str | Path | None = None,
    start: bool = True,
    samples: int = 3,
) -> Run:
    """Train the student `model` on `rows` with the `teacher`'s soft answers; returns the Run
    at once.

    The loss is `(1 - alpha) * CE(labels) + alpha * T^2 * KL(teacher_T || student_T)` over the
    response tokens (`settings.alpha`, `settings.temperature`). The teacher stays frozen (eval
    mode, no grad); the student must share its vocabulary. `method` defaults to full
    fine-tuning of the student; the rest is as `train()`.
    """
    settings = settings or DistillationSettings()
    alpha = getattr(settings, "alpha", DistillationSettings.alpha)
    temperature = getattr(settings, "temperature", DistillationSettings.temperature)
    objective = _objective(teacher, model, alpha, temperature, _origin(teacher))
    check_new_run_dir(run_dir)
    run = prepare_run(
        model,
        tokenizer,
        rows,
        validation,
        template=template,
        method=method or Method(kind="full"),
        hp=as_hyperparameters(settings),
        run_dir=run_dir or new_run_dir(f"distill-{task_label(rows)}"),
        samples=samples,
        regularizer=None,
        resuming=False,
        objective=objective,
    )
    return run.start() if start else run


def distill(
    teacher,
    student,
    tokenizer,
    train_data: Examples,
    validation: Examples | None = None,
    *,
    alpha: float = 0.5,
    temperature: float = 2.0,
    method: Method | None = None,
    hyperparameters: Hyperparameters | None = None,
    template: Template | str | None = None,
    run_dir: str | Path | None = None,
    samples: int = 3,
    start: bool = True,
) -> Run:
    """The old form of `train_distillation` (kept for one release)."""
    deprecated_name("distill(teacher, student, ...)", "train_distillation(student, ...)")
    base = hyperparameters or Hyperparameters()
    settings = DistillationSettings(**base.to_dict(), alpha=alpha, temperature=temperature)
    return train_distillation(
        student, tokenizer, train_data, validation, teacher=teacher, settings=settings,
        method=method, template=template, run_dir=run_dir, start=start, samples=samples,
    )  # fmt: skip


def _objective(teacher, student, alpha: float, temperature: float, origin: str, layers=None):
    if teacher is student:
        raise WorkbenchError("`teacher` and `student` are the same model: pass a separate student.")
    vocabularies = [m.get_output_embeddings().weight.shape[0] for m in (teacher, student)]
    if vocabularies[0] != vocabularies[1]:
        raise WorkbenchError(
            f"The teacher's vocabulary ({vocabularies[0]} tokens) and the student's "
            f"({vocabularies[1]}) differ: distillation compares next-token distributions, so "
            "both must use the same tokenizer."
        )
    if layers is None:
        layers = getattr(student.config, "teacher_layers", None)  # set by student_from_teacher
    return DistillationObjective(
        teacher, alpha, temperature, teacher_origin=origin, teacher_layers=layers
    )


def resume_distillation(
    run_dir: str | Path,
    teacher,
    tokenizer,
    *,
    student=None,
    max_steps: int | None = None,
) -> Run:
    """Continue a stopped or killed distillation run from its newest complete checkpoint.

    Give the teacher again (as it was: the run directory does not store it). A student made by
    `student_from_teacher` is rebuilt from the teacher and the layers config.yaml records;
    any other student must be passed as it was at the start (`student=`)."""
    opened = open_run(
        run_dir, STAGE, Hyperparameters, max_steps,
        otherwise="this is not a distillation run: resume it with workbench.resume(path)",
    )  # fmt: skip
    directory, config, where, hp = opened.directory, opened.config, opened.where, opened.settings
    settings = config["distillation"]
    if student is None:
        if not settings.get("teacher_layers"):
            raise WorkbenchError(
                f"{where}: the student was not made by student_from_teacher; pass it as it was "
                "at the start: resume_distillation(run_dir, teacher, tokenizer, student=...)."
            )
        student = student_from_teacher(teacher, settings["teacher_layers"])
    origin = _origin(teacher)
    if settings.get("teacher") and origin != settings["teacher"]:
        warnings.warn(
            f"{where} records the teacher {settings['teacher']!r}, but the one given comes from "
            f"{origin!r}: the resumed steps learn from a different teacher.",
            stacklevel=2,
        )
    objective = _objective(
        teacher,
        student,
        settings["alpha"],
        settings["temperature"],
        settings.get("teacher") or origin,
        settings.get("teacher_layers"),
    )
    run = prepare_run(
        student,
        tokenizer,
        directory.load_rows("train"),
        directory.load_rows("validation"),
        template=Template(**config["template"]),
        method=Method.from_dict(config["method"], where, key="method"),
        hp=hp,
        run_dir=directory.path,
        samples=config.get("samples", 3),
        regularizer=None,
        resuming=True,
        objective=objective,
    )
    return run.resume(max_steps)


def _resume_distillation(run_dir, model=None, tokenizer=None, *, max_steps=None, teacher=None):
    if tokenizer is None:
        raise WorkbenchError(
            f"{run_dir}: a distillation run resumes with its teacher and their tokenizer: "
            "resume(path, tokenizer=tokenizer, teacher=teacher)."
        )
    return resume_distillation(run_dir, teacher, tokenizer, student=model, max_steps=max_steps)


register(
    Kind(
        stage=STAGE,
        title="distillation (teacher to student)",
        function="train_distillation",
        rows="instruction rows, and a teacher model",
        settings=DistillationSettings,
        figure_rows=3,
        resume=_resume_distillation,
        needs=("teacher",),
        extras=("teacher",),
    )
)
