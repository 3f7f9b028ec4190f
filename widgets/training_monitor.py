"""TrainingMonitor: live loss and validation curves (loss and exact match), progress, Stop/Resume
and sample answers.

It subscribes to a Run's events (which arrive on the training thread) and adds each one it is
given to its `Curves` (`workbench.runs.report`), so the same panel replays a finished, stopped
or crashed run from its `metrics.jsonl`. Its plot has the report's traces, found by name.
"Copy as code" shows the `workbench.train(...)` script that starts the same run again.
"""

from __future__ import annotations

import html
import threading
import time
from pathlib import Path

import ipywidgets as widgets

from workbench.interfaces.stage_code import run_code
from workbench.runs.directory import RunDirectory
from workbench.runs.report import (
    Curves,
    curves_figure,
    figure_rows,
    finite,
    stage_of,
    step_axis,
    update_curves,
)
from workbench.widgets._common import Panel, ShowsCode, html_table, shown_path
from workbench.widgets._errors import describe_error


class TrainingMonitor(ShowsCode, Panel):
    """Curves, progress, Stop/Resume and sample answers of one training run.

    `TrainingMonitor(run)` follows a live Run; `TrainingMonitor.from_run_dir(path)` replays a
    run directory. Children: `.figure`, `.progress`, `.progress_label`, `.stop_button`,
    `.resume_button`, `.status`, `.samples_html`, `.error_html`, `.copy_button` and `.code`
    (`as_code()`: the script that starts the run again).
    """

    dom_class = "wb-training-monitor"

    refresh_interval = 0.25  # seconds between redraws while steps stream in (0: every event)

    def __init__(self, run=None) -> None:
        import plotly.graph_objects as go

        super().__init__()
        self.run = None
        self.run_dir: Path | None = None
        self._lock = threading.RLock()
        self._reset()
        # instruction tuning's two rows until a run says its kind (RL adds reward and KL)
        self.figure = go.FigureWidget(curves_figure([], 2))
        self._rows, self._stage = 2, None
        self.progress = widgets.IntProgress(value=0, min=0, max=1, description="Step")
        self.progress_label = widgets.HTML()
        self.stop_button = widgets.Button(
            description="Stop", icon="stop", disabled=True, tooltip="Stop after this step"
        )
        self.resume_button = widgets.Button(
            description="Resume", icon="play", disabled=True, tooltip="Continue from a checkpoint"
        )
        self.status = widgets.HTML("No run attached.")
        self.samples_html = widgets.HTML()
        self._build_code("14em")
        self.stop_button.on_click(lambda _: self._guarded(self._stop))
        self.resume_button.on_click(lambda _: self._guarded(self._resume))
        self.children = [
            self.status,
            widgets.HBox([self.progress, self.progress_label]),
            widgets.HBox([self.stop_button, self.resume_button, self.copy_button]),
            self.code,
            self.error_html,
            self.figure,
            widgets.HTML("<b>Sample answers at each evaluation</b>"),
            self.samples_html,
        ]
        if run is not None:
            self.attach(run)

    # -- following a run ------------------------------------------------------------------
    @classmethod
    def from_run_dir(cls, path: str | Path) -> TrainingMonitor:
        """Replay a run directory's `metrics.jsonl` (finished, stopped or crashed)."""
        directory = RunDirectory(path)
        events, _ = directory.read_events()
        if not directory.file("metrics.jsonl").is_file():
            raise FileNotFoundError(
                f"{directory.file('metrics.jsonl')} not found: pass a run directory (runs/<id>/)."
            )
        monitor = cls()
        monitor.run_dir = directory.path
        monitor._fit_rows(directory)
        monitor._guarded(monitor._take, events, force=True)
        return monitor

    def attach(self, run) -> TrainingMonitor:
        """Follow `run`: replay the events it already has, then plot each new one."""
        with self._lock:
            if run is self.run:  # e.g. after resume(): the subscription is still there
                self._redraw()
                return self
            if self.run_dir is None or Path(run.run_dir) != self.run_dir:
                self._reset()  # another run; the same directory keeps its history (resume)
            self.run, self.run_dir = run, Path(run.run_dir)
            self._fit_rows(run.directory)
            # subscribe first, then replay: an event emitted in between waits for the lock
            # and is recognised as already replayed
            run.add_callback("*", lambda event: self._on_event(run, event))
            replayed = list(run.events)
            self._replayed = {id(e) for e in replayed}
            self._take(replayed, force=True)
        self._refresh_code()  # another run: another script
        return self

    def _fit_rows(self, directory: RunDirectory) -> None:
        """Give the plot the rows this kind of run draws (the reward and KL row only for RL
        and distillation); the figure is replaced only when the count changes."""
        import plotly.graph_objects as go

        self._stage = stage_of(directory)
        self._samples_drawn = -1  # the kind may change what "no samples" means
        rows = figure_rows(self._stage)
        if self._rows == rows:
            return
        figure = go.FigureWidget(curves_figure([], rows))
        self.children = tuple(figure if c is self.figure else c for c in self.children)
        self.figure, self._rows, self._axis_steps = figure, rows, None

    def trace(self, name: str):
        """The plot's trace called `name` (one of `workbench.runs.report.TRACES`)."""
        return next(t for t in self.figure.data if t.name == name)

    @property
    def curves(self) -> Curves:
        """What the plot shows: the run's steps, evaluations and samples so far."""
        return self._curves

    def _reset(self) -> None:
        self._curves = Curves()
        self._replayed: set[int] = set()
        self._failure = ""
        self._errors = []  # Panel's list: a new run starts without the old one's errors
        self._tracebacks: list[str] = []  # of the unexpected ones, folded away below them
        self._last_refresh = 0.0
        self._samples_drawn = -1
        self._axis_steps: int | None = None  # the last step the step axis shows

    def _on_event(self, run, event: dict) -> None:
        if run is self.run:  # a run we stopped following keeps calling us
            with self._lock:
                if id(event) not in self._replayed:
                    self._guarded(self._take, [event])

    def _take(self, events: list[dict], force: bool = False) -> None:
        """Add the events to the curves, then redraw (throttled while steps stream in)."""
        with self._lock:
            for event in events:
                try:
                    self._curves.add(event)
                except Exception as error:  # noqa: BLE001 - one bad event must not stop the rest
                    self._note_error(
                        error, f"`{event.get('event')}` event at step {event.get('step')}"
                    )
                    continue
                if event["event"] == "started":
                    self._failure = ""
                elif event["event"] == "failed":
                    self._failure = f"Training failed at step {event.get('step')}: " + str(
                        event.get("reason")
                    )
            force = force or any(e["event"] != "step" for e in events)
            if force or time.monotonic() - self._last_refresh >= self.refresh_interval:
                self._last_refresh = time.monotonic()
                self._redraw()

    # -- buttons --------------------------------------------------------------------------
    def _stop(self) -> None:
        if self.run is not None:
            self.run.stop()
            self._redraw()

    def _resume(self) -> None:
        self.resume_button.disabled = True
        if self.run is not None:
            self.run.resume()
            self.attach(self.run)
            return
        self.status.value = "Loading the model named in config.yaml to resume ..."
        self.in_background(self._resume_from_dir, then=self._redraw)

    def _resume_from_dir(self) -> None:
        from workbench.training.resume import resume

        self.attach(resume(self.run_dir))

    def wait(self, timeout: float | None = None) -> TrainingMonitor:
        """Block until a Resume being loaded has started and the followed run has ended."""
        super().wait(timeout)
        if self.run is not None:
            self.run.wait(timeout)
        return self

    def _guarded(self, fn, *args, **kwargs) -> None:
        """`guard(fn, ...)`, then the error area and the buttons show what happened."""
        self.guard(fn, *args, **kwargs)
        self._draw_errors()
        self._draw_buttons()

    def _note_error(self, error: Exception, where: str) -> None:
        """An event the curves could not take: shown with where it came from (its traceback
        folded away)."""
        self._errors.append(f"{where}: {type(error).__name__}: {error}")
        self._tracebacks.append(describe_error(error)[1])

    def show_error(self, error: BaseException | str, area=None) -> None:
        """Panel's, keeping the traceback of an unexpected error for `_draw_errors`."""
        super().show_error(error, area)
        self._tracebacks.append(describe_error(error)[1])

    # -- drawing --------------------------------------------------------------------------
    def _redraw(self) -> None:
        with self._lock:
            with self.figure.batch_update():
                update_curves(self.figure, self._curves)
                if self._axis_steps != self.max_steps:  # a run starts, or resumes further
                    self._axis_steps = self.max_steps
                    self.figure.update_xaxes(**step_axis(self.max_steps))
            self._draw_progress()
            self._draw_status()
            self._draw_buttons()
            self._draw_errors()
            if self._samples_drawn != len(self._curves.samples):
                self._samples_drawn = len(self._curves.samples)
                self.samples_html.value = samples_table_html(self._curves.samples, self._stage)

    def _draw_progress(self) -> None:
        total = self.max_steps
        step = self._curves.steps[-1]["step"] if self._curves.steps else 0
        self.progress.max = max(total, 1)
        self.progress.value = min(step, self.progress.max)
        self.progress.bar_style = {"finished": "success", "failed": "danger"}.get(
            self._curves.end["event"] if self._curves.end else "", "info"
        )
        self.progress_label.value = html.escape(self.progress_text())

    def _draw_status(self) -> None:
        name = html.escape(self.run_dir.name) if self.run_dir else ""
        self.status.value = (
            f"<b>{html.escape(self.state)}</b>"
            + (f" &middot; run <code>{name}</code>" if name else "")
            + html.escape(self.closing_text())
        )

    def closing_text(self) -> str:
        """How a finished run ended: ' after N steps in <time>; report: <path>' ('' before)."""
        end, started = self._curves.end, self._curves.started
        if end is None or end["event"] != "finished" or self.run_dir is None:
            return ""
        took = ""
        if started and "time" in end and "time" in started:
            took = f" in {_duration(end['time'] - started['time'])}"
            took += " since it resumed" if started.get("step") else ""
        report = self.run_dir / "report.html"
        where = f"; report: {shown_path(report)}" if report.is_file() else ""
        return f" after {end.get('step', 0)} steps{took}{where}"

    def _draw_buttons(self) -> None:
        self.stop_button.disabled = self.run is None or self.run.status != "running"
        self.resume_button.disabled = not self.can_resume

    def _draw_errors(self) -> None:
        if self.errors:
            details = "\n\n".join(t for t in self._tracebacks if t)
            self.error_html.show("\n\n".join(self.errors), details=details)
        else:
            self.error_html.clear()

    # -- what the panel shows, as values --------------------------------------------------
    @property
    def max_steps(self) -> int:
        for event in reversed(self._curves.steps):
            return int(event.get("max_steps") or 0)
        return int((self._curves.started or {}).get("max_steps") or 0)

    @property
    def state(self) -> str:
        """running, stopping, stopped, finished, failed, or what the files say."""
        if self.run is not None:
            return self.run.status
        if self._curves.end is not None:
            return self._curves.end["event"]
        if self._curves.started is not None:
            return "interrupted (no end was recorded: still running elsewhere, or killed)"
        return "No run attached."

    @property
    def can_resume(self) -> bool:
        if self.run_dir is None or self.state in ("running", "stopping", "finished", "created"):
            return False
        checkpoints = RunDirectory(self.run_dir).complete_checkpoints()
        return self._curves.started is not None and bool(checkpoints)

    @property
    def errors(self) -> list[str]:
        """Everything shown in the red area."""
        return ([self._failure] if self._failure else []) + super().errors

    def eta_seconds(self) -> float | None:
        """Time left, from the pace of the recent steps of the current attempt."""
        since = (self._curves.started or {}).get("time", 0)
        recent = [e for e in self._curves.steps if e.get("time", -1) >= since][-21:]
        if self._curves.end or len(recent) < 2 or recent[-1]["step"] == recent[0]["step"]:
            return None
        pace = (recent[-1]["time"] - recent[0]["time"]) / (recent[-1]["step"] - recent[0]["step"])
        return max(self.max_steps - recent[-1]["step"], 0) * pace

    def progress_text(self) -> str:
        if not self._curves.steps:
            return f"step 0/{self.max_steps}" if self._curves.started else "no steps yet"
        last = self._curves.steps[-1]
        parts = [f"step {last['step']}/{self.max_steps}"]
        eta = self.eta_seconds()
        if eta is not None:
            parts.append(f"ETA {_duration(eta)}")
        if last.get("tokens_per_second"):
            parts.append(f"{last['tokens_per_second']:,.0f} tokens/s")
        parts.append(f"loss {last['loss']:.4g}")
        if last.get("reward_margin") is not None:
            parts.append(f"reward margin {last['reward_margin']:.3g}")
        if self._curves.evaluations:
            last_evaluation = self._curves.evaluations[-1]
            if last_evaluation.get("eval_loss") is not None:
                parts.append(f"validation {last_evaluation['eval_loss']:.4g}")
            if last_evaluation.get("exact_match") is not None:
                parts.append(f"exact match {last_evaluation['exact_match']:.0%}")
            if last_evaluation.get("eval_reward") is not None:  # the trainer's evaluation
                parts.append(f"reward at evaluation {last_evaluation['eval_reward']:.3g}")
        return " · ".join(parts)

    def as_code(self) -> str:
        """The script that starts this run again: the model, the rows it stored in its
        directory, and its template and settings (the Run's own, or its config.yaml's)."""
        if self.run_dir is None:
            raise ValueError("No run attached: attach a Run, or replay a run directory.")
        if self.run is None:
            return run_code(self.run_dir)
        run = self.run
        return run_code(run.run_dir, run.template, run.method, run.hyperparameters)

    # -- without a widget frontend (StaticFallback) ----------------------------------------
    def static_text(self) -> str:
        text = f"TrainingMonitor: {self.state}; {self.progress_text()}"
        return "\n".join([text, *self.errors])

    def static_html(self) -> str:
        """The panel as plain HTML: status, a loss sparkline, errors and sample answers."""
        with self._lock:
            parts = [
                f"<div><b>TrainingMonitor</b>: {self.status.value}</div>",
                f"<div>{html.escape(self.progress_text())}</div>",
                loss_sparkline_svg([finite(e["loss"]) for e in self._curves.steps]),
                self.error_html.value,
                samples_table_html(self._curves.samples, self._stage),
            ]
        return "".join(parts)


