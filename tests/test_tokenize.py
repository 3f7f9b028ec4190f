"""Tests for workbench.tokenize (labels, EOS, truncation, token views, collator) and stats."""

from __future__ import annotations

import pytest
from conftest import SAMPLE_DATA

from workbench.data.loading import load_data
from workbench.errors import AllLabelsMaskedError, WorkbenchError
from workbench.tokens.collators import CompletionCollator
from workbench.tokens.stats import dataset_stats
from workbench.tokens.templates import TEMPLATES
from workbench.tokens.tokenizing import (
    IGNORE_INDEX,
    TruncationReport,
    token_view,
    token_view_html,
    token_view_text,
    tokenize_examples,
    tokenize_pair,
)

PROMPT = "### Instruction:\nGive the antonym of the word.\n\n### Input:\nhot\n\n### Response:\n"
RESPONSE = "cold and windy"


def ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


# --- tokenize_pair ---------------------------------------------------------------------


def test_labels_mask_exactly_the_prompt(tiny_tokenizer):
    prompt_ids, response_ids = ids(tiny_tokenizer, PROMPT), ids(tiny_tokenizer, RESPONSE)
    item = tokenize_pair(PROMPT, RESPONSE, tiny_tokenizer)
    n = len(prompt_ids)
    assert item.input_ids == prompt_ids + response_ids + [tiny_tokenizer.eos_token_id]
    assert item.labels[:n] == [IGNORE_INDEX] * n
    assert item.labels[n:] == item.input_ids[n:]
    assert item.prompt_tokens == n
    assert item.response_tokens == len(response_ids) + 1
    assert item.loss_tokens == len(response_ids) + 1
    assert item.truncated == "none"


def test_eos_is_appended_and_carries_loss(tiny_tokenizer):
    item = tokenize_pair(PROMPT, RESPONSE, tiny_tokenizer)
    eos = tiny_tokenizer.eos_token_id
    assert item.input_ids[-1] == eos
    assert item.labels[-1] == eos
    assert item.input_ids.count(eos) == 1


def test_add_eos_false_leaves_the_response_as_is(tiny_tokenizer):
    item = tokenize_pair(PROMPT, RESPONSE, tiny_tokenizer, add_eos=False)
    assert item.input_ids == ids(tiny_tokenizer, PROMPT) + ids(tiny_tokenizer, RESPONSE)
    assert tiny_tokenizer.eos_token_id not in item.input_ids


def test_completion_only_false_learns_every_token(tiny_tokenizer):
    item = tokenize_pair(PROMPT, RESPONSE, tiny_tokenizer, completion_only=False)
    assert item.labels == item.input_ids
    assert IGNORE_INDEX not in item.labels


def test_right_truncation_cuts_the_response(tiny_tokenizer):
    n = len(ids(tiny_tokenizer, PROMPT))
    item = tokenize_pair(PROMPT, RESPONSE, tiny_tokenizer, max_length=n + 1)
    assert item.truncated == "response"
    assert len(item.input_ids) == n + 1
    assert item.input_ids[:n] == ids(tiny_tokenizer, PROMPT)
    assert item.input_ids[n] == ids(tiny_tokenizer, RESPONSE)[0]
    assert item.loss_tokens == 1
    assert item.full_length == n + len(ids(tiny_tokenizer, RESPONSE)) + 1


def test_prompt_longer_than_max_length_leaves_no_loss(tiny_tokenizer):
    item = tokenize_pair(PROMPT, RESPONSE, tiny_tokenizer, max_length=5)
    assert item.truncated == "response"  # the cut falls in the prompt: every learned token lost
    assert item.input_ids == ids(tiny_tokenizer, PROMPT)[:5]
    assert item.loss_tokens == 0
    assert item.response_tokens == 0


def test_left_truncation_keeps_the_response_and_cuts_the_prompt_start(tiny_tokenizer):
    prompt_ids = ids(tiny_tokenizer, PROMPT)
    response_ids = ids(tiny_tokenizer, RESPONSE) + [tiny_tokenizer.eos_token_id]
    max_length = len(response_ids) + 3
    item = tokenize_pair(
        PROMPT, RESPONSE, tiny_tokenizer, max_length=max_length, truncation_side="left"
    )
    assert item.truncated == "prompt"
    assert len(item.input_ids) == max_length
    assert item.input_ids == prompt_ids[-3:] + response_ids
    assert item.labels == [IGNORE_INDEX] * 3 + response_ids


