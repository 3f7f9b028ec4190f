"""CompareView: word differences, base/fine-tuned columns from one LoRA model, the try box."""

from __future__ import annotations

import html
import re

import pytest
from conftest import SAMPLE_DATA

import workbench
from workbench.evaluation.compare import evaluate_model
from workbench.model.generation import Decoding, adapter_disabled, generate
from workbench.runs.hyperparameters import Hyperparameters
from workbench.training.finetune import train
from workbench.widgets.compare_view import NO_BASE, CompareView, word_diff_html

SHORT = Decoding(max_new_tokens=4)


def test_word_diff_marks_inserted_and_removed_words():
    out = word_diff_html("the cat sat down", "the dog sat down quickly")
    assert re.search(r"<del[^>]*>cat</del>", out)
    assert re.search(r"<ins[^>]*>dog</ins>", out)
    assert re.search(r"<ins[^>]*>quickly</ins>", out)
    assert out.startswith("the ") and "sat down" in out
    assert "<ins" not in word_diff_html("same words here", "same words here")
    assert word_diff_html("", "new").count("<ins") == 1
    assert word_diff_html("old", "").count("<del") == 1


def test_word_diff_escapes_html():
    out = word_diff_html("plain", "plain <b>bold</b> & more")
    assert "<b>" not in out and "&lt;b&gt;bold&lt;/b&gt;" in out and "&amp;" in out
    removed = word_diff_html("<script>x</script> keep", "keep")
    assert "<script>" not in removed and "&lt;script&gt;" in removed


@pytest.fixture(scope="module")
def lora_run(tiny_model_dir, tmp_path_factory):
    data = workbench.load_data(SAMPLE_DATA / "support_tickets.jsonl", verbose=False)
    rest, validation = workbench.split_data(data, 8, seed=0)
    model, tokenizer = workbench.load_model(str(tiny_model_dir), device="cpu")
    hp = Hyperparameters(
        max_steps=6, batch_size=4, eval_every=3, learning_rate=5e-3, sample_max_new_tokens=4
    )
    run_dir = tmp_path_factory.mktemp("runs") / "lora"  # module scope: before WORKBENCH_RUNS is set
    run = train(
        model, tokenizer, rest.select(range(48)), validation, hyperparameters=hp, run_dir=run_dir
    ).wait()
    assert run.status == "finished", run.error
    return run, validation.select(range(4))


def test_run_comparison_fills_both_columns_from_one_lora_model(lora_run):
    run, rows = lora_run
    view = CompareView(run.model, run.tokenizer, rows, "alpaca", decoding=SHORT)
    assert view.state == "ready" and not view.run_button.disabled
    assert "Press <b>Run comparison</b> to answer the 4 rows" in view.status.value
    assert view.summary_html.value == view.table_html.value == ""
    view.run_button.click()
    view.wait()
    assert view.errors == []
    prompts = view.after.prompts
    with adapter_disabled(run.model):
        base = generate(run.model, run.tokenizer, prompts, SHORT)
    assert view.before.answers == base  # adapter off
    assert view.after.answers == generate(run.model, run.tokenizer, prompts, SHORT)  # back on
    table = view.table_html.value
    assert len(view.before.answers) == len(view.after.answers) == len(rows) == 4
    for column in ("prompt", "reference", "base", "fine-tuned", "exact_match", "rouge_l"):
        assert f">{column}</th>" in table
    assert table.count("&rarr;") == 2 * len(rows)  # base -> fine-tuned, per row and metric
    assert "<details>" in table  # prompts are collapsed
    assert len({row["instruction"] for row in rows.rows}) == 1  # one task, many tickets
    for row in rows.rows:  # each collapsed prompt is labelled with what differs: the ticket
        assert f"<summary>{html.escape(row['input'][:40])}" in table
    assert "<summary>Below is" not in table and "<summary>###" not in table
    for reference in view.after.references:
        assert reference in table
    summary = view.summary_html.value
    for metric in ("exact_match", "rouge_l", "validation_loss", "perplexity"):
        assert f">{metric}</td>" in summary
    assert not view.run_button.disabled and not view.try_button.disabled  # answers again
    assert view.state == "done" and view.status.value == "Compared 4 rows."


