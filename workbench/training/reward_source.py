"""What scores reinforcement learning's answers, as `Reward`: a function of (prompt,
completion), or a reward model (its Run, its run directory, or a `RewardModelScore`), with the
record config.yaml keeps of it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError
from workbench.evaluation.rewards import IN_MEMORY, Reward
from workbench.runs.run import Run
from workbench.training.reward import RewardModelScore, load_reward_model


def as_reward(reward) -> Reward:
    """The reward `reinforce` was given: a function, a reward-model Run or its directory, or a
    reward model (a `RewardModelScore`)."""
    import torch

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
