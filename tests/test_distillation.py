"""Distillation on tiny models: the student from the teacher, the loss, a run and its resume;
learning without forgetting against the base model (a frozen copy, or the adapter off)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import SAMPLE_DATA, build_tiny_model, quick
from resuming import finish
from rows import capital_rows

import workbench
from benchmarks.workloads import saved_model_folder
from workbench.model.methods import Method, apply_method, count_parameters
from workbench.runs.report import DISTILL_CE, DISTILL_KL
from workbench.training.distillation import (
    DistillationObjective,
    _layers_to_keep,
    distill,
    resume_distillation,
    soft_kl,
    student_from_teacher,
)
from workbench.training.finetune import train
from workbench.training.lwf import LearningWithoutForgetting, lwf_from_config
from workbench.widgets import TrainingMonitor

FULL = Method(kind="full", dropout=0.0)


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory, tiny_tokenizer):
    """A 4-layer tiny teacher saved as a local folder (its origin is that path)."""
    teacher = build_tiny_model(tiny_tokenizer, seed=1, layers=4)
    return saved_model_folder(teacher, tiny_tokenizer, tmp_path_factory.mktemp("teacher"))


@pytest.fixture(scope="module")
def reference_rows():
    return capital_rows()


def _batch(trainer, rows: int = 4):
    features = [{"input_ids": e["input_ids"], "labels": e["labels"]} for e in trainer.train_dataset]
    return trainer.data_collator(features[:rows])


def _trainer_with(objective, student, tokenizer, ticket_split):
    """The project's Trainer for `student` (not started), with `objective` attached."""
    run = train(
        student, tokenizer, *ticket_split, method=FULL, hyperparameters=quick(), start=False
    )
    trainer = run._build_trainer(run, resuming=False)
    objective.attach(trainer)
    return trainer


def _reference_kl(student, teacher, inputs, temperature: float) -> float:
    """KL(teacher_T || student_T) per response token, from every position's logits (the stock
    path: no selected positions), with torch's own kl_div."""
    mask = inputs["labels"][:, 1:] != -100
    given = {k: inputs[k] for k in ("input_ids", "attention_mask", "position_ids") if k in inputs}
    with torch.no_grad():
        s = student(**given).logits[:, :-1][mask]
        t = teacher(**given).logits[:, :-1][mask]
    kl = F.kl_div(
        F.log_softmax(s / temperature, -1),
        F.log_softmax(t / temperature, -1),
        log_target=True,
        reduction="sum",
    )
    return float(kl) / int(mask.sum())


# -- the loss ---------------------------------------------------------------------------------
def test_temperature_scaling_matches_a_hand_computed_example():
    student, teacher = torch.tensor([[0.0, 0.0]]), torch.tensor([[2.0, 0.0]])
    p = math.e / (1 + math.e)  # softmax([2, 0] / 2)[0]
    by_hand = p * math.log(2 * p) + (1 - p) * math.log(2 * (1 - p))  # against [0.5, 0.5]
    assert soft_kl(student, teacher, 2.0).item() == pytest.approx(by_hand, rel=1e-6)
    q = math.exp(2) / (1 + math.exp(2))  # at T=1 the teacher is sharper: a larger divergence
    at_one = q * math.log(2 * q) + (1 - q) * math.log(2 * (1 - q))
    assert soft_kl(student, teacher, 1.0).item() == pytest.approx(at_one, rel=1e-6)
    assert at_one > by_hand
    assert soft_kl(teacher, teacher, 2.0).item() == 0.0


def test_distillation_term_is_zero_when_the_student_equals_the_teacher(tiny, ticket_split):
    student, tokenizer = tiny
    objective = DistillationObjective(copy.deepcopy(student), alpha=0.5, temperature=2.0)
    trainer = _trainer_with(objective, student, tokenizer, ticket_split)
    inputs = _batch(trainer)
    student.train()
    plain = type(trainer).compute_loss(trainer, student, inputs).item()
    mixed = trainer.compute_loss(student, inputs).item()
    assert objective.last_kl.item() == 0.0
    assert mixed == pytest.approx(0.5 * plain, rel=1e-6)  # only (1 - alpha) * CE is left


