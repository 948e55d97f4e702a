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
GRID_CELLS = 32
"""The relief tracks are binned in cells of 1/32 of the longer image side; the cells are closed (3 × 3)
and the largest 8-connected group of cells is the grain: stray tracks off the substrate map elsewhere (a
mismatch, a speck) do not widen the extent, and of two grains the larger one counts."""


def relief_extent_px(xy_ref: np.ndarray, xy_other: np.ndarray, image_shape: tuple[int, int]) -> float | None:
    """Longer side (px) of the box holding the relief tracks of the reference view, or None.

    Args:
        xy_ref: (P, 2) track positions in the reference view (NaN where unseen).
        xy_other: (P, 2) the same tracks in another view (the widest baseline shows the most parallax).
        image_shape: (H, W) of the reference view.

    Returns:
        ``max(Δx, Δy)`` of the box of the largest cluster (:data:`GRID_CELLS`) of the tracks whose residual
        ``‖x_b − A [x_a, 1]ᵀ‖`` to the substrate's affine map ``A`` exceeds :data:`RELIEF_PARALLAX_PX`;
        ``A`` is the (seeded) RANSAC fit to the tracks within :data:`BORDER_FRACTION` of the border (to all tracks
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
    affine = ransac_affine(a[fit].astype(np.float64), b[fit].astype(np.float64), PLANE_RANSAC_PX)
    if affine is None:
        return None
    residual = np.linalg.norm(b - (a @ affine[:, :2].T + affine[:, 2]), axis=1)
    relief = a[residual > RELIEF_PARALLAX_PX]
    if len(relief) < MIN_RELIEF_TRACKS:
        return None
    cluster = relief[largest_cluster(relief, max(h, w) / GRID_CELLS, (h, w))]
    return float(np.max(cluster.max(axis=0) - cluster.min(axis=0)))


RANSAC_ITERATIONS = 500
"""Hypotheses of :func:`ransac_affine` (three-point samples)."""


def ransac_affine(a: np.ndarray, b: np.ndarray, threshold_px: float, seed: int = 0) -> np.ndarray | None:
    """Affine map (2, 3) with ``b ≈ A [a, 1]ᵀ`` by RANSAC over three-point samples (a fixed ``seed``: the
    same tracks give the same map in every process), refitted by least squares on the inliers of the best
    hypothesis (those within ``threshold_px``); None with fewer than three points or inliers."""
    n = len(a)
    if n < 3:  # noqa: PLR2004 - an affine map needs three points
        return None
    rng = np.random.default_rng(seed)
    h = np.column_stack([a, np.ones(n)])
    best = np.zeros(n, dtype=bool)
    for _ in range(RANSAC_ITERATIONS):
        pick = rng.choice(n, 3, replace=False)
        try:
            m = np.linalg.solve(h[pick], b[pick])  # (3, 2): b = [a, 1] m
        except np.linalg.LinAlgError:
            continue
        inliers = np.linalg.norm(h @ m - b, axis=1) <= threshold_px
        if inliers.sum() > best.sum():
            best = inliers
    if best.sum() < 3:  # noqa: PLR2004
        return None
    m, *_ = np.linalg.lstsq(h[best], b[best], rcond=None)
    return m.T


def largest_cluster(xy: np.ndarray, cell_px: float, image_shape: tuple[int, int]) -> np.ndarray:
    """(P,) bool: the points of ``xy`` (P, 2) in the largest (most points) 8-connected group of ``cell_px``
    cells that hold a point, after a 3 × 3 closing of those cells."""
    h, w = image_shape
    rows, cols = int(np.ceil(h / cell_px)) + 1, int(np.ceil(w / cell_px)) + 1
    ci = np.clip((xy[:, 0] / cell_px).astype(int), 0, cols - 1)
    ri = np.clip((xy[:, 1] / cell_px).astype(int), 0, rows - 1)
    occupied = np.zeros((rows, cols), np.uint8)
    occupied[ri, ci] = 1
    closed = cv2.morphologyEx(occupied, cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))
    _, labels = cv2.connectedComponents(closed, connectivity=8)
    point_label = labels[ri, ci]
    counts = np.bincount(point_label, minlength=int(labels.max()) + 1)
    counts[0] = 0  # closing never empties a cell that holds a point; label 0 is the background
    return point_label == int(np.argmax(counts))


def reference_relief_extent_px(recon: Reconstruction, ref: int, image_shape: tuple[int, int]) -> float | None:
    """:func:`relief_extent_px` of the reference view ``ref`` (images of ``image_shape`` (H, W)) against the
    view of the widest tilt from it."""
    tilts = np.asarray(recon.tilts_deg, dtype=float)
    other = int(np.argmax(np.abs(tilts - tilts[ref])))
    if other == ref:
        return None
    return relief_extent_px(recon.tracks.xy[ref], recon.tracks.xy[other], image_shape)
