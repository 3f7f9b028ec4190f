"""Training processes for the fault tests that start in a fraction of a second.

A new Python process spends about 5 CPU-seconds importing torch, transformers, peft and TRL
before it trains its first step; the fault battery starts three processes for every kind of
run. Here each process is forked from a server process that has done those imports once
(`multiprocessing`'s forkserver, one per pytest worker). A child is still a process of its own:
SIGKILL leaves exactly what it leaves for a killed training run, and a resume starts in a
process that never trained. The server itself never runs a torch operation, so no thread pool
is forked.
"""

from __future__ import annotations

import multiprocessing
import os
import traceback
from multiprocessing import forkserver
from pathlib import Path

_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload(["preloaded"])  # tests/preloaded.py: the slow imports


def _server() -> None:
    """Start the server once, with this folder on its path (Python 3.11's forkserver does not
    pass sys.path to the server, which then skips a preload it cannot import, silently)."""
    before = os.environ.get("PYTHONPATH")
    here = str(Path(__file__).resolve().parent)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (here, before) if p)
    try:
        forkserver.ensure_running()
    finally:
        if before is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = before


def _main(target, args, errors: str) -> None:
    try:
        target(*args)
    except BaseException:
        Path(errors).write_text(traceback.format_exc(), encoding="utf-8")
        raise SystemExit(1) from None


class Child:
    """`target(*args)` in a forked process; the Popen-like calls the fault tests use."""

    def __init__(self, target, *args, errors: Path):
        self.errors = Path(errors)
        self.errors.unlink(missing_ok=True)
        _server()
        self.process = _CONTEXT.Process(target=_main, args=(target, args, str(self.errors)))
        self.process.start()

    def poll(self) -> int | None:
        return self.process.exitcode

    def kill(self) -> None:
        self.process.kill()

    def wait(self, timeout: float | None = None) -> int | None:
        self.process.join(timeout)
        return self.process.exitcode

    def finished(self, timeout: float = 300) -> None:
        """Wait for the child and fail with its traceback unless it exited 0."""
        code = self.wait(timeout)
        text = self.errors.read_text(encoding="utf-8") if self.errors.exists() else ""
        assert code == 0, f"the child exited {code}:\n{text[-3000:]}"
