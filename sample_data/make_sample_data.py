"""Generate the workbench's sample datasets, deterministically, with the stdlib only.

Run `python sample_data/make_sample_data.py` from anywhere: it rewrites every file in
`sample_data/` (and `sample_data/broken/`) byte for byte the same on every run. All text
is invented here from small word lists; nothing is copied from an existing dataset.

The tasks are sized for teaching on a CPU with SmolLM2-135M-Instruct: short inputs
(about 8-25 words), answers of a few tokens, learnable from ~300 examples in minutes.
"""

from __future__ import annotations

import csv
import json
import random
from datetime import date as Date
from decimal import Decimal
from pathlib import Path

SEED = 1234  # one seed; each dataset draws from its own stream SEED + k (see main)
OUT_DIR = Path(__file__).resolve().parent


def table(text: str, sep: str = "|") -> list[str]:
    """Split a `sep`-separated word list into its stripped, non-empty items."""
    return [item.strip() for item in text.split(sep) if item.strip()]


def pairs(text: str) -> list[tuple[str, str]]:
    """Parse 'a: b | c: d' into [('a', 'b'), ('c', 'd')]."""
    return [(left.strip(), right.strip()) for left, right in (p.split(":") for p in table(text))]


# ---------------------------------------------------------------- support tickets
TICKET_INSTRUCTION = (
    "Classify the customer message into one of these topics: "
    "billing, shipping, technical, account. Answer with the topic only."
)
# Openers, closers and products are shared by all topics, so only the situation tells
# the topic apart: a model has to read the content, not the greeting.
OPENERS = [""] + table("Hi, | Hello, | Hi there, | Good morning, | Hey, | Dear support, | Help! ")
CLOSERS = [""] + table(
    "Thanks. | Please help. | Can you look into it? | What should I do? | Thank you! | "
    "This is urgent. | Any ideas? | Cheers. | I'd appreciate a quick reply. | Excuse the rush."
)
PRODUCTS = table(
    "Aurora e-reader | Pebble speaker | Nimbus router | Orbit headset | Zephyr drone | "
    "Quill tablet | Marlow camera | Tango smartwatch"
)
# Situations carry the cue words; "{p}" becomes a product name. The label word itself is
# avoided, except "account" in one account situation (real customers do write it).
SITUATIONS = {
    "billing": table(
        "I was charged twice for the {p} I ordered | my card was declined when I tried to "
        "pay for the {p} | I returned the {p} two weeks ago and the refund has not arrived | "
        "the invoice for my {p} shows the wrong amount | the subscription price went up "
        "without any notice | there is a payment on my bank statement that I don't recognise "
        "| I used a discount code but was still charged full price for the {p} | I need a "
        "receipt for my {p} for an expense report | I cancelled my plan but you took money "
        "again this month | the tax on my latest invoice looks wrong | I was billed for the "
        "premium plan but signed up for basic | my payment for the {p} went through but the "
        "order says unpaid"
    ),
    "shipping": table(
        "my {p} parcel still hasn't arrived | the tracking number for my {p} shows no updates "
        "| the courier left my {p} at the wrong address | delivery of my {p} is already a "
        "week late | I need to change the delivery address before the {p} is sent | the box "
        "arrived crushed and the {p} inside is dented | the courier says the parcel was "
        "delivered but nothing came | I ordered two items but only the {p} was in the package "
        "| can I collect my {p} from a local depot instead | the tracking page says my parcel "
        "is stuck at customs | my {p} was sent to my old address | how long does express "
        "delivery to Canada take"
    ),
    "technical": table(
        "the {p} app crashes every time I open it | I get error code E42 when I try to pair "
        "my {p} | the {p} app won't load past the start screen | the login button on your "
        "website does nothing when I click it | syncing my {p} with my phone fails halfway | "
        "after the latest update my {p} keeps restarting | the firmware update for my {p} is "
        "stuck at 60 percent | your website shows a blank white page on my laptop | my {p} "
        "won't connect to the wifi anymore | the app freezes when I try to upload a photo | "
        "the {p} turns itself off after a few minutes | the search bar on your site returns "
        "error 500"
    ),
    "account": table(
        "I want to change the email address on my profile | please delete my account and all "
        "my data | I forgot my password and the reset link never arrives | how do I change my "
        "username | I lost my phone and can't get the two-factor code | I want to turn on "
        "two-factor authentication for the {p} app | my profile shows a sign-in from a "
        "country I've never visited | I'd like to update the phone number linked to my "
        "profile | I have two logins and want to merge them into one | please change the name "
        "on my profile after my wedding | how can I download a copy of my personal data | my "
        "profile was locked after too many password attempts"
    ),
}
TOPICS = list(SITUATIONS)  # billing, shipping, technical, account


