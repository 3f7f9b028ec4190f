"""A training run: a Trainer on a background thread, an event stream, and a run directory.

Events, in order: `started`, `step`, `evaluation`, `samples`, `checkpoint`, then one of
`stopped`, `finished` or `failed`. Subscribe with `run.add_callback(event, fn)` (`"*"` for all);
each event is also appended to `metrics.jsonl` and flushed before subscribers see it.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from workbench.config import write_atomic
from workbench.errors import WorkbenchError

Status = Literal["created", "running", "stopping", "stopped", "finished", "failed"]
EVENTS = ("started", "step", "evaluation", "samples", "checkpoint", "stopped", "finished", "failed")
COMPLETE_MARKER = "WORKBENCH_COMPLETE"
# Trainer log keys carried into `step` events when present (TRL's DPO trainer logs these).
STEP_EXTRAS = {
    "rewards/margins": "reward_margin",
    "rewards/chosen": "reward_chosen",
    "rewards/rejected": "reward_rejected",
    "rewards/accuracies": "reward_accuracy",
}
OOM_ADVICE = (
    "Out of memory. Try, in this order: a smaller `batch_size` (raise `gradient_accumulation` "
    "to keep the effective batch), a shorter `max_length`, `gradient_checkpointing=True`, "
    "and for large models QLoRA (load_model(..., quantization='4bit') with Method(kind='qlora'))."
)


def complete_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoints that finished writing (marked complete), oldest first."""
    folder = Path(run_dir) / "checkpoints"
    found = [p for p in folder.glob("checkpoint-*") if (p / COMPLETE_MARKER).is_file()]
    return sorted(found, key=lambda p: int(p.name.rsplit("-", 1)[1]))


