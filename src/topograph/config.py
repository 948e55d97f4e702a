"""Configuration as nested dataclasses that round-trip to plain YAML.

* ``to_dict`` / ``to_yaml`` write plain types only (``yaml.safe_dump``; no python tags).
* ``from_dict`` / ``from_yaml`` read with the safe loader and reject unknown keys, naming them.
* ``apply_overrides`` sets dotted keys (``"matching.sift.ratio=0.8"``), as the CLI does for its flags.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from topograph.errors import TopographError

T = TypeVar("T")


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain-dict form of a (nested) config dataclass; tuples become lists."""

    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        if isinstance(v, Path):
            return str(v)
        return v

    return conv(cfg)


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if value is None:
        return None
    if origin in (typing.Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        for a in non_none:
            try:
                return _coerce(a, value, key)
            except (TypeError, ValueError, TopographError):
                continue
        raise TopographError(f"config key '{key}' has an invalid value {value!r}", f"expected {tp}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise TopographError(f"config key '{key}' must be a mapping", "see `topograph config show`")
        return from_dict(tp, value, prefix=f"{key}.")
    if origin is dict:
        if not isinstance(value, dict):
            raise TopographError(
                f"config key '{key}' must be a mapping, got {value!r}", f"write {key}: {{name: value}}"
            )
        return dict(value)
    if origin in (tuple, list):
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise TopographError(f"config key '{key}' must be a list, got {value!r}", "write it as [a, b, c]")
        inner = args[0] if args else Any
        items = [_coerce(inner, v, key) for v in value]
        return tuple(items) if origin is tuple else items
    if origin is typing.Literal:
        if value not in args:
            raise TopographError(
                f"config key '{key}' must be one of {', '.join(map(str, args))}, got {value!r}",
                "pick one of the listed values",
            )
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        low = str(value).strip().lower()
        if low in ("true", "1", "yes", "on"):
            return True
        if low in ("false", "0", "no", "off"):
            return False
        raise TopographError(f"config key '{key}' must be true or false, got {value!r}", f"write {key}: true")
    if tp in (int, float, str):
        if tp is int and isinstance(value, float) and not value.is_integer():
            raise TopographError(f"config key '{key}' must be an integer, got {value!r}", "give a whole number")
        if tp in (int, float) and (isinstance(value, (bool, dict, list, tuple))):
            raise TopographError(f"config key '{key}' must be a number, got {value!r}", f"write {key}: <number>")
        if tp is str and isinstance(value, (dict, list, tuple)):
            raise TopographError(f"config key '{key}' must be a text value, got {value!r}", "write one word")
        try:
            return tp(value)
        except (TypeError, ValueError) as exc:
            raise TopographError(
                f"config key '{key}' has an invalid value {value!r}", f"expected {tp.__name__}"
            ) from exc
    if tp is Path:
        return Path(value)
    return value


RENAMED_KEYS: dict[str, str] = {
    "matching.ratio": "matching.sift.ratio",
    "matching.detect_max_side": "matching.sift.max_image_side",
    "matching.roma_weights": "matching.roma.weights",
    "matching.roma_dinov2_weights": "matching.roma.dinov2_weights",
}
"""Configuration keys that were renamed (old dotted key -> new one), so an old config file or ``--set`` is
told the new name instead of only "unknown"."""


def _unknown_key(dotted: str, fix: str) -> TopographError:
    """The error for an unknown key; a renamed key names its new spelling."""
    new = RENAMED_KEYS.get(dotted)
    if new is not None:
        return TopographError(f"configuration key '{dotted}' was renamed to '{new}'", f"write '{new}' instead")
    return TopographError(f"unknown configuration key '{dotted}'", fix)


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build config ``cls`` from a plain dict; unknown keys raise a :class:`TopographError`."""
    if not isinstance(data, dict):
        raise TopographError(f"configuration '{prefix or 'root'}' must be a mapping", "check the YAML file")
    hints = _field_types(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise _unknown_key(f"{prefix}{unknown[0]}", f"valid keys here: {', '.join(sorted(names))}")
    kwargs = {k: _coerce(hints[k], v, f"{prefix}{k}") for k, v in data.items()}
    return cls(**kwargs)


def to_yaml(cfg: Any) -> str:
    """Plain YAML text of a config (safe_dump, no python object tags)."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True)


def from_yaml(cls: type[T], text_or_path: str | Path) -> T:
    """Load config ``cls`` from YAML text or a file path (safe loader, strict keys)."""
    if isinstance(text_or_path, Path) or (
        isinstance(text_or_path, str) and "\n" not in text_or_path and text_or_path.endswith((".yaml", ".yml"))
    ):
        path = Path(text_or_path)
        if not path.is_file():
            raise TopographError(f"configuration file not found: {path}", "check the path given to --config")
        text = path.read_text(encoding="utf-8")
    else:
        text = str(text_or_path)
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise TopographError(f"configuration is not valid YAML: {yaml_error_line(exc)}", "fix the syntax") from exc
    return from_dict(cls, data)


def yaml_error_line(exc: Exception) -> str:
    """One line for a YAML parse error (PyYAML's own message spans several lines with a code excerpt)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return " ".join(f"{where}{problem}".split())


def apply_overrides(cfg: T, overrides: dict[str, Any]) -> T:
    """Return a copy of ``cfg`` with dotted keys replaced (``{"matching.sift.ratio": 0.8}``).

    ``None`` values are skipped, so unset CLI options leave the config alone.
    """
    data = to_dict(cfg)
    for dotted, value in overrides.items():
        if value is None:
            continue
        node = data
        parts = dotted.split(".")
        for p in parts[:-1]:
            if p not in node or not isinstance(node[p], dict):
                raise _unknown_key(dotted, "see `topograph config show`")
            node = node[p]
        if parts[-1] not in node:
            raise _unknown_key(dotted, "see `topograph config show`")
        node[parts[-1]] = to_dict(value) if dataclasses.is_dataclass(value) else value
    return from_dict(type(cfg), data)


def field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings of a dataclass (the string literal under each field), read from its source."""
    import ast
    import inspect
    import textwrap

    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        return {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    docs: dict[str, str] = {}
    for prev, node in zip(body, body[1:], strict=False):
        if (
            isinstance(prev, ast.AnnAssign)
            and isinstance(prev.target, ast.Name)
            and isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            docs[prev.target.id] = " ".join(node.value.value.split())
    return docs


def to_commented_yaml(cfg: Any, indent: int = 0) -> str:
    """YAML of a config with each key's documentation as a comment above it (loads back with from_yaml)."""
    lines: list[str] = []
    pad = "  " * indent
    docs = field_docs(type(cfg))
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if f.name in docs:
            lines.append(f"{pad}# {docs[f.name]}")
        if dataclasses.is_dataclass(value):
            lines.append(f"{pad}{f.name}:")
            lines.append(to_commented_yaml(value, indent + 1).rstrip("\n"))
        else:
            dumped = yaml.safe_dump({f.name: to_dict(value)}, default_flow_style=True, allow_unicode=True).strip()
            lines.append(f"{pad}{dumped.strip('{}')}")
    return "\n".join(lines) + "\n"
