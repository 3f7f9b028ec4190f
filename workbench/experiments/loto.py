"""Leave-one-task-out: does instruction tuning help on a task the model never trained on?

For a multi-task dataset, each task (or each cluster of similar tasks, held out together) is
held out in turn: a fresh model trains on the other tasks and is measured on the held-out one,
before and after. `leave_one_task_out(...)` does every fold in one call and returns a table.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from workbench.data.loading import Examples
from workbench.errors import WorkbenchError
from workbench.evaluation.compare import Evaluation, evaluate_model
from workbench.model.methods import Method
from workbench.runs.hyperparameters import Hyperparameters
from workbench.tokens.templates import Template
from workbench.training.finetune import train


@dataclass
class Fold:
    """One held-out group: its name, its tasks, the training rows and the held-out rows."""

    name: str
    tasks: list[str]
    train: Examples
    held_out: Examples


@dataclass
class FoldResult:
    """A fold's base and fine-tuned evaluation on the held-out rows, and its run."""

    fold: Fold
    base: Evaluation
    tuned: Evaluation
    run: Any = field(repr=False)


def task_folds(
    data: Examples, clusters: dict[str, list[str]] | None = None, *, rows_per_task: int = 16
) -> Iterator[Fold]:
    """One fold per task, or per cluster when `clusters` groups tasks ({"dates": [...], ...}).

    Every task must be in exactly one cluster; tasks left out of `clusters` form their own.
    The held-out rows are the first `rows_per_task` rows of each held-out task.
    """
    tasks = list(data.tasks)
    if len(tasks) < 2:
        raise WorkbenchError(
            f"{data.source} has {len(tasks)} task(s); leave-one-task-out needs at least two "
            "(set each row's `task`)."
        )
    groups = _groups(tasks, clusters or {})
    if len(groups) < 2:
        raise WorkbenchError("`clusters` puts every task in one group: nothing left to train on.")
    for name, members in groups.items():
        train = [i for i, r in enumerate(data.rows) if r["task"] not in members]
        held: list[int] = []
        for task in members:
            held += [i for i, r in enumerate(data.rows) if r["task"] == task][:rows_per_task]
        yield Fold(name, members, data.select(train), data.select(held))


def _groups(tasks: list[str], clusters: dict[str, list[str]]) -> dict[str, list[str]]:
    seen: dict[str, str] = {}
    problems = []
    for name, members in clusters.items():
        for task in members:
            if task not in tasks:
                problems.append(f"cluster `{name}` names task `{task}`, which is not in the data")
            elif task in seen:
                problems.append(f"task `{task}` is in clusters `{seen[task]}` and `{name}`")
            seen[task] = name
    if problems:
        raise WorkbenchError(
            "Invalid `clusters`:\n  - " + "\n  - ".join(problems) + f"\nTasks: {tasks}"
        )
    groups = {name: list(members) for name, members in clusters.items()}
    groups.update({task: [task] for task in tasks if task not in seen})
    return groups


def leave_one_task_out(
    load: Callable[[], tuple[Any, Any]],
    data: Examples,
    *,
    clusters: dict[str, list[str]] | None = None,
    template: Template | str = "alpaca",
    method: Method | None = None,
    hyperparameters: Hyperparameters | None = None,
    rows_per_task: int = 16,
    **evaluation: Any,
) -> tuple[Any, list[FoldResult]]:
    """Train on all tasks but one (or one cluster) and measure the held-out one, for each.

    `load()` returns a fresh (model, tokenizer) for every fold, e.g.
    `lambda: workbench.load_model()`. The base is measured on the fresh model before training.
    `evaluation` goes to `evaluate_model` (metrics, decoding). Returns (summary, results).
    """
    results = []
    for fold in task_folds(data, clusters, rows_per_task=rows_per_task):
        model, tokenizer = load()
        base = evaluate_model(model, tokenizer, fold.held_out, template, **evaluation)
        run = train(
            model,
            tokenizer,
            fold.train,
            None,
            template=template,
            method=method,
            hyperparameters=hyperparameters,
            samples=0,
        ).wait()
        if run.status != "finished":
            raise WorkbenchError(f"Fold `{fold.name}` did not finish: {run.status} ({run.error})")
        tuned = evaluate_model(run.model, tokenizer, fold.held_out, template, **evaluation)
        results.append(FoldResult(fold, base, tuned, run))
    return loto_table(results), results


def loto_table(results: list[FoldResult]):
    """One row per held-out group: tasks, training rows, base and fine-tuned scores."""
    import pandas as pd

    rows = []
    for result in results:
        row: dict[str, Any] = {
            "held out": result.fold.name,
            "tasks": ", ".join(result.fold.tasks),
            "train rows": len(result.fold.train),
            "held-out rows": len(result.fold.held_out),
        }
        for key, value in result.tuned.scores.items():
            row[f"{key} base"] = result.base.scores.get(key)
            row[f"{key} tuned"] = value
        rows.append(row)
    return pd.DataFrame(rows).set_index("held out")
