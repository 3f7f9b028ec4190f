"""RLPanel: GRPO and PPO on a tiny model by setting controls and clicking, with a verifiable
reward and with a reward model trained first."""

from __future__ import annotations

import pytest
import yaml

from workbench.evaluation.rewards import held_out_reward, one_of_labels
from workbench.model.generation import Decoding
from workbench.runs.report import HELD_OUT_REWARD, KL, MEAN_REWARD, RESPONSE_LENGTH
from workbench.training.reinforcement import RLSettings
from workbench.widgets.compare_view import CompareView
from workbench.widgets.rl_panel import RLPanel

TOPICS = ["account", "billing", "shipping", "technical"]


def quick_panel(panel: RLPanel, steps: int = 4) -> RLPanel:
    """What a user types for a few fast steps: 2 prompts x 4 answers a step."""
    panel.max_steps.value, panel.batch_size.value, panel.num_generations.value = steps, 8, 4
    panel.learning_rate.value, panel.held_out.value = 1e-3, 8
    panel.compare_rows, panel.decoding = 4, Decoding(max_new_tokens=6)
    return panel


def config_of(run) -> dict:
    return yaml.safe_load((run.run_dir / "config.yaml").read_text())


def test_grpo_with_the_labels_reward_measures_before_after_and_compares_sft_with_rl(tiny):
    model, tokenizer = tiny
    panel = quick_panel(RLPanel(model, tokenizer))
    assert panel.reward_source.value == "labels"
    assert panel.prompts_path.value == "sample_data/support_tickets.jsonl"  # shipped
    panel.train_button.click()
    panel.wait()
    run = panel.run
    assert panel.errors == [] and run.status == "finished", (run and run.error, panel.errors)
    assert not panel.train_button.disabled

    config = config_of(run)  # what the library was given
    assert config["stage"] == "grpo" and config["hyperparameters"]["max_steps"] == 4
    assert config["hyperparameters"]["num_generations"] == 4
    assert config["reward"] == {  # the labels taken from the prompt rows, recorded
        "function": "workbench.evaluation.rewards.one_of_labels",
        "labels": TOPICS,
    }
    assert config["data"]["rows"] == {"train": 312, "validation": 8}
    steps = [e for e in run.events if e["event"] == "step"]
    assert [e["step"] for e in steps] == [1, 2, 3, 4]
    assert list(panel.monitor.trace(MEAN_REWARD).x) == [1, 2, 3, 4]
    assert list(panel.monitor.trace(KL).x) == [1, 2, 3, 4]
    assert list(panel.monitor.trace(RESPONSE_LENGTH).x) == [1, 2, 3, 4]
    assert list(panel.monitor.trace(HELD_OUT_REWARD).x) == [0, 1, 2, 3, 4]

    experiment = panel.experiment  # the library's experiment, run by the panel
    before, after = panel.rewards
    assert len(experiment.prompts) == 8 and experiment.run is run
    # the labels were taken from the prompt rows: the same scores as the four topics typed
    topics = one_of_labels(TOPICS)
    measured = held_out_reward(
        run.model, tokenizer, experiment.prompts, topics, experiment.decoding
    )
    assert measured.answers == experiment.reward_after.answers
    assert after == pytest.approx(measured.mean)
    assert f"{before:.3g} → {after:.3g}" in panel.reward_html.value

    view = panel.compare_panel
    assert isinstance(view, CompareView) and panel.compare_box.children == (view,)
    assert view.titles == ("SFT", "SFT+RL") and "SFT+RL" in view.table_html.value
    assert view.before is experiment.answers_before and view.after is experiment.answers_after
    assert len(view.after.answers) == 4
    for row, answer in zip(view.after.per_row, view.after.answers):
        assert row["reward"] == topics("", answer)  # each answer's reward, per row
    assert "RL run" in panel._repr_mimebundle_()["text/plain"]


def test_switching_to_ppo_keeps_the_sampled_answers_unless_the_user_changed_the_steps():
    panel = RLPanel()
    assert (panel.max_steps.value, panel.num_generations.value) == (16, 4)
    panel.algorithm.value = "ppo"  # 2 PPO epochs x 2 minibatches: 4 steps per batch of answers
    assert (panel.max_steps.value, panel.num_generations.value) == (64, 1)
    panel.algorithm.value = "grpo"
    assert (panel.max_steps.value, panel.num_generations.value) == (16, 4)
    panel.max_steps.value = 10  # the user's own number stays
    panel.algorithm.value = "ppo"
    assert panel.max_steps.value == 10


