"""The fault battery over the registry: for every kind of run that resumes, a training process
is killed at a random moment after its first complete checkpoint and resumed in a new process
with `workbench.resume`; the run then logs the same per-step losses as an uninterrupted one.
The processes are forked from a server that has imported torch and the libraries once
(tests/processes.py): each is still its own process, killed with SIGKILL.

(`tests/test_directory.py` kills an instruction-tuning run four times over 24 steps; here each
kind is killed once, to keep the battery within CI's time.)"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
from conftest import SAMPLE_DATA
from processes import Child

from workbench.runs.directory import RunDirectory
from workbench.runs.kinds import KINDS

pytestmark = pytest.mark.faults

STEPS = 12
FILES = {
    "dpo": "preferences",
    "kto": "preferences",
    "orpo": "preferences",
    "reward": "preferences",
    "pretrain": "domain/manual_train",
}
OWN_SETTINGS = {
    "pretrain": dict(block_size=32),
    "grpo": dict(batch_size=8, num_generations=4, max_completion_length=4, max_length=256),
    "ppo": dict(batch_size=4, num_generations=1, max_completion_length=4, max_length=256),
    "reward": dict(max_length=512), "dpo": dict(max_length=512), "kto": dict(max_length=512),
    "orpo": dict(max_length=512),
}  # fmt: skip
RESUMABLE = sorted(stage for stage, kind in KINDS.items() if kind.resume is not None)


def train_or_resume(model_dir: str, run_dir: str, stage: str, mode: str) -> None:
    """The child process: starts a run of `stage` through the grammar every kind shares, or
    resumes it with `workbench.resume`."""
    import workbench as wb

    kind = wb.KINDS[stage]
    model, tokenizer = wb.load_model(model_dir, device="cpu")
    needs = {}
    if stage == "distill":
        needs["teacher"] = model
        model = wb.student_from_teacher(model, keep_layers=1)
    if mode == "resume":
        student = model if stage == "distill" else None
        wb.resume(run_dir, student, tokenizer, **needs).wait()
        return
    common = dict(max_steps=STEPS, batch_size=4, eval_every=3, learning_rate=5e-3, seed=0,
                  keep_checkpoints=1, sample_max_new_tokens=2)  # fmt: skip
    settings = kind.settings(**{**common, **OWN_SETTINGS.get(stage, {})})
    path = SAMPLE_DATA / f"{FILES.get(stage, 'support_tickets')}.jsonl"
    train, validation = wb.split_data(wb.load_data(path, verbose=False), 8, seed=0)
    if stage in ("grpo", "ppo"):
        needs["reward"] = wb.one_of_labels(["billing", "shipping", "technical", "account"])
    function = getattr(wb, kind.function)
    run = function(
        model, tokenizer, train.select(range(48)), validation, settings=settings,
        run_dir=run_dir, **needs,
    )  # fmt: skip
    run.wait()
    assert run.status == "finished", run.error


def _child(model_dir, run_dir, stage: str, mode: str) -> Child:
    errors = Path(f"{run_dir}.{mode}.errors")
    return Child(train_or_resume, str(model_dir), str(run_dir), stage, mode, errors=errors)


def _losses(run_dir) -> dict[int, float]:
    steps = {}
    for event in RunDirectory(run_dir).read_events()[0]:
        if event["event"] == "step":
            steps[event["step"]] = event["loss"]  # a step redone after the kill: the last
    return steps


@pytest.mark.parametrize("stage", RESUMABLE)
def test_a_run_of_every_kind_killed_at_a_random_moment_resumes_the_same(
    stage, tiny_model_dir, tmp_path
):
    reference = tmp_path / "reference"
    _child(tiny_model_dir, reference, stage, "train").finished()
    expected = _losses(reference)
    assert sorted(expected) == list(range(1, STEPS + 1))

    run_dir, rng = tmp_path / "killed", random.Random(stage)
    child = _child(tiny_model_dir, run_dir, stage, "train")
    directory = RunDirectory(run_dir)
    while child.poll() is None and not (run_dir.is_dir() and directory.complete_checkpoints()):
        time.sleep(0.02)  # until the first complete checkpoint (evaluation every 3 steps)
    time.sleep(rng.uniform(0.0, 0.15))  # then a random moment: a step, an evaluation, a save
    assert child.poll() is None, "the run ended before it could be killed"
    child.kill()
    child.wait(30)
    assert directory.complete_checkpoints(), "the kill lost every complete checkpoint"
    status, _ = directory.read_status()
    if (status or {}).get("status") != "finished":  # killed after finishing: nothing to resume
        # (killed after its last step but before its final save, it resumes to save them)
        _child(tiny_model_dir, run_dir, stage, "resume").finished()
    assert _losses(run_dir) == pytest.approx(expected, rel=1e-5, abs=1e-6)
