"""Python and YAML that rebuild what a panel shows: plain calls of the public library.

Every panel in `widgets/` offers "copy as code"; this module writes that code, so each call is
written in one place and the panels only say what they hold. The code starts with
`import workbench as wb`, passes every value through `repr` (strings are quoted safely) and names
files as the user gave them. `workbench_script` puts the pieces together as one script, and
`recipe_mapping` writes the same settings as a recipe for `python -m workbench train`.
"""

from __future__ import annotations

import dataclasses
import pprint
import re
from pathlib import Path
from typing import Any

from workbench.data.loading import Examples, load_data
from workbench.evaluation.compare import DEFAULT_METRICS, needs_base_measurement
from workbench.model.generation import Decoding
from workbench.model.methods import Method
from workbench.runs.hyperparameters import Hyperparameters
from workbench.tokens.templates import TEMPLATES, Template

HEADER = "import workbench as wb"
INLINE_ROWS = 20  # rows given as objects are written into the code up to this many (readable)
TRAIN_ARGUMENTS = "template=template, method=method, settings=hyperparameters"


def script(*sections: list[str]) -> str:
    """`import workbench as wb`, then each non-empty section, a blank line between them."""
    return "\n\n".join([HEADER, *("\n".join(s) for s in sections if s)]) + "\n"


def text_literal(text: str, indent: str = "    ") -> str:
    """`repr(text)`; a long text with line breaks becomes one quoted line per line, in
    parentheses, so a template reads as it renders."""
    lines = re.findall(r"[^\n]*\n*", text)[:-1]  # each line with the blank lines after it
    if len(lines) < 2 or len(text) < 60:
        return repr(text)
    inner = "".join(f"{indent}    {line!r}\n" for line in lines)
    return f"(\n{inner}{indent})"


# -- data ----------------------------------------------------------------------------------


def data_code(
    source: Any,
    *,
    columns: dict[str, str] | None = None,
    task: str | None = None,
    drop_invalid: bool = False,
    variable: str = "examples",
) -> list[str]:
    """`variable = wb.load_data(source, ...)`: a path as the user gave it, only the options set.
    A source that is not a path (a DataFrame, a list) cannot be written down: the code asks for
    it by name."""
    options = "".join(
        f", {name}={value!r}"
        for name, value in (("columns", columns), ("task", task), ("drop_invalid", drop_invalid))
        if value
    )
    if isinstance(source, (str, Path)):
        return [f"{variable} = wb.load_data({str(source)!r}{options})"]
    kind = type(source).__name__
    return [
        f"# `source`: the {kind} the rows were loaded from (not a file); bind it first",
        f"{variable} = wb.load_data(source{options})",
    ]


def rows_code(
    examples: Examples,
    source: Any = None,
    *,
    columns: dict[str, str] | None = None,
    task: str | None = None,
) -> list[str]:
    """The lines that bind `examples`: loaded from `source` as given (with `drop_invalid` when
    the rows were dropped explicitly), or, without one, the rows themselves."""
    if source is None:
        return examples_code(examples)
    dropped = bool(examples.dropped)
    return data_code(source, columns=columns, task=task, drop_invalid=dropped)


def examples_code(examples: Examples, variable: str = "examples") -> list[str]:
    """Code for rows that were handed over as Examples: written out when there are few, else
    the rows of the file they came from, selected by position (checked: the same rows)."""
    fmt = "messages" if examples.format == "sharegpt" else examples.format  # rows normalised
    if len(examples) <= INLINE_ROWS:
        rows = pprint.pformat(examples.rows, width=96, sort_dicts=False)
        rows = rows.replace("\n", "\n    ")
        return [f"{variable} = wb.load_data(\n    {rows},\n    format={fmt!r},\n)"]
    load = f"wb.load_data({examples.source!r}, format={examples.format!r})"
    indices, total = _positions_in_file(examples)
    if indices is None:
        return [
            f"# {len(examples)} rows were given, not all of this file's or not as it holds them",
            f"{variable} = {load}",
        ]
    if indices == list(range(total)):
        return [f"{variable} = {load}"]
    chosen = f"range({indices[0]}, {indices[-1] + 1})" if _contiguous(indices) else indices
    return [f"{variable} = {load}.select({chosen})"]