def test_ppo_is_chosen_in_the_panel_and_runs_with_its_own_settings(tiny):
    model, tokenizer = tiny
    panel = quick_panel(RLPanel(model, tokenizer))
    assert panel.ppo_box.layout.display == "none"  # GRPO first: PPO's controls hidden
    panel.num_generations.value = RLSettings.num_generations  # the usual value follows
    panel.algorithm.value = "ppo"
    assert panel.ppo_box.layout.display is None and panel.num_generations.value == 1
    panel.ppo_epochs.value, panel.minibatches.value = 2, 2
    panel.train_button.click()
    panel.wait()
    run = panel.run
    assert panel.errors == [] and run.status == "finished", (run and run.error, panel.errors)
    hyperparameters = config_of(run)["hyperparameters"]
    assert config_of(run)["stage"] == "ppo"
    assert (hyperparameters["ppo_epochs"], hyperparameters["minibatches"]) == (2, 2)
    assert hyperparameters["num_generations"] == 1
    # 4 steps are 4 minibatch updates of one batch of answers: one rollout, sampled at step 1
    assert list(panel.monitor.trace(MEAN_REWARD).x) == [1]
    assert list(panel.monitor.trace(HELD_OUT_REWARD).x) == [0, 1, 2, 3, 4]
    assert None not in panel.rewards and isinstance(panel.compare_panel, CompareView)
    panel.algorithm.value = "grpo"
    assert panel.num_generations.value == RLSettings.num_generations


def test_a_second_run_with_a_reward_model_trains_it_first_and_uses_it_as_the_reward(tiny):
    model, tokenizer = tiny
    panel = quick_panel(RLPanel(model, tokenizer), steps=1)
    panel.train_button.click()  # a first RL run, with the labels reward
    panel.wait()
    first = panel.run
    assert first.status == "finished" and panel.model is first.model  # the next run continues it
    assert panel.parent == first.run_dir
    panel.max_steps.value = 2
    panel.reward_source.value = "reward_model"
    assert panel.prompts_path.value == "sample_data/preferences.jsonl"  # followed
    assert panel.reward_model_box.layout.display is None and panel.labels.layout.display == "none"
    panel.reward_steps.value = 2
    panel.train_button.click()
    panel.wait()
    reward_run, run = panel.reward_run, panel.run
    assert panel.errors == [], panel.errors
    assert reward_run.status == "finished" and run.status == "finished", run.error
    assert config_of(reward_run)["stage"] == "reward"
    assert config_of(reward_run)["data"]["rows"] == {"train": 152, "validation": 8}
    assert config_of(run)["reward"] == {"reward_model": str(reward_run.run_dir)}
    assert config_of(reward_run)["parent"] == config_of(run)["parent"] == str(first.run_dir)
    before, after = panel.pair_accuracy
    accuracies = [e["eval_accuracy"] for e in reward_run.events if e["event"] == "evaluation"]
    assert [before, after] == [accuracies[0], accuracies[-1]] and len(accuracies) == 2
    assert f"{before:.2f} → {after:.2f} over 8 pairs" in panel.reward_model_html.value
    assert "reward_model" in panel.reward_html.value  # the held-out reward names its scorer
    assert panel.compare_panel is not None


def test_without_a_model_or_with_a_broken_batch_the_error_is_shown(tiny):
    panel = RLPanel()
    panel.train_button.click()
    panel.wait()
    assert "No instruction-tuned model" in panel.error_html.message and panel.run is None
    panel.set_model(*tiny, "alpaca")
    assert "Ready" in panel.status.value
    panel.batch_size.value, panel.num_generations.value = 6, 4
    panel.train_button.click()
    panel.wait()
    assert "`batch_size`=6 must be a multiple of `num_generations`=4" in panel.error_html.message
    assert panel.run is None and not panel.train_button.disabled
    assert "No instruction-tuned model" in panel.errors[0]  # the first error is kept
