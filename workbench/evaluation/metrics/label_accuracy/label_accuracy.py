"""Label accuracy: accuracy of free-text answers over a fixed set of class labels.

A local `evaluate` module shipped with the workbench; load it with
`workbench.evaluation.metrics.load_metric("label_accuracy")`. Generative models answer a
classification prompt with text ("Billing.", "The topic is billing"), so each answer is
first mapped to one of the labels, or to "invalid" when no single label can be read from it.
"""

import re

import datasets
import evaluate

_DESCRIPTION = """
Label accuracy: the fraction of predictions that map to the same label as their reference,
plus the fraction of predictions that map to no label at all.

Labels, references and predictions are normalised the same way: lowercased, whitespace runs
collapsed to one space, leading and trailing whitespace removed. A prediction then maps to:
  1. the label it equals, ignoring trailing `.`, `!` and `?` ("Billing." -> "billing");
  2. otherwise, the label that occurs as a whole word (or whole phrase) in the prediction's
     first line, if exactly one label does ("The topic is billing" -> "billing");
  3. otherwise "invalid": no label occurs, or several do ("billing or shipping").
An invalid prediction counts as wrong for accuracy and is counted by `invalid_rate`.
"""

_INPUTS_DESCRIPTION = """
Args:
    predictions (list of str): the model's answers, free text.
    references (list of str): the expected labels, one per prediction.
    labels (list of str, optional): the label set. Defaults to the set of references; pass it
        explicitly when a batch may not contain every class. Every reference must be a label.
Returns:
    accuracy (float): the fraction of predictions mapped to their reference's label, in [0, 1].
    invalid_rate (float): the fraction of predictions mapped to no label, in [0, 1].
Examples:
    >>> label_accuracy = workbench.evaluation.metrics.load_metric("label_accuracy")
    >>> label_accuracy.compute(
    ...     predictions=["Billing.", "The topic is shipping", "no idea"],
    ...     references=["billing", "billing", "shipping"],
    ...     labels=["billing", "shipping"],
    ... )
    {'accuracy': 0.3333333333333333, 'invalid_rate': 0.3333333333333333}
"""

_WHITESPACE = re.compile(r"\s+")


def normalize_label(text: str) -> str:
    """Lowercase, collapse whitespace runs to one space, and strip."""
    return _WHITESPACE.sub(" ", text.lower()).strip()


def map_to_label(prediction: str, labels: set[str]) -> str | None:
    """The label `prediction` names, or None if none; `labels` must already be normalised."""
    answer = normalize_label(prediction)
    for candidate in (answer, answer.rstrip(".!?").rstrip()):
        if candidate in labels:
            return candidate
    first_line = normalize_label(prediction.strip().split("\n", 1)[0])
    found = [label for label in labels if _contains_phrase(first_line, label)]
    return found[0] if len(found) == 1 else None


def _contains_phrase(text: str, phrase: str) -> bool:
    """Whether `phrase` occurs in `text` not preceded or followed by a word character."""
    return re.search(rf"(?<!\w){re.escape(phrase)}(?!\w)", text) is not None


class LabelAccuracy(evaluate.Metric):
    """Accuracy of free-text predictions mapped onto a fixed label set."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_INPUTS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Value("string"),
                    "references": datasets.Value("string"),
                }
            ),
        )

    def _compute(self, predictions, references, labels=None) -> dict[str, float]:
        if not predictions:
            raise ValueError("label_accuracy got no predictions; pass at least one pair.")
        normalized_refs = [normalize_label(ref) for ref in references]
        label_set = _label_set(labels, normalized_refs)
        for index, (raw, reference) in enumerate(zip(references, normalized_refs)):
            if reference not in label_set:
                raise ValueError(
                    f"label_accuracy: reference {raw!r} (index {index}) is not one of "
                    f"`labels` {sorted(label_set)}; add it to `labels` or fix the reference."
                )
        mapped = [map_to_label(pred, label_set) for pred in predictions]
        correct = sum(label == ref for label, ref in zip(mapped, normalized_refs))
        invalid = sum(label is None for label in mapped)
        return {"accuracy": correct / len(mapped), "invalid_rate": invalid / len(mapped)}


def _label_set(labels, references: list[str]) -> set[str]:
    """The normalised label set: `labels` if given, else the references."""
    if labels is None:
        label_set = set(references)
    elif isinstance(labels, str):
        raise ValueError(
            f"label_accuracy: `labels` must be a list of strings, got the string {labels!r}; "
            f"pass labels=[{labels!r}, ...]."
        )
    else:
        label_set = {normalize_label(label) for label in labels}
    if "" in label_set:
        source = "`references`" if labels is None else "`labels`"
        raise ValueError(f"label_accuracy: {source} contains an empty label; remove it.")
    return label_set
