"""`resume_run` and `python -m workbench resume` continue a run of any kind by the `stage` its
config.yaml records, and the runs they cannot continue from the directory alone say why."""

from __future__ import annotations

import shutil

import pytest
import yaml
from conftest import SAMPLE_DATA, quick

import workbench
from workbench.cli import main
from workbench.errors import WorkbenchError
from workbench.runs.history import read_run
from workbench.training.pretraining import continue_pretraining, read_documents
from workbench.training.resume import resume

DOMAIN = SAMPLE_DATA / "domain"


@pytest.fixture(scope="module")
def documents():
    return read_documents(DOMAIN / "manual_train.jsonl").select(range(24))


def stopped_pretraining(model_dir, documents, steps: int = 6):
    model, tokenizer = workbench.load_model(str(model_dir))
    run = continue_pretraining(
        model,
        tokenizer,
        documents,
        block_size=64,
        hyperparameters=quick(max_steps=steps),
        start=False,
    )
    run.add_callback("step", lambda e: run.stop() if e["step"] == 2 else None)
    run.start().wait()
    assert run.status == "stopped", run.error
    return run


def test_a_stopped_pretraining_run_is_listed_resumable_and_resume_run_finishes_it(
    tiny_model_dir, documents
):
    run = stopped_pretraining(tiny_model_dir, documents)
    record = read_run(run.run_dir)
    assert record.stage == "pretrain" and record.resumable
    resumed = resume(run.run_dir).wait()  # the model config.yaml names, loaded afresh
    assert resumed.status == "finished", resumed.error
    assert read_run(run.run_dir).status == "finished"
    assert [e["step"] for e in resumed.events if e["event"] == "step"][-1] == 6


def test_the_resume_command_continues_a_pretraining_run(tiny_model_dir, documents, capsys):
    run = stopped_pretraining(tiny_model_dir, documents, steps=4)
    assert main(["resume", str(run.run_dir)]) == 0
    assert read_run(run.run_dir).status == "finished"


def rewrite_stage(run_dir, stage: str) -> None:
    path = run_dir / "config.yaml"
    config = yaml.safe_load(path.read_text())
    config["stage"] = stage
    path.write_text(yaml.safe_dump(config))


@pytest.mark.parametrize(
    "stage, says",
    [
        ("distill", r"needs its teacher.*resume\(.*teacher=\.\.\.\)"),
        ("dpo", "DPO runs cannot be resumed yet"),
        ("tea-ceremony", "unknown `stage` 'tea-ceremony'.*classify, distill, dpo.*sft"),
    ],
)
def test_runs_that_cannot_resume_from_their_directory_say_what_to_do(lora_run, stage, says):
    folder = lora_run.run_dir.parent / f"copy-{stage}"
    shutil.copytree(lora_run.run_dir, folder)
    rewrite_stage(folder, stage)
    with pytest.raises(WorkbenchError, match=says):
        resume(folder)
