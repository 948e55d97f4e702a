"""Robust local linear regression of a gridded field (a depth map) with missing values.

Every grid node ``x₀`` gets the intercept of the weighted least-squares plane through its neighbourhood:

    (c₀, c₁, c₂) = argmin Σ_y g_σ(y − x₀) m(y) ρ(y) [z(y) − c₀ − c₁ (y − x₀)_x − c₂ (y − x₀)_y]²,
    ẑ(x₀) = c₀,

with ``g_σ`` a Gaussian window, ``m`` the validity mask and ``ρ`` robust (Cauchy) weights
``1 / (1 + (r / (k s))²)`` of the previous pass's residuals ``r = z − ẑ`` (``s`` = 1.4826 · median |r|).
A plane is reproduced exactly (no bias on slopes, at borders or at the edge of the valid region, unlike a
plain Gaussian average); noise of standard deviation σ_z drops to about σ_z / (2 √π σ) for pixel-wise
independent noise. Curvature κ biases the result by about κ σ² / 2, so σ is kept to a few pixels.

All sums are separable filters (``g``, ``g·t``, ``g·t²`` along each axis), so the cost is a few dozen
1-D convolutions of the grid, independent of σ's pixel count.
"""

from __future__ import annotations

import cv2
import numpy as np


def _kernels(sigma_px: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """1-D Gaussian ``g(t)``, ``g(t)·t`` and ``g(t)·t²`` on ``t = −r … r`` (r = ⌈3σ⌉), float32 columns."""
    r = max(1, int(np.ceil(3.0 * sigma_px)))
    t = np.arange(-r, r + 1, dtype=np.float64)
    g = np.exp(-0.5 * (t / sigma_px) ** 2)
    g /= g.sum()
    return g.astype(np.float32), (g * t).astype(np.float32), (g * t * t).astype(np.float32)


def _filter(src: np.ndarray, kx: np.ndarray, ky: np.ndarray) -> np.ndarray:
    """``Σ_y kx(y_x − x_x) ky(y_y − x_y) src(y)`` (correlation: the kernels' t is the offset y − x)."""
    return cv2.sepFilter2D(src, cv2.CV_32F, kx, ky, borderType=cv2.BORDER_CONSTANT)


def local_linear_smooth(
    values: np.ndarray,
    valid: np.ndarray,
    sigma_px: float,
    robust_passes: int = 1,
    robust_scale: float = 2.5,
    min_weight: float = 0.25,
) -> np.ndarray:
    """Intercepts of the robust local planes (see the module docstring) on the valid nodes.

    Args:
        values: (H, W) field (any finite value where ``valid`` is False; NaN allowed there).
        valid: (H, W) bool nodes that carry a value.
        sigma_px: Gaussian window σ, grid nodes (≤ 0: ``values`` returned unchanged).
        robust_passes: reweighted passes after the first (Cauchy weights of the residuals).
        robust_scale: Cauchy scale in robust standard deviations of the residuals.
        min_weight: nodes whose window holds less than this share of a full window's weight keep their
            value (too few neighbours for a plane).

    Returns:
        (H, W) float32: the smoothed value on valid nodes with enough neighbours, ``values`` elsewhere.
    """
    z = np.asarray(values, dtype=np.float32)
    if sigma_px <= 0 or not valid.any():
        return z.copy()
    g, gt, gtt = _kernels(float(sigma_px))
    ok = valid & np.isfinite(z)
    base = float(np.median(z[ok]))  # fit about a constant: float32 sums of small numbers
    zc = np.where(ok, z - np.float32(base), np.float32(0.0)).astype(np.float32)
    w = ok.astype(np.float32)
    fit = zc
    for _ in range(1 + max(0, int(robust_passes))):
        wz = w * zc
        s0 = _filter(w, g, g)
        sx = _filter(w, gt, g)
        sy = _filter(w, g, gt)
        sxx = _filter(w, gtt, g)
        syy = _filter(w, g, gtt)
        sxy = _filter(w, gt, gt)
        bz = _filter(wz, g, g)
        bx = _filter(wz, gt, g)
        by = _filter(wz, g, gt)
        # intercept of the 3×3 normal equations by Cramer's rule (cofactors of the first column)
        c00 = sxx * syy - sxy * sxy
        c01 = sx * syy - sxy * sy
        c02 = sx * sxy - sxx * sy
        det = s0 * c00 - sx * c01 + sy * c02
        num = bz * c00 - bx * (sx * syy - sy * sxy) + by * (sx * sxy - sy * sxx)
        # a well-posed plane: enough weight and a non-degenerate spread of neighbours
        good = ok & (s0 >= min_weight) & (np.abs(det) > 1e-6 * np.maximum(s0, 1e-12) ** 3 * sigma_px**4)
        fit = np.where(good, num / np.where(good, det, 1.0), zc).astype(np.float32)
        r = np.where(ok, zc - fit, 0.0)
        spread = 1.4826 * float(np.median(np.abs(r[good]))) if good.any() else 0.0
        if spread <= 0:
            break
        w = (ok / (1.0 + (r / (robust_scale * spread)) ** 2)).astype(np.float32)
    return np.where(ok, fit + np.float32(base), z).astype(np.float32)
