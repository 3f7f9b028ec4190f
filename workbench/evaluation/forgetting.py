"""Catastrophic forgetting, measured: what a run learned (its tasks) beside what it kept (probes).

A `ForgettingProbe` holds held-out rows of the task being trained ("learned") and rows of tasks
the run never trains on ("retained"), answers them with a model and scores each task. Measure
the base model once, the fine-tuned one after training, and `forgetting_table(base, tuned)`
puts them side by side.

The base answers come from the adapter switched off (LoRA), or, for full fine-tuning, from the
untouched model measured before training: `measure_base` says which, and never keeps a second
copy of the weights.

Tasks with one fixed answer (a label, an ISO date) can be scored `teacher_forced`: one forward
pass over prompt and reference gives both the loss and whether greedy decoding would write the
reference exactly, about half the cost of generating and then scoring the loss. Over several
seeds, `summarize_seeds` gives each setting's mean and spread, and `tradeoff_figure` plots what
each remedy kept against what it learned, across its strengths.
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass, field

from workbench.data.loading import Examples
from workbench.errors import WorkbenchError
from workbench.evaluation.compare import Evaluation, evaluate_model, has_adapter, question_of
from workbench.model.generation import Decoding, adapter_disabled, eval_mode
from workbench.model.loss import accepts_logits_to_keep, index_logits_supported
from workbench.tokens.collators import CompletionCollator
from workbench.tokens.templates import Template, get_template
from workbench.tokens.tokenizing import IGNORE_INDEX, tokenize_examples

TEACHER_FORCED = "exact answer (teacher-forced)"  # the metric name of teacher-forced tasks


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
    answers in sentences. Tasks in `teacher_forced` are scored without generating (see
    `teacher_forced_scores`): right when greedy decoding would write exactly the reference, so
    only for tasks with one fixed answer, never for a base model's sentence answers.
    `rows_per_task` caps the rows measured per task (CPU time).
    """

    target: Examples
    probe: Examples
    template: Template | str = "alpaca"
    labels: dict[str, list[str]] = field(default_factory=dict)
    rows_per_task: int = 16
    decoding: Decoding = field(default_factory=lambda: Decoding(max_new_tokens=16))
    teacher_forced: list[str] = field(default_factory=list)

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
        unknown = sorted(set(self.teacher_forced) - set(self.target.tasks) - set(self.probe.tasks))
        if unknown:
            raise WorkbenchError(
                f"`teacher_forced` names task(s) {unknown} that neither `target` nor `probe` "
                f"holds (tasks: {sorted(set(self.target.tasks) | set(self.probe.tasks))})."
            )

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
            if task in self.teacher_forced:
                with adapter_disabled(model, disabled=not adapter):
                    evaluation = teacher_forced_scores(model, tokenizer, rows, self.template)
                scores.score[task] = evaluation.scores["exact_match"]
                scores.metric[task] = TEACHER_FORCED
                scores.loss[task] = evaluation.scores["validation_loss"]
                scores.evaluations[task] = evaluation
                continue
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


def teacher_forced_scores(
    model,
    tokenizer,
    rows: Examples,
    template: Template | str,
    *,
    max_length: int = 256,
    batch_size: int = 16,
) -> Evaluation:
    """Exact match and loss of each row from one forward pass over prompt and reference.

    A row counts as right when every reference token, end-of-turn included, is the model's most
    likely next token given the prompt and the reference before it: exactly when greedy
    decoding writes the reference and stops. The loss is the mean cross-entropy per response
    token, as `validation_loss`. No answers are generated (`answers` is empty).
    """
    import torch

    template = get_template(template, rows.format)
    data = tokenize_examples(rows, template, tokenizer, max_length=max_length)
    collate = CompletionCollator(tokenizer.pad_token_id, select_logits=True)
    selective = index_logits_supported() and accepts_logits_to_keep(model)
    right: list[bool] = []
    total, count = 0.0, 0
    with eval_mode(model), torch.no_grad():
        for start in range(0, len(data.examples), batch_size):
            chunk = data.examples[start : start + batch_size]
            batch = collate([{"input_ids": e.input_ids, "labels": e.labels} for e in chunk])
            inputs = {k: batch[k].to(model.device) for k in ("input_ids", "attention_mask")}
            positions = batch["logits_positions"].to(model.device)
            if selective:  # the output layer only where a reference token is predicted
                logits = model(**inputs, logits_to_keep=positions).logits
            else:
                logits = model(**inputs).logits
                index = positions.unsqueeze(-1).expand(-1, -1, logits.shape[-1])
                logits = logits.gather(1, index)
            targets = batch["logits_targets"].to(model.device)
            scored = targets != IGNORE_INDEX
            hits = (logits.argmax(-1) == targets) | ~scored
            right += [bool(row) for row in hits.all(-1).tolist()]
            total += torch.nn.functional.cross_entropy(
                logits.float().transpose(1, 2), targets, ignore_index=IGNORE_INDEX, reduction="sum"
            ).item()
            count += int(scored.sum())
    pairs = [template.render(r, tokenizer, rows.where(i)) for i, r in enumerate(rows.rows)]
    loss = total / max(count, 1)
    return Evaluation(
        prompts=[p for p, _ in pairs],
        references=[r for _, r in pairs],
        answers=[],
        scores={
            "exact_match": sum(right) / max(len(right), 1),
            "validation_loss": loss,
            "perplexity": math.exp(min(loss, 50)),
        },
        per_row=[{"exact_match": float(r)} for r in right],
        questions=[question_of(r) for r in rows.rows],
    )


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


