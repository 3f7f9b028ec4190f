"""The reward model on a tiny model: its held-out pair accuracy rises on a separable toy set, it
scores answers as it was trained, its run lists, reports and resumes, bad input is refused."""

from __future__ import annotations

import random

import pytest
import yaml
from conftest import SAMPLE_DATA, build_tiny_model

import workbench
from workbench.errors import WorkbenchError
from workbench.model.methods import Method
from workbench.runs.history import list_runs, read_run
from workbench.training.reward import (
    RewardSettings,
    load_reward_model,
    pair_accuracy,
    resume_reward_model,
    reward_model_from,
    score_responses,
    train_reward_model,
)

GOOD, BAD = ("today", "soon", "now", "shortly"), ("later", "never", "maybe", "sometime")


def toy_pairs(count: int, seed: int):
    """Pairs whose chosen reply ends with a word of GOOD and rejected one of BAD: separable by
    a word the rejected reply never has, with prompts and teams varying."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        team = rng.choice(["billing", "shipping", "technical", "account"])
        reply = f" our {team} team will reply"
        rows.append(
            {
                "prompt": f"Ticket {rng.randint(1, 999)} about {team}:",
                "chosen": f"{reply} {rng.choice(GOOD)}",
                "rejected": f"{reply} {rng.choice(BAD)}",
                "task": "toy_reply",
            }
        )
    return workbench.load_data(rows, verbose=False)


def settings(**changes) -> RewardSettings:
    values = dict(max_steps=12, batch_size=8, learning_rate=1e-2, eval_every=12, max_length=64)
    return RewardSettings(**{**values, **changes})


LORA = Method(r=8, alpha=16)


def test_held_out_pair_accuracy_rises_on_a_separable_toy_set(tiny_tokenizer):
    tokenizer = tiny_tokenizer
    pairs, held_out = toy_pairs(64, seed=0), toy_pairs(16, seed=1)
    run = train_reward_model(
        build_tiny_model(tokenizer),
        tokenizer,
        pairs,
        held_out,
        settings=settings(),
        method=LORA,
        template="plain",
        start=False,
    )
    before = pair_accuracy(run.model, tokenizer, held_out, "plain")
    assert run.start().wait().status == "finished", run.error

    evaluations = [e for e in run.events if e["event"] == "evaluation"]
    assert [e["step"] for e in evaluations] == [0, 12]
    first, last = evaluations[0]["eval_accuracy"], evaluations[-1]["eval_accuracy"]
    assert first == pytest.approx(before)  # scored as TRL tokenizes: prompt + answer + EOS
    assert first <= 0.75 and last == 1.0
    assert evaluations[-1]["eval_loss"] < evaluations[0]["eval_loss"] / 4
    assert pair_accuracy(run.model, tokenizer, held_out, "plain") == 1.0
    steps = [e for e in run.events if e["event"] == "step"]
    assert len(steps) == 12 and all("pair_accuracy" in e and "score_margin" in e for e in steps)
    assert steps[-1]["score_margin"] > steps[0]["score_margin"]

    prompt = held_out.rows[0]["prompt"]
    good, bad = score_responses(
        run.model,
        tokenizer,
        [prompt, prompt],
        [" our team will reply now", " our team will reply never"],
    )
    assert good > bad

    config = yaml.safe_load((run.run_dir / "config.yaml").read_text())
    assert config["stage"] == "reward" and config["hyperparameters"]["center_rewards"] == 0.0
    record = read_run(run.run_dir)
    assert record.stage == "reward" and record.status == "finished" and record.task == "toy_reply"
    report = (run.run_dir / "report.html").read_text()
    assert "validation accuracy" in report


def test_a_finished_reward_run_loads_from_its_directory_and_scores_the_same(tiny_model_dir):
    model, tokenizer = workbench.load_model(str(tiny_model_dir))
    held_out = toy_pairs(8, seed=1)
    run = train_reward_model(
        model,
        tokenizer,
        toy_pairs(32, seed=0),
        settings=settings(max_steps=4),
        method=LORA,
        template="plain",
    ).wait()
    assert run.status == "finished", run.error
    prompts = [r["prompt"] for r in held_out.rows]
    answers = [r["chosen"] for r in held_out.rows]
    loaded, loaded_tokenizer = load_reward_model(run.run_dir)
    assert score_responses(loaded, loaded_tokenizer, prompts, answers) == pytest.approx(
        score_responses(run.model, tokenizer, prompts, answers), abs=1e-5
    )


def test_a_stopped_reward_run_resumes_to_the_same_losses(tiny_model_dir):
    pairs, held_out = toy_pairs(64, seed=0), toy_pairs(8, seed=1)
    plan = settings(max_steps=8, eval_every=4, learning_rate=5e-3)

    def start(**kwargs):
        model, tokenizer = workbench.load_model(str(tiny_model_dir))
        return train_reward_model(
            model,
            tokenizer,
            pairs,
            held_out,
            settings=plan,
            method=LORA,
            template="plain",
            **kwargs,
        )

    reference = start().wait()
    assert reference.status == "finished", reference.error
    run = start(start=False)
    run.add_callback("step", lambda e: run.stop() if e["step"] == 2 else None)
    assert run.start().wait().status == "stopped"
    assert read_run(run.run_dir).status == "stopped"
    run.resume().wait()  # in this kernel, on the same model
    assert run.status == "finished", run.error
    assert run.losses == pytest.approx(reference.losses, rel=1e-4)

    other = start(start=False)  # stopped, then resumed from its directory with a fresh base
    other.add_callback("step", lambda e: other.stop() if e["step"] == 2 else None)
    other.start().wait()
    assert next(e for e in other.events if e["event"] == "stopped")["step"] == 3
    resumed = resume_reward_model(other.run_dir).wait()
    assert resumed.status == "finished", resumed.error
    assert resumed.losses == pytest.approx(reference.losses[3:], rel=1e-4)
    listed = {r.name: r for r in list_runs()}
    assert listed[other.run_dir.name].stage == "reward"
    assert listed[other.run_dir.name].status == "finished"


def test_a_reward_model_built_on_an_sft_run_holds_its_merged_weights(lora_run):
    import torch

    sft, tokenizer = lora_run.model, lora_run.tokenizer
    reward_model = reward_model_from(sft, tokenizer)
    ids = torch.tensor([tokenizer("My parcel never arrived.")["input_ids"]])
    sft.eval()
    with torch.no_grad():
        expected = sft(input_ids=ids, output_hidden_states=True).hidden_states[-1]
        hidden = reward_model.base_model(input_ids=ids).last_hidden_state
    assert torch.allclose(hidden, expected, atol=1e-5)  # the adapter's effect is merged in
    assert "default" in sft.peft_config  # the SFT run's own model keeps its adapter
    assert reward_model.config.num_labels == 1


def test_reward_rows_settings_and_methods_are_checked(tiny_tokenizer, ticket_split):
    tokenizer = tiny_tokenizer
    model = build_tiny_model(tokenizer)
    with pytest.raises(WorkbenchError, match="preference rows"):
        train_reward_model(model, tokenizer, ticket_split[0])
    pairs = workbench.load_data(SAMPLE_DATA / "preferences.jsonl", verbose=False).select(range(8))
    with pytest.raises(WorkbenchError, match=r"longer than `max_length`=16 .*preferences.jsonl:1"):
        train_reward_model(model, tokenizer, pairs, settings=settings(max_length=16))
    with pytest.raises(WorkbenchError, match="qlora"):
        train_reward_model(model, tokenizer, pairs, method=Method(kind="qlora"))
    with pytest.raises(WorkbenchError, match="`packing`=True does not apply to a reward model"):
        RewardSettings(packing=True)
    with pytest.raises(WorkbenchError, match="center_rewards"):
        RewardSettings(center_rewards=-1.0)
    with pytest.raises(WorkbenchError, match="one response per prompt"):
        score_responses(model, tokenizer, ["a", "b"], ["c"])


def test_pairs_with_the_same_chosen_and_rejected_text_are_refused_or_dropped(
    tiny_tokenizer, tmp_path
):
    rows = toy_pairs(8, seed=2).rows
    same = [{**r, "rejected": r["chosen"]} for r in rows]
    with pytest.raises(WorkbenchError, match=r"in every pair the `chosen` and `rejected`.*list:1"):
        train_reward_model(
            build_tiny_model(tiny_tokenizer),
            tiny_tokenizer,
            workbench.load_data(same, verbose=False),
        )
    mixed = workbench.load_data(same[:3] + rows[3:], verbose=False)
    with pytest.warns(
        UserWarning, match=r"3 of 8 pairs have the same .*list:1, list:2, list:3.*dropped"
    ):
        run = train_reward_model(
            build_tiny_model(tiny_tokenizer),
            tiny_tokenizer,
            mixed,
            settings=settings(max_steps=1),
            run_dir=tmp_path / "reward",
            start=False,
        )
    stored = run.directory.load_rows("train")
    assert [r["chosen"] for r in stored.rows] == [r["chosen"] for r in rows[3:]]  # trained on
