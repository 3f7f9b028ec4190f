"""WorkbenchApp: a whole fine-tune of the tiny model by setting controls and clicking buttons."""

from __future__ import annotations

import html

from conftest import SAMPLE_DATA

import workbench
from workbench.model.generation import adapter_disabled, generate
from workbench.runs import fitting
from workbench.tokens.tokenizing import tokenize_examples
from workbench.widgets._common import Panel
from workbench.widgets.compare_view import CompareView
from workbench.widgets.dataset_preview import DatasetPreview
from workbench.widgets.lora_form import LoraForm
from workbench.widgets.template_editor import TemplateEditor
from workbench.widgets.workbench_app import (
    COMPARE,
    OTHER,
    PREFERENCES,
    TEMPLATE,
    TRAIN,
    Workbench,
    WorkbenchApp,
)

TICKETS = SAMPLE_DATA / "support_tickets.jsonl"


def quick_settings(app: WorkbenchApp, kind: str = "lora") -> None:
    """What a user types into the Method tab for a few fast steps."""
    app.method_panel.method_controls["kind"].value = kind
    for name, value in dict(max_steps=6, batch_size=4, eval_every=3, learning_rate=5e-3).items():
        app.method_panel.hyperparameter_controls[name].value = value


def test_tabs_come_in_the_order_of_the_work(tiny):
    model, tokenizer = tiny
    app = WorkbenchApp(model, tokenizer, TICKETS)
    assert [t.split()[1] for t in app.tabs.titles] == [
        "Data",
        "Template",
        "Method",
        "Train",
        "Compare",
        "Preferences",
        "Runs",
        "Other",
    ]
    assert isinstance(app.data_panel, DatasetPreview) and len(app.data_panel.examples) == 320
    assert isinstance(app.template_panel, TemplateEditor) and app.template_panel.valid
    assert isinstance(app.method_panel, LoraForm)
    assert app.tabs.children[TEMPLATE] is app.template_panel
    assert app.compare_panel is None and app.tabs.children[COMPARE] is app.compare_box
    assert "appears" in app.compare_box.children[0].value
    assert app.load_button.disabled  # a model was given
    app.tabs.selected_index = TEMPLATE
    app.template_panel.max_length_input.value = 64  # too short for any response
    app.train_button.click()
    app.wait()
    assert "max_length" in app.train_error.message and app.state.run is None  # beside Train
    assert not app.train_button.disabled  # free for the next try
    bundle = app._repr_mimebundle_()
    assert f"data: {len(app.data_panel.examples)} rows" in bundle["text/plain"]
    assert "run: not started" in bundle["text/plain"] and "<ul>" in bundle["text/html"]


def test_lora_fine_tune_end_to_end_then_compare(tiny):
    model, tokenizer = tiny
    app = WorkbenchApp(model, tokenizer, TICKETS)
    app.template_panel.max_length_input.value = 320  # the Template tab's max_length wins
    quick_settings(app)  # no tab was visited: the Method tab follows by its links
    summary = app.method_panel.summary.value
    assert f"your {len(app.data_panel.split[0])} rows" in summary
    app.train_button.click()
    app.wait()
    assert app.errors == []
    run = app.state.run
    assert run.status == "finished", run.error
    assert run.fit.estimate == app.method_panel.memory  # what train() predicted, to the byte
    assert len(run.losses) == 6 and run.hyperparameters.max_length == 320
    assert run.method.kind == "lora" and run.template.name == "alpaca"
    train_rows, validation = app.data_panel.split
    assert app.state.train is train_rows and app.state.validation is validation
    assert app.state.before is None  # LoRA: the Compare tab switches the adapter off instead
    assert list(app.monitor.figure.data[0].x) == [1, 2, 3, 4, 5, 6]
    assert "finished" in app.train_status.value
    assert isinstance(app.compare_panel, CompareView) and app.tabs.titles[COMPARE].endswith("✓")
    assert app.compare_box.children == (app.compare_panel,)
    assert app.preference_panel.model is run.model  # DPO continues this adapter
    assert app.preference_panel.parent == run.run_dir
    assert app.rl_panel.model is run.model and app.rl_panel.parent == run.run_dir  # RL too
    assert [r.run_dir for r in app.run_browser.records] == [run.run_dir]

    compare = app.compare_panel
    compare.run_button.click()
    compare.wait()
    assert compare.errors == []
    rows = len(app.state.compare_rows)
    assert rows == min(app.before_rows, len(validation)) > 0
    assert len(compare.before.answers) == len(compare.after.answers) == rows
    assert compare.after.references == [r["output"] for r in app.state.compare_rows.rows]
    for answer in compare.before.answers:  # every base answer is in the table
        assert html.escape(answer) in compare.table_html.value
    compare.prompt_box.value = "The app crashes when I log in."
    compare.try_button.click()
    compare.wait()
    prompt = compare.render_prompt("The app crashes when I log in.")
    with adapter_disabled(run.model):
        base = generate(run.model, tokenizer, [prompt], compare.decoding)[0]
    tuned = generate(run.model, tokenizer, [prompt], compare.decoding)[0]
    # the answers of the model itself, adapter off and on (the tiny base may answer nothing)
    assert compare.try_answers == (base, tuned) and base != tuned
    assert html.escape(tuned) in compare.try_output.value


