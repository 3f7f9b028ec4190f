"""CompareView: base and fine-tuned answers side by side, word differences, metrics, a try box,
and what was learned (the trained task) beside what was retained (a forgetting probe).

For a PEFT model both columns come from ONE model: the adapter is switched off for the base
answers. A fully fine-tuned model has no base weights left, so its base column needs `before`.
"Copy as code" shows the same comparison as library calls (`compare_before_after`).
"""

from __future__ import annotations

import difflib
import html
import re

import ipywidgets as widgets

from workbench.evaluation.compare import (
    DEFAULT_METRICS,
    Evaluation,
    evaluate_model,
    has_adapter,
    needs_base_measurement,
)
from workbench.interfaces import code as codegen
from workbench.model.generation import Decoding, adapter_disabled, generate
from workbench.tokens.templates import Template, get_template
from workbench.widgets._common import CELL_STYLE, TABLE_STYLE, Panel, ShowsCode, html_table

CELL = CELL_STYLE
NO_BASE = (
    "No base answers: this model has no adapter to switch off (full fine-tuning changed the "
    "weights themselves). Measure the base model before training and pass it as `before=` "
    "(evaluate_model(model, tokenizer, rows) before train())."
)


def word_diff_html(a: str, b: str) -> str:
    """`b` as HTML, compared word by word with `a`: new words green, removed words struck red."""
    old, new = _words(a), _words(b)
    matcher = difflib.SequenceMatcher(None, [w.strip() for w in old], [w.strip() for w in new])
    out = []
    for op, a0, a1, b0, b1 in matcher.get_opcodes():
        if op == "equal":
            out.append(html.escape("".join(new[b0:b1])))
            continue
        if op in ("delete", "replace"):
            removed = html.escape("".join(old[a0:a1]).strip())
            out.append(f"<del style='color:#b00020;background:#fdecea'>{removed}</del> ")
        if op in ("insert", "replace"):
            added = "".join(new[b0:b1])
            tail = added[len(added.rstrip()) :]
            out.append(
                "<ins style='background:#d4f7d4;text-decoration:none'>"
                f"{html.escape(added.rstrip())}</ins>{html.escape(tail)}"
            )
    return "".join(out)


def _words(text: str) -> list[str]:
    """Words with the whitespace after them, so the text can be put back together."""
    lead = text[: len(text) - len(text.lstrip())]
    words = re.findall(r"\S+\s*", text)
    if lead and words:
        words[0] = lead + words[0]
    return words


