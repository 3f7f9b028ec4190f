"""Conversations through the tokenizer's chat template, cut into segments, one per turn.

Every assistant turn is learned, up to and including the template's end-of-turn marker
(`<|im_end|>`, `<|eot_id|>`); `assistant_turns="last"` learns the last only. The turns are
found in the first of these ways that works, and `Cut.turns` says which:
- "generation marks": the template's `{% generation %}` marks, where it has them;
- "turn by turn": the conversation rendered up to each assistant turn, each rendering the
  start of the next (the prefix property);
- "found by offsets": a template without the prefix property (Qwen3's writes the `<think>`
  block only in the last assistant turn) renders the whole conversation once, and each
  message's text is found in it, in order, each reply with the end-of-turn marker after it;
- "last turn only": a reply the template rewrites cannot be found, so only the last assistant
  turn is learned, with a warning (`TurnsFallbackWarning`) naming the template and message.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Literal

from workbench.errors import TemplateError
from workbench.tokens.segments import Segment

TurnsCut = Literal["", "generation marks", "turn by turn", "found by offsets", "last turn only"]
PROBE = "Ready."  # a reply rendered to see what the template writes after one


@dataclass(frozen=True)
class Cut:
    """A row's segments, and how a conversation's turns were found (`turns`; '' for a row of
    a text template). `why` says why a conversation fell back to its last turn."""

    segments: list[Segment]
    turns: TurnsCut = ""
    why: str = ""


class TurnsFallbackWarning(UserWarning):
    """A conversation whose assistant turns cannot be found: only its last one is learned."""


def cut_conversation(
    messages: list[dict[str, str]], tokenizer, assistant_turns: str = "all"
) -> Cut:
    """A conversation's segments, from generation marks, turn by turn, or by offsets in the
    whole rendering; failing those, the last assistant turn alone, with a warning."""
    learned = _learned_turns(messages, assistant_turns)
    if _has_generation_marks(tokenizer):
        return Cut(_marked_segments(messages, tokenizer, learned), "generation marks")
    try:
        return Cut(_prefix_segments(messages, tokenizer, learned), "turn by turn")
    except PrefixError:
        pass  # the earlier turns render differently in longer conversations: find them
    try:
        return Cut(offset_segments(messages, tokenizer, assistant_turns), "found by offsets")
    except ReplyNotFoundError as error:
        why = str(error)
    warnings.warn(why, TurnsFallbackWarning, stacklevel=3)
    return Cut(last_turn_segments(messages, tokenizer), "last turn only", why)


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
    raises PrefixError, naming the turn; `cut_conversation` then finds the turns by offsets.
    """
    learned = _learned_turns(messages, assistant_turns)
    if _has_generation_marks(tokenizer):
        return _marked_segments(messages, tokenizer, learned)
    return _prefix_segments(messages, tokenizer, learned)


def _prefix_segments(messages, tokenizer, learned: set[int]) -> list[Segment]:
    """Segments from rendering the conversation up to each assistant turn (PrefixError where
    a rendering is not the start of the next)."""
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


def offset_segments(
    messages: list[dict[str, str]], tokenizer, assistant_turns: str = "all"
) -> list[Segment]:
    """The conversation rendered once and cut where each message's text is found in it.

    Messages are searched in order, each after the one before, so a text that repeats maps to
    its own turn. A reply is found with the template's end-of-turn marker right after it
    (`end_of_turn`, or the tokenizer's EOS), and both are learned; whitespace after the marker
    is not. A template that writes no marker gets the tokenizer's EOS after each reply, as
    turn by turn. Raises ReplyNotFoundError for a learned reply that is not in the rendering
    (the template rewrites it) or is empty."""
    learned = _learned_turns(messages, assistant_turns)
    full = render(tokenizer, messages, generation_prompt=False)
    markers = _end_markers(tokenizer, messages)
    spans, at = [], 0
    for k, message in enumerate(messages):
        reply = message["role"] == "assistant"
        found = _find_text(full, message["content"], markers if reply else [""], at)
        if found is None and reply and k in learned:
            raise ReplyNotFoundError(tokenizer, k)
        if found is not None:  # a system prompt the template rewrites is passed over
            spans += [(k, *found)] if reply else []
            at = found[1]
    return _span_segments(full, messages, spans, learned, eos=markers == [""])


