"""`python -m workbench check | preview`: the data flags reach `load_data`, advice names the
flags, and only the model's tokenizer is loaded (never its weights)."""

from __future__ import annotations

import json

import pytest
from conftest import SAMPLE_DATA

import workbench.model.loading as models
from workbench.cli import main

TICKETS = SAMPLE_DATA / "support_tickets.jsonl"


@pytest.fixture
def no_weights(monkeypatch):
    """load_model refuses: the data commands must load the tokenizer alone."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model's weights were loaded")

    monkeypatch.setattr(models, "load_model", refuse)


def write_rows(path, rows: list[dict]):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def test_check_names_the_flag_that_drops_bad_rows_and_takes_it(
    tmp_path, tiny_model_dir, no_weights, capsys
):
    rows = [json.loads(line) for line in TICKETS.read_text().splitlines()[:12]]
    data = write_rows(tmp_path / "t.jsonl", [*rows, {"instruction": "no answer"}, rows[0]])
    model = ["--model", str(tiny_model_dir)]
    assert main(["check", data, *model]) == 2
    err = capsys.readouterr().err
    assert "add --drop-invalid" in err and "add --drop-duplicates" in err
    assert "drop_invalid=True" not in err  # the Python spelling is for the library
    assert main(["check", data, *model, "--drop-invalid"]) == 0
    assert f"{data}: 12 rows checked" in capsys.readouterr().out
    assert main(["preview", data, *model, "--drop-duplicates", "--drop-invalid"]) == 0


def test_check_maps_columns_and_reads_raw_text_with_repeated_documents(
    tmp_path, tiny_model_dir, no_weights, capsys
):
    faq = write_rows(
        tmp_path / "faq.jsonl", [{"question": f"{n}+{n}?", "answer": str(2 * n)} for n in range(4)]
    )
    model = ["--model", str(tiny_model_dir)]
    columns = ["--columns", "question=instruction", "--columns", "answer=output"]
    assert main(["check", faq, *model, *columns]) == 0
    text = write_rows(tmp_path / "notes.jsonl", [{"text": "Same page."}, {"text": "Same page."}])
    with pytest.warns(UserWarning, match="repeat an earlier one"):
        assert main(["check", text, *model]) == 0
    assert "warning [duplicate]" in capsys.readouterr().out
    assert main(["check", text, *model, "--drop-duplicates"]) == 0
    assert "1 rows checked" in capsys.readouterr().out


def test_check_exits_1_when_most_validation_rows_are_trained_on(
    tmp_path, tiny_model_dir, no_weights, capsys
):
    lines = TICKETS.read_text().splitlines()
    train = write_rows(tmp_path / "train.jsonl", [json.loads(x) for x in lines[:40]])
    leaked = write_rows(tmp_path / "val.jsonl", [json.loads(x) for x in lines[:6]])
    model = ["--model", str(tiny_model_dir)]
    assert main(["check", train, "--validation", leaked, *model]) == 1
    assert "error [leakage]" in capsys.readouterr().out
    apart = write_rows(tmp_path / "apart.jsonl", [json.loads(x) for x in lines[40:60]])
    assert main(["check", train, "--validation", apart, *model]) == 0
