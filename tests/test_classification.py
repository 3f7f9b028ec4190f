"""A classification head on a tiny model: head-only training changes the head and not one body
weight, head + LoRA changes only the adapters and the head, every evaluation reports accuracy
and a confusion matrix, a stopped run resumes, the run lists and reports like the others."""

from __future__ import annotations

import random

import pytest
import yaml
from conftest import SAMPLE_DATA, build_tiny_model, quick
from resuming import finish

import workbench
from workbench.errors import WorkbenchError
from workbench.evaluation.classifying import evaluate_classifier, predict_proba
from workbench.runs.history import list_runs, read_run
from workbench.training.classification import (
    load_trained_classifier,
    resume_classifier,
    train_classifier,
)
from workbench.training.heads import ClassifierFields, ClassifierMethod, classifier_from_causal_lm

LABELS = ["billing", "shipping"]


@pytest.fixture(scope="module")
def toy_split():
    """(48 training rows, 16 validation rows) of `text`/`label` rows whose label is the last
    word of the text, after a ticket message: separable by the last token alone."""
    tickets = workbench.load_data(SAMPLE_DATA / "support_tickets.jsonl", verbose=False)
    rng = random.Random(0)
    rows = [
        {"text": f"{row['input']} Topic: {label}", "label": label}
        for row in tickets.rows[:64]
        for label in [rng.choice(LABELS)]
    ]
    data = workbench.load_data(rows, verbose=False)
    return data.select(range(48)), data.select(range(48, 64))


def _weights(model) -> dict:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def _changed(before: dict, model) -> set[str]:
    after = model.state_dict()
    assert set(after) == set(before)
    return {name for name, tensor in before.items() if not after[name].equal(tensor)}


def _accuracies(run) -> list[float]:
    return [e["eval_accuracy"] for e in run.events if e["event"] == "evaluation"]


def test_head_only_training_changes_the_head_and_not_one_body_weight(tiny, toy_split):
    model, tokenizer = tiny
    causal_before = _weights(model)
    settings = quick(max_steps=24, batch_size=8, eval_every=12, learning_rate=1e-2)
    run = train_classifier(model, tokenizer, *toy_split, hyperparameters=settings, start=False)
    classifier = run.model
    before = _weights(classifier)
    assert run.start().wait().status == "finished", run.error

    assert _changed(before, classifier) == {"score.weight"}  # every other tensor bit-identical
    assert not _changed(causal_before, model)  # the causal LM shares the body: untouched too
    assert run.parameters.trainable == 2 * 32  # labels x hidden size
    accuracies = _accuracies(run)
    assert len(accuracies) == 3  # before training (step 0), at step 12 and at the end
    assert accuracies[0] <= 0.75 and accuracies[-1] == 1.0


def test_head_plus_lora_changes_only_the_adapters_and_the_head(tiny, toy_split):
    model, tokenizer = tiny
    settings = quick(max_steps=6, batch_size=8, eval_every=6, learning_rate=1e-2)
    run = train_classifier(
        model, tokenizer, *toy_split, method="head+lora", hyperparameters=settings, start=False
    )
    before = _weights(run.model)
    assert run.start().wait().status == "finished", run.error
    changed = _changed(before, run.model)
    lora = {n for n in changed if ".lora_A." in n or ".lora_B." in n}
    assert lora and changed - lora == {"base_model.model.score.modules_to_save.default.weight"}
    assert (run.run_dir / "adapter" / "adapter_model.safetensors").is_file()
    assert run.method == ClassifierMethod(kind="head+lora")
    texts = [r["text"] for r in toy_split[1].rows]
    loaded, _ = load_trained_classifier(run.run_dir)  # the base model, the adapter and head
    reloaded, trained = (predict_proba(m, tokenizer, texts) for m in (loaded, run.model))
    assert [p["billing"] for p in reloaded] == pytest.approx([p["billing"] for p in trained])


def test_every_evaluation_reports_accuracy_and_a_confusion_matrix(tiny, toy_split):
    model, tokenizer = tiny
    train_rows, validation = toy_split
    settings = quick(max_steps=4, batch_size=8, eval_every=2)
    run = train_classifier(model, tokenizer, train_rows, validation, hyperparameters=settings)
    assert run.wait().status == "finished", run.error
    evaluations = [e for e in run.events if e["event"] == "evaluation"]
    assert [e["step"] for e in evaluations] == [0, 2, 4]
    for event in evaluations:
        matrix = event["eval_confusion_matrix"]
        assert event["eval_confusion_labels"] == LABELS  # inferred, sorted
        assert len(matrix) == 2 and all(len(row) == 2 for row in matrix)
        assert sum(map(sum, matrix)) == len(validation)
        assert event["eval_accuracy"] == pytest.approx(
            (matrix[0][0] + matrix[1][1]) / len(validation)
        )
    scored = evaluate_classifier(
        run.model,
        tokenizer,
        [r["text"] for r in validation.rows],
        [r["label"] for r in validation.rows],
    )
    assert scored.accuracy == pytest.approx(evaluations[-1]["eval_accuracy"])
    assert scored.confusion_matrix() == evaluations[-1]["eval_confusion_matrix"]


