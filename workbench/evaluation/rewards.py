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
from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError
from workbench.evaluation.generation import Decoding, generate

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
    """The reward of each (prompt, completion); a reward model scores them in batches."""
    from workbench.training.reward import RewardModelScore

    if len(prompts) != len(completions):
        raise WorkbenchError(
            f"{len(prompts)} prompts but {len(completions)} completions: one completion each."
        )
    if isinstance(reward, RewardModelScore):
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


def as_reward(reward) -> Reward:
    """The reward `reinforce` was given: a function, a reward-model Run or its directory, or a
    reward model (a `RewardModelScore`)."""
    import torch

    from workbench.runs.run import Run
    from workbench.training.reward import RewardModelScore, load_reward_model

    if isinstance(reward, Run):
        stage = reward.directory.read_config().get("stage")
        if stage != "reward":
            raise WorkbenchError(
                f"`reward` is a {stage!r} run; pass a reward model's run (train_reward_model) "
                "or a function of (prompt, completion)."
            )
        score = RewardModelScore(reward.model, reward.tokenizer)
        return Reward(score, score.name, {"reward_model": str(reward.run_dir)})
    if isinstance(reward, (str, Path)):
        score = RewardModelScore(*load_reward_model(reward))
        return Reward(score, score.name, {"reward_model": str(reward)})
    if isinstance(reward, RewardModelScore):
        return Reward(reward, reward.name, {"reward_model": IN_MEMORY})
    if isinstance(reward, torch.nn.Module) or not callable(reward):
        raise WorkbenchError(
            f"`reward` is a {type(reward).__name__}: pass a function of (prompt, completion) "
            "returning a number, a reward model's Run or run directory, or "
            "RewardModelScore(model, tokenizer)."
        )
    name = getattr(reward, "__name__", type(reward).__name__)  # a callable object: its class
    module = getattr(reward, "__module__", None)  # functools.partial has none
    where = getattr(reward, "__qualname__", name)  # `outer.<locals>.name` for a local function
    record: dict[str, Any] = {"function": f"{module}.{where}" if module else where}
    if isinstance(getattr(reward, "labels", None), list):  # one_of_labels(labels)
        record["labels"] = list(reward.labels)
    return Reward(reward, name, record)


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
    from dataclasses import replace

    from workbench.evaluation.compare import evaluate_model

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
    greedy answers' mean reward on them, and start `reinforce` on the rest (`algorithm`:
    'grpo' or 'ppo').

    `model` is the instruction-tuned starting model (e.g. a finished run's `run.model`);
    `reward` is what `reinforce` takes (a function, a reward model's Run or directory; a
    directory is loaded twice, once here and once by the run: pass its Run to load it once).
    `answer_rows` > 0 first answers that many held-out rows in full (preference rows with their
    chosen answer as the reference). `decoding` defaults to greedy answers as long as the
    sampled ones (`settings.max_completion_length`). `start=False` leaves the run for
    `experiment.run.start()`; afterwards `experiment.measure_after()` gives the reward reached.
    """
    from workbench.data.splits import split_data
    from workbench.evaluation.preferences import as_answer_rows
    from workbench.training.reinforcement import RLSettings, prompt_texts, reinforce

    settings = settings or RLSettings()
    decoding = decoding or Decoding(max_new_tokens=settings.max_completion_length)
    train_prompts, kept = split_data(prompts, held_out, seed=settings.seed)
    run = reinforce(
        model,
        tokenizer,
        train_prompts,
        reward=reward,
        algorithm=algorithm,
        held_out=kept,
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
