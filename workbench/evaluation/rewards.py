"""Rewards for reinforcement learning, and the measurement that says whether it helped.

A reward is a plain Python function of (prompt, completion) returning a number, higher for a
better answer. Verifiable rewards check the answer itself: `one_of_labels(labels)` (the answer
is exactly one of the labels), `valid_iso_date` (the answer is a real date written YYYY-MM-DD).
A trained reward model scores answers too (`RewardModelScore`, training/reward.py); `as_reward`
turns what `reinforce` is given into a `Reward` (the scorer, TRL's form of it, and how
config.yaml records it). `held_out_reward` answers prompts the run never trained on, greedily,
and averages the reward: the before/after figure of a reinforcement-learning run;
`rl_experiment` measures it on held-out prompts around a `reinforce` run (the RLPanel's run).
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from workbench.errors import WorkbenchError
from workbench.model.generation import Decoding, generate

RewardFunction = Callable[[str, str], float]  # (prompt, completion) -> reward
IN_MEMORY = "(in memory)"  # a reward model passed as an object: config.yaml cannot hold it
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
# what a label answer may carry around it and still count: quotes and a final full stop
_LABEL_DECORATION = " \t\n\"'`.!"


def one_of_labels(labels: Iterable[str]) -> RewardFunction:
    """A reward of 1.0 when the answer is exactly one of `labels` (case, surrounding quotes
    and a final full stop ignored), else 0.0: "Billing." counts, "The topic is billing" not."""
    allowed = {str(label).strip().lower() for label in labels}
    if not allowed or "" in allowed:
        raise WorkbenchError(
            f"`labels`={sorted(allowed)!r}: give the answers that count, e.g. "
            "['billing', 'shipping', 'technical', 'account'] (none of them empty)."
        )

    def one_of_labels(prompt: str, completion: str) -> float:
        return float(completion.strip(_LABEL_DECORATION).lower() in allowed)

    one_of_labels.labels = sorted(allowed)  # config.yaml records them: a resume rebuilds it
    one_of_labels.__qualname__ = "one_of_labels"  # recorded as this factory's name
    return one_of_labels


def valid_iso_date(prompt: str, completion: str) -> float:
    """1.0 when the whole answer is a real calendar date written YYYY-MM-DD (surrounding
    whitespace ignored), else 0.0: "2024-08-24" counts; "2024-02-30", "24 Aug 2024" and
    "2024-08-24, a Saturday" do not."""
    text = completion.strip()
    if not _ISO_DATE.fullmatch(text):
        return 0.0
    try:
        datetime.date.fromisoformat(text)
    except ValueError:  # e.g. the 30th of February
        return 0.0
    return 1.0


def score_all(reward: RewardFunction, prompts: list[str], completions: list[str]) -> list[float]:
    """The reward of each (prompt, completion); a scorer with a `batch` method (a reward
    model's `RewardModelScore`) scores them in one call."""
    if len(prompts) != len(completions):
        raise WorkbenchError(
            f"{len(prompts)} prompts but {len(completions)} completions: one completion each."
        )
    if callable(getattr(reward, "batch", None)):
        return reward.batch(prompts, completions)
    return [float(reward(p, c)) for p, c in zip(prompts, completions)]


@dataclass
class HeldOutReward:
    """The mean reward of greedy answers to held-out prompts, each answer and its reward."""

    mean: float
    rewards: list[float]
    answers: list[str]

    def __str__(self) -> str:
        return f"mean reward {self.mean:.3f} over {len(self.rewards)} held-out prompts"


def held_out_reward(
    model,
    tokenizer,
    prompts: list[str],
    reward_fn: RewardFunction,
    decoding: Decoding | None = None,
) -> HeldOutReward:
    """Answer `prompts` with `model` (greedy unless `decoding` says otherwise) and score each
    answer with `reward_fn`: the same measure before and after reinforcement learning."""
    if not prompts:
        raise WorkbenchError("`prompts` is empty: give the held-out prompts to answer.")
    answers = generate(model, tokenizer, prompts, decoding or Decoding(max_new_tokens=16))
    rewards = score_all(reward_fn, prompts, answers)
    return HeldOutReward(sum(rewards) / len(rewards), rewards, answers)


@dataclass
class Reward:
    """What scores the answers: a function of (prompt, completion), or a reward model (as
    `RewardModelScore`), with how config.yaml records it."""

    score: RewardFunction
    name: str
    record: dict[str, Any]

    def for_trl(self) -> Callable[..., list[float]]:
        """TRL's form: one call per batch, keyword arguments, one number per completion."""

        def reward(prompts, completions, **_columns) -> list[float]:
            return score_all(self.score, list(prompts), list(completions))

        reward.__name__ = self.name  # TRL logs `rewards/<name>/mean`
        return reward


# The project's reward functions a config.yaml record rebuilds: (name, needs labels).
RESTORABLE = {
    f"{__name__}.valid_iso_date": False,
    f"{__name__}.one_of_labels": True,
}


def restorable(record: dict[str, Any]) -> bool:
    """Whether a run's `reward` record alone gives its reward back (`reward_from_record`)."""
    model = record.get("reward_model")
    if model:
        return model != IN_MEMORY
    function = record.get("function")
    return function in RESTORABLE and (not RESTORABLE[function] or bool(record.get("labels")))


def reward_from_record(record: dict[str, Any]):
    """The reward a run's `reward` record names, rebuilt: a reward model's directory,
    `valid_iso_date`, or `one_of_labels` with the recorded labels; None when the record cannot
    rebuild it (a function of your own, a reward model that was only in memory)."""
    if not restorable(record):
        return None
    if record.get("reward_model"):
        return record["reward_model"]
    if record["function"].endswith(".one_of_labels"):
        return one_of_labels(record["labels"])
    return valid_iso_date


def labels_in(rows) -> list[str]:
    """The distinct reference answers of instruction rows (`output`, or `completion`), sorted:
    the labels `one_of_labels` takes when none are given (the support tickets: their topics)."""
    labels = {str(r.get("output") or r.get("completion") or "").strip() for r in rows.rows}
    labels.discard("")
    if not labels:
        raise WorkbenchError(
            f"{rows.source}: no `output` (or `completion`) answers to take the labels from: "
            "type the labels, e.g. billing, shipping, technical, account."
        )
    return sorted(labels)