def test_try_on_both_answers_with_the_adapter_off_and_on(lora_run):
    run, rows = lora_run
    view = CompareView(run.model, run.tokenizer, rows, "alpaca", decoding=SHORT)
    view.prompt_box.value = "My invoice shows a charge twice."
    view.try_button.click()
    view.wait()
    assert view.errors == []
    base, tuned = view.try_answers
    task = rows.rows[0]["instruction"]  # the rows share one task: the text is a new ticket
    prompt = workbench.TEMPLATES["alpaca"].render_prompt(
        {"instruction": task, "input": "My invoice shows a charge twice."}
    )
    assert html.escape("a new input under the rows' shared instruction") in view.try_output.value
    with adapter_disabled(run.model):
        assert base == generate(run.model, run.tokenizer, [prompt], SHORT)[0]
    assert tuned == generate(run.model, run.tokenizer, [prompt], SHORT)[0]
    assert view.try_output.value.count("<td") == 2 and "### Instruction:" in view.try_output.value

    view.raw_prompt.value = True
    assert view.render_prompt("Once upon a time") == "Once upon a time"
    view.prompt_box.value = "   "
    view.try_button.click()
    view.wait()
    assert view.try_error.message == "The prompt box is empty: type an instruction first."
    assert view.try_output.value == "" and view.error_html.message == ""  # beside Try, alone
    assert not view.run_button.disabled and view.state == "ready"


def test_a_model_without_adapter_needs_before_for_the_base_column(tiny):
    model, tokenizer = tiny
    data = workbench.load_data(SAMPLE_DATA / "support_tickets.jsonl", verbose=False)
    rows = data.select(range(3))
    view = CompareView(model, tokenizer, rows, decoding=SHORT)
    view.run_button.click()
    view.wait()
    assert view.before is None and len(view.after.answers) == 3
    assert NO_BASE[:40] in view.summary_html.value.replace("&#x27;", "'")
    view.prompt_box.value = "Where is my parcel?"
    view.try_button.click()
    view.wait()
    assert view.try_answers[0] is None and "no adapter" in view.try_output.value

    before = evaluate_model(model, tokenizer, rows, metrics=("exact_match",), decoding=SHORT)
    given = CompareView(model, tokenizer, before=before, after=view.after)
    assert given.run_button.disabled  # nothing left to compute
    for answer in before.answers:  # the given base answers fill the base column
        assert html.escape(answer) in given.table_html.value
    assert "exact_match" in given.summary_html.value and "n/a" not in given.table_html.value


def test_mismatched_rows_are_reported_not_raised(tiny):
    model, tokenizer = tiny
    data = workbench.load_data(SAMPLE_DATA / "support_tickets.jsonl", verbose=False)
    one = evaluate_model(model, tokenizer, data.select(range(1)), decoding=SHORT)
    two = evaluate_model(model, tokenizer, data.select(range(2)), decoding=SHORT)
    view = CompareView(model, tokenizer, before=one, after=two)
    assert "same rows" in view.error_html.value
    bundle = view._repr_mimebundle_()
    assert "same rows" in bundle["text/html"] and bundle["text/plain"].startswith("CompareView")


def test_measure_forgetting_shows_learned_beside_retained(lora_run):
    from workbench.evaluation.forgetting import ForgettingProbe

    run, rows = lora_run
    mixed = workbench.load_data(SAMPLE_DATA / "mixed_instructions.jsonl", verbose=False)
    probe = ForgettingProbe(
        target=rows,
        probe=mixed.select([i for i, r in enumerate(mixed.rows) if r["task"] == "capital"]),
        rows_per_task=3,
        decoding=SHORT,
    )
    view = CompareView(run.model, run.tokenizer, rows, "alpaca", decoding=SHORT)
    assert view.forgetting_html.value == ""
    table = view.measure_forgetting(probe)
    shown = view.forgetting_html.value
    assert "Learned and retained" in shown and ">learned<" in shown and ">retained<" in shown
    assert list(table.index) == ["ticket_topic", "capital"] and table is view.forgetting
    with adapter_disabled(run.model):
        base = probe.measure(run.model, run.tokenizer, "base")
    assert table.loc["capital", "base"] == base.score["capital"]  # base = adapter off
    assert table.loc["ticket_topic", "fine-tuned loss"] < table.loc["ticket_topic", "base loss"]
    assert "Learned and retained" in view.static_html()


