"""report.html for a run directory: loss and validation curves (plotly), the validation metrics
at each evaluation, the before/after table and, when measured, the learned/retained table.

Built only from files in the run directory, so it can be rebuilt for any run, finished or not.
plotly's JavaScript is embedded so the report opens offline.
"""

from __future__ import annotations

import html
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from workbench.runs.directory import COMPARISON, FORGETTING, REPORT, RunDirectory
from workbench.runs.kinds import figure_rows


def smooth(values: list[float], weight: float = 0.8) -> list[float]:
    """Exponential moving average, debiased at the start (like TensorBoard's smoothing)."""
    out, average = [], 0.0
    for i, value in enumerate(values, start=1):
        average = weight * average + (1 - weight) * value
        out.append(average / (1 - weight**i))
    return out


@dataclass
class Curves:
    """A run's events as the curves show them. `add(event)` takes events in order; a
    `started` event at step N > 0 (a resume) drops what came after step N, which the resumed
    run redoes, so no step is plotted twice."""

    steps: list[dict] = field(default_factory=list)
    evaluations: list[dict] = field(default_factory=list)  # a trace takes those with its key
    samples: list[dict] = field(default_factory=list)
    started: dict | None = None
    end: dict | None = None

    @classmethod
    def from_events(cls, events: list[dict]) -> Curves:
        curves = cls()
        for event in events:
            curves.add(event)
        return curves

    def add(self, event: dict) -> None:
        kind, step = event["event"], event.get("step") or 0
        if kind == "started":
            if step:  # resumed from a checkpoint: what came after it was redone or lost
                self.steps = [e for e in self.steps if e["step"] <= step]
                self.evaluations = [e for e in self.evaluations if e["step"] <= step]
                self.samples = [e for e in self.samples if e["step"] <= step]
            self.started, self.end = event, None
        elif kind == "step":
            float(event["loss"])  # a step without a loss cannot be plotted: say so
            self.steps.append(event)
        elif kind == "evaluation":
            self.evaluations.append(event)
        elif kind == "samples":
            self.samples.append(event)
        elif kind in ("stopped", "finished", "failed"):
            self.end = event


@dataclass(frozen=True)
class Trace:
    """One curve of the figure: `key` of the `source` events (step or evaluation) against
    their step. The report and the live monitor both build their traces from `TRACES` and
    find them by `name`."""

    name: str
    source: Literal["step", "evaluation"]
    key: str
    color: str
    row: int = 1
    secondary_y: bool = False
    smoothed: bool = False
    markers: bool = False
    dash: str | None = None
    optional: bool = False  # hidden in the legend while it has no points (DPO's margin)

    def points(self, curves: Curves) -> tuple[list, list]:
        events = curves.steps if self.source == "step" else curves.evaluations
        events = [e for e in events if e.get(self.key) is not None]
        y = [finite(e[self.key]) for e in events]
        return [e["step"] for e in events], _smoothed(y) if self.smoothed else y


