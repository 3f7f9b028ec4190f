"""Reinforcement learning after instruction tuning: GRPO (TRL's GRPOTrainer) or PPO.

`reinforce(model, tokenizer, prompts, reward=..., algorithm="grpo" | "ppo")` samples answers
to the prompts, scores them with the reward (a Python function of prompt and answer, or a
trained reward model) and moves the model towards the better ones, with a KL penalty that
keeps it near where it started. GRPO compares several answers to the same prompt (the group's
average reward is the baseline); PPO learns a value head as the baseline and trains several
clipped updates on each batch of answers (training/ppo.py: TRL 1.16 ships no PPOTrainer). Both
return a `Run` whose `step` events carry `mean_reward`, `kl` and `response_length`, and whose
`evaluation` events carry the held-out prompts' mean reward (`eval_reward`) at the start and at
every evaluation.

The model trains a LoRA adapter; the starting point (the SFT adapter, or none) stays as a frozen
copy (`ref`) on the same model, so the KL needs no second model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from workbench.data.loading import Examples
from workbench.errors import WorkbenchError
from workbench.evaluation.rewards import Reward, restorable, reward_from_record
from workbench.model.methods import Method
from workbench.runs.building import check_new_run_dir
from workbench.runs.hyperparameters import ObjectiveSettings
from workbench.runs.kinds import Kind, deprecated_name, register
from workbench.runs.run import Run
from workbench.runs.saved import template_for
from workbench.tokens.templates import Template
from workbench.training.ppo import build_ppo_trainer
from workbench.training.resuming import open_run
from workbench.training.reward_source import as_reward
from workbench.training.trl_runs import (
    RunParts,
    bridged_trainer,
    model_to_train,
    require_lora,
    trl_arguments,
    trl_run,
)

ALGORITHMS = ("grpo", "ppo")


@dataclass
class RLSettings(ObjectiveSettings):
    """How reinforcement learning runs: the instruction-tuning `Hyperparameters` (same
    fields, meanings and checks) with RL's defaults, plus its own.

    Sampling: `num_generations` answers per prompt, each at most `max_completion_length`
    tokens, at `temperature`; `batch_size` answers at a time, so `batch_size /
    num_generations` prompts. The objective: `beta` weighs the KL to the starting model,
    `epsilon` clips the policy ratio. GRPO trains one step on each batch of answers and
    evaluates `eval_generations` sampled answers per held-out prompt. PPO trains
    `ppo_epochs x minibatches` steps on each batch (a step is one minibatch), its value head
    weighed by `value_coef`, advantages by GAE with `gae_lambda`, and evaluates greedy answers.
    `max_length` bounds the prompts. The settings in `SFT_ONLY` do not apply.
    """

    what, title = "reinforcement learning", "RL settings"

    learning_rate: float = field(
        default=1e-4, metadata={"help": "LoRA: 5e-5..5e-4 (higher learns faster, drifts more)"}
    )
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = field(
        default="constant", metadata={"help": "how the rate decays"}
    )
    batch_size: int = field(
        default=8, metadata={"help": "answers per step: prompts per step x num_generations"}
    )
    eval_every: int = field(default=10, metadata={"help": "held-out mean reward every N steps"})
    num_generations: int = field(
        default=4, metadata={"help": "answers compared per prompt: more, a steadier baseline"}
    )
    max_completion_length: int = field(
        default=16, metadata={"help": "longest sampled answer in tokens: the biggest CPU cost"}
    )
    temperature: float = field(
        default=1.0, metadata={"help": "sampling temperature: lower explores less"}
    )
    beta: float = field(
        default=0.04,
        metadata={"help": "KL penalty to the starting model: 0 turns it (and its curve) off"},
    )
    epsilon: float = field(default=0.2, metadata={"help": "clip range of the policy ratio"})
    eval_generations: int = field(
        default=2, metadata={"help": "GRPO: answers sampled per held-out prompt per evaluation"}
    )
    ppo_epochs: int = field(default=2, metadata={"help": "PPO: passes over each batch of answers"})
    minibatches: int = field(
        default=2, metadata={"help": "PPO: steps per pass (batch_size / minibatches answers each)"}
    )
    gae_lambda: float = field(
        default=0.95, metadata={"help": "PPO: 1 trusts rewards, 0 trusts the value head"}
    )
    value_coef: float = field(default=0.1, metadata={"help": "PPO: weight of the value loss"})
    value_learning_rate: float | None = field(
        default=None,
        metadata={"help": "PPO: the value head's rate (None: learning_rate)"},
    )

    def own_problems(self) -> list[str]:
        problems = []
        for name in ("num_generations", "eval_generations", "minibatches"):
            if getattr(self, name) >= 1 and self.batch_size % getattr(self, name):
                problems.append(
                    f"`batch_size`={self.batch_size} must be a multiple of `{name}`="
                    f"{getattr(self, name)} (whole groups of answers)."
                )
        if self.max_completion_length < 1 or self.eval_generations < 1:
            problems.append("`max_completion_length` and `eval_generations` must be positive.")
        if self.temperature <= 0:
            problems.append(f"`temperature`={self.temperature} must be positive (1.0 is usual).")
        if self.beta < 0 or self.epsilon <= 0:
            problems.append("`beta` must be 0 or more and `epsilon` positive (0.04 and 0.2).")
        if self.ppo_epochs < 1 or self.minibatches < 1:
            problems.append("`ppo_epochs` and `minibatches` must be at least 1 (2 and 2).")
        if self.value_learning_rate is not None and not self.value_learning_rate > 0:
            problems.append("`value_learning_rate` must be positive, or None for learning_rate.")
        if not 0 <= self.gae_lambda <= 1 or self.value_coef < 0:
            problems.append("`gae_lambda` must be in [0, 1] and `value_coef` 0 or more.")
        return problems

    def check_for(self, algorithm: str) -> None:
        """Raise when a setting does not suit `algorithm` ('grpo' or 'ppo')."""
        if algorithm == "grpo" and self.num_generations < 2:
            raise WorkbenchError(
                f"`num_generations`={self.num_generations}: GRPO compares answers to the same "
                "prompt, so it needs at least 2 (4-8 is usual; PPO works with 1)."
            )
        if algorithm == "ppo" and self.gradient_accumulation != 1:
            raise WorkbenchError(
                f"`gradient_accumulation`={self.gradient_accumulation}: PPO takes one step per "
                "minibatch; leave it at 1 and raise `minibatches` or `ppo_epochs` instead."
            )


def prompt_texts(prompts: Examples, template: Template, tokenizer) -> list[str]:
    """Each row's prompt as the model sees it: `instruction`/`input` or `messages` through the
    template, a `prompt` field as it is."""
    texts = []
    for i, row in enumerate(prompts.rows):
        if row.get("instruction") or row.get("messages"):
            texts.append(template.render_prompt(row, tokenizer, where=prompts.where(i)))
        elif row.get("prompt"):
            texts.append(row["prompt"])
        else:
            raise WorkbenchError(
                f"{prompts.where(i)}: no prompt (`instruction`, `messages` or `prompt`) to "
                "answer: reinforcement learning needs rows with one."
            )
    return texts


def _check_lengths(prompts: Examples, texts: list[str], tokenizer, max_length: int) -> None:
    too_long = [
        prompts.where(i)
        for i, text in enumerate(texts)
        if len(tokenizer(text=text)["input_ids"]) > max_length
    ]
    if too_long:
        raise WorkbenchError(
            f"{len(too_long)} prompt(s) are longer than `max_length`={max_length} tokens: "
            f"{', '.join(too_long[:5])}. Raise max_length or shorten them."
        )


def _policy(model, method: Method | None, seed: int):
    """(model, method): the model's own adapter (an SFT run's, recorded by rank and alpha), or
    a fresh LoRA one from `method`; only a model without adapter has its method checked."""
    if not hasattr(model, "peft_config"):
        require_lora(
            method or Method(),
            "reinforcement learning",
            "the KL reference is the same model with its starting adapter frozen",
        )
    return model_to_train(model, method, seed, fields=())


def _rl_starter(algorithm: Literal["grpo", "ppo"], doc: str) -> Callable[..., Run]:
    """The public `train_<algorithm>`: the arguments every kind of run takes, and `reward`."""

    def train_rl(
        model,
        tokenizer,
        rows: Examples,
        validation: Examples | None = None,
        *,
        reward,
        settings: RLSettings | None = None,
        method: Method | None = None,
        template: Template | str | None = None,
        parent: str | Path | None = None,
        run_dir: str | Path | None = None,
        start: bool = True,
        samples: int = 2,
    ) -> Run:
        return _start_rl(algorithm, model, tokenizer, rows, validation, reward, settings,
                         method, template, parent, run_dir, start, samples)  # fmt: skip

    train_rl.__name__ = train_rl.__qualname__ = f"train_{algorithm}"
    train_rl.__doc__ = doc
    return train_rl


train_grpo = _rl_starter(
    "grpo",
    """Start GRPO on the prompt `rows` and return the Run at once (TRL's GRPOTrainer).

    `model` is normally an instruction-tuned model (a finished run's `run.model`, or the
    embedded instruct model); its adapter goes on learning, a frozen copy is the reference.
    `reward`: a function of (prompt, completion) (see workbench.evaluation.rewards), a reward
    model's Run or run directory. The `validation` prompts are answered at the start and at
    every evaluation (`eval_reward`); the first `samples` of them are shown as sample answers.
    `template` defaults to the parent run's (else the one that suits the rows).
    """,
)
train_ppo = _rl_starter(
    "ppo",
    """Start PPO on the prompt `rows` (the project's PPO on the Trainer: a value head, GAE,
    clipped updates; see training/ppo.py). The arguments are `train_grpo`'s.""",
)


