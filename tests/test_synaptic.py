"""Synaptic intelligence: the path integral against a hand computation, the penalty, the files a
run writes, sequential EWC on an adapter, and resume."""

from __future__ import annotations

import pytest
import torch
import yaml
from conftest import SAMPLE_DATA, quick
from safetensors.torch import load_file

import workbench
from workbench.training.finetune import train
from workbench.training.regularizers import fisher_ewc
from workbench.training.resume import resume
from workbench.training.synaptic import (
    IMPORTANCE_FILE,
    ImportanceTracker,
    read_importance,
    synaptic_intelligence,
)

LORA = workbench.Method(r=4, dropout=0.0)


class Toy(torch.nn.Module):
    """Three weights: `used` learns, `frozen` never trains, `unused` is trainable but never
    reaches the loss (no gradient)."""

    def __init__(self) -> None:
        super().__init__()
        self.used = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5]))
        self.frozen = torch.nn.Parameter(torch.tensor([3.0]), requires_grad=False)
        self.unused = torch.nn.Parameter(torch.tensor([0.7]))

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        return ((self.used * x).sum() + self.frozen.sum()) ** 2


def _toy_steps(learning_rate: float, inputs: list[torch.Tensor], still_lr: float = 0.0):
    """SGD steps on the toy with the tracker's hooks where Trainer calls them; returns the
    tracker and the gradient and update of `used` at every step (for the hand computation)."""
    toy = Toy()
    tracker = ImportanceTracker(toy)
    tracker.begin()
    groups = [{"params": [toy.used], "lr": learning_rate}, {"params": [toy.unused], "lr": still_lr}]
    optimizer = torch.optim.SGD(groups)
    seen = []
    for x in inputs:
        optimizer.zero_grad()
        (toy.loss(x) + 0.0 * toy.unused.sum()).backward()
        before = toy.used.detach().clone()
        tracker.before_step()
        optimizer.step()
        tracker.after_step()
        seen.append((toy.used.grad.clone(), toy.used.detach() - before))
    return tracker, seen


def test_path_integral_is_minus_gradient_times_update_summed_over_steps():
    inputs = [torch.tensor([1.0, 0.5, -1.0]), torch.tensor([-0.5, 2.0, 1.0])]
    tracker, seen = _toy_steps(0.05, inputs)
    by_hand = sum(-grad * update for grad, update in seen)
    assert torch.allclose(tracker.path_integral["used"], by_hand, rtol=1e-6)
    # plain SGD moves by -lr * grad, so each step adds lr * grad ** 2: never negative
    assert torch.allclose(by_hand, sum(0.05 * grad**2 for grad, _ in seen), rtol=1e-5)
    assert tracker.steps == 2


def test_importance_is_zero_for_weights_that_never_moved_and_frozen_ones_are_not_covered():
    tracker, _ = _toy_steps(0.05, [torch.tensor([1.0, 0.5, -1.0])], still_lr=0.0)
    assert tracker.path_integral["unused"].item() == 0.0  # a gradient of 0, and lr 0
    assert "frozen" not in tracker.path_integral
    tracker, _ = _toy_steps(0.05, [torch.tensor([1.0, 0.0, -1.0])], still_lr=1.0)
    assert tracker.path_integral["used"][1].item() == 0.0  # its input was 0: no gradient


def test_importance_grows_with_the_size_of_the_update():
    x = [torch.tensor([1.0, 0.5, -1.0])]
    small, _ = _toy_steps(0.01, x)
    large, _ = _toy_steps(0.04, x)
    assert torch.allclose(large.path_integral["used"], 4 * small.path_integral["used"], rtol=1e-5)
    assert (small.path_integral["used"] > 0).all()


@pytest.fixture(scope="module")
def capitals():
    data = workbench.load_data(SAMPLE_DATA / "mixed_instructions.jsonl", verbose=False)
    return data.select([i for i, r in enumerate(data.rows) if r["task"] == "capital"][:16])


