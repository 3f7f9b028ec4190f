"""DatasetPreview: load a dataset, see its problems, page through rows, and see token lengths.

Invalid rows are listed with their line numbers; dropping them is an explicit button press,
never silent. With a tokenizer, a histogram shows each row's token length against max_length.
Searching, filtering by task and finding the fields every row shares are `Examples` methods;
the panel shows their results, and the pre-flight checks (`workbench.check_dataset`) as a list
of findings. `examples`, `split`, `valid` and `findings` are traits to follow; `template`,
`max_length` and `tokenizer` are traits to set (the lengths are measured and checked again).
"Copy as code" shows the `load_data`, `split_data` and filter calls that give the same rows.
"""

from __future__ import annotations

import warnings

import ipywidgets as widgets
import traitlets

import workbench
from workbench.interfaces import code as codegen
from workbench.widgets import _dataset_views as views
from workbench.widgets._common import (
    Panel,
    ShowsCode,
    escape,
    findings_table,
    html_table,
    text_table,
)

ALL_TASKS = "all"
CELL_LIMIT = 200  # characters shown per table cell


class DatasetPreview(ShowsCode, Panel):
    """Loading report, problems, a paged and searchable table, task counts, split, lengths.

    Children a test or a notebook can drive: `search` (Text), `task_filter` (Dropdown),
    `prev_button`, `next_button`, `drop_button` (Buttons); outputs: `source_info`, `problems_html`,
    `page_label`, `table`, `summary`, `findings_html` (HTML), `histogram` (plotly FigureWidget,
    built with the first measurement and updated in place; None before) and `error` (ErrorArea).
    The parts that need rows (or a measurement) are hidden while there are none.
    `source` is loaded with `columns` and `task` as `workbench.load_data` does; `copy_button`
    shows that code in `code` (`as_code()`).
    Data shown: `visible` (rows passing the search and task filter), `page_rows` (the table's
    headers and cells), `shared_fields`, `problems`.
    """

    dom_class = "wb-dataset-preview"

    examples = traitlets.Instance(
        workbench.Examples, allow_none=True, help="the loaded rows; None while they have problems"
    )
    split = traitlets.Tuple(default_value=None, allow_none=True, help="(train, validation)")
    valid = traitlets.Bool(False, help="True when there are rows and a train/validation split")
    template = traitlets.Union(
        [traitlets.Instance(workbench.Template), traitlets.Unicode()],
        allow_none=True,
        help="the template the lengths are measured with (None: the format's default)",
    )
    max_length = traitlets.Int(256, help="the line drawn on the histogram")
    tokenizer = traitlets.Any(None, allow_none=True, help="without one, no lengths")
    findings = traitlets.List(help="the pre-flight checks' findings (workbench.Finding)")

    def __init__(
        self,
        examples: workbench.Examples | None = None,
        *,
        source=None,
        columns: dict[str, str] | None = None,
        task: str | None = None,
        tokenizer=None,
        template: workbench.Template | str | None = None,
        max_length: int = 256,
        page_size: int = 10,
        validation: float | int = 0.1,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.source, self.columns, self.task = source, columns, task
        self.page_size, self.validation, self.seed = page_size, validation, seed
        self._problems = list(examples.dropped) if examples is not None else []
        self._page, self.histogram, self._measured, self._measured_with = 0, None, None, None
        self._checked_with = None  # the settings the findings were made with
        self._loading = False  # True while `_load` sets `examples` with its own problems
        self._messages = {"split": "", "lengths": "", "checks": ""}  # shown together
        self._build()
        self._build_code("7em")
        self._build_layout()
        with self.hold_trait_notifications():
            self.tokenizer, self.template, self.max_length = tokenizer, template, max_length
            self.examples = examples
        if examples is None and source is not None:
            self._load(drop_invalid=False)
        self._show_data()
        self.observe(self._on_examples, names="examples")
        self.observe(self._on_measure_setting, names=["template", "max_length", "tokenizer"])

    def _build(self) -> None:
        self.source_info = widgets.HTML()
        self.problems_html = widgets.HTML()
        self.drop_button = widgets.Button(button_style="warning", icon="trash")
        self.drop_button.layout.display = "none"
        self.search = widgets.Text(placeholder="search the rows' text", description="Search")
        self.task_filter = widgets.Dropdown(options=[ALL_TASKS], description="Task")
        self.prev_button = widgets.Button(description="◀ prev", layout={"width": "80px"})
        self.next_button = widgets.Button(description="next ▶", layout={"width": "80px"})
        self.page_label = widgets.HTML()
        self.table = widgets.HTML()
        self.summary = widgets.HTML()
        self.findings_html = widgets.HTML()
        self.drop_button.on_click(self._drop_invalid)
        self.prev_button.on_click(lambda _: self._turn(-1))
        self.next_button.on_click(lambda _: self._turn(+1))
        self.search.observe(self._on_filter, names="value")
        self.task_filter.observe(self._on_filter, names="value")
        self._filters = widgets.HBox([self.search, self.task_filter])
        self._pager = widgets.HBox([self.prev_button, self.page_label, self.next_button])

    def _build_layout(self) -> None:
        """The children, once: the parts that need rows sit in one box, hidden without rows."""
        self._histogram_box = widgets.VBox()  # holds the histogram from its first measurement
        self._rows_box = widgets.VBox(
            [self._filters, self._pager, self.table, self.summary, self.findings_html]
            + [self._histogram_box, self.copy_button, self.code]
        )
        self.children = [
            self.source_info,
            self.error,
            self.problems_html,
            self.drop_button,
            self._rows_box,
        ]

    def _layout(self) -> None:
        """Show the table only with rows, the histogram once measured. Parts are hidden, never
        taken out of the children: a plotly figure whose view is rebuilt stops drawing (its
        old view still takes the updates, and fails)."""
        if self.histogram is not None and not self._histogram_box.children:
            self._histogram_box.children = [self.histogram]  # once: updated in place after
        self._rows_box.layout.display = None if self.examples is not None else "none"
        self._histogram_box.layout.display = None if self._measured is not None else "none"

    # --- loading ------------------------------------------------------------------------

    def load(self, source, *, columns=None, task=None) -> None:
        """Load another dataset into this panel (its problems are listed, not raised), with
        `columns` renamed and `task` for rows without one (as `workbench.load_data`)."""
        self.source, self.columns, self.task = source, columns, task
        self._load(drop_invalid=False)

    def _load(self, drop_invalid: bool) -> None:
        """Load `source`; keep its problems (and show them) instead of raising."""
        self.error.clear()
        try:
            with warnings.catch_warnings():  # the drop is reported in the panel itself
                warnings.simplefilter("ignore")
                examples = workbench.load_data(
                    self.source,
                    columns=self.columns,
                    task=self.task,
                    drop_invalid=drop_invalid,
                    verbose=False,
                )
            problems = list(examples.dropped)
        except workbench.DataValidationError as error:
            examples, problems = None, list(error.problems)
            if drop_invalid:
                self.error.show(error)
        except (workbench.WorkbenchError, OSError, TypeError) as error:
            examples, problems = None, []
            self.error.show(error)
        self._problems = problems
        if examples is self.examples:  # None again: the observer would not fire
            self._show_data()
        self._loading = True
        try:
            self.examples = examples
        finally:
            self._loading = False

    def _drop_invalid(self, _button=None) -> None:
        """Reload without the invalid rows (they stay listed, as dropped)."""
        self._load(drop_invalid=True)

    def _on_examples(self, change) -> None:
        if not self._loading:  # rows set from outside bring their own problems
            self._problems = list(change["new"].dropped) if change["new"] is not None else []
        self._show_data()

    def _show_problems(self) -> None:
        if not self._problems:
            self.problems_html.value = ""
            self.drop_button.layout.display = "none"
            return
        rows = {p.row for p in self._problems if p.row is not None}
        dropped = self.examples is not None
        self.problems_html.value = views.problems_html(self._problems, dropped)
        self.drop_button.description = f"Drop {len(rows)} invalid rows"
        self.drop_button.layout.display = "none" if dropped or not rows else None

    def _show_data(self) -> None:
        """Refresh everything that depends on the loaded examples."""
        self._show_problems()
        examples = self.examples
        if examples is None:
            where = escape(self.source) if self.source is not None else "nothing loaded"
            self.source_info.value = f"<b>Dataset</b>: {where}"
            self._measured, self.split, self.valid = None, None, False
            self._check()
            self._layout()
            return
        self.source_info.value = (
            f"<b>Dataset</b>: {escape(examples.source)}, format <code>{examples.format}</code>, "
            f"{len(examples)} rows"
        )
        self.task_filter.options = [ALL_TASKS, *examples.tasks]
        self._page = 0
        self._show_page()
        self._show_summary()
        self._measure()
        self._check()
        self._show_messages()
        self.valid = self.split is not None
        self._layout()
        self._refresh_code()

    def _show_messages(self) -> None:
        """What could not be split or measured, or nothing."""
        shown = [m for m in self._messages.values() if m]
        if shown:
            self.error.show("\n".join(shown))
        else:
            self.error.clear()

    # --- paging and filtering -----------------------------------------------------------

    @property
    def visible(self) -> workbench.Examples | None:
        """The rows that pass the task filter and the search (None without data)."""
        if self.examples is None:
            return None
        task = None if self.task_filter.value == ALL_TASKS else self.task_filter.value
        return self.examples.where_task(task).search(self.search.value)

    @property
    def shared_fields(self) -> dict[str, str]:
        """Fields with the same text in every row: shown once above the table."""
        return self.examples.constant_fields() if self.examples is not None else {}

    def _on_filter(self, change) -> None:
        self._page = 0
        self._show_page()
        self._refresh_code()

    def _turn(self, step: int) -> None:
        self._page += step
        self._show_page()

    @property
    def page_rows(self) -> tuple[list[str], list[list[str]]]:
        """Headers and cells of the table on the current page (line, task, then fields)."""
        visible = self.visible
        if visible is None:
            return [], []
        pages = max(1, -(-len(visible) // self.page_size))
        self._page = min(max(self._page, 0), pages - 1)
        start = self._page * self.page_size
        page = visible.select(range(start, min(start + self.page_size, len(visible))))
        shared = self.shared_fields
        columns = list(dict.fromkeys(k for row in page for k in row if k != "task"))
        columns = [c for c in columns if c not in shared]  # shown once, above the table
        rows = [
            [location, row["task"], *(views.cell(row.get(c)) for c in columns)]
            for location, row in zip(page.locations, page.rows)
        ]
        return ["line", "task", *columns], rows

    def _show_page(self) -> None:
        if self.examples is None:
            return
        headers, rows = self.page_rows
        shared = "".join(
            f"<div><b>{escape(k)}</b> (the same in every row): {escape(v)}</div>"
            for k, v in self.shared_fields.items()
        )
        visible = len(self.visible)
        pages = max(1, -(-visible // self.page_size))
        self.page_label.value = f"page {self._page + 1} of {pages} ({visible} matching rows)"
        self.prev_button.disabled = self._page == 0
        self.next_button.disabled = self._page >= pages - 1
        table = html_table(headers, rows, limit=CELL_LIMIT) if rows else "<i>no rows</i>"
        self.table.value = shared + table

    # --- summary and lengths ------------------------------------------------------------

    def _show_summary(self) -> None:
        """Rows per task and split sizes; a split that fails is a message, not an exception."""
        examples, self._messages["split"] = self.examples, ""
        try:
            self.split = workbench.split_data(examples, self.validation, seed=self.seed)
        except workbench.WorkbenchError as error:
            self.split = None
            self._messages["split"] = f"Cannot split for validation: {error}"
        parts = [examples, *(self.split or ())]
        rows = [[task] + [part.tasks.get(task, 0) for part in parts] for task in examples.tasks]
        rows.append(["total", *(len(part) for part in parts)])
        headers = ["task", "rows", "train", "validation"][: 1 + len(parts)]
        share = f"{self.validation:.0%}" if isinstance(self.validation, float) else self.validation
        note = (
            f"<div style='font-size:12px'><i>The panel's own split: validation {share} of "
            f"the rows, seed {self.seed} (its <code>split</code> trait). A notebook that keeps "
            "held-out rows aside first, or splits differently, trains on its own counts.</i></div>"
        )
        self.summary.value = "<b>Rows per task and split</b>" + html_table(headers, rows) + note

    def _measure(self) -> None:
        """Measure the token lengths and draw them in the one histogram, updated in place."""
        settings = (self.examples, self.tokenizer, self.template, self.max_length)
        last = self._measured_with
        if self._measured is not None and _same_settings(settings, last):
            return  # e.g. set_template changes two traits: one measurement is enough
        self._measured, self._messages["lengths"] = None, ""
        if self.tokenizer is None or self.examples is None:
            return
        template = self.template or workbench.default_template(self.examples.format)
        try:
            stats = workbench.dataset_stats(
                self.examples, template, self.tokenizer, max_length=self.max_length
            )
        except workbench.WorkbenchError as error:
            self._messages["lengths"] = f"Cannot measure token lengths: {error}"
            return
        self.histogram = views.draw_histogram(self.histogram, stats, self.max_length)
        self._measured, self._measured_with = stats, settings

    def _check(self) -> None:
        """The pre-flight checks on the rows (`workbench.check_dataset`), listed below them."""
        settings = (self.examples, self.tokenizer, self.template, self.max_length)
        if self._checked_with is not None and _same_settings(settings, self._checked_with):
            return
        findings, self._messages["checks"], self._checked_with = [], "", settings
        if self.examples is not None:
            try:
                findings = workbench.check_dataset(
                    self.examples, self.template, self.tokenizer, max_length=self.max_length
                )
            except workbench.WorkbenchError as error:
                self._messages["checks"] = f"Cannot check the rows: {error}"
        self.findings = findings
        self.findings_html.value = findings_table(findings)

    def _on_measure_setting(self, change) -> None:
        """Another template, max_length or tokenizer: measure again (the table stays)."""
        if self.examples is None:
            return
        self._measure()
        self._check()
        self._show_messages()
        self._layout()

    def set_template(self, template: workbench.Template | str, max_length: int | None = None):
        """Measure the token lengths again with another template (and max_length)."""
        with self.hold_trait_notifications():
            self.template = template
            self.max_length = max_length or self.max_length

    # --- results ------------------------------------------------------------------------

    @property
    def problems(self) -> list[workbench.Problem]:
        """Every problem found while loading (the dropped rows' reasons, after a drop)."""
        return list(self._problems)

    @property
    def length_stats(self):
        """The token lengths last measured (`workbench.dataset_stats`), or None."""
        return self._measured

    def as_code(self) -> str:
        """Python that loads these rows, splits them as here and filters them as the table
        does (`examples`, `train`, `validation`, `shown`)."""
        task = None if self.task_filter.value == ALL_TASKS else self.task_filter.value
        return codegen.script(self.rows_code() + codegen.filter_code(task, self.search.value))

    def rows_code(self) -> list[str]:
        """The lines that bind `examples` as loaded here, and `train` and `validation`."""
        if self.examples is None:
            raise ValueError("No rows loaded yet: load a dataset (and fix its problems) first.")
        lines = codegen.rows_code(self.examples, self.source, columns=self.columns, task=self.task)
        if self.split is not None:
            lines += codegen.split_code(self.validation, self.seed)
        return lines

    def static_html(self) -> str:
        parts = [self.source_info.value, self.error.value, self.problems_html.value]
        if self.examples is not None:
            parts += [f"<div>{self.page_label.value}</div>", self.table.value, self.summary.value]
            parts.append(self.findings_html.value)
        return "".join(parts)

    def static_text(self) -> str:
        if self.examples is None:
            lines = [f"DatasetPreview: {self.source} (not loaded)"]
        else:
            lines = [f"DatasetPreview: {self.examples!r}"]
        if self.error.message:
            lines.append(f"Error: {self.error.message}")
        lines += [str(p) for p in self._problems]
        if self.examples is not None:
            lines += [self.page_label.value, text_table(*self.page_rows)]
            lines += [str(f) for f in self.findings]
        return "\n".join(lines)


def _same_settings(new: tuple, old: tuple) -> bool:
    """The same rows and tokenizer (the very objects) and an equal template and max_length."""
    return new[0] is old[0] and new[1] is old[1] and new[2:] == old[2:]
