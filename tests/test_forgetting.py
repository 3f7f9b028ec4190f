"""The forgetting probe: learned (trained task) beside retained (tasks never trained on)."""

from __future__ import annotations

import json

import pytest
from conftest import SAMPLE_DATA, quick

import workbench
from workbench.evaluation.forgetting import (
    ForgettingProbe,
    TaskScores,
    answer_contains,
    forgetting_table,
    learned_retained,
)
from workbench.runs.report import save_forgetting, write_report
from workbench.training.finetune import train

SHORT = workbench.Decoding(max_new_tokens=4, batch_size=8)
LABELS = ["billing", "shipping", "technical", "account"]


@pytest.fixture(scope="module")
def probe_rows():
    data = workbench.load_data(SAMPLE_DATA / "mixed_instructions.jsonl", verbose=False)
    keep = [i for i, r in enumerate(data.rows) if r["task"] in ("capital", "antonym")]
    return data.select(keep)


def _probe(ticket_split, probe_rows, rows_per_task=4):
    return ForgettingProbe(
        target=ticket_split[1],
        probe=probe_rows,
        labels={"ticket_topic": LABELS},
        rows_per_task=rows_per_task,
        decoding=SHORT,
    )


def test_answer_contains_reads_the_reference_inside_a_sentence():
    assert answer_contains("The capital of Vietnam is Hanoi.", "Hanoi")
    assert answer_contains("The capital city of Iceland is Reykjavik.", "Reykjavík")
    assert answer_contains("the antonym of big is SMALL", "small")
    assert not answer_contains("The capital of Nigeria is Nigeria.", "Abuja")
    assert not answer_contains("smaller", "small")  # whole words only
    assert not answer_contains("anything", "")


def test_probe_refuses_to_measure_a_task_it_trains_on(ticket_split, probe_rows):
    with pytest.raises(workbench.WorkbenchError, match="both target and probe"):
        ForgettingProbe(target=probe_rows, probe=probe_rows)
    probe = _probe(ticket_split, probe_rows)
    probe.check_training_rows(ticket_split[0])  # tickets only: fine
    with pytest.raises(workbench.WorkbenchError, match="capital"):
        probe.check_training_rows(probe_rows)
    assert probe.target_tasks == ["ticket_topic"]
    assert set(probe.probe_tasks) == {"capital", "antonym"}
    assert [r["task"] for r in probe.rows_of("capital").rows] == ["capital"] * 4


def test_lora_base_from_the_adapter_switched_off_equals_the_untouched_model(
    tiny_model_dir, ticket_split, probe_rows
):
    probe = _probe(ticket_split, probe_rows)
    model, tokenizer = workbench.load_model(str(tiny_model_dir))
    untouched = probe.measure_base(model, tokenizer)
    run = train(
        model,
        tokenizer,
        ticket_split[0],
        method=workbench.Method(kind="lora", r=8, dropout=0.0),
        hyperparameters=quick(max_steps=12, learning_rate=1e-2, eval_every=100),
    ).wait()
    assert run.status == "finished", run.error
    base = probe.measure_base(run.model, tokenizer)  # adapter off
    tuned = probe.measure(run.model, tokenizer, "LoRA")
    for task in ["ticket_topic", "capital", "antonym"]:
        assert base.loss[task] == pytest.approx(untouched.loss[task], rel=1e-5)
        assert base.evaluations[task].answers == untouched.evaluations[task].answers
    assert tuned.loss["ticket_topic"] < base.loss["ticket_topic"] - 0.05  # it learned something
    table = forgetting_table(base, tuned, probe)
    assert list(table.index) == ["ticket_topic", "antonym", "capital"]  # order of the rows
    assert list(table["role"]) == ["learned", "retained", "retained"]
    assert table.loc["ticket_topic", "metric"] == "label accuracy"
    assert table.loc["capital", "metric"] == "answer contains reference"
    assert table.loc["capital", "LoRA loss"] == pytest.approx(tuned.loss["capital"])


