"""The quickstart notebook in a real JupyterLab and in Jupyter Notebook 7, driven in Chromium as
a person would use it.

Starts the front-end on loopback, opens notebooks/01_quickstart.ipynb, runs all cells, and checks
that every panel rendered, that the loss plot grows while training runs, that Stop stops the
run, and that CompareView shows base and fine-tuned answers. Screenshots go to
test-artifacts/browser/; with WORKBENCH_SCREENSHOTS=docs/images (`make screenshots`) the ones
the docs show are written there too. Needs Debian's chromium and the playwright package; CI
installs both (see the Makefile), elsewhere the test is skipped when they are missing.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time

import pytest
from conftest import ROOT

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = ROOT / "test-artifacts" / "browser"
# screenshot name -> the file under $WORKBENCH_SCREENSHOTS that the docs show
PUBLISHED = {"jupyterlab-7-workbench": "workbench_app.png"}
pytestmark = [
    pytest.mark.browser,
    pytest.mark.xdist_group("browser"),  # one server and one Chromium at a time
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="needs Debian's chromium (apt-get install chromium); CI installs it",
    ),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# the server command and the address of a notebook in each front-end
FRONTENDS = {
    "jupyterlab": ("lab", "/lab/tree/notebooks/01_quickstart.ipynb"),
    "notebook7": ("notebook", "/notebooks/notebooks/01_quickstart.ipynb"),
}


@pytest.fixture(scope="module", params=list(FRONTENDS))
def jupyterlab(request, tmp_path_factory):
    """A JupyterLab or Notebook 7 server on 127.0.0.1 serving a copy of the notebooks (the
    front-end saves what it runs, outputs included, and the repository keeps its notebooks
    clean). Yields the notebook's address, the token and the front-end's name."""
    frontend = request.param
    command, notebook_path = FRONTENDS[frontend]
    root = tmp_path_factory.mktemp("lab")
    shutil.copytree(ROOT / "notebooks", root / "notebooks")
    (root / "sample_data").symlink_to(ROOT / "sample_data")
    port, token = _free_port(), "workbench-browser-test"
    env = dict(
        os.environ,
        WORKBENCH_NOTEBOOK_STEPS="400",  # long enough to press Stop while it trains
        WORKBENCH_NOTEBOOK_HELD_OUT="8",
        WORKBENCH_RUNS=str(tmp_path_factory.mktemp("runs")),
        JUPYTER_CONFIG_DIR=str(tmp_path_factory.mktemp("jupyter-config")),
    )
    env.pop("WORKBENCH_NOTEBOOK_WAIT", None)
    log_path = ARTIFACTS / f"{frontend}.log"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "w")  # noqa: SIM115 - stays open for the server's lifetime
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyter",
            command,
            "--no-browser",
            "--allow-root",  # CI runs as root
            f"--port={port}",
            "--ip=127.0.0.1",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={root}",
            *(["--LabApp.news_url="] if command == "lab" else []),
            "--ServerApp.disable_check_xsrf=False",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.5)
    else:
        server.kill()
        pytest.fail(f"{frontend} did not start; see {log_path}")
    yield f"http://127.0.0.1:{port}{notebook_path}", token, frontend
    server.terminate()
    server.wait(timeout=30)
    log.close()


@pytest.fixture(scope="module")
def page(jupyterlab):
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        yield page
        browser.close()


def _shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=False)
    published = os.environ.get("WORKBENCH_SCREENSHOTS")
    if published and name in PUBLISHED:
        shutil.copyfile(ARTIFACTS / f"{name}.png", ROOT / published / PUBLISHED[name])


def _loss_points(page) -> int:
    """Points in the training-loss trace of the monitor's plotly figure, as the page has it."""
    return page.evaluate(
        """() => {
            const plot = document.querySelector('.wb-training-monitor .js-plotly-plot');
            return plot && plot.data && plot.data[0] && plot.data[0].x
                ? plot.data[0].x.length : -1;
        }"""
    )


def _scroll_to(page, selector: str) -> None:
    page.locator(selector).first.scroll_into_view_if_needed()
    page.wait_for_timeout(300)


def test_quickstart_runs_trains_stops_and_compares(jupyterlab, page):
    url, token, frontend = jupyterlab
    page.goto(f"{url}?token={token}")
    page.wait_for_selector(".jp-Notebook", timeout=60_000)
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=60_000)
    news = page.get_by_role("button", name="No", exact=True)  # "notified about Jupyter news?"
    if news.count():
        news.first.click()
    page.locator(".jp-CodeCell").first.click()  # Run All acts on the focused notebook
    page.keyboard.press("Escape")
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_text("Run All Cells", exact=True).click()

    for panel in (
        "wb-dataset-preview",
        "wb-template-editor",
        "wb-lora-form",
        "wb-training-monitor",
        "wb-compare-view",
        "wb-workbench",
    ):
        page.wait_for_selector(f".{panel}", timeout=180_000)
    _scroll_to(page, ".wb-dataset-preview")
    _shot(page, f"{frontend}-1-dataset-preview")
    _scroll_to(page, ".wb-template-editor")
    _shot(page, f"{frontend}-2-template-editor")
    _scroll_to(page, ".wb-lora-form")
    _shot(page, f"{frontend}-3-lora-form")

    _scroll_to(page, ".wb-training-monitor")
    deadline = time.time() + 240
    first = -1
    while time.time() < deadline and first < 1:
        first = _loss_points(page)
        page.wait_for_timeout(1000)
    assert first >= 1, "the loss plot received no point"
    while time.time() < deadline and _loss_points(page) <= first:
        page.wait_for_timeout(1000)
    grown = _loss_points(page)
    assert grown > first, "the loss plot did not grow while training ran"
    _shot(page, f"{frontend}-4-training")

    monitor = page.locator(".wb-training-monitor").first  # the Workbench below has its own
    monitor.locator("button", has_text="Stop").click()
    monitor.get_by_text("stopped").first.wait_for(timeout=120_000)
    _shot(page, f"{frontend}-5-stopped")

    _scroll_to(page, ".wb-compare-view")  # the comparison runs by itself once the run stops
    page.wait_for_selector(".wb-compare-view table", timeout=180_000)
    header = page.locator(".wb-compare-view table").first.inner_text()
    assert "base" in header.lower() and "fine-tuned" in header.lower()
    _shot(page, f"{frontend}-6-compare")
    _scroll_to(page, ".wb-workbench")
    _shot(page, f"{frontend}-7-workbench")
