"""Where a recipe's values come from besides its own YAML: a run's config.yaml, turned back into
the recipe that reproduces the run (`recipe_from_run_config`), and `--set key.path=value`
overrides (`apply_overrides`). `workbench.interfaces.recipe` checks the values that result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# The keys of a run's config.yaml that a recipe reads (or refuses, naming why).
RUN_CONFIG_KEYS = {
    "stage",
    "model",
    "quantization",
    "template",
    "method",
    "hyperparameters",
    "data",
    "samples",
    "regularizer",
    "track_importance",
    "continued_from",
    "evaluation",
}
# The settings of config.yaml's `evaluation` a recipe's `evaluation` section takes as they are
# (`held_out` is the count of rows stored in `file`, which the recipe reads instead).
EVALUATION_KEYS = ("metrics", "labels", "max_new_tokens")


def recipe_from_run_config(config: dict, folder: Path) -> tuple[dict[str, Any], list[str]]:
    """The recipe a run's config.yaml describes (its rows are `data/*.jsonl` in `folder`, the
    held-out rows of its `evaluation` too)."""
    problems = [
        f"`{key}` is not a key of a run's config.yaml; known: {', '.join(sorted(RUN_CONFIG_KEYS))}."
        for key in sorted(set(config) - RUN_CONFIG_KEYS)
    ]
    if config["stage"] != "sft":
        problems.append(
            f"`stage`={config['stage']!r}: only instruction-tuning (sft) runs train from a "
            "config; preference runs use `python -m workbench dpo`."
        )
    if config.get("continued_from"):
        problems.append(
            f"`continued_from`={config['continued_from']!r}: this run continued an earlier "
            "run's model, which a recipe cannot load; rerun it from Python with "
            "`train(run_model, ..., continued_from=...)` or `train_sequence`."
        )
    data = config.get("data") if isinstance(config.get("data"), dict) else {}
    recipe = {
        "model": {"name": config.get("model"), "quantization": config.get("quantization")},
        "data": {
            "train": str(folder / data["train"]) if data.get("train") else None,
            "format": data.get("format"),
            **(
                {"validation": str(folder / data["validation"])}
                if data.get("validation")
                else {"split": 0}  # the run had no validation rows
            ),
        },
        "template": config.get("template"),
        "method": config.get("method") or {},
        "hyperparameters": config.get("hyperparameters") or {},
        "output": {"samples": config.get("samples", 3)},
    }
    evaluation = config.get("evaluation")
    if isinstance(evaluation, dict) and evaluation.get("file"):  # measured before and after
        recipe["evaluation"] = {k: evaluation[k] for k in EVALUATION_KEYS if k in evaluation}
        recipe["evaluation"]["file"] = str(folder / evaluation["file"])
    if config.get("regularizer"):
        recipe["regularizer"] = config["regularizer"]
    if config.get("track_importance"):
        recipe["track_importance"] = True
    return recipe, problems


def apply_overrides(values: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> list[str]:
    """Set each `key.path=value` in `values` (the value read as YAML: 1e-4, true, [a, b]; spaces
    around the key, its dots and `=` are ignored); a later override of the same key wins.
    Returns a problem for each override that cannot be applied."""
    import yaml

    problems = []
    for item in overrides:
        key, sep, text = item.partition("=")
        parts = [part.strip() for part in key.split(".")]
        if not sep or not all(parts):
            problems.append(
                f"--set {item!r}: write key.path=value (--set hyperparameters.max_steps=10)."
            )
            continue
        try:
            value = yaml.safe_load(text.strip())
        except yaml.YAMLError as error:
            problems.append(f"--set {item!r}: the value is not valid YAML ({error}).")
            continue
        node = values
        for depth, part in enumerate(parts[:-1]):
            if node.get(part) is None:
                node[part] = {}
            if not isinstance(node[part], dict):
                at = ".".join(parts[: depth + 1])
                problems.append(f"--set {item!r}: `{at}` is {node[part]!r}, not a mapping.")
                break
            node = node[part]
        else:
            node[parts[-1]] = value
    return problems