class Run:
    """One training run. Create it with `workbench.train(...)`; it starts at once.

    `wait()` blocks until it ends, `stop()` stops after the current step and saves a
    checkpoint, `resume()` continues a stopped run from its newest complete checkpoint.
    """

    def __init__(
        self, run_dir: Path, build_trainer: Callable[..., Any], *, on_success: Callable[[Run], dict]
    ) -> None:
        self.run_dir = Path(run_dir)
        self.status: Status = "created"
        self.error: str | None = None
        self.events: list[dict[str, Any]] = []
        self.trainer = None
        self._build_trainer = build_trainer
        self._on_success = on_success
        self._callbacks: dict[str, list[Callable[[dict], None]]] = {}
        self._stop_requested = False
        self._nan_at: int | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._last_step_time: float | None = None
        self._last_tokens = 0

    # -- events ---------------------------------------------------------------------------
    def add_callback(self, event: str, fn: Callable[[dict], None]) -> None:
        """Call `fn(event_dict)` on every `event` (one of EVENTS, or '*' for all)."""
        if event != "*" and event not in EVENTS:
            raise WorkbenchError(f"Unknown event `{event}`; events: {', '.join(EVENTS)} or '*'.")
        self._callbacks.setdefault(event, []).append(fn)

    def remove_callback(self, event: str, fn: Callable[[dict], None]) -> None:
        """Stop calling `fn` for `event` (no error if it was not subscribed)."""
        callbacks = self._callbacks.get(event, [])
        if fn in callbacks:
            callbacks.remove(fn)

    def emit(self, event: str, **data: Any) -> dict[str, Any]:
        """Record an event in metrics.jsonl, then call the subscribers of that event and then
        those of '*'. A failing subscriber is reported, never allowed to stop training."""
        record = {"event": event, "time": time.time(), **data}
        with self._lock:
            self.events.append(record)
            with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record, default=str) + "\n")
                handle.flush()
        for fn in self._callbacks.get(event, []) + self._callbacks.get("*", []):
            try:
                fn(record)
            except Exception as error:  # a broken subscriber must not kill training
                print(f"workbench: a callback for `{event}` failed: {error!r}")
        return record

    def history(self, event: str = "step"):
        """Events of one kind as a DataFrame (step: loss, learning_rate, tokens/s ...)."""
        import pandas as pd

        return pd.DataFrame([e for e in self.events if e["event"] == event])

    @property
    def losses(self) -> list[float]:
        """Training loss per optimizer step."""
        return [e["loss"] for e in self.events if e["event"] == "step"]

    # -- lifecycle ------------------------------------------------------------------------
    def start(self, checkpoint: Path | None = None) -> Run:
        if self._thread and self._thread.is_alive():
            raise WorkbenchError("This run is already training.")
        self.trainer = self._build_trainer(self, resuming=checkpoint is not None)
        _end_last_line(self.run_dir / "metrics.jsonl")  # a killed run may have cut one short
        self._stop_requested, self._nan_at, self.error = False, None, None
        self._last_step_time = None
        self._set_status("running")
        self._thread = threading.Thread(
            target=self._train,
            args=(checkpoint,),
            name=f"workbench-run-{self.run_dir.name}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop after the current step and save a checkpoint that `resume()` continues from."""
        if self.status == "running":
            self._stop_requested = True
            self._set_status("stopping")

    def resume(self) -> Run:
        """Continue a stopped or failed run from its newest complete checkpoint."""
        if self.status in ("running", "stopping"):
            raise WorkbenchError("This run is still training; stop() it first.")
        checkpoints = complete_checkpoints(self.run_dir)
        if not checkpoints:
            raise WorkbenchError(f"{self.run_dir} has no complete checkpoint to resume from.")
        return self.start(checkpoints[-1])

    def wait(self, timeout: float | None = None) -> Run:
        """Block until the run ends. Ctrl-C stops it cleanly (checkpoint saved), then re-raises."""
        if self._thread is None:
            return self
        try:
            self._thread.join(timeout)
        except KeyboardInterrupt:
            print("workbench: stopping after this step and saving a checkpoint ...")
            self.stop()
            self._thread.join()
            raise
        return self

    @property
    def stop_requested(self) -> bool:
        """Whether `stop()` was called and the run has not stopped yet."""
        return self._stop_requested

    @property
    def done(self) -> bool:
        return self.status in ("stopped", "finished", "failed")

    def _set_status(self, status: Status) -> None:
        self.status = status
        state = {
            "status": status,
            "pid": os.getpid(),
            "error": self.error,
            "step": self.trainer.state.global_step if self.trainer else 0,
            "updated": time.time(),
        }
        write_atomic(self.run_dir / "status.json", json.dumps(state, indent=1))

    def _train(self, checkpoint: Path | None) -> None:
        import torch

        try:
            self.trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        except torch.OutOfMemoryError as error:
            self._fail(f"{OOM_ADVICE} ({str(error).splitlines()[0]})")
            return
        except BaseException as error:  # noqa: BLE001 - a thread must always record its end
            if "out of memory" in str(error).lower():
                self._fail(f"{OOM_ADVICE} ({error})")
            else:
                self._fail(f"{type(error).__name__}: {error}", traceback.format_exc())
            return
        if self._nan_at is not None:
            last = complete_checkpoints(self.run_dir)
            self._fail(
                f"The loss became {self.events[-1].get('loss')} at step {self._nan_at}; "
                "training stopped and nothing after the last good checkpoint "
                f"({last[-1].name if last else 'none'}) was saved. Lower the learning "
                "rate, or check the data for empty responses."
            )
        elif self._stop_requested:
            last = complete_checkpoints(self.run_dir)
            self._set_status("stopped")
            self.emit(
                "stopped",
                step=self.trainer.state.global_step,
                checkpoint=str(last[-1]) if last else None,
            )
        else:
            try:
                summary = self._on_success(self)
            except Exception as error:
                self._fail(
                    f"Training finished but saving failed: {error!r}", traceback.format_exc()
                )
                return
            self._set_status("finished")
            self.emit("finished", step=self.trainer.state.global_step, **summary)

    def _fail(self, reason: str, details: str | None = None) -> None:
        self.error = reason
        self._set_status("failed")
        self.emit(
            "failed",
            reason=reason,
            details=details,
            step=self.trainer.state.global_step if self.trainer else 0,
        )

    # -- called by the Trainer callback ---------------------------------------------------
    def on_step_log(self, state, logs: dict[str, Any]) -> bool:
        """Emit a `step` event; returns False when the loss is NaN or infinite."""
        now, tokens = time.perf_counter(), int(getattr(state, "num_input_tokens_seen", 0) or 0)
        speed = None
        if self._last_step_time is not None and now > self._last_step_time:
            speed = (tokens - self._last_tokens) / (now - self._last_step_time)
        self._last_step_time, self._last_tokens = now, tokens
        loss = float(logs["loss"])
        self.emit(
            "step",
            step=state.global_step,
            max_steps=state.max_steps,
            epoch=state.epoch,
            loss=loss,
            learning_rate=logs.get("learning_rate"),
            grad_norm=_number(logs.get("grad_norm")),
            tokens_seen=tokens,
            tokens_per_second=speed,
            **{name: _number(logs[key]) for key, name in STEP_EXTRAS.items() if key in logs},
        )
        if not math.isfinite(loss):
            self._nan_at = state.global_step
            return False
        return True

    def restart_step_clock(self) -> None:
        """After an evaluation: the next step's tokens/s should time training alone."""
        self._last_step_time = time.perf_counter()

    def mark_checkpoint(self, state) -> None:
        path = Path(self.trainer.args.output_dir) / f"checkpoint-{state.global_step}"
        if path.is_dir():
            (path / COMPLETE_MARKER).write_text(f"step {state.global_step}\n")
            self.emit("checkpoint", step=state.global_step, path=str(path))

    def __repr__(self) -> str:
        step = self.trainer.state.global_step if self.trainer else 0
        return f"Run({self.run_dir.name}, status={self.status}, step={step})"


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _end_last_line(path: Path) -> None:
    """Make sure the next appended event starts on a line of its own."""
    if path.is_file() and path.stat().st_size:
        with open(path, "rb") as handle:
            handle.seek(-1, os.SEEK_END)
            ends_with_newline = handle.read(1) == b"\n"
        if not ends_with_newline:
            with open(path, "a", encoding="utf-8") as handle:
                handle.write("\n")


def save_atomic_dir(save: Callable[[Path], None], target: Path) -> None:
    """Save into a temporary folder, then swap it into `target` (never half-written)."""
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    save(tmp)
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)
