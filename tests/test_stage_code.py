"""Copy as code for every kind of run: the script `run_code` writes from a run directory runs,
and starts a run with the same stage, settings, method, template, rows and stage-specific
choices (labels, block size, reward, distillation) as the one it was written from."""

from __future__ import annotations

import pytest
from conftest import SAMPLE_DATA, quick

import workbench as wb
from workbench.interfaces.stage_code import run_code
from workbench.runs.directory import RunDirectory
from workbench.widgets import TrainingMonitor

# what must come back the same in the new run's config.yaml
SAME = ("stage", "model", "method", "hyperparameters", "template", "labels", "text_fields",
        "label_field", "block_size", "reward", "distillation")  # fmt: skip


def tickets():
    return wb.split_data(wb.load_data(SAMPLE_DATA / "support_tickets.jsonl", verbose=False), 8)


def pairs():
    return wb.split_data(wb.load_data(SAMPLE_DATA / "preferences.jsonl", verbose=False), 8)


def build(stage: str, tiny):
    """A run of `stage` on the tiny model, created but not started (its config.yaml is
    written when it is created), through the grammar every kind shares."""
    model, tokenizer = tiny
    one_step = quick(max_steps=1).to_dict()
    if stage == "classify":
        settings = wb.ClassifierSettings(**one_step)
        return wb.train_classifier(
            model, tokenizer, *tickets(), settings=settings, method="head+lora", start=False
        )
    if stage == "pretrain":
        documents = wb.load_data(SAMPLE_DATA / "domain" / "manual_train.jsonl", verbose=False)
        settings = wb.PretrainingSettings(**one_step, block_size=64)
        return wb.train_pretraining(
            model, tokenizer, documents.select(range(40)), settings=settings, start=False
        )
    if stage == "reward":
        settings = wb.RewardSettings(max_steps=1, max_length=512, eval_every=1)
        return wb.train_reward_model(model, tokenizer, *pairs(), settings=settings, start=False)
    if stage in ("dpo", "kto", "orpo"):
        sft = wb.train(model, tokenizer, *tickets(), settings=quick(max_steps=1)).wait()
        settings = PREFERENCE_SETTINGS[stage](max_steps=1, max_length=512, batch_size=2)
        function = getattr(wb, f"train_{stage}")
        return function(
            sft.model, tokenizer, *pairs(), settings=settings, parent=sft.run_dir, start=False
        )
    if stage in ("grpo", "ppo"):
        settings = wb.RLSettings(
            max_steps=1, batch_size=8, num_generations=4 if stage == "grpo" else 1,
            max_completion_length=4, eval_every=1, max_length=512,
        )  # fmt: skip
        function = getattr(wb, f"train_{stage}")
        return function(
            model, tokenizer, *tickets(), reward=wb.one_of_labels(["billing", "account"]),
            settings=settings, start=False,
        )  # fmt: skip
    student = wb.student_from_teacher(model, keep_layers=1)
    settings = wb.DistillationSettings(**one_step, alpha=0.25)
    return wb.train_distillation(
        student, tokenizer, *tickets(), teacher=model, settings=settings, start=False
    )


PREFERENCE_SETTINGS = {
    "dpo": wb.PreferenceSettings, "kto": wb.KTOSettings, "orpo": wb.ORPOSettings
}  # fmt: skip


@pytest.mark.parametrize(
    "stage", ["classify", "pretrain", "reward", "dpo", "kto", "orpo", "grpo", "ppo", "distill"]
)
def test_the_code_of_a_run_starts_the_same_run_again(stage, tiny):
    original = build(stage, tiny)
    code = run_code(original.run_dir)
    assert code.startswith("import workbench as wb\n")
    assert f"run = wb.{wb.KINDS[stage].function}(" in code  # the grammar every kind shares
    namespace: dict = {}
    exec(compile(code, f"<{stage} code>", "exec"), namespace)  # the script, as a user runs it
    again = namespace["run"]
    assert again.status == "finished", again.error
    assert again.run_dir != original.run_dir
    before = RunDirectory(original.run_dir).read_config()
    after = RunDirectory(again.run_dir).read_config()
    for key in SAME:
        assert after.get(key) == before.get(key), key
    for split in ("train", "validation"):  # the rows the first run stored, row for row
        if before["data"].get(split):
            assert after["data"]["rows"][split] == before["data"]["rows"][split]
    assert TrainingMonitor(again).as_code() == run_code(again.run_dir)  # the panel's button
    if stage == "dpo":  # it continued an SFT run's adapter: the code loads that adapter
        assert "load_adapter(model, " in code and str(before["parent"]) in code
    if stage == "distill":
        assert "wb.student_from_teacher(teacher, keep_layers=" in code


def answered(prompt: str, completion: str) -> float:
    """A reward of your own, importable from its module."""
    return float(bool(completion.strip()))


def test_a_reward_function_of_your_own_is_imported_or_named_for_you_to_bind(tiny):
    def local(prompt: str, completion: str) -> float:
        return 1.0

    model, tokenizer = tiny
    settings = wb.RLSettings(max_steps=1, batch_size=8, num_generations=4, max_length=512)
    run = wb.train_grpo(
        model, tokenizer, tickets()[0], reward=answered, settings=settings, start=False
    )
    code = run_code(run.run_dir)
    assert f"from {__name__} import answered as reward\n" in code
    assert "held_out=" not in code  # the run had no held-out prompts
    namespace: dict = {}
    exec(compile(code, "<code>", "exec"), namespace)
    assert namespace["run"].wait().status == "finished"

    run = wb.train_grpo(
        namespace["run"].model, tokenizer, tickets()[0], reward=local, settings=settings,
        start=False,
    )  # fmt: skip
    code = run_code(run.run_dir)
    name = f"{__name__}.{local.__qualname__}"
    assert f"reward = local  # your function of (prompt, answer) (config.yaml: {name})" in code
