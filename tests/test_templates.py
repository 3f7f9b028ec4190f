"""Tests for workbench.templates: built-ins, the chat template, custom templates, no code runs."""

from __future__ import annotations

import pytest
from rows import chat_row

from workbench.errors import TemplateError
from workbench.tokens.chat import chat_messages
from workbench.tokens.templates import (
    TEMPLATES,
    Template,
    default_template,
    fill,
    get_template,
    template_fields,
)

ALPACA_INTRO = "Below is an instruction that describes a task"
WITH_INPUT = {"instruction": "Give the antonym of the word.", "input": "hot", "output": "cold"}
NO_INPUT = {"instruction": "What is the capital of France?", "input": "", "output": "Paris"}


# --- built-in text templates -----------------------------------------------------------


def test_alpaca_uses_the_input_text_for_rows_with_an_input():
    prompt, response = TEMPLATES["alpaca"].render(WITH_INPUT)
    assert prompt == (
        "Below is an instruction that describes a task, paired with an input that provides "
        "further context. Write a response that appropriately completes the request.\n\n"
        "### Instruction:\nGive the antonym of the word.\n\n### Input:\nhot\n\n### Response:\n"
    )
    assert response == "cold"


@pytest.mark.parametrize("empty", ["", "   ", None])
def test_alpaca_uses_the_no_input_text_for_rows_without_one(empty):
    prompt, response = TEMPLATES["alpaca"].render({**NO_INPUT, "input": empty})
    assert prompt == (
        "Below is an instruction that describes a task. Write a response that appropriately "
        "completes the request.\n\n### Instruction:\nWhat is the capital of France?\n\n"
        "### Response:\n"
    )
    assert "### Input:" not in prompt
    assert response == "Paris"


def test_alpaca_fixed_variants():
    assert "### Input:" in TEMPLATES["alpaca_input"].render(WITH_INPUT)[0]
    prompt = TEMPLATES["alpaca_no_input"].render(WITH_INPUT)[0]
    assert prompt.startswith(ALPACA_INTRO + ". Write a response")
    assert "hot" not in prompt  # the input is not part of the no-input template


def test_dolly_ends_the_response_with_end_marker():
    prompt, response = TEMPLATES["dolly"].render(WITH_INPUT)
    assert response == "cold\n\n### End"
    assert "Input:\nhot" in prompt
    assert prompt.endswith("### Response:\n")
    assert "Input:" not in TEMPLATES["dolly"].render(NO_INPUT)[0]


def test_plain_template_concatenates_prompt_and_completion():
    row = {"prompt": "Date: May 1, 2020\nISO:", "completion": " 2020-05-01"}
    assert TEMPLATES["plain"].render(row) == ("Date: May 1, 2020\nISO:", " 2020-05-01")


def test_text_template_has_no_prompt():
    assert TEMPLATES["text"].render({"text": "All of it is learned."}) == (
        "",
        "All of it is learned.",
    )


@pytest.mark.parametrize(
    ("data_format", "name"),
    [
        ("alpaca", "alpaca"),
        ("prompt_completion", "plain"),
        ("messages", "chat"),
        ("sharegpt", "chat"),
        ("text", "text"),
    ],
)
def test_default_template_per_format(data_format, name):
    assert default_template(data_format) is TEMPLATES[name]


def test_get_template_by_name_or_object():
    custom = Template(name="mine", prompt="Q: {instruction}\nA: ")
    assert get_template(custom) is custom
    assert get_template("dolly") is TEMPLATES["dolly"]


def test_unknown_template_name_lists_builtins():
    with pytest.raises(TemplateError) as caught:
        get_template("alpacca")
    message = str(caught.value)
    assert "alpacca" in message
    for name in TEMPLATES:
        assert name in message


def test_render_prompt_needs_no_output():
    prompt = TEMPLATES["alpaca"].render_prompt({"instruction": "Name a colour.", "input": ""})
    assert prompt.endswith("Name a colour.\n\n### Response:\n")


# --- the tokenizer's chat template ------------------------------------------------------


