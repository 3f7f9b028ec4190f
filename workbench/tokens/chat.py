"""Conversations through the tokenizer's chat template, cut into segments, one per turn.

Every assistant turn is learned, up to and including the template's end-of-turn marker
(`<|im_end|>`, `<|eot_id|>`); `assistant_turns="last"` learns the last only. The turns come
from the template's `{% generation %}` marks where it has them, else from rendering the
conversation turn by turn and checking that each rendering extends the one before (the prefix
property). A template without it is named, and only its last assistant turn is learned.
"""

from __future__ import annotations

from typing import Any

from workbench.errors import TemplateError
from workbench.tokens.segments import Segment


def chat_segments(
    messages: list[dict[str, str]], tokenizer, assistant_turns: str = "all"
) -> list[Segment]:
    """A conversation as the tokenizer's chat template writes it, cut into segments.

    Templates that mark assistant text with `{% generation %}` give those spans directly.
    Otherwise the conversation is rendered up to each assistant turn: the rendering with the
    generation prompt must be the start of the rendering with that turn, and that the start of
    the next (the prefix property). Each assistant turn's text, from its content to the
    template's end-of-turn marker (`<|im_end|>`, `<|eot_id|>`), is learned; whitespace after
    the marker is not. A template that lacks the prefix property (some rewrite earlier turns)
    raises PrefixError, naming the turn; `chat_segments_or_last` then learns the last turn.
    """
    learned = _learned_turns(messages, assistant_turns)
    if "{% generation %}" in (tokenizer.chat_template or "").replace("{%-", "{%"):
        return _marked_segments(messages, tokenizer, learned)
    segments, done = [], ""
    for k, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        head = render(tokenizer, messages[:k], generation_prompt=True) if k else ""
        full = render(tokenizer, messages[: k + 1], generation_prompt=False)
        if not (head.startswith(done) and full.startswith(head)):
            raise PrefixError(tokenizer, k, "the earlier turns render differently")
        body = full[len(head) :]
        kept = body.rstrip()
        if head[len(done) :]:
            segments.append(Segment(head[len(done) :], False, _role_before(messages, k)))
        own_end = not kept.endswith(message["content"].rstrip())  # the template closes turns
        segments.append(Segment(kept, k in learned, "assistant", eos=not own_end))
        if body[len(kept) :]:
            segments.append(Segment(body[len(kept) :], False, "format"))
        done = full
    return segments


class PrefixError(TemplateError):
    """A chat template whose rendering of the first turns is not the start of the whole."""

    def __init__(self, tokenizer, turn: int, why: str) -> None:
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        super().__init__(
            f"The chat template of `{name}` is not prefix-stable at message {turn} ({why}): "
            "its turns cannot be cut into learned and unlearned pieces one by one. Only the "
            "last assistant turn of such rows is learned (assistant_turns='last')."
        )


def segments_or_last(
    messages: list[dict[str, str]], tokenizer, assistant_turns: str = "all"
) -> list[Segment]:
    """`chat_segments`, or for a template without the prefix property the documented
    fallback: the whole conversation before the last assistant turn as the prompt, that turn
    (content and EOS) learned, with a warning naming the template."""
    import warnings

    try:
        return chat_segments(messages, tokenizer, assistant_turns)
    except PrefixError as error:
        warnings.warn(str(error), stacklevel=3)
    prompt = render(tokenizer, messages[:-1], generation_prompt=True)
    return [
        Segment(prompt, False, "prompt"),
        Segment(messages[-1]["content"], True, "assistant", eos=True),
    ]


def common_system(rows: list[dict]) -> str | None:
    """The system message most of the conversations start with, if any does."""
    from collections import Counter

    systems = Counter(
        r["messages"][0]["content"]
        for r in rows
        if r.get("messages") and r["messages"][0].get("role") == "system"
    )
    return systems.most_common(1)[0][0] if systems else None


def _learned_turns(messages: list[dict[str, str]], assistant_turns: str) -> set[int]:
    indices = [k for k, m in enumerate(messages) if m["role"] == "assistant"]
    return set(indices[-1:] if assistant_turns == "last" else indices)


def _role_before(messages: list[dict[str, str]], k: int) -> str:
    """The role of the text before assistant turn k (the turns since the last assistant)."""
    roles = [m["role"] for m in messages[:k]]
    since = roles[len(roles) - roles[::-1].index("assistant") :] if "assistant" in roles else roles
    return "+".join(dict.fromkeys(since)) or "format"


def render(tokenizer, messages: list[dict[str, str]], *, generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=generation_prompt
    )


def _marked_segments(messages, tokenizer, learned: set[int]) -> list[Segment]:
    """Segments from a template's `{% generation %}` marks (the assistant spans it declares)."""
    from transformers.utils.chat_template_utils import render_jinja_template

    rendered, spans = render_jinja_template(
        conversations=[messages],
        chat_template=tokenizer.chat_template,
        return_assistant_tokens_mask=True,
        **tokenizer.special_tokens_map,
    )
    text, marks = rendered[0], spans[0]
    assistant = [k for k, m in enumerate(messages) if m["role"] == "assistant"]
    segments, at = [], 0
    for turn, (start, end) in zip(assistant, marks):
        if text[at:start]:
            segments.append(Segment(text[at:start], False, _role_before(messages, turn)))
        segments.append(Segment(text[start:end], turn in learned, "assistant"))
        at = end
    if text[at:]:
        segments.append(Segment(text[at:], False, "format"))
    return segments


def chat_messages(row: dict[str, Any], where: str = "row") -> list[dict[str, str]]:
    """The row as a conversation ending with the assistant reply to learn."""
    if "messages" in row:
        messages = [{"role": m["role"], "content": m["content"]} for m in row["messages"]]
        if not messages or messages[-1]["role"] != "assistant":
            raise TemplateError(f"{where}: the last message must be from the assistant.")
        return messages
    if "instruction" in row:
        user = str(row["instruction"])
        if str(row.get("input") or "").strip():
            user += "\n\n" + str(row["input"])
        return [{"role": "user", "content": user}, {"role": "assistant", "content": row["output"]}]
    if "prompt" in row:
        return [
            {"role": "user", "content": row["prompt"]},
            {"role": "assistant", "content": row["completion"]},
        ]
    raise TemplateError(f"{where}: the chat template needs `messages`, `instruction` or `prompt`.")
