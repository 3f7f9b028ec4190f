"""Training batches without padding: a batch's examples packed end to end in a few rows.

`PackedCollator` is the padding-free alternative to `CompletionCollator`. It lays the examples
of one batch end to end in as few rows of at most `row_length` tokens as first-fit decreasing
gives, with position ids that restart at every example. transformers reads those restarts as
sequence boundaries and keeps attention inside each example (a block-diagonal causal mask), so
each example is trained exactly as if it were alone, and no compute goes to padding. Each
example's first label becomes -100: in a packed row the previous example's last token would
otherwise be trained to predict it.

Examples are never split across rows, and the batch holds the same examples in the same order
of the data as a padded batch would: only the layout changes, not what is learned.
"""

from __future__ import annotations

from typing import Any

from workbench.errors import AllLabelsMaskedError
from workbench.tokens.tokenizing import IGNORE_INDEX


def pack_rows(lengths: list[int], row_length: int) -> list[list[int]]:
    """Indices of the examples in each row: first-fit decreasing into rows of `row_length`.

    An example longer than `row_length` gets a row of its own.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    rows: list[list[int]] = []
    room: list[int] = []
    for i in order:
        for r, free in enumerate(room):
            if lengths[i] <= free:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(row_length - lengths[i])
    return [sorted(row) for row in rows]


def all_masked_error(rows: int) -> AllLabelsMaskedError:
    return AllLabelsMaskedError(
        f"Every label in this batch of {rows} rows is {IGNORE_INDEX}, so no token carries loss "
        "and the step would learn nothing. Usually the prompts fill max_length (see the truncation "
        "report): raise max_length, use truncation_side='left', or check that the template's "
        "response is not empty."
    )


def padded_rows(
    ids: list[list[int]], labels: list[list[int]], width: int, pad_token_id: int, examples: int
) -> tuple[list[list[int]], list[list[int]]]:
    """Each row's ids and labels padded at the end to `width` (labels with IGNORE_INDEX).
    Raises AllLabelsMaskedError, naming the batch's `examples`, when no label carries loss."""
    if all(label == IGNORE_INDEX for row in labels for label in row):
        raise all_masked_error(examples)
    padded_ids = [list(row) + [pad_token_id] * (width - len(row)) for row in ids]
    padded_labels = [list(row) + [IGNORE_INDEX] * (width - len(row)) for row in labels]
    return padded_ids, padded_labels


class PackedCollator:
    """Packs a batch's examples into rows of at most `row_length` tokens, without padding
    between them (only the shorter rows are padded at their end, as a separate sequence).

    Returns input_ids, labels and position_ids (no attention_mask: the restarting position ids
    are the mask), plus `num_tokens`, the number of real tokens, as a Python int. With
    `select_logits`, also `logits_positions` and `logits_targets` (see `loss_positions`).
    """

    def __init__(self, pad_token_id: int, row_length: int, select_logits: bool = False) -> None:
        if row_length < 2:
            raise ValueError(f"`row_length`={row_length} must be at least 2.")
        self.pad_token_id = pad_token_id
        self.row_length = row_length
        self.select_logits = select_logits

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        lengths = [len(f["input_ids"]) for f in features]
        layout = pack_rows(lengths, self.row_length)
        width = max(sum(lengths[i] for i in row) for row in layout)
        rows_ids, rows_labels, positions = [], [], []
        for row in layout:
            row_ids, row_labels, row_positions = [], [], []
            for i in row:
                example_labels = list(features[i]["labels"])
                example_labels[0] = IGNORE_INDEX  # never predicted from the previous example
                row_ids += list(features[i]["input_ids"])
                row_labels += example_labels
                row_positions += range(lengths[i])
            rows_ids.append(row_ids)
            rows_labels.append(row_labels)
            positions.append(row_positions + list(range(width - len(row_positions))))
        ids, labels = padded_rows(
            rows_ids, rows_labels, width, self.pad_token_id, examples=len(features)
        )
        batch = {
            "input_ids": torch.tensor(ids),
            "labels": torch.tensor(labels),
            "position_ids": torch.tensor(positions),
            "num_tokens": sum(lengths),
        }
        if self.select_logits:
            add_loss_positions(batch, labels)
        return batch


def add_loss_positions(batch: dict[str, Any], labels: list[list[int]]) -> None:
    """Add `logits_positions` and `logits_targets` (see `loss_positions`)."""
    import torch

    positions, targets = loss_positions(labels)
    batch["logits_positions"] = torch.tensor(positions)
    batch["logits_targets"] = torch.tensor(targets)


class CompletionCollator:
    """Pads a batch of tokenised examples; labels are padded with -100.

    Raises AllLabelsMaskedError when no token of the batch carries loss: training on it would
    silently learn nothing. With `count_tokens`, the batch also holds `num_tokens`, the number
    of real (non-padding) tokens, as a Python int (the Trainer counts tokens without a sync);
    with `select_logits`, the positions whose logits the loss needs (see PackedCollator).
    """

    def __init__(
        self,
        pad_token_id: int,
        pad_to_multiple_of: int | None = None,
        count_tokens: bool = False,
        select_logits: bool = False,
    ) -> None:
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of
        self.count_tokens = count_tokens
        self.select_logits = select_logits

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        longest = max(len(f["input_ids"]) for f in features)
        if self.pad_to_multiple_of:
            m = self.pad_to_multiple_of
            longest = (longest + m - 1) // m * m
        ids, labels = padded_rows(
            [f["input_ids"] for f in features],
            [f["labels"] for f in features],
            longest,
            self.pad_token_id,
            examples=len(features),
        )
        mask = [[1] * len(f["input_ids"]) + [0] * (longest - len(f["input_ids"])) for f in features]
        batch = {
            "input_ids": torch.tensor(ids),
            "labels": torch.tensor(labels),
            "attention_mask": torch.tensor(mask),
        }
        if self.count_tokens:
            batch["num_tokens"] = sum(len(f["input_ids"]) for f in features)
        if self.select_logits:
            add_loss_positions(batch, labels)
        return batch


def loss_positions(labels: list[list[int]]) -> tuple[list[list[int]], list[list[int]]]:
    """Per row, the positions whose next token carries a label, and those labels; rows are
    evened out with position 0 and label -100 (ignored), so the result is rectangular.

    Computed by the collator on the CPU, so that picking the logits needs no device sync.
    """
    positions = [[t for t in range(len(row) - 1) if row[t + 1] != IGNORE_INDEX] for row in labels]
    width = max(1, max(len(p) for p in positions))
    targets = [
        [row[t + 1] for t in p] + [IGNORE_INDEX] * (width - len(p))
        for row, p in zip(labels, positions)
    ]
    positions = [p + [0] * (width - len(p)) for p in positions]
    return positions, targets