def rl_function(algorithm: str) -> Callable[..., Run]:
    """The public function that starts `algorithm` ('grpo': `train_grpo`, 'ppo': `train_ppo`)."""
    if algorithm not in ALGORITHMS:
        raise WorkbenchError(f"`algorithm`={algorithm!r}: use 'grpo' or 'ppo'.")
    return train_grpo if algorithm == "grpo" else train_ppo


def reinforce(
    model,
    tokenizer,
    prompts: Examples,
    *,
    reward,
    algorithm: Literal["grpo", "ppo"] = "grpo",
    held_out: Examples | None = None,
    settings: RLSettings | None = None,
    method: Method | None = None,
    template: Template | str = "alpaca",
    parent: str | Path | None = None,
    run_dir: str | Path | None = None,
    samples: int = 2,
    start: bool = True,
) -> Run:
    """The old form of `train_grpo` / `train_ppo` (kept for one release)."""
    deprecated_name("reinforce(algorithm=...)", f"train_{algorithm}")
    return _start_rl(algorithm, model, tokenizer, prompts, held_out, reward, settings, method,
                     template, parent, run_dir, start, samples)  # fmt: skip


def _start_rl(
    algorithm, model, tokenizer, prompts, held_out, reward, settings, method, template, parent,
    run_dir, start, samples,
) -> Run:  # fmt: skip
    if algorithm not in ALGORITHMS:
        raise WorkbenchError(f"`algorithm`={algorithm!r}: use 'grpo' or 'ppo'.")
    check_new_run_dir(run_dir)
    settings = settings or RLSettings()
    settings.check_for(algorithm)
    if len(prompts) * settings.num_generations < settings.batch_size:
        raise WorkbenchError(
            f"{len(prompts)} prompts x `num_generations`={settings.num_generations} answers is "
            f"fewer than one batch (`batch_size`={settings.batch_size}): give more prompts or "
            "lower `batch_size`."
        )
    scorer = as_reward(reward)
    model, method = _policy(model, method, settings.seed)
    template = template_for(template, parent, prompts.format)
    parts = RunParts(
        model, tokenizer, prompts, held_out, settings, method, template, parent, run_dir
    )
    run = _rl_run(algorithm, parts, scorer, samples)
    return run.start() if start else run