def _duration(seconds: float) -> str:
    """'42 s', '3 min 5 s', '1 h 2 min'."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


# The kinds of run that score rows instead of answering prompts: no sample answers, ever.
SCORES_ROWS = {"reward": "a reward model", "classify": "a classifier"}


def samples_table_html(samples: list[dict], stage: str | None = None) -> str:
    """A table of the sample answers at each evaluation: step, reference, answer; without
    any, why (none yet, or a kind of run that answers no prompts)."""
    if not samples and stage in SCORES_ROWS:
        return f"<i>No sample answers: {SCORES_ROWS[stage]} scores rows, it answers no prompts.</i>"
    if not samples:
        return "<i>No sample answers yet (they come with each evaluation).</i>"
    rows = [
        [event["step"], s.get("reference", ""), s.get("answer", "")]
        for event in samples
        for s in event.get("samples", [])
    ]
    return html_table(["step", "reference", "answer"], rows, limit=500)


def loss_sparkline_svg(losses: list[float | None], width: int = 320, height: int = 60) -> str:
    """A small inline SVG of the loss curve, for output viewed without plotly."""
    points = [(i, v) for i, v in enumerate(losses) if v is not None]
    if len(points) < 2:
        return ""
    low, high = min(v for _, v in points), max(v for _, v in points)
    span, last = (high - low) or 1.0, max(len(losses) - 1, 1)
    coords = " ".join(
        f"{2 + (width - 4) * i / last:.1f},{2 + (height - 4) * (high - v) / span:.1f}"
        for i, v in points
    )
    return (
        f"<svg width='{width}' height='{height}' role='img' aria-label='training loss'>"
        f"<polyline fill='none' stroke='rgb(31,119,180)' stroke-width='1.5' points='{coords}'/>"
        f"</svg><div style='font-size:11px'>loss {high:.4g} to {low:.4g}</div>"
    )


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {seconds // 60 % 60:02d}m"
