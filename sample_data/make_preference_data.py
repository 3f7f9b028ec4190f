"""Generate `preferences.jsonl`: preference pairs for DPO, deterministically, with the stdlib only.

Run `python sample_data/make_preference_data.py` from anywhere; the file comes out byte for
byte the same on every run. Customer messages come from the same invented building blocks as
`support_tickets.jsonl` (imported from make_sample_data.py, never its rows); the replies are
invented here. A `chosen` reply names the team that handles the message and a next step; the
`rejected` reply either names the wrong team or helps with nothing.
"""

from __future__ import annotations

import json
import random

from make_sample_data import OUT_DIR, SEED, TOPICS, ticket_pool

PREFERENCE_SEED = SEED + 100  # its own stream: the other datasets are unaffected
INSTRUCTION = (
    "Reply to the customer in one sentence: say which team will help and what happens next."
)
OPENINGS = ["Sorry for the trouble:", "Thanks for telling us:", "We are on it:"]
NEXT_STEPS = {
    "billing": [
        "our billing team will check the charge and refund anything taken by mistake",
        "our billing team will correct the invoice and email you the new one",
    ],
    "shipping": [
        "our shipping team will trace the parcel and send you an update by tomorrow",
        "our shipping team will arrange a new delivery at no cost to you",
    ],
    "technical": [
        "our technical team will send you the steps to fix it today",
        "our technical team will look into the error and reply with a fix",
    ],
    "account": [
        "our account team will secure your account and help you sign in again",
        "our account team will update your details once you confirm your email",
    ],
}
UNHELPFUL = [
    "We cannot help with that.",
    "Please read the FAQ on our website.",
    "That is not something we deal with, sorry.",
    "Try again later, maybe it fixes itself.",
]
PER_TOPIC = 40  # 160 pairs: enough for a few DPO steps on a CPU


def reply(topic: str, rng: random.Random) -> str:
    return f"{rng.choice(OPENINGS)} {rng.choice(NEXT_STEPS[topic])}."


def make_pairs(rng: random.Random) -> list[dict]:
    """PER_TOPIC pairs per topic; every other rejected reply names a wrong team."""
    rows = []
    for topic in TOPICS:
        messages = ticket_pool(topic, rng)[:PER_TOPIC]
        for i, message in enumerate(messages):
            if i % 2:
                rejected = rng.choice(UNHELPFUL)
            else:
                rejected = reply(rng.choice([t for t in TOPICS if t != topic]), rng)
            row = {"instruction": INSTRUCTION, "input": message, "chosen": reply(topic, rng)}
            rows.append({**row, "rejected": rejected, "task": "ticket_reply"})
    rng.shuffle(rows)
    return rows


def main() -> None:
    rows = make_pairs(random.Random(PREFERENCE_SEED))
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    (OUT_DIR / "preferences.jsonl").write_bytes(text.encode("utf-8"))


if __name__ == "__main__":
    main()
