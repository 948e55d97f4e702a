"""Mesoscopic photogrammetry engine (PyTorch): phone photos -> orthomosaic + height map.

Public API:

* :func:`run_meso` -- images on disk -> reconstruction + files.
* :func:`reconstruct` -- in-memory :class:`MesoImages` -> :class:`MesoReconstruction`.
* :class:`MesoConfig` -- every setting (dataclasses, round-trips to YAML).
* :func:`evaluate_regions` -- the paper's Table-1 accuracy/precision protocol.

Layers (see ``docs/design-meso.md``): ``functional/`` (pure torch math) <- ``models/`` (parameter
containers) <- ``flow/`` (dense matches, camera refinement, flow heights) <- ``optimise/`` (rounds, solver,
loss, checkpoints) <- ``reconstruct`` (orchestration; ``quality``, ``gauge``, ``mosaic``) <- ``pipeline`` /
``outputs``. Evaluation lives in :mod:`topograph.analysis.evaluate_meso`.
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> module; loaded on first use so that ``topograph.meso.config`` (and MesoConfig) import without
# PyTorch, and a missing PyTorch gives one line naming the ``meso`` extra.
_LAZY = {
    "MesoConfig": "topograph.meso.config",
    "MesoImages": "topograph.meso.types",
    "evaluate_regions": "topograph.analysis.evaluate_meso",
    "load_images": "topograph.meso.data",
    "run_meso": "topograph.meso.pipeline",
    "MesoReconstruction": "topograph.meso.reconstruct",
    "reconstruct": "topograph.meso.reconstruct",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'topograph.meso' has no attribute '{name}'")
    if name != "MesoConfig":
        from topograph import require_torch

        require_torch()
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value
