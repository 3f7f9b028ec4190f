"""What every resume function reads first, in one place.

A stopped, failed or killed run continues from its directory: its config.yaml says what kind of
run it was (`stage`), with which settings, method, template and model, and its `data/` holds
the rows. `open_run(run_dir, stage, SettingsClass, max_steps)` checks the kind, reads the
settings and checks that there is a checkpoint to go on from; the `Resuming` it returns reads
the rest. Each kind's resume function then rebuilds its own run from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError
from workbench.model.loading import load_model
from workbench.model.methods import Method
from workbench.runs.directory import CONFIG, RunDirectory
from workbench.tokens.templates import Template


@dataclass
class Resuming:
    """A run directory opened for resuming: its config.yaml (`where` names the file in
    errors) and its settings."""

    directory: RunDirectory
    config: dict[str, Any]
    where: str
    settings: Any

    def method(self, method_class=None):
        """The run's method (`Method`, or the class given, e.g. a classifier's)."""
        return (method_class or Method).from_dict(self.config["method"], self.where, key="method")

    def template(self) -> Template:
        return Template(**self.config["template"])

    def rows(self, split: str):
        """The rows the run stored for `split` ('train', 'validation'), or None."""
        return self.directory.load_rows(split)

    def model(self, model=None, tokenizer=None):
        """(model, tokenizer): the ones given, or the base model config.yaml names, loaded."""
        if model is not None:
            return model, tokenizer
        return load_model(self.config["model"], quantization=self.config.get("quantization"))


def open_run(
    run_dir: str | Path,
    stage: str | tuple[str, ...],
    settings_class,
    max_steps: int | None,
    *,
    otherwise: str = "resume it with workbench.resume(path)",
) -> Resuming:
    """Open `run_dir` to resume a run of `stage` (one, or any of several): raise, naming
    config.yaml, when it is another kind (`otherwise` says what to do) or when there is no
    checkpoint to go on from (a finished run only with a larger `max_steps`)."""
    stages = (stage,) if isinstance(stage, str) else stage
    directory = RunDirectory(run_dir)
    config = directory.read_config()
    where = str(directory.file(CONFIG))
    if config.get("stage", "sft") not in stages:
        wanted = " or ".join(repr(s) for s in stages)
        raise WorkbenchError(
            f"{where}: `stage` is {config.get('stage', 'sft')!r}, not {wanted}; {otherwise}."
        )
    settings = settings_class.from_dict(config["hyperparameters"], where, key="hyperparameters")
    directory.resume_point(max_steps or settings.max_steps, extending=max_steps is not None)
    return Resuming(directory, config, where, settings)
