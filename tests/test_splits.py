"""Tests for workbench.splits: seeded stratified splits and task mixing by proportion."""

from __future__ import annotations

import json

import pytest
from conftest import SAMPLE_DATA

from workbench.data.loading import load_data
from workbench.data.splits import mix_tasks, split_data
from workbench.errors import WorkbenchError


@pytest.fixture(scope="module")
def mixed():
    return load_data(SAMPLE_DATA / "mixed_instructions.jsonl", verbose=False)


@pytest.fixture(scope="module")
def tickets():
    return load_data(SAMPLE_DATA / "support_tickets.jsonl", verbose=False)


@pytest.fixture(scope="module")
def dates():
    return load_data(SAMPLE_DATA / "date_rewrite.jsonl", verbose=False)


def keys(examples) -> list[str]:
    return [json.dumps(row, sort_keys=True) for row in examples]


# --- split_data ------------------------------------------------------------------------


@pytest.mark.parametrize(("validation", "expected"), [(0.1, 40), (0.25, 100), (40, 40)])
def test_split_sizes(mixed, validation, expected):
    train, val = split_data(mixed, validation)
    assert len(val) == expected
    assert len(train) == len(mixed) - expected


def test_split_has_no_overlap_and_covers_every_row(mixed):
    train, val = split_data(mixed, 0.2, seed=3)
    assert not set(keys(train)) & set(keys(val))
    assert sorted(keys(train) + keys(val)) == sorted(keys(mixed))


def test_split_keeps_row_locations(mixed):
    train, val = split_data(mixed, 0.1)
    lines = {json.dumps(row, sort_keys=True): loc for row, loc in zip(mixed, mixed.locations)}
    for part in (train, val):
        assert [lines[k] for k in keys(part)] == part.locations
        assert part.where(0).startswith(str(SAMPLE_DATA / "mixed_instructions.jsonl") + ":")


def test_same_seed_same_split_other_seed_other_split(mixed):
    first = split_data(mixed, 0.1, seed=7)
    again = split_data(mixed, 0.1, seed=7)
    other = split_data(mixed, 0.1, seed=8)
    assert keys(first[1]) == keys(again[1])
    assert keys(first[0]) == keys(again[0])
    assert set(keys(first[1])) != set(keys(other[1]))


@pytest.mark.parametrize("validation", [0.1, 0.15, 0.3])
def test_stratified_split_keeps_each_task_share_within_one_row(mixed, validation):
    _, val = split_data(mixed, validation, seed=1)
    assert set(val.tasks) == set(mixed.tasks)
    for task, count in mixed.tasks.items():
        assert abs(val.tasks[task] - count * validation) <= 1, task


def test_stratified_split_keeps_a_tiny_task_in_validation():
    rows = [{"instruction": f"big {i}", "output": "x", "task": "big"} for i in range(98)]
    rows += [{"instruction": f"small {i}", "output": "y", "task": "small"} for i in range(2)]
    data = load_data(rows, verbose=False)
    _, val = split_data(data, 0.1)
    assert val.tasks.get("small") == 1
    _, unstratified = split_data(data, 0.1, stratify=False, seed=0)
    assert len(unstratified) == 10


def test_a_validation_row_count_is_honoured_exactly(mixed):
    # 50 of 400: shares 12.5, 12.5, 12.5, 7.5, 5 round (half to even) to 49 rows.
    _, val = split_data(mixed, 50)
    assert len(val) == 50


def test_stratified_split_never_leaves_train_empty():
    rows = [{"instruction": f"q{i}", "output": "a", "task": f"t{i % 3}"} for i in range(6)]
    data = load_data(rows, verbose=False)
    train, val = split_data(data, 5)  # accepted: 0 < 5 < 6
    assert len(train) >= 1 and len(val) >= 1


@pytest.mark.parametrize("validation", [0.0, 1.0, -0.2, 1.5])
def test_bad_fraction_is_rejected_with_the_fix(mixed, validation):
    with pytest.raises(WorkbenchError, match="fraction between 0 and 1") as caught:
        split_data(mixed, validation)
    assert f"`validation`={validation}" in str(caught.value)


