"""LoraForm: what the library receives, live counts that match the real model, inline errors."""

from __future__ import annotations

import copy
import typing
import warnings

import pytest
from transformers import GPT2Config, LlamaConfig

from workbench.model.methods import (
    Method,
    MethodKind,
    apply_method,
    count_parameters,
    linear_layer_names,
)
from workbench.runs.hyperparameters import Hyperparameters
from workbench.widgets import LoraForm


@pytest.fixture
def model(tiny):
    return tiny[0]


def test_targets_come_from_the_model_and_counts_match_the_real_adapter(model):
    before = count_parameters(model)
    form = LoraForm(model)
    assert list(form.target_checkboxes) == linear_layer_names(model)
    assert form.all_linear.value and all(box.disabled for box in form.target_checkboxes.values())
    real = count_parameters(apply_method(copy.deepcopy(model), Method()))
    assert form.parameter_count == real
    assert f"{real.trainable:,} trainable of {real.total:,}" in form.summary.value
    assert "Predicted peak memory" in form.summary.value
    # the user's model was neither wrapped nor changed
    assert count_parameters(model) == before
    assert not any("lora_" in name for name, _ in model.named_modules())


def test_every_change_reaches_the_method_and_the_estimates(model):
    form = LoraForm(model)
    controls = form.method_controls
    controls["r"].value = 4
    controls["alpha"].value = 8.0
    controls["use_dora"].value = True
    form.all_linear.value = False
    for name, box in form.target_checkboxes.items():
        box.value = name in ("q_proj", "v_proj")
    expected = Method(r=4, alpha=8, use_dora=True, target_modules=["q_proj", "v_proj"])
    assert form.method == expected
    real = count_parameters(apply_method(copy.deepcopy(model), expected))
    assert form.parameter_count == real
    assert f"{real.trainable:,} trainable" in form.summary.value


def test_hyperparameters_and_memory_follow_the_form(model):
    form = LoraForm(model, hyperparameters=Hyperparameters(max_grad_norm=0.5))
    small = form.memory.total
    form.hyperparameter_controls["batch_size"].value = 32
    form.hyperparameter_controls["learning_rate"].value = 1e-4
    form.hyperparameter_controls["lr_scheduler"].value = "linear"
    assert form.hyperparameters == Hyperparameters(
        max_grad_norm=0.5, batch_size=32, learning_rate=1e-4, lr_scheduler="linear"
    )
    assert form.memory.total > small
    assert "batch 32 x 256 tokens, an upper bound" in form.summary.value


def test_with_the_rows_the_form_predicts_what_training_will(tiny, ticket_split):
    import workbench
    from workbench.tokens.tokenizing import tokenize_examples

    model, tokenizer = tiny
    rows, _validation = ticket_split
    tokens = tokenize_examples(rows, "alpaca", tokenizer, max_length=256)
    hp = Hyperparameters(max_steps=1, batch_size=8)
    bound = LoraForm(model, hyperparameters=hp)
    form = LoraForm(model, hyperparameters=hp, rows=tokens)
    assert form.memory.total < bound.memory.total  # the real rows are shorter than max_length
    assert "your 48 rows" in form.summary.value and "upper bound" in bound.summary.value
    run = workbench.train(
        model, tokenizer, rows, template="alpaca", method=form.method, hyperparameters=hp
    ).wait()
    assert run.status == "finished", run.error
    assert run.fit.estimate == form.memory  # the same numbers train() printed before starting


def test_the_form_says_whether_the_run_fits_and_what_would(model, monkeypatch):
    import workbench.runs.fitting as fitting

    form = LoraForm(model, hyperparameters=Hyperparameters(batch_size=16))
    assert form.fit.fits and "✓ fits in the" in form.summary.value
    at_sixteen = form.memory.total  # then make only batch 8 fit
    form.hyperparameter_controls["batch_size"].value = 8
    limit = form.memory.total + 1
    monkeypatch.setattr(fitting, "available_memory", lambda device: limit)
    form.hyperparameter_controls["batch_size"].value = 16
    assert form.memory.total == at_sixteen and not form.fit.fits
    assert "does not fit" in form.summary.value
    assert "batch_size=8 with gradient_accumulation=2" in form.summary.value


