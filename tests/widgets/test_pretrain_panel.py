"""PretrainPanel: continued pre-training of a tiny model by setting controls and clicking."""

from __future__ import annotations

import pytest
import yaml
from conftest import SAMPLE_DATA

import workbench
from workbench.runs.history import read_run
from workbench.runs.report import VALIDATION_LOSS
from workbench.training.pretraining import perplexity
from workbench.widgets.pretrain_panel import DOMAIN, PretrainPanel


def few_documents(tmp_path, name: str, source: str, count: int):
    """The first `count` documents of a sample file, as a file of their own (a fast run)."""
    lines = (DOMAIN / source).read_text(encoding="utf-8").splitlines()[:count]
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_full_training_from_the_panel_lowers_domain_perplexity_and_reports_both_sets(
    tiny_model_dir, tmp_path
):
    panel = PretrainPanel(model_name=str(tiny_model_dir))  # loaded at Train, as the app does
    assert panel.documents_path.value == str(DOMAIN / "manual_train.jsonl")
    panel.documents_path.value = str(
        few_documents(tmp_path, "train.jsonl", "manual_train.jsonl", 40)
    )
    panel.domain_path.value = str(few_documents(tmp_path, "held.jsonl", "manual_held_out.jsonl", 8))
    panel.general_path.value = str(
        few_documents(tmp_path, "general.jsonl", "general_text.jsonl", 8)
    )
    panel.method.value = "full"
    assert panel.learning_rate.value == 5e-5  # the method's usual step
    panel.block_size.value, panel.max_steps.value, panel.batch_size.value = 64, 12, 8
    panel.learning_rate.value = 1e-2
    during = []  # Train's state at each step: off, its tooltip saying why

    def subscribe(_change) -> None:  # when the monitor attaches the run, before it starts
        if panel.monitor.run is not None and not during:
            during.append("subscribed")
            panel.monitor.run.add_callback(
                "step",
                lambda e: during.append((panel.train_button.disabled, panel.train_button.tooltip)),
            )

    panel.monitor.status.observe(subscribe, names="value")
    panel.train_button.click()
    panel.wait()
    run = panel.run
    assert panel.errors == [] and run.status == "finished", (run and run.error, panel.errors)
    assert during[1:] == [(True, panel.training_reason)] * 12  # off at every step
    assert not panel.train_button.disabled  # on again once the run ended

    config = yaml.safe_load((run.run_dir / "config.yaml").read_text())  # what the library got
    assert config["stage"] == "pretrain" and config["block_size"] == 64
    assert config["method"]["kind"] == "full" and config["hyperparameters"]["max_steps"] == 12
    assert config["data"]["rows"] == {"train": 40, "validation": 8}
    assert config["model"] == str(tiny_model_dir)
    assert list(panel.monitor.trace(VALIDATION_LOSS).x) == [0, 3, 6, 9, 12]

    fresh, tokenizer = workbench.load_model(str(tiny_model_dir))  # the model before training
    table = panel.table
    assert list(table.index) == ["domain perplexity", "general perplexity"]
    for name, path in (("domain", panel.domain_path), ("general", panel.general_path)):
        was = perplexity(fresh, tokenizer, path.value, block_size=64).value
        now = perplexity(run.model, tokenizer, path.value, block_size=64).value
        assert table.loc[f"{name} perplexity", "before"] == pytest.approx(was, rel=1e-5)
        assert table.loc[f"{name} perplexity", "after"] == pytest.approx(now, rel=1e-5)
    domain = table.loc["domain perplexity"]
    assert domain["after"] < domain["before"]  # held-out domain text became less surprising
    assert f"{domain['after']:.2f}" in panel.perplexity_html.value
    assert read_run(run.run_dir).metrics["domain perplexity"] == pytest.approx(domain["after"])
    assert "general perplexity" in panel._repr_mimebundle_()["text/plain"]
    assert panel.model is run.model  # Train again continues this model


def test_instruction_rows_as_documents_are_refused_with_the_reason(tiny_model_dir, tmp_path):
    panel = PretrainPanel(model_name=str(tiny_model_dir))
    panel.documents_path.value = str(SAMPLE_DATA / "support_tickets.jsonl")
    panel.train_button.click()
    panel.wait()
    message = panel.error_html.message
    assert "continued pre-training reads raw text" in message and "'alpaca' rows" in message
    assert panel.run is None and panel.model is None  # refused before any model was loaded
    assert not panel.train_button.disabled
    panel.documents_path.value = str(tmp_path / "missing")
    panel.train_button.click()
    panel.wait()
    assert "missing" in panel.errors[-1] and len(panel.errors) == 2


def test_without_a_model_the_panel_says_how_to_give_one():
    panel = PretrainPanel()
    assert "No model" in panel.status.value
    panel.train_button.click()
    panel.wait()
    assert "load one in the model bar" in panel.error_html.message
    assert "pre-training run not started" in panel._repr_mimebundle_()["text/plain"]
