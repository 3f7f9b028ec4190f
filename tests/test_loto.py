"""Leave-one-task-out: folds never train on what they hold out; one call measures every fold."""

from __future__ import annotations

import json

import pytest
from conftest import SAMPLE_DATA, quick

import workbench
from workbench.experiments.loto import leave_one_task_out, task_folds


@pytest.fixture(scope="module")
def three_tasks():
    data = workbench.load_data(SAMPLE_DATA / "mixed_instructions.jsonl", verbose=False)
    keep, seen = [], {}
    for i, row in enumerate(data.rows):
        if row["task"] in ("antonym", "capital", "date_iso") and seen.get(row["task"], 0) < 10:
            seen[row["task"]] = seen.get(row["task"], 0) + 1
            keep.append(i)
    return data.select(keep)


def test_each_fold_holds_out_one_task_and_trains_on_the_rest(three_tasks):
    folds = list(task_folds(three_tasks, rows_per_task=4))
    assert [f.name for f in folds] == list(three_tasks.tasks)
    for fold in folds:
        assert {r["task"] for r in fold.held_out.rows} == {fold.name}
        assert fold.name not in fold.train.tasks
        assert len(fold.held_out) == 4 and len(fold.train) == 20


def test_clusters_hold_similar_tasks_out_together(three_tasks):
    folds = list(task_folds(three_tasks, {"knowledge": ["antonym", "capital"]}))
    assert [(f.name, f.tasks) for f in folds] == [
        ("knowledge", ["antonym", "capital"]),
        ("date_iso", ["date_iso"]),
    ]
    assert set(folds[0].train.tasks) == {"date_iso"}
    assert set(folds[1].train.tasks) == {"antonym", "capital"}
    with pytest.raises(workbench.WorkbenchError, match="`dates`.*not in the data"):
        list(task_folds(three_tasks, {"dates": ["date_rewrite"]}))
    with pytest.raises(workbench.WorkbenchError, match="`capital` is in clusters"):
        list(task_folds(three_tasks, {"a": ["capital"], "b": ["capital"]}))
    with pytest.raises(workbench.WorkbenchError, match="nothing left to train"):
        list(task_folds(three_tasks, {"all": ["antonym", "capital", "date_iso"]}))
    one_task = three_tasks.select(
        [i for i, r in enumerate(three_tasks.rows) if r["task"] == "capital"]
    )
    with pytest.raises(workbench.WorkbenchError, match="at least two"):
        list(task_folds(one_task))


def test_one_call_trains_every_fold_without_its_held_out_task(three_tasks, tiny_model_dir):
    summary, results = leave_one_task_out(
        lambda: workbench.load_model(str(tiny_model_dir)),
        three_tasks,
        clusters={"knowledge": ["antonym", "capital"]},
        hyperparameters=quick(max_steps=2, eval_every=100),
        rows_per_task=3,
        metrics=["exact_match"],
        decoding=workbench.Decoding(max_new_tokens=3),
    )
    assert list(summary.index) == ["knowledge", "date_iso"]
    assert list(summary["held-out rows"]) == [6, 3]
    for result in results:
        trained = (result.run.run_dir / "data" / "train.jsonl").read_text().splitlines()
        tasks = {json.loads(line)["task"] for line in trained}
        assert tasks and not tasks & set(result.fold.tasks)  # never trained on what it measures
        assert result.run.status == "finished"
        assert len(result.tuned.answers) == len(result.fold.held_out)
        assert result.base.scores["validation_loss"] != result.tuned.scores["validation_loss"]
    assert {"exact_match base", "exact_match tuned", "validation_loss tuned"} <= set(
        summary.columns
    )