def test_distilled_loss_mixes_the_labels_and_the_teacher_by_alpha_and_t_squared(
    tiny, tiny_tokenizer, ticket_split
):
    student, tokenizer = tiny
    teacher = build_tiny_model(tiny_tokenizer, seed=7, layers=3)
    objective = DistillationObjective(teacher, alpha=0.25, temperature=3.0)
    trainer = _trainer_with(objective, student, tokenizer, ticket_split)
    inputs = _batch(trainer)
    assert "logits_positions" in inputs  # the response-only path is the one tested here
    student.train()
    plain = type(trainer).compute_loss(trainer, student, inputs).item()
    mixed = trainer.compute_loss(student, inputs).item()
    kl = _reference_kl(student, teacher, inputs, 3.0)
    assert kl > 0
    assert objective.last_kl.item() == pytest.approx(kl, rel=1e-4)
    assert mixed == pytest.approx(0.75 * plain + 0.25 * 9.0 * kl, rel=1e-5)
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    student.eval()  # validation reports the plain cross-entropy, comparable across runs
    assert trainer.compute_loss(student, inputs).item() == pytest.approx(plain, rel=1e-6)


class _AllPositions(torch.nn.Module):
    """A teacher whose forward has no `logits_to_keep`: it returns every position's logits."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask=None, position_ids=None, use_cache=None):
        return self.model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids
        )


def test_a_teacher_without_logits_to_keep_gives_the_same_term(tiny, tiny_tokenizer, ticket_split):
    student, tokenizer = tiny
    teacher = build_tiny_model(tiny_tokenizer, seed=7, layers=3)
    selected = DistillationObjective(teacher, alpha=0.5, temperature=2.0)
    picked = DistillationObjective(_AllPositions(teacher), alpha=0.5, temperature=2.0)
    trainer = _trainer_with(selected, student, tokenizer, ticket_split)
    inputs = _batch(trainer)
    student.train()
    trainer.compute_loss(student, inputs)
    picked.attach(trainer)  # wraps the wrapped loss: its own term is computed the other way
    trainer.compute_loss(student, inputs)
    assert selected.last_kl.item() > 0
    assert picked.last_kl.item() == pytest.approx(selected.last_kl.item(), rel=1e-5)


def test_invalid_distillation_settings_are_refused_with_the_fix(tiny, tiny_tokenizer):
    student, _ = tiny
    with pytest.raises(workbench.WorkbenchError, match="(?s)`alpha`=1.5.*`temperature`=0"):
        DistillationObjective(student, alpha=1.5, temperature=0)
    rows = workbench.load_data(SAMPLE_DATA / "support_tickets.jsonl", verbose=False)
    with pytest.raises(workbench.WorkbenchError, match="same model"):
        distill(student, student, tiny_tokenizer, rows, start=False)


# -- the student --------------------------------------------------------------------------
def test_student_keeps_the_chosen_layers_with_the_teacher_weights(tiny_tokenizer):
    teacher = build_tiny_model(tiny_tokenizer, seed=3, layers=4)
    student = student_from_teacher(teacher, [0, 2])
    assert student.config.num_hidden_layers == 2 and student.config.teacher_layers == [0, 2]
    assert teacher.config.num_hidden_layers == 4  # the teacher is left as it was
    for mine, theirs in ((0, 0), (1, 2)):
        a, b = student.model.layers[mine].state_dict(), teacher.model.layers[theirs].state_dict()
        assert all(torch.equal(a[k], b[k]) for k in b)
    assert torch.equal(student.model.embed_tokens.weight, teacher.model.embed_tokens.weight)
    assert torch.equal(student.model.norm.weight, teacher.model.norm.weight)
    assert count_parameters(student).total < count_parameters(teacher).total


def test_a_student_with_every_layer_answers_exactly_as_the_teacher(tiny_tokenizer):
    teacher = build_tiny_model(tiny_tokenizer, seed=3, layers=4)
    twin = student_from_teacher(teacher, 4)
    ids = torch.tensor([tiny_tokenizer("Classify the customer message")["input_ids"]])
    assert torch.equal(twin(ids).logits, teacher(ids).logits)


def test_a_student_generates_with_its_cache_as_without(tiny_tokenizer):
    """Kept layers are renumbered: the KV cache indexes the student's own layers."""
    student = student_from_teacher(build_tiny_model(tiny_tokenizer, seed=3, layers=4), [1, 3])
    ids = torch.tensor([tiny_tokenizer("Hello, my parcel")["input_ids"]])
    cached = student.generate(ids, max_new_tokens=5, do_sample=False, use_cache=True)
    uncached = student.generate(ids, max_new_tokens=5, do_sample=False, use_cache=False)
    assert torch.equal(cached, uncached)


