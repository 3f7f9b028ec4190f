"""KTO on the tiny model: its loss falls on the preference sample, a stopped run resumes to the
same losses, config.yaml and the registry know the kind, bad rows and settings are refused."""

from __future__ import annotations

import pytest
import yaml
from conftest import held_at_step
from resuming import assert_resumes_to_the_same_losses
from rows import preference_split_fixture

import workbench
from workbench.errors import WorkbenchError
from workbench.runs.history import read_run
from workbench.runs.kinds import kind_of
from workbench.training.kto import KTOSettings, kto_rows, resume_kto, train_kto

preference_split = preference_split_fixture(32, 8)  # (32 training pairs, 8 held-out pairs)


def settings(**changes) -> KTOSettings:
    """A fresh LoRA on the random tiny model moves at 1e-2 (KTO's 5e-5 is for real models)."""
    values = dict(max_steps=12, batch_size=8, learning_rate=1e-2, eval_every=12)
    return KTOSettings(**{**values, "sample_max_new_tokens": 4, **changes})


def unpaired(labels: list[bool]):
    rows = [
        {
            "prompt": f"Ticket {i}:",
            "completion": " we will help" if good else " go away",
            "label": good,
        }
        for i, good in enumerate(labels)
    ]
    return workbench.load_data(rows, verbose=False)


def test_kto_lowers_its_loss_on_the_preference_sample(tiny, preference_split):
    model, tokenizer = tiny
    pairs, held_out = preference_split
    run = train_kto(model, tokenizer, pairs, held_out, settings=settings()).wait()
    assert run.status == "finished", run.error

    losses = run.losses
    assert len(losses) == 12
    assert losses[0] == pytest.approx(0.5, abs=1e-6)  # policy == reference: 1 - sigmoid(0)
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4 - 0.02
    steps = [e for e in run.events if e["event"] == "step"]
    assert all("kl" in e and "reward_margin" in e for e in steps)
    assert sum(e["reward_margin"] for e in steps[-4:]) / 4 > 0.1  # chosen answers gained
    evaluations = [e["eval_loss"] for e in run.events if e["event"] == "evaluation"]
    assert evaluations[0] == pytest.approx(0.5, abs=1e-6) and evaluations[-1] < 0.48

    import torch  # the reference is the fresh adapter, frozen: LoRA's B starts at zero

    reference = [p for n, p in run.model.named_parameters() if ".ref." in n and "lora_B" in n]
    assert reference and all(torch.count_nonzero(p) == 0 for p in reference)
    assert (run.run_dir / "adapter" / "adapter_model.safetensors").is_file()
    assert not (run.run_dir / "adapter" / "ref").exists()  # only the tuned adapter is kept
    record = read_run(run.run_dir)
    assert (record.stage, record.status, record.task) == ("kto", "finished", "ticket_reply")
    assert (run.run_dir / "report.html").is_file()


def test_a_stopped_kto_run_resumes_to_the_same_losses(tiny_model_dir, preference_split):
    pairs, _ = preference_split
    plan = settings(max_steps=6, eval_every=2)

    def start(**kwargs):
        model, tokenizer = workbench.load_model(str(tiny_model_dir))
        return train_kto(model, tokenizer, pairs, settings=plan, **kwargs)

    assert_resumes_to_the_same_losses(start, resume_kto)


def test_kto_on_an_sft_run_keeps_its_adapter_as_reference_and_resumes_from_it(
    tiny_model_dir, lora_run, preference_split
):
    from peft import PeftModel

    pairs, _ = preference_split
    plan = settings(max_steps=4, eval_every=2)

    def start(**kwargs):  # the SFT run's model, as its directory holds it
        base, tokenizer = workbench.load_model(str(tiny_model_dir))
        model = PeftModel.from_pretrained(
            base, str(lora_run.run_dir / "adapter"), is_trainable=True
        )
        return train_kto(model, tokenizer, pairs, settings=plan, parent=lora_run.run_dir, **kwargs)

    reference = start().wait()
    assert reference.status == "finished", reference.error
    assert reference.template == lora_run.template  # the parent's template, not 'alpaca'
    state = reference.model.state_dict()
    sft = {k: v for k, v in lora_run.model.state_dict().items() if "lora_" in k}
    assert sft and all(state[k.replace(".default.", ".ref.")].equal(v) for k, v in sft.items())
    assert any(not state[k].equal(v) for k, v in sft.items())  # the adapter itself moved on

    stopped = start(start=False)
    with held_at_step(stopped, 1):
        stopped.stop()
    assert stopped.wait().status == "stopped"
    resumed = resume_kto(stopped.run_dir).wait()  # base + the parent's adapter, loaded afresh
    assert resumed.status == "finished", resumed.error
    assert stopped.losses + resumed.losses == pytest.approx(reference.losses, abs=1e-5)


