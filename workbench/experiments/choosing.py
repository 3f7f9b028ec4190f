"""Choosing a model: quality, latency, tokens and cost of each way to answer a task, in one table.

A `Candidate` is a model (a `load_model` id or folder, an already loaded model, or a fine-tuned
run) and a way to use it (zero-shot, k fixed or retrieved examples, fine-tuned weights).
`measure_candidates` answers the same held-out rows with each one and times the answers after
a warm-up; `cost_table` turns the measurements into a row per candidate with the task metric,
milliseconds per answer, tokens per query and the cost of 1,000 queries at the `Prices` the
user sets. `compare_models` does both. Re-pricing needs no new measurement: call `cost_table`
again with other prices.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.data.loading import Examples
from workbench.errors import WorkbenchError
from workbench.evaluation.compare import Evaluation, has_adapter, question_of, score_answers
from workbench.evaluation.prompting import (
    Embed,
    ShotChoice,
    few_shot_prompts,
    hidden_state_embedder,
    query_text,
)
from workbench.model.generation import Decoding, adapter_disabled, cut_prompts, generate
from workbench.model.loading import DEFAULT_MODEL, load_model
from workbench.model.methods import count_parameters
from workbench.runs.directory import RunDirectory
from workbench.runs.saved import load_adapter
from workbench.settings import Settings
from workbench.tokens.templates import Template, get_template

Clock = Callable[[], float]  # seconds, monotonic (time.perf_counter)
TOKEN_COST = "cost per 1k queries (token prices)"
DEVICE_COST = "cost per 1k queries (device time)"


@dataclass
class Prices(Settings):
    """What answering costs, as the user sets it: per token (a hosted API), per device hour
    (your own GPU or a rented one, charged for the measured time per answer), or both."""

    price_per_million_input_tokens: float | None = field(
        default=None, metadata={"help": "price of 1M prompt tokens (few-shot examples included)"}
    )
    price_per_million_output_tokens: float | None = field(
        default=None, metadata={"help": "price of 1M generated tokens"}
    )
    price_per_device_hour: float | None = field(
        default=None, metadata={"help": "price of one hour of the device that answers"}
    )
    currency: str = field(default="USD", metadata={"help": "the unit of the prices, for labels"})

    def __post_init__(self) -> None:
        self.check_values()
        for name in (
            "price_per_million_input_tokens",
            "price_per_million_output_tokens",
            "price_per_device_hour",
        ):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise WorkbenchError(f"`{name}`={value}: a price is 0 or more (0 for free).")
        given = [self.price_per_million_input_tokens, self.price_per_million_output_tokens]
        if given.count(None) == 1:  # half a token price would silently make the other side free
            missing = ("price_per_million_input_tokens", "price_per_million_output_tokens")[
                given.index(None)
            ]
            raise WorkbenchError(f"`{missing}` is not set: set it too (0 if that side is free).")

    @property
    def per_token(self) -> bool:
        return self.price_per_million_input_tokens is not None

    def token_cost(self, input_tokens: float, output_tokens: float, queries: int = 1000) -> float:
        """The price of `queries` queries of that many tokens each, at the token prices."""
        per_query = (
            input_tokens * self.price_per_million_input_tokens
            + output_tokens * self.price_per_million_output_tokens
        ) / 1e6
        return queries * per_query

    def device_cost(self, ms_per_answer: float, queries: int = 1000) -> float:
        """The price of the device time `queries` answers take, at the hourly price."""
        return queries * ms_per_answer / 3.6e6 * self.price_per_device_hour


@dataclass
class Candidate:
    """One way to answer: a model, how it is prompted, and which weights answer.

    `model`: a `load_model` id or folder, or a loaded model (then pass `tokenizer`); None means
    the base named by the `fine_tuned` run, else the embedded default. `fine_tuned`: a run
    directory (its adapter/ or full model/) or an adapter folder, loaded fresh; `merge` folds
    the adapter into the weights, as it would be served (unmerged, the LoRA matrices add work
    to every layer for every token). `base_weights` answers with a loaded PEFT model's adapter
    switched off (base and fine-tuned from one model in memory). `load`: options for
    `load_model` (device, dtype, quantization).
    """

    name: str
    model: str | Any | None = None
    tokenizer: Any = None
    fine_tuned: str | Path | None = None
    shots: int = 0  # solved training rows before each question
    choose: ShotChoice = "fixed"  # the same examples for every question, or the nearest ones
    base_weights: bool = False
    merge: bool = False  # fold the adapter into the weights, as it would be served
    load: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = f"Candidate {self.name!r}"
        if not isinstance(self.name, str) or not self.name.strip():
            raise WorkbenchError("`name` of a Candidate must be non-empty text (a table row).")
        if isinstance(self.shots, bool) or not isinstance(self.shots, int) or self.shots < 0:
            raise WorkbenchError(f"{where}: `shots`={self.shots!r} must be a whole number >= 0.")
        if self.choose not in ("fixed", "retrieved"):
            raise WorkbenchError(f"{where}: `choose`={self.choose!r}: use 'fixed' or 'retrieved'.")
        loaded = self.model is not None and not isinstance(self.model, (str, Path))
        if loaded and self.tokenizer is None:
            raise WorkbenchError(f"{where}: a loaded `model` needs its `tokenizer` too.")
        if loaded and (self.fine_tuned is not None or self.load):
            raise WorkbenchError(
                f"{where}: `fine_tuned` and `load` apply to a model loaded by name; pass the "
                "model's id or folder instead, or load the adapter yourself "
                "(workbench.load_adapter(model, folder)) and pass that model."
            )
        if self.merge and self.fine_tuned is None:
            raise WorkbenchError(
                f"{where}: `merge=True` needs `fine_tuned` (the run or adapter to merge; a "
                "loaded model is never changed here)."
            )
        if self.base_weights and self.fine_tuned is not None:
            raise WorkbenchError(
                f"{where}: `base_weights=True` with `fine_tuned` set: for the base model, "
                "leave `fine_tuned` out."
            )
        accepted = set(inspect.signature(_load_model()).parameters) - {"name_or_path"}
        for key in self.load:
            if key not in accepted:
                raise WorkbenchError(
                    f"{where}: `load` has `{key}`, which load_model does not take; "
                    f"known: {', '.join(sorted(accepted))}."
                )

    @property
    def way(self) -> str:
        """How it answers, e.g. '4-shot retrieved, base weights' or 'zero-shot, fine-tuned'."""
        prompt = "zero-shot" if self.shots == 0 else f"{self.shots}-shot {self.choose}"
        if self.base_weights:
            return f"{prompt}, base weights"
        if self.merge:
            return f"{prompt}, fine-tuned (merged)"
        loaded_peft = not isinstance(self.model, (str, Path, type(None))) and has_adapter(
            self.model
        )
        return f"{prompt}, fine-tuned" if self.fine_tuned or loaded_peft else prompt


@dataclass
class Measurement:
    """One candidate's answers to the held-out rows, with what answering them took."""

    candidate: str
    way: str
    evaluation: Evaluation
    seconds: float  # wall time to prepare the prompts and generate every answer, after warm-up
    input_tokens: list[int]  # per query, as the model received it (examples included)
    output_tokens: list[int]  # per query, the answer's tokens
    parameters: int  # of the weights that answer (an adapter switched off is not counted)
    batch_size: int
    device: str

    @property
    def ms_per_answer(self) -> float:
        return 1000 * self.seconds / len(self.input_tokens)


