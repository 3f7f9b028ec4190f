"""The main job: the whole fine-tuning story on the embedded model and sample data, on a CPU.

Template -> base model measured on held-out rows -> LoRA fine-tuning with a progress bar ->
measured again -> before/after table -> report.html. Held-out rows never reach training.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from workbench.data.loading import load_data
from workbench.data.shipped import sample_file
from workbench.data.splits import split_data
from workbench.evaluation.compare import compare, evaluate_model
from workbench.model.generation import Decoding
from workbench.model.loading import DEFAULT_MODEL, load_model
from workbench.model.methods import Method
from workbench.runs.hyperparameters import Hyperparameters
from workbench.runs.progress import progress_bar
from workbench.runs.report import save_comparison, write_report
from workbench.tokens.templates import get_template
from workbench.tokens.tokenizing import token_view, token_view_text
from workbench.training.finetune import train

LABELS = ["billing", "shipping", "technical", "account"]


@dataclass
class DemoSettings:
    """What the demo trains; the defaults fit about 4 minutes of training on 2 CPU cores."""

    data: str | None = None  # None: the shipped sample_data/support_tickets.jsonl
    held_out: int = 48  # rows never trained on, measured before and after (12 per topic)
    validation: int = 16  # rows for the validation loss curve
    max_steps: int = 32  # 32 steps x 8 rows = 256 rows: one epoch of the train rows
    learning_rate: float = 3e-4  # LoRA on a small model tolerates a high rate
    eval_every: int = 8
    seed: int = 0


def _section(title: str) -> None:
    print(f"\n=== {title} " + "=" * max(0, 70 - len(title)))


def run_demo(settings: DemoSettings | None = None, model_name: str = DEFAULT_MODEL) -> dict:
    """Run the story end to end and return the measured figures."""
    import pandas as pd

    s = settings or DemoSettings()
    _section("1. Model and data")
    started = time.perf_counter()
    model, tokenizer = load_model(model_name)
    print(f"loaded {model_name} in {time.perf_counter() - started:.1f} s")
    data = load_data(s.data or sample_file("support_tickets.jsonl"))
    rest, held_out = split_data(data, s.held_out, seed=s.seed)
    train_rows, validation = split_data(rest, s.validation, seed=s.seed)
    print(f"train {len(train_rows)} rows, validation {len(validation)}, held out {len(held_out)}")

    _section("2. The template, and the tokens the model is trained on ([..] carry loss)")
    template = get_template("alpaca")
    prompt, response = template.render(train_rows[0], tokenizer, train_rows.where(0))
    tokens, _ = token_view(prompt, response, tokenizer, max_length=256)
    print(token_view_text(tokens))

    decoding = Decoding(max_new_tokens=6, batch_size=16)
    metrics = ("label_accuracy", "exact_match")
    _section("3. The base model on the held-out rows")
    before = evaluate_model(
        model, tokenizer, held_out, template, metrics=metrics, labels=LABELS, decoding=decoding
    )
    for answer in before.answers[:3]:
        print(f"  base answer: {answer!r}")

    _section("4. Fine-tuning with LoRA")
    hp = Hyperparameters(
        max_steps=s.max_steps,
        learning_rate=s.learning_rate,
        eval_every=s.eval_every,
        batch_size=8,
        max_length=256,
        seed=s.seed,
        sample_max_new_tokens=6,
    )
    run = train(
        model,
        tokenizer,
        train_rows,
        validation,
        template=template,
        method=Method(kind="lora", r=16, alpha=32),  # dropout off (the default): faster
        settings=hp,
    )
    print(f"{run.parameters}; run directory {run.run_dir}")
    progress_bar(run)
    train_started = time.perf_counter()
    run.wait()
    train_seconds = time.perf_counter() - train_started
    if run.status != "finished":
        raise SystemExit(f"training {run.status}: {run.error}")

    _section("5. The fine-tuned model on the same held-out rows")
    after = evaluate_model(
        run.model, tokenizer, held_out, template, metrics=metrics, labels=LABELS, decoding=decoding
    )
    summary, rows = compare(before, after)
    with pd.option_context("display.float_format", "{:.3f}".format, "display.width", 120):
        print(summary)
        print(rows[["reference", "before", "after"]].head(8).to_string(index=False))
    save_comparison(run.run_dir, summary, rows)
    report = write_report(run.run_dir)
    speeds = [
        e["tokens_per_second"]
        for e in run.events
        if e["event"] == "step" and e.get("tokens_per_second")
    ]
    figures = {
        "train_seconds": train_seconds,
        "tokens_per_second": sum(speeds) / len(speeds) if speeds else None,
        "accuracy_before": before.scores["accuracy"],
        "accuracy_after": after.scores["accuracy"],
        "report": str(report),
    }
    _section("Summary")
    print(
        f"training took {train_seconds:.0f} s at {figures['tokens_per_second'] or 0:.0f} "
        f"tokens/s; held-out accuracy {100 * figures['accuracy_before']:.0f}% -> "
        f"{100 * figures['accuracy_after']:.0f}%"
    )
    print(f"report: {report}")
    return figures
