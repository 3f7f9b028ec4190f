"""Training speed against TRL: one command, the same model shape, data and LoRA settings.

    python -m benchmarks.training --device cpu                       # embedded model, demo data
    python -m benchmarks.training --device cuda --shape smollm2-135m --data alpaca

Each stack runs in its own process (clean memory peaks, no shared caches) and reports tokens/s
(over the steady steps, after the first `--warmup` steps, and over the whole run), peak memory
(GPU: torch's allocator; CPU: the process's peak RSS), the validation loss after training
(the same function for every stack) and, for the workbench, its predicted peak. The parent
prints a table, the ratios against each TRL stack, and writes everything as JSON.

Stacks: `workbench` (its defaults), `plain` (a bare PEFT loop over the workbench's own packed
batches and loss, AdamW and a cosine schedule, no Trainer: what the Trainer costs per step),
`trl` (SFTTrainer defaults: gradient checkpointing, padded batches), `trl-packing`,
`trl-liger`, `trl-liger-packing`. The workbench takes levers
off or on with `+` modifiers, to measure what each pays: `workbench+padded` (packing off),
`workbench+full-logits` (logits for every position), `workbench+checkpointing` (gradient
checkpointing on), `workbench+compile` (`compile=True`: torch.compile layer by layer; also
`plain+compile`),
`workbench+auto` (auto_batch: the largest batch predicted to fit in free GPU memory),
`workbench+freeze20` (LoRA above the first 20 layers only: backward stops early; it changes
what is learned, see the validation loss).
Every stack gets the same rows, template, learning rate, schedule, batch size, max length, seed
and LoRA settings; everything else is each stack's default.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.workloads import (
    SAMPLE_DATA,
    alpaca_like_rows,
    config_for,
    tokenizer_dir,
    write_rows,
)

STACKS = ("workbench", "plain", "trl", "trl-packing", "trl-liger", "trl-liger-packing")
MODIFIERS = ("padded", "full-logits", "checkpointing", "compile", "auto", "freeze20")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--shape", default="embedded", help="embedded, smollm2-135m, llama-1b ...")
    p.add_argument("--data", choices=["tickets", "alpaca"], default="tickets")
    p.add_argument("--stacks", default="workbench,trl", help=f"comma-separated: {STACKS}")
    p.add_argument("--steps", type=int, default=32, help="optimizer steps per stack")
    p.add_argument("--steps-for", default="", help="per-stack steps, e.g. workbench=200,trl=30")
    p.add_argument("--warmup", type=int, default=3, help="steps left out of the steady rate")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--learning-rate", type=float, default=3e-4)
    p.add_argument("--rows", type=int, default=4000, help="synthetic rows (--data alpaca)")
    p.add_argument("--tokenizer-dir", default=None, help="default: the embedded model's cache")
    p.add_argument("--out", default=None, help="write the results JSON here")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


# -- one stack, in a child process ----------------------------------------------------------
def _load(args):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from workbench.model.loading import load_model

    if args.shape == "embedded":
        return load_model(device=args.device)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir(args.tokenizer_dir))
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    torch.manual_seed(0)
    with torch.device(args.device):
        model = AutoModelForCausalLM.from_config(
            config_for(args.shape, tokenizer_dir(args.tokenizer_dir))
        )
    return model.to(dtype), tokenizer


def _data(args, folder: Path):
    from workbench.data.loading import load_data
    from workbench.data.splits import split_data

    if args.data == "tickets":  # the demo's split: 48 held out, 16 validation, the rest trains
        data = load_data(SAMPLE_DATA / "support_tickets.jsonl", verbose=False)
        rest, _held_out = split_data(data, 48, seed=0)
        return split_data(rest, 16, seed=0)
    train = load_data(write_rows(alpaca_like_rows(args.rows, 0), folder / "train.jsonl"))
    validation = load_data(write_rows(alpaca_like_rows(64, 1), folder / "val.jsonl"))
    return train, validation


class StepClock:
    """Times every optimizer step and counts the real tokens each one trained on."""

    def __init__(self, device: str) -> None:
        self.device, self.times, self.batch_tokens = device, [], []
        self.started = None

    def collator(self, inner):
        def collate(features):
            batch = inner(features)
            if "num_tokens" in batch:
                tokens = int(batch["num_tokens"])
            elif "attention_mask" in batch:
                tokens = int(batch["attention_mask"].sum())
            else:  # padding-free without a count: every position is a token
                tokens = int(batch["input_ids"].numel())
            self.batch_tokens.append(tokens)
            return batch

        return collate

    def callback(self):
        from transformers import TrainerCallback

        clock = self

        class Clock(TrainerCallback):
            def on_train_begin(self, args, state, control, **kwargs):
                clock.sync()
                clock.started = time.perf_counter()

            def on_step_end(self, args, state, control, **kwargs):
                clock.times.append(time.perf_counter())

            def on_train_end(self, args, state, control, **kwargs):
                clock.sync()
                if clock.times:
                    clock.times[-1] = time.perf_counter()

        return Clock()

    def sync(self) -> None:
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()

    def rates(self, warmup: int) -> dict:
        steps = len(self.times)
        per_step = len(self.batch_tokens) // max(steps, 1)  # micro-batches per step
        tokens = [sum(self.batch_tokens[i * per_step : (i + 1) * per_step]) for i in range(steps)]
        whole = sum(tokens) / (self.times[-1] - self.started)
        w = min(warmup, steps - 2)
        steady = sum(tokens[w + 1 :]) / (self.times[-1] - self.times[w])
        return {"steps": steps, "tokens": sum(tokens), "tokens_per_s": steady, "whole_run": whole}


def _workbench(args, model, tokenizer, train, clock: StepClock, steps: int, modifiers: set):
    import importlib

    from workbench.model.methods import Method
    from workbench.runs.hyperparameters import Hyperparameters

    unknown = modifiers - set(MODIFIERS)
    if unknown:
        raise ValueError(f"Unknown workbench modifiers {unknown}; known: {MODIFIERS}")
    train_module = importlib.import_module(
        "workbench.training.finetune"
    )  # the module, not the function
    inner = train_module.training_collator
    select = "full-logits" not in modifiers
    train_module.training_collator = lambda tok, hp, **k: clock.collator(
        inner(tok, hp, select_logits=select and k.get("select_logits", True))
    )
    hp = Hyperparameters(
        batch_size=args.batch_size,
        max_length=args.max_length,
        max_steps=steps,
        learning_rate=args.learning_rate,
        eval_every=10**6,
        packing="padded" not in modifiers,
        gradient_checkpointing="checkpointing" in modifiers,
        auto_batch="auto" in modifiers,
        compile="compile" in modifiers,
    )
    run = train_module.train(  # run.hyperparameters holds the batch auto_batch chose
        model,
        tokenizer,
        train,
        None,
        template="alpaca",
        method=Method(freeze_layers=20 if "freeze20" in modifiers else 0),
        hyperparameters=hp,
        samples=0,
        start=False,
    )
    run.add_callback(
        "started", lambda e: clock.sync() or setattr(clock, "started", time.perf_counter())
    )
    run.add_callback("step", lambda e: clock.times.append(time.perf_counter()))
    run.start().wait()
    if run.status != "finished":
        raise RuntimeError(f"workbench run {run.status}: {run.error}")
    clock.rows_per_step = run.hyperparameters.batch_size
    clock.predicted = run.fit.estimate.total if run.fit else None
    clock.sync()
    clock.times[-1] = time.perf_counter()
    return run.model


def _plain(args, model, tokenizer, train, clock: StepClock, steps: int, modifiers: set):
    """A bare loop: the workbench's tokens, packed batches and loss, no Trainer around them."""
    import contextlib
    import math

    import torch
    from transformers import get_cosine_schedule_with_warmup

    from workbench.model.compiling import compile_layers
    from workbench.model.loss import response_loss
    from workbench.model.methods import Method, apply_method
    from workbench.runs.hyperparameters import Hyperparameters
    from workbench.tokens.tokenizing import tokenize_examples
    from workbench.training.finetune import logits_selectable, training_collator

    hp = Hyperparameters(batch_size=args.batch_size, max_length=args.max_length)
    torch.manual_seed(0)
    model = apply_method(model, Method())
    if "compile" in modifiers:
        compile_layers(model)  # as train(compile=True) does when training begins
    examples = tokenize_examples(train, "alpaca", tokenizer, max_length=args.max_length)
    features = list(examples.to_hf())
    collate = clock.collator(
        training_collator(tokenizer, hp, select_logits=logits_selectable(model))
    )
    order = torch.randperm(len(features), generator=torch.Generator().manual_seed(0)).tolist()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.learning_rate, weight_decay=0.0)
    # the workbench's default schedule, as the Trainer builds it
    schedule = get_cosine_schedule_with_warmup(optimizer, math.ceil(0.05 * steps), steps)
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if args.device == "cuda"
        else contextlib.nullcontext()
    )
    device = next(model.parameters()).device
    model.train()
    clock.sync()
    clock.started = time.perf_counter()
    for step in range(steps):
        start = step * args.batch_size % len(order)
        batch = collate([features[i] for i in order[start : start + args.batch_size]])
        batch.pop("num_tokens", None)
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        labels = batch.pop("labels")
        with autocast:
            loss, _ = response_loss(model, batch, labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        clock.times.append(time.perf_counter())
    clock.sync()
    clock.times[-1] = time.perf_counter()
    return model


def _trl(args, model, tokenizer, train, clock: StepClock, steps: int, packing: bool, liger: bool):
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from workbench.model.methods import Method
    from workbench.tokens.templates import get_template

    template = get_template("alpaca")
    pairs = [template.render(r, tokenizer) for r in train.rows]
    dataset = Dataset.from_list([{"prompt": p, "completion": c} for p, c in pairs])
    config = SFTConfig(
        output_dir=str(Path(os.environ.get("TMPDIR", "/tmp")) / f"trl-{os.getpid()}"),
        per_device_train_batch_size=args.batch_size,
        max_length=args.max_length,
        max_steps=steps,
        learning_rate=args.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=0.05,
        seed=0,
        packing=packing,
        use_liger_kernel=liger,
        save_strategy="no",
        report_to="none",
        bf16=args.device == "cuda",
        use_cpu=args.device == "cpu",
        disable_tqdm=True,
    )
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=Method().to_peft(model),
        callbacks=[clock.callback()],
    )
    trainer.data_collator = clock.collator(trainer.data_collator)
    trainer.train()
    return trainer.model


