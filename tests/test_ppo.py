"""PPO on a tiny model: the held-out reward rises, the run carries reward, KL, answer length,
value loss and clip fraction, a run stopped in the middle of a rollout resumes with exactly the
updates of an uninterrupted one; the pieces (answer mask, GAE, sampler) compute what they say."""

from __future__ import annotations

import pytest
import torch
import yaml
from resuming import finish
from test_reinforcement import (
    peaked_tiny_model,
    question_prompts,
    rl_settings,
    share_of_e,
    toy_rl_run,
)

from workbench.model.methods import Method
from workbench.runs.directory import RunDirectory
from workbench.runs.history import read_run
from workbench.runs.report import KL, MEAN_REWARD
from workbench.training.ppo import (
    ROLLOUT_FILE,
    VALUE_HEAD_FILE,
    advantages_and_returns,
    answer_mask,
    dropout_off,
    rollout_sampler,
)
from workbench.training.reinforcement import resume_reinforcement
from workbench.widgets import TrainingMonitor

pytestmark = pytest.mark.training  # each test builds and trains its own tiny model


def ppo_settings(**changes):
    """rl_settings for PPO: one answer a prompt (16 answers a step, rl_settings' batch_size)
    and two passes over each batch, in one minibatch."""
    values = dict(num_generations=1, ppo_epochs=2, minibatches=1, value_learning_rate=1e-3)
    return rl_settings(**{**values, **changes})


def ppo_run(tokenizer, settings, held_out=None, start=True, **options):
    prompts, _ = question_prompts()
    return toy_rl_run(
        tokenizer, prompts, settings, algorithm="ppo", held_out=held_out, start=start, **options
    )


@pytest.mark.parametrize("seed", [0, 1])
def test_ppo_with_a_reward_function_raises_the_held_out_reward(tiny_tokenizer, seed):
    _, held_out = question_prompts()
    plan = ppo_settings(max_steps=60, eval_every=60, seed=seed)
    run = ppo_run(tiny_tokenizer, plan, held_out).wait()
    assert run.status == "finished", run.error

    evaluations = [e for e in run.events if e["event"] == "evaluation"]
    assert [e["step"] for e in evaluations] == [0, 60]
    before, after = evaluations[0]["eval_reward"], evaluations[-1]["eval_reward"]
    assert after > before + 0.15  # greedy answers to prompts never trained on
    steps = [e for e in run.events if e["event"] == "step"]
    assert len(steps) == 60
    rollouts = [e for e in steps if e.get("mean_reward") is not None]
    assert [e["step"] for e in rollouts] == list(range(1, 61, 2))  # 2 updates per rollout
    assert rollouts[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # the policy starts as `ref`
    assert rollouts[-1]["kl"] > 0.05
    assert all(1 <= e["response_length"] <= 8 for e in rollouts)
    rewards = [e["mean_reward"] for e in rollouts]
    assert sum(rewards[-8:]) / 8 > sum(rewards[:8]) / 8 + 0.1  # the sampled answers too
    assert all(e["value_loss"] >= 0 for e in steps)
    for e in steps:  # the logged loss is the surrogate plus value_coef x the value loss
        assert e["loss"] == pytest.approx(e["policy_loss"] + 0.1 * e["value_loss"], abs=1e-4)
    assert 0 < steps[0]["tokens_seen"] < steps[-1]["tokens_seen"]  # the monitor's tokens/s
    assert steps[0]["clip_fraction"] == 0.0  # the first update: the policy that sampled
    assert max(e["clip_fraction"] for e in steps) > 0  # later updates do get clipped

    config = yaml.safe_load((run.run_dir / "config.yaml").read_text())
    assert config["stage"] == "ppo"
    assert config["hyperparameters"]["ppo_epochs"] == 2
    record = read_run(run.run_dir)
    assert record.stage == "ppo" and record.status == "finished"
    assert (run.run_dir / "adapter" / "adapter_model.safetensors").is_file()
    assert not (run.run_dir / "adapter" / "ref").exists()
    assert MEAN_REWARD in (run.run_dir / "report.html").read_text()
    monitor = TrainingMonitor.from_run_dir(run.run_dir)
    assert len(monitor.trace(MEAN_REWARD).y) == 30 and len(monitor.trace(KL).y) == 30


def test_a_run_stopped_inside_a_rollout_resumes_with_the_same_updates(tiny_tokenizer):
    plan = ppo_settings(max_steps=12, eval_every=2, ppo_epochs=2, minibatches=2)  # 4 a rollout
    whole = ppo_run(tiny_tokenizer, plan).wait()
    assert whole.status == "finished", whole.error

    run = ppo_run(tiny_tokenizer, plan, start=False)
    assert finish(run, stopped_at=5).status == "stopped"
    checkpoint = run.run_dir / "checkpoints" / "checkpoint-6"  # 2 of the 2nd rollout's 4 done
    for part in (ROLLOUT_FILE, VALUE_HEAD_FILE, "ref/adapter_model.safetensors"):
        assert (checkpoint / part).is_file(), part
    resumed = resume_reinforcement(
        run.run_dir, reward=share_of_e, model=peaked_tiny_model(tiny_tokenizer),
        tokenizer=tiny_tokenizer,
    ).wait()  # fmt: skip
    assert resumed.status == "finished", resumed.error

    def losses(events):
        return {e["step"]: e["loss"] for e in events if e["event"] == "step"}

    events, _ = RunDirectory(run.run_dir).read_events()
    assert sorted(losses(events)) == list(range(1, 13))
    # steps 7-8 train on the stored rollout; the 3rd rollout samples from the restored RNG
    assert losses(events) == pytest.approx(losses(whole.events), abs=1e-6)


def test_dropout_is_off_while_ppo_trains_and_gradient_checkpointing_works(tiny_tokenizer):
    plan = ppo_settings(max_steps=4, gradient_checkpointing=True, eval_every=4)
    run = ppo_run(tiny_tokenizer, plan, start=False, method=Method(r=8, alpha=16, dropout=0.5))
    dropouts = [m for m in run.model.modules() if isinstance(m, torch.nn.Dropout)]
    rates_while_training = []
    run.add_callback("step", lambda e: rates_while_training.append({m.p for m in dropouts}))
    assert run.start().wait().status == "finished", run.error
    # the ratio compares two policies, not two dropout masks; checkpointing's recomputation
    # in the backward pass sees the same rate as the forward
    assert rates_while_training == [{0.0}] * 4
    assert dropouts and all(m.p == 0.5 for m in dropouts)  # the adapter's rate, given back


def test_dropout_off_makes_training_mode_forward_passes_repeat():
    layer = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Dropout(0.5)).train()
    x = torch.ones(4, 8)
    assert not torch.equal(layer(x), layer(x))
    with dropout_off(layer):
        assert layer.training and torch.equal(layer(x), layer(x))
    assert layer[1].p == 0.5


