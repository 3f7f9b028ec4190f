"""Who trains in a run directory: one owner at a time, through its `owner.lock` file.

A process that trains in a directory holds the lock (its pid, host and start time); another
process gets RunLockedError naming the holder. A lock left by a process that is gone (killed, or
a kernel restarted) is stale and taken over. `RunDirectory` (runs/directory.py, which owns the
directory's layout) takes these methods from `Ownership`.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from workbench.errors import RunLockedError
from workbench.runs.files import process_alive

LOCK = "owner.lock"  # held while a process trains in the directory


class Ownership:
    """The lock methods of a run directory (`self.path`, `self.file(name)`)."""

    path: Path

    def acquire(self) -> None:
        """Become the directory's one owner while training. Raises RunLockedError when a live
        process holds it; a lock left by a process that is gone is taken over."""
        path = self.file(LOCK)
        record = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                holder = self.lock_holder()
                if holder is not None and _owned_elsewhere(holder, path):
                    raise RunLockedError(self.path, holder, path) from None
                path.unlink(missing_ok=True)  # stale: its process is gone (or it is ours)
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(json.dumps(record))
            return
        raise RunLockedError(self.path, self.lock_holder() or {}, path)

    def release(self) -> None:
        """Give up ownership (only a lock this process holds)."""
        holder = self.lock_holder()
        if holder is not None and holder.get("pid") == os.getpid():
            self.file(LOCK).unlink(missing_ok=True)

    def lock_holder(self) -> dict[str, Any] | None:
        """Who holds the directory: {"pid", "host", "since"}, or None."""
        try:
            return json.loads(self.file(LOCK).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, UnicodeDecodeError):
            return {}  # being written this instant, or damaged: treated as held, then stale


def _owned_elsewhere(holder: dict[str, Any], path: Path) -> bool:
    """A lock held by another live process (or by another machine: never taken over)."""
    if not holder:  # unreadable: being written this instant, or left empty by a kill
        try:
            return time.time() - path.stat().st_mtime < 10
        except FileNotFoundError:
            return False
    if holder.get("host") != socket.gethostname():
        return True
    return holder.get("pid") != os.getpid() and process_alive(holder.get("pid"))
