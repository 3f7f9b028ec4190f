"""Every notebook runs top to bottom (nbclient), with training shortened through the environment.

The quickstart runs on the embedded model, as a user runs it. The lessons after it take a tiny
local model (24 layers, hidden size 64) through `WORKBENCH_NOTEBOOK_MODEL`: their code paths are
the same, and the suite stays inside CI's time (their real-model figures are in the README).
"""

from __future__ import annotations

import json
import math
import re
from html.parser import HTMLParser

import nbformat
import pytest
from conftest import ROOT, build_tiny_model

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
SHORT = {
    "WORKBENCH_NOTEBOOK_STEPS": "2",
    "WORKBENCH_NOTEBOOK_HELD_OUT": "4",
    "WORKBENCH_NOTEBOOK_WAIT": "1",  # headless: wait for training instead of a Stop button
}
# The lessons that read WORKBENCH_NOTEBOOK_MODEL; the quickstart stays on the embedded model.
ON_LESSON_MODEL = {
    "03_methods",
    "04_forgetting",
    "05_prompting_vs_finetuning",
    "06_runs_export_dpo",
    "07_four_ways",
    "08_continued_pretraining",
    "09_reward_model_and_rl",
    "10_distillation",
    "11_what_changed",
}
# Text each notebook's outputs must contain: proof that its story reached the end.
EXPECTED = {
    "01_quickstart": ["finished", "accuracy"],
    "02_prompt_templates": ["carry loss", "TemplateError", "truncation_side='left'"],
    "03_methods": ["held-out accuracy", "QLoRA r=16", "freeze 20"],
    "04_forgetting": ["after B: dates", "LwF", "LoRA r=", "SI 1: kept", "retained / base"],
    "05_prompting_vs_finetuning": [
        "4-shot retrieved",
        "tokens per query",
        "LoRA fine-tuned",
        "ms per answer",
        "cost per 1k queries (device time)",
        "cpu-choosing.json",
    ],
    "06_runs_export_dpo": ["settings that differ", "max |logit difference|", "SFT+DPO"],
    "07_four_ways": ["head only", "head + LoRA", "generative LoRA", "cpu-four-ways.json"],
    "08_continued_pretraining": ["labels carry loss", "general perplexity", "pretrain"],
    "09_reward_model_and_rl": [
        "held-out pair accuracy",
        "SFT+RL",
        "PPO finished",
        "cpu-reinforcement.json",
    ],
    "10_distillation": ["cpu-distillation.json (committed)", "student, distilled", "LoRA + LwF"],
    "11_what_changed": ["gained most:", "first fork at step", "answer tokens scored"],
}


def test_notebooks_are_stored_without_outputs():
    assert NOTEBOOKS, "no notebooks found"
    for path in NOTEBOOKS:
        notebook = json.loads(path.read_text())
        code = [c for c in notebook["cells"] if c["cell_type"] == "code"]
        assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), path


def test_lessons_take_their_model_from_the_environment():
    reads = {p.stem for p in NOTEBOOKS if "WORKBENCH_NOTEBOOK_MODEL" in p.read_text()}
    assert reads == ON_LESSON_MODEL


@pytest.fixture(scope="module")
def lesson_model_dir(tmp_path_factory, tiny_tokenizer):
    """A tiny model deep enough for the lessons' `freeze_layers=20`, saved as a local folder."""
    folder = tmp_path_factory.mktemp("lesson-model")
    build_tiny_model(tiny_tokenizer, layers=24, hidden=64).save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.notebooks
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(path, tmp_path, monkeypatch, request):
    from nbclient import NotebookClient

    for key, value in SHORT.items():
        monkeypatch.setenv(key, value)
    if path.stem in ON_LESSON_MODEL:
        model_dir = request.getfixturevalue("lesson_model_dir")
        monkeypatch.setenv("WORKBENCH_NOTEBOOK_MODEL", str(model_dir))
    monkeypatch.setenv("WORKBENCH_RUNS", str(tmp_path / "runs"))
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    )
    client.execute()
    errors = [
        o
        for c in notebook.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]
    assert not errors, errors
    text = "\n".join(
        str(o.get("text", "")) + json.dumps(o.get("data", {}))
        for c in notebook.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
    )
    assert "Traceback" not in text
    for expected in EXPECTED[path.stem]:
        assert expected in text, f"{path.name}: no output mentions {expected!r}"
    printed = "".join(
        str(o.get("text", ""))
        for c in notebook.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.get("output_type") == "stream"
    ).replace("\r", "\n")  # progress bars redraw with \r
    # a random-init model's loss is about ln(vocabulary); twice that is nonsense
    loss_ceiling = 2 * math.log(len(request.getfixturevalue("tiny_tokenizer")))
    FIGURES[path.stem](printed, dataframes(notebook), loss_ceiling)