def ticket_message(opener: str, situation: str, closer: str) -> str:
    """Join opener, situation and closer into one customer message."""
    if not opener or opener.endswith("!"):
        situation = situation[0].upper() + situation[1:]
    end = "?" if situation.lower().startswith(("how ", "can ")) else "."
    return " ".join(part for part in (opener, situation + end, closer) if part)


def ticket_pool(topic: str, rng: random.Random) -> list[str]:
    """Return every distinct message for `topic`, taking the situations in turn.

    Round-robin keeps the situations equally common in any prefix of the pool; drawing from
    all combinations at once would favour situations with a product (8 times as many).
    """
    variants = []
    for situation in SITUATIONS[topic]:
        texts = (
            [situation.replace("{p}", p) for p in PRODUCTS] if "{p}" in situation else [situation]
        )
        messages = [ticket_message(o, text, c) for text in texts for o in OPENERS for c in CLOSERS]
        rng.shuffle(messages)
        variants.append(messages)
    longest = max(len(messages) for messages in variants)
    return [messages[i] for i in range(longest) for messages in variants if i < len(messages)]


def make_tickets(per_topic: int, rng: random.Random, exclude: set[str]) -> list[tuple[str, str]]:
    """Draw `per_topic` (message, topic) pairs for each topic, none in `exclude`, shuffled."""
    drawn = []
    for topic in TOPICS:
        fresh = [m for m in ticket_pool(topic, rng) if m not in exclude]
        drawn += [(message, topic) for message in fresh[:per_topic]]
    rng.shuffle(drawn)
    return drawn


# ---------------------------------------------------------------- dates
DATE_INSTRUCTION = "Rewrite the date in ISO format (YYYY-MM-DD)."
DATE_FRAMES = table(
    "The meeting is on {d}. | Invoice dated {d} | She was born on {d}. | Deadline: {d} | "
    "We moved into the flat on {d}. | {d} | The store reopens on {d}. | Signed {d} | "
    "The contract ends on {d}. | Your appointment is confirmed for {d}. | "
    "Please pay before {d}. | Our flight leaves on {d}. | Last updated {d} | "
    "The concert was held on {d}."
)
# March 5, 2024 | 5 March 2024 | the 5th of March, 2024 | Mar 5 2024 | March 5th, 2024 |
# 5 Mar 2024 | 5th March 2024   ({B} full month, {b} short month, {o} ordinal day)
DATE_STYLES = table(
    "{B} {d}, {y} | {d} {B} {y} | the {o} of {B}, {y} | {b} {d} {y} | {B} {o}, {y} | "
    "{d} {b} {y} | {o} {B} {y}"
)


def ordinal(day: int) -> str:
    """Write a day as an ordinal: 1 -> '1st', 2 -> '2nd', 11 -> '11th', 22 -> '22nd'."""
    suffix = "th" if 10 <= day % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return f"{day}{suffix}"


def english_date(date: Date, style: int) -> str:
    """Write `date` in English style `style` (an index into DATE_STYLES)."""
    return DATE_STYLES[style].format(
        B=date.strftime("%B"), b=date.strftime("%b"), d=date.day, o=ordinal(date.day), y=date.year
    )


def random_dates(count: int, rng: random.Random, exclude: set[Date]) -> list[Date]:
    """Draw `count` distinct dates (years 1990-2030, days 1-28), none in `exclude`."""
    dates: dict[Date, None] = {}
    while len(dates) < count:
        date = Date(rng.randint(1990, 2030), rng.randint(1, 12), rng.randint(1, 28))
        if date not in exclude:
            dates[date] = None
    return list(dates)


