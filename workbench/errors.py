"""Errors a user can cause, each naming where the problem is and how to fix it."""

from __future__ import annotations

from dataclasses import dataclass


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
