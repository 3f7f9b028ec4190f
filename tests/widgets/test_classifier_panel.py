"""ClassifierPanel: a classification head on a tiny model by setting controls and clicking."""

from __future__ import annotations

import pytest
import yaml
from conftest import SAMPLE_DATA

import workbench
from workbench.model.methods import Method, apply_method
from workbench.runs.report import VALIDATION_ACCURACY
from workbench.training.classification import DEFAULT_LEARNING_RATE
from workbench.widgets.classifier_panel import ClassifierPanel

TICKETS = SAMPLE_DATA / "support_tickets.jsonl"
TOPICS = ["account", "billing", "shipping", "technical"]


def test_a_head_trained_on_the_data_tab_rows_shows_accuracy_confusion_and_probabilities(tiny):
    model, tokenizer = tiny
    rows = workbench.load_data(TICKETS, verbose=False).select(range(80))
    panel = ClassifierPanel(model, tokenizer, rows)  # rows as the Data tab passes them
    assert panel.data_path.value == "" and "80 rows from the Data tab" in panel.rows_info.value
    panel.max_steps.value, panel.batch_size.value, panel.held_out.value = 8, 8, 16
    panel.learning_rate.value = 1e-2
    panel.train_button.click()
    panel.wait()
    run = panel.run
    assert panel.errors == [] and run.status == "finished", (run and run.error, panel.errors)

    config = yaml.safe_load((run.run_dir / "config.yaml").read_text())  # what the library got
    assert config["stage"] == "classify" and config["label_field"] == "output"
    assert config["labels"] == TOPICS and config["text_fields"] == ["instruction", "input"]
    assert config["data"]["rows"] == {"train": 64, "validation": 16}
    assert config["method"]["kind"] == "head" and config["hyperparameters"]["learning_rate"] == 1e-2
    assert list(panel.monitor.trace(VALIDATION_ACCURACY).x) == [0, 2, 4, 6, 8]

    last = [e for e in run.events if e["event"] == "evaluation"][-1]
    after = panel.after
    assert after.accuracy == pytest.approx(last["eval_accuracy"])
    headers, matrix = panel.confusion_table()
    assert headers == ["true \\ predicted", *TOPICS]
    assert [row[1:] for row in matrix] == last["eval_confusion_matrix"]
    assert sum(map(sum, (row[1:] for row in matrix))) == 16
    for label in TOPICS:
        assert f">{label}</td>" in panel.confusion_html.value

    headers, table = panel.rows_table()
    assert headers == ["text", "label", "predicted", *(f"p({t})" for t in TOPICS)]
    assert len(table) == 16
    for row, probabilities in zip(table, after.probabilities):
        assert row[2] == max(probabilities, key=probabilities.get)  # the most probable label
        assert sum(float(p) for p in row[3:]) == pytest.approx(1.0, abs=0.03)
    first = [e for e in run.events if e["event"] == "evaluation"][0]
    assert first["step"] == 0  # the untrained head, measured by the run and by the panel
    assert panel.before.accuracy == pytest.approx(first["eval_accuracy"])
    assert f"{after.accuracy:.2f} after head only training" in panel.accuracy_html.value
    assert "held-out accuracy" in panel._repr_mimebundle_()["text/plain"]


def test_head_plus_lora_takes_lora_s_learning_rate_and_rows_come_from_the_file():
    panel = ClassifierPanel()
    # the shipped file, shown as the README names it and found from any working directory
    assert panel.data_path.value == "sample_data/support_tickets.jsonl"
    assert "from the file" in panel.rows_info.value
    assert len(panel.rows()) == 320
    panel.method.value = "head+lora"
    assert panel.learning_rate.value == DEFAULT_LEARNING_RATE["head+lora"]
    panel.train_button.click()
    panel.wait()
    assert "No model" in panel.error_html.message and panel.run is None


def test_a_missing_label_field_or_an_adapted_model_is_named_in_the_error(tiny):
    panel = ClassifierPanel(*tiny)
    panel.label_field.value = "topic"
    panel.train_button.click()
    panel.wait()
    assert "`topic` (the label) is missing or empty" in panel.error_html.message
    assert "support_tickets.jsonl:" in panel.error_html.message  # the row, by file and line
    assert panel.run is None and not panel.train_button.disabled

    model, tokenizer = tiny
    panel.label_field.value = "output"
    panel.set_model(apply_method(model, Method()), tokenizer)  # e.g. the Train tab's model
    panel.train_button.click()
    panel.wait()
    assert "carries a LoRA adapter" in panel.error_html.message and panel.run is None
