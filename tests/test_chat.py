"""Conversations trained right: every assistant turn learned with its end-of-turn marker, for
ChatML, Llama-3-style, `{% generation %}` and Qwen3-style (not prefix-stable) templates;
fallbacks named; prompts as trained."""

from __future__ import annotations

import re
import warnings

import pytest
from conftest import CHATML, build_tiny_tokenizer

import workbench
from workbench.tokens.chat import PrefixError, TurnsFallbackWarning, chat_segments
from workbench.tokens.checks import check_dataset
from workbench.tokens.segments import Segment
from workbench.tokens.templates import TEMPLATES, Template
from workbench.tokens.tokenizing import IGNORE_INDEX, tokenize_examples, tokenize_segments

CONVERSATION = [
    {"role": "system", "content": "You keep track of orders."},
    {"role": "user", "content": "My order number is 4471 and it ships to Lyon."},
    {"role": "assistant", "content": "Noted: order 4471 to Lyon."},
    {"role": "user", "content": "Which city does it ship to?"},
    {"role": "assistant", "content": "Lyon"},
    {"role": "user", "content": "And the order number?"},
    {"role": "assistant", "content": "4471"},
]
ANSWERS = [m["content"] for m in CONVERSATION if m["role"] == "assistant"]

LLAMA3 = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content']"
    " + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{% endif %}"
)
MARKED = (
    "{% for message in messages %}{% if message['role'] == 'assistant' %}"
    "{{ '<|im_start|>assistant\n' }}{% generation %}{{ message['content'] + '<|im_end|>' }}"
    "{% endgeneration %}{{ '\n' }}{% else %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# rewrites the last turn (as templates that strip earlier reasoning do): not prefix-stable
UNSTABLE = (
    "{% for message in messages %}{{ message['role'] + ': ' + message['content'] }}"
    "{% if loop.last %}{{ ' [latest]' }}{% endif %}{{ '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}"
)
# Qwen3's format: ChatML, and the assistant turns after the last user message open with an
# empty `<think>` block that earlier turns do not get, so a longer conversation rewrites them
QWEN3 = (
    "{%- set ns = namespace(last_query=-1) %}"
    "{%- for message in messages %}{%- if message['role'] == 'user' %}"
    "{%- set ns.last_query = loop.index0 %}{%- endif %}{%- endfor %}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' and loop.index0 > ns.last_query %}"
    "{{- '<|im_start|>assistant\n<think>\n\n</think>\n\n' + message['content'] }}"
    "{{- '<|im_end|>\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}"
)
# Qwen3's format, but writing earlier replies in capitals: they cannot be found
SHOUTING = QWEN3.replace(
    "'\n' + message['content'] + '<|im_end|>\n' }}",
    "'\n' + (message['content'] | upper if message['role'] == 'assistant' "
    "else message['content']) + '<|im_end|>\n' }}",
)


def _tokenizer(template: str, eos: str = "<|im_end|>", extra: tuple[str, ...] = ()):
    tokenizer = build_tiny_tokenizer()
    if extra:
        tokenizer.add_special_tokens({"additional_special_tokens": list(extra)})
    tokenizer.chat_template = template
    tokenizer.eos_token = eos
    return tokenizer


def _learned_texts(item, tokenizer) -> list[str]:
    """The decoded runs of learned tokens, in order."""
    runs, current = [], []
    for token, label in zip(item.input_ids, item.labels):
        if label != IGNORE_INDEX:
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return [tokenizer.decode(run) for run in runs]


def _tokenize(tokenizer, assistant_turns: str = "all"):
    template = Template(name="chat", use_chat_template=True, assistant_turns=assistant_turns)
    segments = template.segments({"messages": CONVERSATION}, tokenizer)
    return segments, tokenize_segments(segments, tokenizer, max_length=1024)


def test_chatml_learns_every_assistant_turn_with_its_end_marker_and_no_extra_eos():
    tokenizer = _tokenizer(CHATML, eos="<|endoftext|>")  # EOS differs from the end of turn
    segments, item = _tokenize(tokenizer)
    assert _learned_texts(item, tokenizer) == [f"{a}<|im_end|>" for a in ANSWERS]
    assert tokenizer.convert_tokens_to_ids("<|endoftext|>") not in item.input_ids
    assert tokenizer.decode(item.input_ids) == tokenizer.apply_chat_template(
        CONVERSATION, tokenize=False
    )  # the segments add up to exactly what the chat template writes
    assert [s.role for s in segments if s.learned] == ["assistant"] * 3
    assert segments[0].role == "system+user" and not segments[0].learned


def test_last_turn_only_learns_the_final_answer():
    tokenizer = _tokenizer(CHATML)
    _, item = _tokenize(tokenizer, assistant_turns="last")
    assert _learned_texts(item, tokenizer) == ["4471<|im_end|>"]


def test_llama3_style_learns_eot_not_the_tokenizers_eos():
    specials = ("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")
    tokenizer = _tokenizer(LLAMA3, eos="<|end_of_text|>", extra=(*specials, "<|end_of_text|>"))
    tokenizer.bos_token = "<|begin_of_text|>"
    _, item = _tokenize(tokenizer)
    assert _learned_texts(item, tokenizer) == [f"{a}<|eot_id|>" for a in ANSWERS]
    assert tokenizer.convert_tokens_to_ids("<|end_of_text|>") not in item.input_ids
    bos = tokenizer.convert_tokens_to_ids("<|begin_of_text|>")
    assert item.input_ids.count(bos) == 1 and item.input_ids[0] == bos  # BOS once, as text


def test_generation_marks_give_the_assistant_spans():
    tokenizer = _tokenizer(MARKED)
    segments, item = _tokenize(tokenizer)
    assert _learned_texts(item, tokenizer) == [f"{a}<|im_end|>" for a in ANSWERS]
    assert "".join(s.text for s in segments) == tokenizer.apply_chat_template(
        CONVERSATION, tokenize=False
    )


def test_a_template_that_is_not_prefix_stable_has_its_turns_found_by_offsets():
    tokenizer = _tokenizer(UNSTABLE)
    with pytest.raises(PrefixError, match="not prefix-stable at message 2"):
        chat_segments(CONVERSATION, tokenizer)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every turn is found: nothing to warn about
        _, item = _tokenize(tokenizer)
    *earlier, last = _learned_texts(item, tokenizer)
    assert earlier == [f"{a}<|im_end|>" for a in ANSWERS[:2]]
    assert last == "4471 [latest]<|im_end|>"  # what the template writes after a final reply


def test_labels_follow_the_segments_where_a_tokenizer_merges_across_them():
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    vocab = {"<eos>": 0, "x": 1, "a": 2, "b": 3, "ab": 4}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[("a", "b")]))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>")
    assert tokenizer("xab", add_special_tokens=False)["input_ids"] == [1, 4]  # "ab" merged
    segments = [Segment("xa", False), Segment("b", True, "response", eos=True)]
    item = tokenize_segments(segments, tokenizer, max_length=16)
    assert item.input_ids == [1, 2, 3, 0]  # "a" | "b": cut where the segments meet
    assert item.labels == [IGNORE_INDEX, IGNORE_INDEX, 3, 0]


