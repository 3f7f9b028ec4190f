"""ORPO on the tiny model: its loss falls on the preference sample from a base model without SFT
or a reference, a stopped run resumes to the same losses, config.yaml and the registry know the
kind, bad rows and settings are refused."""

from __future__ import annotations

import pytest
import yaml
from conftest import SAMPLE_DATA
from resuming import assert_resumes_to_the_same_losses
from rows import preference_split_fixture

import workbench
from workbench.errors import WorkbenchError
from workbench.model.methods import Method
from workbench.runs.history import read_run
from workbench.runs.kinds import kind_of
from workbench.training.orpo import ORPOSettings, orpo_rows, resume_orpo, train_orpo

preference_split = preference_split_fixture(32, 8)  # (32 training pairs, 8 held-out pairs)


def settings(**changes) -> ORPOSettings:
    """A fresh LoRA on the random tiny model moves at 1e-2 (ORPO's 1e-4 is for real models)."""
    values = dict(max_steps=8, batch_size=4, learning_rate=1e-2, eval_every=8)
    return ORPOSettings(**{**values, "sample_max_new_tokens": 4, **changes})


def test_orpo_lowers_its_loss_from_a_base_model_without_a_reference(tiny, preference_split):
    model, tokenizer = tiny
    pairs, held_out = preference_split
    run = train_orpo(model, tokenizer, pairs, held_out, settings=settings()).wait()
    assert run.status == "finished", run.error

    losses = run.losses
    assert len(losses) == 8
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.05
    steps = [e for e in run.events if e["event"] == "step"]
    assert all("reward_margin" in e and "reward_accuracy" in e for e in steps)
    evaluations = [e["eval_loss"] for e in run.events if e["event"] == "evaluation"]
    assert len(evaluations) == 2 and evaluations[-1] < evaluations[0] - 0.05
    assert list(run.model.peft_config) == ["default"]  # no frozen copy: no reference model
    assert (run.run_dir / "adapter" / "adapter_model.safetensors").is_file()
    record = read_run(run.run_dir)
    assert (record.stage, record.status, record.task) == ("orpo", "finished", "ticket_reply")
    samples = [e for e in run.events if e["event"] == "samples"]
    assert samples[0]["samples"][0]["reference"] == held_out.rows[0]["chosen"]


def test_orpo_trains_every_weight_with_full_fine_tuning(tiny, preference_split):
    model, tokenizer = tiny
    pairs, _ = preference_split
    before = model.model.layers[0].mlp.up_proj.weight.detach().clone()
    plan = settings(max_steps=2, learning_rate=1e-4)
    run = train_orpo(model, tokenizer, pairs, settings=plan, method=Method(kind="full")).wait()
    assert run.status == "finished", run.error
    assert not hasattr(run.model, "peft_config")
    assert not run.model.model.layers[0].mlp.up_proj.weight.detach().equal(before)
    assert (run.run_dir / "model" / "model.safetensors").is_file()


def test_a_stopped_orpo_run_resumes_to_the_same_losses(tiny_model_dir, preference_split):
    pairs, _ = preference_split
    plan = settings(max_steps=6, eval_every=2)

    def start(**kwargs):
        model, tokenizer = workbench.load_model(str(tiny_model_dir))
        return train_orpo(model, tokenizer, pairs, settings=plan, **kwargs)

    assert_resumes_to_the_same_losses(start, resume_orpo)


def test_config_records_the_stage_and_settings_and_the_registry_has_orpo(tiny, preference_split):
    model, tokenizer = tiny
    pairs, _ = preference_split
    chosen = settings(beta=0.25)
    parent = train_orpo(
        model, tokenizer, pairs, settings=chosen, template="alpaca_input", start=False
    )
    config = yaml.safe_load((parent.run_dir / "config.yaml").read_text())
    assert config["stage"] == "orpo" and config["parent"] is None
    assert config["hyperparameters"]["beta"] == 0.25 and config["method"]["kind"] == "lora"
    assert ORPOSettings.from_dict(config["hyperparameters"]) == chosen
    assert config["template"]["name"] == "alpaca_input"

    child = train_orpo(parent.model, tokenizer, pairs, parent=parent.run_dir, start=False)
    config = yaml.safe_load((child.run_dir / "config.yaml").read_text())
    assert config["parent"] == str(parent.run_dir) and config["template"]["name"] == "alpaca_input"
    rows = orpo_rows(pairs, child.template, tokenizer)
    assert rows[0]["prompt"] == child.template.render_prompt(pairs.rows[0], tokenizer)
    assert (rows[0]["chosen"], rows[0]["rejected"]) == (
        pairs.rows[0]["chosen"],
        pairs.rows[0]["rejected"],
    )

    kind = kind_of("orpo")
    assert (kind.function, kind.settings, kind.resume) == ("train_orpo", ORPOSettings, resume_orpo)
    assert "no reference model" in kind.title


def test_rows_without_what_orpo_needs_are_refused_naming_the_field(tiny_tokenizer, ticket_split):
    with pytest.raises(WorkbenchError, match=r"ORPO needs preference rows \(`chosen`, `rejected`"):
        train_orpo(None, tiny_tokenizer, ticket_split[0])
    unpaired = workbench.load_data(
        [{"prompt": "Hi?", "completion": "Hello.", "label": True}], verbose=False
    )
    pairs = workbench.load_data(SAMPLE_DATA / "preferences.jsonl", verbose=False)
    with pytest.raises(WorkbenchError, match="'prompt_completion' rows. See sample_data"):
        train_orpo(None, tiny_tokenizer, pairs, unpaired)  # the validation rows are checked too
    with pytest.raises(WorkbenchError, match=r"`beta`=0 must be positive"):
        ORPOSettings(beta=0)
    with pytest.raises(WorkbenchError, match="`packing`=True does not apply to ORPO"):
        ORPOSettings(packing=True)
