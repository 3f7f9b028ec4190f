"""ROUGE-L: F-measure of the longest common subsequence of words, averaged over pairs.

A local `evaluate` module shipped with the workbench; load it with
`workbench.evaluation.metrics.load_metric("rouge_l")`. Written for the workbench (no `rouge_score`
dependency), so it works offline. It matches the sentence-level ROUGE-L of Lin (2004) with
beta = 1 and no stemming; scores can differ slightly from `rouge_score`, which tokenises
differently (it keeps only ASCII letters and digits).
"""

import re

import datasets
import evaluate

_DESCRIPTION = """
ROUGE-L: for each (prediction, reference) pair, the longest common subsequence (LCS) of their
word tokens gives precision = LCS / prediction length and recall = LCS / reference length;
the pair's score is their harmonic mean (F1, beta = 1). The metric is the mean over pairs.

Tokens are the `\\w+` runs of the lowercased text, so punctuation is ignored and
"The cat." and "the cat" score 1.0. Two empty token lists score 1.0; an empty list against a
non-empty one scores 0.0.
"""

_CITATION = """
@inproceedings{lin-2004-rouge,
    title = "{ROUGE}: A Package for Automatic Evaluation of Summaries",
    author = "Lin, Chin-Yew",
    booktitle = "Text Summarization Branches Out",
    year = "2004",
    publisher = "Association for Computational Linguistics",
    url = "https://aclanthology.org/W04-1013",
    pages = "74--81",
}
"""

_INPUTS_DESCRIPTION = """
Args:
    predictions (list of str): the model's answers.
    references (list of str): the expected answers, one per prediction.
Returns:
    rouge_l (float): mean ROUGE-L F1 over the pairs, in [0, 1].
Examples:
    >>> rouge_l = workbench.evaluation.metrics.load_metric("rouge_l")
    >>> rouge_l.compute(predictions=["the cat sat"], references=["the cat"])
    {'rouge_l': 0.8}
"""

_WORD = re.compile(r"\w+")


def tokenize(text: str) -> list[str]:
    """The lowercased `\\w+` words of `text`."""
    return _WORD.findall(text.lower())


def lcs_length(first: list[str], second: list[str]) -> int:
    """Length of the longest common subsequence; O(n*m) time, O(m) memory."""
    previous = [0] * (len(second) + 1)
    for token in first:
        current = [0] * (len(second) + 1)
        for j, other in enumerate(second, start=1):
            if token == other:
                current[j] = previous[j - 1] + 1
            else:
                current[j] = max(previous[j], current[j - 1])
        previous = current
    return previous[-1]


def rouge_l_f1(prediction: str, reference: str) -> float:
    """ROUGE-L F1 of one pair."""
    pred_tokens, ref_tokens = tokenize(prediction), tokenize(reference)
    if not pred_tokens or not ref_tokens:
        return 1.0 if pred_tokens == ref_tokens else 0.0
    common = lcs_length(pred_tokens, ref_tokens)
    if common == 0:
        return 0.0
    precision = common / len(pred_tokens)
    recall = common / len(ref_tokens)
    return 2 * precision * recall / (precision + recall)


class RougeL(evaluate.Metric):
    """Mean sentence-level ROUGE-L F1 between predictions and references."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_INPUTS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Value("string"),
                    "references": datasets.Value("string"),
                }
            ),
            reference_urls=["https://aclanthology.org/W04-1013"],
        )

    def _compute(self, predictions, references) -> dict[str, float]:
        if not predictions:
            raise ValueError("rouge_l got no predictions; pass at least one pair.")
        scores = [rouge_l_f1(pred, ref) for pred, ref in zip(predictions, references)]
        return {"rouge_l": sum(scores) / len(scores)}
