"""Token ids and labels for training: IGNORE_INDEX where not learned, EOS where a response
has no end marker of its own, truncation.

A row's segments (`Template.segments`) are tokenised one by one and joined, so the boundary
between the tokens that carry loss and those that do not is exact even where a tokenizer would
merge characters across it, and the tokens before a learned segment are the prompt the model
sees at generation time.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal, TypedDict

from workbench.data.loading import Examples
from workbench.errors import WorkbenchError
from workbench.tokens.chat import TurnsCut
from workbench.tokens.segments import Segment
from workbench.tokens.templates import Template, get_template

if TYPE_CHECKING:
    from typing_extensions import Unpack  # in `typing` from Python 3.11

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
    truncated: Literal["none", "response", "prompt"]  # "response": learned tokens were lost
    segment_of: list[int] = field(default_factory=list)  # each token's segment
    segment_roles: list[str] = field(default_factory=list)  # each segment's role
    # how a conversation's turns were found ("found by offsets", "last turn only", ...; see
    # `workbench.tokens.chat`); '' for a text template's row or bare segments
    turns: TurnsCut = ""

    @property
    def loss_tokens(self) -> int:
        return sum(label != IGNORE_INDEX for label in self.labels)


class TokenizeSettings(TypedDict, total=False):
    """How `tokenize_segments` cuts and labels a row; the functions that tokenise one row
    (`tokenize_pair`, `token_view`, `row_token_view`, `segments_view`) pass these on."""

    max_length: int  # tokens kept at most (default 512)
    completion_only: bool  # only learned segments carry loss (default True)
    truncation_side: TruncationSide  # which end loses tokens first (default "right")


def tokenize_pair(
    prompt: str,
    response: str,
    tokenizer,
    *,
    add_eos: bool = True,
    **settings: Unpack[TokenizeSettings],
) -> TokenizedExample:
    """Ids and labels for one (prompt, response): two segments, the response learned.

    `truncation_side='right'` cuts the end (the response first, then the prompt);
    `'left'` cuts the start of the prompt and keeps the response whole where it fits.
    """
    return tokenize_segments(pair_segments(prompt, response, add_eos), tokenizer, **settings)


def pair_segments(prompt: str, response: str, add_eos: bool = True) -> list[Segment]:
    """A (prompt, response) as segments: the prompt not learned, the response learned."""
    return [Segment(prompt, False, "prompt"), Segment(response, True, "response", add_eos)]


def tokenize_segments(
    segments: list[Segment],
    tokenizer,
    *,
    max_length: int = 512,
    completion_only: bool = True,
    truncation_side: TruncationSide = "right",
) -> TokenizedExample:
    """Ids and labels for a row's segments, each tokenised on its own (labels line up with
    the learned text exactly). `truncation_side='right'` cuts the end; `'left'` cuts the
    start, up to the first learned token, then the end if the row is still too long."""
    if max_length < 2:
        raise WorkbenchError(f"`max_length`={max_length} is too small; use at least 2.")
    ids, learned, segment_of = [], [], []
    for index, segment in enumerate(segments):
        piece = _segment_ids(segment, tokenizer, first=index == 0)
        ids += piece
        learned += [segment.learned] * len(piece)
        segment_of += [index] * len(piece)
    full = len(ids)
    start, end = _kept_range(learned, max_length, truncation_side)
    lost = learned[:start] + learned[end:]
    truncated = "none" if full <= max_length else ("response" if any(lost) else "prompt")
    ids, learned, segment_of = ids[start:end], learned[start:end], segment_of[start:end]
    labels = [t if keep or not completion_only else IGNORE_INDEX for t, keep in zip(ids, learned)]
    return TokenizedExample(
        input_ids=ids,
        labels=labels,
        prompt_tokens=learned.count(False),
        response_tokens=learned.count(True),
        full_length=full,
        truncated=truncated,
        segment_of=segment_of,
        segment_roles=[s.role for s in segments],
    )


def _segment_ids(segment: Segment, tokenizer, first: bool) -> list[int]:
    """One segment's ids; special tokens (BOS) only at the start of the row, and not when
    the text already begins with BOS (chat templates may write it as text)."""
    bos = getattr(tokenizer, "bos_token", None)
    add_special = first and not (bos and segment.text.startswith(bos))
    ids = (
        tokenizer(segment.text, add_special_tokens=add_special)["input_ids"] if segment.text else []
    )
    if segment.eos and tokenizer.eos_token_id is not None:
        ids = ids + [tokenizer.eos_token_id]
    return ids


def _kept_range(learned: list[bool], max_length: int, side: TruncationSide) -> tuple[int, int]:
    """[start, end) of the tokens kept within `max_length`."""
    if len(learned) <= max_length:
        return 0, len(learned)
    if side == "right":
        return 0, max_length
    first_learned = learned.index(True) if True in learned else len(learned)
    start = min(len(learned) - max_length, first_learned)
    return start, start + max_length


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
            f"(cut on the {self.side}): {len(self.truncated_response)} of those rows lost learned "
            f"tokens, {len(self.truncated_prompt)} lost only prompt tokens."
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
        cut = template.cut(row, tokenizer, where=examples.where(i))
        segments = cut.segments
        if not add_eos:
            segments = [replace(s, eos=False) for s in segments]
        item = tokenize_segments(
            segments,
            tokenizer,
            max_length=max_length,
            completion_only=completion_only,
            truncation_side=truncation_side,
        )
        item = replace(item, turns=cut.turns)
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
    """One token as the model sees it in training: `part` is prompt, response or eos;
    `segment` and `role` say which piece of the row it came from (a turn, for chat)."""

    position: int
    token_id: int
    text: str
    part: Literal["prompt", "response", "eos"]
    carries_loss: bool
    segment: int = 0
    role: str = ""


def token_view(
    prompt: str,
    response: str,
    tokenizer,
    *,
    add_eos: bool = True,
    **settings: Unpack[TokenizeSettings],
) -> tuple[list[TokenInfo], TokenizedExample]:
    """Each token of one (prompt, response) with whether it carries loss, plus the example."""
    return segments_view(pair_segments(prompt, response, add_eos), tokenizer, **settings)


def row_token_view(
    row: dict, template: Template | str, tokenizer, **settings: Unpack[TokenizeSettings]
) -> tuple[list[TokenInfo], TokenizedExample]:
    """Each token of one dataset row as training sees it: every turn of a conversation, with
    every learned segment marked; the example's `turns` says how a conversation's turns were
    found ("found by offsets", "last turn only", ...)."""
    cut = get_template(template).cut(row, tokenizer)
    tokens, item = segments_view(cut.segments, tokenizer, **settings)
    return tokens, replace(item, turns=cut.turns)


def segments_view(
    segments: list[Segment], tokenizer, **settings: Unpack[TokenizeSettings]
) -> tuple[list[TokenInfo], TokenizedExample]:
    """Tokens of a row's segments (`tokenize_segments` settings), each with its segment."""
    item = tokenize_segments(segments, tokenizer, **settings)
    eos = tokenizer.eos_token_id
    tokens = []
    for pos, (token_id, label, index) in enumerate(
        zip(item.input_ids, item.labels, item.segment_of)
    ):
        segment = segments[index]
        last_of_segment = pos + 1 == len(item.input_ids) or item.segment_of[pos + 1] != index
        part = "response" if segment.learned else "prompt"
        if segment.eos and token_id == eos and last_of_segment:
            part = "eos"
        text = tokenizer.decode([token_id])
        info = TokenInfo(pos, token_id, text, part, label != IGNORE_INDEX, index, segment.role)
        tokens.append(info)
    return tokens, item


def token_view_text(tokens: list[TokenInfo]) -> str:
    """A plain-text view: tokens that carry loss are wrapped in [brackets]."""
    return "".join(f"[{t.text}]" if t.carries_loss else t.text for t in tokens)


def token_view_html(tokens: list[TokenInfo], item: TokenizedExample | None = None) -> str:
    """An HTML view: loss tokens highlighted green, prompt tokens grey, truncation marked."""
    spans = []
    for i, t in enumerate(tokens):
        if i and t.segment != tokens[i - 1].segment and t.role:  # a turn boundary
            spans.append(
                f'<span class="wb-turn" style="color:#555;font-size:10px;border-left:2px '
                f'solid #888;margin-left:3px;padding-left:2px">{html.escape(t.role)}</span>'
            )
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
