"""One grammar for every kind of run: each registered kind's function takes the same
arguments, its settings class derives from Hyperparameters, and the old names still work, with a
DeprecationWarning."""

from __future__ import annotations

import inspect

import pytest
from conftest import SAMPLE_DATA, quick

import workbench as wb
from workbench.runs.kinds import KINDS, Kind, register

GRAMMAR = ("model", "tokenizer", "rows", "validation", "settings", "method", "run_dir", "start")


def test_every_kind_is_registered_with_a_public_function_of_the_grammar():
    expected = {"sft", "dpo", "kto", "orpo", "reward", "grpo", "ppo", "classify", "pretrain",
                "distill"}  # fmt: skip
    assert set(KINDS) == expected
    for kind in KINDS.values():
        function = getattr(wb, kind.function)
        assert kind.function in wb.__all__
        parameters = list(inspect.signature(function).parameters)
        if kind.stage == "reward":  # its first argument may also be a base model's name
            parameters[0] = "model"
        if kind.stage != "reward":
            assert parameters[:4] == list(GRAMMAR[:4]), kind.stage
        assert set(GRAMMAR[4:]) <= set(parameters), kind.stage
        assert set(kind.extras) <= set(parameters), kind.stage
        assert issubclass(kind.settings, wb.Hyperparameters), kind.stage
        assert kind.resume is not None or kind.cannot_resume


def test_a_kind_says_how_it_resumes_or_why_not():
    with pytest.raises(ValueError, match="give `resume`, or say in `cannot_resume` why"):
        Kind(stage="x", title="x", function="x", rows="x", settings=wb.Hyperparameters)
    with pytest.raises(ValueError, match="registered already"):
        register(Kind(stage="sft", title="another", function="x", rows="x",
                      settings=wb.Hyperparameters, cannot_resume="no"))  # fmt: skip


def test_the_kinds_own_knobs_live_in_their_settings_classes():
    settings = wb.PretrainingSettings(block_size=64, max_steps=3)
    assert settings.block_size == 64 and settings.max_steps == 3
    assert "block_size" in settings.help()
    assert wb.DistillationSettings(alpha=0.25).alpha == 0.25
    assert wb.ClassifierSettings(labels=["a", "b"]).labels == ["a", "b"]


def test_old_names_keep_working_with_a_deprecation_warning(tiny, ticket_split):
    model, tokenizer = tiny
    with pytest.warns(DeprecationWarning, match="`hyperparameters=` is now `settings=`"):
        run = wb.train(model, tokenizer, *ticket_split, hyperparameters=quick(), start=False)
    assert run.hyperparameters.max_steps == quick().max_steps
    with pytest.raises(TypeError, match="pass `settings=` only"):
        wb.train(model, tokenizer, *ticket_split, settings=quick(), hyperparameters=quick())
    documents = wb.load_data(SAMPLE_DATA / "domain" / "manual_train.jsonl", verbose=False)
    with pytest.warns(DeprecationWarning, match="`continue_pretraining` is now"):
        run = wb.continue_pretraining(
            *wb.load_model(str(model.name_or_path)), documents.select(range(20)),
            block_size=32, hyperparameters=quick(max_steps=1), start=False,
        )  # fmt: skip
    assert wb.read_documents is not None and run.run_dir.is_dir()
    with (
        pytest.warns(DeprecationWarning, match="`resume_run` is now `resume`"),
        pytest.raises(FileNotFoundError, match="not found: is .* a run directory"),
    ):
        wb.resume_run(run.run_dir.parent / "nothing-here")


def test_resume_refuses_what_a_kind_does_not_take(lora_run):
    with pytest.raises(TypeError, match="takes nothing else, not \\['teacher'\\]"):
        wb.resume(lora_run.run_dir, teacher=object())
