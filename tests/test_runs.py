"""Run history on tiny runs: listing, comparing, a still-running run, a run killed mid-write."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest
from conftest import held_at_step, quick

import workbench
from workbench.cli import main as cli
from workbench.runs.history import compare_runs, list_runs, read_run, runs_table
from workbench.training.finetune import train
from workbench.training.resume import resume


def _fingerprint(folder):
    """sha256 of every file under `folder`, by relative path."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_list_and_compare_a_finished_and_a_stopped_run(tiny_model_dir, ticket_split, capsys):
    model, tokenizer = workbench.load_model(str(tiny_model_dir))
    first = train(model, tokenizer, *ticket_split, hyperparameters=quick(max_steps=4, eval_every=2))
    first.wait()
    assert first.status == "finished", first.error
    written = _fingerprint(first.run_dir)

    model, tokenizer = workbench.load_model(str(tiny_model_dir))
    settings = quick(max_steps=6, eval_every=2, learning_rate=1e-3)
    second = train(model, tokenizer, *ticket_split, hyperparameters=settings, start=False)
    second.add_callback("step", lambda e: second.stop() if e["step"] == 2 else None)
    second.start().wait()
    assert second.status == "stopped"
    assert _fingerprint(first.run_dir) == written  # another run never touches a finished one

    records = {r.run_dir: r for r in list_runs()}
    assert set(records) == {first.run_dir, second.run_dir}
    done, stopped = records[first.run_dir], records[second.run_dir]
    assert (done.status, stopped.status) == ("finished", "stopped")
    assert done.task == "ticket_topic" and done.stage == "sft"
    assert done.settings["method.kind"] == "lora"
    assert done.settings["hyperparameters.learning_rate"] == 5e-3
    assert done.step == 4 and done.max_steps == 4 and stopped.step == 3
    last_eval = [e["eval_loss"] for e in first.events if e["event"] == "evaluation"][-1]
    assert done.eval_loss == pytest.approx(last_eval)
    assert done.train_loss == pytest.approx(first.losses[-1])
    assert done.duration > 0 and not done.resumable and done.problems == []
    assert stopped.resumable and stopped.checkpoint.name == "checkpoint-3"
    table = runs_table(list(records.values()))
    assert {"run", "status", "task", "model", "method", "learning_rate", "eval_loss"} <= set(
        table.columns
    )
    assert table.set_index("run").loc[first.run_dir.name, "method"] == "LoRA r=16"

    comparison = compare_runs([first.run_dir, second.run_dir])
    differing = set(comparison.differences.index)
    assert {"hyperparameters.learning_rate", "hyperparameters.max_steps"} <= differing
    assert "method.kind" not in differing and "model" not in differing
    assert comparison.differences.loc["hyperparameters.learning_rate"].tolist() == [5e-3, 1e-3]
    train_loss = comparison.curves[comparison.curves["series"] == "train loss"]
    assert train_loss.groupby("run")["step"].max().to_dict() == {
        first.run_dir.name: 4,
        second.run_dir.name: 3,
    }
    assert train_loss[train_loss["run"] == first.run_dir.name]["value"].tolist() == (
        pytest.approx(first.losses)
    )
    figure = comparison.figure()
    assert len(figure.data) == 4  # two runs x (train loss, validation loss)

    assert cli(["runs"]) == 0
    listing = capsys.readouterr().out.splitlines()
    rows = [line for line in listing if line.startswith((first.run_dir.name, second.run_dir.name))]
    assert "stopped" in "".join(rows) and "finished" in "".join(rows)
    results = comparison.results
    assert list(results.columns) == [first.run_dir.name, second.run_dir.name]
    assert results.loc["train_loss"].tolist() == pytest.approx(
        [done.train_loss, stopped.train_loss]
    )
    assert results.loc["eval_loss", first.run_dir.name] == pytest.approx(last_eval)
    assert cli(["runs", "--compare", str(first.run_dir), str(second.run_dir)]) == 0
    out = capsys.readouterr().out
    assert "hyperparameters.learning_rate" in out
    line = next(x for x in out.splitlines() if x.startswith("train_loss"))  # the results
    losses = [float(v) for v in line.split()[1:]]
    assert losses == pytest.approx([done.train_loss, stopped.train_loss], rel=1e-4)


