"""Tests for workbench.evaluation.metrics: the shipped evaluate modules and how they are loaded."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from workbench.evaluation.metrics import available_metrics, load_metric

REPO_ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ["exact_match", "label_accuracy", "rouge_l"]


@pytest.fixture
def network_attempts(monkeypatch):
    """Block every socket connection for the test; the list records each attempt."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network blocked by test_metrics")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    return attempts


# --- loading ---------------------------------------------------------------------------


def test_available_metrics_lists_the_shipped_modules():
    assert available_metrics() == SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_metric_loads_without_network(name, network_attempts):
    import evaluate

    metric = load_metric(name)

    assert isinstance(metric, evaluate.Metric)
    assert metric.name == name
    assert network_attempts == []


@pytest.mark.training
def test_unknown_metric_names_the_shipped_ones(monkeypatch, network_attempts):
    import evaluate
    from huggingface_hub import constants

    # online mode whatever the environment says; the blocked sockets stand for a dead hub
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(evaluate.config, "HF_EVALUATE_OFFLINE", False)

    with pytest.raises(ValueError, match="not shipped") as caught:
        load_metric("no_such_metric_anywhere")

    message = str(caught.value)
    assert "'no_such_metric_anywhere'" in message
    assert "hub is unreachable" in message
    assert "exact_match, label_accuracy, rouge_l" in message


def test_unknown_metric_with_hub_offline_never_connects(monkeypatch, network_attempts):
    import evaluate
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(evaluate.config, "HF_EVALUATE_OFFLINE", False)

    with pytest.raises(ValueError, match="HF_HUB_OFFLINE is set"):
        load_metric("no_such_metric_anywhere")

    assert network_attempts == []
    assert evaluate.config.HF_EVALUATE_OFFLINE is False  # restored after the call