def _rl_run(stage: str, parts: RunParts, reward: Reward, samples: int) -> Run:
    """The Run of a reinforcement-learning run (`stage` 'grpo' or 'ppo'); a new one records
    config.yaml, with its reward and `samples`, and its rows."""
    prompts, held_out, settings = parts.rows, parts.validation, parts.settings
    texts = prompt_texts(prompts, parts.template, parts.tokenizer)
    held_texts = (
        prompt_texts(held_out, parts.template, parts.tokenizer) if held_out is not None else None
    )
    _check_lengths(prompts, texts, parts.tokenizer, settings.max_length)
    shown = (held_texts or texts)[:samples]
    shown_rows = (held_out if held_out is not None else prompts).rows[:samples]
    references = [r.get("output") or r.get("completion") or "" for r in shown_rows]
    build = build_ppo_trainer if stage == "ppo" else _build_grpo_trainer

    def trainer(run: Run, settings: RLSettings, resuming: bool):
        return build(run, settings, reward, texts, held_texts, resuming)

    recorded = {"reward": reward.record, "samples": samples}  # config.yaml keys before `parent`
    answer_tokens = settings.max_completion_length  # samples as long as the trained answers
    return trl_run(
        stage, "prompts", parts, trainer, (shown, references), answer_tokens, recorded=recorded
    )


