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

import shutil
import time

import pytest

from .conftest import (
    NEEDS_CHROMIUM,
    ROOT,
    VIEWPORT,
    jupyter_server,
    run_all_cells,
    scroll_to,
    server_env,
    shot,
)

# screenshot name -> the file under $WORKBENCH_SCREENSHOTS that the docs show
PUBLISHED: dict[str, str] = {}  # the docs show the panels test's screenshots
pytestmark = [
    pytest.mark.browser,
    pytest.mark.xdist_group("browser"),  # one server and one Chromium at a time
    NEEDS_CHROMIUM,
]

# the server command and the address of a notebook in each front-end
FRONTENDS = {
    "jupyterlab": ("lab", "/lab/tree/notebooks/01_quickstart.ipynb"),
    "notebook7": ("notebook", "/notebooks/notebooks/01_quickstart.ipynb"),
}


@pytest.fixture(scope="module", params=list(FRONTENDS))
def jupyterlab(request, tmp_path_factory):
    """A JupyterLab or Notebook 7 server on 127.0.0.1 serving a copy of the notebooks (the
    front-end saves what it runs, outputs included, and the repository keeps its notebooks
    clean). Yields the notebook's address and the front-end's name."""
    frontend = request.param
    command, notebook_path = FRONTENDS[frontend]
    root = tmp_path_factory.mktemp("lab")
    shutil.copytree(ROOT / "notebooks", root / "notebooks")
    (root / "sample_data").symlink_to(ROOT / "sample_data")
    env = server_env(
        tmp_path_factory,
        WORKBENCH_NOTEBOOK_STEPS="400",  # long enough to press Stop while it trains
        WORKBENCH_NOTEBOOK_HELD_OUT="4",
    )
    with jupyter_server(command, root, env, frontend) as address:
        yield f"{address}{notebook_path}", frontend


@pytest.fixture(scope="module")
def page(jupyterlab, chromium):
    page = chromium.new_page(viewport=VIEWPORT)
    yield page
    page.close()


def _shot(page, name: str) -> None:
    shot(page, name, PUBLISHED)


def _loss_points(page) -> int:
    """Points in the training-loss trace of the monitor's plotly figure, as the page has it."""
    return page.evaluate(
        """() => {
            const plot = document.querySelector('.wb-training-monitor .js-plotly-plot');
            return plot && plot.data && plot.data[0] && plot.data[0].x
                ? plot.data[0].x.length : -1;
        }"""
    )


def test_quickstart_runs_trains_stops_and_compares(jupyterlab, page):
    url, frontend = jupyterlab
    run_all_cells(page, url)

    for panel in (
        "wb-dataset-preview",
        "wb-template-editor",
        "wb-lora-form",
        "wb-training-monitor",
        "wb-compare-view",
        "wb-workbench",
    ):
        page.wait_for_selector(f".{panel}", timeout=180_000)
    scroll_to(page, ".wb-dataset-preview")
    _shot(page, f"{frontend}-1-dataset-preview")
    scroll_to(page, ".wb-template-editor")
    _shot(page, f"{frontend}-2-template-editor")
    scroll_to(page, ".wb-lora-form")
    _shot(page, f"{frontend}-3-lora-form")

    scroll_to(page, ".wb-training-monitor")
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

    scroll_to(page, ".wb-compare-view")  # the comparison runs by itself once the run stops
    page.wait_for_selector(".wb-compare-view table", timeout=180_000)
    header = page.locator(".wb-compare-view table").first.inner_text()
    assert "base" in header.lower() and "fine-tuned" in header.lower()
    _shot(page, f"{frontend}-6-compare")
    scroll_to(page, ".wb-workbench")
    _shot(page, f"{frontend}-7-workbench")
