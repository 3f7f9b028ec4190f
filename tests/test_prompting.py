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


# --- choosing a model: quality, latency, tokens and cost per candidate ------------------


def _decoding(**changes):
    return workbench.Decoding(**{"max_new_tokens": 3, "batch_size": 2, **changes})


def test_latency_is_the_clock_time_of_every_answer_after_an_untimed_warm_up(
    tiny_model_dir, ticket_split, monkeypatch
):
    from workbench.experiments import choosing

    happened = []  # prompts per generate call and clock readings, in order
    real_generate = choosing.generate

    def counting_generate(model, tokenizer, prompts, decoding=None):
        happened.append(len(prompts))
        return real_generate(model, tokenizer, prompts, decoding)

    def clock():
        happened.append("clock")
        return 10.0 if happened.count("clock") == 1 else 12.5

    monkeypatch.setattr(choosing, "generate", counting_generate)
    rows = ticket_split[1].select(range(4))
    measurement = choosing.measure_candidate(
        choosing.Candidate("tiny", model=str(tiny_model_dir)),
        rows,
        None,
        "alpaca",
        decoding=_decoding(),
        warmup=1,
        clock=clock,
    )
    # one warm-up batch of 2 before the clock starts, then all 4 rows between its readings
    assert happened == [2, "clock", 4, "clock"]
    assert measurement.seconds == 2.5
    assert measurement.ms_per_answer == 625.0
    assert measurement.batch_size == 2 and measurement.device == "cpu"
    with pytest.raises(workbench.WorkbenchError, match="clock measured 0"):
        choosing.measure_candidate(
            choosing.Candidate("tiny", model=str(tiny_model_dir)),
            rows,
            None,
            "alpaca",
            decoding=_decoding(),
            clock=lambda: 1.0,
        )


def test_a_deeper_wider_model_takes_longer_per_answer(tmp_path, tiny_tokenizer, ticket_split):
    from conftest import build_tiny_model

    from workbench.experiments.choosing import Candidate, compare_models

    folders = {}
    for name, layers, hidden in (("shallow", 1, 32), ("deep", 12, 256)):
        folders[name] = tmp_path / name
        build_tiny_model(tiny_tokenizer, layers=layers, hidden=hidden).save_pretrained(
            folders[name]
        )
        tiny_tokenizer.save_pretrained(folders[name])
    table = compare_models(
        [Candidate(name, model=str(folder)) for name, folder in folders.items()],
        ticket_split[1].select(range(4)),
        template="alpaca",
        decoding=_decoding(max_new_tokens=4),
    )
    ms = table["ms per answer"]
    # about 250 times the arithmetic per token: slower even if it stopped after one token
    # and the shallow one ran to max_new_tokens
    assert 0 < 2 * ms["shallow"] < ms["deep"], table
    assert table.loc["deep", "parameters"] > 10 * table.loc["shallow", "parameters"]


def test_tokens_per_query_are_the_tokenizer_counts_of_prompts_and_answers(tiny, ticket_split):
    from workbench.experiments.choosing import Candidate, compare_models

    model, tokenizer = tiny
    pool, rows = ticket_split[0], ticket_split[1].select(range(4))
    table = compare_models(
        [
            Candidate("zero-shot", model=model, tokenizer=tokenizer),
            Candidate("2-shot", model=model, tokenizer=tokenizer, shots=2),
        ],
        rows,
        pool,
        "alpaca",
        decoding=_decoding(),
    )
    template = workbench.get_template("alpaca")
    from workbench.evaluation.prompting import few_shot_prompts

    for name, k in (("zero-shot", 0), ("2-shot", 2)):
        prompts = few_shot_prompts(rows.rows, pool.rows, template, tokenizer, k=k)
        answers = workbench.generate(model, tokenizer, prompts, _decoding())
        counted_in = sum(len(tokenizer(p)["input_ids"]) for p in prompts) / len(prompts)
        counted_out = sum(
            len(tokenizer(a, add_special_tokens=False)["input_ids"]) for a in answers
        ) / len(answers)
        row = table.loc[name]
        assert row["input tokens per query"] == counted_in
        assert row["output tokens per query"] == counted_out
        assert row["tokens per query"] == counted_in + counted_out
    assert (
        table.loc["2-shot", "input tokens per query"]
        > table.loc["zero-shot", "input tokens per query"]
    )


def _measurement(name: str, seconds: float, inputs: list[int], outputs: list[int]):
    from workbench.evaluation.compare import Evaluation
    from workbench.experiments.choosing import Measurement

    evaluation = Evaluation([], [], [], {"exact_match": 0.5}, [])
    return Measurement(name, "zero-shot", evaluation, seconds, inputs, outputs, 1000, 1, "cpu")