def make_date_rows(dates: list[Date], rng: random.Random) -> list[dict]:
    """Build one Alpaca row per date, in a random style inside a random frame."""
    rows = []
    for date in dates:
        frame = DATE_FRAMES[rng.randrange(len(DATE_FRAMES))]
        text = frame.format(d=english_date(date, rng.randrange(len(DATE_STYLES))))
        text = text[0].upper() + text[1:]  # "the 5th of March" may open the sentence
        rows.append(alpaca(DATE_INSTRUCTION, text, date.isoformat(), "date_iso"))
    return rows


# ---------------------------------------------------------------- city extraction
CITY_INSTRUCTION = "Extract the person's name and the city from the sentence as JSON."
NAMES = table(
    "Priya Tomás Aiko Kwame Lena Mateo Fatima Oskar Mei Rahul Ingrid Diego Amara Yusuf Chloe "
    "Hiroshi Nadia Felix Zainab Lucas Sofia Ravi Elena Kofi Hana Marco Leila Jonas Ama Pavel "
    "Inês Omar Freya Tariq Camila Ivan Noor Emil Zara Kenji Ruth Bruno Asha Liam Yara Nikolai "
    "Grace Arjun Maya Sven Lucia Dawit Anika Tobias Esi Rosa Farid Keiko Malik Wren",
    sep=" ",
)
CITIES = table(
    "Lisbon | Nairobi | Osaka | Toronto | Lima | Oslo | Hanoi | Marrakesh | Dublin | Seoul | "
    "Melbourne | Cairo | Prague | Montreal | Bogotá | Kraków | São Paulo | Zürich | Istanbul | "
    "Mumbai | Jakarta | Manila | Vienna | Budapest | Helsinki | Copenhagen | Edinburgh | "
    "Barcelona | Naples | Munich | Hamburg | Rotterdam | Antwerp | Geneva | Athens | Beirut | "
    "Dubai | Karachi | Dhaka | Kathmandu | Bangkok | Singapore | Taipei | Shanghai | Kyoto | "
    "Auckland | Perth | Vancouver | Chicago | Denver | Havana | Santiago | Quito | Accra | "
    "Lagos | Dakar | Casablanca | Tunis | Buenos Aires | Tbilisi"
)
CITY_FRAMES = table(
    "{n} flew to {c} last Tuesday for a conference. | {n} grew up in {c} and still visits "
    "every summer. | Last year {n} moved to {c} to start a new job. | In {c}, {n} opened a "
    "tiny bookshop. | {n} is taking the night train to {c}. | After university, {n} found "
    "work in {c}. | {n} sent me a postcard from {c}. | My cousin {n} lives in {c} with two "
    "cats. | {n} will spend the winter holidays in {c}. | The new office in {c} is run by "
    "{n}. | Yesterday {n} ran a marathon in {c}. | {n} is studying architecture in {c} this "
    "year. | A street musician named {n} plays every night in {c}. | {n} booked a hotel near "
    "the main square in {c}. | We met {n} at a small café in {c}. | {n} just got back from a "
    "week in {c}."
)


def make_city_rows(count: int, rng: random.Random) -> list[dict]:
    """Build `count` rows with distinct sentences, each naming one person and one city."""
    rows: dict[str, dict] = {}
    while len(rows) < count:  # each pass pairs every name with one city, so all get used
        for name, city in zip(rng.sample(NAMES, len(NAMES)), rng.sample(CITIES, len(CITIES))):
            text = rng.choice(CITY_FRAMES).format(n=name, c=city)
            # ensure_ascii=False keeps "São Paulo" readable; the separators are the defaults.
            answer = json.dumps({"name": name, "city": city}, ensure_ascii=False)
            rows.setdefault(text, alpaca(CITY_INSTRUCTION, text, answer, "extract_city"))
            if len(rows) == count:
                break
    return list(rows.values())


