"""Mesoscopic photogrammetry engine (PyTorch): phone photos -> orthomosaic + height map.

Public API:

* :func:`run_meso` -- images on disk -> reconstruction + files.
* :func:`reconstruct` -- in-memory :class:`MesoImages` -> :class:`MesoReconstruction`.
* :class:`MesoConfig` -- every setting (dataclasses, round-trips to YAML).
* :func:`evaluate_regions` -- the paper's Table-1 accuracy/precision protocol.

Layers (see ``design.md``): ``functional/`` (pure torch math) <- ``models/`` (parameter containers) <-
``engine`` / ``optim/`` (loss, rounds) <- ``reconstruct`` / ``pipeline`` / ``outputs``.
"""

from topograph.meso.config import MesoConfig
from topograph.meso.data import load_images
from topograph.meso.evaluate import evaluate_regions
from topograph.meso.pipeline import run_meso
from topograph.meso.reconstruct import MesoReconstruction, reconstruct
from topograph.meso.types import MesoImages

__all__ = [
    "MesoConfig",
    "MesoImages",
    "MesoReconstruction",
    "evaluate_regions",
    "load_images",
    "reconstruct",
    "run_meso",
]
