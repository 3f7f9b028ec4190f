"""What fine-tuning changed, token by token: the log-probability of each answer token under the
base model (the same PEFT model with its adapter off) and under the tuned one, and the top
next tokens of both at every step of the tuned model's own answer.

The prompt and the answer are cut and tokenised exactly as training does it
(`Template.cut`, then `tokenize_segments`): the answer is the row's last learned segment, its
end-of-turn marker or EOS included, so the tokens scored are the tokens trained on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from workbench.errors import WorkbenchError
from workbench.model.compiling import eager
from workbench.model.generation import adapter_disabled, eval_mode, stop_token_ids
from workbench.tokens import chat
from workbench.tokens.templates import Template, get_template, template_fields
from workbench.tokens.tokenizing import tokenize_segments

AnswerSource = Literal["reference", "typed", "generated"]
SHIFT_COLUMNS = ["token", "token_id", "logprob_before", "logprob_after", "shift"]
NO_TRUNCATION = 10**9  # scoring keeps the whole row: training's max_length is not applied


@dataclass(frozen=True)
class TokenShift:
    """One answer token: its log-probability under the base model and under the tuned one."""

    position: int  # index within the answer
    token_id: int
    text: str
    before: float
    after: float

    @property
    def shift(self) -> float:
        """after - before: positive where fine-tuning made the token more likely."""
        return self.after - self.before


@dataclass
class TokenShifts:
    """The answer tokens of one prompt, each scored before and after fine-tuning."""

    prompt: str
    answer: str
    source: AnswerSource
    tokens: list[TokenShift] = field(default_factory=list)

    @property
    def before(self) -> float:
        """The answer's total log-probability under the base model."""
        return sum(t.before for t in self.tokens)

    @property
    def after(self) -> float:
        """The answer's total log-probability under the tuned model."""
        return sum(t.after for t in self.tokens)

    def table(self):
        """A DataFrame: token, token_id, logprob_before, logprob_after, shift."""
        import pandas as pd

        rows = [(t.text, t.token_id, t.before, t.after, t.shift) for t in self.tokens]
        return pd.DataFrame(rows, columns=SHIFT_COLUMNS)


@dataclass(frozen=True)
class Alternative:
    """One candidate next token and its probability."""

    token_id: int
    text: str
    probability: float


@dataclass(frozen=True)
class StepAlternatives:
    """One step of the tuned model's greedy answer: the token chosen, and the top next tokens
    of the base model and of the tuned model given the same answer so far."""

    step: int
    token_id: int
    text: str
    before: list[Alternative]
    after: list[Alternative]

    @property
    def forked(self) -> bool:
        """Whether the base model would have picked another token here."""
        return bool(self.before) and self.before[0].token_id != self.token_id


@dataclass
class Alternatives:
    """The top-k next tokens at every step of the tuned model's own answer, before and after."""

    prompt: str
    answer: str
    steps: list[StepAlternatives] = field(default_factory=list)

    @property
    def first_fork(self) -> int | None:
        """The first step where the base model's top token differs from the tuned answer's."""
        return next((s.step for s in self.steps if s.forked), None)

    def table(self):
        """A DataFrame: step, chosen, top_before, top_after (`'token' probability, ...`), forked."""
        import pandas as pd

        def show(options: list[Alternative]) -> str:
            return ", ".join(f"{o.text!r} {o.probability:.3f}" for o in options)

        rows = [(s.step, s.text, show(s.before), show(s.after), s.forked) for s in self.steps]
        return pd.DataFrame(rows, columns=["step", "chosen", "top_before", "top_after", "forked"])


def answer_logprobs(model, prompt_ids: list[int], answer_ids: list[int]) -> list[float]:
    """The log-probability of each answer token given the prompt and the answer before it,
    from one forward pass in eval mode. With no prompt, the first token has no context and
    is skipped (the list is one shorter)."""
    import torch

    ids = torch.tensor([list(prompt_ids) + list(answer_ids)], device=model.device)
    start = max(len(prompt_ids), 1)
    with eval_mode(model), torch.no_grad():
        logits = model(input_ids=ids).logits[0].float()
    logprobs = torch.log_softmax(logits[start - 1 : -1], dim=-1)
    targets = ids[0, start:].unsqueeze(-1)
    return logprobs.gather(-1, targets).squeeze(-1).tolist()


