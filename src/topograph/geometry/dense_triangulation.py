"""Per-pixel multi-view triangulation of dense correspondences with affine cameras.

Every reference pixel ``p`` with correspondences ``x_f`` in views ``f`` gives the linear least-squares
point ``X = argmin Σ_f w_f |M_f X + t_f − x_f|²``, i.e. the normal equations
``(Σ_f w_f M_fᵀ M_f) X = Σ_f w_f M_fᵀ (x_f − t_f)``. They are accumulated view by view, so memory holds
one view's flow at a time plus the (N, 3, 3) and (N, 3) accumulators.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from topograph.types import AffineCamera


def viewing_direction_nullspace(camera: AffineCamera) -> np.ndarray:
    """Unit vector ``d`` with ``M d = 0``: the direction along which a pixel's 3-D point is unknown."""
    d = np.cross(camera.matrix[0], camera.matrix[1])
    return d / np.linalg.norm(d)


def epipolar_distance_px(
    ref: AffineCamera, other: AffineCamera, xy_ref: np.ndarray, xy_other: np.ndarray
) -> np.ndarray:
    """Distance (px) of ``xy_other`` from the affine epipolar line of ``xy_ref``.

    The ray of a reference pixel is ``X(λ) = X₀ + λ d`` with ``X₀ = M_ref⁺ (p − t_ref)`` and ``M_ref d = 0``;
    its image in the other view is the line ``M_o X₀ + t_o + λ M_o d``.
    """
    m_pinv = np.linalg.pinv(ref.matrix)  # (3, 2)
    x0 = (xy_ref - ref.translation) @ m_pinv.T  # (N, 3)
    on_line = x0 @ other.matrix.T + other.translation
    e = other.matrix @ viewing_direction_nullspace(ref)
    e = e / np.linalg.norm(e)
    diff = xy_other - on_line
    return np.abs(diff[:, 0] * e[1] - diff[:, 1] * e[0])


@dataclass
class NormalEquations:
    """Accumulator of the per-pixel normal equations (float64), one entry per reference pixel."""

    n: int
    ata: np.ndarray = field(init=False)
    atb: np.ndarray = field(init=False)
    count: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.ata = np.zeros((self.n, 6))  # upper triangle of the symmetric 3×3 matrix
        self.atb = np.zeros((self.n, 3))
        self.count = np.zeros(self.n, dtype=np.int16)

    def add_view(self, camera: AffineCamera, xy: np.ndarray, valid: np.ndarray) -> None:
        """Add observations ``xy`` (N, 2) of one view where ``valid`` (N,) is true."""
        m = camera.matrix
        mtm = m.T @ m
        idx = np.flatnonzero(valid)
        self.ata[idx] += mtm[np.triu_indices(3)]
        self.atb[idx] += (xy[idx] - camera.translation) @ m  # rows of Mᵀ(x − t)
        self.count[idx] += 1

    def solve(self, min_views: int = 2) -> np.ndarray:
        """(N, 3) points; NaN where fewer than ``min_views`` views contributed."""
        out = np.full((self.n, 3), np.nan)
        ok = self.count >= min_views
        if not ok.any():
            return out
        a = np.empty((int(ok.sum()), 3, 3))
        iu = np.triu_indices(3)
        a[:, iu[0], iu[1]] = self.ata[ok]
        a[:, iu[1], iu[0]] = self.ata[ok]
        det = np.linalg.det(a)
        good = np.abs(det) > 1e-12 * np.abs(a).max(axis=(1, 2)) ** 3
        sol = np.full((a.shape[0], 3), np.nan)
        sol[good] = np.linalg.solve(a[good], self.atb[ok][good][..., None])[..., 0]
        out[ok] = sol
        return out


def reprojection_error_px(camera: AffineCamera, points: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """|M X + t − x| per point, pixels."""
    return np.linalg.norm(points @ camera.matrix.T + camera.translation - xy, axis=1)