def test_a_full_fine_tuned_model_needs_the_base_scores_for_forgetting(tiny):
    from workbench.evaluation.forgetting import ForgettingProbe

    model, tokenizer = tiny
    data = workbench.load_data(SAMPLE_DATA / "mixed_instructions.jsonl", verbose=False)
    capital = data.select([i for i, r in enumerate(data.rows) if r["task"] == "capital"][:2])
    antonym = data.select([i for i, r in enumerate(data.rows) if r["task"] == "antonym"][:2])
    probe = ForgettingProbe(target=capital, probe=antonym, decoding=SHORT)
    view = CompareView(model, tokenizer, capital, "alpaca", decoding=SHORT)
    with pytest.raises(ValueError, match="probe.measure_base"):
        view.measure_forgetting(probe)
    base = probe.measure_base(model, tokenizer)  # before training: the weights are the base
    table = view.measure_forgetting(probe, base=base)
    assert list(table["role"]) == ["learned", "retained"]
    assert list(table["change"]) == [0.0, 0.0]  # nothing was trained


def test_try_renders_a_typed_message_with_the_rows_system_message(tiny):
    model, tokenizer = tiny
    rows = workbench.load_data(SAMPLE_DATA / "unit_chat.jsonl", verbose=False).select(range(4))
    view = CompareView(model, tokenizer, rows, "chat", decoding=SHORT)
    prompt = view.render_prompt("What is 2 hours in minutes?")
    system = rows.rows[0]["messages"][0]["content"]
    assert prompt.startswith(f"<|im_start|>system\n{system}<|im_end|>")
    assert prompt.endswith("What is 2 hours in minutes?<|im_end|>\n<|im_start|>assistant\n")


def test_copy_as_code_gives_the_same_answers_with_the_adapter_off_and_on(lora_run):
    run, rows = lora_run
    view = CompareView(
        run.model, run.tokenizer, rows, "dolly", metrics=["exact_match"], decoding=SHORT
    )
    view.run_comparison()
    view.copy_button.click()
    code = view.code.value
    assert "wb.compare_before_after(model, tokenizer, rows, template" in code
    assert "metrics=['exact_match']" in code and "wb.Decoding(max_new_tokens=4)" in code
    namespace = {"model": run.model, "tokenizer": run.tokenizer}
    exec(code, namespace)
    assert namespace["rows"].rows == rows.rows
    assert namespace["template"] == view.template == workbench.TEMPLATES["dolly"]
    table = namespace["table"]
    assert table["before"].tolist() == view.before.answers
    assert table["after"].tolist() == view.after.answers
    assert namespace["summary"]["after"].to_dict() == pytest.approx(view.after.scores)


def test_copy_as_code_without_an_adapter_compares_with_the_given_before(tiny):
    model, tokenizer = tiny
    rows = workbench.load_data(SAMPLE_DATA / "support_tickets.jsonl", verbose=False)
    rows = rows.select(range(3))
    before = evaluate_model(model, tokenizer, rows, "alpaca", decoding=SHORT)
    view = CompareView(model, tokenizer, rows, before=before, decoding=SHORT)
    view.run_comparison()
    code = view.as_code()
    assert "wb.compare(before, after)" in code and "compare_before_after" not in code
    namespace = {"model": model, "tokenizer": tokenizer, "before": before}
    exec(code, namespace)
    assert namespace["after"].answers == view.after.answers
    assert namespace["after"].scores == pytest.approx(view.after.scores)


