"""Pairwise matching: the :class:`Matcher` interface and its registry (``sift``, ``dense``, ``roma``).

The names below load on first use (PEP 562): taking any but the settings imports the matchers, which
registers the built-ins; ``roma`` imports its optional backend (``romatch``) only when it is created. The matchers'
settings live in the OpenCV-free :mod:`topograph.matching.config`, so configurations and the command
line's start-up do not import OpenCV.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "DenseConfig": "config",
    "RomaConfig": "config",
    "SiftConfig": "config",
    "Matcher": "base",
    "create_matcher": "base",
    "matchers": "base",
    "DenseFlow": "dense",
    "DenseMatcher": "dense",
    "dense_flow": "dense",
    "RomaMatcher": "roma",
    "SiftFeatures": "sift",
    "SiftMatcher": "sift",
}
_BUILTINS = ("dense", "roma", "sift")

__all__ = sorted([*_HOMES, *_BUILTINS, "register_builtins"])


def register_builtins() -> None:
    """Import the built-in matchers (each registers itself in :data:`topograph.matching.base.matchers`)."""
    for name in _BUILTINS:
        importlib.import_module(f"topograph.matching.{name}")


def __getattr__(name: str) -> Any:
    if name in _BUILTINS:
        register_builtins()
        return importlib.import_module(f"topograph.matching.{name}")
    if name in _HOMES:
        if _HOMES[name] != "config":  # the settings come without the matchers (and OpenCV)
            register_builtins()
        return getattr(importlib.import_module(f"topograph.matching.{_HOMES[name]}"), name)
    raise AttributeError(f"module 'topograph.matching' has no attribute {name!r}")