def _find_text(text: str, content: str, markers: list[str], at: int) -> tuple[int, int] | None:
    """(start, end) of the first `content` followed by one of `markers` at or after `at`, the
    marker included; the content stripped is tried where the template trims it."""
    for wanted in dict.fromkeys([content, content.strip()]):
        if not wanted.strip():
            continue  # an empty text has nothing to find
        hits = [(i, -len(m)) for m in markers if (i := text.find(wanted + m, at)) >= 0]
        if hits:
            start, longest = min(hits)  # the first place; there, the longest marker
            return start, start + len(wanted) - longest
    return None


def _span_segments(full: str, messages, spans, learned: set[int], eos: bool) -> list[Segment]:
    """Segments of `full` from the assistant spans (turn, start, end): their concatenation is
    `full` exactly, so each piece tokenises where the template put it."""
    segments, at = [], 0
    for k, start, end in spans:
        if full[at:start]:
            segments.append(Segment(full[at:start], False, _role_before(messages, k)))
        segments.append(Segment(full[start:end], k in learned, "assistant", eos=eos))
        at = len(full) - len(full[end:].lstrip())  # the whitespace after the marker
        if full[end:at]:
            segments.append(Segment(full[end:at], False, "format"))
    if full[at:]:
        segments.append(Segment(full[at:], False, "format"))
    return segments


def end_of_turn(tokenizer, messages: list[dict[str, str]] | None = None) -> str:
    """The text the chat template writes after an assistant reply, up to the whitespace
    before the next turn (`<|im_end|>`, `<|eot_id|>`), or ''. Found by rendering `messages`
    (by default a user turn and a reply) up to the last reply, with that reply's text
    replaced by a probe."""
    messages = messages or [{"role": "user", "content": "Hello"}, {"role": "assistant"}]
    replies = [k for k, m in enumerate(messages) if m["role"] == "assistant"]
    last = replies[-1] if replies else len(messages)
    probed = [*messages[:last], {"role": "assistant", "content": PROBE}]
    try:
        text = render(tokenizer, probed, generation_prompt=False)
    except Exception:  # noqa: BLE001 - a template with other demands: only EOS counts
        return ""
    return text[text.rfind(PROBE) + len(PROBE) :].rstrip() if PROBE in text else ""


def _end_markers(tokenizer, messages: list[dict[str, str]]) -> list[str]:
    """What may follow a reply in the rendering: the end-of-turn marker (also without the
    space some templates put before it) or the tokenizer's EOS; [''] for a template that
    writes none."""
    marker = end_of_turn(tokenizer, messages)
    if not marker:
        return [""]
    eos = getattr(tokenizer, "eos_token", None)
    return list(dict.fromkeys(m for m in (marker, marker.lstrip(), eos) if m))


def last_turn_segments(messages: list[dict[str, str]], tokenizer) -> list[Segment]:
    """The documented fallback: the whole conversation before the last assistant turn as the
    prompt, that turn's content learned, followed by the tokenizer's EOS."""
    prompt = render(tokenizer, messages[:-1], generation_prompt=True)
    return [
        Segment(prompt, False, "prompt"),
        Segment(messages[-1]["content"], True, "assistant", eos=True),
    ]


def _template_name(tokenizer) -> str:
    return getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__


class PrefixError(TemplateError):
    """A chat template whose rendering of the first turns is not the start of the whole."""

    def __init__(self, tokenizer, turn: int, why: str) -> None:
        super().__init__(
            f"The chat template of `{_template_name(tokenizer)}` is not prefix-stable at "
            f"message {turn} ({why}): its turns cannot be cut into learned and unlearned "
            "pieces one by one, so they are found by their text in the whole rendering."
        )


class ReplyNotFoundError(TemplateError):
    """An assistant reply that is not in the chat template's rendering of the conversation."""

    def __init__(self, tokenizer, turn: int) -> None:
        super().__init__(
            f"The chat template of `{_template_name(tokenizer)}` is not prefix-stable, and the "
            f"text of assistant message {turn} is not in its rendering of the whole "
            "conversation (the template rewrites it, or it is empty). Only the last assistant "
            "turn of such rows is learned, its content followed by EOS (assistant_turns='last')."
        )


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


def _has_generation_marks(tokenizer) -> bool:
    return "{% generation %}" in (tokenizer.chat_template or "").replace("{%-", "{%")


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
