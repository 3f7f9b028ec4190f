"""Run history: list every run directory with its status and results, and compare several.

Built only from the files a run writes (`config.yaml`, `status.json`, `metrics.jsonl`,
`comparison.json`, `checkpoints/`), so it works for runs of this kernel, of another process
and of a kernel that was killed mid-write: a cut-off last line, a missing `status.json` or a
checkpoint without its completion marker is reported, never fatal.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from workbench.errors import WorkbenchError
from workbench.model.methods import Method
from workbench.runs.directory import COMPARISON, RunDirectory, runs_root
from workbench.runs.files import process_alive
from workbench.runs.kinds import KINDS

RunStatus = Literal[
    "created", "running", "stopping", "stopped", "finished", "failed", "interrupted"
]
END_EVENTS = ("stopped", "finished", "failed")
# The settings shown in a listing (flattened config.yaml keys), in this order.
KEY_SETTINGS = (
    "hyperparameters.learning_rate",
    "hyperparameters.max_steps",
    "hyperparameters.batch_size",
    "hyperparameters.beta",
)


@dataclass
class RunRecord:
    """What one run directory says about its run.

    `status` is `interrupted` when the run neither ended nor is alive (its kernel was killed);
    `resumable` when an SFT run did not finish and has a complete checkpoint; `problems` lists what
    was found damaged (a cut-off line, a half-written checkpoint, a missing file);
    `continued_from` the run whose model this one trained further (tasks in sequence; the SFT
    run a DPO, reward model or RL run started from), if any.
    """

    run_dir: Path
    status: RunStatus
    stage: str  # "sft" (instruction tuning) or "dpo" (preference tuning)
    task: str | None
    settings: dict[str, Any]  # config.yaml flattened: {"method.kind": "lora", ...}
    step: int
    max_steps: int | None
    duration: float | None  # seconds spent training (to now while running): `training_seconds`
    train_loss: float | None
    eval_loss: float | None
    metrics: dict[str, float] = field(default_factory=dict)
    checkpoint: Path | None = None
    problems: list[str] = field(default_factory=list)
    continued_from: Path | None = None  # config.yaml's `continued_from` (or `parent`)

    @property
    def name(self) -> str:
        return self.run_dir.name

    @property
    def resumable(self) -> bool:
        """Not finished, with a complete checkpoint, of a kind `resume` can continue from the
        directory alone (the registry says which: DPO runs restart instead; distillation needs
        its teacher; RL with a reward function of your own needs it again)."""
        ended_early = self.status in ("stopped", "failed", "interrupted")
        if not ended_early or self.checkpoint is None:
            return False
        kind = KINDS.get(self.stage)
        return kind is not None and kind.resumes_from_directory(nested(self.settings))

    @property
    def method(self) -> str | None:
        """The method as `Method.describe` names it (DoRA, rsLoRA, 4- or 8-bit base...)."""
        values = {
            k[len("method.") :]: v for k, v in self.settings.items() if k.startswith("method.")
        }
        try:
            method = Method(**values)
        except (TypeError, ValueError):  # a damaged config: say what it says
            return values.get("kind")
        return method.describe(self.settings.get("quantization"))

    @property
    def running(self) -> bool:
        return self.status in ("running", "stopping")

    def row(self) -> dict[str, Any]:
        """One flat row for a table: identity, status, key settings, duration, results."""
        row = {
            "run": self.name,
            "status": self.status,
            "stage": self.stage,
            "task": self.task,
            "continued_from": self.continued_from.name if self.continued_from else None,
            "step": f"{self.step}/{self.max_steps}" if self.max_steps else str(self.step),
            "duration_s": None if self.duration is None else round(self.duration, 1),
            "model": self.settings.get("model"),
            "method": self.method,
        }
        row.update({k.split(".")[-1]: self.settings.get(k) for k in KEY_SETTINGS})
        row.update(train_loss=self.train_loss, eval_loss=self.eval_loss, **self.metrics)
        row["resumable"] = self.resumable
        return row


def _status(state: dict | None, events: list[dict]) -> RunStatus:
    """Trust status.json while its process lives; otherwise the last recorded event."""
    recorded = (state or {}).get("status")
    if recorded in ("running", "stopping"):
        pid = state.get("pid")
        alive = pid == os.getpid() or process_alive(pid)  # this kernel records how it ended
        return recorded if alive else "interrupted"
    if recorded in END_EVENTS or recorded == "created":
        return recorded
    end = next((e["event"] for e in reversed(events) if e.get("event") in END_EVENTS), None)
    if end is not None:
        return end
    return "interrupted" if events else "created"


def flatten(config: dict, prefix: str = "") -> dict[str, Any]:
    """`{"method": {"r": 16}}` -> `{"method.r": 16}`; lists become comma-joined text."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, (list, tuple)):
            flat[name] = ", ".join(map(str, value))
        else:
            flat[name] = value
    return flat