# ---------------------------------------------------------------- antonyms, capitals
ANTONYM_INSTRUCTION = "Give the antonym of the word."
ANTONYMS = pairs(
    "hot: cold | big: small | happy: sad | open: closed | early: late | fast: slow | "
    "full: empty | up: down | win: lose | buy: sell | push: pull | rich: poor | strong: weak | "
    "wet: dry | thick: thin | loud: quiet | young: old | before: after | inside: outside | "
    "above: below | begin: end | true: false | arrive: depart | cheap: expensive | "
    "clean: dirty | deep: shallow | easy: hard | friend: enemy | give: take | high: low | "
    "laugh: cry | long: short | love: hate | maximum: minimum | north: south | east: west | "
    "always: never | remember: forget | smooth: rough | success: failure | tight: loose | "
    "visible: invisible | wide: narrow | polite: rude | brave: cowardly | ancient: modern | "
    "asleep: awake | borrow: lend | increase: decrease | import: export | include: exclude | "
    "major: minor | question: answer | safe: dangerous | singular: plural | victory: defeat | "
    "entrance: exit | inhale: exhale | appear: disappear | heavy: light"
)
CAPITALS = pairs(
    "France: Paris | Japan: Tokyo | Italy: Rome | Spain: Madrid | Germany: Berlin | "
    "Canada: Ottawa | Australia: Canberra | Egypt: Cairo | Kenya: Nairobi | India: New Delhi | "
    "China: Beijing | Argentina: Buenos Aires | Peru: Lima | Chile: Santiago | Norway: Oslo | "
    "Sweden: Stockholm | Finland: Helsinki | Denmark: Copenhagen | Poland: Warsaw | "
    "Portugal: Lisbon | Greece: Athens | Turkey: Ankara | Ireland: Dublin | Austria: Vienna | "
    "Hungary: Budapest | Thailand: Bangkok | Vietnam: Hanoi | South Korea: Seoul | "
    "Nigeria: Abuja | Ghana: Accra | Morocco: Rabat | Ethiopia: Addis Ababa | "
    "Colombia: Bogotá | Cuba: Havana | Iceland: Reykjavík | New Zealand: Wellington | "
    "Belgium: Brussels | Ukraine: Kyiv | Romania: Bucharest | Nepal: Kathmandu"
)
CAPITAL_QUESTIONS = table(
    "What is the capital of {}? | Name the capital city of {}. | Which city is the capital of {}?"
)

# ---------------------------------------------------------------- unit conversion
UNIT_SYSTEM = "You convert units. Reply with the number and unit only."
# (big unit: singular, plural, symbol), (small unit: singular, plural, symbol), factor
UNIT_PAIRS = [
    (("kilometer", "kilometers", "km"), ("meter", "meters", "m"), 1000),
    (("kilogram", "kilograms", "kg"), ("gram", "grams", "g"), 1000),
    (("hour", "hours", "h"), ("minute", "minutes", "min"), 60),
    (("liter", "liters", "L"), ("milliliter", "milliliters", "mL"), 1000),
    (("minute", "minutes", "min"), ("second", "seconds", "s"), 60),
    (("centimeter", "centimeters", "cm"), ("millimeter", "millimeters", "mm"), 10),
]
UNIT_QUESTIONS = table(
    "How many {to} is {v} {frm}? | Convert {v} {frm} to {to}. | What is {v} {frm} in {to}? | "
    "How many {to} are in {v} {frm}? | {v} {frm} is how many {to}? | "
    "Please express {v} {frm} in {to}."
)
FOLLOW_UPS = table(
    "And {v} {frm}? | What about {v} {frm}? | And for {v} {frm}? | Now do {v} {frm}."
)