@pytest.mark.training
def test_offline_load_in_a_fresh_process_stays_cheap_and_local(tmp_path):
    # HF_HUB_OFFLINE is read when huggingface_hub is imported, so this needs a new process;
    # HF_HOME in tmp_path shows where evaluate writes its caches.
    script = """
import json, socket, sys
def refuse(*args, **kwargs):
    raise OSError("network blocked")
socket.getaddrinfo = socket.create_connection = socket.socket.connect = refuse
from workbench.evaluation import metrics
cheap = "evaluate" not in sys.modules
scores = {
    name: metrics.load_metric(name).compute(predictions=["yes"], references=["yes"])
    for name in metrics.available_metrics()
}
print(json.dumps({"cheap_import": cheap, "scores": scores}))
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    env.pop("HF_MODULES_CACHE", None)
    env.pop("HF_METRICS_CACHE", None)
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["cheap_import"] is True
    assert report["scores"] == {
        "exact_match": {"exact_match": 1.0},
        "label_accuracy": {"accuracy": 1.0, "invalid_rate": 0.0},
        "rouge_l": {"rouge_l": 1.0},
    }
    # the scripts are copied into HF_HOME/modules; compute() writes no arrow caches
    assert (tmp_path / "hf" / "modules" / "evaluate_modules" / "metrics").is_dir()
    assert [path for path in (tmp_path / "hf").rglob("*.arrow*")] == []


def test_a_failed_compute_does_not_block_the_next_one():
    label_accuracy = load_metric("label_accuracy")
    with pytest.raises(ValueError):
        label_accuracy.compute(predictions=["a"], references=["a"], labels=["b"])

    result = label_accuracy.compute(predictions=["a"], references=["a"], labels=["a"])

    assert result == {"accuracy": 1.0, "invalid_rate": 0.0}


def test_add_batch_accumulates_before_compute():
    rouge_l = load_metric("rouge_l")
    rouge_l.add_batch(predictions=["the cat sat on the mat"], references=["the cat on the mat"])
    rouge_l.add_batch(predictions=["x"], references=["y"])

    assert rouge_l.compute() == {"rouge_l": pytest.approx((10 / 11 + 0.0) / 2)}


# --- exact_match -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prediction", "reference"),
    [
        ("Paris", "paris"),  # case
        ("  Paris \n", "Paris"),  # surrounding whitespace
        ("the  Eiffel\n\tTower", "The Eiffel Tower"),  # inner whitespace runs
        ("Paris.", "paris"),  # trailing full stop
        ("Yes!?", "yes"),  # any mix of trailing . ! ?
        ("yes .", "yes"),  # whitespace before the trailing punctuation
    ],
)
def test_exact_match_normalisation_makes_equal(prediction, reference):
    exact_match = load_metric("exact_match")

    result = exact_match.compute(predictions=[prediction], references=[reference])

    assert result == {"exact_match": 1.0}


@pytest.mark.parametrize(
    ("prediction", "reference"),
    [
        ("U.S.", "US"),  # inner punctuation is kept
        ("Yes, sir", "yes sir"),  # commas are kept
        ("Paris", "Paris, France"),
        ("?Paris", "Paris"),  # only trailing punctuation goes
    ],
)
def test_exact_match_normalisation_keeps_different(prediction, reference):
    exact_match = load_metric("exact_match")

    result = exact_match.compute(predictions=[prediction], references=[reference])

    assert result == {"exact_match": 0.0}


def test_exact_match_without_normalisation_compares_verbatim():
    exact_match = load_metric("exact_match")
    predictions = ["Paris", "Paris.", "paris"]
    references = ["Paris", "Paris", "Paris"]

    normalised = exact_match.compute(predictions=predictions, references=references)
    verbatim = exact_match.compute(predictions=predictions, references=references, normalize=False)

    assert normalised == {"exact_match": 1.0}
    assert verbatim["exact_match"] == pytest.approx(1 / 3)


def test_exact_match_averages_over_pairs():
    exact_match = load_metric("exact_match")

    result = exact_match.compute(predictions=["a", "b", "c", "d"], references=["a", "b", "x", "y"])

    assert result == {"exact_match": 0.5}


def test_exact_match_rejects_empty_input():
    with pytest.raises(ValueError, match="no predictions"):
        load_metric("exact_match").compute(predictions=[], references=[])


# --- label_accuracy ----------------------------------------------------------------------

LABELS = ["billing", "shipping", "technical support"]


@pytest.mark.parametrize(
    ("prediction", "label"),
    [
        ("billing", "billing"),
        ("Billing.", "billing"),  # equal after lowercasing and trailing punctuation
        ("  BILLING  ", "billing"),
        ("The topic is billing", "billing"),  # the one label in the first line
        ("Category: technical   support.", "technical support"),  # multi-word label
        ("shipping\nbecause it mentions billing", "shipping"),  # first line only
    ],
)
def test_label_accuracy_maps_answer_to_label(prediction, label):
    label_accuracy = load_metric("label_accuracy")

    result = label_accuracy.compute(predictions=[prediction], references=[label], labels=LABELS)

    assert result == {"accuracy": 1.0, "invalid_rate": 0.0}


@pytest.mark.parametrize(
    "prediction",
    [
        "no idea",  # no label
        "billing or shipping",  # two labels: ambiguous
        "rebilling",  # a label inside a longer word is not a whole word
        "I am not sure.\nbilling",  # the label is only after the first line
        "",
    ],
)
def test_label_accuracy_counts_unmappable_answers_as_invalid(prediction):
    label_accuracy = load_metric("label_accuracy")

    result = label_accuracy.compute(predictions=[prediction], references=["billing"], labels=LABELS)

    assert result == {"accuracy": 0.0, "invalid_rate": 1.0}


def test_label_accuracy_separates_wrong_from_invalid():
    label_accuracy = load_metric("label_accuracy")

    result = label_accuracy.compute(
        predictions=["Billing.", "The topic is billing", "shipping", "no idea"],
        references=["billing", "billing", "billing", "shipping"],
        labels=LABELS,
    )

    # right, right, wrong label, invalid: accuracy 2/4, invalid 1/4
    assert result == {"accuracy": 0.5, "invalid_rate": 0.25}


def test_label_accuracy_defaults_labels_to_the_references():
    label_accuracy = load_metric("label_accuracy")

    result = label_accuracy.compute(
        predictions=["it is about billing", "technical support"],
        references=["Billing", "shipping"],
    )

    # labels = {billing, shipping}: "technical support" names neither, so it is invalid
    assert result == {"accuracy": 0.5, "invalid_rate": 0.5}


def test_label_accuracy_names_a_reference_outside_the_labels():
    label_accuracy = load_metric("label_accuracy")

    with pytest.raises(ValueError, match=r"reference 'Refunds' \(index 1\) is not one of"):
        label_accuracy.compute(
            predictions=["billing", "billing"],
            references=["billing", "Refunds"],
            labels=LABELS,
        )


def test_label_accuracy_rejects_a_string_as_labels():
    with pytest.raises(ValueError, match="must be a list of strings"):
        load_metric("label_accuracy").compute(
            predictions=["billing"], references=["billing"], labels="billing"
        )


# --- rouge_l -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prediction", "reference", "expected"),
    [
        # pred 6 tokens, ref 5; LCS "the cat on the mat" = 5
        # P = 5/6, R = 5/5 = 1, F = 2 * (5/6) * 1 / (5/6 + 1) = (10/6) / (11/6) = 10/11
        ("the cat sat on the mat", "the cat on the mat", 10 / 11),
        # LCS of [a b c d] and [b d a] is "b d" = 2 (order matters, "a" cannot follow "d")
        # P = 2/4, R = 2/3, F = 2 * (1/2) * (2/3) / (1/2 + 2/3) = (2/3) / (7/6) = 4/7
        ("a b c d", "b d a", 4 / 7),
        # LCS of [a b a b] and [b a b a] is "a b a" or "b a b" = 3; P = R = 3/4, F = 3/4
        ("a b a b", "b a b a", 3 / 4),
        ("The CAT, sat!", "the cat sat", 1.0),  # lowercased, punctuation is not a token
        ("x y z", "a b c", 0.0),  # nothing in common
        ("", "", 1.0),  # empty against empty
        ("...", "", 1.0),  # punctuation only has no tokens: empty too
        ("", "the cat", 0.0),  # empty against non-empty
        ("the cat", "", 0.0),
    ],
)
def test_rouge_l_single_pair(prediction, reference, expected):
    rouge_l = load_metric("rouge_l")

    result = rouge_l.compute(predictions=[prediction], references=[reference])

    assert result["rouge_l"] == pytest.approx(expected)


def test_rouge_l_averages_over_pairs():
    rouge_l = load_metric("rouge_l")

    result = rouge_l.compute(
        predictions=["the cat sat on the mat", "a b c d", ""],
        references=["the cat on the mat", "b d a", "the cat"],
    )

    assert result == {"rouge_l": pytest.approx((10 / 11 + 4 / 7 + 0.0) / 3)}
