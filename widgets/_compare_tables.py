"""The HTML of CompareView: word differences, the totals, the row-by-row table and learned
beside retained (plain functions of Evaluations, so a report or a test can call them too)."""

from __future__ import annotations

import difflib
import html
import re

from workbench.evaluation.compare import Evaluation
from workbench.widgets._common import CELL_STYLE, TABLE_STYLE, html_table

CELL = CELL_STYLE
NO_BASE = (
    "No base answers: this model has no adapter to switch off (full fine-tuning changed the "
    "weights themselves). Measure the base model before training and pass it as `before=` "
    "(evaluate_model(model, tokenizer, rows) before train())."
)


def word_diff_html(a: str, b: str) -> str:
    """`b` as HTML, compared word by word with `a`: new words green, removed words struck red."""
    old, new = _words(a), _words(b)
    matcher = difflib.SequenceMatcher(None, [w.strip() for w in old], [w.strip() for w in new])
    out = []
    for op, a0, a1, b0, b1 in matcher.get_opcodes():
        if op == "equal":
            out.append(html.escape("".join(new[b0:b1])))
            continue
        if op in ("delete", "replace"):
            removed = html.escape("".join(old[a0:a1]).strip())
            out.append(f"<del style='color:#b00020;background:#fdecea'>{removed}</del> ")
        if op in ("insert", "replace"):
            added = "".join(new[b0:b1])
            tail = added[len(added.rstrip()) :]
            out.append(
                "<ins style='background:#d4f7d4;text-decoration:none'>"
                f"{html.escape(added.rstrip())}</ins>{html.escape(tail)}"
            )
    return "".join(out)


def _words(text: str) -> list[str]:
    """Words with the whitespace after them, so the text can be put back together."""
    lead = text[: len(text) - len(text.lstrip())]
    words = re.findall(r"\S+\s*", text)
    if lead and words:
        words[0] = lead + words[0]
    return words


def forgetting_html(table) -> str:
    """Learned (trained tasks) and retained (probe tasks) side by side, as an HTML table."""
    if table is None:
        return ""
    frame = table.reset_index()
    columns = [str(c) for c in frame.columns]
    rows = [[_cell_text(v) for v in record] for record in frame.itertuples(index=False)]
    return "<div><b>Learned and retained</b> (forgetting probe)</div>" + html_table(columns, rows)


def _cell_text(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def summary_table_html(
    before: Evaluation | None,
    after: Evaluation | None,
    titles: tuple[str, str] = ("base", "fine-tuned"),
) -> str:
    """Totals per metric: base, fine-tuned (or the given column titles) and the change; ''
    before `after` is measured (the status says what to do)."""
    if after is None:
        return ""
    head = "".join(
        f"<th style='{CELL}'>{html.escape(c)}</th>" for c in ("metric", *titles, "change")
    )
    rows = []
    for name, value in after.scores.items():
        old = before.scores.get(name) if before else None
        change = "" if old is None else f"{value - old:+.3g}"
        rows.append(
            f"<tr><td style='{CELL}'>{html.escape(name)}</td><td style='{CELL}'>"
            f"{'' if old is None else f'{old:.3g}'}</td><td style='{CELL}'>{value:.3g}</td>"
            f"<td style='{CELL}'>{change}</td></tr>"
        )
    note = "" if before is not None else f"<div><i>{html.escape(NO_BASE)}</i></div>"
    return f"{note}<table style='{TABLE_STYLE}'><tr>{head}</tr>{''.join(rows)}</table>"


def rows_table_html(
    before: Evaluation | None,
    after: Evaluation | None,
    titles: tuple[str, str] = ("base", "fine-tuned"),
) -> str:
    """One row per prompt: prompt (collapsed), reference, base, fine-tuned (diffed), metrics."""
    if after is None:
        return ""
    if before is not None and len(before.answers) != len(after.answers):
        raise ValueError(
            f"`before` has {len(before.answers)} rows but `after` has {len(after.answers)}: "
            "evaluate both on the same rows."
        )
    names = list(after.per_row[0]) if after.per_row else []
    columns = ["#", "prompt", "reference", *titles, *names]
    head = "".join(f"<th style='{CELL}'>{html.escape(c)}</th>" for c in columns)
    body = [_row_html(i, before, after, names) for i in range(len(after.answers))]
    return f"<table style='{TABLE_STYLE}'><tr>{head}</tr>{''.join(body)}</table>"


def _row_html(i: int, before: Evaluation | None, after: Evaluation, names: list[str]) -> str:
    prompt = after.prompts[i]
    short = _gist(after, i)
    base = before.answers[i] if before else None
    cells = [
        str(i + 1),
        f"<details><summary>{html.escape(short)}</summary>"
        f"<pre style='white-space:pre-wrap'>{html.escape(prompt)}</pre></details>",
        html.escape(after.references[i]),
        html.escape(base) if base is not None else "<i>n/a</i>",
        word_diff_html(base, after.answers[i])
        if base is not None
        else html.escape(after.answers[i]),
    ]
    for name in names:
        new = after.per_row[i].get(name)
        old = before.per_row[i].get(name) if before and before.per_row else None
        cells.append(("" if old is None else f"{old:.2f} &rarr; ") + _number(new))
    return (
        "<tr>"
        + "".join(f"<td style='{CELL};white-space:pre-wrap'>{c}</td>" for c in cells)
        + "</tr>"
    )


def _gist(evaluation: Evaluation, i: int, width: int = 60) -> str:
    """A one-line label for row `i`: the row's own question as the library gives it (the
    template left out), or the start of the prompt for evaluations made without one."""
    has_question = i < len(evaluation.questions) and evaluation.questions[i]
    text = evaluation.questions[i] if has_question else evaluation.prompts[i]
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 3] + "..."


def _number(value) -> str:
    return "" if value is None else f"{value:.2f}"


def try_table_html(prompt: str, base: str | None, tuned: str) -> str:
    """The prompt sent (folded) and the two answers to it side by side, the second diffed."""
    base_cell = html.escape(base) if base is not None else f"<i>{html.escape(NO_BASE)}</i>"
    tuned_cell = word_diff_html(base, tuned) if base is not None else html.escape(tuned)
    return (
        f"<details><summary>prompt sent ({len(prompt)} characters)</summary>"
        f"<pre style='white-space:pre-wrap'>{html.escape(prompt)}</pre></details>"
        f"<table style='{TABLE_STYLE};width:100%'><tr>"
        f"<th style='{CELL}'>base</th><th style='{CELL}'>fine-tuned</th></tr><tr>"
        f"<td style='{CELL};white-space:pre-wrap;width:50%'>{base_cell}</td>"
        f"<td style='{CELL};white-space:pre-wrap;width:50%'>{tuned_cell}</td></tr></table>"
    )
