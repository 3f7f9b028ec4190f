"""The code that starts a run of any other `stage` again, from its run directory.

`code.run_code` writes instruction tuning's `wb.train(...)`; a run of another kind (continued
pre-training, a classification head, a reward model, DPO, GRPO, PPO, distillation) gets its own
library call here, with the settings class that call takes, the rows the run stored under
`data/`, the model it continued (a parent run's adapter) and, for RL, its reward. What the
directory cannot hold is said in a comment beside the line that needs it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from workbench.interfaces.code import model_code, script, template_code
from workbench.tokens.templates import Template

# stage -> (the call, its keyword arguments (formatted with config.yaml's values), the
# settings variable, the settings class as "module:Class")
CALLS: dict[str, tuple[str, tuple[str, ...], str, str]] = {
    "pretrain": (
        "wb.continue_pretraining",
        ("block_size={block_size!r}", "method=method", "hyperparameters=hyperparameters"),
        "hyperparameters",
        "workbench.runs.hyperparameters:Hyperparameters",
    ),
    "classify": (
        "wb.train_classifier",
        (
            "labels={labels!r}",
            "text_fields={text_fields!r}",
            "label_field={label_field!r}",
            "method=method",
            "hyperparameters=hyperparameters",
        ),
        "hyperparameters",
        "workbench.runs.hyperparameters:Hyperparameters",
    ),
    "reward": (
        "wb.train_reward_model",
        ("settings=settings", "method=method", "template=template"),
        "settings",
        "workbench.training.reward:RewardSettings",
    ),
    "dpo": (
        "train_preferences",
        ("settings=settings", "method=method", "template=template"),
        "settings",
        "workbench.training.preference:PreferenceSettings",
    ),
    "grpo": (
        "wb.reinforce",
        (
            "reward=reward",
            "algorithm={stage!r}",
            "held_out=validation",
            "settings=settings",
            "method=method",
            "template=template",
        ),
        "settings",
        "workbench.training.reinforcement:RLSettings",
    ),
    "distill": (
        "wb.distill",
        (
            "alpha={alpha!r}",
            "temperature={temperature!r}",
            "method=method",
            "hyperparameters=hyperparameters",
            "template=template",
        ),
        "hyperparameters",
        "workbench.runs.hyperparameters:Hyperparameters",
    ),
}
CALLS["ppo"] = CALLS["grpo"]
# the calls that take the held-out rows as their fourth argument (RL takes `held_out=`)
TAKES_VALIDATION = ("pretrain", "classify", "reward", "dpo", "distill")


def stage_run_code(run_dir: Path, config: dict[str, Any]) -> str:
    """The script that starts the run recorded in `config` (read from `run_dir`) again."""
    stage = config["stage"]
    if stage not in CALLS:
        raise ValueError(f"{run_dir / 'config.yaml'}: no code is written for stage {stage!r}.")
    call, arguments, variable, settings_class = CALLS[stage]
    imports: list[str] = []
    model_lines = _model_lines(config, imports)
    data = config["data"]
    rows = {
        split: f"{split} = wb.load_data({str(run_dir / data[split])!r}, format={data['format']!r})"
        for split in ("train", "validation")
        if data.get(split)
    }
    settings = [
        *_method_lines(config, imports),
        _settings_line(config, variable, settings_class, imports),
    ]
    if config["template"].get("name") not in ("text", "classify"):
        settings.insert(0, template_code(Template(**config["template"])))
    before_call = _reward_lines(config["reward"], imports) if stage in ("grpo", "ppo") else []
    values = {**config, **config.get("distillation", {})}
    model = "teacher, student" if stage == "distill" else "model"
    given = "train, validation" if "validation" in rows and stage in TAKES_VALIDATION else "train"
    keywords = [
        argument.format(**values)
        for argument in arguments
        if "validation" in rows or argument != "held_out=validation"
    ]
    lines = "".join(
        f"    {argument},\n" for argument in [f"{model}, tokenizer, {given}", *keywords]
    )
    run = f"run = {call}(\n{lines})"
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
        from workbench.training.heads import ClassifierMethod

        imports.append("from workbench.training.heads import ClassifierMethod")
        return [ClassifierMethod.from_dict(config["method"]).to_code("method")]
    from workbench.model.methods import Method

    return [Method.from_dict(config["method"]).to_code("method", "wb.")]


def _settings_line(
    config: dict[str, Any], variable: str, settings_class: str, imports: list[str]
) -> str:
    """`variable = <Class>(...)` with the settings that differ from the class's defaults."""
    import importlib

    module, name = settings_class.split(":")
    settings = getattr(importlib.import_module(module), name).from_dict(config["hyperparameters"])
    if name == "PreferenceSettings":  # DPO's call and settings are not exported by `workbench`
        imports.append(f"from {module} import {name}, train_preferences")
        return settings.to_code(variable)
    return settings.to_code(variable, "wb.")


def _reward_lines(record: dict[str, Any], imports: list[str]) -> list[str]:
    """`reward = ...` as the run's config.yaml records it."""
    from workbench.evaluation.rewards import IN_MEMORY

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