def test_full_fine_tuning_measures_before_training(tiny):
    model, tokenizer = tiny
    app = WorkbenchApp(model, tokenizer, TICKETS)
    quick_settings(app, kind="full")
    app.train_button.click()
    app.wait()
    assert app.errors == []
    assert app.state.run.status == "finished", app.state.run.error
    before = app.state.before
    assert before is not None and len(before.answers) == len(app.state.compare_rows)
    compare = app.compare_panel
    assert compare.before is before and not compare.has_adapter
    compare.run_button.click()
    compare.wait()
    assert compare.errors == [] and len(compare.after.answers) == len(before.answers)
    assert set(compare.after.scores) == set(before.scores) >= {"exact_match", "validation_loss"}
    for metric in compare.after.scores:
        assert f">{metric}</td>" in compare.summary_html.value


def test_load_model_and_data_from_the_panel_and_errors_are_shown(tiny_model_dir):
    app = WorkbenchApp(model_name="/no/such/model/folder")
    assert app.data_panel.examples is None and not app.data_panel.valid
    assert not app.template_panel.valid and "load a model" in app.template_panel.error.message
    assert app.train_button.disabled and "Load a model first" in app.train_button.tooltip
    app.train_button.click()  # a script can still press it: the reason shows beside it
    app.wait()
    assert "No model yet" in app.train_error.message
    app.load_button.click()
    app.wait()
    assert "/no/such/model/folder" in app.model_error.message  # beside Load model
    assert app.state.model is None and not app.load_button.disabled
    assert "No model loaded" in app.model_status.value

    app.model_name.value = str(tiny_model_dir)
    app.load_button.click()
    app.wait()
    assert app.state.model is not None and app.load_button.disabled
    assert app.method_panel.model is app.state.model and app.method_panel.memory.total > 0
    assert app.template_panel.tokenizer is app.state.tokenizer
    assert app.data_panel.tokenizer is app.state.tokenizer  # followed the Template tab
    assert app.train_error.message == "" and not app.train_button.disabled  # model: Train is on
    app.data_button.click()
    assert "path of a data file" in app.data_error.message
    app.data_path.value = str(TICKETS)
    app.data_button.click()
    assert len(app.data_panel.examples) == 320 and app.data_panel.valid
    assert app.data_error.message == ""  # loaded: the sentence beside Load data is gone
    assert app.template_panel.examples is app.data_panel.examples  # linked, not copied
    assert app.template_panel.valid and app.template_panel.error.message == ""
    assert app.tabs.children[TEMPLATE] is app.template_panel
    assert app.data_panel.length_stats is not None  # lengths: it has a tokenizer
    assert len(app.method_panel.row_lengths) == len(app.data_panel.split[0])


def test_the_template_tab_settings_flow_into_the_data_and_method_tabs(tiny):
    model, tokenizer = tiny
    app = WorkbenchApp(model, tokenizer, TICKETS)
    editor, data, form = app.template_panel, app.data_panel, app.method_panel
    assert form.hyperparameter_controls["max_length"].disabled  # owned by the Template tab
    editor.max_length_input.value = 96
    assert form.hyperparameters.max_length == 96 and data.max_length == 96
    assert [shape.x0 for shape in data.histogram.layout.shapes] == [96]
    tokens = tokenize_examples(data.split[0], editor.template, tokenizer, max_length=96)
    assert (form.row_lengths, form.response_fraction) == fitting.row_statistics(tokens)
    editor.completion_only_checkbox.value = False  # every token carries loss now
    assert form.hyperparameters.completion_only is False and form.response_fraction == 1.0
    editor.template_name.value = "dolly"
    assert data.template == workbench.TEMPLATES["dolly"]
    dolly = tokenize_examples(
        data.split[0], "dolly", tokenizer, max_length=96, completion_only=False
    )
    assert form.row_lengths == fitting.row_statistics(dolly)[0]
    editor.max_length_input.value = 1  # invalid: the other tabs keep the last valid value
    assert form.hyperparameters.max_length == 96 and data.max_length == 96
    editor.max_length_input.value = 96
    state = app.collect()
    assert state.hyperparameters.max_length == 96 and not state.hyperparameters.completion_only
    assert state.template == workbench.TEMPLATES["dolly"] and state.max_length == 96


