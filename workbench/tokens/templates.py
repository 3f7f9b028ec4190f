"""Prompt templates: turn one dataset row into segments, pieces of text each learned or not.

A text template gives two segments, the prompt (not learned) and the response (learned). A
conversation through the tokenizer's chat template gives one segment per turn, and every
assistant turn is learned (or only the last, with `assistant_turns="last"`), its end-of-turn
marker included (`chat_segments`).

Templates are plain text with `{field}` placeholders. They are filled in by a small parser, not
by `str.format` or Jinja, so a template cannot run code or reach attributes: `{x.__class__}` is
an error. `{{` and `}}` stand for literal braces. The tokenizer's own chat template is the one
exception: it is the model author's Jinja, rendered by transformers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from workbench.errors import TemplateError

_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_JINJA_FIELD = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def template_fields(text: str) -> list[str]:
    """The placeholder names in `text`, in order; raises TemplateError for anything else."""
    names = []
    for match in _TOKEN.finditer(text):
        token, inner = match.group(0), match.group(1)
        if token in ("{{", "}}"):
            continue
        if inner is None:
            raise TemplateError(
                f"Unmatched `{token}` at character {match.start()} of the template. Write `{{{{` "
                "or `}}` for a literal brace."
            )
        if not _FIELD.fullmatch(inner):
            raise TemplateError(
                f"Unsupported placeholder `{token}` at character {match.start()}: only plain "
                "field names like {instruction} are allowed (no attributes, indexes or formats)."
            )
        names.append(inner)
    return names


def _warn_jinja_style(name: str, text: str) -> None:
    """`{{ instruction }}` (Jinja) renders here as the literal text `{ instruction }`: say so."""
    import warnings

    for match in _JINJA_FIELD.finditer(text):
        field_name = match.group(1)
        warnings.warn(
            f"Template `{name}`: `{match.group(0)}` is Jinja style; here it renders the literal "
            f"text `{{{match.group(0)[2:-2]}}}`. Write `{{{field_name}}}` to insert the row's "
            f"`{field_name}` (`{{{{` and `}}}}` stand for literal braces).",
            stacklevel=4,
        )


def fill(text: str, row: dict[str, Any], where: str = "row") -> str:
    """Replace each `{field}` in `text` with the row's value; never evaluates anything."""

    def substitute(match: re.Match) -> str:
        token, name = match.group(0), match.group(1)
        if token == "{{":
            return "{"
        if token == "}}":
            return "}"
        if name not in row or row[name] is None:
            columns = ", ".join(sorted(k for k in row if not k.startswith("_")))
            raise TemplateError(
                f"{where}: the template uses `{{{name}}}` but the row has no `{name}` "
                f"(its fields: {columns}). Fix the placeholder or map a column to `{name}`."
            )
        return str(row[name])

    template_fields(text)  # raises for malformed templates before any substitution
    return _TOKEN.sub(substitute, text)


@dataclass(frozen=True)
class Segment:
    """A piece of a rendered row: its text, whether its tokens carry loss, the role it plays
    (prompt, response, system, user, assistant, tool, or `format` for the chat template's own
    text between turns), and whether the tokenizer's EOS follows it (a response that has no
    end marker of its own)."""

    text: str
    learned: bool
    role: str = "prompt"
    eos: bool = False


