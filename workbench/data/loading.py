"""Load instruction data from files or objects, detect its format, validate every row.

Every problem is reported with the file, the row (the line, for JSONL and CSV) and the field,
all at once. Bad rows are never dropped silently: `drop_invalid=True` drops them explicitly and
keeps the list in `Examples.dropped` (as `drop_duplicates=True` does for repeated rows). The
formats and the checks of each row are in `workbench/data/formats.py`.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from workbench.data.formats import FORMAT_MARKERS as FORMAT_MARKERS  # re-exported
from workbench.data.formats import Format, detect_format, normalise_record, validate_record
from workbench.data.reading import read_source, visible
from workbench.errors import DataValidationError, Problem, WorkbenchError


@dataclass
class Examples:
    """Validated rows in one format, each knowing where it came from.

    `rows` are dicts with the format's fields (ShareGPT is normalised to `messages`) plus `task`.
    `locations[i]` is row i's line (JSONL, CSV) or index (other sources) in `source`.
    """

    rows: list[dict[str, Any]]
    format: Format
    source: str
    locations: list[int]
    dropped: list[Problem] = field(default_factory=list)
    sources: list[str] | None = None  # per-row file, when rows were mixed from several

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.rows[index]

    def __iter__(self):
        return iter(self.rows)

    def source_of(self, index: int) -> str:
        """The file (or object) row `index` came from."""
        return self.sources[index] if self.sources else self.source

    def where(self, index: int) -> str:
        """`source:line` of row `index`, for error messages."""
        return f"{self.source_of(index)}:{self.locations[index]}"

    @property
    def tasks(self) -> dict[str, int]:
        """Rows per task."""
        counts: dict[str, int] = {}
        for row in self.rows:
            counts[row["task"]] = counts.get(row["task"], 0) + 1
        return counts

    def select(self, indices: Iterable[int]) -> Examples:
        """A subset, keeping provenance."""
        indices = list(indices)
        return replace(
            self,
            rows=[self.rows[i] for i in indices],
            locations=[self.locations[i] for i in indices],
            dropped=list(self.dropped),
            sources=[self.sources[i] for i in indices] if self.sources else None,
        )

    def search(self, text: str) -> Examples:
        """The rows whose text contains `text`, ignoring case ('' or blanks: every row).

        A row's text is every string field but `task`, and each message's content for
        conversations.
        """
        needle = text.strip().lower()
        if not needle:
            return self
        return self.select(
            i
            for i, row in enumerate(self.rows)
            if any(needle in t.lower() for t in _searchable_texts(row))
        )

    def where_task(self, task: str | None) -> Examples:
        """The rows of one task (None: every row); an unknown task is an error that lists the
        known ones."""
        if task is None:
            return self
        if task not in self.tasks:
            raise WorkbenchError(
                f"`task`={task!r} is not in {self.source}: pick one of "
                f"{', '.join(map(repr, self.tasks))}, or None for every row."
            )
        return self.select(i for i, row in enumerate(self.rows) if row["task"] == task)

    def constant_fields(self) -> dict[str, str]:
        """Text fields with the same non-empty value in every row (e.g. one instruction that
        every row shares); empty for fewer than two rows, where nothing is shared."""
        if len(self.rows) < 2:
            return {}
        first = self.rows[0]
        return {
            k: v
            for k, v in first.items()
            if k != "task" and isinstance(v, str) and v and all(r.get(k) == v for r in self.rows)
        }

    def to_pandas(self):
        import pandas as pd

        return pd.DataFrame(self.rows).assign(_source=self.source, _location=self.locations)

    def to_hf(self):
        """As a `datasets.Dataset`."""
        import datasets

        return datasets.Dataset.from_list(self.rows)

    def __repr__(self) -> str:
        return (
            f"Examples({len(self)} rows, format={self.format!r}, source={self.source!r}, "
            f"tasks={self.tasks})"
        )


def _searchable_texts(row: dict[str, Any]) -> list[str]:
    """The texts of a row that `Examples.search` looks through."""
    texts = [v for k, v in row.items() if k != "task" and isinstance(v, str)]
    texts += [str(m.get("content", "")) for m in row.get("messages") or []]
    return texts


def load_data(
    source: Any,
    *,
    format: Format | None = None,
    columns: dict[str, str] | None = None,
    task: str | None = None,
    drop_invalid: bool = False,
    drop_duplicates: bool = False,
    verbose: bool = True,
    sheet: str | int | None = None,
) -> Examples:
    """Load, detect the format of, and validate a dataset.

    `source` is a path (.jsonl, .json, .csv, .tsv, .parquet, .xlsx: the first sheet, or
    `sheet`), a pandas DataFrame, a list of dicts, a `datasets.Dataset`, or a hub dataset id
    (online only). `columns` renames source columns (by their visible names) to the standard
    ones, e.g. `{"question": "instruction", "answer": "output"}`.
    Rows without a `task` get `task` (default: the file's stem).
    A row that repeats an earlier one is an error in supervised data (it would be learned
    twice as hard) and kept with a warning in raw text (`text` rows: documents often repeat);
    `drop_duplicates=True` drops them, `drop_invalid=True` drops invalid rows, each listed.
    """
    name, records, problems = read_source(source, sheet)
    if columns:
        records = _renamed(records, columns, name)
    if not records and not problems:
        raise DataValidationError(
            [Problem(name, None, None, "the dataset is empty (no rows)")],
            "Check the path, or that the file was fully written.",
        )
    detected = format or detect_format([r for _, r in records if isinstance(r, dict)], name)
    if detected not in FORMAT_MARKERS:
        raise WorkbenchError(f"`format`={detected!r} is not one of {', '.join(FORMAT_MARKERS)}.")
    default_task = task or (Path(name).stem if Path(name).suffix else "default")
    examples, invalid_rows, repeated = _valid_rows(
        records, detected, name, default_task, drop_duplicates
    )
    problems += invalid_rows
    if verbose:
        invalid = len({p.row for p in problems})
        print(
            f"{name}: {len(examples)} valid rows"
            + (f" ({invalid} invalid)" if invalid else "")
            + f", detected format: {detected}"
            + ("" if format is None else " (given)")
        )
    _note_repeats(examples, repeated, drop_duplicates)
    return _apply_problems(examples, problems, drop_invalid)


def _valid_rows(
    records, detected: str, name: str, default_task: str, drop_duplicates: bool
) -> tuple[Examples, list[Problem], list[Problem]]:
    """(the valid rows, the problems of the others, the repeats dropped or kept). A row that
    repeats an earlier one is a problem in supervised data; in raw text (`text` rows) it is
    a repeat, kept, or dropped with `drop_duplicates` (as it is in any format)."""
    rows, locations, problems, repeated = [], [], [], []
    seen: dict[str, int] = {}
    for location, record in records:
        row_problems = validate_record(record, detected, name, location)
        if row_problems:
            problems.extend(row_problems)
            continue
        row = normalise_record(record, detected, default_task)
        key = json.dumps({k: v for k, v in row.items() if k != "task"}, sort_keys=True)
        if key in seen:
            repeat = Problem(name, location, None, f"duplicates row {seen[key]} (same content)")
            if not (drop_duplicates or detected == "text"):
                problems.append(repeat)  # supervised rows: refused (or dropped as invalid)
                continue
            repeated.append(repeat)  # dropped, or kept: raw text often repeats
            if drop_duplicates:
                continue
        else:
            seen[key] = location
        rows.append(row)
        locations.append(location)
    return Examples(rows, detected, name, locations), problems, repeated


def _note_repeats(examples: Examples, repeated: list[Problem], dropped: bool) -> None:
    """Say which rows repeat an earlier one: dropped (listed in `dropped`), or, for raw text,
    kept (a repeated document, a header or a licence, is normal in text)."""
    if not repeated:
        return
    some = ", ".join(f"{p.source}:{p.row}" for p in repeated[:3])
    more = ", ..." if len(repeated) > 3 else ""
    if dropped:
        examples.dropped += repeated
        warnings.warn(
            f"{examples.source}: dropped {len(repeated)} row(s) that repeat an earlier one "
            f"({some}{more}; drop_duplicates=True); see Examples.dropped.",
            stacklevel=3,
        )
    else:
        warnings.warn(
            f"{examples.source}: {len(repeated)} document(s) repeat an earlier one ({some}"
            f"{more}); kept, as raw text often repeats. Pass drop_duplicates=True (or "
            "--drop-duplicates on the command line) to drop them.",
            stacklevel=3,
        )


def _apply_problems(examples: Examples, problems: list[Problem], drop_invalid: bool) -> Examples:
    if not problems:
        return examples
    repeats = any(p.message.startswith("duplicates row") for p in problems)
    if not drop_invalid:
        only_repeats = all(p.message.startswith("duplicates row") for p in problems)
        remedies = ("drop_duplicates",) if only_repeats else ("drop_invalid",)
        remedies += ("drop_duplicates",) if repeats and not only_repeats else ()
        raise DataValidationError(problems, "Fix these rows.", remedies)
    if not examples.rows:
        raise DataValidationError(problems, "Every row is invalid: nothing is left to train on.")
    examples.dropped += problems
    bad_rows = len({p.row for p in problems})
    warnings.warn(
        f"{examples.source}: dropped {bad_rows} invalid row(s) (drop_invalid=True); "
        "see Examples.dropped for the reasons.",
        stacklevel=3,
    )
    return examples


def _renamed(records: list[tuple[int, Any]], columns: dict[str, str], name: str) -> list:
    """Records with columns renamed by `columns`, matched by their visible names; a column
    that no record has is an error listing the ones it does have."""
    wanted = {visible(k): v for k, v in columns.items()}
    present = {visible(k) for _, r in records if isinstance(r, dict) for k in r}
    missing = [k for k in wanted if k not in present]
    if missing:
        raise WorkbenchError(
            f"{name}: `columns` names {', '.join(map(repr, missing))}, which the data does not "
            f"have; its columns: {', '.join(map(repr, sorted(present, key=str)))}."
        )
    return [
        (loc, {wanted.get(visible(k), k): v for k, v in r.items()} if isinstance(r, dict) else r)
        for loc, r in records
    ]
