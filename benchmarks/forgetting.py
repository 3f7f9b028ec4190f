"""Forgetting in sequence, measured with power: task A, then task B, every remedy over seeds.

    OMP_NUM_THREADS=1 flock /tmp/wb-measure.lock python -m benchmarks.forgetting --part 1
    (then --part 2 and --part 3: one seed each, merged into one JSON)
    python -m benchmarks.forgetting --quick --model PATH --out /tmp/q.json   # a tiny model

The embedded SmolLM2-135M-Instruct is fine-tuned (all weights) on task A (name and city as
JSON), then goes on to task B (dates rewritten in ISO format). After each stage it is measured
on held-out rows of A and B and on two probe tasks it never trains on (capitals, antonyms), 50
rows per task from `sample_data/probes/forgetting_probe.jsonl`, none of them a training row.
Stage B runs once per setting, each from the same weights stage A left (one stage A per seed):

- `none`: B alone, the forgetting baseline;
- `replay`: a share of B's rows are A's rows (strength = that share);
- `EWC`: Fisher on A's rows at the weights after A (strength = lambda);
- `SI`: synaptic intelligence, the importance tracked while A trained (strength = c);
- `LwF`: KL to the outputs of the model after A, on A's prompts (strength = its weight);
- `LoRA`: B through a LoRA adapter on the frozen weights after A (strength = rank r).

Per run: `learned` (B's score after B), `kept` (A's score after B), `retained` (the probes'
mean), each also as a loss. A and B are scored teacher-forced (exactly the reference, from one
forward pass); the probes by generating and checking that the answer contains the reference
(the base model answers in sentences). Measuring runs under bfloat16 autocast (`--eval-dtype`):
2.5x faster on a CPU with bf16 units, the same for every setting. The JSON has the date,
device, threads, every setting and every per-seed figure; `summarize_seeds` and
`tradeoff_figure` (workbench.evaluation.forgetting) turn it into the table and the plot.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import json
import os
import platform
import random
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_DATA = ROOT / "sample_data"
PROBE_FILE = SAMPLE_DATA / "probes" / "forgetting_probe.jsonl"
# Both tasks are learned within a few steps of 4 rows (ticket topics need ~100 rows to beat
# chance: measured, 0.22 exact after 32 rows, so they would not show what B makes A forget).
TASK_A, TASK_B = "extract_city", "date_iso"
TRAIN_FILES = {TASK_A: "city_extraction.jsonl", TASK_B: "date_rewrite.jsonl"}
PROBE_TASKS = ("capital", "antonym")


@dataclass(frozen=True)
class Setting:
    """One way of training stage B: a remedy (`none` for the baseline) at one strength."""

    remedy: str
    strength: float | None = None

    @property
    def name(self) -> str:
        label = {"none": "none", "replay": "replay", "ewc": "EWC", "si": "SI", "lwf": "LwF"}
        if self.remedy == "lora":
            return f"LoRA r={self.strength:g}"
        if self.strength is None:
            return label[self.remedy]
        return f"{label[self.remedy]} {self.strength:g}"


# Two strengths per remedy, from pilot runs. EWC at 10 and 100 ended with penalties 200-2000x
# the task loss and learned nothing of B (results/2026-11-30-cpu-forgetting-strong-ewc.json),
# hence 0.1 and 1. LoRA's "strength" is its rank (one rank only: the CPU budget).
SETTINGS = [
    Setting("none"),
    Setting("replay", 0.25),
    Setting("replay", 0.5),
    Setting("ewc", 0.1),
    Setting("ewc", 1.0),
    Setting("si", 1.0),
    Setting("si", 10.0),
    Setting("lwf", 1.0),
    Setting("lwf", 10.0),
    Setting("lora", 16.0),
]


@dataclass
class Plan:
    """Everything that sets the measurement; stored whole in the JSON."""

    model: str = "smollm2-135m-instruct"
    seeds: int = 3
    steps: int = 8  # optimizer steps per stage: both tasks are learned in this many (pilot)
    batch_size: int = 4
    learning_rate: float = 1e-4  # full fine-tuning, constant after one warmup step (at 3e-4
    # a pilot with EWC 10 diverged)
    lora_learning_rate: float = 1e-3  # LoRA needs ~10x full fine-tuning's rate
    max_length: int = 128  # the longest row here has about 70 tokens
    rows_per_task: int = 50  # one answer moves a task's score by 2 points
    max_new_tokens: int = 14  # 'The antonym of the word "guilty" is "innocent"' fits
    ewc_rows: int = 8  # rows of A for the Fisher (one backward pass each: CPU time)
    lwf_rows: int = 32  # A's prompts whose outputs LwF keeps, 4 per step
    eval_dtype: str = "bfloat16"
    # the model's chat format: base scores on the probes 0.34 (capitals) and 0.60 (antonyms)
    # against 0.28 and 0.20 with `instruction` (16 new tokens, 50 rows each, pilot)
    template: str = "chat"
    settings: tuple = tuple(SETTINGS)


def quick_plan(model: str) -> Plan:
    """Seconds on a tiny model: every remedy once, 4 rows a task, 2 steps a stage."""
    first = {}
    for setting in SETTINGS:
        first.setdefault(setting.remedy, setting)
    return Plan(
        model=model,
        seeds=1,
        steps=2,
        batch_size=2,
        rows_per_task=4,
        max_new_tokens=4,
        ewc_rows=4,
        lwf_rows=4,
        lora_learning_rate=1e-2,
        learning_rate=1e-3,
        eval_dtype="float32",
        settings=tuple(first.values()),
    )


def template(name: str):
    """The prompt layout: `chat` is the model's own chat format with a one-line system message
    (its default one is 20 tokens longer); `instruction` is Alpaca's layout without its
    preamble sentence."""
    from workbench.tokens.templates import Template

    if name == "chat":
        return Template(name="chat", use_chat_template=True, system="Answer briefly.")
    return Template(
        name="instruction",
        prompt="### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n",
        prompt_no_input="### Instruction:\n{instruction}\n\n### Response:\n",
    )


# -- data and measurement -------------------------------------------------------------------
def load_rows(plan: Plan):
    """(stage rows {task: Examples}, the probe), the probe over held-out rows only."""
    import workbench as wb
    from workbench.evaluation.forgetting import ForgettingProbe

    stages = {t: wb.load_data(SAMPLE_DATA / f, verbose=False) for t, f in TRAIN_FILES.items()}
    held_out = wb.load_data(PROBE_FILE, verbose=False)

    def rows(tasks):
        return held_out.select([i for i, r in enumerate(held_out.rows) if r["task"] in tasks])

    probe = ForgettingProbe(
        target=rows((TASK_A, TASK_B)),
        probe=rows(PROBE_TASKS),
        template=template(plan.template),
        rows_per_task=plan.rows_per_task,
        decoding=wb.Decoding(max_new_tokens=plan.max_new_tokens, batch_size=50),
        teacher_forced=[TASK_A, TASK_B],
    )
    return stages, probe


def measure(probe, model, tokenizer, name: str, plan: Plan) -> dict:
    """The probe's scores and losses per task, and learned / kept / retained, with the time."""
    import torch

    started = time.perf_counter()
    precision = (
        torch.autocast("cpu", dtype=torch.bfloat16)
        if plan.eval_dtype == "bfloat16"
        else contextlib.nullcontext()
    )
    with precision:
        scores = probe.measure(model, tokenizer, name)
    record = {"score": scores.score, "loss": scores.loss, "metric": scores.metric}
    # a few generated answers per probe task: what a score of 0.3 looks like
    record["answers"] = {t: scores.evaluations[t].answers[:8] for t in PROBE_TASKS}
    for suffix, values in (("", scores.score), (" loss", scores.loss)):
        record["learned" + suffix] = values[TASK_B]
        record["kept" + suffix] = values[TASK_A]
        record["retained" + suffix] = sum(values[t] for t in PROBE_TASKS) / len(PROBE_TASKS)
    record["measure_s"] = round(time.perf_counter() - started, 1)
    return record


