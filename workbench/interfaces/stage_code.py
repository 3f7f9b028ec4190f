"""The code that starts a run again, from its run directory (`run_code`).

Instruction tuning gets `wb.train(...)` with the template and settings the panel shows; a run
of another kind (continued
pre-training, a classification head, a reward model, DPO, KTO, ORPO, GRPO, PPO, distillation)
gets the call every kind shares, `wb.train_<kind>(model, tokenizer, train, validation,
settings=..., method=..., template=...)`, with the rows the run stored under `data/`, the model
it continued (a parent run's adapter) and, for RL and distillation, the reward or teacher. What
the directory cannot hold is said in a comment beside the line that needs it.
"""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Any

import workbench
from workbench.evaluation.rewards import IN_MEMORY
from workbench.interfaces.code import (
    model_code,
    script,
    settings_code,
    template_code,
    train_code,
)
from workbench.model.methods import Method
from workbench.runs.directory import RunDirectory
from workbench.runs.hyperparameters import Hyperparameters
from workbench.runs.kinds import kind_of
from workbench.tokens.templates import Template
from workbench.training.heads import ClassifierMethod


def run_code(
    run_dir: str | Path,
    template: Template | None = None,
    method: Method | None = None,
    hyperparameters: Hyperparameters | None = None,
) -> str:
    """The script that starts the run in `run_dir` again: its model, the rows it stored under
    `data/`, its template and settings (given, or read from its config.yaml). A run of another
    kind than instruction tuning gets the call every kind shares, from config.yaml."""
    directory = RunDirectory(run_dir)
    config = directory.read_config()
    if config.get("stage", "sft") != "sft":  # its own library call, from its directory alone
        return stage_run_code(directory.path, config)
    data = config["data"]
    lines = [model_code(config["model"], config.get("quantization"))]
    for split in ("train", "validation"):
        if data.get(split):
            path = str(directory.file(data[split]))
            lines.append(f"{split} = wb.load_data({path!r}, format={data['format']!r})")
    template = template or Template(**config["template"])
    method = method or Method.from_dict(config["method"])
    hyperparameters = hyperparameters or Hyperparameters.from_dict(config["hyperparameters"])
    train = train_code(validation=bool(data.get("validation")), samples=config.get("samples", 3))
    if config.get("regularizer"):
        train.insert(0, "# this run had a regularizer (config.yaml): pass it as regularizer=")
    settings = [template_code(template), *settings_code(method, hyperparameters)]
    return script(lines, settings, train)


def stage_run_code(run_dir: Path, config: dict[str, Any]) -> str:
    """The script that starts the run recorded in `config` (read from `run_dir`) again: the
    kind's `wb.train_<kind>(model, tokenizer, train, validation, settings=..., ...)`, the call
    every kind shares (its function and settings class come from the registry)."""
    kind = kind_of(config["stage"], str(run_dir / "config.yaml"))
    function = getattr(workbench, kind.function)
    takes = inspect.signature(function).parameters
    imports: list[str] = []
    model_lines = _model_lines(config, imports)
    data = config["data"]
    rows = {
        split: f"{split} = wb.load_data({str(run_dir / data[split])!r}, format={data['format']!r})"
        for split in ("train", "validation")
        if data.get(split)
    }
    settings = [*_method_lines(config, imports), _settings_line(config, kind.settings)]
    keywords = ["settings=settings", "method=method"]
    if "template" in takes and config["template"].get("name") not in ("text", "classify"):
        settings.insert(0, template_code(Template(**config["template"])))
        keywords.append("template=template")
    keywords += [f"{extra}={extra}" for extra in kind.extras]
    before_call = _reward_lines(config["reward"], imports) if "reward" in kind.extras else []
    model = "student" if "teacher" in kind.extras else "model"
    given = "train, validation" if "validation" in rows else "train"
    lines = "".join(
        f"    {argument},\n" for argument in [f"{model}, tokenizer, {given}", *keywords]
    )
    run = f"run = wb.{kind.function}(\n{lines})"
    return script(
        imports,
        model_lines,
        list(rows.values()),
        settings,
        [*before_call, run, "run.wait()  # training runs on a thread; this blocks until it ends"],
    )


def _model_lines(config: dict[str, Any], imports: list[str]) -> list[str]:
    """The model the run trained: its base (and the parent run's adapter it continued), or for
    distillation the teacher and the student."""
    if config["stage"] == "distill":
        distillation = config.get("distillation", {})
        teacher = f"teacher, tokenizer = wb.load_model({distillation.get('teacher')!r})"
        layers = distillation.get("teacher_layers")
        if layers:
            return [teacher, f"student = wb.student_from_teacher(teacher, keep_layers={layers!r})"]
        return [teacher, model_code(config["model"]).replace("model, tokenizer", "student, _")]
    lines = [model_code(config["model"], config.get("quantization"))]
    parent = config.get("parent")
    if parent:
        adapter = Path(parent) / "adapter"
        if (adapter / "adapter_config.json").is_file():
            imports.append("from workbench.runs.saved import load_adapter")
            lines.append(f"model = load_adapter(model, {str(adapter)!r}, trainable=True)")
        else:
            lines.append(f"# this run continued {parent}'s model, whose adapter/ is not there")
    return lines


def _method_lines(config: dict[str, Any], imports: list[str]) -> list[str]:
    if config["stage"] == "classify":
        imports.append("from workbench.training.heads import ClassifierMethod")
        return [ClassifierMethod.from_dict(config["method"]).to_code("method")]
    return [Method.from_dict(config["method"]).to_code("method", "wb.")]


def _settings_line(config: dict[str, Any], settings_class: type) -> str:
    """`settings = wb.<Class>(...)` with the settings that differ from the class's defaults:
    config.yaml's `hyperparameters`, and the kind's own knobs where config.yaml keeps them
    (`block_size`, `labels`, the distillation's `alpha`)."""
    values = dict(config["hyperparameters"])
    known = {f.name for f in dataclasses.fields(settings_class)}
    for name in known - set(values):
        for section in (config, config.get("distillation") or {}):
            if name in section:
                values[name] = section[name]
    settings = settings_class.from_dict({k: v for k, v in values.items() if k in known})
    return settings.to_code("settings", "wb.")


def _reward_lines(record: dict[str, Any], imports: list[str]) -> list[str]:
    """`reward = ...` as the run's config.yaml records it."""
    model = record.get("reward_model")
    if model == IN_MEMORY:
        return ["reward = reward_model  # the run's reward model was given in memory: bind it"]
    if model:
        return [f"reward = {model!r}  # the reward model's run directory"]
    function = str(record.get("function", "reward"))
    module, _, name = function.rpartition(".")
    if function == "workbench.evaluation.rewards.one_of_labels" and record.get("labels"):
        return [f"reward = wb.one_of_labels({list(record['labels'])!r})"]
    if function == "workbench.evaluation.rewards.valid_iso_date":
        return ["reward = wb.valid_iso_date"]
    if module and module != "__main__" and "<locals>" not in function:
        imports.append(f"from {module} import {name} as reward")
        return []
    return [f"reward = {name}  # your function of (prompt, answer) (config.yaml: {function})"]