def _config(directory: RunDirectory) -> tuple[dict, list[str]]:
    """config.yaml, or {} with a note when it is missing or unreadable."""
    try:
        return directory.read_config(), []
    except FileNotFoundError:
        return {}, ["config.yaml missing: the run cannot be reproduced or resumed"]
    except WorkbenchError as error:  # not valid YAML: the message names the line
        return {}, [f"config.yaml unreadable: {str(error).splitlines()[0]}"]


def _task_of(run_dir: Path, config: dict) -> str | None:
    """The task(s) of the training rows (data/train.jsonl), e.g. `ticket_topic`."""
    path = run_dir / str((config.get("data") or {}).get("train") or "data/train.jsonl")
    if not path.is_file():
        return None
    tasks: dict[str, int] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            task = json.loads(line).get("task")
        except (json.JSONDecodeError, AttributeError):
            continue
        if task:
            tasks[task] = tasks.get(task, 0) + 1
    return ", ".join(sorted(tasks)) or None


def _results(run_dir: Path, events: list[dict]) -> dict[str, Any]:
    steps = [e for e in events if e.get("event") == "step"]
    evals = [e for e in events if e.get("event") == "evaluation" and e.get("eval_loss") is not None]
    metrics: dict[str, float] = {}
    if steps and steps[-1].get("reward_margin") is not None:
        metrics["reward_margin"] = steps[-1]["reward_margin"]
    try:
        summary = (RunDirectory(run_dir).read_json(COMPARISON) or {"summary": []})["summary"]
        metrics.update({r["metric"]: r["after"] for r in summary if "after" in r})
    except (json.JSONDecodeError, KeyError, TypeError):
        pass  # a damaged comparison.json: the listing shows the run without those metrics
    return {
        "step": max((e.get("step") or 0 for e in events), default=0),
        "max_steps": next((e.get("max_steps") for e in reversed(steps)), None)
        or next((e.get("max_steps") for e in events if e.get("event") == "started"), None),
        "train_loss": steps[-1].get("loss") if steps else None,
        "eval_loss": evals[-1]["eval_loss"] if evals else None,
        "metrics": metrics,
    }


def read_run(run_dir: str | Path) -> RunRecord:
    """Everything a run directory says about its run (never raises on damaged files)."""
    run_dir = Path(run_dir)
    directory = RunDirectory(run_dir)
    config, problems = _config(directory)
    events, event_problems = directory.read_events()
    state, status_problems = directory.read_status()
    problems += event_problems + status_problems
    status = _status(state, events)
    now = time.time() if status in ("running", "stopping") else None
    partial = [p.name for p in directory.incomplete_checkpoints()]
    if partial and status not in ("running", "stopping"):
        problems.append(f"incomplete checkpoint(s) ignored: {', '.join(partial)}")
    checkpoints = directory.complete_checkpoints()
    return RunRecord(
        run_dir=run_dir,
        status=status,
        stage=str(config.get("stage", "sft")),
        task=_task_of(run_dir, config),
        settings=flatten(config),
        duration=training_seconds(events, now),
        checkpoint=checkpoints[-1] if checkpoints else None,
        problems=problems,
        continued_from=_continued_from(config),
        **_results(run_dir, events),
    )


def training_seconds(events: list[dict], now: float | None = None) -> float | None:
    """Seconds spent training, summed over the run's segments: each from a `started` event (a
    resume starts a new one) to the `stopped`, `finished` or `failed` event that ends it; a
    segment cut by a kill ends at its last event, the one still training at `now`. The idle
    time between a stop and a resume is not counted. None for a run that never started."""
    total, start, last, started = 0.0, None, None, False
    for event in events:
        moment = event.get("time")
        if not isinstance(moment, (int, float)):
            continue
        kind = event.get("event")
        if kind == "started":
            if start is not None:  # the segment before was killed: it ended at its last event
                total += last - start
            start, started = moment, True
        elif kind in END_EVENTS and start is not None:
            total, start = total + moment - start, None
        last = moment
    if start is not None:
        total += (now if now is not None else last) - start
    return total if started else None


def _continued_from(config: dict) -> Path | None:
    """The run this one went on from: `continued_from` (tasks in sequence) or `parent` (the
    SFT run that a DPO, reward model, GRPO or PPO run started from)."""
    earlier = config.get("continued_from") or config.get("parent")
    return Path(earlier) if earlier else None


def list_runs(root: str | Path | None = None) -> list[RunRecord]:
    """Every run directory under `root` (default: `$WORKBENCH_RUNS` or ./runs), newest first.

    A folder counts as a run when it holds `config.yaml` or `metrics.jsonl`.
    """
    root = Path(root) if root is not None else runs_root()
    if not root.is_dir():
        return []
    folders = [p for p in root.iterdir() if p.is_dir() and RunDirectory(p).is_run]
    return [read_run(p) for p in sorted(folders, key=lambda p: p.name, reverse=True)]


def runs_table(records: list[RunRecord]):
    """The listing as a pandas DataFrame, one row per run."""
    import pandas as pd

    return pd.DataFrame([r.row() for r in records])


