"""The run directory under real faults: finished runs stay finished, a directory holds one run
and has one owner, checkpoints rotate only after the new one is complete, long prompts are cut."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import SAMPLE_DATA, quick
from processes import Child

import workbench
from workbench.cli import main as cli
from workbench.errors import RunDirectoryInUseError
from workbench.runs import directory as run_directory
from workbench.runs.directory import (
    COMPLETE_MARKER,
    RunDirectory,
    RunFinishedError,
    RunLockedError,
    new_run_dir,
)
from workbench.runs.hyperparameters import Hyperparameters
from workbench.runs.report import TRAIN_LOSS, curves_figure
from workbench.training.finetune import train
from workbench.training.resume import resume


def _fingerprint(folder):
    """sha256 of every file under `folder`, by relative path."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _assert_resume_refused_untouched(run_dir, reason: str) -> None:
    """resume(run_dir) refuses with a RunFinishedError matching `reason` and changes no file."""
    before = _fingerprint(run_dir)
    with pytest.raises(RunFinishedError, match=reason):
        resume(run_dir)
    assert _fingerprint(run_dir) == before


def _stopped_at(model, tokenizer, split, step: int, **settings):
    """A run stopped with Stop at `step` (pressed during the step before: a step's event
    comes after the Trainer's stop check), with its checkpoint there."""
    run = train(model, tokenizer, *split, hyperparameters=quick(**settings), start=False)
    run.add_callback("step", lambda e: run.stop() if e["step"] == step - 1 else None)
    assert run.start().wait().status == "stopped", run.error
    return run


def test_resuming_a_finished_run_says_so_and_changes_nothing(tiny, ticket_split, capsys):
    model, tokenizer = tiny
    run = train(model, tokenizer, *ticket_split, hyperparameters=quick()).wait()
    assert run.status == "finished", run.error
    before = _fingerprint(run.run_dir)
    with pytest.raises(RunFinishedError, match="finished at step 6 of 6"):
        resume(run.run_dir)
    with pytest.raises(RunFinishedError, match="max_steps"):
        run.resume()
    assert cli(["resume", str(run.run_dir)]) == 2
    assert "finished at step 6" in capsys.readouterr().err
    assert _fingerprint(run.run_dir) == before


def test_a_run_stopped_on_its_last_step_saves_its_results_without_training_again(
    tiny, ticket_split, tiny_model_dir
):
    model, tokenizer = tiny
    last = _stopped_at(model, tokenizer, ticket_split, 6)
    directory = RunDirectory(last.run_dir)
    assert directory.final_artefact() is None  # stopped: no adapter, no report yet
    steps = [e["step"] for e in last.events if e["event"] == "step"]
    resumed = resume(last.run_dir, *workbench.load_model(str(tiny_model_dir))).wait()
    assert resumed.status == "finished", resumed.error
    events, _ = directory.read_events()
    assert [e["step"] for e in events if e["event"] == "step"] == steps  # not one step more
    assert directory.final_artefact().name == "adapter" and directory.file("report.html").is_file()
    _assert_resume_refused_untouched(last.run_dir, "finished at step 6 of 6")


def test_a_run_whose_max_steps_was_lowered_below_its_checkpoint_is_left_alone(tiny, ticket_split):
    model, tokenizer = tiny
    early = _stopped_at(model, tokenizer, ticket_split, 4)
    directory = RunDirectory(early.run_dir)
    config = directory.read_config()
    config["hyperparameters"]["max_steps"] = 3  # edited by hand: the run is already past it
    directory.write_config(config)
    _assert_resume_refused_untouched(early.run_dir, "step 4 of 3")


def test_a_finished_run_trains_further_only_when_given_more_steps(tiny, ticket_split):
    model, tokenizer = tiny
    run = train(model, tokenizer, *ticket_split, hyperparameters=quick(max_steps=4, eval_every=2))
    assert run.wait().status == "finished"
    with pytest.raises(RunFinishedError):
        run.resume(max_steps=4)  # not larger: still nothing to do
    assert run.resume(max_steps=6).wait().status == "finished", run.error
    steps = [e["step"] for e in run.events if e["event"] == "step"]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert RunDirectory(run.run_dir).read_config()["hyperparameters"]["max_steps"] == 6


def test_an_explicit_run_dir_that_holds_a_run_is_refused(tiny, ticket_split, tiny_model_dir):
    model, tokenizer = tiny
    first = train(model, tokenizer, *ticket_split, hyperparameters=quick(max_steps=2)).wait()
    before = _fingerprint(first.run_dir)
    again, tokenizer = workbench.load_model(str(tiny_model_dir))
    with pytest.raises(RunDirectoryInUseError, match="already holds a run"):
        train(again, tokenizer, *ticket_split, run_dir=first.run_dir)
    assert _fingerprint(first.run_dir) == before


