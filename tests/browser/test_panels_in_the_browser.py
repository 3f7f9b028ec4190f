"""Every panel in a real JupyterLab, driven in Chromium: each renders, a short run on the tiny
model moves its plot, and the page logs no JavaScript error on the way.

The test writes a notebook of its own into the served folder (a tiny local model, the sample
tickets, three short runs for the run history), runs all its cells, then uses the panels as a
person would: it watches the TrainingMonitor plot while a run trains and after, selects four
runs in a RunBrowser, and in the WorkbenchApp visits every tab, presses Train, then Run
comparison in the Compare tab, selects four runs in the Runs tab and presses Train RL (a 4-step
GRPO run) in the Preferences tab. After each step it checks that the page logged no console
error or uncaught exception (`IGNORED` lists the messages shown to be unrelated to the panels),
that every plot that should have points has them, as the page holds them, and that no cell
output shows a traceback. Screenshots go to test-artifacts/browser/ (and, with
WORKBENCH_SCREENSHOTS, the `PUBLISHED` ones to the docs).
"""

from __future__ import annotations

import re
import time

import nbformat
import pytest
from conftest import ROOT, build_tiny_model

from workbench.runs.report import (
    HELD_OUT_REWARD,
    KL,
    LEARNING_RATE,
    MEAN_REWARD,
    RESPONSE_LENGTH,
    SMOOTHED_LOSS,
    TRAIN_LOSS,
    VALIDATION_LOSS,
)

from .conftest import (
    NEEDS_CHROMIUM,
    VIEWPORT,
    ConsoleErrors,
    jupyter_server,
    output_tracebacks,
    plot_traces,
    points_of,
    run_all_cells,
    scroll_to,
    server_env,
    shot,
    wait_idle,
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.xdist_group("browser"),  # one server and one Chromium at a time
    NEEDS_CHROMIUM,
]

# Console messages that are not the panels': part of the message -> why it is unrelated. None
# so far: JupyterLab 4.6 with ipywidgets 8.1 and plotly 7.1 logs no error of its own here (no
# favicon or extension 404 reaches the console). Add one only with the reason it is unrelated.
IGNORED: dict[str, str] = {}
# screenshot name -> the file under $WORKBENCH_SCREENSHOTS that the docs show
PUBLISHED = {
    "panels-workbench-train": "workbench_train_tab.png",
    "panels-workbench-compare": "workbench_compare_tab.png",
    "panels-rl-monitor": "rl_panel_monitor.png",
    "panels-run-browser": "run_browser_curves.png",
}
MONITOR_STEPS = 20  # the monitored run's steps, slowed to 0.3 s each so the plot is seen moving
RL_STEPS = 4

