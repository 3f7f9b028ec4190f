"""Shared behaviour of settings dataclasses: dict and YAML round-trips rejecting unknown keys."""

from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any, TypeVar

from workbench.errors import WorkbenchError

T = TypeVar("T", bound="Settings")


class Settings:
    """Mixin for dataclasses: `to_dict`, `from_dict` (unknown keys are errors), YAML I/O."""

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(
        cls: type[T], values: dict[str, Any], where: str | None = None, key: str | None = None
    ) -> T:
        """Build from plain values (a YAML mapping). Unknown keys, values of the wrong type and
        invalid values are reported together, naming `where` (a file) and the key path
        (`key.field`) with the fix."""
        if not isinstance(values, dict):
            raise WorkbenchError(
                f"{where or cls.__name__}: `{key or cls.__name__}` must be a mapping of "
                f"settings (name: value), not {type(values).__name__}."
            )
        converted, problems = cls.convert(values, key)
        place = f"{where}: " if where else ""
        if problems:
            raise WorkbenchError(
                f"{place}invalid {key or cls.__name__}:\n  - " + "\n  - ".join(problems)
            )
        try:
            return cls(**converted)
        except WorkbenchError as error:  # the class's own checks, which name each field
            if not place and not key:
                raise
            raise WorkbenchError(f"{place}in `{key or cls.__name__}`: {error}") from None

    @classmethod
    def convert(
        cls, values: dict[str, Any], key: str | None = None
    ) -> tuple[dict[str, Any], list[str]]:
        """(the values converted to their declared types, a problem for each unknown key or
        value of the wrong type). Values with a problem are left out, so the class's own
        checks can still run on the rest and every problem is found at once."""
        prefix = f"{key}." if key else ""
        known = {f.name for f in dataclasses.fields(cls)}
        hints = typing.get_type_hints(cls)
        problems = [
            f"`{prefix}{name}` is not a setting of {cls.__name__}; known: "
            f"{', '.join(sorted(known))}.{_did_you_mean(str(name), known, prefix)}"
            for name in sorted(set(values) - known, key=str)
        ]
        converted = {}
        for name, value in values.items():
            if name in known:
                value, problem = _as_type(hints[name], value)
                if problem:
                    problems.append(f"`{prefix}{name}`={values[name]!r}: {problem}")
                else:
                    converted[name] = value
        return converted, problems

    def check_values(self) -> None:
        """Raise on values of the wrong type or non-finite numbers, before the class's own
        checks compare them (which would fail with a bare TypeError, or only mid-run)."""
        hints = typing.get_type_hints(type(self))
        problems = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            _, problem = _as_type(hints[f.name], value)
            if problem:
                problems.append(f"`{f.name}`={value!r}: {problem}")
            elif isinstance(value, float) and not math.isfinite(value):
                problems.append(f"`{f.name}`={value} must be a finite number.")
        if problems:
            raise WorkbenchError(f"Invalid {type(self).__name__}:\n  - " + "\n  - ".join(problems))

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def replace(self: T, **changes: Any) -> T:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_code(self, variable: str, prefix: str = "") -> str:
        """`variable = Class(field=value, ...)`, listing only fields that differ from defaults;
        `prefix` names the module the class is reached through (`"wb."`: `wb.Method(...)`)."""
        changed = []
        for f in dataclasses.fields(self):
            default = f.default
            if default is dataclasses.MISSING and f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            value = getattr(self, f.name)
            if value != default:
                changed.append(f"{f.name}={value!r}")
        return f"{variable} = {prefix}{type(self).__name__}({', '.join(changed)})"

    def help(self) -> dict[str, str]:
        """Each field's one-line explanation."""
        return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(self)}

    @classmethod
    def field_text(cls, name: str) -> tuple[str, str]:
        """(label, help) of field `name` in plain words, as the panels show them: its `label`
        metadata or its name in words ('batch_size' -> 'Batch size'), and its `help` (the
        tooltip). The library's docs and the panels say the same thing."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if name not in fields:
            raise KeyError(f"{name!r} is not a setting of {cls.__name__}")
        metadata = fields[name].metadata
        label = metadata.get("label") or name.replace("_", " ").capitalize()
        return label, metadata.get("help", "")


def _did_you_mean(name: str, known: set[str], prefix: str = "") -> str:
    """' Did you mean `prefix.closest`?' for a mistyped setting, or '' when none is close."""
    import difflib

    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    return f" Did you mean `{prefix}{close[0]}`?" if close else ""


def _plain(value: Any) -> Any:
    if isinstance(value, Settings):
        return value.to_dict()
    if isinstance(value, tuple):
        return list(value)
    return value


def _as_type(kind: Any, value: Any) -> tuple[Any, str | None]:
    """`value` converted to the declared type (YAML reads `2e-4` as text, `8` as an int for a
    float field), or a problem saying what is expected."""
    options = typing.get_args(kind)
    if typing.get_origin(kind) is typing.Literal:
        return (
            value,
            None if value in options else f"choose one of {', '.join(map(repr, options))}.",
        )
    if type(None) in options:  # X | None
        if value is None:
            return None, None
        kind = next(option for option in options if option is not type(None))
    if kind is bool:
        return value, None if isinstance(value, bool) else "must be true or false."
    if kind is float:
        try:
            return float(value), None if not isinstance(value, bool) else "must be a number."
        except (TypeError, ValueError):
            return value, "must be a number (for example 2e-4)."
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
            return value, "must be a whole number (for example 16)."
        return int(value), None
    if kind is str:
        return value, None if isinstance(value, str) else "must be text."
    return value, None
