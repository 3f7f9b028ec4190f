"""Tasks in sequence: train task A, then go on training the same model on task B, and measure
after every stage how much of A (and of the untouched probe tasks) is still there.

`train_sequence(model, tokenizer, [task_a, task_b], probe=probe, remedy="si")` runs one ordinary
run per stage on the same model (LoRA: the adapter is continued; full fine-tuning: the weights),
each later run recording `continued_from: <previous run dir>` in its config.yaml. Before every
stage a remedy (training/remedies.py: None, "replay", "ewc", "si", "lwf") plans what that stage
trains on and with. `SequenceResult.table()` has one row per stage: the score on every stage's
task and on the probe tasks, what was learned so far and what was kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.data.loading import Examples
from workbench.errors import WorkbenchError
from workbench.evaluation.forgetting import ForgettingProbe, TaskScores
from workbench.model.methods import Method
from workbench.runs.hyperparameters import Hyperparameters
from workbench.runs.report import save_forgetting
from workbench.tokens.templates import Template, get_template
from workbench.training.finetune import train
from workbench.training.remedies import plan_stage, remedy_named


@dataclass
class SequenceResult:
    """The runs of a sequence (one per stage) and, with a probe, the scores: `scores[0]` the
    base model's, then one per stage. `table()` lays them out, one row per stage."""

    runs: list[Any]
    scores: list[TaskScores]
    stage_tasks: list[list[str]]
    probe: ForgettingProbe | None
    remedy: str | None

    def table(self):
        """One row per model (base, then after each stage): the score on each stage's tasks and
        on each probe task; `learned` (tasks trained so far), `kept` (tasks of the earlier
        stages), `retained` (probe tasks) and `retained / base`."""
        if not self.scores:
            raise WorkbenchError("The sequence ran without a `probe`: it has no scores.")
        return sequence_table(self.scores, self.stage_tasks, self.probe, self.runs)


def train_sequence(
    model,
    tokenizer,
    stages: list[Examples],
    *,
    validation: list[Examples | None] | None = None,
    probe: ForgettingProbe | None = None,
    remedy: str | None = None,
    strength: float | None = None,
    replay_share: float = 0.2,
    method: Method | None = None,
    hyperparameters: Hyperparameters | list[Hyperparameters] | None = None,
    template: Template | str | None = None,
    run_root: str | Path | None = None,
    samples: int = 1,
    options: dict[str, Any] | None = None,
    seed: int = 0,
) -> SequenceResult:
    """Train `stages` one after the other on the same model, each an ordinary run; returns the
    runs and, with a `probe`, the scores of the base model and after each stage.

    `validation` holds one set per stage (or None); `hyperparameters` one for all stages or one
    per stage. `remedy` names an entry of `REMEDIES` (None, "replay", "ewc", "si"), `strength`
    its penalty strength (None: EWC 100, SI 1.0), `options` its extra settings. Stage runs go
    into `run_root` as `stage-<k>-<task>` (default: new run directories in the runs folder).
    Blocks until the last stage ends; a stage that does not finish raises, naming its run.
    """
    remedy_named(remedy)  # an unknown name fails before anything trains
    settings = _per_stage(hyperparameters, len(stages))
    validation = validation if validation is not None else [None] * len(stages)
    _check_stages(stages, validation, probe)
    template = get_template(template, stages[0].format)
    method = method or Method()
    scores = [probe.measure_base(model, tokenizer)] if probe else []
    runs: list[Any] = []
    for index in range(len(stages)):
        plan = plan_stage(
            model,
            tokenizer,
            template,
            stages,
            runs,
            remedy=remedy,
            strength=strength,
            replay_share=replay_share,
            seed=seed,
            options=options,
        )
        run = train(
            model,
            tokenizer,
            plan.train,
            validation[index],
            template=template,
            method=method,
            settings=settings[index],
            run_dir=_stage_dir(run_root, index, stages[index]),
            samples=samples,
            regularizer=plan.regularizer,
            track_importance=plan.track_importance,
            continued_from=runs[-1].run_dir if runs else None,
        ).wait()
        if run.status != "finished":
            raise WorkbenchError(
                f"Stage {index + 1} of {len(stages)} ({run.run_dir}) ended `{run.status}`: "
                f"{run.error}. Resume it with `resume`, then train the remaining stages."
            )
        runs.append(run)
        model = run.model  # LoRA: the PEFT model, its adapter continued by the next stage
        if probe is not None:
            scores.append(probe.measure(model, tokenizer, f"after stage {index + 1}"))
            _save_table(run, scores, stages, probe, runs)
    tasks = [list(s.tasks) for s in stages]
    return SequenceResult(runs, scores, tasks, probe, remedy)


