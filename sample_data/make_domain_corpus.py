"""Generate the continued pre-training corpus: the manual of an invented product, and plain text.

Run `python sample_data/make_domain_corpus.py` from anywhere: it writes `sample_data/domain/`
byte for byte the same on every run (stdlib only, seed `SEED`). Everything is invented here:
the company, the product (the Fernlight greenhouse climate controller), its error codes,
settings, parts and firmware history, so a pretrained model cannot know any of it, and the
general text (short descriptions of everyday things) is written from small word lists too.

Every fact is stated in several documents and phrasings (a reference entry, a troubleshooting
page, an FAQ answer, technicians' field notes): the held-out documents are restatements of
facts whose reference entries stay in the training documents, which is what makes held-out
perplexity fall when the facts are learned, not only the style.

Files (JSON Lines, one document a row, `text` format):
- `manual_train.jsonl`: the training documents (`text`, `kind`, `task`).
- `manual_held_out.jsonl`: held-out documents of the same manual (never trained on).
- `general_text.jsonl`: held-out general English, for the forgetting side.
- `domain_qa.jsonl`, `domain_qa_held_out.jsonl`: question/answer rows (Alpaca) about the
  manual's facts, one question per fact; the held-out questions ask about facts that no
  training question asks about (every one of them is stated in the training documents).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

SEED = 2718
OUT_DIR = Path(__file__).resolve().parent / "domain"
COMPANY, PRODUCT = "Corvane Systems", "Fernlight"
HELD_OUT_SHARE = 0.1  # of the restating documents (never of the reference entries)
FIELD_NOTES = 440  # sized so that the training documents pass 50,000 tokens (SmolLM2)


def table(text: str) -> list[str]:
    return [item.strip() for item in text.split("|") if item.strip()]


# ---------------------------------------------------------------- the product's facts
MODELS = [  # name, zones, sensor ports, watts, kilograms, launch year
    ("FL-20", 2, 6, 9, 1.4, 2019),
    ("FL-40", 4, 12, 14, 2.1, 2020),
    ("FL-40 Pro", 8, 24, 22, 3.3, 2022),
]
SENSORS = table(
    "root-zone probe | CO2 sensor | water-level float | rain sensor | leaf-wetness clip | "
    "door contact | light sensor | humidity sensor"
)
ACTUATORS = table(
    "vent motor | mist pump | shade screen drive | heating loop valve | grow light bar | "
    "circulation fan"
)
SENSOR_PROBLEMS = [  # (what happened, what to do)
    ("is disconnected", "reseat its cable in the port marked on the wiring card"),
    ("reads out of range", "clean the sensor head and run the calibration wizard"),
    ("lost its calibration", "run the calibration wizard from the Service menu"),
]
ACTUATOR_PROBLEMS = [
    ("is disconnected", "reseat its cable in the port marked on the wiring card"),
    ("has stalled", "clear anything blocking it and power-cycle the controller"),
    ("is overheating", "let it cool for twenty minutes and check the airflow around it"),
    ("draws too much current", "unplug it and have the wiring checked by an installer"),
]
# steady green means all is well and blinking green is starting up; faults show these
LIGHTS = table(
    "steady amber | fast blinking amber | steady red | double blinking red | "
    "alternating red and amber"
)
SETTINGS = [  # name, menu, unit, purpose
    ("Dew Guard", "Climate", "°C", "keeps the leaves above the dew point by this margin"),
    ("Night Drift", "Climate", "°C", "lets the night temperature fall below the day target"),
    ("Vent Bias", "Ventilation", "%", "opens the roof vents earlier than the thermostat asks"),
    ("Mist Pulse", "Irrigation", "s", "sets how long each misting burst lasts"),
    ("Sunrise Ramp", "Lighting", "min", "brings the grow lights up gradually at dawn"),
    ("Root Warmth", "Heating", "°C", "sets the target temperature of the root zone"),
    ("Gust Lock", "Ventilation", "km/h", "closes the vents when the wind is stronger"),
    ("Shade Threshold", "Shading", "klx", "draws the shade screen above this light level"),
    ("CO2 Ceiling", "Climate", "ppm", "stops CO2 dosing above this concentration"),
    ("Frost Floor", "Heating", "°C", "starts emergency heating below this air temperature"),
    ("Drip Cadence", "Irrigation", "min", "sets the time between drip irrigation cycles"),
    ("Fan Stagger", "Ventilation", "s", "delays each circulation fan so they start in turn"),
    ("Lamp Dusk", "Lighting", "min", "dims the grow lights slowly in the evening"),
    ("Humidity Band", "Climate", "%", "sets how far humidity may stray before misting"),
    ("Purge Interval", "Ventilation", "h", "opens every vent briefly to replace stale air"),
    ("Storm Hold", "Shading", "min", "keeps the screens closed after a rain alarm"),
    ("Heat Soak", "Heating", "min", "runs the heating loop before sunrise"),
    ("Canopy Offset", "Climate", "°C", "corrects the canopy sensor against a hand reading"),
    ("Quiet Hours", "System", "h", "silences the buzzer for this many hours each night"),
    ("Pump Rest", "Irrigation", "s", "pauses the mist pump between bursts to protect it"),
    ("Light Budget", "Lighting", "h", "caps the grow lights' hours each day"),
    ("Door Grace", "System", "s", "waits this long before a door-open alarm sounds"),
    ("Alarm Echo", "System", "min", "repeats an unacknowledged alarm after this time"),
    ("Soil Wake", "Irrigation", "%", "waters when soil moisture falls below this level"),
]
PARTS = table(
    "replacement root-zone probe | vent motor | mist pump head | CO2 sensor cartridge | "
    "shade screen belt | heating loop valve actuator | grow light driver | water-level float | "
    "circulation fan | door contact pair | rain sensor plate | leaf-wetness clip | "
    "wall bracket | spare fuse set | wiring card | display bezel | weatherproof gland kit | "
    "backup battery"
)
MAINTENANCE = table(
    "clean the sensor heads | check the vent motor gears | descale the mist nozzles | "
    "replace the CO2 sensor cartridge | test the backup battery | tighten the terminal screws | "
    "inspect the shade screen belt | flush the drip lines | wipe the display | "
    "run the full self-test"
)
MONTHS = table(
    "January | February | March | April | May | June | July | August | September | October | "
    "November | December"
)
GROWERS = table(
    "Ilse | Tomasz | Maren | Okwudili | Priya | Ruben | Saoirse | Henrik | Amara | Luca | Yuki | "
    "Farida | Teodor | Nell | Bastian | Wren"
)
TOWNS = table(  # invented towns
    "Lindqvist Harbour | Olmere | Brackenfold | Saltwick Reach | Tamsley | Quarrow | "
    "Eddersby | Fennick Cross | Marlowe Dene | Hallow Tarn"
)
CROPS = table(
    "tomatoes | cucumbers | basil | peppers | lettuce | strawberries | orchids | chillies"
)


def make_facts(rng: random.Random) -> dict:
    """Error codes, settings, parts, firmware and maintenance intervals, drawn once."""
    faults = [(c, p) for c in SENSORS for p in SENSOR_PROBLEMS]
    faults += [(c, p) for c in ACTUATORS for p in ACTUATOR_PROBLEMS]
    numbers = rng.sample(range(100, 1000), 40)
    codes = []
    for number, (component, (problem, fix)) in zip(numbers, rng.sample(faults, 40)):
        codes.append(
            {
                "code": f"F-{number}",
                "component": component,
                "problem": problem,
                "fix": fix,
                "light": rng.choice(LIGHTS),
                "severity": rng.choice(["a warning", "a warning", "a stop fault"]),
            }
        )
    settings = []
    for name, menu, unit, purpose in SETTINGS:
        low = rng.randint(0, 5)
        high = low + rng.choice([10, 15, 20, 30, 40, 60])
        default = rng.randint(low + 1, high - 1)
        settings.append(
            dict(name=name, menu=menu, unit=unit, purpose=purpose, low=low, high=high)
            | {"default": default}
        )
    part_numbers = rng.sample(range(1000, 9999), len(PARTS))
    parts = [
        {"part": part, "number": f"CV-{n}{rng.choice('ABCDEHK')}", "price": rng.randint(9, 240)}
        for part, n in zip(PARTS, part_numbers)
    ]
    firmware, year, month = [], 2019, 2
    for major, minor in [(1, 0), (1, 1), (1, 2), (2, 0), (2, 1), (2, 2), (2, 3), (3, 0), (3, 1)]:
        month += rng.randint(3, 6)
        year, month = year + (month - 1) // 12, (month - 1) % 12 + 1
        added = rng.choice(settings)["name"]
        fixed = rng.choice(codes)["code"]
        firmware.append(
            {
                "version": f"{major}.{minor}",
                "date": f"{rng.randint(1, 28)} {MONTHS[month - 1]} {year}",
                "codename": rng.choice(table("Alder|Birch|Cedar|Hazel|Juniper|Larch|Rowan|Yew")),
                "added": added,
                "fixed": fixed,
            }
        )
    maintenance = [
        {"task": task, "weeks": rng.choice([2, 4, 6, 8, 12, 26, 52])} for task in MAINTENANCE
    ]
    return {
        "codes": codes,
        "settings": settings,
        "parts": parts,
        "firmware": firmware,
        "maintenance": maintenance,
    }


# ---------------------------------------------------------------- the manual's documents
def error_reference(c: dict) -> str:
    return (
        f"Error {c['code']}\n"
        f"Meaning: the {c['component']} {c['problem']}.\n"
        f"Status light: {c['light']}.\n"
        f"Severity: {c['severity']}"
        + (
            "; the controller keeps running."
            if c["severity"] == "a warning"
            else "; the controller stops the affected zone."
        )
        + f"\nWhat to do: {c['fix']}. If {c['code']} comes back within a day, call "
        f"{COMPANY} support with the code and the serial number."
    )


def error_troubleshooting(c: dict, rng: random.Random) -> str:
    opening = rng.choice(
        [
            f"When the {PRODUCT} display shows {c['code']}, the {c['component']} {c['problem']}.",
            f"Code {c['code']} on a {PRODUCT} controller means that the {c['component']} "
            f"{c['problem']}.",
            f"Troubleshooting {c['code']}: the controller has found that the "
            f"{c['component']} {c['problem']}.",
        ]
    )
    light = f"The status light turns {c['light']} while the fault lasts."
    steps = rng.choice(
        [
            f"First, {c['fix']}. Then press OK for three seconds to clear the code.",
            f"To fix it, {c['fix']}. The code clears by itself once the fault is gone.",
            f"The usual remedy: {c['fix']}. Afterwards check the event log under Service.",
        ]
    )
    severity = (
        f"{c['code']} is {c['severity']}, so the other zones keep their climate."
        if c["severity"] == "a warning"
        else f"{c['code']} is {c['severity']}: the zone is held in a safe state until cleared."
    )
    return " ".join([opening, light, steps, severity])


def error_faq(c: dict, rng: random.Random) -> str:
    question = rng.choice(
        [
            f"Q: My {PRODUCT} shows {c['code']}. What does it mean?",
            f"Q: What is error {c['code']}?",
            f"Q: The light is {c['light']} and the screen says {c['code']}. Is it serious?",
        ]
    )
    return (
        f"{question}\nA: {c['code']} means the {c['component']} {c['problem']}. It is "
        f"{c['severity']}. {c['fix'][0].upper() + c['fix'][1:]}."
    )


def setting_reference(s: dict) -> str:
    return (
        f"Setting: {s['name']}\n"
        f"Menu: Settings > {s['menu']} > {s['name']}\n"
        f"What it does: {s['purpose']}.\n"
        f"Range: {s['low']} to {s['high']} {s['unit']}. Default: {s['default']} {s['unit']}."
    )


def setting_howto(s: dict, rng: random.Random) -> str:
    value = rng.randint(s["low"], s["high"])
    crop = rng.choice(CROPS)
    return (
        f"How to change {s['name']}. On the {PRODUCT} controller, open Settings, then "
        f"{s['menu']}, then {s['name']}. The setting {s['purpose']}. It accepts values from "
        f"{s['low']} to {s['high']} {s['unit']} and is {s['default']} {s['unit']} when the "
        f"controller leaves the factory. Turn the dial to the new value, for example "
        f"{value} {s['unit']} for {crop}, and press OK. The change takes effect at once; "
        f"Settings > System > Factory reset puts {s['name']} back to {s['default']} {s['unit']}."
    )


def firmware_notes(f: dict) -> str:
    return (
        f"{PRODUCT} firmware {f['version']} (code name {f['codename']}) was released on "
        f"{f['date']}. It added the {f['added']} setting and fixed a fault that raised "
        f"{f['fixed']} by mistake after a power cut. Install it from Settings > System > "
        "Update, or from a USB stick in the service port."
    )


def part_entry(p: dict) -> str:
    return (
        f"Part {p['number']}: {p['part']} for every {PRODUCT} model. List price "
        f"{p['price']} euros. Order it from {COMPANY} quoting {p['number']}."
    )


def maintenance_entry(m: dict) -> str:
    every = f"every {m['weeks']} weeks" if m["weeks"] < 52 else "once a year"
    return (
        f"Maintenance: {m['task']} {every}. The {PRODUCT} reminds you on its home screen when "
        f"the task is due, and the Service menu records when it was last done."
    )


def model_sheet(name: str, zones: int, ports: int, watts: int, kg: float, year: int) -> str:
    return (
        f"{PRODUCT} {name}. Launched in {year}, the {name} controls {zones} climate zones "
        f"through {ports} sensor ports. It draws {watts} W in normal running and weighs "
        f"{kg} kg. Like every {PRODUCT}, it is made by {COMPANY} in Lindqvist Harbour and "
        "mounts on the wall bracket with four screws."
    )


def error_index(codes: list[dict], page: int) -> str:
    lines = [f"{c['code']}: the {c['component']} {c['problem']} ({c['light']})." for c in codes]
    return f"Error code index, page {page}.\n" + "\n".join(lines)


def error_case(c: dict, rng: random.Random) -> str:
    """A longer story around one code: what the grower saw, what it meant, what fixed it."""
    grower, town, crop = rng.choice(GROWERS), rng.choice(TOWNS), rng.choice(CROPS)
    return (
        f"Case study: {c['code']} in {town}. {grower} grows {crop} and runs a {PRODUCT} "
        f"{rng.choice(MODELS)[0]}. One morning the status light was {c['light']} and the "
        f"screen showed {c['code']}. In the {PRODUCT} manual, {c['code']} means that the "
        f"{c['component']} {c['problem']}. Because {c['code']} is {c['severity']}, "
        + (
            "the other zones carried on as normal. "
            if c["severity"] == "a warning"
            else "the zone was held in its safe state. "
        )
        + f"{grower} followed the manual: {c['fix']}. The code cleared and the light went "
        "back to steady green."
    )


def setting_tip(s: dict, rng: random.Random) -> str:
    crop = rng.choice(CROPS)
    lower = rng.random() < 0.5
    return (
        f"Tip for {crop}: {s['name']} (Settings > {s['menu']}) {s['purpose']}. Growers of "
        f"{crop} often {'lower' if lower else 'raise'} it from the factory value of "
        f"{s['default']} {s['unit']}, but never {'below' if lower else 'above'} "
        f"{s['low'] if lower else s['high']} {s['unit']}, the end of its range."
    )


def menu_overview(menu: str, settings: list[dict]) -> str:
    lines = [
        f"{s['name']}: {s['purpose']}; {s['low']} to {s['high']} {s['unit']}, "
        f"default {s['default']} {s['unit']}."
        for s in settings
    ]
    return f"The {menu} menu of the {PRODUCT} holds {len(settings)} settings.\n" + "\n".join(lines)


def parts_catalogue(parts: list[dict], page: int) -> str:
    lines = [f"{p['number']}  {p['part']}  {p['price']} euros" for p in parts]
    return f"{COMPANY} spare parts for the {PRODUCT}, page {page}.\n" + "\n".join(lines)


def firmware_history(firmware: list[dict]) -> str:
    lines = [f"{f['version']} ({f['codename']}), {f['date']}" for f in firmware]
    return f"{PRODUCT} firmware history, oldest first.\n" + "\n".join(lines)


CHAPTERS = [
    f"About this manual. The {PRODUCT} is a greenhouse climate controller made by {COMPANY}. "
    "It reads temperature, humidity, light, CO2 and soil sensors, and drives vents, fans, "
    "misting, heating, shading and grow lights to keep each zone at its targets. This manual "
    "covers the FL-20, the FL-40 and the FL-40 Pro.",
    f"Safety. Switch the {PRODUCT} off at the isolator before opening its case. Only a "
    "qualified installer may wire the mains terminals. Keep the case closed while the "
    "greenhouse is being sprayed: the gland kit keeps water out only when every gland is "
    "tightened.",
    f"Installation. Mount the {PRODUCT} on a wall away from direct sun, at eye height, on the "
    "wall bracket. Lead the sensor cables through the weatherproof glands and connect each to "
    "the port printed on the wiring card. Power it up: the status light blinks green while it "
    "starts and turns steady green when every sensor answers.",
    f"Zones. Each zone of a {PRODUCT} has its own targets for day and night, its own sensors "
    "and its own outputs. The FL-20 manages two zones, the FL-40 four and the FL-40 Pro eight. "
    "Name the zones under Settings > System > Zones so that alarms say where the fault is.",
    f"The home screen. The {PRODUCT} home screen shows each zone's temperature and humidity, "
    "the outside weather, and any active error code. A code stays on the screen until the "
    "fault is gone or until it is acknowledged with OK.",
    f"Network. The {PRODUCT} joins a wired network through its service port adapter. Growers "
    f"then see the zones in the {COMPANY} app and receive alarms by text message. Without a "
    "network the controller runs exactly the same; only remote alarms are lost.",
    f"Warranty. {COMPANY} repairs or replaces a faulty {PRODUCT} for three years from the date "
    "of purchase. The warranty does not cover sensors damaged by spraying chemicals onto them, "
    "or a case opened by anyone but a qualified installer.",
    f"Support. {COMPANY} support answers on working days from eight to six. Have the serial "
    "number ready: it is printed under the display bezel and shown under Settings > System > "
    "About, together with the firmware version.",
]


def field_note(facts: dict, rng: random.Random) -> str:
    """A technician's visit log: one grower, one code or setting, what was done."""
    grower, town, crop = rng.choice(GROWERS), rng.choice(TOWNS), rng.choice(CROPS)
    model = rng.choice(MODELS)[0]
    day = f"{rng.randint(1, 28)} {rng.choice(MONTHS)}"
    if rng.random() < 0.6:
        c = rng.choice(facts["codes"])
        body = rng.choice(
            [
                f"The {model} showed {c['code']} and the light was {c['light']}: the "
                f"{c['component']} {c['problem']}. We had to {c['fix']}.",
                f"{grower} called about {c['code']}. On site the {c['component']} "
                f"{c['problem']}, as the code says. Fix: {c['fix']}.",
                f"Alarm {c['code']} ({c['severity']}) on zone {rng.randint(1, 4)}. The "
                f"{c['component']} {c['problem']}; to clear it we had to {c['fix']}.",
            ]
        )
    else:
        s = rng.choice(facts["settings"])
        value = rng.randint(s["low"], s["high"])
        body = rng.choice(
            [
                f"Changed {s['name']} from the default {s['default']} {s['unit']} to {value} "
                f"{s['unit']} (Settings > {s['menu']}); it {s['purpose']}.",
                f"{grower} asked what {s['name']} does: it {s['purpose']}. Left it at "
                f"{s['default']} {s['unit']}, the factory value; the range is {s['low']} "
                f"to {s['high']} {s['unit']}.",
            ]
        )
    part = rng.choice(facts["parts"])
    extra = rng.choice(
        [
            f" Left a spare {part['part']} ({part['number']}).",
            f" Recommended ordering the {part['part']}, part {part['number']}.",
            "",
        ]
    )
    return f"Field note, {day}, {town}. {grower} grows {crop} on a {PRODUCT} {model}. {body}{extra}"