def _tracked_run(tiny_model_dir, rows, steps: int = 2, method=LORA, **settings):
    model, tokenizer = workbench.load_model(str(tiny_model_dir))
    hp = quick(**{"max_steps": steps, "eval_every": steps, "max_grad_norm": 0.0, **settings})
    return train(
        model,
        tokenizer,
        rows,
        method=method,
        hyperparameters=hp,
        track_importance=True,
        samples=1,
        start=False,
    )


def test_a_run_adds_up_the_gradient_the_optimizer_used_times_each_update(tiny_model_dir, capitals):
    run = _tracked_run(tiny_model_dir, capitals)
    params = {n: p for n, p in run.model.named_parameters() if p.requires_grad}
    weights = [{n: p.detach().clone() for n, p in params.items()}]
    grads = []
    for name, param in params.items():  # the gradient each optimizer step used (no clipping)
        param.register_post_accumulate_grad_hook(
            lambda p, name=name: grads.append((name, p.grad.detach().clone()))
        )
    run.add_callback(
        "step", lambda e: weights.append({n: p.detach().clone() for n, p in params.items()})
    )
    run.start().wait()
    assert run.status == "finished", run.error
    assert len(weights) == 3 and len(grads) == 2 * len(params)
    stored = read_importance(run)
    assert stored["steps"] == 2
    for name in params:
        step_grads = [g for n, g in grads if n == name]
        by_hand = sum(
            -g * (weights[k + 1][name] - weights[k][name]) for k, g in enumerate(step_grads)
        )
        assert torch.allclose(stored["path_integral"][name], by_hand, rtol=1e-5, atol=1e-12)
        assert torch.equal(stored["start"][name], weights[0][name])
        assert torch.equal(stored["end"][name], weights[-1][name])
    assert any(stored["path_integral"][n].abs().sum() > 0 for n in params)
    assert all("lora_" in n for n in stored["path_integral"])  # LoRA: the adapter alone


