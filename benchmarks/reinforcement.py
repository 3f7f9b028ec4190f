"""Reward model and reinforcement learning on the embedded model, on one CPU thread.

    OMP_NUM_THREADS=1 flock /tmp/wb-measure.lock python -m benchmarks.reinforcement --part reward
    OMP_NUM_THREADS=1 flock /tmp/wb-measure.lock python -m benchmarks.reinforcement --part grpo
    OMP_NUM_THREADS=1 flock /tmp/wb-measure.lock python -m benchmarks.reinforcement --part ppo
    (about 6-9 minutes each; a later part adds its figures to the day's JSON when the settings
    the earlier parts used are unchanged)
    python -m benchmarks.reinforcement --model PATH --quick --out /tmp/q.json   # a tiny model

Three measurements on SmolLM2-135M-Instruct (the embedded default), each on rows it never trains on:

- `reward`: a LoRA reward model trained on `sample_data/preferences.jsonl` (TRL's
  RewardTrainer through `train_reward_model`); the share of held-out pairs it ranks right,
  before training (the new scoring head) and after.
- `grpo`: GRPO (`reinforce`) on the instruct model with the verifiable reward `valid_iso_date`
  on the ISO-date prompts of `sample_data/date_rewrite.jsonl`, in the model's chat format; the
  mean reward of greedy answers to held-out prompts before and after, how many of those answers
  are also the right date (the reward checks the format only), and every answer side by side.
  The settings below raise it well within the time the issue allows (about 10 minutes).
- `ppo`: the same prompts, reward and held-out measure with PPO (`algorithm="ppo"`): one
  sampled answer per prompt, a value head as the baseline, several clipped updates per batch.

The JSON (benchmarks/results/<date>-cpu-reinforcement.json) holds the date, device, threads,
every setting, timings and figures.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_DATA = ROOT / "sample_data"


@dataclass(frozen=True)
class Plan:
    """Everything that sets the measurement; stored whole in the JSON."""

    model: str = "smollm2-135m-instruct"
    template: str = "chat"  # the instruct model's own chat format
    seed: int = 0
    # the reward model: 128 pairs to train on, 32 held out
    reward_held_out: int = 32
    reward_steps: int = 32  # two passes over the 128 pairs at 8 a step
    reward_batch_size: int = 8
    reward_learning_rate: float = 3e-4  # LoRA and the new head (1e-4 moved accuracy slowly)
    reward_lora_r: int = 16
    reward_max_length: int = 160  # the longest chat-formatted pair has about 110 tokens
    # GRPO: 4 prompts a step, 4 sampled answers each
    held_out: int = 32  # prompts answered greedily before and after; one answer is 3 points
    rl_steps: int = 16  # the sampled reward reached ~0.9 by step 8 in a pilot
    rl_batch_size: int = 16
    num_generations: int = 4
    rl_learning_rate: float = 2e-4
    rl_lora_r: int = 16
    beta: float = 0.04  # KL to the instruct model
    max_completion_length: int = 16  # an ISO date is 10 digit and dash tokens, plus EOS
    temperature: float = 1.0
    # PPO: 16 prompts a rollout, one answer each, 2 passes x 2 minibatches of 8 answers
    ppo_rollouts: int = 16  # as many sampled answers as GRPO's 16 steps x 16
    ppo_batch_size: int = 16
    ppo_epochs: int = 2
    ppo_minibatches: int = 2
    ppo_learning_rate: float = 2e-4
    ppo_value_learning_rate: float = 2e-4


def quick_plan(model: str) -> Plan:
    """Seconds on a tiny model: the same code paths, a few steps each."""
    return replace(
        Plan(model=model, template="alpaca"),
        reward_held_out=8,
        reward_steps=2,
        reward_max_length=512,  # the tiny tokenizer splits words into more tokens
        held_out=8,
        rl_steps=2,
        rl_batch_size=8,
        max_completion_length=4,
        ppo_rollouts=2,
        ppo_batch_size=8,
    )


def measure_reward_model(plan: Plan, run_root: Path) -> dict:
    import workbench as wb
    from workbench.model.methods import Method
    from workbench.training.reward import RewardSettings, train_reward_model

    model, tokenizer = wb.load_model(plan.model, device="cpu")
    pairs = wb.load_data(SAMPLE_DATA / "preferences.jsonl", verbose=False)
    train_pairs, held_out = wb.split_data(pairs, plan.reward_held_out, seed=plan.seed)
    settings = RewardSettings(
        max_steps=plan.reward_steps,
        batch_size=plan.reward_batch_size,
        learning_rate=plan.reward_learning_rate,
        eval_every=plan.reward_steps,  # held-out accuracy at the start and at the end
        max_length=plan.reward_max_length,
        seed=plan.seed,
    )
    started = time.perf_counter()
    run = train_reward_model(
        model,
        tokenizer,
        train_pairs,
        held_out,
        settings=settings,
        method=Method(r=plan.reward_lora_r, alpha=2 * plan.reward_lora_r),
        template=plan.template,
        run_dir=run_root / "reward",
    ).wait()
    seconds = time.perf_counter() - started
    if run.status != "finished":
        raise RuntimeError(f"the reward run ended {run.status}: {run.error}")
    evaluations = [e for e in run.events if e["event"] == "evaluation"]
    return {
        "train_pairs": len(train_pairs),
        "held_out_pairs": len(held_out),
        "pair_accuracy_before": evaluations[0]["eval_accuracy"],
        "pair_accuracy_after": evaluations[-1]["eval_accuracy"],
        "eval_loss_before": evaluations[0]["eval_loss"],
        "eval_loss_after": evaluations[-1]["eval_loss"],
        "seconds": round(seconds, 1),
        "steps": plan.reward_steps,
    }


def rl_settings(plan: Plan, algorithm: str):
    """The RLSettings of the GRPO or the PPO measurement."""
    from workbench.training.reinforcement import RLSettings

    shared = dict(
        beta=plan.beta,
        max_completion_length=plan.max_completion_length,
        temperature=plan.temperature,
        seed=plan.seed,
    )
    if algorithm == "grpo":
        return RLSettings(
            max_steps=plan.rl_steps,
            batch_size=plan.rl_batch_size,
            num_generations=plan.num_generations,
            learning_rate=plan.rl_learning_rate,
            eval_every=plan.rl_steps,
            **shared,
        )
    steps = plan.ppo_rollouts * plan.ppo_epochs * plan.ppo_minibatches
    return RLSettings(
        max_steps=steps,
        batch_size=plan.ppo_batch_size,
        num_generations=1,
        ppo_epochs=plan.ppo_epochs,
        minibatches=plan.ppo_minibatches,
        learning_rate=plan.ppo_learning_rate,
        value_learning_rate=plan.ppo_value_learning_rate,
        eval_every=steps,
        **shared,
    )


def measure_rl(plan: Plan, run_root: Path, algorithm: str) -> dict:
    import workbench as wb
    from workbench.evaluation.rewards import held_out_reward, valid_iso_date
    from workbench.model.methods import Method
    from workbench.tokens.templates import get_template
    from workbench.training.reinforcement import prompt_texts, reinforce

    model, tokenizer = wb.load_model(plan.model, device="cpu")
    dates = wb.load_data(SAMPLE_DATA / "date_rewrite.jsonl", verbose=False)
    train_rows, held_out = wb.split_data(dates, plan.held_out, seed=plan.seed)
    template = get_template(plan.template)
    prompts = prompt_texts(held_out, template, tokenizer)
    decoding = wb.Decoding(max_new_tokens=plan.max_completion_length)
    started = time.perf_counter()
    before = held_out_reward(model, tokenizer, prompts, valid_iso_date, decoding)
    measure_s = time.perf_counter() - started
    settings = rl_settings(plan, algorithm)
    started = time.perf_counter()
    run = reinforce(
        model,
        tokenizer,
        train_rows,
        reward=valid_iso_date,
        algorithm=algorithm,
        settings=settings,
        method=Method(r=plan.rl_lora_r, alpha=2 * plan.rl_lora_r),
        template=template,
        run_dir=run_root / algorithm,
    ).wait()
    train_s = time.perf_counter() - started
    if run.status != "finished":
        raise RuntimeError(f"the {algorithm} run ended {run.status}: {run.error}")
    after = held_out_reward(run.model, tokenizer, prompts, valid_iso_date, decoding)
    steps = [e for e in run.events if e["event"] == "step"]
    references = [row["output"] for row in held_out.rows]
    return {
        "train_prompts": len(train_rows),
        "held_out_prompts": len(prompts),
        "mean_reward_before": before.mean,
        "mean_reward_after": after.mean,
        # the reward checks the format only: how many answers are also the right date
        "correct_before": share_equal(before.answers, references),
        "correct_after": share_equal(after.answers, references),
        "per_step": {
            key: [e.get(key) for e in steps]
            for key in ("mean_reward", "kl", "response_length", "value_loss", "clip_fraction")
            if any(e.get(key) is not None for e in steps)
        },
        "answers": [
            {"input": row["input"], "reference": row["output"], "before": b, "after": a}
            for row, b, a in zip(held_out.rows, before.answers, after.answers)
        ],
        "train_s": round(train_s, 1),
        "held_out_measure_s": round(measure_s, 1),
        "steps": settings.max_steps,
        "sampled_answers": (
            plan.ppo_rollouts * plan.ppo_batch_size
            if algorithm == "ppo"
            else plan.rl_steps * plan.rl_batch_size
        ),
    }


def share_equal(answers: list[str], references: list[str]) -> float:
    return sum(a.strip() == r.strip() for a, r in zip(answers, references)) / len(references)


def peak_memory_gib() -> float:
    """The process's peak resident memory so far (Linux reports it in KiB)."""
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)