def run_child(args) -> dict:
    import resource
    import tempfile

    import torch

    from workbench.evaluation.compare import validation_loss

    stack = args.child
    steps = dict(item.split("=") for item in args.steps_for.split(",") if item).get(stack)
    steps = int(steps) if steps else args.steps
    model, tokenizer = _load(args)
    folder = Path(tempfile.mkdtemp(prefix="bench-"))
    train, validation = _data(args, folder)
    clock = StepClock(args.device)
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    base, *modifiers = stack.split("+")
    modifiers = set(modifiers)
    if base == "workbench":
        trained = _workbench(args, model, tokenizer, train, clock, steps, modifiers)
    elif base == "plain":
        if modifiers - {"compile"}:
            raise ValueError(f"`plain` takes only the `compile` modifier, not {modifiers}")
        trained = _plain(args, model, tokenizer, train, clock, steps, modifiers)
    else:
        trained = _trl(
            args, model, tokenizer, train, clock, steps, "packing" in stack, "liger" in stack
        )
    result = {"stack": stack, **clock.rates(args.warmup)}
    result["rows_per_step"] = getattr(clock, "rows_per_step", args.batch_size)
    if args.device == "cuda":
        result["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
        result["peak_reserved_gib"] = torch.cuda.max_memory_reserved() / 2**30
        free, total = torch.cuda.mem_get_info()  # the CUDA context: in use, not PyTorch's
        context = (total - free - torch.cuda.memory_reserved()) / 2**30
        result["peak_process_gib"] = result["peak_reserved_gib"] + context
    else:
        result["peak_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    result["val_loss"] = validation_loss(
        trained, tokenizer, validation, "alpaca", max_length=args.max_length
    )
    if getattr(clock, "predicted", None):  # the workbench's own check before training
        result["predicted_gib"] = clock.predicted / 2**30
    return result


# -- the parent: run every stack, then the table ----------------------------------------------
def environment(args) -> dict:
    import torch
    import transformers

    info = {
        "date": time.strftime("%Y-%m-%d"),
        "device": args.device,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
    }
    if args.device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    try:
        import trl

        info["trl"] = trl.__version__
    except ImportError:
        info["trl"] = None
    return info


def run_all(args) -> dict:
    from workbench.model.methods import Method

    settings = {k: v for k, v in vars(args).items() if k not in ("child", "out")}
    settings["lora"] = Method().to_dict()  # every stack's LoRA settings (the defaults)
    results = []
    for stack in args.stacks.split(","):
        command = [sys.executable, "-m", "benchmarks.training", *sys.argv[1:], "--child", stack]
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode or not lines:
            tail = (done.stderr or done.stdout)[-1500:]
            print(f"[{stack}] failed ({done.returncode}):\n{tail}", file=sys.stderr)
            results.append({"stack": stack, "error": tail})
            continue
        result = json.loads(lines[-1])
        result["process_s"] = time.perf_counter() - started
        results.append(result)
        print(f"[{stack}] {result['tokens_per_s']:,.0f} tokens/s", file=sys.stderr, flush=True)
    return {"environment": environment(args), "settings": settings, "results": results}


def ratios(report: dict) -> dict:
    by_stack = {r["stack"]: r for r in report["results"] if "error" not in r}
    ours = [r for name, r in by_stack.items() if name.startswith("workbench")]
    out = {}
    if not ours:
        return out
    ours = ours[0]  # the first workbench stack listed
    for name, peer in by_stack.items():
        if name.startswith("trl") or name == "plain":
            out[f"{ours['stack']} vs {name}"] = {
                "speedup": ours["tokens_per_s"] / peer["tokens_per_s"],
                "val_loss_rel_diff": (ours["val_loss"] - peer["val_loss"]) / peer["val_loss"],
            }
    return out


def table(report: dict) -> str:
    head = (
        "| stack | tokens/s (steady) | tokens/s (whole run) | peak GiB | val loss | steps "
        "| rows/step |"
    )
    lines = [head, "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in report["results"]:
        if "error" in r:
            lines.append(f"| {r['stack']} | failed | | | | |")
            continue
        lines.append(
            f"| {r['stack']} | {r['tokens_per_s']:,.0f} | {r['whole_run']:,.0f} | "
            f"{r['peak_gib']:.2f} | {r['val_loss']:.4f} | {r['steps']} | "
            f"{r.get('rows_per_step', '')} |"
        )
    for name, ratio in report.get("ratios", {}).items():
        lines.append(
            f"\n{name}: {ratio['speedup']:.2f}x tokens/s, validation loss "
            f"{ratio['val_loss_rel_diff']:+.2%}"
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(run_child(args)), flush=True)
        return
    report = run_all(args)
    report["ratios"] = ratios(report)
    print(table(report))
    print(json.dumps(report, indent=1))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