def test_cost_per_thousand_queries_follows_the_prices_exactly():
    from workbench.experiments.choosing import DEVICE_COST, TOKEN_COST, Prices, cost_table

    measured = [
        _measurement("short", 3.6, [100, 300], [10, 30]),  # 1800 ms per answer
        _measurement("long", 0.9, [1000, 1000], [5, 5]),  # 450 ms per answer
    ]
    prices = Prices(
        price_per_million_input_tokens=2.0,
        price_per_million_output_tokens=8.0,
        price_per_device_hour=3.0,
        currency="EUR",
    )
    table = cost_table(measured, prices)
    # 1000 queries * (200 input tokens * 2 + 20 output tokens * 8) / 1M
    assert table.loc["short", TOKEN_COST] == pytest.approx(0.56, rel=1e-12)
    assert table.loc["long", TOKEN_COST] == pytest.approx(2.04, rel=1e-12)
    # 1000 queries * 1.8 s / 3600 s per hour * 3 per hour
    assert table.loc["short", DEVICE_COST] == pytest.approx(1.5, rel=1e-12)
    assert table.loc["long", DEVICE_COST] == pytest.approx(0.375, rel=1e-12)
    assert table.loc["short", "ms per answer"] == pytest.approx(1800)
    assert table.attrs["prices"] == prices.to_dict()
    assert table.attrs["prices"]["currency"] == "EUR"
    only_device = cost_table(measured, {"price_per_device_hour": 3.0})
    assert DEVICE_COST in only_device.columns and TOKEN_COST not in only_device.columns
    assert TOKEN_COST not in cost_table(measured).columns


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"price_per_million_input_tokens": -1, "price_per_million_output_tokens": 1}, "input"),
        ({"price_per_million_input_tokens": 1.0}, "price_per_million_output_tokens"),
        ({"price_per_device_hour": "cheap"}, "price_per_device_hour"),
        ({"price_per_device_hour": float("nan")}, "price_per_device_hour"),
        ({"price_per_million_tokens": 1.0}, "price_per_million_tokens"),
    ],
)
def test_bad_price_settings_raise_an_error_naming_the_key(settings, named):
    from workbench.experiments.choosing import cost_table

    with pytest.raises(workbench.WorkbenchError, match=named):
        cost_table([_measurement("m", 1.0, [1], [1])], settings)


def test_several_candidates_give_one_row_each_and_share_one_loaded_base(
    tiny_model_dir, ticket_split, lora_run, monkeypatch
):
    from workbench.experiments import choosing

    loads = []
    real_load = choosing._load_model()

    def counting_load(name, **options):
        loads.append(name)
        return real_load(name, **options)

    monkeypatch.setattr(choosing, "_load_model", lambda: counting_load)
    pool, rows = ticket_split[0], ticket_split[1].select(range(4))
    base = str(tiny_model_dir)
    candidates = [
        choosing.Candidate("zero-shot", model=base),
        choosing.Candidate("2-shot fixed", model=base, shots=2),
        choosing.Candidate("2-shot retrieved", model=base, shots=2, choose="retrieved"),
        choosing.Candidate("fine-tuned run", fine_tuned=lora_run.run_dir),
        choosing.Candidate("merged", fine_tuned=lora_run.run_dir, merge=True),
        choosing.Candidate(
            "run, adapter off",
            model=lora_run.model,
            tokenizer=lora_run.tokenizer,
            base_weights=True,
        ),
    ]
    measured = choosing.measure_candidates(
        candidates, rows, pool, "alpaca", decoding=_decoding(), metrics=["exact_match"]
    )
    table = choosing.cost_table(measured, {"price_per_device_hour": 1.0})
    assert list(table.index) == [c.name for c in candidates]
    assert list(table["way"]) == [
        "zero-shot",
        "2-shot fixed",
        "2-shot retrieved",
        "zero-shot, fine-tuned",
        "zero-shot, fine-tuned (merged)",
        "zero-shot, base weights",
    ]
    assert loads == [base, base, base]  # once for three ways, once under each adapter
    assert (table["ms per answer"] > 0).all() and table["exact_match"].between(0, 1).all()
    params = table["parameters"]
    assert params["fine-tuned run"] > params["zero-shot"] == params["run, adapter off"]
    assert params["merged"] == params["zero-shot"]  # the adapter folded into the weights
    # the adapter switched off answers exactly as the base model loaded on its own
    by_name = {m.candidate: m for m in measured}
    assert by_name["run, adapter off"].evaluation.answers == by_name["zero-shot"].evaluation.answers
    assert by_name["merged"].evaluation.answers == by_name["fine-tuned run"].evaluation.answers
    retrieved = by_name["2-shot retrieved"].evaluation.prompts
    assert retrieved != by_name["2-shot fixed"].evaluation.prompts
    with pytest.raises(workbench.WorkbenchError, match="repeated: \\['zero-shot'\\]"):
        choosing.measure_candidates(candidates[:1] * 2, rows, pool, "alpaca")


def test_candidates_refuse_settings_that_cannot_work(tiny, tmp_path, ticket_split):
    from workbench.experiments.choosing import Candidate, measure_candidate

    model, tokenizer = tiny
    with pytest.raises(workbench.WorkbenchError, match="needs its `tokenizer`"):
        Candidate("m", model=model)
    with pytest.raises(workbench.WorkbenchError, match="`base_weights=True` with `fine_tuned`"):
        Candidate("m", fine_tuned=tmp_path, base_weights=True)
    with pytest.raises(workbench.WorkbenchError, match="`load` has `devcie`"):
        Candidate("m", model="some/model", load={"devcie": "cpu"})
    with pytest.raises(workbench.WorkbenchError, match="`choose`='nearest'"):
        Candidate("m", shots=2, choose="nearest")
    with pytest.raises(workbench.WorkbenchError, match="`merge=True` needs `fine_tuned`"):
        Candidate("m", model="some/model", merge=True)
    rows = ticket_split[1].select(range(2))
    with pytest.raises(workbench.WorkbenchError, match="'2-shot'.*pass a `pool`"):
        measure_candidate(
            Candidate("2-shot", model=model, tokenizer=tokenizer, shots=2), rows, None
        )
    with pytest.raises(FileNotFoundError, match="neither an adapter folder"):
        measure_candidate(Candidate("run", fine_tuned=tmp_path), rows, None)