class CompareView(ShowsCode, Panel):
    """Before/after answers on the same rows, with per-row and total metrics.

    Children: `.run_button` ("Run comparison"), `.summary_html` (totals), `.table_html` (rows:
    prompt, reference, base, fine-tuned, metrics), `.forgetting_html` (learned and retained, per
    task), `.prompt_box`, `.raw_prompt`, `.try_button`, `.try_output`, `.status`, `.error_html`,
    `.copy_button` and `.code` (`as_code()`: the comparison as library calls).
    `wait()` blocks until a button's work is done.
    """

    dom_class = "wb-compare-view"

    def __init__(
        self,
        model,
        tokenizer,
        examples=None,
        template: Template | str = "alpaca",
        *,
        before: Evaluation | None = None,
        after: Evaluation | None = None,
        decoding: Decoding | None = None,
        metrics: tuple[str, ...] | list[str] = DEFAULT_METRICS,
        labels: list[str] | None = None,
        forgetting=None,
        titles: tuple[str, str] = ("base", "fine-tuned"),
    ) -> None:
        self.model, self.tokenizer, self.examples = model, tokenizer, examples
        self.forgetting = forgetting  # a table from workbench.forgetting_table / learned_retained
        self.titles = titles  # the two columns, e.g. ("SFT", "SFT+DPO") after preference tuning
        self.template = get_template(template)
        self.before, self.after = before, after
        self.decoding = decoding or Decoding()
        self.metrics, self.labels = tuple(metrics), labels
        self.try_answers: tuple[str | None, str] | None = None
        super().__init__()
        self._build_controls(can_run=examples is not None)
        self._build_code("12em")
        self.children = [
            widgets.HBox([self.run_button, self.copy_button, self.status]),
            self.error_html,
            self.code,
            self.summary_html,
            self.forgetting_html,
            self.table_html,
            widgets.HTML("<b>Try a prompt on both models</b>"),
            self.prompt_box,
            widgets.HBox([self.try_button, self.raw_prompt]),
            self.try_output,
        ]
        self._draw()

    def _build_controls(self, can_run: bool) -> None:
        self.run_button = widgets.Button(
            description="Run comparison", icon="balance-scale", disabled=not can_run
        )
        self.status = widgets.HTML()
        self.summary_html = widgets.HTML()
        self.table_html = widgets.HTML()
        self.forgetting_html = widgets.HTML()
        self.prompt_box = widgets.Textarea(
            placeholder="Type an instruction, then try it on the base and the fine-tuned model",
            layout=widgets.Layout(width="100%", height="80px"),
        )
        self.raw_prompt = widgets.Checkbox(value=False, description="raw prompt", indent=False)
        self.try_button = widgets.Button(description="Try on both", icon="play")
        self.try_output = widgets.HTML()
        self.run_button.on_click(lambda _: self._in_background(self.run_comparison, "Comparing"))
        self.try_button.on_click(lambda _: self._in_background(self.try_on_both, "Generating"))
        self.raw_prompt.observe(self._on_raw_prompt, names="value")

    @property
    def has_adapter(self) -> bool:
        """Whether the base column comes from this model with its adapter switched off."""
        return has_adapter(self.model)

    # -- the work behind the buttons ------------------------------------------------------
    def run_comparison(self) -> None:
        """Evaluate the rows with the adapter off (base) and on (fine-tuned), then redraw."""
        if self.examples is None and (self.before is None or self.after is None):
            raise ValueError("No rows to compare: pass `examples=` (e.g. the validation split).")
        settings = dict(metrics=self.metrics, labels=self.labels, decoding=self.decoding)
        if self.before is None and not needs_base_measurement(self.model):
            self.before = evaluate_model(
                self.model, self.tokenizer, self.examples, self.template, adapter=False, **settings
            )
        if self.after is None:
            self.after = evaluate_model(
                self.model, self.tokenizer, self.examples, self.template, adapter=True, **settings
            )
        self._draw()

    def measure_forgetting(self, probe, base=None):
        """Score the probe's target and probe tasks on the base and the fine-tuned model, and
        show learned beside retained. `base` (probe.measure_base before training) is needed
        for full fine-tuning; a PEFT model's base is its adapter switched off."""
        from workbench.evaluation.forgetting import forgetting_table

        if base is None:
            if needs_base_measurement(self.model):
                raise ValueError(NO_BASE.replace("evaluate_model", "probe.measure_base"))
            base = probe.measure_base(self.model, self.tokenizer)
        tuned = probe.measure(self.model, self.tokenizer, "fine-tuned")
        self.show_forgetting(forgetting_table(base, tuned, probe))
        return self.forgetting

    def show_forgetting(self, table) -> None:
        """Show a learned/retained table (from forgetting_table or learned_retained)."""
        self.forgetting = table
        self._draw()

    def follow(self, run) -> CompareView:
        """Compare again, in the background, whenever `run` stops or finishes."""

        def on_end(event: dict) -> None:
            self.after = None  # the adapter changed; the base (adapter off) did not
            self._in_background(self.run_comparison, f"Comparing after step {event.get('step')}")

        run.add_callback("stopped", on_end)
        run.add_callback("finished", on_end)
        return self

    def try_on_both(self) -> tuple[str | None, str]:
        """Answer the prompt box with the adapter off and on; returns (base, fine-tuned)."""
        text = self.prompt_box.value
        if not text.strip():
            raise ValueError("The prompt box is empty: type an instruction first.")
        prompt = self.render_prompt(text)
        base = None
        if self.has_adapter:
            with adapter_disabled(self.model):
                base = generate(self.model, self.tokenizer, [prompt], self.decoding)[0]
        tuned = generate(self.model, self.tokenizer, [prompt], self.decoding)[0]
        self.try_answers = (base, tuned)
        self.try_output.value = self._try_html(prompt, base, tuned)
        return self.try_answers

    def render_prompt(self, text: str) -> str:
        """What the model is given: the template around `text`, or `text` itself (raw)."""
        if self.raw_prompt.value:
            return text
        rows = self.examples.rows if self.examples is not None else None
        return self.template.prompt_for_text(text, self.tokenizer, rows) or text

    def as_code(self) -> str:
        """The comparison as library calls: these rows and template, answered with the adapter
        off and on (or after training, against `before`), scored with these metrics."""
        if self.examples is None:
            raise ValueError("No rows to compare: pass `examples=` (e.g. the validation split).")
        needs = ["# `model` and `tokenizer`: the fine-tuned model (run.model) and its tokenizer"]
        if not self.has_adapter:  # full fine-tuning: the base answers came from before training
            needs.append("# `before`: wb.evaluate_model(model, tokenizer, rows, template), taken")
            needs.append("# before training (no adapter is left to switch off)")
        compare = codegen.compare_code(
            before=not self.has_adapter,
            metrics=self.metrics,
            labels=self.labels,
            decoding=self.decoding,
        )
        rows = codegen.examples_code(self.examples, "rows")
        return codegen.script(needs, rows, [codegen.template_code(self.template)], compare)

    def _in_background(self, fn, doing: str) -> None:
        """A button's work on a thread (Panel.in_background), saying what it is doing."""
        if self.busy:  # refused below; the status keeps saying what is still running
            self.in_background(fn)
            return
        self.status.value = f"<i>{doing} ...</i>"
        self.in_background(
            fn,
            disable=(self.run_button, self.try_button),
            then=lambda: setattr(self.status, "value", ""),
        )

    def _on_raw_prompt(self, change) -> None:
        self.prompt_box.placeholder = (
            "Type the exact text the model continues"
            if change["new"]
            else "Type an instruction; the template wraps it"
        )

    # -- drawing --------------------------------------------------------------------------
    def _draw(self) -> None:
        try:
            self.table_html.value = rows_table_html(self.before, self.after, self.titles)
            self.summary_html.value = summary_table_html(self.before, self.after, self.titles)
            self.forgetting_html.value = forgetting_html(self.forgetting)
        except Exception as error:  # noqa: BLE001 - shown to the user, not swallowed
            self.show_error(error)

    def _try_html(self, prompt: str, base: str | None, tuned: str) -> str:
        base_cell = html.escape(base) if base is not None else f"<i>{html.escape(NO_BASE)}</i>"
        tuned_cell = word_diff_html(base, tuned) if base is not None else html.escape(tuned)
        return (
            f"<details><summary>prompt sent ({len(prompt)} characters)</summary>"
            f"<pre style='white-space:pre-wrap'>{html.escape(prompt)}</pre></details>"
            f"<table style='{TABLE_STYLE};width:100%'><tr>"
            f"<th style='{CELL}'>base</th><th style='{CELL}'>fine-tuned</th></tr><tr>"
            f"<td style='{CELL};white-space:pre-wrap;width:50%'>{base_cell}</td>"
            f"<td style='{CELL};white-space:pre-wrap;width:50%'>{tuned_cell}</td></tr></table>"
        )

    def static_text(self) -> str:
        rows = len(self.after.answers) if self.after else 0
        return "\n".join([f"CompareView: {rows} rows compared; {summary_text(self)}", *self.errors])

    def static_html(self) -> str:
        return (
            "<div><b>CompareView</b></div>"
            + self.error_html.value
            + self.summary_html.value
            + self.forgetting_html.value
            + self.table_html.value
            + self.try_output.value
        )


