"""The kinds of run, in one registry.

Each kind of training (instruction tuning, DPO, a reward model, GRPO, ...) describes itself once,
as a `Kind`, and registers it when its module is imported (`import workbench` imports them all).
The run history, report.html, copy as code, the command line, the RunBrowser and `resume` read
this table: adding a kind is one new module that calls `register`, plus its tests.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from workbench.errors import WorkbenchError


@dataclass(frozen=True)
class Kind:
    """One kind of run.

    `stage` is what config.yaml records; `title` names it for people; `function` is the public
    function that starts one (`train_dpo`); `rows` says in words what rows it takes;
    `settings` is its settings class (a `Hyperparameters` subclass); `figure_rows` is the
    number of rows of its curves (3 adds mean reward and KL to loss and learning rate).
    `resume(run_dir, model=None, tokenizer=None, *, max_steps=None, **needs)` continues one from
    its directory; `needs` names what it must be given again because the directory cannot hold
    it (a teacher, a reward function of the user's own); a kind without `resume` says why in
    `cannot_resume`. `code(config, run_dir)` writes the script that trains it again.
    """

    stage: str
    title: str
    function: str
    rows: str
    settings: type
    figure_rows: int = 2
    resume: Callable[..., Any] | None = None
    needs: tuple[str, ...] = ()
    cannot_resume: str = ""
    code: Callable[[dict, Any], str] | None = None
    command: str | None = None  # its `python -m workbench` command, when it has one
    # whether a run's config.yaml alone restores what `needs` names (an RL run's reward is
    # restorable when it was a reward model's directory or a function the project defines)
    restores: Callable[[dict], bool] | None = None
    extras: tuple[str, ...] = ()  # objects its function takes besides rows: ("reward",)

    def resumes_from_directory(self, config: dict) -> bool:
        """Whether `resume(run_dir)` continues a run of this kind with nothing given again."""
        if self.resume is None:
            return False
        if self.restores is not None:
            return self.restores(config)
        return not self.needs

    def __post_init__(self) -> None:
        if self.resume is None and not self.cannot_resume:
            raise ValueError(f"kind {self.stage!r}: give `resume`, or say in `cannot_resume` why")
        if self.figure_rows not in (2, 3):
            raise ValueError(f"kind {self.stage!r}: `figure_rows` is 2 or 3")


KINDS: dict[str, Kind] = {}


def register(kind: Kind) -> Kind:
    """Add `kind` to the registry (once per stage name)."""
    if kind.stage in KINDS and KINDS[kind.stage] != kind:
        raise ValueError(f"a kind with stage {kind.stage!r} is registered already")
    KINDS[kind.stage] = kind
    return kind


def kind_of(stage: str | None, where: str = "") -> Kind:
    """The registered kind of `stage` (a run without `stage` is instruction tuning)."""
    stage = stage or "sft"
    if stage not in KINDS:
        known = ", ".join(sorted(KINDS))
        place = f"{where}: " if where else ""
        raise WorkbenchError(f"{place}unknown `stage` {stage!r}; this version knows {known}.")
    return KINDS[stage]


def figure_rows(stage: str | None) -> int:
    """Rows of the curves figure for a run of `stage` (2 for a stage this version lacks)."""
    kind = KINDS.get(stage or "sft")
    return kind.figure_rows if kind else 2


def renamed_argument(new_value, old_value, old: str, new: str, function: str):
    """The value of a renamed keyword argument: the new name's, or the old name's with a
    DeprecationWarning (old names keep working for one release); both at once is an error."""
    if old_value is None:
        return new_value
    if new_value is not None:
        raise TypeError(f"{function}(): pass `{new}=` only (`{old}=` is its old name)")
    warnings.warn(
        f"{function}(): `{old}=` is now `{new}=`; the old name goes in the next release.",
        DeprecationWarning,
        stacklevel=3,
    )
    return old_value


def deprecated_name(old: str, new: str) -> None:
    """Warn that the function `old` is now `new` (it keeps working for one release)."""
    warnings.warn(
        f"`{old}` is now `{new}` (the same run, in the grammar every kind shares); "
        "the old name goes in the next release.",
        DeprecationWarning,
        stacklevel=3,
    )