# The notebook: each panel in a cell of its own, tagged with a class (`t-...`) to find it by.
SETUP = """
import os
import time

import ipywidgets as widgets

import workbench
from workbench.model.generation import Decoding
from workbench.widgets import (
    ClassifierPanel, CompareView, DatasetPreview, LoraForm, PreferencePanel, PretrainPanel,
    RLPanel, RunBrowser, TemplateEditor, TrainingMonitor, WorkbenchApp,
)

MODEL = os.environ["WORKBENCH_BROWSER_MODEL"]
TICKETS = "sample_data/support_tickets.jsonl"
rows = workbench.load_data(TICKETS, verbose=False)
train_rows, validation = workbench.split_data(rows, 8, seed=0)
train_rows = train_rows.select(range(48))


def tiny():
    return workbench.load_model(MODEL, device="cpu")


def quick(**changes):
    settings = dict(max_steps=6, batch_size=4, eval_every=3, learning_rate=5e-3,
                    max_length=256, sample_max_new_tokens=4)
    return workbench.Hyperparameters(**{**settings, **changes})


def short_rl(panel):
    \"\"\"A GRPO run of RL_STEPS steps: 2 prompts x 4 answers a step, 8 held out.\"\"\"
    panel.max_steps.value, panel.batch_size.value, panel.num_generations.value = RL_STEPS, 8, 4
    panel.learning_rate.value, panel.held_out.value = 1e-3, 8
    panel.compare_rows, panel.decoding = 4, Decoding(max_new_tokens=6)
    return panel


def tagged(panel, name):
    panel.add_class(f"t-{name}")
    return panel


for rate in (2e-3, 5e-3, 1e-2):  # the run history the Runs tab and the RunBrowser overlay
    run = workbench.train(*tiny(), train_rows, validation, settings=quick(learning_rate=rate))
    assert run.wait().status == "finished", run.error
""".replace("RL_STEPS", str(RL_STEPS))
CELLS = [
    SETUP,
    "model, tokenizer = tiny()\n"
    "tagged(DatasetPreview(rows, tokenizer=tokenizer), 'dataset-preview')",
    "tagged(TemplateEditor(tokenizer, rows), 'template-editor')",
    "tagged(LoraForm(model), 'lora-form')",
    "tagged(CompareView(model, tokenizer, validation.select(range(2))), 'compare-view')",
    "tagged(PreferencePanel(), 'preference-panel')",
    "tagged(RLPanel(), 'rl-panel')",
    "tagged(ClassifierPanel(model_name=MODEL), 'classifier-panel')",
    "tagged(PretrainPanel(model_name=MODEL), 'pretrain-panel')",
    "tagged(RunBrowser(), 'run-browser')",
    # the whole workbench on the tiny model, set up for a 6-step LoRA run, then a short GRPO run
    "app = tagged(WorkbenchApp(*tiny(), TICKETS), 'app')\n"
    "controls = app.method_panel.hyperparameter_controls\n"
    "short = dict(max_steps=6, batch_size=4, eval_every=3, learning_rate=5e-3)\n"
    "for name, value in short.items():\n"
    "    controls[name].value = value\n"
    "short_rl(app.rl_panel)\n"
    "app",
    # a run the browser watches as it trains, started by the test once the plot is on screen
    "run = workbench.train(*tiny(), train_rows, validation, settings=quick(\n"
    f"    max_steps={MONITOR_STEPS}, eval_every=5), start=False)\n"
    "run.add_callback('step', lambda event: time.sleep(0.3))\n"
    "start = widgets.Button(description='Start the monitored run')\n"
    "start.on_click(lambda _: run.start())\n"
    "tagged(widgets.VBox([start, TrainingMonitor(run)]), 'monitor')",
]
ERROR = "[data-mime-type='application/vnd.jupyter.error']"  # a cell's exception
PANELS = (
    "dataset-preview",
    "template-editor",
    "lora-form",
    "compare-view",
    "preference-panel",
    "rl-panel",
    "classifier-panel",
    "pretrain-panel",
    "run-browser",
    "app",
    "monitor",
)


@pytest.fixture(scope="module")
def lab(tmp_path_factory, tiny_tokenizer):
    """JupyterLab serving a folder with the test's notebook, the sample data and a tiny model;
    yields the notebook's address."""
    root = tmp_path_factory.mktemp("panels-lab")
    (root / "sample_data").symlink_to(ROOT / "sample_data")
    model_dir = root / "tiny-model"
    build_tiny_model(tiny_tokenizer).save_pretrained(model_dir)
    tiny_tokenizer.save_pretrained(model_dir)
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source.strip()) for source in CELLS]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    nbformat.write(notebook, root / "panels.ipynb")
    env = server_env(tmp_path_factory, WORKBENCH_BROWSER_MODEL=str(model_dir))
    with jupyter_server("lab", root, env, "panels") as address:
        yield f"{address}/lab/tree/panels.ipynb"


@pytest.fixture(scope="module")
def page(lab, chromium):
    """The notebook, all cells run, every panel rendered; `page.console` holds its errors."""
    page = chromium.new_page(viewport=VIEWPORT)
    page.console = ConsoleErrors(page)
    run_all_cells(page, lab)
    rendered = ", ".join(f".t-{panel}" for panel in PANELS)
    wait_for(
        lambda: page.locator(rendered).count() == len(PANELS) or page.locator(ERROR).count(),
        240,
        "every panel",
        page,
    )
    failed = [e.inner_text() for e in page.locator(ERROR).all()]
    assert not failed, "a cell raised:\n" + "\n".join(failed)
    wait_idle(page)
    yield page
    page.close()


