"""Per-token probability shifts and the alternatives at each step (workbench/evaluation/
shifts.py), checked against hand computations on the tiny model."""

from __future__ import annotations

import pytest
import torch

from workbench.errors import WorkbenchError
from workbench.evaluation.shifts import (
    TokenShift,
    TokenShifts,
    answer_alternatives,
    answer_ids,
    generated_shifts,
    shift_text,
    token_shifts,
    with_answer,
)
from workbench.model.generation import Decoding, generate
from workbench.model.methods import Method, apply_method
from workbench.tokens.templates import Template, get_template

ROW = {
    "instruction": "Classify the customer message: billing, shipping, technical, account.",
    "input": "My parcel never arrived.",
    "output": "shipping",
}


@pytest.fixture
def fresh_lora(tiny):
    """The tiny model with a LoRA adapter just initialised (its B matrices are zero)."""
    model, tokenizer = tiny
    return apply_method(model, Method(r=4, dropout=0.0)), tokenizer


@pytest.fixture
def moved_lora(fresh_lora):
    """A LoRA adapter whose B matrices were moved, so the tuned model differs from the base."""
    model, tokenizer = fresh_lora
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, weight in model.named_parameters():
            if "lora_B" in name:
                weight.copy_(torch.randn(weight.shape, generator=generator) * 0.5)
    return model, tokenizer


def by_hand(model, ids: list[int], start: int) -> list[float]:
    """log p(ids[k] | ids[:k]) for k >= start, one forward pass per prefix."""
    values = []
    with torch.no_grad():
        for k in range(start, len(ids)):
            logits = model(input_ids=torch.tensor([ids[:k]])).logits[0, -1]
            values.append(torch.log_softmax(logits.float(), -1)[ids[k]].item())
    return values


def test_reference_logprobs_equal_a_forward_pass_per_prefix_before_and_after(moved_lora):
    model, tokenizer = moved_lora
    model.eval()
    template = get_template("alpaca")
    prompt, reference = template.render(ROW)
    prompt_ids = tokenizer(prompt)["input_ids"]
    ids = prompt_ids + tokenizer(reference, add_special_tokens=False)["input_ids"]
    ids.append(tokenizer.eos_token_id)  # training's EOS after a text template's response

    shifts = token_shifts(model, tokenizer, ROW, template)

    table = shifts.table()
    assert list(table.columns) == ["token", "token_id", "logprob_before", "logprob_after", "shift"]
    assert table["token_id"].tolist() == ids[len(prompt_ids) :]
    with model.disable_adapter():
        before = by_hand(model, ids, len(prompt_ids))
    after = by_hand(model, ids, len(prompt_ids))
    assert table["logprob_before"].tolist() == pytest.approx(before, abs=1e-4)
    assert table["logprob_after"].tolist() == pytest.approx(after, abs=1e-4)
    assert table["shift"].tolist() == pytest.approx([a - b for a, b in zip(after, before)], 1e-3)
    assert max(abs(s) for s in table["shift"]) > 1e-3  # the moved adapter changed something
    assert shifts.source == "reference" and shifts.answer == "shipping"


def test_a_fresh_lora_shifts_nothing_on_reference_typed_and_own_answers(fresh_lora):
    model, tokenizer = fresh_lora
    for shifts in (
        token_shifts(model, tokenizer, ROW, "alpaca"),
        token_shifts(model, tokenizer, ROW, "alpaca", answer="billing, I think"),
        generated_shifts(model, tokenizer, ROW, "alpaca", max_new_tokens=5),
    ):
        assert shifts.tokens
        assert all(t.shift == pytest.approx(0.0, abs=1e-6) for t in shifts.tokens)


def test_a_typed_answer_is_scored_as_training_would_tokenise_it(moved_lora):
    model, tokenizer = moved_lora
    shifts = token_shifts(model, tokenizer, ROW, "alpaca", answer="billing")
    expected = tokenizer("billing", add_special_tokens=False)["input_ids"]
    assert [t.token_id for t in shifts.tokens] == [*expected, tokenizer.eos_token_id]
    assert shifts.source == "typed" and shifts.answer == "billing"
    reference = token_shifts(model, tokenizer, ROW, "alpaca")
    assert shifts.after != pytest.approx(reference.after)