def test_an_invalid_combination_names_the_field_and_keeps_the_last_valid_method(model):
    form = LoraForm(model)
    form.method_controls["use_dora"].value = True
    valid = form.method
    form.method_controls["kind"].value = "full"
    assert "`use_dora`" in form.error.message and "`kind`='full'" in form.error.message
    assert "last valid settings are kept" in form.error.message
    assert form.method == valid and not form.valid
    form.method_controls["use_dora"].value = False
    assert form.error.message == "" and form.valid
    assert form.method == Method(kind="full")
    assert form.parameter_count.share == 1.0


@pytest.mark.parametrize(
    "control, value, message",
    [
        ("r", 0, "`r`=0"),
        ("dropout", 1.5, "`dropout`=1.5"),
        ("freeze_layers", 2, "`freeze_layers`=2 leaves none of the model's 2 layers"),
    ],
)
def test_method_errors_are_inline(model, control, value, message):
    form = LoraForm(model)
    form.method_controls[control].value = value
    assert message in form.error.message
    assert form.method == Method()


def test_no_target_module_is_an_error(model):
    form = LoraForm(model)
    form.all_linear.value = False
    for box in form.target_checkboxes.values():
        box.value = False
    assert "`target_modules` is empty" in form.error.message
    last = list(form.target_checkboxes)[-1]  # unticked one by one: the last valid kept only it
    assert form.method.target_modules == [last]


def test_invalid_hyperparameters_are_inline_and_the_last_valid_ones_kept(model):
    form = LoraForm(model)
    form.hyperparameter_controls["learning_rate"].value = 0.5
    assert "`learning_rate`=0.5 is far too high" in form.error.message
    assert form.hyperparameters == Hyperparameters()


def test_qlora_on_a_full_precision_model_is_explained_before_training(model):
    form = LoraForm(model)
    form.method_controls["kind"].value = "qlora"
    assert "quantization='4bit'" in form.error.message
    assert form.method.kind == "lora"  # the last valid method is kept


def test_copy_as_code_reproduces_the_same_objects(model):
    form = LoraForm(model)
    form.method_controls["use_dora"].value = True
    form.method_controls["r"].value = 32
    form.method_controls["use_rslora"].value = True
    form.all_linear.value = False
    form.target_checkboxes["gate_proj"].value = False
    for name, value in [("learning_rate", 5e-5), ("max_steps", 120), ("warmup", 10.0)]:
        form.hyperparameter_controls[name].value = value
    assert form.code.layout.display == "none"
    form.copy_button.click()
    assert form.code.layout.display != "none"
    code = form.code.value
    assert "method = wb.Method(r=32" in code and "use_dora=True" in code
    assert code.startswith("import workbench as wb")
    assert "dropout" not in code and "epochs" not in code  # defaults are left out
    namespace: dict = {}
    exec(code, namespace)
    assert namespace["method"] == form.method
    assert namespace["hyperparameters"] == form.hyperparameters
    assert "gate_proj" not in namespace["method"].target_modules
    form.method_controls["r"].value = 8  # the shown code follows later changes
    assert "r=8" in form.code.value


def test_without_a_model_it_offers_llama_names_and_says_what_is_missing():
    form = LoraForm()
    assert list(form.target_checkboxes) == [
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    ]
    assert "Pass a model" in form.summary.value
    form.method_controls["r"].value = 8
    assert form.method.r == 8


def test_a_config_is_enough_for_the_estimates_and_arguments_seed_the_batch():
    config = LlamaConfig(
        vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=4
    )
    form = LoraForm(config, batch_size=4, seq_length=128)
    assert form.hyperparameters.batch_size == 4 and form.hyperparameters.max_length == 128
    assert form.parameter_count.total > 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        LoraForm(config, hyperparameters=Hyperparameters(), batch_size=4)
    assert any("ignored" in str(w.message) for w in caught)


def test_a_model_type_without_an_estimate_still_takes_settings():
    form = LoraForm(GPT2Config(n_layer=2, n_embd=32, n_head=2))
    assert (
        "No estimate" in form.summary.value and "model_type=&#x27;gpt2&#x27;" in form.summary.value
    )
    assert form.target_checkboxes == {} and form.all_linear.value
    form.method_controls["r"].value = 4
    assert form.method == Method(r=4)
    assert form.error.message == "" and form.memory is None


def test_static_fallback_has_html_and_text(model):
    form = LoraForm(model)
    bundle = form._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert "Predicted peak memory" in bundle["text/html"] and ">lora<" in bundle["text/html"]
    assert "method = wb.Method()" in bundle["text/plain"] and "Memory: ~" in bundle["text/plain"]


