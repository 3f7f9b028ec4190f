"""The run directory: the one module that knows its layout and how each file is written.

```
runs/<id>/
  config.yaml        everything needed to reproduce the run (every kind of run writes it here)
  data/              the exact rows trained and validated on (train.jsonl, validation.jsonl),
                     and measured before/after (held_out.jsonl, named by config's `evaluation`)
  metrics.jsonl      one event a line, appended and flushed
  samples.jsonl      sample answers at each evaluation
  status.json        the status and the process that owns the run
  checkpoints/       checkpoint-N/, each marked complete once it is fully written
  adapter/ | model/  the final adapter (LoRA) or the whole model (full fine-tuning)
  before.json        the base model's answers and scores on the held-out rows, measured at
                     the start (so a resumed run can still show before/after)
  comparison.json    the before/after table, forgetting.json the learned/retained table
  report.html        curves and tables, rebuilt from the files above
  tensorboard/       TensorBoard event files, when `report_to` is 'tensorboard'
  owner.lock         while a process trains here: its pid and host (stale once it is gone;
                     runs/ownership.py)
```

Every write is atomic (a temporary name, then a rename) or an appended, flushed line, so a run
killed at any moment leaves a directory that can be listed, compared and resumed. Every other
module reads and writes these files through `RunDirectory`.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from workbench.data.loading import load_data
from workbench.errors import DiskFullError, RunFinishedError, WorkbenchError
from workbench.errors import RunLockedError as RunLockedError  # re-exported, as before the split
from workbench.model.loading import model_origin
from workbench.runs.files import (
    append_line,
    caused_by_full_disk,
    json_line,
    read_yaml_mapping,
    save_atomic_dir,
    write_atomic,
)
from workbench.runs.ownership import LOCK as LOCK  # the lock's file name, re-exported
from workbench.runs.ownership import Ownership

COMPLETE_MARKER = "WORKBENCH_COMPLETE"
CONFIG = "config.yaml"
EVENTS = "metrics.jsonl"
SAMPLES = "samples.jsonl"
STATUS = "status.json"
CHECKPOINTS = "checkpoints"
COMPARISON = "comparison.json"
BEFORE = "before.json"  # the base model measured on the held-out rows before training
HELD_OUT = "held_out"  # the split of rows measured before and after: data/held_out.jsonl
FORGETTING = "forgetting.json"
REPORT = "report.html"
TENSORBOARD = "tensorboard"
FINAL_ARTEFACTS = ("adapter", "model")  # LoRA runs save an adapter, full fine-tuning a model


def runs_root() -> Path:
    """Where run directories go: `$WORKBENCH_RUNS`, else ./runs."""
    return Path(os.environ.get("WORKBENCH_RUNS", "runs"))


def new_run_dir(label: str) -> Path:
    """Create and return a new, empty run directory named `<date>-<time>-<label>[-n]`.

    The folder is created with `mkdir(exist_ok=False)`, so two processes asking at the same
    second get different folders rather than one shared by both.
    """
    stamp = time.strftime("%Y%m%d-%H%M%S")
    runs_root().mkdir(parents=True, exist_ok=True)
    suffix = 1
    while True:
        name = f"{stamp}-{label}" if suffix == 1 else f"{stamp}-{label}-{suffix}"
        path = runs_root() / name
        try:
            path.mkdir()
            return path
        except FileExistsError:
            suffix += 1


class RunDirectory(Ownership):
    """One run directory on disk: its files' names, and reading and writing them safely (and,
    from `Ownership`, the lock of the one process that trains in it)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDirectory({str(self.path)!r})"

    def file(self, name: str) -> Path:
        return self.path / name

    # -- config.yaml and the rows it names ------------------------------------------------
    def read_config(self) -> dict[str, Any]:
        """The parsed config.yaml; FileNotFoundError when this is not a run directory."""
        path = self.file(CONFIG)
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: is {self.path} a run directory?")
        return read_yaml_mapping(path)

    def write_config(self, config: dict[str, Any]) -> None:
        import yaml

        text = yaml.safe_dump(config, sort_keys=False, allow_unicode=True)
        write_atomic(self.file(CONFIG), text)

    def update_config(self, **changes: Any) -> None:
        """Set top-level keys of config.yaml (e.g. a regularizer recorded after the start)."""
        self.write_config({**self.read_config(), **changes})

    def write_rows(self, split: str, rows: list[dict[str, Any]]) -> str:
        """Store a split's rows as `data/<split>.jsonl`; returns the path config.yaml names."""
        relative = f"data/{split}.jsonl"
        write_atomic(self.file(relative), "".join(json_line(r) for r in rows))
        return relative

    def record_run(
        self,
        *,
        stage: str,
        model,
        template,
        method,
        hyperparameters,
        train,
        validation,
        **extra: Any,
    ) -> None:
        """Write config.yaml and data/ for a new run of any kind (`stage` "sft" or "dpo"): the
        base model, template, method, settings and the exact rows, enough to reproduce it."""
        from dataclasses import asdict

        has_validation = validation is not None
        data = {
            "format": train.format,
            "train": self.write_rows("train", train.rows),
            "validation": self.write_rows("validation", validation.rows)
            if has_validation
            else None,
            "sources": sorted({train.source_of(i) for i in range(len(train))}),
            "rows": {"train": len(train), "validation": len(validation) if has_validation else 0},
        }
        name, quantization = model_origin(model)
        config = {
            "stage": stage,
            "model": name,
            "quantization": quantization,
            "template": {k: v for k, v in asdict(template).items() if k != "description"},
            "method": method.to_dict(),
            "hyperparameters": hyperparameters.to_dict(),
            "data": data,
            **extra,
        }
        self.write_config(config)

    def load_rows(self, split: str):
        """The `train`, `validation` or `held_out` rows config.yaml names, as Examples (None
        if absent); the held-out rows are named by its `evaluation` section."""
        config = self.read_config()
        data = config["data"]
        evaluation = config.get("evaluation") or {}
        named = evaluation.get("file") if split == HELD_OUT else data.get(split)
        if not named:
            return None
        return load_data(self.file(named), format=data["format"], verbose=False)

    def record_evaluation(self, settings: dict[str, Any], held_out) -> None:
        """Add the rows measured before and after training (`data/held_out.jsonl`) and how
        they are measured (`settings`: metrics, labels, max_new_tokens) to config.yaml's
        `evaluation`, so that rerunning or resuming the run measures them again."""
        file = self.write_rows(HELD_OUT, held_out.rows)
        self.update_config(evaluation={**settings, "held_out": len(held_out), "file": file})

    @property
    def is_run(self) -> bool:
        """Whether the folder holds a run (its config.yaml or its events)."""
        return self.file(CONFIG).is_file() or self.file(EVENTS).is_file()

    def check_is_run(self) -> None:
        """Raise FileNotFoundError, creating nothing, when the folder holds no run."""
        if not self.is_run:
            exists = self.path.exists()
            why = "it holds no config.yaml or metrics.jsonl" if exists else "it does not exist"
            raise FileNotFoundError(
                f"{self.path}: no such run directory ({why}). `python -m workbench runs` lists "
                "the run directories."
            )

    # -- events and samples ---------------------------------------------------------------
    def append_event(self, record: dict[str, Any]) -> None:
        """Append one event to metrics.jsonl and flush it (readers see whole lines)."""
        append_line(self.file(EVENTS), json.dumps(record, default=str))

    def append_samples(self, record: dict[str, Any]) -> None:
        append_line(self.file(SAMPLES), json_line(record).rstrip("\n"))

    def read_events(self) -> tuple[list[dict[str, Any]], list[str]]:
        """The events of metrics.jsonl, and a note for every line that could not be read (a
        run killed mid-write leaves its last line cut short: it is skipped, never fatal)."""
        path = self.file(EVENTS)
        if not path.is_file():
            return [], [f"{EVENTS} missing: the run never started"]
        events, problems = [], []
        lines = path.read_text(encoding="utf-8", errors="replace").split("\n")
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                last = number == len(lines)  # no newline after it: the write was cut short
                why = "cut short (killed mid-write)" if last else "not valid JSON (cut by a crash?)"
                problems.append(f"{EVENTS}:{number}: line {why}, skipped")
        return events, problems

    def start_events(self) -> None:
        """Make sure the next appended event starts on a line of its own (a killed run may
        have left its last line without a newline)."""
        path = self.file(EVENTS)
        if path.is_file() and path.stat().st_size:
            with open(path, "rb") as handle:
                handle.seek(-1, os.SEEK_END)
                ends_with_newline = handle.read(1) == b"\n"
            if not ends_with_newline:
                append_line(path, "")

    # -- status.json ------------------------------------------------------------------------
    def write_status(self, state: dict[str, Any]) -> None:
        write_atomic(self.file(STATUS), json.dumps(state, indent=1))

    def read_status(self) -> tuple[dict[str, Any] | None, list[str]]:
        """status.json, or None with a note when it is missing or unreadable."""
        path = self.file(STATUS)
        if not path.is_file():
            return None, [f"{STATUS} missing: status taken from {EVENTS}"]
        try:
            return json.loads(path.read_text(encoding="utf-8")), []
        except json.JSONDecodeError:
            return None, [f"{STATUS} unreadable: status taken from {EVENTS}"]

    # -- checkpoints ------------------------------------------------------------------------
    @property
    def checkpoints_dir(self) -> Path:
        return self.file(CHECKPOINTS)

    def complete_checkpoints(self) -> list[Path]:
        """Checkpoints that finished writing (marked complete), oldest first."""
        found = [p for p in self._checkpoints() if (p / COMPLETE_MARKER).is_file()]
        return found

    def incomplete_checkpoints(self) -> list[Path]:
        """Checkpoints without their completion marker (half-written, or being written)."""
        return [p for p in self._checkpoints() if not (p / COMPLETE_MARKER).is_file()]

    def _checkpoints(self) -> list[Path]:
        found = [p for p in self.checkpoints_dir.glob("checkpoint-*") if p.is_dir()]
        return sorted(found, key=checkpoint_step)

    def resume_point(
        self, max_steps: int | None = None, *, extending: bool = False
    ) -> tuple[Path, bool]:
        """The newest complete checkpoint, to resume from, and whether it is at the plan's end.
        Raises RunFinishedError when the run
        has nothing left to do: it finished, or its checkpoint is past `max_steps` (the plan;
        <= 0 means the recorded one), unless `extending` it to a larger `max_steps`. A
        checkpoint exactly at the plan's end (Stop on the last step, or a kill before the
        results were saved) comes with True: resuming it only saves the results."""
        events, _ = self.read_events()
        planned = max_steps if max_steps and max_steps > 0 else _recorded_max_steps(events)
        checkpoints = self.complete_checkpoints()
        step = checkpoint_step(checkpoints[-1]) if checkpoints else 0
        ended = next((e for e in reversed(events) if e.get("event") in _ENDS), None)
        finished = ended is not None and ended["event"] == "finished"
        if (finished or (planned and step > planned)) and not (extending and step < planned):
            raise RunFinishedError(self.path, max(step, (ended or {}).get("step") or 0), planned)
        if not checkpoints:
            raise WorkbenchError(f"{self.path} has no complete checkpoint to resume from.")
        return checkpoints[-1], bool(planned) and step >= planned

    def mark_complete(self, checkpoint: Path, step: int) -> None:
        """Mark a fully written checkpoint as usable (resume and listings ignore the rest)."""
        (Path(checkpoint) / COMPLETE_MARKER).write_text(f"step {step}\n")

    def rotate_checkpoints(self, keep: int, protect: str | Path | None = None) -> None:
        """Delete all but the newest `keep` complete checkpoints (and `protect`, the best one
        when early stopping), and unmarked ones older than the newest complete one (left by a
        crash). Called after the newest is marked complete, so a kill at any moment leaves at
        least one complete checkpoint; a deleted one loses its marker first."""
        complete = self.complete_checkpoints()
        newest = checkpoint_step(complete[-1]) if complete else None
        keep_paths = {p.resolve() for p in complete[-keep:]} if keep > 0 else set()
        if protect:
            keep_paths.add(Path(protect).resolve())
        stale = [p for p in self.incomplete_checkpoints() if newest and checkpoint_step(p) < newest]
        for path in [p for p in complete if p.resolve() not in keep_paths] + stale:
            (path / COMPLETE_MARKER).unlink(missing_ok=True)
            shutil.rmtree(path, ignore_errors=True)

    # -- a full disk --------------------------------------------------------------------------
    def free_megabytes(self) -> float:
        folder = self.path if self.path.exists() else self.path.parent
        return shutil.disk_usage(folder).free / 2**20

    def disk_full_message(self, error: BaseException) -> str | None:
        """The message for an error caused by a full disk (None for other errors): where, how
        much is free, and the last complete checkpoint to resume from."""
        if not caused_by_full_disk(error) and self.free_megabytes() >= FULL_BELOW_MB:
            return None
        complete = self.complete_checkpoints()
        last = complete[-1].name if complete else "none (the run must start again)"
        return (
            f"Disk full at {self.path}: {self.free_megabytes():.1f} MB free. The last complete "
            f"checkpoint is {last}. Free some space, then resume; nothing complete was lost. "
            f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})"
        )

    def check_free_space(self) -> None:
        """Raise DiskFullError when the disk cannot take another checkpoint's files."""
        if self.free_megabytes() < FULL_BELOW_MB:
            raise DiskFullError(self.disk_full_message(OSError(errno.ENOSPC, "no space")))

    def clean_up_after_failure(self) -> None:
        """Remove what a failed write left: temporary files and unmarked checkpoints newer
        than the last complete one (they can never be resumed from)."""
        complete = self.complete_checkpoints()
        newest = checkpoint_step(complete[-1]) if complete else -1
        for path in self.incomplete_checkpoints():
            if checkpoint_step(path) > newest:
                shutil.rmtree(path, ignore_errors=True)
        for tmp in list(self.path.rglob(".*.tmp-*")) + list(self.checkpoints_dir.glob("tmp-*")):
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)

    # -- final artefacts and tables ---------------------------------------------------------
    def save_final(self, name: str, save: Callable[[Path], None]) -> Path:
        """Save the final `adapter` or `model` folder atomically; returns its path."""
        if name not in FINAL_ARTEFACTS:
            raise ValueError(f"final artefact `{name}`: expected one of {FINAL_ARTEFACTS}")
        save_atomic_dir(save, self.file(name))
        return self.file(name)

    def final_artefact(self) -> Path | None:
        """The final adapter/ or model/ folder, None while the run has not finished."""
        return next((self.file(n) for n in FINAL_ARTEFACTS if self.file(n).is_dir()), None)

    def write_json(self, name: str, data: Any) -> Path:
        return self.write_text(name, json.dumps(data, ensure_ascii=False, indent=1, default=str))

    def write_text(self, name: str, text: str) -> Path:
        write_atomic(self.file(name), text)
        return self.file(name)

    def read_json(self, name: str) -> Any | None:
        """A JSON table of the run (comparison.json, forgetting.json), None when absent."""
        path = self.file(name)
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


FULL_BELOW_MB = 1.0  # less than this free and a checkpoint cannot be written: call it full


def checkpoint_step(checkpoint: Path) -> int:
    """The optimizer step a `checkpoint-N` folder was saved at."""
    return int(Path(checkpoint).name.rsplit("-", 1)[1])


def _recorded_max_steps(events: list[dict[str, Any]]) -> int | None:
    return next((e["max_steps"] for e in reversed(events) if e.get("max_steps")), None)


_ENDS = ("stopped", "finished", "failed")


def load_run_config(run_dir: str | Path) -> dict[str, Any]:
    """The parsed config.yaml of a run directory."""
    return RunDirectory(run_dir).read_config()


def complete_checkpoints(run_dir: str | Path) -> list[Path]:
    """Checkpoints of a run that finished writing (marked complete), oldest first."""
    return RunDirectory(run_dir).complete_checkpoints()
