"""How many pixels the specimen's relief spans in the reference view, from the sparse tracks alone.

With affine cameras a plane maps between two views by an affine map, so the tracks on a flat substrate
fit one affine map ``x_b ≈ A [x_a, 1]ᵀ`` to their matching noise and every track that stands off the
substrate departs from it by its parallax. The substrate is where the image border is (as for the dense
stage's substrate plane): the map is fitted to the tracks near the border. The relief's extent is the size
of the region the other tracks cover in the reference view. It tells the dense stage how coarse a flow
pass may be: a first pass downscaled by k sees the grain at extent / k pixels.
"""

from __future__ import annotations

import cv2
import numpy as np

from topograph.types import Reconstruction

RELIEF_PARALLAX_PX = 4.0
"""A track is on the relief when it departs from the substrate's affine map by more than this, px (on the
1024-px renders 2 px still counted 14 % substrate tracks, 4 px 1 %)."""
PLANE_RANSAC_PX = 1.0
"""RANSAC threshold of the substrate's affine map, px."""
BORDER_FRACTION = 0.15
"""The substrate's map is fitted to the tracks within this fraction of the image side from the border."""
MIN_RELIEF_TRACKS = 20
"""Fewer tracks off the plane than this: no estimate."""
EXTENT_PERCENTILE = 2.0
"""The extent runs from this percentile of the relief tracks' positions to 100 minus it (along x and y),
so that a few stray tracks do not widen it."""


def relief_extent_px(xy_ref: np.ndarray, xy_other: np.ndarray, image_shape: tuple[int, int]) -> float | None:
    """Longer side (px) of the box holding the relief tracks of the reference view, or None.

    Args:
        xy_ref: (P, 2) track positions in the reference view (NaN where unseen).
        xy_other: (P, 2) the same tracks in another view (the widest baseline shows the most parallax).
        image_shape: (H, W) of the reference view.

    Returns:
        ``max(Δx, Δy)`` of the :data:`EXTENT_PERCENTILE` box of the tracks whose residual
        ``‖x_b − A [x_a, 1]ᵀ‖`` to the substrate's affine map ``A`` exceeds :data:`RELIEF_PARALLAX_PX`;
        ``A`` is the RANSAC fit to the tracks within :data:`BORDER_FRACTION` of the border (to all tracks
        when fewer than :data:`MIN_RELIEF_TRACKS` are there). None with fewer than :data:`MIN_RELIEF_TRACKS`
        relief tracks or no map.
    """
    both = np.isfinite(xy_ref).all(axis=1) & np.isfinite(xy_other).all(axis=1)
    a, b = xy_ref[both].astype(np.float32), xy_other[both].astype(np.float32)
    if len(a) < MIN_RELIEF_TRACKS:
        return None
    h, w = image_shape
    margin = BORDER_FRACTION * np.array([w, h], dtype=np.float32)
    border = ((a < margin) | (a > np.array([w, h], dtype=np.float32) - margin)).any(axis=1)
    fit = border if border.sum() >= MIN_RELIEF_TRACKS else np.ones(len(a), dtype=bool)
    affine, _ = cv2.estimateAffine2D(
        a[fit], b[fit], method=cv2.RANSAC, ransacReprojThreshold=PLANE_RANSAC_PX, maxIters=2000, confidence=0.999
    )
    if affine is None:
        return None
    residual = np.linalg.norm(b - (a @ affine[:, :2].T + affine[:, 2].astype(np.float32)), axis=1)
    relief = a[residual > RELIEF_PARALLAX_PX]
    if len(relief) < MIN_RELIEF_TRACKS:
        return None
    lo, hi = np.percentile(relief, [EXTENT_PERCENTILE, 100.0 - EXTENT_PERCENTILE], axis=0)
    return float(np.max(hi - lo))


def reference_relief_extent_px(recon: Reconstruction, ref: int, image_shape: tuple[int, int]) -> float | None:
    """:func:`relief_extent_px` of the reference view ``ref`` (images of ``image_shape`` (H, W)) against the
    view of the widest tilt from it."""
    tilts = np.asarray(recon.tilts_deg, dtype=float)
    other = int(np.argmax(np.abs(tilts - tilts[ref])))
    if other == ref:
        return None
    return relief_extent_px(recon.tracks.xy[ref], recon.tracks.xy[other], image_shape)