# -- the stages -------------------------------------------------------------------------------
def hyperparameters(plan: Plan, seed: int, lora: bool = False):
    from workbench.runs.hyperparameters import Hyperparameters

    return Hyperparameters(
        max_steps=plan.steps,
        batch_size=plan.batch_size,
        learning_rate=plan.lora_learning_rate if lora else plan.learning_rate,
        lr_scheduler="constant_with_warmup",
        warmup=1,
        max_length=plan.max_length,
        eval_every=plan.steps + 1,  # no validation set: no evaluation, no checkpoint mid-run
        sample_max_new_tokens=4,
        eval_metric_rows=0,
        seed=seed,
    )


def lwf_remedy(context):
    """LwF for stage B: keep the outputs of the model as stage A left it on A's prompts."""
    from workbench.training.lwf import LearningWithoutForgetting
    from workbench.training.remedies import StagePlan

    earlier = context.earlier[0]
    order = random.Random(context.seed).sample(range(len(earlier)), len(earlier))
    reference = earlier.select(order[: int(context.options["lwf_rows"])])
    penalty = LearningWithoutForgetting(
        context.model,
        context.tokenizer,
        reference,
        context.template,
        strength=context.strength,
        max_rows=len(reference),
        base="copy",  # full fine-tuning: a frozen copy of the weights after A
    )
    return StagePlan(context.rows, regularizer=penalty)


