"""RunBrowser: every run directory in a table; select several to overlay their curves and see the
settings that differ; resume a stopped or killed run. Runs still training update by themselves.

Built on `workbench.runs` (list_runs, compare_runs): what the panel shows, a script can get.
"""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path

import ipywidgets as widgets

from workbench.runs.history import RunRecord, compare_runs, list_runs
from workbench.widgets._common import heading, html_table, text_table
from workbench.widgets._run_panels import RunPanel
from workbench.widgets.training_monitor import TrainingMonitor

COLUMNS = ("run", "status", "stage", "task", "continued_from", "model", "method")
COLUMNS += ("learning_rate", "max_steps", "batch_size", "step", "duration_s", "train_loss")
COLUMNS += ("eval_loss", "resumable")


class RunBrowser(RunPanel):
    """The run history of a folder (default `$WORKBENCH_RUNS` or ./runs).

    Children: `.refresh_button`, `.auto_refresh` (Checkbox), `.status`, `.table_html`,
    `.selector` (SelectMultiple of run names), `.figure` (overlaid curves), `.differences_html`
    (settings that differ), `.resume_button`, `.error_html`, `.monitor_box` (the monitor of a
    resumed run). `.records` are the listed runs, `.selected` the selected ones; `.polling`
    says whether running runs are being re-read by themselves.
    """

    dom_class = "wb-run-browser"
    poll_interval = 2.0  # seconds between re-reads while a listed run is still training

    def __init__(self, root: str | Path | None = None, *, auto_refresh: bool = True) -> None:
        import plotly.graph_objects as go

        super().__init__()
        self.root = Path(root) if root is not None else None
        self.records: list[RunRecord] = []
        self.resumed = None  # the Run started by Resume
        self._poller: threading.Thread | None = None
        self._lock = threading.RLock()
        self.refresh_button = widgets.Button(description="Refresh", icon="refresh")
        self.auto_refresh = widgets.Checkbox(
            value=auto_refresh, description="update running runs", indent=False
        )
        self.status = widgets.HTML()
        self.table_html = widgets.HTML()
        self.selector = widgets.SelectMultiple(  # wide enough for a run's name on one line
            options=[], rows=6, description="Compare", layout=widgets.Layout(width="90%")
        )
        self.figure = go.FigureWidget()
        self.differences_html = widgets.HTML()
        self.resume_button = widgets.Button(
            description="Resume", icon="play", disabled=True, tooltip="Continue from a checkpoint"
        )
        self.monitor_box = widgets.VBox()
        self.refresh_button.on_click(lambda _: self.guard(self.refresh))
        self.resume_button.on_click(lambda _: self.guard(self.resume_selected))
        self.selector.observe(lambda _: self.guard(self._draw_selection), names="value")
        self.auto_refresh.observe(lambda _: self.guard(self._poll_if_needed), names="value")
        self.children = [
            widgets.HBox([self.refresh_button, self.auto_refresh, self.status]),
            self.error_html,
            self.table_html,
            widgets.HBox([self.selector, self.resume_button]),
            heading("Curves of the selected runs"),
            self.figure,
            heading("Settings that differ"),
            self.differences_html,
            self.monitor_box,
        ]
        self.guard(self.refresh)

    # -- reading the runs -----------------------------------------------------------------
    def refresh(self) -> None:
        """Read every run directory again and redraw (the selection is kept)."""
        self._reload()
        self._poll_if_needed()

    def _reload(self) -> None:
        with self._lock:
            self.records = list_runs(self.root)
            names = [r.name for r in self.records]
            kept = tuple(n for n in self.selector.value if n in names)
            self.selector.options = [(f"{r.name} · {r.status}", r.name) for r in self.records]
            self.selector.value = kept
            self.table_html.value = self._table_html()
            running = sum(r.running for r in self.records)
            self.status.value = f"{len(self.records)} runs" + (
                f", <b>{running} training</b>" if running else ""
            )
            self._draw_selection()

    @property
    def selected(self) -> list[RunRecord]:
        chosen = set(self.selector.value)
        return [r for r in self.records if r.name in chosen]

    def select(self, *names: str) -> None:
        """Select runs by directory name (as a click in the list would)."""
        self.selector.value = tuple(names)

    def _draw_selection(self) -> None:
        selected = self.selected
        self.resume_button.disabled = not (len(selected) == 1 and selected[0].resumable)
        if not selected:
            self._show_curves(None)
            self.differences_html.value = "<i>Select runs above to compare them.</i>"
            return
        comparison = compare_runs(selected)
        self._show_curves(comparison.figure())
        differences = comparison.differences
        if len(selected) < 2:
            self.differences_html.value = "<i>Select two or more runs to see what differs.</i>"
        elif differences.empty:
            self.differences_html.value = "<i>The selected runs have the same settings.</i>"
        else:
            values = differences.values.tolist()
            rows = [[k, *map(_cell, row)] for k, row in zip(differences.index, values)]
            table = html_table(["setting", *differences.columns], rows)
            # one column a run: scroll sideways rather than run off the panel's edge
            self.differences_html.value = f"<div style='overflow-x:auto'>{table}</div>"

    def _show_curves(self, new) -> None:
        """Show the traces of `new` (a figure of `RunComparison.figure()`, or None: none) in
        the one figure, in a single update: traces found by name keep their place and take the
        new points, the others are removed or added. Points go as plain lists of equal length
        (a gap as None), never as arrays of another type."""
        import plotly.graph_objects as go

        wanted = {trace.name: trace for trace in (new.data if new is not None else ())}
        with self.figure.batch_update():
            kept = tuple(t for t in self.figure.data if t.name in wanted)
            if len(kept) != len(self.figure.data):
                self.figure.data = kept
            for trace in self.figure.data:
                trace.update(_points(wanted.pop(trace.name)))
            for name, trace in wanted.items():
                self.figure.add_trace(go.Scatter(name=name, **_points(trace)))
            for trace in self.figure.data:  # a run keeps one colour as the selection changes
                given = new.data[[t.name for t in new.data].index(trace.name)]
                trace.update(
                    line={"dash": given.line.dash, "color": given.line.color},
                    legendgroup=given.legendgroup,
                    yaxis=given.yaxis,
                )
            if new is not None:
                self.figure.update_layout(new.layout)

    def _table_html(self) -> str:
        if not self.records:
            where = self.root or "$WORKBENCH_RUNS (default ./runs)"
            return f"<i>No runs in {where} yet.</i>"
        rows = [[_cell(r.row().get(c)) for c in COLUMNS] for r in self.records]
        problems = [f"{r.name}: {p}" for r in self.records for p in r.problems]
        note = "".join(f"<div style='color:#8a5a00'>⚠ {p}</div>" for p in problems[:10])
        return html_table(COLUMNS, rows) + note

    # -- running runs update by themselves ------------------------------------------------
    @property
    def polling(self) -> bool:
        """Whether the listed runs are re-read every `poll_interval` (while one is training)."""
        return self._poller is not None and self._poller.is_alive()

    def _poll_if_needed(self) -> None:
        wanted = self.auto_refresh.value and any(r.running for r in self.records)
        if wanted and not self.polling:
            self._poller = threading.Thread(target=self._poll, name="run-browser", daemon=True)
            self._poller.start()

    def _poll(self) -> None:
        while self.auto_refresh.value:
            time.sleep(self.poll_interval)
            self.guard(self._reload)
            if not any(r.running for r in self.records):
                break

    # -- resuming -------------------------------------------------------------------------
    def resume_selected(self) -> None:
        """Continue the one selected run from its last complete checkpoint, in the background
        (the model named in its config.yaml is loaded); a TrainingMonitor follows it."""
        selected = self.selected
        if len(selected) != 1 or not selected[0].resumable:
            raise ValueError("Select exactly one stopped, failed or interrupted run to resume.")
        record = selected[0]
        self.resume_button.disabled = True  # the refresh after loading sets it again
        self.status.value = f"<i>Loading the model to resume {record.name} ...</i>"
        self.in_background(lambda: self._resume(record.run_dir))

    def _resume(self, run_dir: Path) -> None:
        from workbench.training.resume import resume

        run = resume(run_dir)
        self.resumed = run
        self.monitor_box.children = [heading(f"Resumed {run_dir.name}"), TrainingMonitor(run)]
        for event in ("finished", "stopped", "failed"):
            run.add_callback(event, lambda _e: self.guard(self.refresh))
        self.refresh()

    @property
    def run(self):
        """The run the last Resume continued (None before): `wait()` waits for it too."""
        return self.resumed

    # -- the static fallback ---------------------------------------------------------------
    def static_text(self) -> str:
        rows = [
            [_cell(r.row().get(c)) for c in COLUMNS[:4] + ("step", "eval_loss")]
            for r in self.records
        ]
        return "RunBrowser\n" + text_table(COLUMNS[:4] + ("step", "eval_loss"), rows)

    def static_html(self) -> str:
        return (
            "<div><b>RunBrowser</b></div>"
            + self.error_html.value
            + self.table_html.value
            + self.differences_html.value
        )


def _points(trace) -> dict:
    """A trace's points and mode as plain Python lists of the same length."""
    x = [int(step) for step in trace.x]
    y = [float(v) if v is not None and math.isfinite(float(v)) else None for v in trace.y]
    return {"x": x, "y": y[: len(x)] + [None] * (len(x) - len(y)), "mode": trace.mode}


def _cell(value) -> str:
    """A setting or a figure as written: whole numbers without '.0' (pandas makes a column of
    ints and floats all floats), others to four significant digits."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)
