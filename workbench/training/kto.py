"""KTO: preference tuning from answers marked desirable or undesirable, on TRL's KTOTrainer.

`train_kto(model, tokenizer, rows)` needs no pairs: each row is one answer with a `label`
(true: desirable, false: undesirable), so thumbs-up/down feedback trains as it is; DPO's
prompt/chosen/rejected pairs also work (each pair becomes two rows). As in DPO
(training/preference.py) the adapter goes on learning and TRL keeps a frozen copy of it as a
second adapter (`ref`), the reference. The Run has the same events, files and panels as every
other run; its `step` events also carry `kl` and the reward margin. `resume_kto(run_dir)`
continues a stopped run. The helpers that ORPO (training/orpo.py) shares are public here.
"""

from __future__ import annotations

import random
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.data.loading import Examples
from workbench.errors import RunDirectoryInUseError, WorkbenchError
from workbench.evaluation.preferences import prompt_of
from workbench.model.methods import Method, apply_method, count_parameters
from workbench.runs.bridge import bridged, event_bridge
from workbench.runs.directory import RunDirectory, new_run_dir
from workbench.runs.hyperparameters import ObjectiveSettings
from workbench.runs.kinds import Kind, register
from workbench.runs.run import Run, RunContext
from workbench.runs.saved import template_for
from workbench.tokens.templates import Template
from workbench.training.resuming import open_run


@dataclass
class KTOSettings(ObjectiveSettings):
    """How KTO runs: the instruction-tuning `Hyperparameters` (same fields, meanings and checks)
    with KTO's defaults, plus `beta`, `desirable_weight` and `undesirable_weight`. `batch_size`
    counts unpaired rows (a pair is two); `max_length` counts prompt + answer. The settings in
    `SFT_ONLY` do not apply to KTO and must keep their values.
    """

    what, title = "KTO", "KTO settings"

    learning_rate: float = field(  # KTO's loss is a sigmoid of DPO's log-ratio: DPO's rates
        default=5e-5, metadata={"help": "as DPO, ~10x less than SFT: 5e-6 full, 5e-5 LoRA"}
    )
    batch_size: int = field(  # the KL term is estimated from the other rows of each batch
        default=8, metadata={"help": "unpaired rows per forward pass (at least 2)"}
    )
    eval_every: int = field(default=10, metadata={"help": "evaluate every N steps"})
    beta: float = field(  # the KTO paper's and TRL's default, the same scale as DPO's beta
        default=0.1, metadata={"help": "KL strength: 0.1 is usual, higher stays closer"}
    )
    desirable_weight: float = field(  # pairs give as many desirable as undesirable rows: 1
        default=1.0,
        metadata={"help": "loss weight of desirable rows: raise it when they are the fewer"},
    )
    undesirable_weight: float = field(  # the paper keeps (weight x rows) even, or up to 4:3
        default=1.0,
        metadata={"help": "loss weight of undesirable rows: raise it when they are the fewer"},
    )

    def own_problems(self) -> list[str]:
        problems = (
            [f"`beta`={self.beta} must be positive (0.1 is usual)."] if self.beta <= 0 else []
        )
        problems += [
            f"`{name}`={getattr(self, name)} must be positive (1.0 for balanced rows)."
            for name in ("desirable_weight", "undesirable_weight")
            if getattr(self, name) <= 0
        ]
        if self.batch_size < 2:
            problems.append(
                f"`batch_size`={self.batch_size}: KTO estimates its KL term from the other "
                "rows of a batch, so it needs at least 2 (8 is usual)."
            )
        return problems


def check_kto_rows(rows: Examples) -> None:
    """Raise unless `rows` are pairs or unpaired rows whose `label` is true or false."""
    if rows.format == "preference":
        return
    if rows.format != "prompt_completion":
        raise WorkbenchError(
            f"{rows.source}: KTO needs unpaired rows (`prompt`, `completion`, `label`) or pairs "
            f"(`chosen`, `rejected` and `prompt` or `instruction`), but these are "
            f"{rows.format!r} rows. See sample_data/preferences.jsonl for pairs."
        )
    unlabelled = [
        rows.where(i) for i, r in enumerate(rows.rows) if not isinstance(r.get("label"), bool)
    ]
    if unlabelled:
        raise WorkbenchError(
            f"{len(unlabelled)} row(s) have no true/false `label` ({', '.join(unlabelled[:5])}): "
            "give each row `label`: true for a desirable answer, false for an undesirable one "
            "(or give pairs with `chosen` and `rejected`)."
        )