# --- the figures each notebook prints ---------------------------------------------------
# The lessons on the tiny random model learn nothing in two steps, so their checks are ranges
# and consistency (a score is a share of the rows it was measured on, a table agrees with the
# lines printed beside it); the quickstart and 02 run on the embedded model, whose token counts
# follow from how tokenize_pair labels and truncates.

HELD_OUT = int(SHORT["WORKBENCH_NOTEBOOK_HELD_OUT"])
STEPS = int(SHORT["WORKBENCH_NOTEBOOK_STEPS"])


class _TableReader(HTMLParser):
    """The rows of cells (th and td alike) of every <table> in an HTML text."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append([])
        elif tag in ("th", "td"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("th", "td") and self._cell is not None and self.tables:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def dataframes(notebook) -> list[dict[str, dict[str, str]]]:
    """Each DataFrame a cell displayed, as {row label: {column: cell text}}.

    Pandas writes the column names in the first header row and, for a named index, the
    index name alone in a second one; every body row starts with its label.
    """
    frames = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []) if cell.cell_type == "code" else []:
            html = output.get("data", {}).get("text/html", "")
            if 'class="dataframe"' not in html:
                continue
            reader = _TableReader()
            reader.feed(html)
            for rows in reader.tables:
                columns = rows[0][1:]
                body = [r for r in rows[1:] if len(r) == len(columns) + 1 and any(r[1:])]
                frames.append({r[0]: dict(zip(columns, r[1:])) for r in body})
    return frames


def frame_with(frames, *columns: str) -> dict[str, dict[str, float]]:
    """The displayed DataFrame that has all `columns`, those columns as numbers."""
    found = [f for f in frames if f and all(c in next(iter(f.values())) for c in columns)]
    assert found, f"no table shows the columns {columns}"
    return {row: {c: number(cells[c]) for c in columns} for row, cells in found[-1].items()}


def number(text: str) -> float:
    return math.nan if text in ("None", "NaN", "nan", "") else float(text)


def matches(pattern: str, printed: str, count: int | None = None) -> list[tuple[str, ...]]:
    found = re.findall(pattern, printed, flags=re.MULTILINE)
    assert found, f"no output line matches {pattern!r}"
    if count is not None:
        assert len(found) == count, (pattern, found)
    return [f if isinstance(f, tuple) else (f,) for f in found]


def assert_share(value: float, rows: int | None = None, decimals: int = 2) -> None:
    """A score between 0 and 1; with `rows`, a whole number of rows out of `rows`."""
    assert 0.0 <= value <= 1.0, value
    if rows is not None:
        nearest = round(value * rows) / rows
        assert abs(nearest - value) <= 0.5 * 10**-decimals + 1e-9, (value, rows)


def assert_loss(value: float, ceiling: float) -> None:
    assert math.isfinite(value) and 0.0 < value < ceiling, (value, ceiling)


def check_quickstart(printed, frames, loss_ceiling):
    ((held_out,),) = matches(r"train \d+, validation \d+, held out (\d+)", printed, 1)
    assert int(held_out) == HELD_OUT
    ((status, steps),) = matches(r"run (\w+) after (\d+) steps", printed, 1)
    assert (status, int(steps)) == ("finished", STEPS)
    ((base, tuned),) = matches(r"held-out accuracy: base ([\d.]+), fine-tuned ([\d.]+)", printed, 1)
    for accuracy in (base, tuned):
        assert_share(float(accuracy))


def check_prompt_templates(printed, frames, loss_ceiling):
    ((prompt, response, loss),) = matches(
        r"(\d+) prompt tokens, (\d+) response tokens \(EOS included\), (\d+) carry loss",
        printed,
        1,
    )
    prompt, response, loss = int(prompt), int(response), int(loss)
    assert prompt > 0 and response >= 2  # some text and the EOS
    assert loss == response  # completion only: exactly the response carries loss
    ((all_loss, total),) = matches(r"completion_only=False: (\d+) of (\d+) tokens", printed, 1)
    assert int(all_loss) == int(total) == prompt + response
    cuts = dict(
        (side, (part, int(n)))
        for side, part, n in matches(
            r"truncation_side='(\w+)': cut the (\w+), (\d+) carry loss", printed, 2
        )
    )
    assert {part for part, _ in cuts.values()} <= {"prompt", "response"}  # both were cut
    assert cuts["left"][1] > cuts["right"][1]  # cutting the prompt keeps response tokens
    report = re.search(
        r"(\d+) of (\d+) rows exceed max_length=96 \(cut on the right\): (\d+) of those rows "
        r"lost learned tokens, (\d+) lost only prompt tokens",
        printed,
    )
    truncated, rows = (int(report[1]), int(report[2])) if report else (0, None)
    if report:
        assert truncated == int(report[3]) + int(report[4]) <= rows
    else:
        ((rows,),) = matches(r"No row of (\d+) exceeds max_length=96", printed, 1)
    ((stat_rows, median, longest, over),) = matches(
        r"(\d+) rows \(.*\); tokens per row: median (\d+), max (\d+); (\d+) over "
        r"max_length=96",
        printed,
        1,
    )
    assert int(stat_rows) == int(rows) > 0
    assert int(over) == truncated  # the same rows, counted twice
    assert 0 < int(median) <= int(longest) and (int(longest) > 96) == (truncated > 0)
    check_turn_table(printed, frames)


def check_turn_table(printed, frames):
    """Last turn only against all assistant turns: both runs finished, every held-out answer
    scored, each score a share of the turns it counts."""
    learned = dict(matches(r"assistant_turns='(\w+)': learned (.*)$", printed, 2))
    assert learned["last"].count("<|im_end|>") == 1 < learned["all"].count("<|im_end|>")
    runs = matches(r"^(last|all): (\w+), (\d+) steps, last loss ([\d.]+)$", printed, 2)
    assert all(status == "finished" and int(steps) == STEPS for _, status, steps, _ in runs)
    columns = (
        "exact match, earlier turns",
        "exact match, last turn",
        "earlier turns",
        "last turns",
    )
    table = frame_with(frames, *columns)
    assert set(table) == {
        "base model",
        "learn last assistant turn(s)",
        "learn all assistant turn(s)",
    }
    for row in table.values():
        earlier, last = int(row["earlier turns"]), int(row["last turns"])
        assert last == HELD_OUT and earlier >= HELD_OUT  # 2-4 answers per conversation
        for share, count in ((row[columns[0]], earlier), (row[columns[1]], last)):
            assert 0 <= share <= 1  # NaN fails here
            assert share * count == pytest.approx(round(share * count), abs=0.01)  # whole answers


def check_methods(printed, frames, loss_ceiling):
    ((held_out,),) = matches(r"train \d+, validation \d+, held out (\d+)", printed, 1)
    assert int(held_out) == HELD_OUT
    lines = matches(r"^(.+): (\w+) in \d+ s, accuracy ([\d.]+)$", printed)
    lines = {name: (status, float(accuracy)) for name, status, accuracy in lines}
    table = frame_with(frames, "share %", "predicted GiB", "validation loss", "held-out accuracy")
    assert list(lines) == list(table) == ["LoRA r=16", "QLoRA r=16", "full", "freeze 20"]
    for name, (status, accuracy) in lines.items():
        row = table[name]
        assert status == "finished", name
        assert_share(accuracy, HELD_OUT)
        assert_share(row["held-out accuracy"], HELD_OUT, decimals=3)
        assert abs(row["held-out accuracy"] - accuracy) <= 0.005 + 1e-9, name
        assert_loss(row["validation loss"], loss_ceiling)
        assert row["predicted GiB"] > 0, name
    assert table["full"]["share %"] == pytest.approx(100)
    for partial in ("LoRA r=16", "QLoRA r=16", "freeze 20"):
        assert 0 < table[partial]["share %"] < 100, partial


def check_forgetting(printed, frames, loss_ceiling):
    rows_per_task = HELD_OUT // 2
    # the committed measurement: three seeds or more, 50 rows a task or more
    ((seeds, rows),) = matches(r"(\d+) seeds, (\d+) held-out rows per task,", printed, 1)
    assert int(seeds) >= 3 and int(rows) >= 50
    committed = frame_with(frames, "seeds")  # every setting's mean ± spread over all seeds
    assert len(committed) >= 10 and all(row["seeds"] == int(seeds) for row in committed.values())
    # the live run: every sequence finished both stages, on ROWS rows a task
    ((live_rows,),) = matches(r"probe \[.*\], (\d+) held-out rows per task$", printed, 1)
    assert int(live_rows) == rows_per_task
    runs = matches(r"^(.+): (\w+), (\w+) in \d+ s$", printed)
    names = [name for name, _, _ in runs]
    assert names == ["none", "replay 0.5", "EWC 1", "SI 1"]
    assert all((a, b) == ("finished", "finished") for _, a, b in runs)
    stages = frame_with(frames, "extract_city", "date_iso", "capital", "antonym", "retained")
    assert list(stages) == ["base", "after stage 1", "after stage 2"]
    for row in stages.values():
        for task in ("extract_city", "date_iso", "capital", "antonym"):
            assert_share(row[task], rows_per_task, decimals=3)
        assert row["retained"] == pytest.approx((row["capital"] + row["antonym"]) / 2, abs=1e-3)
    lines = matches(r"^(.+): kept ([\d.]+), learned ([\d.]+), retained ([\d.]+)$", printed)
    live = frame_with(frames, "kept", "learned", "retained")
    assert [name for name, *_ in lines] == names == list(live)
    for name, kept, learned, retained in lines:
        assert_share(float(kept), rows_per_task)
        assert_share(float(learned), rows_per_task)
        assert_share(float(retained), 2 * rows_per_task)  # the mean of two probe tasks
        for column, value in (("kept", kept), ("learned", learned), ("retained", retained)):
            assert abs(live[name][column] - float(value)) <= 0.005 + 1e-9, (name, column)
    after = stages["after stage 2"]
    assert (after["extract_city"], after["date_iso"]) == (
        live["none"]["kept"],
        live["none"]["learned"],
    )


def check_prompting(printed, frames, loss_ceiling):
    ((held_out,),) = matches(r"train \d+ \(the pool examples come from\), held out (\d+)", printed)
    assert int(held_out) == HELD_OUT
    ((status, steps),) = matches(r"run (\w+) after (\d+) steps", printed, 1)
    assert (status, int(steps)) == ("finished", STEPS)
    evaluations = frame_with(frames, "step", "eval_loss")
    assert evaluations and all(
        math.isfinite(r["eval_loss"]) and 0 < r["eval_loss"] < loss_ceiling
        for r in evaluations.values()
    )
    table = frame_with(frames, "accuracy", "prompt tokens per query")
    tuned = f"LoRA fine-tuned ({STEPS} steps)"
    assert {"zero-shot", "4-shot retrieved", tuned} <= set(table)
    for row in table.values():
        assert_share(row["accuracy"], HELD_OUT, decimals=3)
    tokens = {name: row["prompt tokens per query"] for name, row in table.items()}
    assert tokens["4-shot retrieved"] > tokens["zero-shot"] > 0  # the examples cost tokens
    assert tokens[tuned] == tokens["zero-shot"]  # the fine-tuned model gets the bare prompt


def check_runs_export_dpo(printed, frames, loss_ceiling):
    runs = matches(r"lr ([\d.e-]+): (\w+), last loss (\S+)", printed, 2)
    for _, status, loss in runs:
        assert status == "finished"
        assert_loss(float(loss), loss_ceiling)
    ((difference,),) = matches(r"max \|logit difference\| vs adapter on = (\S+)", printed, 1)
    assert float(difference) < 1e-3  # merging the adapter changes no prediction (fp32)
    ((status,),) = matches(r"DPO (\w+); held-out reward margin", printed, 1)
    assert status == "finished"
    ((before, after, pairs),) = matches(
        r"(-?[\d.]+) -> (-?[\d.]+) over (\d+) held-out pairs", printed, 1
    )
    assert math.isfinite(float(before)) and math.isfinite(float(after))
    assert int(pairs) == HELD_OUT
    ((chosen_before, chosen_after),) = matches(r"chosen likelier in (\d+)% -> (\d+)%", printed)
    assert 0 <= int(chosen_before) <= 100 and 0 <= int(chosen_after) <= 100


def check_continued_pretraining(printed, frames, loss_ceiling):
    ((held_out, general),) = matches(r"documents, (\d+) held out; general: (\d+)", printed, 1)
    assert int(held_out) == int(general) == HELD_OUT
    ((learned, length),) = matches(r"block 0: (\d+) of (\d+) labels carry loss", printed, 1)
    assert int(learned) == int(length) > 0  # every token of a full block is learned
    ((status, steps),) = matches(r"run (\w+) after (\d+) steps", printed, 1)
    assert (status, int(steps)) == ("finished", STEPS)
    table = frame_with(frames, "before", "after", "change")
    assert set(table) == {"domain perplexity", "general perplexity"}
    for name, before, after in matches(r"^(\w+ perplexity): ([\d.]+) -> ([\d.]+)", printed, 2):
        row = table[name]
        for value, shown in ((row["before"], before), (row["after"], after)):
            assert 1 < value < math.exp(loss_ceiling)
            assert value == pytest.approx(float(shown), abs=0.01)  # the table beside the lines
        assert row["change"] == pytest.approx(row["after"] - row["before"], abs=0.002)
    committed = frame_with(frames, "before", "after", "change_percent")
    path = sorted((ROOT / "benchmarks" / "results").glob("*-cpu-pretraining.json"))[-1]
    measured = json.loads(path.read_text())["results"]["perplexity"]
    assert set(committed) == set(measured) == set(table)
    for name, row in committed.items():  # the notebook shows the committed figures as they are
        assert row["after"] == pytest.approx(measured[name]["after"], abs=0.01)


def check_distillation(printed, frames, loss_ceiling):
    names = ["teacher", "student, labels alone", "student, distilled"]
    ((teacher_status, layers),) = matches(r"^teacher: (\w+), (\d+) layers$", printed, 1)
    students = matches(r"^(student, [\w ]+): (\w+), validation loss ([\d.]+)$", printed, 2)
    assert teacher_status == "finished" and int(layers) > 1
    assert [(n, status) for n, status, _ in students] == [(n, "finished") for n in names[1:]]
    for *_, loss in students:
        assert_loss(float(loss), loss_ceiling)
    lines = matches(
        r"^(.+): accuracy ([\d.]+), ([\d.]+)M parameters, (\d+) ms per answer$", printed
    )
    table = frame_with(frames, "layers", "parameters (M)", "held-out accuracy", "ms per answer")
    assert [n for n, *_ in lines] == list(table) == names
    for name, accuracy, parameters, _ in lines:
        assert_share(float(accuracy), HELD_OUT)
        assert table[name]["held-out accuracy"] == pytest.approx(float(accuracy), abs=0.0005)
        assert table[name]["parameters (M)"] == pytest.approx(float(parameters), abs=0.05)
        assert table[name]["ms per answer"] > 0
    teacher = table["teacher"]
    for student in names[1:]:  # half the layers, fewer parameters (the embeddings stay)
        assert table[student]["layers"] == teacher["layers"] // 2
        assert table[student]["parameters (M)"] < teacher["parameters (M)"]
    committed = frame_with(frames, "layers", "parameters (M)", "held-out accuracy", "held-out loss")
    path = sorted((ROOT / "benchmarks" / "results").glob("*-cpu-distillation.json"))[-1]
    measured = json.loads(path.read_text())["results"]
    assert list(committed) == [r["model"] for r in measured]
    for row in measured:  # the notebook shows the committed figures as they are
        assert committed[row["model"]]["held-out accuracy"] == pytest.approx(
            row["accuracy"], abs=1e-3
        )
    lwf = matches(
        r"^(LoRA|LoRA \+ LwF): (\w+), accuracy ([\d.]+), KL to base ([\d.]+)$", printed, 2
    )
    for _, status, accuracy, drift in lwf:
        assert status == "finished"
        assert_share(float(accuracy), HELD_OUT)
        assert 0 <= float(drift) < loss_ceiling


def check_reward_model_and_rl(printed, frames, loss_ceiling):
    ((status, before, after, pairs),) = matches(
        r"reward model (\w+); held-out pair accuracy ([\d.]+) -> ([\d.]+) over (\d+) pairs",
        printed,
        1,
    )
    assert status == "finished" and int(pairs) == HELD_OUT
    for accuracy in (before, after):
        assert_share(float(accuracy), HELD_OUT)
    scores = matches(r"^  score ([+-][\d.]+) \((chosen|rejected)\)", printed, 2)
    assert [kind for _, kind in scores] == ["chosen", "rejected"]
    ((instruct, prompts),) = matches(
        r"instruct model: mean reward ([\d.]+) over (\d+) held-out prompts", printed, 1
    )
    ((status, before, after, count),) = matches(
        r"GRPO (\w+); held-out mean reward \(valid ISO dates, greedy\): ([\d.]+) -> ([\d.]+) "
        r"over (\d+) prompts",
        printed,
        1,
    )
    assert status == "finished" and int(count) == int(prompts) == HELD_OUT
    assert float(before) == pytest.approx(float(instruct), abs=0.005)  # the same measurement
    for reward in (before, after):  # 0 or 1 per prompt: a share of whole prompts
        assert_share(float(reward), HELD_OUT)
    steps = frame_with(frames, "step", "mean_reward", "kl", "response_length")
    assert [int(row["step"]) for row in steps.values()] == list(range(1, STEPS + 1))
    for row in steps.values():
        assert 0 <= row["mean_reward"] <= 1 and row["kl"] >= 0  # NaN fails both
        assert 1 <= row["response_length"] <= 16
    ((right_before, right_after),) = matches(
        r"answers that are also the right date: ([\d.]+) -> ([\d.]+)", printed, 1
    )
    for share in (right_before, right_after):
        assert_share(float(share), HELD_OUT)
    ((status, before, after, count, steps, answers),) = matches(
        r"PPO (\w+); held-out mean reward \(valid ISO dates, greedy\): ([\d.]+) -> ([\d.]+) "
        r"over (\d+) prompts, after (\d+) steps \((\d+) sampled answers\)",
        printed,
        1,
    )
    assert status == "finished" and int(count) == HELD_OUT
    assert float(before) == pytest.approx(float(instruct), abs=0.005)
    assert_share(float(after), HELD_OUT)
    assert (int(steps), int(answers)) == (4 * STEPS, 16 * STEPS)  # GRPO's answers, 4x steps
    ppo_steps = frame_with(frames, "step", "mean_reward", "kl", "value_loss", "clip_fraction")
    assert [int(row["step"]) for row in ppo_steps.values()] == list(range(1, 4 * STEPS + 1))
    rollouts = [row for row in ppo_steps.values() if not math.isnan(row["mean_reward"])]
    assert [int(row["step"]) for row in rollouts] == list(range(1, 4 * STEPS + 1, 4))
    for row in ppo_steps.values():
        assert row["value_loss"] >= 0 and 0 <= row["clip_fraction"] <= 1
    assert all(row["clip_fraction"] == 0 for row in rollouts)  # the sampling policy's update
    committed = frame_with(frames, "before", "after", "steps", "training minutes")
    assert len(committed) == 5
    for name, row in committed.items():  # the committed measurement on the embedded model
        assert_share(row["before"])
        assert_share(row["after"])
        assert 0 < row["training minutes"] <= 12
        if "accuracy" in name or "mean reward" in name:  # what each run optimised went up
            assert row["after"] > row["before"], name


FOUR_WAYS = (
    "zero-shot",
    "4-shot fixed",
    "4-shot retrieved",
    "head only",
    "head + LoRA",
    "generative LoRA",
)


def check_four_ways(printed, frames, loss_ceiling):
    ((validation, held_out),) = matches(r"train \d+, validation (\d+), held out (\d+)", printed, 1)
    assert int(held_out) == HELD_OUT
    runs = matches(r"^(head only|head \+ LoRA|generative LoRA): (\w+) after (\d+) steps", printed)
    assert [(way, status, int(steps)) for way, status, steps in runs] == [
        (way, "finished", STEPS) for way in FOUR_WAYS[3:]
    ]
    ((step, accuracy),) = matches(r"validation accuracy at step (\d+): ([\d.]+)", printed, 1)
    assert int(step) == STEPS
    assert_share(float(accuracy), int(validation), decimals=3)
    matrix = frame_with(frames, "account", "billing", "shipping", "technical")
    assert sum(sum(row.values()) for row in matrix.values()) == int(validation)
    (history,) = [f for f in frames if f and "stage" in next(iter(f.values()))]
    stages = sorted(row["stage"] for row in history.values())  # a row per trained way
    assert stages == ["classify", "classify", "sft"]
    columns = ("accuracy", "trainable_parameters", "steps", "train_s", "latency_ms")
    columns += ("tokens_per_query",)
    tables = [f for f in frames if tuple(f) == FOUR_WAYS and set(columns) <= set(f["zero-shot"])]
    assert len(tables) == 2  # the live run, then the committed measurement
    for cells, rows in zip(tables, (HELD_OUT, None)):
        table = {way: {c: number(row[c]) for c in columns} for way, row in cells.items()}
        for row in table.values():
            assert_share(row["accuracy"], rows, decimals=3)
            assert row["latency_ms"] > 0 and row["tokens_per_query"] > 0
        assert all(table[way]["trainable_parameters"] == 0 for way in FOUR_WAYS[:3])
        assert [table[way]["steps"] for way in FOUR_WAYS[:3]] == [0, 0, 0]
        if rows == HELD_OUT:  # the live run, shortened
            assert [table[way]["steps"] for way in FOUR_WAYS[3:]] == [STEPS] * 3
        head, lora = table["head only"], table["head + LoRA"]
        assert 0 < head["trainable_parameters"] < lora["trainable_parameters"]
        assert table["zero-shot"]["train_s"] == table["4-shot fixed"]["train_s"] == 0
        assert all(table[way]["train_s"] > 0 for way in FOUR_WAYS[2:])  # retrieval: the index
        # a head reads the message; a prompt adds the instruction, examples add more
        tokens = [table[way]["tokens_per_query"] for way in ("head only", "zero-shot")]
        assert tokens[0] < tokens[1] < table["4-shot fixed"]["tokens_per_query"]


def check_what_changed(printed, frames, loss_ceiling):
    ((status, steps),) = matches(r"^run (\w+) after (\d+) steps", printed, 1)
    assert (status, int(steps)) == ("finished", STEPS)
    ((before, after, change, tokens),) = matches(
        r"log-probability (-?[\d.]+) before, (-?[\d.]+) after \(([-+][\d.]+) over (\d+) tokens",
        printed,
        1,
    )
    assert float(change) == pytest.approx(float(after) - float(before), abs=0.011)
    shifts = frame_with(frames, "logprob_before", "logprob_after", "shift")
    assert len(shifts) == int(tokens) > 0  # the table beside the line: one row a token
    for row in shifts.values():
        assert row["logprob_before"] <= 0 and row["logprob_after"] <= 0
        assert row["shift"] == pytest.approx(row["logprob_after"] - row["logprob_before"], abs=2e-4)
    total = sum(row["logprob_before"] for row in shifts.values())
    assert total == pytest.approx(float(before), abs=0.01)
    ((fork,),) = matches(r"first fork at step (\w+)", printed, 1)
    ((scored, panel_fork),) = matches(r"^(\d+) answer tokens scored; first fork: (\w+)", printed, 1)
    assert int(scored) == int(tokens) and panel_fork == fork  # the panel: the same row, the same
    steps = [f for f in frames if f and {"chosen", "forked"} <= set(next(iter(f.values())))]
    assert steps and 1 <= len(steps[-1]) <= 6  # the tuned answer's steps: max_new_tokens=6
    forked = [label for label, row in steps[-1].items() if row["forked"] == "True"]
    assert (forked[0] if forked else "None") == fork  # first_fork: the first forked step


FIGURES = {
    "01_quickstart": check_quickstart,
    "02_prompt_templates": check_prompt_templates,
    "03_methods": check_methods,
    "04_forgetting": check_forgetting,
    "05_prompting_vs_finetuning": check_prompting,
    "06_runs_export_dpo": check_runs_export_dpo,
    "07_four_ways": check_four_ways,
    "08_continued_pretraining": check_continued_pretraining,
    "09_reward_model_and_rl": check_reward_model_and_rl,
    "10_distillation": check_distillation,
    "11_what_changed": check_what_changed,
}


def test_every_notebook_has_its_figures_checked():
    assert set(FIGURES) == set(EXPECTED) == {p.stem for p in NOTEBOOKS}
