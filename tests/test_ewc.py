"""Elastic Weight Consolidation on the tiny model: the Fisher, the penalty, training and resume."""

from __future__ import annotations

import pytest
import torch
import yaml
from conftest import quick
from resuming import finish
from rows import capital_rows

import workbench
from workbench.training.finetune import train
from workbench.training.regularizers import attach_regularizer, fisher_diagonal, fisher_ewc
from workbench.training.resume import resume


@pytest.fixture(scope="module")
def reference_rows():
    return capital_rows()


def _nudge(model, scale: float, seed: int = 0) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(scale * torch.randn(param.shape, generator=generator))


def test_penalty_is_zero_at_the_reference_and_grows_quadratically_away(tiny, reference_rows):
    model, tokenizer = tiny
    ewc = fisher_ewc(model, tokenizer, reference_rows, "alpaca", strength=10.0)
    assert ewc.penalty(model).item() == 0.0
    original = {k: v.clone() for k, v in model.state_dict().items()}
    _nudge(model, 1e-3)
    small = ewc.penalty(model).item()
    model.load_state_dict(original)
    _nudge(model, 2e-3)
    large = ewc.penalty(model).item()
    assert small > 0
    assert large == pytest.approx(4 * small, rel=1e-3)  # quadratic in the distance
    manual = sum(
        (ewc.fisher[n] * (p.detach() - ewc.reference[n]) ** 2).sum()
        for n, p in model.named_parameters()
    )
    assert large == pytest.approx(0.5 * 10.0 * manual.item(), rel=1e-4)


def test_penalty_weights_each_parameter_by_its_fisher_value(tiny, reference_rows):
    model, tokenizer = tiny
    ewc = fisher_ewc(model, tokenizer, reference_rows, "alpaca", strength=2.0, normalize=False)
    name = "model.layers.0.self_attn.q_proj.weight"
    flat = ewc.fisher[name].flatten()
    high, low = int(flat.argmax()), int(flat.argmin())
    params = dict(model.named_parameters())
    with torch.no_grad():
        params[name].view(-1)[high] += 0.1
    high_penalty = ewc.penalty(model).item()
    with torch.no_grad():
        params[name].view(-1)[high] -= 0.1
        params[name].view(-1)[low] += 0.1
    low_penalty = ewc.penalty(model).item()
    assert high_penalty == pytest.approx(0.5 * 2.0 * flat[high].item() * 0.01, rel=1e-3)
    assert high_penalty > low_penalty


def test_fisher_is_the_mean_squared_gradient_of_each_row(tiny, reference_rows):
    model, tokenizer = tiny
    rows = reference_rows.select(range(2))
    fisher = fisher_diagonal(model, tokenizer, rows, "alpaca")
    expected = None
    for i in range(2):  # reference: each row's loss gradient, squared, averaged
        tokens = workbench.tokenize_examples(
            rows.select([i]), workbench.get_template("alpaca"), tokenizer
        ).examples[0]
        ids = torch.tensor([tokens.input_ids])
        model.zero_grad()
        model(input_ids=ids, labels=torch.tensor([tokens.labels])).loss.backward()
        grads = {n: p.grad.detach() ** 2 / 2 for n, p in model.named_parameters()}
        expected = grads if expected is None else {n: expected[n] + g for n, g in grads.items()}
    model.zero_grad()
    assert set(fisher) == set(expected)  # every trainable weight (tied ones once)
    for name in ("model.embed_tokens.weight", "model.layers.1.mlp.up_proj.weight"):
        assert torch.allclose(fisher[name], expected[name], rtol=1e-4, atol=1e-12)
    assert all(f.min() >= 0 for f in fisher.values())


def ewc_run(model_dir, split, reference_rows, settings, strength: float, start=True, **fisher):
    """(run, its EWC): full fine-tuning of a fresh load of `model_dir` on `split`, held to
    `reference_rows` by an EWC of `strength` (`fisher`: fisher_ewc's other options)."""
    model, tokenizer = workbench.load_model(str(model_dir))
    ewc = fisher_ewc(model, tokenizer, reference_rows, "alpaca", strength=strength, **fisher)
    run = train(
        model,
        tokenizer,
        *split,
        method=workbench.Method(kind="full", dropout=0.0),
        hyperparameters=settings,
        regularizer=ewc,
        start=start,
    )
    return run, ewc


