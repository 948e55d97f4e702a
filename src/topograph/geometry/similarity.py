"""Least-squares similarities between point sets (Umeyama 1991), reflections excluded: 2-D (the meso
frame alignment) and weighted 3-D (cloud-to-truth alignment of the SEM evaluation).

S. Umeyama, "Least-squares estimation of transformation parameters between two point patterns",
IEEE TPAMI 13(4), 1991.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Similarity2D:
    """``dst = scale * R @ src + t`` with a proper rotation ``R`` (2, 2)."""

    scale: float
    rotation: np.ndarray
    translation: np.ndarray

    def apply(self, points: np.ndarray) -> np.ndarray:
        """(P, 2) -> (P, 2)."""
        return self.scale * np.asarray(points, dtype=float) @ self.rotation.T + self.translation


def fit_similarity(src: np.ndarray, dst: np.ndarray) -> Similarity2D:
    """Least-squares similarity from ``src`` to ``dst`` (Umeyama 1991, Eqs. 40-42), reflections excluded.

    Args:
        src, dst: (P, 2) corresponding points, P >= 2.

    Returns:
        The similarity minimising ``sum |dst - s R src - t|^2``.
    """
    src = np.asarray(src, dtype=float)
    dst = np.asarray(dst, dtype=float)
    ms, md = src.mean(0), dst.mean(0)
    a, b = src - ms, dst - md
    cov = b.T @ a / len(src)
    u, sv, vt = np.linalg.svd(cov)
    d = np.diag([1.0, np.sign(np.linalg.det(u @ vt))])
    rot = u @ d @ vt
    var = (a * a).sum() / len(src)
    scale = float(np.trace(np.diag(sv) @ d) / var)
    return Similarity2D(scale, rot, md - scale * rot @ ms)


def weighted_similarity(
    x: np.ndarray, y: np.ndarray, w: np.ndarray | None = None, *, with_scale: bool = True
) -> tuple[np.ndarray, float, np.ndarray]:
    """Weighted least-squares similarity ``y ≈ s R x + t`` (Umeyama 1991, Eqs. 34–43).

    ``Σxy = Σ w (y − μy)(x − μx)ᵀ / Σ w``, ``Σxy = U D Vᵀ``, ``S = diag(1, 1, sign(det U det V))``,
    ``R = U S Vᵀ``, ``s = tr(D S) / σx²``, ``t = μy − s R μx``.

    Args:
        x: (N, 3) source points.
        y: (N, 3) target points.
        w: (N,) non-negative weights (uniform when None).
        with_scale: estimate ``s``; otherwise ``s = 1`` (rigid).

    Returns:
        ``(R, s, t)``: (3, 3) proper rotation, scale, (3,) translation.
    """
    w = np.ones(len(x)) if w is None else np.asarray(w, dtype=float)
    sw = float(w.sum())
    if sw <= 0:
        return np.eye(3), 1.0, np.zeros(3)
    mx = (w[:, None] * x).sum(axis=0) / sw
    my = (w[:, None] * y).sum(axis=0) / sw
    xc, yc = x - mx, y - my
    cov = (w[:, None] * yc).T @ xc / sw
    u, d, vt = np.linalg.svd(cov)
    sgn = np.ones(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sgn[2] = -1.0
    r = u @ np.diag(sgn) @ vt
    var_x = float((w * (xc**2).sum(axis=1)).sum() / sw)
    s = float((d * sgn).sum() / var_x) if with_scale and var_x > 0 else 1.0
    if s <= 0:
        s = 1.0
    t = my - s * r @ mx
    return r, s, t