@dataclass
class RunComparison:
    """Several runs side by side: their curves, the settings in which they differ and their
    results (last training loss, last validation loss, the metrics after training)."""

    records: list[RunRecord]
    curves: Any  # DataFrame: run, step, series ("train loss", "validation loss", ...), value
    differences: Any  # DataFrame: one row per differing setting, one column per run
    results: Any  # DataFrame: one row per result (train_loss, eval_loss, metrics), run columns

    def figure(self):
        """A plotly figure overlaying every run's training and validation loss: one colour a
        run (training solid, validation dotted), DPO's reward margin on an axis of its own,
        the legend below the plot (long run names do not squeeze it)."""
        import plotly.graph_objects as go
        from plotly.colors import qualitative

        fig = go.Figure()
        runs = list(dict.fromkeys(self.curves["run"])) if len(self.curves) else []
        colours = {run: qualitative.Plotly[i % 10] for i, run in enumerate(runs)}
        for name, group in self.curves.groupby(["run", "series"], sort=False):
            run, series = name
            dash = {"train loss": "solid", "validation loss": "dot"}.get(series, "dash")
            fig.add_trace(
                go.Scatter(
                    x=group["step"],
                    y=group["value"],
                    name=f"{run} · {series}",
                    mode="lines" if series == "train loss" else "lines+markers",
                    line=dict(dash=dash, color=colours[run]),
                    legendgroup=run,
                    yaxis="y2" if series == "reward margin" else "y",
                )
            )
        margins = "reward margin" in set(self.curves["series"]) if len(self.curves) else False
        fig.update_layout(
            height=460,
            template="plotly_white",
            margin=dict(l=50, r=50, t=30, b=40),
            xaxis=dict(title="optimizer step", rangemode="nonnegative", tickformat="d"),
            yaxis_title="loss",
            legend=dict(orientation="h", yanchor="top", y=-0.18, x=0),
        )
        if margins:  # DPO's margin grows while losses fall: not on the loss axis
            fig.update_layout(
                yaxis2=dict(title="reward margin", overlaying="y", side="right", showgrid=False)
            )
        return fig


SERIES = {"loss": "train loss", "reward_margin": "reward margin"}


def run_curves(run_dir: str | Path) -> list[dict[str, Any]]:
    """Long-format points of one run: training loss (and DPO reward margin) per step, and
    validation loss per evaluation. Steps redone after a resume count once (the last)."""
    name = Path(run_dir).name
    events, _ = RunDirectory(run_dir).read_events()
    points: dict[tuple[str, int], float] = {}
    for event in events:
        kind, step = event.get("event"), event.get("step")
        if kind == "step":
            for key, series in SERIES.items():
                if event.get(key) is not None:
                    points[(series, step)] = event[key]
        elif kind == "evaluation" and event.get("eval_loss") is not None:
            points[("validation loss", step)] = event["eval_loss"]
    return [
        {"run": name, "series": series, "step": step, "value": value}
        for (series, step), value in sorted(points.items(), key=lambda kv: (kv[0][0], kv[0][1]))
    ]


def compare_runs(runs: list[str | Path | RunRecord]) -> RunComparison:
    """Overlay the curves of several runs and tabulate the settings that differ between them."""
    import pandas as pd

    if not runs:
        raise ValueError("compare_runs needs at least one run directory (see list_runs()).")
    for run in runs:
        if not isinstance(run, RunRecord) and not RunDirectory(run).is_run:
            why = "does not exist" if not Path(run).exists() else "holds no run"
            raise FileNotFoundError(
                f"{run} {why} (no config.yaml or metrics.jsonl): pass run directories, as "
                "`python -m workbench runs` lists them."
            )
    records = [r if isinstance(r, RunRecord) else read_run(r) for r in runs]
    points = [p for r in records for p in run_curves(r.run_dir)]
    curves = pd.DataFrame(points, columns=["run", "series", "step", "value"])
    return RunComparison(records, curves, settings_differences(records), results_table(records))


def results_table(records: list[RunRecord]):
    """A DataFrame of each run's results: the last training and validation loss, then every
    metric any run measured (empty where a run has none)."""
    import pandas as pd

    metrics = sorted({name for r in records for name in r.metrics})
    names = ["train_loss", "eval_loss", *metrics]
    data = {
        r.name: [r.train_loss, r.eval_loss, *(r.metrics.get(m) for m in metrics)] for r in records
    }
    return pd.DataFrame(data, index=pd.Index(names, name="result"))


def settings_differences(records: list[RunRecord]):
    """A DataFrame of the settings whose values are not the same in every run."""
    import pandas as pd

    keys = sorted({k for r in records for k in r.settings})
    differing = [k for k in keys if len({repr(r.settings.get(k)) for r in records}) > 1]
    data = {r.name: [r.settings.get(k) for k in differing] for r in records}
    return pd.DataFrame(data, index=pd.Index(differing, name="setting"))


def nested(flat: dict[str, object]) -> dict[str, object]:
    """`{"reward.function": f}` -> `{"reward": {"function": f}}`: config.yaml's shape again."""
    tree: dict[str, object] = {}
    for key, value in flat.items():
        *parents, last = key.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})  # type: ignore[assignment]
        node[last] = value  # type: ignore[index]
    return tree
