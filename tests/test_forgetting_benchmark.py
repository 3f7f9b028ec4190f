"""The forgetting benchmark: its held-out probe rows, its quick path and its merged parts."""

from __future__ import annotations

import importlib.util
import json
import math
import random
from collections import Counter

import pytest
from conftest import ROOT, SAMPLE_DATA

from benchmarks import forgetting

TASKS = ("ticket_topic", "date_iso", "extract_city", "antonym", "capital")


def _rows(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


@pytest.fixture(scope="module")
def probe_rows():
    return _rows(forgetting.PROBE_FILE)


def test_probe_file_holds_at_least_50_rows_of_each_task(probe_rows):
    counts = Counter(r["task"] for r in probe_rows)
    assert set(counts) == set(TASKS)
    assert min(counts.values()) >= 50, counts
    tickets = Counter(r["output"] for r in probe_rows if r["task"] == "ticket_topic")
    assert len(set(tickets.values())) == 1  # every topic equally often


def test_no_probe_row_is_a_training_row(probe_rows):
    training = []
    for name in ("mixed_instructions", "support_tickets", "date_rewrite", "city_extraction"):
        training += _rows(SAMPLE_DATA / f"{name}.jsonl")
    seen = {(r["instruction"], r["input"], r["output"]) for r in training}
    asked = {(r["instruction"], r["input"]) for r in training}
    for row in probe_rows:
        assert (row["instruction"], row["input"], row["output"]) not in seen, row
        assert (row["instruction"], row["input"]) not in asked, row  # not even the question
    # the facts are new too: no trained date, city sentence, antonym word or capital
    dates = {r["output"] for r in training if r["task"] == "date_iso"}
    assert not dates & {r["output"] for r in probe_rows if r["task"] == "date_iso"}
    words = {w for r in training if r["task"] == "antonym" for w in (r["input"], r["output"])}
    probe_words = {
        w for r in probe_rows if r["task"] == "antonym" for w in (r["input"], r["output"])
    }
    assert not words & probe_words
    capitals = {r["output"] for r in training if r["task"] == "capital"}
    assert not capitals & {r["output"] for r in probe_rows if r["task"] == "capital"}
    assert len({(r["instruction"], r["input"]) for r in probe_rows}) == len(probe_rows)


def test_probe_file_is_what_its_generator_writes():
    spec = importlib.util.spec_from_file_location(
        "make_probe_data", SAMPLE_DATA / "make_probe_data.py"
    )
    import sys

    sys.path.insert(0, str(SAMPLE_DATA))  # it imports make_sample_data's building blocks
    try:
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(SAMPLE_DATA))
    rows = module.make_probe_rows(random.Random(module.PROBE_SEED))
    expected = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    assert module.PROBE_FILE == forgetting.PROBE_FILE
    assert forgetting.PROBE_FILE.read_text(encoding="utf-8") == expected


def test_full_plan_meets_the_issue(tmp_path):
    plan = forgetting.Plan()
    assert plan.seeds >= 3 and plan.rows_per_task >= 50
    strengths = Counter(s.remedy for s in plan.settings)
    assert strengths["none"] == 1
    for remedy in ("replay", "ewc", "si", "lwf"):
        assert strengths[remedy] >= 2, remedy
    assert strengths["lora"] >= 1
    assert len({s.name for s in plan.settings}) == len(plan.settings)  # names tell them apart


def test_quick_benchmark_measures_every_remedy_on_a_tiny_model(tiny_model_dir, tmp_path):
    out = tmp_path / "forgetting.json"
    forgetting.main(["--quick", "--model", str(tiny_model_dir), "--out", str(out)])
    report = json.loads(out.read_text())
    environment = report["parts"]["all"]
    assert environment["device"] == "cpu" and environment["torch_threads"] >= 1
    assert environment["date"] and environment["seeds"] == [0]
    plan = report["plan"]
    assert plan["rows_per_task"] == 4 and plan["model"] == str(tiny_model_dir)
    tasks = {forgetting.TASK_A, forgetting.TASK_B, *forgetting.PROBE_TASKS}
    stages = [report["base"], *report["after_a"], *report["runs"]]
    for record in stages:
        assert set(record["score"]) == set(record["loss"]) == tasks
        for task in tasks:  # a share of 4 rows, and a finite loss
            assert record["score"][task] * 4 == pytest.approx(round(record["score"][task] * 4))
            assert math.isfinite(record["loss"][task]) and record["loss"][task] > 0
        assert record["kept"] == record["score"][forgetting.TASK_A]
        assert record["learned loss"] == record["loss"][forgetting.TASK_B]
    assert record["metric"][forgetting.TASK_A] == "exact answer (teacher-forced)"
    assert record["metric"]["capital"] == "answer contains reference"
    runs = {r["remedy"]: r for r in report["runs"]}
    assert set(runs) == {"none", "replay", "ewc", "si", "lwf", "lora"}
    assert runs["none"]["replayed_share"] == 0 < runs["replay"]["replayed_share"]
    for remedy in ("ewc", "si", "lwf"):
        assert runs[remedy]["last_penalty"] is not None, remedy
    assert runs["none"]["last_penalty"] is None
    # stage B changed the weights: the date task's loss moved from where stage A left it
    after_a = report["after_a"][0]
    assert runs["none"]["learned loss"] != after_a["learned loss"]


def _result(seeds, base=None):
    runs = [{"seed": s, "setting": "none", "kept": 0.1 * s} for s in seeds]
    environment = {"date": "2026-12-01", "device": "cpu"}
    return {"environment": environment, "seeds": seeds, "seconds": 1, "base": base}, runs


def test_parts_merge_into_one_file_and_a_rerun_replaces_its_part(tmp_path):
    out, plan = tmp_path / "merged.json", forgetting.Plan(seeds=2)
    first, runs = _result([1])
    forgetting.merge(out, plan, 2, first | {"after_a": [{"seed": 1}], "runs": runs})
    second, runs = _result([0], base={"stage": "base"})
    forgetting.merge(out, plan, 1, second | {"after_a": [{"seed": 0}], "runs": runs})
    again, runs = _result([1])
    report = forgetting.merge(out, plan, 2, again | {"after_a": [{"seed": 1}], "runs": runs})
    assert sorted(r["seed"] for r in report["runs"]) == [0, 1]  # part 2 replaced, not added
    assert sorted(report["parts"]) == ["1", "2"] and report["base"] == {"stage": "base"}
    assert json.loads(out.read_text()) == report
    with pytest.raises(SystemExit, match="other settings"):
        forgetting.merge(out, forgetting.Plan(seeds=3), 3, again | {"after_a": [], "runs": []})


def test_committed_result_is_a_full_measurement():
    results = sorted((ROOT / "benchmarks" / "results").glob("*-cpu-forgetting.json"))
    assert results, "no committed forgetting measurement"
    report = json.loads(results[-1].read_text())
    plan = report["plan"]
    assert plan["rows_per_task"] >= 50 and plan["model"] == "smollm2-135m-instruct"
    seeds = Counter(r["setting"] for r in report["runs"])
    assert set(seeds) == {s["name"] for s in plan["settings"]}
    assert min(seeds.values()) == plan["seeds"] >= 3
    assert sorted(r["seed"] for r in report["after_a"]) == list(range(plan["seeds"]))
    assert report["base"] is not None
    for part in report["parts"].values():
        assert part["device"] == "cpu" and part["torch_threads"] == 1 and part["date"]