@pytest.mark.parametrize("name", ["alpaca", "alpaca_input", "alpaca_no_input", "dolly", "plain"])
def test_the_generation_prompt_is_the_training_prefix_token_for_token(name, tiny_tokenizer):
    row = {
        "instruction": "Name the capital of Peru.",
        "input": "One word." if name != "alpaca_no_input" else "",
        "output": "Lima",
        "prompt": "The capital of Peru is",
        "completion": " Lima",
    }
    template = TEMPLATES[name]
    item = tokenize_segments(template.segments(row, tiny_tokenizer), tiny_tokenizer)
    prefix = item.input_ids[: item.labels.index(next(x for x in item.labels if x >= 0))]
    prompt = template.render_prompt(row, tiny_tokenizer)
    assert tiny_tokenizer(prompt)["input_ids"] == prefix


def test_each_turns_generation_prompt_is_its_training_prefix_for_chat():
    tokenizer = _tokenizer(CHATML)
    _, item = _tokenize(tokenizer)
    starts = [i for i, x in enumerate(item.labels) if x >= 0 and item.labels[i - 1] < 0]
    for k, start in zip([2, 4, 6], starts):
        prompt = tokenizer.apply_chat_template(
            CONVERSATION[:k], tokenize=False, add_generation_prompt=True
        )
        assert tokenizer(prompt, add_special_tokens=False)["input_ids"] == item.input_ids[:start]


