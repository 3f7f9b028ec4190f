"""TrainingMonitor on runs of the tiny model: live curves, Stop/Resume, failures, replay."""

from __future__ import annotations

import json
import threading

import pytest
import torch
from conftest import quick
from resuming import finish

import workbench
from workbench.model.methods import Method
from workbench.runs.report import (
    EXACT_MATCH,
    LEARNING_RATE,
    MEAN_REWARD,
    SMOOTHED_LOSS,
    TRAIN_LOSS,
    VALIDATION_LOSS,
)
from workbench.training.finetune import train
from workbench.widgets.training_monitor import TrainingMonitor


def unstarted_run(tiny, ticket_split, **settings):
    """A run (not started) of the tiny (model, tokenizer) on the tickets, quick(**settings)."""
    return train(*tiny, *ticket_split, hyperparameters=quick(**settings), start=False)


def test_curves_grow_with_each_step_and_get_the_evaluations(tiny, ticket_split):
    model, tokenizer = tiny
    run = train(model, tokenizer, *ticket_split, hyperparameters=quick(), start=False)
    monitor = TrainingMonitor(run)
    monitor.refresh_interval = 0  # redraw on every event, so each step is visible
    plotted = []
    run.add_callback(  # "*" subscribers are called after the monitor's own
        "*", lambda e: e["event"] == "step" and plotted.append(len(monitor.trace(TRAIN_LOSS).x))
    )
    run.start().wait()
    assert run.status == "finished", run.error
    assert plotted == [1, 2, 3, 4, 5, 6]
    raw, smoothed = monitor.trace(TRAIN_LOSS), monitor.trace(SMOOTHED_LOSS)
    assert list(raw.y) == pytest.approx(run.losses)
    assert len(smoothed.y) == 6 and smoothed.y[-1] != raw.y[-1]
    evaluations = [e for e in run.events if e["event"] == "evaluation"]
    validation = monitor.trace(VALIDATION_LOSS)
    assert list(validation.x) == [0, 3, 6]
    assert list(validation.y) == pytest.approx([e["eval_loss"] for e in evaluations])
    rate = monitor.trace(LEARNING_RATE)
    assert rate.yaxis == "y2" and len(rate.y) == 6
    assert (monitor.progress.value, monitor.progress.max) == (6, 6)
    assert "step 6/6" in monitor.progress_label.value
    assert "finished" in monitor.status.value
    assert " after 6 steps in " in monitor.status.value  # the closing line: time and report
    assert str(run.run_dir / "report.html") in monitor.status.value
    assert monitor.stop_button.disabled and monitor.resume_button.disabled
    # whole steps from 0 to the last, not the autorange's -1..1 and 0.5 ticks
    axis = monitor.figure.layout.xaxis
    assert axis.range[0] < 0 < 6 < axis.range[1] < 6.5 and axis.dtick == 1
    assert axis.tickformat == "d"
    assert monitor.figure.layout.yaxis2.rangemode == "nonnegative"  # the learning rate
    assert monitor.figure.layout.yaxis4.visible is False  # no RL answer length: no empty axis
    # instruction tuning has no reward or KL: two rows, in the panel and in the report
    assert MEAN_REWARD not in {t.name for t in monitor.figure.data}
    assert monitor.figure in monitor.children and "yaxis5" not in monitor.figure.layout
    assert MEAN_REWARD not in (run.run_dir / "report.html").read_text()
    samples = [e for e in run.events if e["event"] == "samples"]
    assert monitor.curves.samples == samples and len(samples) == 3
    answers = [s["answer"] for e in samples for s in e["samples"]]
    assert len(answers) == 9 and all(a in monitor.samples_html.value for a in answers if a)
    assert monitor.error_html.value == ""


def test_stop_and_resume_buttons_drive_the_run(tiny, ticket_split):
    run = unstarted_run(tiny, ticket_split, max_steps=200, eval_every=100)
    monitor = TrainingMonitor(run)
    first_step = threading.Event()
    run.add_callback("step", lambda e: first_step.set())
    assert monitor.stop_button.disabled  # not started yet
    run.start()
    assert first_step.wait(30)
    assert not monitor.stop_button.disabled and monitor.resume_button.disabled
    monitor.stop_button.click()
    run.wait()
    assert run.status == "stopped"
    stopped_at = run.events[-1]["step"]
    assert stopped_at < 200
    assert "stopped" in monitor.status.value
    assert monitor.stop_button.disabled and not monitor.resume_button.disabled

    monitor.resume_button.click()
    monitor.wait()
    assert run.status == "finished", run.error
    steps = list(monitor.trace(TRAIN_LOSS).x)
    assert steps == list(range(1, 201))  # continued where it stopped, no gap, no repeat
    assert monitor.progress.value == 200
    assert monitor.resume_button.disabled and monitor.error_html.value == ""


