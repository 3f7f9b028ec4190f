"""Pre-flight checks: each check fires on the problem it names (with the row, what and the fix)
and stays quiet on data without it; `python -m workbench check` and train() report them."""

from __future__ import annotations

import warnings

import pytest
from conftest import CHATML, SAMPLE_DATA, build_tiny_tokenizer, quick

import workbench
from workbench.cli import main
from workbench.tokens.checks import WHOLE, Finding, check_dataset
from workbench.tokens.templates import Template
from workbench.tokens.tokenizing import tokenize_examples

ANTONYMS = [
    ("hot", "cold"), ("big", "small"), ("fast", "slow"), ("wet", "dry"), ("up", "down"),
    ("early", "late"), ("open", "closed"), ("light", "dark"), ("full", "empty"), ("old", "new"),
]  # fmt: skip
INSTRUCTION = "Give the antonym of the word."
# ChatML whose assistant turns are marked for training (`{% generation %}`); the variants
# below change one thing each.
MARKED = (
    "{% for message in messages %}{% if message['role'] == 'assistant' %}"
    "{{ '<|im_start|>assistant\n' }}{% generation %}{{ message['content'] }}END{% endgeneration %}"
    "{{ '\n' }}{% else %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CLOSED = MARKED.replace("END", "<|im_end|>")  # closes assistant turns inside the marks
OPEN = MARKED.replace("END", "")  # writes no end-of-turn marker at all
# prompts generation with another header than the one training puts before the answer
GENERATION_HEADER = "{{ '<|im_start|>assistant\n' }}{% endif %}"
OTHER_HEADER = CLOSED.replace(GENERATION_HEADER, "{{ '<|im_start|>bot\n' }}{% endif %}")


def antonym_rows(n: int = 10, **extra) -> list[dict]:
    return [
        {"instruction": INSTRUCTION, "input": word, "output": opposite, **extra}
        for word, opposite in (ANTONYMS * 3)[:n]
    ]


def conversations(n: int = 4) -> list[dict]:
    return [
        {
            "messages": [
                {"role": "user", "content": f"Order {i} ships to Lyon. Where does it ship?"},
                {"role": "assistant", "content": "Lyon"},
                {"role": "user", "content": "And the order number?"},
                {"role": "assistant", "content": str(i)},
            ]
        }
        for i in range(n)
    ]


def load(rows: list[dict]) -> workbench.Examples:
    return workbench.load_data(rows, verbose=False)


def found(findings: list[Finding], check: str) -> list[Finding]:
    return [f for f in findings if f.check == check]


def tokenizer_with(chat_template: str, eos: str = "<|im_end|>"):
    tokenizer = build_tiny_tokenizer()
    tokenizer.chat_template = chat_template
    tokenizer.eos_token = eos
    return tokenizer


@pytest.fixture(scope="module")
def tickets():
    return workbench.load_data(SAMPLE_DATA / "support_tickets.jsonl", verbose=False)


def test_a_finding_reads_as_one_line_with_where_what_and_fix():
    finding = Finding("warning", "duplicate", "repeats data.jsonl:3", "data.jsonl:9", "Keep one.")
    assert str(finding) == "warning [duplicate] data.jsonl:9: repeats data.jsonl:3 Fix: Keep one."
    assert "\n" not in str(finding)


# --- rows with nothing to learn, and the learned share -------------------------------------


def test_rows_whose_learned_tokens_are_all_cut_have_nothing_to_learn(tiny_tokenizer):
    rows = antonym_rows(4)
    rows[2]["input"] = "a very long word list " * 40  # its prompt alone passes max_length
    data = load(rows)
    findings = found(
        check_dataset(data, "alpaca", tiny_tokenizer, max_length=140), "nothing_to_learn"
    )
    assert [(f.severity, f.where) for f in findings] == [("warning", data.where(2))]
    assert "max_length cut every learned token" in findings[0].what
    assert "max_length" in findings[0].fix


def test_every_row_without_a_learned_token_is_an_error(tiny_tokenizer):
    template = Template(name="hint", prompt="{instruction} {output}\n", response="{input}")
    data = load([{**row, "input": ""} for row in antonym_rows(3)])  # a blank answer, no EOS
    findings = check_dataset(data, template, tiny_tokenizer, add_eos=False)
    empty = found(findings, "nothing_to_learn")
    assert [(f.severity, f.where) for f in empty] == [("error", data.where(i)) for i in range(3)]
    assert "no learned text" in empty[0].what


def test_the_learned_share_is_counted_and_nothing_is_flagged_on_good_rows(tiny_tokenizer):
    data = load(antonym_rows(10))
    findings = check_dataset(data, "alpaca", tiny_tokenizer)
    assert found(findings, "nothing_to_learn") == []
    tokens = tokenize_examples(data, "alpaca", tiny_tokenizer, max_length=256).examples
    learned, total = sum(t.loss_tokens for t in tokens), sum(len(t.input_ids) for t in tokens)
    (share,) = found(findings, "learned_share")
    assert share.severity == "info"
    assert share.what.startswith(f"{learned} of {total} tokens ({learned / total:.0%})")


# --- the stop token ------------------------------------------------------------------------


def test_a_text_response_without_eos_is_an_error_naming_the_rows(tiny_tokenizer):
    data = load(antonym_rows(8))
    findings = found(check_dataset(data, "alpaca", tiny_tokenizer, add_eos=False), "missing_stop")
    assert all(f.severity == "error" for f in findings)
    assert [f.where for f in findings[:5]] == [data.where(i) for i in range(5)]
    assert "3 more rows" in findings[5].what and findings[5].where == data.source
    assert "'<|im_end|>'" in findings[0].what and "add_eos=True" in findings[0].fix


def test_a_text_response_with_eos_has_its_stop_token(tiny_tokenizer):
    assert (
        found(check_dataset(load(antonym_rows(8)), "alpaca", tiny_tokenizer), "missing_stop") == []
    )


def test_a_chat_template_that_does_not_close_assistant_turns_is_an_error():
    data = load(conversations(3))
    findings = found(check_dataset(data, "chat", tokenizer_with(OPEN)), "missing_stop")
    assert [f.where for f in findings] == [data.where(i) for i in range(3)]
    assert "closes assistant turns" in findings[0].fix


@pytest.mark.parametrize(
    "chat_template, eos",
    [(CHATML, "<|endoftext|>"), (CLOSED, "<|endoftext|>"), (CHATML, "<|im_end|>")],
    ids=["chatml-eos-differs", "generation-marks", "chatml"],
)
def test_assistant_turns_closed_by_the_end_of_turn_marker_are_quiet(chat_template, eos):
    tokenizer = tokenizer_with(chat_template, eos)  # EOS need not be the end-of-turn marker
    findings = check_dataset(load(conversations(3)), "chat", tokenizer)
    assert found(findings, "missing_stop") == []


# --- the generation prompt -----------------------------------------------------------------


def test_a_generation_prompt_unlike_the_trained_prefix_names_the_first_different_token():
    tokenizer = tokenizer_with(OTHER_HEADER)
    data = load(conversations(2))
    findings = found(check_dataset(data, "chat", tokenizer), "prompt_differs")
    assert [(f.severity, f.where) for f in findings] == [("warning", data.where(i)) for i in (0, 1)]
    prompt = workbench.get_template("chat").render_prompt(data[0], tokenizer)
    assert prompt.endswith("<|im_start|>bot\n")
    generated = tokenizer(prompt)["input_ids"]
    at = len(tokenizer(prompt.removesuffix("bot\n"))["input_ids"])  # the header's first token
    trained = tokenizer.decode(tokenizer("assistant")["input_ids"][:1])
    assert findings[0].what == (
        f"the generation prompt differs from training at token {at}: generation has "
        f"{tokenizer.decode(generated[at : at + 1])!r}, training has {trained!r}"
    )


def test_generation_prompts_that_match_the_trained_prefix_are_quiet(tiny_tokenizer):
    chat = check_dataset(load(conversations(3)), "chat", tiny_tokenizer)
    text = check_dataset(load(antonym_rows(5)), "alpaca", tiny_tokenizer)
    assert found(chat, "prompt_differs") == [] and found(text, "prompt_differs") == []


# --- truncation ----------------------------------------------------------------------------


def test_truncation_that_cuts_learned_tokens_counts_rows_and_lost_tokens(tiny_tokenizer):
    rows = antonym_rows(6)
    for row in rows[:2]:
        row["output"] = "the opposite of that word, as far as I can tell, is " + row["output"]
    data = load(rows)
    short = tokenize_examples(data, "alpaca", tiny_tokenizer, max_length=136).examples
    whole = tokenize_examples(data, "alpaca", tiny_tokenizer, max_length=WHOLE).examples
    lost = sum(w.loss_tokens - s.loss_tokens for s, w in zip(short, whole))
    assert [s.truncated for s in short] == ["response"] * 2 + ["none"] * 4 and lost > 0
    (finding,) = found(check_dataset(data, "alpaca", tiny_tokenizer, max_length=136), "truncation")
    assert finding.severity == "warning"
    assert "2 of 6 rows lose learned tokens to max_length=136" in finding.what
    assert f"{lost} learned tokens in all" in finding.what
    assert data.where(0) in finding.what and data.where(1) in finding.what
    assert f"Raise max_length to {max(w.full_length for w in whole[:2])}" in finding.fix


def test_rows_that_fit_lose_nothing(tiny_tokenizer):
    assert found(check_dataset(load(antonym_rows(6)), "alpaca", tiny_tokenizer), "truncation") == []


def test_reusing_the_training_tokens_finds_the_same(tiny_tokenizer):
    rows = antonym_rows(6)
    rows[0]["output"] = "the opposite of that word, as far as I can tell, is cold"
    rows[3]["input"] = "a very long word list " * 40
    data = load(rows)
    tokens = tokenize_examples(data, "alpaca", tiny_tokenizer, max_length=136)
    alone = check_dataset(data, "alpaca", tiny_tokenizer, max_length=136)
    assert found(alone, "truncation") and found(alone, "nothing_to_learn")
    assert check_dataset(data, "alpaca", tiny_tokenizer, max_length=136, tokenized=tokens) == alone


# --- duplicates and leakage ----------------------------------------------------------------


def test_rows_that_differ_only_in_case_whitespace_or_task_are_duplicates(tiny_tokenizer):
    rows = antonym_rows(4)
    rows.append({"instruction": INSTRUCTION.lower() + "  ", "input": "Hot", "output": "cold",
                 "task": "other"})  # fmt: skip
    data = load(rows)  # the loader only refuses exact copies
    (finding,) = found(check_dataset(data, "alpaca", tiny_tokenizer), "duplicate")
    assert (finding.severity, finding.where) == ("warning", data.where(4))
    assert finding.what == f"repeats {data.where(0)}"


def test_distinct_rows_are_not_duplicates(tiny_tokenizer):
    assert found(check_dataset(load(antonym_rows(10)), "alpaca", tiny_tokenizer), "duplicate") == []


def test_a_row_in_training_and_validation_is_leakage_naming_both(tiny_tokenizer):
    train, held = load(antonym_rows(6)), load(antonym_rows(10)[5:])
    findings = found(check_dataset(train, "alpaca", tiny_tokenizer, validation=held), "leakage")
    assert [(f.where, f.what) for f in findings] == [
        (train.where(5), f"is also in validation at {held.where(0)}")
    ]


def test_disjoint_splits_do_not_leak(tiny_tokenizer):
    train, held = load(antonym_rows(5)), load(antonym_rows(10)[5:])
    assert found(check_dataset(train, "alpaca", tiny_tokenizer, validation=held), "leakage") == []


# --- fields and columns --------------------------------------------------------------------


def test_a_template_field_empty_in_many_rows_is_named_with_its_share():
    rows = antonym_rows(10)
    for row in rows[3:6]:
        row["input"] = ""
    data = load(rows)
    (finding,) = found(check_dataset(data, "alpaca_input"), "empty_field")
    assert "`input` is empty in 3 of 10 rows (30%)" in finding.what
    assert finding.where == data.where(3)


def test_few_empty_fields_or_a_no_input_prompt_are_quiet():
    rows = antonym_rows(10)
    rows[0]["input"] = ""  # 10%: below the share that hints at a mapping mistake
    assert found(check_dataset(load(rows), "alpaca_input"), "empty_field") == []
    for row in rows:
        row["input"] = ""
    assert found(check_dataset(load(rows), "alpaca"), "empty_field") == []  # no-input prompt


def test_a_column_the_template_never_reads_is_named():
    text = check_dataset(load(antonym_rows(4, source="web")), "alpaca")
    chat = check_dataset(load([{**row, "id": i} for i, row in enumerate(conversations(2))]), "chat")
    assert [f.what.split("column ")[1] for f in found(text, "unused_column")] == [
        "`source` (it reads input, instruction, output)"
    ]
    assert "`id`" in found(chat, "unused_column")[0].what


def test_columns_the_template_reads_and_the_task_are_not_unused():
    assert found(check_dataset(load(antonym_rows(4, task="t")), "alpaca"), "unused_column") == []
    assert found(check_dataset(load(conversations(2)), "chat"), "unused_column") == []


# --- labels --------------------------------------------------------------------------------


def test_a_label_like_task_shows_its_label_distribution(tickets):
    (finding,) = found(check_dataset(tickets, "alpaca"), "labels")
    assert finding.severity == "info"
    assert "task `ticket_topic` has 4 labels over 320 rows" in finding.what
    assert "'billing' 80 (25%)" in finding.what


def test_free_text_or_few_rows_have_no_label_distribution(tickets):
    assert found(check_dataset(tickets.select(range(19)), "alpaca"), "labels") == []
    dates = workbench.load_data(SAMPLE_DATA / "date_rewrite.jsonl", verbose=False)
    assert found(check_dataset(dates, "alpaca"), "labels") == []  # every answer differs


def test_a_validation_label_never_seen_in_training_is_named(tickets):
    train = tickets.where_task("ticket_topic").select(
        i for i, row in enumerate(tickets.rows) if row["output"] != "shipping"
    )
    held = tickets.select(i for i, row in enumerate(tickets.rows) if row["output"] == "shipping")
    (finding,) = found(check_dataset(train, "alpaca", validation=held), "unseen_label")
    assert finding.where == held.where(0)
    assert "label 'shipping' of task `ticket_topic` is in 80 validation rows" in finding.what


def test_validation_labels_seen_in_training_are_quiet(tickets):
    train, held = workbench.split_data(tickets, 40, seed=0)
    assert found(check_dataset(train, "alpaca", validation=held), "unseen_label") == []


# --- rows the template cannot render --------------------------------------------------------


def test_rows_the_template_cannot_render_are_errors_not_exceptions(tiny_tokenizer):
    template = Template(name="ctx", prompt="{instruction}\n{context}\n", response="{output}")
    data = load(antonym_rows(3))
    findings = found(check_dataset(data, template, tiny_tokenizer), "render")
    assert [(f.severity, f.where) for f in findings] == [("error", data.where(i)) for i in range(3)]
    assert "`{context}`" in findings[0].what
    assert found(check_dataset(data, "alpaca", tiny_tokenizer), "render") == []


# --- the command line ----------------------------------------------------------------------

SAMPLES = sorted(p for p in SAMPLE_DATA.iterdir() if p.suffix in (".jsonl", ".json", ".csv"))
BROKEN = sorted((SAMPLE_DATA / "broken").iterdir())


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_check_prints_findings_by_severity_and_a_summary(path, tiny_model_dir, capsys):
    code = main(["check", str(path), "--model", str(tiny_model_dir)])
    lines = capsys.readouterr().out.strip().splitlines()
    findings, summary = lines[:-1], lines[-1]
    assert findings and summary.startswith(f"{path}: ") and "rows checked with template" in summary
    severities = [line.split(" [")[0] for line in findings]
    assert severities == sorted(severities, key=["error", "warning", "info"].index)
    assert code == (1 if "error" in severities else 0)


def test_check_exits_1_on_errors_and_reads_a_validation_file(tiny_model_dir, capsys):
    model = ["--model", str(tiny_model_dir)]
    tickets = str(SAMPLE_DATA / "support_tickets.jsonl")
    # the `plain` template reads prompt/completion, which Alpaca rows do not have
    assert main(["check", tickets, "--template", "plain", *model]) == 1
    assert "error [render]" in capsys.readouterr().out
    # every validation row trained on: the validation loss would measure recall, an error
    assert main(["check", tickets, "--validation", tickets, *model]) == 1
    assert f"error [leakage] {tickets}:1: is also in validation at {tickets}:1" in (
        capsys.readouterr().out
    )


@pytest.mark.parametrize("path", BROKEN, ids=lambda p: p.name)
def test_check_on_a_file_that_does_not_load_prints_its_problems_and_exits_2(
    path, tiny_model_dir, capsys
):
    assert main(["check", str(path), "--model", str(tiny_model_dir)]) == 2
    out = capsys.readouterr()
    assert out.err.startswith("workbench: ") and str(path) in out.err and out.out == ""


# --- training ------------------------------------------------------------------------------


def _check_warnings(caught) -> list[str]:
    return [str(w.message) for w in caught if str(w.message).startswith(("warning [", "error ["))]


def test_train_warns_about_a_duplicate_row_before_training(tiny, ticket_split):
    model, tokenizer = tiny
    rows, validation = ticket_split
    copy = dict(rows[0], input=rows[0]["input"].upper())  # the loader would refuse an exact copy
    with_copy = load([*rows.rows, copy])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        workbench.train(
            model, tokenizer, with_copy, validation, hyperparameters=quick(), start=False
        )
    assert _check_warnings(caught) == [
        f"warning [duplicate] {with_copy.where(48)}: repeats {with_copy.where(0)} Fix: Keep one "
        "of them: a repeated row is learned twice as hard and overweights its answer."
    ]


def test_train_on_clean_rows_warns_about_nothing(tiny, ticket_split):
    model, tokenizer = tiny
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        workbench.train(model, tokenizer, *ticket_split, hyperparameters=quick(), start=False)
    assert _check_warnings(caught) == []


def test_preference_pairs_are_checked_as_dpo_learns_them(tiny_tokenizer):
    pairs = workbench.load_data(SAMPLE_DATA / "preferences.jsonl", verbose=False)
    findings = check_dataset(pairs.select(range(20)), None, tiny_tokenizer)
    assert [f.check for f in findings] == ["learned_share"]  # no render error, no unused column
