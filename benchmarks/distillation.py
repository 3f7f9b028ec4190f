"""Teacher -> student on the embedded model: held-out accuracy, parameters, latency per answer.

    OMP_NUM_THREADS=1 flock /tmp/wb-measure.lock python -m benchmarks.distillation
    OMP_NUM_THREADS=1 python -m benchmarks.distillation --quick   # tiny random model, ~1 min

The teacher is the embedded SmolLM2-135M fine-tuned with LoRA on `ticket_topic` (the support
tickets), its adapter merged. Two students are made from it by `student_from_teacher`, keeping
`--keep-layers` of its 30 layers (spread evenly, first and last kept); both are fully fine-tuned
for the same steps on the same rows with the same settings, one on the labels alone (alpha 0) and
one distilled (`--alpha`, `--temperature`). Each model answers the held-out rows (greedy, label
accuracy over the four topics) and then answers `--latency-rows` of them one at a time, timed.
Writes `benchmarks/results/<date>-cpu-distillation.json` (date, device, threads, every setting);
`--quick` writes nothing unless `--out` is given.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

LABELS = ["billing", "shipping", "technical", "account"]
DATA = Path(__file__).resolve().parent.parent / "sample_data" / "support_tickets.jsonl"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="a tiny random model, a few steps")
    p.add_argument("--held-out", type=int, default=64, help="rows scored (never trained on)")
    p.add_argument("--validation", type=int, default=16, help="rows for the validation loss")
    p.add_argument("--teacher-steps", type=int, default=28, help="LoRA steps of the teacher")
    p.add_argument("--teacher-lr", type=float, default=3e-4)
    p.add_argument("--student-steps", type=int, default=32, help="steps of each student")
    p.add_argument("--student-lr", type=float, default=1e-4, help="full fine-tuning rate")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--keep-layers", type=int, default=15, help="of the teacher's layers")
    p.add_argument("--alpha", type=float, default=0.5, help="share of the teacher's term")
    p.add_argument("--temperature", type=float, default=2.0)
    p.add_argument("--latency-rows", type=int, default=16, help="answers timed one at a time")
    p.add_argument("--max-new-tokens", type=int, default=4, help="a topic is 1-2 tokens + EOS")
    p.add_argument("--out", default=None, help="default: benchmarks/results/<date>-cpu-...")
    args = p.parse_args(argv)
    if args.quick:
        args.held_out, args.validation, args.teacher_steps, args.student_steps = 8, 4, 3, 3
        args.keep_layers, args.latency_rows, args.batch_size = 2, 4, 4
    return args


def load_models(args):
    """(model, tokenizer): the embedded model, or with --quick a 4-layer random Llama that
    borrows its tokenizer."""
    import workbench

    model, tokenizer = workbench.load_model()
    if not args.quick:
        return model, tokenizer
    from benchmarks.workloads import tiny_llama

    return tiny_llama(tokenizer, layers=4, hidden=64), tokenizer


def measure(name: str, model, tokenizer, held_out, args, seconds: float | None) -> dict:
    """Held-out accuracy and loss, parameters, and the median time of one answer."""
    import workbench
    from workbench.model.methods import count_parameters

    decoding = workbench.Decoding(max_new_tokens=args.max_new_tokens, batch_size=16)
    scores = workbench.evaluate_model(
        model,
        tokenizer,
        held_out,
        "alpaca",
        metrics=["label_accuracy"],
        labels=LABELS,
        decoding=decoding,
    ).scores
    single = workbench.Decoding(max_new_tokens=args.max_new_tokens, batch_size=1)
    template = workbench.get_template("alpaca")
    prompts = [template.render_prompt(r, tokenizer) for r in held_out.rows[: args.latency_rows]]
    workbench.generate(model, tokenizer, prompts[:1], single)  # warm-up, not timed
    times, lengths = [], []
    for prompt in prompts:
        started = time.perf_counter()
        (answer,) = workbench.generate(model, tokenizer, [prompt], single)
        times.append(1000 * (time.perf_counter() - started))
        lengths.append(len(tokenizer(answer, add_special_tokens=False)["input_ids"]))
    row = {
        "model": name,
        "accuracy": scores["accuracy"],
        "validation_loss": scores["validation_loss"],
        "parameters": count_parameters(model).total,
        "layers": model.config.num_hidden_layers,
        "latency_ms_median": statistics.median(times),
        "latency_ms_mean": statistics.fmean(times),
        "answer_tokens_mean": statistics.fmean(lengths),  # a longer answer takes longer
        "train_s": seconds,
    }
    print(
        f"{name}: accuracy {row['accuracy']:.3f}, {row['parameters'] / 1e6:.1f}M parameters, "
        f"{row['latency_ms_median']:.0f} ms per answer"
        + (f", trained in {seconds:.0f} s" if seconds is not None else "")
    )
    return row


def hyperparameters(steps: int, learning_rate: float, args):
    import workbench

    return workbench.Hyperparameters(
        max_steps=steps,
        learning_rate=learning_rate,
        batch_size=args.batch_size,
        eval_every=steps,  # validation loss at the start and the end only
        sample_max_new_tokens=args.max_new_tokens,
        keep_checkpoints=1,
    )


def run_all(args, runs: Path) -> dict:
    import torch

    import workbench
    from workbench.training.distillation import distill, student_from_teacher

    data = workbench.load_data(DATA, verbose=False)
    rest, held_out = workbench.split_data(data, args.held_out, seed=0)
    train_rows, validation = workbench.split_data(rest, args.validation, seed=0)
    rows, seconds = [], {}

    started = time.perf_counter()
    model, tokenizer = load_models(args)
    teacher_run = workbench.train(
        model,
        tokenizer,
        train_rows,
        validation,
        template="alpaca",
        method=workbench.Method(kind="lora", r=16),
        hyperparameters=hyperparameters(args.teacher_steps, args.teacher_lr, args),
        run_dir=runs / "teacher",
        samples=1,
    ).wait()
    assert teacher_run.status == "finished", teacher_run.error
    teacher = teacher_run.model.merge_and_unload()
    seconds["teacher"] = time.perf_counter() - started
    rows.append(
        measure("teacher (LoRA, merged)", teacher, tokenizer, held_out, args, seconds["teacher"])
    )
    untrained = student_from_teacher(teacher, args.keep_layers)
    rows.append(measure("student before training", untrained, tokenizer, held_out, args, None))
    del untrained

    student_hp = hyperparameters(args.student_steps, args.student_lr, args)
    full = workbench.Method(kind="full", dropout=0.0)
    for name, alpha in (("student, labels alone", 0.0), ("student, distilled", args.alpha)):
        started = time.perf_counter()
        student = student_from_teacher(teacher, args.keep_layers)
        run = distill(
            teacher,
            student,
            tokenizer,
            train_rows,
            validation,
            alpha=alpha,  # 0: the teacher's term weighs nothing, the labels alone train it
            temperature=args.temperature,
            method=full,
            hyperparameters=student_hp,
            template="alpaca",
            run_dir=runs / name.split(", ")[1].replace(" ", "-"),
            samples=1,
        ).wait()
        assert run.status == "finished", run.error
        seconds[name] = time.perf_counter() - started
        rows.append(measure(name, run.model, tokenizer, held_out, args, seconds[name]))
        rows[-1]["final_train_loss"] = run.losses[-1]
        del student, run
    return {
        "environment": environment(),
        "settings": {
            **{k: v for k, v in vars(args).items() if k != "out"},
            "model": "tiny random Llama (4 layers)" if args.quick else workbench.DEFAULT_MODEL,
            "task": "ticket_topic",
            "data": str(DATA.relative_to(DATA.parent.parent)),
            "rows": {
                "train": len(train_rows),
                "validation": len(validation),
                "held_out": len(held_out),
            },
            "teacher_method": "LoRA r=16 alpha=32, merged",
            "student_method": "full, dropout 0",
            "labels_alone": "the same distill() run with alpha=0 (plain cross-entropy)",
            "template": "alpaca",
            "decoding": "greedy",
            "torch_threads": torch.get_num_threads(),
        },
        "results": rows,
    }


def environment() -> dict:
    import os
    import platform

    import torch
    import transformers

    return {
        "date": time.strftime("%Y-%m-%d"),
        "device": "cpu",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }


def table(results: dict) -> str:
    lines = [
        "| model | layers | parameters | held-out accuracy | validation loss | ms per answer |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in results["results"]:
        lines.append(
            f"| {r['model']} | {r['layers']} | {r['parameters'] / 1e6:.1f}M | "
            f"{r['accuracy']:.3f} | {r['validation_loss']:.3f} | {r['latency_ms_median']:.0f} |"
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    runs = Path(tempfile.mkdtemp(prefix="wb-distillation-"))
    try:
        results = run_all(args, runs)
    finally:  # full fine-tuning checkpoints hold the optimizer state: 2.6 GB a run
        shutil.rmtree(runs, ignore_errors=True)
    results["total_s"] = time.perf_counter() - started
    print(table(results))
    print(f"{results['total_s']:.0f} s in all, {results['environment']['torch_threads']} thread(s)")
    out = args.out
    if out is None and not args.quick:
        out = f"benchmarks/results/{results['environment']['date']}-cpu-distillation.json"
    if out:
        Path(out).write_text(json.dumps(results, indent=1) + "\n")
        print(f"written to {out}")


if __name__ == "__main__":
    main()
