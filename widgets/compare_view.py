"""CompareView: base and fine-tuned answers side by side, word differences, metrics, a try box,
and what was learned (the trained task) beside what was retained (a forgetting probe).

For a PEFT model both columns come from ONE model: the adapter is switched off for the base
answers. A fully fine-tuned model has no base weights left, so its base column needs `before`.
"Copy as code" shows the same comparison as library calls (`compare_before_after`).
"""

from __future__ import annotations

import html

import ipywidgets as widgets
import traitlets

from workbench.evaluation.compare import (
    DEFAULT_METRICS,
    Evaluation,
    evaluate_model,
    has_adapter,
    needs_base_measurement,
)
from workbench.interfaces import code as codegen
from workbench.model.generation import Decoding, adapter_disabled, generate, reached_limit
from workbench.tokens.templates import Template, get_template, shared_instruction
from workbench.widgets._common import Panel, ShowsCode
from workbench.widgets._compare_tables import (  # the tables, here where panels have used them
    NO_BASE,
    forgetting_html,
    rows_table_html,
    summary_table_html,
    try_table_html,
    word_diff_html,
)
from workbench.widgets._errors import ErrorArea, set_enabled
from workbench.widgets.change_view import ChangeView

__all__ = ["NO_BASE", "CompareView", "rows_table_html", "summary_table_html", "word_diff_html"]
NO_ROWS = "No rows to compare: pass `examples=` (e.g. the validation split)."
RUN_TOOLTIP = "Answer the rows with both models and score them"


