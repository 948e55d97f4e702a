"""Absolute scale from the effective focal length and one image's magnification (paper Eqs. 1, 7, 8).

The optimisation recovers camera heights ``Z_i`` and camera-centric heights ``h`` in an arbitrary
internal unit; only the ratios ``h / Z_i`` and ``Z_i / Z_0`` are physical. One magnification
``M_0 = f_ph / Z_0`` (given, or measured from two points of known separation) and the effective focal
length ``f_eff`` (EXIF) fix the scale.
"""

from __future__ import annotations

import numpy as np


def pinhole_focal_mm(effective_focal_mm: float, magnification: float) -> float:
    """Pinhole focal length from the thin-lens equation (paper Eqs. 1 and 7): ``f_ph = f_eff (1 + M)``.

    Args:
        effective_focal_mm: ``f_eff`` in mm.
        magnification: ``M = f_ph / z_obj`` (image size / object size, dimensionless).

    Returns:
        ``f_ph`` in mm.
    """
    return effective_focal_mm * (1.0 + magnification)


def camera_heights_mm(effective_focal_mm: float, magnification_ref: float, relative_heights: np.ndarray) -> np.ndarray:
    """Camera heights above the object plane in mm (paper Eq. 8).

    With ``M_i = M_0 Z_0 / Z_i`` (Eq. 7, focus set once) and the thin lens (Eq. 1),
    ``Z_i = f_eff (1 + (Z_i / Z_0) / M_0)``, so ``h_i = -Z_i dr / |r - R_i|`` (Eq. 5) becomes Eq. 8.

    Args:
        effective_focal_mm: ``f_eff`` in mm.
        magnification_ref: ``M_0`` of the reference image.
        relative_heights: (N,) ``Z_i / Z_0`` from the optimisation (1 for the reference image).

    Returns:
        (N,) ``Z_i`` in mm.
    """
    rel = np.asarray(relative_heights, dtype=float)
    return effective_focal_mm * (1.0 + rel / magnification_ref)


def magnification_from_points(separation_px: float, distance_mm: float, pixel_pitch_mm: float) -> float:
    """Magnification of an image from two points of known separation: ``M = d_px p / D``.

    Args:
        separation_px: distance between the two points in the (undistorted) image, pixels.
        distance_mm: their true separation ``D`` on the object, mm.
        pixel_pitch_mm: sensor pixel pitch ``p``, mm.

    Returns:
        The dimensionless magnification.
    """
    return separation_px * pixel_pitch_mm / distance_mm
