"""Files as people bring them: bytes that are not UTF-8, spreadsheet CSV habits, workbooks,
JSON objects, and column mappings that name a column the file does not have."""

from __future__ import annotations

import json

import pytest

import workbench
from workbench.errors import DataValidationError, WorkbenchError

ROWS = [
    {"instruction": "Name the capital of France.", "output": "Paris"},
    {"instruction": "Name the capital of Peru.", "output": "Lima"},
    {"instruction": "Name the capital of Chad.", "output": "N'Djamena"},
]


def test_a_line_that_is_not_utf8_is_named_and_drop_invalid_drops_it(tmp_path):
    path = tmp_path / "data.jsonl"
    lines = [json.dumps(r).encode() for r in ROWS]
    lines[1] = lines[1].replace(b"Peru", b"P\xe9ru")  # Latin-1 é, as old editors save it
    path.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(DataValidationError) as raised:
        workbench.load_data(path, verbose=False)
    message = str(raised.value)
    assert f"{path}:2: is not UTF-8 text (byte 0xe9 at column" in message
    assert "drop_invalid=True" in message
    with pytest.warns(UserWarning, match="dropped 1 invalid row"):
        kept = workbench.load_data(path, drop_invalid=True, verbose=False)
    assert [r["output"] for r in kept.rows] == ["Paris", "N'Djamena"]
    assert kept.locations == [1, 3]


def test_a_json_object_is_one_row_unless_it_wraps_a_list_of_rows(tmp_path):
    one = tmp_path / "one.json"
    one.write_text(json.dumps({**ROWS[0], "tags": ["geography", "europe"]}))
    data = workbench.load_data(one, verbose=False)
    assert len(data) == 1 and data.rows[0]["output"] == "Paris"
    conversation = tmp_path / "chat.json"
    turns = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    conversation.write_text(json.dumps({"messages": turns}))
    assert len(workbench.load_data(conversation, verbose=False)) == 1
    wrapped = tmp_path / "wrapped.json"
    wrapped.write_text(json.dumps({"data": ROWS}))
    assert [r["output"] for r in workbench.load_data(wrapped, verbose=False).rows] == [
        "Paris",
        "Lima",
        "N'Djamena",
    ]


def test_columns_naming_a_column_the_file_lacks_is_an_error(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    with pytest.raises(WorkbenchError, match=r"`columns` names 'question', which the data"):
        workbench.load_data(path, columns={"question": "instruction"}, verbose=False)


def test_a_spreadsheet_csv_with_bom_crlf_and_semicolons_maps_columns_by_visible_name(tmp_path):
    path = tmp_path / "export.csv"
    header = "\ufeffQuestion\u200b;Answer\u00a0"  # a BOM, a zero-width space, a no-break space
    body = "".join(f"\r\n{r['instruction']};{r['output']}" for r in ROWS)
    path.write_bytes((header + body + "\r\n").encode("utf-8"))
    data = workbench.load_data(
        path, columns={"Question": "instruction", "Answer": "output"}, verbose=False
    )
    assert [r["output"] for r in data.rows] == ["Paris", "Lima", "N'Djamena"]
    assert data.locations == [2, 3, 4]
    with pytest.raises(WorkbenchError) as raised:
        workbench.load_data(path, columns={"Frage": "instruction"}, verbose=False)
    message = str(raised.value)
    assert "'Answer', 'Question'" in message  # the visible names
    assert not any(ch in message for ch in "\ufeff\u200b\u00a0")


def test_a_csv_saved_in_a_windows_code_page_names_the_line(tmp_path):
    path = tmp_path / "export.csv"
    path.write_bytes("instruction,output\nSay hi,Hi\nSay café,Café\n".encode("cp1252"))
    with pytest.raises(DataValidationError, match=r"export\.csv:3: is not UTF-8 text.*CSV UTF-8"):
        workbench.load_data(path, verbose=False)


def test_an_xlsx_workbook_reads_its_first_or_named_sheet(tmp_path):
    openpyxl = pytest.importorskip("openpyxl")
    book = openpyxl.Workbook()
    first = book.active
    first.title = "notes"
    first.append(["prompt", "completion"])
    first.append(["2+2=", "4"])
    tickets = book.create_sheet("tickets")
    tickets.append(["Question ", "Answer"])
    for row in ROWS:
        tickets.append([row["instruction"], row["output"]])
    tickets.append([None, None])  # an empty row, as spreadsheets keep them
    path = tmp_path / "book.xlsx"
    book.save(path)
    assert workbench.load_data(path, verbose=False).rows[0]["completion"] == "4"
    data = workbench.load_data(
        path,
        sheet="tickets",
        columns={"Question": "instruction", "Answer": "output"},
        verbose=False,
    )
    assert [r["output"] for r in data.rows] == ["Paris", "Lima", "N'Djamena"]
    assert data.where(0).endswith("book.xlsx:2")  # spreadsheet row numbers
    with pytest.raises(WorkbenchError, match="no sheet named 'Tickets'; its sheets: notes"):
        workbench.load_data(path, sheet="Tickets", verbose=False)
