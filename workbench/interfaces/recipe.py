"""A recipe: the YAML file that describes a training run, read and checked before anything loads.

Sections: `model`, `data`, `template`, `method`, `hyperparameters`, `evaluation`, `output`
(configs/*.yaml are commented examples).

`read_recipe(path, overrides)` applies `--set key.path=value` overrides, then checks every
section and raises once with every problem, each naming its key path and the fix. The
config.yaml a run directory holds is read too (its `data/` rows resolved beside it), so every
run can be trained again. Relative data paths are looked up in the working directory, then
beside the recipe. `python -m workbench train` runs a recipe
(`workbench.interfaces.recipe_command`); a run's config.yaml and the overrides become recipe
values in `workbench.interfaces.recipe_values`.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.data.loading import FORMAT_MARKERS
from workbench.data.shipped import find_path
from workbench.errors import WorkbenchError
from workbench.evaluation.metrics import available_metrics
from workbench.interfaces.recipe_values import apply_overrides, recipe_from_run_config
from workbench.model.loading import DEFAULT_MODEL
from workbench.model.methods import Method
from workbench.runs.files import read_yaml_mapping
from workbench.runs.hyperparameters import Hyperparameters
from workbench.settings import Settings
from workbench.tokens.templates import TEMPLATES, Template


class RecipeError(WorkbenchError):
    """A recipe with problems; the message lists every one of them."""


@dataclass
class ModelSection(Settings):
    """The base model: the embedded default, a local folder or a hub id; `quantization` '4bit'
    (QLoRA) or '8bit' loads it quantized (a CUDA GPU and bitsandbytes)."""

    name: str = field(default=DEFAULT_MODEL, metadata={"help": "model name, folder or hub id"})
    quantization: Any = field(default=None, metadata={"help": "null, '4bit' or '8bit'"})

    def __post_init__(self) -> None:
        problems = []
        if not self.name.strip():
            problems.append(f"`name` is empty: use {DEFAULT_MODEL}, a model folder or a hub id.")
        if self.quantization not in (None, "4bit", "8bit"):
            problems.append(f"`quantization`={self.quantization!r}: use null, '4bit' or '8bit'.")
        _raise_all("model", problems)


@dataclass
class DataSection(Settings):
    """The rows to train on. `train` is a file or a list of files (mixed in `mix` proportions,
    keyed by file name or stem; without `mix` every row of every file is used).
    Validation rows come from the `validation` file or are split off the training rows:
    `split` is a share (0-1) or a row count (0: no validation), drawn with `seed`."""

    train: Any = field(default=None, metadata={"help": "a file, or a list of files"})
    validation: str | None = field(default=None, metadata={"help": "a validation file"})
    split: float | None = field(default=None, metadata={"help": "share (<1) or rows; 0.1"})
    seed: int = field(default=0, metadata={"help": "same seed, same split and mix"})
    format: str | None = field(default=None, metadata={"help": "null: detected from columns"})
    columns: dict | None = field(default=None, metadata={"help": "{source: standard name}"})
    sheet: Any = field(default=None, metadata={"help": "an .xlsx sheet's name or index"})
    mix: dict | None = field(default=None, metadata={"help": "{file: proportion}"})
    drop_invalid: bool = field(default=False, metadata={"help": "drop bad rows, listing them"})
    drop_duplicates: bool = field(default=False, metadata={"help": "drop repeated rows, listed"})

    def __post_init__(self) -> None:
        problems = []
        files = self.train_files
        if not files or not all(isinstance(f, str) and f.strip() for f in files):
            problems.append(
                f"`train`={self.train!r}: name the training file, or a list of files "
                "(train: sample_data/support_tickets.jsonl)."
            )
        if self.split is not None:
            if self.split < 0 or (self.split >= 1 and self.split != int(self.split)):
                problems.append(
                    f"`split`={self.split}: a share between 0 and 1 (0.1), or a whole number "
                    "of rows (16); 0 turns validation off."
                )
            if self.validation is not None:
                problems.append("`split` and `validation` both given: keep one of them.")
        if self.format is not None and self.format not in FORMAT_MARKERS:
            problems.append(f"`format`={self.format!r}: use one of {', '.join(FORMAT_MARKERS)}.")
        if self.columns is not None and not (
            isinstance(self.columns, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in self.columns.items())
        ):
            problems.append("`columns`: map source column names to standard ones as text.")
        if self.sheet is not None and not isinstance(self.sheet, (str, int)):
            problems.append(f"`sheet`={self.sheet!r}: a sheet's name or its index (0 is first).")
        problems += self._mix_problems(files)
        _raise_all("data", problems)

    @property
    def train_files(self) -> list:
        return list(self.train) if isinstance(self.train, (list, tuple)) else [self.train]

    def _mix_problems(self, files: list) -> list[str]:
        if self.mix is None:
            return []
        if not isinstance(self.mix, dict):
            return [f"`mix`={self.mix!r}: map each train file to a proportion ({{a: 3, b: 1}})."]
        if len(files) < 2:
            return ["`mix` needs several `train` files: list them, or remove `mix`."]
        named = {name for f in files if isinstance(f, str) for name in (f, Path(f).stem)}
        problems = [
            f"`mix` names {key!r}, which is not one of the `train` files; use their names "
            f"or stems: {', '.join(map(str, files))}."
            for key in self.mix
            if key not in named
        ]
        bad = {k: v for k, v in self.mix.items() if not isinstance(v, (int, float)) or v < 0}
        if bad or not sum(v for v in self.mix.values() if isinstance(v, (int, float))) > 0:
            problems.append(f"`mix`={self.mix}: proportions are numbers >= 0 with a positive sum.")
        missing = [f for f in files if isinstance(f, str) and not {f, Path(f).stem} & set(self.mix)]
        if missing:
            problems.append(f"`mix` gives no proportion for {', '.join(missing)}.")
        return problems


@dataclass
class EvaluationSection(Settings):
    """Rows measured before and after training (never trained on): `held_out` rows split off
    the training data, or a `file`; scored with `metrics` (label_accuracy needs `labels`)."""

    held_out: int = field(default=0, metadata={"help": "rows kept out of training (0: none)"})
    file: str | None = field(default=None, metadata={"help": "a file of rows to measure on"})
    metrics: list = field(default_factory=lambda: ["exact_match", "rouge_l"])
    labels: list | None = field(default=None, metadata={"help": "the classes, for accuracy"})
    max_new_tokens: int = field(default=24, metadata={"help": "longest answer, in tokens"})

    def __post_init__(self) -> None:
        problems = []
        if self.held_out < 0:
            problems.append(f"`held_out`={self.held_out}: a row count, 0 or more.")
        if self.held_out and self.file:
            problems.append("`held_out` and `file` both given: keep one of them.")
        shipped = available_metrics()
        if not isinstance(self.metrics, list):
            problems.append(f"`metrics`={self.metrics!r}: a list, some of {', '.join(shipped)}.")
        elif [m for m in self.metrics if m not in shipped]:
            unknown = [m for m in self.metrics if m not in shipped]
            problems.append(f"`metrics` {unknown}: use some of {', '.join(shipped)}.")
        if self.labels is not None and not isinstance(self.labels, list):
            problems.append(f"`labels`={self.labels!r}: a list of the classes ([a, b]).")
        if "label_accuracy" in self.metrics and not self.labels:
            problems.append("`metrics` has label_accuracy: list the classes in `labels`.")
        if self.max_new_tokens < 1:
            problems.append(f"`max_new_tokens`={self.max_new_tokens}: at least 1 (try 8-64).")
        _raise_all("evaluation", problems)


@dataclass
class OutputSection(Settings):
    """Where the run goes (`run_dir`: a new folder under $WORKBENCH_RUNS when null) and how
    many validation prompts are answered at each evaluation (`samples`)."""

    run_dir: str | None = field(default=None, metadata={"help": "null: runs/<date>-<label>"})
    samples: int = field(default=3, metadata={"help": "sample answers per evaluation"})

    def __post_init__(self) -> None:
        if self.samples < 0:
            _raise_all("output", [f"`samples`={self.samples}: 0 or more."])


SECTIONS: dict[str, type[Settings]] = {
    "model": ModelSection,
    "data": DataSection,
    "method": Method,
    "hyperparameters": Hyperparameters,
    "evaluation": EvaluationSection,
    "output": OutputSection,
}
KNOWN_KEYS = (*SECTIONS, "template", "regularizer", "track_importance")


@dataclass
class Recipe:
    """A checked recipe. `template` is a built-in name, a Template, or None (the template
    that suits the data's format); `regularizer` is a run config.yaml's, resolved in `folder`;
    `track_importance` records synaptic-intelligence importance for a later task."""

    model: ModelSection
    data: DataSection
    template: str | Template | None
    method: Method
    hyperparameters: Hyperparameters
    evaluation: EvaluationSection
    output: OutputSection
    folder: Path  # the recipe's folder: relative paths not found in the working directory
    regularizer: dict | None = None
    track_importance: bool = False


def read_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read a recipe (or a run's config.yaml), apply `key.path=value` overrides, and check it
    all; RecipeError lists every problem, FileNotFoundError when `path` is missing."""
    path = find_path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such recipe. Examples to copy: configs/*.yaml")
    values = read_yaml_mapping(path)
    problems: list[str] = []
    if "stage" in values:  # a run directory's config.yaml
        values, problems = recipe_from_run_config(values, path.parent)
    problems += apply_overrides(values, overrides)
    recipe, more = parse_recipe(values, path.parent)
    problems += more
    if problems:
        given = f" (with --set {' '.join(overrides)})" if overrides else ""
        raise RecipeError(
            f"{path}{given}: {len(problems)} problem(s), nothing was loaded:\n  - "
            + "\n  - ".join(problems)
        )
    return recipe


def parse_recipe(values: dict[str, Any], folder: Path) -> tuple[Recipe | None, list[str]]:
    """(the Recipe, []) or (None, every problem): unknown sections, each section's settings,
    the template, the files named, and settings that conflict across sections."""
    problems = [_unknown_key(key, values[key]) for key in values if key not in KNOWN_KEYS]
    sections = {}
    for key, cls in SECTIONS.items():
        sections[key], found = _section(cls, values.get(key), key)
        problems += found
    template, found = _template(values.get("template"))
    problems += found
    problems += _resolve_files(sections["data"], sections["evaluation"], folder)
    model, method = sections["model"], sections["method"]
    if model and method and method.kind == "qlora" and model.quantization != "4bit":
        problems.append("`method.kind`='qlora' needs `model.quantization`: 4bit (a CUDA GPU).")
    track_importance = values.get("track_importance", False)
    if not isinstance(track_importance, bool):
        problems.append(f"`track_importance`={track_importance!r} must be true or false.")
    if problems:
        return None, problems
    return Recipe(
        template=template,
        folder=folder,
        regularizer=values.get("regularizer"),
        track_importance=track_importance,
        **sections,
    ), []


def _unknown_key(key: str, value: Any) -> str:
    """A top-level key that is not a section, with the key path it most likely meant: the
    section that has a setting of that name (`max_steps` -> `hyperparameters.max_steps`), or
    the closest section's name (`hyperparameter.max_steps` -> `hyperparameters.max_steps`)."""
    owners = [s for s, cls in SECTIONS.items() if key in {f.name for f in dataclasses.fields(cls)}]
    close = difflib.get_close_matches(key, KNOWN_KEYS, n=1, cutoff=0.6)
    if owners:
        meant = [f"{owner}.{key}" for owner in owners]
    elif close and isinstance(value, dict) and value:
        meant = [f"{close[0]}.{name}" for name in value]
    else:
        meant = close
    guess = f" Did you mean {' or '.join(f'`{m}`' for m in meant)}?" if meant else ""
    return f"`{key}` is not a section of a recipe; known: {', '.join(KNOWN_KEYS)}.{guess}"


def _section(cls: type[Settings], values: Any, key: str) -> tuple[Any, list[str]]:
    """A section built from its mapping, or every problem in it, each with its key path."""
    if values is None:
        values = {}
    if not isinstance(values, dict):
        return None, [f"`{key}` must be a mapping of settings (name: value), not {values!r}."]
    converted, problems = cls.convert(values, key)
    try:
        section = cls(**converted)
    except WorkbenchError as error:  # the class's own checks, each naming its field
        fields = {f.name for f in dataclasses.fields(cls)}
        return None, problems + [_qualified(line, key, fields) for line in _lines(error)]
    return (None, problems) if problems else (section, [])


def _template(value: Any) -> tuple[str | Template | None, list[str]]:
    """A built-in name, a Template from a mapping of its fields, or None (suits the data)."""
    if value is None or (isinstance(value, str) and value in TEMPLATES):
        return value, []
    builtins = ", ".join(TEMPLATES)
    if not isinstance(value, dict):
        return None, [
            f"`template`={value!r}: use a built-in ({builtins}) or a mapping with `prompt` and "
            "`response` ({field} placeholders)."
        ]
    fields = {f.name: f.type for f in dataclasses.fields(Template)}
    problems = [
        f"`template.{k}` is not a Template field; known: {', '.join(fields)}."
        for k in value
        if k not in fields
    ]
    values = {"name": "custom", **{k: v for k, v in value.items() if k in fields}}
    for key, given in values.items():
        expected = bool if key == "use_chat_template" else str
        optional = key in ("prompt_no_input", "system")
        if not isinstance(given, expected) and not (optional and given is None):
            kind = "true or false" if expected is bool else "text"
            problems.append(f"`template.{key}`={given!r}: must be {kind}.")
    if problems:
        return None, problems
    try:
        return Template(**values), []
    except WorkbenchError as error:
        return None, [_qualified(line, "template", set(fields)) for line in _lines(error)]


def _resolve_files(
    data: DataSection | None, evaluation: EvaluationSection | None, folder: Path
) -> list[str]:
    """Replace each relative data path by the file found (working directory first, then the
    recipe's folder); a problem for each file found in neither (sections that failed their
    own checks are skipped)."""
    problems = []

    def found(key: str, name: str) -> str:
        for candidate in (Path(name).expanduser(), folder / name, find_path(name)):
            if candidate.is_file():
                return str(candidate)
        where = "" if Path(name).is_absolute() else f" (nor in {folder})"
        problems.append(f"`{key}`: {name} not found{where}; check the path.")
        return name

    if data is not None:
        files = [found("data.train", f) for f in data.train_files]
        if data.mix:  # keyed by the files found, not as they were named
            data.mix = {_mix_key(k, data.train_files, files): v for k, v in data.mix.items()}
        data.train = files if isinstance(data.train, (list, tuple)) else files[0]
        if data.validation:
            data.validation = found("data.validation", data.validation)
    if evaluation is not None and evaluation.file:
        evaluation.file = found("evaluation.file", evaluation.file)
    return problems


def _mix_key(key: str, given: list[str], resolved: list[str]) -> str:
    """The resolved file a `mix` key (a file as given, or its stem) names."""
    return next(r for g, r in zip(given, resolved) if key in (g, Path(g).stem))


def _lines(error: Exception) -> list[str]:
    """The problems of a settings error (a heading line, then `  - problem` lines)."""
    lines = [line.strip().removeprefix("- ") for line in str(error).splitlines()]
    items = [line for line in lines[1:] if line]
    return items or lines[:1]


def _qualified(problem: str, section: str, fields: set[str]) -> str:
    """`field` in a problem written as `section.field`, the key path in the recipe."""
    return re.sub(r"`(\w+)`", lambda m: f"`{section}.{m[1]}`" if m[1] in fields else m[0], problem)


def _raise_all(section: str, problems: list[str]) -> None:
    if problems:
        raise WorkbenchError(f"Invalid {section} settings:\n  - " + "\n  - ".join(problems))