def test_learned_and_retained_summarise_each_side():
    probe = ForgettingProbe(
        target=workbench.Examples([{"task": "t"}], "alpaca", "x", [1]),
        probe=workbench.Examples([{"task": "a"}, {"task": "b"}], "alpaca", "x", [1, 2]),
    )
    metric = {"t": "m", "a": "m", "b": "m"}
    base = TaskScores("base", {"t": 0.1, "a": 0.8, "b": 0.4}, {"t": 5, "a": 1, "b": 1}, metric)
    tuned = TaskScores("full", {"t": 0.9, "a": 0.2, "b": 0.4}, {"t": 1, "a": 3, "b": 2}, metric)
    summary = learned_retained(base, [tuned], probe)
    assert summary.loc["full", "learned"] == pytest.approx(0.9)
    assert summary.loc["full", "retained"] == pytest.approx(0.3)
    assert summary.loc["full", "retained / base"] == pytest.approx(0.5)
    assert summary.loc["full", "retained loss"] == pytest.approx(2.5)
    assert summary.loc["base", "retained / base"] == pytest.approx(1.0)
    table = forgetting_table(base, tuned, probe)
    assert table.loc["a", "change"] == pytest.approx(-0.6)


def test_report_shows_learned_and_retained(tiny, ticket_split, probe_rows):
    model, tokenizer = tiny
    probe = _probe(ticket_split, probe_rows, rows_per_task=2)
    base = probe.measure_base(model, tokenizer)
    run = train(model, tokenizer, *ticket_split, hyperparameters=quick(max_steps=2)).wait()
    tuned = probe.measure(run.model, tokenizer, "LoRA")
    save_forgetting(run.run_dir, forgetting_table(base, tuned, probe))
    stored = json.loads((run.run_dir / "forgetting.json").read_text())
    assert stored["columns"][:3] == ["task", "role", "metric"]
    page = write_report(run.run_dir).read_text()
    assert "Learned and retained" in page
    assert "retained" in page and "capital" in page and "antonym" in page


# --- teacher-forced scoring, seeds, the trade-off plot --------------------------------------
def _tickets_tuned(tiny_model_dir, ticket_split):
    """The tiny model after 40 steps on ticket topics: it answers with a label, and stops."""
    model, tokenizer = workbench.load_model(str(tiny_model_dir))
    run = train(
        model,
        tokenizer,
        ticket_split[0],
        method=workbench.Method(kind="full", dropout=0.0),
        hyperparameters=quick(max_steps=40, learning_rate=1e-2, eval_every=100),
    ).wait()
    assert run.status == "finished", run.error
    return run.model, tokenizer


def test_teacher_forced_exact_match_is_greedy_decodings_verdict(tiny_model_dir, ticket_split):
    from workbench.evaluation.compare import validation_loss
    from workbench.evaluation.forgetting import teacher_forced_scores

    model, tokenizer = _tickets_tuned(tiny_model_dir, ticket_split)
    rows = ticket_split[0].select(range(16))  # trained rows: the model gets some of them right
    prompts = [workbench.get_template("alpaca").render(r, tokenizer)[0] for r in rows.rows]
    answers, longer = (
        workbench.generate(model, tokenizer, prompts, workbench.Decoding(max_new_tokens=n))
        for n in (8, 16)
    )
    stopped = [a == b for a, b in zip(answers, longer)]  # ended with end-of-turn, not cut
    assert any(stopped)
    # the model's own greedy answers as references are right; with a word added, wrong
    places = list(range(len(rows)))
    own = [r | {"output": a} for r, a, s in zip(rows.rows, answers, stopped) if s]
    own = workbench.Examples(own, "alpaca", "own", places[: len(own)])
    mine = teacher_forced_scores(model, tokenizer, own, "alpaca")
    assert [row["exact_match"] for row in mine.per_row] == [1.0] * len(own)
    wrong = [r | {"output": a + " x"} for r, a in zip(rows.rows, answers)]
    wrong = workbench.Examples(wrong, "alpaca", "wrong", places)
    assert teacher_forced_scores(model, tokenizer, wrong, "alpaca").scores["exact_match"] == 0
    # on the real references, right exactly where greedy decoding writes them and stops
    real = teacher_forced_scores(model, tokenizer, rows, "alpaca")
    verdicts = [s and a == r["output"] for a, s, r in zip(answers, stopped, rows.rows)]
    assert [row["exact_match"] == 1.0 for row in real.per_row] == verdicts
    assert 0 < sum(verdicts) < len(rows)  # both kinds of verdict were checked
    stock = validation_loss(model, tokenizer, rows, "alpaca")
    assert real.scores["validation_loss"] == pytest.approx(stock, rel=1e-4)


