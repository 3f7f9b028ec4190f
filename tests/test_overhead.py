"""The per-step levers change nothing that is learned or recorded, and the overhead benchmark's
instruments measure what they claim (benchmarks/overhead.py, benchmarks/phases.py)."""

from __future__ import annotations

import pytest
from conftest import build_tiny_model

from workbench.model.loss import workbench_trainer_class
from workbench.tokens.collators import PackedCollator
from workbench.tokens.tokenizing import tokenize_examples


def _trainer(tiny_tokenizer, ticket_split, tmp_path, trainer_class, seed=5):
    from transformers import TrainingArguments

    model = build_tiny_model(tiny_tokenizer, seed=seed, layers=3)
    data = tokenize_examples(split_rows(ticket_split), "alpaca", tiny_tokenizer, max_length=256)
    args = TrainingArguments(
        str(tmp_path / trainer_class.__name__),
        max_steps=4,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=0,
        data_seed=0,
        disable_tqdm=True,
        remove_unused_columns=False,
    )
    collator = PackedCollator(tiny_tokenizer.pad_token_id, row_length=512, select_logits=True)
    return trainer_class(model=model, args=args, train_dataset=data.to_hf(), data_collator=collator)


def split_rows(ticket_split):
    return ticket_split[0].select(range(16))


def test_flops_counted_once_equal_the_trainers_own_count(tiny_tokenizer, ticket_split, tmp_path):
    import torch
    from transformers import Trainer

    trainer = _trainer(tiny_tokenizer, ticket_split, tmp_path, workbench_trainer_class())
    for shape in ((2, 7), (3, 40), (1, 1)):
        batch = {"input_ids": torch.zeros(shape, dtype=torch.long)}
        assert trainer.floating_point_ops(batch) == Trainer.floating_point_ops(trainer, batch)
    assert trainer.floating_point_ops({"labels": torch.zeros(2, 3)}) == 0  # as the stock one


@pytest.mark.training
def test_flops_lever_leaves_losses_gradients_and_flos_unchanged(
    tiny_tokenizer, ticket_split, tmp_path
):
    import torch
    from transformers import Trainer

    workbench = workbench_trainer_class()

    class StockFlops(workbench):  # the same Trainer with transformers' own count
        floating_point_ops = Trainer.floating_point_ops

    results = []
    for trainer_class in (workbench, StockFlops):
        trainer = _trainer(tiny_tokenizer, ticket_split, tmp_path, trainer_class)
        trainer.train()
        losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
        weights = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
        results.append((losses, weights, trainer.state.total_flos))
    (losses, weights, flos), (stock_losses, stock_weights, stock_flos) = results
    assert len(losses) == 4
    assert losses == stock_losses  # bit for bit: the step is the same computation
    assert torch.equal(weights, stock_weights)  # so were the gradients and updates
    assert flos == stock_flos > 0


def test_phase_timer_counts_nested_phases_exclusively():
    from benchmarks.phases import PhaseTimer

    now = [0.0]  # an injected clock: each phase advances it by a known amount

    def advance(seconds):
        now[0] += seconds

    timer = PhaseTimer(clock=lambda: now[0])
    timer.measuring = True
    inner = timer.timed(lambda: advance(0.02), "forward")
    outer = timer.timed(lambda: (advance(0.03), inner(), advance(0.01)), "loss")
    outer()
    assert timer.totals["forward"] == pytest.approx(0.02)
    assert timer.totals["loss"] == pytest.approx(0.04)  # the forward left out
    assert timer.calls == {"loss": 1, "forward": 1}


def test_sync_counter_names_the_line_that_waits():
    import torch

    from benchmarks.phases import SyncCounter

    counter = SyncCounter()
    counter.install()
    try:
        counter.counting = True
        t = torch.tensor([1.5, 2.0])
        t.sum().item()
        float(t[0])
        t.tolist()
        counter.counting = False
        t[1].item()  # not counted once off
    finally:
        counter.uninstall()
    kinds = sorted(site.split()[0] for site in counter.sites.elements())
    assert kinds == ["__float__", "item", "tolist"]
    assert all("test_overhead.py" in site for site in counter.sites)


def test_step_flops_count_attention_and_the_output_layer():
    from transformers import LlamaConfig

    from benchmarks.workloads import llama_shape, step_flops

    shape = llama_shape(hidden=8, intermediate=16, layers=1, heads=2, kv_heads=1)
    config = LlamaConfig(vocab_size=100, **shape)
    short = step_flops(config, [(10, 100)], logits=0, lora_r=0)
    longer = step_flops(config, [(10, 400)], logits=0, lora_r=0)  # same tokens, wider attention
    assert longer["forward"] - short["forward"] == 4 * 300 * 8  # QK^T and AV, 8 = heads x size
    with_logits = step_flops(config, [(10, 100)], logits=5, lora_r=0)
    assert with_logits["forward"] - short["forward"] == 2 * 5 * 8 * 100
    assert short["step"] == 2 * short["forward"]  # no LoRA: backward = activations' gradients
