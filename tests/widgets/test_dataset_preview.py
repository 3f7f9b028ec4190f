"""DatasetPreview: problems with line numbers, an explicit drop, search, tasks, split, lengths."""

from __future__ import annotations

import json

import pytest
from conftest import SAMPLE_DATA

import workbench
from workbench.widgets import DatasetPreview

MIXED = SAMPLE_DATA / "mixed_instructions.jsonl"
MISSING = SAMPLE_DATA / "broken" / "missing_fields.jsonl"


def shown(panel, part) -> bool:
    """Whether `part` is among the panel's children (at any depth) and neither it nor a box
    around it is hidden."""

    def visible_in(box) -> bool:
        for child in getattr(box, "children", ()):
            if getattr(child.layout, "display", None) == "none":  # a figure's is plotly's
                continue
            if child is part or visible_in(child):
                return True
        return False

    return visible_in(panel)


@pytest.fixture(scope="module")
def mixed():
    return workbench.load_data(MIXED, verbose=False)


def test_problems_are_listed_with_lines_and_nothing_is_dropped_silently():
    preview = DatasetPreview(source=MISSING)
    assert preview.examples is None and preview.split is None and not preview.valid
    assert [(p.row, p.field) for p in preview.problems] == [
        (2, "output"),
        (4, "instruction"),
        (5, "output"),
    ]
    for line, message in [(2, "is missing"), (4, "is empty"), (5, "is empty")]:
        assert "<td" in preview.problems_html.value
        assert f">{line}</td>" in preview.problems_html.value
        assert message in preview.problems_html.value
    assert preview.drop_button.description == "Drop 3 invalid rows"
    assert preview.drop_button.layout.display != "none"
    assert preview.drop_button in preview.children
    assert not shown(preview, preview.table)  # no table of data that did not load


def test_the_drop_button_reloads_without_the_invalid_rows():
    preview = DatasetPreview(source=MISSING)
    preview.drop_button.click()
    assert len(preview.examples) == 3
    assert preview.examples.locations == [1, 3, 6]
    assert [row[0] for row in preview.page_rows[1]] == [1, 3, 6]
    assert [p.row for p in preview.problems] == [2, 4, 5]  # still listed, as dropped
    assert "Dropped 3 invalid rows" in preview.problems_html.value
    assert preview.drop_button.layout.display == "none"
    assert ">hot<" in preview.table.value and ">fast<" in preview.table.value
    assert ">big<" not in preview.table.value
    # three rows cannot be split 90/10: said inline, not raised
    assert preview.split is None and not preview.valid  # rows, but nothing to train with
    assert "Cannot split for validation" in preview.error.message


def test_a_missing_file_is_an_inline_error():
    preview = DatasetPreview(source=SAMPLE_DATA / "nope.jsonl")
    assert preview.examples is None
    assert "does not exist" in preview.error.message


def test_format_source_and_paging(mixed):
    preview = DatasetPreview(mixed, page_size=10)
    assert "format <code>alpaca</code>" in preview.source_info.value
    assert "mixed_instructions.jsonl" in preview.source_info.value
    assert preview.page_label.value == "page 1 of 40 (400 matching rows)"
    assert preview.prev_button.disabled and not preview.next_button.disabled
    headers, rows = preview.page_rows
    assert headers[:2] == ["line", "task"] and "output" in headers
    assert [row[0] for row in rows] == mixed.locations[:10]
    assert rows[0][headers.index("output")] == mixed[0]["output"]
    first = preview.table.value
    preview.next_button.click()
    assert preview.page_label.value.startswith("page 2 of 40")
    assert [row[0] for row in preview.page_rows[1]] == mixed.locations[10:20]
    assert mixed[10]["output"] in preview.table.value  # what the data says is what is shown
    preview.prev_button.click()
    assert preview.table.value == first


def test_search_and_task_filter_change_the_rows(mixed):
    preview = DatasetPreview(mixed)
    preview.task_filter.value = "antonym"
    assert preview.task_filter.options == ("all", *mixed.tasks)
    antonyms = mixed.tasks["antonym"]
    assert f"({antonyms} matching rows)" in preview.page_label.value
    assert {row[1] for row in preview.page_rows[1]} == {"antonym"}
    preview.search.value = "HOT"  # case-insensitive, over the text fields
    assert preview.visible.rows == [
        row for row in mixed.rows if row["task"] == "antonym" and row["input"] == "hot"
    ]
    assert len(preview.visible) > 0 and ">cold<" in preview.table.value
    preview.search.value = "no such text anywhere"
    assert preview.page_rows[1] == [] and "<i>no rows</i>" in preview.table.value
    assert "(0 matching rows)" in preview.page_label.value


