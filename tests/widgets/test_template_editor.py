"""TemplateEditor: the live preview shows exactly what tokenisation gives, errors stay inline."""

from __future__ import annotations

import pytest
import traitlets
from conftest import SAMPLE_DATA

import workbench
from workbench.widgets import TemplateEditor


@pytest.fixture(scope="module")
def examples():
    return workbench.load_data(SAMPLE_DATA / "mixed_instructions.jsonl", verbose=False)


@pytest.fixture
def editor(tiny_tokenizer, examples):
    return TemplateEditor(tiny_tokenizer, examples, max_length=256)


def expected_view(tokenizer, examples, index, template, **kwargs):
    tokens, item = workbench.row_token_view(examples[index], template, tokenizer, **kwargs)
    return workbench.token_view_html(tokens, item), item


def test_starts_with_the_alpaca_template_and_the_library_token_view(editor, tiny_tokenizer):
    html, item = expected_view(
        tiny_tokenizer, editor.examples, 0, workbench.TEMPLATES["alpaca"], max_length=256
    )
    assert editor.template == workbench.TEMPLATES["alpaca"]
    assert editor.template_name.value == "alpaca"
    assert editor.token_html.value == html
    assert editor.preview_item == item
    assert f">{item.loss_tokens}<" in editor.counts.value
    assert editor.prompt_text.value == workbench.TEMPLATES["alpaca"].prompt
    assert editor.error.message == "" and editor.valid


def test_editing_the_prompt_switches_to_custom_with_one_render(editor, examples):
    renders = editor.render_count
    editor.prompt_text.value = "Q: {instruction}\n{input}\nA: "
    assert editor.render_count == renders + 1
    assert editor.template_name.value == "custom"
    assert editor.template.name == "custom"
    assert editor.template.prompt == "Q: {instruction}\n{input}\nA: "
    assert "Q: " + examples[0]["instruction"] in editor.rendered.value


def test_a_bad_placeholder_shows_the_error_and_keeps_the_last_good_template(editor):
    editor.prompt_text.value = "Q: {instruction}\nA: "
    good, preview = editor.template, editor.token_html.value
    editor.prompt_text.value = "Q: {instruction.__class__}\nA: "
    assert "Unsupported placeholder `{instruction.__class__}`" in editor.error.message
    assert editor.template == good and not editor.valid
    assert preview in editor.token_html.value and "opacity" in editor.token_html.value  # greyed
    assert "last template that rendered" in editor.rendered.value
    editor.prompt_text.value = "Q: {instruction}!\nA: "
    assert editor.error.message == "" and editor.valid
    assert editor.template.prompt == "Q: {instruction}!\nA: "


def test_a_field_the_rows_lack_is_reported_with_the_row(editor):
    editor.template_name.value = "plain"  # prompt/completion fields; these rows are alpaca
    assert "mixed_instructions.jsonl:1" in editor.error.message
    assert "`{prompt}`" in editor.error.message
    assert editor.template.name == "alpaca"


def test_choosing_a_built_in_fills_the_texts(editor):
    editor.template_name.value = "dolly"
    assert editor.response_text.value == workbench.TEMPLATES["dolly"].response
    assert editor.template == workbench.TEMPLATES["dolly"]
    assert "### End" in editor.rendered.value


def test_loss_on_everything_and_truncation_show_in_counts_and_tokens(editor):
    editor.completion_only_checkbox.value = False
    assert editor.completion_only is False
    _, item = expected_view(
        editor.tokenizer,
        editor.examples,
        0,
        editor.template,
        max_length=256,
        completion_only=False,
    )
    assert item.loss_tokens == len(item.input_ids)
    assert editor.preview_item.loss_tokens == item.loss_tokens
    editor.max_length_input.value = 20
    assert editor.max_length == 20
    html, item = expected_view(
        editor.tokenizer, editor.examples, 0, editor.template, max_length=20, completion_only=False
    )
    # the long Alpaca preamble alone exceeds 20 tokens: the response is cut off entirely
    assert item.truncated == "response" and item.response_tokens == 0
    assert editor.token_html.value == html
    assert "tokens cut (response)" in editor.token_html.value
    assert editor.preview_item.truncated == "response"
    assert f"response: {item.full_length - 20} tokens cut" in editor.counts.value


def test_a_too_small_max_length_is_an_inline_error(editor):
    editor.max_length_input.value = 1
    assert "`max_length`=1 is too small" in editor.error.message
    assert editor.max_length == 256 and not editor.valid


def test_row_index_and_escaping(editor, examples):
    editor.row_index.value = 5
    assert editor.rendered.value.count(examples.where(5)) == 1
    editor.response_text.value = "<b>{output}</b>"
    assert "&lt;b&gt;" in editor.rendered.value and "<b>" + examples[5]["output"] not in (
        editor.rendered.value
    )


def test_chat_template_uses_the_tokenizer_and_locks_the_texts(editor):
    editor.template_name.value = "chat"
    assert editor.template.use_chat_template
    assert "&lt;|im_start|&gt;user" in editor.rendered.value
    assert editor.prompt_text.disabled and editor.response_text.disabled
    editor.template_name.value = "alpaca"
    assert not editor.prompt_text.disabled