def _load_model():
    return load_model


def prompt_token_count(tokenizer, prompt: str) -> int:
    """Tokens the model receives for `prompt`, with the special tokens `generate` adds."""
    bos = getattr(tokenizer, "bos_token", None)
    add_special = not (bos and prompt.startswith(bos))
    return len(tokenizer(prompt, add_special_tokens=add_special)["input_ids"])


def answer_token_count(tokenizer, answer: str) -> int:
    """Tokens of a generated answer, counted by re-tokenizing its text (the end-of-sequence
    token, which `generate` strips, is not counted: at most one token per answer)."""
    return len(tokenizer(answer, add_special_tokens=False)["input_ids"])


def _resolve(candidate: Candidate, loaded: dict[str, tuple]) -> tuple[Any, Any]:
    """The candidate's (model, tokenizer): given, loaded once per id, or a fine-tuned run."""
    if candidate.tokenizer is not None:
        return candidate.model, candidate.tokenizer
    load_model = _load_model()
    if candidate.fine_tuned is None:
        name = str(candidate.model or DEFAULT_MODEL)
        key = repr((name, sorted(candidate.load.items())))
        if key not in loaded:  # one copy for every way of prompting the same base model
            loaded[key] = load_model(name, **candidate.load)
        return loaded[key]
    folder = Path(candidate.fine_tuned)
    run = RunDirectory(folder)
    if (folder / "adapter_config.json").is_file():  # an adapter folder: base from `model`
        base = str(candidate.model or DEFAULT_MODEL)
        adapter = folder
    elif run.final_artefact() is not None:
        final = run.final_artefact()
        if final.name == "model":  # full fine-tuning: the folder is the whole model
            return load_model(str(final), **candidate.load)
        base, adapter = str(candidate.model or run.read_config()["model"]), final
    else:
        raise FileNotFoundError(
            f"Candidate {candidate.name!r}: `fine_tuned`={str(folder)!r} is neither an adapter "
            "folder (adapter_config.json) nor a finished run directory (adapter/ or model/). "
            "Pass a run's folder after it finished, or its adapter/ folder."
        )
    model, tokenizer = load_model(base, **candidate.load)  # fresh: the adapter goes into it
    model = load_adapter(model, adapter)
    return (model.merge_and_unload() if candidate.merge else model), tokenizer