@dataclass(frozen=True)
class Template:
    """How a row becomes a prompt and a response.

    `prompt` and `response` are texts with `{field}` placeholders. `prompt_no_input` is used
    instead of `prompt` when the row's `input` is empty (the Alpaca convention). With
    `use_chat_template`, the tokenizer's chat template builds the prompt from the row's
    `messages` (or from instruction and input) and `system` is an optional system message;
    `assistant_turns` says which assistant turns of a conversation are learned: every one
    (`"all"`) or only the last.
    """

    name: str
    prompt: str = ""
    response: str = "{output}"
    prompt_no_input: str | None = None
    use_chat_template: bool = False
    system: str | None = None
    assistant_turns: Literal["all", "last"] = "all"
    description: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        for part in (self.prompt, self.response, self.prompt_no_input or ""):
            template_fields(part)
            _warn_jinja_style(self.name, part)
        if not self.use_chat_template and not self.response:
            raise TemplateError(f"Template `{self.name}`: `response` is empty; nothing to learn.")
        if self.assistant_turns not in ("all", "last"):
            raise TemplateError(
                f"Template `{self.name}`: `assistant_turns`={self.assistant_turns!r}; use 'all' "
                "(every assistant turn is learned) or 'last'."
            )

    @property
    def fields(self) -> list[str]:
        """Every field name the template reads."""
        texts = [self.prompt, self.response, self.prompt_no_input or ""]
        return list(dict.fromkeys(f for t in texts for f in template_fields(t)))

    def render(self, row: dict[str, Any], tokenizer=None, where: str = "row") -> tuple[str, str]:
        """(prompt, response) for one row. `where` names the row in errors (`data.jsonl:17`)."""
        if self.use_chat_template:
            return self._render_chat(row, tokenizer, where)
        if "messages" in row and not ({"instruction", "prompt", "text"} & row.keys()):
            raise TemplateError(
                f"{where}: conversational rows (`messages`) need the chat template; use "
                "TEMPLATES['chat'] or map the messages to fields first."
            )
        text = self.prompt
        if self.prompt_no_input is not None and not str(row.get("input") or "").strip():
            text = self.prompt_no_input
        return fill(text, row, where), fill(self.response, row, where)

    def segments(self, row: dict[str, Any], tokenizer=None, where: str = "row") -> list[Segment]:
        """The row as segments, in order: what training sees, and which of it is learned."""
        if self.use_chat_template:
            self._check_chat_tokenizer(tokenizer)
            messages = self._messages(row, where)
            return chat_segments_or_last(messages, tokenizer, self.assistant_turns)
        prompt, response = self.render(row, tokenizer, where)
        return [Segment(prompt, False, "prompt"), Segment(response, True, "response", eos=True)]

    def render_prompt(self, row: dict[str, Any], tokenizer=None, where: str = "row") -> str:
        """Only the prompt: what a model is given at generation time."""
        return self.render({"output": "", "completion": "", **row}, tokenizer, where)[0]

    def turn_prompts(
        self, row: dict[str, Any], tokenizer=None, where: str = "row"
    ) -> list[tuple[str, str]]:
        """(prompt, reference) for every answer in the row: each assistant turn of a
        conversation with the conversation before it as its prompt; one pair otherwise."""
        if not self.use_chat_template:
            prompt, response = self.render(row, tokenizer, where)
            return [(prompt, response)]
        self._check_chat_tokenizer(tokenizer)
        messages = self._messages(row, where)
        return [
            (_render(tokenizer, messages[:k], generation_prompt=True), m["content"])
            for k, m in enumerate(messages)
            if m["role"] == "assistant" and k > 0
        ]

    def prompt_for_text(self, text: str, tokenizer=None, rows: list[dict] | None = None) -> str:
        """The prompt for a new message a person types, rendered as the training rows were: a
        chat template gets the rows' own system message (the most common one) rather than
        the tokenizer's default, so the prompt tried is the prompt learned."""
        if not self.use_chat_template:
            return self.render_prompt({"instruction": text, "input": "", "prompt": text}, tokenizer)
        self._check_chat_tokenizer(tokenizer)
        system = self.system or _common_system(rows or [])
        messages = [{"role": "system", "content": system}] if system else []
        messages.append({"role": "user", "content": text})
        return _render(tokenizer, messages, generation_prompt=True)

    def _render_chat(self, row: dict[str, Any], tokenizer, where: str) -> tuple[str, str]:
        """(the prompt of the last assistant turn, its content): the whole conversation before
        it, as the chat template writes it, ending with the assistant's header."""
        self._check_chat_tokenizer(tokenizer)
        messages = self._messages(row, where)
        prompt = tokenizer.apply_chat_template(
            messages[:-1], tokenize=False, add_generation_prompt=True
        )
        return prompt, messages[-1]["content"]

    def _messages(self, row: dict[str, Any], where: str) -> list[dict[str, str]]:
        messages = chat_messages(row, where)
        if self.system and messages[0]["role"] != "system":
            messages = [{"role": "system", "content": self.system}, *messages]
        return messages

    def _check_chat_tokenizer(self, tokenizer) -> None:
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise TemplateError(
                f"Template `{self.name}` uses the tokenizer's chat template, but "
                + ("no tokenizer was given." if tokenizer is None else "this tokenizer has none.")
                + " Pass the tokenizer, or pick a text template such as 'alpaca'."
            )


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
        head = _render(tokenizer, messages[:k], generation_prompt=True) if k else ""
        full = _render(tokenizer, messages[: k + 1], generation_prompt=False)
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