def test_the_token_view_marks_every_turn_of_a_conversation():
    tokenizer = _tokenizer(CHATML)
    tokens, item = workbench.row_token_view({"messages": CONVERSATION}, "chat", tokenizer)
    learned = "".join(t.text for t in tokens if t.carries_loss)
    assert learned == "".join(f"{a}<|im_end|>" for a in ANSWERS)
    assert workbench.token_view_text(tokens).count("[<|im_end|>]") == 3
    html = workbench.token_view_html(tokens, item)
    labels = re.findall(r'class="wb-turn"[^>]*>([^<]*)<', html)  # one at each turn boundary
    assert labels == ["assistant", "format", "user"] * 2 + ["assistant", "format"]
    assert {t.role for t in tokens if t.carries_loss} == {"assistant"}


# --- templates that are not prefix-stable: the turns found by offsets ------------------------


def _bracketed(item, tokenizer) -> str:
    """The row decoded run by run, the learned runs in [brackets]: a token-exact picture."""
    runs: list[tuple[bool, list[int]]] = []
    for token, label in zip(item.input_ids, item.labels):
        learned = label != IGNORE_INDEX
        if runs and runs[-1][0] == learned:
            runs[-1][1].append(token)
        else:
            runs.append((learned, [token]))
    return "".join(
        f"[{tokenizer.decode(ids)}]" if on else tokenizer.decode(ids) for on, ids in runs
    )


def test_qwen3_style_learns_every_reply_and_its_end_marker_and_nothing_else():
    tokenizer = _tokenizer(QWEN3)
    with pytest.raises(PrefixError, match="at message 4"):  # the first reply loses <think>
        chat_segments(CONVERSATION, tokenizer)
    template = Template(name="chat", use_chat_template=True)
    cut = template.cut({"messages": CONVERSATION}, tokenizer)
    item = tokenize_segments(cut.segments, tokenizer, max_length=1024)
    full = tokenizer.apply_chat_template(CONVERSATION, tokenize=False)
    assert cut.turns == "found by offsets"
    assert "".join(s.text for s in cut.segments) == full
    assert _learned_texts(item, tokenizer) == [f"{a}<|im_end|>" for a in ANSWERS]
    expected = full
    for answer in ANSWERS:  # each reply where it stands: after its own header, in order
        expected = expected.replace(f"\n{answer}<|im_end|>", f"\n[{answer}<|im_end|>]", 1)
    assert expected.count("[") == 3 and "<think>\n\n</think>\n\n[4471" in expected
    assert _bracketed(item, tokenizer) == expected  # system and user turns: no token learned


def test_offsets_map_a_repeated_reply_to_its_own_turn_not_to_the_user_text_before_it():
    conversation = [
        {"role": "user", "content": "Reply yes"},
        {"role": "assistant", "content": "yes"},
        {"role": "user", "content": "Say yes again"},
        {"role": "assistant", "content": "yes"},
    ]
    tokenizer = _tokenizer(QWEN3)
    cut = Template(name="chat", use_chat_template=True).cut({"messages": conversation}, tokenizer)
    item = tokenize_segments(cut.segments, tokenizer)
    assert cut.turns == "found by offsets"
    assert _bracketed(item, tokenizer) == (
        "<|im_start|>user\nReply yes<|im_end|>\n<|im_start|>assistant\n[yes<|im_end|>]\n"
        "<|im_start|>user\nSay yes again<|im_end|>\n"
        "<|im_start|>assistant\n<think>\n\n</think>\n\n[yes<|im_end|>]\n"
    )


