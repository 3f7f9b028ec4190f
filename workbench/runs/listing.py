"""The run history as text for a terminal (`python -m workbench runs [--compare ...]`).

A listing has more columns than one line holds, and some values are long (model paths, the
texts of a template): each value is cut to `VALUE_WIDTH` characters with an ellipsis in the
middle (a path keeps its end), and pandas wraps the columns into blocks of at most `WIDTH`
characters, each block led by the run's name. A comparison shows a template by its name.
"""

from __future__ import annotations

from typing import Any

from workbench.runs.history import RunComparison, RunRecord, runs_table

WIDTH = 120  # characters a line may take: a terminal this wide shows each line unbroken
VALUE_WIDTH = 40  # the longest value shown in a cell (a run's name is never cut)


def shorten(value: Any, width: int = VALUE_WIDTH) -> Any:
    """Text on one line (runs of whitespace, newlines included, become one space), cut in the
    middle with an ellipsis when longer than `width`; other values unchanged."""
    if not isinstance(value, str):
        return value
    text = " ".join(value.split())
    if len(text) <= width:
        return text
    head = (width - 1) // 2
    return text[:head] + "…" + text[len(text) - (width - 1 - head) :]


def runs_text(records: list[RunRecord], width: int = WIDTH) -> str:
    """The listing of `runs_table`, every line within `width` characters."""
    if not records:
        return "no runs"
    frame = _shortened(runs_table(records).set_index("run"))  # a run's name stays whole
    return frame.to_string(line_width=width)


def comparison_text(comparison: RunComparison, width: int = WIDTH) -> str:
    """The settings that differ (a template by its name) and the results, side by side,
    every line within `width` characters."""
    differences = _templates_by_name(comparison.differences)
    parts = [
        _shortened(differences).to_string(line_width=width)
        if len(differences)
        else "same settings",
        comparison.results.to_string(line_width=width),
    ]
    return "\n\n".join(parts)


def _shortened(frame):
    """`frame` with every value shortened (column by column: pandas 2.0 has no DataFrame.map)."""
    return frame.apply(lambda column: column.map(shorten))


def _templates_by_name(differences):
    """The differing settings with a template's texts left out when its name differs (the
    name says which template it is); templates of the same name keep their differing texts."""
    if "template.name" not in differences.index:
        return differences
    texts = [k for k in differences.index if k.startswith("template.") and k != "template.name"]
    return differences.drop(index=texts)