def test_rows_per_task_and_a_stratified_split(mixed):
    preview = DatasetPreview(mixed, validation=0.1, seed=3)
    train, validation = preview.split
    expected = workbench.split_data(mixed, 0.1, seed=3)
    assert [r for r in validation] == [r for r in expected[1]]
    assert len(train) + len(validation) == len(mixed)
    assert set(validation.tasks) == set(mixed.tasks)
    for task, count in mixed.tasks.items():
        assert f">{task}</td>" in preview.summary.value
        assert f">{count}</td>" in preview.summary.value


def test_histogram_of_token_lengths_with_the_max_length_line(mixed, tiny_tokenizer):
    preview = DatasetPreview(mixed, tokenizer=tiny_tokenizer, max_length=100)
    stats = workbench.dataset_stats(mixed, "alpaca", tiny_tokenizer, max_length=100)
    figure = preview.histogram
    assert shown(preview, figure)
    assert list(figure.data[0].x) == stats.lengths["total"].tolist()
    assert len(figure.data[0].x) == len(mixed)
    assert [shape.x0 for shape in figure.layout.shapes] == [100]
    assert f"{stats.over_max_length} of 400 over max_length=100" in figure.layout.title.text
    assert 0 < stats.over_max_length < 400  # the title's count is not trivially 0 or all
    assert preview.length_stats.over_max_length == stats.over_max_length
    preview.set_template("alpaca", max_length=300)
    assert preview.histogram is figure  # updated in place, not a new figure per refresh
    assert [shape.x0 for shape in figure.layout.shapes] == [300]
    longer = workbench.dataset_stats(mixed, "alpaca", tiny_tokenizer, max_length=300)
    assert f"{longer.over_max_length} of 400 over max_length=300" in figure.layout.title.text


def test_conversations_show_as_turns_and_measure_with_the_chat_template(tiny_tokenizer):
    preview = DatasetPreview(source=SAMPLE_DATA / "unit_chat.jsonl", tokenizer=tiny_tokenizer)
    assert "format <code>messages</code>" in preview.source_info.value
    assert "user: " in preview.table.value and "assistant: " in preview.table.value
    assert len(preview.histogram.data[0].x) == len(preview.examples)


def test_static_fallback_has_html_and_text():
    preview = DatasetPreview(source=MISSING)
    bundle = preview._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert "is missing" in bundle["text/html"]
    assert "missing_fields.jsonl:2: `output` is missing" in bundle["text/plain"]
    preview.drop_button.click()
    assert ">hot<" in preview._repr_mimebundle_()["text/html"]


def test_a_field_shared_by_every_row_is_shown_once_not_in_every_row():
    preview = DatasetPreview(source=SAMPLE_DATA / "support_tickets.jsonl")
    instruction = preview.examples[0]["instruction"]
    assert preview.shared_fields == {"instruction": instruction}
    headers, _rows = preview.page_rows
    assert "input" in headers and "instruction" not in headers
    assert preview.table.value.count(instruction) == 1
    assert "the same in every row" in preview.table.value


def test_the_result_traits_follow_the_data_and_observers_hear_them(mixed):
    preview = DatasetPreview(source=MISSING)
    heard = []
    preview.observe(lambda change: heard.append(change["name"]), names=["examples", "valid"])
    preview.examples = mixed  # rows set from outside replace the file's problems
    assert sorted(heard) == ["examples", "valid"] and preview.valid
    assert preview.problems == [] and len(preview.split[0]) + len(preview.split[1]) == 400
    assert preview.page_label.value == "page 1 of 40 (400 matching rows)"
    preview.load(SAMPLE_DATA / "nope.jsonl")
    assert preview.examples is None and not preview.valid and preview.split is None
    assert "does not exist" in preview.error.message


def test_setting_template_and_tokenizer_traits_measures_again(mixed, tiny_tokenizer):
    preview = DatasetPreview(mixed, max_length=100)
    assert preview.histogram is None and preview.length_stats is None  # no tokenizer yet
    preview.tokenizer = tiny_tokenizer
    figure = preview.histogram
    assert shown(preview, figure)
    alpaca = preview.length_stats.lengths["total"].tolist()
    preview.template = workbench.Template(
        name="short", prompt="{instruction}\n", response="{output}"
    )
    shorter = preview.length_stats.lengths["total"].tolist()
    assert preview.histogram is figure and list(figure.data[0].x) == shorter
    assert all(s < a for s, a in zip(shorter, alpaca))  # no Alpaca preamble any more


