"""Prompt templates: turn one dataset row into segments, pieces of text each learned or not.

A text template gives two segments, the prompt (not learned) and the response (learned). A
conversation through the tokenizer's chat template gives one segment per turn, and every
assistant turn is learned (or only the last, with `assistant_turns="last"`), its end-of-turn
marker included (`workbench.tokens.chat`); `Template.cut` also says how the turns were found.

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
from workbench.tokens import chat
from workbench.tokens.segments import Segment

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
        return self.cut(row, tokenizer, where).segments

    def cut(self, row: dict[str, Any], tokenizer=None, where: str = "row") -> chat.Cut:
        """The row's segments, and for a conversation how its turns were found (`Cut.turns`:
        by generation marks, turn by turn, by offsets, or the last turn only)."""
        if self.use_chat_template:
            self._check_chat_tokenizer(tokenizer)
            messages = self._messages(row, where)
            return chat.cut_conversation(messages, tokenizer, self.assistant_turns)
        prompt, response = self.render(row, tokenizer, where)
        return chat.Cut(
            [Segment(prompt, False, "prompt"), Segment(response, True, "response", eos=True)]
        )

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
            (chat.render(tokenizer, messages[:k], generation_prompt=True), m["content"])
            for k, m in enumerate(messages)
            if m["role"] == "assistant" and k > 0
        ]

    def prompt_for_text(self, text: str, tokenizer=None, rows: list[dict] | None = None) -> str:
        """The prompt for a new message a person types, rendered as the training rows were: a
        chat template gets the rows' own system message (the most common one) rather than
        the tokenizer's default, so the prompt tried is the prompt learned; rows that all put
        their `input` under one instruction (a classifier's task) get the text as a new
        `input` under it (`shared_instruction`), else the text is the instruction."""
        if not self.use_chat_template:
            shared = shared_instruction(rows or [])
            if shared:  # one task, many inputs (tickets): the text is a new input to it
                return self.render_prompt({"instruction": shared, "input": text}, tokenizer)
            return self.render_prompt({"instruction": text, "input": "", "prompt": text}, tokenizer)
        self._check_chat_tokenizer(tokenizer)
        system = self.system or chat.common_system(rows or [])
        messages = [{"role": "system", "content": system}] if system else []
        messages.append({"role": "user", "content": text})
        return chat.render(tokenizer, messages, generation_prompt=True)

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
        messages = chat.chat_messages(row, where)
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


def shared_instruction(rows: list[dict]) -> str | None:
    """The instruction every row shares when each row's own part is its `input` (one task
    over many inputs, as in the support tickets), else None."""
    if not rows:
        return None
    instructions = {str(row.get("instruction") or "") for row in rows}
    if len(instructions) != 1 or not all(row.get("input") for row in rows):
        return None
    return instructions.pop() or None
