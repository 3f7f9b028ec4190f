"""Command line: `python -m workbench demo | preview | resume RUN_DIR | report RUN_DIR`."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="workbench", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="fine-tune the embedded model on sample data")
    demo.add_argument("--max-steps", type=int, default=None, help="training steps (default 40)")
    demo.add_argument("--model", default=None, help="model name, folder or hub id")
    preview = commands.add_parser("preview", help="show how a dataset is templated and tokenised")
    preview.add_argument("data", help="a dataset file")
    preview.add_argument("--template", default=None, help="built-in template name")
    preview.add_argument("--row", type=int, default=0)
    preview.add_argument("--max-length", type=int, default=256)
    resume = commands.add_parser("resume", help="continue a stopped or killed run")
    resume.add_argument("run_dir")
    report = commands.add_parser("report", help="(re)write report.html for a run directory")
    report.add_argument("run_dir")
    args = parser.parse_args(argv)

    if args.command == "demo":
        from workbench.demo import DemoSettings, run_demo
        from workbench.models import DEFAULT_MODEL

        settings = DemoSettings()
        if args.max_steps:
            settings.max_steps = args.max_steps
        run_demo(settings, model_name=args.model or DEFAULT_MODEL)
    elif args.command == "preview":
        _preview(args)
    elif args.command == "resume":
        from workbench.train import resume_run

        run = resume_run(args.run_dir)
        run.add_callback("step", lambda e: print(f"step {e['step']}: loss {e['loss']:.4f}"))
        run.wait()
        print(f"{run.status}" + (f": {run.error}" if run.error else ""))
        return 0 if run.status == "finished" else 1
    elif args.command == "report":
        from workbench.report import write_report

        print(write_report(args.run_dir))
    return 0


def _preview(args: argparse.Namespace) -> None:
    from workbench import dataset_stats, default_template, get_template, load_data, load_model
    from workbench.tokenize import token_view, token_view_text

    _, tokenizer = load_model()
    data = load_data(args.data)
    template = get_template(args.template) if args.template else default_template(data.format)
    prompt, response = template.render(data[args.row], tokenizer, data.where(args.row))
    tokens, item = token_view(prompt, response, tokenizer, max_length=args.max_length)
    print(f"template `{template.name}`, row {data.where(args.row)} ([..] carry loss):\n")
    print(token_view_text(tokens))
    print(f"\n{item.prompt_tokens} prompt + {item.response_tokens} response tokens")
    print(dataset_stats(data, template, tokenizer, max_length=args.max_length))


if __name__ == "__main__":
    sys.exit(main())