def _parameters(model, adapter_on: bool) -> int:
    """Parameters of the weights that answer: a switched-off adapter's are left out."""
    total = count_parameters(model).total
    if adapter_on or not has_adapter(model):
        return total
    return total - sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)


def _prompter(candidate: Candidate, model, tokenizer, pool: Examples | None, template, seed):
    """A function from rows to their prompts, the candidate's way. For retrieved examples the
    pool is embedded here, once; each query's own embedding and search happen per call."""
    shots = pool.rows if pool is not None else []
    settings: dict[str, Any] = dict(k=candidate.shots, choose=candidate.choose, seed=seed)
    if candidate.shots and candidate.choose == "retrieved":
        embed: Embed = hidden_state_embedder(model, tokenizer)
        settings.update(embed=embed, pool_vectors=embed([query_text(s) for s in shots]))
    return lambda rows: few_shot_prompts(rows, shots, template, tokenizer, **settings)


def measure_candidate(
    candidate: Candidate,
    rows: Examples,
    pool: Examples | None,
    template: Template | str | None = None,
    *,
    metrics: tuple[str, ...] | list[str] = ("exact_match",),
    labels: list[str] | None = None,
    decoding: Decoding | None = None,
    warmup: int = 1,
    seed: int = 0,
    clock: Clock = time.perf_counter,
    loaded: dict[str, tuple] | None = None,
) -> Measurement:
    """Answer `rows` the candidate's way, score the answers, time them and count tokens.

    The first `warmup` batches are answered once untimed (first calls pay for allocation and
    kernel selection); then every row is answered under `clock`. Retrieval of the nearest
    examples is timed too (it runs for every query); embedding the pool is not (once).
    """
    decoding = decoding or Decoding()
    template = get_template(template, rows.format)
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise WorkbenchError(f"`warmup`={warmup!r}: give a whole number of batches, 0 or more.")
    if candidate.shots and (pool is None or len(pool.rows) < candidate.shots):
        raise WorkbenchError(
            f"Candidate {candidate.name!r} has `shots`={candidate.shots}: pass a `pool` of at "
            f"least {candidate.shots} training rows to take the examples from."
        )
    model, tokenizer = _resolve(candidate, {} if loaded is None else loaded)
    prompts_for = _prompter(candidate, model, tokenizer, pool, template, seed)

    def answer(subset: list[dict]) -> tuple[list[str], list[str]]:
        prompts = prompts_for(subset)
        return prompts, generate(model, tokenizer, prompts, decoding)

    with adapter_disabled(model, disabled=candidate.base_weights):
        if warmup:
            answer(rows.rows[: decoding.batch_size * warmup])
        start = clock()
        prompts, answers = answer(rows.rows)
        seconds = clock() - start
    if seconds <= 0:
        raise WorkbenchError(
            f"the clock measured {seconds} s for {len(prompts)} answers: pass a clock that "
            "advances, such as time.perf_counter."
        )
    references = [template.render(r, tokenizer)[1] for r in rows.rows]
    scores, per_row = score_answers(answers, references, metrics, labels)
    seen = prompts
    if decoding.max_prompt_tokens is not None:  # count what generation kept, not what it cut
        seen = cut_prompts(prompts, tokenizer, decoding.max_prompt_tokens)
    return Measurement(
        candidate=candidate.name,
        way=candidate.way,
        evaluation=Evaluation(
            prompts, references, answers, scores, per_row, [question_of(r) for r in rows.rows]
        ),
        seconds=seconds,
        input_tokens=[prompt_token_count(tokenizer, p) for p in seen],
        output_tokens=[answer_token_count(tokenizer, a) for a in answers],
        parameters=_parameters(model, adapter_on=not candidate.base_weights),
        batch_size=decoding.batch_size,
        device=str(model.device),
    )


