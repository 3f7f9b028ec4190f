"""WorkbenchApp, tasks in sequence: a second Train continues the first run's model on other rows,
with a remedy from the library's REMEDIES, and the run history names the run it continued."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import SAMPLE_DATA

from workbench.runs.history import read_run
from workbench.training.remedies import REMEDIES
from workbench.training.synaptic import IMPORTANCE_FILE
from workbench.widgets.workbench_app import WorkbenchApp


@pytest.fixture(scope="module")
def task_files(tmp_path_factory):
    """Two one-task files of 30 rows each: task A (capital), then task B (antonym)."""
    rows = [json.loads(line) for line in (SAMPLE_DATA / "mixed_instructions.jsonl").open()]
    folder = tmp_path_factory.mktemp("tasks")
    files = {}
    for task in ("capital", "antonym"):
        chosen = [r for r in rows if r["task"] == task][:30]
        files[task] = folder / f"{task}.jsonl"
        files[task].write_text("".join(json.dumps(r) + "\n" for r in chosen), encoding="utf-8")
    return files


def few_steps(app: WorkbenchApp, kind: str = "lora") -> None:
    app.method_panel.method_controls["kind"].value = kind
    for name, value in dict(max_steps=2, batch_size=4, eval_every=2, learning_rate=5e-3).items():
        app.method_panel.hyperparameter_controls[name].value = value


def train_on(app: WorkbenchApp, path, remedy: str | None = None):
    """Load `path` in the Data tab, choose `remedy` in the Train tab, press Train, wait."""
    app.data_path.value = str(path)
    app.data_button.click()
    app.sequence.remedy.value = remedy
    app.train_button.click()
    app.wait()
    assert app.errors == []
    run = app.state.run
    assert run.status == "finished", run.error
    return run


def config_of(run) -> dict:
    return yaml.safe_load((run.run_dir / "config.yaml").read_text(encoding="utf-8"))


def test_a_second_train_continues_the_first_run_and_the_history_says_so(tiny, task_files):
    model, tokenizer = tiny
    app = WorkbenchApp(model, tokenizer, task_files["capital"])
    few_steps(app)
    assert "starts from the loaded model" in app.sequence.continues_html.value
    assert app.sequence.remedy_row.layout.display == "none"  # nothing earlier to keep yet
    first = train_on(app, task_files["capital"])
    shown = app.sequence.continues_html.value
    assert f"continues <code>{first.run_dir.name}</code> (task capital)" in shown
    assert app.sequence.remedy_row.layout.display is None
    second = train_on(app, task_files["antonym"])
    assert second.model is first.model  # the same adapter, trained further
    assert "continued_from" not in config_of(first)
    assert config_of(second)["continued_from"] == str(first.run_dir)
    assert "regularizer" not in config_of(second)  # remedy "none": the forgetting baseline
    assert second.directory.load_rows("train").tasks == {"antonym": len(app.state.train)}
    assert [r.run_dir for r in app.state.stage_runs] == [first.run_dir, second.run_dir]
    assert f"continues <code>{second.run_dir.name}</code> (task antonym)" in (
        app.sequence.continues_html.value
    )
    record = read_run(second.run_dir)
    assert record.continued_from == first.run_dir
    assert record.row()["continued_from"] == first.run_dir.name
    listed = {r.run_dir: r for r in app.run_browser.records}
    assert listed[second.run_dir].continued_from == first.run_dir
    table = app.run_browser.table_html.value
    assert ">continued_from</th>" in table
    second_row = next(r for r in table.split("<tr>") if f">{second.run_dir.name}</td>" in r)
    assert f">{first.run_dir.name}</td>" in second_row


def test_replay_mixes_rows_of_the_first_task_into_the_second_run(tiny, task_files):
    model, tokenizer = tiny
    app = WorkbenchApp(model, tokenizer, task_files["capital"])
    few_steps(app)
    first = train_on(app, task_files["capital"])
    app.sequence.replay_share.value = 0.2
    second = train_on(app, task_files["antonym"], remedy="replay")
    trained = second.directory.load_rows("train")
    own = len(app.state.train)
    assert trained.tasks == {"antonym": own, "capital": round(0.2 * own / 0.8)}
    first_rows = first.directory.load_rows("train").rows
    assert all(r in first_rows for r in trained.rows if r["task"] == "capital")
    # the stage's own rows are what a later stage replays, not the mix it trained on
    assert app.state.stage_rows[1].tasks == {"antonym": own}
    assert config_of(second)["continued_from"] == str(first.run_dir)


def test_synaptic_intelligence_holds_the_first_task_that_tracked_importance(tiny, task_files):
    model, tokenizer = tiny
    app = WorkbenchApp(model, tokenizer, task_files["capital"])
    few_steps(app)
    assert app.sequence.track_importance.value  # on by default for LoRA
    first = train_on(app, task_files["capital"])
    assert (first.run_dir / IMPORTANCE_FILE).is_file()
    app.sequence.strength.value = "2.5"
    second = train_on(app, task_files["antonym"], remedy="si")
    regularizer = config_of(second)["regularizer"]
    assert regularizer["kind"] == "si" and regularizer["strength"] == 2.5
    assert config_of(second)["continued_from"] == str(first.run_dir)


def test_si_after_a_run_without_importance_and_a_bad_strength_say_what_to_do(tiny, task_files):
    model, tokenizer = tiny
    app = WorkbenchApp(model, tokenizer, task_files["capital"])
    few_steps(app)
    app.sequence.track_importance.value = False
    first = train_on(app, task_files["capital"])
    assert not (first.run_dir / IMPORTANCE_FILE).exists()
    app.data_path.value = str(task_files["antonym"])
    app.data_button.click()
    app.sequence.remedy.value = "si"
    app.train_button.click()
    app.wait()
    assert "tick `track importance`" in app.train_error.message
    assert app.state.run is first  # no second run started
    app.sequence.remedy.value = "ewc"
    app.sequence.strength.value = "strong"
    app.train_button.click()
    app.wait()
    assert "`strength`='strong'" in app.train_error.message and app.state.run is first


def test_importance_tracking_defaults_to_on_for_lora_and_off_for_full(tiny, task_files):
    model, tokenizer = tiny
    app = WorkbenchApp(model, tokenizer, task_files["capital"])
    controls = app.sequence
    assert controls.track_importance.value and controls.cost_html.value == ""
    app.method_panel.method_controls["kind"].value = "full"
    assert not controls.track_importance.value
    controls.track_importance.value = True  # the user insists: the cost is said
    assert "3 extra copies of the weights" in controls.cost_html.value
    assert "3 extra copies" in controls.track_importance.tooltip
    app.method_panel.method_controls["r"].value = 4  # not a change of kind: the tick stays
    assert controls.track_importance.value
    app.method_panel.method_controls["kind"].value = "lora"
    assert controls.track_importance.value and controls.cost_html.value == ""


def test_the_remedy_choices_are_the_registered_remedies(tiny, task_files, monkeypatch):
    model, tokenizer = tiny
    app = WorkbenchApp(model, tokenizer, task_files["capital"])
    values = [name for _, name in app.sequence.remedy.options]
    assert values == [name or "none" for name in REMEDIES]  # a None value would show blank
    assert app.sequence.remedy.options[0] == ("none", "none")
    assert app.sequence.remedy.value == "none" and app.sequence.chosen_remedy is None
    monkeypatch.setitem(REMEDIES, "halve", REMEDIES[None])
    app.sequence.show_previous(None, None)  # a run's end offers what is registered by then
    assert ("halve", "halve") in app.sequence.remedy.options


def test_copied_code_and_recipe_say_they_train_only_the_last_stage(tiny, task_files):
    model, tokenizer = tiny
    app = WorkbenchApp(model, tokenizer, task_files["capital"])
    few_steps(app)
    assert "continued" not in app.as_code() and "continued" not in app.as_recipe()
    first = train_on(app, task_files["capital"])
    app.data_path.value = str(task_files["antonym"])
    app.data_button.click()
    for text in (app.as_code(), app.as_recipe()):
        assert f"# NOTE: in the workbench this run continued {first.run_dir}" in text
        assert "trains the last stage alone" in text
    namespace: dict = {}
    exec(app.as_code().split("# the template")[0], namespace)  # still a valid script
    assert namespace["train"].tasks == {"antonym": len(app.data_panel.split[0])}


def test_loading_a_model_starts_a_new_sequence(tiny_model_dir, task_files):
    app = WorkbenchApp(model_name=str(tiny_model_dir), data=task_files["capital"])
    app.load_button.click()
    app.wait()
    few_steps(app)
    train_on(app, task_files["capital"])
    assert len(app.state.stage_runs) == 1
    app.load_model()  # the model bar's work: a fresh model continues nothing
    assert app.state.stage_runs == [] and app.state.stage_rows == []
    assert "starts from the loaded model" in app.sequence.continues_html.value
    second = train_on(app, task_files["antonym"])
    assert "continued_from" not in config_of(second)
