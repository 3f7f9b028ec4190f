"""Tests for workbench.data: every format, the detection printout, and every broken file."""

from __future__ import annotations

import json
import re

import pytest
from conftest import SAMPLE_DATA
from rows import chat_row

from workbench.data.loading import Examples, detect_format, load_data
from workbench.errors import DataValidationError, WorkbenchError
from workbench.tokens.templates import TEMPLATES

BROKEN = SAMPLE_DATA / "broken"


def problem_lines(error: DataValidationError) -> list[str]:
    """The `  - ...` lines of a validation error, one per problem."""
    return [line for line in str(error).splitlines() if line.startswith("  - ")]


def load_error(source) -> DataValidationError:
    """The DataValidationError that loading `source` raises."""
    with pytest.raises(DataValidationError) as caught:
        load_data(source, verbose=False)
    return caught.value


def problem_on(error: DataValidationError, line: int) -> str:
    """The single problem line of `error` reported for file line `line`."""
    found = [p for p in problem_lines(error) if re.search(rf":{line}: ", p)]
    assert len(found) == 1, f"expected one problem on line {line}, got {found}"
    return found[0]


# --- the shipped formats ---------------------------------------------------------------


def test_alpaca_jsonl_loads_with_its_task_column():
    data = load_data(SAMPLE_DATA / "support_tickets.jsonl", verbose=False)
    assert data.format == "alpaca"
    assert len(data) == 320
    assert set(data[0]) == {"instruction", "input", "output", "task"}
    assert data.tasks == {"ticket_topic": 320}
    assert {row["output"] for row in data} == {"billing", "shipping", "technical", "account"}


def test_messages_jsonl_loads_as_conversations():
    data = load_data(SAMPLE_DATA / "unit_chat.jsonl", verbose=False)
    assert data.format == "messages"
    assert len(data) == 220
    roles = [m["role"] for m in data[0]["messages"]]
    assert roles == ["system", "user", "assistant"]
    assert data.tasks == {"unit_convert": 220}


def test_sharegpt_is_normalised_to_messages_with_user_and_assistant_roles():
    data = load_data(SAMPLE_DATA / "support_tickets_sharegpt.json", verbose=False)
    assert data.format == "sharegpt"
    assert len(data) == 40
    for row in data:
        assert "conversations" not in row
        assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
        assert set(row["messages"][0]) == {"role", "content"}
    assert {row["messages"][1]["content"] for row in data} == {
        "billing",
        "shipping",
        "technical",
        "account",
    }


def test_prompt_completion_csv_keeps_newlines_and_leading_spaces():
    data = load_data(SAMPLE_DATA / "date_rewrite_prompt_completion.csv", verbose=False)
    assert data.format == "prompt_completion"
    assert len(data) == 40
    first = data[0]
    assert first["prompt"].startswith("Date: ") and first["prompt"].endswith("\nISO:")
    assert re.fullmatch(r" \d{4}-\d{2}-\d{2}", first["completion"])
    assert data.tasks == {"date_rewrite_prompt_completion": 40}


def test_csv_location_is_the_physical_line_when_fields_span_lines():
    # Each row of this file takes two physical lines ("Date: ...\nISO:"), after the header:
    # row 0 is on line 2, row 1 on line 4.
    path = SAMPLE_DATA / "date_rewrite_prompt_completion.csv"
    data = load_data(path, verbose=False)
    assert data.where(1) == f"{path}:4"


def test_text_format_from_a_list_of_dicts():
    data = load_data([{"text": "one"}, {"text": "two"}], verbose=False)
    assert data.format == "text"
    assert [row["text"] for row in data] == ["one", "two"]
    assert data.where(1) == "list:2"


def test_dataframe_missing_input_becomes_empty_string():
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(
        [
            {"instruction": "Capital of Peru?", "input": None, "output": "Lima"},
            {"instruction": "Antonym.", "input": "hot", "output": "cold"},
        ]
    )
    data = load_data(frame, verbose=False)
    assert data.format == "alpaca"
    assert data[0]["input"] == ""  # NaN from pandas reads as missing, not as the text "nan"
    assert data[1]["input"] == "hot"


def test_parquet_file_with_a_messages_list_column(tmp_path):
    pd = pytest.importorskip("pandas")
    path = tmp_path / "chat.parquet"
    chat = [{"role": "user", "content": "2 km in m?"}, {"role": "assistant", "content": "2000 m"}]
    pd.DataFrame([{"messages": chat, "task": "units"}]).to_parquet(path)
    data = load_data(path, verbose=False)
    assert data.format == "messages"
    assert data[0]["messages"] == chat  # numpy arrays from parquet become plain lists
    assert isinstance(data[0]["messages"], list)
    assert data.tasks == {"units": 1}