HOLD_LOCK = """
import sys, time
from workbench.runs.directory import RunDirectory
RunDirectory(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(60)
"""


def test_a_directory_has_one_owner_and_a_dead_owner_is_recognised(
    tiny, ticket_split, tiny_model_dir
):
    model, tokenizer = tiny
    run = _stopped_at(model, tokenizer, ticket_split, 3)
    other = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(run.run_dir)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert other.stdout.readline().strip() == "held"
        with pytest.raises(RunLockedError, match=f"process {other.pid}"):
            resume(run.run_dir, *workbench.load_model(str(tiny_model_dir)))
        with pytest.raises(RunLockedError):
            run.resume()
    finally:
        other.kill()
        other.wait(10)
    # the lock file is still there, but its process is gone: a stale lock is taken over
    assert RunDirectory(run.run_dir).lock_holder()["pid"] == other.pid
    assert run.resume().wait().status == "finished", run.error
    assert [e["step"] for e in run.events if e["event"] == "step"] == [1, 2, 3, 4, 5, 6]
    assert RunDirectory(run.run_dir).lock_holder() is None  # released at the end


def test_new_run_dirs_are_distinct_when_asked_for_at_once(monkeypatch):
    monkeypatch.setattr(run_directory.time, "strftime", lambda _format: "20261130-120000")
    made, start = [], threading.Barrier(6)

    def ask() -> None:
        start.wait(10)
        made.append(new_run_dir("lora-task"))

    threads = [threading.Thread(target=ask) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(made) == 6 and len(set(made)) == 6
    assert all(path.is_dir() and list(path.iterdir()) == [] for path in made)


def test_old_checkpoints_go_only_after_the_new_one_is_marked_complete(
    tiny, ticket_split, monkeypatch
):
    model, tokenizer = tiny
    real_mark = RunDirectory.mark_complete

    def killed_before_marking(self, checkpoint, step):
        if step == 4:  # as if the process died between writing checkpoint-4 and marking it
            raise KeyboardInterrupt("killed")
        real_mark(self, checkpoint, step)

    monkeypatch.setattr(RunDirectory, "mark_complete", killed_before_marking)
    settings = quick(max_steps=6, eval_every=2, keep_checkpoints=1)
    run = train(model, tokenizer, *ticket_split, hyperparameters=settings).wait()
    assert run.status == "failed"
    directory = RunDirectory(run.run_dir)
    assert [p.name for p in directory.complete_checkpoints()] == ["checkpoint-2"]
    assert (directory.checkpoints_dir / "checkpoint-4").is_dir()  # written, never marked
    monkeypatch.undo()
    assert run.resume().wait().status == "finished", run.error
    assert [p.name for p in directory.complete_checkpoints()] == ["checkpoint-6"]
    assert not (directory.checkpoints_dir / "checkpoint-4").exists()  # the crash's leftover
    assert all((p / COMPLETE_MARKER).is_file() for p in directory.checkpoints_dir.iterdir())


def test_a_very_long_validation_row_is_cut_for_the_sample_answers(tiny, ticket_split, tmp_path):
    model, tokenizer = tiny
    train_rows, validation = ticket_split
    long_row = {**validation.rows[0], "input": "word " * 10_000}  # ~50,000 characters
    path = tmp_path / "validation.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [long_row, *validation.rows[1:]]) + "\n")
    rows = workbench.load_data(path, verbose=False)
    with pytest.warns(UserWarning, match=r"validation\.jsonl:1 \(\d+ tokens\)"):
        run = train(model, tokenizer, train_rows, rows, hyperparameters=quick())
    assert run.wait().status == "finished", run.error
    prompt = run.context.sample_prompts[0]
    assert len(tokenizer(prompt, add_special_tokens=False)["input_ids"]) <= 256  # max_length
    assert run.template.render_prompt(long_row, tokenizer).endswith(prompt[-40:])  # its end kept


def test_the_report_plots_steps_redone_after_a_resume_once():
    events = [{"event": "started", "step": 0, "max_steps": 6}]
    events += [{"event": "step", "step": s, "loss": 5.0 - s} for s in range(1, 6)]
    events += [{"event": "failed", "step": 5}, {"event": "started", "step": 3, "max_steps": 6}]
    events += [{"event": "step", "step": s, "loss": 1.0 / s} for s in range(4, 7)]
    (loss,) = [t for t in curves_figure(events).data if t.name == TRAIN_LOSS]
    assert list(loss.x) == [1, 2, 3, 4, 5, 6]
    assert list(loss.y) == [4.0, 3.0, 2.0, 0.25, 0.2, pytest.approx(1 / 6)]  # redone: the last


@pytest.fixture
def small_disk(tmp_path, monkeypatch):
    """A 16 MB tmpfs holding the runs folder (root and mount needed; skipped otherwise)."""
    folder = tmp_path / "small-disk"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    monkeypatch.setenv("WORKBENCH_RUNS", str(folder / "runs"))
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


def _fill(folder) -> None:
    """Write a filler file until the disk is full."""
    with open(folder / "filler", "wb") as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
        except OSError:
            pass


@pytest.mark.faults
def test_a_full_disk_fails_clearly_keeps_the_last_checkpoint_and_resumes(
    tiny, ticket_split, small_disk
):
    model, tokenizer = tiny
    run = train(model, tokenizer, *ticket_split, hyperparameters=quick(), start=False)
    run.add_callback("checkpoint", lambda e: _fill(small_disk) if e["step"] == 3 else None)
    assert run.start().wait().status == "failed"
    assert run.error.startswith(f"Disk full at {run.run_dir}") and "checkpoint-3" in run.error
    directory = RunDirectory(run.run_dir)
    assert [p.name for p in directory.checkpoints_dir.iterdir()] == ["checkpoint-3"]
    assert list(run.run_dir.rglob("*.tmp-*")) == []  # no temporaries left behind
    assert directory.lock_holder() is None
    assert run.events[-1]["event"] == "failed" and "Disk full" in run.events[-1]["reason"]

    _fill(small_disk)  # whatever the clean-up freed: still full
    with pytest.raises(run_directory.DiskFullError, match="Disk full at .* checkpoint-3"):
        run.resume()
    (small_disk / "filler").unlink()
    assert run.resume().wait().status == "finished", run.error
    assert directory.read_status()[0]["status"] == "finished"


def train_or_resume(model_dir: str, data: str, run_dir: str, mode: str) -> None:
    """The child process: 24 steps of instruction tuning, or `workbench.resume`."""
    if mode == "resume":
        workbench.resume(run_dir).wait()
        return
    model, tokenizer = workbench.load_model(model_dir, device="cpu")
    rows = workbench.load_data(data, verbose=False)
    rest, validation = workbench.split_data(rows, 8, seed=0)
    settings = Hyperparameters(
        max_steps=24, batch_size=4, eval_every=2, learning_rate=5e-3, sample_max_new_tokens=2,
        keep_checkpoints=1, eval_metric_rows=0,
    )  # fmt: skip
    workbench.train(
        model, tokenizer, rest.select(range(48)), validation, hyperparameters=settings,
        run_dir=run_dir, samples=1,
    ).wait()  # fmt: skip


def _child(tiny_model_dir, run_dir, mode) -> Child:
    """A forked training process (tests/processes.py): its own process, killed with SIGKILL."""
    data = SAMPLE_DATA / "support_tickets.jsonl"
    errors = Path(f"{run_dir}.{mode}.errors")
    return Child(train_or_resume, str(tiny_model_dir), str(data), str(run_dir), mode, errors=errors)


def _events(run_dir):
    return RunDirectory(run_dir).read_events()[0]


def _losses(run_dir):
    steps = {}
    for event in _events(run_dir):
        if event["event"] == "step":
            steps[event["step"]] = event["loss"]  # a step redone after a kill: the last
    return steps


@pytest.mark.faults
def test_killed_at_random_moments_every_resume_continues_the_same_run(tiny_model_dir, tmp_path):
    import random
    import time

    reference = tmp_path / "reference"
    _child(tiny_model_dir, reference, "train").finished()
    expected = _losses(reference)
    assert sorted(expected) == list(range(1, 25))

    run_dir, rng, kills = tmp_path / "killed", random.Random(0), 0
    child = _child(tiny_model_dir, run_dir, "train")
    while kills < 4:
        seen = len(_events(run_dir))
        directory = RunDirectory(run_dir)
        while child.poll() is None and (
            len(_events(run_dir)) < seen + 2 or not directory.complete_checkpoints()
        ):
            time.sleep(0.02)  # until this process trains (not while it starts up)
        time.sleep(rng.uniform(0.0, 0.4))  # then a random moment: a step, an evaluation, a save
        if child.poll() is not None:
            break  # it finished first
        child.kill()
        child.wait(30)
        kills += 1
        assert directory.complete_checkpoints(), "a kill lost every complete checkpoint"
        child = _child(tiny_model_dir, run_dir, "resume")
    child.finished()
    assert kills >= 3
    assert _losses(run_dir) == pytest.approx(expected, rel=1e-5)
