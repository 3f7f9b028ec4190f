"""Where a training step's wall time goes: phase timers and a host-device sync counter.

`PhaseTimer.install(...)` wraps the functions every stack's step calls (the collator, the
model's forward, the loss, `Tensor.backward`, gradient clipping, the optimizer, the scheduler,
the Trainer's logging and callbacks, the Run's `emit`) so that each records its *exclusive*
time (a phase nested in another pauses the outer one): the phases and the remainder ("other":
the Trainer's loop, its data loader, moving batches to the device ...) add up to the step.
`SyncCounter` wraps the Tensor methods that make the host wait for the device (`.item()`,
`float(t)`, `int(t)`, `bool(t)`, `.tolist()`, `.cpu()`, `.numpy()`) and counts the calls by
the line that made them. Both are for benchmarks only; they patch classes process-wide.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path

PHASES = (
    "collation",
    "forward",
    "loss",
    "backward",
    "grad clipping",
    "optimizer",
    "scheduler",
    "trainer logging",
    "callbacks",
    "run events",
)
SYNC_METHODS = ("item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__")


class PhaseTimer:
    """Exclusive wall time per phase, accumulated while `measuring` is on."""

    def __init__(self, clock=time.perf_counter) -> None:
        self.clock = clock  # seconds; a test passes a counter it controls
        self.totals: Counter = Counter()
        self.calls: Counter = Counter()
        self.measuring = False
        self._stack: list[str] = []
        self._last = clock()

    def enter(self, phase: str) -> None:
        now = self.clock()
        if self._stack and self.measuring:
            self.totals[self._stack[-1]] += now - self._last
        self._stack.append(phase)
        self._last = now
        if self.measuring:
            self.calls[phase] += 1

    def exit(self) -> None:
        now = self.clock()
        if self.measuring and self._stack:
            self.totals[self._stack[-1]] += now - self._last
        if self._stack:
            self._stack.pop()
        self._last = now

    def reset(self) -> None:
        self.totals.clear()
        self.calls.clear()
        self._last = self.clock()

    def timed(self, fn, phase: str):
        """`fn` wrapped so that its time counts towards `phase`."""

        def wrapper(*args, **kwargs):
            self.enter(phase)
            try:
                return fn(*args, **kwargs)
            finally:
                self.exit()

        wrapper.__wrapped__ = fn
        return wrapper

    def wrap(self, owner, name: str, phase: str) -> None:
        setattr(owner, name, self.timed(getattr(owner, name), phase))

    def watch_forward(self, model) -> None:
        """Time `model`'s forward (hooks registered once per model)."""
        if getattr(model, "_phase_hooks", False):
            return
        model.register_forward_pre_hook(lambda *a: self.enter("forward"))
        model.register_forward_hook(lambda *a: self.exit())
        model._phase_hooks = True

    def install(self) -> None:
        """Wrap every stack's step functions (call before the trainer or loop is built)."""
        import accelerate
        import torch
        import transformers
        from transformers.trainer_callback import CallbackHandler

        import workbench.model.loss as loss_module
        from workbench.runs.run import Run

        self.wrap(torch.Tensor, "backward", "backward")
        self.wrap(torch.nn.utils, "clip_grad_norm_", "grad clipping")
        self.wrap(accelerate.Accelerator, "clip_grad_norm_", "grad clipping")
        from torch.optim.optimizer import (
            register_optimizer_step_post_hook,
            register_optimizer_step_pre_hook,
        )

        register_optimizer_step_pre_hook(lambda *a: self.enter("optimizer"))
        register_optimizer_step_post_hook(lambda *a: self.exit())
        self.wrap(torch.optim.Optimizer, "zero_grad", "optimizer")
        self.wrap(torch.nn.Module, "zero_grad", "optimizer")
        self.wrap(torch.optim.lr_scheduler.LRScheduler, "step", "scheduler")
        self.wrap(transformers.Trainer, "_maybe_log_save_evaluate", "trainer logging")
        self.wrap(CallbackHandler, "call_event", "callbacks")
        self.wrap(Run, "emit", "run events")
        response_loss = loss_module.response_loss

        def timed_loss(model, *args, **kwargs):  # the workbench's and the bare loop's loss
            self.watch_forward(model)
            return response_loss(model, *args, **kwargs)

        loss_module.response_loss = self.timed(timed_loss, "loss")

    def wrap_compute_loss(self, trainer_class) -> None:
        """Time a Trainer class's `compute_loss` (TRL's: its own metrics included) as `loss`."""
        compute_loss = trainer_class.compute_loss

        def timed(trainer, model, *args, **kwargs):
            self.watch_forward(model)
            return compute_loss(trainer, model, *args, **kwargs)

        trainer_class.compute_loss = self.timed(timed, "loss")


class SyncCounter:
    """Counts the Tensor calls that wait for the device, by the line that made them."""

    def __init__(self) -> None:
        self.sites: Counter = Counter()
        self.counting = False
        self._originals: dict = {}

    def install(self) -> None:
        import torch

        self._originals = {name: getattr(torch.Tensor, name) for name in SYNC_METHODS}
        for name, original in self._originals.items():
            setattr(torch.Tensor, name, self._counted(original, name))

    def uninstall(self) -> None:
        import torch

        for name, original in self._originals.items():
            setattr(torch.Tensor, name, original)

    def _counted(self, original, name: str):
        counter = self

        def counted(tensor, *args, **kwargs):
            if counter.counting:
                frame = sys._getframe(1)
                where = f"{_short(frame.f_code.co_filename)}:{frame.f_lineno}"
                counter.sites[f"{name} {where} ({frame.f_code.co_name})"] += 1
            return original(tensor, *args, **kwargs)

        return counted


def _short(filename: str) -> str:
    """A path from its package on (site-packages/transformers/trainer.py -> transformers/...)."""
    parts = Path(filename).parts
    for anchor in ("site-packages", "main"):
        if anchor in parts:
            return "/".join(parts[parts.index(anchor) + 1 :])
    return "/".join(parts[-2:])
