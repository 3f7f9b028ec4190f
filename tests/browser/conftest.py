"""What the browser tests share: a Jupyter server on loopback serving a folder of notebooks,
Debian's Chromium with one page, the console errors that page logged, screenshots, and the
plotly plots read back from the page.

tests/browser/ is a package (its `__init__.py`), so this file imports as `browser.conftest`
and leaves the `conftest` of tests/ (ROOT, the tiny model) to the test modules that import it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = ROOT / "test-artifacts" / "browser"
VIEWPORT = {"width": 1400, "height": 1000}  # the width the issues' screenshots were taken at
TOKEN = "workbench-browser-test"
NEEDS_CHROMIUM = pytest.mark.skipif(
    CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium); CI installs it"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def jupyter_server(command: str, root: Path, env: dict[str, str], log_name: str) -> Iterator[str]:
    """`jupyter lab` or `jupyter notebook` on 127.0.0.1 serving `root`, with `env`; yields the
    server's address. Its log goes to test-artifacts/browser/<log_name>.log."""
    port = free_port()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log_path = ARTIFACTS / f"{log_name}.log"
    with open(log_path, "w") as log:
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
                f"--IdentityProvider.token={TOKEN}",
                f"--ServerApp.root_dir={root}",
                *(["--LabApp.news_url="] if command == "lab" else []),
                "--ServerApp.disable_check_xsrf=False",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.time() + 90
            while time.time() < deadline:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.5)
            else:
                pytest.fail(f"jupyter {command} did not start; see {log_path}")
            yield f"http://127.0.0.1:{port}"
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()


def server_env(tmp_path_factory, **extra: str) -> dict[str, str]:
    """The environment of a test server: runs and Jupyter's settings in temporary folders, one
    torch thread (the machine's cores are shared with the browser and the server)."""
    env = dict(
        os.environ,
        WORKBENCH_RUNS=str(tmp_path_factory.mktemp("runs")),
        JUPYTER_CONFIG_DIR=str(tmp_path_factory.mktemp("jupyter-config")),
        OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"),
        **extra,
    )
    env.pop("WORKBENCH_NOTEBOOK_WAIT", None)
    return env


@pytest.fixture(scope="module")
def chromium():
    """Debian's Chromium, driven by playwright (its own browser download does not work here)."""
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class ConsoleErrors:
    """Every console message of type error and every uncaught exception of a page, in order."""

    def __init__(self, page) -> None:
        self.messages: list[str] = []
        self._reported = 0
        page.on("console", self._on_console)
        page.on("pageerror", lambda error: self.messages.append(f"pageerror: {error}"))

    def _on_console(self, message) -> None:
        if message.type == "error":
            self.messages.append(f"console.error: {message.text}")

    def unexpected(self, ignored: dict[str, str]) -> list[str]:
        """The messages since the last call that contain none of `ignored`'s keys (the values
        say why each is unrelated to the panels): each step hears of its own errors."""
        new, self._reported = self.messages[self._reported :], len(self.messages)
        return [m for m in new if not any(part in m for part in ignored)]


def shot(page, name: str, published: dict[str, str] | None = None) -> Path:
    """A screenshot in test-artifacts/browser/<name>.png; with WORKBENCH_SCREENSHOTS set (a
    folder, `make screenshots`) the ones `published` names are copied there too."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=False)
    folder = os.environ.get("WORKBENCH_SCREENSHOTS")
    if folder and published and name in published:
        target = ROOT / folder / published[name]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    return path


def plot_traces(page, selector: str) -> list[list[dict]]:
    """The plotly plots inside the first element matching `selector`, as the page holds them:
    for each `.js-plotly-plot`, its traces' name, point count and visibility (`points` is -1
    when a trace's x is not an array: a plot plotly could not draw)."""
    return page.evaluate(
        """(selector) => {
            const root = document.querySelector(selector);
            if (!root) return [];
            return Array.from(root.querySelectorAll('.js-plotly-plot')).map((plot) =>
                Array.isArray(plot.data) ? plot.data.map((trace) => ({
                    name: trace.name,
                    points: trace.x && trace.x.length !== undefined ? trace.x.length : -1,
                    visible: trace.visible === undefined ? true : trace.visible,
                })) : []);
        }""",
        selector,
    )


def points_of(page, selector: str, name: str) -> int:
    """Points in the trace called `name` of the first plot inside `selector` (-1: no such
    trace or no plot yet)."""
    plots = plot_traces(page, selector)
    traces = [t for t in (plots[0] if plots else []) if t["name"] == name]
    return traces[0]["points"] if traces else -1


def output_tracebacks(page) -> list[str]:
    """The text of every cell output, and every panel's error area, that holds a traceback."""
    return page.evaluate(
        """() => Array.from(document.querySelectorAll('.jp-OutputArea-output'))
            .map((output) => output.innerText)
            .filter((text) => /Traceback \\(most recent call last\\)|File ".*", line \\d+/
                .test(text))"""
    )


def scroll_to(page, selector: str) -> None:
    page.locator(selector).first.scroll_into_view_if_needed()
    page.wait_for_timeout(300)


def run_all_cells(page, url: str) -> None:
    """Open a notebook at `url` (with the token) and run all its cells, as a person would."""
    page.goto(f"{url}?token={TOKEN}")
    page.wait_for_selector(".jp-Notebook", timeout=60_000)
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=90_000)
    news = page.get_by_role("button", name="No", exact=True)  # "notified about Jupyter news?"
    if news.count():
        news.first.click()
    page.locator(".jp-CodeCell").first.click()  # Run All acts on the focused notebook
    page.keyboard.press("Escape")
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_text("Run All Cells", exact=True).click()


def wait_idle(page, timeout_s: float = 300) -> None:
    """Wait until the kernel has run every queued cell."""
    page.wait_for_timeout(500)
    page.wait_for_selector(
        ".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=timeout_s * 1000
    )
