"""GRPO on a tiny model: a reward function's mean reward rises, the run carries reward, KL and
answer length per step, lists, reports and resumes with its reference intact; the verifiable
rewards score what they promise; bad input is refused with the reason. PPO: tests/test_ppo.py."""

from __future__ import annotations

import pytest
import yaml
from conftest import build_tiny_model
from resuming import finish

import workbench
from workbench.errors import WorkbenchError
from workbench.evaluation.rewards import (
    held_out_reward,
    labels_in,
    one_of_labels,
    valid_iso_date,
)
from workbench.experiments.reinforcement import rl_experiment
from workbench.model.methods import Method
from workbench.runs.directory import RunDirectory
from workbench.runs.history import read_run
from workbench.runs.report import HELD_OUT_REWARD, KL, MEAN_REWARD, RESPONSE_LENGTH
from workbench.training.reinforcement import RLSettings, reinforce, resume_reinforcement
from workbench.widgets import TrainingMonitor

pytestmark = pytest.mark.training  # each test builds and trains its own tiny model

LORA = Method(r=8, alpha=16)


def peaked_tiny_model(tokenizer):
    """The tiny random model with its (tied) embeddings scaled up ten times. With the usual
    0.02 initialisation every next token is almost equally likely and the final norm keeps a
    LoRA adapter from changing that; scaled, the output distribution has a shape RL can move."""
    model = build_tiny_model(tokenizer)
    model.get_input_embeddings().weight.data.mul_(10)
    return model


def share_of_e(prompt: str, completion: str) -> float:
    """A dense toy reward: the share of the answer's characters that are the letter e."""
    return completion.count("e") / max(len(completion), 1)


def question_prompts(count: int = 80):
    rows = [{"prompt": f"Question {i}: what is", "completion": "x"} for i in range(count)]
    return workbench.split_data(workbench.load_data(rows, verbose=False), 16, seed=0)


def rl_settings(**changes) -> RLSettings:
    values = dict(
        max_steps=20,
        batch_size=16,
        num_generations=8,
        learning_rate=1e-2,
        beta=0.01,
        eval_every=20,
        max_completion_length=8,
        sample_max_new_tokens=8,
    )
    return RLSettings(**{**values, **changes})


def toy_rl_run(tokenizer, prompts, settings, *, reward=share_of_e, method=LORA, **options):
    """An RL run of a LoRA adapter on the peaked tiny model with the plain template, rewarded by
    the share of e's unless `reward` says otherwise; `options`: reinforce's others."""
    return reinforce(
        peaked_tiny_model(tokenizer),
        tokenizer,
        prompts,
        reward=reward,
        settings=settings,
        method=method,
        template="plain",
        **options,
    )


