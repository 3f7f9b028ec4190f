"""Remedies against forgetting, planned one stage at a time.

Before each stage of a sequence trains, a remedy decides what it trains on and with which
penalty (`StagePlan`), knowing the model the earlier stages left, every stage's rows and the
runs so far (`StageContext`). `REMEDIES` maps each name to its builder: None (nothing: the
baseline), "replay" (rows of the earlier stages mixed in), "ewc" (Elastic Weight
Consolidation), "si" (synaptic intelligence), "lwf" (learning without forgetting). Add one
there and `train_sequence(remedy=name)` and the Workbench's Train tab offer it; `plan_stage`
plans one stage for either.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from workbench.data.loading import Examples
from workbench.data.splits import mix_tasks
from workbench.errors import WorkbenchError
from workbench.tokens.templates import Template
from workbench.training.lwf import LearningWithoutForgetting
from workbench.training.regularizers import fisher_ewc
from workbench.training.synaptic import synaptic_intelligence


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
    return remedy_named(remedy)(context)


def replay_mix(rows: Examples, earlier: list[Examples], share: float, *, seed: int = 0):
    """`rows` plus rows drawn from `earlier` (spread over those stages by size) so that the
    earlier ones make up `share` of the result, shuffled. Asks for no more than `earlier` holds:
    with too few earlier rows, all of them are replayed (a smaller share)."""
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


def remedy_named(name: str | None) -> Remedy:
    if name not in REMEDIES:
        known = ", ".join(repr(k) for k in REMEDIES)
        raise WorkbenchError(f"`remedy`={name!r} is not known; known: {known}.")
    return REMEDIES[name]


def _spread(earlier: list[Examples], count: int, *, seed: int) -> Examples:
    """`count` rows drawn from the earlier stages in proportion to their sizes (all of them when
    they hold fewer), shuffled."""
    available = sum(len(s) for s in earlier)
    count = min(count, available)
    if count <= 0:
        return earlier[0].select([])
    datasets = {f"stage-{i + 1}": rows for i, rows in enumerate(earlier) if len(rows)}
    sizes = {name: len(rows) for name, rows in datasets.items()}
    return mix_tasks(datasets, sizes, total=count, seed=seed)