def test_a_layer_count_keeps_layers_spread_evenly_first_and_last_included():
    assert _layers_to_keep(2, 4) == [0, 3]
    half = _layers_to_keep(15, 30)
    assert len(half) == 15 and half[0] == 0 and half[-1] == 29
    assert _layers_to_keep(30, 30) == list(range(30))
    assert _layers_to_keep([1, 5], 30) == [1, 5]


def test_bad_layer_choices_and_lora_teachers_are_refused_with_the_fix(tiny_tokenizer):
    teacher = build_tiny_model(tiny_tokenizer, layers=4)
    for bad in (0, 5, [2, 1], [0, 4], []):
        with pytest.raises(workbench.WorkbenchError, match="keep_layers"):
            student_from_teacher(teacher, bad)
    with pytest.raises(workbench.WorkbenchError, match="merge_and_unload"):
        student_from_teacher(apply_method(teacher, Method()), 2)


# -- a distillation run -------------------------------------------------------------------
def test_a_distillation_run_trains_the_student_through_a_run(teacher_dir, ticket_split):
    teacher, tokenizer = workbench.load_model(str(teacher_dir))
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = student_from_teacher(teacher, 2)
    start = {k: v.clone() for k, v in student.state_dict().items()}
    run = distill(
        teacher,
        student,
        tokenizer,
        *ticket_split,
        alpha=0.7,
        temperature=3.0,
        method=FULL,
        hyperparameters=quick(max_steps=4, eval_every=2),
        samples=1,
    ).wait()
    assert run.status == "finished", run.error
    kinds = [e["event"] for e in run.events]
    assert kinds[0] == "started" and kinds[-1] == "finished"
    assert kinds.count("step") == 4 and "evaluation" in kinds
    for step in (e for e in run.events if e["event"] == "step"):  # both terms of each step
        mixed = 0.3 * step["distill_ce"] + 0.7 * 3.0**2 * step["distill_kl"]
        assert step["loss"] == pytest.approx(mixed, rel=1e-3, abs=1e-4)
        assert step["distill_kl"] > 0  # two of four layers kept: the student differs
    monitor = TrainingMonitor.from_run_dir(run.run_dir)
    assert len(monitor.trace(DISTILL_CE).y) == len(monitor.trace(DISTILL_KL).y) == 4
    config = yaml.safe_load((run.run_dir / "config.yaml").read_text())
    assert config["stage"] == "distill"
    assert config["distillation"] == {
        "alpha": 0.7,
        "temperature": 3.0,
        "teacher": str(teacher_dir),
        "teacher_layers": [0, 3],
    }
    assert (run.run_dir / "model" / "config.json").is_file()  # the student, saved whole
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    assert any(not torch.equal(start[k], v) for k, v in run.model.state_dict().items())


def test_resuming_a_distillation_run_repeats_the_uninterrupted_losses(teacher_dir, ticket_split):
    settings = quick(max_steps=6, eval_every=3)

    def start(stop_at: int | None = None):
        teacher, tokenizer = workbench.load_model(str(teacher_dir))
        student = student_from_teacher(teacher, 2)
        run = distill(
            teacher, student, tokenizer, *ticket_split, method=FULL, hyperparameters=settings,
            start=False,
        )  # fmt: skip
        return finish(run, stop_at)

    reference = start()
    first = start(stop_at=2)
    assert first.status == "stopped"
    teacher, tokenizer = workbench.load_model(str(teacher_dir))
    resumed = resume_distillation(first.run_dir, teacher, tokenizer).wait()
    assert resumed.status == "finished", resumed.error
    assert resumed.losses == pytest.approx(reference.losses[3:], rel=1e-5)
    assert resumed.losses != pytest.approx(reference.losses[:3], rel=1e-3)  # not a fresh start


