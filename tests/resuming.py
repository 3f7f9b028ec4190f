"""Stopping a run at a chosen step and checking that it resumes to the losses of a run that was
never stopped: the helpers of the tests that resume every kind of run."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from conftest import held_at_step


def stop_at(run, step: int):
    """Have `run` stop itself once it logs `step` (its checkpoint is the next step's: a step's
    event comes after the Trainer's stop check); returns the run."""
    run.add_callback("step", lambda e: run.stop() if e["step"] == step else None)
    return run


def finish(run, stopped_at: int | None = None):
    """Start `run` and wait for it; with `stopped_at`, it stops itself at that step."""
    if stopped_at:
        stop_at(run, stopped_at)
    return run.start().wait()


def assert_resumes_to_the_same_losses(start: Callable, resume_from_directory: Callable) -> None:
    """A run of `start(**kwargs)` stopped at step 2 (its checkpoint at 3) repeats the losses of
    an uninterrupted one when resumed in the kernel on the same model object, and when
    `resume_from_directory(run_dir)` resumes it on a fresh base."""
    reference = start().wait()
    assert reference.status == "finished", reference.error
    in_kernel = start(start=False)  # stopped, then resumed on the same model object
    with held_at_step(in_kernel, 2):
        in_kernel.stop()
    assert in_kernel.wait().status == "stopped"
    assert in_kernel.resume().wait().status == "finished", in_kernel.error
    assert in_kernel.losses == pytest.approx(reference.losses, abs=1e-5)

    stopped = start(start=False)  # stopped, then resumed from its directory on a fresh base
    with held_at_step(stopped, 2):
        stopped.stop()
    assert stopped.wait().status == "stopped"
    assert next(e for e in stopped.events if e["event"] == "stopped")["step"] == 3
    resumed = resume_from_directory(stopped.run_dir).wait()
    assert resumed.status == "finished", resumed.error
    assert resumed.losses == pytest.approx(reference.losses[3:], abs=1e-5)
    assert stopped.losses + resumed.losses == pytest.approx(reference.losses, abs=1e-5)