def wait_for(condition, timeout_s: float, what: str, page) -> None:
    deadline = time.time() + timeout_s
    while not condition():
        if time.time() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")
        page.wait_for_timeout(500)


def button(scope, label: str):
    """The visible button labelled `label` (an icon's glyph is no part of its text)."""
    exactly = re.compile(rf"^\s*{re.escape(label)}\s*$")
    return scope.locator("button:visible").filter(has_text=exactly)


def trace_points(page, selector: str) -> dict[str, int]:
    """{trace name: points} of the first plot inside `selector` ({} when it holds no data)."""
    plots = plot_traces(page, selector)
    return {t["name"]: t["points"] for t in (plots[0] if plots else [])}


def check(
    page, where: str, expected: dict[str, int] | None = None, runs: int | None = None
) -> None:
    """Everything the issue saw go wrong, reported together: console errors and uncaught
    exceptions (but the `IGNORED`), tracebacks in cell outputs, and, for the first plot in
    `where`, traces holding other than the `expected` points, or (`runs`) other than that
    many runs' curves, each with points."""
    problems = []
    errors = page.console.unexpected(IGNORED)
    if errors:
        problems.append("the page logged errors:\n  " + "\n  ".join(errors))
    tracebacks = output_tracebacks(page)
    if tracebacks:
        problems.append("an output shows a traceback:\n" + "\n---\n".join(tracebacks))
    if expected is not None:
        points = trace_points(page, where)
        wrong = {name: points.get(name) for name, count in expected.items()}
        wrong = {n: got for n, got in wrong.items() if got != expected[n]}
        if wrong:
            problems.append(
                f"the plot in {where} holds {wrong} points where {expected} were due"
                f" (all its traces: {points})"
            )
    if runs is not None:
        points = trace_points(page, where)
        overlaid = {name.split(" · ")[0] for name, count in points.items() if count > 0}
        if len(overlaid) != runs or not all(points.values()):
            problems.append(
                f"the plot in {where} shows the curves of {len(overlaid)} runs, not {runs}"
                f" (its traces: {points})"
            )
    assert not problems, "\n".join(problems)


def shoot_when_shown(page, done, scroll_target: str, name: str) -> None:
    """Wait (up to 5 minutes) for `done` to be on the page and the kernel to idle, give the last
    redraw a second, then scroll to `scroll_target` and take the screenshot `name`."""
    done.wait_for(state="attached", timeout=300_000)
    wait_idle(page)
    page.wait_for_timeout(1000)
    scroll_to(page, scroll_target)
    shot(page, name, PUBLISHED)


