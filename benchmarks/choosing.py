"""Prompting a model against fine-tuning one: quality, latency, tokens and cost on the CPU.

    OMP_NUM_THREADS=1 flock /tmp/wb-measure.lock python -m benchmarks.choosing

On the support tickets (`--held-out` rows that every candidate answers; the rest to train on
and to take examples from), `workbench.experiments.choosing.compare_models` measures: the
embedded model zero-shot and with `--shots` fixed examples; the same model after a short LoRA
run (`--steps`), with the adapter on top of the weights and merged into them as it is served;
and a tiny local model (random weights from a config, saved to a folder and loaded by path as a
hub model would be, then fully fine-tuned for `--tiny-steps`). The fine-tuned candidates load
from their run directories. The prices are illustrative, set on the command line; the JSON
keeps ms per answer and tokens per query, from which any other price follows.
Writes `benchmarks/results/<date>-cpu-choosing.json` (date, device, threads, every setting).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from benchmarks.training import environment
from benchmarks.workloads import tiny_model_folder

LABELS = ["billing", "shipping", "technical", "account"]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="sample_data/support_tickets.jsonl")
    p.add_argument("--held-out", type=int, default=50, help="rows every candidate answers")
    p.add_argument("--validation", type=int, default=16, help="rows the runs evaluate on")
    p.add_argument("--shots", type=int, default=4, help="fixed examples before each question")
    p.add_argument("--steps", type=int, default=24, help="LoRA steps on the embedded model")
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--learning-rate", type=float, default=3e-4)
    p.add_argument("--train-batch-size", type=int, default=8)
    p.add_argument("--tiny-layers", type=int, default=4)
    p.add_argument("--tiny-hidden", type=int, default=64)
    p.add_argument("--tiny-steps", type=int, default=150, help="full fine-tuning steps, tiny")
    p.add_argument("--tiny-learning-rate", type=float, default=3e-3)
    p.add_argument("--batch-size", type=int, default=8, help="answers generated together")
    p.add_argument("--max-new-tokens", type=int, default=6)
    p.add_argument("--warmup", type=int, default=1, help="untimed batches per candidate")
    p.add_argument("--price-per-million-input-tokens", type=float, default=0.10)
    p.add_argument("--price-per-million-output-tokens", type=float, default=0.40)
    p.add_argument("--price-per-device-hour", type=float, default=0.05, help="e.g. a CPU core")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="default: benchmarks/results/DATE-cpu-choosing")
    return p.parse_args(argv)


def fine_tune(model, tokenizer, train, validation, run_dir: Path, method, steps, lr, args):
    """A finished run in `run_dir` (through the workbench's Run), and its seconds."""
    import workbench as wb

    started = time.perf_counter()
    hyperparameters = wb.Hyperparameters(
        max_steps=steps,
        batch_size=args.train_batch_size,
        learning_rate=lr,
        eval_every=steps,
        eval_metric_rows=0,
        seed=args.seed,
    )
    run = wb.train(
        model,
        tokenizer,
        train,
        validation,
        template="alpaca",
        method=method,
        hyperparameters=hyperparameters,
        run_dir=run_dir,
        samples=0,
    ).wait()
    if run.status != "finished":
        raise RuntimeError(f"{run_dir.name} ended {run.status}: {run.error}")
    return time.perf_counter() - started


def main(argv=None) -> None:
    import pandas
    import torch

    import workbench as wb
    from workbench.experiments.choosing import Candidate, Prices, compare_models

    args = parse_args(argv)
    prices = Prices(
        price_per_million_input_tokens=args.price_per_million_input_tokens,
        price_per_million_output_tokens=args.price_per_million_output_tokens,
        price_per_device_hour=args.price_per_device_hour,
    )
    tickets = wb.load_data(args.data, verbose=False)
    rest, held_out = wb.split_data(tickets, args.held_out, seed=args.seed)
    train, validation = wb.split_data(rest, args.validation, seed=args.seed)
    decoding = wb.Decoding(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    training_s = {}
    with tempfile.TemporaryDirectory(prefix="choosing-") as scratch:
        scratch = Path(scratch)
        model, tokenizer = wb.load_model(device="cpu")
        lora_dir = scratch / "lora"
        method = wb.Method(kind="lora", r=args.lora_r)
        training_s["lora"] = fine_tune(
            model, tokenizer, train, validation, lora_dir, method, args.steps,
            args.learning_rate, args,
        )  # fmt: skip
        del model
        tiny = tiny_model_folder(
            scratch / "tiny", tokenizer, layers=args.tiny_layers, hidden=args.tiny_hidden,
            intermediate=4 * args.tiny_hidden, kv_heads=4,
        )  # fmt: skip
        tiny_model, tiny_tokenizer = wb.load_model(str(tiny), device="cpu")
        tiny_dir = scratch / "tiny-run"
        training_s["tiny"] = fine_tune(
            tiny_model, tiny_tokenizer, train, validation, tiny_dir, wb.Method(kind="full"),
            args.tiny_steps, args.tiny_learning_rate, args,
        )  # fmt: skip
        del tiny_model
        tiny_params = f"{args.tiny_layers} layers, hidden {args.tiny_hidden}"
        candidates = [
            Candidate("135M zero-shot"),
            Candidate(f"135M {args.shots}-shot fixed", shots=args.shots),
            Candidate(f"135M LoRA ({args.steps} steps)", fine_tuned=lora_dir),
            Candidate(f"135M LoRA ({args.steps} steps), merged", fine_tuned=lora_dir, merge=True),
            Candidate(
                f"tiny ({tiny_params}), full FT ({args.tiny_steps} steps)", fine_tuned=tiny_dir
            ),
        ]
        started = time.perf_counter()
        table = compare_models(
            candidates,
            held_out,
            train,
            "alpaca",
            prices=prices,
            metrics=["label_accuracy"],
            labels=LABELS,
            decoding=decoding,
            warmup=args.warmup,
            seed=args.seed,
        )
        measuring_s = time.perf_counter() - started
    report = {
        "environment": {**environment(argparse.Namespace(device="cpu"))},
        "settings": vars(args),
        "split": {"train": len(train), "validation": len(validation), "held_out": len(held_out)},
        "torch_threads": torch.get_num_threads(),
        "training_s": training_s,
        "measuring_s": measuring_s,
        "attrs": table.attrs,
        "table": table.reset_index().to_dict(orient="records"),
    }
    date = report["environment"]["date"]
    out = Path(args.out or f"benchmarks/results/{date}-cpu-choosing.json")
    out.write_text(json.dumps(report, indent=1, default=str) + "\n")
    with pandas.option_context("display.width", 250, "display.max_columns", 20):
        print(table.round(4).to_string())
    print(
        f"training {training_s}, measuring {measuring_s:.0f} s, threads {torch.get_num_threads()}"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
