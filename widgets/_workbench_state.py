"""WorkbenchState: what the tabs of WorkbenchApp share, read from them by `collect()`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.data.loading import Examples
from workbench.evaluation.compare import Evaluation
from workbench.model.methods import Method
from workbench.runs.hyperparameters import Hyperparameters
from workbench.tokens.templates import Template


@dataclass
class WorkbenchState:
    """What the tabs share: the model, the rows, the settings, the run and the "before"."""

    model: Any = None
    tokenizer: Any = None
    examples: Examples | None = None
    train: Examples | None = None
    validation: Examples | None = None
    template: Template | None = None
    completion_only: bool = True
    max_length: int = 256
    method: Method | None = None
    hyperparameters: Hyperparameters | None = None
    run: Any = None  # workbench.run.Run
    before: Evaluation | None = None  # base answers, measured before full fine-tuning
    compare_rows: Examples | None = None  # the validation rows the Compare tab answers
    # tasks in sequence: each run since the model was loaded trained the model the one before
    # it left (the next Train continues the last); `stage_rows[k]` are run k's own training
    # rows, before any remedy mixed replayed rows in
    stage_runs: list[Any] = field(default_factory=list)
    stage_rows: list[Examples] = field(default_factory=list)

    @property
    def previous_run(self) -> Any:
        """The run whose model the next Train continues, or None (a freshly loaded model)."""
        return self.stage_runs[-1] if self.stage_runs else None

    @property
    def continued_from(self) -> Path | None:
        """The previous run's directory (the next run's config.yaml `continued_from`), or None."""
        return self.previous_run.run_dir if self.previous_run is not None else None
