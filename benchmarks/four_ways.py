"""Four ways to solve one task: prompting, a classification head, head + LoRA, generative LoRA.

    OMP_NUM_THREADS=1 flock /tmp/wb-measure.lock python -m benchmarks.four_ways
    OMP_NUM_THREADS=1 python -m benchmarks.four_ways --quick   # tiny random model: a smoke run

The ticket-topic task (sample_data/support_tickets.jsonl: billing, shipping, technical,
account), the same `--held-out` rows for every way, the rest split into training rows (also the
pool few-shot examples come from) and validation rows (what the runs evaluate on):

- zero-shot, k fixed examples, k retrieved examples: the base model answers the Alpaca prompt
  (generation, scored by label accuracy); retrieval embeds the pool once (its "training" time)
  and each question before answering it (part of that question's latency);
- head only, head + LoRA: `workbench.training.classification.train_classifier` on the ticket
  message alone (`input`: the instruction is the same for every row and tells a head nothing);
  the prediction is the most probable label, one forward pass;
- generative LoRA: `workbench.train` on the Alpaca prompt and answer, then greedy answers.

Every trained way runs through the project's Run (run directory, events, checkpoints). Per way:
accuracy, trainable parameters, training time (the whole Run: evaluations at its start and end
and checkpoint saves included) and latency per prediction (batch size 1, after one untimed
warm-up, mean over the held-out rows). `prompting_baselines` answers in batches and embeds the
pool on every call, so the ways here use its building blocks to time each answer alone.
Writes `benchmarks/results/<date>-cpu-four-ways.json` (date, device, threads, every setting).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.training import environment
from benchmarks.workloads import tiny_model_folder

LABELS = ["billing", "shipping", "technical", "account"]
WAYS = ("zero-shot", "fixed", "retrieved", "head", "head+lora", "generative LoRA")


@dataclass
class FourWaysSettings:
    """Every setting of one measurement (recorded in the JSON)."""

    model: str = "smollm2-135m-instruct"  # load_model's name: the embedded default, or a folder
    data: str = "sample_data/support_tickets.jsonl"
    held_out: int = 64  # rows every way answers
    validation: int = 16  # rows the runs evaluate on (start and end)
    shots: int = 4  # examples before each question (fixed and retrieved)
    # A head reads the message alone (~19 tokens) and backpropagates through nothing (head
    # only) or the adapters: its steps cost a fraction of a generative step (prompt + answer,
    # ~95 tokens), so the heads get two passes over the training rows, generative LoRA one.
    head_steps: int = 60  # 60 x 8 rows = two passes over the 240 training rows
    head_learning_rate: float = 3e-3  # a fresh head: 1e-3 for 30 steps left it at 0.48
    head_lora_steps: int = 60
    head_lora_learning_rate: float = 1e-3  # 5e-4 for 30 steps: 0.48, 2e-4: 0.34 (held out)
    lora_steps: int = 30  # one pass
    lora_learning_rate: float = 3e-4  # notebooks 01 and 05: 3e-4 for LoRA on this task
    lora_r: int = 16  # both LoRA ways
    batch_size: int = 8  # training rows per step, every trained way
    max_new_tokens: int = 6  # generated answers: a topic and the end of turn
    seed: int = 0
    ways: tuple[str, ...] = WAYS


def split(settings: FourWaysSettings):
    """(training rows, validation rows, held-out rows), the same for every way."""
    import workbench as wb

    tickets = wb.load_data(settings.data, verbose=False)
    rest, held_out = wb.split_data(tickets, settings.held_out, seed=settings.seed)
    train_rows, validation = wb.split_data(rest, settings.validation, seed=settings.seed)
    return train_rows, validation, held_out


def timed(predict, inputs: list) -> tuple[list, float]:
    """(each input's prediction, mean milliseconds per prediction), one input at a time after
    an untimed warm-up on the first."""
    predict(inputs[0])
    outputs, seconds = [], 0.0
    for item in inputs:
        started = time.perf_counter()
        outputs.append(predict(item))
        seconds += time.perf_counter() - started
    return outputs, 1000 * seconds / len(inputs)


def _scored(name, answers, references, tokens, latency_ms, trainable, train_s, steps=0) -> dict:
    from workbench.evaluation.compare import score_answers

    scores, _ = score_answers(answers, references, ["label_accuracy"], LABELS)
    return {
        "way": name,
        "accuracy": scores["accuracy"],
        "invalid_rate": scores["invalid_rate"],
        "trainable_parameters": trainable,
        "steps": steps,
        "train_s": train_s,
        "latency_ms": latency_ms,
        "tokens_per_query": tokens,
    }


def _mean_tokens(tokenizer, texts: list[str]) -> float:
    return sum(len(tokenizer(t)["input_ids"]) for t in texts) / len(texts)


def prompting_ways(model, tokenizer, train_rows, held_out, settings: FourWaysSettings):
    """Zero-shot, k fixed and k retrieved examples on the base model: one result row each."""
    import torch

    import workbench as wb
    from workbench.evaluation.prompting import few_shot_prompt, hidden_state_embedder, query_text

    template = wb.get_template("alpaca")
    decoding = wb.Decoding(max_new_tokens=settings.max_new_tokens, batch_size=1)
    rows, pool = held_out.rows, train_rows.rows
    references = [r["output"] for r in rows]

    def answer(prompt: str) -> str:
        return wb.generate(model, tokenizer, [prompt], decoding)[0]

    results = []
    if "zero-shot" in settings.ways:
        prompts = [template.render_prompt(r, tokenizer) for r in rows]
        answers, ms = timed(answer, prompts)
        tokens = _mean_tokens(tokenizer, prompts)
        results.append(_scored("zero-shot", answers, references, tokens, ms, 0, 0.0))
    if "fixed" in settings.ways:
        fixed = random.Random(settings.seed).sample(pool, settings.shots)
        prompts = [few_shot_prompt(r, fixed, template, tokenizer) for r in rows]
        answers, ms = timed(answer, prompts)
        tokens = _mean_tokens(tokenizer, prompts)
        name = f"{settings.shots}-shot fixed"
        results.append(_scored(name, answers, references, tokens, ms, 0, 0.0))
    if "retrieved" in settings.ways:
        embed = hidden_state_embedder(model, tokenizer)
        started = time.perf_counter()  # the pool is embedded once: retrieval's training
        pool_vectors = torch.nn.functional.normalize(embed([query_text(s) for s in pool]), dim=-1)
        index_s = time.perf_counter() - started
        used_tokens = []

        def retrieve_and_answer(row: dict) -> str:
            query = torch.nn.functional.normalize(embed([query_text(row)]), dim=-1)
            nearest = (query @ pool_vectors.T)[0].topk(settings.shots).indices.tolist()
            shots = [pool[j] for j in reversed(nearest)]  # nearest last, next to the question
            prompt = few_shot_prompt(row, shots, template, tokenizer)
            used_tokens.append(len(tokenizer(prompt)["input_ids"]))
            return answer(prompt)

        answers, ms = timed(retrieve_and_answer, rows)
        tokens = sum(used_tokens[1:]) / len(rows)  # the warm-up's prompt left out
        name = f"{settings.shots}-shot retrieved"
        results.append(_scored(name, answers, references, tokens, ms, 0, index_s))
    return results


def classifier_way(kind: str, train_rows, validation, held_out, settings, run_dir=None):
    """(result row, finished Run) of a classification head ('head' or 'head+lora')."""
    import workbench as wb
    from workbench.evaluation.classifying import predict_proba
    from workbench.training.classification import train_classifier
    from workbench.training.heads import ClassifierMethod

    lora = kind == "head+lora"
    steps = settings.head_lora_steps if lora else settings.head_steps
    hyperparameters = wb.Hyperparameters(
        max_steps=steps,
        batch_size=settings.batch_size,
        learning_rate=settings.head_lora_learning_rate if lora else settings.head_learning_rate,
        eval_every=steps,  # evaluations at the start and at the end
        packing=False,
        eval_metric_rows=0,
        seed=settings.seed,
    )
    model, tokenizer = wb.load_model(settings.model, device="cpu")
    started = time.perf_counter()
    run = train_classifier(
        model,
        tokenizer,
        train_rows,
        validation,
        labels=LABELS,
        text_fields=("input",),
        method=ClassifierMethod(kind=kind, r=settings.lora_r),
        hyperparameters=hyperparameters,
        run_dir=run_dir,
    ).wait()
    train_s = time.perf_counter() - started
    if run.status != "finished":
        raise RuntimeError(f"{kind}: the run ended {run.status}: {run.error}")
    texts = [r["input"] for r in held_out.rows]

    def predict(text: str) -> str:
        probabilities = predict_proba(run.model, tokenizer, [text])[0]
        return max(probabilities, key=probabilities.get)

    answers, ms = timed(predict, texts)
    references = [r["output"] for r in held_out.rows]
    name = "head + LoRA" if lora else "head only"
    trainable = run.parameters.trainable
    tokens = _mean_tokens(tokenizer, texts)
    row = _scored(name, answers, references, tokens, ms, trainable, train_s, steps)
    return row, run


def generative_lora_way(train_rows, validation, held_out, settings, run_dir=None):
    """(result row, finished Run) of LoRA fine-tuning that answers with the topic's name."""
    import workbench as wb

    hyperparameters = wb.Hyperparameters(
        max_steps=settings.lora_steps,
        batch_size=settings.batch_size,
        learning_rate=settings.lora_learning_rate,
        eval_every=settings.lora_steps,
        eval_metric_rows=0,
        seed=settings.seed,
    )
    model, tokenizer = wb.load_model(settings.model, device="cpu")
    started = time.perf_counter()
    run = wb.train(
        model,
        tokenizer,
        train_rows,
        validation,
        template="alpaca",
        method=wb.Method(kind="lora", r=settings.lora_r),
        hyperparameters=hyperparameters,
        run_dir=run_dir,
        samples=0,
    ).wait()
    train_s = time.perf_counter() - started
    if run.status != "finished":
        raise RuntimeError(f"generative LoRA: the run ended {run.status}: {run.error}")
    template = wb.get_template("alpaca")
    decoding = wb.Decoding(max_new_tokens=settings.max_new_tokens, batch_size=1)
    prompts = [template.render_prompt(r, tokenizer) for r in held_out.rows]
    answers, ms = timed(lambda p: wb.generate(run.model, tokenizer, [p], decoding)[0], prompts)
    references = [r["output"] for r in held_out.rows]
    trainable = run.parameters.trainable
    tokens = _mean_tokens(tokenizer, prompts)
    steps = settings.lora_steps
    row = _scored("generative LoRA", answers, references, tokens, ms, trainable, train_s, steps)
    return row, run


def measure(settings: FourWaysSettings, runs_root: Path | None = None) -> list[dict]:
    """Every way of `settings.ways` on the same held-out rows: one result row each. Runs go
    to `runs_root` (default: the workbench's runs folder)."""
    import workbench as wb

    train_rows, validation, held_out = split(settings)
    folder = (lambda name: runs_root / name) if runs_root else (lambda name: None)
    results = []
    if {"zero-shot", "fixed", "retrieved"} & set(settings.ways):
        model, tokenizer = wb.load_model(settings.model, device="cpu")
        results += prompting_ways(model, tokenizer, train_rows, held_out, settings)
        del model
    for kind in ("head", "head+lora"):
        if kind in settings.ways:
            where = folder(kind.replace("+", "-"))
            results.append(
                classifier_way(kind, train_rows, validation, held_out, settings, where)[0]
            )
    if "generative LoRA" in settings.ways:
        where = folder("generative-lora")
        results.append(generative_lora_way(train_rows, validation, held_out, settings, where)[0])
    return results


def results_table(results: list[dict]):
    """The result rows as a table, one row per way (pandas)."""
    import pandas as pd

    return pd.DataFrame(results).set_index("way")


def quick_settings(model_dir: str) -> FourWaysSettings:
    """A smoke run: a few rows and steps on a tiny local model."""
    return FourWaysSettings(
        model=model_dir,
        held_out=8,
        validation=4,
        shots=2,
        head_steps=2,
        head_lora_steps=2,
        lora_steps=2,
        max_new_tokens=3,
    )


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="a tiny random model, a few rows")
    for f in dataclasses.fields(FourWaysSettings):
        if f.name != "ways":
            p.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=None)
    p.add_argument("--ways", default=",".join(WAYS), help=f"comma-separated: {WAYS}")
    p.add_argument("--out", default=None, help="default: benchmarks/results/DATE-cpu-four-ways")
    return p.parse_args(argv)