def test_probabilities_sum_to_one_and_padding_changes_no_prediction(tiny, toy_split):
    model, tokenizer = tiny
    classifier = classifier_from_causal_lm(model, LABELS)
    assert classifier.config.id2label == {0: "billing", 1: "shipping"}
    assert classifier.config.label2id == {"billing": 0, "shipping": 1}
    assert classifier.config.pad_token_id == tokenizer.pad_token_id
    body = classifier.model.embed_tokens.weight
    assert body.data_ptr() == model.model.embed_tokens.weight.data_ptr()  # shared, not copied
    texts = [r["text"] for r in toy_split[1].rows[:5]]
    together = predict_proba(classifier, tokenizer, texts, batch_size=5)  # padded to the longest
    alone = [predict_proba(classifier, tokenizer, [t])[0] for t in texts]
    for padded, single in zip(together, alone):
        assert set(padded) == set(LABELS) and sum(padded.values()) == pytest.approx(1.0)
        assert padded == pytest.approx(single, abs=1e-5)


def test_a_stopped_run_resumes_from_disk_and_repeats_the_uninterrupted_losses(
    tiny_model_dir, toy_split
):
    settings = quick(max_steps=6, batch_size=8, eval_every=3, learning_rate=1e-2)

    def start(stop_at: int | None = None):
        model, tokenizer = workbench.load_model(str(tiny_model_dir))
        run = train_classifier(model, tokenizer, *toy_split, hyperparameters=settings, start=False)
        return finish(run, stop_at)

    reference = start()
    first = start(stop_at=2)
    assert first.status == "stopped"
    assert read_run(first.run_dir).checkpoint is not None
    model, tokenizer = workbench.load_model(str(tiny_model_dir))
    resumed = resume_classifier(first.run_dir, model, tokenizer).wait()
    assert resumed.status == "finished", resumed.error
    assert resumed.losses == pytest.approx(reference.losses[3:], rel=1e-5)
    assert _accuracies(resumed)[-1] == pytest.approx(_accuracies(reference)[-1])
    with pytest.raises(workbench.WorkbenchError, match="finished"):
        resume_classifier(first.run_dir, model, tokenizer)


def test_the_run_lists_with_its_stage_reports_accuracy_and_reloads(tiny, toy_split):
    model, tokenizer = tiny
    settings = quick(max_steps=2, batch_size=8, eval_every=2)
    run = train_classifier(model, tokenizer, *toy_split, hyperparameters=settings).wait()
    assert run.status == "finished", run.error
    record = read_run(run.run_dir)
    assert record.stage == "classify" and record.status == "finished"
    assert record.method == "head" and record.task == "default"
    assert [r.run_dir for r in list_runs()] == [run.run_dir]
    config = yaml.safe_load((run.run_dir / "config.yaml").read_text())
    assert config["labels"] == LABELS and config["text_fields"] == ["text"]
    assert config["label_field"] == "label" and config["method"]["kind"] == "head"
    assert "validation accuracy" in (run.run_dir / "report.html").read_text()

    texts = [r["text"] for r in toy_split[1].rows]
    loaded, loaded_tokenizer = load_trained_classifier(run.run_dir)
    reloaded = predict_proba(loaded, loaded_tokenizer, texts)
    trained = predict_proba(run.model, tokenizer, texts)
    assert [p["billing"] for p in reloaded] == pytest.approx([p["billing"] for p in trained])


def test_probabilities_show_in_compare_view_beside_another_way(tiny, toy_split):
    from workbench.widgets.compare_view import rows_table_html

    model, tokenizer = tiny
    validation = toy_split[1].select(range(4))
    texts, labels = [r["text"] for r in validation.rows], [r["label"] for r in validation.rows]
    scored = evaluate_classifier(classifier_from_causal_lm(model, LABELS), tokenizer, texts, labels)
    after = scored.as_evaluation()
    assert after.answers == scored.predictions and after.scores == {"accuracy": scored.accuracy}
    assert list(after.per_row[0]) == ["accuracy", "p(billing)", "p(shipping)"]
    page = rows_table_html(None, after, ("zero-shot", "head"))
    assert "p(billing)" in page and f"{scored.probabilities[0]['billing']:.2f}" in page


def test_ticket_rows_take_their_label_from_the_output_and_bad_input_is_refused(
    tiny, ticket_split, toy_split
):
    model, tokenizer = tiny
    train_rows, validation = ticket_split
    fields = ClassifierFields.for_data(train_rows)
    assert fields == ClassifierFields(("instruction", "input"), "output")
    assert fields.texts(train_rows)[0].endswith(train_rows.rows[0]["input"])
    run = train_classifier(
        model, tokenizer, train_rows, validation, text_fields=["input"], start=False
    )
    assert run.template.prompt == "{input}"
    assert set(yaml.safe_load((run.run_dir / "config.yaml").read_text())["labels"]) == {
        "account",
        "billing",
        "shipping",
        "technical",
    }

    fresh = build_tiny_model(tokenizer)
    with pytest.raises(WorkbenchError, match=r"list:2: label 'refund' is not one of"):
        bad = workbench.load_data(
            [{"text": "a", "label": "billing"}, {"text": "b", "label": "refund"}], verbose=False
        )
        train_classifier(fresh, tokenizer, toy_split[0], bad, start=False)
    chat = workbench.load_data(SAMPLE_DATA / "multi_turn_chat.jsonl", verbose=False)
    with pytest.raises(WorkbenchError, match="`text` and a `label` column"):
        train_classifier(fresh, tokenizer, chat, start=False)
    with pytest.raises(WorkbenchError, match="`kind`='lora'"):
        ClassifierMethod(kind="lora")
    with pytest.raises(WorkbenchError, match="two or more distinct labels"):
        train_classifier(fresh, tokenizer, toy_split[0], labels=["billing"], start=False)