def kto_rows(rows: Examples, template: Template, tokenizer, seed: int) -> list[dict[str, Any]]:
    """The unpaired rows TRL's KTOTrainer takes (`prompt`, `completion`, `label`): a pair gives
    its chosen answer as desirable and its rejected one as undesirable. Shuffled with `seed`:
    KTO reads rows in order (its KL term pairs each prompt with a neighbour's answer), so
    unshuffled, a pair's two answers would share a batch and a file's labels come in blocks."""
    unpaired = []
    for row in rows.rows:
        prompt = prompt_of(row, template, tokenizer)
        if rows.format == "preference":
            unpaired.append({"prompt": prompt, "completion": row["chosen"], "label": True})
            unpaired.append({"prompt": prompt, "completion": row["rejected"], "label": False})
        else:
            unpaired.append(
                {"prompt": prompt, "completion": row["completion"], "label": row["label"]}
            )
    random.Random(seed).shuffle(unpaired)
    return unpaired


def warn_if_unbalanced(rows: list[dict[str, Any]], settings: KTOSettings) -> None:
    """The KTO paper keeps desirable_weight x desirable rows / (undesirable_weight x undesirable
    rows) within [1, 4/3]; outside, say so with the weight that would bring it there."""
    desirable = sum(r["label"] for r in rows)
    undesirable = len(rows) - desirable
    if not desirable or not undesirable:
        return
    ratio = (settings.desirable_weight * desirable) / (settings.undesirable_weight * undesirable)
    if not 1.0 <= ratio <= 4 / 3:
        wanted = settings.undesirable_weight * undesirable / desirable
        warnings.warn(
            f"{desirable} desirable and {undesirable} undesirable rows with `desirable_weight`="
            f"{settings.desirable_weight:g} and `undesirable_weight`="
            f"{settings.undesirable_weight:g}: the KTO paper keeps weight x rows of the desirable "
            f"side 1 to 4/3 times the undesirable side's; try desirable_weight={wanted:.2f}.",
            stacklevel=3,
        )


def model_to_train(model, method: Method | None, seed: int) -> tuple[Any, Method]:
    """(model, method): the model's own adapter (an SFT run's), which goes on learning, or a
    fresh one from `method` (default LoRA; the seed fixes its initial weights)."""
    if hasattr(model, "peft_config"):
        if "ref" in model.peft_config:  # the reference an earlier DPO or KTO run left on it
            model.delete_adapter("ref")
        config = model.peft_config["default"]
        targets = config.target_modules
        return model, method or Method(
            kind="lora",
            r=config.r,
            alpha=config.lora_alpha,
            dropout=config.lora_dropout,
            target_modules=targets if isinstance(targets, str) else sorted(targets),
        )
    from transformers import set_seed

    method = method or Method()
    set_seed(seed)
    return apply_method(model, method), method


def resume_on(stage: str, settings_class, build_run, run_dir, model, tokenizer, max_steps) -> Run:
    """Resume a run of `stage` (KTO, ORPO) from `run_dir` on `model` or the base model its
    config.yaml names, with the `parent` run's adapter when that is still there. `build_run`
    is the kind's own (model, tokenizer, rows, validation, settings, method, template, parent,
    run_dir, resuming) -> Run."""
    opened = open_run(run_dir, stage, settings_class, max_steps)
    parent = opened.config.get("parent")
    if model is None:
        model, tokenizer = opened.model()
        adapter = Path(parent or "") / "adapter"
        if parent and (adapter / "adapter_config.json").is_file():
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(adapter), is_trainable=True)
    model, method = model_to_train(model, opened.method(), opened.settings.seed)
    rows = (opened.rows("train"), opened.rows("validation"))
    how = (opened.settings, method, opened.template(), parent, opened.directory.path)
    run = build_run(model, tokenizer, *rows, *how, resuming=True)
    return run.resume(max_steps)


def answer_samples(rows: Examples, template: Template, tokenizer, count: int = 2):
    """(prompts, reference answers) of the first rows with a desirable answer, answered at
    each evaluation: a pair's chosen answer, or an unpaired row labelled true."""
    wanted = [r for r in rows.rows if rows.format == "preference" or r.get("label") is True]
    wanted = wanted[:count]  # 2 held-out prompts, as DPO answers
    answers = [r["chosen"] if rows.format == "preference" else r["completion"] for r in wanted]
    return [prompt_of(r, template, tokenizer) for r in wanted], answers