def test_max_length_below_two_is_rejected(tiny_tokenizer):
    with pytest.raises(WorkbenchError, match="`max_length`=1"):
        tokenize_pair(PROMPT, RESPONSE, tiny_tokenizer, max_length=1)


def test_empty_prompt_learns_every_token(tiny_tokenizer):
    item = tokenize_pair("", "Plain text row.", tiny_tokenizer)
    assert item.prompt_tokens == 0
    assert item.labels == item.input_ids


# --- tokenize_examples and the truncation report --------------------------------------


@pytest.fixture(scope="module")
def antonyms():
    rows = [
        {"instruction": "Give the antonym of the word.", "input": word, "output": answer}
        for word, answer in [("hot", "cold"), ("big", "small"), ("early", "late")]
    ]
    return load_data(rows, task="antonym", verbose=False)


def test_tokenize_examples_renders_and_masks_each_row(antonyms, tiny_tokenizer):
    data = tokenize_examples(antonyms, "alpaca", tiny_tokenizer)
    assert len(data) == 3
    for row, item in zip(antonyms, data.examples):
        prompt, response = TEMPLATES["alpaca"].render(row)
        assert item.input_ids[: item.prompt_tokens] == ids(tiny_tokenizer, prompt)
        assert item.labels[item.prompt_tokens : -1] == ids(tiny_tokenizer, response)
    assert data.tasks == ["antonym"] * 3
    hf = data.to_hf()
    assert hf.column_names == ["input_ids", "labels"]
    assert hf[0]["labels"] == data.examples[0].labels
    assert str(data.report) == "No row of 3 exceeds max_length=512."


def test_report_lists_rows_without_loss(antonyms, tiny_tokenizer):
    data = tokenize_examples(antonyms, "alpaca", tiny_tokenizer, max_length=8)
    report = data.report
    assert report.truncated_response == [0, 1, 2]  # cut inside the prompt: no response left
    assert report.truncated_prompt == []
    assert report.without_loss == [0, 1, 2]
    text = str(report)
    assert "3 of 3 rows exceed max_length=8" in text
    assert "3 rows have no token left to learn from" in text
    assert "truncation_side='left'" in text


def test_report_counts_response_cuts(tiny_tokenizer):
    rows = [
        {"prompt": "Q:", "completion": "a long answer that will not fit at all"},
        {"prompt": "Q:", "completion": "ok"},
    ]
    data = tokenize_examples(load_data(rows, verbose=False), "plain", tiny_tokenizer, max_length=5)
    assert data.report.truncated_response == [0]
    assert data.report.truncated_prompt == []
    assert data.report.without_loss == []
    text = str(data.report)
    assert "1 of 2 rows exceed max_length=5 (cut on the right)" in text
    assert "1 of those rows lost learned tokens, 0 lost only prompt tokens" in text


def test_truncation_report_str_without_cuts():
    report = TruncationReport(rows=7, max_length=64, side="left")
    assert str(report) == "No row of 7 exceeds max_length=64."
    report.truncated_prompt.append(2)
    assert "1 of 7 rows" in str(report) and "(cut on the left)" in str(report)


def test_template_errors_name_the_row(tiny_tokenizer):
    data = load_data(SAMPLE_DATA / "date_rewrite_prompt_completion.csv", verbose=False)
    with pytest.raises(WorkbenchError) as caught:
        tokenize_examples(data, "alpaca", tiny_tokenizer)
    assert f"{SAMPLE_DATA / 'date_rewrite_prompt_completion.csv'}:2" in str(caught.value)
    assert "`instruction`" in str(caught.value)


# --- token views -----------------------------------------------------------------------


def test_token_view_marks_loss_tokens_and_eos(tiny_tokenizer):
    tokens, item = token_view(PROMPT, RESPONSE, tiny_tokenizer)
    assert len(tokens) == len(item.input_ids)
    assert [t.token_id for t in tokens] == item.input_ids
    assert [t.carries_loss for t in tokens] == [label != IGNORE_INDEX for label in item.labels]
    parts = [t.part for t in tokens]
    assert parts[: item.prompt_tokens] == ["prompt"] * item.prompt_tokens
    assert parts[-1] == "eos"
    assert parts.count("eos") == 1
    assert set(parts[item.prompt_tokens : -1]) == {"response"}
    assert "".join(t.text for t in tokens[:-1]) == PROMPT + RESPONSE


def test_token_view_without_eos_has_no_eos_part(tiny_tokenizer):
    tokens, _ = token_view(PROMPT, RESPONSE, tiny_tokenizer, add_eos=False)
    assert "eos" not in {t.part for t in tokens}


