"""Scoring a sequence classifier: probabilities per label, accuracy and a confusion matrix.

`predict_proba` answers texts with a classifier from `workbench.training.classification`
(one forward pass each, no generation). `evaluate_classifier` scores labelled rows and returns
a `ClassifierEvaluation`; its `as_evaluation()` is the generic `Evaluation` that CompareView
shows, with each label's probability as a per-row column beside the generated answers of a
prompting baseline.
"""

from __future__ import annotations

from dataclasses import dataclass

from workbench.errors import WorkbenchError
from workbench.evaluation.compare import Evaluation
from workbench.model.generation import eval_mode


def confusion_matrix(truth, predicted, size: int) -> list[list[int]]:
    """Counts of (true label, predicted label) pairs: row = truth, column = prediction."""
    matrix = [[0] * size for _ in range(size)]
    for t, p in zip(truth, predicted):
        matrix[int(t)][int(p)] += 1
    return matrix


def classifier_labels(classifier) -> list[str]:
    """The classifier's labels in the order of its outputs (its config's `id2label`)."""
    id2label = classifier.config.id2label
    return [str(id2label[i]) for i in range(len(id2label))]


def predict_proba(
    classifier,
    tokenizer,
    texts: list[str],
    *,
    batch_size: int = 16,
    max_length: int | None = None,
) -> list[dict[str, float]]:
    """For each text, the probability of every label ({label: p}, summing to 1).

    `max_length` cuts longer texts as training did (None: no cut). Texts are padded per batch;
    the classifier reads the last token that is not padding, so padding changes nothing.
    """
    import torch

    if isinstance(texts, str):
        raise WorkbenchError("`texts` is one string; pass a list of texts: [text].")
    empty = [i for i, t in enumerate(texts) if not str(t).strip()]
    if empty:
        raise WorkbenchError(f"texts {empty[:5]} are empty: a classifier needs some text to read.")
    labels = classifier_labels(classifier)
    device = next(classifier.parameters()).device
    out: list[dict[str, float]] = []
    with eval_mode(classifier), torch.no_grad():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(
                list(texts[start : start + batch_size]),
                return_tensors="pt",
                padding=True,
                truncation=max_length is not None,
                max_length=max_length,
            ).to(device)
            logits = classifier(**batch).logits.float()
            for row in torch.softmax(logits, dim=-1).tolist():
                out.append(dict(zip(labels, row)))
    return out


@dataclass
class ClassifierEvaluation:
    """A classifier's answers on labelled rows: the texts, the true labels and, per row, the
    probability of every label."""

    texts: list[str]
    references: list[str]
    probabilities: list[dict[str, float]]
    labels: list[str]

    @property
    def predictions(self) -> list[str]:
        """The most probable label of each row."""
        return [max(p, key=p.get) for p in self.probabilities]

    @property
    def accuracy(self) -> float:
        pairs = list(zip(self.predictions, self.references))
        return sum(p == r for p, r in pairs) / len(pairs) if pairs else 0.0

    def confusion_matrix(self) -> list[list[int]]:
        """Rows: true label, columns: predicted label, both in the order of `labels`."""
        index = {label: i for i, label in enumerate(self.labels)}
        truth = [index[r] for r in self.references]
        return confusion_matrix(truth, [index[p] for p in self.predictions], len(self.labels))

    def table(self):
        """One row per text: reference, prediction and each label's probability (pandas)."""
        import pandas as pd

        rows = [
            {"text": t, "reference": r, "predicted": p, **{f"p({k})": v for k, v in pr.items()}}
            for t, r, p, pr in zip(
                self.texts, self.references, self.predictions, self.probabilities
            )
        ]
        return pd.DataFrame(rows)

    def as_evaluation(self):
        """The generic `Evaluation` CompareView shows: the predicted label as the answer,
        accuracy per row, and each label's probability as a per-row column."""
        per_row = [
            {"accuracy": float(p == r), **{f"p({k})": v for k, v in pr.items()}}
            for p, r, pr in zip(self.predictions, self.references, self.probabilities)
        ]
        return Evaluation(
            prompts=list(self.texts),
            references=list(self.references),
            answers=self.predictions,
            scores={"accuracy": self.accuracy},
            per_row=per_row,
            questions=list(self.texts),
        )


def evaluate_classifier(
    classifier, tokenizer, texts: list[str], references: list[str], **settings
) -> ClassifierEvaluation:
    """Probabilities for `texts` and their true labels (`settings` go to `predict_proba`).
    A reference that is not one of the classifier's labels is an error naming it."""
    labels = classifier_labels(classifier)
    unknown = sorted({r for r in references if r not in labels})
    if unknown:
        raise WorkbenchError(
            f"references {unknown} are not labels of this classifier ({labels}): score it on "
            "rows of the labels it was built with."
        )
    if len(texts) != len(references):
        raise WorkbenchError(f"{len(texts)} texts but {len(references)} references.")
    probabilities = predict_proba(classifier, tokenizer, texts, **settings)
    return ClassifierEvaluation(list(texts), list(references), probabilities, labels)
