"""How many pixels the specimen's relief spans in the reference view, from the sparse tracks alone.

With affine cameras a plane maps between two views by an affine map, so the tracks on a flat substrate
fit one affine map ``x_b ≈ A [x_a, 1]ᵀ`` to their matching noise and every track that stands off the
substrate departs from it by its parallax. The relief's extent is the size of the region those tracks
cover in the reference view. It tells the dense stage how coarse a flow pass may be: a first pass
downscaled by k sees the grain at extent / k pixels.
"""

from __future__ import annotations

import cv2
import numpy as np

from topograph.types import Reconstruction

RELIEF_PARALLAX_PX = 2.0
"""A track is on the relief when it departs from the dominant plane's affine map by more than this, px
(sparse tracks after bundle adjustment match to a few tenths of a pixel)."""
PLANE_RANSAC_PX = 1.0
"""RANSAC threshold of the dominant plane's affine map, px."""
MIN_RELIEF_TRACKS = 20
"""Fewer tracks off the plane than this: no estimate."""
EXTENT_PERCENTILE = 2.0
"""The extent runs from this percentile of the relief tracks' positions to 100 minus it (along x and y),
so that a few stray tracks do not widen it."""


def relief_extent_px(xy_ref: np.ndarray, xy_other: np.ndarray) -> float | None:
    """Longer side (px) of the box holding the relief tracks of the reference view, or None.

    Args:
        xy_ref: (P, 2) track positions in the reference view (NaN where unseen).
        xy_other: (P, 2) the same tracks in another view (the widest baseline shows the most parallax).

    Returns:
        ``max(Δx, Δy)`` of the :data:`EXTENT_PERCENTILE` box of the tracks whose residual
        ``‖x_b − A [x_a, 1]ᵀ‖`` to the dominant plane's affine map ``A`` (RANSAC) exceeds
        :data:`RELIEF_PARALLAX_PX`; None with fewer than :data:`MIN_RELIEF_TRACKS` such tracks or no map.
    """
    both = np.isfinite(xy_ref).all(axis=1) & np.isfinite(xy_other).all(axis=1)
    a, b = xy_ref[both].astype(np.float32), xy_other[both].astype(np.float32)
    if len(a) < MIN_RELIEF_TRACKS:
        return None
    affine, _ = cv2.estimateAffine2D(
        a, b, method=cv2.RANSAC, ransacReprojThreshold=PLANE_RANSAC_PX, maxIters=2000, confidence=0.999
    )
    if affine is None:
        return None
    residual = np.linalg.norm(b - (a @ affine[:, :2].T + affine[:, 2].astype(np.float32)), axis=1)
    relief = a[residual > RELIEF_PARALLAX_PX]
    if len(relief) < MIN_RELIEF_TRACKS:
        return None
    lo, hi = np.percentile(relief, [EXTENT_PERCENTILE, 100.0 - EXTENT_PERCENTILE], axis=0)
    return float(np.max(hi - lo))


def reference_relief_extent_px(recon: Reconstruction, ref: int) -> float | None:
    """:func:`relief_extent_px` of the reference view ``ref`` against the view of the widest tilt from it."""
    tilts = np.asarray(recon.tilts_deg, dtype=float)
    other = int(np.argmax(np.abs(tilts - tilts[ref])))
    if other == ref:
        return None
    return relief_extent_px(recon.tracks.xy[ref], recon.tracks.xy[other])
