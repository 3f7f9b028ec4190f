"""Dataset statistics: rows per task and token lengths against the max length."""

from __future__ import annotations

from dataclasses import dataclass

from workbench.data.loading import Examples
from workbench.tokens.templates import Template
from workbench.tokens.tokenizing import tokenize_examples


@dataclass
class DatasetStats:
    """Rows per task and per-row token lengths (before truncation)."""

    rows_per_task: dict[str, int]
    lengths: object  # pandas DataFrame: task, prompt, response, total
    max_length: int

    @property
    def over_max_length(self) -> int:
        """Rows whose prompt + response (+EOS) exceed max_length."""
        return int((self.lengths["total"] > self.max_length).sum())

    def summary(self):
        """Length percentiles of prompt, response and total, as a DataFrame."""
        return (
            self.lengths[["prompt", "response", "total"]]
            .describe(percentiles=[0.5, 0.9, 0.99])
            .round(1)
        )

    def __str__(self) -> str:
        tasks = ", ".join(f"{k}: {v}" for k, v in self.rows_per_task.items())
        total = self.lengths["total"]
        return (
            f"{len(self.lengths)} rows ({tasks}); tokens per row: median {total.median():.0f}, "
            f"max {total.max()}; {self.over_max_length} over max_length={self.max_length}"
        )


def dataset_stats(
    examples: Examples, template: Template | str, tokenizer, *, max_length: int = 512
) -> DatasetStats:
    """Token length distribution (prompt, response, total) and rows over `max_length`."""
    import pandas as pd

    # A huge max_length keeps every row whole, so the lengths are the true ones.
    data = tokenize_examples(examples, template, tokenizer, max_length=10**9)
    lengths = pd.DataFrame(
        {
            "task": data.tasks,
            "prompt": [e.prompt_tokens for e in data.examples],
            "response": [e.response_tokens for e in data.examples],
            "total": [e.full_length for e in data.examples],
        }
    )
    return DatasetStats(examples.tasks, lengths, max_length)
