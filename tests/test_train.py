"""Training runs on a tiny local model: learning, events, stop/resume, NaN, OOM, run directory."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from conftest import SAMPLE_DATA, build_tiny_model, quick

import workbench
from workbench.errors import AllLabelsMaskedError
from workbench.model.generation import Decoding, generate
from workbench.model.methods import Method
from workbench.runs.directory import complete_checkpoints
from workbench.runs.hyperparameters import Hyperparameters
from workbench.training.finetune import train
from workbench.training.resume import resume


def test_tiny_model_learns_a_tiny_task(tiny):
    model, tokenizer = tiny
    data = workbench.load_data(SAMPLE_DATA / "support_tickets.jsonl", verbose=False)
    train_rows, validation = workbench.split_data(data, 16, seed=0)
    prompts = [workbench.TEMPLATES["alpaca"].render_prompt(r) for r in validation.rows]
    labels = {"billing", "shipping", "technical", "account"}
    answers_before = generate(model, tokenizer, prompts, Decoding(max_new_tokens=4))
    assert not labels & set(answers_before)  # a random model does not answer with a topic
    run = train(
        model,
        tokenizer,
        train_rows.select(range(96)),
        validation,
        template="alpaca",
        method=Method(kind="full"),
        hyperparameters=quick(max_steps=60, batch_size=8, eval_every=30, learning_rate=1e-2),
    )
    run.wait()
    assert run.status == "finished", run.error
    losses = run.losses
    assert len(losses) == 60
    assert sum(losses[-5:]) / 5 < 0.3 * sum(losses[:5]) / 5
    evals = [e["eval_loss"] for e in run.events if e["event"] == "evaluation"]
    assert evals[-1] < evals[0]
    answers_after = generate(run.model, tokenizer, prompts, Decoding(max_new_tokens=4))
    assert set(answers_after) <= labels  # it learned the format: a topic and then EOS


def test_events_arrive_in_order_and_match_metrics_jsonl(tiny, ticket_split):
    model, tokenizer = tiny
    seen = []
    run = train(model, tokenizer, *ticket_split, hyperparameters=quick(), start=False)
    run.add_callback("*", lambda e: seen.append(e["event"]))
    run.start().wait()
    assert run.status == "finished", run.error
    assert seen[0] == "started" and seen[-1] == "finished"
    assert seen[1:3] == ["evaluation", "samples"]  # the base model's validation loss first
    assert seen.count("step") == 6
    assert seen.count("checkpoint") == 2  # steps 3 and 6
    step_numbers = [e["step"] for e in run.events if e["event"] == "step"]
    assert step_numbers == [1, 2, 3, 4, 5, 6]
    first_step = seen.index("step")
    assert seen.index("checkpoint") > first_step
    lines = (run.run_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["event"] for line in lines] == seen
    step = next(e for e in run.events if e["event"] == "step" and e["step"] == 2)
    assert step["tokens_seen"] > 0 and step["tokens_per_second"] > 0
    assert step["learning_rate"] > 0 and step["grad_norm"] is not None


def test_run_directory_holds_what_reproduces_the_run(tiny, ticket_split, tiny_model_dir):
    model, tokenizer = tiny
    run = train(model, tokenizer, *ticket_split, hyperparameters=quick()).wait()
    assert run.status == "finished", run.error
    folder = run.run_dir
    config = yaml.safe_load((folder / "config.yaml").read_text())
    assert config["method"]["kind"] == "lora"
    assert config["model"] == str(tiny_model_dir) and config["quantization"] is None
    assert config["hyperparameters"]["max_steps"] == 6
    assert config["template"]["name"] == "alpaca"
    assert config["data"]["rows"] == {"train": 48, "validation": 8}
    assert len((folder / "data" / "train.jsonl").read_text().splitlines()) == 48
    assert (folder / "adapter" / "adapter_model.safetensors").is_file()
    assert (folder / "report.html").read_text().count("plotly") > 0
    samples = [json.loads(x) for x in (folder / "samples.jsonl").read_text().splitlines()]
    assert [s["step"] for s in samples] == [0, 3, 6]
    assert all(len(s["samples"]) == 3 for s in samples)
    assert [p.name for p in complete_checkpoints(folder)] == ["checkpoint-3", "checkpoint-6"]
    assert json.loads((folder / "status.json").read_text())["status"] == "finished"
    assert not list(folder.glob(".*tmp*"))  # no temporary leftovers


def test_stop_then_resume_gives_the_same_losses_as_an_uninterrupted_run(
    tiny_model_dir, ticket_split
):
    settings = quick(max_steps=8, eval_every=4)
    model, tokenizer = workbench.load_model(str(tiny_model_dir))
    reference = train(model, tokenizer, *ticket_split, hyperparameters=settings).wait()
    assert reference.status == "finished", reference.error

    model, tokenizer = workbench.load_model(str(tiny_model_dir))
    run = train(model, tokenizer, *ticket_split, hyperparameters=settings, start=False)
    run.add_callback("step", lambda e: run.stop() if e["step"] == 2 else None)
    run.start().wait()
    assert run.status == "stopped"
    stopped = next(e for e in run.events if e["event"] == "stopped")
    assert stopped["step"] == 3  # stops at the end of the next step, with a checkpoint
    assert stopped["checkpoint"].endswith("checkpoint-3")
    run.resume().wait()
    assert run.status == "finished", run.error
    assert run.losses == pytest.approx(reference.losses, rel=1e-5)
    assert len(run.losses) == 8


def test_resume_from_a_run_directory_with_a_fresh_model(tiny_model_dir, ticket_split):
    settings = quick(max_steps=6, eval_every=3)
    model, tokenizer = workbench.load_model(str(tiny_model_dir))
    reference = train(model, tokenizer, *ticket_split, hyperparameters=settings).wait()

    model, tokenizer = workbench.load_model(str(tiny_model_dir))
    first = train(model, tokenizer, *ticket_split, hyperparameters=settings, start=False)
    first.add_callback("step", lambda e: first.stop() if e["step"] == 2 else None)
    first.start().wait()
    fresh_model, fresh_tokenizer = workbench.load_model(str(tiny_model_dir))
    resumed = resume(first.run_dir, fresh_model, fresh_tokenizer).wait()
    assert resumed.status == "finished", resumed.error
    assert resumed.losses == pytest.approx(reference.losses[3:], rel=1e-5)


def _nan_after(model, calls: int):
    """Make the model's logits NaN from the `calls`-th training forward pass on (the loss is
    computed from the logits outside the model)."""
    count = {"n": 0}

    def hook(module, args, output):
        if module.training:
            count["n"] += 1
            if count["n"] >= calls:
                output.logits = output.logits * float("nan")
        return output

    return model.register_forward_hook(hook)


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tiny, ticket_split):
    model, tokenizer = tiny
    _nan_after(model, calls=5)
    run = train(
        model,
        tokenizer,
        *ticket_split,
        method=Method(kind="full"),
        hyperparameters=quick(max_steps=8, eval_every=2),
    ).wait()
    assert run.status == "failed"
    assert "nan" in run.error.lower() and "step 5" in run.error
    assert "checkpoint-4" in run.error
    assert [p.name for p in complete_checkpoints(run.run_dir)] == ["checkpoint-2", "checkpoint-4"]
    assert not (run.run_dir / "checkpoints" / "checkpoint-6").exists()
    assert not (run.run_dir / "model").exists()
    assert math.isnan(run.losses[-1]) and len(run.losses) == 5
    assert run.events[-1]["event"] == "failed"


def test_out_of_memory_fails_with_concrete_advice(tiny, ticket_split, monkeypatch):
    from transformers import Trainer

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(Trainer, "training_step", out_of_memory)
    model, tokenizer = tiny
    run = train(model, tokenizer, *ticket_split, hyperparameters=quick()).wait()
    assert run.status == "failed"
    for advice in ("batch_size", "max_length", "gradient_checkpointing", "4bit"):
        assert advice in run.error
    assert run.events[-1]["event"] == "failed"


def test_a_crash_while_saving_never_leaves_a_checkpoint_marked_complete(
    tiny, ticket_split, monkeypatch
):
    from transformers import Trainer

    original = Trainer._save_checkpoint

    def crash_on_second_save(self, *args, **kwargs):
        if self.state.global_step < 4:
            return original(self, *args, **kwargs)
        folder = Path(self.args.output_dir) / f"checkpoint-{self.state.global_step}"
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(b"half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Trainer, "_save_checkpoint", crash_on_second_save)
    model, tokenizer = tiny
    run = train(model, tokenizer, *ticket_split, hyperparameters=quick(eval_every=2)).wait()
    assert run.status == "failed" and run.error.startswith("Disk full at")
    assert "No space left" in run.error and "checkpoint-2" in run.error
    # the half-written checkpoint can never be resumed from: the failure cleans it up
    assert not (run.run_dir / "checkpoints" / "checkpoint-4").exists()
    assert [p.name for p in complete_checkpoints(run.run_dir)] == ["checkpoint-2"]
    monkeypatch.setattr(Trainer, "_save_checkpoint", original)
    run.resume().wait()  # continues from checkpoint-2, not from the half-written one
    assert run.status == "finished", run.error
    resumed = next(e for e in run.events if e["event"] == "started" and e["step"] > 0)
    assert resumed["step"] == 2


def test_ctrl_c_in_wait_stops_cleanly_with_a_checkpoint(tiny, ticket_split):
    import signal
    import threading

    model, tokenizer = tiny
    settings = quick(max_steps=50, eval_every=40)
    run = train(model, tokenizer, *ticket_split, hyperparameters=settings, start=False)
    main = threading.main_thread().ident
    # a real Ctrl-C: SIGINT to the main thread while it waits, after the first step
    run.add_callback(
        "step", lambda e: signal.pthread_kill(main, signal.SIGINT) if e["step"] == 1 else None
    )
    with pytest.raises(KeyboardInterrupt):
        run.start().wait()
    assert run.status == "stopped"  # wait() returned only once the run had stopped
    assert complete_checkpoints(run.run_dir)
    assert 1 <= len(run.losses) < 50


def test_refuses_to_train_when_no_row_has_a_token_to_learn(tiny, ticket_split):
    model, tokenizer = tiny
    with pytest.raises(AllLabelsMaskedError, match="max_length"):
        train(model, tokenizer, ticket_split[0], hyperparameters=quick(max_length=8))


def test_early_stopping_ends_the_run_before_max_steps(tiny, ticket_split):
    model, tokenizer = tiny
    # A tiny learning rate: validation loss barely moves, so patience 1 runs out quickly.
    run = train(
        model,
        tokenizer,
        *ticket_split,
        method=Method(kind="full"),
        hyperparameters=quick(
            max_steps=40, eval_every=2, learning_rate=1e-9, early_stopping_patience=1
        ),
    ).wait()
    assert run.status == "finished", run.error
    assert len(run.losses) < 40


@pytest.mark.embedded
def test_a_few_lora_steps_on_the_real_embedded_model(ticket_split):
    model, tokenizer = workbench.load_model()
    train_rows, validation = ticket_split
    run = train(
        model,
        tokenizer,
        train_rows.select(range(8)),
        validation.select(range(2)),
        hyperparameters=Hyperparameters(
            max_steps=2, batch_size=4, eval_every=2, sample_max_new_tokens=3
        ),
        samples=1,
    ).wait()
    assert run.status == "finished", run.error
    assert len(run.losses) == 2 and all(math.isfinite(x) for x in run.losses)
    assert (run.run_dir / "adapter" / "adapter_model.safetensors").is_file()
    assert 0 < run.parameters.share < 0.05


@pytest.mark.training
def test_qlora_trains_adapters_on_a_4bit_base_and_records_it(
    tmp_path, tiny_tokenizer, ticket_split
):
    # bitsandbytes quantises in blocks of 64 values: layers need at least that many outputs
    build_tiny_model(tiny_tokenizer, hidden=256).save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    with pytest.warns(UserWarning, match="slow"):  # 4-bit on a CPU works, and says it is slow
        model, tokenizer = workbench.load_model(str(tmp_path), quantization="4bit")
    assert model.is_loaded_in_4bit
    with pytest.raises(workbench.WorkbenchError, match="qlora"):
        train(model, tokenizer, *ticket_split, method=Method(kind="lora"), hyperparameters=quick())
    run = train(
        model,
        tokenizer,
        *ticket_split,
        method=Method(kind="qlora", r=4),
        hyperparameters=quick(max_steps=2, eval_every=2),
    ).wait()
    assert run.status == "finished", run.error
    assert all(math.isfinite(x) for x in run.losses)
    config = yaml.safe_load((run.run_dir / "config.yaml").read_text())
    assert config["quantization"] == "4bit" and config["method"]["kind"] == "qlora"


def test_tokens_per_second_times_training_steps_not_evaluation_pauses(
    tiny, ticket_split, monkeypatch
):
    import workbench.runs.bridge
    import workbench.runs.run

    clock = {"now": 0.0}

    def fake_perf_counter() -> float:
        clock["now"] += 1.0  # every reading is one "second" later
        return clock["now"]

    def slow_generate(*args, **kwargs):
        clock["now"] += 1000.0  # sample answers take "1000 s"
        return generate(*args, **kwargs)

    monkeypatch.setattr(workbench.runs.run.time, "perf_counter", fake_perf_counter)
    monkeypatch.setattr(workbench.runs.bridge, "generate", slow_generate)
    model, tokenizer = tiny
    run = train(model, tokenizer, *ticket_split, hyperparameters=quick(eval_every=2)).wait()
    assert run.status == "finished", run.error
    speeds = [e["tokens_per_second"] for e in run.events if e["event"] == "step"]
    assert all(s is not None for s in speeds)
    assert max(speeds) / min(speeds) < 5  # steps 3 and 5 follow evaluations, yet are not slower


def test_evaluations_carry_exact_match_over_the_first_validation_rows(tiny, ticket_split):
    model, tokenizer = tiny
    run = train(model, tokenizer, *ticket_split, hyperparameters=quick(eval_metric_rows=0)).wait()
    evaluations = [e for e in run.events if e["event"] == "evaluation"]
    assert [e["exact_match"] for e in evaluations] == [None, None, None]  # turned off
    assert [len(e["samples"]) for e in run.events if e["event"] == "samples"] == [3, 3, 3]
    run = train(
        run.model, tokenizer, *ticket_split, hyperparameters=quick(eval_metric_rows=100)
    ).wait()
    evaluations = [e for e in run.events if e["event"] == "evaluation"]
    assert [e["scored_rows"] for e in evaluations] == [8, 8, 8]  # all 8 validation rows
    with pytest.raises(workbench.WorkbenchError, match="eval_metric_rows"):
        Hyperparameters(eval_metric_rows=-1)


def test_tensorboard_logs_the_run_inside_its_run_directory(tiny, ticket_split):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model, tokenizer = tiny
    settings = quick(max_steps=2, eval_every=2, report_to="tensorboard")
    run = train(model, tokenizer, *ticket_split, hyperparameters=settings).wait()
    assert run.status == "finished", run.error
    files = list((run.run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert len(files) == 1
    assert not list((run.run_dir / "checkpoints").glob("runs"))  # not transformers' default
    events = EventAccumulator(str(files[0]))
    events.Reload()
    losses = [point.value for point in events.Scalars("train/loss")]
    assert losses == pytest.approx(run.losses, rel=1e-4)


def test_a_one_step_run_learns_and_a_short_epochs_plan_warns_with_its_step_count(
    tiny, tiny_model_dir, ticket_split
):
    model, tokenizer = tiny
    rows, _ = ticket_split
    one = train(model, tokenizer, rows, hyperparameters=quick(max_steps=1, eval_every=1)).wait()
    (step,) = [e for e in one.events if e["event"] == "step"]
    assert step["learning_rate"] > 0  # warmup (0.05 of 1 step, rounded up) took the whole run
    settings = Hyperparameters(batch_size=8, gradient_accumulation=2, eval_every=100)
    model, tokenizer = workbench.load_model(str(tiny_model_dir))
    with pytest.warns(UserWarning, match=r"over 48 training rows .* makes only 3 optimizer step"):
        run = train(model, tokenizer, rows, hyperparameters=settings, start=False).start()
    run.wait()
    started = next(e for e in run.events if e["event"] == "started")
    assert started["max_steps"] == settings.optimizer_steps(48) == 3  # as the Trainer counts
