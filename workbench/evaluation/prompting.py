"""Prompting baselines beside fine-tuning: zero-shot, k fixed examples, k retrieved examples.

Each baseline answers the same held-out rows with the same base model; only the prompt
changes. Few-shot prompts put k solved training rows before the question: `fixed` uses the
same k rows for every question, `retrieved` the k training rows most similar to it (cosine
similarity of the base model's mean-pooled hidden states, so no extra model is needed).
`prompting_table` reports the task metric and the prompt length in tokens per query, so the
price of in-context examples stands beside their benefit.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, Literal

from workbench.data.loading import Examples
from workbench.errors import WorkbenchError
from workbench.evaluation.compare import Evaluation, score_answers
from workbench.model.generation import Decoding, adapter_disabled, eval_mode, generate
from workbench.tokens.templates import Template, get_template

Embed = Callable[[list[str]], Any]  # texts -> a (len(texts), dim) tensor


def query_text(row: dict[str, Any]) -> str:
    """The part of a row that tells it apart: instruction and input, prompt, or user turns."""
    if "instruction" in row:
        return "\n".join(x for x in (row["instruction"], row.get("input") or "") if x)
    if "prompt" in row:
        return str(row["prompt"])
    if "messages" in row:
        return "\n".join(m["content"] for m in row["messages"] if m["role"] == "user")
    return str(row.get("text", ""))


def hidden_state_embedder(model, tokenizer, *, layer: int | None = None, batch_size: int = 16):
    """An `Embed` function: mean of one layer's hidden states over the text's tokens.

    `layer` defaults to the middle of the network (later layers of a causal LM are tuned to
    predict the next token and say less about the whole text). Uses the base weights.
    """
    import torch

    depth = model.config.num_hidden_layers
    layer = depth // 2 if layer is None else layer
    if not 0 <= layer <= depth:
        raise WorkbenchError(f"`layer`={layer}: the model has hidden states 0..{depth}.")

    def embed(texts: list[str]):
        out = []
        base = adapter_disabled(model, hasattr(model, "disable_adapter"))
        side, tokenizer.padding_side = tokenizer.padding_side, "right"  # positions start at 0
        try:
            with base, eval_mode(model), torch.no_grad():
                for start in range(0, len(texts), batch_size):
                    batch = tokenizer(
                        texts[start : start + batch_size], return_tensors="pt", padding=True
                    ).to(model.device)
                    states = model(**batch, output_hidden_states=True).hidden_states[layer]
                    mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
                    out.append(((states * mask).sum(1) / mask.sum(1)).float().cpu())
        finally:
            tokenizer.padding_side = side
        return torch.cat(out)

    return embed


def nearest_examples(
    queries: list[str], pool: list[str], k: int, embed: Embed, pool_vectors=None
) -> list[list[int]]:
    """For each query, the indices of the k most similar pool texts (cosine), nearest first.

    `pool_vectors` is `embed(pool)` computed beforehand: the pool is embedded once, however
    many queries are answered (so timing a query does not charge it the whole pool).
    """
    import torch

    if not 1 <= k <= len(pool):
        raise WorkbenchError(f"`k`={k}: choose 1..{len(pool)} (the rows to retrieve from).")
    pool_vectors = embed(pool) if pool_vectors is None else pool_vectors
    pool_vectors = torch.nn.functional.normalize(pool_vectors, dim=-1)
    query_vectors = torch.nn.functional.normalize(embed(queries), dim=-1)
    similarity = query_vectors @ pool_vectors.T
    return similarity.topk(k, dim=-1).indices.tolist()


def few_shot_prompt(
    row: dict[str, Any], shots: list[dict[str, Any]], template: Template, tokenizer=None
) -> str:
    """The solved `shots` (prompt + answer, one after another), then the row's prompt."""
    parts = []
    for shot in shots:
        prompt, response = template.render(shot, tokenizer)
        parts.append(prompt + response)
    parts.append(template.render_prompt(row, tokenizer))
    return "\n\n".join(parts)


ShotChoice = Literal["fixed", "retrieved"]


