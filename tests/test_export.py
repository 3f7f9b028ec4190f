"""Export on tiny runs: adapter round trip, merged model = adapter logits, the standalone script
in one and in two processes, and the hub upload (its API mocked: no network in tests)."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from conftest import SAMPLE_DATA, build_tiny_model, quick

import workbench
from workbench.errors import WorkbenchError
from workbench.interfaces.export import (
    SCRIPT,
    export_script,
    merge_adapter,
    push_to_hub,
    script_config,
)
from workbench.model.generation import adapter_disabled
from workbench.model.methods import Method
from workbench.runs.saved import load_adapter
from workbench.training.finetune import train

PYTHON = sys.executable
ACCELERATE = str(Path(sys.executable).with_name("accelerate"))
# Plain transformers in a fresh interpreter: neither workbench nor peft may be imported.
LOAD_MERGED = """
import sys, torch
from transformers import AutoModelForCausalLM
model = AutoModelForCausalLM.from_pretrained(sys.argv[1]).eval()
ids = torch.tensor([[int(x) for x in sys.argv[2].split(",")]])
with torch.no_grad():
    torch.save(model(input_ids=ids).logits, sys.argv[3])
assert not [m for m in sys.modules if m.split(".")[0] in ("workbench", "widgets", "peft")]
"""


def _logits(model, ids):
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_adapter_round_trip_and_merge_give_the_same_logits(lora_run, tiny_model_dir, tmp_path):
    tokenizer = lora_run.tokenizer
    ids = torch.tensor([tokenizer("Classify: my parcel never arrived")["input_ids"]])
    adapted = _logits(lora_run.model, ids)
    with adapter_disabled(lora_run.model):
        base = _logits(lora_run.model, ids)
    assert (adapted - base).abs().max() > 1e-2  # the adapter changed the model

    fresh, _ = workbench.load_model(str(tiny_model_dir))
    reloaded = load_adapter(fresh, lora_run.run_dir / "adapter")
    assert torch.allclose(_logits(reloaded, ids), adapted, atol=1e-5)

    fresh, fresh_tokenizer = workbench.load_model(str(tiny_model_dir))
    merged_dir = merge_adapter(
        lora_run.run_dir, tmp_path / "merged", model=fresh, tokenizer=fresh_tokenizer
    )
    assert (merged_dir / "model.safetensors").is_file()
    assert not (merged_dir / "adapter_config.json").exists()
    assert (merged_dir / "workbench_config.yaml").is_file()
    out = tmp_path / "logits.pt"
    token_ids = ",".join(map(str, ids[0].tolist()))
    subprocess.run([PYTHON, "-c", LOAD_MERGED, str(merged_dir), token_ids, str(out)], check=True)
    merged = torch.load(out)
    assert torch.allclose(merged, adapted, atol=1e-4), (merged - adapted).abs().max()


def test_merging_needs_an_unadapted_base(lora_run, tmp_path):
    with pytest.raises(WorkbenchError, match="already carries an adapter"):
        merge_adapter(
            lora_run.run_dir, tmp_path, model=lora_run.model, tokenizer=lora_run.tokenizer
        )
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        load_adapter(lora_run.model, tmp_path)


def _losses(output: Path) -> list[float]:
    history = json.loads((output / "log_history.json").read_text())
    return [entry["loss"] for entry in history if "loss" in entry]


def test_exported_script_trains_the_same_steps_in_one_and_in_two_processes(lora_run, tmp_path):
    folder = export_script(lora_run.run_dir, tmp_path / "export")
    tree = ast.parse((folder / "train.py").read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not {m for m in imported if m.split(".")[0] in ("workbench", "widgets")}
    assert {"transformers", "peft"} <= {m.split(".")[0] for m in imported}
    config = yaml.safe_load((folder / "config.yaml").read_text())
    assert config["training"]["batch_size"] == 4 and config["method"]["lora"]["r"] == 8
    assert len((folder / "data" / "train.jsonl").read_text().splitlines()) == 48
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHONPATH")}
    env.update(OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    one = tmp_path / "one"
    subprocess.run(
        [PYTHON, "train.py", "--output-dir", str(one)],
        cwd=folder,
        env=env,
        check=True,
        capture_output=True,
    )
    two = tmp_path / "two"
    launch = [ACCELERATE, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"]
    launch += ["--mixed_precision", "no", "--dynamo_backend", "no"]
    done = subprocess.run(
        [*launch, "train.py", "--output-dir", str(two)],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads(p.read_text()) for p in sorted((two / "processes").glob("rank-*.json"))]
    assert [r["rank"] for r in ranks] == [0, 1] and len({r["pid"] for r in ranks}) == 2
    assert {(r["world_size"], r["per_device_batch"]) for r in ranks} == {(2, 2)}
    single = json.loads((one / "processes" / "rank-0.json").read_text())
    assert (single["world_size"], single["per_device_batch"]) == (1, 4)

    assert _losses(one) == pytest.approx(lora_run.losses, rel=1e-4)  # the run itself
    assert _losses(two) == pytest.approx(_losses(one), rel=1e-4)  # and on two processes
    assert (two / "adapter" / "adapter_model.safetensors").is_file()


def test_exported_script_trains_the_same_losses_under_fsdp_on_two_cpu_processes(lora_run, tmp_path):
    """FSDP (version 2: parameters, gradients and optimizer state sharded) over two gloo
    processes on the CPU: the same losses as one process, and the adapter gathered whole."""
    folder = export_script(lora_run.run_dir, tmp_path / "export")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHONPATH")}
    env.update(OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    launch = [ACCELERATE, "launch", "--use_fsdp", "--fsdp_version", "2", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    done = subprocess.run(
        [*launch, "train.py", "--output-dir", str(tmp_path / "fsdp")],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads(p.read_text()) for p in sorted((tmp_path / "fsdp" / "processes").glob("*"))]
    assert {(r["world_size"], r["per_device_batch"]) for r in ranks} == {(2, 2)}
    assert _losses(tmp_path / "fsdp") == pytest.approx(lora_run.losses, rel=1e-4)
    assert (tmp_path / "fsdp" / "adapter" / "adapter_model.safetensors").is_file()


def test_export_from_the_command_line(lora_run, tmp_path, capsys):
    from workbench.cli import main

    assert main(["export", str(lora_run.run_dir), "--script", "--out", str(tmp_path / "s")]) == 0
    assert f"training script: {tmp_path / 's'}" in capsys.readouterr().out
    assert {p.name for p in (tmp_path / "s").iterdir()} == {
        "train.py",
        "config.yaml",
        "data",
        "accelerate",
    }
    assert {p.name for p in (tmp_path / "s" / "accelerate").iterdir()} == {
        "ddp.yaml",
        "fsdp.yaml",
        "deepspeed_zero2.yaml",
    }


def test_push_to_hub_uploads_through_the_hub_api(lora_run, monkeypatch):
    import huggingface_hub

    calls = []

    class FakeApi:
        def __init__(self, token=None):
            calls.append(("token", token))

        def create_repo(self, repo_id, **kwargs):
            calls.append(("create_repo", repo_id, kwargs["private"]))
            return f"https://huggingface.co/{repo_id}"

        def upload_folder(self, folder_path, repo_id, commit_message):
            calls.append(("upload_folder", Path(folder_path).name, repo_id))

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    with pytest.raises(WorkbenchError, match="HF_HUB_OFFLINE"):
        push_to_hub(lora_run.run_dir / "adapter", "me/tickets-lora")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    with pytest.raises(WorkbenchError, match="user-or-org/name"):
        push_to_hub(lora_run.run_dir / "adapter", "tickets-lora")
    url = push_to_hub(lora_run.run_dir / "adapter", "me/tickets-lora", token="hf_x")
    assert url == "https://huggingface.co/me/tickets-lora"
    assert calls == [
        ("token", "hf_x"),
        ("create_repo", "me/tickets-lora", True),
        ("upload_folder", "adapter", "me/tickets-lora"),
    ]


def test_script_config_says_what_it_cannot_export():
    from workbench.runs.hyperparameters import Hyperparameters

    config = {"hyperparameters": Hyperparameters(early_stopping_patience=2).to_dict()}
    config.update(method=Method().to_dict(), data={"validation": "data/validation.jsonl"})
    with pytest.warns(UserWarning, match="early_stopping_patience=2"):
        exported = script_config(config, "some/model")
    assert exported["training"]["batch_size"] == 8 and exported["data"]["max_length"] == 256
    config["method"] = Method(freeze_layers=1).to_dict()
    with pytest.raises(WorkbenchError, match="freeze_layers"):
        script_config(config, "some/model")


def _run_config(**hyperparameters) -> dict:
    from workbench.runs.hyperparameters import Hyperparameters

    config = {"hyperparameters": Hyperparameters(**hyperparameters).to_dict()}
    config.update(method=Method().to_dict(), data={"validation": "data/validation.jsonl"})
    return config


def test_a_default_run_exports_without_a_warning():
    # packing only lays the rows out differently: the script's padded batches give the same
    # losses (test_exported_script_trains_the_same_steps...), so it is no reason to warn
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        exported = script_config(_run_config(packing=True, report_to="tensorboard"), "m")
    assert exported["training"]["report_to"] == "tensorboard"


def test_export_names_the_ewc_regularizer_it_cannot_reproduce():
    config = _run_config()
    config["regularizer"] = {"kind": "ewc", "strength": 500.0, "reference": "ewc/rows.jsonl"}
    with pytest.warns(UserWarning, match=r"regularizer='ewc' \(strength=500.0\)"):
        script_config(config, "some/model")


def _exported_train_module():
    spec = importlib.util.spec_from_file_location("exported_train", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def quantizable_model_dir(tiny_tokenizer, tmp_path_factory):
    """A tiny model bitsandbytes can quantise (it quantises blocks of 64 values)."""
    folder = tmp_path_factory.mktemp("tiny-256")
    build_tiny_model(tiny_tokenizer, hidden=256).save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    return folder


def test_the_exported_script_loads_an_8bit_base_as_an_8bit_run_did(quantizable_model_dir):
    script = _exported_train_module()
    model, _ = script.load_model({"model": str(quantizable_model_dir), "quantization": "8bit"})
    assert model.is_loaded_in_8bit
    with pytest.raises(SystemExit, match="`quantization`='3bit'"):
        script.load_model({"model": str(quantizable_model_dir), "quantization": "3bit"})


@pytest.fixture(scope="module")
def qlora_run(quantizable_model_dir, ticket_split, tmp_path_factory):
    """A finished 1-step QLoRA run on a 4-bit base (slow on a CPU: one step only)."""
    with pytest.warns(UserWarning, match="slow"):
        model, tokenizer = workbench.load_model(
            str(quantizable_model_dir), quantization="4bit", device="cpu"
        )
    run = train(
        model,
        tokenizer,
        ticket_split[0].select(range(4)),
        ticket_split[1].select(range(2)),
        method=Method(kind="qlora", r=4),
        hyperparameters=quick(max_steps=1, eval_every=1, eval_metric_rows=0),
        run_dir=tmp_path_factory.mktemp("runs") / "qlora-run",
        samples=1,
    ).wait()
    assert run.status == "finished", run.error
    return run


def test_exporting_a_4bit_run_merges_into_a_full_precision_base_and_writes_the_script(
    qlora_run, capsys
):
    from workbench.cli import main

    with pytest.warns(UserWarning, match="loaded in full precision"):
        assert main(["export", str(qlora_run.run_dir)]) == 0
    out = capsys.readouterr().out
    assert "merged model: " in out and "training script: " in out
    merged = qlora_run.run_dir / "merged"
    assert (merged / "model.safetensors").is_file()
    assert "quantization_config" not in json.loads((merged / "config.json").read_text())
    assert (qlora_run.run_dir / "export" / "train.py").is_file()
    config = yaml.safe_load((qlora_run.run_dir / "export" / "config.yaml").read_text())
    assert config["quantization"] == "4bit" and config["method"]["kind"] == "qlora"


def test_the_exported_script_reports_to_tensorboard_in_its_output_folder(lora_run, tmp_path):
    folder = export_script(lora_run.run_dir, tmp_path / "export")
    config = yaml.safe_load((folder / "config.yaml").read_text())
    assert config["training"]["report_to"] == "none"
    config["training"]["report_to"] = "tensorboard"
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHONPATH", "TENSORBOARD"))}
    env.update(OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    output = tmp_path / "output"
    done = subprocess.run(
        [PYTHON, "train.py", "--output-dir", str(output), "--max-steps", "1"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert list((output / "tensorboard").glob("events.out.tfevents.*"))


def test_the_exported_script_learns_every_assistant_turn_as_the_run_did(tiny_model_dir, tmp_path):
    from workbench.tokens.tokenizing import tokenize_examples

    model, tokenizer = workbench.load_model(str(tiny_model_dir))
    talks = workbench.load_data(SAMPLE_DATA / "multi_turn_chat.jsonl", verbose=False)
    rows = talks.select(range(12))
    run = train(
        model,
        tokenizer,
        rows,
        hyperparameters=quick(max_steps=1, eval_every=1),
        run_dir=tmp_path / "chat-run",
        samples=1,
    ).wait()
    assert run.status == "finished", run.error
    folder = export_script(run.run_dir, tmp_path / "export")
    config = yaml.safe_load((folder / "config.yaml").read_text())
    script = _exported_train_module()
    exported = script.load_rows(folder / "data" / "train.jsonl", tokenizer, config["data"])
    trained = tokenize_examples(rows, "chat", tokenizer, max_length=256)
    assert exported["input_ids"] == [e.input_ids for e in trained.examples]
    assert exported["labels"] == [e.labels for e in trained.examples]
    turns = [sum(m["role"] == "assistant" for m in r["messages"]) for r in rows.rows]
    learned_runs = [
        sum(1 for i, x in enumerate(labels) if x >= 0 and (i == 0 or labels[i - 1] < 0))
        for labels in exported["labels"]
    ]
    assert learned_runs == turns  # every assistant turn carries loss, not the last alone
