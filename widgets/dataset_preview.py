"""DatasetPreview: load a dataset, see its problems, page through rows, and see token lengths.

Invalid rows are listed with their line numbers; dropping them is an explicit button press,
never silent. With a tokenizer, a histogram shows each row's token length against max_length.
"""

from __future__ import annotations

import warnings
from typing import Any

import ipywidgets as widgets

import workbench
from widgets._common import ErrorArea, StaticFallback, escape, html_table, text_table

ALL_TASKS = "all"
CELL_LIMIT = 200  # characters shown per table cell


def row_text_fields(row: dict[str, Any]) -> list[str]:
    """The texts of a row a search looks through (messages count by their content)."""
    texts = [v for k, v in row.items() if k != "task" and isinstance(v, str)]
    texts += [str(m.get("content", "")) for m in row.get("messages") or []]
    return texts


def cell(value: Any) -> str:
    """A row value as table text; a conversation becomes `role: content` lines."""
    if isinstance(value, list):
        return "\n".join(f"{m.get('role')}: {m.get('content')}" for m in value)
    return "" if value is None else str(value)


class DatasetPreview(StaticFallback, widgets.VBox):
    """Loading report, problems, a paged and searchable table, task counts, split, lengths.

    Children a test or a notebook can drive: `search` (Text), `task_filter` (Dropdown),
    `prev_button`, `next_button`, `drop_button` (Buttons); outputs: `source_info`, `problems_html`,
    `page_label`, `table`, `summary` (HTML), `histogram` (plotly FigureWidget or None) and
    `error` (ErrorArea).
    """

    dom_class = "wb-dataset-preview"

    def __init__(
        self,
        examples: workbench.Examples | None = None,
        *,
        source=None,
        tokenizer=None,
        template: workbench.Template | str | None = None,
        max_length: int = 256,
        page_size: int = 10,
        validation: float | int = 0.1,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.source, self.tokenizer = source, tokenizer
        self.template_setting, self.max_length = template, max_length
        self.page_size, self.validation, self.seed = page_size, validation, seed
        self._examples, self._split = examples, None
        self._problems = list(examples.dropped) if examples is not None else []
        self._page, self.histogram = 0, None
        self._build()
        if examples is None and source is not None:
            self._load(drop_invalid=False)
        self._show_data()

    def _build(self) -> None:
        self.error = ErrorArea()
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
        self.drop_button.on_click(self._drop_invalid)
        self.prev_button.on_click(lambda _: self._turn(-1))
        self.next_button.on_click(lambda _: self._turn(+1))
        self.search.observe(self._on_filter, names="value")
        self.task_filter.observe(self._on_filter, names="value")

    def _layout(self) -> None:
        children = [self.source_info, self.error, self.problems_html, self.drop_button]
        if self._examples is not None:
            children += [
                widgets.HBox([self.search, self.task_filter]),
                widgets.HBox([self.prev_button, self.page_label, self.next_button]),
                self.table,
                self.summary,
            ]
        if self.histogram is not None:
            children.append(self.histogram)
        self.children = children

    # --- loading ------------------------------------------------------------------------

    def _load(self, drop_invalid: bool) -> None:
        """Load `source`; keep its problems (and show them) instead of raising."""
        try:
            with warnings.catch_warnings():  # the drop is reported in the panel itself
                warnings.simplefilter("ignore")
                self._examples = workbench.load_data(
                    self.source, drop_invalid=drop_invalid, verbose=False
                )
            self._problems = list(self._examples.dropped)
            self.error.clear()
        except workbench.DataValidationError as error:
            self._examples, self._problems = None, list(error.problems)
            if drop_invalid:
                self.error.show(error)
        except (workbench.WorkbenchError, OSError, TypeError) as error:
            self._examples, self._problems = None, []
            self.error.show(error)

    def _drop_invalid(self, _button=None) -> None:
        """Reload without the invalid rows (they stay listed, as dropped)."""
        self._load(drop_invalid=True)
        self._show_data()

    def _show_problems(self) -> None:
        if not self._problems:
            self.problems_html.value = ""
            self.drop_button.layout.display = "none"
            return
        rows = sorted({p.row for p in self._problems if p.row is not None})
        dropped = self._examples is not None
        title = f"Dropped {len(rows)} invalid rows" if dropped else "Problems"
        table = html_table(
            ["where", "line", "field", "message"],
            [[p.source, p.row or "", p.field or "", p.message] for p in self._problems],
        )
        self.problems_html.value = (
            f"<b>{title}</b> ({len(self._problems)} problems in {len(rows)} rows)" + table
        )
        self.drop_button.description = f"Drop {len(rows)} invalid rows"
        self.drop_button.layout.display = "none" if dropped or not rows else None

    def _show_data(self) -> None:
        """Refresh everything that depends on the loaded examples."""
        self._show_problems()
        examples = self._examples
        if examples is None:
            where = escape(self.source) if self.source is not None else "nothing loaded"
            self.source_info.value = f"<b>Dataset</b>: {where}"
            self.histogram, self._split = None, None
            self._layout()
            return
        self.source_info.value = (
            f"<b>Dataset</b>: {escape(examples.source)}, format <code>{examples.format}</code>, "
            f"{len(examples)} rows"
        )
        self.task_filter.options = [ALL_TASKS, *examples.tasks]
        self._page = 0
        self._show_page()
        messages = [m for m in (self._show_summary(), self._show_histogram()) if m]
        if messages:
            self.error.show("\n".join(messages))
        else:
            self.error.clear()
        self._layout()

    # --- paging and filtering -----------------------------------------------------------

    def visible_indices(self) -> list[int]:
        """Indices of the rows that pass the search and the task filter."""
        if self._examples is None:
            return []
        needle = self.search.value.strip().lower()
        task = self.task_filter.value
        return [
            i
            for i, row in enumerate(self._examples.rows)
            if (task == ALL_TASKS or row["task"] == task)
            and (not needle or any(needle in t.lower() for t in row_text_fields(row)))
        ]

    def _on_filter(self, change) -> None:
        self._page = 0
        self._show_page()

    def _turn(self, step: int) -> None:
        self._page += step
        self._show_page()

    def _page_rows(self) -> tuple[list[str], list[list[str]]]:
        """Headers and cells of the rows on the current page."""
        examples, visible = self._examples, self.visible_indices()
        pages = max(1, -(-len(visible) // self.page_size))
        self._page = min(max(self._page, 0), pages - 1)
        shown = visible[self._page * self.page_size : (self._page + 1) * self.page_size]
        columns = list(dict.fromkeys(k for i in shown for k in examples[i] if k != "task"))
        if len(examples) > 1:  # a field equal in every row (e.g. the instruction) is shown once
            columns = [c for c in columns if c not in self._shared_fields()]
        rows = [
            [
                examples.locations[i],
                examples[i]["task"],
                *(cell(examples[i].get(c)) for c in columns),
            ]
            for i in shown
        ]
        return ["line", "task", *columns], rows

    def _shared_fields(self) -> dict[str, str]:
        """Text fields with the same value in every row."""
        rows = self._examples.rows
        return {
            k: v
            for k, v in rows[0].items()
            if k != "task" and isinstance(v, str) and v and all(r.get(k) == v for r in rows)
        }

    def _show_page(self) -> None:
        if self._examples is None:
            return
        headers, rows = self._page_rows()
        shared = "".join(
            f"<div><b>{escape(k)}</b> (the same in every row): {escape(v)}</div>"
            for k, v in self._shared_fields().items()
        )
        visible = len(self.visible_indices())
        pages = max(1, -(-visible // self.page_size))
        self.page_label.value = f"page {self._page + 1} of {pages} ({visible} matching rows)"
        self.prev_button.disabled = self._page == 0
        self.next_button.disabled = self._page >= pages - 1
        table = html_table(headers, rows, limit=CELL_LIMIT) if rows else "<i>no rows</i>"
        self.table.value = shared + table

    # --- summary and lengths ------------------------------------------------------------

    def _show_summary(self) -> str:
        """Rows per task and split sizes; returns an error message, or ''."""
        examples, message = self._examples, ""
        try:
            self._split = workbench.split_data(examples, self.validation, seed=self.seed)
        except workbench.WorkbenchError as error:
            self._split, message = None, f"Cannot split for validation: {error}"
        parts = [examples, *(self._split or ())]
        rows = [[task] + [part.tasks.get(task, 0) for part in parts] for task in examples.tasks]
        rows.append(["total", *(len(part) for part in parts)])
        headers = ["task", "rows", "train", "validation"][: 1 + len(parts)]
        self.summary.value = "<b>Rows per task and split</b>" + html_table(headers, rows)
        return message

    def _show_histogram(self) -> str:
        """The token length histogram; returns an error message, or ''."""
        self.histogram = None
        if self.tokenizer is None or self._examples is None:
            return ""
        template = self.template_setting or workbench.default_template(self._examples.format)
        try:
            stats = workbench.dataset_stats(
                self._examples, template, self.tokenizer, max_length=self.max_length
            )
        except workbench.WorkbenchError as error:
            return f"Cannot measure token lengths: {error}"
        self.histogram = length_histogram(stats, self.max_length)
        return ""

    def set_template(self, template: workbench.Template | str, max_length: int | None = None):
        """Measure the token lengths again with another template (and max_length)."""
        self.template_setting = template
        self.max_length = max_length or self.max_length
        self._show_data()

    # --- results ------------------------------------------------------------------------

    @property
    def examples(self) -> workbench.Examples | None:
        """The loaded rows (without the dropped ones), or None while the data has problems."""
        return self._examples

    @property
    def problems(self) -> list[workbench.Problem]:
        """Every problem found while loading (the dropped rows' reasons, after a drop)."""
        return list(self._problems)

    @property
    def split(self) -> tuple[workbench.Examples, workbench.Examples] | None:
        """(train, validation), stratified by task; None when there is no data or no split."""
        return self._split

    def static_html(self) -> str:
        parts = [self.source_info.value, self.error.value, self.problems_html.value]
        if self._examples is not None:
            parts += [f"<div>{self.page_label.value}</div>", self.table.value, self.summary.value]
        return "".join(parts)

    def static_text(self) -> str:
        if self._examples is None:
            lines = [f"DatasetPreview: {self.source} (not loaded)"]
        else:
            lines = [f"DatasetPreview: {self._examples!r}"]
        if self.error.message:
            lines.append(f"Error: {self.error.message}")
        lines += [str(p) for p in self._problems]
        if self._examples is not None:
            lines += [self.page_label.value, text_table(*self._page_rows())]
        return "\n".join(lines)


def length_histogram(stats, max_length: int):
    """A histogram of total token lengths with a line at max_length (plotly FigureWidget)."""
    import plotly.graph_objects as go

    lengths = stats.lengths["total"].tolist()
    over = stats.over_max_length
    figure = go.FigureWidget(
        data=[go.Histogram(x=lengths, name="rows", marker_color="#4c78a8")],
        layout=go.Layout(
            title=f"Tokens per row: {over} of {len(lengths)} over max_length={max_length}",
            xaxis_title="prompt + response tokens (with EOS)",
            yaxis_title="rows",
            height=280,
            margin={"l": 50, "r": 20, "t": 40, "b": 40},
        ),
    )
    figure.add_vline(x=max_length, line_dash="dash", line_color="#d33")
    return figure
