"""Prompting baselines: few-shot prompts, retrieval of the nearest examples, the cost table."""

from __future__ import annotations

import pytest
import torch

import workbench
from workbench.evaluation.prompting import (
    few_shot_prompt,
    hidden_state_embedder,
    nearest_examples,
    prompting_baselines,
    prompting_table,
    query_text,
)

WORDS = ["apple", "banana", "cherry", "grape", "lemon", "mango", "melon", "peach"]


def letter_counts(texts: list[str]):
    """A transparent embedding for tests: how often each letter occurs."""
    return torch.tensor(
        [[t.lower().count(c) for c in "abcdefghijklmnopqrstuvwxyz"] for t in texts],
        dtype=torch.float32,
    )


def test_retrieval_returns_the_nearest_examples_in_order():
    pool = ["aaaa", "bbbb", "aaab", "cccc", "aabb"]
    nearest = nearest_examples(["aaaa", "bbbc"], pool, 3, letter_counts)
    vectors = torch.nn.functional.normalize(letter_counts(pool), dim=-1)
    for query, found in zip(["aaaa", "bbbc"], nearest):
        q = torch.nn.functional.normalize(letter_counts([query]), dim=-1)[0]
        similarity = (vectors @ q).tolist()
        expected = sorted(range(len(pool)), key=lambda i: -similarity[i])[:3]
        assert found == expected
    assert nearest[0][:2] == [0, 2] and nearest[1][0] == 1
    with pytest.raises(workbench.WorkbenchError, match="`k`=9"):
        nearest_examples(["a"], pool, 9, letter_counts)


def test_hidden_state_embedder_finds_the_same_text_first(tiny):
    model, tokenizer = tiny
    embed = hidden_state_embedder(model, tokenizer)
    vectors = embed(WORDS[:3])
    assert vectors.shape == (3, model.config.hidden_size)
    for i, word in enumerate(WORDS):
        assert nearest_examples([word], WORDS, 1, embed)[0] == [i]
    # padding must not change a text's embedding (mean over its own tokens only)
    alone = embed(["banana"])[0]
    padded = embed(["banana", "a much longer sentence about fruit and more fruit"])[0]
    assert torch.allclose(alone, padded, atol=1e-4)


def test_few_shot_prompt_puts_solved_examples_before_the_question():
    template = workbench.get_template("alpaca")
    shots = [
        {"instruction": "Give the antonym of the word.", "input": "big", "output": "small"},
        {"instruction": "Give the antonym of the word.", "input": "up", "output": "down"},
    ]
    row = {"instruction": "Give the antonym of the word.", "input": "hot", "output": "cold"}
    prompt = few_shot_prompt(row, shots, template)
    assert prompt.endswith(template.render_prompt(row))
    assert prompt.index("small") < prompt.index("down") < prompt.index("hot")
    assert "cold" not in prompt  # the answer to the question never leaks into its prompt
    assert query_text(row) == "Give the antonym of the word.\nhot"


def test_baselines_answer_the_same_rows_and_count_prompt_tokens(tiny, ticket_split):
    model, tokenizer = tiny
    pool, rows = ticket_split[0], ticket_split[1].select(range(4))
    evaluations = prompting_baselines(
        model,
        tokenizer,
        rows,
        pool,
        "alpaca",
        k=2,
        embed=letter_counts,
        metrics=["exact_match"],
        decoding=workbench.Decoding(max_new_tokens=3),
    )
    assert list(evaluations) == ["zero-shot", "2-shot fixed", "2-shot retrieved"]
    fixed = evaluations["2-shot fixed"].prompts
    retrieved = evaluations["2-shot retrieved"].prompts
    nearest = nearest_examples(
        [query_text(r) for r in rows.rows], [query_text(r) for r in pool.rows], 2, letter_counts
    )
    for prompt, near in zip(retrieved, nearest):
        assert pool.rows[near[0]]["input"] in prompt and pool.rows[near[1]]["input"] in prompt
        assert prompt.index(pool.rows[near[1]]["input"]) < prompt.index(pool.rows[near[0]]["input"])
    assert len({p.split("### Response:")[1] for p in fixed}) == 1  # the same first example
    table = prompting_table(evaluations, tokenizer)
    tokens = table["prompt tokens per query"]
    assert (
        tokens["zero-shot"] < tokens["2-shot fixed"]
        and tokens["zero-shot"] < tokens["2-shot retrieved"]
    )
    expected = sum(len(tokenizer(p)["input_ids"]) for p in fixed) / len(fixed)
    assert tokens["2-shot fixed"] == round(expected)
    assert "exact_match" in table.columns and "validation_loss" not in table.columns
    with pytest.raises(workbench.WorkbenchError, match="`k`=0"):
        prompting_baselines(model, tokenizer, rows, pool, "alpaca", k=0, embed=letter_counts)
