"""WorkbenchState: what the tabs of WorkbenchApp share, read from them by `collect()`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from workbench.data.loading import Examples
from workbench.evaluation.compare import Evaluation
from workbench.tokens.templates import Template
from workbench.training.hyperparameters import Hyperparameters
from workbench.training.methods import Method


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