def forgetting_html(table) -> str:
    """Learned (trained tasks) and retained (probe tasks) side by side, as an HTML table."""
    if table is None:
        return ""
    frame = table.reset_index()
    columns = [str(c) for c in frame.columns]
    rows = [[_cell_text(v) for v in record] for record in frame.itertuples(index=False)]
    return "<div><b>Learned and retained</b> (forgetting probe)</div>" + html_table(columns, rows)


def _cell_text(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def summary_text(view: CompareView) -> str:
    if view.after is None:
        return "press Run comparison"
    scores = view.after.scores
    return ", ".join(f"{k} {v:.3g}" for k, v in scores.items())


def summary_table_html(
    before: Evaluation | None,
    after: Evaluation | None,
    titles: tuple[str, str] = ("base", "fine-tuned"),
) -> str:
    """Totals per metric: base, fine-tuned (or the given column titles) and the change."""
    if after is None:
        return "<i>Press <b>Run comparison</b> to answer the rows with both models.</i>"
    head = "".join(
        f"<th style='{CELL}'>{html.escape(c)}</th>" for c in ("metric", *titles, "change")
    )
    rows = []
    for name, value in after.scores.items():
        old = before.scores.get(name) if before else None
        change = "" if old is None else f"{value - old:+.3g}"
        rows.append(
            f"<tr><td style='{CELL}'>{html.escape(name)}</td><td style='{CELL}'>"
            f"{'' if old is None else f'{old:.3g}'}</td><td style='{CELL}'>{value:.3g}</td>"
            f"<td style='{CELL}'>{change}</td></tr>"
        )
    note = "" if before is not None else f"<div><i>{html.escape(NO_BASE)}</i></div>"
    return f"{note}<table style='{TABLE_STYLE}'><tr>{head}</tr>{''.join(rows)}</table>"


def rows_table_html(
    before: Evaluation | None,
    after: Evaluation | None,
    titles: tuple[str, str] = ("base", "fine-tuned"),
) -> str:
    """One row per prompt: prompt (collapsed), reference, base, fine-tuned (diffed), metrics."""
    if after is None:
        return ""
    if before is not None and len(before.answers) != len(after.answers):
        raise ValueError(
            f"`before` has {len(before.answers)} rows but `after` has {len(after.answers)}: "
            "evaluate both on the same rows."
        )
    names = list(after.per_row[0]) if after.per_row else []
    columns = ["#", "prompt", "reference", *titles, *names]
    head = "".join(f"<th style='{CELL}'>{html.escape(c)}</th>" for c in columns)
    body = [_row_html(i, before, after, names) for i in range(len(after.answers))]
    return f"<table style='{TABLE_STYLE}'><tr>{head}</tr>{''.join(body)}</table>"


def _row_html(i: int, before: Evaluation | None, after: Evaluation, names: list[str]) -> str:
    prompt = after.prompts[i]
    short = _gist(after, i)
    base = before.answers[i] if before else None
    cells = [
        str(i + 1),
        f"<details><summary>{html.escape(short)}</summary>"
        f"<pre style='white-space:pre-wrap'>{html.escape(prompt)}</pre></details>",
        html.escape(after.references[i]),
        html.escape(base) if base is not None else "<i>n/a</i>",
        word_diff_html(base, after.answers[i])
        if base is not None
        else html.escape(after.answers[i]),
    ]
    for name in names:
        new = after.per_row[i].get(name)
        old = before.per_row[i].get(name) if before and before.per_row else None
        cells.append(("" if old is None else f"{old:.2f} &rarr; ") + _number(new))
    return (
        "<tr>"
        + "".join(f"<td style='{CELL};white-space:pre-wrap'>{c}</td>" for c in cells)
        + "</tr>"
    )


def _gist(evaluation: Evaluation, i: int, width: int = 60) -> str:
    """A one-line label for row `i`: the row's own question as the library gives it (the
    template left out), or the start of the prompt for evaluations made without one."""
    has_question = i < len(evaluation.questions) and evaluation.questions[i]
    text = evaluation.questions[i] if has_question else evaluation.prompts[i]
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 3] + "..."


def _number(value) -> str:
    return "" if value is None else f"{value:.2f}"
