"""The reinforcement-learning experiment the RLPanel and `python -m workbench rl` both run:
the greedy answers' mean reward on held-out prompts before GRPO or PPO, the run on the rest,
the reward after."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from workbench.data.splits import split_data
from workbench.evaluation.compare import evaluate_model
from workbench.evaluation.preferences import as_answer_rows
from workbench.evaluation.rewards import HeldOutReward, Reward, held_out_reward, score_all
from workbench.model.generation import Decoding
from workbench.training.reinforcement import RLSettings, prompt_texts, rl_function
from workbench.training.reward_source import as_reward


@dataclass
class RLExperiment:
    """Reinforcement learning measured on prompts it never trains on.

    `run` trains on `train_prompts`; the `held_out` prompts (as the model sees them:
    `prompts`) are answered greedily before training (`reward_before`) and after it
    (`reward_after`, set by `measure_after()` once the run has ended), scored by `reward`.
    `answer_rows`: held-out rows answered in full before (`answers_before`) and after
    (`answers_after`), each row's reward among their per-row scores, for CompareView.
    """

    run: Any  # workbench.runs.run.Run
    train_prompts: Any  # Examples
    held_out: Any
    reward: Reward
    prompts: list[str]
    decoding: Decoding
    reward_before: HeldOutReward
    answer_rows: Any
    answers_before: Any = None  # workbench.evaluation.compare.Evaluation
    reward_after: HeldOutReward | None = None
    answers_after: Any = None

    def measure_after(self) -> HeldOutReward:
        """The held-out mean reward (and the answer rows) under the trained model; call it
        once the run has ended."""
        run = self.run
        self.reward_after = held_out_reward(
            run.model, run.tokenizer, self.prompts, self.reward.score, self.decoding
        )
        if self.answers_before is not None:
            self.answers_after = _answers(run, self.answer_rows, self.reward, self.decoding)
        return self.reward_after

    def summary(self) -> str:
        """One line: the held-out mean reward before and after."""
        head = f"Held-out mean reward ({self.reward.name}, greedy answers to {len(self.prompts)} "
        if self.reward_after is None:
            return head + f"prompts): {self.reward_before.mean:.3g} before RL (not measured after)"
        return head + f"prompts): {self.reward_before.mean:.3g} → {self.reward_after.mean:.3g}"


def _answers(run, rows, reward: Reward, decoding: Decoding):
    """`evaluate_model` on `rows`, with each answer's reward added to its per-row scores."""
    evaluation = evaluate_model(run.model, run.tokenizer, rows, run.template, decoding=decoding)
    rewards = score_all(reward.score, evaluation.prompts, evaluation.answers)
    per_row = [{**scores, "reward": r} for scores, r in zip(evaluation.per_row, rewards)]
    mean = sum(rewards) / len(rewards) if rewards else 0.0
    return replace(evaluation, per_row=per_row, scores={**evaluation.scores, "reward": mean})


def rl_experiment(
    prompts,
    *,
    held_out: float | int,
    model,
    tokenizer,
    reward,
    template="alpaca",
    settings=None,
    algorithm: str = "grpo",
    parent: str | Path | None = None,
    answer_rows: int = 0,
    decoding: Decoding | None = None,
    start: bool = True,
) -> RLExperiment:
    """Keep `held_out` prompt rows (a count, or a share below 1) out of training, measure the
    greedy answers' mean reward on them, and start `train_grpo` or `train_ppo` (`algorithm`:
    'grpo' or 'ppo') on the rest.

    `model` is the instruction-tuned starting model (e.g. a finished run's `run.model`);
    `reward` is what `train_grpo` takes (a function, a reward model's Run or directory; a
    directory is loaded twice, once here and once by the run: pass its Run to load it once).
    `answer_rows` > 0 first answers that many held-out rows in full (preference rows with their
    chosen answer as the reference). `decoding` defaults to greedy answers as long as the
    sampled ones (`settings.max_completion_length`). `start=False` leaves the run for
    `experiment.run.start()`; afterwards `experiment.measure_after()` gives the reward reached.
    """
    settings = settings or RLSettings()
    decoding = decoding or Decoding(max_new_tokens=settings.max_completion_length)
    train_prompts, kept = split_data(prompts, held_out, seed=settings.seed)
    train_rl = rl_function(algorithm)  # train_grpo or train_ppo
    run = train_rl(
        model,
        tokenizer,
        train_prompts,
        kept,
        reward=reward,
        settings=settings,
        template=template,
        parent=parent,
        start=False,
    )
    scorer = as_reward(reward)
    # the run's model still has its starting weights: training begins only with run.start()
    texts = prompt_texts(kept, run.template, tokenizer)
    before = held_out_reward(run.model, tokenizer, texts, scorer.score, decoding)
    rows = kept.select(range(min(answer_rows, len(kept))))
    rows = as_answer_rows(rows) if rows.format == "preference" else rows
    answers = _answers(run, rows, scorer, decoding) if len(rows) else None
    experiment = RLExperiment(
        run, train_prompts, kept, scorer, texts, decoding, before, rows, answers
    )
    if start:
        run.start()
    return experiment
