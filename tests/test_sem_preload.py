"""The SEM run imports its later third-party modules in a thread beside the sparse stages."""

from __future__ import annotations

import sys

from topograph.sem.pipeline import MESH_MODULES, later_modules, preload_modules


def test_preload_imports_what_it_can_and_leaves_failures_to_the_caller() -> None:
    sys.modules.pop("colorsys", None)
    thread = preload_modules(["topograph_no_such_module", "colorsys"])
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert "colorsys" in sys.modules  # the failing name before it did not stop the thread


def test_later_modules_follow_the_dense_stage() -> None:
    assert later_modules(dense=False) == ()
    assert later_modules(dense=True) == MESH_MODULES