def test_resume_refuses_a_run_that_is_not_a_distillation(tiny, teacher_dir, ticket_split):
    model, tokenizer = tiny
    run = train(model, tokenizer, *ticket_split, method=FULL, hyperparameters=quick(max_steps=1))
    run.wait()
    teacher, _ = workbench.load_model(str(teacher_dir))
    with pytest.raises(workbench.WorkbenchError, match="not a distillation run"):
        resume_distillation(run.run_dir, teacher, tokenizer)


# -- learning without forgetting ------------------------------------------------------------
def _nudge(parameters, scale: float = 0.05) -> None:
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in parameters:
            param.add_(scale * torch.randn(param.shape, generator=generator))


def test_lwf_is_zero_for_the_base_model_and_grows_once_full_weights_move(tiny, reference_rows):
    model, tokenizer = tiny
    lwf = LearningWithoutForgetting(model, tokenizer, reference_rows, "alpaca", strength=3.0)
    assert lwf.base == "copy" and lwf.frozen is not model
    assert lwf.penalty(model).item() == 0.0
    _nudge(model.parameters())
    value = lwf.penalty(model)
    assert value.item() > 0
    value.backward()  # differentiable in the trained weights, never in the frozen copy
    assert model.model.embed_tokens.weight.grad is not None
    assert all(p.grad is None for p in lwf.frozen.parameters())


def test_lwf_with_lora_compares_with_the_same_model_with_its_adapter_off(tiny, reference_rows):
    model, tokenizer = tiny
    copied = LearningWithoutForgetting(model, tokenizer, reference_rows, "alpaca", base="copy")
    lora = apply_method(model, Method(r=4, dropout=0.0))
    lwf = LearningWithoutForgetting(lora, tokenizer, reference_rows, "alpaca")
    assert lwf.base == "adapter" and lwf.frozen is None  # no second copy
    assert lwf.penalty(lora).item() == 0.0  # the adapter starts as a no-op
    _nudge([p for n, p in lora.named_parameters() if "lora_B" in n])
    copied.batches_taken = lwf.batches_taken  # the same reference batch for both
    adapter_off, frozen_copy = lwf.penalty(lora).item(), copied.penalty(lora).item()
    assert adapter_off > 0
    assert adapter_off == pytest.approx(frozen_copy, rel=1e-5)  # the same base distribution


def test_lwf_takes_the_reference_rows_in_a_fixed_cycle(tiny, reference_rows):
    model, tokenizer = tiny
    lwf = LearningWithoutForgetting(model, tokenizer, reference_rows, "alpaca", batch_size=2)
    _nudge(model.parameters())
    values = [lwf.penalty(model).item() for _ in range(4)]  # 6 rows: 3 batches, then again
    assert len(set(values[:3])) == 3 and values[3] == values[0]
    later = LearningWithoutForgetting(
        model, tokenizer, reference_rows, "alpaca", batch_size=2, base="copy", batches_taken=1
    )
    later.frozen.load_state_dict(lwf.frozen.state_dict())
    assert later.penalty(model).item() == values[1]


def test_lwf_keeps_full_fine_tuning_closer_to_the_base_on_the_reference_rows(
    tiny_model_dir, ticket_split, reference_rows
):
    drift = {}
    for strength in (0.0, 20.0):
        model, tokenizer = workbench.load_model(str(tiny_model_dir))
        lwf = LearningWithoutForgetting(
            model, tokenizer, reference_rows, "alpaca", strength=strength
        )
        probe = LearningWithoutForgetting(model, tokenizer, reference_rows, "alpaca", batch_size=6)
        run = train(
            model,
            tokenizer,
            *ticket_split,
            method=FULL,
            hyperparameters=quick(max_steps=6, learning_rate=1e-2),
            regularizer=lwf,
        ).wait()
        assert run.status == "finished", run.error
        config = yaml.safe_load((run.run_dir / "config.yaml").read_text())["regularizer"]
        assert config["kind"] == "lwf" and config["base"] == "copy"
        with torch.no_grad():
            drift[strength] = probe.penalty(run.model).item()  # KL on all 6 reference rows
    assert drift[20.0] < 0.5 * drift[0.0]


