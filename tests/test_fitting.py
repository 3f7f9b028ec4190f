"""Will it fit: the check before training, its advice, and auto_batch's choice."""

from __future__ import annotations

import pytest
from conftest import quick

import workbench.runs.fitting as fitting
from workbench.model.methods import Method
from workbench.training.finetune import train

LENGTHS = [100] * 64


def test_a_run_that_fits_says_so(tiny):
    model, _ = tiny
    fit = fitting.check_fit(model, Method(), quick(), LENGTHS, 0.3)
    assert fit.fits and fit.advice is None
    assert "fits in" in str(fit)


def test_a_run_that_does_not_fit_gets_a_smaller_batch_with_more_accumulation(tiny, monkeypatch):
    model, _ = tiny
    hp = quick(batch_size=32)
    needed = fitting.check_fit(model, Method(), hp, LENGTHS, 0.3).estimate.total
    smaller = fitting.check_fit(model, Method(), hp.replace(batch_size=8), LENGTHS, 0.3)
    monkeypatch.setattr(fitting, "available_memory", lambda device: smaller.estimate.total + 1)
    fit = fitting.check_fit(model, Method(), hp, LENGTHS, 0.3)
    assert not fit.fits and fit.estimate.total == needed
    assert "Try batch_size=8 with gradient_accumulation=4" in fit.advice  # same effective batch
    assert "does NOT fit" in str(fit)


def test_when_nothing_fits_the_advice_is_qlora_or_a_smaller_model(tiny, monkeypatch):
    model, _ = tiny
    monkeypatch.setattr(fitting, "available_memory", lambda device: 1)
    fit = fitting.check_fit(model, Method(), quick(), LENGTHS, 0.3)
    assert "QLoRA" in fit.advice


def test_training_warns_before_it_starts_when_the_run_will_not_fit(tiny, ticket_split, monkeypatch):
    model, tokenizer = tiny
    monkeypatch.setattr(fitting, "available_memory", lambda device: 1)
    with pytest.warns(UserWarning, match="does NOT fit"):
        run = train(model, tokenizer, *ticket_split, hyperparameters=quick(), start=False)
    assert not run.fit.fits


def test_auto_batch_takes_the_largest_power_of_two_that_fits(tiny, monkeypatch):
    model, _ = tiny
    hp = quick(batch_size=4)
    sixteen = fitting.check_fit(model, Method(), hp.replace(batch_size=16), LENGTHS, 0.3)
    budget = sixteen.estimate.total / fitting.AUTO_BATCH_SHARE + 1
    monkeypatch.setattr(fitting, "available_memory", lambda device: budget)
    assert fitting.auto_batch_size(model, Method(), hp, LENGTHS, 0.3) == 16
    monkeypatch.setattr(fitting, "available_memory", lambda device: 10**15)
    assert fitting.auto_batch_size(model, Method(), hp, LENGTHS, 0.3) == 16  # 4 steps an epoch


def test_predict_fit_cuts_rows_at_max_length_and_without_rows_bounds_from_above(tiny):
    model, _ = tiny
    target = fitting.Target.of(model)
    hp = quick(max_length=64, packing=True)
    assert fitting.capped_lengths([10, 100, 64], 64) == [10, 64, 64]
    assert fitting.capped_lengths(None, 64) is None
    with pytest.raises(ValueError, match="`max_length`=0"):
        fitting.capped_lengths([10], 0)
    cut = fitting.predict_fit(target, Method(), hp, [100, 200, 30], 0.5)
    assert cut.estimate == fitting.fit_for(target, Method(), hp, [64, 64, 30], 0.5).estimate
    bound = fitting.predict_fit(target, Method(), hp)
    assert bound.estimate == fitting.fit_for(target, Method(), hp, [64], 1.0).estimate
    assert bound.estimate.total > cut.estimate.total  # full rows, every logit kept


def test_a_bare_config_is_a_float32_cpu_target(tiny):
    model, _ = tiny
    target = fitting.Target.of(model.config)
    assert (target.config, target.dtype_bytes, target.device) == (model.config, 4, "cpu")
    assert fitting.Target.of(model) == target  # the tiny model is float32 on the CPU too
