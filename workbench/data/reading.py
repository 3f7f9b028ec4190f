"""Reading datasets as people bring them: files of every usual kind, frames, lists, hub ids.

Each reader returns `(name, [(location, record)], problems)`: the location is what a person
looks up (a file's line, a spreadsheet's row), and a row that cannot even be read (bytes that
are not UTF-8, a line that is not JSON) becomes a problem naming it, never a bare exception, so
`load_data(..., drop_invalid=True)` can drop it. Spreadsheet habits are handled: a UTF-8
byte-order mark, CRLF line ends, `;` as the separator, and invisible characters around column
names (columns are known by their visible names).
"""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path
from typing import Any

from workbench.data.shipped import find_path
from workbench.errors import DataValidationError, Problem, WorkbenchError

Records = list[tuple[int, Any]]
SUFFIXES = (".jsonl", ".ndjson", ".json", ".csv", ".tsv", ".parquet", ".xlsx")
# keys a single JSON object may carry as a field of one row, rather than wrap a list of rows
ROW_FIELDS = {"messages", "conversations", "chosen", "rejected", "text", "instruction", "prompt"}


def read_source(source: Any, sheet: str | int | None = None) -> tuple[str, Records, list[Problem]]:
    """(name, [(location, record)], problems found while reading)."""
    if isinstance(source, (str, Path)):
        path = find_path(source)
        if path.exists():
            return read_file(path, sheet)
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


def read_file(path: Path, sheet: str | int | None = None) -> tuple[str, Records, list[Problem]]:
    name, suffix = str(path), path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return name, *_read_jsonl(path)
    if suffix == ".json":
        return name, *_read_json(path)
    if suffix in (".csv", ".tsv"):
        return name, _read_csv(path, tab=suffix == ".tsv"), []
    if suffix == ".parquet":
        import pandas as pd

        return name, _indexed(_clean_na(pd.read_parquet(path).to_dict("records"))), []
    if suffix == ".xlsx":
        return name, _read_xlsx(path, sheet), []
    if suffix in (".xls", ".ods", ".numbers"):
        raise WorkbenchError(
            f"{name}: `{suffix}` workbooks are not read here. Save the sheet as .xlsx, or as "
            "CSV UTF-8 (File > Save as > 'CSV UTF-8'), and load that."
        )
    raise WorkbenchError(f"{name}: unsupported file type `{suffix}`; use {', '.join(SUFFIXES)}.")


def visible(name: Any) -> Any:
    """A column name as a person sees it: no byte-order mark, zero-width or other invisible
    characters, no-break spaces as spaces, no spaces around it."""
    if not isinstance(name, str):
        return name
    kept = "".join(" " if ch == "\u00a0" else ch for ch in name if not _invisible(ch))
    return kept.strip()


def _invisible(ch: str) -> bool:
    return unicodedata.category(ch) in ("Cf", "Cc") and ch not in "\t\n"


def _decode(raw: bytes, name: str, line: int) -> tuple[str | None, Problem | None]:
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as error:
        bad = raw[error.start]
        return None, Problem(
            name,
            line,
            None,
            f"is not UTF-8 text (byte 0x{bad:02x} at column {error.start + 1}). Re-save the "
            "file as UTF-8 (in a spreadsheet: 'CSV UTF-8'), or pass drop_invalid=True.",
        )


def _file_text(path: Path) -> str:
    """A whole file as UTF-8 text (a byte-order mark dropped); bytes that are not UTF-8 are an
    error naming their line and column."""
    raw = path.read_bytes().removeprefix(b"\xef\xbb\xbf")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        start = raw.rfind(b"\n", 0, error.start) + 1
        line = raw[:start].count(b"\n") + 1
        _, problem = _decode(raw[start:].split(b"\n")[0], str(path), line)
        raise DataValidationError([problem]) from None