def resume_reinforcement(
    run_dir: str | Path,
    *,
    reward=None,
    model=None,
    tokenizer=None,
    max_steps: int | None = None,
) -> Run:
    """Continue a stopped, failed or killed GRPO or PPO run from its newest complete
    checkpoint.

    Loads the base model config.yaml names (or takes `model` and `tokenizer`, un-adapted); the
    checkpoint holds the trained adapter and the reference. A reward model recorded in
    config.yaml is loaded again, and the project's reward functions are rebuilt from their
    record (`valid_iso_date`, `one_of_labels` with its labels); a function of your own cannot
    be stored, so pass it again as `reward`.
    """
    opened = open_run(run_dir, ALGORITHMS, RLSettings, max_steps)
    config = opened.config
    recorded = config.get("reward") or {}
    if reward is None:
        reward = reward_from_record(recorded)
        if reward is None:
            what = recorded.get("function") or "a reward model held in memory"
            raise WorkbenchError(
                f"{opened.where}: the run's reward, {what}, cannot be stored in config.yaml: "
                "pass it again, resume_reinforcement(path, reward=...)."
            )
    model, tokenizer = opened.model(model, tokenizer)
    model, method = _policy(model, opened.method(), opened.settings.seed)  # checkpoint's wins
    parts = RunParts.resumed(opened, model, tokenizer, method)
    run = _rl_run(config["stage"], parts, as_reward(reward), config.get("samples", 2))
    return run.resume(max_steps)


def _build_grpo_trainer(run: Run, settings, reward: Reward, texts, held_texts, resuming: bool):
    """TRL's GRPOTrainer with the Run's event bridge.

    On a resume TRL adds its `ref` adapter again (a copy of the trained one); loading the
    checkpoint then restores both adapters, `ref` from the checkpoint's `ref/` folder, so the
    reference stays the starting model."""
    from trl import GRPOConfig, GRPOTrainer

    if resuming and "ref" in run.model.peft_config:
        run.model.delete_adapter("ref")
    args = trl_arguments(  # no `rows`: the plan counts answers, which only the Trainer knows
        run,
        settings,
        GRPOConfig,
        has_validation=held_texts is not None,
        resuming=resuming,
        num_generations=settings.num_generations,
        num_generations_eval=settings.eval_generations,
        max_completion_length=settings.max_completion_length,
        temperature=settings.temperature,
        beta=settings.beta,
        epsilon=settings.epsilon,
    )
    train_rows = [{"prompt": t} for t in texts]
    val_rows = [{"prompt": t} for t in held_texts] if held_texts is not None else None
    return bridged_trainer(
        GRPOTrainer, run, args, train_rows, val_rows, reward_funcs=reward.for_trl()
    )


def _resume_rl(run_dir, model=None, tokenizer=None, *, max_steps=None, reward=None) -> Run:
    return resume_reinforcement(
        run_dir, reward=reward, model=model, tokenizer=tokenizer, max_steps=max_steps
    )


def _reward_restores(config: dict) -> bool:
    return restorable(config.get("reward") or {})


for _algorithm, _title in (("grpo", "GRPO"), ("ppo", "PPO")):
    register(
        Kind(
            stage=_algorithm,
            title=f"{_title} (reinforcement learning with a reward)",
            function=f"train_{_algorithm}",
            rows="prompts, and a reward function or a reward model",
            settings=RLSettings,
            figure_rows=3,
            resume=_resume_rl,
            needs=("reward",),
            restores=_reward_restores,
            extras=("reward",),
            command="rl",
        )
    )
