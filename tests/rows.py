"""Rows the tests build or take from sample_data/: chat rows, the preference pairs and the
capital-city rows that regularizers keep the model close on."""

from __future__ import annotations

import pytest
from conftest import SAMPLE_DATA


def chat_row(*turns: tuple[str, str]) -> dict:
    """A `messages` row from (role, content) pairs."""
    return {"messages": [{"role": role, "content": content} for role, content in turns]}


def preference_pairs(training: int, held_out: int):
    """(`training` pairs, `held_out` pairs) of sample_data/preferences.jsonl."""
    import workbench

    pairs = workbench.load_data(SAMPLE_DATA / "preferences.jsonl", verbose=False)
    rest, held_out_pairs = workbench.split_data(pairs, held_out, seed=0)
    return rest.select(range(training)), held_out_pairs


def preference_split_fixture(training: int, held_out: int):
    """A module-scoped fixture `preference_split`: preference_pairs(training, held_out). A test
    module that assigns it to a name of its own has the fixture."""

    @pytest.fixture(scope="module", name="preference_split")
    def split():
        return preference_pairs(training, held_out)

    return split


def capital_rows():
    """The first 6 `capital` rows of sample_data/mixed_instructions.jsonl."""
    import workbench

    data = workbench.load_data(SAMPLE_DATA / "mixed_instructions.jsonl", verbose=False)
    return data.select([i for i, r in enumerate(data.rows) if r["task"] == "capital"][:6])
