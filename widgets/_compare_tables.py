"""The HTML of CompareView: word differences, the totals, the row-by-row table and learned
beside retained (plain functions of Evaluations, so a report or a test can call them too)."""

from __future__ import annotations

import difflib
import html
import re
from collections.abc import Callable

from workbench.evaluation.compare import Evaluation, distinct_parts
from workbench.evaluation.metrics import COUNTED_SHARES, METRIC_MEANINGS
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


def _is_share(name: str) -> bool:
    return METRIC_MEANINGS.get(name, ("", False))[1]


def metric_value(name: str, value: float | None, rows: int | None = None) -> str:
    """A metric as a person reads it: shares as percentages (with the row count where each row
    is right or wrong), other values with a separator and no exponent."""
    if value is None:
        return ""
    if _is_share(name):
        text = f"{100 * value:.0f}%"
        return (
            f"{text} ({round(value * rows)} of {rows})" if name in COUNTED_SHARES and rows else text
        )
    return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.3g}"


def metric_change(name: str, old: float | None, new: float) -> str:
    if old is None:
        return ""
    if _is_share(name):
        return f"{100 * (new - old):+.0f} points"
    return f"{new - old:+,.1f}" if abs(new - old) >= 100 else f"{new - old:+.3g}"


def summary_table_html(
    before: Evaluation | None,
    after: Evaluation | None,
    titles: tuple[str, str] = ("base", "fine-tuned"),
) -> str:
    """Totals per metric: base, fine-tuned (or the given column titles), the change and what
    the metric measures; '' before `after` is measured (the status says what to do)."""
    if after is None:
        return ""
    columns = ("metric", *titles, "change", "what it measures")
    head = "".join(f"<th style='{CELL}'>{html.escape(c)}</th>" for c in columns)
    rows, count = [], len(after.answers)
    for name, value in after.scores.items():
        old = before.scores.get(name) if before else None
        meaning = METRIC_MEANINGS.get(name, ("", False))[0]  # '' for a metric of your own
        cells = (
            metric_value(name, old, count),
            metric_value(name, value, count),
            metric_change(name, old, value),
            meaning,
        )
        rows.append(
            f"<tr><td style='{CELL}' title='{html.escape(meaning)}'>{html.escape(name)}</td>"
            + "".join(f"<td style='{CELL}'>{html.escape(c)}</td>" for c in cells)
            + "</tr>"
        )
    note = "" if before is not None else f"<div><i>{html.escape(NO_BASE)}</i></div>"
    where = (
        f"<div><i>Measured on these {count} rows. The training monitor's exact match comes "
        "from the validation rows, so the two can differ.</i></div>"
    )
    return f"{note}<table style='{TABLE_STYLE}'><tr>{head}</tr>{''.join(rows)}</table>{where}"


# after an answer that stopped at the token limit rather than ending by itself
CUT_MARK = "<span title='cut at the token limit (max_new_tokens)'>&hellip;</span>"
DIFF_LEGEND = (
    "<div style='font-size:12px'>In the fine-tuned column: "
    "<ins style='background:#d4f7d4;text-decoration:none'>words it adds</ins> and "
    "<del style='color:#b00020;background:#fdecea'>words of the base answer it drops</del>."
    "</div>"
)


def rows_table_html(
    before: Evaluation | None,
    after: Evaluation | None,
    titles: tuple[str, str] = ("base", "fine-tuned"),
    diff: bool = False,
    cut: Callable[[str], bool] | None = None,
) -> str:
    """One row per prompt: what differs between the rows (the full prompt folded under it),
    reference, base, fine-tuned (`diff`: as word differences from the base, with a legend),
    metrics (right/wrong as a tick or a cross). An answer for which `cut(answer)` is true
    (it reached the token limit) ends in an ellipsis."""
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
    labels = row_labels(after)
    diff = diff and before is not None
    body = [_row_html(i, labels[i], before, after, names, diff, cut) for i in range(len(labels))]
    table = f"<table style='{TABLE_STYLE}'><tr>{head}</tr>{''.join(body)}</table>"
    return (DIFF_LEGEND if diff else "") + table


def _row_html(
    i: int,
    label: str,
    before: Evaluation | None,
    after: Evaluation,
    names: list[str],
    diff: bool,
    cut: Callable[[str], bool] | None,
) -> str:
    base = before.answers[i] if before else None
    tuned = after.answers[i]

    def ending(answer: str) -> str:
        return CUT_MARK if cut is not None and cut(answer) else ""

    cells = [
        str(i + 1),
        f"<details><summary>{html.escape(label)}</summary>"
        f"<pre style='white-space:pre-wrap'>{html.escape(after.prompts[i])}</pre></details>",
        html.escape(after.references[i]),
        html.escape(base) + ending(base) if base is not None else "<i>n/a</i>",
        (word_diff_html(base, tuned) if diff else html.escape(tuned)) + ending(tuned),
    ]
    for name in names:
        new = after.per_row[i].get(name)
        old = before.per_row[i].get(name) if before and before.per_row else None
        cells.append(("" if old is None else f"{_number(old, name)} &rarr; ") + _number(new, name))
    return (
        "<tr>"
        + "".join(f"<td style='{CELL};white-space:pre-wrap'>{c}</td>" for c in cells)
        + "</tr>"
    )


def row_labels(evaluation: Evaluation, width: int = 120) -> list[str]:
    """A one-line label for each row: what differs between the rows. That is the row's own
    question as the library gives it (the template left out), without its first line when
    every row shares that line (one instruction, many inputs: the ticket, not the task), or
    the start of the prompt for evaluations made without questions."""
    count = len(evaluation.prompts)
    texts = [
        evaluation.questions[i]
        if i < len(evaluation.questions) and evaluation.questions[i]
        else evaluation.prompts[i]
        for i in range(count)
    ]
    lines = [" ".join(text.split()) for text in distinct_parts(texts)]
    return [line if len(line) <= width else line[: width - 3] + "..." for line in lines]


def _number(value, name: str = "") -> str:
    """A per-row metric: a tick or a cross where the row is right (1) or wrong (0); for
    `invalid_rate`, where 1 is the bad case, the words."""
    if value is None:
        return ""
    if value in (0, 1) and name == "invalid_rate":
        return "invalid" if value == 1 else "valid"
    if value in (0, 1):
        return "&#10003;" if value == 1 else "&#10007;"
    return f"{value:.2f}"


def try_table_html(prompt: str, base: str | None, tuned: str, how: str = "") -> str:
    """How the text was sent, the prompt sent (folded) and the two answers side by side."""
    base_cell = html.escape(base) if base is not None else f"<i>{html.escape(NO_BASE)}</i>"
    tuned_cell = html.escape(tuned)
    return (
        (f"<div style='font-size:12px'><i>{html.escape(how)}</i></div>" if how else "")
        + f"<details><summary>prompt sent ({len(prompt)} characters)</summary>"
        f"<pre style='white-space:pre-wrap'>{html.escape(prompt)}</pre></details>"
        f"<table style='{TABLE_STYLE};width:100%'><tr>"
        f"<th style='{CELL}'>base</th><th style='{CELL}'>fine-tuned</th></tr><tr>"
        f"<td style='{CELL};white-space:pre-wrap;width:50%'>{base_cell}</td>"
        f"<td style='{CELL};white-space:pre-wrap;width:50%'>{tuned_cell}</td></tr></table>"
    )
