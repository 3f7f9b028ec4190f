"""Load instruction data from files or objects, detect its format, validate every row.

Every problem is reported with the file, the row (the line, for JSONL and CSV) and the field,
all at once. Bad rows are never dropped silently: `drop_invalid=True` drops them explicitly and
keeps the list in `Examples.dropped`.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from workbench.data.reading import read_source, visible
from workbench.errors import DataValidationError, Problem, WorkbenchError

Format = Literal["alpaca", "prompt_completion", "messages", "sharegpt", "text", "preference"]

# Checked in this order: the first format whose marker columns are present wins.
FORMAT_MARKERS: dict[str, tuple[str, ...]] = {
    "preference": ("chosen", "rejected"),  # DPO pairs; the prompt is `prompt` or `instruction`
    "messages": ("messages",),
    "sharegpt": ("conversations",),
    "alpaca": ("instruction", "output"),
    "prompt_completion": ("prompt", "completion"),
    "text": ("text",),
}
REQUIRED_TEXT: dict[str, tuple[str, ...]] = {
    "alpaca": ("instruction", "output"),
    "prompt_completion": ("prompt", "completion"),
    "text": ("text",),
    "preference": ("chosen", "rejected"),
}
OPTIONAL_TEXT = {"alpaca": ("input",), "preference": ("prompt", "instruction", "input")}
CHAT_ROLES = ("system", "user", "assistant", "tool")  # tool turns are context, never learned
SHAREGPT_ROLES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "tool": "tool",
    "observation": "tool",  # a tool's result, in some ShareGPT exports
}


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
    verbose: bool = True,
    sheet: str | int | None = None,
) -> Examples:
    """Load, detect the format of, and validate a dataset.

    `source` is a path (.jsonl, .json, .csv, .tsv, .parquet, .xlsx: the first sheet, or
    `sheet`), a pandas DataFrame, a list of dicts, a `datasets.Dataset`, or a hub dataset id
    (online only). `columns` renames source columns (by their visible names) to the standard
    ones, e.g. `{"question": "instruction", "answer": "output"}`.
    Rows without a `task` get `task` (default: the file's stem).
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
    rows, locations = [], []
    seen: dict[str, int] = {}
    for location, record in records:
        row_problems = validate_record(record, detected, name, location)
        if not row_problems:
            row = normalise_record(record, detected, default_task)
            key = json.dumps({k: v for k, v in row.items() if k != "task"}, sort_keys=True)
            if key in seen:
                row_problems = [
                    Problem(name, location, None, f"duplicates row {seen[key]} (same content)")
                ]
            else:
                seen[key] = location
        if row_problems:
            problems.extend(row_problems)
            continue
        rows.append(row)
        locations.append(location)
    examples = Examples(rows, detected, name, locations)
    if verbose:
        invalid = len({p.row for p in problems})
        print(
            f"{name}: {len(rows)} valid rows"
            + (f" ({invalid} invalid)" if invalid else "")
            + f", detected format: {detected}"
            + ("" if format is None else " (given)")
        )
    return _apply_problems(examples, problems, drop_invalid)


def _apply_problems(examples: Examples, problems: list[Problem], drop_invalid: bool) -> Examples:
    if not problems:
        return examples
    if not drop_invalid:
        raise DataValidationError(
            problems, "Fix these rows, or pass drop_invalid=True to drop them explicitly."
        )
    if not examples.rows:
        raise DataValidationError(problems, "Every row is invalid: nothing is left to train on.")
    examples.dropped = problems
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


def detect_format(records: list[dict], name: str = "data") -> Format:
    """The format whose marker columns appear in the rows (see FORMAT_MARKERS)."""
    keys = set().union(*(r.keys() for r in records)) if records else set()
    for fmt, markers in FORMAT_MARKERS.items():
        if all(m in keys for m in markers):
            return fmt  # type: ignore[return-value]
    expected = "; ".join(f"{f}: {', '.join(m)}" for f, m in FORMAT_MARKERS.items())
    raise WorkbenchError(
        f"{name}: could not detect the format from its columns ({', '.join(sorted(keys)) or 'none'}"
        f"). Expected columns for each format: {expected}. Rename yours with "
        "columns={'your_column': 'instruction', ...}, or pass format=..."
    )


def validate_record(record: Any, fmt: str, source: str, location: int) -> list[Problem]:
    """Every problem with one raw record, or an empty list."""
    if not isinstance(record, dict):
        return [
            Problem(
                source,
                location,
                None,
                f"is a JSON {type(record).__name__}, expected an object with fields",
            )
        ]
    if fmt in ("messages", "sharegpt"):
        return _validate_conversation(record, fmt, source, location)
    problems = []
    for name in REQUIRED_TEXT[fmt] + OPTIONAL_TEXT.get(fmt, ()):
        required = name in REQUIRED_TEXT[fmt]
        if name not in record:
            if required:
                problems.append(Problem(source, location, name, "is missing"))
            continue
        value = record[name]
        if value is None and not required:
            continue
        if not isinstance(value, str):
            problems.append(
                Problem(
                    source, location, name, f"must be text, got {_type_name(value)} ({value!r:.40})"
                )
            )
        elif required and not value.strip():
            problems.append(Problem(source, location, name, "is empty"))
    if "task" in record and not isinstance(record["task"], str):
        problems.append(Problem(source, location, "task", "must be text"))
    if fmt == "preference" and not (record.get("prompt") or record.get("instruction")):
        problems.append(
            Problem(source, location, "prompt", "is missing: give `prompt` (or `instruction`)")
        )
    return problems


def _validate_conversation(record: dict, fmt: str, source: str, location: int) -> list[Problem]:
    column = "messages" if fmt == "messages" else "conversations"
    role_key, text_key = ("role", "content") if fmt == "messages" else ("from", "value")
    allowed = CHAT_ROLES if fmt == "messages" else tuple(SHAREGPT_ROLES)
    turns = record.get(column)
    if turns is None:
        return [Problem(source, location, column, "is missing")]
    if not isinstance(turns, list) or not turns:
        return [Problem(source, location, column, "must be a non-empty list of turns")]
    problems = []
    for i, turn in enumerate(turns):
        where = f"{column}[{i}]"
        if not isinstance(turn, dict):
            problems.append(Problem(source, location, where, "must be an object"))
            continue
        if turn.get(role_key) not in allowed:
            problems.append(
                Problem(
                    source,
                    location,
                    f"{where}.{role_key}",
                    f"is {turn.get(role_key)!r}; expected one of {allowed}",
                )
            )
        if text_key not in turn:
            problems.append(Problem(source, location, f"{where}.{text_key}", "is missing"))
        elif isinstance(turn[text_key], list):  # content as parts: text parts are joined
            problems += _content_part_problems(turn[text_key], source, location, where, text_key)
        elif not isinstance(turn[text_key], str):
            problems.append(
                Problem(
                    source,
                    location,
                    f"{where}.{text_key}",
                    f"must be text, got {_type_name(turn[text_key])}",
                )
            )
    last = turns[-1]
    last_role = last.get(role_key) if isinstance(last, dict) else None
    if last_role in allowed and SHAREGPT_ROLES.get(last_role, last_role) != "assistant":
        problems.append(
            Problem(
                source,
                location,
                f"{column}[{len(turns) - 1}]",
                "the last turn must be the assistant's reply (nothing to learn)",
            )
        )
    return problems


def _content_part_problems(parts: list, source: str, location: int, where: str, key: str):
    """Content given as a list of parts: only text parts are supported."""
    problems = []
    for j, part in enumerate(parts):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind != "text" or not isinstance(part.get("text"), str):
            what = f"a {kind!r} part" if kind else f"{_type_name(part)}"
            problems.append(
                Problem(
                    source,
                    location,
                    f"{where}.{key}[{j}]",
                    f"is {what}; only text parts ({{'type': 'text', 'text': ...}}) are supported "
                    "(images and audio are not: drop them or describe them in text)",
                )
            )
    return problems


def _text_of(content: Any) -> str:
    """Content as one text: a list of text parts joined with blank lines."""
    if isinstance(content, list):
        return "\n\n".join(part["text"] for part in content)
    return content


def normalise_record(record: dict, fmt: str, default_task: str) -> dict[str, Any]:
    """The row in the standard shape: ShareGPT becomes `messages`, content given as parts
    becomes text; `input` defaults to ''."""
    row = dict(record)
    if fmt == "sharegpt":
        row["messages"] = [
            {"role": SHAREGPT_ROLES[t["from"]], "content": _text_of(t["value"])}
            for t in row.pop("conversations")
        ]
    elif fmt == "messages":
        row["messages"] = [{**m, "content": _text_of(m["content"])} for m in row["messages"]]
    if fmt in ("alpaca", "preference") and row.get("input") is None:
        row["input"] = ""
    row["task"] = row.get("task") or default_task
    return row


def _type_name(value: Any) -> str:
    return {
        dict: "an object",
        list: "a list",
        type(None): "null",
        bool: "a boolean",
        int: "a number",
        float: "a number",
    }.get(type(value), type(value).__name__)
