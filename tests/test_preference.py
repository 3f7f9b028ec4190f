"""DPO on a tiny model after a few SFT steps: the chosen-over-rejected margin rises, the run
emits reward margins, the reference stays the SFT adapter, bad input is refused."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from conftest import SAMPLE_DATA, quick
from rows import preference_split_fixture

import workbench
from workbench.errors import WorkbenchError
from workbench.evaluation.preferences import as_answer_rows, preference_margin
from workbench.runs.history import read_run
from workbench.training.finetune import train
from workbench.training.preference import PreferenceSettings, train_preferences

preference_split = preference_split_fixture(64, 16)  # (64 training pairs, 16 held-out pairs)


def test_dpo_raises_the_chosen_over_rejected_margin(tiny, ticket_split, preference_split):
    model, tokenizer = tiny
    sft = train(model, tokenizer, *ticket_split, hyperparameters=quick(max_steps=3, eval_every=3))
    assert sft.wait().status == "finished", sft.error
    pairs, held_out = preference_split
    before = preference_margin(sft.model, tokenizer, held_out)

    settings = PreferenceSettings(
        max_steps=12, batch_size=4, learning_rate=1e-2, eval_every=6, sample_max_new_tokens=4
    )
    run = train_preferences(
        sft.model, tokenizer, pairs, held_out, settings=settings, parent=sft.run_dir
    ).wait()
    assert run.status == "finished", run.error
    after = preference_margin(run.model, tokenizer, held_out)
    assert after.mean > before.mean + 1.0  # measured on pairs DPO never trained on

    steps = [e for e in run.events if e["event"] == "step"]
    assert len(steps) == 12 and all("reward_margin" in e for e in steps)
    assert steps[0]["reward_margin"] == pytest.approx(0.0, abs=1e-6)  # policy == reference
    assert sum(e["reward_margin"] for e in steps[-4:]) / 4 > 0.1
    evaluations = [e["eval_loss"] for e in run.events if e["event"] == "evaluation"]
    assert evaluations[0] == pytest.approx(0.6931, abs=1e-3)  # log 2: nothing preferred yet
    assert evaluations[-1] < evaluations[0]

    run.model.set_adapter("ref")  # TRL's frozen copy of the SFT adapter: the reference
    assert preference_margin(run.model, tokenizer, held_out).mean == pytest.approx(before.mean)
    run.model.set_adapter("default")

    config = yaml.safe_load((run.run_dir / "config.yaml").read_text())
    assert config["stage"] == "dpo" and config["parent"] == str(sft.run_dir)
    assert config["hyperparameters"]["beta"] == 0.1
    assert (run.run_dir / "adapter" / "adapter_model.safetensors").is_file()
    assert not (run.run_dir / "adapter" / "ref").exists()  # only the tuned adapter is kept
    record = read_run(run.run_dir)
    assert record.stage == "dpo" and record.task == "ticket_reply"
    assert record.metrics["reward_margin"] == pytest.approx(steps[-1]["reward_margin"])
    samples = [json.loads(x) for x in (run.run_dir / "samples.jsonl").read_text().splitlines()]
    assert samples[0]["samples"][0]["reference"] == held_out.rows[0]["chosen"]


def test_preference_rows_are_validated_and_convert_for_comparison(tiny, ticket_split):
    model, tokenizer = tiny
    with pytest.raises(WorkbenchError, match="preference rows"):
        train_preferences(model, tokenizer, ticket_split[0])
    with pytest.raises(workbench.DataValidationError, match=r"list:2: `rejected` is empty"):
        workbench.load_data(
            [
                {"prompt": "Say hi.", "chosen": "Hi!", "rejected": "No."},
                {"prompt": "Say hi.", "chosen": "Hi!", "rejected": " "},
            ],
            verbose=False,
        )
    with pytest.raises(WorkbenchError, match="learning_rate"):
        PreferenceSettings(learning_rate=0.5)
    pairs = workbench.load_data(SAMPLE_DATA / "preferences.jsonl", verbose=False)
    rows = as_answer_rows(pairs.select(range(3)))
    assert rows.format == "alpaca" and rows.rows[0]["output"] == pairs.rows[0]["chosen"]
    assert "rejected" not in rows.rows[0]


def test_the_preference_experiment_measures_held_out_pairs_before_and_after(tiny, ticket_split):
    from workbench.experiments.preferences import preference_experiment

    model, tokenizer = tiny
    pairs = workbench.load_data(SAMPLE_DATA / "preferences.jsonl", verbose=False)
    with pytest.raises(WorkbenchError, match="not neither"):
        preference_experiment(pairs, held_out=8)
    with pytest.raises(WorkbenchError, match="not both"):
        preference_experiment(pairs, held_out=8, model=model, sft_run_dir="runs/x")
    sft = train(model, tokenizer, *ticket_split, hyperparameters=quick(max_steps=3, eval_every=3))
    assert sft.wait().status == "finished", sft.error
    settings = PreferenceSettings(max_steps=6, batch_size=4, learning_rate=1e-2, eval_every=6)
    short = workbench.Decoding(max_new_tokens=4)
    experiment = preference_experiment(
        pairs.select(range(40)),
        held_out=8,
        model=sft.model,
        tokenizer=tokenizer,
        settings=settings,
        answer_rows=3,
        decoding=short,
        start=False,
    )
    _, expected_held_out = workbench.split_data(pairs.select(range(40)), 8, seed=settings.seed)
    assert experiment.held_out.rows == expected_held_out.rows
    assert len(experiment.train_pairs) == 32 and experiment.run.status != "finished"
    sft_margin = preference_margin(sft.model, tokenizer, experiment.held_out)
    assert experiment.margin_before.per_pair == pytest.approx(sft_margin.per_pair)
    assert [r["output"] for r in experiment.answer_rows] == [
        r["chosen"] for r in experiment.held_out.rows[:3]
    ]
    assert len(experiment.answers_before.answers) == 3
    assert "not measured after yet" in experiment.summary()
    assert experiment.run.start().wait().status == "finished", experiment.run.error
    after = experiment.measure_after()
    assert after is experiment.margin_after and after.mean > experiment.margin_before.mean
    assert f"{experiment.margin_before.mean:.3g} → {after.mean:.3g}" in experiment.summary()


def test_the_dpo_command_runs_the_same_experiment_from_a_run_directory(
    tiny_model_dir, ticket_split, capsys
):
    from workbench.cli import main

    model, tokenizer = workbench.load_model(str(tiny_model_dir))
    sft = train(model, tokenizer, *ticket_split, hyperparameters=quick(max_steps=2, eval_every=2))
    assert sft.wait().status == "finished", sft.error
    data = str(SAMPLE_DATA / "preferences.jsonl")
    args = ["dpo", str(sft.run_dir), "--data", data, "--held-out", "8", "--max-steps", "2"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "step 2: loss" in out
    assert "Held-out log-probability margin, chosen minus rejected: " in out and " → " in out
    assert "of 8 pairs" in out and "finished: " in out
    assert re.search(r"chosen likelier in \d+% → \d+% of 8 pairs", out)  # before, then after


def test_the_summary_gives_each_figure_before_and_after():
    from workbench.evaluation.preferences import Margin
    from workbench.experiments.preferences import PreferenceExperiment

    pairs = workbench.load_data(SAMPLE_DATA / "preferences.jsonl", verbose=False).select(range(4))
    before, after = Margin(-0.5, 0.25, [-1, -1, -1, 1]), Margin(1.5, 0.75, [1, 1, 1, -1])
    experiment = PreferenceExperiment(None, pairs, pairs, before, pairs)
    assert experiment.summary().endswith(
        "-0.5 before DPO, chosen likelier in 25% of 4 pairs (not measured after yet)"
    )
    experiment.margin_after = after
    assert experiment.summary().endswith("-0.5 → 1.5 (chosen likelier in 25% → 75% of 4 pairs)")
