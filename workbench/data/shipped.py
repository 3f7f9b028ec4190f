"""The files that ship with the workbench: the sample data and the example recipes.

In a source checkout they are the top-level `sample_data/` and `configs/` folders; an installed
wheel carries the same files inside the package (`workbench/sample_data/`, `workbench/configs/`,
mapped in pyproject.toml). Code finds them here, never through a path relative to its own file,
so moving a module cannot break the demo, and `python -m workbench preview
sample_data/unit_chat.jsonl` works from any folder.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent  # workbench/
SHIPPED_FOLDERS = ("sample_data", "configs")


def shipped_folder(name: str) -> Path:
    """The folder `sample_data` or `configs` as this installation has it."""
    if name not in SHIPPED_FOLDERS:
        raise ValueError(f"{name!r} is not shipped; the shipped folders are {SHIPPED_FOLDERS}.")
    for candidate in (PACKAGE / name, PACKAGE.parent / name):  # installed wheel, then checkout
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"The workbench's {name}/ folder is missing from this installation (looked in "
        f"{PACKAGE / name} and {PACKAGE.parent / name}). Reinstall with `pip install .` from a "
        "clone, or run from the clone with `pip install -e .`."
    )


def sample_file(name: str) -> Path:
    """A file of the shipped sample data, e.g. `sample_file("support_tickets.jsonl")`."""
    path = shipped_folder("sample_data") / name
    if not path.exists():
        raise FileNotFoundError(f"sample_data/{name} is not part of the shipped sample data.")
    return path


def find_path(path: str | Path) -> Path:
    """`path` as given when it exists; else, for `sample_data/...` or `configs/...`, the
    shipped copy, so the README's commands work from any working directory. A path found in
    neither is returned as given (the caller's own error names it)."""
    given = Path(path).expanduser()
    if given.exists() or given.is_absolute() or not given.parts:
        return given
    if given.parts[0] in SHIPPED_FOLDERS:
        try:
            shipped = shipped_folder(given.parts[0]).joinpath(*given.parts[1:])
        except FileNotFoundError:
            return given
        if shipped.exists():
            return shipped
    return given
