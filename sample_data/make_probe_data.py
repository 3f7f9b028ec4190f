"""Generate `probes/forgetting_probe.jsonl`: held-out rows for measuring forgetting, stdlib only.

Run `python sample_data/make_probe_data.py` from anywhere; the file comes out byte for byte the
same on every run. It holds `PER_TASK` rows of each of five tasks, asked exactly as the sample
data asks them (the instructions come from make_sample_data.py), and none of them is a row of
any training file:

- `ticket_topic`, `date_iso`, `extract_city`: new messages, dates and sentences drawn from the
  same invented building blocks, excluding every message, date and sentence already used in
  `support_tickets.jsonl`, the ShareGPT and preference files, `date_rewrite.jsonl`, its CSV
  sibling and `city_extraction.jsonl`.
- `antonym`, `capital`: word pairs and countries that the sample data never uses (checked
  below), so a probe asks about facts no training file states.

Why a folder of its own: the tests' tiny tokenizer is trained on `sample_data/*.jsonl`, and a new
file there would change its vocabulary under every other test. Why 60 rows: one answer then
moves a task's score by 1.7 points (at most 2 points is the goal); scores are shares of rows.
"""

from __future__ import annotations

import json
import random
from datetime import date as Date

from make_sample_data import (
    ANTONYM_INSTRUCTION,
    ANTONYMS,
    CAPITAL_QUESTIONS,
    CAPITALS,
    CITIES,
    CITY_FRAMES,
    CITY_INSTRUCTION,
    NAMES,
    OUT_DIR,
    SEED,
    TICKET_INSTRUCTION,
    TOPICS,
    alpaca,
    make_date_rows,
    pairs,
    random_dates,
    ticket_pool,
)

PROBE_SEED = SEED + 200  # its own stream: the other datasets are unaffected
PER_TASK = 60
PROBE_FILE = OUT_DIR / "probes" / "forgetting_probe.jsonl"

# Unambiguous pairs, none of whose words appears in make_sample_data.ANTONYMS.
NEW_ANTONYMS = pairs(
    "accept: reject | add: subtract | agree: disagree | alive: dead | attack: defend | "
    "bitter: sweet | blunt: sharp | top: bottom | common: rare | complex: simple | "
    "day: night | female: male | first: last | floor: ceiling | forward: backward | "
    "freeze: melt | good: bad | guilty: innocent | hello: goodbye | here: there | "
    "hero: villain | horizontal: vertical | husband: wife | junior: senior | king: queen | "
    "left: right | less: more | mother: father | natural: artificial | near: far | "
    "odd: even | on: off | optimist: pessimist | past: future | war: peace | plus: minus | "
    "positive: negative | present: absent | private: public | profit: loss | raw: cooked | "
    "real: fake | same: different | sit: stand | student: teacher | sunrise: sunset | "
    "temporary: permanent | winner: loser | yes: no | dawn: dusk | majority: minority | "
    "internal: external | float: sink | attract: repel | ascend: descend | "
    "employer: employee | boy: girl | brother: sister | uncle: aunt | multiply: divide | "
    "urban: rural | summer: winter | input: output | legal: illegal | possible: impossible | "
    "honest: dishonest | send: receive | predator: prey | comedy: tragedy"
)
# Countries the sample data does not ask about, with one unambiguous capital each; none whose
# capital shares the country's name (an answer that repeats the question would score).
NEW_CAPITALS = pairs(
    "Mexico: Mexico City | Brazil: Brasília | Russia: Moscow | the United Kingdom: London | "
    "the Netherlands: Amsterdam | Switzerland: Bern | the Czech Republic: Prague | "
    "Slovakia: Bratislava | "
    "Croatia: Zagreb | Serbia: Belgrade | Bulgaria: Sofia | Slovenia: Ljubljana | "
    "Estonia: Tallinn | Latvia: Riga | Lithuania: Vilnius | Belarus: Minsk | "
    "Armenia: Yerevan | Azerbaijan: Baku | Uzbekistan: Tashkent | "
    "Iran: Tehran | Iraq: Baghdad | Syria: Damascus | Lebanon: Beirut | Jordan: Amman | "
    "Saudi Arabia: Riyadh | Qatar: Doha | Oman: Muscat | Afghanistan: Kabul | "
    "Pakistan: Islamabad | Bangladesh: Dhaka | Malaysia: Kuala Lumpur | Indonesia: Jakarta | "
    "the Philippines: Manila | Mongolia: Ulaanbaatar | North Korea: Pyongyang | "
    "Cambodia: Phnom Penh | Laos: Vientiane | Tunisia: Tunis | Algeria: Algiers | "
    "Libya: Tripoli | Sudan: Khartoum | Senegal: Dakar | Mali: Bamako | Uganda: Kampala | "
    "Rwanda: Kigali | Zimbabwe: Harare | Zambia: Lusaka | Angola: Luanda | "
    "Mozambique: Maputo | Madagascar: Antananarivo | Venezuela: Caracas | Ecuador: Quito | "
    "Paraguay: Asunción | Uruguay: Montevideo | Jamaica: Kingston | Costa Rica: San José | "
    "Honduras: Tegucigalpa | Nicaragua: Managua | Albania: Tirana | Bahrain: Manama | "
    "Cyprus: Nicosia | Malta: Valletta | Somalia: Mogadishu | Liberia: Monrovia | "
    "Sierra Leone: Freetown | Botswana: Gaborone | Namibia: Windhoek | Fiji: Suva | "
    "Bhutan: Thimphu"
)