def with_answer(row: dict[str, Any], template: Template | str, answer: str) -> dict[str, Any]:
    """`row` with its reference answer replaced by `answer`: the last assistant message of a
    conversation, or the one field a text template's `response` reads (`{output}`)."""
    template = get_template(template)
    if template.use_chat_template:
        messages = chat.chat_messages(row)
        messages[-1] = {**messages[-1], "content": answer}
        return {**row, "messages": messages}
    names = template_fields(template.response)
    if len(set(names)) != 1:
        raise WorkbenchError(
            f"Template `{template.name}`: `response`={template.response!r} reads "
            f"{len(set(names))} fields, so a typed answer has no one place to go; use a "
            "template whose response is one field, such as '{output}'."
        )
    return {**row, names[0]: answer}


def answer_ids(
    row: dict[str, Any], template: Template | str, tokenizer, where: str = "row"
) -> tuple[list[int], list[int]]:
    """(prompt ids, answer ids) as training tokenises the row: the answer is its last learned
    segment (end-of-turn marker or EOS included), the prompt is every token before it."""
    segments = get_template(template).cut(row, tokenizer, where).segments
    learned = [i for i, s in enumerate(segments) if s.learned]
    if not learned:
        raise WorkbenchError(f"{where}: the template leaves no learned answer to score.")
    last = learned[-1]
    item = tokenize_segments(segments[: last + 1], tokenizer, max_length=NO_TRUNCATION)
    prompt = [t for t, s in zip(item.input_ids, item.segment_of) if s < last]
    answer = [t for t, s in zip(item.input_ids, item.segment_of) if s == last]
    if not answer:
        raise WorkbenchError(f"{where}: the answer is empty; give it some text.")
    return prompt, answer


def token_shifts(
    model,
    tokenizer,
    row: dict[str, Any],
    template: Template | str,
    *,
    answer: str | None = None,
    where: str = "row",
) -> TokenShifts:
    """Each token of the row's reference answer (or of `answer`, a text a person types),
    scored under the base model (adapter off) and the tuned model."""
    if answer is not None:
        row = with_answer(row, template, answer)
    prompt_ids, ids = answer_ids(row, template, tokenizer, where)
    source: AnswerSource = "reference" if answer is None else "typed"
    return _scored(model, tokenizer, prompt_ids, ids, source)


def generated_shifts(
    model,
    tokenizer,
    row: dict[str, Any],
    template: Template | str,
    *,
    max_new_tokens: int = 32,
    where: str = "row",
) -> TokenShifts:
    """The tuned model's own greedy answer to the row's prompt, each token scored under the
    base model and the tuned model (the tokens generated, not the text tokenised again)."""
    prompt_ids, _ = answer_ids(row, template, tokenizer, where)
    new_ids, _ = greedy_steps(model, tokenizer, prompt_ids, max_new_tokens)
    return _scored(model, tokenizer, prompt_ids, new_ids, "generated")


def answer_alternatives(
    model,
    tokenizer,
    row: dict[str, Any],
    template: Template | str,
    *,
    top_k: int = 5,
    max_new_tokens: int = 32,
    where: str = "row",
) -> Alternatives:
    """For each token of the tuned model's greedy answer: the `top_k` next tokens of the tuned
    model (from generation's own scores: the first is the token chosen) and of the base model
    given the same answer so far (adapter off), with their probabilities."""
    import torch

    if top_k < 1:
        raise WorkbenchError(f"`top_k`={top_k}: use at least 1.")
    prompt_ids, _ = answer_ids(row, template, tokenizer, where)
    new_ids, scores = greedy_steps(model, tokenizer, prompt_ids, max_new_tokens)
    ids = torch.tensor([prompt_ids + new_ids], device=model.device)
    with adapter_disabled(model), eval_mode(model), torch.no_grad():
        base = model(input_ids=ids).logits[0, len(prompt_ids) - 1 : -1].float()
    before = _top(torch.softmax(base, dim=-1), top_k, tokenizer)
    after = _top(torch.softmax(scores, dim=-1), top_k, tokenizer)
    steps = [
        StepAlternatives(k, t, tokenizer.decode([t]), b, a)
        for k, (t, b, a) in enumerate(zip(new_ids, before, after))
    ]
    return Alternatives(tokenizer.decode(prompt_ids), _text(tokenizer, new_ids), steps)