def environment() -> dict:
    import torch
    import transformers
    import trl

    return {
        "date": time.strftime("%Y-%m-%d"),
        "device": "cpu",
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
        "python": platform.python_version(),
    }


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--part", choices=("all", "reward", "grpo", "ppo"), default="all")
    p.add_argument("--model", default=None, help="default: the embedded SmolLM2-135M-Instruct")
    p.add_argument("--quick", action="store_true", help="a few steps each (a tiny --model)")
    p.add_argument("--out", default=None, help="default: benchmarks/results/<date>-cpu-...")
    return p.parse_args(argv)


def main(argv=None) -> None:
    import tempfile

    args = parse_args(argv)
    plan = quick_plan(args.model) if args.quick else Plan(model=args.model or Plan.model)
    name = f"{time.strftime('%Y-%m-%d')}-cpu-reinforcement.json"
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / name
    report = {"environment": environment(), "settings": asdict(plan)}
    if args.part != "all" and out.is_file():  # the other part, measured earlier today
        earlier = json.loads(out.read_text(encoding="utf-8"))
        settings = earlier.get("settings", {})
        if all(report["settings"].get(key) == value for key, value in settings.items()):
            report = {**earlier, **report}  # the new settings hold the earlier ones
    with tempfile.TemporaryDirectory(prefix="wb-reinforcement-") as folder:
        if args.part in ("all", "reward"):
            report["reward_model"] = measure_reward_model(plan, Path(folder))
            report["reward_model"]["peak_memory_gib"] = peak_memory_gib()
            print("reward model:", json.dumps(report["reward_model"]))
        for algorithm in ("grpo", "ppo"):
            if args.part in ("all", algorithm):
                report[algorithm] = measure_rl(plan, Path(folder), algorithm)
                report[algorithm]["peak_memory_gib"] = peak_memory_gib()  # of the process
                figures = report[algorithm]
                shown = {k: v for k, v in figures.items() if k not in ("answers", "per_step")}
                print(f"{algorithm}:", json.dumps(shown))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
