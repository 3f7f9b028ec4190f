"""A rendered row is a list of segments: text, and whether its tokens are learned. Templates
make them (`templates.py`), conversations make one per turn (`chat.py`), tokenizing turns them
into ids and labels (`tokenizing.py`)."""

from __future__ import annotations

from dataclasses import dataclass


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