def _read_jsonl(path: Path) -> tuple[Records, list[Problem]]:
    records, problems = [], []
    for number, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]  # a byte-order mark, as some editors write
        line, problem = _decode(raw, str(path), number)
        if problem is not None:
            problems.append(problem)
            continue
        if not line.strip():
            continue
        try:
            records.append((number, json.loads(line.rstrip("\r"))))
        except json.JSONDecodeError as error:
            message = f"is not valid JSON ({error.msg} at column {error.colno})"
            problems.append(Problem(str(path), number, None, message))
    return records, problems


def _read_json(path: Path) -> tuple[Records, list[Problem]]:
    text = _file_text(path)
    if not text.strip():
        return [], []
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return _read_jsonl(path)  # JSON Lines saved with a .json name
    if isinstance(data, dict):
        data = _rows_of_object(data, str(path))
    if not isinstance(data, list):
        raise DataValidationError([Problem(str(path), None, None, "must hold a list of rows")])
    return _indexed(data), []


def _rows_of_object(data: dict, name: str) -> list:
    """One JSON object: a wrapper of the rows (`{"data": [{...}, ...]}`, one key holding a
    list of objects), or else one row (even with list-valued fields such as `messages`)."""
    if len(data) == 1:
        ((key, value),) = data.items()
        if (
            key not in ROW_FIELDS
            and isinstance(value, list)
            and value
            and all(isinstance(v, dict) for v in value)
        ):
            return value
    return [data]


def _read_csv(path: Path, tab: bool) -> Records:
    """Rows keyed by the line each starts on (the header is line 1; a quoted field may span
    lines). Every value is text; an empty cell is ''. A short row lacks its last fields."""
    import csv
    import io

    text = _file_text(path)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_delimiter(text, tab))
    header = [visible(h) for h in next(reader, None) or []]
    records, start = [], reader.line_num + 1
    for cells in reader:
        if any(cell.strip() for cell in cells):
            records.append((start, dict(zip(header, cells))))
        start = reader.line_num + 1
    return records


def _delimiter(text: str, tab: bool) -> str:
    """`\\t` for .tsv; for .csv `;` when the header has more of them than commas (spreadsheets
    with European settings write it), else `,`."""
    if tab:
        return "\t"
    header = text.split("\n", 1)[0]
    return ";" if header.count(";") > header.count(",") else ","


def _read_xlsx(path: Path, sheet: str | int | None) -> Records:
    """A workbook's sheet (the first unless named) with its first row as the header; rows are
    numbered as the spreadsheet shows them (the header is row 1)."""
    try:
        import openpyxl
    except ImportError as error:
        raise WorkbenchError(
            f"{path}: reading .xlsx needs openpyxl (pip install openpyxl), or save the sheet as "
            "CSV UTF-8 and load that."
        ) from error
    book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    try:
        if sheet is None:
            table = book.worksheets[0]
        elif isinstance(sheet, int):
            table = book.worksheets[sheet]
        elif sheet in book.sheetnames:
            table = book[sheet]
        else:
            raise WorkbenchError(
                f"{path}: no sheet named {sheet!r}; its sheets: {', '.join(book.sheetnames)}."
            )
        rows = table.iter_rows(values_only=True)
        header = [visible(h) for h in next(rows, None) or []]
        records = []
        for number, cells in enumerate(rows, start=2):
            if any(c is not None and str(c).strip() for c in cells):
                values = ["" if c is None else str(c) for c in cells]
                records.append((number, dict(zip(header, values))))
        return records
    finally:
        book.close()


def _indexed(records: list) -> Records:
    """Row numbers counted from 1, as a person counts them (files use line numbers)."""
    return list(enumerate(records, start=1))


def _looks_like_hub_id(text: str) -> bool:
    return text.count("/") == 1 and not text.startswith((".", "/", "~")) and "." not in text


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


def _read_hub(dataset_id: str) -> tuple[str, Records, list[Problem]]:
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