def chat_segments_or_last(
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
    prompt = _render(tokenizer, messages[:-1], generation_prompt=True)
    return [
        Segment(prompt, False, "prompt"),
        Segment(messages[-1]["content"], True, "assistant", eos=True),
    ]


def _common_system(rows: list[dict]) -> str | None:
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


def _render(tokenizer, messages: list[dict[str, str]], *, generation_prompt: bool) -> str:
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


_ALPACA_HEAD = (
    "Below is an instruction that describes a task{paired}. "
    "Write a response that appropriately completes the request.\n\n"
)
ALPACA_INPUT = Template(
    name="alpaca_input",
    prompt=_ALPACA_HEAD.format(paired=", paired with an input that provides further context")
    + "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n",
    description="Alpaca, for rows with an input.",
)
ALPACA_NO_INPUT = Template(
    name="alpaca_no_input",
    prompt=_ALPACA_HEAD.format(paired="") + "### Instruction:\n{instruction}\n\n### Response:\n",
    description="Alpaca, for rows without an input.",
)

TEMPLATES: dict[str, Template] = {
    t.name: t
    for t in [
        Template(
            name="alpaca",
            prompt=ALPACA_INPUT.prompt,
            prompt_no_input=ALPACA_NO_INPUT.prompt,
            description="Alpaca: the with-input or no-input text, chosen per row.",
        ),
        ALPACA_INPUT,
        ALPACA_NO_INPUT,
        Template(
            name="dolly",
            prompt="Below is an instruction that describes a task. Write a response that "
            "appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n"
            "Input:\n{input}\n\n### Response:\n",
            prompt_no_input="Below is an instruction that describes a task. Write a response "
            "that appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n"
            "### Response:\n",
            response="{output}\n\n### End",
            description="Dolly style: context under `Input:` and an explicit `### End` marker.",
        ),
        Template(
            name="chat", use_chat_template=True, description="The tokenizer's own chat template."
        ),
        Template(
            name="plain",
            prompt="{prompt}",
            response="{completion}",
            description="Prompt/completion rows, concatenated as they are.",
        ),
        Template(
            name="text",
            prompt="",
            response="{text}",
            description="Plain text: every token is learned (no prompt).",
        ),
    ]
}

DEFAULT_TEMPLATE_FOR_FORMAT = {
    "alpaca": "alpaca",
    "prompt_completion": "plain",
    "messages": "chat",
    "sharegpt": "chat",
    "text": "text",
    "preference": "alpaca",  # instruction/input prompts; the response is chosen or rejected
}


def get_template(template: str | Template | None, data_format: str | None = None) -> Template:
    """A built-in template by name, the given Template unchanged, or with `None` the template
    that suits `data_format` (the format `load_data` detected)."""
    if isinstance(template, Template):
        return template
    if template is None:
        if data_format is None:
            raise TemplateError("No template given: name one, or pass the data's format.")
        return default_template(data_format)
    if template not in TEMPLATES:
        raise TemplateError(
            f"Unknown template `{template}`; built-ins: {', '.join(TEMPLATES)}. For your own, "
            "use Template(name=..., prompt='...{field}...', response='{output}')."
        )
    return TEMPLATES[template]


def default_template(data_format: str) -> Template:
    """The built-in template that suits a detected data format."""
    return TEMPLATES[DEFAULT_TEMPLATE_FOR_FORMAT[data_format]]