def _positions_in_file(examples: Examples) -> tuple[list[int] | None, int]:
    """(where each row stands in its file as `load_data` reads it, the file's row count); None
    when the rows are not the file's (another source, renamed columns, several files)."""
    if examples.sources or not Path(examples.source).is_file():
        return None, 0
    try:
        whole = load_data(examples.source, format=examples.format, verbose=False)
    except ValueError:  # the file has invalid rows, or changed since
        return None, 0
    position = {location: i for i, location in enumerate(whole.locations)}
    indices = [position.get(location) for location in examples.locations]
    if None in indices or [whole.rows[i] for i in indices] != examples.rows:
        return None, len(whole)
    return indices, len(whole)


def _contiguous(indices: list[int]) -> bool:
    return indices == list(range(indices[0], indices[0] + len(indices)))


def filter_code(
    task: str | None, search: str, examples: str = "examples", variable: str = "shown"
) -> list[str]:
    """`shown = examples.where_task(task).search(text)`, with only the filters set ([] if none)."""
    calls = ""
    if task is not None:
        calls += f".where_task({task!r})"
    if search.strip():
        calls += f".search({search!r})"
    return [f"{variable} = {examples}{calls}  # the rows the table shows"] if calls else []


def split_code(validation: float | int, seed: int, examples: str = "examples") -> list[str]:
    """`train, validation = wb.split_data(examples, validation, seed=seed)`."""
    return [f"train, validation = wb.split_data({examples}, {validation!r}, seed={seed!r})"]


# -- template, model, settings -------------------------------------------------------------


def template_fields(template: Template) -> dict[str, Any]:
    """`name` and every field that differs from the Template defaults (a description only
    when there is one)."""
    fields = {"name": template.name}
    for f in dataclasses.fields(Template):
        value = getattr(template, f.name)
        if f.name != "name" and value != f.default:
            fields[f.name] = value
    return fields


def is_builtin(template: Template) -> bool:
    """Whether `template` is a built-in, unchanged (`wb.TEMPLATES[name]` rebuilds it)."""
    return TEMPLATES.get(template.name) == template


def template_code(template: Template, variable: str = "template") -> str:
    """`wb.TEMPLATES['alpaca']` for an unchanged built-in, else the whole `wb.Template(...)`."""
    if is_builtin(template):
        return f"{variable} = wb.TEMPLATES[{template.name!r}]"
    arguments = "".join(
        f"    {name}={text_literal(value) if isinstance(value, str) else repr(value)},\n"
        for name, value in template_fields(template).items()
    )
    return f"{variable} = wb.Template(\n{arguments})"


def model_code(name: str, quantization: str | None = None) -> str:
    """`model, tokenizer = wb.load_model(name[, quantization=...])`."""
    option = f", quantization={quantization!r}" if quantization else ""
    return f"model, tokenizer = wb.load_model({name!r}{option})"


def settings_code(method: Method, hyperparameters: Hyperparameters) -> list[str]:
    """`method = wb.Method(...)` and `hyperparameters = wb.Hyperparameters(...)`, defaults left
    out."""
    return [method.to_code("method", "wb."), hyperparameters.to_code("hyperparameters", "wb.")]


# -- training and comparing ------------------------------------------------------------------


def train_code(model: str = "model", validation: bool = True, samples: int = 3) -> list[str]:
    """`run = wb.train(...)` with the template, method and hyperparameters, then `run.wait()`."""
    rows = "train, validation" if validation else "train"
    extra = f", samples={samples!r}" if samples != 3 else ""
    return [
        f"run = wb.train(\n    {model}, tokenizer, {rows},\n    {TRAIN_ARGUMENTS}{extra},\n)",
        "run.wait()  # training runs on a thread; this blocks until it ends",
    ]


