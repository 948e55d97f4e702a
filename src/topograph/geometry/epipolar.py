"""The affine epipolar constraint between two views: fitting, residuals, RANSAC and the tilt axis.

For affine cameras the fundamental matrix has the form ``F = [[0, 0, a], [0, 0, b], [c, d, e]]`` and the
constraint ``x_jᵀ F x_i = 0`` (homogeneous px) is linear in the stacked 4-vector
``z = (x_j, y_j, x_i, y_i)``: ``a x_j + b y_j + c x_i + d y_i + e = 0``, a hyperplane in R⁴. With the
normalisation ``a² + b² + c² + d² = 1`` the value ``|x_jᵀ F x_i|`` is the orthogonal distance of z to
that hyperplane, which for affine F is both the Sampson error and the exact geometric (reprojection)
error ``min ‖δx_i‖² + ‖δx_j‖²``; the maximum-likelihood ("Gold Standard") fit is therefore orthogonal
regression: the normal (a, b, c, d) is the direction of least variance of the centred z (PCA), and
``e = −(a, b, c, d) · z̄``.

References:
    R. Hartley, A. Zisserman, *Multiple View Geometry*, 2nd ed., § 14.2, algorithm 14.1.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from topograph.geometry.factorization import wrap_axis_deg

logger = logging.getLogger("topograph")


@dataclass(frozen=True)
class AffineFundamental:
    """A fitted affine fundamental matrix.

    Attributes:
        F: (3, 3) with ``a² + b² + c² + d² = 1``, so ``|x_jᵀ F x_i|`` is in px.
        inliers: (N,) bool mask of the matches consistent with F.
        rms_px: RMS geometric residual of the inliers, px.
        n_iters: number of RANSAC hypotheses drawn (0 for a direct fit).
    """

    F: np.ndarray
    inliers: np.ndarray
    rms_px: float
    n_iters: int = 0

    def __bool__(self) -> bool:
        return True


@dataclass(frozen=True)
class FailedEstimation:
    """Falsy result of an estimation that could not succeed; ``reason`` says why."""

    reason: str

    def __bool__(self) -> bool:
        return False


def _as_xy(xy: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(xy, dtype=float)
    if a.ndim != 2 or a.shape[1] != 2:
        raise ValueError(f"{name} must have shape (N, 2), got {a.shape}")
    return a


def _stack(xy_i: np.ndarray, xy_j: np.ndarray) -> np.ndarray:
    a, b = _as_xy(xy_i, "xy_i"), _as_xy(xy_j, "xy_j")
    if a.shape != b.shape:
        raise ValueError(f"xy_i and xy_j must have one shape, got {a.shape} and {b.shape}")
    return np.hstack([b, a])  # z = (x_j, y_j, x_i, y_i)


def _to_matrix(normal: np.ndarray, offset: float) -> np.ndarray:
    a, b, c, d = normal
    return np.array([[0.0, 0.0, a], [0.0, 0.0, b], [c, d, offset]])


def fit_affine_fundamental(xy_i: np.ndarray, xy_j: np.ndarray) -> np.ndarray:
    """Gold-Standard (orthogonal regression) fit of the affine fundamental matrix.

    Args:
        xy_i: (N, 2) px in view i, N ≥ 4.
        xy_j: (N, 2) px in view j.

    Returns:
        (3, 3) F with ``a² + b² + c² + d² = 1`` minimising ``Σ (x_jᵀ F x_i)²`` (module docstring).
    """
    z = _stack(xy_i, xy_j)
    if z.shape[0] < 4:
        raise ValueError(f"fitting an affine fundamental matrix needs ≥ 4 matches, got {z.shape[0]}")
    mean = z.mean(axis=0)
    normal = np.linalg.svd(z - mean, full_matrices=False)[2][-1]
    return _to_matrix(normal, -float(normal @ mean))


def epipolar_residuals_px(F: np.ndarray, xy_i: np.ndarray, xy_j: np.ndarray) -> np.ndarray:
    """Geometric (= Sampson) epipolar residual ``|x_jᵀ F x_i| / ‖(a, b, c, d)‖`` of every match.

    Args:
        F: (3, 3) affine fundamental matrix.
        xy_i: (N, 2) px in view i.
        xy_j: (N, 2) px in view j.

    Returns:
        (N,) distances in px: the smallest total displacement of the two points that satisfies F.
    """
    z = _stack(xy_i, xy_j)
    n = np.array([F[0, 2], F[1, 2], F[2, 0], F[2, 1]])
    return np.abs(z @ n + F[2, 2]) / np.linalg.norm(n)


def epipolar_disparity_px(F: np.ndarray, xy_i: np.ndarray, xy_j: np.ndarray) -> np.ndarray:
    """Displacement of every match along its epipolar lines: ``l_j · x_j + l_i · x_i``.

    ``l_j = (−b, a)/‖(a, b)‖`` and ``l_i = (−d, c)/‖(c, d)‖`` are the epipolar-line directions in the two
    views; for a pure tilt (``(c, d) ∝ −(a, b)``) this is ``u⊥ · (x_j − x_i)``, the depth-dependent
    disparity (up to an offset), in px.

    Args:
        F: (3, 3) affine fundamental matrix.
        xy_i: (N, 2) px in view i.
        xy_j: (N, 2) px in view j.

    Returns:
        (N,) displacement along the epipolar lines, px.
    """
    a, b, c, d = F[0, 2], F[1, 2], F[2, 0], F[2, 1]
    lj = np.array([-b, a]) / np.hypot(a, b)
    li = np.array([-d, c]) / np.hypot(c, d)
    return _as_xy(xy_j, "xy_j") @ lj + _as_xy(xy_i, "xy_i") @ li


def ransac_affine_fundamental(
    xy_i: np.ndarray,
    xy_j: np.ndarray,
    threshold_px: float = 1.0,
    max_iters: int = 2000,
    seed: int = 0,
    *,
    confidence: float = 0.999,
    min_inliers: int = 8,
    disparity_gate: float | None = 1.0,
) -> AffineFundamental | FailedEstimation:
    """Robust affine fundamental matrix by RANSAC (MSAC scoring) with a Gold-Standard refit.

    Hypotheses are fitted to random minimal samples of 4 matches (a hyperplane through 4 points of R⁴),
    drawn in vectorised batches; each is scored by ``Σ min(r², T²)`` over all matches. The number of
    hypotheses adapts to the best inlier ratio w: ``N = log(1 − confidence) / log(1 − w⁴)`` (at most
    ``max_iters``). The best model is refitted on its inliers by orthogonal regression, and the inlier
    set re-evaluated, until it stops changing (≤ 5 rounds).

    Disparity gate: a wrong match that lands by chance within T of its epipolar line usually lies far
    along it (any depth is "consistent"), and such a point has a large leverage on the fit — a couple
    of them can turn the estimated tilt axis by tenths of a degree. With ``disparity_gate = g``, inliers
    whose displacement along the epipolar lines (:func:`epipolar_disparity_px`) lies outside
    ``[q₀₁ − g w, q₉₉ + g w]`` (q the 1 % / 99 % quantiles of the inliers' displacement, ``w = q₉₉ − q₀₁``)
    are rejected before the final refit. Any relief seen by at least 1 % of the matches stays inside.

    Args:
        xy_i: (N, 2) px in view i.
        xy_j: (N, 2) px in view j.
        threshold_px: inlier threshold T on the geometric residual, px.
        max_iters: maximum number of hypotheses.
        seed: random seed.
        confidence: probability of drawing at least one all-inlier sample.
        min_inliers: fewer final inliers is a failure.
        disparity_gate: width multiplier of the disparity gate (see above); None disables it.

    Returns:
        :class:`AffineFundamental`, or a falsy :class:`FailedEstimation` with the reason.
    """
    z = _stack(xy_i, xy_j)
    n = z.shape[0]
    if n < max(4, min_inliers):
        return FailedEstimation(f"only {n} matches; an affine fundamental matrix needs at least {max(4, min_inliers)}")
    if not np.isfinite(z).all():
        return FailedEstimation("matches contain non-finite coordinates")
    rng = np.random.default_rng(seed)
    t2 = float(threshold_px) ** 2
    best_cost, best = np.inf, None
    needed, drawn, batch = max_iters, 0, 128
    while drawn < min(needed, max_iters):
        b = min(batch, max_iters - drawn)
        idx = rng.integers(0, n, size=(b, 4))
        srt = np.sort(idx, axis=1)
        idx = idx[(np.diff(srt, axis=1) > 0).all(axis=1)]
        drawn += b
        if idx.shape[0] == 0:
            continue
        s = z[idx]  # (b, 4, 4)
        sm = s.mean(axis=1, keepdims=True)
        _, sv, vt = np.linalg.svd(s - sm)
        good = sv[:, 2] > 1e-6 * np.maximum(sv[:, 0], 1e-12)  # skip degenerate (collinear) samples
        if not good.any():
            continue
        normals = vt[good, -1, :]  # (g, 4)
        offsets = -np.einsum("gk,gk->g", normals, sm[good, 0, :])
        r2 = (z @ normals.T + offsets) ** 2  # (N, g)
        cost = np.minimum(r2, t2).sum(axis=0)
        k = int(np.argmin(cost))
        if cost[k] < best_cost:
            best_cost, best = float(cost[k]), (normals[k], float(offsets[k]))
            w = float((r2[:, k] < t2).mean())
            if w >= 1.0:
                needed = drawn
            elif w > 0:
                needed = int(np.ceil(np.log(1.0 - confidence) / np.log(1.0 - w**4)))
    if best is None:
        return FailedEstimation("every sample of matches was degenerate (points on a line?)")
    inl = np.abs(z @ best[0] + best[1]) < threshold_px
    for _ in range(5):
        if inl.sum() < 4:
            break
        f = fit_affine_fundamental(z[inl, 2:], z[inl, :2])
        new = epipolar_residuals_px(f, z[:, 2:], z[:, :2]) < threshold_px
        if np.array_equal(new, inl):
            break
        inl = new
    if disparity_gate is not None and inl.sum() >= 4:
        f = fit_affine_fundamental(z[inl, 2:], z[inl, :2])
        disp = epipolar_disparity_px(f, z[:, 2:], z[:, :2])
        q01, q99 = np.quantile(disp[inl], [0.01, 0.99])
        width = q99 - q01
        gated = inl & ((disp < q01 - disparity_gate * width) | (disp > q99 + disparity_gate * width))
        if gated.any():
            logger.debug("affine F: disparity gate rejected %d matches", int(gated.sum()))
            inl = inl & ~gated
    n_in = int(inl.sum())
    if n_in < min_inliers:
        return FailedEstimation(f"only {n_in} of {n} matches fit one affine epipolar geometry (need {min_inliers})")
    f = fit_affine_fundamental(z[inl, 2:], z[inl, :2])
    inl = inl & (epipolar_residuals_px(f, z[:, 2:], z[:, :2]) < threshold_px)
    rms = float(np.sqrt(np.mean(epipolar_residuals_px(f, z[inl, 2:], z[inl, :2]) ** 2)))
    logger.debug("affine F: %d / %d inliers, rms %.3f px after %d hypotheses", int(inl.sum()), n, rms, drawn)
    return AffineFundamental(F=f, inliers=inl, rms_px=rms, n_iters=drawn)


def tilt_axis_from_fundamental(F: np.ndarray) -> float:
    """In-image direction of the tilt axis from the affine fundamental matrix of a pure eucentric tilt.

    A rotation about an axis u lying in the image plane leaves every point's coordinate along u
    unchanged (``R u = u`` and orthographic projection keeps in-plane components), so the epipolar
    constraint reads ``u·x_j / k_j − u·x_i / k_i = const``: the normals ``(a, b)`` and ``(c, d)`` of F are
    parallel to u (with opposite signs) and the epipolar lines — along which the depth-dependent
    disparity moves points — are perpendicular to the tilt axis. The axis is the direction of
    ``(a, b)/‖(a, b)‖ − (c, d)/‖(c, d)‖`` (the two views' estimates averaged).

    Args:
        F: (3, 3) affine fundamental matrix.

    Returns:
        Axis direction in degrees counter-clockwise (as displayed) from the image x axis, in (−90, 90]
        (image y points down, so this is ``atan2(−u_y, u_x)``; docs/conventions.md).
    """
    nj = np.array([F[0, 2], F[1, 2]], dtype=float)
    ni = np.array([F[2, 0], F[2, 1]], dtype=float)
    if np.linalg.norm(nj) < 1e-12 or np.linalg.norm(ni) < 1e-12:
        raise ValueError("F is not an affine fundamental matrix of two views (zero epipolar normal)")
    u = nj / np.linalg.norm(nj) - ni / np.linalg.norm(ni)
    return wrap_axis_deg(np.rad2deg(np.arctan2(-u[1], u[0])))