def test_a_run_that_continued_another_names_it_in_the_listing(tiny, ticket_split):
    model, tokenizer = tiny
    first = train(model, tokenizer, *ticket_split, hyperparameters=quick(max_steps=2)).wait()
    assert first.status == "finished", first.error
    second = train(
        first.model,  # the same adapter trained further, as a second task would
        tokenizer,
        *ticket_split,
        hyperparameters=quick(max_steps=2),
        continued_from=first,
    ).wait()
    assert second.status == "finished", second.error
    records = {r.run_dir: r for r in list_runs()}
    earlier, later = records[first.run_dir], records[second.run_dir]
    assert earlier.continued_from is None and earlier.row()["continued_from"] is None
    assert later.continued_from == first.run_dir
    assert later.row()["continued_from"] == first.run_dir.name
    table = runs_table(list(records.values())).set_index("run")
    assert table.loc[second.run_dir.name, "continued_from"] == first.run_dir.name


def test_comparing_a_missing_or_empty_folder_says_so_and_exits_2(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    for folder, why in (
        (tmp_path / "gone", "does not exist"),
        (tmp_path / "empty", "holds no run"),
    ):
        assert cli(["runs", "--compare", str(folder)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"workbench: {folder} {why}") and "Traceback" not in err
        with pytest.raises(FileNotFoundError, match="python -m workbench runs"):
            compare_runs([folder])


def test_a_run_still_training_is_listed_as_running(tiny, ticket_split):
    model, tokenizer = tiny
    run = train(model, tokenizer, *ticket_split, hyperparameters=quick(), start=False)
    with held_at_step(run, 2):
        record = read_run(run.run_dir)
        assert record.status == "running" and record.running and not record.resumable
        assert record.step == 2 and record.max_steps == 6
    run.wait()
    assert read_run(run.run_dir).status == "finished"


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_run_killed_mid_write_is_listed_and_resumes(tiny_model_dir, ticket_split):
    model, tokenizer = workbench.load_model(str(tiny_model_dir))
    settings = quick(max_steps=6, eval_every=2)
    run = train(model, tokenizer, *ticket_split, hyperparameters=settings, start=False)
    run.add_callback("step", lambda e: run.stop() if e["step"] == 3 else None)
    run.start().wait()
    assert run.status == "stopped"
    folder = run.run_dir
    # What a kernel killed at step 5 leaves: status.json still says running (its process is
    # gone), half an event at the end of metrics.jsonl, a checkpoint without its marker.
    state = json.loads((folder / "status.json").read_text())
    state.update(status="running", pid=_dead_pid())
    (folder / "status.json").write_text(json.dumps(state))
    lines = (folder / "metrics.jsonl").read_text().splitlines(keepends=True)
    kept = [x for x in lines if json.loads(x)["event"] != "stopped"]
    (folder / "metrics.jsonl").write_text("".join(kept) + '{"event": "step", "step": 5, "lo')
    partial = folder / "checkpoints" / "checkpoint-6"
    partial.mkdir()
    (partial / "adapter_model.safetensors").write_bytes(b"half a file")

    record = read_run(folder)
    assert record.status == "interrupted" and record.resumable
    assert record.checkpoint.name == "checkpoint-4" and record.step == 4
    assert any("cut short" in p and "metrics.jsonl:" in p for p in record.problems)
    assert any("checkpoint-6" in p for p in record.problems)
    (folder / "status.json").unlink()  # killed before its first status write: still listed
    assert read_run(folder).status == "interrupted"
    assert list_runs()[0].run_dir == folder

    fresh_model, fresh_tokenizer = workbench.load_model(str(tiny_model_dir))
    resumed = resume(folder, fresh_model, fresh_tokenizer).wait()
    assert resumed.status == "finished", resumed.error
    record = read_run(folder)
    assert record.status == "finished" and record.step == 6
    # the cut line is skipped; the events after it start on lines of their own, none lost
    cut = len(kept) + 1
    assert [p for p in record.problems if "metrics.jsonl" in p] == [
        f"metrics.jsonl:{cut}: line not valid JSON (cut by a crash?), skipped"
    ]
    after = (folder / "metrics.jsonl").read_text().splitlines()[cut:]
    events = [json.loads(line) for line in after]
    assert events[0]["event"] == "started" and events[0]["step"] == 4
    assert [e["step"] for e in events if e["event"] == "step"] == [5, 6]


# --- the listing in a terminal, parents, time spent training --------------------------------
LONG_PROMPT = "You are a careful assistant for a hardware shop. " * 12 + "{instruction}\n"


def _recorded_run(folder, config: dict, events: list[tuple[str, float, int]]):
    """A run directory as a finished or resumed run leaves it: config.yaml and its events
    (name, time, step), without training anything."""
    from workbench.runs.directory import RunDirectory

    directory = RunDirectory(folder)
    directory.write_config(config)
    for name, moment, step in events:
        directory.append_event({"event": name, "time": moment, "step": step, "max_steps": 4})
    return folder


def _config(stage: str = "sft", **extra) -> dict:
    template = {"name": "alpaca", "prompt": "### Instruction:\n{instruction}\n", "response": "x"}
    return {
        "stage": stage,
        "model": "/a/very/long/folder/of/models/that/people/keep/their/checkpoints/in/tiny-llama",
        "template": template,
        "method": {"kind": "lora", "r": 16},
        "hyperparameters": {"learning_rate": 2e-4, "max_steps": 4},
        "data": {"format": "alpaca", "train": "data/train.jsonl"},
        **extra,
    }


def test_the_listing_and_a_comparison_keep_every_line_within_120_characters(tmp_path, capsys):
    root = tmp_path / "runs"
    plain = _recorded_run(root / "plain", _config(), [("started", 0, 0), ("finished", 5, 4)])
    custom = _config(template={"name": "custom", "prompt": LONG_PROMPT, "response": "{output}"})
    long = _recorded_run(root / "long-template", custom, [("started", 0, 0), ("finished", 5, 4)])
    assert cli(["runs", "--root", str(root)]) == 0
    listing = capsys.readouterr().out
    assert max(map(len, listing.splitlines())) <= 120
    assert "/a/very/long" in listing and "…" in listing  # a long value, cut in the middle
    assert cli(["runs", "--compare", str(plain), str(long)]) == 0
    comparison = capsys.readouterr().out
    assert max(map(len, comparison.splitlines())) <= 120
    assert "template.name" in comparison and "custom" in comparison  # the template by name
    assert "template.prompt" not in comparison and "hardware shop" not in comparison


def test_dpo_and_ppo_runs_name_the_run_they_started_from(tmp_path):
    sft = tmp_path / "sft"
    _recorded_run(sft, _config(), [("started", 0, 0), ("finished", 5, 4)])
    for stage in ("dpo", "ppo"):
        folder = _recorded_run(
            tmp_path / stage, _config(stage, parent=str(sft)), [("started", 0, 0)]
        )
        record = read_run(folder)
        assert record.continued_from == sft and record.row()["continued_from"] == "sft"


def test_a_resumed_runs_duration_counts_its_training_not_the_idle_time_between(tmp_path):
    # trained 10 s, stopped, left for an hour, resumed and trained 5 s more
    events = [("started", 100, 0), ("step", 105, 1), ("stopped", 110, 2)]
    events += [("started", 3710, 2), ("step", 3713, 3), ("finished", 3715, 4)]
    record = read_run(_recorded_run(tmp_path / "resumed", _config(), events))
    assert record.duration == pytest.approx(15)
    # killed after its last event at 3713 (no end event), then resumed for 2 s
    killed = events[:5] + [("started", 7000, 3), ("finished", 7002, 4)]
    assert read_run(_recorded_run(tmp_path / "killed", _config(), killed)).duration == (
        pytest.approx(10 + 3 + 2)
    )
