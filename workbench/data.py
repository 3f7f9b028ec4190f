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
CHAT_ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
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


def load_data(
    source: Any,
    *,
    format: Format | None = None,
    columns: dict[str, str] | None = None,
    task: str | None = None,
    drop_invalid: bool = False,
    verbose: bool = True,
) -> Examples:
    """Load, detect the format of, and validate a dataset.

    `source` is a path (.jsonl, .json, .csv, .tsv, .parquet), a pandas DataFrame, a list of
    dicts, a `datasets.Dataset`, or a hub dataset id (online only). `columns` renames source
    columns to the standard ones, e.g. `{"question": "instruction", "answer": "output"}`.
    Rows without a `task` get `task` (default: the file's stem).
    """
    name, records, problems = _read_source(source)
    if columns:
        records = [
            (loc, _rename(rec, columns) if isinstance(rec, dict) else rec) for loc, rec in records
        ]
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


def _rename(record: dict, columns: dict[str, str]) -> dict:
    return {columns.get(k, k): v for k, v in record.items()}


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


def normalise_record(record: dict, fmt: str, default_task: str) -> dict[str, Any]:
    """The row in the standard shape: ShareGPT becomes `messages`; `input` defaults to ''."""
    row = dict(record)
    if fmt == "sharegpt":
        row["messages"] = [
            {"role": SHAREGPT_ROLES[t["from"]], "content": t["value"]}
            for t in row.pop("conversations")
        ]
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


def _read_source(source: Any) -> tuple[str, list[tuple[int, Any]], list[Problem]]:
    """(name, [(location, record)], problems found while reading)."""
    if isinstance(source, (str, Path)):
        path = Path(source).expanduser()
        if path.exists():
            return _read_file(path)
        if isinstance(source, str) and _looks_like_hub_id(source):
            return _read_hub(source)
        raise FileNotFoundError(f"Dataset file {source} does not exist.")
    type_name = f"{type(source).__module__}.{type(source).__name__}"
    if type_name.startswith("pandas.") and hasattr(source, "to_dict"):
        return "DataFrame", _indexed(_clean_na(source.to_dict("records"))), []
    if type_name.startswith("datasets."):
        return "Dataset", _indexed(source.to_list()), []
    if isinstance(source, list):
        return "list", _indexed(source), []
    raise TypeError(
        f"Cannot load data from a {type(source).__name__}: pass a path, a pandas "
        "DataFrame, a list of dicts or a datasets.Dataset."
    )


def _indexed(records: list) -> list[tuple[int, Any]]:
    """Row numbers counted from 1, as a person counts them (files use line numbers)."""
    return list(enumerate(records, start=1))


def _looks_like_hub_id(text: str) -> bool:
    return text.count("/") == 1 and not text.startswith((".", "/", "~")) and "." not in text


def _read_file(path: Path) -> tuple[str, list[tuple[int, Any]], list[Problem]]:
    name, suffix = str(path), path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return name, *_read_jsonl(path)
    if suffix == ".json":
        text = path.read_text(encoding="utf-8")
        if not text.strip():
            return name, [], []
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            return name, *_read_jsonl(path)  # JSON Lines saved with a .json name
        if isinstance(data, dict):
            data = next((v for v in data.values() if isinstance(v, list)), [data])
        if not isinstance(data, list):
            raise DataValidationError([Problem(name, None, None, "must hold a list of rows")])
        return name, _indexed(data), []
    if suffix in (".csv", ".tsv"):
        return name, _read_csv(path, "\t" if suffix == ".tsv" else ","), []
    if suffix == ".parquet":
        import pandas as pd

        return name, _indexed(_clean_na(pd.read_parquet(path).to_dict("records"))), []
    raise WorkbenchError(
        f"{name}: unsupported file type `{suffix}`; use .jsonl, .json, .csv, .tsv or .parquet."
    )


def _read_csv(path: Path, delimiter: str) -> list[tuple[int, dict]]:
    """Rows keyed by the line each starts on (the header is line 1; a quoted field may span
    lines). Every value is text; an empty cell is ''. A short row lacks its last fields."""
    import csv

    records = []
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter=delimiter)
        header = next(reader, None) or []
        start = reader.line_num + 1
        for cells in reader:
            if any(cell.strip() for cell in cells):
                records.append((start, dict(zip(header, cells))))
            start = reader.line_num + 1
    return records


def _read_jsonl(path: Path) -> tuple[list[tuple[int, Any]], list[Problem]]:
    records, problems = [], []
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                records.append((line_number, json.loads(line.rstrip("\r\n"))))
            except json.JSONDecodeError as error:
                problems.append(
                    Problem(
                        str(path),
                        line_number,
                        None,
                        f"is not valid JSON ({error.msg} at column {error.colno})",
                    )
                )
    return records, problems


def _clean_na(records: list[dict]) -> list[dict]:
    """pandas turns missing values into NaN; make them None so they read as missing."""
    return [
        {k: (None if isinstance(v, float) and v != v else _plain(v)) for k, v in r.items()}
        for r in records
    ]


def _plain(value: Any) -> Any:
    """numpy arrays from parquet list columns -> lists, recursively."""
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return _plain(value.tolist())
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _read_hub(dataset_id: str) -> tuple[str, list[tuple[int, Any]], list[Problem]]:
    import datasets

    try:
        loaded = datasets.load_dataset(dataset_id, split="train")
    except Exception as error:  # the hub raises many types; all mean "could not get it"
        raise FileNotFoundError(
            f"`{dataset_id}` is not a local file and could not be loaded from the hub "
            f"({type(error).__name__}: {str(error)[:200]}). Offline, pass a local file or the "
            "files in sample_data/."
        ) from error
    return dataset_id, _indexed(loaded.to_list()), []