def measure_candidates(
    candidates: list[Candidate],
    rows: Examples,
    pool: Examples | None = None,
    template: Template | str | None = None,
    **settings: Any,
) -> list[Measurement]:
    """`measure_candidate` for each; a model named by several candidates is loaded once."""
    names = [c.name for c in candidates]
    if not candidates:
        raise WorkbenchError("`candidates` is empty: give at least one Candidate to measure.")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise WorkbenchError(f"candidates need distinct names (table rows); repeated: {repeated}.")
    loaded: dict[str, tuple] = {}
    return [
        measure_candidate(c, rows, pool, template, loaded=loaded, **settings) for c in candidates
    ]


def cost_table(measurements: list[Measurement], prices: Prices | dict[str, Any] | None = None):
    """One row per candidate: metric(s), ms per answer, tokens per query, cost per 1k queries
    (a column per kind of price set), parameters. `attrs` records the prices and settings."""
    import pandas as pd
    import torch

    if isinstance(prices, dict):
        prices = Prices.from_dict(prices, key="prices")
    prices = prices or Prices()
    rows = []
    for m in measurements:
        n = len(m.input_tokens)
        tokens_in, tokens_out = sum(m.input_tokens) / n, sum(m.output_tokens) / n
        row = {"candidate": m.candidate, "way": m.way}
        row.update(m.evaluation.scores)
        row.update(
            {
                "ms per answer": m.ms_per_answer,
                "batch size": m.batch_size,
                "input tokens per query": tokens_in,
                "output tokens per query": tokens_out,
                "tokens per query": tokens_in + tokens_out,
            }
        )
        if prices.per_token:
            row[TOKEN_COST] = prices.token_cost(tokens_in, tokens_out)
        if prices.price_per_device_hour is not None:
            row[DEVICE_COST] = prices.device_cost(m.ms_per_answer)
        row.update(parameters=m.parameters, device=m.device)
        rows.append(row)
    table = pd.DataFrame(rows).set_index("candidate")
    table.attrs.update(
        prices=prices.to_dict(),
        rows=len(measurements[0].input_tokens) if measurements else 0,
        torch_threads=torch.get_num_threads(),
    )
    return table


def compare_models(
    candidates: list[Candidate],
    rows: Examples,
    pool: Examples | None = None,
    template: Template | str | None = None,
    *,
    prices: Prices | dict[str, Any] | None = None,
    **settings: Any,
):
    """Measure every candidate on the same rows and price them: `cost_table` of
    `measure_candidates`. `settings` go to `measure_candidate` (metrics, labels, decoding,
    warmup, seed, clock)."""
    if isinstance(prices, dict):  # check the prices before minutes of measuring
        prices = Prices.from_dict(prices, key="prices")
    measurements = measure_candidates(candidates, rows, pool, template, **settings)
    table = cost_table(measurements, prices)
    decoding = settings.get("decoding") or Decoding()
    table.attrs.update(
        warmup_batches=settings.get("warmup", 1), max_new_tokens=decoding.max_new_tokens
    )
    return table
