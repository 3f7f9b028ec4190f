"""The preference experiment the PreferencePanel and `python -m workbench dpo` both run: the
margin on held-out pairs before DPO, DPO on the rest, the margin after."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from workbench.data.loading import Examples
from workbench.data.splits import split_data
from workbench.errors import WorkbenchError
from workbench.evaluation.compare import Evaluation, evaluate_model
from workbench.evaluation.preferences import Margin, as_answer_rows, preference_margin
from workbench.model.generation import Decoding
from workbench.runs.run import Run
from workbench.tokens.templates import Template
from workbench.training.preference import PreferenceSettings, dpo_from_run, train_preferences


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