def test_chat_template_prompt_ends_at_the_assistant_turn(tiny_tokenizer):
    row = chat_row(("user", "How many grams is 3 kilograms?"), ("assistant", "3000 g"))
    prompt, response = TEMPLATES["chat"].render(row, tiny_tokenizer)
    assert prompt == (
        "<|im_start|>user\nHow many grams is 3 kilograms?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert response == "3000 g"


def test_chat_template_from_alpaca_fields_joins_instruction_and_input(tiny_tokenizer):
    prompt, response = TEMPLATES["chat"].render(WITH_INPUT, tiny_tokenizer)
    assert "<|im_start|>user\nGive the antonym of the word.\n\nhot<|im_end|>" in prompt
    assert prompt.endswith("<|im_start|>assistant\n")
    assert response == "cold"


def test_chat_template_adds_the_system_message(tiny_tokenizer):
    template = Template(name="sys", use_chat_template=True, system="Answer in one word.")
    prompt, _ = template.render(NO_INPUT, tiny_tokenizer)
    assert prompt.startswith("<|im_start|>system\nAnswer in one word.<|im_end|>\n")
    assert prompt.endswith("<|im_start|>assistant\n")
    assert "<|im_start|>system" not in TEMPLATES["chat"].render(NO_INPUT, tiny_tokenizer)[0]


def test_chat_template_keeps_a_rows_own_system_message(tiny_tokenizer):
    row = chat_row(("system", "Row system."), ("user", "Hi"), ("assistant", "Hello"))
    template = Template(name="sys", use_chat_template=True, system="Template system.")
    prompt, _ = template.render(row, tiny_tokenizer)
    assert "Row system." in prompt
    assert "Template system." not in prompt


def test_chat_template_without_tokenizer_says_what_to_pass():
    with pytest.raises(TemplateError) as caught:
        TEMPLATES["chat"].render(NO_INPUT)
    message = str(caught.value)
    assert "no tokenizer" in message
    assert "alpaca" in message  # the alternative


def test_chat_messages_rejects_a_conversation_ending_with_the_user():
    row = {"messages": [{"role": "user", "content": "Hi"}]}
    with pytest.raises(TemplateError, match="data.jsonl:9"):
        chat_messages(row, where="data.jsonl:9")


def test_messages_rows_with_a_text_template_are_rejected():
    row = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]}
    with pytest.raises(TemplateError) as caught:
        TEMPLATES["alpaca"].render(row, where="chat.jsonl:4")
    message = str(caught.value)
    assert "chat.jsonl:4" in message
    assert "chat" in message and "messages" in message


# --- custom templates and the parser ---------------------------------------------------


def test_custom_template_fills_fields_and_escapes_braces():
    template = Template(
        name="json",
        prompt='{{"question": "{instruction}"}}\n',
        response="{output}",
    )
    row = {"instruction": "Capital of Peru?", "output": "Lima"}
    assert template.render(row) == ('{"question": "Capital of Peru?"}\n', "Lima")
    assert template.fields == ["instruction", "output"]


def test_template_fields_in_order_without_escapes():
    assert template_fields("{a} {{b}} {c}{a}") == ["a", "c", "a"]


def test_missing_field_names_the_row_and_the_field():
    template = Template(name="q", prompt="Q: {question}\n", response="{output}")
    with pytest.raises(TemplateError) as caught:
        template.render({"instruction": "x", "output": "y"}, where="data.jsonl:17")
    message = str(caught.value)
    assert "data.jsonl:17" in message
    assert "`question`" in message
    assert "instruction" in message and "output" in message  # the fields the row has


def test_a_none_value_counts_as_missing():
    with pytest.raises(TemplateError, match="`input`"):
        fill("{input}", {"input": None}, where="list:0")


@pytest.mark.parametrize("placeholder", ["{x.__class__}", "{x[0]}", "{x!r}", "{x:>10}", "{}"])
def test_attribute_index_and_format_placeholders_are_rejected_at_construction(placeholder):
    with pytest.raises(TemplateError, match="Unsupported placeholder") as caught:
        Template(name="bad", prompt=f"Q: {placeholder}\n")
    assert placeholder in str(caught.value)


@pytest.mark.parametrize("text", ["Q: {instruction", "Q: instruction}", "{a{b}"])
def test_unmatched_brace_is_rejected_with_the_escape(text):
    with pytest.raises(TemplateError, match="Unmatched") as caught:
        Template(name="bad", prompt=text)
    assert "{{" in str(caught.value)


