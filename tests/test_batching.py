"""Packed batches and the response-only loss give the same loss and gradients as padded ones."""

from __future__ import annotations

import pytest
from conftest import build_tiny_model

from workbench.errors import AllLabelsMaskedError
from workbench.model.loss import response_loss
from workbench.tokens.collators import CompletionCollator, PackedCollator, pack_rows
from workbench.tokens.tokenizing import tokenize_examples


def test_pack_rows_first_fit_decreasing_never_overfills():
    lengths = [5, 9, 3, 7, 2, 6]
    rows = pack_rows(lengths, row_length=10)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= 10 for row in rows)
    assert len(rows) == 4  # 32 tokens need at least 4 rows of 10


def test_pack_rows_gives_an_overlong_example_its_own_row():
    assert pack_rows([12, 3, 4], row_length=10) == [[0], [1, 2]]


def _features(tokenizer, split, n=6, completion_only=True):
    data = tokenize_examples(
        split[0].select(range(n)), "alpaca", tokenizer, completion_only=completion_only
    )
    return [{"input_ids": e.input_ids, "labels": e.labels} for e in data.examples]


def test_packed_batch_restarts_positions_and_masks_each_first_label(tiny_tokenizer, ticket_split):
    features = _features(tiny_tokenizer, ticket_split, completion_only=False)
    lengths = [len(f["input_ids"]) for f in features]
    batch = PackedCollator(tiny_tokenizer.pad_token_id, row_length=sum(lengths))(features)
    assert batch["num_tokens"] == sum(lengths)
    assert "attention_mask" not in batch
    assert batch["input_ids"].shape == (1, sum(lengths))  # one row, no padding
    starts = batch["position_ids"][0] == 0
    assert starts.sum().item() == len(features)
    assert (batch["labels"][0][starts] == -100).all()  # never predicted across examples
    assert (batch["labels"][0][~starts] != -100).all()  # completion_only=False: all others


def test_packed_and_padded_batches_give_the_same_loss_and_gradients(tiny_tokenizer, ticket_split):
    features = _features(tiny_tokenizer, ticket_split)
    row_length = 2 * max(len(f["input_ids"]) for f in features)
    packed = PackedCollator(tiny_tokenizer.pad_token_id, row_length, select_logits=True)(features)
    padded = CompletionCollator(tiny_tokenizer.pad_token_id, count_tokens=True)(features)
    assert packed["input_ids"].numel() < padded["input_ids"].numel()
    results = []
    for batch in (padded, packed):
        model = build_tiny_model(tiny_tokenizer, seed=3)
        inputs = {k: v for k, v in batch.items() if k not in ("labels", "num_tokens")}
        loss, _ = response_loss(model, inputs, batch["labels"])
        loss.backward()
        grad = model.model.layers[0].self_attn.q_proj.weight.grad.clone()
        results.append((loss.item(), grad))
    (padded_loss, padded_grad), (packed_loss, packed_grad) = results
    assert packed_loss == pytest.approx(padded_loss, rel=1e-5)
    assert (packed_grad - padded_grad).abs().max().item() < 1e-5 * padded_grad.abs().max().item()


def test_response_only_logits_equal_the_full_loss(tiny_tokenizer, ticket_split):
    import torch

    features = _features(tiny_tokenizer, ticket_split)
    batch = CompletionCollator(tiny_tokenizer.pad_token_id, select_logits=True)(features)
    model = build_tiny_model(tiny_tokenizer, seed=4)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    selected, outputs = response_loss(
        model,
        {
            **inputs,
            "logits_positions": batch["logits_positions"],
            "logits_targets": batch["logits_targets"],
        },
        batch["labels"],
    )
    full, _ = response_loss(model, inputs, batch["labels"])
    reference = model(**inputs, labels=batch["labels"]).loss  # transformers' own loss
    most = max((row[1:] != -100).sum().item() for row in batch["labels"])
    assert outputs.logits.shape[:2] == (len(features), most)  # only labelled positions
    assert selected.item() == pytest.approx(full.item(), rel=1e-5)
    assert torch.isclose(selected, reference, rtol=1e-5)


def test_packed_collator_refuses_a_batch_without_loss(tiny_tokenizer):
    features = [{"input_ids": [5, 6, 7], "labels": [-100, -100, -100]}]
    with pytest.raises(AllLabelsMaskedError, match="raise max_length"):
        PackedCollator(tiny_tokenizer.pad_token_id, row_length=8)(features)