def read_jsonl(name: str) -> list[dict]:
    """The rows of a sample data file (written by make_sample_data.py)."""
    lines = (OUT_DIR / name).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def used_ticket_messages() -> set[str]:
    """Every customer message of the ticket, ShareGPT and preference files."""
    used = {r["input"] for r in read_jsonl("support_tickets.jsonl")}
    used |= {r["input"] for r in read_jsonl("preferences.jsonl")}
    sharegpt = json.loads((OUT_DIR / "support_tickets_sharegpt.json").read_text(encoding="utf-8"))
    used |= {c["conversations"][0]["value"] for c in sharegpt}
    return used


def used_dates() -> set[Date]:
    """Every date of `date_rewrite.jsonl` and of the prompt/completion CSV."""
    used = {Date.fromisoformat(r["output"]) for r in read_jsonl("date_rewrite.jsonl")}
    csv_lines = (OUT_DIR / "date_rewrite_prompt_completion.csv").read_text(encoding="utf-8")
    for line in csv_lines.splitlines():
        if line.startswith(" 1") or line.startswith(" 2"):  # the completion: " 2024-03-05"
            used.add(Date.fromisoformat(line.strip()))
    return used


def ticket_rows(rng: random.Random, exclude: set[str]) -> list[dict]:
    """PER_TASK tickets, the same number of each topic, none of their messages in `exclude`,
    shuffled (so that any first rows of them mix the topics)."""
    rows = []
    for topic in TOPICS:
        fresh = [m for m in ticket_pool(topic, rng) if m not in exclude]
        rows += [
            alpaca(TICKET_INSTRUCTION, m, topic, "ticket_topic")
            for m in fresh[: PER_TASK // len(TOPICS)]
        ]
    rng.shuffle(rows)
    return rows


def city_rows(rng: random.Random, exclude: set[str]) -> list[dict]:
    """PER_TASK sentences naming one person and one city, none of them in `exclude`."""
    rows: dict[str, dict] = {}
    while len(rows) < PER_TASK:
        name, city = rng.choice(NAMES), rng.choice(CITIES)
        text = rng.choice(CITY_FRAMES).format(n=name, c=city)
        if text in exclude:
            continue
        answer = json.dumps({"name": name, "city": city}, ensure_ascii=False)
        rows.setdefault(text, alpaca(CITY_INSTRUCTION, text, answer, "extract_city"))
    return list(rows.values())


def check_new_facts() -> None:
    """Refuse word pairs or countries that the sample data already uses (or that repeat)."""
    old_words = {word for pair in ANTONYMS for word in pair}
    new_words = [word for pair in NEW_ANTONYMS for word in pair]
    reused = sorted(set(new_words) & old_words)
    repeated = sorted({w for w in new_words if new_words.count(w) > 1})
    old_countries = {country for country, _ in CAPITALS}
    countries = [country for country, _ in NEW_CAPITALS]
    problems = [
        f"antonym words already in the sample data: {reused}" if reused else "",
        f"antonym words used twice: {repeated}" if repeated else "",
        f"countries already asked: {sorted(set(countries) & old_countries)}"
        if set(countries) & old_countries
        else "",
        "a country is listed twice" if len(set(countries)) != len(countries) else "",
        f"fewer than {PER_TASK} antonym pairs or countries"
        if min(len(NEW_ANTONYMS), len(NEW_CAPITALS)) < PER_TASK
        else "",
    ]
    problems = [p for p in problems if p]
    if problems:
        raise SystemExit("make_probe_data.py: " + "; ".join(problems))


def make_probe_rows(rng: random.Random) -> list[dict]:
    """PER_TASK rows of each task, grouped by task (tickets, dates, cities, antonyms, capitals)."""
    check_new_facts()
    rows = ticket_rows(rng, used_ticket_messages())
    rows += make_date_rows(random_dates(PER_TASK, rng, exclude=used_dates()), rng)
    rows += city_rows(rng, {r["input"] for r in read_jsonl("city_extraction.jsonl")})
    antonyms = rng.sample(NEW_ANTONYMS, PER_TASK)
    rows += [alpaca(ANTONYM_INSTRUCTION, word, other, "antonym") for word, other in antonyms]
    countries = rng.sample(NEW_CAPITALS, PER_TASK)
    rows += [
        alpaca(
            CAPITAL_QUESTIONS[i % len(CAPITAL_QUESTIONS)].format(country), "", capital, "capital"
        )
        for i, (country, capital) in enumerate(countries)
    ]
    return rows


def main() -> None:
    rows = make_probe_rows(random.Random(PROBE_SEED))
    PROBE_FILE.parent.mkdir(exist_ok=True)
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    PROBE_FILE.write_bytes(text.encode("utf-8"))


if __name__ == "__main__":
    main()