def greedy_steps(model, tokenizer, prompt_ids: list[int], max_new_tokens: int = 32):
    """(new token ids, the scores generation chose each from: a [steps, vocabulary] tensor):
    greedy decoding of the model as it is, stopping on the model's stop tokens."""
    import torch

    if max_new_tokens < 1:
        raise WorkbenchError(f"`max_new_tokens`={max_new_tokens}: use at least 1.")
    if not prompt_ids:
        raise WorkbenchError("The prompt is empty: the model has nothing to answer.")
    ids = torch.tensor([prompt_ids], device=model.device)
    with eval_mode(model), torch.no_grad(), eager(model):
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=stop_token_ids(model, tokenizer),
            output_scores=True,
            return_dict_in_generate=True,
        )
    new_ids = out.sequences[0, len(prompt_ids) :].tolist()
    return new_ids, torch.stack(out.scores)[:, 0].float()


def shift_text(shifts: TokenShifts, marked: int = 3) -> str:
    """The answer as text with the `marked` tokens that gained most wrapped in `[+...]` and
    those that lost most in `[-...]`, then their shifts and the answer's totals."""
    ranked = sorted(shifts.tokens, key=lambda t: t.shift)
    lost = [t for t in ranked[:marked] if t.shift < 0]
    gained = [t for t in reversed(ranked[-marked:]) if t.shift > 0]
    sign = {t.position: "+" for t in gained} | {t.position: "-" for t in lost}
    body = "".join(
        f"[{sign[t.position]}{t.text}]" if t.position in sign else t.text for t in shifts.tokens
    )

    def listed(tokens: list[TokenShift]) -> str:
        return ", ".join(f"{t.text!r} {t.shift:+.2f}" for t in tokens) or "none"

    return "\n".join(
        [
            f"{shifts.source} answer: {body}",
            f"gained most: {listed(gained)}",
            f"lost most: {listed(lost)}",
            f"log-probability {shifts.before:.2f} before, {shifts.after:.2f} after "
            f"({shifts.after - shifts.before:+.2f} over {len(shifts.tokens)} tokens)",
        ]
    )


def _scored(model, tokenizer, prompt_ids, ids, source: AnswerSource) -> TokenShifts:
    with adapter_disabled(model):
        before = answer_logprobs(model, prompt_ids, ids)
    after = answer_logprobs(model, prompt_ids, ids)
    scored = ids[len(ids) - len(after) :]  # without a prompt, the first token has no score
    offset = len(ids) - len(scored)
    tokens = [
        TokenShift(offset + k, t, tokenizer.decode([t]), b, a)
        for k, (t, b, a) in enumerate(zip(scored, before, after))
    ]
    return TokenShifts(tokenizer.decode(prompt_ids), _text(tokenizer, ids), source, tokens)


def _top(probabilities, k: int, tokenizer) -> list[list[Alternative]]:
    values, indices = probabilities.topk(min(k, probabilities.shape[-1]), dim=-1)
    return [
        [Alternative(int(i), tokenizer.decode([int(i)]), float(p)) for p, i in zip(row_p, row_i)]
        for row_p, row_i in zip(values.tolist(), indices.tolist())
    ]


def _text(tokenizer, ids: list[int]) -> str:
    return tokenizer.decode(ids, skip_special_tokens=True).strip()
