"""Command line: `python -m workbench demo | preview | check | resume | report | runs | export |
dpo | rl`."""

from __future__ import annotations

import argparse
import sys

from workbench.cli_data import add_check_command, add_preview_command, check, preview
from workbench.data.loading import load_data
from workbench.errors import WorkbenchError
from workbench.evaluation.rewards import labels_in, one_of_labels, valid_iso_date
from workbench.experiments.preferences import preference_experiment
from workbench.experiments.reinforcement import rl_experiment
from workbench.interfaces.export import (
    check_can_push,
    export_script,
    merge_adapter,
    push_to_hub,
)
from workbench.interfaces.gguf_export import export_gguf
from workbench.interfaces.recipe_command import report_before_after, train_recipe
from workbench.lessons.demo import DemoSettings, run_demo
from workbench.model.loading import DEFAULT_MODEL, load_model
from workbench.runs.history import compare_runs, list_runs
from workbench.runs.listing import comparison_text, runs_text
from workbench.runs.report import write_report
from workbench.runs.saved import load_run_model
from workbench.tokens.templates import get_template
from workbench.training.preference import PreferenceSettings
from workbench.training.reinforcement import RLSettings
from workbench.training.resume import resume


def main(argv: list[str] | None = None) -> int:
    """Run one command. Errors a user can cause (a bad file or setting, a finished or busy run
    directory, no checkpoint) print their message and exit 2; tracebacks are kept for bugs."""
    try:
        return _run_command(argv)
    except (WorkbenchError, FileNotFoundError, ValueError) as error:
        print(f"workbench: {error}", file=sys.stderr)
        return 2


