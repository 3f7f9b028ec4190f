"""`python -m workbench train RECIPE.yaml`: recipes checked before anything loads, `--set`
overrides, a run's own config.yaml trained again unchanged, and every shipped config trained."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, quick

import workbench.interfaces.recipe_command as recipe_command
import workbench.model.loading as models
from workbench.cli import main
from workbench.interfaces.recipe import read_recipe
from workbench.interfaces.recipe_command import load_recipe_data
from workbench.runs.directory import RunDirectory
from workbench.tokens.templates import Template
from workbench.training.finetune import train

SHIPPED = sorted((ROOT / "configs").glob("*.yaml"))
TICKETS = str(ROOT / "sample_data" / "support_tickets.jsonl")


def write_recipe(folder: Path, recipe: dict, name: str = "recipe.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return path


def tiny_overrides(model_dir: Path, run_dir: Path, steps: int = 1) -> list[str]:
    settings = [
        f"model.name={model_dir}",
        f"hyperparameters.max_steps={steps}",
        f"output.run_dir={run_dir}",
    ]
    return [part for s in settings for part in ("--set", s)]


def no_model_loading(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the recipe was checked")

    monkeypatch.setattr(models, "load_model", refuse)
    monkeypatch.setattr(recipe_command, "load_model", refuse)  # where the command calls it


def digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_a_recipe_with_many_mistakes_exits_2_naming_every_key_path(tmp_path, capsys, monkeypatch):
    no_model_loading(monkeypatch)
    path = write_recipe(
        tmp_path,
        {
            "model": {"name": "smollm2-135m-instruct", "quantization": "3bit"},
            "data": {"train": TICKETS, "validation": "missing.jsonl"},
            "template": {"prompt": "{instruction}", "respons": "{output}"},
            "method": {"kind": "lora", "r": 0, "alpha": "big"},
            "hyperparameters": {"lerning_rate": 1e-4, "batch_size": 0},
            "evaluation": {"held_out": 8, "metrics": ["label_accuracy"]},
            "output": {"samples": -1},
            "trainer": {},
        },
    )
    assert main(["train", str(path)]) == 2
    message = capsys.readouterr().err
    for key_path in (
        "`model.quantization`='3bit'",
        "`data.validation`: missing.jsonl not found",
        "`template.respons` is not a Template field",
        "`method.r`=0: the LoRA rank must be at least 1 (try 8-64)",
        "`method.alpha`='big': must be a number",
        "`hyperparameters.lerning_rate` is not a setting of Hyperparameters; known:",
        "`hyperparameters.batch_size`=0 must be positive",
        "list the classes in `evaluation.labels`",
        "`output.samples`=-1",
        "`trainer` is not a section of a recipe; known: model, data, method",
    ):
        assert key_path in message
    assert message.startswith(f"workbench: {path}: 10 problem(s), nothing was loaded")


def test_set_overrides_are_read_as_yaml_and_applied_before_the_check(tmp_path):
    path = write_recipe(tmp_path, {"data": {"train": TICKETS}})
    recipe = read_recipe(
        path,
        [
            "hyperparameters.learning_rate=1e-4",
            "hyperparameters.packing=false",
            "method.target_modules=[q_proj, v_proj]",
            "template=chat",
            "evaluation.held_out=8",  # a section the file does not have
        ],
    )
    assert recipe.hyperparameters.learning_rate == 1e-4
    assert recipe.hyperparameters.packing is False
    assert recipe.method.target_modules == ["q_proj", "v_proj"]
    assert recipe.template == "chat"
    assert recipe.evaluation.held_out == 8
    # an override can also repair what the file got wrong
    broken = write_recipe(tmp_path, {"data": {"train": TICKETS}, "method": {"r": 0}}, "b.yaml")
    assert read_recipe(broken, ["method.r=8"]).method.r == 8


def test_bad_overrides_are_named(tmp_path, capsys, monkeypatch):
    no_model_loading(monkeypatch)
    path = write_recipe(tmp_path, {"data": {"train": TICKETS}, "template": "alpaca"})
    code = main(
        ["train", str(path), "--set", "method.r=0", "--set", "max_steps", "--set"]
        + ["template.prompt=x", "--set", "hyperparameters.learning_rat=1e-4"]
    )
    assert code == 2
    message = capsys.readouterr().err
    assert "--set 'max_steps': write key.path=value" in message
    assert "--set 'template.prompt=x': `template` is 'alpaca', not a mapping" in message
    assert "`method.r`=0" in message
    assert "`hyperparameters.learning_rat` is not a setting" in message
    assert "(with --set method.r=0 max_steps" in message


def test_a_custom_template_and_mixed_files_beside_the_recipe(tmp_path):
    rows = [json.loads(line) for line in Path(TICKETS).read_text().splitlines()]
    for name, part in (("a.jsonl", rows[:40]), ("b.jsonl", rows[40:80])):
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in part))
    recipe_values = {
        "data": {"train": ["a.jsonl", "b.jsonl"], "mix": {"a": 3, "b.jsonl": 1}, "split": 4},
        "template": {"prompt": "Q: {input}\nA: ", "response": "{output}"},
        "evaluation": {"held_out": 8},
    }
    path = write_recipe(tmp_path, recipe_values)
    recipe = read_recipe(path)  # run from elsewhere: the files are found beside the recipe
    assert isinstance(recipe.template, Template) and recipe.template.prompt.startswith("Q: ")
    data = load_recipe_data(recipe)
    sources = [data.train.source_of(i) for i in range(len(data.train))]
    assert len(data.validation) == 4 and len(data.held_out) == 8
    # a 3:1 mix of 40-row files draws 40 + 13 rows; 12 of them are held out or validated
    assert len(data.train) + 12 == 53
    assert sum(s.endswith("a.jsonl") for s in sources) > 2 * sum(
        s.endswith("b.jsonl") for s in sources
    )


def test_split_and_held_out_rows_never_overlap(tmp_path):
    path = write_recipe(tmp_path, {"data": {"train": TICKETS, "split": 16}})
    data = load_recipe_data(read_recipe(path, ["evaluation.held_out=48"]))
    assert (len(data.train), len(data.validation), len(data.held_out)) == (256, 16, 48)
    texts = [{r["input"] for r in part.rows} for part in (data.train, data.validation)]
    held = {r["input"] for r in data.held_out.rows}
    assert not held & texts[0] and not held & texts[1] and not texts[0] & texts[1]


def test_a_runs_own_config_trains_again_unchanged(tiny, ticket_split, tmp_path):
    model, tokenizer = tiny
    first = tmp_path / "first"
    run = train(
        model, tokenizer, *ticket_split, hyperparameters=quick(max_steps=2), run_dir=first
    ).wait()
    assert run.status == "finished"
    before = digests(first)
    again = tmp_path / "again"
    config = first / "config.yaml"
    assert main(["train", str(config), "--set", f"output.run_dir={again}"]) == 0
    assert digests(first) == before  # the original run is read, never written
    old, new = RunDirectory(first).read_config(), RunDirectory(again).read_config()
    for key in ("model", "template", "method", "hyperparameters", "samples"):
        assert new[key] == old[key], key
    for key in ("format", "train", "validation", "rows"):
        assert new["data"][key] == old["data"][key], key
    assert new["data"]["sources"] == [str(first / "data" / "train.jsonl")]  # where rows came from
    for split in ("train", "validation"):
        assert (again / f"data/{split}.jsonl").read_text() == (
            first / f"data/{split}.jsonl"
        ).read_text()
    assert (again / "report.html").is_file()


@pytest.mark.parametrize("config", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_every_shipped_config_trains_one_step(config, tiny_model_dir, tmp_path):
    run_dir = tmp_path / "run"
    overrides = tiny_overrides(tiny_model_dir, run_dir) + ["--set", "evaluation.held_out=4"]
    # the tiny tokenizer (600 tokens) spells a row in about twice SmolLM2's tokens
    overrides += ["--set", "hyperparameters.max_length=256"]
    assert main(["train", str(config)] + overrides) == 0
    recorded = RunDirectory(run_dir).read_config()
    shipped = yaml.safe_load(config.read_text())
    assert recorded["hyperparameters"]["max_steps"] == 1
    assert recorded["method"]["kind"] == shipped["method"]["kind"]
    assert recorded["hyperparameters"]["learning_rate"] == float(
        shipped["hyperparameters"]["learning_rate"]
    )
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "finished"
    assert (run_dir / "report.html").is_file() and (run_dir / "comparison.json").is_file()


def test_a_failed_run_exits_1_with_the_reason_on_stderr(
    tiny_model_dir, tmp_path, capsys, monkeypatch
):
    from workbench.runs.run import Run

    def broken_save(self):
        raise OSError("the adapter could not be written")

    monkeypatch.setattr(Run, "_finish", broken_save)
    path = write_recipe(tmp_path, {"data": {"train": TICKETS, "split": 8}})
    assert main(["train", str(path)] + tiny_overrides(tiny_model_dir, tmp_path / "run")) == 1
    assert "training failed: Training finished but saving failed" in capsys.readouterr().err


def test_ctrl_c_stops_with_a_checkpoint_exits_130_and_prints_the_resume_command(
    tiny_model_dir, tmp_path
):
    run_dir = tmp_path / "run"
    path = write_recipe(tmp_path, {"data": {"train": TICKETS, "split": 8}})
    command = [sys.executable, "-m", "workbench", "train", str(path)]
    command += tiny_overrides(tiny_model_dir, run_dir, steps=100000)
    command += ["--set", "hyperparameters.eval_every=1000", "--set", "hyperparameters.batch_size=2"]
    env = dict(os.environ, OMP_NUM_THREADS="1", WORKBENCH_RUNS=str(tmp_path / "runs"))
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.time() + 120
        events = run_dir / "metrics.jsonl"
        while not (events.is_file() and '"event": "step"' in events.read_text()):
            assert process.poll() is None and time.time() < deadline, process.stderr.read()
            time.sleep(0.2)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130, err
    assert f"python -m workbench resume {run_dir}" in err
    assert json.loads((run_dir / "status.json").read_text())["status"] == "stopped"
    assert RunDirectory(run_dir).complete_checkpoints()


def test_track_importance_is_read_from_a_recipe_and_must_be_a_boolean(tmp_path):
    path = write_recipe(tmp_path, {"data": {"train": TICKETS}, "track_importance": True})
    assert read_recipe(path).track_importance is True
    assert (
        read_recipe(write_recipe(tmp_path, {"data": {"train": TICKETS}})).track_importance is False
    )
    with pytest.raises(Exception, match="`track_importance`='yes please' must be true or false"):
        read_recipe(path, ["track_importance=yes please"])


def test_a_continued_runs_config_is_refused_with_the_python_way_to_rerun_it(tmp_path):
    folder = tmp_path / "stage-2"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "train.jsonl").write_text(Path(TICKETS).read_text())
    config = {
        "stage": "sft",
        "model": "tiny",
        "data": {"train": "data/train.jsonl", "format": "alpaca"},
        "continued_from": str(tmp_path / "stage-1"),
        "track_importance": True,
    }
    path = write_recipe(folder, config, "config.yaml")
    with pytest.raises(Exception, match="continued_from.*train_sequence"):
        read_recipe(path)


def test_a_runs_config_keeps_its_held_out_rows_and_trains_again_with_before_and_after(
    tiny_model_dir, tmp_path, capsys
):
    path = write_recipe(tmp_path, {"data": {"train": TICKETS, "split": 8}})
    overrides = tiny_overrides(tiny_model_dir, tmp_path / "first") + [
        "--set",
        "evaluation.held_out=4",
    ]
    assert main(["train", str(path), *overrides]) == 0
    first = RunDirectory(tmp_path / "first")
    evaluation = first.read_config()["evaluation"]
    assert evaluation["held_out"] == 4 and evaluation["file"] == "data/held_out.jsonl"
    assert evaluation["metrics"] == ["exact_match", "rouge_l"]
    assert (tmp_path / "first" / "before.json").is_file()  # the base model, measured first
    capsys.readouterr()
    again = ["--set", f"output.run_dir={tmp_path / 'again'}"]
    assert main(["train", str(first.file("config.yaml")), *again]) == 0
    out = capsys.readouterr().out
    assert "4 held-out rows" in out and "before   after  change" in out
    held = [(tmp_path / run / "data" / "held_out.jsonl").read_text() for run in ("first", "again")]
    assert held[0] == held[1]  # the same rows measured
    assert RunDirectory(tmp_path / "again").read_json("comparison.json")["summary"]


def test_resuming_a_stopped_recipe_run_ends_with_the_before_after_table(
    tiny_model_dir, tmp_path, capsys, monkeypatch
):
    from workbench.runs.run import Run

    start = Run.start

    def stop_at_step_1(run, *args, **kwargs):
        if not args:  # the first start, not the resume (which starts from a checkpoint)
            run.add_callback("step", lambda e: run.stop() if e["step"] == 1 else None)
        return start(run, *args, **kwargs)

    monkeypatch.setattr(Run, "start", stop_at_step_1)
    run_dir = tmp_path / "run"
    path = write_recipe(tmp_path, {"data": {"train": TICKETS, "split": 8}})
    overrides = tiny_overrides(tiny_model_dir, run_dir, steps=3)
    overrides += ["--set", "evaluation.held_out=4", "--set", "hyperparameters.eval_every=1"]
    assert main(["train", str(path), *overrides]) == 1  # stopped
    assert not (run_dir / "comparison.json").exists()
    capsys.readouterr()
    assert main(["resume", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "before   after  change" in out and "exact_match" in out
    assert out.strip().endswith("finished")
    assert RunDirectory(run_dir).read_json("comparison.json")["summary"]


def test_a_template_field_the_rows_lack_exits_2_before_the_model_loads(
    tmp_path, capsys, monkeypatch
):
    no_model_loading(monkeypatch)
    rows = [{"prompt": f"{n} + {n} =", "completion": str(2 * n)} for n in range(6)]
    data = tmp_path / "sums.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = write_recipe(tmp_path, {"data": {"train": str(data), "split": 0}, "template": "alpaca"})
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{data}:1: the template uses `{{instruction}}`, `{{output}}`" in err
    assert "`template: plain`" in err
    assert "`data.columns: {prompt: instruction, completion: output}`" in err
    fixed = ["--set", "data.columns={prompt: instruction, completion: output}"]
    assert load_recipe_data(read_recipe(path, fixed[1:])).train.format == "alpaca"
    rows.append(rows[0])
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["train", str(path), "--set", "template=plain"]) == 2
    assert "set `data.drop_duplicates: true`" in capsys.readouterr().err  # the recipe's key