@pytest.mark.parametrize("seed", [0, 1])
def test_grpo_with_a_reward_function_raises_the_mean_reward(tiny_tokenizer, seed):
    prompts, held_out = question_prompts()
    run = toy_rl_run(tiny_tokenizer, prompts, rl_settings(seed=seed), held_out=held_out).wait()
    assert run.status == "finished", run.error

    evaluations = [e for e in run.events if e["event"] == "evaluation"]
    assert [e["step"] for e in evaluations] == [0, 20]
    before, after = evaluations[0]["eval_reward"], evaluations[-1]["eval_reward"]
    assert after > before + 0.15  # held-out prompts, never trained on
    steps = [e for e in run.events if e["event"] == "step"]
    assert len(steps) == 20
    rewards = [e["mean_reward"] for e in steps]
    assert sum(rewards[-5:]) / 5 > sum(rewards[:5]) / 5 + 0.1
    assert steps[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # the policy starts as the reference
    assert steps[-1]["kl"] > 0.01
    assert all(1 <= e["response_length"] <= 8 for e in steps)

    config = yaml.safe_load((run.run_dir / "config.yaml").read_text())
    assert config["stage"] == "grpo"
    assert config["reward"] == {"function": f"{__name__}.share_of_e"}
    assert config["hyperparameters"]["num_generations"] == 8
    record = read_run(run.run_dir)
    assert record.stage == "grpo" and record.status == "finished"
    assert (run.run_dir / "adapter" / "adapter_model.safetensors").is_file()
    assert not (run.run_dir / "adapter" / "ref").exists()  # only the trained adapter is kept
    report = (run.run_dir / "report.html").read_text()
    assert MEAN_REWARD in report and KL in report
    monitor = TrainingMonitor.from_run_dir(run.run_dir)  # the live panel draws the same traces
    for name in (MEAN_REWARD, KL, RESPONSE_LENGTH):
        assert len(monitor.trace(name).y) == 20, name
    assert list(monitor.trace(HELD_OUT_REWARD).y) == pytest.approx([before, after])


def test_a_stopped_grpo_run_resumes_with_the_starting_model_as_reference(tiny_tokenizer):
    prompts, _ = question_prompts()
    plan = rl_settings(max_steps=6, eval_every=3)
    run = toy_rl_run(tiny_tokenizer, prompts, plan, start=False)
    assert finish(run, stopped_at=2).status == "stopped"
    checkpoint = next(e for e in run.events if e["event"] == "stopped")["checkpoint"]
    assert checkpoint.endswith("checkpoint-3")
    assert read_run(run.run_dir).status == "stopped"

    run.resume().wait()
    assert run.status == "finished", run.error
    assert [e["step"] for e in run.events if e["event"] == "step"] == [1, 2, 3, 4, 5, 6]
    weights = dict(run.model.named_parameters())
    ref_b = [p for n, p in weights.items() if "lora_B.ref" in n]
    trained_b = [p for n, p in weights.items() if "lora_B.default" in n]
    assert ref_b and all(float(p.abs().max()) == 0.0 for p in ref_b)  # the fresh adapter
    assert any(float(p.abs().max()) > 0.0 for p in trained_b)


def test_a_stopped_grpo_run_resumes_from_its_directory_given_its_reward(tiny_tokenizer):
    prompts, held_out = question_prompts()
    plan = rl_settings(max_steps=6, eval_every=3)
    run = toy_rl_run(tiny_tokenizer, prompts, plan, held_out=held_out.select(range(8)), start=False)
    assert finish(run, stopped_at=2).status == "stopped"
    assert (run.run_dir / "checkpoints" / "checkpoint-3" / "ref").is_dir()  # the reference
    with pytest.raises(WorkbenchError, match=r"share_of_e, cannot be stored in config.yaml"):
        resume_reinforcement(run.run_dir)

    fresh = peaked_tiny_model(tiny_tokenizer)  # a new process would load it from config.yaml
    resumed = resume_reinforcement(
        run.run_dir, reward=share_of_e, model=fresh, tokenizer=tiny_tokenizer
    ).wait()
    assert resumed.status == "finished", resumed.error
    assert [e["step"] for e in resumed.events if e["event"] == "step"] == [4, 5, 6]
    weights = dict(resumed.model.named_parameters())
    assert all(float(p.abs().max()) == 0.0 for n, p in weights.items() if "lora_B.ref" in n)
    assert read_run(run.run_dir).status == "finished"
    events, _ = RunDirectory(run.run_dir).read_events()
    evaluations = [e["step"] for e in events if e["event"] == "evaluation"]
    assert evaluations == [0, 3, 6]  # the start was measured once, before the stop


@pytest.mark.parametrize("algorithm", ["grpo", "ppo"])
def test_rl_takes_a_trained_reward_model_as_its_reward(tiny_tokenizer, tiny, algorithm):
    from workbench.training.reward import RewardSettings, train_reward_model

    pairs = workbench.load_data(
        [
            {"prompt": f"Ticket {i}:", "chosen": " thanks", "rejected": " no", "task": "toy"}
            for i in range(16)
        ],
        verbose=False,
    )
    scorer = train_reward_model(
        *tiny,  # loaded from a folder, so the reward run's directory can load it again
        pairs,
        settings=RewardSettings(max_steps=2, batch_size=8, max_length=32),
        method=LORA,
        template="plain",
    ).wait()
    assert scorer.status == "finished", scorer.error
    prompts, _ = question_prompts(24)
    plan = rl_settings(
        max_steps=2,
        num_generations=8 if algorithm == "grpo" else 1,
        batch_size=16 if algorithm == "grpo" else 8,
    )
    run = toy_rl_run(
        tiny_tokenizer,
        prompts,
        plan,
        reward=scorer.run_dir,  # a finished reward run's directory, loaded from disk
        algorithm=algorithm,
    ).wait()
    assert run.status == "finished", run.error
    config = yaml.safe_load((run.run_dir / "config.yaml").read_text())
    assert config["reward"] == {"reward_model": str(scorer.run_dir)}
    steps = [e for e in run.events if e["event"] == "step"]
    assert len(steps) == 2 and steps[0]["mean_reward"] is not None  # scored by the model
    with pytest.raises(WorkbenchError, match=f"'{algorithm}' run; pass a reward model's run"):
        reinforce(run.model, tiny_tokenizer, prompts, reward=run, template="plain")


def test_verifiable_rewards_score_what_they_promise():
    topic = one_of_labels(["billing", "shipping", "technical", "account"])
    assert [topic("", a) for a in ("billing", " Shipping.", '"account"', "billing issue")] == [
        1.0,
        1.0,
        1.0,
        0.0,
    ]
    assert topic.__name__ == "one_of_labels"  # TRL logs rewards under the function's name
    dates = ("2024-08-24", " 2020-02-29\n", "2021-02-29", "24 Aug 2024", "2024-08-24.", "2024-8-24")
    assert [valid_iso_date("", d) for d in dates] == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    with pytest.raises(WorkbenchError, match="`labels`"):
        one_of_labels([])


def test_held_out_reward_scores_the_greedy_answers(tiny_tokenizer):
    model = peaked_tiny_model(tiny_tokenizer)
    prompts = [f"Question {i}: what is" for i in range(6)]
    decoding = workbench.Decoding(max_new_tokens=6)
    measured = held_out_reward(model, tiny_tokenizer, prompts, share_of_e, decoding)
    assert measured.answers == workbench.generate(model, tiny_tokenizer, prompts, decoding)
    assert measured.rewards == [share_of_e(p, a) for p, a in zip(prompts, measured.answers)]
    assert measured.mean == pytest.approx(sum(measured.rewards) / 6)


def test_ppo_and_bad_input_are_refused_with_the_reason(tiny_tokenizer, ticket_split):
    model = build_tiny_model(tiny_tokenizer)
    prompts, _ = question_prompts(24)
    with pytest.raises(WorkbenchError, match="GRPO compares answers .* needs at least 2"):
        reinforce(
            model,
            tiny_tokenizer,
            prompts,
            reward=share_of_e,
            settings=RLSettings(num_generations=1, batch_size=8),
        )
    with pytest.raises(WorkbenchError, match="PPO takes one step per minibatch"):
        reinforce(
            model,
            tiny_tokenizer,
            prompts,
            reward=share_of_e,
            algorithm="ppo",
            settings=RLSettings(gradient_accumulation=2),
        )
    with pytest.raises(
        WorkbenchError, match=r"4 prompts x `num_generations`=4 .*\(`batch_size`=32\)"
    ):
        reinforce(
            model,
            tiny_tokenizer,
            prompts.select(range(4)),
            reward=share_of_e,
            algorithm="ppo",
            settings=RLSettings(batch_size=32),
        )
    with pytest.raises(WorkbenchError, match="`algorithm`='a2c'"):
        reinforce(model, tiny_tokenizer, prompts, reward=share_of_e, algorithm="a2c")
    with pytest.raises(WorkbenchError, match="`reward` is a int"):
        reinforce(model, tiny_tokenizer, prompts, reward=42)
    with pytest.raises(WorkbenchError, match="trains a LoRA adapter"):
        reinforce(model, tiny_tokenizer, prompts, reward=share_of_e, method=Method(kind="full"))
    no_prompt = workbench.load_data([{"text": f"text {i}"} for i in range(8)], verbose=False)
    with pytest.raises(WorkbenchError, match=r"list:1: no prompt"):
        reinforce(model, tiny_tokenizer, no_prompt, reward=share_of_e)
    with pytest.raises(WorkbenchError, match=r"longer than `max_length`=8 .*support_tickets"):
        reinforce(
            model,
            tiny_tokenizer,
            ticket_split[0],
            reward=share_of_e,
            settings=RLSettings(max_length=8),
        )
    with pytest.raises(WorkbenchError, match="multiple of `num_generations`=4"):
        RLSettings(batch_size=6)
    with pytest.raises(WorkbenchError, match="multiple of `minibatches`=3"):
        RLSettings(batch_size=8, minibatches=3)
    with pytest.raises(WorkbenchError, match="`gae_lambda` must be in"):
        RLSettings(gae_lambda=1.5)


def test_rl_experiment_measures_held_out_prompts_before_and_after_the_run(tiny_tokenizer):
    rows, _ = question_prompts(40)  # 24 rows: 16 to train on, 8 held out below
    decoding = workbench.Decoding(max_new_tokens=6)
    experiment = rl_experiment(
        rows,
        held_out=8,
        model=peaked_tiny_model(tiny_tokenizer),
        tokenizer=tiny_tokenizer,
        reward=share_of_e,
        template="plain",
        settings=rl_settings(max_steps=4, eval_every=4),
        answer_rows=3,
        decoding=decoding,
        start=False,
    )
    run = experiment.run
    assert run.status == "created" and len(experiment.held_out) == 8
    assert len(experiment.train_prompts) == 16 and len(experiment.prompts) == 8
    untouched = peaked_tiny_model(tiny_tokenizer)  # the same starting weights, no adapter
    before = held_out_reward(untouched, tiny_tokenizer, experiment.prompts, share_of_e, decoding)
    assert experiment.reward_before.answers == before.answers
    assert experiment.reward_before.mean == pytest.approx(before.mean)
    answers = experiment.answers_before  # full rows, each answer's reward among its scores
    assert len(answers.answers) == 3 and answers.prompts == experiment.prompts[:3]
    rewards = [share_of_e(p, a) for p, a in zip(answers.prompts, answers.answers)]
    assert [row["reward"] for row in answers.per_row] == rewards
    assert answers.scores["reward"] == pytest.approx(sum(rewards) / 3)
    assert "not measured after" in experiment.summary()

    assert run.start().wait().status == "finished", run.error
    after = experiment.measure_after()
    again = held_out_reward(run.model, tiny_tokenizer, experiment.prompts, share_of_e, decoding)
    assert after.answers == again.answers and after.mean == pytest.approx(again.mean)
    assert [row["reward"] for row in experiment.answers_after.per_row] == [
        share_of_e(p, a) for p, a in zip(answers.prompts, experiment.answers_after.answers)
    ]
    assert f"{before.mean:.3g} → {after.mean:.3g}" in experiment.summary()


def test_labels_in_takes_the_rows_answers_and_says_when_there_are_none(ticket_split):
    assert labels_in(ticket_split[0]) == ["account", "billing", "shipping", "technical"]
    no_answers = workbench.load_data([{"text": "just text"}], verbose=False)
    with pytest.raises(WorkbenchError, match="type the labels"):
        labels_in(no_answers)


def test_a_run_with_a_project_reward_resumes_from_its_directory_alone(tiny_tokenizer):
    prompts, _ = question_prompts()
    reward = one_of_labels(["billing", "Shipping"])
    plan = rl_settings(max_steps=4, eval_every=2)
    run = toy_rl_run(tiny_tokenizer, prompts, plan, reward=reward, start=False)
    assert finish(run, stopped_at=1).status == "stopped"
    config = yaml.safe_load((run.run_dir / "config.yaml").read_text())
    assert config["reward"] == {
        "function": "workbench.evaluation.rewards.one_of_labels",
        "labels": ["billing", "shipping"],
    }
    assert read_run(run.run_dir).resumable  # no Python function to pass again
    resumed = workbench.resume(
        run.run_dir, model=peaked_tiny_model(tiny_tokenizer), tokenizer=tiny_tokenizer
    ).wait()
    assert resumed.status == "finished", resumed.error
    assert [e["step"] for e in resumed.events if e["event"] == "step"] == [3, 4]