class Subscriptions:
    """What CompareView.follow needs of a Run: its callbacks, called by `emit`."""

    def __init__(self) -> None:
        self.callbacks: dict[str, list] = {}

    def add_callback(self, event: str, fn) -> None:
        self.callbacks.setdefault(event, []).append(fn)

    def emit(self, event: str, **data) -> None:
        for fn in self.callbacks.get(event, []):
            fn({"event": event, **data})


def test_after_stop_the_view_says_one_state_at_a_time_and_the_button_follows(lora_run):
    run, rows = lora_run
    view = CompareView(run.model, run.tokenizer, rows, "alpaca", decoding=SHORT)
    seen = []  # (state, status, button disabled, totals) each time the status changes
    view.status.observe(
        lambda _: seen.append(
            (view.state, view.status.value, view.run_button.disabled, view.summary_html.value)
        ),
        names="value",
    )
    stopped = Subscriptions()
    view.follow(stopped)
    stopped.emit("stopped", step=7)  # what a Run does when Stop was pressed at step 7
    view.wait()
    assert seen[0] == ("comparing", "<i>Comparing after step 7 ...</i>", True, "")
    assert seen[-1][:3] == ("done", "Compared 4 rows.", False) and ">exact_match<" in seen[-1][3]
    assert len(seen) == 2  # comparing, then done: never "Press Run comparison" meanwhile
    assert view.errors == [] and not view.try_button.disabled

    view.prompt_box.value = "Where is my parcel?"
    view.try_button.click()  # Run comparison waits for the answer: off meanwhile, with why
    assert view.run_button.disabled and "prompt box" in view.run_button.tooltip
    view.wait()
    assert not view.run_button.disabled and view.state == "done"


def test_without_rows_the_button_is_off_and_says_why(tiny):
    model, tokenizer = tiny
    view = CompareView(model, tokenizer)
    assert view.state == "ready" and view.run_button.disabled
    assert "No rows to compare" in view.run_button.tooltip and "No rows" in view.status.value


def _ticket_evaluations():
    """Base and fine-tuned answers to three tickets that share one instruction."""
    task = "Classify the customer message into one of these topics: billing, shipping."
    tickets = ["I was charged twice.", "Where is my parcel?", "Refund my order please."]
    prompts = [f"### Instruction:\n{task}\n\n### Input:\n{t}\n\n### Response:\n" for t in tickets]
    questions = [f"{task}\n{t}" for t in tickets]
    references = ["billing", "shipping", "billing"]

    def evaluation(answers, rows_right, perplexity):
        per_row = [{"accuracy": float(right)} for right in rows_right]
        scores = {"accuracy": sum(rows_right) / 3, "perplexity": perplexity}
        return workbench.Evaluation(prompts, references, answers, scores, per_row, questions)

    before = evaluation(["- VAT = 18", "shipping", "the billing team"], [0, 1, 1], 1910.4)
    after = evaluation(["billing", "shipping", "billing"], [1, 1, 1], 3.2)
    return before, after, tickets


def test_rows_show_what_differs_between_them_and_metrics_read_as_shares():
    from workbench.widgets.compare_view import rows_table_html, summary_table_html

    before, after, tickets = _ticket_evaluations()
    table = rows_table_html(before, after)
    for ticket in tickets:  # the shared instruction is left out of each row's label
        assert f"<summary>{html.escape(ticket)}</summary>" in table
    assert "<ins" not in table and "billing</td>" in table  # answers shown plainly
    assert table.count("&#10007; &rarr; &#10003;") == 1  # row 1: wrong, then right
    cut = rows_table_html(before, after, cut=lambda answer: answer == "the billing team")
    assert cut.count("&hellip;") == 1 and "the billing team<span title='cut at" in cut
    diffed = rows_table_html(before, after, diff=True)
    assert "<ins" in diffed and "words it adds" in diffed  # the diff, with its legend
    summary = summary_table_html(before, after)
    assert "67% (2 of 3)" in summary and "100% (3 of 3)" in summary and "+33 points" in summary
    assert "1,910.4" in summary and "e+03" not in summary
    assert "share of answers that name the right label" in summary
    assert "Measured on these 3 rows" in summary
