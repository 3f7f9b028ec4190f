"""Seeded train/validation splits (stratified by task) and multi-task mixing by proportion."""

from __future__ import annotations

import random
from dataclasses import replace

from workbench.data.loading import Examples
from workbench.errors import WorkbenchError


def split_data(
    examples: Examples,
    validation: float | int = 0.1,
    *,
    seed: int = 0,
    stratify: bool = True,
) -> tuple[Examples, Examples]:
    """(train, validation). `validation` is a fraction (0-1) or a row count.

    With `stratify` and more than one task, each task is split in the same proportion, so a
    small task is never missing from validation. The same seed gives the same split.
    """
    n = len(examples)
    if isinstance(validation, float) and not 0.0 < validation < 1.0:
        raise WorkbenchError(
            f"`validation`={validation}: use a fraction between 0 and 1, or a row count."
        )
    count = validation if isinstance(validation, int) else round(n * validation)
    if not 0 < count < n:
        raise WorkbenchError(
            f"`validation`={validation} leaves {count} of {n} rows for "
            "validation; both splits need at least one row."
        )
    rng = random.Random(seed)
    groups: dict[str, list[int]] = {}
    for i, row in enumerate(examples.rows):
        groups.setdefault(row["task"] if stratify else "all", []).append(i)
    shares = allocate(count, {task: len(indices) for task, indices in groups.items()})
    if len(groups) > 1:  # every task with 2+ rows gets a validation row, taken from the largest
        for task, indices in groups.items():
            largest = max(shares, key=shares.get)
            if shares[task] == 0 and len(indices) > 1 and shares[largest] > 1:
                shares[task], shares[largest] = 1, shares[largest] - 1
    held: list[int] = []
    for task, indices in groups.items():
        rng.shuffle(indices)
        held.extend(indices[: shares[task]])
    held_set = set(held)
    train = [i for i in range(n) if i not in held_set]
    rng.shuffle(train)
    return examples.select(train), examples.select(sorted(held))


def mix_tasks(
    datasets: dict[str, Examples],
    proportions: dict[str, float] | None = None,
    *,
    total: int | None = None,
    seed: int = 0,
) -> Examples:
    """One shuffled dataset drawing from several, in the given proportions.

    Keys name the datasets; rows keep their own `task` (set it with `load_data(task=...)`),
    and remember the file they came from. Proportions default to
    equal shares and are normalised to sum to 1. `total` defaults to the most rows that can be
    drawn without repeating any; asking for more than a task has is an error naming it.
    """
    if not datasets:
        raise WorkbenchError("mix_tasks needs at least one dataset.")
    formats = {name: d.format for name, d in datasets.items()}
    if len(set(formats.values())) > 1:
        raise WorkbenchError(
            f"Cannot mix different formats {formats}: load them with the same "
            "format (map columns with columns={...}) first."
        )
    proportions = proportions or {name: 1.0 for name in datasets}
    unknown = set(proportions) ^ set(datasets)
    if unknown:
        raise WorkbenchError(
            f"`proportions` and `datasets` must name the same tasks; differ in: {sorted(unknown)}."
        )
    if any(p < 0 for p in proportions.values()) or sum(proportions.values()) <= 0:
        raise WorkbenchError(
            f"`proportions` must be non-negative with a positive sum: {proportions}."
        )
    weight = {k: v / sum(proportions.values()) for k, v in proportions.items()}
    if total is None:
        total = int(min(len(datasets[k]) / w for k, w in weight.items() if w > 0))
    wanted = allocate(total, weight)
    rng = random.Random(seed)
    rows, locations, sources = [], [], []
    for name, data in datasets.items():
        want = wanted[name]
        if want > len(data):
            raise WorkbenchError(
                f"Task `{name}` has {len(data)} rows but the mix asks for {want} "
                f"({weight[name]:.0%} of {total}); lower `total` or its share."
            )
        picked = rng.sample(range(len(data)), want)
        for i in picked:
            rows.append(data.rows[i])
            locations.append(data.locations[i])
            sources.append(data.source_of(i))
    order = list(range(len(rows)))
    rng.shuffle(order)
    first = next(iter(datasets.values()))
    return replace(
        first,
        rows=[rows[i] for i in order],
        locations=[locations[i] for i in order],
        sources=[sources[i] for i in order],
        source="mix(" + ", ".join(datasets) + ")",
        dropped=[],
    )


def allocate(total: int, weights: dict[str, float]) -> dict[str, int]:
    """Split `total` into whole numbers proportional to `weights` that add up to exactly
    `total` (largest remainder: the rounding leftovers go to the largest fractions)."""
    scale = sum(weights.values())
    exact = {k: total * w / scale for k, w in weights.items()}
    shares = {k: int(v) for k, v in exact.items()}
    leftover = total - sum(shares.values())
    for key in sorted(exact, key=lambda k: exact[k] - shares[k], reverse=True)[:leftover]:
        shares[key] += 1
    return shares
