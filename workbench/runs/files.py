"""Writing files so that a process killed at any moment leaves the old content or the new,
never half of one, and telling a full disk or a dead process from other faults; reading the
YAML files people edit by hand (config.yaml, recipes) with the bad line named."""

from __future__ import annotations

import errno
import json
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError


def write_atomic(path: Path, text: str) -> None:
    """Write to a temporary name in the same folder, then rename: readers see old or new."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # per process and thread: the training thread and a Stop click can write status.json at once
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk must not leave empty temporaries behind
        raise


def save_atomic_dir(save: Callable[[Path], None], target: Path) -> None:
    """Save into a temporary folder, then swap it into `target` (never half-written)."""
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        save(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


def json_line(record: Any) -> str:
    return json.dumps(record, ensure_ascii=False) + "\n"


def append_line(path: Path, line: str) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(line + "\n")
        handle.flush()


def process_alive(pid: Any) -> bool:
    """Whether a process with this id runs on this machine."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    except OSError:
        return False
    return True


def caused_by_full_disk(error: BaseException | None) -> bool:
    """ENOSPC anywhere in the chain, or the messages torch and safetensors give for it."""
    while error is not None:
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            return True
        text = str(error)
        if "No space left on device" in text or "unexpected pos" in text:
            return True
        error = error.__cause__ or error.__context__
    return False


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """A YAML file that must hold a mapping of settings; a syntax error names its line."""
    import yaml

    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise WorkbenchError(
            f"{path}{line}: not valid YAML ({problem}). Fix that line (a value with ':' "
            "or '#' needs quotes), or restore the file from a copy."
        ) from None
    if not isinstance(config, dict):
        raise WorkbenchError(f"{path}: expected a mapping of settings, not {config!r}.")
    return config