def compare_code(
    model: str = "model",
    *,
    before: bool = False,
    metrics: tuple[str, ...] | list[str] = DEFAULT_METRICS,
    labels: list[str] | None = None,
    decoding: Decoding | None = None,
) -> list[str]:
    """Answers of `rows` with the adapter off (base) and on, as `wb.compare_before_after`; with
    `before` (a model without an adapter) only the fine-tuned side, compared to `before`."""
    lines, options = [], ""
    if tuple(metrics) != DEFAULT_METRICS:
        options += f", metrics={list(metrics)!r}"
    if labels:
        options += f", labels={labels!r}"
    if decoding is not None and decoding != Decoding():
        lines.append(decoding.to_code("decoding", "wb."))
        options += ", decoding=decoding"
    if before:
        lines.append(f"after = wb.evaluate_model({model}, tokenizer, rows, template{options})")
        lines.append("summary, table = wb.compare(before, after)")
    else:
        call = f"wb.compare_before_after({model}, tokenizer, rows, template{options})"
        lines.append(f"summary, table = {call}")
    return [*lines, "print(summary)"]


def workbench_script(
    *,
    model: str,
    quantization: str | None,
    data: list[str],
    template: Template,
    method: Method,
    hyperparameters: Hyperparameters,
    compare_rows: int,
    continues: str | Path | None = None,
) -> str:
    """One script for the whole fine-tune: model, data (`data`: lines that bind `train` and
    `validation`), template, settings, the base answers when no adapter will be left to switch
    off, training, and the first `compare_rows` validation rows answered before and after.
    `continues` names the earlier run this one trained further: the script says that it trains
    this last stage alone."""
    rows = f"rows = validation.select(range({compare_rows}))  # answered before and after"
    full = needs_base_measurement(method)
    before = ["# no adapter will be left to switch off: answer the rows before training"]
    before.append("before = wb.evaluate_model(model, tokenizer, rows, template)")
    return script(
        sequence_note(continues),
        ["# the model", model_code(model, quantization)],
        ["# the data", *data],
        ["# the template", template_code(template)],
        ["# the method and hyperparameters", *settings_code(method, hyperparameters)],
        ["# training", rows, *(before if full else []), *train_code()],
        ["# before and after", *compare_code("run.model", before=full)],
    )


def recipe_mapping(
    *,
    model: str,
    quantization: str | None,
    data_file: str | Path,
    split: float | int,
    seed: int,
    template: Template,
    method: Method,
    hyperparameters: Hyperparameters,
    columns: dict[str, str] | None = None,
    drop_invalid: bool = False,
) -> dict[str, Any]:
    """The settings as a recipe (`workbench.interfaces.recipe`): model, data with its split,
    template (a built-in's name, or its fields), method and hyperparameters."""
    data: dict[str, Any] = {"train": str(data_file), "split": split, "seed": seed}
    if columns:
        data["columns"] = dict(columns)
    if drop_invalid:
        data["drop_invalid"] = True
    return {
        "model": {"name": model, "quantization": quantization},
        "data": data,
        "template": template.name if is_builtin(template) else template_fields(template),
        "method": method.to_dict(),
        "hyperparameters": hyperparameters.to_dict(),
    }


def sequence_note(continues: str | Path | None) -> list[str]:
    """Comment lines saying that a script or recipe trains only the last of tasks in sequence
    (the run it continued is not in it); [] for a run that continued none."""
    if not continues:
        return []
    return [
        f"# NOTE: in the workbench this run continued {continues} (tasks in sequence). This",
        "# trains the last stage alone, from the base model; for every stage in order use",
        "# `train_sequence(model, tokenizer, [stage_1_rows, ...], remedy=...)` from",
        "# workbench.training.sequence.",
    ]


def recipe_yaml(
    mapping: dict[str, Any], compare_rows: int = 0, continues: str | Path | None = None
) -> str:
    """A recipe mapping as YAML, under comments that say how to run it (and, with `continues`,
    that it trains only the last stage of a sequence)."""
    import yaml

    notes = [
        "# The workbench's settings as a recipe:",
        "#   python -m workbench train recipe.yaml",
    ]
    if compare_rows:
        notes += [
            f"# The notebook compared {compare_rows} validation rows before and after; a recipe",
            "# measures `evaluation: {held_out: N}` rows, split off before training: add it to",
            "# compare here too.",
        ]
    notes += sequence_note(continues)

    class Dumper(yaml.SafeDumper):
        """Texts with line breaks as `|` blocks: a template reads as it renders."""

    def text(dumper: yaml.SafeDumper, value: str):
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, text)
    body = yaml.dump(mapping, Dumper=Dumper, sort_keys=False, allow_unicode=True)
    return "\n".join(notes) + "\n\n" + body