def test_datasets_dataset_source():
    datasets = pytest.importorskip("datasets")
    source = datasets.Dataset.from_list([{"prompt": "a", "completion": "b"}])
    data = load_data(source, task="pc", verbose=False)
    assert data.format == "prompt_completion"
    assert data.rows == [{"prompt": "a", "completion": "b", "task": "pc"}]


def test_detected_format_is_printed(capsys):
    load_data(SAMPLE_DATA / "unit_chat.jsonl")
    out = capsys.readouterr().out
    assert "unit_chat.jsonl" in out
    assert "220 valid rows" in out
    assert "detected format: messages" in out
    assert "(given)" not in out


def test_verbose_false_prints_nothing(capsys):
    load_data(SAMPLE_DATA / "unit_chat.jsonl", verbose=False)
    assert capsys.readouterr().out == ""


def test_columns_maps_source_columns_to_standard_ones():
    rows = [{"question": "Capital of Chile?", "answer": "Santiago"}]
    data = load_data(rows, columns={"question": "instruction", "answer": "output"}, verbose=False)
    assert data.format == "alpaca"
    assert data[0] == {
        "instruction": "Capital of Chile?",
        "output": "Santiago",
        "input": "",
        "task": "default",
    }


def test_format_override_wins_over_detection(capsys):
    # Both marker sets are present; detection picks alpaca, the override picks prompt/completion.
    rows = [{"instruction": "i", "output": "o", "prompt": "p", "completion": "c"}]
    assert load_data(rows, verbose=False).format == "alpaca"
    data = load_data(rows, format="prompt_completion")
    assert data.format == "prompt_completion"
    assert "detected format: prompt_completion (given)" in capsys.readouterr().out


def test_unknown_format_override_is_rejected():
    with pytest.raises(WorkbenchError, match="alpaca"):
        load_data([{"text": "x"}], format="csv", verbose=False)


def test_task_default_fills_only_rows_without_a_task():
    rows = [
        {"instruction": "a", "output": "b", "task": "kept"},
        {"instruction": "c", "output": "d"},
    ]
    data = load_data(rows, task="given", verbose=False)
    assert [row["task"] for row in data] == ["kept", "given"]


def test_task_defaults_to_the_file_stem(tmp_path):
    path = tmp_path / "antonyms.jsonl"
    path.write_text(json.dumps({"instruction": "Antonym.", "output": "cold"}) + "\n")
    assert load_data(path, verbose=False).tasks == {"antonyms": 1}


def test_where_names_file_and_line_skipping_blank_lines(tmp_path):
    path = tmp_path / "gaps.jsonl"
    row = json.dumps({"instruction": "Antonym.", "input": "hot", "output": "cold"})
    other = json.dumps({"instruction": "Antonym.", "input": "up", "output": "down"})
    path.write_text(f"{row}\n\n{other}\n")
    data = load_data(path, verbose=False)
    assert data.where(0) == f"{path}:1"
    assert data.where(1) == f"{path}:3"


def test_where_on_a_sample_file():
    path = SAMPLE_DATA / "support_tickets.jsonl"
    data = load_data(path, verbose=False)
    assert data.where(0) == f"{path}:1"
    assert data.where(319) == f"{path}:320"


# --- broken files: every problem, with file, line and field ----------------------------


def test_malformed_json_and_a_list_line():
    path = BROKEN / "malformed.jsonl"
    error = load_error(path)
    assert len(error.problems) == 2
    assert [p.row for p in error.problems] == [3, 6]
    assert "not valid JSON" in problem_on(error, 3)
    assert str(path) in problem_on(error, 3)
    assert "list" in problem_on(error, 6)
    assert "drop_invalid=True" in str(error)  # the fix


def test_malformed_json_column_points_at_the_problem():
    path = BROKEN / "malformed.jsonl"
    line = path.read_text(encoding="utf-8").splitlines()[2]
    # The closing `}` is missing: json reports the end of the line, not its first column.
    assert f"column {len(line) + 1}" in problem_on(load_error(path), 3)


def test_missing_empty_and_whitespace_fields():
    path = BROKEN / "missing_fields.jsonl"
    error = load_error(path)
    assert len(error.problems) == 3
    assert "3 problem(s) in 3 row(s)" in str(error)
    assert re.search(r"`output` is missing", problem_on(error, 2))
    assert re.search(r"`instruction` is empty", problem_on(error, 4))
    assert re.search(r"`output` is empty", problem_on(error, 5))
    assert all(str(path) in p for p in problem_lines(error))


def test_wrong_types_name_the_type():
    error = load_error(BROKEN / "wrong_types.jsonl")
    assert len(error.problems) == 3
    line2, line3, line5 = problem_on(error, 2), problem_on(error, 3), problem_on(error, 5)
    assert "`output`" in line2 and "number" in line2 and "42" in line2
    assert "`input`" in line3 and "list" in line3
    assert "`instruction`" in line5 and "null" in line5


