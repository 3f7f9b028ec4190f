"""Token ids and labels for training: -100 on the prompt, EOS after the response, truncation.

The prompt and the response are tokenised separately and joined, so the boundary between the
tokens that carry loss and those that do not is exact, and it is the same boundary the model
sees at generation time (prompt only, then it continues).
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Literal

from workbench.data.loading import Examples
from workbench.errors import WorkbenchError
from workbench.tokens.templates import Template, get_template

IGNORE_INDEX = -100  # the label PyTorch's cross-entropy skips
TruncationSide = Literal["right", "left"]


@dataclass
class TokenizedExample:
    """One row as ids and labels. `truncated` says which part lost tokens, if any."""

    input_ids: list[int]
    labels: list[int]
    prompt_tokens: int  # after truncation
    response_tokens: int  # after truncation, EOS included
    full_length: int  # before truncation
    truncated: Literal["none", "response", "prompt"]

    @property
    def loss_tokens(self) -> int:
        return sum(label != IGNORE_INDEX for label in self.labels)


def tokenize_pair(
    prompt: str,
    response: str,
    tokenizer,
    *,
    max_length: int = 512,
    completion_only: bool = True,
    add_eos: bool = True,
    truncation_side: TruncationSide = "right",
) -> TokenizedExample:
    """Ids and labels for one (prompt, response).

    `truncation_side='right'` cuts the end (the response first, then the prompt);
    `'left'` cuts the start of the prompt and keeps the response whole where it fits.
    """
    if max_length < 2:
        raise WorkbenchError(f"`max_length`={max_length} is too small; use at least 2.")
    bos = getattr(tokenizer, "bos_token", None)
    add_special = not (bos and prompt.startswith(bos))  # chat templates may write BOS as text
    prompt_ids = tokenizer(prompt, add_special_tokens=add_special)["input_ids"] if prompt else []
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    if add_eos and tokenizer.eos_token_id is not None:
        response_ids = response_ids + [tokenizer.eos_token_id]
    full = len(prompt_ids) + len(response_ids)
    truncated = "none"
    if full > max_length:
        if truncation_side == "left":
            keep_prompt = max(0, max_length - len(response_ids))
            truncated = "prompt" if keep_prompt < len(prompt_ids) else "response"
            prompt_ids = prompt_ids[len(prompt_ids) - keep_prompt :] if keep_prompt else []
            response_ids = response_ids[: max_length - len(prompt_ids)]
        elif len(prompt_ids) >= max_length:
            prompt_ids, response_ids, truncated = prompt_ids[:max_length], [], "prompt"
        else:
            response_ids = response_ids[: max_length - len(prompt_ids)]
            truncated = "response"
    prompt_labels = [IGNORE_INDEX] * len(prompt_ids) if completion_only else list(prompt_ids)
    return TokenizedExample(
        input_ids=prompt_ids + response_ids,
        labels=prompt_labels + response_ids,
        prompt_tokens=len(prompt_ids),
        response_tokens=len(response_ids),
        full_length=full,
        truncated=truncated,
    )


@dataclass
class TruncationReport:
    """How many rows were cut, and where."""

    rows: int
    max_length: int
    side: TruncationSide
    truncated_response: list[int] = field(default_factory=list)  # row indices
    truncated_prompt: list[int] = field(default_factory=list)
    without_loss: list[int] = field(default_factory=list)  # rows with no token carrying loss

    @property
    def truncated(self) -> int:
        return len(self.truncated_response) + len(self.truncated_prompt)

    def __str__(self) -> str:
        if not self.truncated and not self.without_loss:
            return f"No row of {self.rows} exceeds max_length={self.max_length}."
        text = (
            f"{self.truncated} of {self.rows} rows exceed max_length={self.max_length} "
            f"(cut on the {self.side}): {len(self.truncated_response)} of those rows were cut "
            f"in the response, {len(self.truncated_prompt)} in the prompt."
        )
        if self.without_loss:
            text += (
                f" {len(self.without_loss)} rows have no token left to learn from "
                f"(rows {self.without_loss[:10]}); raise max_length or use "
                "truncation_side='left'."
            )
        return text


@dataclass
class TokenizedData:
    """A tokenised dataset and its truncation report."""

    examples: list[TokenizedExample]
    report: TruncationReport
    tasks: list[str]

    def __len__(self) -> int:
        return len(self.examples)

    def to_hf(self):
        """A `datasets.Dataset` with input_ids and labels, as the Trainer expects."""
        import datasets

        return datasets.Dataset.from_dict(
            {
                "input_ids": [e.input_ids for e in self.examples],
                "labels": [e.labels for e in self.examples],
            }
        )


def tokenize_examples(
    examples: Examples,
    template: Template | str,
    tokenizer,
    *,
    max_length: int = 512,
    completion_only: bool = True,
    add_eos: bool = True,
    truncation_side: TruncationSide = "right",
) -> TokenizedData:
    """Render every row with `template` and tokenise it; errors name the row."""
    template = get_template(template)
    report = TruncationReport(rows=len(examples), max_length=max_length, side=truncation_side)
    tokenized = []
    for i, row in enumerate(examples.rows):
        prompt, response = template.render(row, tokenizer, where=examples.where(i))
        item = tokenize_pair(
            prompt,
            response,
            tokenizer,
            max_length=max_length,
            completion_only=completion_only,
            add_eos=add_eos,
            truncation_side=truncation_side,
        )
        if item.truncated == "response":
            report.truncated_response.append(i)
        elif item.truncated == "prompt":
            report.truncated_prompt.append(i)
        if item.loss_tokens == 0:
            report.without_loss.append(i)
        tokenized.append(item)
    return TokenizedData(tokenized, report, [row["task"] for row in examples.rows])


@dataclass
class TokenInfo:
    """One token as the model sees it in training."""

    position: int
    token_id: int
    text: str
    part: Literal["prompt", "response", "eos"]
    carries_loss: bool


def token_view(
    prompt: str,
    response: str,
    tokenizer,
    *,
    max_length: int = 512,
    completion_only: bool = True,
    add_eos: bool = True,
    truncation_side: TruncationSide = "right",
) -> tuple[list[TokenInfo], TokenizedExample]:
    """Each token of one example with whether it carries loss, plus the tokenised example."""
    item = tokenize_pair(
        prompt,
        response,
        tokenizer,
        max_length=max_length,
        completion_only=completion_only,
        add_eos=add_eos,
        truncation_side=truncation_side,
    )
    eos = tokenizer.eos_token_id if add_eos else None
    tokens = []
    for pos, (token_id, label) in enumerate(zip(item.input_ids, item.labels)):
        part = "prompt" if pos < item.prompt_tokens else "response"
        if part == "response" and token_id == eos and pos == len(item.input_ids) - 1:
            part = "eos"
        tokens.append(
            TokenInfo(pos, token_id, tokenizer.decode([token_id]), part, label != IGNORE_INDEX)
        )
    return tokens, item


def token_view_text(tokens: list[TokenInfo]) -> str:
    """A plain-text view: tokens that carry loss are wrapped in [brackets]."""
    return "".join(f"[{t.text}]" if t.carries_loss else t.text for t in tokens)


def token_view_html(tokens: list[TokenInfo], item: TokenizedExample | None = None) -> str:
    """An HTML view: loss tokens highlighted green, prompt tokens grey, truncation marked."""
    spans = []
    for t in tokens:
        style = (
            "background:#c8f7c5;color:#111" if t.carries_loss else "background:#eeeeee;color:#666"
        )
        label = "loss" if t.carries_loss else "no loss"
        text = html.escape(t.text).replace("\n", "↵<br>") or "∅"
        spans.append(
            f'<span title="#{t.position} id {t.token_id} ({t.part}, {label})" '
            f'style="{style};border:1px solid #fff;padding:0 1px;'
            f'font-family:monospace;white-space:pre-wrap">{text}</span>'
        )
    if item is not None and item.truncated != "none":
        cut = item.full_length - len(item.input_ids)
        spans.append(
            f'<span style="background:#f8c4c4;color:#900;font-family:monospace">'
            f"✂ {cut} tokens cut ({item.truncated})</span>"
        )
    return '<div style="line-height:1.9">' + "".join(spans) + "</div>"
