"""Errors a user can cause, each naming where the problem is and how to fix it."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class WorkbenchError(ValueError):
    """Base class for mistakes in user input: bad data, templates, settings."""


@dataclass(frozen=True)
class Problem:
    """One problem found in one row of a dataset: where it is and what is wrong."""

    source: str
    row: int | None
    field: str | None
    message: str

    def __str__(self) -> str:
        where = self.source if self.row is None else f"{self.source}:{self.row}"
        what = f"`{self.field}` " if self.field else ""
        return f"{where}: {what}{self.message}"


class DataValidationError(WorkbenchError):
    """Raised with every problem found in a dataset, not just the first."""

    def __init__(self, problems: list[Problem], hint: str = "") -> None:
        self.problems = list(problems)
        shown = "\n".join(f"  - {p}" for p in self.problems[:50])
        more = f"\n  ... and {len(self.problems) - 50} more" if len(self.problems) > 50 else ""
        rows = {p.row for p in self.problems if p.row is not None}
        head = f"{len(self.problems)} problem(s) in {len(rows)} row(s):"
        super().__init__(f"{head}\n{shown}{more}" + (f"\n{hint}" if hint else ""))


class TemplateError(WorkbenchError):
    """A template that cannot be parsed, or a row it cannot be rendered with."""


class AllLabelsMaskedError(WorkbenchError):
    """Every label of a batch is -100, so training on it would learn nothing."""


class ModelLoadError(WorkbenchError):
    """A model could not be found or loaded; the message lists what to try."""


class RunLockedError(WorkbenchError):
    """Another live process is training in this run directory."""

    def __init__(self, path: Path, holder: dict[str, Any], lock: Path) -> None:
        since = holder.get("since")
        when = time.strftime(" since %H:%M:%S", time.localtime(since)) if since else ""
        super().__init__(
            f"{path} is being trained by process {holder.get('pid', '?')} on "
            f"{holder.get('host', '?')}{when}: one directory has one owner at a time. Wait for "
            f"it to end (or stop it), then resume; if that process is gone, delete {lock}."
        )


class RunFinishedError(WorkbenchError):
    """Resuming would train a finished run past its end (and overwrite its results)."""

    def __init__(self, path: Path, step: int, planned: int | None) -> None:
        of = f" of {planned}" if planned else ""
        super().__init__(
            f"{path} finished at step {step}{of}: there is nothing to resume, and it is left "
            f"unchanged. To train it further, give a larger max_steps: "
            f"resume_run('{path}', max_steps=N) or `python -m workbench resume {path} "
            f"--max-steps N` with N > {step}."
        )


class DiskFullError(WorkbenchError):
    """The disk holding a run directory is full."""


class RunDirectoryInUseError(WorkbenchError):
    """An explicit `run_dir` already holds a run: a directory holds one run."""

    def __init__(self, path: Path) -> None:
        super().__init__(
            f"{path} already holds a run (its config.yaml or metrics.jsonl): training there "
            "would overwrite its data, adapter and report and mix two runs' events. Leave "
            f"`run_dir` out for a new directory, choose an empty one, or continue that run "
            f"with resume_run('{path}')."
        )