def test_the_old_panel_name_still_builds_the_same_panel():
    assert Workbench is WorkbenchApp  # kept for one release; the notebooks use WorkbenchApp


def test_conversational_data_gets_the_chat_template_unless_one_was_chosen(tiny):
    model, tokenizer = tiny
    chat_file = SAMPLE_DATA / "unit_chat.jsonl"
    app = WorkbenchApp(model, tokenizer, chat_file)
    assert app.template_panel.template.name == "chat" and app.template_panel.valid
    assert app.template_panel.errors == []
    app.data_path.value = str(TICKETS)  # Alpaca rows next: the template follows them
    app.data_button.click()
    app.wait()
    assert app.template_panel.template.name == "alpaca"
    chosen = WorkbenchApp(model, tokenizer, chat_file, template="alpaca")
    assert chosen.template_panel.template.name == "alpaca"  # the user's choice is kept


def test_the_model_bar_loads_a_4bit_base_for_qlora(tiny_model_dir):
    app = WorkbenchApp(model_name=str(tiny_model_dir))
    app.quantization.value = "4bit"
    app.load_button.click()
    app.wait()
    assert app.errors == [] and getattr(app.state.model, "is_loaded_in_4bit", False)
    assert app.method_panel.method.kind == "qlora"  # the only kind that trains on it
    assert app.quantization.disabled and app.model_name.disabled
    app.data_path.value = str(TICKETS)
    app.data_button.click()
    assert f"wb.load_model({str(tiny_model_dir)!r}, quantization='4bit')" in app.as_code()
    assert "kind='qlora'" in app.as_code() and "quantization: 4bit" in app.as_recipe()


def test_copy_as_code_is_one_script_that_trains_and_compares_the_same_way(tiny):
    model, tokenizer = tiny
    app = WorkbenchApp(model, tokenizer, TICKETS)
    app.template_panel.template_name.value = "dolly"
    app.template_panel.max_length_input.value = 320
    quick_settings(app)
    app.method_panel.method_controls["r"].value = 8
    app.copy_button.click()
    code = app.code.value
    assert code.startswith("import workbench as wb") and app.errors == []
    assert "wb.load_model(" in code and "wb.compare_before_after(run.model" in code
    namespace: dict = {}
    exec(code, namespace)  # the whole script: 6 steps on the tiny model, then 8 rows compared
    train_rows, validation = app.data_panel.split
    assert namespace["train"].rows == train_rows.rows
    assert namespace["validation"].rows == validation.rows
    assert namespace["rows"].rows == validation.select(range(app.before_rows)).rows
    run = namespace["run"]
    assert run.status == "finished", run.error
    assert run.template == app.template_panel.template == workbench.TEMPLATES["dolly"]
    assert run.method == app.method_panel.method and run.method.r == 8
    assert run.hyperparameters == app.method_panel.hyperparameters
    assert run.hyperparameters.max_length == 320
    assert len(namespace["table"]) == app.before_rows


def test_copy_as_code_measures_the_base_first_for_full_fine_tuning(tiny):
    model, tokenizer = tiny
    app = WorkbenchApp(model, tokenizer, TICKETS)
    quick_settings(app, kind="full")
    code = app.as_code()
    assert code.index("before = wb.evaluate_model(") < code.index("run = wb.train(")
    assert "wb.compare(before, after)" in code and "compare_before_after" not in code


def test_copy_as_recipe_is_a_recipe_that_trains_on_the_same_rows(tiny, tmp_path):
    from workbench.interfaces.recipe import read_recipe
    from workbench.interfaces.recipe_command import load_recipe_data

    model, tokenizer = tiny
    app = WorkbenchApp(model, tokenizer, TICKETS)
    editor = app.template_panel
    editor.prompt_text.value = "Ticket: {input}\nTask: {instruction}\nTopic: "  # a custom one
    editor.completion_only_checkbox.value = False
    quick_settings(app)
    app.recipe_button.click()
    assert app.errors == [] and app.recipe.value.startswith("# ")
    path = tmp_path / "recipe.yaml"
    path.write_text(app.recipe.value, encoding="utf-8")
    recipe = read_recipe(path)
    assert workbench.get_template(recipe.template) == editor.template
    assert editor.template.name == "custom"
    assert recipe.method == app.method_panel.method
    assert recipe.hyperparameters == app.method_panel.hyperparameters
    assert not recipe.hyperparameters.completion_only
    assert recipe.model.name == model.workbench_source and recipe.model.quantization is None
    rows = load_recipe_data(recipe)
    train_rows, validation = app.data_panel.split
    assert rows.train.rows == train_rows.rows and rows.validation.rows == validation.rows


