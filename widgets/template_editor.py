"""TemplateEditor: edit a prompt template and watch, token by token, what the model learns from.

Pick a built-in template or write your own; every change renders one dataset row, tokenises
it as training will (`workbench.token_view`), and shows which tokens carry loss. A template
that cannot be parsed or rendered shows its error inline and the last good preview stays.
The results are traits (`template`, `max_length`, `completion_only`, `valid`): other panels
follow them with `observe` or `traitlets.dlink`. `findings` lists what the pre-flight checks
(`workbench.check_dataset`) find in the rows with the template shown. "Copy as code" shows
the template as library code (a built-in by name, else the whole `Template`) and the call
that tokenizes the row shown.
"""

from __future__ import annotations

import ipywidgets as widgets
import traitlets

import workbench
from workbench.interfaces import code as codegen
from workbench.runs.hyperparameters import Hyperparameters
from workbench.tokens.tokenizing import segments_view
from workbench.widgets._common import (
    Panel,
    ShowsCode,
    escape,
    findings_table,
    heading,
    html_table,
    setting_control,
    text_table,
)

CUSTOM = "custom"
# pre-wrap keeps the template's line breaks; words wrap whole (a front-end's `pre` may break
# them anywhere)
WRAP = "white-space:pre-wrap;word-break:normal;overflow-wrap:break-word"
PROMPT_STYLE = f"background:#eeeeee;color:#444;padding:4px;margin:0;{WRAP}"
RESPONSE_STYLE = f"background:#c8f7c5;color:#111;padding:4px;margin:0;{WRAP}"
# the last good preview, while the template being edited does not render
STALE = (
    "<div style='color:#b00020;font-size:12px'>The preview below is the last template that "
    "rendered; fix the error above to update it.</div><div style='opacity:0.45'>{}</div>"
)
CHECKED_ROWS = 1000  # checks rerun on each edit: 1,000 rows take ~0.2 s (CPU), typing stays fluid


