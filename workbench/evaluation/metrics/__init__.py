"""Metrics that ship with the workbench, as local `evaluate` modules loaded by path.

Each shipped metric lives in `workbench/metrics/<name>/<name>.py` and loads without any
network access. `load_metric` prefers a shipped metric and falls back to the Hugging Face
Hub (`evaluate.load(name)`) only for names the workbench does not ship.
`evaluate` is imported inside the functions, so importing this package stays cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import evaluate

METRICS_DIR = Path(__file__).parent

# What each score of an Evaluation measures, in a sentence, and whether it is a share of rows
# (the panels show a share as a percentage, and count rows for those in `COUNTED_SHARES`).
METRIC_MEANINGS: dict[str, tuple[str, bool]] = {
    "accuracy": ("share of answers that name the right label", True),
    "label_accuracy": ("share of answers that name the right label", True),
    "exact_match": ("share of answers equal to the reference", True),
    "invalid_rate": ("share of answers that name none of the labels", True),
    "rouge_l": ("word overlap with the reference (0: none, 100%: the same words in order)", True),
    "validation_loss": ("mean loss on the reference answers: lower is better", False),
    "perplexity": ("exp(loss): how surprised the model is by the reference; lower: better", False),
}
# the shares where each row is right or wrong: "3 of 8" can stand beside the percentage
COUNTED_SHARES = frozenset({"accuracy", "label_accuracy", "exact_match", "invalid_rate"})


def available_metrics() -> list[str]:
    """Names of the metrics shipped with the workbench, sorted."""
    return sorted(
        entry.name
        for entry in METRICS_DIR.iterdir()
        if entry.is_dir() and (entry / f"{entry.name}.py").is_file()
    )


def load_metric(name: str) -> evaluate.EvaluationModule:
    """Load metric `name`: a shipped one from its local path, else from the Hugging Face Hub.

    Shipped metrics never touch the network. Other names go to the hub through
    `evaluate.load`; with `HF_HUB_OFFLINE=1` they are looked up in evaluate's cache only.
    Raises ValueError, listing the shipped metrics, when a hub name cannot be loaded.
    The metric keeps its predictions in memory (one process, no cache files or file locks).
    """
    import evaluate

    shipped = available_metrics()
    if name in shipped:
        # A path to the script: evaluate copies it into its modules cache
        # (~/.cache/huggingface/modules) and imports it; no request reaches the hub.
        return _load_local(str(METRICS_DIR / name / f"{name}.py"))
    offline = _hub_offline()
    # evaluate 0.4.6 ignores HF_HUB_OFFLINE and has its own flag: honour the hub-wide one,
    # so that evaluate skips the hub and falls back to the metrics it has cached.
    previous = evaluate.config.HF_EVALUATE_OFFLINE
    evaluate.config.HF_EVALUATE_OFFLINE = previous or offline
    try:
        return evaluate.load(name, keep_in_memory=True)
    except OSError as error:  # ConnectionError and FileNotFoundError included
        reason = (
            "HF_HUB_OFFLINE is set and evaluate's cache does not hold it"
            if offline
            else "the hub is unreachable or has no metric of that name"
        )
        raise ValueError(
            f"Metric {name!r} is not shipped with the workbench and could not be loaded from "
            f"the Hugging Face Hub: {reason} ({error}). Shipped metrics, which work offline: "
            f"{', '.join(shipped)}."
        ) from error
    finally:
        evaluate.config.HF_EVALUATE_OFFLINE = previous


def _load_local(script: str) -> evaluate.EvaluationModule:
    """Load a metric script by path, explaining a modules cache it cannot write."""
    import evaluate

    try:
        # keep_in_memory: otherwise evaluate writes each compute() to an arrow file under a
        # file lock, and a compute() that raises leaves the lock held (the next one waits 1 s).
        return evaluate.load(script, keep_in_memory=True)
    except OSError as error:
        raise OSError(
            f"evaluate could not copy {script} into its modules cache "
            f"{evaluate.config.HF_MODULES_CACHE} ({error}); set HF_MODULES_CACHE or HF_HOME to "
            "a writable folder."
        ) from error


def _hub_offline() -> bool:
    """Whether HF_HUB_OFFLINE is set, as the Hugging Face libraries read it."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)