def test_a_failed_run_shows_its_reason_in_red(tiny, ticket_split, monkeypatch):
    from transformers import Trainer

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(Trainer, "training_step", out_of_memory)
    run = unstarted_run(tiny, ticket_split)
    monitor = TrainingMonitor(run)
    run.start().wait()
    assert run.status == "failed"
    assert "Out of memory" in monitor.error_html.value
    assert "gradient_checkpointing" in monitor.error_html.value
    assert (
        "border-left" in monitor.error_html.value and "Out of memory" in monitor.error_html.message
    )
    assert monitor.progress.bar_style == "danger"
    assert monitor.resume_button.disabled  # no checkpoint to resume from
    assert "Out of memory" in monitor._repr_mimebundle_()["text/html"]


def test_replay_from_a_run_directory_then_resume_it_with_a_fresh_model(tiny, ticket_split):
    run = unstarted_run(tiny, ticket_split, max_steps=8, eval_every=2)
    finish(run, stopped_at=3)
    assert run.status == "stopped"
    lines = [json.loads(x) for x in (run.run_dir / "metrics.jsonl").read_text().splitlines()]
    monitor = TrainingMonitor.from_run_dir(run.run_dir)
    steps = [e["step"] for e in lines if e["event"] == "step"]
    assert list(monitor.trace(TRAIN_LOSS).x) == steps
    evaluations = [e for e in lines if e["event"] == "evaluation"]
    assert len(monitor.trace(VALIDATION_LOSS).x) == len(evaluations)
    assert monitor.state == "stopped" and monitor.stop_button.disabled
    assert not monitor.resume_button.disabled  # a complete checkpoint exists

    monitor.resume_button.click()  # loads the model named in config.yaml (the tiny folder)
    monitor.wait()
    assert monitor.run is not None and monitor.run.status == "finished", monitor.errors
    assert list(monitor.trace(TRAIN_LOSS).x) == list(range(1, 9))
    assert monitor.progress.value == 8 and monitor.error_html.value == ""


def test_a_crashed_run_directory_replays_and_a_broken_event_is_shown(tmp_path):
    events = [
        {"event": "started", "time": 1.0, "step": 0, "max_steps": 10},
        {"event": "step", "time": 2.0, "step": 1, "loss": 2.0, "max_steps": 10},
        {"event": "step", "time": 3.0, "step": 2, "loss": float("nan"), "max_steps": 10},
        {"event": "step", "time": 4.0, "step": 3},  # no loss: the handler raises
    ]
    lines = [json.dumps(e) for e in events]
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + '\n{"event": "st')  # cut short
    monitor = TrainingMonitor.from_run_dir(tmp_path)
    assert "KeyError" in monitor.error_html.value and "loss" in monitor.error_html.value
    assert "interrupted" in monitor.state
    assert list(monitor.trace(TRAIN_LOSS).y[:2]) == [2.0, None]  # NaN plotted as a gap
    bundle = monitor._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert "TrainingMonitor" in bundle["text/plain"] and "<svg" not in bundle["text/html"]


def test_static_output_without_a_frontend_summarises_the_run(tiny, ticket_split):
    model, tokenizer = tiny
    run = train(model, tokenizer, *ticket_split, hyperparameters=quick()).wait()
    monitor = TrainingMonitor(run)
    bundle = monitor._repr_mimebundle_()
    assert "finished" in bundle["text/plain"] and "step 6/6" in bundle["text/plain"]
    html = bundle["text/html"]
    assert "<svg" in html and "<table" in html
    reference = next(e for e in run.events if e["event"] == "samples")["samples"][0]["reference"]
    assert reference in html
    empty = run.run_dir / "not-a-run"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="metrics.jsonl"):
        TrainingMonitor.from_run_dir(empty)
    assert list(empty.iterdir()) == []  # replaying reads; it never writes into the folder


