"""Continued pre-training: blocks of raw text, every token learned, and its Run on a tiny model."""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml
from conftest import SAMPLE_DATA, quick
from resuming import finish

import workbench
from workbench.errors import WorkbenchError
from workbench.model.methods import Method
from workbench.runs.history import read_run
from workbench.tokens.blocks import BlockCollator, token_blocks
from workbench.tokens.tokenizing import IGNORE_INDEX
from workbench.training.pretraining import (
    continue_pretraining,
    perplexity,
    perplexity_table,
    read_documents,
    resume_pretraining,
)

DOMAIN = SAMPLE_DATA / "domain"


@pytest.fixture(scope="module")
def manual():
    """(40 training documents, 8 held-out documents) of the generated product manual."""
    train = read_documents(DOMAIN / "manual_train.jsonl").select(range(40))
    return train, read_documents(DOMAIN / "manual_held_out.jsonl").select(range(8))


def ids_of(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


# -- blocks and their labels -------------------------------------------------------------
def test_an_eos_sits_between_two_documents_inside_one_block(tiny_tokenizer):
    first, second = "Error F-217: the vent motor has stalled.", "Dew Guard defaults to 4."
    blocks = token_blocks([first, second], tiny_tokenizer, block_size=256)
    eos = tiny_tokenizer.eos_token_id
    expected = ids_of(tiny_tokenizer, first) + [eos] + ids_of(tiny_tokenizer, second) + [eos]
    assert blocks.blocks == [expected]
    assert blocks.documents == 2 and blocks.tokens == len(expected)


def test_the_stream_is_cut_into_full_blocks_and_one_shorter_last_block(tiny_tokenizer, manual):
    texts = [row["text"] for row in manual[0].rows]
    stream = sum(len(ids_of(tiny_tokenizer, t)) + 1 for t in texts)  # + the EOS of each
    blocks = token_blocks(texts, tiny_tokenizer, block_size=64)
    assert len(blocks) == math.ceil(stream / 64)
    assert all(len(b) == 64 for b in blocks.blocks[:-1])
    assert len(blocks.blocks[-1]) == stream - 64 * (len(blocks) - 1)
    assert blocks.tokens == stream and blocks.padded == 64 * len(blocks) - stream
    assert sum(b.count(tiny_tokenizer.eos_token_id) for b in blocks.blocks) >= len(texts)


def test_a_last_block_of_a_single_token_is_dropped(tiny_tokenizer):
    text = "Mist Pulse sets how long each misting burst lasts."
    size = len(ids_of(tiny_tokenizer, text))  # the text fills one block; its EOS spills over
    blocks = token_blocks([text], tiny_tokenizer, block_size=size)
    assert blocks.blocks == [ids_of(tiny_tokenizer, text)]


def test_every_label_equals_its_input_and_only_padding_is_masked(tiny_tokenizer):
    eos = tiny_tokenizer.eos_token_id
    assert tiny_tokenizer.pad_token_id == eos  # as SmolLM2: padding cannot be told by its id
    features = [{"input_ids": [5, 6, eos, 7, 8, 9]}, {"input_ids": [10, eos, 11]}]
    batch = BlockCollator(tiny_tokenizer.pad_token_id)(features)
    real = batch["attention_mask"].bool()
    assert torch.equal(batch["labels"][real], batch["input_ids"][real])  # EOS learned too
    assert batch["labels"][~real].tolist() == [IGNORE_INDEX] * 3
    assert batch["labels"][1].tolist() == [10, eos, 11] + [IGNORE_INDEX] * 3
    assert batch["num_tokens"] == 9


def test_block_size_below_two_is_refused(tiny_tokenizer):
    with pytest.raises(WorkbenchError, match="block_size"):
        token_blocks(["some text"], tiny_tokenizer, block_size=1)


# -- documents ---------------------------------------------------------------------------
def test_a_folder_of_txt_files_is_one_document_per_file(tmp_path, tiny_tokenizer):
    (tmp_path / "b.txt").write_text("The second document.", encoding="utf-8")
    (tmp_path / "a.txt").write_text("The first document.", encoding="utf-8")
    (tmp_path / "notes.md").write_text("not a document", encoding="utf-8")
    documents = read_documents(tmp_path)
    assert [r["text"] for r in documents.rows] == ["The first document.", "The second document."]
    assert documents.format == "text" and documents.source_of(1) == str(tmp_path / "b.txt")


def test_an_empty_txt_file_is_an_error_naming_it(tmp_path):
    (tmp_path / "a.txt").write_text("A document.", encoding="utf-8")
    (tmp_path / "empty.txt").write_text("  \n", encoding="utf-8")
    with pytest.raises(WorkbenchError, match=r"empty\.txt: empty"):
        read_documents(tmp_path)


def test_repeated_documents_are_kept_with_a_warning_or_dropped_when_asked(tmp_path, tiny):
    texts = ["A pump manual, page one.", "Page two.", "A pump manual, page one."]
    with pytest.warns(UserWarning, match=r"1 document\(s\) repeat an earlier one.*kept"):
        assert len(read_documents(texts)) == 3  # raw text repeats: never refused
    with pytest.warns(UserWarning, match=r"dropped 1 row\(s\) that repeat an earlier one"):
        assert len(read_documents(texts, drop_duplicates=True)) == 2
    for name, text in zip("abc", texts):
        (tmp_path / f"{name}.txt").write_text(text, encoding="utf-8")
    with pytest.warns(UserWarning, match=r"1 file\(s\) repeat another \(c.txt repeats a.txt\)"):
        assert read_documents(tmp_path).sources == [str(tmp_path / f"{n}.txt") for n in "abc"]
    model, tokenizer = tiny
    with pytest.warns(UserWarning, match="repeat an earlier one"):
        assert math.isfinite(perplexity(model, tokenizer, texts).value)


def test_instruction_rows_are_refused_with_the_call_that_trains_them():
    with pytest.raises(WorkbenchError, match=r"'alpaca' rows.*workbench\.train"):
        read_documents(SAMPLE_DATA / "support_tickets.jsonl")


# -- perplexity --------------------------------------------------------------------------
def test_perplexity_of_one_block_is_the_exponential_of_the_models_own_loss(tiny, manual):
    model, tokenizer = tiny
    text = manual[0].rows[0]["text"]
    measured = perplexity(model, tokenizer, [text], block_size=512)
    ids = torch.tensor([ids_of(tokenizer, text) + [tokenizer.eos_token_id]])
    with torch.no_grad():
        reference = model(input_ids=ids, labels=ids).loss.item()
    assert measured.blocks == 1 and measured.tokens == ids.shape[1] - 1
    assert measured.loss == pytest.approx(reference, rel=1e-5)
    assert measured.value == pytest.approx(math.exp(reference), rel=1e-5)


def test_perplexity_weights_every_token_alike_across_blocks(tiny, manual):
    model, tokenizer = tiny
    texts = [row["text"] for row in manual[1].rows]
    whole = perplexity(model, tokenizer, texts, block_size=48, batch_size=3)
    one_by_one = perplexity(model, tokenizer, texts, block_size=48, batch_size=1)
    assert whole.tokens == one_by_one.tokens and whole.blocks > 3
    assert whole.loss == pytest.approx(one_by_one.loss, rel=1e-5)


# -- the run -----------------------------------------------------------------------------
def test_a_tiny_run_lowers_perplexity_and_lists_as_a_pretrain_run(tiny, manual):
    model, tokenizer = tiny
    train, held_out = manual
    before = perplexity(model, tokenizer, train, block_size=64)
    held_out_before = perplexity(model, tokenizer, held_out, block_size=64)
    run = continue_pretraining(
        model,
        tokenizer,
        train,
        held_out,
        block_size=64,
        method=Method(kind="full"),
        hyperparameters=quick(max_steps=30, eval_every=15, batch_size=8, learning_rate=1e-2),
    ).wait()
    assert run.status == "finished", run.error
    after = perplexity(run.model, tokenizer, train, block_size=64)
    assert after.value < 0.5 * before.value
    table = perplexity_table(
        run.model,
        tokenizer,
        {"domain": held_out},
        block_size=64,
        before={"domain": held_out_before},  # full training: measured before it
        run_dir=run.run_dir,
    )
    assert table.loc["domain perplexity", "after"] < table.loc["domain perplexity", "before"]
    record = read_run(run.run_dir)
    assert record.stage == "pretrain" and record.status == "finished"
    assert record.metrics["domain perplexity"] == pytest.approx(
        table.loc["domain perplexity", "after"]
    )
    config = yaml.safe_load((run.run_dir / "config.yaml").read_text())
    assert config["block_size"] == 64 and config["data"]["format"] == "text"
    assert config["data"]["rows"] == {"train": 40, "validation": 8}
    report = (run.run_dir / "report.html").read_text()
    assert "domain perplexity" in report and "plotly" in report
    evaluations = [e for e in run.events if e["event"] == "evaluation"]
    assert [e["step"] for e in evaluations] == [0, 15, 30]
    assert evaluations[-1]["eval_loss"] < evaluations[0]["eval_loss"]
    samples = [
        json.loads(line) for line in (run.run_dir / "samples.jsonl").read_text().splitlines()
    ]
    assert samples and all(s["samples"][0]["prompt"] for s in samples)


def pretraining_run(model_dir, manual, settings, stopped_at: int | None = None):
    """Pretraining (blocks of 64 tokens) of a fresh load of `model_dir` on `manual`, waited for:
    finished, or with `stopped_at` stopped at that step."""
    model, tokenizer = workbench.load_model(str(model_dir))
    run = continue_pretraining(
        model, tokenizer, *manual, block_size=64, hyperparameters=settings, start=False
    )
    return finish(run, stopped_at)


def test_stop_then_resume_gives_the_same_losses_as_an_uninterrupted_run(tiny_model_dir, manual):
    settings = quick(max_steps=8, eval_every=4)
    reference = pretraining_run(tiny_model_dir, manual, settings)
    assert reference.status == "finished", reference.error

    run = pretraining_run(tiny_model_dir, manual, settings, stopped_at=2)
    assert run.status == "stopped"
    run.resume().wait()
    assert run.status == "finished", run.error
    assert run.losses == pytest.approx(reference.losses, rel=1e-5)


def test_resume_from_the_run_directory_with_a_fresh_model(tiny_model_dir, manual):
    settings = quick(max_steps=6, eval_every=3)
    reference = pretraining_run(tiny_model_dir, manual, settings)
    first = pretraining_run(tiny_model_dir, manual, settings, stopped_at=2)
    assert read_run(first.run_dir).status == "stopped"
    fresh_model, fresh_tokenizer = workbench.load_model(str(tiny_model_dir))
    resumed = resume_pretraining(first.run_dir, fresh_model, fresh_tokenizer).wait()
    assert resumed.status == "finished", resumed.error
    assert resumed.losses == pytest.approx(reference.losses[3:], rel=1e-5)


def test_resume_pretraining_refuses_an_instruction_tuning_run(lora_run):
    with pytest.raises(WorkbenchError, match="stage.*'sft'.*workbench.resume"):
        resume_pretraining(lora_run.run_dir)


def test_the_adapter_switched_off_measures_the_base_model(tiny_model_dir, manual):
    model, tokenizer = workbench.load_model(str(tiny_model_dir))
    base = perplexity(model, tokenizer, manual[1], block_size=64)
    run = continue_pretraining(
        model,
        tokenizer,
        manual[0],
        block_size=64,
        method=Method(r=8),
        hyperparameters=quick(max_steps=4, eval_every=4),
    ).wait()
    assert run.status == "finished", run.error
    off = perplexity(run.model, tokenizer, manual[1], block_size=64, adapter=False)
    on = perplexity(run.model, tokenizer, manual[1], block_size=64)
    assert off.loss == pytest.approx(base.loss, rel=1e-6)
    assert on.loss != pytest.approx(base.loss, rel=1e-4)  # the adapter did learn something


def test_settings_that_do_not_apply_are_named_in_a_warning(tiny, manual):
    model, tokenizer = tiny
    with pytest.warns(UserWarning, match="`max_length`, `completion_only`: not used.*block_size"):
        continue_pretraining(
            model,
            tokenizer,
            manual[0],
            block_size=64,
            hyperparameters=quick(max_length=512, completion_only=False),
            start=False,
        )


def test_default_settings_on_32_short_documents_warn_and_the_one_step_still_learns(tiny):
    model, tokenizer = tiny
    documents = [f"Pump {n} must be primed before its first use." for n in range(32)]
    held_out = ["Pump 40 must be primed before its first use."]
    before = perplexity(model, tokenizer, held_out)
    with pytest.warns(UserWarning, match=r"makes only 1 optimizer step\(s\).*Raise `epochs`"):
        run = continue_pretraining(model, tokenizer, documents, start=False).start()
    assert run.wait().status == "finished", run.error
    (step,) = [e for e in run.events if e["event"] == "step"]
    assert step["learning_rate"] > 0  # the warmup no longer takes the only step
    assert perplexity(run.model, tokenizer, held_out).loss != before.loss
