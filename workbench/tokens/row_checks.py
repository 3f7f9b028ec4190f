"""The checks on a dataset's rows and columns, before any token: duplicates, rows in both
training and validation, template fields empty in many rows, columns the template never uses,
and the labels of classification-like tasks. `Finding` is what every check reports;
`tokens/checks.py` runs these with the checks on tokens (`check_dataset`).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Any, Literal

from workbench.data.loading import Examples
from workbench.errors import WorkbenchError
from workbench.tokens.chat import chat_messages
from workbench.tokens.templates import Template, fill

Severity = Literal["error", "warning", "info"]
SEVERITIES: tuple[Severity, ...] = ("error", "warning", "info")  # the order findings are listed
ROWS_NAMED = 5  # rows named one by one per check; one more finding counts the rest
EMPTY_SHARE = 0.2  # a field empty in this share of rows is more likely a mapping mistake than data
LABEL_VALUES = 20  # a task is label-like with at most this many distinct responses,
LABEL_WORDS = 5  # each at most this many words long,
LABEL_ROWS = 20  # over at least this many rows (fewer say nothing about a distribution)
# Leakage is an error when more than this share of the validation rows are also trained on: a
# few shared rows (a common short question) nudge the validation loss, but past a tenth of
# them the curve mostly measures recall of trained rows, so early stopping and the choice of
# run made on it are wrong; below it, a warning.
LEAKED_SHARE = 0.1


@dataclass(frozen=True)
class Finding:
    """One thing found before training: `severity` ('error' spoils the run, 'warning' probably
    hurts it, 'info' is a fact worth seeing), the `check` that found it, `what` it is, `where`
    (`file:line`, or the file for the whole dataset) and the `fix` ('' for facts)."""

    severity: Severity
    check: str
    what: str
    where: str
    fix: str = ""

    def __str__(self) -> str:
        text = f"{self.severity} [{self.check}] {self.where}: {self.what}"
        return text + (f" Fix: {self.fix}" if self.fix else "")


def findings_summary(findings: list[Finding]) -> str:
    """'1 error, 2 warnings, 3 info' (or 'no findings')."""
    n = Counter(f.severity for f in findings)
    plural = {s: "s" if n[s] > 1 and s != "info" else "" for s in SEVERITIES}
    return ", ".join(f"{n[s]} {s}{plural[s]}" for s in SEVERITIES if n[s]) or "no findings"


def named_findings(
    rows: list[tuple[str, str]], severity: Severity, check: str, fix: str, source: str
):
    """A finding per row for the first ROWS_NAMED (where, what), and one counting the rest."""
    findings = [Finding(severity, check, what, where, fix) for where, what in rows[:ROWS_NAMED]]
    rest = rows[ROWS_NAMED:]
    if rest:
        some = ", ".join(where for where, _ in rest[:3])
        what = f"{len(rest)} more rows like these ({some}{', ...' if len(rest) > 3 else ''})"
        findings.append(Finding(severity, check, what, source, fix))
    return findings


# --- rows and columns ---------------------------------------------------------------------


def _normalised(value: Any) -> Any:
    """Text compared ignoring case and runs of whitespace, inside lists and dicts too."""
    if isinstance(value, str):
        return " ".join(value.split()).casefold()
    if isinstance(value, list):
        return [_normalised(v) for v in value]
    if isinstance(value, dict):
        return {k: _normalised(v) for k, v in value.items()}
    return value


def _content_key(row: dict[str, Any]) -> str:
    return json.dumps(_normalised({k: v for k, v in row.items() if k != "task"}), sort_keys=True)


def duplicate_rows(examples: Examples) -> list[Finding]:
    """Rows with the same content as an earlier one (ignoring case, whitespace and `task`); in
    raw text (`text` rows) repeated documents are common, and the fix says how to drop them."""
    first: dict[str, int] = {}
    repeated = []
    for i, row in enumerate(examples.rows):
        key = _content_key(row)
        if key in first:
            repeated.append((examples.where(i), f"repeats {examples.where(first[key])}"))
        else:
            first[key] = i
    fix = "Keep one of them: a repeated row is learned twice as hard and overweights its answer."
    if examples.format == "text":
        fix = (
            "Keep them if the text really repeats; to drop them, load with drop_duplicates=True "
            "(--drop-duplicates on the command line)."
        )
    return named_findings(repeated, "warning", "duplicate", fix, examples.source)


def leaked_rows(examples: Examples, validation: Examples | None) -> list[Finding]:
    """Training rows that are also validation rows: the validation loss would flatter."""
    if validation is None:
        return []
    held = {_content_key(row): j for j, row in enumerate(validation.rows)}
    leaked = [
        (examples.where(i), f"is also in validation at {validation.where(held[key])}")
        for i, row in enumerate(examples.rows)
        if (key := _content_key(row)) in held
    ]
    if not leaked:
        return []
    shared = len({_content_key(row) for row in examples.rows} & set(held))
    share = shared / len(validation)
    fix = "Remove the row from one split; validation must hold rows the model never trained on."
    severity: Severity = "warning"
    if share > LEAKED_SHARE:
        severity = "error"
        fix = (
            f"{shared} of the {len(validation)} validation rows ({share:.0%}, more than "
            f"{LEAKED_SHARE:.0%}) are trained on, so the validation loss would measure recall: "
            "split again (workbench.split_data) or remove them from the training file."
        )
    return named_findings(leaked, severity, "leakage", fix, examples.source)


def _used_columns(template: Template, columns: list[str]) -> list[str]:
    """The columns a row's text comes from: the template's fields, or for the chat template
    the columns `chat_messages` reads."""
    if not template.use_chat_template:
        return template.fields
    if "messages" in columns:
        return ["messages"]
    if "instruction" in columns:
        return ["instruction", "input", "output"]
    return ["prompt", "completion"]


def _columns(examples: Examples) -> list[str]:
    return list(dict.fromkeys(k for row in examples.rows for k in row if k != "task"))


def empty_fields(examples: Examples, template: Template) -> list[Finding]:
    """Template fields that are blank in at least EMPTY_SHARE of the rows (a missing or null
    field is the render check's). An empty `input` is by design where the template has a
    no-input prompt, or for the chat template, which leaves it out."""
    optional = template.use_chat_template or template.prompt_no_input is not None
    findings, n = [], len(examples)
    for name in _used_columns(template, _columns(examples)):
        if name == "messages" or (name == "input" and optional):
            continue
        empty = [
            examples.where(i)
            for i, row in enumerate(examples.rows)
            if isinstance(row.get(name), str) and not row[name].strip()
        ]
        if n and len(empty) >= EMPTY_SHARE * n:
            what = f"`{name}` is empty in {len(empty)} of {n} rows ({len(empty) / n:.0%})"
            fix = f"Fill `{name}`, map another column to it, or drop `{{{name}}}`."
            findings.append(Finding("warning", "empty_field", what, empty[0], fix))
    return findings


def unused_columns(examples: Examples, template: Template) -> list[Finding]:
    """Columns of the data that the template never reads."""
    used = set(_used_columns(template, _columns(examples)))
    reads = ", ".join(sorted(used)) or "nothing"
    findings = []
    for name in [c for c in _columns(examples) if c not in used]:
        what = f"template `{template.name}` never reads column `{name}` (it reads {reads})"
        fix = f"Use `{{{name}}}` in the template if the model needs it (metadata can stay)."
        findings.append(Finding("warning", "unused_column", what, examples.source, fix))
    return findings


def _response(template: Template, row: dict[str, Any]) -> str | None:
    """The text a row teaches, without a tokenizer (None when the template cannot fill it)."""
    try:
        if template.use_chat_template:
            return chat_messages(row)[-1]["content"].strip()
        return fill(template.response, row).strip()
    except WorkbenchError:
        return None


def label_findings(examples: Examples, validation: Examples | None, template: Template) -> list:
    """For label-like tasks: the label counts, and validation labels training never shows."""
    by_task: dict[str, Counter] = {}
    for row in examples.rows:
        by_task.setdefault(row["task"], Counter())[_response(template, row)] += 1
    findings = []
    for task, counts in by_task.items():
        counts.pop(None, None)
        rows = sum(counts.values())
        short = all(len(label.split()) <= LABEL_WORDS for label in counts)
        if rows < LABEL_ROWS or len(counts) > LABEL_VALUES or not short:
            by_task[task] = Counter()  # not label-like: no unseen-label check either
            continue
        shares = ", ".join(f"{label!r} {c} ({c / rows:.0%})" for label, c in counts.most_common())
        what = f"task `{task}` has {len(counts)} labels over {rows} rows: {shares}"
        findings.append(Finding("info", "labels", what, examples.source))
    unseen: dict[tuple[str, str], list[str]] = {}
    for j, row in enumerate(validation.rows if validation is not None else []):
        label = _response(template, row)
        if by_task.get(row["task"]) and label is not None and label not in by_task[row["task"]]:
            unseen.setdefault((row["task"], label), []).append(validation.where(j))
    for (task, label), places in unseen.items():
        what = (
            f"label {label!r} of task `{task}` is in {len(places)} validation rows, no training row"
        )
        fix = f"Add training rows labelled {label!r}, or move these rows out of validation."
        findings.append(Finding("warning", "unseen_label", what, places[0], fix))
    return findings