def format_number(value: Decimal) -> str:
    """Write a number without a trailing '.0': 3000, 2.5, 0.3."""
    text = f"{value:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def unit_turn(rng: random.Random, pair: int, to_small: bool, template: str) -> tuple[str, str]:
    """Draw one conversion and return (question, answer); `template` is filled in."""
    big, small, factor = UNIT_PAIRS[pair]
    # The big-unit amount is whole or has one decimal, so both sides are exact decimals.
    if rng.random() < 0.6:
        big_value = Decimal(rng.randint(1, 25))
    else:
        big_value = Decimal(rng.randint(1, 99)) / 10
    value, frm, answer, to = big_value, big, big_value * factor, small
    if not to_small:
        value, frm, answer, to = answer, small, value, big
    unit_name = frm[0] if value == 1 else frm[1]  # "1 hour", "1.5 hours"
    question = template.format(v=format_number(value), frm=unit_name, to=to[1])
    return question, f"{format_number(answer)} {to[2]}"


def make_unit_rows(count: int, two_turn: int, rng: random.Random) -> list[dict]:
    """Build `count` chats, `two_turn` with a follow-up turn; first questions all differ."""
    rows: dict[str, dict] = {}
    while len(rows) < count:
        pair, to_small = rng.randrange(len(UNIT_PAIRS)), rng.random() < 0.5
        question, answer = unit_turn(rng, pair, to_small, rng.choice(UNIT_QUESTIONS))
        messages = [
            {"role": "system", "content": UNIT_SYSTEM},
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer},
        ]
        if len(rows) < two_turn:  # the first rows drawn get a follow-up in the same units
            follow, follow_answer = unit_turn(rng, pair, to_small, rng.choice(FOLLOW_UPS))
            if follow_answer == answer:
                continue
            messages.append({"role": "user", "content": follow})
            messages.append({"role": "assistant", "content": follow_answer})
        rows.setdefault(question, {"messages": messages, "task": "unit_convert"})
    chats = list(rows.values())
    rng.shuffle(chats)  # spread the two-turn chats through the file
    return chats


# ---------------------------------------------------------------- multi-turn recall
# The user states invented facts, then asks about them over several turns: every answer is
# in the conversation and nowhere else, so a model has to read the earlier turns to answer.
RECALL_SYSTEM = "Answer from the conversation. Reply with the answer only."
ASCII_NAMES = [name for name in NAMES if name.isascii()]  # plain letters for tiny tokenizers
ASCII_CITIES = [city for city in CITIES if city.isascii()]
WEEKDAYS = table("Monday Tuesday Wednesday Thursday Friday Saturday Sunday", sep=" ")
CODE_WORDS = table("BLUE RED GREEN AMBER TEAL GOLD OWL FOX CEDAR DELTA", sep=" ")
PETS = table("dog cat rabbit parrot hamster turtle", sep=" ")
PET_NAMES = table("Biscuit Pepper Mango Ziggy Olive Noodle Pickle Maple Comet Pixel", sep=" ")
FRUITS = pairs("apples: apple | pears: pear | plums: plum | oranges: orange | lemons: lemon")
# (question, answer) pairs. Derived questions are hypothetical ("If I add 2 ...") and change
# no fact, so any subset of a scenario's questions, in any order, stays consistent.
Questions = list[tuple[str, str]]


def order_facts(rng: random.Random) -> tuple[str, Questions]:
    """An order: its number, destination city and item count."""
    number, city = rng.randint(1000, 9999), rng.choice(ASCII_CITIES)
    items, more = rng.randint(2, 9), rng.randint(2, 4)
    fact = rng.choice(
        table(
            "My order number is {n} and it ships to {c}. It has {k} items. | "
            "I placed order {n} for {k} items, to be delivered in {c}."
        )
    )
    return fact.format(n=number, c=city, k=items), [
        (rng.choice(table("What is my order number? | What was the order number?")), f"{number}"),
        (rng.choice(table("Which city does it ship to? | Where is the order going?")), city),
        ("How many items are in my order?", f"{items}"),
        (f"If I add {more} more items, how many will there be?", f"{items + more}"),
    ]