def test_lwf_is_rebuilt_from_config_where_the_checkpoint_left_its_cycle(
    tiny_model_dir, ticket_split, reference_rows
):
    model, tokenizer = workbench.load_model(str(tiny_model_dir))
    lwf = LearningWithoutForgetting(
        model, tokenizer, reference_rows, "alpaca", strength=2.0, batch_size=2, base="copy"
    )
    run = train(
        model,
        tokenizer,
        *ticket_split,
        method=FULL,
        hyperparameters=quick(max_steps=4, eval_every=2, gradient_accumulation=2),
        regularizer=lwf,
    ).wait()
    assert run.status == "finished", run.error
    assert lwf.batches_taken == 4 * 2  # one batch per micro-batch
    config = yaml.safe_load((run.run_dir / "config.yaml").read_text())["regularizer"]
    fresh, _ = workbench.load_model(str(tiny_model_dir))
    alpaca = workbench.get_template("alpaca")
    rebuilt = lwf_from_config(config, fresh, tokenizer, run.run_dir, alpaca)
    assert rebuilt.to_config() == lwf.to_config()
    assert rebuilt.batches_taken == 4 * 2  # the newest checkpoint is at step 4
    assert rebuilt.reference_rows.rows == lwf.reference_rows.rows


def test_lwf_keeps_a_lora_run_closer_to_the_base_without_a_second_copy(
    tiny_model_dir, ticket_split, reference_rows
):
    drift = {}
    for strength in (0.0, 20.0):
        model, tokenizer = workbench.load_model(str(tiny_model_dir))
        lwf = LearningWithoutForgetting(
            model, tokenizer, reference_rows, "alpaca", strength=strength, base="adapter"
        )
        run = train(
            model,
            tokenizer,
            *ticket_split,
            method=Method(r=8, dropout=0.0),
            hyperparameters=quick(max_steps=6, learning_rate=1e-2),
            regularizer=lwf,
        ).wait()
        assert run.status == "finished", run.error
        assert lwf.frozen is None
        probe = LearningWithoutForgetting(
            run.model, tokenizer, reference_rows, "alpaca", batch_size=6
        )
        with torch.no_grad():
            drift[strength] = probe.penalty(run.model).item()  # adapter on vs off
    assert drift[20.0] < 0.5 * drift[0.0]


def test_resuming_a_lora_run_with_lwf_repeats_the_uninterrupted_losses(
    tiny_model_dir, ticket_split, reference_rows
):
    settings = quick(max_steps=6, eval_every=3, gradient_accumulation=2, batch_size=2)

    def start(stop_at: int | None = None):
        model, tokenizer = workbench.load_model(str(tiny_model_dir))
        lwf = LearningWithoutForgetting(  # 4 batches: 6 micro-batches in, the cycle is at 2
            model, tokenizer, reference_rows, "alpaca", strength=5.0, batch_size=1, max_rows=4,
            base="adapter",
        )  # fmt: skip
        run = train(
            model,
            tokenizer,
            *ticket_split,
            method=Method(r=8, dropout=0.0),
            hyperparameters=settings,
            regularizer=lwf,
            start=False,
        )
        return finish(run, stop_at)

    reference = start()
    first = start(stop_at=2)
    assert first.status == "stopped"
    fresh_model, fresh_tokenizer = workbench.load_model(str(tiny_model_dir))
    resumed = workbench.resume(first.run_dir, fresh_model, fresh_tokenizer).wait()
    assert resumed.status == "finished", resumed.error
    assert resumed.losses == pytest.approx(reference.losses[3:], rel=1e-5)