def _weighted_distance(model, ewc) -> float:
    """sum F (theta - theta*)^2: the distance EWC holds down."""
    params = dict(model.named_parameters())
    return sum(
        (ewc.fisher[n] * (params[n].detach() - r) ** 2).sum().item()
        for n, r in ewc.reference.items()
    )


def test_ewc_keeps_full_fine_tuning_closer_to_the_reference_weights(
    tiny_model_dir, ticket_split, reference_rows
):
    settings = quick(max_steps=6, learning_rate=1e-2)
    distances = {}
    for strength in (0.0, 1e3):
        run, ewc = ewc_run(tiny_model_dir, ticket_split, reference_rows, settings, strength)
        run.wait()
        assert run.status == "finished", run.error
        distances[strength] = _weighted_distance(run.model, ewc)  # same init: same Fisher
        if strength:
            assert ewc.last_penalty > 0
    assert distances[1e3] < 0.5 * distances[0.0]


def test_penalty_joins_the_training_loss_once_per_optimizer_step(tiny, ticket_split):
    """A constant penalty shifts the logged training loss by exactly that constant, with and
    without gradient accumulation (Trainer divides the loss by the micro-batches)."""
    model, tokenizer = tiny
    run = train(
        model,
        tokenizer,
        *ticket_split,
        method=workbench.Method(kind="full", dropout=0.0),
        hyperparameters=quick(max_steps=2, gradient_accumulation=2, learning_rate=1e-9),
        start=False,
    )

    def constant(model_):
        return next(model_.parameters()).sum() * 0 + 3.0

    trainer = run._build_trainer(run, resuming=False)
    inputs = trainer.data_collator(
        [{"input_ids": e["input_ids"], "labels": e["labels"]} for e in trainer.train_dataset][:4]
    )
    model.train()
    trainer.current_gradient_accumulation_steps = 2
    plain = trainer.training_step(model, inputs, None).item()
    attach_regularizer(trainer, constant)
    with_penalty = trainer.training_step(model, inputs, None).item()
    assert with_penalty - plain == pytest.approx(3.0 / 2, rel=1e-3)  # one of two micro-batches
    items = int((inputs["labels"][:, 1:] != -100).sum())  # the loss is already scaled for GA
    scaled = trainer.training_step(model, inputs, torch.tensor(items)).item()
    trainer.compute_loss = type(trainer).compute_loss.__get__(trainer)
    unscaled = trainer.training_step(model, inputs, torch.tensor(items)).item()
    assert scaled - unscaled == pytest.approx(3.0 / 2, rel=1e-3)


def test_resume_rebuilds_the_ewc_from_config_and_repeats_the_losses(
    tiny_model_dir, ticket_split, reference_rows
):
    settings = quick(max_steps=6, eval_every=3)

    def start(stop_at: int | None = None):
        run, _ = ewc_run(
            tiny_model_dir, ticket_split, reference_rows, settings, 50.0, max_rows=4, start=False
        )
        return finish(run, stop_at)

    reference = start()
    first = start(stop_at=2)
    assert first.status == "stopped"
    config = yaml.safe_load((first.run_dir / "config.yaml").read_text())
    assert config["regularizer"]["kind"] == "ewc" and config["regularizer"]["strength"] == 50.0
    assert len((first.run_dir / config["regularizer"]["reference"]).read_text().splitlines()) == 4
    fresh_model, fresh_tokenizer = workbench.load_model(str(tiny_model_dir))
    resumed = resume(first.run_dir, fresh_model, fresh_tokenizer).wait()
    assert resumed.status == "finished", resumed.error
    assert resumed.losses == pytest.approx(reference.losses[3:], rel=1e-5)


def test_ewc_with_lora_is_refused_with_the_fix(tiny, ticket_split, reference_rows):
    model, tokenizer = tiny
    ewc = fisher_ewc(model, tokenizer, reference_rows, "alpaca")
    with pytest.raises(workbench.WorkbenchError, match="kind='full'"):
        train(model, tokenizer, *ticket_split, regularizer=ewc, start=False)
    with pytest.raises(workbench.WorkbenchError, match="strength"):
        fisher_ewc(model, tokenizer, reference_rows, "alpaca", strength=-1)
