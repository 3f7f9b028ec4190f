"""`python -m workbench train RECIPE.yaml [--set key.path=value ...]`: a recipe, run in a terminal.

The recipe is checked before anything loads (a bad one exits 2 with every problem named), then
the data, the model, training with a progress bar, the before/after table when the recipe
holds evaluation rows, and report.html. Exit codes: 0 finished, 1 failed or stopped (the reason
on stderr), 2 a bad recipe, 130 Ctrl-C (stopped with a checkpoint; the resume command printed).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from workbench.data.loading import Examples, load_data
from workbench.data.splits import mix_tasks, split_data
from workbench.runs.recipe import Recipe, read_recipe

INTERRUPTED = 130  # the shell's code for a process ended by Ctrl-C (128 + SIGINT)


@dataclass
class RecipeData:
    """The rows a recipe names: trained on, validated on, and measured before/after."""

    train: Examples
    validation: Examples | None
    held_out: Examples | None


def load_recipe_data(recipe: Recipe) -> RecipeData:
    """Load the recipe's files; split off the held-out rows, then the validation rows."""
    data = recipe.data
    options = dict(
        format=data.format,
        columns=data.columns,
        sheet=data.sheet,
        drop_invalid=data.drop_invalid,
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


def train_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> int:
    """Run the recipe at `path` and return the exit code (a bad recipe raises RecipeError,
    which `workbench.cli.main` prints and turns into exit code 2)."""
    from workbench.runs.progress import progress_bar
    from workbench.training.finetune import train
    from workbench.training.models import load_model
    from workbench.training.regularizers import regularizer_from_config

    recipe = read_recipe(path, overrides)
    rows = load_recipe_data(recipe)
    print(
        f"data: {len(rows.train)} train, {len(rows.validation or [])} validation, "
        f"{len(rows.held_out or [])} held-out rows ({rows.train.format})"
    )
    model, tokenizer = load_model(recipe.model.name, quantization=recipe.model.quantization)
    print(f"model: {recipe.model.name}")
    template = _template(recipe, rows.train)
    before = _measure_base(recipe, model, tokenizer, rows, template)
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
        hyperparameters=recipe.hyperparameters,
        run_dir=recipe.output.run_dir,
        samples=recipe.output.samples,
        regularizer=regularizer,
        track_importance=recipe.track_importance,
        start=False,
    )
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
        _before_after(recipe, run, rows.held_out, template, before)
    print(f"finished: {run.run_dir}\nreport: {run.directory.file('report.html')}")
    return 0


def _template(recipe: Recipe, train: Examples):
    from workbench.tokens.templates import get_template

    return get_template(recipe.template, train.format)


def _decoding(recipe: Recipe):
    from workbench.evaluation.generation import Decoding

    return Decoding(max_new_tokens=recipe.evaluation.max_new_tokens, batch_size=16)


def _scoring(recipe: Recipe) -> dict:
    evaluation = recipe.evaluation
    return dict(
        metrics=evaluation.metrics,
        labels=evaluation.labels,
        decoding=_decoding(recipe),
        max_length=recipe.hyperparameters.max_length,
    )


def _measure_base(recipe: Recipe, model, tokenizer, rows: RecipeData, template):
    """The base model measured now, when training will leave no adapter to switch off (full
    or freeze fine-tuning); None otherwise, or without held-out rows."""
    from workbench.evaluation.compare import evaluate_model, needs_base_measurement

    if rows.held_out is None or not needs_base_measurement(recipe.method):
        return None
    print(f"measuring the base model on {len(rows.held_out)} held-out rows ...")
    return evaluate_model(model, tokenizer, rows.held_out, template, **_scoring(recipe))


def _before_after(recipe: Recipe, run, held_out: Examples, template, before) -> None:
    """Print the before/after table, save it in the run directory and rewrite report.html."""
    import pandas as pd

    from workbench.evaluation.compare import compare, compare_before_after, evaluate_model
    from workbench.runs.report import save_comparison, write_report

    print(f"measuring before and after on {len(held_out)} held-out rows ...")
    scoring = _scoring(recipe)
    if before is None:  # LoRA: the base answers come from the same model, adapter off
        summary, table = compare_before_after(
            run.model, run.tokenizer, held_out, template, **scoring
        )
    else:
        after = evaluate_model(run.model, run.tokenizer, held_out, template, **scoring)
        summary, table = compare(before, after)
    with pd.option_context("display.float_format", "{:.3f}".format, "display.width", 120):
        print(summary)
        print(table[["reference", "before", "after"]].head(8).to_string(index=False))
    save_comparison(run.run_dir, summary, table)
    write_report(run.run_dir)


def _last_step(run) -> int:
    steps = [e["step"] for e in run.events if e["event"] in ("step", "stopped")]
    return steps[-1] if steps else 0
