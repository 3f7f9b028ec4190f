"""report.html for a run directory: loss and validation curves (plotly), the validation metrics
at each evaluation, the before/after table and, when measured, the learned/retained table.

Built only from files in the run directory, so it can be rebuilt for any run, finished or not.
plotly's JavaScript is embedded so the report opens offline.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from workbench.config import write_atomic


def read_events(run_dir: str | Path) -> list[dict]:
    """Events from metrics.jsonl; a line cut short by a crash is skipped."""
    path = Path(run_dir) / "metrics.jsonl"
    events = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return events


def smooth(values: list[float], weight: float = 0.8) -> list[float]:
    """Exponential moving average, debiased at the start (like TensorBoard's smoothing)."""
    out, average = [], 0.0
    for i, value in enumerate(values, start=1):
        average = weight * average + (1 - weight) * value
        out.append(average / (1 - weight**i))
    return out


def curves_figure(events: list[dict]):
    """A plotly figure: training loss (raw, smoothed), validation loss, learning rate, below it
    validation exact match, and for DPO runs the reward margin (traces in that order)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    steps = [e for e in events if e["event"] == "step"]
    evals = [e for e in events if e["event"] == "evaluation" and e.get("eval_loss") is not None]
    scored = [e for e in events if e["event"] == "evaluation" and e.get("exact_match") is not None]
    fig = make_subplots(
        rows=2,
        cols=1,
        shared_xaxes=True,
        row_heights=[0.72, 0.28],
        vertical_spacing=0.06,
        specs=[[{"secondary_y": True}], [{}]],
    )
    x = [e["step"] for e in steps]
    losses = [e["loss"] for e in steps]
    fig.add_trace(
        go.Scatter(
            x=x, y=losses, name="train loss", mode="lines", line=dict(color="rgba(31,119,180,0.35)")
        )
    )
    fig.add_trace(
        go.Scatter(
            x=x,
            y=smooth(losses),
            name="train loss (smoothed)",
            mode="lines",
            line=dict(color="rgb(31,119,180)", width=2),
        )
    )
    fig.add_trace(
        go.Scatter(
            x=[e["step"] for e in evals],
            y=[e["eval_loss"] for e in evals],
            name="validation loss",
            mode="lines+markers",
            line=dict(color="rgb(214,39,40)", width=2),
        )
    )
    fig.add_trace(
        go.Scatter(
            x=x,
            y=[e.get("learning_rate") for e in steps],
            name="learning rate",
            mode="lines",
            line=dict(color="rgb(150,150,150)", dash="dot"),
        ),
        secondary_y=True,
    )
    fig.add_trace(
        go.Scatter(
            x=[e["step"] for e in scored],
            y=[e["exact_match"] for e in scored],
            name="validation exact match",
            mode="lines+markers",
            line=dict(color="rgb(44,160,44)", width=2),
        ),
        row=2,
        col=1,
    )
    margins = [e for e in steps if e.get("reward_margin") is not None]  # DPO runs only
    fig.add_trace(
        go.Scatter(
            x=[e["step"] for e in margins],
            y=[e["reward_margin"] for e in margins],
            name="reward margin (DPO)",
            mode="lines",
            line=dict(color="rgb(148,103,189)", width=2),
            visible=True if margins else "legendonly",
        ),
        row=1,
        col=1,
    )
    fig.update_layout(
        height=480,
        margin=dict(l=50, r=50, t=30, b=40),
        template="plotly_white",
        legend=dict(orientation="h", y=1.12),
    )
    fig.update_xaxes(title_text="optimizer step", row=2, col=1)
    fig.update_yaxes(title_text="loss", secondary_y=False, row=1, col=1)
    fig.update_yaxes(title_text="learning rate", secondary_y=True, showgrid=False, row=1, col=1)
    fig.update_yaxes(title_text="exact match", range=[-0.05, 1.05], row=2, col=1)
    return fig


def _table(rows: list[dict], columns: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_cell(c, r.get(c))}</td>" for c in columns) + "</tr>" for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(column: str, value) -> str:
    """A table cell; long prompts fold away, showing their end (where rows differ)."""
    text = _fmt(value)
    if column == "prompt" and len(text) > 120:
        tail = text.strip()[-100:].replace("\n", " ")
        return f"<details><summary>…{html.escape(tail)}</summary>{html.escape(text)}</details>"
    return html.escape(text)


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def write_report(run_dir: str | Path) -> Path:
    """Write `report.html` into the run directory and return its path."""
    import plotly.io as pio

    run_dir = Path(run_dir)
    events = read_events(run_dir)
    parts = [f"<h1>Run {html.escape(run_dir.name)}</h1>"]
    end = next(
        (e for e in reversed(events) if e["event"] in ("finished", "stopped", "failed")), None
    )
    if end:
        parts.append(
            f"<p>Status: <b>{end['event']}</b> at step {end.get('step')}"
            + (f": {html.escape(str(end.get('reason')))}" if end.get("reason") else "")
            + "</p>"
        )
    parts.append("<h2>Loss and validation</h2>")
    parts.append(pio.to_html(curves_figure(events), include_plotlyjs=True, full_html=False))
    parts.append(_evaluations_html(events))
    forgetting = run_dir / "forgetting.json"
    if forgetting.is_file():
        data = json.loads(forgetting.read_text(encoding="utf-8"))
        parts.append("<h2>Learned and retained (forgetting probe)</h2>")
        parts.append(
            "<p>Learned: the trained task(s), held-out rows. Retained: tasks the run never "
            "trained on, measured on the base and on the fine-tuned model.</p>"
        )
        parts.append(_table(data["rows"], data["columns"]))
    comparison = run_dir / "comparison.json"
    if comparison.is_file():
        data = json.loads(comparison.read_text(encoding="utf-8"))
        parts.append("<h2>Before and after fine-tuning (held-out rows)</h2>")
        parts.append(_table(data["summary"], ["metric", "before", "after", "change"]))
        parts.append("<h3>Answers</h3>")
        parts.append(_table(data["rows"], ["prompt", "reference", "before", "after"]))
    samples = [e for e in events if e["event"] == "samples"]
    if samples:
        parts.append("<h2>Sample answers at each evaluation</h2>")
        rows = [{"step": e["step"], **s} for e in samples for s in e["samples"]]
        parts.append(_table(rows, ["step", "reference", "answer"]))
    style = (
        "<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ddd;"
        "padding:4px 8px;text-align:left;vertical-align:top;white-space:pre-wrap;"
        "font-size:13px}th{background:#f3f3f3}</style>"
    )
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{run_dir.name}</title>"
        f"{style}</head><body>{''.join(parts)}</body></html>"
    )
    write_atomic(run_dir / "report.html", page)
    return run_dir / "report.html"


def _evaluations_html(events: list[dict]) -> str:
    """A table of the validation metrics at each evaluation (loss, perplexity, exact match)."""
    evals = [e for e in events if e["event"] == "evaluation"]
    if not evals:
        return ""
    rows = [
        {
            "step": e.get("step"),
            "validation loss": e.get("eval_loss"),
            "perplexity": e.get("perplexity"),
            "exact match": e.get("exact_match"),
            "rows scored": e.get("scored_rows"),
        }
        for e in evals
    ]
    columns = ["step", "validation loss", "perplexity", "exact match", "rows scored"]
    return "<h3>Validation at each evaluation</h3>" + _table(rows, columns)


def save_forgetting(run_dir: str | Path, table) -> Path:
    """Store a learned/retained table (`workbench.forgetting_table`) for the run's report."""
    frame = table.reset_index()
    data = {"columns": [str(c) for c in frame.columns], "rows": frame.to_dict("records")}
    path = Path(run_dir) / "forgetting.json"
    write_atomic(path, json.dumps(data, ensure_ascii=False, indent=1, default=str))
    return path


def save_comparison(run_dir: str | Path, summary, rows) -> Path:
    """Store a before/after comparison in the run directory (the report shows it)."""
    data = {
        "summary": [
            {"metric": k, **{c: float(v) for c, v in r.items()}}
            for k, r in summary.to_dict("index").items()
        ],
        "rows": rows.to_dict("records"),
    }
    path = Path(run_dir) / "comparison.json"
    write_atomic(path, json.dumps(data, ensure_ascii=False, indent=1, default=str))
    return path
