"""Exact match: the fraction of predictions that equal their reference, after normalisation.

A local `evaluate` module shipped with the workbench; load it with
`workbench.evaluation.metrics.load_metric("exact_match")`. It has no dependencies beyond `evaluate`
and `datasets`, so it works offline.
"""

import re

import datasets
import evaluate

_DESCRIPTION = """
Exact match: the fraction of (prediction, reference) pairs whose two strings are equal.

With `normalize=True` (the default) both strings are normalised first, so that answers a
person would call identical count as equal:
  1. letters are lowercased;
  2. every run of whitespace (spaces, tabs, newlines) becomes one space, and leading and
     trailing whitespace is removed;
  3. trailing sentence punctuation (any mix of `.`, `!` and `?`) is removed, together with
     whitespace left before it.
Nothing else changes: inner punctuation, articles, accents and digits are kept, so
"U.S." and "US" still differ, and "Yes, sir" and "yes sir" still differ.
With `normalize=False` the strings are compared exactly as given.
"""

_INPUTS_DESCRIPTION = """
Args:
    predictions (list of str): the model's answers.
    references (list of str): the expected answers, one per prediction.
    normalize (bool): normalise both strings before comparing (default True); see the
        description for what normalisation does.
Returns:
    exact_match (float): the fraction of pairs that match, in [0, 1].
Examples:
    >>> exact_match = workbench.evaluation.metrics.load_metric("exact_match")
    >>> exact_match.compute(predictions=["Paris.", "rome"], references=["paris", "Milan"])
    {'exact_match': 0.5}
"""

_WHITESPACE = re.compile(r"\s+")
_TRAILING_PUNCTUATION = ".!?"


def normalize_answer(text: str) -> str:
    """Lowercase, collapse whitespace, and drop trailing `.`, `!` and `?`."""
    collapsed = _WHITESPACE.sub(" ", text.lower()).strip()
    return collapsed.rstrip(_TRAILING_PUNCTUATION).rstrip()


class ExactMatch(evaluate.Metric):
    """Exact match between predictions and references, optionally normalised."""

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

    def _compute(self, predictions, references, normalize: bool = True) -> dict[str, float]:
        if not predictions:
            raise ValueError("exact_match got no predictions; pass at least one pair.")
        if normalize:
            predictions = [normalize_answer(text) for text in predictions]
            references = [normalize_answer(text) for text in references]
        matches = sum(pred == ref for pred, ref in zip(predictions, references))
        return {"exact_match": matches / len(predictions)}