def remedies() -> dict:
    from workbench.training.remedies import REMEDIES

    # the benchmark's own LwF (a seeded sample of A's rows, a frozen copy) after the library's
    # remedies, so the committed figures stay reproducible
    return {**REMEDIES, "none": REMEDIES[None], "lora": REMEDIES[None], "lwf": lwf_remedy}


def train_stage_b(setting: Setting, after_a, tokenizer, stages, run_a, plan, seed, root):
    """One setting's stage B on a copy of the weights after A; returns (model, run, info)."""
    import workbench as wb
    from workbench.training.remedies import StageContext

    model = copy.deepcopy(after_a)
    lora = setting.remedy == "lora"
    context = StageContext(
        model=model,
        tokenizer=tokenizer,
        template=template(plan.template),
        stages=[stages[TASK_A], stages[TASK_B]],
        index=1,
        runs=[run_a],
        strength=None if lora else setting.strength,
        replay_share=setting.strength if setting.remedy == "replay" else 0.0,
        seed=seed,
        options={"max_rows": plan.ewc_rows, "lwf_rows": plan.lwf_rows},
    )
    started = time.perf_counter()
    built = remedies()[setting.remedy](context)
    built = replace(built, track_importance=False)  # no stage follows B
    method = (
        wb.Method(kind="lora", r=int(setting.strength), alpha=2 * setting.strength)
        if lora
        else wb.Method(kind="full")
    )
    run = wb.train(
        model,
        tokenizer,
        built.train,
        template=template(plan.template),
        method=method,
        hyperparameters=hyperparameters(plan, seed, lora=lora),
        run_dir=root / f"seed{seed}-{setting.name.replace(' ', '_').replace('=', '')}",
        samples=1,
        regularizer=built.regularizer,
        continued_from=run_a,
    ).wait()
    if run.status != "finished":
        raise RuntimeError(f"{setting.name} (seed {seed}) ended {run.status}: {run.error}")
    tasks = [r["task"] for r in built.train.rows]
    info = {
        "train_s": round(time.perf_counter() - started, 1),
        "train_rows": len(tasks),
        "replayed_share": round(tasks.count(TASK_A) / len(tasks), 3),
        "last_loss": [e["loss"] for e in run.events if e["event"] == "step"][-1],
        "last_penalty": getattr(built.regularizer, "last_penalty", None),
    }
    return run.model, run, info


def run_seed(seed: int, plan: Plan, stages, probe, root: Path, echo) -> tuple[dict, list]:
    """Stage A once, then every setting's stage B from its weights; records per stage."""
    import workbench as wb

    model, tokenizer = wb.load_model(plan.model, device="cpu")
    started = time.perf_counter()
    run_a = wb.train(
        model,
        tokenizer,
        stages[TASK_A],
        template=template(plan.template),
        method=wb.Method(kind="full"),
        hyperparameters=hyperparameters(plan, seed),
        run_dir=root / f"seed{seed}-stage-A",
        samples=1,
        track_importance=True,  # SI reads it; the other settings ignore it
    ).wait()
    if run_a.status != "finished":
        raise RuntimeError(f"stage A (seed {seed}) ended {run_a.status}: {run_a.error}")
    after_a = {"seed": seed, "stage": "A", "train_s": round(time.perf_counter() - started, 1)}
    after_a.update(measure(probe, run_a.model, tokenizer, "after A", plan))
    echo(line(f"seed {seed} after A", after_a))
    records = []
    for setting in plan.settings:
        tuned, run, info = train_stage_b(
            setting, run_a.model, tokenizer, stages, run_a, plan, seed, root
        )
        record = {"seed": seed, "stage": "B", "setting": setting.name, **asdict(setting)}
        record.update(info)
        record.update(measure(probe, tuned, tokenizer, setting.name, plan))
        records.append(record)
        echo(line(f"seed {seed} {setting.name}", record))
        shutil.rmtree(run.run_dir, ignore_errors=True)  # a 135M model and its tensors each
        del tuned, run
        gc.collect()
    shutil.rmtree(run_a.run_dir, ignore_errors=True)
    return after_a, records


def line(label: str, record: dict) -> str:
    parts = [f"{k} {record[k]:.2f} ({record[k + ' loss']:.2f})" for k in ("kept", "learned")]
    parts.append(f"retained {record['retained']:.2f} ({record['retained loss']:.2f})")
    timing = f"{record.get('train_s', 0):.0f}+{record['measure_s']:.0f} s"
    return f"{label:<22} " + ", ".join(parts) + f"  [{timing}]"


