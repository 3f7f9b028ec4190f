"""Predicted against measured peak training memory, for shapes, methods, batches and lengths.

    python -m benchmarks.memory --device cuda --shapes smollm2-135m,llama-1b \\
        --methods lora,qlora,full --batches 8x512,16x256

Each configuration trains a few steps with `workbench.train` in its own process, on rows that
are all exactly `max_length` tokens (so the prediction's batch x length is the batch trained),
and reports the measured peak next to `workbench.estimate_memory`'s prediction, term by term.
`--shapes embedded` trains the real embedded model on the demo's rows of the support tickets
instead, packed as they come (rows of varying length): the prediction is the one `train()`
makes before it starts.
On a GPU the measured peak is the process's device memory at its highest: PyTorch's peak
reserved memory plus the CUDA context (device memory in use that PyTorch did not allocate); on
a CPU it is the process's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.workloads import WORDS, config_for, tokenizer_dir, write_rows


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cuda")
    p.add_argument("--shapes", default="smollm2-135m")
    p.add_argument("--methods", default="lora,qlora,full")
    p.add_argument("--batches", default="8x512", help="comma-separated BATCHxLENGTH")
    p.add_argument("--prompt-fraction", type=float, default=0.5)
    p.add_argument("--tokenizer-dir", default=None)
    p.add_argument("--models-dir", default=None, help="where random models are saved")
    p.add_argument("--out", default=None)
    p.add_argument(
        "--rescore",
        nargs="*",
        help="results JSON files: predict them again with the "
        "current estimator and print the table (no training)",
    )
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def saved_model(args, shape: str) -> Path:
    """A random-weight model of `shape` saved as safetensors (bf16), with the tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(args.models_dir) / shape
    if (folder / "config.json").is_file():
        return folder
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(
        config_for(shape, tokenizer_dir(args.tokenizer_dir)), dtype=torch.bfloat16
    )
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tokenizer_dir(args.tokenizer_dir)).save_pretrained(folder)
    return folder


def fixed_length_rows(tokenizer, count: int, length: int, prompt_fraction: float) -> list[dict]:
    """Rows whose prompt is about `prompt_fraction` of `length` tokens and whose response fills
    the rest (cut at `length` by truncation)."""
    import random

    rng = random.Random(0)
    prompt_words = max(1, int(length * prompt_fraction * 0.6))
    return [
        {
            "instruction": " ".join(rng.choice(WORDS) for _ in range(prompt_words)),
            "input": "",
            "output": " ".join(rng.choice(WORDS) for _ in range(length)),
            "task": "memory",
        }
        for _ in range(count)
    ]


def demo_training_rows():
    """The demo's training rows of the support tickets (48 held out, 16 for validation)."""
    from benchmarks.workloads import SAMPLE_DATA
    from workbench.data.loading import load_data
    from workbench.data.splits import split_data

    data = load_data(SAMPLE_DATA / "support_tickets.jsonl", verbose=False)
    rest, _held_out = split_data(data, 48, seed=0)
    return split_data(rest, 16, seed=0)[0]