def test_empty_response_is_rejected():
    with pytest.raises(TemplateError, match="response"):
        Template(name="bad", prompt="{instruction}", response="")


def test_row_values_are_inserted_literally_never_expanded():
    template = Template(name="q", prompt="Q: {instruction}\n", response="{output}")
    row = {
        "instruction": "Say {output} and {{x}} and {instruction.__class__}",
        "output": "done",
    }
    prompt, response = template.render(row)
    assert prompt == "Q: Say {output} and {{x}} and {instruction.__class__}\n"
    assert response == "done"


def test_no_attribute_access_even_through_fill():
    class Spy:
        touched = False

        def __getattr__(self, name):
            Spy.touched = True
            raise AttributeError(name)

    with pytest.raises(TemplateError):
        fill("{x.secret}", {"x": Spy()})
    assert not Spy.touched


def test_jinja_style_placeholders_warn_with_the_intended_field():
    with pytest.warns(
        UserWarning, match=r"`\{\{ instruction \}\}` is Jinja style.*`\{instruction\}`"
    ):
        template = Template(name="mine", prompt="Q: {{ instruction }}\nA: ", response="{output}")
    assert template.render({"instruction": "hi", "output": "x"})[0] == "Q: { instruction }\nA: "


def test_an_unmatched_brace_names_the_literal_brace_syntax():
    with pytest.raises(TemplateError) as raised:
        Template(name="bad", prompt="Q: {instruction}}")
    assert "Write `{{` or `}}` for a literal brace." in str(raised.value)


def test_a_typed_message_gets_the_system_message_the_rows_were_trained_with(tiny_tokenizer):
    rows = [
        {"messages": [{"role": "system", "content": "Answer in one word."}, *turns]}
        for turns in (
            [
                {"role": "user", "content": "Capital of Peru?"},
                {"role": "assistant", "content": "Lima"},
            ],
            [
                {"role": "user", "content": "Capital of Chad?"},
                {"role": "assistant", "content": "N'Djamena"},
            ],
        )
    ]
    prompt = TEMPLATES["chat"].prompt_for_text("Capital of Mali?", tiny_tokenizer, rows)
    trained = TEMPLATES["chat"].render_prompt(rows[0], tiny_tokenizer)
    assert prompt == trained.replace("Capital of Peru?", "Capital of Mali?")
    assert "Answer in one word." in prompt
    bare = TEMPLATES["chat"].prompt_for_text("Capital of Mali?", tiny_tokenizer)
    assert "Answer in one word." not in bare


def test_each_assistant_turn_has_its_prompt_and_reference(tiny_tokenizer):
    row = chat_row(
        ("user", "My code is BLUE-7."),
        ("assistant", "Noted."),
        ("user", "What is my code?"),
        ("assistant", "BLUE-7"),
    )
    turns = TEMPLATES["chat"].turn_prompts(row, tiny_tokenizer)
    assert [reference for _, reference in turns] == ["Noted.", "BLUE-7"]
    assert turns[1][0].endswith("What is my code?<|im_end|>\n<|im_start|>assistant\n")
    assert turns[1][0].startswith(turns[0][0])  # each prompt continues the one before


def test_a_typed_text_is_a_new_input_when_the_rows_share_one_instruction():
    from workbench.tokens.templates import shared_instruction

    task = "Classify the message: billing or shipping."
    tickets = [{"instruction": task, "input": text} for text in ("charged twice", "late")]
    alpaca = TEMPLATES["alpaca"]
    assert shared_instruction(tickets) == task
    prompt = alpaca.prompt_for_text("where is my parcel", rows=tickets)
    assert prompt == alpaca.render_prompt({"instruction": task, "input": "where is my parcel"})
    varied = [tickets[0], {"instruction": "Translate to French.", "input": "hello"}]
    assert shared_instruction(varied) is None and shared_instruction([]) is None
    assert shared_instruction([{"instruction": task, "input": ""}]) is None  # no inputs
    alone = alpaca.prompt_for_text("Name three colours.", rows=varied)
    assert alone == alpaca.render_prompt({"instruction": "Name three colours.", "input": ""})