def _run_command(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="workbench", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    _add_lesson_commands(commands)
    add_check_command(commands)
    resume = commands.add_parser("resume", help="continue a stopped or killed run")
    resume.add_argument("run_dir")
    resume.add_argument(
        "--max-steps", type=int, default=None, help="train a finished run further, to this step"
    )
    report = commands.add_parser("report", help="(re)write report.html for a run directory")
    report.add_argument("run_dir")
    recipe = commands.add_parser("train", help="train from a recipe YAML or a run's config.yaml")
    recipe.add_argument("config", help="e.g. configs/lora_support_tickets.yaml")
    recipe.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE")
    _add_history_commands(commands)
    _add_rl_command(commands)
    args = parser.parse_args(argv)
    if args.command == "train":
        return train_recipe(args.config, args.set)
    handlers = {"runs": _runs, "export": _export, "dpo": _dpo, "rl": _rl}
    handlers.update(check=check, preview=preview)  # the data commands: workbench/cli_data.py
    if args.command in handlers:
        return handlers[args.command](args)

    if args.command == "demo":
        settings = DemoSettings(
            max_steps=args.max_steps, held_out=args.held_out, validation=args.validation
        )
        run_demo(settings, model_name=args.model or DEFAULT_MODEL)
    elif args.command == "resume":
        return _resume(args)
    elif args.command == "report":
        print(write_report(args.run_dir))  # a folder that holds no run exits 2, creating nothing
    return 0


def _resume(args: argparse.Namespace) -> int:
    """Continue a run; a recipe run that recorded held-out rows ends with its before/after."""
    run = resume(args.run_dir, max_steps=args.max_steps)
    run.add_callback("step", lambda e: print(f"step {e['step']}: loss {e['loss']:.4f}"))
    run.wait()
    if run.status == "finished":
        report_before_after(run)
    print(f"{run.status}" + (f": {run.error}" if run.error else ""))
    return 0 if run.status == "finished" else 1


def _add_lesson_commands(commands) -> None:
    demo = commands.add_parser("demo", help="fine-tune the embedded model on sample data")
    demo.add_argument(
        "--max-steps",
        type=int,
        default=DemoSettings.max_steps,
        help="training steps (default %(default)s)",
    )
    demo.add_argument(
        "--held-out",
        type=int,
        default=DemoSettings.held_out,
        help="rows measured before and after, never trained on (default %(default)s)",
    )
    demo.add_argument(
        "--validation",
        type=int,
        default=DemoSettings.validation,
        help="rows for the validation loss curve (default %(default)s)",
    )
    demo.add_argument("--model", default=None, help="model name, folder or hub id")
    add_preview_command(commands)


def _add_history_commands(commands) -> None:
    runs = commands.add_parser("runs", help="list run directories; --compare A B to diff them")
    runs.add_argument("--root", default=None, help="folder of runs (default $WORKBENCH_RUNS)")
    runs.add_argument("--compare", nargs="+", default=None, metavar="RUN_DIR")
    export = commands.add_parser("export", help="merged model and/or standalone training script")
    export.add_argument("run_dir")
    export.add_argument("--merged", action="store_true", help="write <run>/merged (safetensors)")
    export.add_argument("--script", action="store_true", help="write <run>/export (train.py)")
    export.add_argument("--gguf", action="store_true", help="<run>/gguf: llama.cpp/Ollama")
    export.add_argument("--gguf-type", choices=("f16", "q8_0"), default="f16")
    export.add_argument("--out", default=None, help="folder instead of <run>/merged|export")
    export.add_argument("--push-to-hub", default=None, metavar="USER/NAME", help="needs network")
    dpo = commands.add_parser("dpo", help="preference-tune a finished LoRA run (DPO)")
    dpo.add_argument("run_dir", help="the instruction-tuned (SFT) run")
    dpo.add_argument("--data", default="sample_data/preferences.jsonl")
    dpo.add_argument("--held-out", type=int, default=16, help="pairs kept out to measure")
    dpo.add_argument("--max-steps", type=int, default=20)
    dpo.add_argument("--beta", type=float, default=0.1)
    defaults = "(default %(default)s)"
    dpo.add_argument(
        "--learning-rate", type=float, default=PreferenceSettings.learning_rate, help=defaults
    )
    dpo.add_argument(
        "--batch-size", type=int, default=PreferenceSettings.batch_size, help=f"pairs {defaults}"
    )


def _add_rl_command(commands) -> None:
    rl = commands.add_parser("rl", help="reinforcement learning (GRPO or PPO) with a reward")
    rl.add_argument("run_dir", nargs="?", help="a finished LoRA run to go on from (else --model)")
    rl.add_argument("--model", default=None, help="without run_dir: the model (default: embedded)")
    rl.add_argument("--template", default="chat", help="without run_dir (default %(default)s)")
    rl.add_argument("--prompts", default="sample_data/date_rewrite.jsonl")
    rl.add_argument(
        "--reward",
        default="iso_date",
        help="iso_date, labels (the prompt rows' answers), labels:a,b,c, or a reward model's "
        "run directory (default %(default)s)",
    )
    rl.add_argument("--algorithm", choices=("grpo", "ppo"), default="grpo")
    rl.add_argument("--held-out", type=int, default=16, help="prompts kept out to measure")
    rl.add_argument("--max-steps", type=int, default=16)
    rl.add_argument("--learning-rate", type=float, default=2e-4)
    rl.add_argument("--batch-size", type=int, default=16, help="answers per batch")
    rl.add_argument(
        "--num-generations", type=int, default=None, help="answers per prompt (GRPO 4, PPO 1)"
    )


def _rl(args: argparse.Namespace) -> int:
    """Reinforcement learning on held-out-measured prompts, printing the reward as it goes."""
    settings = RLSettings(
        max_steps=args.max_steps,
        learning_rate=args.learning_rate,
        batch_size=args.batch_size,
        num_generations=args.num_generations or (4 if args.algorithm == "grpo" else 1),
        eval_every=args.max_steps,
    )
    settings.check_for(args.algorithm)
    prompts = load_data(args.prompts, verbose=False)
    reward = _reward_of(args.reward, prompts)
    if args.run_dir:
        model, tokenizer, template = load_run_model(args.run_dir, trainable=True)
    else:
        model, tokenizer = load_model(args.model or DEFAULT_MODEL)
        template = get_template(args.template)
    experiment = rl_experiment(
        prompts, held_out=args.held_out, model=model, tokenizer=tokenizer, reward=reward,
        template=template, settings=settings, algorithm=args.algorithm, parent=args.run_dir,
        start=False,
    )  # fmt: skip
    run = experiment.run
    print(f"before {args.algorithm.upper()}: {experiment.reward_before} ({experiment.reward.name})")
    run.add_callback("step", _print_rl_step)
    run.start().wait()
    if run.status == "finished":
        experiment.measure_after()
        print(experiment.summary())
    print(f"{run.status}: {run.run_dir}" + (f" ({run.error})" if run.error else ""))
    return 0 if run.status == "finished" else 1


def _reward_of(text: str, prompts):
    """The `--reward` choice as `reinforce` takes it."""
    from pathlib import Path

    if text == "iso_date":
        return valid_iso_date
    if text == "labels":
        return one_of_labels(labels_in(prompts))
    if text.startswith("labels:"):
        return one_of_labels([label.strip() for label in text[len("labels:") :].split(",")])
    if Path(text).is_dir():
        return text  # a reward model's run directory
    raise ValueError(
        f"--reward {text!r}: use iso_date, labels, labels:a,b,c or a reward model's run folder."
    )


def _print_rl_step(event: dict) -> None:
    line = f"step {event['step']}: loss {event['loss']:.4f}"
    if event.get("mean_reward") is not None:  # PPO: on the steps that sampled answers
        line += f" mean reward {event['mean_reward']:.3f} KL {event['kl']:.3f}"
    print(line, flush=True)


def _runs(args: argparse.Namespace) -> int:
    """The run listing, or the comparison of several runs, each line within 120 characters."""
    if args.compare:
        print(comparison_text(compare_runs(args.compare)))
        return 0
    records = list_runs(args.root)
    print(runs_text(records))
    for record in records:
        for problem in record.problems:
            print(f"{record.name}: {problem}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from pathlib import Path

    if args.push_to_hub:  # before anything is written: offline, nothing would be pushed
        check_can_push(args.push_to_hub)
    both = not (args.merged or args.script or args.gguf)
    merged = None
    if args.merged or both:
        merged = merge_adapter(args.run_dir, args.out if args.merged else None)
        print(f"merged model: {merged}")
    if args.script or both:
        print(f"training script: {export_script(args.run_dir, args.out if args.script else None)}")
    if args.gguf:
        out = None if args.merged or args.script else args.out
        gguf = export_gguf(args.run_dir, out, quantization=args.gguf_type)
        print(f"GGUF model: {gguf} (Modelfile beside it)")
    if args.push_to_hub:
        folder = merged or Path(args.run_dir) / "adapter"
        print(push_to_hub(folder, args.push_to_hub))
    return 0


def _dpo(args: argparse.Namespace) -> int:
    settings = PreferenceSettings(
        max_steps=args.max_steps,
        beta=args.beta,
        learning_rate=args.learning_rate,
        batch_size=args.batch_size,
    )
    experiment = preference_experiment(
        load_data(args.data, verbose=False),
        held_out=args.held_out,
        sft_run_dir=args.run_dir,
        settings=settings,
        start=False,
    )
    run = experiment.run
    run.add_callback(
        "step",
        lambda e: print(f"step {e['step']}: loss {e['loss']:.4f} margin {e['reward_margin']:.3f}"),
    )
    run.start().wait()
    experiment.measure_after()
    print(experiment.summary())
    print(f"{run.status}: {run.run_dir}" + (f" ({run.error})" if run.error else ""))
    return 0 if run.status == "finished" else 1


if __name__ == "__main__":
    sys.exit(main())
