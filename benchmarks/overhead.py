"""Where one training step's time goes, when the arithmetic is negligible: per-phase wall time.

    python -m benchmarks.overhead                        # CPU, deep-narrow shape, 3 repeats
    python -m benchmarks.overhead --device cuda --out benchmarks/results/DATE-cuda-overhead.json

On the `deep-narrow` shape (the 135M shape's 30 layers at hidden size 16, `workloads.py`) a step's
arithmetic is tiny, so what a step costs is the framework around it. Each stack (`workbench`,
`plain`: a bare PEFT loop over the workbench's batches and loss, `trl`: SFTTrainer's defaults)
and `workbench+stock-flops` (the workbench without a lever, to measure what it pays)
trains in its own process, `--repeats` times, interleaved: after `--warmup` steps, `--steps`
steps are timed phase by phase (`benchmarks/phases.py`: collation, forward, loss, backward,
gradient clipping, optimizer, scheduler, the Trainer's logging, its callbacks, the Run's events,
and the rest), then `--profiled` more steps run under cProfile (the Python side), torch.profiler
(the operators) and a counter of host-device syncs (`.item()`, `float(t)`, `.tolist()`,
`.cpu()` ... by the line that calls them). The arithmetic of a step (`workloads.step_flops`) is
printed beside its time. The table gives the median of the repeats and their range.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.phases import PHASES, PhaseTimer, SyncCounter
from benchmarks.training import StepClock, environment

STACKS = ("workbench", "plain", "trl")
LEVERS = ("stock-flops",)  # `workbench+stock-flops`: the workbench without that lever


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--shape", default="deep-narrow", help="a shape of benchmarks/workloads.py")
    p.add_argument("--stacks", default=",".join(STACKS), help=f"comma-separated: {STACKS}")
    p.add_argument("--repeats", type=int, default=3, help="processes per stack, interleaved")
    p.add_argument("--warmup", type=int, default=5, help="steps before the timed ones")
    p.add_argument("--steps", type=int, default=30, help="steps timed phase by phase")
    p.add_argument("--profiled", type=int, default=3, help="steps under the profilers after")
    p.add_argument("--batch-size", type=int, default=16, help="rows of ~90 tokens per step")
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--learning-rate", type=float, default=2e-4)
    p.add_argument("--tokenizer-dir", default=None, help="default: the embedded model's cache")
    p.add_argument("--out", default=None, help="write the results JSON here")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


class OverheadClock(StepClock):
    """Drives the timed window and the profiled steps from the optimizer's step count, and
    records each batch's layout (for its arithmetic) as the collator makes it."""

    def __init__(self, args, timer: PhaseTimer) -> None:
        super().__init__(args.device)
        self.args, self.timer, self.syncs = args, timer, SyncCounter()
        self.optimizer_steps, self.window, self.layouts = 0, [], []
        self.python_profile = self.operator_profile = None

    def collator(self, inner):
        def collate(features):
            self.timer.enter("collation")
            try:
                batch = inner(features)
            finally:
                self.timer.exit()
            ids = batch["input_ids"]
            kept = batch.get("logits_positions")
            self.layouts.append((tuple(ids.shape), kept.numel() if kept is not None else None))
            return batch

        return collate

    def on_optimizer_step(self, *_) -> None:
        """A global optimizer post-hook: opens and closes the timed window and the profilers."""
        self.optimizer_steps += 1
        n, a = self.optimizer_steps, self.args
        if n == a.warmup:
            self.sync()
            self.timer.reset()
            self.timer.measuring = True
            self.window = [time.perf_counter()]
        elif n == a.warmup + a.steps:
            self.sync()
            self.timer.measuring = False
            self.window.append(time.perf_counter())
            self._start_profilers()
        elif n == a.warmup + a.steps + a.profiled:
            self._stop_profilers()

    def _start_profilers(self) -> None:
        import cProfile

        import torch

        self.syncs.install()
        self.syncs.counting = True
        self.operator_profile = torch.profiler.profile(activities=self._activities())
        self.operator_profile.start()
        self.python_profile = cProfile.Profile()  # profiles this thread: the training one
        self.python_profile.enable()

    def _stop_profilers(self) -> None:
        self.python_profile.disable()
        self.sync()
        self.operator_profile.stop()
        self.syncs.counting = False

    def _activities(self):
        from torch.profiler import ProfilerActivity

        cuda = [ProfilerActivity.CUDA] if self.device == "cuda" else []
        return [ProfilerActivity.CPU, *cuda]