class CompareView(ShowsCode, Panel):
    """Before/after answers on the same rows, with per-row and total metrics.

    Children: `.run_button` ("Run comparison"), `.status` (what the comparison is doing, one
    state at a time), `.summary_html` (totals), `.table_html` (rows: prompt, reference, base,
    fine-tuned, metrics; `.show_diff` ticked shows the fine-tuned answers as word differences
    from the base), `.forgetting_html` (learned and retained, per task), `.prompt_box`,
    `.raw_prompt`, `.try_button`, `.try_output`, `.try_error`, `.changes` (a `ChangeView`: what
    fine-tuning changed in one row, token by token; None without an adapter to switch off),
    `.error_html`, `.copy_button`
    and `.code` (`as_code()`: the comparison as library calls). `state` says where the
    comparison is: `ready` (Run comparison answers the rows), `comparing`, or `done` (the
    table shows the answers; with rows, Run comparison answers them again). The button is
    enabled exactly when pressing it starts a comparison. `wait()` blocks until a button's work
    is done.
    """

    dom_class = "wb-compare-view"
    state = traitlets.Enum(("ready", "comparing", "done"), "ready", help="see the class")

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
        self._doing, self._trying = "", False
        super().__init__()
        self._build_controls()
        self._build_code("12em")
        self.children = [
            widgets.HBox([self.run_button, self.copy_button, self.status]),
            self.error_html,
            self.code,
            self.summary_html,
            self.forgetting_html,
            self.show_diff,
            self.table_html,
            widgets.HTML("<b>Try a prompt on both models</b>"),
            self.prompt_box,
            widgets.HBox([self.try_button, self.raw_prompt]),
            self.try_error,
            self.try_output,
        ]
        # token by token, where the base is this model with its adapter off
        self.changes = None
        if self.has_adapter and titles == ("base", "fine-tuned"):
            self.changes = ChangeView(model, tokenizer, examples, self.template)
            self.children = (*self.children, self.changes)
        self._set_state("done" if after is not None else "ready")

    def _build_controls(self) -> None:
        self.run_button = widgets.Button(description="Run comparison", icon="balance-scale")
        self.status = widgets.HTML()
        self.summary_html = widgets.HTML()
        self.table_html = widgets.HTML()
        self.forgetting_html = widgets.HTML()
        self.show_diff = widgets.Checkbox(
            value=False,
            description="show the fine-tuned answers as word differences from the base",
            indent=False,
            layout=widgets.Layout(width="auto"),
        )
        self.prompt_box = widgets.Textarea(
            placeholder="Type an instruction, then try it on the base and the fine-tuned model",
            layout=widgets.Layout(width="100%", height="80px"),
        )
        self.raw_prompt = widgets.Checkbox(value=False, description="raw prompt", indent=False)
        self.try_button = widgets.Button(description="Try on both", icon="play")
        self.try_output = widgets.HTML()
        self.try_error = ErrorArea()
        self.run_button.on_click(lambda _: self.compare_in_background())
        self.try_button.on_click(lambda _: self._try_in_background())
        self.raw_prompt.observe(self._on_raw_prompt, names="value")
        self.show_diff.observe(lambda _: self._draw(), names="value")

    @property
    def has_adapter(self) -> bool:
        """Whether the base column comes from this model with its adapter switched off."""
        return has_adapter(self.model)

    # -- the work behind the buttons ------------------------------------------------------
    def run_comparison(self) -> None:
        """Evaluate the rows with the adapter off (base) and on (fine-tuned), then redraw (the
        answers not measured yet: `after` None answers again with the model as it is now)."""
        if self.examples is None and (self.before is None or self.after is None):
            raise ValueError(NO_ROWS)
        settings = dict(metrics=self.metrics, labels=self.labels, decoding=self.decoding)
        if self.before is None and not needs_base_measurement(self.model):
            self.before = evaluate_model(
                self.model, self.tokenizer, self.examples, self.template, adapter=False, **settings
            )
        if self.after is None:
            self.after = evaluate_model(
                self.model, self.tokenizer, self.examples, self.template, adapter=True, **settings
            )
        self._set_state("done")

    def compare_in_background(self, doing: str = "Comparing") -> bool:
        """What Run comparison does: answer the rows again with the fine-tuned model as it is
        now (the base answers stay: the adapter switched off does not change), on a thread.
        The state is `comparing` meanwhile, then `done` (or `ready` again after an error,
        shown in the error area). Returns whether it started."""
        if self.busy:  # refused, with its sentence; the status keeps saying what runs
            return self.in_background(self.run_comparison)
        self.after = None
        self._set_state("comparing", doing)
        return self.in_background(
            self.run_comparison, disable=(self.try_button,), then=self._after_comparing
        )

    def _after_comparing(self) -> None:
        if self.after is None:  # it failed: the error area says why
            self._set_state("ready")

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
            self.wait()  # a Try still answering finishes first; then the adapter changed
            self.compare_in_background(f"Comparing after step {event.get('step')}")

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
        self.try_output.value = try_table_html(prompt, base, tuned, self.how_sent())
        return self.try_answers

    def was_cut(self, answer: str) -> bool:
        """Whether `answer` stopped at `decoding.max_new_tokens` (`reached_limit`)."""
        return reached_limit(self.tokenizer, answer, self.decoding.max_new_tokens)

    def how_sent(self) -> str:
        """How the typed text reaches the model, in a sentence."""
        if self.raw_prompt.value:
            return "The text is sent as it is (raw prompt): no template around it."
        rows = self.examples.rows if self.examples is not None else []
        shared = None if self.template.use_chat_template else shared_instruction(rows)
        if shared:
            return (
                f"The text is sent as a new input under the rows' shared instruction "
                f"({shared[:60]}{'...' if len(shared) > 60 else ''}), in the "
                f"{self.template.name} template."
            )
        return f"The text is sent as the instruction, in the {self.template.name} template."

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

    def _try_in_background(self) -> None:
        """What Try on both does, on a thread: Run comparison waits for it."""
        if self.busy:  # refused, with its sentence
            self.in_background(self.try_on_both, errors=self.try_error)
            return
        self._trying = True
        self._draw_state()
        self.try_output.value = "<i>Generating ...</i>"
        self.in_background(
            self.try_on_both,
            disable=(self.try_button,),
            then=self._after_trying,
            errors=self.try_error,
        )

    def _after_trying(self) -> None:
        self._trying = False
        if self.try_error.shown:
            self.try_output.value = ""
        self._draw_state()

    def _set_state(self, state: str, doing: str = "") -> None:
        """Go to `state` (`doing`: what the status says while comparing) and redraw."""
        self.state, self._doing = state, doing
        self._draw()
        self._draw_state()

    def _draw_state(self) -> None:
        """The status says the one state the comparison is in; the button is enabled exactly
        when pressing it starts a comparison (its tooltip says why not, otherwise)."""
        reason = None
        if self.state == "comparing":
            reason = "Comparing: the table appears when both models have answered."
        elif self._trying:
            reason = "Answering the prompt box: a moment."
        elif self.examples is None:
            reason = NO_ROWS
        set_enabled(self.run_button, reason, RUN_TOOLTIP)
        if self.state == "comparing":
            self.status.value = f"<i>{html.escape(self._doing)} ...</i>"
        elif self.state == "done":
            self.status.value = f"Compared {len(self.after.answers)} rows."
        elif self.examples is not None:
            self.status.value = (
                f"Press <b>Run comparison</b> to answer the {len(self.examples)} rows with both "
                "models."
            )
        else:
            self.status.value = f"<i>{html.escape(NO_ROWS)}</i>"

    def _on_raw_prompt(self, change) -> None:
        self.prompt_box.placeholder = (
            "Type the exact text the model continues"
            if change["new"]
            else "Type an instruction; the template wraps it"
        )

    # -- drawing --------------------------------------------------------------------------
    def _draw(self) -> None:
        try:
            self.table_html.value = rows_table_html(
                self.before, self.after, self.titles, diff=self.show_diff.value, cut=self.was_cut
            )
            self.summary_html.value = summary_table_html(self.before, self.after, self.titles)
            self.forgetting_html.value = forgetting_html(self.forgetting)
        except Exception as error:  # noqa: BLE001 - shown to the user, not swallowed
            self.show_error(error)

    def static_text(self) -> str:
        rows = len(self.after.answers) if self.after else 0
        return "\n".join([f"CompareView: {rows} rows compared; {summary_text(self)}", *self.errors])

    def static_html(self) -> str:
        return (
            f"<div><b>CompareView</b>: {self.status.value}</div>"
            + self.error_html.value
            + self.summary_html.value
            + self.forgetting_html.value
            + self.table_html.value
            + self.try_error.value
            + self.try_output.value
        )


def summary_text(view: CompareView) -> str:
    if view.after is None:
        return "press Run comparison"
    scores = view.after.scores
    return ", ".join(f"{k} {v:.3g}" for k, v in scores.items())
