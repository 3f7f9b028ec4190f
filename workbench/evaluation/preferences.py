"""Preferences measured: how much likelier the model finds the chosen answer than the rejected
one (`preference_margin`), and the experiment the PreferencePanel and `workbench dpo` both run:
margin on held-out pairs before DPO, DPO on the rest, margin after (`preference_experiment`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from workbench.data.loading import Examples
from workbench.errors import WorkbenchError
from workbench.evaluation.compare import Evaluation
from workbench.evaluation.generation import Decoding
from workbench.runs.run import Run
from workbench.tokens.templates import Template, get_template
from workbench.training.preference import (
    PreferenceSettings,
    check_pairs,
    dpo_from_run,
    prompt_of,
    train_preferences,
)


def as_answer_rows(pairs: Examples) -> Examples:
    """Preference rows as instruction rows whose reference answer is the chosen one (for
    evaluate_model and CompareView)."""
    check_pairs(pairs)
    rows = [
        {**{k: v for k, v in r.items() if k not in ("chosen", "rejected")}, "output": r["chosen"]}
        for r in pairs.rows
    ]
    return Examples(rows, "alpaca", pairs.source, list(pairs.locations), sources=pairs.sources)


@dataclass
class Margin:
    """Summed log-probabilities of the chosen minus the rejected answers, averaged; and the
    share of pairs where the chosen answer is the likelier one."""

    mean: float
    accuracy: float
    per_pair: list[float]


def preference_margin(
    model, tokenizer, pairs: Examples, template: Template | str = "alpaca", max_length: int = 256
) -> Margin:
    """log p(chosen | prompt) - log p(rejected | prompt) under `model`, as tokens are trained."""
    import torch

    from workbench.evaluation.generation import eval_mode
    from workbench.tokens.collators import CompletionCollator
    from workbench.tokens.tokenizing import IGNORE_INDEX, tokenize_pair

    check_pairs(pairs)
    template = get_template(template)
    collate = CompletionCollator(tokenizer.pad_token_id)
    device = next(model.parameters()).device

    def total_logprob(prompt: str, answer: str) -> float:
        item = tokenize_pair(prompt, answer, tokenizer, max_length=max_length)
        batch = collate([{"input_ids": item.input_ids, "labels": item.labels}])
        batch = {k: v.to(device) for k, v in batch.items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        labels = batch["labels"][:, 1:]
        logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
        mask = labels != IGNORE_INDEX
        picked = logprobs.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        return float((picked * mask).sum())

    margins = []
    with eval_mode(model), torch.no_grad():
        for row in pairs.rows:
            prompt = prompt_of(row, template, tokenizer)
            margins.append(
                total_logprob(prompt, row["chosen"]) - total_logprob(prompt, row["rejected"])
            )
    mean = sum(margins) / len(margins) if margins else math.nan
    accuracy = sum(m > 0 for m in margins) / len(margins) if margins else math.nan
    return Margin(mean, accuracy, margins)


@dataclass
class PreferenceExperiment:
    """DPO measured on pairs it never trains on.

    `run` trains on `train_pairs`; `held_out` pairs give the margin (chosen minus rejected
    log-probability) before training, `margin_before`, and after it, `margin_after` (set by
    `measure_after()` once the run has ended). `answer_rows` are held-out prompts as
    instruction rows (reference: the chosen answer) and `answers_before` the SFT model's
    answers to them, for a side-by-side with the DPO model (None when none were asked for).
    """

    run: Run
    train_pairs: Examples
    held_out: Examples
    margin_before: Margin
    answer_rows: Examples
    answers_before: Evaluation | None = None
    margin_after: Margin | None = None

    def measure_after(self) -> Margin:
        """The held-out margin under the DPO-tuned model; call it once the run has ended."""
        run = self.run
        self.margin_after = preference_margin(run.model, run.tokenizer, self.held_out, run.template)
        return self.margin_after

    def summary(self) -> str:
        """One line: each held-out figure before -> after DPO (the margin, and the share of
        pairs whose chosen answer is the likelier)."""
        head = "Held-out log-probability margin, chosen minus rejected: "
        before = self.margin_before
        if self.margin_after is None:
            return head + (
                f"{before.mean:.3g} before DPO, chosen likelier in {100 * before.accuracy:.0f}% "
                f"of {len(self.held_out)} pairs (not measured after yet)"
            )
        after = self.margin_after
        return head + (
            f"{before.mean:.3g} → {after.mean:.3g} (chosen likelier in "
            f"{100 * before.accuracy:.0f}% → {100 * after.accuracy:.0f}% of "
            f"{len(self.held_out)} pairs)"
        )


def preference_experiment(
    pairs: Examples,
    *,
    held_out: float | int,
    model=None,
    tokenizer=None,
    template: Template | str = "alpaca",
    sft_run_dir: str | Path | None = None,
    settings: PreferenceSettings | None = None,
    parent: str | Path | None = None,
    answer_rows: int = 0,
    decoding: Decoding | None = None,
    start: bool = True,
) -> PreferenceExperiment:
    """Keep `held_out` pairs (a count, or a share below 1) out of training, measure their
    margin under the SFT model, and start DPO on the rest.

    The SFT model is either `model` with its `tokenizer` and `template` (e.g. a finished run's
    `run.model`), or the finished LoRA run directory `sft_run_dir`, loaded from disk.
    `answer_rows` > 0 first answers that many held-out prompts with the SFT model (`decoding`).
    `start=False` leaves the run for `experiment.run.start()`, so callbacks can subscribe
    first. After the run, `experiment.measure_after()` gives the margin DPO reached.
    """
    from workbench.data.splits import split_data
    from workbench.evaluation.compare import evaluate_model

    if (model is None) == (sft_run_dir is None):
        raise WorkbenchError(
            "preference_experiment needs one SFT model: pass `model` (with `tokenizer`) or "
            f"`sft_run_dir` (a finished LoRA run), not {'both' if model else 'neither'}."
        )
    settings = settings or PreferenceSettings()
    train_pairs, kept = split_data(pairs, held_out, seed=settings.seed)
    if sft_run_dir is not None:
        run = dpo_from_run(sft_run_dir, train_pairs, kept, settings=settings, start=False)
    else:
        run = train_preferences(
            model,
            tokenizer,
            train_pairs,
            kept,
            template=template,
            settings=settings,
            parent=parent,
            start=False,
        )
    # the run's model still has its SFT weights: training starts only with run.start()
    margin = preference_margin(run.model, run.tokenizer, kept, run.template)
    rows = as_answer_rows(kept.select(range(min(answer_rows, len(kept)))))
    answers = None
    if len(rows):
        answers = evaluate_model(run.model, run.tokenizer, rows, run.template, decoding=decoding)
    experiment = PreferenceExperiment(run, train_pairs, kept, margin, rows, answers)
    if start:
        run.start()
    return experiment