def test_the_checks_findings_are_a_trait_that_follows_the_settings(mixed, tiny_tokenizer):
    preview = DatasetPreview(mixed, tokenizer=tiny_tokenizer, max_length=256)
    assert preview.findings == workbench.check_dataset(mixed, None, tiny_tokenizer, max_length=256)
    assert [f.check for f in preview.findings] == ["labels", "learned_share"]
    assert shown(preview, preview.findings_html)
    assert "ticket_topic" in preview.findings_html.value
    preview.max_length = 100  # shorter than most Alpaca prompts: their answers are cut off
    assert preview.findings == workbench.check_dataset(mixed, None, tiny_tokenizer, max_length=100)
    assert {"nothing_to_learn", "truncation"} <= {f.check for f in preview.findings}
    assert "warning [nothing_to_learn]" in preview.static_text()


def test_without_rows_there_are_no_findings_and_without_a_tokenizer_only_text_checks(mixed):
    assert DatasetPreview(source=MISSING).findings == []
    preview = DatasetPreview(mixed)
    assert [f.check for f in preview.findings] == ["labels", "tokens"]  # tokens: not checked


def test_copy_as_code_loads_drops_splits_and_filters_the_same_rows(tmp_path):
    path = tmp_path / "faq.jsonl"
    records = [{"question": f"How do I reset item {i}?", "answer": f"Press {i}."} for i in range(9)]
    records.insert(4, {"question": "A row without an answer"})  # invalid: dropped explicitly
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    columns = {"question": "instruction", "answer": "output"}
    preview = DatasetPreview(source=str(path), columns=columns, task="faq", validation=3, seed=1)
    preview.drop_button.click()
    preview.search.value = "item 7"
    assert preview.code.layout.display == "none"
    preview.copy_button.click()
    code = preview.code.value
    assert "columns={'question': 'instruction', 'answer': 'output'}" in code
    assert "task='faq'" in code and "drop_invalid=True" in code
    namespace: dict = {}
    with pytest.warns(UserWarning, match="dropped 1 invalid row"):
        exec(code, namespace)
    assert namespace["examples"].rows == preview.examples.rows
    assert [r["task"] for r in namespace["examples"].rows] == ["faq"] * 9
    train, validation = preview.split
    assert namespace["train"].rows == train.rows
    assert namespace["validation"].rows == validation.rows
    assert namespace["shown"].rows == preview.visible.rows and len(preview.visible) == 1
    preview.search.value = ""  # the shown code follows the filters
    assert "shown =" not in preview.code.value
    preview.code.value = "edited"  # read-only: an edit is undone
    assert preview.code.value.startswith("import workbench as wb")


def test_rows_given_as_examples_are_written_into_the_code(mixed):
    rows = mixed.select(range(6))
    preview = DatasetPreview(rows, validation=2, seed=3)
    preview.task_filter.value = rows.rows[0]["task"]
    namespace: dict = {}
    exec(preview.as_code(), namespace)
    assert namespace["examples"].rows == rows.rows
    assert namespace["train"].rows == preview.split[0].rows
    assert namespace["validation"].rows == preview.split[1].rows
    assert namespace["shown"].rows == preview.visible.rows


def test_without_rows_there_is_no_code_but_a_reason():
    preview = DatasetPreview(source=MISSING)
    preview.copy_button.click()
    assert "No rows loaded" in preview.error.message and preview.code.layout.display == "none"


def test_many_rows_given_from_a_file_are_selected_from_it_by_position(ticket_split):
    train_rows = ticket_split[0]  # 48 shuffled rows of the support tickets
    code = DatasetPreview(train_rows).as_code()
    assert "wb.load_data(" in code and ".select([" in code and "'instruction'" not in code
    namespace: dict = {}
    exec(code, namespace)
    assert namespace["examples"].rows == train_rows.rows


def test_without_rows_the_histogram_is_hidden_never_taken_out(mixed, tiny_tokenizer):
    """A figure taken out of the children and put back gets a new view, which stops drawing
    (the old one still takes the updates, and fails in the browser): it stays in place."""
    preview = DatasetPreview(mixed, tokenizer=tiny_tokenizer)
    figure, children = preview.histogram, preview.children
    preview.load(SAMPLE_DATA / "nope.jsonl")
    assert not shown(preview, figure) and not shown(preview, preview.table)
    assert preview.children == children
    preview.examples = mixed
    assert preview.histogram is figure and shown(preview, figure) and shown(preview, preview.table)
    assert preview.children == children
