"""`resume(run_dir)`: continue a stopped, failed or killed run of any kind from its directory.

The run's config.yaml names its `stage`; the registry (`workbench.runs.kinds`) says how that
kind resumes and what it must be given again because the directory cannot hold it (a
distillation run's `teacher`, an RL run's reward function of your own: `reward=`).
"""

from __future__ import annotations

import warnings
from pathlib import Path

from workbench.errors import WorkbenchError
from workbench.runs.directory import CONFIG, RunDirectory
from workbench.runs.kinds import kind_of
from workbench.runs.run import Run


def resume(
    run_dir: str | Path, model=None, tokenizer=None, *, max_steps: int | None = None, **needs
) -> Run:
    """Continue the run in `run_dir` from its newest complete checkpoint, whatever its kind.

    `model` and `tokenizer` replace the base model config.yaml names (a fresh, un-adapted
    one); a finished run is left unchanged unless a larger `max_steps` extends it; `needs` are
    what the kind asks for again (`teacher=` for distillation, `reward=` for GRPO or PPO with
    a reward function of your own). Returns the resumed Run, already training.
    """
    directory = RunDirectory(run_dir)
    config = directory.read_config()
    where = str(directory.file(CONFIG))
    kind = kind_of(config.get("stage"), where)
    if kind.resume is None:
        raise WorkbenchError(f"{where}: a {kind.title} run cannot resume: {kind.cannot_resume}")
    unknown = sorted(set(needs) - set(kind.needs))
    if unknown:
        takes = ", ".join(f"`{n}=`" for n in kind.needs) or "nothing else"
        raise TypeError(f"resume(): a {kind.title} run takes {takes}, not {unknown}.")
    missing = [n for n in kind.needs if needs.get(n) is None]
    if missing and not kind.resumes_from_directory(config):
        given = ", ".join(f"{n}=..." for n in missing)
        raise WorkbenchError(
            f"{where}: a {kind.title} run needs its {' and '.join(missing)}, which the "
            f"directory cannot hold: call resume({str(directory.path)!r}, {given})."
        )
    return kind.resume(directory.path, model, tokenizer, max_steps=max_steps, **needs)


def resume_run(
    run_dir: str | Path, model=None, tokenizer=None, *, max_steps: int | None = None, **needs
) -> Run:
    """The old name of `resume` (kept for one release)."""
    warnings.warn(
        "`resume_run` is now `resume` (one entry point for every kind of run); the old name "
        "goes in the next release.",
        DeprecationWarning,
        stacklevel=2,
    )
    return resume(run_dir, model, tokenizer, max_steps=max_steps, **needs)
