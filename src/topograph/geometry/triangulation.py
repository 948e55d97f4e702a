"""Linear least-squares triangulation and reprojection residuals for affine cameras.

With ``M_f = k_f [[1, 0, 0], [s_f, 1, 0]] R_f`` (2×3) and translation ``t_f``, a track observed at
``x_f`` in the views ``f ∈ V`` gives the linear system ``M_f X = x_f − t_f`` (2|V| equations, 3
unknowns), solved in the least-squares sense. Tracks sharing a visibility pattern share the matrix, so
the solve is one ``lstsq`` per pattern (at most 2^F − F − 1 patterns), never a loop over points.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from topograph.types import AffineCamera, Tracks

logger = logging.getLogger("topograph")

_MIN_SINGULAR_RATIO = 1e-6


def _check(cameras: Sequence[AffineCamera], tracks: Tracks) -> None:
    if len(cameras) != tracks.n_views:
        raise ValueError(f"got {len(cameras)} cameras for tracks over {tracks.n_views} views")


def projection_matrices(cameras: Sequence[AffineCamera]) -> tuple[np.ndarray, np.ndarray]:
    """Stacked projection matrices ``M`` (F, 2, 3) and translations ``t`` (F, 2) in px."""
    return np.stack([c.matrix for c in cameras]), np.stack([c.translation for c in cameras])


def triangulate(cameras: Sequence[AffineCamera], tracks: Tracks) -> np.ndarray:
    """Triangulate every track by linear least squares over all views where it is visible.

    Solves ``min_X Σ_{f ∈ V} ‖M_f X + t_f − x_f‖²`` (the maximum-likelihood point under isotropic
    Gaussian pixel noise, since the affine projection is linear).

    Args:
        cameras: F affine cameras.
        tracks: (F, P, 2) observations in px, NaN where unseen.

    Returns:
        (P, 3) world points; NaN for tracks seen in fewer than 2 views or whose views cannot fix the
        depth (all viewing directions parallel).
    """
    _check(cameras, tracks)
    m, t = projection_matrices(cameras)
    vis = tracks.visible
    n_f, n_p = vis.shape
    out = np.full((n_p, 3), np.nan)
    code = (vis.astype(np.int64) << np.arange(n_f, dtype=np.int64)[:, None]).sum(axis=0)
    for pattern in np.unique(code):
        views = np.nonzero((int(pattern) >> np.arange(n_f)) & 1)[0]
        if views.size < 2:
            continue
        cols = np.nonzero(code == pattern)[0]
        a = m[views].reshape(-1, 3)  # (2|V|, 3)
        sv = np.linalg.svd(a, compute_uv=False)
        if sv[-1] < _MIN_SINGULAR_RATIO * sv[0]:
            logger.warning("views %s cannot triangulate (parallel viewing directions); %d tracks", views, cols.size)
            continue
        b = (tracks.xy[views][:, cols] - t[views][:, None, :]).transpose(0, 2, 1).reshape(-1, cols.size)
        out[cols] = np.linalg.lstsq(a, b, rcond=None)[0].T
    return out


def reprojection_residuals(cameras: Sequence[AffineCamera], points: np.ndarray, tracks: Tracks) -> np.ndarray:
    """Reprojection residuals ``r_fp = M_f X_p + t_f − x_fp``.

    Args:
        cameras: F affine cameras.
        points: (P, 3) world points (NaN rows allowed).
        tracks: (F, P, 2) observations in px.

    Returns:
        (F, P, 2) residuals in px, NaN where the track is unseen or the point is NaN.
    """
    _check(cameras, tracks)
    pts = np.asarray(points, dtype=float)
    if pts.shape != (tracks.n_tracks, 3):
        raise ValueError(f"points must have shape ({tracks.n_tracks}, 3), got {pts.shape}")
    m, t = projection_matrices(cameras)
    proj = np.einsum("fij,pj->fpi", m, pts) + t[:, None, :]
    return proj - tracks.xy


def per_view_rms_px(cameras: Sequence[AffineCamera], points: np.ndarray, tracks: Tracks) -> np.ndarray:
    """Per-view RMS reprojection error ``sqrt(mean_p ‖r_fp‖²)`` over the finite residuals.

    Args:
        cameras: F affine cameras.
        points: (P, 3) world points.
        tracks: (F, P, 2) observations in px.

    Returns:
        (F,) RMS of the 2-D residual length in px (NaN for a view without any finite residual).
    """
    r = reprojection_residuals(cameras, points, tracks)
    sq = np.sum(r**2, axis=2)
    ok = np.isfinite(sq)
    n = ok.sum(axis=1)
    total = np.where(ok, sq, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, np.sqrt(total / np.maximum(n, 1)), np.nan)