TRAIN_LOSS, SMOOTHED_LOSS, VALIDATION_LOSS = (
    "train loss",
    "train loss (smoothed)",
    "validation loss",
)
LEARNING_RATE, EXACT_MATCH, REWARD_MARGIN = (
    "learning rate",
    "validation exact match",
    "reward margin (DPO)",
)
VALIDATION_ACCURACY = "validation accuracy"
DISTILL_CE, DISTILL_KL = "CE on the labels (distillation)", "KL to the teacher (distillation)"
MEAN_REWARD, HELD_OUT_REWARD, KL, RESPONSE_LENGTH = (
    "mean reward (RL)",
    "held-out mean reward (RL)",
    "KL to the start (RL)",
    "response length (RL)",
)
TRACES = (
    Trace(TRAIN_LOSS, "step", "loss", "rgba(31,119,180,0.35)"),
    Trace(SMOOTHED_LOSS, "step", "loss", "rgb(31,119,180)", smoothed=True),
    Trace(VALIDATION_LOSS, "evaluation", "eval_loss", "rgb(214,39,40)", markers=True),
    Trace(LEARNING_RATE, "step", "learning_rate", "rgb(150,150,150)", secondary_y=True, dash="dot"),
    Trace(EXACT_MATCH, "evaluation", "exact_match", "rgb(44,160,44)", row=2, markers=True),
    Trace(REWARD_MARGIN, "step", "reward_margin", "rgb(148,103,189)", optional=True),
    # distillation: the loss's two terms beside it (the KL below, on the RL row's KL axis)
    Trace(DISTILL_CE, "step", "distill_ce", "rgb(188,189,34)", dash="dash", optional=True),
    Trace(
        DISTILL_KL,
        "step",
        "distill_kl",
        "rgb(227,119,194)",
        row=3,
        secondary_y=True,
        dash="dash",
        optional=True,
    ),  # fmt: skip
    # runs that score a label per row (a classification head): not an exact match of answers
    Trace(
        VALIDATION_ACCURACY,
        "evaluation",
        "eval_accuracy",
        "rgb(255,127,14)",
        row=2,
        markers=True,
        optional=True,
    ),
    # reinforcement learning (GRPO): reward and KL below, response length beside the accuracy
    Trace(MEAN_REWARD, "step", "mean_reward", "rgb(23,190,207)", row=3, optional=True),
    Trace(
        HELD_OUT_REWARD,
        "evaluation",
        "eval_reward",
        "rgb(0,105,125)",  # the training reward's colour, darker
        row=3,
        markers=True,
        optional=True,
    ),
    Trace(KL, "step", "kl", "rgb(227,119,194)", row=3, secondary_y=True, optional=True),
    Trace(
        RESPONSE_LENGTH,
        "step",
        "response_length",
        "rgb(140,86,75)",
        row=2,
        secondary_y=True,
        dash="dot",
        optional=True,
    ),
)


# The runs whose curves need the third row (reward and KL): RL, and distillation's KL.


def stage_of(directory: RunDirectory) -> str | None:
    """The `stage` a run directory's config.yaml records (None without a readable one)."""
    try:
        return directory.read_config().get("stage", "sft")
    except (OSError, ValueError):
        return None


def curves_figure(events: list[dict], rows: int = 3):
    """A plotly figure of `TRACES`: training loss (raw, smoothed), validation loss, learning
    rate, and below them validation exact match; DPO runs add the reward margin, and with
    `rows=3` reinforcement learning its reward, KL and answer length (the traces of a row the
    figure does not have are left out)."""
    from plotly.subplots import make_subplots

    fig = make_subplots(
        rows=rows,
        cols=1,
        shared_xaxes=True,
        row_heights=[0.56, 0.22, 0.22] if rows == 3 else [0.7, 0.3],
        vertical_spacing=0.05,
        specs=[[{"secondary_y": True}]] * rows,
    )
    curves = Curves.from_events(events)
    for trace in TRACES:
        if trace.row <= rows:
            fig.add_trace(
                _scatter(trace, curves), row=trace.row, col=1, secondary_y=trace.secondary_y
            )
    fig.update_layout(
        height=600 if rows == 3 else 500,
        margin=dict(l=50, r=80, t=30, b=40),
        template="plotly_white",
        legend=dict(orientation="h", y=1.12),
        modebar=dict(orientation="v"),  # beside the plot, not over the legend
    )
    started = curves.started or {}
    fig.update_xaxes(**step_axis(started.get("max_steps")))
    fig.update_xaxes(title_text="optimizer step", row=rows, col=1)
    # the second axes of a row never go below zero: a rate, a length, a divergence
    positive = dict(secondary_y=True, showgrid=False, rangemode="nonnegative", col=1)
    fig.update_yaxes(title_text="loss", secondary_y=False, row=1, col=1)
    fig.update_yaxes(title_text="learning rate", row=1, **positive)
    fig.update_yaxes(
        title_text="exact match / accuracy", range=[-0.05, 1.05], secondary_y=False, row=2, col=1
    )
    if rows == 3:  # reinforcement learning's answer length beside the accuracy; reward and KL
        fig.update_yaxes(title_text="response tokens", row=2, **positive)
        fig.update_yaxes(title_text="reward", secondary_y=False, row=3, col=1)
        fig.update_yaxes(title_text="KL", row=3, **positive)
    else:  # no trace of these runs uses it: no empty axis
        fig.update_yaxes(visible=False, secondary_y=True, row=2, col=1)
    return fig


