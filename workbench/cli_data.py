"""The command line's data commands: `check` (pre-flight checks on a dataset) and `preview` (how
one row is templated and tokenised). Both load only the model's tokenizer, never its weights,
and read the data as `load_data` does, with its options as flags: `--columns`,
`--drop-invalid`, `--drop-duplicates`.
"""

from __future__ import annotations

import argparse

from workbench.data.loading import load_data
from workbench.errors import DataValidationError
from workbench.model.loading import DEFAULT_MODEL, load_tokenizer
from workbench.tokens.checks import check_dataset, findings_summary
from workbench.tokens.stats import dataset_stats
from workbench.tokens.templates import get_template
from workbench.tokens.tokenizing import row_token_view, token_view_text


def column_pair(text: str) -> tuple[str, str]:
    """`question=instruction` -> ("question", "instruction"), for `--columns`."""
    source, _, standard = text.partition("=")
    if not source.strip() or not standard.strip():
        raise argparse.ArgumentTypeError(
            f"{text!r}: write SOURCE=STANDARD, e.g. --columns question=instruction"
        )
    return source.strip(), standard.strip()


def add_data_options(parser: argparse.ArgumentParser) -> None:
    """The flags that `load_data` takes as arguments, and the tokenizer's model."""
    parser.add_argument("data", help="a dataset file")
    parser.add_argument("--template", default=None, help="built-in template name")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--model", default=None, help="model name or folder (its tokenizer)")
    parser.add_argument(
        "--columns",
        type=column_pair,
        action="append",
        default=[],
        metavar="SOURCE=STANDARD",
        help="rename a column, e.g. question=instruction (repeat for more)",
    )
    parser.add_argument(
        "--drop-invalid", action="store_true", help="drop invalid rows, listing them"
    )
    parser.add_argument(
        "--drop-duplicates",
        action="store_true",
        help="drop rows that repeat an earlier one (raw text keeps them, with a warning)",
    )


def add_check_command(commands) -> None:
    check = commands.add_parser("check", help="pre-flight checks on a dataset before training")
    add_data_options(check)
    check.add_argument("--validation", default=None, help="a validation file (leakage, labels)")


def add_preview_command(commands) -> None:
    preview = commands.add_parser("preview", help="show how a dataset is templated and tokenised")
    add_data_options(preview)
    preview.add_argument("--row", type=int, default=0)


def load_cli_data(path: str, args: argparse.Namespace, *, verbose: bool = False):
    """`load_data` with the command's flags; a file that does not load names the flags that
    would drop its rows (--drop-invalid, --drop-duplicates), not the Python arguments."""
    try:
        return load_data(
            path,
            columns=dict(args.columns) or None,
            drop_invalid=args.drop_invalid,
            drop_duplicates=args.drop_duplicates,
            verbose=verbose,
        )
    except DataValidationError as error:
        raise error.spelled_for("command line") from None


def check(args: argparse.Namespace) -> int:
    """Print every finding, errors first, then a summary; 1 when any is an error."""
    data = load_cli_data(args.data, args)  # a file that does not load exits 2 in main()
    validation = load_cli_data(args.validation, args) if args.validation else None
    template = get_template(args.template, data.format)
    tokenizer = load_tokenizer(args.model or DEFAULT_MODEL)
    findings = check_dataset(
        data, template, tokenizer, validation=validation, max_length=args.max_length
    )
    for finding in findings:
        print(finding)
    summary = findings_summary(findings)
    print(f"{data.source}: {len(data)} rows checked with template `{template.name}`: {summary}")
    return 1 if any(f.severity == "error" for f in findings) else 0


def preview(args: argparse.Namespace) -> int:
    """Print one row as it is trained ([..] marks the tokens that carry loss) and the
    dataset's token statistics."""
    tokenizer = load_tokenizer(args.model or DEFAULT_MODEL)
    data = load_cli_data(args.data, args, verbose=True)
    template = get_template(args.template or None, data.format)
    row = data[args.row]
    tokens, item = row_token_view(row, template, tokenizer, max_length=args.max_length)
    print(f"template `{template.name}`, row {data.where(args.row)} ([..] carry loss):\n")
    print(token_view_text(tokens))
    print(f"\n{item.prompt_tokens} prompt + {item.response_tokens} response tokens")
    print(dataset_stats(data, template, tokenizer, max_length=args.max_length))
    return 0