def train_kto(
    model,
    tokenizer,
    rows: Examples,
    validation: Examples | None = None,
    *,
    settings: KTOSettings | None = None,
    method: Method | None = None,
    template: Template | str | None = None,
    parent: str | Path | None = None,
    run_dir: str | Path | None = None,
    start: bool = True,
) -> Run:
    """Start KTO on `rows` and return the Run at once (training continues in the background).

    `rows` are unpaired (`prompt`, `completion`, `label`: true desirable, false undesirable)
    or pairs (`chosen`, `rejected`, `prompt` or `instruction`), each two unpaired rows. `model`
    is normally an SFT run's model: its adapter goes on learning and a frozen copy is the
    reference; a model without an adapter gets a fresh one from `method` (LoRA) and the base is
    the reference. `parent` names the SFT run directory; `template` defaults to its template.
    """
    for given in (rows, validation):
        if given is not None:
            check_kto_rows(given)
    if run_dir is not None and RunDirectory(run_dir).is_run:
        raise RunDirectoryInUseError(Path(run_dir))
    settings = settings or KTOSettings()
    model, method = model_to_train(model, method, settings.seed)
    if not method.uses_lora:
        raise WorkbenchError(
            f"`method.kind`={method.kind!r}: KTO here trains a LoRA adapter (the reference is "
            "the same model with its starting adapter frozen). Use kind='lora' or 'qlora'."
        )
    template = template_for(template, parent, rows.format)
    run = _kto_run(model, tokenizer, rows, validation, settings, method, template, parent, run_dir)
    return run.start() if start else run


def _kto_run(
    model, tokenizer, rows, validation, settings, method, template, parent, run_dir, resuming=False
) -> Run:
    """The Run of a KTO run; a new one records config.yaml and its rows."""
    train_rows = kto_rows(rows, template, tokenizer, settings.seed)
    val_rows = kto_rows(validation, template, tokenizer, settings.seed) if validation else None
    if not resuming:
        warn_if_unbalanced(train_rows, settings)
    run_dir = Path(run_dir) if run_dir else new_run_dir(f"kto-{next(iter(rows.tasks), 'rows')}")
    run_dir.mkdir(parents=True, exist_ok=True)
    if not resuming:
        RunDirectory(run_dir).record_run(
            stage="kto",
            model=model,
            template=template,
            method=method,
            hyperparameters=settings,
            train=rows,
            validation=validation,
            parent=str(parent) if parent else None,
        )
    prompts, references = answer_samples(validation or rows, template, tokenizer)
    context = RunContext(
        model=model,
        tokenizer=tokenizer,
        template=template,
        method=method,
        hyperparameters=settings,
        parameters=count_parameters(model),
        sample_prompts=prompts,
        references=references,
        samples_shown=len(prompts),
        sample_max_new_tokens=settings.sample_max_new_tokens,
    )

    def build_trainer(run: Run, resuming: bool):  # run.hyperparameters: a resume may extend
        return _build_kto_trainer(run, run.hyperparameters, train_rows, val_rows, resuming)

    def save_final(folder: Path) -> None:  # the KTO-tuned adapter, not TRL's frozen `ref` copy
        model.save_pretrained(folder, selected_adapters=["default"])
        tokenizer.save_pretrained(folder)

    return Run(run_dir, context, build_trainer, save_final=save_final)


def _build_kto_trainer(run: Run, settings: KTOSettings, train_rows, val_rows, resuming: bool):
    """TRL's KTOTrainer with the Run's event bridge: the same events as an SFT run."""
    import datasets
    from trl import KTOConfig, KTOTrainer

    if "ref" in run.model.peft_config:  # TRL copies `default` into `ref` again; a resumed run
        run.model.delete_adapter("ref")  # then loads the checkpoint's `ref`, the first one
    args = settings.run_arguments(
        run.directory.checkpoints_dir,
        run.model,
        has_validation=val_rows is not None,
        rows=len(train_rows),  # the plan's optimizer steps: warmup cap, too-short warning
        args_class=KTOConfig,
        beta=settings.beta,
        desirable_weight=settings.desirable_weight,
        undesirable_weight=settings.undesirable_weight,
        max_length=settings.max_length,
        remove_unused_columns=True,  # TRL keeps only its token ids and labels
    )
    if resuming:
        args.eval_on_start = False  # the resumed run already measured its start
    trainer = KTOTrainer(
        model=run.model,
        args=args,
        train_dataset=datasets.Dataset.from_list(train_rows),
        eval_dataset=datasets.Dataset.from_list(val_rows) if val_rows else None,
        processing_class=run.tokenizer,
        callbacks=[event_bridge(run)],
    )
    return bridged(trainer, run)


def resume_kto(
    run_dir: str | Path, model=None, tokenizer=None, *, max_steps: int | None = None
) -> Run:
    """Continue a stopped, failed or killed KTO run from its newest complete checkpoint, on
    `model` or the base model (and parent adapter) its config.yaml names, with its rows."""
    return resume_on("kto", KTOSettings, _kto_run, run_dir, model, tokenizer, max_steps)


register(
    Kind(
        stage="kto",
        title="KTO (preference tuning from desirable/undesirable answers)",
        function="train_kto",
        rows="unpaired prompt/completion rows with a true/false `label`, or "
        "prompt/chosen/rejected pairs (each pair two rows)",
        settings=KTOSettings,
        resume=resume_kto,
    )
)
