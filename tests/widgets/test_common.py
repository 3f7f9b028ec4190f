"""The pieces every panel shares: errors shown where they happen, one at a time, as a sentence
for a condition to fix and with a folded traceback for anything unexpected."""

from __future__ import annotations

import threading

import ipywidgets as widgets

from workbench.errors import WorkbenchError
from workbench.widgets._common import Panel
from workbench.widgets._errors import ErrorArea, set_enabled


class Bare(Panel):
    def static_html(self) -> str:
        return ""

    def static_text(self) -> str:
        return ""


def missing_rows() -> None:
    raise WorkbenchError("No rows yet: load a dataset in the Data tab.")


def broken() -> None:
    raise KeyError("input_ids")


def test_a_condition_to_fix_is_one_sentence_without_a_traceback():
    panel, area = Bare(), ErrorArea()
    panel.guard_at(area, missing_rows)
    assert area.message == "No rows yet: load a dataset in the Data tab." and area.details == ""
    assert area.value.count("No rows yet") == 1  # the sentence once, not again in a traceback
    assert "<details>" not in area.value and 'File "' not in area.value
    assert panel.error_html.value == ""  # shown beside its control, not in the panel's area


def test_an_unexpected_error_names_its_type_and_folds_its_traceback():
    panel = Bare()
    panel.guard(broken)
    area = panel.error_html
    assert area.message == "KeyError: 'input_ids'"
    assert area.details.startswith("Traceback (most recent call last)") and "broken" in area.details
    assert "<details><summary>traceback</summary>" in area.value


def test_a_new_error_replaces_the_last_and_a_success_clears_it():
    panel, area = Bare(), ErrorArea()
    panel.guard_at(area, missing_rows)
    panel.guard_at(area, broken)
    assert area.message == "KeyError: 'input_ids'" and "No rows yet" not in area.value
    assert panel.errors == ["No rows yet: load a dataset in the Data tab.", area.message]
    assert panel.guard_at(area, lambda: 42) == 42
    assert area.value == "" and area.message == "" and not area.shown


def test_work_in_the_background_clears_its_area_as_it_starts_and_refuses_a_second_request():
    panel, area = Bare(), ErrorArea()
    button = widgets.Button()
    area.show("left from the last press")
    release = threading.Event()
    assert panel.in_background(release.wait, disable=(button,), errors=area)
    assert area.value == "" and button.disabled and panel.busy
    assert not panel.in_background(missing_rows, errors=area)  # refused, with a sentence
    assert area.message.startswith("Still busy")
    release.set()
    panel.wait()
    assert not button.disabled
    panel.in_background(missing_rows, errors=area)
    panel.wait()
    assert area.message == "No rows yet: load a dataset in the Data tab."  # not stacked


def test_a_disabled_button_says_why_in_its_tooltip():
    button = widgets.Button()
    set_enabled(button, "Load a model first.", "Train")
    assert button.disabled and button.tooltip == "Load a model first."
    set_enabled(button, None, "Train")
    assert not button.disabled and button.tooltip == "Train"
