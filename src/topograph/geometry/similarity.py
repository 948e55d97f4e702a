"""Least-squares 2-D similarity between point sets (Umeyama 1991), reflections excluded.

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
