"""DPO on a tiny model after a few SFT steps: the chosen-over-rejected margin rises, the run
emits reward margins, the reference stays the SFT adapter, bad input is refused."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import SAMPLE_DATA, quick

import workbench
from workbench.errors import WorkbenchError
from workbench.preference import (
    PreferenceSettings,
    as_answer_rows,
    preference_margin,
    train_preferences,
)
from workbench.runs import read_run
from workbench.train import train


@pytest.fixture(scope="module")
def preference_split():
    """(64 training pairs, 16 held-out pairs) of sample_data/preferences.jsonl."""
    pairs = workbench.load_data(SAMPLE_DATA / "preferences.jsonl", verbose=False)
    rest, held_out = workbench.split_data(pairs, 16, seed=0)
    return rest.select(range(64)), held_out


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