# -- the JSON: one file, parts merged ---------------------------------------------------------
def environment() -> dict:
    import torch
    import transformers

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for text in Path("/proc/cpuinfo").read_text().splitlines():
            if text.startswith("model name"):
                cpu = text.split(":", 1)[1].strip()
                break
    return {
        "date": time.strftime("%Y-%m-%d"),
        "device": "cpu",
        "cpu": cpu,
        "torch_threads": torch.get_num_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }


def plan_json(plan: Plan) -> dict:
    data = asdict(plan)
    data["settings"] = [asdict(s) | {"name": s.name} for s in plan.settings]
    return data


def merge(out: Path, plan: Plan, part: int | None, result: dict) -> dict:
    """Add this part's figures to the file at `out` (same plan only), written atomically."""
    report = {"plan": plan_json(plan), "parts": {}, "base": None, "after_a": [], "runs": []}
    if out.is_file():
        report = json.loads(out.read_text(encoding="utf-8"))
        if report["plan"] != plan_json(plan):
            raise SystemExit(
                f"{out} holds a measurement with other settings; pass another --out, or move "
                "that file away to start again."
            )
    seeds = set(result["seeds"])
    report["after_a"] = [r for r in report["after_a"] if r["seed"] not in seeds] + result["after_a"]
    report["runs"] = [r for r in report["runs"] if r["seed"] not in seeds] + result["runs"]
    report["base"] = result["base"] or report["base"]
    report["parts"][str(part or "all")] = result["environment"] | {
        "seeds": sorted(seeds),
        "seconds": result["seconds"],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, out)
    return report


def run(plan: Plan, part: int | None, out: Path, echo=print) -> dict:
    """Measure the seeds of `part` (all without one), merge them into `out`, return the file."""
    import torch

    import workbench as wb

    seeds = list(range(plan.seeds)) if part is None else [part - 1]
    if part is not None and not 1 <= part <= plan.seeds:
        raise SystemExit(f"--part {part}: parts are 1 to {plan.seeds}, one seed each.")
    started = time.perf_counter()
    stages, probe = load_rows(plan)
    base = None
    if part in (None, 1):  # the base model is measured once
        model, tokenizer = wb.load_model(plan.model, device="cpu")
        base = measure(probe, model, tokenizer, "base", plan) | {"stage": "base"}
        echo(line("base", base))
        del model
    root = Path(tempfile.mkdtemp(prefix="forgetting-"))
    after_a, runs = [], []
    try:
        for seed in seeds:
            torch.manual_seed(seed)
            stage_a, records = run_seed(seed, plan, stages, probe, root, echo)
            after_a.append(stage_a)
            runs += records
    finally:
        shutil.rmtree(root, ignore_errors=True)
    result = {
        "environment": environment(),
        "seeds": seeds,
        "seconds": round(time.perf_counter() - started),
        "base": base,
        "after_a": after_a,
        "runs": runs,
    }
    return merge(out, plan, part, result)


def print_summary(report: dict, echo=print) -> None:
    from workbench.evaluation.forgetting import mean_spread, summarize_seeds

    measures = ["learned", "kept", "retained", "learned loss", "kept loss", "retained loss"]
    summary = summarize_seeds(report["runs"], measures, by=("setting",))
    echo(mean_spread(summary, measures).to_string())


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--part", type=int, default=None, help="measure one seed (1..seeds)")
    p.add_argument("--seeds", type=int, default=None, help="seeds per setting (default 3)")
    p.add_argument("--quick", action="store_true", help="a few steps and rows (tests)")
    p.add_argument("--model", default=None, help="default: the embedded SmolLM2-135M")
    p.add_argument("--eval-dtype", choices=["bfloat16", "float32"], default=None)
    p.add_argument("--out", default=None, help="default: benchmarks/results/<date>-cpu-...")
    return p.parse_args(argv)


def main(argv=None) -> None:
    from transformers.utils import logging

    logging.disable_progress_bar()  # "Writing model shards" at every run's end
    args = parse_args(argv)
    if args.quick and not args.model:
        raise SystemExit("--quick needs --model: a tiny local model folder.")
    plan = quick_plan(args.model) if args.quick else Plan()
    if args.model and not args.quick:
        plan = replace(plan, model=args.model)
    if args.seeds:
        plan = replace(plan, seeds=args.seeds)
    if args.eval_dtype:
        plan = replace(plan, eval_dtype=args.eval_dtype)
    suffix = "-quick" if args.quick else ""
    default = (
        ROOT / "benchmarks" / "results" / f"{time.strftime('%Y-%m-%d')}-cpu-forgetting{suffix}"
    )
    out = Path(args.out) if args.out else default.with_suffix(".json")
    report = run(plan, args.part, out)
    print_summary(report)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