def manual_documents(facts: dict, rng: random.Random) -> tuple[list[dict], list[dict]]:
    """(training documents, held-out documents). Reference entries always train; a share of
    the restating documents (troubleshooting, FAQ, how-to, field notes) is held out."""
    reference = [("chapter", text) for text in CHAPTERS]
    reference += [("model", model_sheet(*m)) for m in MODELS]
    reference += [("error_reference", error_reference(c)) for c in facts["codes"]]
    reference += [("setting_reference", setting_reference(s)) for s in facts["settings"]]
    reference += [("firmware", firmware_notes(f)) for f in facts["firmware"]]
    reference += [("part", part_entry(p)) for p in facts["parts"]]
    reference += [("maintenance", maintenance_entry(m)) for m in facts["maintenance"]]
    codes, settings, parts = facts["codes"], facts["settings"], facts["parts"]
    reference += [
        ("error_index", error_index(codes[i : i + 10], i // 10 + 1)) for i in range(0, 40, 10)
    ]
    for menu in dict.fromkeys(s["menu"] for s in settings):
        reference.append(("menu", menu_overview(menu, [s for s in settings if s["menu"] == menu])))
    reference += [("parts", parts_catalogue(parts[i : i + 9], i // 9 + 1)) for i in (0, 9)]
    reference.append(("firmware_history", firmware_history(facts["firmware"])))
    restating = [("troubleshooting", error_troubleshooting(c, rng)) for c in facts["codes"]]
    restating += [("faq", error_faq(c, rng)) for c in facts["codes"]]
    restating += [("howto", setting_howto(s, rng)) for s in facts["settings"]]
    restating += [("case_study", error_case(c, rng)) for c in facts["codes"]]
    restating += [("tip", setting_tip(s, rng)) for s in facts["settings"] for _ in range(2)]
    restating += [("field_note", field_note(facts, rng)) for _ in range(FIELD_NOTES)]
    restating = list(dict.fromkeys(restating))  # a repeated field note counts once
    held = set(rng.sample(range(len(restating)), round(HELD_OUT_SHARE * len(restating))))
    train = reference + [d for i, d in enumerate(restating) if i not in held]
    rng.shuffle(train)
    held_out = [d for i, d in enumerate(restating) if i in held]
    row = lambda kind, text: {"text": text, "kind": kind, "task": "fernlight_manual"}  # noqa: E731
    return [row(*d) for d in train], [row(*d) for d in held_out]


# ---------------------------------------------------------------- questions about the facts
def qa_rows(facts: dict, rng: random.Random) -> tuple[list[dict], list[dict]]:
    """(training, held-out) questions, one per fact, with short answers; a third of the facts,
    drawn at random, are asked only in the held-out rows."""
    asked = []
    for c in facts["codes"]:
        asked.append(
            (
                f"Which part has failed when a {PRODUCT} controller shows error {c['code']}?",
                f"The {c['component']}.",
            )
        )
    for s in facts["settings"]:
        asked.append(
            (
                f"What is the factory default of the {s['name']} setting on the {PRODUCT}?",
                f"{s['default']} {s['unit']}",
            )
        )
    for p in facts["parts"]:
        asked.append(
            (f"What is the {COMPANY} part number of the {PRODUCT} {p['part']}?", p["number"])
        )
    for f in facts["firmware"]:
        asked.append((f"When was {PRODUCT} firmware {f['version']} released?", f["date"]))
    held = set(rng.sample(range(len(asked)), len(asked) // 3))
    rows = [
        {"instruction": question, "input": "", "output": answer, "task": "fernlight_qa"}
        for question, answer in asked
    ]
    return [r for i, r in enumerate(rows) if i not in held], [
        r for i, r in enumerate(rows) if i in held
    ]


# ---------------------------------------------------------------- general English text
THINGS = [  # thing, where it is found, what it is for, what it is made of, a habit of people
    (
        "kettle",
        "in most kitchens",
        "boiling water for tea",
        "steel or plastic",
        "fill it only as far as they need",
    ),
    (
        "umbrella",
        "by the front door",
        "keeping the rain off",
        "cloth stretched over thin ribs",
        "forget it on the bus",
    ),
    (
        "bicycle",
        "in sheds and on city streets",
        "getting around without a car",
        "a metal frame with two wheels",
        "ride it to work when the weather is fine",
    ),
    (
        "library",
        "in almost every town",
        "borrowing books for free",
        "shelves, desks and quiet",
        "go there to study or to read the newspapers",
    ),
    (
        "loaf of bread",
        "at the bakery",
        "sandwiches and toast",
        "flour, water, yeast and salt",
        "buy it fresh in the morning",
    ),
    (
        "window",
        "in every room with a view",
        "letting light and air in",
        "glass in a frame",
        "open it on warm evenings",
    ),
    (
        "teapot",
        "on kitchen tables",
        "brewing tea for several people",
        "china or clay",
        "warm it with hot water first",
    ),
    (
        "post office",
        "on the high street",
        "sending letters and parcels",
        "counters, scales and stamps",
        "queue there before the holidays",
    ),
    (
        "bridge",
        "over rivers and railways",
        "crossing from one side to the other",
        "stone, steel or concrete",
        "stop in the middle to look at the water",
    ),
    (
        "market",
        "in the town square",
        "buying fruit, vegetables and cheese",
        "stalls under striped awnings",
        "go early for the best choice",
    ),
    (
        "clock",
        "on walls and church towers",
        "telling the time",
        "hands, a face and gears",
        "set it forward in spring",
    ),
    (
        "river",
        "running through valleys and cities",
        "boats, fishing and walks along the bank",
        "water that flows towards the sea",
        "feed the ducks from its banks",
    ),
    (
        "chair",
        "around every table",
        "sitting down",
        "wood, metal or plastic",
        "tilt back on two legs although they are told not to",
    ),
    (
        "train",
        "at the station",
        "travelling between towns",
        "carriages pulled by an engine",
        "read or sleep on long journeys",
    ),
    (
        "lamp",
        "on desks and bedside tables",
        "light in the evening",
        "a bulb, a shade and a base",
        "switch it on when the days grow short",
    ),
    (
        "garden bench",
        "in parks",
        "resting on a walk",
        "wooden slats on an iron frame",
        "sit there to eat their lunch",
    ),
    (
        "pair of boots",
        "in the hallway",
        "walking through mud and snow",
        "leather and rubber",
        "clean them before putting them away",
    ),
    (
        "notebook",
        "in bags and on desks",
        "writing things down",
        "paper bound between covers",
        "keep lists of things to do in it",
    ),
    (
        "bus stop",
        "along busy roads",
        "waiting for the bus",
        "a shelter, a sign and a timetable",
        "check the timetable and then wait anyway",
    ),
    (
        "sandwich",
        "in lunch boxes",
        "a quick meal",
        "bread with a filling",
        "cut it into triangles for children",
    ),
    (
        "mirror",
        "in bathrooms and hallways",
        "seeing yourself",
        "glass with a silver backing",
        "check their hair before going out",
    ),
    (
        "bakery",
        "on street corners",
        "bread, cakes and pastries",
        "ovens, flour and early hours",
        "follow the smell of baking",
    ),
    (
        "washing machine",
        "in kitchens and utility rooms",
        "cleaning clothes",
        "a drum, a motor and a door",
        "sort the whites from the colours",
    ),
    (
        "football",
        "in parks and playgrounds",
        "playing games with friends",
        "leather or plastic",
        "kick it against a wall for hours",
    ),
]
WEATHER = table(
    "a grey morning | a windy afternoon | a sunny weekend | a cold evening | "
    "a rainy Tuesday | the first warm day of spring"
)
PEOPLE = table(
    "an old man | two children | a student | a postman | a woman with a dog | "
    "a family | a tired nurse | a group of friends"
)


def general_text(rng: random.Random) -> list[dict]:
    """Two short plain-English paragraphs per everyday thing."""
    rows = []
    for thing, where, use, made, habit in THINGS:
        article = "an" if thing[0] in "aeiou" else "a"
        rows.append(
            f"{article.capitalize()} {thing} is found {where}. It is used for {use}, and it "
            f"is usually made of {made}. Many people {habit}. A good {thing} lasts for years "
            "if it is looked after, and most people hardly notice it until it is gone."
        )
        rows.append(
            f"On {rng.choice(WEATHER)}, {rng.choice(PEOPLE)} needed {article} {thing}. "
            f"Everyone knows what it is for: {use}. This one was {made}, a little worn, "
            f"but it did its job. Like most people, they {habit}, and nobody thought twice "
            "about it."
        )
    rng.shuffle(rows)
    return [{"text": text, "task": "general_text"} for text in rows]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="\n") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def main() -> None:
    facts = make_facts(random.Random(SEED))
    train, held_out = manual_documents(facts, random.Random(SEED + 1))
    write_jsonl(OUT_DIR / "manual_train.jsonl", train)
    write_jsonl(OUT_DIR / "manual_held_out.jsonl", held_out)
    write_jsonl(OUT_DIR / "general_text.jsonl", general_text(random.Random(SEED + 2)))
    qa_train, qa_held_out = qa_rows(facts, random.Random(SEED + 3))
    write_jsonl(OUT_DIR / "domain_qa.jsonl", qa_train)
    write_jsonl(OUT_DIR / "domain_qa_held_out.jsonl", qa_held_out)
    print(f"wrote {len(train)} training and {len(held_out)} held-out documents to {OUT_DIR}")


if __name__ == "__main__":
    main()
