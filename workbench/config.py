"""Shared behaviour of settings dataclasses: dict and YAML round-trips rejecting unknown keys."""

from __future__ import annotations

import dataclasses
import os
import threading
from pathlib import Path
from typing import Any, TypeVar

from workbench.errors import WorkbenchError

T = TypeVar("T", bound="Settings")


class Settings:
    """Mixin for dataclasses: `to_dict`, `from_dict` (unknown keys are errors), YAML I/O."""

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls: type[T], values: dict[str, Any], where: str | None = None) -> T:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise WorkbenchError(
                f"{where or cls.__name__}: unknown setting(s) {', '.join(unknown)} for "
                f"{cls.__name__}; known: {', '.join(sorted(known))}."
            )
        return cls(**values)

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def replace(self: T, **changes: Any) -> T:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_code(self, variable: str) -> str:
        """`variable = Class(field=value, ...)`, listing only fields that differ from defaults."""
        changed = []
        for f in dataclasses.fields(self):
            default = f.default
            if default is dataclasses.MISSING and f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            value = getattr(self, f.name)
            if value != default:
                changed.append(f"{f.name}={value!r}")
        return f"{variable} = {type(self).__name__}({', '.join(changed)})"

    def help(self) -> dict[str, str]:
        """Each field's one-line explanation."""
        return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(self)}


def _plain(value: Any) -> Any:
    if isinstance(value, Settings):
        return value.to_dict()
    if isinstance(value, tuple):
        return list(value)
    return value


def write_atomic(path: Path, text: str) -> None:
    """Write to a temporary name in the same folder, then rename: readers see old or new."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # per process and thread: the training thread and a Stop click can write status.json at once
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