def test_answer_mask_keeps_tokens_up_to_the_first_end_of_sequence():
    answers = torch.tensor([[5, 6, 2, 2], [5, 2, 7, 2], [5, 6, 7, 8]])
    assert answer_mask(answers, eos_token_id=2).tolist() == [
        [1, 1, 1, 0],
        [1, 1, 0, 0],
        [1, 1, 1, 1],
    ]


def test_gae_with_lambda_one_gives_reward_to_go_minus_value():
    rewards = torch.tensor([[0.0, 0.0, 1.0, 0.0], [0.5, -0.25, 0.0, 0.0]])
    values = torch.tensor([[0.2, 0.4, 0.6, 0.0], [0.1, 0.1, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    advantages, returns = advantages_and_returns(rewards, values, mask, gae_lambda=1.0)
    expected = torch.tensor([[1.0, 1.0, 1.0, 0.0], [0.25, -0.25, 0.0, 0.0]])  # rewards to go
    assert torch.allclose(returns, expected)
    raw = (expected - values) * mask
    mean = raw.sum() / mask.sum()
    std = (((raw - mean) * mask) ** 2).sum().div(mask.sum()).sqrt()
    assert torch.allclose(advantages, (raw - mean) / std * mask, atol=1e-5)
    one_step, _ = advantages_and_returns(rewards, values, mask, gae_lambda=0.0)
    # lambda 0: each token's advantage is its own temporal difference r + V(next) - V
    td = torch.tensor([[0.2, 0.2, 0.4, 0.0], [0.5, -0.35, 0.0, 0.0]])
    td_mean = td.sum() / mask.sum()
    td_std = (((td - td_mean) * mask) ** 2).sum().div(mask.sum()).sqrt()
    assert torch.allclose(one_step, (td - td_mean) / td_std * mask, atol=1e-5)


def test_the_sampler_gives_whole_rollouts_each_repeated():
    sampler = rollout_sampler(prompts=10, per_rollout=4, repeats=3, seed=0)
    order = list(sampler)
    assert len(order) == len(sampler) == 2 * 4 * 3  # the 2 leftover prompts wait a reshuffle
    first, second = order[:4], order[12:16]
    assert order[:12] == first * 3 and order[12:] == second * 3
    assert len(set(first + second)) == 8
    sampler.set_epoch(1)
    assert list(sampler) != order  # a new shuffle each epoch, the same on a resume
    sampler.set_epoch(0)
    assert list(sampler) == order