def few_shot_prompts(
    rows: list[dict[str, Any]],
    pool: list[dict[str, Any]],
    template: Template,
    tokenizer=None,
    *,
    k: int,
    choose: ShotChoice = "fixed",
    embed: Embed | None = None,
    seed: int = 0,
    pool_vectors=None,
) -> list[str]:
    """Each row's prompt after k solved `pool` rows; k=0 gives the zero-shot prompts.

    `fixed`: the same k rows (drawn with `seed`) before every question; `retrieved`: each
    question's k nearest pool rows by `embed`, nearest last (closest to the question, where
    the model attends most). `pool_vectors`: `embed` of the pool's query texts, if known.
    """
    if k == 0:
        return [template.render_prompt(r, tokenizer) for r in rows]
    if not 1 <= k <= len(pool):
        raise WorkbenchError(f"`k`={k}: the pool has {len(pool)} rows; choose 0..{len(pool)}.")
    if choose == "fixed":
        fixed = random.Random(seed).sample(pool, k)
        return [few_shot_prompt(r, fixed, template, tokenizer) for r in rows]
    if choose != "retrieved":
        raise WorkbenchError(f"`choose`={choose!r}: use 'fixed' or 'retrieved'.")
    if embed is None:
        raise WorkbenchError(
            "retrieved examples need `embed` (e.g. hidden_state_embedder(model, tokenizer))."
        )
    queries, candidates = [query_text(r) for r in rows], [query_text(s) for s in pool]
    nearest = nearest_examples(queries, candidates, k, embed, pool_vectors)
    return [
        few_shot_prompt(r, [pool[j] for j in reversed(near)], template, tokenizer)
        for r, near in zip(rows, nearest)
    ]


def answer_prompts(
    model,
    tokenizer,
    prompts: list[str],
    references: list[str],
    *,
    metrics: tuple[str, ...] | list[str] = ("exact_match",),
    labels: list[str] | None = None,
    decoding: Decoding | None = None,
    adapter: bool = True,
) -> Evaluation:
    """Answer ready-made prompts and score them (no validation loss: prompts differ in length)."""
    with adapter_disabled(model, disabled=not adapter):
        answers = generate(model, tokenizer, prompts, decoding)
    scores, per_row = score_answers(answers, references, metrics, labels)
    return Evaluation(prompts, references, answers, scores, per_row)


def prompting_baselines(
    model,
    tokenizer,
    examples: Examples,
    pool: Examples,
    template: Template | str | None = None,
    *,
    k: int = 4,
    embed: Embed | None = None,
    seed: int = 0,
    **settings: Any,
) -> dict[str, Evaluation]:
    """Zero-shot, k fixed examples and k retrieved examples, on the base weights.

    `pool` is where examples come from (the training rows; never `examples` themselves).
    `settings` go to `answer_prompts` (metrics, labels, decoding).
    """
    template = get_template(template, pool.format)
    rows, shots = examples.rows, pool.rows
    if not 1 <= k <= len(shots):
        raise WorkbenchError(f"`k`={k}: the pool has {len(shots)} rows; choose 1..{len(shots)}.")
    references = [template.render(r, tokenizer)[1] for r in rows]
    embed = embed or hidden_state_embedder(model, tokenizer)
    prompt_sets = {
        "zero-shot": few_shot_prompts(rows, shots, template, tokenizer, k=0),
        f"{k}-shot fixed": few_shot_prompts(rows, shots, template, tokenizer, k=k, seed=seed),
        f"{k}-shot retrieved": few_shot_prompts(
            rows, shots, template, tokenizer, k=k, choose="retrieved", embed=embed
        ),
    }
    has_adapter = hasattr(model, "disable_adapter")
    return {
        name: answer_prompts(
            model, tokenizer, prompts, references, adapter=not has_adapter, **settings
        )
        for name, prompts in prompt_sets.items()
    }


def prompt_tokens(tokenizer, prompts: list[str]) -> float:
    """Mean prompt length in tokens."""
    return sum(len(tokenizer(p)["input_ids"]) for p in prompts) / max(len(prompts), 1)


def prompting_table(evaluations: dict[str, Evaluation], tokenizer, metric: str | None = None):
    """One row per approach: the metric(s) and the prompt tokens per query."""
    import pandas as pd

    rows = []
    for name, evaluation in evaluations.items():
        scores = {k: v for k, v in evaluation.scores.items() if metric in (None, k)}
        scores = {k: v for k, v in scores.items() if k not in ("validation_loss", "perplexity")}
        tokens = prompt_tokens(tokenizer, evaluation.prompts)
        rows.append({"approach": name, **scores, "prompt tokens per query": round(tokens)})
    return pd.DataFrame(rows).set_index("approach")
