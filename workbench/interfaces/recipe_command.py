"""`python -m workbench train RECIPE.yaml [--set key.path=value ...]`: a recipe, run in a terminal.

The recipe is checked before anything loads (a bad one exits 2 with every problem named), then
the data (a template that reads a field the rows lack exits 2 too, before the model loads), the
model, training with a progress bar, the before/after table when the recipe holds evaluation
rows, and report.html. Exit codes: 0 finished, 1 failed or stopped (the reason on stderr), 2 a
bad recipe, 130 Ctrl-C (stopped with a checkpoint; the resume command printed).

A run with held-out rows records them and their settings in config.yaml's `evaluation` and the
base model's scores in before.json at the start, so training its config.yaml again measures
before/after again, and `python -m workbench resume` of a stopped run ends with the table
(`report_before_after`).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from workbench.data.formats import FORMAT_MARKERS, guess_column
from workbench.data.loading import Examples, load_data
from workbench.data.splits import mix_tasks, split_data
from workbench.errors import DataValidationError
from workbench.evaluation.compare import Evaluation, compare, evaluate_model, has_adapter
from workbench.interfaces.recipe import Recipe, RecipeError, read_recipe
from workbench.model.generation import Decoding
from workbench.model.loading import load_model
from workbench.runs.directory import BEFORE, HELD_OUT
from workbench.runs.progress import progress_bar
from workbench.runs.report import save_comparison, write_report
from workbench.tokens.templates import default_template, get_template, template_fields
from workbench.training.finetune import train
from workbench.training.regularizers import regularizer_from_config

INTERRUPTED = 130  # the shell's code for a process ended by Ctrl-C (128 + SIGINT)


@dataclass
class RecipeData:
    """The rows a recipe names: trained on, validated on, and measured before/after."""

    train: Examples
    validation: Examples | None
    held_out: Examples | None


def load_recipe_data(recipe: Recipe) -> RecipeData:
    """Load the recipe's files; split off the held-out rows, then the validation rows. Rows
    that cannot be loaded are named with the recipe key that drops them; a template that reads
    a field the rows lack is a RecipeError."""
    try:
        rows = _load_rows(recipe)
    except DataValidationError as error:
        raise error.spelled_for("recipe") from None
    check_template_fields(recipe, rows.train)
    return rows


def _load_rows(recipe: Recipe) -> RecipeData:
    data = recipe.data
    options = dict(
        format=data.format,
        columns=data.columns,
        sheet=data.sheet,
        drop_invalid=data.drop_invalid,
        drop_duplicates=data.drop_duplicates,
        verbose=False,
    )
    loaded = {name: load_data(name, **options) for name in data.train_files}
    train = next(iter(loaded.values()))
    if len(loaded) > 1:  # without `mix`, every row of every file (shares = their sizes)
        shares = data.mix or {name: len(rows) for name, rows in loaded.items()}
        train = mix_tasks(loaded, shares, seed=data.seed)
    held_out = None
    if recipe.evaluation.file:
        held_out = load_data(recipe.evaluation.file, **options)
    elif recipe.evaluation.held_out:
        train, held_out = split_data(train, recipe.evaluation.held_out, seed=data.seed)
    validation = None
    if data.validation:
        validation = load_data(data.validation, **options)
    else:
        split = 0.1 if data.split is None else data.split
        if split:
            share = int(split) if split >= 1 else split
            train, validation = split_data(train, share, seed=data.seed)
    return RecipeData(train, validation, held_out)


def check_template_fields(recipe: Recipe, rows: Examples) -> None:
    """RecipeError, before any model loads, when the template reads a field that a row lacks:
    the row, the field and the fixes (the built-in template for the rows' format, or a
    `data.columns` mapping to the fields the template reads)."""
    template = _template(recipe, rows)
    if template.use_chat_template:
        return
    for i, row in enumerate(rows.rows):
        texts = [template.prompt, template.response]
        if template.prompt_no_input is not None and not str(row.get("input") or "").strip():
            texts[0] = template.prompt_no_input  # as Template.render chooses
        needed = dict.fromkeys(f for text in texts for f in template_fields(text))
        missing = [f for f in needed if row.get(f) is None]
        if missing:
            fields = ", ".join(sorted(k for k in row if k != "task"))
            uses = ", ".join(f"`{{{f}}}`" for f in missing)
            raise RecipeError(
                f"{rows.where(i)}: the template uses {uses}, which the rows do not have (their "
                f"fields: {fields}); nothing was loaded. {_template_fixes(template, rows, missing)}"
            )


def _template_fixes(template, rows: Examples, missing: list[str]) -> str:
    """`template: <the built-in for the rows' format>`, and the `data.columns` mapping that
    gives the rows the missing fields when the renamed columns still make a format."""
    fixes = []
    suited = default_template(rows.format).name
    if template.name != suited:
        fixes.append(f"`template: {suited}` (the built-in for {rows.format} rows)")
    row = rows.rows[0]  # its columns with a value (an empty `input` may be one loading added)
    columns = sorted(k for k, v in row.items() if k != "task" and v and k not in template.fields)
    mapping = {}
    for field in missing:
        source = guess_column(field, columns) or (columns[0] if columns else None)
        if source is not None:
            mapping[source] = field
            columns.remove(source)
    renamed = {mapping.get(k, k) for k in row}
    if mapping and any(all(m in renamed for m in marks) for marks in FORMAT_MARKERS.values()):
        pairs = ", ".join(f"{source}: {field}" for source, field in mapping.items())
        fixes.append(f"`data.columns: {{{pairs}}}` (rename the columns to the template's fields)")
    fixes.append("a template whose placeholders are the rows' fields")
    return "Use " + ", or ".join(fixes) + "."


def train_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> int:
    """Run the recipe at `path` and return the exit code (a bad recipe raises RecipeError,
    which `workbench.cli.main` prints and turns into exit code 2)."""
    recipe = read_recipe(path, overrides)
    rows = load_recipe_data(recipe)
    print(
        f"data: {len(rows.train)} train, {len(rows.validation or [])} validation, "
        f"{len(rows.held_out or [])} held-out rows ({rows.train.format})"
    )
    model, tokenizer = load_model(recipe.model.name, quantization=recipe.model.quantization)
    print(f"model: {recipe.model.name}")
    template = _template(recipe, rows.train)
    regularizer = regularizer_from_config(
        recipe.regularizer, model, tokenizer, recipe.folder, template
    )
    run = train(
        model,
        tokenizer,
        rows.train,
        rows.validation,
        template=template,
        method=recipe.method,
        settings=recipe.hyperparameters,
        run_dir=recipe.output.run_dir,
        samples=recipe.output.samples,
        regularizer=regularizer,
        track_importance=recipe.track_importance,
        start=False,
    )
    if rows.held_out is not None:
        _measure_before(recipe, run, rows.held_out)
    print(f"{run.parameters}; run directory {run.run_dir}")
    progress_bar(run)
    try:
        run.start().wait()
    except KeyboardInterrupt:
        print(
            f"stopped at step {_last_step(run)} with a checkpoint; continue with:\n"
            f"  python -m workbench resume {run.run_dir}",
            file=sys.stderr,
        )
        return INTERRUPTED
    if run.status != "finished":
        print(f"training {run.status}: {run.error or 'stopped'} ({run.run_dir})", file=sys.stderr)
        return 1
    if rows.held_out is not None:
        report_before_after(run)
    print(f"finished: {run.run_dir}\nreport: {run.directory.file('report.html')}")
    return 0


def _template(recipe: Recipe, train: Examples):
    return get_template(recipe.template, train.format)


def _scoring(evaluation: dict, max_length: int) -> dict:
    """How held-out rows are scored, from config.yaml's `evaluation` (or a recipe's section)."""
    return dict(
        metrics=evaluation["metrics"],
        labels=evaluation.get("labels"),
        decoding=Decoding(max_new_tokens=evaluation["max_new_tokens"], batch_size=16),
        max_length=max_length,
    )


def _measure_before(recipe: Recipe, run, held_out: Examples) -> None:
    """Record the held-out rows and how they are scored in the run's config.yaml, then score
    the base model on them (a LoRA adapter switched off; a full fine-tuning model before it
    trains) and store the scores in before.json, for the table at the end, even after a
    resume."""
    from dataclasses import asdict

    settings = recipe.evaluation.to_dict()
    evaluation = {k: settings[k] for k in ("metrics", "labels", "max_new_tokens")}
    run.directory.record_evaluation(evaluation, held_out)
    print(f"measuring the base model on {len(held_out)} held-out rows ...")
    scoring = _scoring(evaluation, run.hyperparameters.max_length)
    adapter = not has_adapter(run.model)  # the adapter is off: the base weights answer
    before = evaluate_model(
        run.model, run.tokenizer, held_out, run.template, adapter=adapter, **scoring
    )
    run.directory.write_json(BEFORE, asdict(before))


def report_before_after(run) -> bool:
    """Score the trained model on the held-out rows the run recorded, print the before/after
    table against before.json, save it in the run directory and rewrite report.html. False
    (nothing done) for a run that recorded no held-out rows or no before.json."""
    import pandas as pd

    directory = run.directory
    evaluation = directory.read_config().get("evaluation")
    stored = directory.read_json(BEFORE)
    held_out = directory.load_rows(HELD_OUT) if evaluation else None
    if held_out is None or stored is None:
        return False
    print(f"measuring after training on {len(held_out)} held-out rows ...")
    scoring = _scoring(evaluation, run.hyperparameters.max_length)
    after = evaluate_model(run.model, run.tokenizer, held_out, run.template, **scoring)
    summary, table = compare(Evaluation(**stored), after)
    with pd.option_context("display.float_format", "{:.3f}".format, "display.width", 120):
        print(summary)
        print(table[["reference", "before", "after"]].head(8).to_string(index=False))
    save_comparison(run.run_dir, summary, table)
    write_report(run.run_dir)
    return True


def _last_step(run) -> int:
    steps = [e["step"] for e in run.events if e["event"] in ("step", "stopped")]
    return steps[-1] if steps else 0