class TemplateEditor(ShowsCode, Panel):
    """A template picker and editor with a live token-level preview of one row.

    Children a test or a notebook can drive: `template_name` (Dropdown of built-ins + 'custom'),
    `prompt_text`, `prompt_no_input_text`, `response_text` (Textareas), `row_index` (IntSlider),
    `max_length_input` (IntText), `completion_only_checkbox`; outputs: `rendered`,
    `token_html`, `counts`, `findings_html` (HTML), `error` (ErrorArea), and `copy_button`,
    which shows `as_code()` in `code`.
    Result traits (the last settings that rendered without error): `template`, `max_length`,
    `completion_only`; `valid` is False while the error area shows a problem. Input traits:
    `examples` and `tokenizer` (either may be None: the panel then says what is missing).
    """

    dom_class = "wb-template-editor"

    template = traitlets.Instance(workbench.Template, help="last template that rendered")
    max_length = traitlets.Int(256, help="last max_length that tokenised")
    completion_only = traitlets.Bool(True, help="only the response tokens carry loss")
    valid = traitlets.Bool(True, help="False while the settings cannot render the row")
    examples = traitlets.Instance(workbench.Examples, allow_none=True, help="rows to preview")
    tokenizer = traitlets.Any(None, allow_none=True, help="the model's tokenizer")
    findings = traitlets.List(help="pre-flight findings (workbench.Finding) with the template")

    def __init__(
        self,
        tokenizer,
        examples: workbench.Examples | None,
        template="alpaca",
        max_length: int = 256,
        completion_only: bool = True,
    ) -> None:
        super().__init__()
        start = workbench.get_template(template)
        self._syncing = False  # True while the panel sets controls itself
        self.render_count = 0  # renders so far: one per change keeps typing responsive
        self._last_item, self._checked_with = None, None
        self._fresh = False  # whether the preview shows the template being edited
        with self.hold_trait_notifications():
            self.tokenizer, self.examples = tokenizer, examples
            self.template, self.max_length = start, max_length
            self.completion_only = completion_only
        self._build_controls(start, max_length)
        self._build_outputs()
        self._build_code("12em")
        self._fill_texts(start)
        self._wire()
        self.children = [
            widgets.HBox([self.template_name, self.row_index]),
            widgets.HBox([self.max_length_input, self.completion_only_checkbox]),
            self.prompt_text,
            self.prompt_no_input_text,
            self.response_text,
            self.error,
            heading("Rendered row"),
            self.rendered,
            heading("Tokens (green: carries loss)"),
            self.counts,
            self.token_html,
            self.findings_html,
            self.copy_button,
            self.code,
        ]
        self._render()

    def _build_controls(self, start: workbench.Template, max_length: int) -> None:
        names = list(workbench.TEMPLATES)
        self.template_name = widgets.Dropdown(
            options=[*names, CUSTOM],
            value=start.name if workbench.TEMPLATES.get(start.name) == start else CUSTOM,
            description="Template",
        )
        text_layout = widgets.Layout(width="100%", height="12em")  # Alpaca's prompt, whole
        self.prompt_text = widgets.Textarea(description="Prompt", layout=text_layout)
        self.prompt_no_input_text = widgets.Textarea(
            description="No input",
            placeholder="prompt for rows whose `input` is empty (optional)",
            layout=text_layout,
        )
        self.response_text = widgets.Textarea(
            description="Response", layout=widgets.Layout(width="100%", height="3em")
        )
        self.row_index = widgets.IntSlider(
            value=0, min=0, max=self._last_row(), description="Row", continuous_update=False
        )
        self.max_length_input = setting_control(
            Hyperparameters, "max_length", widgets.IntText, value=max_length
        )
        self.completion_only_checkbox = setting_control(
            Hyperparameters,
            "completion_only",
            widgets.Checkbox,
            value=self.completion_only,
            indent=False,
        )

    def _last_row(self) -> int:
        return max(len(self.examples) - 1, 0) if self.examples is not None else 0

    def _build_outputs(self) -> None:
        self.rendered = widgets.HTML()
        self.counts = widgets.HTML()
        self.token_html = widgets.HTML()
        self.findings_html = widgets.HTML()

    def _wire(self) -> None:
        self.template_name.observe(self._on_template_name, names="value")
        for text in (self.prompt_text, self.prompt_no_input_text, self.response_text):
            text.observe(self._on_text, names="value")
        for control in (self.row_index, self.max_length_input, self.completion_only_checkbox):
            control.observe(self._on_setting, names="value")
        self.observe(self._on_inputs, names=["examples", "tokenizer"])

    def _fill_texts(self, template: workbench.Template) -> None:
        """Show `template`'s texts in the editors without counting it as an edit."""
        self._syncing = True
        try:
            self.prompt_text.value = template.prompt
            self.prompt_no_input_text.value = template.prompt_no_input or ""
            self.response_text.value = template.response
            chat = template.use_chat_template
            for text in (self.prompt_text, self.prompt_no_input_text, self.response_text):
                text.disabled = chat  # the tokenizer's chat template is not text to edit
        finally:
            self._syncing = False

    # --- events -------------------------------------------------------------------------

    def _on_template_name(self, change) -> None:
        if self._syncing:
            return
        if change["new"] != CUSTOM:
            self._fill_texts(workbench.TEMPLATES[change["new"]])
        else:
            for text in (self.prompt_text, self.prompt_no_input_text, self.response_text):
                text.disabled = False
        self._render()

    def _on_text(self, change) -> None:
        if self._syncing:
            return
        if self.template_name.value != CUSTOM:
            self._syncing = True  # switching to 'custom' must not render a second time
            try:
                self.template_name.value = CUSTOM
            finally:
                self._syncing = False
        self._render()

    def _on_setting(self, change) -> None:
        if not self._syncing:
            self._render()

    def _on_inputs(self, change) -> None:
        """New rows or a tokenizer: preview again (from the first row, for new rows)."""
        if change["name"] == "examples":
            self._syncing = True  # the slider's own change must not render a second time
            try:
                self.row_index.value = 0
                self.row_index.max = self._last_row()
            finally:
                self._syncing = False
        self._render()

    # --- rendering ----------------------------------------------------------------------

    def _template_from_controls(self) -> workbench.Template:
        """The template the controls describe; raises TemplateError for a malformed one."""
        name = self.template_name.value
        if name != CUSTOM:
            return workbench.TEMPLATES[name]
        return workbench.Template(
            name=CUSTOM,
            prompt=self.prompt_text.value,
            response=self.response_text.value,
            prompt_no_input=self.prompt_no_input_text.value or None,
        )

    def _render(self) -> None:
        """Render the current row with the current settings; on error keep the last preview."""
        self.render_count += 1
        missing = self._missing_input()
        if missing:
            self._show_problem(missing)
            return
        try:
            template = self._template_from_controls()
            index = self.row_index.value
            row, where = self.examples[index], self.examples.where(index)
            segments = template.segments(row, self.tokenizer, where=where)
            tokens, item = segments_view(
                segments,
                self.tokenizer,
                max_length=self.max_length_input.value,
                completion_only=self.completion_only_checkbox.value,
            )
        except workbench.WorkbenchError as error:
            self._show_problem(error)
            return
        self._last_item = item
        self.error.clear()
        self._fresh = True
        self.rendered.value = f"<small>{escape(where)}</small>" + "".join(
            f'<pre style="{RESPONSE_STYLE if s.learned else PROMPT_STYLE}" title="{escape(s.role)}'
            f'{" (learned)" if s.learned else ""}">{escape(s.text) or "(empty)"}</pre>'
            for s in segments
            if s.text.strip() or s.learned
        )
        self.counts.value = html_table(*self._count_rows(item))
        self.token_html.value = workbench.token_view_html(tokens, item)
        self._check(template)
        # the results change last and together: observers see a finished preview
        with self.hold_trait_notifications():
            self.template, self.max_length = template, self.max_length_input.value
            self.completion_only = self.completion_only_checkbox.value
            self.valid = True
        self._refresh_code()

    def _check(self, template: workbench.Template) -> None:
        """The pre-flight checks on the first CHECKED_ROWS rows with `template`, when the
        rows or settings changed (not when only the previewed row did)."""
        settings = (self.examples, self.tokenizer, template, self.max_length_input.value)
        settings += (self.completion_only_checkbox.value,)
        last = self._checked_with
        same_objects = last is not None and all(a is b for a, b in zip(settings[:2], last))
        if same_objects and settings[2:] == last[2:]:
            return
        rows = self.examples.select(range(min(len(self.examples), CHECKED_ROWS)))
        findings = workbench.check_dataset(
            rows,
            template,
            self.tokenizer,
            max_length=settings[3],
            completion_only=settings[4],
        )
        self._checked_with, self.findings = settings, findings
        shown = findings_table(findings)
        if shown and len(rows) < len(self.examples):
            shown = f"<small>the first {len(rows)} of {len(self.examples)} rows</small>" + shown
        self.findings_html.value = shown

    def _missing_input(self) -> str:
        """What keeps the panel from previewing, or ''."""
        if self.tokenizer is None:
            return "No tokenizer yet: load a model; the preview tokenises as it will."
        if self.examples is None or not len(self.examples):
            return "The dataset has no rows to preview: load one (and fix its problems)."
        return ""

    def _show_problem(self, problem: BaseException | str) -> None:
        self.error.show(problem)
        if self._fresh:  # grey the last good preview out, once
            self._fresh = False
            self.rendered.value = STALE.format(self.rendered.value)
            self.token_html.value = STALE.format(self.token_html.value)
        self.valid = False
        self._refresh_code()

    def as_code(self) -> str:
        """Python that rebuilds `template`, `max_length` and `completion_only`, and tokenizes
        the row shown as the preview does (given `examples` and `tokenizer`)."""
        if not self.valid:
            raise ValueError(f"The template cannot render the row: {self.error.message}")
        preview = [
            "# the row shown, tokenized as training will (`examples`: your rows, `tokenizer`: the",
            "# model's); `hyperparameters` take max_length and completion_only",
            "tokens = wb.tokenize_examples(",
            f"    examples.select([{self.row_index.value}]), template, tokenizer,",
            "    max_length=max_length, completion_only=completion_only,",
            ")",
        ]
        settings = [
            codegen.template_code(self.template),
            f"max_length = {self.max_length!r}",
            f"completion_only = {self.completion_only!r}",
        ]
        return codegen.script(settings, preview)

    @property
    def preview_item(self):
        """The row shown now as training tokenises it (a `TokenizedExample`), or None."""
        return self._last_item

    def _count_rows(self, item) -> tuple[list[str], list[list]]:
        headers = ["prompt", "response (+EOS)", "total", "loss tokens", "truncated"]
        cut = item.full_length - len(item.input_ids)
        truncated = "no" if item.truncated == "none" else f"{item.truncated}: {cut} tokens cut"
        counts = [item.prompt_tokens, item.response_tokens, len(item.input_ids)]
        return headers, [[*counts, item.loss_tokens, truncated]]

    # --- without a widget frontend (StaticFallback) --------------------------------------

    def static_html(self) -> str:
        parts = [f"<b>TemplateEditor</b>: template <code>{escape(self.template.name)}</code>"]
        parts.append(f", max_length {self.max_length}, completion_only {self.completion_only}")
        if self.error.value:
            parts.append(self.error.value)
        shown = self.rendered.value + self.counts.value + self.token_html.value
        return "".join(parts) + shown + self.findings_html.value

    def static_text(self) -> str:
        text = (
            f"TemplateEditor: template {self.template.name!r}, max_length {self.max_length}, "
            f"completion_only {self.completion_only}"
        )
        if self.error.message:
            text += f"\nError: {self.error.message}"
        if self._last_item is not None:
            text += "\n" + text_table(*self._count_rows(self._last_item))
        return "\n".join([text, *map(str, self.findings)])
