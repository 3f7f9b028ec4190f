"""Errors a user can cause, each naming where the problem is and how to fix it."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal


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


# What each `load_data` option that drops rows drops, and how it is spelled where it is set.
REMEDIES = {
    "drop_invalid": (
        "the invalid rows",
        {
            "python": "pass drop_invalid=True",
            "command line": "add --drop-invalid",
            "recipe": "set `data.drop_invalid: true`",
        },
    ),
    "drop_duplicates": (
        "the repeated rows (the first of each is kept)",
        {
            "python": "pass drop_duplicates=True",
            "command line": "add --drop-duplicates",
            "recipe": "set `data.drop_duplicates: true`",
        },
    ),
}
Spelling = Literal["python", "command line", "recipe"]


class DataValidationError(WorkbenchError):
    """Raised with every problem found in a dataset, not just the first. `remedies` name the
    `load_data` options that would drop the rows instead ("drop_invalid", "drop_duplicates"),
    as Python arguments; `spelled_for("command line")` names them as flags (or recipe keys)."""

    def __init__(
        self, problems: list[Problem], hint: str = "", remedies: tuple[str, ...] = ()
    ) -> None:
        self.problems = list(problems)
        self.hint, self.remedies = hint, tuple(remedies)
        super().__init__(self._message("python"))

    def spelled_for(self, spelling: Spelling) -> DataValidationError:
        """The same error, its remedies spelled for the command line or a recipe."""
        error = DataValidationError(self.problems, self.hint, self.remedies)
        error.args = (error._message(spelling),)
        return error

    def _message(self, spelling: Spelling) -> str:
        shown = "\n".join(f"  - {p}" for p in self.problems[:50])
        more = f"\n  ... and {len(self.problems) - 50} more" if len(self.problems) > 50 else ""
        rows = {p.row for p in self.problems if p.row is not None}
        head = f"{len(self.problems)} problem(s) in {len(rows)} row(s):"
        advice = [self.hint] if self.hint else []
        for remedy in self.remedies:
            what, spelled = REMEDIES[remedy]
            advice.append(f"Or, to drop {what} explicitly, {spelled[spelling]}.")
        return f"{head}\n{shown}{more}" + "".join(f"\n{line}" for line in advice)


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
            f"resume('{path}', max_steps=N) or `python -m workbench resume {path} "
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
            f"with resume('{path}')."
        )