def test_a_recipe_needs_rows_from_a_file(tiny):
    model, tokenizer = tiny
    rows = workbench.load_data(TICKETS, verbose=False).select(range(40))
    app = WorkbenchApp(model, tokenizer, rows)
    app.recipe_button.click()
    assert "names its data file" in app.error_html.message and app.recipe.value == ""
    namespace: dict = {}
    exec(app.as_code().split("# the template")[0], namespace)  # the rows are in the script
    assert namespace["examples"].rows == rows.rows


def test_preferences_offer_dpo_or_rl_and_other_objectives_use_the_data_tab_rows(tiny):
    model, tokenizer = tiny
    app = WorkbenchApp(model, tokenizer, TICKETS)
    preferences, other = app.tabs.children[PREFERENCES], app.tabs.children[OTHER]
    assert preferences.children == (app.preference_choice, app.preference_panel, app.rl_panel)
    assert app.preference_panel.layout.display is None and app.rl_panel.layout.display == "none"
    app.preference_choice.value = "reward model + RL"
    assert app.preference_panel.layout.display == "none" and app.rl_panel.layout.display is None
    assert other.children == (app.objective_choice, app.classifier_panel, app.pretrain_panel)
    assert app.pretrain_panel.layout.display == "none"
    app.objective_choice.value = "pre-training"
    assert app.pretrain_panel.layout.display is None
    assert app.classifier_panel.layout.display == "none"

    classifier = app.classifier_panel
    assert classifier.examples is app.data_panel.examples and classifier.data_path.value == ""
    rows = workbench.load_data(TICKETS, verbose=False).select(range(40))
    app.data_panel.examples = rows  # what loading another file in the Data tab does
    assert classifier.examples is rows and "40 rows from the Data tab" in classifier.rows_info.value
    # a copy of the model is loaded by its name: LoRA in the Train tab cannot reach it
    assert classifier.model is None and classifier.model_name == model.workbench_source
    assert app.pretrain_panel.model is None
    assert app.pretrain_panel.model_name == model.workbench_source


def at_first_step(app: WorkbenchApp, fn) -> None:
    """Call `fn(event)` on the training thread at the first step of the next run Train starts
    (subscribed when the monitor attaches it, before it starts)."""
    subscribed = []

    def subscribe(_change) -> None:
        run = app.monitor.run
        if run is not None and not subscribed:
            subscribed.append(run)
            run.add_callback("step", lambda event: fn(event) if event["step"] == 1 else None)

    app.monitor.status.observe(subscribe, names="value")


def test_train_is_off_with_its_reason_until_a_model_is_loaded_and_errors_show_once(
    tiny_model_dir,
):
    app = WorkbenchApp(data=TICKETS, model_name=str(tiny_model_dir))
    assert app.train_button.disabled and "Load a model first" in app.train_button.tooltip
    assert "Load a model first" in app.train_status.value
    for _ in range(2):  # pressed twice: one sentence, in one place, without a traceback
        app.train_button.click()
        app.wait()
    assert app.train_error.message == "No model yet: press `Load model` first."
    assert app.train_error.value.count("No model yet") == 1 and app.train_error.details == ""
    assert "Traceback" not in app.train_error.value and 'File "' not in app.train_error.value
    assert app.error_html.value == "" and app.model_error.value == ""  # nothing above the tabs
    app.load_button.click()
    app.wait()
    assert app.train_error.value == ""  # the condition is gone, and so is its sentence
    assert not app.train_button.disabled and app.train_button.tooltip.startswith("Train on")
    assert app.train_status.value.startswith("Set up the data")


def test_train_is_off_while_a_run_trains_and_the_tab_stays_where_the_person_is(tiny):
    model, tokenizer = tiny
    app = WorkbenchApp(model, tokenizer, TICKETS)
    quick_settings(app)
    tabs = app.tabs.children
    app.tabs.selected_index = TRAIN
    during = {}

    def press_again(event) -> None:  # on the training thread, at step 1
        during["disabled"], during["tooltip"] = app.train_button.disabled, app.train_button.tooltip
        app.train_button.click()  # what a script can still do: refused beside the button
        Panel.wait(app, 30)  # the press's work only (the run goes on)
        during["error"] = app.train_error.message

    at_first_step(app, press_again)
    app.train_button.click()
    app.wait()
    assert app.state.run.status == "finished", app.state.run.error
    assert during["disabled"] and "A run is training" in during["tooltip"]
    assert during["error"] == "A run is still training: stop it (Train tab) before a new one."
    assert app.train_error.value == ""  # the run ended: the sentence went with it
    assert not app.train_button.disabled  # on again for the next run
    assert app.tabs.selected_index == TRAIN  # neither the start nor the end moved the tabs
    assert all(new is old for new, old in zip(app.tabs.children, tabs))
    assert app.compare_box.children == (app.compare_panel,)
    assert app.tabs.titles[COMPARE].endswith("✓")