def test_choices_come_from_the_library_literal_types(model):
    form = LoraForm(model)
    assert form.method_controls["kind"].options == typing.get_args(MethodKind)
    schedulers = typing.get_args(typing.get_type_hints(Hyperparameters)["lr_scheduler"])
    assert form.hyperparameter_controls["lr_scheduler"].options == schedulers
    assert form.method_controls["bias"].options == ("none", "all", "lora_only")


def test_the_rows_trait_gives_the_estimate_train_will_make(tiny, ticket_split):
    from workbench.runs import fitting
    from workbench.tokens.tokenizing import tokenize_examples

    model, tokenizer = tiny
    form = LoraForm(model)
    bound = form.memory.total
    heard = []
    form.observe(lambda change: heard.append(change["new"]), names="hyperparameters")
    tokens = tokenize_examples(ticket_split[0], "alpaca", tokenizer, max_length=256)
    form.rows = tokens
    lengths, response = fitting.row_statistics(tokens)
    expected = fitting.predict_fit(
        fitting.Target.of(model), form.method, form.hyperparameters, lengths, response
    )
    assert form.memory == expected.estimate and form.memory.total < bound
    assert heard == []  # new rows are not new settings
    form.hyperparameter_controls["max_length"].value = 64  # rows longer than 64 are cut
    assert heard == [form.hyperparameters] and form.hyperparameters.max_length == 64
    cut = fitting.predict_fit(
        fitting.Target.of(model), form.method, form.hyperparameters, lengths, response
    )
    assert form.memory == cut.estimate
    form.rows = None  # back to the upper bound
    assert "an upper bound" in form.summary.value


def test_set_model_offers_the_new_model_layers(model):
    config = LlamaConfig(
        vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=4
    )
    form = LoraForm()
    assert form.memory is None
    form.set_model(config)
    assert list(form.target_checkboxes) == ["q_proj", "k_proj", "v_proj", "o_proj"] + [
        "gate_proj",
        "up_proj",
        "down_proj",
    ]
    assert form.memory is not None and form.memory.total > 0
    form.set_model(model)
    assert list(form.target_checkboxes) == linear_layer_names(model)
    assert form.targets_box.children[1:] == tuple(form.target_checkboxes.values())
    assert form.parameter_count == count_parameters(apply_method(copy.deepcopy(model), Method()))


def test_follow_takes_the_editor_settings_and_tokenizes_the_rows_as_it_does(tiny, ticket_split):
    from workbench.runs import fitting
    from workbench.tokens.tokenizing import tokenize_examples
    from workbench.widgets import TemplateEditor

    model, tokenizer = tiny
    rows = ticket_split[0]
    editor = TemplateEditor(tokenizer, rows, max_length=256)
    form = LoraForm(model).follow(editor, rows)
    assert form.hyperparameter_controls["max_length"].disabled
    expected = tokenize_examples(rows, "alpaca", tokenizer, max_length=256)
    assert form.row_lengths == fitting.row_statistics(expected)[0]
    editor.max_length_input.value = 48  # shorter than most rows: they are cut
    editor.completion_only_checkbox.value = False
    assert form.hyperparameters.max_length == 48 and not form.hyperparameters.completion_only
    cut = tokenize_examples(rows, "alpaca", tokenizer, max_length=48, completion_only=False)
    assert (form.row_lengths, form.response_fraction) == fitting.row_statistics(cut)
    assert max(form.row_lengths) == 48 and form.response_fraction == 1.0
    form.training_examples = None  # no rows: back to the upper bound
    assert form.rows is None and "an upper bound" in form.summary.value


def test_the_form_offers_experiment_tracking(tiny):
    model, _ = tiny
    form = LoraForm(model)
    control = form.hyperparameter_controls["report_to"]
    assert list(control.options) == ["none", "tensorboard", "wandb", "mlflow"]
    assert form.hyperparameters.report_to == "none"
    control.value = "tensorboard"
    assert form.hyperparameters.report_to == "tensorboard"
    assert "report_to='tensorboard'" in form.as_code()


def test_every_setting_is_labelled_in_plain_words_with_its_help_as_tooltip(model):
    form = LoraForm(model)
    for settings, controls in (
        (Method, form.method_controls),
        (Hyperparameters, form.hyperparameter_controls),
    ):
        for name, control in controls.items():
            label, help_text = settings.field_text(name)
            assert control.description == label and "_" not in label, name
            assert control.tooltip == help_text and help_text, name
    assert Hyperparameters.field_text("max_steps")[0] == "Steps (-1: by epochs)"
    with pytest.raises(KeyError, match="not a setting of Method"):
        Method.field_text("rank")