def project_facts(rng: random.Random) -> tuple[str, Questions]:
    """A project: its code, deadline day and lead."""
    code = f"{rng.choice(CODE_WORDS)}-{rng.randint(1, 9)}"
    day, lead = rng.randrange(len(WEEKDAYS)), rng.choice(ASCII_NAMES)
    fact = rng.choice(
        table(
            "Remember: the project code is {p} and the deadline is {d}. {n} leads it. | "
            "{n} leads project {p}, which is due on {d}."
        )
    )
    return fact.format(p=code, d=WEEKDAYS[day], n=lead), [
        (rng.choice(table("What is the project code? | Which code does the project have?")), code),
        (rng.choice(table("When is the deadline? | Which day is the project due?")), WEEKDAYS[day]),
        ("Who leads the project?", lead),
        ("If the deadline moves one day later, which day is it?", WEEKDAYS[(day + 1) % 7]),
    ]


def pet_facts(rng: random.Random) -> tuple[str, Questions]:
    """A pet: its kind, name and age."""
    kind, name, age, later = rng.choice(PETS), rng.choice(PET_NAMES), *rng.sample(range(2, 12), 2)
    fact = rng.choice(
        table("My {a} is called {n} and is {y} years old. | I have a {y} year old {a} named {n}.")
    )
    return fact.format(a=kind, n=name, y=age), [
        (rng.choice(table("What is my pet called? | What is the name of my pet?")), name),
        (f"What kind of animal is {name}?", kind),
        (f"How old is {name}?", f"{age}"),
        (f"How old will {name} be in {later} years?", f"{age + later}"),
    ]


def meeting_facts(rng: random.Random) -> tuple[str, Questions]:
    """A meeting: who with, which room, what hour."""
    name, room = rng.choice(ASCII_NAMES), rng.randint(101, 499)
    hour, delay = rng.randint(8, 15), rng.randint(1, 3)
    fact = rng.choice(
        table(
            "I have a meeting with {n} in room {r} at {h}:00. | At {h}:00 I meet {n} in room {r}."
        )
    )
    return fact.format(n=name, r=room, h=hour), [
        (rng.choice(table("Who is the meeting with? | Who am I meeting?")), name),
        ("Which room is the meeting in?", f"{room}"),
        ("What time does the meeting start?", f"{hour}:00"),
        (f"If it starts {delay} hours later, what time will it start?", f"{hour + delay}:00"),
    ]


def basket_facts(rng: random.Random) -> tuple[str, Questions]:
    """A basket with two kinds of fruit."""
    (first, one_first), (second, _) = rng.sample(FRUITS, 2)
    count_first, count_second = rng.sample(range(2, 13), 2)
    fact = rng.choice(
        table("I have {a} {f} and {b} {s} in my basket. | My basket holds {a} {f} and {b} {s}.")
    )
    return fact.format(a=count_first, f=first, b=count_second, s=second), [
        (f"How many {first} do I have?", f"{count_first}"),
        (f"How many {second} are in the basket?", f"{count_second}"),
        ("How many pieces of fruit is that in total?", f"{count_first + count_second}"),
        (f"If I eat one {one_first}, how many {first} are left?", f"{count_first - 1}"),
    ]


def train_facts(rng: random.Random) -> tuple[str, Questions]:
    """A train: destination, platform and departure time."""
    city, platform = rng.choice(ASCII_CITIES), rng.randint(1, 12)
    hour, minute, late = rng.randint(6, 21), 5 * rng.randint(0, 6), 5 * rng.randint(1, 5)
    fact = rng.choice(
        table(
            "My train to {c} leaves from platform {p} at {t}. | "
            "I take the {t} train to {c} from platform {p}."
        )
    )
    return fact.format(c=city, p=platform, t=f"{hour}:{minute:02d}"), [
        (rng.choice(table("Where is my train going? | Which city is the train going to?")), city),
        ("Which platform does it leave from?", f"{platform}"),
        ("What time does the train leave?", f"{hour}:{minute:02d}"),
        (f"If it is {late} minutes late, when does it leave?", f"{hour}:{minute + late:02d}"),
    ]


SCENARIOS = [order_facts, project_facts, pet_facts, meeting_facts, basket_facts, train_facts]