def current_rss_gib() -> float | None:
    """The process's resident memory now (Linux), in GiB."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None
    kib = next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))
    return int(kib) / 2**20


def run_child(args) -> dict:
    import torch

    from workbench.data.loading import load_data
    from workbench.model.loading import load_model
    from workbench.model.memory import estimate_memory
    from workbench.model.methods import Method
    from workbench.runs.fitting import row_statistics
    from workbench.runs.hyperparameters import Hyperparameters
    from workbench.tokens.tokenizing import tokenize_examples
    from workbench.training.finetune import train

    shape, kind, batch = args.child.split(":")
    batch_size, length = (int(x) for x in batch.split("x"))
    quantization = "4bit" if kind == "qlora" else None
    stages = {"imported": current_rss_gib()}  # CPU: where the process's memory goes
    if shape == "embedded":  # the real model on the demo's training rows, packed as they come
        model, tokenizer = load_model(device=args.device, quantization=quantization)
        data = demo_training_rows()
    else:
        folder = saved_model(args, shape)
        model, tokenizer = load_model(str(folder), device=args.device, quantization=quantization)
        rows = fixed_length_rows(tokenizer, batch_size * 4, length, args.prompt_fraction)
        data = load_data(write_rows(rows, Path(tempfile.mkdtemp()) / "rows.jsonl"), verbose=False)
    stages["loaded"] = current_rss_gib()
    method = Method(kind=kind)
    hp = Hyperparameters(
        batch_size=batch_size,
        max_length=length,
        max_steps=3,
        eval_every=10**6,
        learning_rate=2e-5 if kind == "full" else 2e-4,
    )
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    run = train(model, tokenizer, data, None, method=method, hyperparameters=hp, samples=0)
    run.wait()
    if run.status != "finished":
        raise RuntimeError(f"{args.child}: {run.status}: {run.error}")
    lengths, response = row_statistics(
        tokenize_examples(data, "alpaca", tokenizer, max_length=length)
    )
    result = {"config": args.child, "shape": shape, "method": kind, "response_fraction": response}
    result["device"] = args.device
    result["lora_dropout"] = method.dropout
    result["row_tokens"] = sum(lengths) / len(lengths)  # packed rows: the mean length
    result["batch_size"], result["max_length"] = batch_size, length
    if args.device == "cuda":
        free, total = torch.cuda.mem_get_info()
        reserved = torch.cuda.memory_reserved()
        result["context_gib"] = (total - free - reserved) / 2**30
        result["peak_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30
        result["peak_reserved_gib"] = torch.cuda.max_memory_reserved() / 2**30
        result["measured_gib"] = result["peak_reserved_gib"] + result["context_gib"]
    else:
        import resource

        result["measured_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        result["rss_gib"] = {**stages, "trained": current_rss_gib()}
    estimate = estimate_memory(
        model.config,
        method,
        batch_size=batch_size,
        seq_length=round(result["row_tokens"]),
        dtype_bytes=2 if args.device == "cuda" else 4,
        device=args.device,
        response_fraction=response,
    )
    if run.fit is not None:  # what train() itself predicted before starting: the same call
        assert run.fit.estimate.total == estimate.total, (run.fit.estimate, estimate)
    result["predicted_gib"] = estimate.total / 2**30
    result["predicted_terms_gib"] = {k: v / 2**30 for k, v in estimate.terms().items()}
    result["error"] = result["predicted_gib"] / result["measured_gib"] - 1
    return result


def rescore(args, paths: list[str]) -> list[dict]:
    """The measured peaks of earlier runs against what the estimator predicts now."""
    from transformers import AutoConfig

    from workbench.model.memory import estimate_memory
    from workbench.model.methods import Method

    rows = []
    for path in paths:
        for r in json.loads(Path(path).read_text()):
            if "measured_gib" not in r:
                continue
            shape, kind, batch = r["config"].split(":")
            batch_size, length = (int(x) for x in batch.split("x"))
            device = r.get("device", "cuda")  # the first results were all from a GPU
            directory = tokenizer_dir(args.tokenizer_dir)
            estimate = estimate_memory(
                AutoConfig.from_pretrained(directory)
                if shape == "embedded"
                else config_for(shape, directory),
                # runs before the field existed used dropout 0.05, the default until 2026-11-23
                Method(kind=kind, dropout=r.get("lora_dropout", 0.05)),
                batch_size=batch_size,
                seq_length=round(r.get("row_tokens", length)),
                dtype_bytes=2 if device == "cuda" else 4,
                device=device,
                response_fraction=r["response_fraction"],
            )
            predicted = estimate.total / 2**30
            rows.append(
                {**r, "predicted_gib": predicted, "error": predicted / r["measured_gib"] - 1}
            )
    print("| shape | method | batch x length | measured GiB | predicted GiB | error |")
    print("| --- | --- | --- | ---: | ---: | ---: |")
    for r in rows:
        shape, kind, batch = r["config"].split(":")
        print(
            f"| {shape} | {kind} | {batch} | {r['measured_gib']:.2f} | {r['predicted_gib']:.2f} "
            f"| {r['error']:+.1%} |"
        )
    worst = max(abs(r["error"]) for r in rows)
    print(f"\n{len(rows)} configurations, largest error {worst:.1%}")
    return rows


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.rescore:
        rescore(args, args.rescore)
        return
    if args.models_dir is None:
        args.models_dir = tempfile.mkdtemp(prefix="bench-models-")
    if args.child:
        print(json.dumps(run_child(args)), flush=True)
        return
    results = []
    for shape in args.shapes.split(","):
        if shape != "embedded":  # here, so that no child's peak includes building the model
            saved_model(args, shape)
        for kind in args.methods.split(","):
            for batch in args.batches.split(","):
                config = f"{shape}:{kind}:{batch}"
                command = [
                    sys.executable, "-m", "benchmarks.memory", *sys.argv[1:],
                    "--models-dir", args.models_dir, "--child", config,
                ]  # fmt: skip
                started = time.perf_counter()
                done = subprocess.run(command, capture_output=True, text=True)
                lines = [x for x in done.stdout.splitlines() if x.startswith("{")]
                if done.returncode or not lines:
                    tail = (done.stderr or done.stdout)[-1200:]
                    print(f"[{config}] failed:\n{tail}", file=sys.stderr, flush=True)
                    results.append({"config": config, "failed": tail})
                    continue
                result = json.loads(lines[-1])
                result["process_s"] = time.perf_counter() - started
                print(
                    f"[{config}] measured {result['measured_gib']:.2f} GiB, predicted "
                    f"{result['predicted_gib']:.2f} GiB ({result['error']:+.1%})",
                    file=sys.stderr,
                    flush=True,
                )
                results.append(result)
                if args.out:
                    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