def step_axis(max_steps: int | None) -> dict:
    """The step axis of the curves: whole steps only (no tick at 0.5), from 0 to the run's
    last step when it is known, so the curves show how far the run has come."""
    axis = dict(rangemode="nonnegative", tickformat="d")
    if max_steps and max_steps > 0:
        tick, factors = 1, itertools.cycle((2, 2.5, 2))  # 1, 2, 5, 10, 20, 50, ...
        while max_steps / tick > 10:
            tick = round(tick * next(factors))
        margin = max_steps * 0.02  # the first and last markers whole
        axis.update(range=[-margin, max_steps + margin], tick0=0, dtick=tick)
    return axis


def update_curves(fig, curves: Curves) -> None:
    """Set every trace of a figure made by `curves_figure` (a live FigureWidget) from
    `curves`, finding each trace by its name."""
    by_name = {t.name: t for t in fig.data}
    with fig.batch_update():
        for trace in TRACES:
            if trace.name not in by_name:  # a row this figure does not have
                continue
            x, y = trace.points(curves)
            shown = by_name[trace.name]
            shown.x, shown.y = x, y
            if trace.optional:
                shown.visible = True if x else "legendonly"


def _scatter(trace: Trace, curves: Curves):
    import plotly.graph_objects as go

    x, y = trace.points(curves)
    width = 2 if trace.smoothed or trace.markers or trace.optional else None
    return go.Scatter(
        x=x,
        y=y,
        name=trace.name,
        mode="lines+markers" if trace.markers else "lines",
        line=dict(color=trace.color, width=width, dash=trace.dash),
        visible=("legendonly" if trace.optional and not x else True),
    )


def finite(value) -> float | None:
    """None for NaN/inf (plotly shows a gap; JSON has no NaN)."""
    value = float(value)
    return value if math.isfinite(value) else None


def _smoothed(values: list[float | None]) -> list[float | None]:
    """Smoothed values up to the first missing one; None after it."""
    head = []
    for value in values:
        if value is None:
            break
        head.append(value)
    return smooth(head) + [None] * (len(values) - len(head))


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
    """Write `report.html` into the run directory and return its path; FileNotFoundError,
    with nothing written, when the folder holds no run."""
    import plotly.io as pio

    run_dir = Path(run_dir)
    directory = RunDirectory(run_dir)
    directory.check_is_run()
    events, _ = directory.read_events()
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
    figure = curves_figure(events, figure_rows(stage_of(directory)))
    parts.append(pio.to_html(figure, include_plotlyjs=True, full_html=False))
    parts.append(_evaluations_html(events))
    data = directory.read_json(FORGETTING)
    if data is not None:
        parts.append("<h2>Learned and retained (forgetting probe)</h2>")
        parts.append(
            "<p>Learned: the trained task(s), held-out rows. Retained: tasks the run never "
            "trained on, measured on the base and on the fine-tuned model.</p>"
        )
        parts.append(_table(data["rows"], data["columns"]))
    data = directory.read_json(COMPARISON)
    if data is not None:
        parts.append("<h2>Before and after fine-tuning (held-out rows)</h2>")
        parts.append(_table(data["summary"], ["metric", "before", "after", "change"]))
        parts.append("<h3>Answers</h3>")
        parts.append(_table(data["rows"], ["prompt", "reference", "before", "after"]))
    samples = Curves.from_events(events).samples  # after a resume, the redone steps' only
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
    return directory.write_text(REPORT, page)


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
    return RunDirectory(run_dir).write_json(FORGETTING, data)


def save_comparison(run_dir: str | Path, summary, rows) -> Path:
    """Store a before/after comparison in the run directory (the report shows it)."""
    data = {
        "summary": [
            {"metric": k, **{c: float(v) for c, v in r.items()}}
            for k, r in summary.to_dict("index").items()
        ],
        "rows": rows.to_dict("records"),
    }
    return RunDirectory(run_dir).write_json(COMPARISON, data)