def make_recall_rows(count: int, rng: random.Random) -> list[dict]:
    """Build `count` chats of 2-4 assistant turns (equally often); first messages all differ.

    The first user message states the facts and asks the first question; each later question
    is answered by the facts of the first turn only.
    """
    rows: dict[str, dict] = {}
    while len(rows) < count:
        index = len(rows)  # index % 6 sets turns and system message; the scenario shifts
        # by one every 6 rows, so each scenario meets every combination (balanced per 36)
        fact, questions = SCENARIOS[(index + index // 6) % len(SCENARIOS)](rng)
        rng.shuffle(questions)
        messages = [{"role": "system", "content": RECALL_SYSTEM}] if index % 2 == 0 else []
        for turn, (question, answer) in enumerate(questions[: 2 + index % 3]):
            content = f"{fact} {question}" if turn == 0 else question
            messages += [
                {"role": "user", "content": content},
                {"role": "assistant", "content": answer},
            ]
        rows.setdefault(fact + questions[0][0], {"messages": messages, "task": "multi_turn_recall"})
    chats = list(rows.values())
    rng.shuffle(chats)
    return chats


# ---------------------------------------------------------------- broken files
# Literal lines, documented line by line in README.md; tests assert on these problems.
ANT = '"instruction": "Give the antonym of the word."'
SYS = '{"messages": [{"role": "system", "content": "You convert units."}, '
BROKEN_FILES = {
    "malformed.jsonl": [
        f'{{{ANT}, "input": "hot", "output": "cold"}}',
        f'{{{ANT}, "input": "big", "output": "small"}}',
        f'{{{ANT}, "input": "fast", "output": "slow"',  # line 3: no closing brace
        f'{{{ANT}, "input": "wet", "output": "dry"}}',
        f'{{{ANT}, "input": "up", "output": "down"}}',
        '["Give the antonym of the word.", "early", "late"]',  # line 6: a list
        f'{{{ANT}, "input": "rich", "output": "poor"}}',
    ],
    "missing_fields.jsonl": [
        f'{{{ANT}, "input": "hot", "output": "cold"}}',
        f'{{{ANT}, "input": "big"}}',  # line 2: no output
        f'{{{ANT}, "input": "fast", "output": "slow"}}',
        '{"instruction": "", "input": "wet", "output": "dry"}',  # line 4: empty
        f'{{{ANT}, "input": "up", "output": "   "}}',  # line 5: whitespace only
        f'{{{ANT}, "input": "rich", "output": "poor"}}',
    ],
    "wrong_types.jsonl": [
        f'{{{ANT}, "input": "hot", "output": "cold"}}',
        f'{{{ANT}, "input": "big", "output": 42}}',  # line 2: a number
        f'{{{ANT}, "input": ["fast"], "output": "slow"}}',  # line 3: a list
        f'{{{ANT}, "input": "wet", "output": "dry"}}',
        '{"instruction": null, "input": "up", "output": "down"}',  # line 5: null
        f'{{{ANT}, "input": "rich", "output": "poor"}}',
    ],
    "bad_messages.jsonl": [
        SYS + '{"role": "user", "content": "How many grams is 2 kilograms?"}, '
        '{"role": "assistant", "content": "2000 g"}]}',
        SYS + '{"role": "user", "content": "How many meters is 3 kilometers?"}, '
        '{"role": "robot", "content": "3000 m"}]}',  # line 2: unknown role
        SYS + '{"role": "user", "content": "Convert 4 liters to milliliters."}, '
        '{"role": "assistant", "content": "4000 mL"}, '
        '{"role": "user", "content": "And 5 liters?"}]}',  # line 3: ends on a user turn
        SYS + '{"role": "user", "content": "How many minutes is 2 hours?"}, '
        '{"role": "assistant"}]}',  # line 4: no content
        SYS + '{"role": "user", "content": "Convert 7 centimeters to millimeters."}, '
        '{"role": "assistant", "content": "70 mm"}]}',
    ],
    "empty.jsonl": [],  # 0 bytes
    "blank_lines.jsonl": ["", "   ", "\t", "", "  \t  "],
}
DUPLICATES_CSV = [["instruction", "input", "output"]] + [  # line 5 repeats line 2
    ["Give the antonym of the word.", word, antonym]
    for word, antonym in pairs(
        "hot: cold | big: small | fast: slow | hot: cold | wet: dry | up: down"
    )
]


# ---------------------------------------------------------------- writing
def alpaca(instruction: str, input_text: str, output: str, task: str) -> dict:
    """Build an Alpaca row with its task name, keys in the documented order."""
    return {"instruction": instruction, "input": input_text, "output": output, "task": task}


def write_jsonl(path: Path, rows: list[dict]) -> None:
    """Write one JSON object a line, UTF-8, with LF line ends on every platform."""
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def write_csv(path: Path, rows: list[list[str]]) -> None:
    """Write rows (header first) through the csv module, quoting only where needed."""
    with path.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)


def main() -> None:
    """Build every dataset from its own random stream and write them all."""
    # support_tickets.jsonl (320) and support_tickets_sharegpt.json (40, disjoint from it)
    tickets = make_tickets(80, random.Random(SEED), exclude=set())
    ticket_rows = [alpaca(TICKET_INSTRUCTION, m, t, "ticket_topic") for m, t in tickets]
    write_jsonl(OUT_DIR / "support_tickets.jsonl", ticket_rows)
    extra = make_tickets(10, random.Random(SEED + 1), exclude={m for m, _ in tickets})
    sharegpt = [
        {"conversations": [{"from": "human", "value": m}, {"from": "gpt", "value": t}]}
        for m, t in extra
    ]
    text = json.dumps(sharegpt, ensure_ascii=False, indent=2) + "\n"
    (OUT_DIR / "support_tickets_sharegpt.json").write_bytes(text.encode("utf-8"))

    # date_rewrite.jsonl (260) and the prompt/completion CSV (40 dates not used in it)
    date_rng = random.Random(SEED + 2)
    dates = random_dates(260, date_rng, exclude=set())
    date_rows = make_date_rows(dates, date_rng)
    write_jsonl(OUT_DIR / "date_rewrite.jsonl", date_rows)
    csv_dates = random_dates(40, date_rng, exclude=set(dates))
    write_csv(
        OUT_DIR / "date_rewrite_prompt_completion.csv",
        [["prompt", "completion"]]
        + [
            [f"Date: {english_date(d, i % len(DATE_STYLES))}\nISO:", f" {d}"]
            for i, d in enumerate(csv_dates)
        ],
    )

    # city_extraction.jsonl (260)
    city_rows = make_city_rows(260, random.Random(SEED + 3))
    write_jsonl(OUT_DIR / "city_extraction.jsonl", city_rows)

    # mixed_instructions.jsonl: 100 rows of each task above, 60 antonyms, 40 capitals
    mix_rng = random.Random(SEED + 4)
    mixed = []
    for rows in (ticket_rows, date_rows, city_rows):
        picked = list(rows)
        mix_rng.shuffle(picked)
        mixed += picked[:100]
    mixed += [alpaca(ANTONYM_INSTRUCTION, word, ant, "antonym") for word, ant in ANTONYMS]
    mixed += [
        alpaca(CAPITAL_QUESTIONS[i % 3].format(country), "", capital, "capital")
        for i, (country, capital) in enumerate(CAPITALS)
    ]
    mix_rng.shuffle(mixed)
    write_jsonl(OUT_DIR / "mixed_instructions.jsonl", mixed)

    # unit_chat.jsonl (220 chats, 30 of them two-turn)
    write_jsonl(OUT_DIR / "unit_chat.jsonl", make_unit_rows(220, 30, random.Random(SEED + 5)))

    # multi_turn_chat.jsonl (300 chats: 100 each with 2, 3 and 4 assistant turns)
    recall_rows = make_recall_rows(300, random.Random(SEED + 6))
    write_jsonl(OUT_DIR / "multi_turn_chat.jsonl", recall_rows)

    # broken/: deliberately invalid files for the loader's tests
    broken = OUT_DIR / "broken"
    broken.mkdir(exist_ok=True)
    for name, lines in BROKEN_FILES.items():
        (broken / name).write_bytes("".join(line + "\n" for line in lines).encode("utf-8"))
    write_csv(broken / "duplicates.csv", DUPLICATES_CSV)


if __name__ == "__main__":
    main()
