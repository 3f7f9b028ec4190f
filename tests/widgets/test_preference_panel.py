"""PreferencePanel: DPO on a tiny instruction-tuned model by setting controls and clicking."""

from __future__ import annotations

from conftest import quick

from workbench.model.generation import Decoding
from workbench.runs.report import REWARD_MARGIN, VALIDATION_LOSS
from workbench.training.finetune import train
from workbench.widgets.compare_view import CompareView
from workbench.widgets.preference_panel import PreferencePanel


def test_dpo_from_the_panel_shows_margins_and_compares_sft_with_dpo(tiny, ticket_split):
    model, tokenizer = tiny
    panel = PreferencePanel()
    panel.train_button.click()
    panel.wait()
    assert "No instruction-tuned model" in panel.error_html.message and panel.run is None

    sft = train(model, tokenizer, *ticket_split, hyperparameters=quick(max_steps=3, eval_every=3))
    assert sft.wait().status == "finished", sft.error
    panel.set_model(sft.model, tokenizer, "alpaca", parent=sft.run_dir)
    panel.max_steps.value, panel.batch_size.value, panel.learning_rate.value = 8, 4, 1e-2
    panel.held_out.value = 8
    panel.compare_rows, panel.decoding = 4, Decoding(max_new_tokens=4)
    panel.train_button.click()
    panel.wait()
    run = panel.run
    assert run is not None and run.status == "finished", (run and run.error, panel.errors)
    assert run.hyperparameters.max_steps == 8 and run.hyperparameters.eval_every == 2

    margins = panel.monitor.trace(REWARD_MARGIN)
    assert list(margins.x) == list(range(1, 9)) and margins.visible is True
    assert len(panel.monitor.trace(VALIDATION_LOSS).x) == 5  # steps 0, 2, 4, 6, 8
    assert "reward margin" in panel.monitor.progress_text()
    before, after = panel.margins
    experiment = panel.experiment  # the library's experiment, run by the panel
    assert len(experiment.held_out) == 8 and experiment.run is run
    assert [before, after] == [experiment.margin_before.mean, experiment.margin_after.mean]
    assert after > before  # held-out pairs: chosen became likelier relative to rejected
    assert f"{before:.3g} → {after:.3g}" in panel.margin_html.value

    view = panel.compare_panel
    assert isinstance(view, CompareView) and panel.compare_box.children == (view,)
    assert "SFT+DPO" in view.table_html.value and "SFT+DPO" in view.summary_html.value
    assert len(view.before.answers) == len(view.after.answers) == 4
    assert view.before is experiment.answers_before  # SFT answers, taken before DPO
    assert view.before.references == [r["output"] for r in view.examples.rows]
    assert panel.errors[1:] == []  # only the first, deliberate error
    assert "DPO run" in panel._repr_mimebundle_()["text/plain"]
