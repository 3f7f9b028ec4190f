"""A training run: a Trainer on a background thread, an event stream, and a run directory.

Events, in order: `started`, `step`, `evaluation`, `samples`, `checkpoint`, then one of
`stopped`, `finished` or `failed`. Subscribe with `run.add_callback(event, fn)` (`"*"` for all);
each event is also appended to `metrics.jsonl` and flushed before subscribers see it.

Every kind of run (instruction tuning, DPO) builds a `RunContext` (what it trains and how) and
a Trainer whose callbacks include `event_bridge(run)` (runs/bridge.py), which turns the
Trainer's hooks into the Run's events; files go through `RunDirectory`.
"""

from __future__ import annotations

import math
import os
import threading
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from workbench.errors import WorkbenchError
from workbench.runs.directory import RunDirectory
from workbench.tokens.templates import Template

Status = Literal["created", "running", "stopping", "stopped", "finished", "failed"]
EVENTS = ("started", "step", "evaluation", "samples", "checkpoint", "stopped", "finished", "failed")
# Trainer log keys carried into `step` events when present (TRL's trainers log these).
STEP_EXTRAS = {
    "rewards/margins": "reward_margin",
    "rewards/chosen": "reward_chosen",
    "rewards/rejected": "reward_rejected",
    "rewards/accuracies": "reward_accuracy",
    # TRL's RewardTrainer: share of the batch's pairs ranked right, chosen minus rejected score
    "accuracy": "pair_accuracy",
    "margin": "score_margin",
    # TRL's GRPOTrainer: mean reward of the step's answers, KL to the reference, answer tokens
    "reward": "mean_reward",
    "kl": "kl",
    "completions/mean_length": "response_length",
    # the project's PPO: the clipped surrogate, the value head's squared error, the share of
    # answer tokens whose ratio was clipped
    "policy_loss": "policy_loss",
    "value_loss": "value_loss",
    "clip_fraction": "clip_fraction",
    # distillation: the two terms of the loss, cross-entropy on the labels and KL to the teacher
    "distill_ce": "distill_ce",
    "distill_kl": "distill_kl",
}
OOM_ADVICE = (
    "Out of memory. Try, in this order: a smaller `batch_size` (raise `gradient_accumulation` "
    "to keep the effective batch), a shorter `max_length`, `gradient_checkpointing=True`, "
    "and for large models QLoRA (load_model(..., quantization='4bit') with Method(kind='qlora'))."
)


@dataclass
class RunContext:
    """What a run trains and how: set once when the run is built, read by the event bridge,
    the panels and the caller (`run.model`, `run.method`, ... read from here).

    `sample_prompts` are answered at every evaluation; the first `scored_rows` of them are
    scored by exact match against `references`, and the first `samples_shown` are recorded as
    `samples` events.
    """

    model: Any
    tokenizer: Any
    template: Template
    method: Any  # workbench.Method
    hyperparameters: Any  # workbench.Hyperparameters, or PreferenceSettings for DPO
    parameters: Any  # workbench.ParameterCount
    sample_prompts: list[str] = field(default_factory=list)
    references: list[str] = field(default_factory=list)
    samples_shown: int = 0
    scored_rows: int = 0
    sample_max_new_tokens: int = 24
    fit: Any = None  # workbench.runs.fitting.Fit: the memory prediction, when made
    truncation: Any = None  # workbench.tokens.tokenizing.TruncationReport of the training rows


