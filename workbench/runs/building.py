"""What every kind of run builds its `Run` from, written once.

A new run refuses a directory that already holds one (`check_new_run_dir`), creates its own
(`run_directory`) and records its config.yaml and rows there (`record_new_run`); its
`RunContext` says what it trains and which prompts are answered at each evaluation
(`run_context`); its `save_final` writes the trained model and the tokenizer (`model_saver`).
Instruction tuning, continued pre-training, the classifier and the TRL kinds
(training/trl_runs.py) all build their runs with these.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from workbench.data.loading import Examples
from workbench.errors import RunDirectoryInUseError
from workbench.model.methods import count_parameters
from workbench.runs.directory import RunDirectory, new_run_dir
from workbench.runs.run import RunContext
from workbench.tokens.templates import Template


def check_new_run_dir(run_dir: str | Path | None) -> None:
    """Raise `RunDirectoryInUseError` when `run_dir` already holds a run (never reused)."""
    if run_dir is not None and RunDirectory(run_dir).is_run:
        raise RunDirectoryInUseError(Path(run_dir))


def run_directory(run_dir: str | Path | None, stage: str, rows: Examples, unnamed: str) -> Path:
    """The run's directory, created: `run_dir`, or a new one named `<stage>-<first task>`
    (`unnamed` when the rows name no task)."""
    path = Path(run_dir) if run_dir else new_run_dir(f"{stage}-{next(iter(rows.tasks), unnamed)}")
    path.mkdir(parents=True, exist_ok=True)
    return path


def record_new_run(
    run_dir: Path,
    stage: str,
    model,
    template: Template,
    method,
    settings,
    rows: Examples,
    validation: Examples | None,
    **extra: Any,
) -> None:
    """Write config.yaml and data/ of a new run of `stage`: the model it names, its template,
    method, settings and rows, then the kind's `extra` keys."""
    RunDirectory(run_dir).record_run(
        stage=stage,
        model=model,
        template=template,
        method=method,
        hyperparameters=settings,
        train=rows,
        validation=validation,
        **extra,
    )


def run_context(
    model,
    tokenizer,
    template: Template,
    method,
    settings,
    samples: tuple[list[str], list[str]] | None = None,
    max_new_tokens: int | None = None,
    *,
    shown: int | None = None,
    **measured: Any,
) -> RunContext:
    """The RunContext of a run training `model` with `settings` (its parameters counted):
    `samples` are (prompts, reference answers) answered at each evaluation in at most
    `max_new_tokens` tokens (default: `settings.sample_max_new_tokens`), the first `shown`
    (default: all) recorded as samples; `measured` adds what the kind measured before it
    starts (`scored_rows`, `fit`, `truncation`)."""
    prompts, references = samples or ([], [])
    return RunContext(
        model=model,
        tokenizer=tokenizer,
        template=template,
        method=method,
        hyperparameters=settings,
        parameters=count_parameters(model),
        sample_prompts=prompts,
        references=references,
        samples_shown=len(prompts) if shown is None else shown,
        sample_max_new_tokens=settings.sample_max_new_tokens
        if max_new_tokens is None
        else max_new_tokens,
        **measured,
    )


def model_saver(model, tokenizer, **options: Any) -> Callable[[Path], None]:
    """A Run's `save_final`: `model.save_pretrained(folder, **options)` (the adapter, or the
    whole model without one), then the tokenizer beside it."""

    def save_final(folder: Path) -> None:
        model.save_pretrained(folder, **options)
        tokenizer.save_pretrained(folder)

    return save_final
