"""TrainingMonitor: live loss and validation curves (loss and exact match), progress, Stop/Resume
and sample answers.

It subscribes to a Run's events (which arrive on the training thread) and keeps its own copy of
them, so the same panel replays a finished, stopped or crashed run from its `metrics.jsonl`.
"""

from __future__ import annotations

import html
import math
import threading
import time
import traceback
from pathlib import Path

import ipywidgets as widgets

from widgets._common import ErrorArea, StaticFallback, html_table
from workbench.report import curves_figure, read_events, smooth
from workbench.run import complete_checkpoints

RAW, SMOOTHED, VALIDATION, LEARNING_RATE, EXACT_MATCH, MARGIN = range(6)  # curves_figure's order
END_EVENTS = ("stopped", "finished", "failed")


class TrainingMonitor(StaticFallback, widgets.VBox):
    """Curves, progress, Stop/Resume and sample answers of one training run.

    `TrainingMonitor(run)` follows a live Run; `TrainingMonitor.from_run_dir(path)` replays a
    run directory. Children: `.figure`, `.progress`, `.progress_label`, `.stop_button`,
    `.resume_button`, `.status`, `.samples_html`, `.error_html`.
    """

    dom_class = "wb-training-monitor"

    refresh_interval = 0.25  # seconds between redraws while steps stream in (0: every event)

    def __init__(self, run=None) -> None:
        import plotly.graph_objects as go

        self.run = None
        self.run_dir: Path | None = None
        self._worker: threading.Thread | None = None
        self._lock = threading.RLock()
        self._reset()
        self.figure = go.FigureWidget(curves_figure([]))
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
        self.error_html = ErrorArea()
        self.stop_button.on_click(lambda _: self._guarded(self._stop))
        self.resume_button.on_click(lambda _: self._guarded(self._resume))
        super().__init__(
            children=[
                self.status,
                widgets.HBox([self.progress, self.progress_label]),
                widgets.HBox([self.stop_button, self.resume_button]),
                self.error_html,
                self.figure,
                widgets.HTML("<b>Sample answers at each evaluation</b>"),
                self.samples_html,
            ]
        )
        if run is not None:
            self.attach(run)

    # -- following a run ------------------------------------------------------------------
    @classmethod
    def from_run_dir(cls, path: str | Path) -> TrainingMonitor:
        """Replay a run directory's `metrics.jsonl` (finished, stopped or crashed)."""
        path = Path(path)
        if not (path / "metrics.jsonl").is_file():
            raise FileNotFoundError(
                f"{path / 'metrics.jsonl'} not found: pass a run directory (runs/<id>/)."
            )
        monitor = cls()
        monitor.run_dir = path
        monitor._source = read_events(path)
        monitor._guarded(monitor._consume, force=True)
        return monitor

    def attach(self, run) -> TrainingMonitor:
        """Follow `run`: replay the events it already has, then plot each new one."""
        with self._lock:
            if run is self.run:  # e.g. after resume(): the subscription is still there
                self._consume(force=True)
                return self
            if self.run_dir is None or Path(run.run_dir) != self.run_dir:
                self._reset()  # another run; the same directory keeps its history (resume)
            self.run, self.run_dir = run, Path(run.run_dir)
            self._source, self._cursor = run.events, 0
            run.add_callback("*", lambda _event: self._on_event(run))
            self._consume(force=True)
        return self

    def _reset(self) -> None:
        self._source: list[dict] = []
        self._cursor = 0
        self._steps: list[dict] = []
        self._evaluations: list[dict] = []
        self._samples: list[dict] = []
        self._end: dict | None = None
        self._started: dict | None = None
        self._failure = ""
        self._handler_errors: list[str] = []
        self._last_refresh = 0.0
        self._samples_drawn = -1

    def _on_event(self, run) -> None:
        if run is self.run:  # a run we stopped following keeps calling us
            self._guarded(self._consume)

    def _consume(self, force: bool = False) -> None:
        """Take the events not seen yet from the source, then redraw (throttled)."""
        with self._lock:
            new = self._source[self._cursor :]
            self._cursor += len(new)
            for event in new:
                try:
                    self._record(event)
                except Exception as error:  # noqa: BLE001 - one bad event must not stop the rest
                    self._note_error(
                        error, f"`{event.get('event')}` event at step {event.get('step')}"
                    )
            force = force or any(e["event"] != "step" for e in new)
            if force or time.monotonic() - self._last_refresh >= self.refresh_interval:
                self._last_refresh = time.monotonic()
                self._redraw()

    def _record(self, event: dict) -> None:
        kind, step = event["event"], event.get("step", 0)
        if kind == "started":
            if step:  # resumed from a checkpoint: what came after it was redone or lost
                self._steps = [e for e in self._steps if e["step"] <= step]
                self._evaluations = [e for e in self._evaluations if e["step"] <= step]
                self._samples = [e for e in self._samples if e["step"] <= step]
            self._started, self._end, self._failure = event, None, ""
        elif kind == "step":
            float(event["loss"])  # a step without a loss cannot be plotted: say so
            self._steps.append(event)
        elif kind == "evaluation" and event.get("eval_loss") is not None:
            self._evaluations.append(event)
        elif kind == "samples":
            self._samples.append(event)
        elif kind in END_EVENTS:
            self._end = event
            if kind == "failed":
                self._failure = f"Training failed at step {step}: {event.get('reason')}"

    # -- buttons --------------------------------------------------------------------------
    def _stop(self) -> None:
        if self.run is not None:
            self.run.stop()
            self._consume(force=True)

    def _resume(self) -> None:
        self.resume_button.disabled = True
        if self.run is not None:
            self.run.resume()
            self.attach(self.run)
            return
        self.status.value = "Loading the model named in config.yaml to resume ..."
        self._worker = threading.Thread(
            target=self._guarded, args=(self._resume_from_dir,), daemon=True
        )
        self._worker.start()

    def _resume_from_dir(self) -> None:
        from workbench.train import resume_run

        self.attach(resume_run(self.run_dir))

    def wait(self, timeout: float | None = None) -> TrainingMonitor:
        """Block until a Resume being loaded has started and the followed run has ended."""
        if self._worker is not None:
            self._worker.join(timeout)
        if self.run is not None:
            self.run.wait(timeout)
        return self

    def _guarded(self, fn, *args, **kwargs) -> None:
        """Run `fn`; an exception goes to the red error area, never lost."""
        try:
            fn(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 - shown to the user, not swallowed
            self._note_error(error)
            self._draw_errors()
            self._draw_buttons()

    def _note_error(self, error: Exception, where: str = "") -> None:
        last = traceback.format_exception(type(error), error, error.__traceback__)[-2:]
        head = f"{where}: " if where else ""
        self._handler_errors.append(f"{head}{type(error).__name__}: {error}\n{''.join(last)}")

    # -- drawing --------------------------------------------------------------------------
    def _redraw(self) -> None:
        self._draw_figure()
        self._draw_progress()
        self._draw_status()
        self._draw_buttons()
        self._draw_errors()
        if self._samples_drawn != len(self._samples):
            self._samples_drawn = len(self._samples)
            self.samples_html.value = samples_table_html(self._samples)

    def _draw_figure(self) -> None:
        x = [e["step"] for e in self._steps]
        losses = [_finite(e["loss"]) for e in self._steps]
        data = self.figure.data
        with self.figure.batch_update():
            data[RAW].x, data[RAW].y = x, losses
            data[SMOOTHED].x, data[SMOOTHED].y = x, _smoothed(losses)
            data[VALIDATION].x = [e["step"] for e in self._evaluations]
            data[VALIDATION].y = [_finite(e["eval_loss"]) for e in self._evaluations]
            data[LEARNING_RATE].x = x
            data[LEARNING_RATE].y = [e.get("learning_rate") for e in self._steps]
            scored = [e for e in self._evaluations if e.get("exact_match") is not None]
            data[EXACT_MATCH].x = [e["step"] for e in scored]
            data[EXACT_MATCH].y = [e["exact_match"] for e in scored]
            margins = [e for e in self._steps if e.get("reward_margin") is not None]  # DPO
            data[MARGIN].x = [e["step"] for e in margins]
            data[MARGIN].y = [_finite(e["reward_margin"]) for e in margins]
            data[MARGIN].visible = True if margins else "legendonly"

    def _draw_progress(self) -> None:
        total = self.max_steps
        step = self._steps[-1]["step"] if self._steps else 0
        self.progress.max = max(total, 1)
        self.progress.value = min(step, self.progress.max)
        self.progress.bar_style = {"finished": "success", "failed": "danger"}.get(
            self._end["event"] if self._end else "", "info"
        )
        self.progress_label.value = html.escape(self.progress_text())

    def _draw_status(self) -> None:
        name = html.escape(self.run_dir.name) if self.run_dir else ""
        self.status.value = f"<b>{html.escape(self.state)}</b>" + (
            f" &middot; run <code>{name}</code>" if name else ""
        )

    def _draw_buttons(self) -> None:
        self.stop_button.disabled = self.run is None or self.run.status != "running"
        self.resume_button.disabled = not self.can_resume

    def _draw_errors(self) -> None:
        if self.errors:
            self.error_html.show("\n\n".join(self.errors))
        else:
            self.error_html.clear()

    # -- what the panel shows, as values --------------------------------------------------
    @property
    def max_steps(self) -> int:
        for event in reversed(self._steps):
            return int(event.get("max_steps") or 0)
        return int((self._started or {}).get("max_steps") or 0)

    @property
    def state(self) -> str:
        """running, stopping, stopped, finished, failed, or what the files say."""
        if self.run is not None:
            return self.run.status
        if self._end is not None:
            return self._end["event"]
        if self._started is not None:
            return "interrupted (no end was recorded: still running elsewhere, or killed)"
        return "No run attached."

    @property
    def can_resume(self) -> bool:
        if self.run_dir is None or self.state in ("running", "stopping", "finished", "created"):
            return False
        return self._started is not None and bool(complete_checkpoints(self.run_dir))

    @property
    def errors(self) -> list[str]:
        """Everything shown in the red area."""
        return ([self._failure] if self._failure else []) + list(self._handler_errors)

    def eta_seconds(self) -> float | None:
        """Time left, from the pace of the recent steps of the current attempt."""
        since = (self._started or {}).get("time", 0)
        recent = [e for e in self._steps if e.get("time", -1) >= since][-21:]
        if self._end or len(recent) < 2 or recent[-1]["step"] == recent[0]["step"]:
            return None
        pace = (recent[-1]["time"] - recent[0]["time"]) / (recent[-1]["step"] - recent[0]["step"])
        return max(self.max_steps - recent[-1]["step"], 0) * pace

    def progress_text(self) -> str:
        if not self._steps:
            return f"step 0/{self.max_steps}" if self._started else "no steps yet"
        last = self._steps[-1]
        parts = [f"step {last['step']}/{self.max_steps}"]
        eta = self.eta_seconds()
        if eta is not None:
            parts.append(f"ETA {_duration(eta)}")
        if last.get("tokens_per_second"):
            parts.append(f"{last['tokens_per_second']:,.0f} tokens/s")
        parts.append(f"loss {last['loss']:.4g}")
        if last.get("reward_margin") is not None:
            parts.append(f"reward margin {last['reward_margin']:.3g}")
        if self._evaluations:
            last_evaluation = self._evaluations[-1]
            parts.append(f"validation {last_evaluation['eval_loss']:.4g}")
            if last_evaluation.get("exact_match") is not None:
                parts.append(f"exact match {last_evaluation['exact_match']:.0%}")
        return " · ".join(parts)

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
                loss_sparkline_svg([_finite(e["loss"]) for e in self._steps]),
                self.error_html.value,
                samples_table_html(self._samples),
            ]
        return "".join(parts)


def samples_table_html(samples: list[dict]) -> str:
    """A table of the sample answers at each evaluation: step, reference, answer."""
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


def _finite(value) -> float | None:
    """None for NaN/inf (plotly shows a gap; JSON has no NaN)."""
    return float(value) if value is not None and math.isfinite(value) else None


def _smoothed(losses: list[float | None]) -> list[float | None]:
    """Smoothed losses up to the first missing value; None after it."""
    head = []
    for value in losses:
        if value is None:
            break
        head.append(value)
    return smooth(head) + [None] * (len(losses) - len(head))


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {seconds // 60 % 60:02d}m"
