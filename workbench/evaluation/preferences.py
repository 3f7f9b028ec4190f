"""Preferences measured: how much likelier the model finds the chosen answer than the rejected
one (`preference_margin`), and the pair rows every preference kind reads (`check_pairs`,
`prompt_of`). The experiment around DPO is in `workbench.experiments.preferences`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from workbench.data.loading import Examples
from workbench.errors import WorkbenchError
from workbench.model.generation import eval_mode
from workbench.tokens.collators import CompletionCollator
from workbench.tokens.templates import Template, get_template
from workbench.tokens.tokenizing import IGNORE_INDEX, tokenize_pair


def prompt_of(row: dict[str, Any], template: Template, tokenizer=None) -> str:
    """The prompt of a preference row: `instruction`/`input` through the SFT template, or the
    row's `prompt` as it is."""
    if row.get("instruction"):
        return template.render_prompt(row, tokenizer)
    return row["prompt"]


def check_pairs(pairs: Examples, what: str = "DPO") -> None:
    """Raise unless `pairs` are preference rows: `what` (DPO, ORPO, ...) names who needs them."""
    if pairs.format != "preference":
        raise WorkbenchError(
            f"{pairs.source}: {what} needs preference rows (`chosen`, `rejected` and `prompt` or "
            f"`instruction`), but these are {pairs.format!r} rows. See "
            "sample_data/preferences.jsonl."
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
