"""Tasks in sequence: train task A, then go on training the same model on task B, and measure
after every stage how much of A (and of the untouched probe tasks) is still there.

`train_sequence(model, tokenizer, [task_a, task_b], probe=probe, remedy="si")` runs one ordinary
run per stage on the same model (LoRA: the adapter is continued; full fine-tuning: the weights),
each later run recording `continued_from: <previous run dir>` in its config.yaml. Before every
stage a remedy decides what that stage trains on and with (`StagePlan`):

- None: nothing; the baseline that shows the forgetting.
- "replay": a share (`replay_share`) of the stage's training rows drawn from the earlier stages.
- "ewc": Elastic Weight Consolidation, the Fisher measured on the earlier stages' rows with the
  model as the previous stage left it (for LoRA: over the adapter's weights).
- "si": synaptic intelligence, the importance tracked while the earlier stages trained.

`REMEDIES` maps each name to its builder, `(StageContext) -> StagePlan`; add one there (e.g.
learning without forgetting) and `train_sequence(remedy=name)` uses it; `plan_stage(...)` plans
one stage the same way for a caller that trains the stages itself (the Workbench's Train tab,
where each Train continues the previous run). `SequenceResult.table()`
has one row per stage: the score on every stage's task and on the probe tasks, what was learned
so far and what was kept.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.data.loading import Examples
from workbench.errors import WorkbenchError
from workbench.evaluation.forgetting import ForgettingProbe, TaskScores
from workbench.tokens.templates import Template, get_template
from workbench.training.hyperparameters import Hyperparameters
from workbench.training.methods import Method


@dataclass
class StageContext:
    """What a remedy builder knows before stage `index` (0-based) trains: the model as the
    earlier stages left it, every stage's rows, and the runs so far (one per earlier stage)."""

    model: Any
    tokenizer: Any
    template: Template
    stages: list[Examples]
    index: int
    runs: list[Any]  # workbench Run of each earlier stage
    strength: float | None  # None: the remedy's own default
    replay_share: float
    seed: int
    options: dict[str, Any] = field(default_factory=dict)  # remedy-specific, e.g. damping

    @property
    def rows(self) -> Examples:
        """This stage's own training rows."""
        return self.stages[self.index]

    @property
    def earlier(self) -> list[Examples]:
        """The rows of the stages already trained."""
        return self.stages[: self.index]


@dataclass
class StagePlan:
    """What one stage trains on (`train`), with which penalty (`regularizer`), and whether it
    tracks synaptic-intelligence importance while it trains (`track_importance`)."""

    train: Examples
    regularizer: Any = None
    track_importance: bool = False


def no_remedy(context: StageContext) -> StagePlan:
    """Each stage trains on its own rows alone: the forgetting baseline."""
    return StagePlan(context.rows)


def replay_remedy(context: StageContext) -> StagePlan:
    """Each stage after the first mixes rows of the earlier stages into its own, so that they
    make up `replay_share` of what it trains on (all its own rows are kept)."""
    if not context.earlier:
        return StagePlan(context.rows)
    return StagePlan(
        replay_mix(context.rows, context.earlier, context.replay_share, seed=context.seed)
    )


def ewc_remedy(context: StageContext) -> StagePlan:
    """Each stage after the first is held by EWC: the Fisher on the earlier stages' rows (up to
    `options["max_rows"]`, default 32), at the weights the previous stage left."""
    from workbench.training.regularizers import fisher_ewc

    if not context.earlier:
        return StagePlan(context.rows)
    max_rows = int(context.options.get("max_rows", 32))
    reference = _spread(context.earlier, max_rows, seed=context.seed)
    ewc = fisher_ewc(
        context.model,
        context.tokenizer,
        reference,
        context.template,
        strength=100.0 if context.strength is None else context.strength,
        max_rows=max_rows,
        store_tensors=True,  # its weights are the previous stage's, not a fresh model's
    )
    return StagePlan(context.rows, regularizer=ewc)


def si_remedy(context: StageContext) -> StagePlan:
    """Every stage tracks its importance; each one after the first is held by synaptic
    intelligence over the earlier stages' importances (`options["damping"]`, default 0.1)."""
    from workbench.training.synaptic import synaptic_intelligence

    if not context.earlier:
        return StagePlan(context.rows, track_importance=True)
    penalty = synaptic_intelligence(
        context.runs,
        context.model,
        strength=1.0 if context.strength is None else context.strength,
        damping=float(context.options.get("damping", 0.1)),
        normalize=bool(context.options.get("normalize", True)),
    )
    return StagePlan(context.rows, regularizer=penalty, track_importance=True)


def lwf_remedy(context: StageContext) -> StagePlan:
    """Each stage after the first is held by learning without forgetting: a KL penalty toward
    the outputs the model gave, before this stage, on rows of the earlier stages (up to
    `options["lwf_rows"]`, default 32; the adapter switched off for LoRA, a frozen copy for
    full fine-tuning)."""
    from workbench.training.lwf import LearningWithoutForgetting

    if not context.earlier:
        return StagePlan(context.rows)
    max_rows = int(context.options.get("lwf_rows", 32))
    reference = _spread(context.earlier, max_rows, seed=context.seed)
    penalty = LearningWithoutForgetting(
        context.model,
        context.tokenizer,
        reference,
        context.template,
        strength=1.0 if context.strength is None else context.strength,
        max_rows=len(reference),
    )
    return StagePlan(context.rows, regularizer=penalty)


Remedy = Callable[[StageContext], StagePlan]
REMEDIES: dict[str | None, Remedy] = {
    None: no_remedy,
    "replay": replay_remedy,
    "ewc": ewc_remedy,
    "si": si_remedy,
    "lwf": lwf_remedy,
}


def plan_stage(
    model,
    tokenizer,
    template: Template,
    stages: list[Examples],
    runs: list[Any],
    *,
    remedy: str | None = None,
    strength: float | None = None,
    replay_share: float = 0.2,
    seed: int = 0,
    options: dict[str, Any] | None = None,
) -> StagePlan:
    """What the stage after `runs` (stage `len(runs)`, 0-based) trains on, as `remedy` plans it.

    `stages` holds the rows of the earlier stages, then this stage's own (later ones may follow);
    `model` is the model the earlier stages left. `train_sequence` plans every stage through it,
    and so does the Workbench's Train tab when a run continues the previous one.
    """
    if len(stages) <= len(runs):
        raise WorkbenchError(
            f"plan_stage: {len(runs)} earlier runs but only {len(stages)} stages of rows: "
            "`stages` must hold each earlier stage's rows and then this stage's."
        )
    context = StageContext(
        model,
        tokenizer,
        template,
        list(stages),
        len(runs),
        list(runs),
        strength,
        replay_share,
        seed,
        options=dict(options or {}),
    )
    return _remedy(remedy)(context)


def replay_mix(rows: Examples, earlier: list[Examples], share: float, *, seed: int = 0):
    """`rows` plus rows drawn from `earlier` (spread over those stages by size) so that the
    earlier ones make up `share` of the result, shuffled. Asks for no more than `earlier` holds:
    with too few earlier rows, all of them are replayed (a smaller share)."""
    from workbench.data.splits import mix_tasks

    if not 0.0 <= share < 1.0:
        raise WorkbenchError(f"`replay_share`={share}: use a fraction from 0 up to (not) 1.")
    wanted = round(share * len(rows) / (1.0 - share))
    replayed = _spread(earlier, wanted, seed=seed)
    if not len(replayed):
        return rows
    return mix_tasks(
        {"stage": rows, "replay": replayed},
        {"stage": len(rows), "replay": len(replayed)},
        total=len(rows) + len(replayed),
        seed=seed,
    )


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
    from workbench.training.finetune import train

    _remedy(remedy)  # an unknown name fails before anything trains
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
            hyperparameters=settings[index],
            run_dir=_stage_dir(run_root, index, stages[index]),
            samples=samples,
            regularizer=plan.regularizer,
            track_importance=plan.track_importance,
            continued_from=runs[-1].run_dir if runs else None,
        ).wait()
        if run.status != "finished":
            raise WorkbenchError(
                f"Stage {index + 1} of {len(stages)} ({run.run_dir}) ended `{run.status}`: "
                f"{run.error}. Resume it with `resume_run`, then train the remaining stages."
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


def _remedy(name: str | None) -> Remedy:
    if name not in REMEDIES:
        known = ", ".join(repr(k) for k in REMEDIES)
        raise WorkbenchError(f"`remedy`={name!r} is not known; known: {known}.")
    return REMEDIES[name]


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


def _spread(earlier: list[Examples], count: int, *, seed: int) -> Examples:
    """`count` rows drawn from the earlier stages in proportion to their sizes (all of them when
    they hold fewer), shuffled."""
    from workbench.data.splits import mix_tasks

    available = sum(len(s) for s in earlier)
    count = min(count, available)
    if count <= 0:
        return earlier[0].select([])
    datasets = {f"stage-{i + 1}": rows for i, rows in enumerate(earlier) if len(rows)}
    sizes = {name: len(rows) for name, rows in datasets.items()}
    return mix_tasks(datasets, sizes, total=count, seed=seed)


def _save_table(run, scores, stages, probe, runs) -> None:
    """Store the table so far in the stage's run directory, and rebuild its report with it."""
    from workbench.runs.report import save_forgetting

    table = sequence_table(scores, [list(s.tasks) for s in stages], probe, runs)
    save_forgetting(run.run_dir, table)
    try:
        from workbench.runs.report import write_report

        write_report(run.run_dir)
    except ImportError:  # plotly missing: the table is stored all the same
        pass