def summarize_seeds(
    records: list[dict],
    measures: list[str] | None = None,
    by: tuple[str, ...] = ("remedy", "strength"),
):
    """Mean and spread over seeds: one row per setting (`by`), in the order first seen.

    For each measure, its mean over the seeds and `<measure> sd` (sample standard deviation,
    NaN with one seed); `seeds` counts the seeds. `measures` defaults to every numeric column
    other than `by` and `seed`.
    """
    import pandas as pd

    if not records:
        raise WorkbenchError("summarize_seeds needs at least one record (a dict per run).")
    frame = pd.DataFrame(records)
    missing = [name for name in by if name not in frame.columns]
    if missing:
        raise WorkbenchError(
            f"The records have no {missing} column(s) to group by; they have {list(frame)}."
        )
    if measures is None:
        numeric = frame.select_dtypes("number").columns
        measures = [c for c in numeric if c not in (*by, "seed")]
    grouped = frame.groupby(list(by), sort=False, dropna=False)
    means, spreads = grouped[measures].mean(), grouped[measures].std(ddof=1)
    columns = {}
    for measure in measures:
        columns[measure] = means[measure]
        columns[f"{measure} sd"] = spreads[measure]
    columns["seeds"] = grouped.size()
    return pd.DataFrame(columns)


def mean_spread(summary, measures: list[str], decimals: int = 2):
    """`summarize_seeds`' table as text, each cell `mean ± sd` (only the mean with one seed)."""
    import pandas as pd

    def cell(mean: float, sd: float) -> str:
        if pd.isna(mean):
            return ""
        text = f"{mean:.{decimals}f}"
        return text if pd.isna(sd) else f"{text} ± {sd:.{decimals}f}"

    table = pd.DataFrame(
        {m: [cell(a, b) for a, b in zip(summary[m], summary[f"{m} sd"])] for m in measures},
        index=summary.index,
    )
    table["seeds"] = summary["seeds"]
    return table


def tradeoff_figure(
    summary,
    x: str = "learned",
    ys: tuple[str, ...] = ("kept", "retained"),
    *,
    remedy: str = "remedy",
    strength: str = "strength",
    baseline: str = "none",
    title: str = "What each remedy kept against what it learned, across its strengths",
):
    """Plotly figure, one panel per measure in `ys` against `x`: a line per remedy through its
    strengths (labelled), error bars of one sd over seeds, and the `baseline` (no remedy) as a
    star. `summary` is `summarize_seeds`' table, indexed by remedy and strength.

    Remedies compare at equal learning: a remedy helps where its curve lies above the star
    at the same `x`, not where one strength happens to keep more.
    """
    import pandas as pd
    from plotly.subplots import make_subplots

    table = summary.reset_index()
    figure = make_subplots(rows=1, cols=len(ys), subplot_titles=[f"{y} vs {x}" for y in ys])
    colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2"]
    names = [name for name in dict.fromkeys(table[remedy]) if name != baseline]
    for column, y in enumerate(ys, start=1):
        legend = column == 1  # each remedy once in the legend
        base = table[table[remedy] == baseline]
        traces = []
        if len(base):
            star = dict(symbol="star", size=14, color="black")
            traces.append(_trace(base, x, y, baseline, legend, mode="markers", marker=star))
        for index, name in enumerate(names):
            rows = table[table[remedy] == name]
            rows = rows.sort_values(strength, key=lambda s: pd.to_numeric(s, errors="coerce"))
            labels = [f"{s:g}" if isinstance(s, (int, float)) else str(s) for s in rows[strength]]
            line = dict(color=colors[index % len(colors)])
            style = dict(mode="lines+markers+text", text=labels, textposition="top center")
            traces.append(_trace(rows, x, y, name, legend, line=line, **style))
        for trace in traces:
            figure.add_trace(trace, row=1, col=column)
        figure.update_xaxes(title_text=x, row=1, col=column)
        figure.update_yaxes(title_text=y, row=1, col=column)
    figure.update_layout(title=title, height=430)
    return figure


def _trace(rows, x: str, y: str, name: str, legend: bool, **style):
    """`rows`' `y` against `x` as a plotly trace named `name`, with error bars of one sd."""
    import plotly.graph_objects as go

    return go.Scatter(
        x=rows[x],
        y=rows[y],
        error_x=_error_bars(rows, x),
        error_y=_error_bars(rows, y),
        name=name,
        legendgroup=name,
        showlegend=legend,
        **style,
    )


def _error_bars(rows, measure: str) -> dict:
    """One sd over seeds as a plotly error bar (none when the table has no sd column)."""
    spread = f"{measure} sd"
    if spread not in rows:
        return dict(visible=False)
    return dict(type="data", array=rows[spread].fillna(0).tolist(), visible=True, thickness=1)