def sequence_table(scores: list[TaskScores], stage_tasks, probe: ForgettingProbe, runs=()):
    """The table of `SequenceResult.table()` from its parts (base scores first)."""
    import pandas as pd

    def mean(score: TaskScores, tasks: list[str]) -> float | None:
        return sum(score.score[t] for t in tasks) / len(tasks) if tasks else None

    base_retained = mean(scores[0], probe.probe_tasks)
    every_task = [t for tasks in stage_tasks for t in tasks]
    rows = []
    for done, score in enumerate(scores):  # `done` stages trained before this measurement
        trained = [t for tasks in stage_tasks[:done] for t in tasks]
        kept = [t for tasks in stage_tasks[: max(done - 1, 0)] for t in tasks]
        retained = mean(score, probe.probe_tasks)
        rows.append(
            {
                "model": score.model,
                "trained": ", ".join(stage_tasks[done - 1]) if done else "",
                **{task: score.score[task] for task in every_task + probe.probe_tasks},
                "learned": mean(score, trained),
                "kept": mean(score, kept),
                "retained": retained,
                "retained / base": retained / base_retained if base_retained else None,
                "run": Path(runs[done - 1].run_dir).name if done and runs else "",
            }
        )
    return pd.DataFrame(rows).set_index("model")


def _per_stage(hyperparameters, count: int) -> list[Hyperparameters]:
    if isinstance(hyperparameters, (list, tuple)):
        if len(hyperparameters) != count:
            raise WorkbenchError(
                f"`hyperparameters` lists {len(hyperparameters)} settings for {count} stages: "
                "give one for every stage, or a single one for all."
            )
        return list(hyperparameters)
    return [hyperparameters or Hyperparameters()] * count


def _check_stages(stages, validation, probe: ForgettingProbe | None) -> None:
    """Everything wrong with the stages at once, before anything trains."""
    problems = []
    if len(stages) < 1:
        problems.append("`stages` is empty: give at least one task's rows.")
    if len(validation) != len(stages):
        problems.append(
            f"`validation` has {len(validation)} entries for {len(stages)} stages "
            "(use None for a stage without validation rows)."
        )
    formats = {s.format for s in stages}
    if len(formats) > 1:
        problems.append(f"The stages have different formats {sorted(formats)}: load them alike.")
    for index, rows in enumerate(stages):
        if probe is None:
            continue
        trained = sorted(set(rows.tasks) & set(probe.probe_tasks))
        missing = sorted(set(rows.tasks) - set(probe.target_tasks))
        if trained:
            problems.append(f"stage {index + 1} trains probe task(s) {trained}.")
        if missing:
            problems.append(
                f"stage {index + 1} trains {missing}, which the probe's `target` lacks: add "
                "held-out rows of every stage's task to it."
            )
    if problems:
        raise WorkbenchError("train_sequence: " + " ".join(problems))


def _stage_dir(run_root, index: int, rows: Examples) -> Path | None:
    """`run_root/stage-<k>-<task>`, or None (a new directory in the runs folder)."""
    if run_root is None:
        return None
    tasks = list(rows.tasks)
    label = tasks[0] if len(tasks) == 1 else f"{len(tasks)}tasks"
    return Path(run_root) / f"stage-{index + 1}-{label}"


def _save_table(run, scores, stages, probe, runs) -> None:
    """Store the table so far in the stage's run directory, and rebuild its report with it."""
    table = sequence_table(scores, [list(s.tasks) for s in stages], probe, runs)
    save_forgetting(run.run_dir, table)
    try:
        from workbench.runs.report import write_report

        write_report(run.run_dir)
    except ImportError:  # plotly missing: the table is stored all the same
        pass
