"""Functional core of the mesoscopic engine: pure torch functions, no state.

* :mod:`.distortion` -- radial magnification profiles (piecewise linear, even polynomial) and inverses.
* :mod:`.projection` -- in-plane rotation, tilted-pinhole back-projection, orthorectification (Eqs. 4-6).
* :mod:`.splat` -- bilinear splatting and sampling on a reconstruction grid.
* :mod:`.regularizers` -- total variation.
* :mod:`.scale` -- absolute scale (Eqs. 1, 7, 8).
"""

from topograph.meso.functional.distortion import (
    apply_radial,
    piecewise_linear_inverse_radius,
    piecewise_linear_magnification,
    polynomial_inverse_radius,
    polynomial_magnification,
    radius_of,
)
from topograph.meso.functional.projection import (
    backproject_tilted,
    backproject_tilted_exact,
    height_from_shift,
    normal_z,
    orthorectify,
    rectify_to_reference,
    rolling_shutter,
    rotate_in_plane,
)
from topograph.meso.functional.regularizers import total_variation
from topograph.meso.functional.splat import GridSpec, normalise_splat, sample_bilinear, splat_bilinear

__all__ = [
    "GridSpec",
    "apply_radial",
    "backproject_tilted",
    "backproject_tilted_exact",
    "height_from_shift",
    "normal_z",
    "normalise_splat",
    "orthorectify",
    "piecewise_linear_inverse_radius",
    "piecewise_linear_magnification",
    "polynomial_inverse_radius",
    "polynomial_magnification",
    "radius_of",
    "rectify_to_reference",
    "rolling_shutter",
    "rotate_in_plane",
    "sample_bilinear",
    "splat_bilinear",
    "total_variation",
]