def test_duplicate_csv_row_names_both_lines():
    path = BROKEN / "duplicates.csv"
    error = load_error(path)
    assert len(error.problems) == 1
    line = problem_on(error, 5)
    assert f"{path}:5" in line
    assert re.search(r"duplicates (row|line) 2\b", line)
    assert "pass drop_duplicates=True" in str(error)  # how to drop them
    assert "--drop-duplicates" in str(error.spelled_for("command line"))
    with pytest.warns(UserWarning, match=r"dropped 1 row\(s\) that repeat an earlier one"):
        kept = load_data(path, drop_duplicates=True, verbose=False)
    assert len(kept) == 5 and [p.row for p in kept.dropped] == [5]


def test_repeated_documents_of_raw_text_are_kept_with_a_warning():
    rows = [{"text": "Chapter one."}, {"text": "Licence."}, {"text": "Licence."}]
    with pytest.warns(UserWarning, match=r"list: 1 document\(s\) repeat an earlier one \(list:3"):
        assert len(load_data(rows, verbose=False)) == 3


def test_bad_messages_roles_last_turn_and_missing_content():
    error = load_error(BROKEN / "bad_messages.jsonl")
    assert [p.row for p in error.problems] == [2, 3, 4]
    role = problem_on(error, 2)
    assert "`messages[2].role`" in role and "robot" in role and "assistant" in role
    assert "last turn" in problem_on(error, 3) and "assistant" in problem_on(error, 3)
    assert "`messages[2].content` is missing" in problem_on(error, 4)


@pytest.mark.parametrize("name", ["empty.jsonl", "blank_lines.jsonl"])
def test_empty_files_say_empty(name):
    path = BROKEN / name
    with pytest.raises(DataValidationError, match="empty") as caught:
        load_data(path, verbose=False)
    assert str(path) in str(caught.value)


def test_all_problems_are_reported_together(tmp_path):
    # Problems of three kinds in one file come back in one error, in line order.
    lines = [
        json.dumps({"instruction": "ok", "output": "fine"}),
        "{not json",
        json.dumps({"instruction": "", "output": 3}),
        json.dumps({"input": "x"}),
    ]
    path = tmp_path / "many.jsonl"
    path.write_text("\n".join(lines) + "\n")
    error = load_error(path)
    # line 2: bad JSON; line 3: empty instruction + number output; line 4: two missing fields
    assert len(error.problems) == 5
    assert len(problem_lines(error)) == 5
    assert "5 problem(s) in 3 row(s)" in str(error)
    assert sorted({p.row for p in error.problems}) == [2, 3, 4]


@pytest.mark.parametrize(
    ("name", "bad_lines", "kept"),
    [
        ("malformed.jsonl", [3, 6], 5),
        ("missing_fields.jsonl", [2, 4, 5], 3),
        ("wrong_types.jsonl", [2, 3, 5], 3),
        ("duplicates.csv", [5], 5),
        ("bad_messages.jsonl", [2, 3, 4], 2),
    ],
)
def test_drop_invalid_drops_exactly_the_bad_rows(name, bad_lines, kept):
    path = BROKEN / name
    with pytest.warns(UserWarning, match=rf"dropped {len(bad_lines)} invalid row"):
        data = load_data(path, drop_invalid=True, verbose=False)
    assert len(data) == kept
    assert sorted({p.row for p in data.dropped}) == bad_lines
    assert not set(data.locations) & set(bad_lines)
    assert all(p.source == str(path) for p in data.dropped)


def test_drop_invalid_with_nothing_left_still_raises():
    rows = [{"instruction": "", "output": "x"}, {"instruction": "y", "output": " "}]
    with pytest.raises(DataValidationError, match="nothing is left"):
        load_data(rows, drop_invalid=True, verbose=False)


def test_undetectable_format_lists_columns_and_how_to_map_them():
    rows = [{"question": "q", "reply": "r"}]
    with pytest.raises(WorkbenchError) as caught:
        load_data(rows, verbose=False)
    message = str(caught.value)
    assert "question" in message and "reply" in message  # the columns it saw
    assert "instruction" in message and "output" in message  # what it expected
    assert "columns=" in message and "format=" in message  # the two fixes


def test_unknown_columns_get_the_mapping_in_python_a_recipe_and_on_the_command_line(tmp_path):
    path = tmp_path / "faq.csv"
    path.write_text("question,answer\nWhat is 2+2?,4\nWhat is 3+3?,6\n", encoding="utf-8")
    with pytest.raises(WorkbenchError) as caught:
        load_data(path, verbose=False)
    message = str(caught.value)
    assert "its columns (answer, question)" in message
    assert "columns={'question': 'instruction', 'answer': 'output'}" in message
    assert "data.columns: {question: instruction, answer: output}" in message
    assert "--columns question=instruction --columns answer=output" in message
    mapped = load_data(path, columns={"question": "instruction", "answer": "output"})
    assert mapped.format == "alpaca" and mapped[0]["output"] == "4"


