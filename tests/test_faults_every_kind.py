"""The fault battery over the registry: for every kind of run that resumes, a training process
is killed at a random moment after its first complete checkpoint and resumed in a new process
with `workbench.resume`; the run then logs the same per-step losses as an uninterrupted one.

(`tests/test_directory.py` kills an instruction-tuning run four times over 24 steps; here each
kind is killed once, to keep the battery within CI's time.)"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time

import pytest
from conftest import SAMPLE_DATA

from workbench.runs.directory import RunDirectory
from workbench.runs.kinds import KINDS

pytestmark = pytest.mark.faults

STEPS = 12
# The child process: starts a run of STAGE through the grammar every kind shares, or resumes it.
CHILD = """
import sys
import workbench as wb
model_dir, samples, run_dir, stage, mode = sys.argv[1:6]
kind = wb.KINDS[stage]
model, tokenizer = wb.load_model(model_dir, device="cpu")
needs = {}
if stage == "distill":
    needs["teacher"] = model
    model = wb.student_from_teacher(model, keep_layers=1)
if mode == "resume":
    student = model if stage == "distill" else None
    wb.resume(run_dir, student, tokenizer, **needs).wait()
    raise SystemExit(0)
common = dict(max_steps=STEPS, batch_size=4, eval_every=3, learning_rate=5e-3, seed=0,
              keep_checkpoints=1, sample_max_new_tokens=2)
own = {
    "pretrain": dict(block_size=32),
    "grpo": dict(batch_size=8, num_generations=4, max_completion_length=4, max_length=256),
    "ppo": dict(batch_size=4, num_generations=1, max_completion_length=4, max_length=256),
    "reward": dict(max_length=512), "dpo": dict(max_length=512), "kto": dict(max_length=512),
    "orpo": dict(max_length=512),
}
settings = kind.settings(**{**common, **own.get(stage, {})})
files = {"dpo": "preferences", "kto": "preferences", "orpo": "preferences",
         "reward": "preferences", "pretrain": "domain/manual_train"}
rows = wb.load_data(f"{samples}/{files.get(stage, 'support_tickets')}.jsonl", verbose=False)
train, validation = wb.split_data(rows, 8, seed=0)
train = train.select(range(48))
if stage in ("grpo", "ppo"):
    needs["reward"] = wb.one_of_labels(["billing", "shipping", "technical", "account"])
function = getattr(wb, kind.function)
function(model, tokenizer, train, validation, settings=settings, run_dir=run_dir,
         **needs).wait()
""".replace("STEPS", str(STEPS))
RESUMABLE = sorted(stage for stage, kind in KINDS.items() if kind.resume is not None)


def _child(model_dir, run_dir, stage: str, mode: str):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    argv = [sys.executable, "-c", CHILD, str(model_dir), str(SAMPLE_DATA), str(run_dir)]
    return subprocess.Popen(argv + [stage, mode], env=env, stderr=subprocess.PIPE, text=True)


def _losses(run_dir) -> dict[int, float]:
    steps = {}
    for event in RunDirectory(run_dir).read_events()[0]:
        if event["event"] == "step":
            steps[event["step"]] = event["loss"]  # a step redone after the kill: the last
    return steps


def _finished(child) -> None:
    _, errors = child.communicate(timeout=300)
    assert child.returncode == 0, errors[-3000:]


@pytest.mark.parametrize("stage", RESUMABLE)
def test_a_run_of_every_kind_killed_at_a_random_moment_resumes_the_same(
    stage, tiny_model_dir, tmp_path
):
    reference = tmp_path / "reference"
    _finished(_child(tiny_model_dir, reference, stage, "train"))
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
        _finished(_child(tiny_model_dir, run_dir, stage, "resume"))
    assert _losses(run_dir) == pytest.approx(expected, rel=1e-5, abs=1e-6)