def _distance_penalties(penalty, model, scale: float):
    """The penalty at the reference, and at two distances (scale, 2 * scale) from it."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    original = {n: p.detach().clone() for n, p in params.items()}
    values = [penalty(model).item()]
    generator = torch.Generator().manual_seed(0)
    noise = {n: torch.randn(p.shape, generator=generator) for n, p in params.items()}
    for factor in (1, 2):
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(original[n] + factor * scale * noise[n])
        values.append(penalty(model).item())
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(original[n])
    return values


def test_si_penalty_is_zero_at_the_end_weights_and_grows_quadratically(tiny_model_dir, capitals):
    run = _tracked_run(tiny_model_dir, capitals, steps=3)
    run.start().wait()
    si = synaptic_intelligence(run, run.model, strength=2.0, damping=0.1, normalize=False)
    at, near, far = _distance_penalties(si, run.model, 1e-3)
    assert at == 0.0
    assert near > 0 and far == pytest.approx(4 * near, rel=1e-3)
    stored = read_importance(run.run_dir)
    params = dict(run.model.named_parameters())
    by_hand = 0.0
    for name, integral in stored["path_integral"].items():  # Zenke's omega, without the 1/2
        change = stored["end"][name] - stored["start"][name]
        omega = (integral / (change**2 + 0.1)).clamp_min(0)
        by_hand += (omega * (params[name].detach() - stored["end"][name]) ** 2).sum().item()
    assert si.penalty(run.model).item() == pytest.approx(2.0 * by_hand, abs=1e-12)
    assert all((o >= 0).all() for o in si.omega.values())


def test_full_fine_tuning_tracks_every_weight_and_its_penalty_holds_them(tiny_model_dir, capitals):
    run = _tracked_run(tiny_model_dir, capitals, method=workbench.Method(kind="full", dropout=0.0))
    run.start().wait()
    assert run.status == "finished", run.error
    stored = read_importance(run)
    assert set(stored["path_integral"]) == {n for n, _ in run.model.named_parameters()}
    si = synaptic_intelligence(run, run.model)
    at, near, far = _distance_penalties(si, run.model, 1e-3)
    assert at == 0.0 and 0 < near < far


def test_ewc_measured_on_an_adapter_anchors_its_lora_weights(tiny_model_dir, capitals):
    run = _tracked_run(tiny_model_dir, capitals)
    run.start().wait()
    ewc = fisher_ewc(run.model, run.tokenizer, capitals, "alpaca", strength=5.0, max_rows=4)
    assert ewc.fisher and all("lora_" in n for n in ewc.fisher)
    at, near, far = _distance_penalties(ewc, run.model, 1e-3)
    assert at == 0.0
    assert near > 0 and far == pytest.approx(4 * near, rel=1e-3)


def test_a_penalty_on_weights_the_model_does_not_train_is_refused(
    tiny_model_dir, capitals, ticket_split
):
    run = _tracked_run(tiny_model_dir, capitals)
    run.start().wait()
    si = synaptic_intelligence(run)
    model, tokenizer = workbench.load_model(str(tiny_model_dir))  # a full model: other names
    with pytest.raises(workbench.WorkbenchError, match="none of them is trainable"):
        train(
            model,
            tokenizer,
            ticket_split[0],
            method=workbench.Method(kind="full"),
            regularizer=si,
            start=False,
        )


def _stop_at(run, step: int):
    run.add_callback("step", lambda e: run.stop() if e["step"] == step else None)
    return run.start().wait()


def test_resume_continues_the_importance_exactly(tiny_model_dir, capitals):
    reference = _tracked_run(tiny_model_dir, capitals, steps=6, eval_every=3)
    reference.start().wait()
    first = _stop_at(_tracked_run(tiny_model_dir, capitals, steps=6, eval_every=3), 2)
    assert first.status == "stopped"
    checkpoint = first.run_dir / "checkpoints" / "checkpoint-3"
    assert (checkpoint / "synaptic_intelligence.safetensors").is_file()
    assert not (first.run_dir / IMPORTANCE_FILE).exists()  # written only when it finishes
    assert yaml.safe_load((first.run_dir / "config.yaml").read_text())["track_importance"]
    fresh_model, fresh_tokenizer = workbench.load_model(str(tiny_model_dir))
    resumed = resume(first.run_dir, fresh_model, fresh_tokenizer).wait()
    assert resumed.status == "finished", resumed.error
    assert resumed.losses == pytest.approx(reference.losses[3:], rel=1e-5)
    expected = load_file(str(reference.run_dir / IMPORTANCE_FILE))
    got = load_file(str(resumed.run_dir / IMPORTANCE_FILE))
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert torch.allclose(got[key], value, rtol=1e-4, atol=1e-10), key
    assert read_importance(resumed.run_dir)["steps"] == 6


def test_a_run_with_an_si_penalty_resumes_with_the_same_losses(
    tiny_model_dir, capitals, ticket_split
):
    def second_stage(stop_at: int | None = None):
        first = _tracked_run(tiny_model_dir, capitals, steps=3, learning_rate=1e-2)
        first.start().wait()
        si = synaptic_intelligence(first, first.model, strength=50.0)
        run = train(
            first.model,
            first.tokenizer,
            ticket_split[0],
            method=LORA,
            hyperparameters=quick(max_steps=6, eval_every=3),
            regularizer=si,
            continued_from=first,
            samples=1,
            start=False,
        )
        return (_stop_at(run, stop_at) if stop_at else run.start().wait()), si

    reference, si = second_stage()
    assert reference.status == "finished", reference.error
    assert si.last_penalty > 0  # the penalty was in the loss, not a zero that resumes trivially
    stopped, _ = second_stage(stop_at=2)
    assert stopped.status == "stopped"
    config = yaml.safe_load((stopped.run_dir / "config.yaml").read_text())
    assert config["regularizer"]["kind"] == "si" and config["regularizer"]["strength"] == 50.0
    assert (stopped.run_dir / config["regularizer"]["tensors"]).is_file()
    fresh_model, fresh_tokenizer = workbench.load_model(str(tiny_model_dir))
    resumed = resume(stopped.run_dir, fresh_model, fresh_tokenizer).wait()
    assert resumed.status == "finished", resumed.error
    assert resumed.losses == pytest.approx(reference.losses[3:], rel=1e-5)
