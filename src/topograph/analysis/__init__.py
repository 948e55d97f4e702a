"""Measurements on reconstructions: grain shape metrics, areal surface parameters, meshing (the preview
figures are drawn in :mod:`topograph.report.render`).

* :mod:`~topograph.analysis.mesh` — height-field meshes, closure of a visible top into a solid, clipping,
  cloud → grid → mesh, mesh read/write.
* :mod:`~topograph.analysis.grain` — :func:`grain_metrics` of a closed mesh (volume, sphericity, L/I/S, Feret).
* :mod:`~topograph.analysis.surface` — form removal and ISO 25178-2 style :func:`areal_parameters`.
"""

from topograph.analysis.grain import GrainMetrics, grain_metrics
from topograph.analysis.mesh import (
    clip_above,
    close_with_base,
    heightfield_mesh,
    mesh_from_cloud_heightfield,
    rasterize_cloud,
    read_geometry,
    solid_from_cloud,
    solid_from_open_mesh,
    write_mesh,
)
from topograph.analysis.surface import ArealParameters, areal_parameters, remove_form

__all__ = [
    "ArealParameters",
    "GrainMetrics",
    "areal_parameters",
    "clip_above",
    "close_with_base",
    "grain_metrics",
    "heightfield_mesh",
    "mesh_from_cloud_heightfield",
    "rasterize_cloud",
    "read_geometry",
    "remove_form",
    "solid_from_cloud",
    "solid_from_open_mesh",
    "write_mesh",
]