def test_a_given_template_that_is_not_a_built_in_opens_as_custom(tiny_tokenizer, examples):
    mine = workbench.Template(name="alpaca", prompt="Do: {instruction}\n", response="{output}")
    editor = TemplateEditor(tiny_tokenizer, examples, template=mine)
    assert editor.template_name.value == "custom"
    assert editor.template.prompt == mine.prompt
    assert "Do: " + examples[0]["instruction"] in editor.rendered.value


def test_static_fallback_has_html_and_text(editor):
    bundle = editor._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert "alpaca" in bundle["text/html"] and "loss tokens" in bundle["text/html"]
    assert "TemplateEditor" in bundle["text/plain"] and "loss tokens" in bundle["text/plain"]


def test_result_traits_change_once_per_edit_and_flow_through_a_dlink(editor):
    heard = []
    editor.observe(lambda change: heard.append(change["name"]), names=["template", "max_length"])
    follower = traitlets.HasTraits()
    follower.add_traits(max_length=traitlets.Int(0))
    traitlets.dlink((editor, "max_length"), (follower, "max_length"))
    assert follower.max_length == 256
    editor.max_length_input.value = 128
    assert heard == ["max_length"] and follower.max_length == 128
    editor.max_length_input.value = 1  # invalid: nothing flows on
    assert follower.max_length == 128 and heard == ["max_length"]
    editor.max_length_input.value = 200
    editor.row_index.value = 3  # another row is not another template
    assert heard == ["max_length", "max_length"] and follower.max_length == 200


def test_without_a_tokenizer_or_rows_it_says_what_is_missing_until_given(tiny_tokenizer, examples):
    editor = TemplateEditor(None, None)
    assert not editor.valid and "load a model" in editor.error.message
    editor.tokenizer = tiny_tokenizer
    assert not editor.valid and "no rows to preview" in editor.error.message
    editor.examples = examples.select(range(3))
    assert editor.valid and editor.error.message == ""
    assert editor.row_index.max == 2
    assert examples.where(0) in editor.rendered.value


def test_the_checks_findings_follow_the_template_being_edited(editor, tiny_tokenizer, examples):
    assert editor.findings == workbench.check_dataset(
        examples, "alpaca", tiny_tokenizer, max_length=256
    )
    assert not [f for f in editor.findings if f.check == "unused_column"]
    editor.prompt_text.value = "{instruction}\n"  # a custom template that drops the input
    unused = [f for f in editor.findings if f.check == "unused_column"]
    assert len(unused) == 1 and "column `input`" in unused[0].what
    assert editor.findings == workbench.check_dataset(
        examples, editor.template, tiny_tokenizer, max_length=256
    )
    assert "unused_column" in editor.findings_html.value and editor.findings_html in editor.children
    findings = editor.findings
    editor.row_index.value = 3  # another row to preview: the rows' findings stay as they are
    assert editor.findings is findings


def run_code(editor, examples, tokenizer) -> dict:
    """Execute the editor's code with the rows and tokenizer it previews."""
    namespace = {"examples": examples, "tokenizer": tokenizer}
    exec(editor.as_code(), namespace)
    return namespace


def test_copy_as_code_names_an_unchanged_builtin_and_tokenizes_the_row_shown(
    editor, examples, tiny_tokenizer
):
    editor.template_name.value = "dolly"
    editor.row_index.value = 2
    editor.max_length_input.value = 128
    editor.completion_only_checkbox.value = False
    editor.copy_button.click()
    code = editor.code.value
    assert "template = wb.TEMPLATES['dolly']" in code and "wb.Template(" not in code
    namespace = run_code(editor, examples, tiny_tokenizer)
    assert namespace["template"] == editor.template == workbench.TEMPLATES["dolly"]
    assert (namespace["max_length"], namespace["completion_only"]) == (128, False)
    item = namespace["tokens"].examples[0]
    assert item.input_ids == editor.preview_item.input_ids
    assert item.labels == editor.preview_item.labels  # every token learned, as shown


def test_copy_as_code_writes_an_edited_template_in_full(editor, examples, tiny_tokenizer):
    editor.copy_button.click()
    editor.prompt_text.value = 'Task: "{instruction}"\n\nIt\'s {input}\n\n### Answer:\n'
    editor.response_text.value = "{output} \\ done"
    code = editor.code.value  # the shown code followed the edits
    assert "wb.Template(" in code and "name='custom'" in code
    namespace = run_code(editor, examples, tiny_tokenizer)
    assert namespace["template"] == editor.template and editor.template.name == "custom"
    assert namespace["tokens"].examples[0].input_ids == editor.preview_item.input_ids
    editor.prompt_text.value = "{instruction"  # cannot be parsed: no code for it
    assert editor.code.value.startswith("# The code cannot be written now")
    with pytest.raises(ValueError, match="cannot render"):
        editor.as_code()
