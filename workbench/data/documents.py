"""Raw-text documents, as continued pre-training and perplexity read them: `text` rows from a
data file, a folder of `.txt` files (one document each), a list of strings, or Examples.

Repeated documents are normal in raw text (a licence, a header, a page that appears twice):
they are kept, with a warning naming them, unless `drop_duplicates=True` drops them.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from workbench.data.loading import Examples, load_data
from workbench.data.shipped import find_path
from workbench.errors import WorkbenchError

Documents = Examples | str | Path | list[str]


def read_documents(source: Documents, *, drop_duplicates: bool = False) -> Examples:
    """Raw-text documents as `text` Examples: Examples in the `text` format, a folder of `.txt`
    files (one document each), a data file with a `text` column, or a list of strings.
    Documents that repeat an earlier one are kept with a warning, or dropped with
    `drop_duplicates=True`."""
    if isinstance(source, Examples):
        documents = _unique(source) if drop_duplicates else source
    elif isinstance(source, (str, Path)) and find_path(source).is_dir():
        return _text_folder(find_path(source), drop_duplicates)
    elif isinstance(source, list) and all(isinstance(t, str) for t in source):
        rows = [{"text": t} for t in source]
        documents = load_data(rows, format="text", drop_duplicates=drop_duplicates, verbose=False)
    else:
        documents = load_data(source, drop_duplicates=drop_duplicates, verbose=False)
    if documents.format != "text":
        raise WorkbenchError(
            f"{documents.source}: continued pre-training reads raw text (rows with a `text` "
            f"column, or a folder of .txt files), but these are {documents.format!r} rows. "
            "Instruction rows train with workbench.train(...) instead."
        )
    return documents


def _unique(documents: Examples) -> Examples:
    """The documents without those whose text repeats an earlier one's."""
    first: dict[str, int] = {}
    for i, row in enumerate(documents.rows):
        first.setdefault(row.get("text"), i)
    return documents.select(sorted(first.values()))


def _text_folder(folder: Path, drop_duplicates: bool = False) -> Examples:
    """Every `.txt` file of `folder` (sorted by name) as one document; empty files and files
    that are not UTF-8 are errors naming them; a file that repeats another is kept with a
    warning (dropped with `drop_duplicates`)."""
    files = sorted(p for p in folder.glob("*.txt") if p.is_file())
    if not files:
        raise FileNotFoundError(f"{folder} holds no .txt files: put one document in each.")
    rows, sources, seen, problems, repeats = [], [], {}, [], []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8").removeprefix("\ufeff")
        except UnicodeDecodeError:
            problems.append(f"{path}: not UTF-8 text; re-save it as UTF-8")
            continue
        if not text.strip():
            problems.append(f"{path}: empty; remove it or write the document into it")
            continue
        if text in seen:
            repeats.append(f"{path.name} repeats {seen[text].name}")
            if drop_duplicates:
                continue
        seen.setdefault(text, path)
        rows.append({"text": text, "task": folder.name})
        sources.append(str(path))
    if problems:
        raise WorkbenchError("Documents that cannot be trained on:\n  - " + "\n  - ".join(problems))
    if repeats:
        done = "dropped (drop_duplicates=True)" if drop_duplicates else "kept"
        fix = "" if drop_duplicates else "; pass drop_duplicates=True to drop them"
        warnings.warn(
            f"{folder}: {len(repeats)} file(s) repeat another ({', '.join(repeats[:3])}"
            f"{', ...' if len(repeats) > 3 else ''}): {done}{fix}.",
            stacklevel=3,
        )
    return Examples(rows, "text", str(folder), [1] * len(rows), sources=sources)