def _load(args):
    """The model and tokenizer: for `deep-narrow` the small tokenizer, so that the output
    layer is small too; other shapes as `benchmarks.training` loads them."""
    import torch
    from transformers import AutoModelForCausalLM

    from benchmarks import training
    from benchmarks.workloads import config_for, small_tokenizer, tokenizer_dir

    if args.shape != "deep-narrow":
        return training._load(args)
    tokenizer = small_tokenizer()
    torch.manual_seed(0)
    with torch.device(args.device):
        config = config_for(args.shape, tokenizer_dir(args.tokenizer_dir), tokenizer)
        model = AutoModelForCausalLM.from_config(config)
    return model.to(torch.bfloat16 if args.device == "cuda" else torch.float32), tokenizer


def _rows(args, tokenizer, folder: Path):
    """The training rows (enough for every step) and their token statistics."""
    from benchmarks.workloads import short_rows, write_rows
    from workbench.data.loading import load_data
    from workbench.tokens.tokenizing import tokenize_examples

    steps = args.warmup + args.steps + args.profiled + 2
    data = load_data(write_rows(short_rows(args.batch_size * steps), folder / "train.jsonl"))
    tokens = tokenize_examples(data, "alpaca", tokenizer, max_length=args.max_length)
    lengths = [len(e.input_ids) for e in tokens.examples]
    learned = [sum(label != -100 for label in e.labels[1:]) for e in tokens.examples]
    return data, lengths, learned


def _arithmetic(config, clock: OverheadClock, lengths, learned, rows: int) -> dict:
    """FLOPs per step: as executed (each batch's padded or packed rows, its logits) and the
    useful part (each example alone, logits for its learned tokens only)."""
    from benchmarks.workloads import step_flops

    executed = []
    for (n, width), kept in clock.layouts:
        sequences = [(width, width * width)] * n
        executed.append(step_flops(config, sequences, kept if kept is not None else n * width))
    scale = rows / len(lengths)
    useful = step_flops(config, [(n, n * n) for n in lengths], sum(learned))
    return {
        "executed_gflop": statistics.mean(e["step"] for e in executed) / 1e9,
        "useful_gflop": useful["step"] * scale / 1e9,
        "tokens_per_step": useful["tokens"] * scale,
    }


def _profiles(clock: OverheadClock, steps: int) -> dict:
    """Per step: syncs by call site, operator counts and the top operators and functions."""
    import io
    import pstats

    averages = clock.operator_profile.key_averages()
    ops = sorted(averages, key=lambda e: -e.self_cpu_time_total)
    scalar = sum(e.count for e in averages if e.key == "aten::_local_scalar_dense")
    text = io.StringIO()
    pstats.Stats(clock.python_profile, stream=text).sort_stats("tottime").print_stats(15)
    return {
        "syncs_per_step": sum(clock.syncs.sites.values()) / steps,
        "sync_sites": {k: v / steps for k, v in clock.syncs.sites.most_common(12)},
        "local_scalar_dense_per_step": scalar / steps,
        "aten_ops_per_step": sum(e.count for e in averages if e.key.startswith("aten::")) / steps,
        "top_operators": [
            {"op": e.key, "count": e.count / steps, "self_ms": e.self_cpu_time_total / 1e3 / steps}
            for e in ops[:12]
        ],
        "python_top": text.getvalue().splitlines()[-22:],
    }


def run_child(args) -> dict:
    import tempfile

    from torch.optim.optimizer import register_optimizer_step_post_hook

    from benchmarks import training

    timer = PhaseTimer()
    timer.install()
    clock = OverheadClock(args, timer)
    register_optimizer_step_post_hook(clock.on_optimizer_step)  # after the timer's own
    model, tokenizer = _load(args)
    config = model.config
    data, lengths, learned = _rows(args, tokenizer, Path(tempfile.mkdtemp(prefix="overhead-")))
    steps = args.warmup + args.steps + args.profiled + 1
    if args.child.split("+")[0] == "workbench":
        _time_workbench_loss(timer, stock=set(args.child.split("+")[1:]))
        training._workbench(args, model, tokenizer, data, clock, steps, set())
    elif args.child == "plain":
        training._plain(args, model, tokenizer, data, clock, steps, set())
    elif args.child == "trl":
        from trl import SFTTrainer

        timer.wrap_compute_loss(SFTTrainer)
        training._trl(args, model, tokenizer, data, clock, steps, False, False)
    else:
        raise ValueError(f"Unknown stack {args.child!r}; known: {STACKS}, workbench+{LEVERS}")
    wall = (clock.window[1] - clock.window[0]) / args.steps
    phases = {p: timer.totals[p] / args.steps * 1e3 for p in PHASES}
    phases["other"] = wall * 1e3 - sum(phases.values())
    result = {"stack": args.child, "step_ms": wall * 1e3, "phases_ms": phases}
    result.update(_arithmetic(config, clock, lengths, learned, args.batch_size))
    result["tokens_per_s"] = result["tokens_per_step"] / wall
    result["achieved_gflop_per_s"] = result["executed_gflop"] / wall
    result["calls_per_step"] = {p: timer.calls[p] / args.steps for p in timer.calls}
    result.update(_profiles(clock, args.profiled))
    return result