class Run:
    """One training run. Create it with `workbench.train(...)`; it starts at once.

    `wait()` blocks until it ends, `stop()` stops after the current step and saves a
    checkpoint, `resume()` continues a stopped run from its newest complete checkpoint.
    `run.context` holds what it trains (also as `run.model`, `run.tokenizer`, `run.template`,
    `run.method`, `run.hyperparameters`, `run.parameters`, `run.fit`, `run.truncation`).
    """

    def __init__(
        self,
        run_dir: Path,
        context: RunContext,
        build_trainer: Callable[..., Any],
        *,
        save_final: Callable[[Path], None],
    ) -> None:
        self.run_dir = Path(run_dir)
        self.directory = RunDirectory(run_dir)
        self.context = context
        self.status: Status = "created"
        self.error: str | None = None
        self.events: list[dict[str, Any]] = []
        self.trainer = None
        self._build_trainer = build_trainer
        self._save_final = save_final
        self._callbacks: dict[str, list[Callable[[dict], None]]] = {}
        self._stop_requested = False
        self._nan_at: int | None = None
        self._thread: threading.Thread | None = None
        self._ended = threading.Event()  # set when the training thread has finished its work
        self._lock = threading.Lock()
        self._last_step_time: float | None = None
        self._last_tokens = 0

    # -- what it trains (declared once, in RunContext) ----------------------------------
    model = property(lambda self: self.context.model, doc="The model being trained.")
    tokenizer = property(lambda self: self.context.tokenizer)
    template = property(lambda self: self.context.template)
    method = property(lambda self: self.context.method)
    hyperparameters = property(lambda self: self.context.hyperparameters)
    parameters = property(lambda self: self.context.parameters)
    fit = property(lambda self: self.context.fit)
    truncation = property(lambda self: self.context.truncation)

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
            try:
                self.directory.append_event(record)
            except OSError as error:  # e.g. the disk is full: subscribers still hear of it
                print(f"workbench: could not record the `{event}` event: {error}")
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
    def start(self, checkpoint: Path | None = None, *, trained: bool = False) -> Run:
        """Train on a background thread, from `checkpoint` when given. `trained`: the
        checkpoint already holds the last step (a kill or Stop before the run saved its
        results), so the run only loads it and saves its adapter and report."""
        if self._thread and self._thread.is_alive():
            raise WorkbenchError("This run is already training.")
        self.directory.check_free_space()  # a full disk: say so before anything is written
        self.directory.acquire()  # one owner at a time: another process gets a clear error
        try:
            self.trainer = self._build_trainer(self, resuming=checkpoint is not None)
        except BaseException:
            self.directory.release()
            raise
        self.directory.start_events()  # a killed run may have cut its last line short
        self._stop_requested, self._nan_at, self.error = False, None, None
        self._last_step_time = None
        self._set_status("running")
        self._ended = threading.Event()
        self._thread = threading.Thread(
            target=self._train,
            args=(checkpoint, trained),
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

    def resume(self, max_steps: int | None = None) -> Run:
        """Continue a stopped or failed run from its newest complete checkpoint.

        A finished run is left unchanged (RunFinishedError); to train it further, pass a
        larger `max_steps`, which config.yaml then records.
        """
        if self.status in ("running", "stopping"):
            raise WorkbenchError("This run is still training; stop() it first.")
        planned = max_steps or self.hyperparameters.max_steps
        checkpoint, trained = self.directory.resume_point(planned, extending=max_steps is not None)
        if max_steps is not None:
            self.context.hyperparameters = self.hyperparameters.replace(max_steps=max_steps)
            config = self.directory.read_config()
            config["hyperparameters"]["max_steps"] = max_steps
            self.directory.write_config(config)
        return self.start(checkpoint, trained=trained)

    def wait(self, timeout: float | None = None) -> Run:
        """Block until the run ends. Ctrl-C stops it cleanly (checkpoint saved), then re-raises."""
        if self._thread is None:
            return self
        try:
            self._thread.join(timeout)
        except KeyboardInterrupt:
            print("workbench: stopping after this step and saving a checkpoint ...")
            self.stop()
            # not join(): after a join that Ctrl-C interrupted, Python 3.11 counts the thread
            # as ended (bpo-45274) and a second join returns while it still trains, so the
            # process exits before the checkpoint is written
            self._ended.wait()
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
        try:
            self.directory.write_status(state)
        except OSError as error:  # e.g. the disk is full: the status stays known in memory
            print(f"workbench: could not write {self.directory.file('status.json')}: {error}")

    def _train(self, checkpoint: Path | None, trained: bool) -> None:
        try:
            self._train_and_record(checkpoint, trained)
        finally:
            self.directory.release()
            self._ended.set()

    def _train_and_record(self, checkpoint: Path | None, trained: bool) -> None:
        import torch

        try:
            if trained:
                self._load_trained(checkpoint)
            else:
                self.trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        except torch.OutOfMemoryError as error:
            self._fail(f"{OOM_ADVICE} ({str(error).splitlines()[0]})")
            return
        except BaseException as error:  # noqa: BLE001 - a thread must always record its end
            disk_full = self.directory.disk_full_message(error)
            if disk_full:
                self.directory.clean_up_after_failure()
                self._fail(disk_full)
            elif "out of memory" in str(error).lower():
                self._fail(f"{OOM_ADVICE} ({error})")
            else:
                self._fail(f"{type(error).__name__}: {error}", traceback.format_exc())
            return
        if self._nan_at is not None:
            last = self.directory.complete_checkpoints()
            self._fail(
                f"The loss became {self.events[-1].get('loss')} at step {self._nan_at}; "
                "training stopped and nothing after the last good checkpoint "
                f"({last[-1].name if last else 'none'}) was saved. Lower the learning "
                "rate, or check the data for empty responses."
            )
        elif self._stop_requested:
            last = self.directory.complete_checkpoints()
            self._set_status("stopped")
            self.emit(
                "stopped",
                step=self.trainer.state.global_step,
                checkpoint=str(last[-1]) if last else None,
            )
        else:
            try:
                summary = self._finish()
            except Exception as error:
                self._fail(
                    f"Training finished but saving failed: {error!r}", traceback.format_exc()
                )
                return
            self._set_status("finished")
            self.emit("finished", step=self.trainer.state.global_step, **summary)

    def _load_trained(self, checkpoint: Path) -> None:
        """The weights and state of a checkpoint at the last step, without training."""
        from transformers import TrainerState

        self.trainer._load_from_checkpoint(str(checkpoint))
        self.trainer.state = TrainerState.load_from_json(str(checkpoint / "trainer_state.json"))

    def _finish(self) -> dict[str, Any]:
        """Save the final adapter (or model) and the report; the `finished` event's summary."""
        name = "adapter" if hasattr(self.model, "peft_config") else "model"
        summary: dict[str, Any] = {name: str(self.directory.save_final(name, self._save_final))}
        evaluations = [e for e in self.events if e["event"] == "evaluation"]
        if evaluations:
            summary["eval_loss"] = evaluations[-1]["eval_loss"]
        margins = [e for e in self.events if e["event"] == "step" and e.get("reward_margin")]
        if margins:  # DPO runs
            summary["reward_margin"] = margins[-1]["reward_margin"]
        try:
            from workbench.runs.report import write_report

            summary["report"] = str(write_report(self.run_dir))
        except ImportError as error:  # plotly missing: the run itself is still complete
            warnings.warn(f"No report.html: {error}", stacklevel=2)
        return summary

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
            self.directory.mark_complete(path, state.global_step)
            self.emit("checkpoint", step=state.global_step, path=str(path))

    def __repr__(self) -> str:
        step = self.trainer.state.global_step if self.trainer else 0
        return f"Run({self.run_dir.name}, status={self.status}, step={step})"


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
