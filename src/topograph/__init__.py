"""topograph: measured 3D from close-range images (SEM tilt series and mesoscopic phone photogrammetry).

The Python API::

    from topograph import run_sem, SemConfig
    run = run_sem(["a.tif", "b.tif", "c.tif"], "out/", SemConfig())
    print(run.summary["reprojection_rms_px_after"])

    from topograph import run_meso, MesoConfig      # needs the `meso` extra (PyTorch)
    run = run_meso(photos, "out/", MesoConfig())
    print(run.summary["status"], run.files["height_tif"])

Both return a frozen run record (:class:`topograph.run_record.RunRecord`: ``status``, ``warnings``,
``timings_s``, ``summary`` ...) with the engine's typed results.

Names are imported on first use (PEP 562), so ``import topograph`` is cheap and the SEM engine never
imports PyTorch; asking for a meso name without PyTorch installed raises
:class:`~topograph.errors.OptionalDependencyError` naming the ``meso`` extra.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

from topograph.errors import OptionalDependencyError, QualityError, TopographError
from topograph.logs import install_filters

__version__ = "0.1.0"

install_filters()

# name -> (module, whether the module needs PyTorch)
_LAZY: dict[str, tuple[str, bool]] = {
    "run_sem": ("topograph.sem.pipeline", False),
    "SemRun": ("topograph.sem.pipeline", False),
    "SemConfig": ("topograph.sem.config", False),
    "MetadataOverrides": ("topograph.io.sidecar", False),
    "MesoConfig": ("topograph.meso.config", False),
    "run_meso": ("topograph.meso.pipeline", True),
    "MesoRun": ("topograph.meso.pipeline", True),
    "MesoReconstruction": ("topograph.meso.reconstruct", True),
    "write_report": ("topograph.report.html", False),
}

_ENTRY_POINTS = {"run_sem", "run_meso"}

__all__ = [
    "MesoConfig",
    "MesoReconstruction",
    "MesoRun",
    "MetadataOverrides",
    "OptionalDependencyError",
    "QualityError",
    "SemConfig",
    "SemRun",
    "TopographError",
    "__version__",
    "run_meso",
    "run_sem",
    "write_report",
]

if TYPE_CHECKING:  # for type checkers and IDEs only; at run time the names load lazily
    from topograph.io.sidecar import MetadataOverrides
    from topograph.meso.config import MesoConfig
    from topograph.meso.pipeline import MesoRun, run_meso
    from topograph.meso.reconstruct import MesoReconstruction
    from topograph.report.html import write_report
    from topograph.sem.config import SemConfig
    from topograph.sem.pipeline import SemRun, run_sem


def require_torch(feature: str = "the meso engine") -> None:
    """Raise :class:`OptionalDependencyError` naming the ``meso`` extra when PyTorch is not installed."""
    try:
        found = importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):  # a broken or blocked install counts as absent
        found = False
    if not found:
        raise OptionalDependencyError("torch", feature, extra="meso")


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'topograph' has no attribute '{name}'")
    module, needs_torch = _LAZY[name]
    if needs_torch:
        require_torch()
    value = getattr(importlib.import_module(module), name)
    if name in _ENTRY_POINTS:
        from topograph.hints import api_entry

        value = api_entry(value)  # messages name Python arguments, not --flags
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