def test_config_records_the_stage_and_settings_and_the_registry_has_kto(tiny, preference_split):
    model, tokenizer = tiny
    pairs, _ = preference_split
    chosen = settings(beta=0.3, desirable_weight=1.2, undesirable_weight=0.9)
    parent = train_kto(
        model, tokenizer, pairs, settings=chosen, template="alpaca_input", start=False
    )
    config = yaml.safe_load((parent.run_dir / "config.yaml").read_text())
    assert config["stage"] == "kto" and config["parent"] is None
    assert config["template"]["name"] == "alpaca_input"
    recorded = config["hyperparameters"]
    assert (recorded["beta"], recorded["desirable_weight"], recorded["undesirable_weight"]) == (
        0.3,
        1.2,
        0.9,
    )
    assert KTOSettings.from_dict(recorded) == chosen

    child = train_kto(
        model, tokenizer, unpaired([True, False] * 4), parent=parent.run_dir, start=False
    )
    config = yaml.safe_load((child.run_dir / "config.yaml").read_text())
    assert config["parent"] == str(parent.run_dir) and config["template"]["name"] == "alpaca_input"
    assert config["data"]["format"] == "prompt_completion"

    kind = kind_of("kto")
    assert (kind.function, kind.settings, kind.resume) == ("train_kto", KTOSettings, resume_kto)
    assert "desirable" in kind.title


def test_pairs_become_two_unpaired_rows_each_shuffled_by_the_seed(tiny_tokenizer, preference_split):
    pairs, _ = preference_split
    template = workbench.get_template("alpaca")
    rows = kto_rows(pairs, template, tiny_tokenizer, seed=0)
    expected = []
    for pair in pairs.rows:
        prompt = template.render_prompt(pair, tiny_tokenizer)
        expected += [(prompt, pair["chosen"], True), (prompt, pair["rejected"], False)]
    as_tuples = [(r["prompt"], r["completion"], r["label"]) for r in rows]
    assert sorted(as_tuples) == sorted(expected)
    assert as_tuples != expected  # shuffled: a pair's two answers do not sit side by side
    assert kto_rows(pairs, template, tiny_tokenizer, seed=0) == rows
    assert kto_rows(pairs, template, tiny_tokenizer, seed=1) != rows


def test_rows_without_what_kto_needs_are_refused_naming_the_field(tiny_tokenizer, ticket_split):
    with pytest.raises(WorkbenchError, match=r"KTO needs unpaired rows .*'alpaca' rows"):
        train_kto(None, tiny_tokenizer, ticket_split[0])
    no_label = workbench.load_data([{"prompt": "Hi?", "completion": "Hello."}], verbose=False)
    with pytest.raises(WorkbenchError, match=r"no true/false `label` \(list:1\).*label`: true"):
        train_kto(None, tiny_tokenizer, no_label)
    text_label = workbench.load_data(
        [{"prompt": "Hi?", "completion": "Hello.", "label": "yes"}], verbose=False
    )
    with pytest.raises(WorkbenchError, match="`label`"):
        train_kto(None, tiny_tokenizer, unpaired([True]), text_label)
    with pytest.raises(WorkbenchError, match=r"`batch_size`=1: KTO estimates its KL term"):
        KTOSettings(batch_size=1)
    with pytest.raises(WorkbenchError, match=r"`beta`=0.*\n.*`undesirable_weight`=-1"):
        KTOSettings(beta=0, undesirable_weight=-1)
    with pytest.raises(WorkbenchError, match="`packing`=True does not apply to KTO"):
        KTOSettings(packing=True)


def test_unbalanced_labels_get_a_warning_with_the_weight_to_use(tiny):
    model, tokenizer = tiny
    with pytest.warns(UserWarning, match=r"3 desirable and 1 undesirable.*desirable_weight=0.33"):
        train_kto(model, tokenizer, unpaired([True, True, False, True]), start=False)
