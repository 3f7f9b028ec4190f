"""RunBrowser on tiny runs: the table, comparing selected runs, Resume, a run updating itself."""

from __future__ import annotations

import time

from conftest import held_at_step, quick

import workbench
from workbench.training.finetune import train
from workbench.widgets.run_browser import RunBrowser
from workbench.widgets.training_monitor import TrainingMonitor


def _stopped_and_finished(tiny_model_dir, ticket_split):
    model, tokenizer = workbench.load_model(str(tiny_model_dir))
    done = train(model, tokenizer, *ticket_split, hyperparameters=quick(max_steps=4, eval_every=2))
    done.wait()
    model, tokenizer = workbench.load_model(str(tiny_model_dir))
    settings = quick(max_steps=6, eval_every=2, learning_rate=1e-3)
    stopped = train(model, tokenizer, *ticket_split, hyperparameters=settings, start=False)
    stopped.add_callback("step", lambda e: stopped.stop() if e["step"] == 2 else None)
    stopped.start().wait()
    assert (done.status, stopped.status) == ("finished", "stopped")
    return done, stopped


def test_select_runs_to_compare_then_resume_one(tiny_model_dir, ticket_split):
    done, stopped = _stopped_and_finished(tiny_model_dir, ticket_split)
    browser = RunBrowser()
    assert browser.errors == []
    statuses = {r.name: r.status for r in browser.records}
    assert statuses == {done.run_dir.name: "finished", stopped.run_dir.name: "stopped"}
    for name in statuses:
        assert f">{name}</td>" in browser.table_html.value
    names = [value for _label, value in browser.selector.options]
    assert sorted(names) == sorted([done.run_dir.name, stopped.run_dir.name])
    assert browser.resume_button.disabled and len(browser.figure.data) == 0

    browser.select(done.run_dir.name, stopped.run_dir.name)
    assert len(browser.figure.data) == 4  # each run: train loss and validation loss
    assert {t.name.split(" · ")[0] for t in browser.figure.data} == set(names)
    assert "hyperparameters.learning_rate" in browser.differences_html.value
    assert "method.kind" not in browser.differences_html.value
    assert browser.resume_button.disabled  # two runs selected: which to resume?

    kept = [t for t in browser.figure.data if t.name.startswith(done.run_dir.name)]
    browser.select(done.run_dir.name)
    assert browser.resume_button.disabled  # finished: nothing to resume
    # the figure is updated in place: the kept run's traces are the same objects, with plain
    # lists of equal length (what the browser's plotly takes without complaint)
    assert list(browser.figure.data) == kept
    for trace in browser.figure.data:
        assert type(trace.x) is type(trace.y) is tuple and len(trace.x) == len(trace.y) > 0
        assert all(type(step) is int for step in trace.x)
    browser.select(stopped.run_dir.name)
    assert not browser.resume_button.disabled
    browser.resume_button.click()
    browser.wait()
    assert browser.errors == []
    assert browser.resumed.status == "finished", browser.resumed.error
    assert len(browser.resumed.losses) == 3  # steps 4-6 after checkpoint-3
    assert isinstance(browser.monitor_box.children[1], TrainingMonitor)
    browser.refresh()
    assert {r.name: r.status for r in browser.records}[stopped.run_dir.name] == "finished"
    assert browser.selector.value == (stopped.run_dir.name,)  # the selection survives
    bundle = browser._repr_mimebundle_()
    assert done.run_dir.name in bundle["text/plain"] and "<table" in bundle["text/html"]


def test_a_running_run_shows_as_training_and_updates_by_itself(tiny, ticket_split):
    model, tokenizer = tiny
    run = train(model, tokenizer, *ticket_split, hyperparameters=quick(), start=False)
    RunBrowser.poll_interval = 0.2
    try:
        with held_at_step(run, 2):
            browser = RunBrowser()
            assert [r.status for r in browser.records] == ["running"]
            assert "1 training" in browser.status.value
            assert browser.polling
    finally:
        RunBrowser.poll_interval = 2.0
    run.wait()
    deadline = time.monotonic() + 20
    while browser.records[0].status != "finished" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert browser.records[0].status == "finished"  # no Refresh pressed
    assert "training" not in browser.status.value
    deadline = time.monotonic() + 5
    while browser.polling and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not browser.polling  # nothing runs any more: the polling stopped by itself