def test_offsets_learn_only_the_last_reply_when_asked():
    tokenizer = _tokenizer(QWEN3)
    segments, item = _tokenize(tokenizer, assistant_turns="last")
    assert _learned_texts(item, tokenizer) == ["4471<|im_end|>"]
    assert [s.text for s in segments if s.role == "assistant"] == [
        f"{a}<|im_end|>" for a in ANSWERS
    ]  # the earlier replies are still their own (unlearned) segments


def test_a_reply_the_template_rewrites_falls_back_to_the_last_turn_and_says_so():
    tokenizer = _tokenizer(SHOUTING)
    with pytest.warns(TurnsFallbackWarning, match="assistant message 2 is not in its rendering"):
        _, item = _tokenize(tokenizer)
    assert _learned_texts(item, tokenizer) == ["4471<|im_end|>"]  # content + the tokenizer EOS
    with pytest.warns(TurnsFallbackWarning):
        tokens, viewed = workbench.row_token_view({"messages": CONVERSATION}, "chat", tokenizer)
    assert viewed.turns == "last turn only"
    assert "".join(t.text for t in tokens if t.carries_loss) == "4471<|im_end|>"


def test_the_token_view_and_training_say_how_the_turns_were_found():
    row = {"messages": CONVERSATION}
    for chat_template, turns in [
        (QWEN3, "found by offsets"),
        (CHATML, "turn by turn"),
        (MARKED, "generation marks"),
    ]:
        tokenizer = _tokenizer(chat_template)
        _, item = workbench.row_token_view(row, "chat", tokenizer)
        data = workbench.load_data([row], verbose=False)
        (trained,) = tokenize_examples(data, "chat", tokenizer).examples
        assert item.turns == trained.turns == turns
    _, item = workbench.row_token_view(
        {"instruction": "Hi", "output": "Hello"}, "alpaca", tokenizer
    )
    assert item.turns == ""


def test_the_checks_name_the_rows_that_fell_back_and_count_those_found_by_offsets():
    def capitals(first: str) -> dict:  # an earlier reply in capitals is found as written
        turns = [("user", "Hi"), ("assistant", first), ("user", "Again"), ("assistant", "Fine")]
        return {"messages": [{"role": r, "content": c} for r, c in turns]}

    data = workbench.load_data(
        [{"messages": CONVERSATION}, capitals("OK"), capitals("NO")], verbose=False
    )
    findings = check_dataset(data, "chat", _tokenizer(SHOUTING))
    (fallback,) = [f for f in findings if f.check == "last_turn_only"]
    assert (fallback.severity, fallback.where) == ("warning", data.where(0))
    assert "only the last assistant turn is learned" in fallback.what
    assert "generation" in fallback.fix
    assert not [f for f in findings if f.check == "render"]  # reported once, by row
    (counted,) = [f for f in findings if f.check == "turns"]
    assert counted.what.startswith("2 of 3 conversations: the chat template is not prefix-stable")
    quiet = check_dataset(data, "chat", _tokenizer(CHATML))
    assert not [f for f in quiet if f.check in ("last_turn_only", "turns")]


def test_generation_marks_learn_exactly_the_tokens_transformers_marks_as_assistant():
    tokenizer = _tokenizer(MARKED)
    _, item = _tokenize(tokenizer)
    stock = tokenizer.apply_chat_template(
        CONVERSATION, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    assert item.input_ids == list(stock["input_ids"])
    assert [label != IGNORE_INDEX for label in item.labels] == [
        bool(m) for m in stock["assistant_masks"]
    ]
    assert item.turns == ""  # bare segments say nothing of how they were cut
