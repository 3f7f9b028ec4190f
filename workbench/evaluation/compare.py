"""Before/after: answers of the base and the fine-tuned model on the same prompts, and metrics.

For a PEFT model both come from ONE model in memory: the adapter is switched off for "before".
Full fine-tuning leaves no adapter to switch off, so its "before" must be measured before
training: `needs_base_measurement` is that rule, in one place. Metrics go through `evaluate`,
using the modules shipped in `workbench/metrics/`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from workbench.data.loading import Examples
from workbench.evaluation.metrics import load_metric
from workbench.model.generation import Decoding, adapter_disabled, eval_mode, generate
from workbench.model.methods import Method
from workbench.tokens.collators import CompletionCollator
from workbench.tokens.templates import Template, get_template
from workbench.tokens.tokenizing import IGNORE_INDEX, tokenize_examples

DEFAULT_METRICS = ("exact_match", "rouge_l")


@dataclass
class Evaluation:
    """Answers and scores of one model on a set of rows."""

    prompts: list[str]
    references: list[str]
    answers: list[str]
    scores: dict[str, float]  # e.g. exact_match, rouge_l, accuracy, validation_loss, perplexity
    per_row: list[dict[str, float]]
    # each row's own question without the template (see `question_of`), for short labels
    questions: list[str] = field(default_factory=list)


def question_of(row: dict[str, Any]) -> str:
    """A row's own question, without any template around it: the instruction and input, the
    prompt or text, or the last user turn of a conversation."""
    if row.get("messages"):
        turns = [str(m.get("content", "")) for m in row["messages"] if m.get("role") == "user"]
        return turns[-1] if turns else ""
    head = row.get("instruction") or row.get("prompt") or row.get("text") or ""
    return "\n".join(str(part) for part in (head, row.get("input")) if part)


def distinct_parts(questions: list[str]) -> list[str]:
    """What differs between the questions: each without its first line when they all share
    that line and have more (one instruction over many inputs: the ticket, not the task), else
    the questions as they are. Tables label their rows and columns with it."""
    heads = {question.split("\n", 1)[0] for question in questions}
    if len(questions) > 1 and len(heads) == 1 and all("\n" in q for q in questions):
        return [question.split("\n", 1)[1] for question in questions]
    return list(questions)


def has_adapter(model) -> bool:
    """Whether `model` carries an adapter that can be switched off (a PEFT model): then its
    base answers come from the same weights with the adapter off."""
    return hasattr(model, "disable_adapter")


def needs_base_measurement(method_or_model: Method | Any) -> bool:
    """Whether the base model's answers must be measured before training, because no adapter
    will be left to switch off afterwards.

    Pass the `Method` about to train (full or freeze fine-tuning: True; LoRA, QLoRA: False),
    or a trained model (True when it has no adapter: its base weights are gone, so the base
    scores must have been taken before training).
    """
    if isinstance(method_or_model, Method):
        return not method_or_model.uses_lora
    return not has_adapter(method_or_model)


def score_answers(
    answers: list[str],
    references: list[str],
    metrics: tuple[str, ...] | list[str] = DEFAULT_METRICS,
    labels: list[str] | None = None,
) -> tuple[dict[str, float], list[dict]]:
    """Totals and per-row values of each metric (label_accuracy uses `labels`)."""
    totals: dict[str, float] = {}
    per_row: list[dict[str, float]] = [{} for _ in answers]
    for name in metrics:
        metric = load_metric(name)
        extra = {"labels": labels} if name == "label_accuracy" else {}
        result = metric.compute(predictions=answers, references=references, **extra)
        totals.update({k: float(v) for k, v in result.items()})
        if name != "label_accuracy" or labels:
            for i, (a, r) in enumerate(zip(answers, references)):
                row = metric.compute(predictions=[a], references=[r], **extra)
                per_row[i].update({k: float(v) for k, v in row.items()})
    return totals, per_row


def validation_loss(
    model,
    tokenizer,
    examples: Examples,
    template: Template | str,
    *,
    max_length: int = 256,
    batch_size: int = 8,
) -> float:
    """Mean cross-entropy per response token (what training minimises), over all rows."""
    import torch

    data = tokenize_examples(examples, get_template(template), tokenizer, max_length=max_length)
    collate = CompletionCollator(tokenizer.pad_token_id)
    total, count = 0.0, 0
    with eval_mode(model), torch.no_grad():
        for start in range(0, len(data), batch_size):
            chunk = data.examples[start : start + batch_size]
            batch = collate([{"input_ids": e.input_ids, "labels": e.labels} for e in chunk])
            batch = {k: v.to(model.device) for k, v in batch.items()}
            logits = model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).logits
            labels = batch["labels"][:, 1:]
            loss = torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
                labels.reshape(-1),
                ignore_index=IGNORE_INDEX,
                reduction="sum",
            )
            total += loss.item()
            count += int((labels != IGNORE_INDEX).sum())
    return total / max(count, 1)


def evaluate_model(
    model,
    tokenizer,
    examples: Examples,
    template: Template | str | None = None,
    *,
    metrics: tuple[str, ...] | list[str] = DEFAULT_METRICS,
    labels: list[str] | None = None,
    decoding: Decoding | None = None,
    adapter: bool = True,
    max_length: int = 256,
) -> Evaluation:
    """Generate an answer for every row and score it; `adapter=False` uses the base weights."""
    template = get_template(template, examples.format)
    pairs = [template.render(r, tokenizer, examples.where(i)) for i, r in enumerate(examples.rows)]
    prompts, references = [p for p, _ in pairs], [r for _, r in pairs]
    with adapter_disabled(model, disabled=not adapter):
        answers = generate(model, tokenizer, prompts, decoding)
        loss = validation_loss(model, tokenizer, examples, template, max_length=max_length)
    scores, per_row = score_answers(answers, references, metrics, labels)
    scores.update(validation_loss=loss, perplexity=math.exp(min(loss, 50)))
    questions = [question_of(row) for row in examples.rows]
    return Evaluation(prompts, references, answers, scores, per_row, questions)


def compare(before: Evaluation, after: Evaluation):
    """(summary, rows): a metric table (before, after, change) and a per-row answer table."""
    import pandas as pd

    names = [k for k in before.scores if k in after.scores]
    summary = pd.DataFrame(
        {
            "before": [before.scores[k] for k in names],
            "after": [after.scores[k] for k in names],
        },
        index=names,
    )
    summary["change"] = summary["after"] - summary["before"]
    rows = pd.DataFrame(
        {
            "prompt": before.prompts,
            "reference": before.references,
            "before": before.answers,
            "after": after.answers,
        }
    )
    for key in before.per_row[0] if before.per_row else {}:
        rows[f"{key}_before"] = [r.get(key) for r in before.per_row]
        rows[f"{key}_after"] = [r.get(key) for r in after.per_row]
    return summary, rows


def compare_before_after(
    model, tokenizer, examples: Examples, template: Template | str | None = None, **kwargs: Any
):
    """Base (adapter off) against fine-tuned (adapter on), one model in memory."""
    before = evaluate_model(model, tokenizer, examples, template, adapter=False, **kwargs)
    after = evaluate_model(model, tokenizer, examples, template, adapter=True, **kwargs)
    return compare(before, after)


@dataclass
class TurnScores:
    """Exact match of the answers at each assistant turn of held-out conversations, split
    into the turns before the last (which need the conversation so far) and the last."""

    earlier: float
    last: float
    earlier_turns: int
    last_turns: int
    answers: list[dict]  # row, turn, last, reference, answer, correct (0 or 1)

    def row(self) -> dict[str, float | int]:
        return {
            "exact match, earlier turns": self.earlier,
            "exact match, last turn": self.last,
            "earlier turns": self.earlier_turns,
            "last turns": self.last_turns,
        }


def score_turns(
    model,
    tokenizer,
    examples: Examples,
    template: Template | str | None = None,
    decoding: Decoding | None = None,
) -> TurnScores:
    """Answer every assistant turn of `examples` from the conversation before it (as
    `Template.turn_prompts` renders it) and score each answer by exact match."""
    template = get_template(template, examples.format)
    turns = []  # (row, turn, is the last turn, prompt, reference)
    for i, row in enumerate(examples.rows):
        pairs = template.turn_prompts(row, tokenizer, examples.where(i))
        turns += [(i, k, k == len(pairs) - 1, p, r) for k, (p, r) in enumerate(pairs)]
    prompts = [t[3] for t in turns]
    answers = generate(model, tokenizer, prompts, decoding or Decoding(max_new_tokens=8))
    _, per_answer = score_answers(answers, [t[4] for t in turns], ["exact_match"])
    records = [
        dict(row=examples.where(i), turn=k, last=last, reference=ref, answer=a, correct=s)
        for (i, k, last, _, ref), a, s in zip(
            turns, answers, (x["exact_match"] for x in per_answer)
        )
    ]
    earlier = [r["correct"] for r in records if not r["last"]]
    final = [r["correct"] for r in records if r["last"]]
    return TurnScores(_mean(earlier), _mean(final), len(earlier), len(final), records)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan
