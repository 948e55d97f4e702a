"""Measurements on reconstructions: grain shape metrics, areal surface parameters, meshing, previews.

* :mod:`~topograph.analysis.mesh` — height-field meshes, closure of a visible top into a solid, clipping,
  cloud → grid → mesh, mesh read/write.
* :mod:`~topograph.analysis.grain` — :func:`grain_metrics` of a closed mesh (volume, sphericity, L/I/S, Feret).
* :mod:`~topograph.analysis.surface` — form removal and ISO 25178-2 style :func:`areal_parameters`.
* :mod:`~topograph.analysis.render` — PNG previews (matplotlib, imported only when drawing).
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
from topograph.analysis.render import height_map_png, render_cloud_views
from topograph.analysis.surface import ArealParameters, areal_parameters, remove_form

__all__ = [
    "ArealParameters",
    "GrainMetrics",
    "areal_parameters",
    "clip_above",
    "close_with_base",
    "grain_metrics",
    "height_map_png",
    "heightfield_mesh",
    "mesh_from_cloud_heightfield",
    "rasterize_cloud",
    "read_geometry",
    "remove_form",
    "render_cloud_views",
    "solid_from_cloud",
    "solid_from_open_mesh",
    "write_mesh",
]
