"""Continued pre-training on the invented product manual: perplexity on the domain and in general.

    OMP_NUM_THREADS=1 flock /tmp/wb-measure.lock python -m benchmarks.pretraining
    OMP_NUM_THREADS=1 flock /tmp/wb-measure.lock python -m benchmarks.pretraining --qa RUN_DIR
    OMP_NUM_THREADS=1 python -m benchmarks.pretraining --quick     # tiny random model: a smoke run

The first command trains every weight of the embedded model (`--method full`) on
`sample_data/domain/manual_train.jsonl` (52,339 tokens, one epoch of 256-token blocks, 4 a
step) with `continue_pretraining`, and measures perplexity on the held-out manual documents
(the gain) and on general English (the forgetting), before and after. Why full: in a 12-step
pilot on this CPU it lowered held-out domain perplexity 51.2 -> 18.0, LoRA r=16 at 5e-4 only
to 26.2, at about the same speed (`results/2026-11-30-cpu-pretraining-pilot-*.json`).
General text is also measured without its EOS separators (`text only perplexity`): a model
that learns the raw-text format (a document ends with EOS) gains there on any text, which can
hide forgetting. It keeps the run directory (under `runs/`, or `$WORKBENCH_RUNS`) and writes
`benchmarks/results/<date>-cpu-pretraining.json`.

`--qa RUN_DIR` is the optional second measurement: LoRA instruction tuning on the manual's
question/answer rows (`domain_qa.jsonl`), once on the base model and once on top of that
run's continued pre-training (its `model/` or `adapter/`), both scored on
`domain_qa_held_out.jsonl` (facts no training question asks about, all stated in the manual):
exact match, and the loss of the reference answer. It writes `<date>-cpu-pretraining-qa.json`.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from benchmarks.training import environment
from benchmarks.workloads import tiny_model_folder

DOMAIN = Path(__file__).resolve().parent.parent / "sample_data" / "domain"
PROMPTS = 3  # held-out documents whose opening is continued before and after, for a look


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="a tiny random model, a few documents")
    p.add_argument("--method", choices=["lora", "full"], default="full")
    p.add_argument("--rank", type=int, default=16, help="LoRA rank (alpha = 2 x rank)")
    p.add_argument("--learning-rate", type=float, default=None, help="lora 5e-4, full 5e-5")
    p.add_argument("--block-size", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=4, help="blocks per optimizer step")
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--max-steps", type=int, default=-1, help="if > 0, overrides --epochs")
    p.add_argument("--qa", default=None, metavar="RUN_DIR", help="the QA comparison on a run")
    p.add_argument("--qa-epochs", type=float, default=3.0)
    p.add_argument("--out", default=None, help="default: benchmarks/results/DATE-cpu-...json")
    return p.parse_args(argv)


def load(args, scratch: Path):
    import workbench as wb

    if not args.quick:
        return wb.load_model()
    return wb.load_model(str(tiny_model_folder(scratch / "tiny")))


def documents(quick: bool) -> dict:
    from workbench.training.pretraining import read_documents

    sets = {
        "train": read_documents(DOMAIN / "manual_train.jsonl"),
        "domain": read_documents(DOMAIN / "manual_held_out.jsonl"),
        "general": read_documents(DOMAIN / "general_text.jsonl"),
    }
    if quick:
        sets = {
            name: docs.select(range(24 if name == "train" else 8)) for name, docs in sets.items()
        }
    return sets


# -- continued pre-training ---------------------------------------------------------------
def measure_pretraining(args, scratch: Path) -> dict:
    import workbench as wb
    from workbench.training.pretraining import continue_pretraining, perplexity, perplexity_table

    model, tokenizer = load(args, scratch)
    sets = documents(args.quick)
    held = {name: sets[name] for name in ("domain", "general")}
    started = time.perf_counter()
    before = {
        name: perplexity(model, tokenizer, docs, block_size=args.block_size)
        for name, docs in held.items()
    }
    measure_s = time.perf_counter() - started
    general_before = text_and_separators(model, tokenizer, held["general"], args.block_size)
    openings = [r["text"] for r in sets["domain"].rows[:PROMPTS]]
    prompts = [tokenizer.decode(tokenizer(t)["input_ids"][:24]) for t in openings]
    decoding = wb.Decoding(max_new_tokens=24)
    answers_before = wb.generate(model, tokenizer, prompts, decoding)
    method = wb.Method(kind=args.method, r=args.rank, alpha=2 * args.rank)
    hp = wb.Hyperparameters(
        learning_rate=args.learning_rate or (5e-4 if args.method == "lora" else 5e-5),
        epochs=args.epochs,
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        warmup=0.05,
        lr_scheduler="cosine",
        eval_every=10_000,  # no validation during the run: perplexity is measured around it
        keep_checkpoints=1,
    )
    started = time.perf_counter()
    run = continue_pretraining(
        model,
        tokenizer,
        sets["train"],
        block_size=args.block_size,
        method=method,
        hyperparameters=hp,
        run_dir=scratch / "pretrain" if args.quick else None,  # kept for --qa otherwise
        samples=0,
    ).wait()
    train_s = time.perf_counter() - started
    if run.status != "finished":
        raise SystemExit(f"the run {run.status}: {run.error}")
    table = perplexity_table(
        run.model, tokenizer, held, block_size=args.block_size, before=before, run_dir=run.run_dir
    )
    steps = [e for e in run.events if e["event"] == "step"]
    general_after = text_and_separators(run.model, tokenizer, held["general"], args.block_size)
    return {
        "run_dir": str(run.run_dir),
        "train_tokens": steps[-1]["tokens_seen"],
        "steps": len(steps),
        "train_s": train_s,
        "tokens_per_s": steps[-1]["tokens_seen"] / train_s,
        "perplexity_measure_s": measure_s,
        "first_losses": [round(e["loss"], 4) for e in steps[:5]],
        "last_losses": [round(e["loss"], 4) for e in steps[-5:]],
        "perplexity": {
            name: {
                "before": float(row["before"]),
                "after": float(row["after"]),
                "change_percent": 100 * (row["after"] / row["before"] - 1),
                "tokens": before[name.split()[0]].tokens,
            }
            for name, row in table.to_dict("index").items()
        },
        "general_by_token": {
            kind: {"before": general_before[kind], "after": general_after[kind]}
            for kind in general_before
        },
        "continuations": [
            {"prompt": p, "before": b, "after": a}
            for p, b, a in zip(
                prompts, answers_before, wb.generate(run.model, tokenizer, prompts, decoding)
            )
        ],
    }


def text_and_separators(model, tokenizer, documents, block_size: int) -> dict:
    """Perplexity on the text tokens alone and the mean loss on the EOS separators, of
    documents cut into blocks as `perplexity` cuts them."""
    import torch
    import torch.nn.functional as F

    from workbench.model.generation import eval_mode
    from workbench.tokens.blocks import BlockCollator, token_blocks

    blocks = token_blocks([r["text"] for r in documents.rows], tokenizer, block_size)
    collate = BlockCollator(tokenizer.pad_token_id)
    losses, separator = [], []
    with eval_mode(model), torch.no_grad():
        for start in range(0, len(blocks), 4):
            batch = collate([{"input_ids": b} for b in blocks.blocks[start : start + 4]])
            logits = model(**{k: batch[k] for k in ("input_ids", "attention_mask")}).logits
            targets = batch["labels"][:, 1:]
            loss = F.cross_entropy(
                logits[:, :-1].float().transpose(1, 2), targets, reduction="none"
            )
            kept = targets != -100
            losses.append(loss[kept])
            separator.append(targets[kept] == tokenizer.eos_token_id)
    losses, separator = torch.cat(losses), torch.cat(separator)
    return {
        "text only perplexity": math.exp(losses[~separator].mean().item()),
        "separator loss": losses[separator].mean().item(),
        "separators": int(separator.sum()),
    }


# -- instruction tuning with and without continued pre-training ----------------------------
def measure_qa(args, scratch: Path) -> dict:
    """LoRA instruction tuning on the training questions, from the base model and from the
    run's continued pre-training; both scored on the held-out questions."""
    import workbench as wb
    from workbench.runs.saved import load_adapter

    train = wb.load_data(DOMAIN / "domain_qa.jsonl", verbose=False)
    held_out = wb.load_data(DOMAIN / "domain_qa_held_out.jsonl", verbose=False)
    if args.quick:
        train, held_out = train.select(range(16)), held_out.select(range(8))
    hp = wb.Hyperparameters(
        learning_rate=3e-4,
        epochs=args.qa_epochs,
        batch_size=8,
        eval_every=10_000,
        keep_checkpoints=1,
        sample_max_new_tokens=8,
    )
    decoding = wb.Decoding(max_new_tokens=16)
    results = {}
    for name in ("instruction tuning alone", "continued pre-training, then instruction tuning"):
        model, tokenizer = load(args, scratch)
        if name.startswith("continued") and (Path(args.qa) / "adapter").is_dir():
            model = load_adapter(model, Path(args.qa) / "adapter", trainable=True)
        elif name.startswith("continued"):  # full continued pre-training: its whole model
            model, tokenizer = wb.load_model(str(Path(args.qa) / "model"))
        started = time.perf_counter()
        run = wb.train(
            model,
            tokenizer,
            train,
            template="alpaca",
            hyperparameters=hp,
            run_dir=scratch / name.split()[0] if args.quick else None,
            samples=0,
        ).wait()
        if run.status != "finished":
            raise SystemExit(f"{name}: the run {run.status}: {run.error}")
        evaluation = wb.evaluate_model(run.model, tokenizer, held_out, "alpaca", decoding=decoding)
        results[name] = {
            "exact_match": evaluation.scores["exact_match"],
            "rouge_l": evaluation.scores["rouge_l"],
            "answer_loss": evaluation.scores["validation_loss"],
            "train_s": time.perf_counter() - started,
            "run_dir": str(run.run_dir),
            "answers": [
                {"question": q, "reference": r, "answer": a}
                for q, r, a in zip(evaluation.questions, evaluation.references, evaluation.answers)
            ][:8],
        }
    return {"train_questions": len(train), "held_out_questions": len(held_out), **results}


def main(argv=None) -> None:
    import tempfile

    import torch

    args = parse_args(argv)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="pretraining-") as scratch:
        measure = measure_qa if args.qa else measure_pretraining
        results = measure(args, Path(scratch))
    report = {
        "environment": {
            **environment(argparse.Namespace(device="cpu")),
            "torch_threads": torch.get_num_threads(),
        },
        "settings": vars(args),
        "total_s": time.perf_counter() - started,
        "results": results,
    }
    print(json.dumps(report, indent=1))
    if args.quick and not args.out:
        return  # a smoke run leaves no result file behind
    name = "pretraining-qa" if args.qa else "pretraining"
    out = Path(args.out or f"benchmarks/results/{report['environment']['date']}-cpu-{name}.json")
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
