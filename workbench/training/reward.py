"""A reward model: a second model that scores how well a response matches preferences.

`train_reward_model(base, tokenizer, pairs)` puts a one-output scoring head on the same base
(`reward_model_from`: a sequence-classification model holding the causal LM's weights), trains
it with TRL's RewardTrainer on prompt/chosen/rejected rows (the chosen answer must score
higher) and returns a `Run` with the same events, files and panels as every other run. Its
`evaluation` events carry `eval_accuracy`: the share of held-out pairs it ranks right, at step 0
(the untrained head) and at every evaluation. `score_responses` scores answers with it, the way
reinforcement learning (training/reinforcement.py) reads it as a reward.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

from workbench.data.loading import Examples
from workbench.errors import WorkbenchError
from workbench.evaluation.preferences import check_pairs, prompt_of
from workbench.model.generation import eval_mode
from workbench.model.loading import load_model
from workbench.model.methods import Method, apply_method
from workbench.runs.building import check_new_run_dir
from workbench.runs.directory import CONFIG, RunDirectory
from workbench.runs.hyperparameters import ObjectiveSettings
from workbench.runs.kinds import Kind, register
from workbench.runs.run import Run
from workbench.runs.saved import load_adapter
from workbench.tokens.templates import Template, get_template
from workbench.training.resuming import open_run
from workbench.training.trl_runs import (
    RunParts,
    pair_rows,
    rows_trainer,
    trl_run,
)


@dataclass
class RewardSettings(ObjectiveSettings):
    """How a reward model trains: the instruction-tuning `Hyperparameters` (same fields, meanings
    and checks) with a reward model's defaults, plus `center_rewards`. `batch_size` counts pairs
    (each is two sequences); `max_length` counts prompt + answer, and longer pairs are refused.
    The settings in `SFT_ONLY` do not apply and must keep their values.
    """

    what, title = "a reward model", "reward settings"

    learning_rate: float = field(
        default=3e-4, metadata={"help": "LoRA and the new scoring head: 1e-4..5e-4; full: ~1e-5"}
    )
    batch_size: int = field(default=8, metadata={"help": "pairs per forward pass"})
    eval_every: int = field(default=10, metadata={"help": "held-out pair accuracy every N steps"})
    center_rewards: float = field(
        default=0.0,
        metadata={"help": "pulls the scores' mean to 0 (0.01 is usual; 0: off): comparable scales"},
    )

    def own_problems(self) -> list[str]:
        if self.center_rewards < 0:
            return [f"`center_rewards`={self.center_rewards} must be 0 (off) or more."]
        return []


def reward_model_from(base, tokenizer):
    """A sequence-classification model with one output (the score) holding `base`'s weights.

    `base` is a causal LM (as `load_model` returns it) or an instruction-tuning run's model (its
    LoRA adapter merged into a copy; the run's model is left as it is). The scoring head is new.
    """
    from transformers import AutoModelForSequenceClassification

    if hasattr(base, "peft_config"):  # an SFT run's model: score on top of what it learned
        base = copy.deepcopy(base).merge_and_unload()
    parameter = next(base.parameters())
    config = copy.deepcopy(base.config)
    config.num_labels = 1  # one number per sequence: the reward
    config.pad_token_id = tokenizer.pad_token_id  # the score is read at the last non-pad token
    model = AutoModelForSequenceClassification.from_config(config, dtype=parameter.dtype)
    model.base_model.load_state_dict(base.base_model.state_dict())
    return model.to(parameter.device)


def _reward_model(base, tokenizer, method: Method, seed: int):
    """The reward model prepared for `method`: LoRA keeps the new head trainable as a whole."""
    from transformers import set_seed

    if method.kind == "qlora":
        raise WorkbenchError(
            "`method.kind`='qlora': the reward model is built in full precision from the base's "
            "weights. Use kind='lora' (or 'full')."
        )
    set_seed(seed)  # the head's and LoRA's initial weights
    model = reward_model_from(base, tokenizer)
    if not method.uses_lora:
        return apply_method(model, method)
    from peft import get_peft_model

    config = replace(method.to_peft(model), task_type="SEQ_CLS")  # PEFT trains `score` fully
    return get_peft_model(model, config)


def _check_lengths(pairs: Examples, rows: list[dict], tokenizer, max_length: int) -> None:
    """TRL drops pairs longer than `max_length` without a word: refuse them here, named."""
    too_long = [
        pairs.where(i)
        for i, r in enumerate(rows)
        if max(len(tokenizer(text=r["prompt"] + r[k])["input_ids"]) for k in ("chosen", "rejected"))
        >= max_length
    ]
    if too_long:
        raise WorkbenchError(
            f"{len(too_long)} pair(s) are longer than `max_length`={max_length} tokens (prompt + "
            f"answer + EOS): {', '.join(too_long[:5])}. Raise max_length or shorten them."
        )


def without_identical_pairs(pairs: Examples) -> Examples:
    """The pairs whose chosen and rejected answers differ. A pair with the same text for both
    teaches a reward model nothing (no score can rank them): when every pair is like that it
    is an error naming them; when some are, they are dropped with a warning that counts them."""
    same = [i for i, r in enumerate(pairs.rows) if r["chosen"].strip() == r["rejected"].strip()]
    if not same:
        return pairs
    where = ", ".join(pairs.where(i) for i in same[:5]) + (", ..." if len(same) > 5 else "")
    if len(same) == len(pairs):
        raise WorkbenchError(
            f"{pairs.source}: in every pair the `chosen` and `rejected` answers are the same "
            f"text ({where}), so a reward model has nothing to learn: give each prompt a "
            "better (`chosen`) and a worse (`rejected`) answer that differ."
        )
    warnings.warn(
        f"{pairs.source}: {len(same)} of {len(pairs)} pairs have the same `chosen` and "
        f"`rejected` text ({where}); dropped from training, as no score can rank them.",
        stacklevel=4,
    )
    dropped = set(same)
    return pairs.select(i for i in range(len(pairs)) if i not in dropped)


def train_reward_model(
    model_or_base,
    tokenizer=None,
    pairs: Examples | None = None,
    validation: Examples | None = None,
    *,
    settings: RewardSettings | None = None,
    method: Method | None = None,
    template: Template | str = "alpaca",
    parent: str | Path | None = None,
    run_dir: str | Path | None = None,
    start: bool = True,
) -> Run:
    """Start training a reward model on `pairs` and return the Run at once.

    `model_or_base` is a causal LM (with its `tokenizer`) or a model name for `load_model`.
    `validation` pairs give the held-out pair accuracy (`eval_accuracy` in `evaluation`
    events) before training and at every evaluation. `run.model` is the reward model; score
    answers with `score_responses(run.model, run.tokenizer, prompts, answers)`.
    """
    if isinstance(model_or_base, str):
        model_or_base, tokenizer = load_model(model_or_base)
    if tokenizer is None or pairs is None:
        raise WorkbenchError("train_reward_model needs the base's `tokenizer` and the `pairs`.")
    check_new_run_dir(run_dir)
    if hasattr(model_or_base, "peft_config") and parent is None:
        warnings.warn(
            "The base carries an adapter (an SFT run's model) but `parent` is not given: "
            "load_reward_model and resume_reward_model would rebuild this reward model on the "
            "bare base. Pass parent=<the SFT run directory>.",
            stacklevel=2,
        )
    given = (settings or RewardSettings(), method or Method(), get_template(template))
    run = _reward_run(
        RunParts(model_or_base, tokenizer, pairs, validation, *given, parent, run_dir)
    )
    return run.start() if start else run


def _reward_run(parts: RunParts) -> Run:
    """Build the reward model on `parts.model` (the base) and its Run. A new run records
    config.yaml and its rows."""
    for rows in (parts.rows, parts.validation):
        if rows is not None:
            check_pairs(rows)
    base, tokenizer, template = parts.model, parts.tokenizer, parts.template
    settings = parts.settings
    pairs = without_identical_pairs(parts.rows)
    validation = without_identical_pairs(parts.validation) if parts.validation is not None else None
    train_rows = pair_rows(pairs, template, tokenizer)
    val_rows = pair_rows(validation, template, tokenizer) if validation is not None else None
    _check_lengths(pairs, train_rows, tokenizer, settings.max_length)
    if validation is not None:
        _check_lengths(validation, val_rows, tokenizer, settings.max_length)
    model = _reward_model(base, tokenizer, parts.method, settings.seed)
    parts = replace(parts, model=model, rows=pairs, validation=validation)
    # config.yaml names `base`, as load_model was given it; the final save is the adapter,
    # which holds the new scoring head (or, full, the whole model)
    trainer = partial(_build_reward_trainer, train_rows, val_rows)
    return trl_run("reward", "pairs", parts, trainer, recorded_model=base)


def _build_reward_trainer(train_rows, val_rows, run: Run, settings: RewardSettings, resuming):
    """TRL's RewardTrainer with the Run's event bridge."""
    from trl import RewardConfig, RewardTrainer

    return rows_trainer(
        RewardTrainer,
        RewardConfig,
        run,
        settings,
        train_rows,
        val_rows,
        resuming,
        max_length=settings.max_length,
        center_rewards_coefficient=settings.center_rewards or None,
        remove_unused_columns=True,  # RewardConfig's default: TRL keeps only the token ids
    )


def score_responses(
    reward_model, tokenizer, prompts: list[str], responses: list[str], batch_size: int = 8
) -> list[float]:
    """The reward model's score of each (prompt, response), tokenized as it was trained
    (prompt + response + EOS): higher means closer to the chosen answers."""
    import torch

    if len(prompts) != len(responses):
        raise WorkbenchError(
            f"{len(prompts)} prompts but {len(responses)} responses: give one response per prompt."
        )
    eos = tokenizer.eos_token
    texts = [p + r if r.endswith(eos) else p + r + eos for p, r in zip(prompts, responses)]
    device = next(reward_model.parameters()).device
    scores: list[float] = []
    with eval_mode(reward_model), torch.no_grad():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(
                text=texts[start : start + batch_size], return_tensors="pt", padding=True
            ).to(device)
            scores.extend(reward_model(**batch).logits[:, 0].float().tolist())
    return scores


@dataclass
class RewardModelScore:
    """A trained reward model as a reward function of (prompt, completion): its score.
    `batch` scores many answers at once (reinforcement learning and `held_out_reward` use it).
    """

    model: Any
    tokenizer: Any
    name: str = "reward_model"

    def __call__(self, prompt: str, completion: str) -> float:
        return self.batch([prompt], [completion])[0]

    def batch(self, prompts: list[str], completions: list[str]) -> list[float]:
        return score_responses(self.model, self.tokenizer, prompts, completions)


def pair_accuracy(
    reward_model, tokenizer, pairs: Examples, template: Template | str = "alpaca"
) -> float:
    """Share of `pairs` whose chosen answer the reward model scores above the rejected one."""
    check_pairs(pairs)
    template = get_template(template)
    prompts = [prompt_of(r, template, tokenizer) for r in pairs.rows]
    chosen = score_responses(reward_model, tokenizer, prompts, [r["chosen"] for r in pairs.rows])
    rejected = score_responses(
        reward_model, tokenizer, prompts, [r["rejected"] for r in pairs.rows]
    )
    return sum(c > r for c, r in zip(chosen, rejected)) / len(pairs)


def _base_of(config: dict, directory: RunDirectory):
    """The causal LM a reward run started from: the base model, with the SFT run's adapter
    when it started from one (`parent`)."""
    base, tokenizer = load_model(config["model"], quantization=config.get("quantization"))
    parent = config.get("parent")
    if parent and (Path(parent) / "adapter").is_dir():
        base = load_adapter(base, Path(parent) / "adapter")
    elif parent:
        warnings.warn(
            f"{directory.file(CONFIG)} names the SFT run {parent}, whose adapter is gone: the "
            "reward model is rebuilt on the bare base model.",
            stacklevel=3,
        )
    return base, tokenizer


def load_reward_model(run_dir: str | Path):
    """(reward model, tokenizer) of a finished reward run directory, ready to score."""
    from peft import PeftModel

    directory = RunDirectory(run_dir)
    config = directory.read_config()
    if config.get("stage") != "reward":
        raise WorkbenchError(
            f"{directory.file(CONFIG)}: `stage` is {config.get('stage')!r}, not 'reward': pass "
            "the directory of a run made by train_reward_model."
        )
    base, tokenizer = _base_of(config, directory)
    model = reward_model_from(base, tokenizer)
    if directory.file("adapter").is_dir():
        return PeftModel.from_pretrained(model, directory.file("adapter")).eval(), tokenizer
    if directory.file("model").is_dir():
        from transformers import AutoModelForSequenceClassification

        trained = AutoModelForSequenceClassification.from_pretrained(directory.file("model"))
        return trained.to(next(model.parameters()).device).eval(), tokenizer
    raise FileNotFoundError(
        f"{directory.path} has no adapter/ or model/: the reward run has not finished. Resume "
        "it with resume_reward_model(path), or wait for it."
    )


def resume_reward_model(run_dir: str | Path, *, max_steps: int | None = None) -> Run:
    """Continue a stopped, failed or killed reward run from its newest complete checkpoint,
    loading the base model and rows its config.yaml names."""
    opened = open_run(run_dir, "reward", RewardSettings, max_steps)
    base, tokenizer = _base_of(opened.config, opened.directory)
    run = _reward_run(RunParts.resumed(opened, base, tokenizer, opened.method()))
    return run.resume(max_steps)


def _resume_reward(run_dir, model=None, tokenizer=None, *, max_steps=None) -> Run:
    if model is not None:
        raise WorkbenchError(f"{run_dir}: a reward model run loads its own model; drop `model=`.")
    return resume_reward_model(run_dir, max_steps=max_steps)


register(
    Kind(
        stage="reward",
        title="reward model",
        function="train_reward_model",
        rows="prompt/chosen/rejected pairs",
        settings=RewardSettings,
        resume=_resume_reward,
    )
)
