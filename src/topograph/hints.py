"""Messages phrased for whoever called: command-line flags for the CLI, arguments for Python callers.

Messages in the engines name the command-line option that fixes a problem (``give --pixel-size-um``).
A caller of the Python API (``topograph.run_sem``, ``topograph.run_meso``) has no such option, so while
those run, :func:`phrase` rewrites each known flag into the argument or configuration key that does the
same. The API entry points mark the run with :func:`python_api`, the CLI with :func:`cli_active` (a context
variable: each thread or worker keeps its own); everywhere else messages stay as written.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import re
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

_INTERFACE: contextvars.ContextVar[str] = contextvars.ContextVar("topograph_interface", default="unknown")

# CLI flag (with an optional value pattern) -> the Python argument or config key that does the same.
PYTHON_EQUIVALENTS: dict[str, str] = {
    "--pixel-size-um": "overrides=MetadataOverrides(pixel_size_um=...)",
    "--tilts": "overrides=MetadataOverrides(tilts_deg=[...])",
    "--tilt-axis-deg": "overrides=MetadataOverrides(tilt_axis_deg=...)",
    "--sidecar": "sidecar=PATH",
    "--flip-relief": "SemConfig cameras.flip_relief=True",
    "--cameras": "SemConfig cameras.source",
    "--mask": "SemConfig dense.mask",
    "--crop": "SemConfig load.crop_rows",
    "--matcher": "SemConfig matching.matcher",
    "--fb-threshold": "SemConfig dense.fb_threshold_px",
    "--sparse-only": "SemConfig dense.enabled=False",
    "--no-cache": "use_cache=False",
    "--focal-mm": "MesoConfig scale.focal_mm",
    "--pixel-pitch-um": "MesoConfig scale.pixel_pitch_um",
    "--magnification": "MesoConfig scale.magnification",
    "--scale-points": "MesoConfig scale.scale_points",
    "--scale-distance-mm": "MesoConfig scale.scale_distance_mm",
    "--reference-image": "MesoConfig scale.reference_image",
    "--regularizer": "MesoConfig heights.model",
    "--tv-weight": "MesoConfig loss.tv_weight",
    "--batch-size": "MesoConfig batching.batch_size",
    "--device": "MesoConfig device",
    "--resume": "resume=True",
}

# Plain words that mean the command line -> what a Python caller passes instead.
PYTHON_WORDS: dict[str, str] = {
    "the command-line tilt list": "overrides.tilts_deg",
    "command-line tilt list": "overrides.tilts_deg",
    "command line": "overrides",
}

_FLAG = re.compile(
    r"(?<![\w-])(--[a-z][a-z0-9-]*)"
    r"(?:[ =]([-+]?\d[\d.,eE+-]*\d|[-+]?\d|auto|metadata|factorization|sift|dense|roma|cnn|tv|cpu|cuda)(?![\w]))?"
)


def is_cli() -> bool:
    """True while the ``topograph`` command line runs."""
    return _INTERFACE.get() == "cli"


def is_python_api() -> bool:
    """True while a Python API entry point (``topograph.run_sem`` …) runs outside the command line."""
    return _INTERFACE.get() == "python-api"


@contextlib.contextmanager
def cli_active() -> Iterator[None]:
    """Mark the current context as the command line (messages keep their ``--flags``)."""
    token = _INTERFACE.set("cli")
    try:
        yield
    finally:
        _INTERFACE.reset(token)


def enter_cli() -> contextvars.Token[str]:
    """Mark the rest of the current context as the command line; undo with ``_INTERFACE.reset(token)``."""
    return _INTERFACE.set("cli")


def leave(token: contextvars.Token[str]) -> None:
    """Undo :func:`enter_cli`."""
    _INTERFACE.reset(token)


@contextlib.contextmanager
def python_api() -> Iterator[None]:
    """Mark a Python API call (messages name arguments), unless the command line made the call."""
    if is_cli():
        yield
        return
    token = _INTERFACE.set("python-api")
    try:
        yield
    finally:
        _INTERFACE.reset(token)


def api_entry(function: Callable[..., T]) -> Callable[..., T]:
    """``function`` run inside :func:`python_api` (same name, docstring and signature)."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        with python_api():
            return function(*args, **kwargs)

    return wrapper


def phrase(text: str) -> str:
    """``text`` as is, except inside a Python API call, where each known ``--flag [value]`` becomes its Python
    equivalent.

    Example: ``"give --pixel-size-um for µm"`` → ``"give overrides=MetadataOverrides(pixel_size_um=...)
    for µm"``. Unknown flags are left as they are.
    """
    if not is_python_api():
        return text
    for words, python in PYTHON_WORDS.items():
        text = text.replace(words, python)
    if "--" not in text:
        return text

    def swap(m: re.Match[str]) -> str:
        python = PYTHON_EQUIVALENTS.get(m.group(1))
        if python is None:
            return m.group(0)
        value = m.group(2)
        # A value given with the flag (--tilts 0,5,10) is carried over when the equivalent has a slot.
        if value and "..." in python:
            return python.replace("...", value if value[0].isdigit() or value[0] in "+-" else repr(value))
        if value and "=" not in python:
            return f"{python}={value!r}" if value[0].isalpha() else f"{python}={value}"
        return python

    return _FLAG.sub(swap, text)