def _time_workbench_loss(timer: PhaseTimer, stock: set[str]) -> None:
    """Time the workbench Trainer's whole `compute_loss` (token counting included) as `loss`;
    `stock`: levers to take away (`stock-flops`: the Trainer's own FLOPs count at every step)."""
    import transformers

    import workbench.training.finetune as finetune

    unknown = stock - set(LEVERS)
    if unknown:
        raise ValueError(f"Unknown workbench modifiers {unknown}; known: {LEVERS}")
    make = finetune.workbench_trainer_class

    def timed_class():
        trainer_class = make()
        timer.wrap_compute_loss(trainer_class)
        if "stock-flops" in stock:
            trainer_class.floating_point_ops = transformers.Trainer.floating_point_ops
        return trainer_class

    finetune.workbench_trainer_class = timed_class


# -- the parent: every stack, interleaved, then the table --------------------------------------
def run_all(args) -> list[dict]:
    results = []
    for repeat in range(args.repeats):
        for stack in args.stacks.split(","):
            command = [sys.executable, "-m", "benchmarks.overhead", *sys.argv[1:]]
            done = subprocess.run([*command, "--child", stack], capture_output=True, text=True)
            lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
            if done.returncode or not lines:
                tail = (done.stderr or done.stdout)[-2000:]
                print(f"[{stack}] failed ({done.returncode}):\n{tail}", file=sys.stderr)
                results.append({"stack": stack, "repeat": repeat, "error": tail})
                continue
            result = {**json.loads(lines[-1]), "repeat": repeat}
            results.append(result)
            print(f"[{stack} #{repeat}] {result['step_ms']:.1f} ms/step", file=sys.stderr)
    return results


def summary(results: list[dict]) -> dict:
    """Per stack and row: the median of the repeats, and their min and max."""
    rows = [*PHASES, "other"]
    out = {}
    for stack in dict.fromkeys(r["stack"] for r in results if "error" not in r):
        runs = [r for r in results if r["stack"] == stack and "error" not in r]
        values = {row: [r["phases_ms"][row] for r in runs] for row in rows}
        for key in ("step_ms", "syncs_per_step", "aten_ops_per_step", "executed_gflop"):
            values[key] = [r[key] for r in runs]
        values["achieved_gflop_per_s"] = [r["achieved_gflop_per_s"] for r in runs]
        out[stack] = {k: (statistics.median(v), min(v), max(v)) for k, v in values.items()}
    return out


def table(summary_: dict) -> str:
    stacks = list(summary_)
    lines = ["| ms per step | " + " | ".join(stacks) + " |", "| --- |" + " ---: |" * len(stacks)]
    labels = {
        "step_ms": "**whole step**",
        "syncs_per_step": "host-device syncs per step",
        "aten_ops_per_step": "aten operators per step",
        "executed_gflop": "arithmetic, GFLOP per step",
        "achieved_gflop_per_s": "GFLOP/s achieved",
    }
    for row in [*PHASES, "other", *labels]:
        cells = []
        for stack in stacks:
            median, low, high = summary_[stack][row]
            digits = 0 if row == "aten_ops_per_step" else 1 if row != "executed_gflop" else 3
            spread = f" ({low:.{digits}f}-{high:.{digits}f})" if high - low >= 0.05 else ""
            cells.append(f"{median:,.{digits}f}{spread}")
        lines.append(f"| {labels.get(row, row)} | " + " | ".join(cells) + " |")
    if "plain" in summary_:
        base = summary_["plain"]["step_ms"][0]
        ratios = ", ".join(f"{s} {summary_[s]['step_ms'][0] / base:.2f}x" for s in stacks)
        lines.append(f"\nstep time relative to `plain` (medians): {ratios}")
    return "\n".join(lines)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(run_child(args)), flush=True)
        return
    results = run_all(args)
    summary_ = summary(results)
    report = {
        "environment": environment(args),
        "settings": {k: v for k, v in vars(args).items() if k not in ("child", "out")},
        "summary": {s: {k: list(v) for k, v in rows.items()} for s, rows in summary_.items()},
        "results": results,
    }
    print(table(summary_))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