@pytest.mark.parametrize("validation", [0, 400, 500])
def test_bad_row_count_is_rejected(mixed, validation):
    with pytest.raises(WorkbenchError, match="at least one row"):
        split_data(mixed, validation)


def test_a_fraction_too_small_for_the_data_is_rejected():
    data = load_data([{"text": "a"}, {"text": "b"}], verbose=False)
    with pytest.raises(WorkbenchError, match="leaves 0 of 2 rows"):
        split_data(data, 0.1)


# --- mix_tasks -------------------------------------------------------------------------


def test_mix_proportions_three_to_one(tickets, dates):
    mix = mix_tasks({"tickets": tickets, "dates": dates}, {"tickets": 3, "dates": 1}, total=80)
    assert len(mix) == 80
    assert mix.tasks == {"ticket_topic": 60, "date_iso": 20}
    assert mix.format == "alpaca"


def test_mix_rows_keep_their_task_and_source_file(tickets, dates):
    mix = mix_tasks({"tickets": tickets, "dates": dates}, total=40, seed=2)
    by_file = {
        "ticket_topic": str(SAMPLE_DATA / "support_tickets.jsonl"),
        "date_iso": str(SAMPLE_DATA / "date_rewrite.jsonl"),
    }
    originals = {
        str(SAMPLE_DATA / "support_tickets.jsonl"): tickets,
        str(SAMPLE_DATA / "date_rewrite.jsonl"): dates,
    }
    for i, row in enumerate(mix):
        file, line = mix.where(i).rsplit(":", 1)
        assert file == by_file[row["task"]]
        source = originals[file]
        assert source.rows[source.locations.index(int(line))] == row
    assert mix.tasks == {"ticket_topic": 20, "date_iso": 20}


def test_mix_interleaves_tasks(tickets, dates):
    mix = mix_tasks({"tickets": tickets, "dates": dates}, total=40)
    first_half = {row["task"] for row in mix.rows[:20]}
    assert first_half == {"ticket_topic", "date_iso"}


def test_mix_is_deterministic_per_seed(tickets, dates):
    sets = {"tickets": tickets, "dates": dates}
    assert keys(mix_tasks(sets, total=40, seed=5)) == keys(mix_tasks(sets, total=40, seed=5))
    assert keys(mix_tasks(sets, total=40, seed=5)) != keys(mix_tasks(sets, total=40, seed=6))


def test_mix_default_total_uses_the_most_rows_without_repeats(tickets, dates):
    # Equal shares: the smaller dataset (260 dates) limits the mix to 2 * 260 rows.
    mix = mix_tasks({"tickets": tickets, "dates": dates})
    assert mix.tasks == {"ticket_topic": 260, "date_iso": 260}
    assert len(set(keys(mix))) == len(mix)


def test_mix_asking_for_too_many_rows_names_the_task(tickets, dates):
    with pytest.raises(WorkbenchError) as caught:
        mix_tasks({"tickets": tickets, "dates": dates}, {"tickets": 1, "dates": 3}, total=400)
    message = str(caught.value)
    assert "`dates`" in message
    assert "260" in message and "300" in message
    assert "total" in message  # the fix


def test_mix_of_different_formats_is_rejected(tickets):
    chat = load_data(SAMPLE_DATA / "unit_chat.jsonl", verbose=False)
    with pytest.raises(WorkbenchError, match="different formats") as caught:
        mix_tasks({"tickets": tickets, "chat": chat}, total=10)
    assert "alpaca" in str(caught.value) and "messages" in str(caught.value)


def test_mix_proportions_must_name_the_same_tasks(tickets, dates):
    with pytest.raises(WorkbenchError, match="datez"):
        mix_tasks({"tickets": tickets, "dates": dates}, {"tickets": 1, "datez": 1})


def test_mix_negative_proportion_is_rejected(tickets, dates):
    with pytest.raises(WorkbenchError, match="non-negative"):
        mix_tasks({"tickets": tickets, "dates": dates}, {"tickets": 1, "dates": -1})


def test_mix_total_is_honoured_exactly(tickets, dates, mixed):
    # Three equal shares of 10 round to 3 + 3 + 3 = 9 rows.
    mix = mix_tasks({"tickets": tickets, "dates": dates, "mixed": mixed}, total=10)
    assert len(mix) == 10
