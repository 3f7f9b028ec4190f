"""ChangeView: what fine-tuning changed in one row's answer, token by token.

For the row chosen, the reference answer's tokens are coloured by how much fine-tuning moved
their log-probability (green: more likely now, red: less), each with its before and after
values as a tooltip; below, the tuned model's own answer step by step, with the base model's
and the tuned model's top next tokens at each step and the first step where they part. Both
come from the library (`workbench.token_shifts`, `workbench.answer_alternatives`): the base
is the same PEFT model with its adapter switched off, so a fully fine-tuned model, which has
none, is refused with the reason.
"""

from __future__ import annotations

import html
import math

import ipywidgets as widgets

from workbench.evaluation.compare import has_adapter
from workbench.evaluation.shifts import (
    Alternative,
    Alternatives,
    TokenShifts,
    answer_alternatives,
    token_shifts,
)
from workbench.tokens.templates import Template, get_template
from workbench.widgets._common import CELL_STYLE, TABLE_STYLE, Panel

NO_ADAPTER = (
    "No base to compare with: this model has no adapter to switch off (full fine-tuning "
    "changed the weights themselves). Token shifts need a LoRA or QLoRA run."
)
LEGEND = (
    "<div style='font-size:12px'>Each token of the reference answer, coloured by how much "
    "fine-tuning changed its log-probability: <span style='background:rgba(0,160,0,.35)'>"
    "more likely now</span>, <span style='background:rgba(200,0,0,.3)'>less likely</span> "
    "(hover for the values).</div>"
)


class ChangeView(Panel):
    """What fine-tuning changed for one row of `examples` (given `template`, a LoRA model).

    Children: `.row` (which row), `.show_button` ("Show what changed"), `.strip_html` (the
    reference answer's tokens, coloured by their shift), `.alternatives_html` (the tuned
    answer's steps: top next tokens before and after), `.error_html`. Results: `.shifts`
    (`TokenShifts`) and `.alternatives` (`Alternatives`) of the last row shown.
    """

    dom_class = "wb-change-view"

    def __init__(
        self,
        model,
        tokenizer,
        examples=None,
        template: Template | str = "alpaca",
        *,
        top_k: int = 3,
        max_new_tokens: int = 16,
    ) -> None:
        super().__init__()
        self.model, self.tokenizer, self.examples = model, tokenizer, examples
        self.template = get_template(template)
        self.top_k, self.max_new_tokens = top_k, max_new_tokens
        self.shifts: TokenShifts | None = None
        self.alternatives: Alternatives | None = None
        last = max(len(examples) - 1, 0) if examples is not None else 0
        self.row = widgets.BoundedIntText(
            value=0, min=0, max=last, description="Row", layout=widgets.Layout(width="12em")
        )
        self.show_button = widgets.Button(
            description="Show what changed",
            icon="search",
            tooltip="Score this row's answer with the adapter off and on",
        )
        self.strip_html = widgets.HTML()
        self.alternatives_html = widgets.HTML()
        self.show_button.on_click(
            lambda _: self.in_background(self.explain, disable=(self.show_button,))
        )
        self.children = [
            widgets.HTML("<b>What fine-tuning changed, token by token</b>"),
            widgets.HBox([self.row, self.show_button]),
            self.error_html,
            self.strip_html,
            self.alternatives_html,
        ]

    def explain(self, index: int | None = None) -> None:
        """Score row `index` (default: the `row` control's) before and after, and show it."""
        if self.examples is None or not len(self.examples):
            raise ValueError("No rows: pass `examples=` (e.g. the held-out split).")
        if not has_adapter(self.model):
            raise ValueError(NO_ADAPTER)
        index = self.row.value if index is None else index
        row, where = self.examples[index], self.examples.where(index)
        self.strip_html.value = "<i>Scoring ...</i>"
        self.shifts = token_shifts(self.model, self.tokenizer, row, self.template, where=where)
        self.alternatives = answer_alternatives(
            self.model,
            self.tokenizer,
            row,
            self.template,
            top_k=self.top_k,
            max_new_tokens=self.max_new_tokens,
            where=where,
        )
        self.strip_html.value = shift_strip_html(self.shifts)
        self.alternatives_html.value = alternatives_html(self.alternatives)


def shift_strip_html(shifts: TokenShifts) -> str:
    """The answer's tokens, each shaded by its shift (green up, red down), the values as a
    tooltip, then the answer's total before and after."""
    spans = []
    for token in shifts.tokens:
        strength = min(abs(token.shift) / 3, 1.0)  # 3 nats or more: full colour
        colour = "0,160,0" if token.shift > 0 else "200,0,0"
        tip = (
            f"{token.text!r}: probability {math.exp(token.before):.3f} before, "
            f"{math.exp(token.after):.3f} after ({token.shift:+.2f} log-probability)"
        )
        spans.append(
            f"<span title='{html.escape(tip)}' style='background:rgba({colour},"
            f"{0.05 + 0.4 * strength:.2f});white-space:pre-wrap'>{html.escape(token.text)}</span>"
        )
    change = shifts.after - shifts.before
    total = (
        f"<div style='font-size:12px'>The whole answer: log-probability {shifts.before:.2f} "
        f"before, {shifts.after:.2f} after ({change:+.2f} over {len(shifts.tokens)} tokens)."
        "</div>"
    )
    return LEGEND + f"<div style='font-family:monospace'>{''.join(spans)}</div>" + total


def alternatives_html(alternatives: Alternatives) -> str:
    """The tuned model's answer step by step: the token it chose, the base model's and its
    own top next tokens, and where the base model would have answered otherwise."""
    fork = alternatives.first_fork
    lead = (
        f"The base model would have answered the same up to step {fork}, then taken another "
        "token (marked)."
        if fork is not None
        else "The base model would have chosen the same token at every step."
    )

    def options(listed: list[Alternative]) -> str:
        return ", ".join(f"{html.escape(repr(o.text))} {o.probability:.0%}" for o in listed)

    head = "".join(
        f"<th style='{CELL_STYLE}'>{c}</th>" for c in ("step", "chosen", "base's top", "tuned top")
    )
    marked = " style='background:#fff3cd'"  # the steps where the base model parts
    rows = "".join(
        f"<tr{marked if s.forked else ''}>"
        f"<td style='{CELL_STYLE}'>{s.step}</td>"
        f"<td style='{CELL_STYLE}'>{html.escape(repr(s.text))}</td>"
        f"<td style='{CELL_STYLE}'>{options(s.before)}</td>"
        f"<td style='{CELL_STYLE}'>{options(s.after)}</td></tr>"
        for s in alternatives.steps
    )
    return (
        f"<div style='font-size:12px'><b>The tuned model's own answer</b>: "
        f"{html.escape(alternatives.answer)}. {lead}</div>"
        f"<table style='{TABLE_STYLE}'><tr>{head}</tr>{rows}</table>"
    )