def test_token_view_text_brackets_exactly_the_loss_tokens(tiny_tokenizer):
    tokens, _ = token_view(PROMPT, "cold", tiny_tokenizer)
    text = token_view_text(tokens)
    loss_text = "".join(f"[{t.text}]" for t in tokens if t.carries_loss)
    assert text == PROMPT + loss_text
    assert text.endswith("[<|im_end|>]")
    assert text.count("[") == sum(t.carries_loss for t in tokens)


def test_token_view_html_escapes_row_text_and_marks_the_cut(tiny_tokenizer):
    prompt = "Make <b>this</b> bold & safe:\n"
    max_length = len(ids(tiny_tokenizer, prompt)) + 2
    tokens, item = token_view(prompt, "no " * 10, tiny_tokenizer, max_length=max_length)
    assert item.truncated == "response"
    page = token_view_html(tokens, item)
    assert "<b>" not in page and "</b>" not in page
    assert "&lt;" in page and "&gt;" in page and "&amp;" in page
    cut = item.full_length - len(item.input_ids)
    assert f"{cut} tokens cut (response)" in page
    assert page.count("(prompt, no loss)") == item.prompt_tokens
    assert page.count("(response, loss)") == item.response_tokens


def test_token_view_html_without_a_cut_has_no_marker(tiny_tokenizer):
    tokens, item = token_view(PROMPT, RESPONSE, tiny_tokenizer)
    assert "tokens cut" not in token_view_html(tokens, item)
    assert "(eos, loss)" in token_view_html(tokens, item)


# --- collator --------------------------------------------------------------------------


def test_collator_pads_labels_with_ignore_index_and_mask_with_zero():
    collate = CompletionCollator(pad_token_id=0)
    batch = collate(
        [
            {"input_ids": [5, 6, 7], "labels": [-100, 6, 7]},
            {"input_ids": [8], "labels": [8]},
        ]
    )
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


def test_collator_pads_to_a_multiple():
    batch = CompletionCollator(pad_token_id=1, pad_to_multiple_of=8)(
        [{"input_ids": [5, 6, 7], "labels": [5, 6, 7]}]
    )
    assert batch["input_ids"].shape == (1, 8)
    assert batch["labels"].tolist() == [[5, 6, 7] + [-100] * 5]


def test_collator_refuses_a_batch_without_loss_and_says_why():
    collate = CompletionCollator(pad_token_id=0)
    with pytest.raises(AllLabelsMaskedError) as caught:
        collate(
            [{"input_ids": [1, 2], "labels": [-100, -100]}, {"input_ids": [3], "labels": [-100]}]
        )
    message = str(caught.value)
    assert "2 rows" in message
    assert "-100" in message
    assert "max_length" in message and "truncation_side='left'" in message


def test_collator_accepts_tokenized_data(antonyms, tiny_tokenizer):
    data = tokenize_examples(antonyms, "alpaca", tiny_tokenizer)
    batch = CompletionCollator(tiny_tokenizer.pad_token_id)(list(data.to_hf()))
    assert batch["input_ids"].shape[0] == 3
    assert (batch["labels"] != IGNORE_INDEX).sum().item() == sum(
        e.loss_tokens for e in data.examples
    )


# --- dataset_stats ---------------------------------------------------------------------


def test_dataset_stats_rows_per_task_and_over_max_length(tiny_tokenizer):
    data = load_data(SAMPLE_DATA / "mixed_instructions.jsonl", verbose=False)
    stats = dataset_stats(data, "alpaca", tiny_tokenizer, max_length=10**6)
    assert stats.rows_per_task == data.tasks
    assert stats.over_max_length == 0
    totals = stats.lengths["total"]
    assert (totals == stats.lengths["prompt"] + stats.lengths["response"]).all()
    median = int(totals.median())
    small = dataset_stats(data, "alpaca", tiny_tokenizer, max_length=median)
    assert small.over_max_length == int((totals > median).sum())
    assert 0 < small.over_max_length < len(data)
    assert f"{small.over_max_length} over max_length={median}" in str(small)


def test_dataset_stats_lengths_are_untruncated(antonyms, tiny_tokenizer):
    stats = dataset_stats(antonyms, "alpaca", tiny_tokenizer, max_length=4)
    full = tokenize_examples(antonyms, "alpaca", tiny_tokenizer, max_length=10**6)
    assert stats.lengths["total"].tolist() == [len(e.input_ids) for e in full.examples]
    assert stats.over_max_length == 3
    assert list(stats.lengths["task"]) == ["antonym"] * 3