def test_the_monitor_plot_grows_while_a_run_trains_and_holds_every_step_after(page):
    monitor = ".t-monitor"
    scroll_to(page, monitor)
    button(page.locator(monitor), "Start the monitored run").click()
    wait_for(lambda: points_of(page, monitor, TRAIN_LOSS) >= 1, 180, "a first loss point", page)
    first = points_of(page, monitor, TRAIN_LOSS)
    assert first < MONITOR_STEPS, "the run ended before the plot was seen: slow it down"
    wait_for(lambda: points_of(page, monitor, TRAIN_LOSS) > first, 60, "the plot to grow", page)
    shot(page, "panels-monitor-training", PUBLISHED)
    page.locator(monitor).get_by_text("finished").first.wait_for(timeout=120_000)
    wait_idle(page)
    page.wait_for_timeout(1000)  # the last redraw's messages
    shot(page, "panels-monitor-finished", PUBLISHED)
    every_step = {name: MONITOR_STEPS for name in (TRAIN_LOSS, SMOOTHED_LOSS, LEARNING_RATE)}
    check(page, monitor, {**every_step, VALIDATION_LOSS: 1 + MONITOR_STEPS // 5})  # 0, 5 .. 20


def test_every_panel_renders_without_a_console_error(page):
    for panel in PANELS:
        scroll_to(page, f".t-{panel}")
    check(page, "")


def test_the_run_browser_overlays_the_curves_of_four_selected_runs(page):
    panel = page.locator(".t-run-browser")
    scroll_to(page, ".t-run-browser")
    button(panel, "Refresh").click()  # the runs made since it was built
    select = panel.locator("select")
    wait_for(lambda: select.locator("option").count() >= 4, 30, "four runs listed", page)
    select.select_option(index=[0, 1, 2, 3])
    page.wait_for_timeout(2000)
    check(page, ".t-run-browser", runs=4)


def test_the_workbench_trains_without_leaving_the_train_tab(page):
    app = page.locator(".t-app")
    scroll_to(page, ".t-app")
    tabs = app.locator(".lm-TabBar-tab")
    assert tabs.count() == 8
    for index in range(8):  # every tab renders
        tabs.nth(index).click()
        page.wait_for_timeout(300)
    check(page, "")
    tabs.filter(has_text="4 Train").click()
    button(app, "Train").click()
    shoot_when_shown(
        page, app.get_by_text("finished: compare"), ".t-app .lm-TabBar", "panels-workbench-train"
    )
    current = app.locator(".lm-TabBar-tab.lm-mod-current").inner_text()
    assert "4 Train" in current, f"the workbench moved to the tab {current!r}"
    check(page, ".t-app .wb-training-monitor", {TRAIN_LOSS: 6, VALIDATION_LOSS: 3})


def test_the_workbench_compares_in_one_state_at_a_time(page):
    app = page.locator(".t-app")
    app.locator(".lm-TabBar-tab").filter(has_text="5 Compare").click()
    compare = app.locator(".wb-compare-view")
    assert "Press Run comparison" in compare.inner_text()
    button(compare, "Run comparison").click()
    compare.locator("table").first.wait_for(timeout=300_000)
    wait_idle(page)
    scroll_to(page, ".t-app .lm-TabBar")
    shot(page, "panels-workbench-compare", PUBLISHED)
    header = compare.locator("table").first.inner_text().lower()
    assert "base" in header and "fine-tuned" in header
    text = compare.inner_text()
    assert "Compared" in text and "Press Run comparison" not in text and "Comparing" not in text
    check(page, "")


def test_the_runs_tab_overlays_the_curves_of_four_selected_runs(page):
    app = page.locator(".t-app")
    app.locator(".lm-TabBar-tab").filter(has_text="7 Runs").click()
    select = app.locator(".wb-run-browser select")
    wait_for(lambda: select.locator("option").count() >= 5, 30, "five runs listed", page)
    select.select_option(index=[0, 1, 2, 3])
    page.wait_for_timeout(2000)
    scroll_to(page, ".t-app .wb-run-browser .js-plotly-plot")
    shot(page, "panels-run-browser", PUBLISHED)
    check(page, ".t-app .wb-run-browser", runs=4)


def test_the_rl_panel_in_the_workbench_plots_a_short_grpo_run(page):
    app = page.locator(".t-app")
    app.locator(".lm-TabBar-tab").filter(has_text="6 Preferences").click()
    button(app, "reward model + RL").click()
    rl = app.locator(".wb-rl-panel")
    button(rl, "Train RL").click()
    shoot_when_shown(
        page,
        rl.get_by_text("Train RL again continues"),
        ".t-app .wb-rl-panel .wb-training-monitor .js-plotly-plot",
        "panels-rl-monitor",
    )
    every_step = {name: RL_STEPS for name in (TRAIN_LOSS, MEAN_REWARD, KL, RESPONSE_LENGTH)}
    held_out = {HELD_OUT_REWARD: RL_STEPS + 1}  # an evaluation before the first step, then each
    check(page, ".t-app .wb-rl-panel .wb-training-monitor", {**every_step, **held_out})
