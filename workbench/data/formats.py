"""The formats a dataset can be in: told apart by their columns, each row validated against
its format (every problem named by file, line and field) and normalised to the standard shape.
When a file's columns match no format, the advice names the mapping to the standard names,
guessed from the columns found, spelled for Python, for a recipe and for the command line.
"""

from __future__ import annotations

from typing import Any, Literal

from workbench.errors import Problem, WorkbenchError

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


# Names people give the standard columns (compared in lower case), most common first.
SYNONYMS: dict[str, tuple[str, ...]] = {
    "instruction": ("question", "query", "prompt", "instruction", "request", "q", "source"),
    "output": ("answer", "response", "completion", "output", "reply", "target", "a", "label"),
    "prompt": ("question", "query", "instruction", "input", "q", "source"),
    "completion": ("answer", "response", "output", "reply", "target", "a", "label"),
    "text": ("content", "document", "body", "passage", "sentence"),
}


def detect_format(records: list[dict], name: str = "data") -> Format:
    """The format whose marker columns appear in the rows (see FORMAT_MARKERS); an error that
    names the columns found and the mapping that would rename them otherwise."""
    keys = set().union(*(r.keys() for r in records)) if records else set()
    for fmt, markers in FORMAT_MARKERS.items():
        if all(m in keys for m in markers):
            return fmt  # type: ignore[return-value]
    expected = "; ".join(f"{f}: {', '.join(m)}" for f, m in FORMAT_MARKERS.items())
    found = ", ".join(sorted(map(str, keys))) or "none"
    mapping = guess_columns(sorted(map(str, keys - {"task"})))
    advice = (
        "Rename yours to the standard names, for example:\n" + columns_advice(mapping)
        if mapping
        else "The rows have no columns to rename."
    )
    raise WorkbenchError(
        f"{name}: could not detect the format from its columns ({found}). Expected columns for "
        f"each format: {expected}. {advice}\nOr give the format: format=... in Python, "
        "data.format in a recipe."
    )


def guess_columns(columns: list[str]) -> dict[str, str]:
    """{column found: standard name}: instruction and output (text for a lone column), each
    taken from the columns by the names people give it, else from the columns left in order."""
    if len(columns) == 1:
        return {columns[0]: "text"}
    mapping: dict[str, str] = {}
    for standard in ("instruction", "output"):
        source = guess_column(standard, [c for c in columns if c not in mapping])
        if source is not None:
            mapping[source] = standard
    left = [c for c in columns if c not in mapping]
    for standard in [s for s in ("instruction", "output") if s not in mapping.values()]:
        if left:
            mapping[left.pop(0)] = standard
    return dict(sorted(mapping.items(), key=lambda kv: kv[1] != "instruction"))


def guess_column(standard: str, columns: list[str]) -> str | None:
    """The column among `columns` most likely meant as the standard `standard` column."""
    by_name = {c.lower(): c for c in columns}
    return next((by_name[n] for n in SYNONYMS.get(standard, ()) if n in by_name), None)


def columns_advice(mapping: dict[str, str]) -> str:
    """The `columns` mapping (a column already named as it should be left out) as Python, as
    a recipe's `data.columns` and as `--columns` flags."""
    mapping = {source: standard for source, standard in mapping.items() if source != standard}
    python = ", ".join(f"{source!r}: {standard!r}" for source, standard in mapping.items())
    recipe = ", ".join(f"{source}: {standard}" for source, standard in mapping.items())
    flags = " ".join(f"--columns {source}={standard}" for source, standard in mapping.items())
    return (
        f"  in Python:           load_data(..., columns={{{python}}})\n"
        f"  in a recipe:         data.columns: {{{recipe}}}\n"
        f"  on the command line: {flags}"
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
