"""Batched generation with fixed decoding settings, for samples and before/after comparisons."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from workbench.errors import WorkbenchError
from workbench.model.compiling import eager
from workbench.settings import Settings


@dataclass
class Decoding(Settings):
    """How answers are generated: greedy by default, so before and after are comparable."""

    max_new_tokens: int = field(default=32, metadata={"help": "longest answer, in tokens"})
    do_sample: bool = field(default=False, metadata={"help": "sample instead of greedy"})
    temperature: float = field(default=0.7, metadata={"help": "sampling temperature"})
    top_p: float = field(default=0.9, metadata={"help": "nucleus sampling mass"})
    seed: int = field(default=0, metadata={"help": "seed for sampling, reset per call"})
    batch_size: int = field(default=8, metadata={"help": "prompts generated together"})
    max_prompt_tokens: int | None = field(
        default=None,
        metadata={"help": "longer prompts keep their last tokens (training's max_length)"},
    )

    def __post_init__(self) -> None:
        self.check_values()
        if self.max_prompt_tokens is not None and self.max_prompt_tokens < 1:
            raise WorkbenchError(
                f"`max_prompt_tokens`={self.max_prompt_tokens}: use at least 1, or None."
            )
        if self.max_new_tokens < 1:
            raise WorkbenchError(f"`max_new_tokens`={self.max_new_tokens}: use at least 1.")
        if self.batch_size < 1:
            raise WorkbenchError(f"`batch_size`={self.batch_size}: use at least 1.")
        if self.do_sample and self.temperature <= 0:
            raise WorkbenchError("`temperature` must be positive when sampling.")


@contextlib.contextmanager
def eval_mode(model) -> Iterator[None]:
    """Switch to eval mode (no dropout) and back to what it was."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@contextlib.contextmanager
def adapter_disabled(model, disabled: bool = True) -> Iterator[None]:
    """Generate with the base weights of a PEFT model: the adapter is off inside the block."""
    if not disabled:
        yield
        return
    if not hasattr(model, "disable_adapter"):
        raise WorkbenchError(
            "This model has no adapter to switch off (full fine-tuning changes the weights "
            "themselves): measure the base model before training instead."
        )
    with model.disable_adapter():
        yield


def generate(model, tokenizer, prompts: list[str], decoding: Decoding | None = None) -> list[str]:
    """The model's continuation of each prompt (new text only, special tokens removed).

    Prompts longer than `decoding.max_prompt_tokens` keep their last tokens (where the answer
    is cued), with a warning naming them.
    """
    import torch

    decoding = decoding or Decoding()
    _check_prompts(prompts)
    if decoding.max_prompt_tokens is not None:
        prompts = cut_prompts(prompts, tokenizer, decoding.max_prompt_tokens)
    if decoding.do_sample:
        torch.manual_seed(decoding.seed)
    answers: list[str] = []
    with eval_mode(model), torch.no_grad(), eager(model):
        for start in range(0, len(prompts), decoding.batch_size):
            answers.extend(
                _generate_batch(
                    model, tokenizer, prompts[start : start + decoding.batch_size], decoding
                )
            )
    return answers


def reached_limit(tokenizer, answer: str, max_new_tokens: int) -> bool:
    """Whether a generated `answer` stopped at the token limit rather than ending by itself:
    it holds as many tokens as `max_new_tokens` allows (the answer may be cut)."""
    return len(tokenizer(answer, add_special_tokens=False)["input_ids"]) >= max_new_tokens


def prompt_batch(tokenizer, prompts: list[str], device):
    """The prompts as one left-padded batch of tensors on `device` (every prompt ends where
    generation starts); the tokenizer's BOS is added unless the prompts already carry it."""
    bos = getattr(tokenizer, "bos_token", None)
    add_special = not (bos and all(p.startswith(bos) for p in prompts))
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    try:
        batch = tokenizer(
            prompts, return_tensors="pt", padding=True, add_special_tokens=add_special
        )
    finally:
        tokenizer.padding_side = side
    return batch.to(device)


def _generate_batch(model, tokenizer, prompts: list[str], decoding: Decoding) -> list[str]:
    batch = prompt_batch(tokenizer, prompts, model.device)
    kwargs = dict(
        max_new_tokens=decoding.max_new_tokens,
        do_sample=decoding.do_sample,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=stop_token_ids(model, tokenizer),
    )
    if decoding.do_sample:
        kwargs.update(temperature=decoding.temperature, top_p=decoding.top_p)
    else:  # silence the "temperature is ignored" warning from the model's own defaults
        kwargs.update(temperature=None, top_p=None, top_k=None)
    output = model.generate(**batch, **kwargs)
    new_tokens = output[:, batch["input_ids"].shape[1] :]
    return [text.strip() for text in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]


def _check_prompts(prompts) -> None:
    if isinstance(prompts, str):
        raise WorkbenchError(
            "`prompts` is one string; generate takes a list of prompts: pass [prompt]."
        )
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, str) or not prompt.strip():
            raise WorkbenchError(
                f"prompt {i} is {prompt!r}: there is nothing to continue. Give each prompt "
                "some text (a rendered template prompt, for example)."
            )


def cut_prompts(
    prompts: list[str], tokenizer, max_tokens: int, where: list[str] | None = None
) -> list[str]:
    """Each prompt cut to its last `max_tokens` tokens, with one warning naming the prompts
    cut (`where[i]`, e.g. `data.jsonl:17`, else their index)."""
    import warnings

    cut, out = [], []
    for i, prompt in enumerate(prompts):
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        if len(ids) > max_tokens:
            cut.append(f"{where[i] if where else f'prompt {i}'} ({len(ids)} tokens)")
            prompt = tokenizer.decode(ids[-max_tokens:])
        out.append(prompt)
    if cut:
        warnings.warn(
            f"{len(cut)} prompt(s) longer than {max_tokens} tokens were cut to their last "
            f"{max_tokens} for generation, as training cuts rows: {', '.join(cut[:5])}.",
            stacklevel=3,
        )
    return out


def stop_token_ids(model, tokenizer) -> list[int]:
    """Every token generation stops on: the tokenizer's EOS and the model's own list (Gemma's
    `<end_of_turn>`, Phi-3's `<|end|>`, Llama 3's `<|eot_id|>`). Passing the tokenizer's EOS
    alone would replace that list, and the answer would run on past the end of its turn."""
    ids = [tokenizer.eos_token_id]
    config = getattr(model, "generation_config", None)
    own = getattr(config, "eos_token_id", None)
    ids += own if isinstance(own, (list, tuple)) else [own]
    return sorted({int(i) for i in ids if i is not None})