def test_the_monitor_plots_the_events_it_is_given(tiny, ticket_split):
    model, tokenizer = tiny
    run = train(model, tokenizer, *ticket_split, hyperparameters=quick(), start=False)
    monitor = TrainingMonitor(run)
    monitor.refresh_interval = 0
    run.emit("started", step=0, max_steps=3)
    given = run.emit("step", step=1, loss=2.5, max_steps=3)
    run.events.append({"event": "step", "step": 2, "loss": 9.0})  # never emitted: not plotted
    assert monitor.curves.steps == [given]
    assert list(monitor.trace(TRAIN_LOSS).y) == [2.5]
    run.emit("step", step=2, loss=2.0, max_steps=3)
    run.emit("started", step=1, max_steps=3)  # a resume from step 1 redoes step 2
    run.emit("step", step=2, loss=1.5, max_steps=3)
    assert list(monitor.trace(TRAIN_LOSS).x) == [1, 2]
    assert list(monitor.trace(TRAIN_LOSS).y) == [2.5, 1.5]


def test_exact_match_at_each_evaluation_is_plotted_and_reported(tiny, ticket_split):
    from workbench.runs.report import write_report

    model, tokenizer = tiny
    run = train(model, tokenizer, *ticket_split, hyperparameters=quick(eval_metric_rows=5))
    monitor = TrainingMonitor(run)
    run.wait()
    evaluations = [e for e in run.events if e["event"] == "evaluation"]
    assert [e["scored_rows"] for e in evaluations] == [5, 5, 5]
    from workbench.evaluation.metrics import load_metric
    from workbench.model.generation import Decoding, generate

    rows = ticket_split[1].rows[:5]
    prompts = [run.template.render_prompt(r, tokenizer) for r in rows]
    answers = generate(run.model, tokenizer, prompts, Decoding(max_new_tokens=4))
    expected = load_metric("exact_match").compute(
        predictions=answers, references=[r["output"] for r in rows]
    )["exact_match"]
    assert evaluations[-1]["exact_match"] == pytest.approx(expected)  # the final weights
    exact_match = monitor.trace(EXACT_MATCH)
    assert list(exact_match.x) == [0, 3, 6]
    assert list(exact_match.y) == [e["exact_match"] for e in evaluations]
    assert "exact match" in monitor.progress_label.value
    samples = [e for e in run.events if e["event"] == "samples"]
    assert all(len(e["samples"]) == 3 for e in samples)  # 5 answered, 3 shown
    page = write_report(run.run_dir).read_text()
    assert "Validation at each evaluation" in page and "validation exact match" in page


def test_copy_as_code_starts_the_same_run_again(tiny, ticket_split):
    model, tokenizer = tiny
    hp = quick(max_steps=2, eval_every=2, learning_rate=1e-3)
    method = Method(r=4, alpha=8)
    run = train(
        model, tokenizer, *ticket_split, template="dolly", method=method, hyperparameters=hp
    )
    monitor = TrainingMonitor(run).wait()
    assert run.status == "finished", run.error
    monitor.copy_button.click()
    code = monitor.code.value
    assert "data/train.jsonl" in code and "template = wb.TEMPLATES['dolly']" in code
    replayed: dict = {}  # a replayed run directory: its config.yaml, up to the train() call
    exec(TrainingMonitor.from_run_dir(run.run_dir).as_code().split("run = wb.train(")[0], replayed)
    assert (replayed["template"], replayed["method"]) == (run.template, run.method)
    assert replayed["hyperparameters"] == run.hyperparameters
    assert replayed["train"].rows == ticket_split[0].rows
    namespace: dict = {}
    exec(code, namespace)  # the whole script: it trains 2 steps again, in a new directory
    again = namespace["run"]
    assert again.status == "finished", again.error
    assert again.run_dir != run.run_dir
    assert namespace["train"].rows == ticket_split[0].rows
    assert namespace["validation"].rows == ticket_split[1].rows
    assert again.template == run.template == workbench.TEMPLATES["dolly"]
    assert again.method == run.method == method
    assert again.hyperparameters == run.hyperparameters


def test_without_a_run_there_is_no_code_but_a_reason():
    monitor = TrainingMonitor()
    monitor.copy_button.click()
    assert "No run attached" in monitor.error_html.message