def main(argv=None) -> None:
    import pandas
    import torch

    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="four-ways-") as scratch:
        scratch = Path(scratch)
        settings = quick_settings(str(tiny_model_folder(scratch / "tiny"))) if args.quick else None
        settings = settings or FourWaysSettings()
        given = {
            f.name: getattr(args, f.name)
            for f in dataclasses.fields(FourWaysSettings)
            if f.name != "ways" and getattr(args, f.name) is not None
        }
        ways = tuple(w.strip() for w in args.ways.split(","))
        unknown = set(ways) - set(WAYS)
        if unknown:
            raise SystemExit(f"--ways: unknown {sorted(unknown)}; choose from {WAYS}")
        settings = dataclasses.replace(settings, ways=ways, **given)
        started, load_before = time.perf_counter(), os.getloadavg()
        results = measure(settings, runs_root=scratch / "runs")
        total_s = time.perf_counter() - started
    report = {
        "environment": {
            **environment(argparse.Namespace(device="cpu")),
            "torch_threads": torch.get_num_threads(),
            # other work on the machine: 1-minute load averages before and after
            "load_average": [load_before[0], os.getloadavg()[0]],
        },
        "settings": {**dataclasses.asdict(settings), "quick": args.quick},
        "total_s": total_s,
        "results": results,
    }
    table = results_table(results)
    with pandas.option_context("display.width", 200, "display.max_columns", 20):
        print(table.round(3).to_string())
    print(f"{total_s:.0f} s in all, {torch.get_num_threads()} torch thread(s)")
    if args.quick and not args.out:
        return  # a smoke run leaves no result file behind
    date = report["environment"]["date"]
    out = Path(args.out or f"benchmarks/results/{date}-cpu-four-ways.json")
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
