"""Before/after on one model, metrics through the shipped evaluate modules, validation loss."""

from __future__ import annotations

import math

import pytest
from conftest import SAMPLE_DATA, quick

import workbench
from workbench.evaluation.compare import compare_before_after, evaluate_model, score_answers
from workbench.model.generation import Decoding, generate
from workbench.tokens.templates import TEMPLATES
from workbench.training.finetune import train

SHORT = Decoding(max_new_tokens=4, batch_size=4)


def test_before_is_the_untouched_base_and_after_the_adapter_on_one_model(tiny, ticket_split):
    model, tokenizer = tiny
    train_rows, validation = ticket_split
    prompts = [workbench.TEMPLATES["alpaca"].render_prompt(r) for r in validation.rows]
    base_answers = generate(model, tokenizer, prompts, SHORT)
    base_weights = {k: v.clone() for k, v in model.state_dict().items()}
    run = train(
        model,
        tokenizer,
        train_rows,
        validation,
        method=workbench.Method(kind="lora", r=8, dropout=0.0),
        hyperparameters=quick(max_steps=30, batch_size=8, learning_rate=1e-2, eval_every=30),
    ).wait()
    assert run.status == "finished", run.error
    summary, rows = compare_before_after(
        run.model,
        tokenizer,
        validation,
        "alpaca",
        metrics=["exact_match", "rouge_l"],
        decoding=SHORT,
    )
    assert list(rows["before"]) == base_answers  # adapter off == the model before training
    assert list(rows["after"]) != base_answers  # the adapter changed the answers
    assert run.model.get_base_model() is model  # one model: LoRA was injected in place
    for name, tensor in run.model.get_base_model().state_dict().items():
        if "lora_" not in name and name.replace("base_layer.", "") in base_weights:
            assert tensor.equal(base_weights[name.replace("base_layer.", "")]), name
    assert summary.loc["validation_loss", "after"] < summary.loc["validation_loss", "before"]
    assert set(summary.columns) == {"before", "after", "change"}
    assert {"exact_match", "rouge_l", "perplexity"} <= set(summary.index)
    assert summary.loc["perplexity", "before"] == pytest.approx(
        math.exp(summary.loc["validation_loss", "before"])
    )


def test_full_fine_tuning_has_no_adapter_to_switch_off(tiny, ticket_split):
    model, tokenizer = tiny
    with pytest.raises(workbench.WorkbenchError, match="measure the base model before"):
        evaluate_model(model, tokenizer, ticket_split[1], "alpaca", adapter=False, decoding=SHORT)


def test_scores_and_per_row_values_come_from_the_shipped_metrics():
    totals, per_row = score_answers(
        ["Billing.", "shipping", "I think technical"],
        ["billing", "account", "technical"],
        metrics=["label_accuracy", "exact_match"],
        labels=["billing", "shipping", "technical", "account"],
    )
    assert totals["accuracy"] == pytest.approx(2 / 3)
    assert totals["exact_match"] == pytest.approx(1 / 3)
    assert [row["accuracy"] for row in per_row] == [1.0, 0.0, 1.0]
    assert [row["exact_match"] for row in per_row] == [1.0, 0.0, 0.0]


def test_validation_loss_of_a_random_model_is_near_log_vocabulary(tiny, ticket_split):
    model, tokenizer = tiny
    rows = ticket_split[1]
    loss = workbench.evaluation.compare.validation_loss(model, tokenizer, rows, "alpaca")
    vocabulary = len(tokenizer)
    assert 0.5 * math.log(vocabulary) < loss < 2 * math.log(vocabulary)  # a random model


def test_the_base_must_be_measured_first_only_without_an_adapter(tiny):
    from workbench.evaluation.compare import has_adapter, needs_base_measurement

    model, _ = tiny
    assert needs_base_measurement(workbench.Method(kind="full"))
    assert needs_base_measurement(workbench.Method(kind="freeze", freeze_layers=1))
    assert not needs_base_measurement(workbench.Method(kind="lora"))
    assert not needs_base_measurement(workbench.Method(kind="qlora"))
    assert needs_base_measurement(model) and not has_adapter(model)
    adapted = workbench.model.methods.apply_method(model, workbench.Method())
    assert has_adapter(adapted) and not needs_base_measurement(adapted)


def test_evaluations_carry_each_row_question_without_the_template(tiny, ticket_split):
    from workbench.evaluation.compare import question_of

    model, tokenizer = tiny
    rows = ticket_split[1].select(range(2))
    evaluation = evaluate_model(model, tokenizer, rows, "alpaca", decoding=SHORT)
    assert evaluation.questions == [question_of(r) for r in rows.rows]
    for question, row, prompt in zip(evaluation.questions, rows.rows, evaluation.prompts):
        assert question == f"{row['instruction']}\n{row['input']}" and "###" not in question
        assert question.split("\n")[-1] in prompt
    turns = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    turns += [{"role": "user", "content": "and now?"}]
    assert question_of({"messages": turns}) == "and now?"
    assert question_of({"prompt": "2+2=", "completion": "4"}) == "2+2="


def test_turn_scores_split_earlier_turns_from_the_last(tiny, monkeypatch):
    import workbench.evaluation.compare as compare_module

    model, tokenizer = tiny
    talks = workbench.load_data(SAMPLE_DATA / "multi_turn_chat.jsonl", verbose=False)
    rows = talks.select(range(6))
    turns = [len([m for m in r["messages"] if m["role"] == "assistant"]) for r in rows.rows]
    answered = []

    def earlier_right_last_wrong(model, tokenizer, prompts, decoding=None):
        answered.extend(prompts)
        references = [
            ref for r in rows.rows for _, ref in TEMPLATES["chat"].turn_prompts(r, tokenizer)
        ]
        last = {sum(turns[: i + 1]) - 1 for i in range(len(turns))}
        return [ref if j not in last else "wrong" for j, ref in enumerate(references)]

    monkeypatch.setattr(compare_module, "generate", earlier_right_last_wrong)
    scores = workbench.score_turns(model, tokenizer, rows, "chat")
    assert len(answered) == sum(turns)
    assert (scores.earlier_turns, scores.last_turns) == (sum(turns) - len(turns), len(turns))
    assert (scores.earlier, scores.last) == (1.0, 0.0)
    assert [r["turn"] for r in scores.answers[: turns[0]]] == list(range(turns[0]))


def test_an_answer_as_long_as_the_token_limit_counts_as_cut(tiny_tokenizer):
    from workbench.model.generation import reached_limit

    answer = "billing and shipping"
    length = len(tiny_tokenizer(answer, add_special_tokens=False)["input_ids"])
    assert reached_limit(tiny_tokenizer, answer, length)
    assert not reached_limit(tiny_tokenizer, answer, length + 1)