def test_the_chat_template_scores_the_last_reply_with_its_end_of_turn_marker(tiny):
    _, tokenizer = tiny
    row = {
        "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    }
    prompt, answer = answer_ids(row, "chat", tokenizer)
    assert tokenizer.decode(prompt).endswith("<|im_start|>assistant\n")
    assert tokenizer.decode(answer).startswith("Hello")
    assert tokenizer.convert_ids_to_tokens(answer)[-1] == "<|im_end|>"
    typed = with_answer(row, "chat", "Good day")
    assert typed["messages"][-1] == {"role": "assistant", "content": "Good day"}
    assert row["messages"][-1]["content"] == "Hello"  # the row itself is left alone


def test_the_greedy_token_is_the_argmax_of_the_top_k_after(moved_lora):
    model, tokenizer = moved_lora
    alternatives = answer_alternatives(model, tokenizer, ROW, "alpaca", top_k=5, max_new_tokens=6)
    assert len(alternatives.steps) >= 1
    for step in alternatives.steps:
        assert len(step.before) == len(step.after) == 5
        assert step.after[0].token_id == step.token_id  # greedy: the most probable one
        probabilities = [o.probability for o in step.after]
        assert probabilities == sorted(probabilities, reverse=True)
        assert 0 < sum(probabilities) <= 1 + 1e-6
    prompt = get_template("alpaca").render(ROW)[0]
    generated = generate(model, tokenizer, [prompt], Decoding(max_new_tokens=6))[0]
    assert alternatives.answer == generated  # the same decoding as the workbench's generate
    table = alternatives.table()
    assert list(table.columns) == ["step", "chosen", "top_before", "top_after", "forked"]


def test_the_top_k_before_is_the_base_models_softmax_on_the_same_answer_so_far(moved_lora):
    model, tokenizer = moved_lora
    alternatives = answer_alternatives(model, tokenizer, ROW, "alpaca", top_k=3, max_new_tokens=4)
    prompt_ids, _ = answer_ids(ROW, "alpaca", tokenizer)
    chosen = [s.token_id for s in alternatives.steps]
    model.eval()
    for k, step in enumerate(alternatives.steps):
        ids = torch.tensor([prompt_ids + chosen[:k]])
        with torch.no_grad(), model.disable_adapter():
            base = torch.softmax(model(input_ids=ids).logits[0, -1].float(), -1)
        with torch.no_grad():
            tuned = torch.softmax(model(input_ids=ids).logits[0, -1].float(), -1)
        assert [o.token_id for o in step.before] == base.topk(3).indices.tolist()
        assert [o.probability for o in step.before] == pytest.approx(base.topk(3).values.tolist())
        assert [o.probability for o in step.after] == pytest.approx(tuned.topk(3).values.tolist())
        assert step.forked == (base.argmax().item() != step.token_id)


def test_a_fresh_lora_never_forks(fresh_lora):
    model, tokenizer = fresh_lora
    alternatives = answer_alternatives(model, tokenizer, ROW, "alpaca", max_new_tokens=4)
    assert alternatives.first_fork is None
    assert not any(alternatives.table()["forked"])


def test_shift_text_marks_the_tokens_that_gained_and_lost_most():
    tokens = [
        TokenShift(0, 1, "ship", -5.0, -1.0),
        TokenShift(1, 2, "ping", -2.0, -2.0),
        TokenShift(2, 3, "!", -1.0, -4.0),
    ]
    text = shift_text(TokenShifts("prompt", "shipping!", "reference", tokens), marked=1)
    assert text.splitlines()[0] == "reference answer: [+ship]ping[-!]"
    assert "'ship' +4.00" in text and "'!' -3.00" in text
    assert "-8.00 before, -7.00 after (+1.00 over 3 tokens)" in text


def test_a_model_without_adapter_has_no_before_to_compare(tiny):
    model, tokenizer = tiny
    with pytest.raises(WorkbenchError, match="no adapter"):
        token_shifts(model, tokenizer, ROW, "alpaca")


def test_user_errors_name_the_field_and_the_fix(moved_lora):
    model, tokenizer = moved_lora
    two_fields = Template(name="two", prompt="{instruction}", response="{output} ({input})")
    with pytest.raises(WorkbenchError, match="`response`"):
        with_answer(ROW, two_fields, "billing")
    with pytest.raises(WorkbenchError, match="`top_k`=0"):
        answer_alternatives(model, tokenizer, ROW, "alpaca", top_k=0)
    with pytest.raises(WorkbenchError, match="`max_new_tokens`=0"):
        generated_shifts(model, tokenizer, ROW, "alpaca", max_new_tokens=0)
