"""The command line's flags reach the library: demo's default steps, preview's model and column
mapping, dpo's learning rate and batch size (the training itself is tested where it lives)."""

from __future__ import annotations

import json

import pytest
from conftest import SAMPLE_DATA, quick

import workbench
from workbench.cli import main
from workbench.errors import WorkbenchError
from workbench.lessons.demo import DemoSettings
from workbench.runs.directory import RunDirectory


def test_demo_help_and_default_steps_come_from_the_demo_settings(monkeypatch, capsys):
    import workbench.cli as cli

    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    assert f"(default {DemoSettings.max_steps})" in capsys.readouterr().out
    received = []
    monkeypatch.setattr(cli, "run_demo", lambda settings, model_name: received.append(settings))
    assert main(["demo"]) == 0
    assert received[0].max_steps == DemoSettings().max_steps
    assert main(["demo", "--max-steps", "3"]) == 0
    assert received[1].max_steps == 3


def test_preview_takes_a_model_and_a_column_mapping(tiny_model_dir, tmp_path, capsys):
    data = tmp_path / "questions.jsonl"
    rows = [{"question": f"What is {n} plus {n}?", "answer": str(2 * n)} for n in range(4)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    columns = ["--columns", "question=instruction", "--columns", "answer=output"]
    assert main(["preview", str(data), "--model", str(tiny_model_dir), *columns]) == 0
    out = capsys.readouterr().out
    assert "What is 0 plus 0?" in out and "0 response tokens" not in out
    assert main(["preview", str(data), "--model", str(tiny_model_dir)]) == 2  # no mapping
    with pytest.raises(SystemExit):
        main(["preview", str(data), "--columns", "question"])
    assert "write SOURCE=STANDARD" in capsys.readouterr().err


def test_dpo_passes_learning_rate_and_batch_size_to_the_preference_settings(monkeypatch):
    import workbench.cli as cli

    received = []

    def capture(data, *, settings, **_):
        received.append(settings)
        raise WorkbenchError("captured")  # stop before any model loads

    monkeypatch.setattr(cli, "preference_experiment", capture)
    args = ["dpo", "runs/sft", "--learning-rate", "1e-5", "--batch-size", "2"]
    assert main(args) == 2
    assert (received[0].learning_rate, received[0].batch_size) == (1e-5, 2)
    assert main(["dpo", "runs/sft", "--learning-rate", "0.5"]) == 2  # validated: too high
    assert len(received) == 1


def test_rl_trains_a_model_or_a_finished_run_with_the_chosen_reward(
    tiny_model_dir, ticket_split, capsys
):
    tickets = str(SAMPLE_DATA / "support_tickets.jsonl")
    short = ["--max-steps", "2", "--held-out", "8", "--batch-size", "8", "--prompts", tickets]
    model = ["--model", str(tiny_model_dir), "--template", "alpaca"]
    assert main(["rl", *model, *short, "--reward", "labels", "--algorithm", "ppo"]) == 0
    out = capsys.readouterr().out
    assert "before PPO: mean reward " in out and " over 8 held-out prompts (one_of_labels)" in out
    assert "Held-out mean reward (one_of_labels, greedy answers to 8 prompts): " in out
    assert "step 1: loss " in out and " → " in out and "finished: " in out
    run_dir = out.strip().splitlines()[-1].removeprefix("finished: ")
    config = RunDirectory(run_dir).read_config()
    assert config["stage"] == "ppo" and config["hyperparameters"]["num_generations"] == 1
    assert config["reward"]["labels"] == ["account", "billing", "shipping", "technical"]

    base, tokenizer = workbench.load_model(str(tiny_model_dir))
    sft = workbench.train(base, tokenizer, *ticket_split, hyperparameters=quick(max_steps=1))
    sft.wait()
    assert main(["rl", str(sft.run_dir), *short, "--reward", "labels:billing,shipping"]) == 0
    run_dir = capsys.readouterr().out.strip().splitlines()[-1].removeprefix("finished: ")
    config = RunDirectory(run_dir).read_config()
    assert config["stage"] == "grpo" and config["parent"] == str(sft.run_dir)
    assert config["reward"]["labels"] == ["billing", "shipping"]

    assert main(["rl", *model, *short, "--reward", "rouge"]) == 2
    assert "--reward 'rouge': use iso_date, labels" in capsys.readouterr().err
    assert main(["rl", *model, *short, "--algorithm", "grpo", "--num-generations", "1"]) == 2
    assert "GRPO compares answers" in capsys.readouterr().err


def test_report_of_a_folder_that_holds_no_run_exits_2_and_creates_nothing(tmp_path, capsys):
    missing, empty = tmp_path / "no" / "such-run", tmp_path / "empty"
    empty.mkdir()
    for folder, why in ((missing, "it does not exist"), (empty, "it holds no config.yaml")):
        assert main(["report", str(folder)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"workbench: {folder}: no such run directory ({why}")
    assert not (tmp_path / "no").exists() and list(empty.iterdir()) == []


def test_export_push_to_hub_offline_exits_2_before_writing_anything(lora_run, monkeypatch, capsys):
    import workbench.model.loading as models

    written = sorted(p.name for p in lora_run.run_dir.iterdir())
    push = ["export", str(lora_run.run_dir), "--merged", "--push-to-hub", "me/tickets"]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(push) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--push-to-hub me/tickets: HF_HUB_OFFLINE is set" in err
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(models, "hub_host", lambda: "hub.invalid")  # a name that never resolves
    assert main(push) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "hub.invalid:443 cannot be reached" in err
    assert "nothing was written" in err
    assert sorted(p.name for p in lora_run.run_dir.iterdir()) == written  # no merged/ folder
