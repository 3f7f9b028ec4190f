"""Settings from hand-edited files: every wrong value named with its file, key path and fix."""

from __future__ import annotations

import math
import warnings

import pytest
from conftest import quick

from workbench.cli import main as cli
from workbench.errors import WorkbenchError
from workbench.model.generation import Decoding, generate
from workbench.model.methods import Method
from workbench.runs.directory import RunDirectory
from workbench.runs.hyperparameters import Hyperparameters
from workbench.training.finetune import train


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"learning_rate": "abc"}, "`hyperparameters.learning_rate`='abc': must be a number"),
        ({"max_steps": "ten"}, "`hyperparameters.max_steps`='ten': must be a whole number"),
        ({"packing": "yes"}, "`hyperparameters.packing`='yes': must be true or false"),
        ({"lr_scheduler": "cosinus"}, "`hyperparameters.lr_scheduler`='cosinus': choose one of"),
        ({"lerning_rate": 1e-4}, "`hyperparameters.lerning_rate` is not a setting"),
        ({"lerning_rate": 1e-4}, "Did you mean `hyperparameters.learning_rate`?"),
        ({"max_steps": 0}, "`max_steps`=0 would train nothing: set -1 to train `epochs`"),
        ({"max_grad_norm": -1}, "`max_grad_norm`=-1.0 must be 0 (no clipping) or more"),
        ({"warmup": math.nan}, "`warmup`=nan must be a finite number"),
    ],
)
def test_a_bad_value_names_the_file_the_key_and_the_fix(values, message):
    with pytest.raises(WorkbenchError) as raised:
        Hyperparameters.from_dict(values, "runs/x/config.yaml", key="hyperparameters")
    assert str(raised.value).startswith("runs/x/config.yaml: ")
    assert message in str(raised.value)


def test_yaml_numbers_written_as_text_are_read_as_numbers():
    # YAML 1.1 reads 2e-4 (no dot) as text; a float setting accepts it
    settings = Hyperparameters.from_dict({"learning_rate": "2e-4", "max_steps": 8.0})
    assert settings.learning_rate == 2e-4 and settings.max_steps == 8
    assert isinstance(settings.max_steps, int)


def test_direct_construction_rejects_wrong_types_and_non_finite_numbers():
    with pytest.raises(WorkbenchError, match="`learning_rate`='abc': must be a number"):
        Hyperparameters(learning_rate="abc")
    with pytest.raises(WorkbenchError, match="`learning_rate`=nan must be a finite number"):
        Hyperparameters(learning_rate=math.nan)
    with pytest.raises(WorkbenchError, match="`r`='sixteen': must be a whole number"):
        Method(r="sixteen")
    with pytest.raises(WorkbenchError, match="max_grad_norm"):
        Hyperparameters(max_grad_norm=-1)
    assert Hyperparameters(max_grad_norm=0).max_grad_norm == 0  # 0 turns clipping off


def test_resume_with_a_hand_broken_config_exits_with_the_key_named(tiny, ticket_split, capsys):
    model, tokenizer = tiny
    run = train(model, tokenizer, *ticket_split, hyperparameters=quick(), start=False)
    run.add_callback("step", lambda e: run.stop() if e["step"] == 2 else None)
    assert run.start().wait().status == "stopped"
    path = RunDirectory(run.run_dir).file("config.yaml")
    text = path.read_text()
    path.write_text(text.replace("learning_rate: 0.005", "learning_rate: abc", 1))
    assert cli(["resume", str(run.run_dir)]) == 2
    error = capsys.readouterr().err
    assert f"{path}: invalid hyperparameters" in error
    assert "`hyperparameters.learning_rate`='abc': must be a number" in error
    assert "Traceback" not in error

    path.write_text(text.replace("method:", "method: [unclosed", 1))
    assert cli(["resume", str(run.run_dir)]) == 2
    error = capsys.readouterr().err
    method_line = text.splitlines().index("method:") + 1
    # YAML notices the unclosed bracket on the line after it, and says so
    assert f"{path}:{method_line + 1}: not valid YAML (expected ',' or ']'" in error
    assert "Traceback" not in error


def test_generate_rejects_an_empty_prompt_and_a_bare_string(tiny):
    model, tokenizer = tiny
    with pytest.raises(WorkbenchError, match="prompt 1 is ''"):
        generate(model, tokenizer, ["Hello", ""], Decoding(max_new_tokens=2))
    with pytest.raises(WorkbenchError, match=r"pass \[prompt\]"):
        generate(model, tokenizer, "Hello", Decoding(max_new_tokens=2))
    (answer,) = generate(model, tokenizer, ["Hello"], Decoding(max_new_tokens=2))
    assert isinstance(answer, str)


def test_report_to_reaches_the_training_arguments_and_is_validated(tmp_path):
    from trl import DPOConfig

    from workbench.training.preference import PreferenceSettings

    assert Hyperparameters().to_training_args(str(tmp_path)).report_to == []  # off by default
    args = Hyperparameters(report_to="tensorboard").to_training_args(str(tmp_path))
    assert args.report_to == ["tensorboard"]
    dpo = PreferenceSettings(report_to="tensorboard").to_training_args(
        str(tmp_path), args_class=DPOConfig, beta=0.1
    )
    assert dpo.report_to == ["tensorboard"]
    with pytest.raises(WorkbenchError, match="`hyperparameters.report_to`='comet': choose one"):
        Hyperparameters.from_dict({"report_to": "comet"}, key="hyperparameters")


@pytest.mark.parametrize("tracker", ["wandb", "mlflow"])
def test_a_tracker_that_is_not_installed_says_how_to_install_it(tracker, tmp_path, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == tracker else find_spec(name)
    )
    settings = Hyperparameters(report_to=tracker)  # settings may name it: export, other machines
    with pytest.raises(WorkbenchError, match=f"`report_to`='{tracker}'.*pip install {tracker}"):
        settings.to_training_args(str(tmp_path))


def test_warmup_never_takes_more_than_half_of_the_steps(tiny, tmp_path):
    default = Hyperparameters()  # warmup 0.05 of the steps
    assert [default.warmup_steps(n) for n in (1, 2, 3, 20, 21, 100)] == [0, 1, 1, 1, 2, 5]
    assert Hyperparameters(warmup=10).warmup_steps(4) == 2  # a step count, capped too
    model, _ = tiny
    one_step = Hyperparameters(max_steps=1).run_arguments(tmp_path, model, has_validation=False)
    assert one_step.get_warmup_steps(1) == 0  # else the only step would learn at a rate of 0
    # a plan whose warmup fits in half of it keeps its arguments as they were
    assert Hyperparameters(max_steps=40).run_arguments(
        tmp_path, model, has_validation=False
    ).warmup_steps == pytest.approx(0.05)


def test_a_plan_that_epochs_make_too_short_to_learn_warns_before_it_starts(tiny, tmp_path):
    model, _ = tiny
    settings = Hyperparameters(batch_size=8, gradient_accumulation=2)
    assert settings.optimizer_steps(33) == 3  # 5 batches, the last one short: 3 steps
    with pytest.warns(
        UserWarning,
        match=r"`epochs`=1 over 33 training rows in batches of 8 x 2 "
        r"accumulated makes only 3 optimizer step\(s\).*Raise `epochs`",
    ):
        settings.run_arguments(tmp_path, model, has_validation=False, rows=33)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an explicit max_steps is the user's own number
        Hyperparameters(max_steps=2).run_arguments(tmp_path, model, has_validation=False, rows=33)
        settings.run_arguments(tmp_path, model, has_validation=False, rows=400)  # 25 steps