def test_probe_scores_teacher_forced_tasks_without_generating(tiny, ticket_split, probe_rows):
    model, tokenizer = tiny
    probe = ForgettingProbe(
        target=ticket_split[1],
        probe=probe_rows,
        rows_per_task=4,
        decoding=SHORT,
        teacher_forced=["ticket_topic"],
    )
    scores = probe.measure(model, tokenizer, "tiny")
    assert scores.metric["ticket_topic"] == "exact answer (teacher-forced)"
    assert scores.evaluations["ticket_topic"].answers == []  # nothing was generated
    assert len(scores.evaluations["capital"].answers) == 4
    with pytest.raises(workbench.WorkbenchError, match="teacher_forced"):
        ForgettingProbe(target=ticket_split[1], probe=probe_rows, teacher_forced=["dates"])


def _records():
    rows = []
    for seed, shift in enumerate((0.0, 0.2)):
        rows.append({"remedy": "none", "strength": None, "seed": seed, "kept": 0.1 + shift})
        for strength in (10.0, 1.0):
            kept = 0.3 + shift + strength / 100
            rows.append({"remedy": "ewc", "strength": strength, "seed": seed, "kept": kept})
    return [r | {"learned": 1 - r["kept"]} for r in rows]


def test_seeds_summarise_to_mean_and_spread_per_setting():
    from workbench.evaluation.forgetting import mean_spread, summarize_seeds

    summary = summarize_seeds(_records())
    assert list(summary.index.get_level_values("remedy")) == ["none", "ewc", "ewc"]
    assert list(summary.index.get_level_values("strength"))[1:] == [10.0, 1.0]  # as first seen
    none = summary.iloc[0]
    assert none["kept"] == pytest.approx(0.2) and none["kept sd"] == pytest.approx(0.1414, abs=1e-4)
    assert none["seeds"] == 2
    assert summary.loc[("ewc", 10.0), "learned"] == pytest.approx(0.5)
    text = mean_spread(summary, ["kept"])
    assert text.iloc[0]["kept"] == "0.20 ± 0.14"
    single = summarize_seeds(_records()[:3])
    assert mean_spread(single, ["kept"]).iloc[0]["kept"] == "0.10"  # one seed: no spread
    with pytest.raises(workbench.WorkbenchError, match="setting"):
        summarize_seeds(_records(), by=("setting",))


def test_tradeoff_figure_draws_each_remedy_across_its_strengths():
    from workbench.evaluation.forgetting import summarize_seeds, tradeoff_figure

    summary = summarize_seeds(_records())
    figure = tradeoff_figure(summary, x="learned", ys=("kept",))
    names = [trace.name for trace in figure.data]
    assert names == ["none", "ewc"]
    ewc = figure.data[1]
    assert list(ewc.text) == ["1", "10"]  # ordered by strength
    assert list(ewc.y) == pytest.approx([0.41, 0.5])
    assert list(ewc.error_y.array) == pytest.approx([0.1414, 0.1414], abs=1e-4)
    assert figure.data[0].marker.symbol == "star"
    two = tradeoff_figure(summary, ys=("kept", "learned"), x="learned")
    assert len(two.data) == 4 and [t.showlegend for t in two.data] == [True, True, False, False]
