"""ChangeView: one row's answer scored with the adapter off and on, token by token."""

from __future__ import annotations

import pytest

import workbench
from workbench.widgets import ChangeView, CompareView


def test_a_row_shows_its_tokens_shifted_and_the_steps_where_the_models_part(lora_run, ticket_split):
    rows = ticket_split[1]
    view = ChangeView(lora_run.model, lora_run.tokenizer, rows, "alpaca", max_new_tokens=4)
    view.row.value = 1
    view.show_button.click()
    view.wait()
    assert view.errors == []
    expected = workbench.token_shifts(
        lora_run.model, lora_run.tokenizer, rows[1], "alpaca", where=rows.where(1)
    )
    assert [t.text for t in view.shifts.tokens] == [t.text for t in expected.tokens]
    assert [t.shift for t in view.shifts.tokens] == pytest.approx(
        [t.shift for t in expected.tokens]
    )
    strip = view.strip_html.value
    assert strip.count("<span title=") == len(expected.tokens) and "more likely now" in strip
    assert f"{expected.before:.2f} before, {expected.after:.2f} after" in strip
    steps = view.alternatives.steps
    assert 1 <= len(steps) <= 4 and all(len(s.after) == 3 for s in steps)
    table = view.alternatives_html.value
    assert table.count("<tr") == len(steps) + 1  # a header, then a step a row
    assert table.count("background:#fff3cd") == sum(s.forked for s in steps)


def test_without_an_adapter_there_is_no_base_to_compare_with(tiny, ticket_split):
    model, tokenizer = tiny
    view = ChangeView(model, tokenizer, ticket_split[1])
    view.show_button.click()
    view.wait()
    assert "no adapter to switch off" in view.error_html.message
    assert view.shifts is None and view.strip_html.value == ""
    compare = CompareView(model, tokenizer, ticket_split[1], before=None)
    assert compare.changes is None  # only where the base is the same model, adapter off


def test_compare_view_carries_one_for_its_rows(lora_run, ticket_split):
    compare = CompareView(lora_run.model, lora_run.tokenizer, ticket_split[1])
    assert isinstance(compare.changes, ChangeView) and compare.changes in compare.children
    assert compare.changes.examples is ticket_split[1]
    assert compare.changes.row.max == len(ticket_split[1]) - 1
