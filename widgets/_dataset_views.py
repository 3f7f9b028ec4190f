"""What DatasetPreview draws: table cells, the problems found while loading, and the
token-length histogram (every row's length, a line at max_length)."""

from __future__ import annotations

from typing import Any

from workbench.widgets._common import html_table


def cell(value: Any) -> str:
    """A row value as table text; a conversation becomes `role: content` lines."""
    if isinstance(value, list):
        return "\n".join(f"{m.get('role')}: {m.get('content')}" for m in value)
    return "" if value is None else str(value)


def problems_html(problems: list, dropped: bool) -> str:
    """The loading problems as a table under a title: dropped rows, or rows still to fix."""
    rows = {p.row for p in problems if p.row is not None}
    title = f"Dropped {len(rows)} invalid rows" if dropped else "Problems"
    table = html_table(
        ["where", "line", "field", "message"],
        [[p.source, p.row or "", p.field or "", p.message] for p in problems],
    )
    return f"<b>{title}</b> ({len(problems)} problems in {len(rows)} rows)" + table


def draw_histogram(figure, stats, max_length: int):
    """`figure` showing these lengths (a new one from `length_histogram` when None)."""
    if figure is None:
        return length_histogram(stats, max_length)
    update_histogram(figure, stats, max_length)
    return figure


def _title(stats, max_length: int) -> str:
    lengths = stats.lengths["total"]
    return f"Tokens per row: {stats.over_max_length} of {len(lengths)} over max_length={max_length}"


def _max_length_line(max_length: int) -> dict:
    return {
        "type": "line",
        "x0": max_length,
        "x1": max_length,
        "xref": "x",
        "y0": 0,
        "y1": 1,
        "yref": "paper",
        "line": {"dash": "dash", "color": "#d33"},
    }


def length_histogram(stats, max_length: int):
    """A histogram of total token lengths with a line at max_length (plotly FigureWidget)."""
    import plotly.graph_objects as go

    return go.FigureWidget(
        data=[go.Histogram(x=stats.lengths["total"].tolist(), name="rows", marker_color="#4c78a8")],
        layout=go.Layout(
            title=_title(stats, max_length),
            xaxis_title="prompt + response tokens (with EOS)",
            yaxis_title="rows",
            height=280,
            margin={"l": 50, "r": 20, "t": 40, "b": 40},
            shapes=[_max_length_line(max_length)],
        ),
    )


def update_histogram(figure, stats, max_length: int) -> None:
    """Put other lengths and another max_length into a histogram from `length_histogram`."""
    with figure.batch_update():
        figure.update_traces(x=stats.lengths["total"].tolist(), selector={"name": "rows"})
        figure.layout.title.text = _title(stats, max_length)
        figure.layout.shapes = [_max_length_line(max_length)]