def test_detect_format_names_the_source():
    with pytest.raises(WorkbenchError, match="mydata"):
        detect_format([{"a": 1}], "mydata")


def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nope" / "train.jsonl"
    with pytest.raises(FileNotFoundError, match=re.escape(str(path))):
        load_data(path, verbose=False)


def test_unsupported_suffix_names_the_supported_ones(tmp_path):
    path = tmp_path / "data.xml"
    path.write_text("<rows/>")
    with pytest.raises(WorkbenchError, match=r"\.jsonl"):
        load_data(path, verbose=False)


def test_select_keeps_provenance():
    path = SAMPLE_DATA / "support_tickets.jsonl"
    data = load_data(path, verbose=False)
    subset = data.select([5, 2])
    assert isinstance(subset, Examples)
    assert subset.rows == [data[5], data[2]]
    assert subset.where(0) == f"{path}:6"
    assert subset.where(1) == f"{path}:3"


# --- searching and filtering rows (what DatasetPreview shows) ----------------------------


def test_search_finds_text_in_any_field_ignoring_case_and_keeps_provenance():
    data = load_data(SAMPLE_DATA / "mixed_instructions.jsonl", verbose=False)
    fields = ("instruction", "input", "output")
    expected = [i for i, r in enumerate(data.rows) if any("hot" in r[f].lower() for f in fields)]
    found = data.search("  HOT ")
    assert 0 < len(found) < len(data)
    assert found.rows == [data[i] for i in expected]
    assert found.locations == [data.locations[i] for i in expected]
    assert data.search("") is data and len(data.search("no such text anywhere")) == 0


def test_search_looks_into_conversation_turns():
    data = load_data(SAMPLE_DATA / "unit_chat.jsonl", verbose=False)
    word = data[0]["messages"][-1]["content"].split()[0]
    found = data.search(word.upper())
    assert len(found) > 0 and data.rows[0] in found.rows


def test_where_task_keeps_one_task_and_names_the_known_ones_when_unknown():
    data = load_data(SAMPLE_DATA / "mixed_instructions.jsonl", verbose=False)
    antonyms = data.where_task("antonym")
    assert len(antonyms) == data.tasks["antonym"] and set(antonyms.tasks) == {"antonym"}
    assert data.where_task(None) is data
    assert len(antonyms.search("hot")) == len(data.search("hot").where_task("antonym"))
    with pytest.raises(WorkbenchError, match=r"`task`='nope'.*'antonym'"):
        data.where_task("nope")


def test_constant_fields_are_the_texts_every_row_shares():
    tickets = load_data(SAMPLE_DATA / "support_tickets.jsonl", verbose=False)
    assert tickets.constant_fields() == {"instruction": tickets[0]["instruction"]}
    mixed = load_data(SAMPLE_DATA / "mixed_instructions.jsonl", verbose=False)
    assert mixed.constant_fields() == {}
    assert tickets.select([0]).constant_fields() == {}  # one row shares nothing


def test_tool_turns_and_text_parts_load_and_other_parts_are_named():
    rows = [
        {
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "Weather in Lyon?"}]},
                {"role": "assistant", "content": "Let me look it up."},
                {"role": "tool", "content": '{"temperature": 18}'},
                {"role": "assistant", "content": [{"type": "text", "text": "18 degrees."}]},
            ]
        }
    ]
    data = load_data(rows, verbose=False)
    assert [m["content"] for m in data.rows[0]["messages"]] == [
        "Weather in Lyon?",
        "Let me look it up.",
        '{"temperature": 18}',
        "18 degrees.",
    ]
    image = {"type": "image", "url": "cat.png"}
    rows[0]["messages"][0]["content"].append(image)
    with pytest.raises(DataValidationError) as raised:
        load_data(rows, verbose=False)
    message = str(raised.value)
    assert "list:1: `messages[0].content[1]` is a 'image' part; only text parts" in message


def test_tool_turns_are_context_never_learned(tiny_tokenizer):
    row = chat_row(
        ("user", "Weather in Lyon?"),
        ("assistant", "Checking."),
        ("tool", "18 degrees"),
        ("assistant", "It is 18 degrees."),
    )
    segments = TEMPLATES["chat"].segments(row, tiny_tokenizer)
    assert [s.text for s in segments if s.learned] == [
        "Checking.<|im_end|>",
        "It is 18 degrees.<|im_end|>",
    ]
    assert any("tool" in s.role and "18 degrees" in s.text and not s.learned for s in segments)
