"""Catastrophic forgetting, measured: what a run learned (its tasks) beside what it kept (probes).

A `ForgettingProbe` holds held-out rows of the task being trained ("learned") and rows of tasks
the run never trains on ("retained"), answers them with a model and scores each task. Measure
the base model once, the fine-tuned one after training, and `forgetting_table(base, tuned)`
puts them side by side.

The base answers come from the adapter switched off (LoRA), or, for full fine-tuning, from the
untouched model measured before training: `measure_base` says which, and never keeps a second
copy of the weights.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

from workbench.data.loading import Examples
from workbench.errors import WorkbenchError
from workbench.evaluation.compare import Evaluation, evaluate_model, has_adapter
from workbench.evaluation.generation import Decoding
from workbench.tokens.templates import Template


def _plain_text(text: str) -> str:
    """Lowercased, accents removed, whitespace collapsed ("Reykjavík" -> "reykjavik")."""
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(stripped.lower().split())


def answer_contains(answer: str, reference: str) -> bool:
    """Whether the reference occurs in the answer as whole words, ignoring case and accents.

    A base model answers "The capital of Vietnam is Hanoi." where the reference is "Hanoi";
    exact match would call that wrong, this calls it right.
    """
    needle = _plain_text(reference)
    if not needle:
        return False
    return re.search(rf"(?<!\w){re.escape(needle)}(?!\w)", _plain_text(answer)) is not None


@dataclass
class TaskScores:
    """One model's scores per task: `score` (the task metric), `loss` (response tokens)."""

    model: str
    score: dict[str, float]
    loss: dict[str, float]
    metric: dict[str, str]
    evaluations: dict[str, Evaluation] = field(default_factory=dict, repr=False)


@dataclass
class ForgettingProbe:
    """Held-out rows of the trained task(s) and of tasks the run must not train on.

    `labels` gives a task's label set (scored by label accuracy); every other task is scored by
    `answer_contains` (the reference appears in the answer), which is fair to a base model that
    answers in sentences. `rows_per_task` caps the rows measured per task (CPU time).
    """

    target: Examples
    probe: Examples
    template: Template | str = "alpaca"
    labels: dict[str, list[str]] = field(default_factory=dict)
    rows_per_task: int = 16
    decoding: Decoding = field(default_factory=lambda: Decoding(max_new_tokens=16))

    def __post_init__(self) -> None:
        overlap = sorted(set(self.target.tasks) & set(self.probe.tasks))
        if overlap:
            raise WorkbenchError(
                f"Task(s) {overlap} are both target and probe: a probe measures tasks the run "
                "does not train on. Remove them from `probe`."
            )
        if not len(self.target) or not len(self.probe):
            raise WorkbenchError("ForgettingProbe needs rows in both `target` and `probe`.")
        if self.rows_per_task < 1:
            raise WorkbenchError(f"`rows_per_task`={self.rows_per_task} must be at least 1.")

    @property
    def target_tasks(self) -> list[str]:
        return list(self.target.tasks)

    @property
    def probe_tasks(self) -> list[str]:
        return list(self.probe.tasks)

    def check_training_rows(self, train_data: Examples) -> None:
        """Raise if the training rows hold a probe task (it would no longer measure forgetting)."""
        trained = sorted(set(train_data.tasks) & set(self.probe.tasks))
        if trained:
            raise WorkbenchError(
                f"The training rows contain probe task(s) {trained}: the probe would measure "
                "learning, not forgetting. Mix in other tasks, or probe different ones."
            )

    def rows_of(self, task: str) -> Examples:
        source = self.target if task in self.target.tasks else self.probe
        indices = [i for i, r in enumerate(source.rows) if r["task"] == task]
        return source.select(indices[: self.rows_per_task])

    def measure(self, model, tokenizer, name: str, *, adapter: bool = True) -> TaskScores:
        """Answer and score every task's rows; `adapter=False` measures a PEFT model's base."""
        scores = TaskScores(name, {}, {}, {})
        for task in self.target_tasks + self.probe_tasks:
            rows = self.rows_of(task)
            labels = self.labels.get(task)
            evaluation = evaluate_model(
                model,
                tokenizer,
                rows,
                self.template,
                metrics=["label_accuracy"] if labels else ["exact_match"],
                labels=labels,
                decoding=self.decoding,
                adapter=adapter,
            )
            if labels:
                score, metric = evaluation.scores["accuracy"], "label accuracy"
            else:
                hits = [answer_contains(a, r) for a, r in zip(evaluation.answers, rows_refs(rows))]
                score, metric = sum(hits) / len(hits), "answer contains reference"
            scores.score[task], scores.metric[task] = score, metric
            scores.loss[task] = evaluation.scores["validation_loss"]
            scores.evaluations[task] = evaluation
        return scores

    def measure_base(self, model, tokenizer) -> TaskScores:
        """The base model's scores: adapter off for a PEFT model, else the model as it is now
        (call it before full fine-tuning: the weights are about to change)."""
        # a PEFT model's base is its adapter switched off; any other model is its own base
        return self.measure(model, tokenizer, "base", adapter=not has_adapter(model))


def rows_refs(rows: Examples) -> list[str]:
    """The reference answer of each row (Alpaca `output` or `completion`)."""
    return [str(r.get("output", r.get("completion", ""))) for r in rows.rows]


def forgetting_table(base: TaskScores, tuned: TaskScores, probe: ForgettingProbe):
    """Per task: learned (target) or retained (probe), metric, base, fine-tuned, change, losses."""
    import pandas as pd

    rows = []
    for task in probe.target_tasks + probe.probe_tasks:
        rows.append(
            {
                "task": task,
                "role": "learned" if task in probe.target_tasks else "retained",
                "metric": base.metric[task],
                "base": base.score[task],
                tuned.model: tuned.score[task],
                "change": tuned.score[task] - base.score[task],
                "base loss": base.loss[task],
                f"{tuned.model} loss": tuned.loss[task],
            }
        )
    return pd.DataFrame(rows).set_index("task")


def learned_retained(base: TaskScores, tuned: list[TaskScores], probe: ForgettingProbe):
    """One row per model: mean score on the target tasks (learned) and on the probes (retained),
    and the retained share of what the base could do."""
    import pandas as pd

    def mean(scores: TaskScores, tasks: list[str], what: str = "score") -> float:
        values = getattr(scores, what)
        return sum(values[t] for t in tasks) / len(tasks)

    base_retained = mean(base, probe.probe_tasks)
    rows = []
    for scores in [base, *tuned]:
        retained = mean(scores, probe.probe_tasks)
        rows.append(
            {
                "model": scores.model,
                "learned": mean(scores, probe.target_tasks),
                "retained": retained,
                "retained / base": retained / base_retained if base_retained else None,
                "learned loss": mean(scores, probe.target_tasks, "loss"),
                "retained loss": mean(scores, probe.probe_tasks, "loss"),
            }
        )
    return pd.DataFrame(rows).set_index("model")
