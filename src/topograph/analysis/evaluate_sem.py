"""Ground-truth evaluation of SEM reconstructions: align a cloud to the true surface and measure it.

A reconstruction lives in its own frame: an unknown rotation and translation and an unknown scale when the
pixel size was not known. :func:`align_cloud` removes these with a robust, symmetric, trimmed ICP started
from many orientations; :func:`evaluate_cloud` then reports surface distances in world units and in % of the
specimen size, and the completeness of the cloud.

A mirror image of the specimen (the wrong branch of the affine depth reversal read in a wrong frame) or an
upside-down cloud (its Z pointing into the substrate) is a *failure*, not an ambiguity to forgive: the
cloud is scored with a **proper** similarity (no reflection); the best fit of its mirror image is computed
as well, only to say whether the cloud is mirrored (``mirrored``), and ``upside_down`` says whether the
aligning rotation turns the cloud's Z axis downward (``orientation_ok`` = neither).

Alignment model (Umeyama 1991, with an optional reflection):

``y = s R M x + t``, ``R ∈ SO(3)``, ``s > 0`` (``s = 1`` for ``mode="rigid"``), ``M = diag(1, 1, −1)``
when mirrored, else ``I``.

References:
    Umeyama, "Least-squares estimation of transformation parameters between two point patterns",
    IEEE TPAMI 13(4), 1991.
    Chetverikov et al., "The Trimmed Iterative Closest Point algorithm", ICPR 2002.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from scipy.spatial import cKDTree

from topograph.errors import TopographError
from topograph.geometry.affine import rotation_about_axis
from topograph.geometry.similarity import weighted_similarity

if TYPE_CHECKING:
    from topograph.synth.sem import SemTruth

log = logging.getLogger("topograph")

AlignMode = Literal["rigid", "similarity"]
MIRROR = np.diag([1.0, 1.0, -1.0])


@dataclass(frozen=True)
class Alignment:
    """A similarity transform with optional reflection: ``y = scale · rotation · M · x + translation``.

    ``rotation`` (3, 3) proper rotation; ``translation`` (3,) in truth units; ``mirrored`` means
    ``M = diag(1, 1, −1)`` is applied first (the cloud is the mirror image of the truth); ``rms`` is the
    trimmed symmetric ICP residual (truth units) at convergence.
    """

    rotation: np.ndarray
    scale: float
    translation: np.ndarray
    mirrored: bool
    rms: float = float("nan")

    def __post_init__(self) -> None:
        object.__setattr__(self, "rotation", np.asarray(self.rotation, dtype=float).reshape(3, 3))
        object.__setattr__(self, "translation", np.asarray(self.translation, dtype=float).reshape(3))

    @property
    def linear(self) -> np.ndarray:
        """The 3×3 linear part ``s R M`` (determinant negative when mirrored)."""
        m = MIRROR if self.mirrored else np.eye(3)
        return self.scale * self.rotation @ m

    @property
    def matrix(self) -> np.ndarray:
        """The 4×4 homogeneous matrix of the transform."""
        out = np.eye(4)
        out[:3, :3] = self.linear
        out[:3, 3] = self.translation
        return out

    def apply(self, points: np.ndarray) -> np.ndarray:
        """Transform (N, 3) points into the truth frame."""
        return np.asarray(points, dtype=float) @ self.linear.T + self.translation

    def to_dict(self) -> dict[str, Any]:
        return {
            "scale": float(self.scale),
            "rotation": self.rotation.tolist(),
            "translation": self.translation.tolist(),
            "mirrored": bool(self.mirrored),
            "icp_rms": float(self.rms),
        }


def _check_points(points: np.ndarray, name: str, min_points: int = 4) -> np.ndarray:
    p = np.asarray(points, dtype=float)
    if p.ndim != 2 or p.shape[1] != 3:
        raise ValueError(f"{name} must have shape (N, 3), got {p.shape}")
    p = p[np.isfinite(p).all(axis=1)]
    if p.shape[0] < min_points:
        raise TopographError(
            f"{name} has only {p.shape[0]} finite points (need at least {min_points})",
            "check that the file holds a reconstructed cloud",
        )
    return p


def _principal_frame(p: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Centroid, principal axes (columns, a proper rotation) and RMS radius of (N, 3) points."""
    c = p.mean(axis=0)
    q = p - c
    _, vecs = np.linalg.eigh(q.T @ q / len(q))
    vecs = vecs[:, ::-1]
    if np.linalg.det(vecs) < 0:
        vecs[:, 2] *= -1
    return c, vecs, float(np.sqrt((q**2).sum(axis=1).mean()))


def _cube_rotations() -> list[np.ndarray]:
    """The 24 proper rotations that map the coordinate axes onto ± coordinate axes."""
    out = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1.0, -1.0), repeat=3):
            m = np.zeros((3, 3))
            for i, j in enumerate(perm):
                m[i, j] = signs[i]
            if np.linalg.det(m) > 0:
                out.append(m)
    return out


def _robust_weights(d: np.ndarray, trim_fraction: float) -> np.ndarray:
    """Trimmed Huber weights: 0 beyond the ``trim_fraction`` quantile, ``min(1, δ/d)`` with ``δ = 2 median(d)``."""
    if d.size == 0:
        return d
    cut = np.quantile(d, trim_fraction)
    delta = max(2.0 * float(np.median(d)), 1e-12)
    w = np.minimum(1.0, delta / np.maximum(d, 1e-300))
    w[d > cut] = 0.0
    return w


def _trimmed_ms(d: np.ndarray, trim_fraction: float) -> float:
    if d.size == 0:
        return 0.0
    k = max(1, int(np.ceil(trim_fraction * d.size)))
    return float(np.mean(np.partition(d**2, k - 1)[:k]))


@dataclass
class _IcpState:
    rotation: np.ndarray
    scale: float
    translation: np.ndarray
    mirrored: bool
    score: float = float("inf")


@dataclass(frozen=True)
class _Target:
    """The truth as ICP sees it: samples, their KD-tree, normals, and the points the cloud should cover."""

    points: np.ndarray
    tree: cKDTree
    normals: np.ndarray
    reverse: np.ndarray | None
    reverse_normals: np.ndarray | None


def _pairs(x: np.ndarray, st: _IcpState, target: _Target, trim_fraction: float, reverse_weight: float = 1.0):
    """Current correspondences: (cloud index, truth point, truth normal, weight) both ways, and the score.

    The reverse pairs' weights are multiplied by ``reverse_weight``.
    """
    y = st.scale * x @ st.rotation.T + st.translation
    d_f, idx_f = target.tree.query(y)
    w_f = _robust_weights(d_f, trim_fraction)
    ms = _trimmed_ms(d_f, trim_fraction)
    src_idx, q, n, w = [np.arange(len(x))], [target.points[idx_f]], [target.normals[idx_f]], [w_f]
    if target.reverse is not None:
        d_r, idx_r = cKDTree(y).query(target.reverse)
        src_idx.append(idx_r)
        q.append(target.reverse)
        n.append(target.reverse_normals)
        w.append(reverse_weight * _robust_weights(d_r, trim_fraction))
        ms = 0.5 * (ms + _trimmed_ms(d_r, trim_fraction))
    return y, np.concatenate(src_idx), np.vstack(q), np.vstack(n), np.concatenate(w), float(np.sqrt(ms))


def _icp_point_to_point(
    x: np.ndarray, target: _Target, st: _IcpState, *, with_scale: bool, trim_fraction: float, iterations: int
) -> _IcpState:
    """Symmetric trimmed point-to-point ICP, each step solved in closed form (:func:`weighted_similarity`)."""
    xm = x @ MIRROR.T if st.mirrored else x
    for _ in range(iterations):
        _, idx, q, _, w, score = _pairs(xm, st, target, trim_fraction)
        r, s, t = weighted_similarity(xm[idx], q, w, with_scale=with_scale)
        st = _IcpState(r, s, t, st.mirrored, score)
    _, _, _, _, _, score = _pairs(xm, st, target, trim_fraction)
    st.score = score
    return st


def _icp_point_to_plane(
    x: np.ndarray,
    target: _Target,
    st: _IcpState,
    *,
    with_scale: bool,
    trim_fraction: float,
    iterations: int,
    tol: float,
    point_weight: float = 1e-3,
    reverse_weight: float = 0.1,
) -> _IcpState:
    """Symmetric trimmed point-to-plane ICP by Gauss–Newton on the similarity.

    The update ``y' = (1 + δs) Rot(ω) (y − c) + c + δt`` (``c`` = truth centroid) is linearised to
    ``y' ≈ y + δs (y − c) + ω × (y − c) + δt``; each pair (cloud point ``y``, truth point ``q`` with unit
    normal ``n``) contributes the residual ``n · (y' − q)`` (row ``[(y − c) × n, n · (y − c), n]``) and, with
    the small weight ``point_weight``, the point-to-point residual ``y' − q`` that pins the directions a
    plane leaves free. Normal equations with trimmed Huber weights give ``(ω, δs, δt)``. The reverse pairs
    only guard the scale here (weight ``reverse_weight``): on a curved surface their point-to-plane residuals
    carry a bias of order curvature × (cloud spacing)².
    """
    xm = x @ MIRROR.T if st.mirrored else x
    c = target.points.mean(axis=0)
    radius = float(np.sqrt(((target.points - c) ** 2).sum(axis=1).mean()))
    for _ in range(iterations):
        y, idx, q, n, w, score = _pairs(xm, st, target, trim_fraction, reverse_weight)
        yc = y[idx] - c
        diff = y[idx] - q
        # point-to-plane rows
        jp = np.hstack([np.cross(yc, n), (n * yc).sum(axis=1, keepdims=True), n])
        rp = (n * diff).sum(axis=1)
        a = (jp * w[:, None]).T @ jp
        b = (jp * w[:, None]).T @ rp
        # point-to-point rows for each coordinate k: d(y'_k)/d(ω, δs, δt)
        for k in range(3):
            e = np.zeros(3)
            e[k] = 1.0
            jk = np.hstack([np.cross(yc, e), yc[:, k : k + 1], np.broadcast_to(e, yc.shape)])
            a += point_weight * (jk * w[:, None]).T @ jk
            b += point_weight * (jk * w[:, None]).T @ diff[:, k]
        free = [0, 1, 2, 3, 4, 5, 6] if with_scale else [0, 1, 2, 4, 5, 6]
        a_f = a[np.ix_(free, free)]
        a_f += 1e-9 * np.trace(a_f) / len(free) * np.eye(len(free))
        delta = np.zeros(7)
        delta[free] = -np.linalg.solve(a_f, b[free])
        omega, ds, dt = delta[:3], delta[3], delta[4:]
        step = max(float(np.linalg.norm(omega)), abs(float(ds)), float(np.linalg.norm(dt)) / radius)
        angle = float(np.linalg.norm(omega))
        rot = rotation_about_axis(omega / angle, angle) if angle > 0 else np.eye(3)
        st = _IcpState(
            rot @ st.rotation,
            st.scale * (1.0 + ds),
            (1.0 + ds) * rot @ (st.translation - c) + c + dt,
            st.mirrored,
            score,
        )
        if step < tol:
            break
    _, _, _, _, _, st.score = _pairs(xm, st, target, trim_fraction)
    return st


def _subsample(p: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    if p.shape[0] <= n:
        return p
    return p[np.sort(rng.choice(p.shape[0], n, replace=False))]


def even_subsample(p: np.ndarray, n: int, rng: np.random.Generator, rounds: int = 6) -> np.ndarray:
    """About ``n`` of the (M, 3) points, evenly spread over the surface they sample: one random point per
    occupied cube of a grid whose edge ``h`` is tuned so that about ``n`` cubes are occupied.

    A surface occupies ``∝ h⁻²`` cubes, so each round rescales ``h ← h · sqrt(count / n)``. A truth sampled
    unevenly (a fine grid over the grain, a coarse ring of substrate around it; mesh vertices added to
    face samples) would otherwise bias point-to-point ICP towards the dense part: nearest-sample distances
    are smaller there, and a cloud shrunk onto it scores better than the right alignment (issue 16: a grain
    filling 10 % of the field, scale 0.16).
    """
    if p.shape[0] <= n:
        return p
    lo = p.min(axis=0)
    ext = np.maximum(p.max(axis=0) - lo, 1e-12)
    # start from the edge of n cubes tiling the two largest extents (a surface seen from above)
    e = np.sort(ext)[::-1]
    h = float(np.sqrt(e[0] * e[1] / n))
    best: np.ndarray | None = None
    for _ in range(rounds):
        cell = np.floor((p - lo) / h).astype(np.int64)
        dims = cell.max(axis=0) + 1
        keys = (cell[:, 0] * dims[1] + cell[:, 1]) * dims[2] + cell[:, 2]
        order = np.argsort(keys, kind="stable")
        _, start, count = np.unique(keys[order], return_index=True, return_counts=True)
        if best is None or abs(len(count) - n) < abs(len(best) - n):
            # a random member of every occupied cube
            best = order[start + (rng.random(len(count)) * count).astype(np.int64)]
        if abs(len(count) - n) <= 0.05 * n:
            break
        h *= float(np.sqrt(len(count) / n))
    assert best is not None
    return p[np.sort(best)]


def _initial_states(
    src: np.ndarray,
    refs: Sequence[np.ndarray],
    *,
    with_scale: bool,
    allow_mirror: bool,
    init: Alignment | None,
) -> list[_IcpState]:
    """Starting transforms: the identity, then per reference set the centroid- and size-matched identity and
    24 PCA-frame orientations (each also mirrored when allowed).

    Several reference sets (the visible part and the whole truth) give several size hypotheses, for
    clouds that hold only the specimen as well as clouds that include its surroundings.
    """
    cs, _, rad_s = _principal_frame(src)
    states: list[_IcpState] = []
    if init is not None:
        states.append(_IcpState(init.rotation, init.scale if with_scale else 1.0, init.translation, init.mirrored))
    states.append(_IcpState(np.eye(3), 1.0, np.zeros(3), False))
    mirrors = (False, True) if allow_mirror else (False,)
    frames = {m: _principal_frame(src @ (MIRROR if m else np.eye(3)).T)[1] for m in mirrors}
    for ref in refs:
        ct, axes_t, rad_t = _principal_frame(ref)
        s0 = rad_t / rad_s if with_scale and rad_s > 0 else 1.0
        for mirrored in mirrors:
            m = MIRROR if mirrored else np.eye(3)
            states.append(_IcpState(np.eye(3), s0, ct - s0 * m @ cs, mirrored))
            # PCA: R maps the source principal axes (after the mirror) onto the truth's, up to the cube group.
            for cube in _cube_rotations():
                r = axes_t @ cube @ frames[mirrored].T
                states.append(_IcpState(r, s0, ct - s0 * r @ (m @ cs), mirrored))
            # A flat specimen field (a grain on its substrate) has no in-plane principal axes: the PCA starts
            # are turned about the normal by an arbitrary angle and a round grain lets ICP settle there (issue
            # 16: 4.9 % RMS for a right cloud). So also: the cloud's normal onto ± the truth's, turned about it
            # in AZIMUTH_STEP_DEG steps, the cloud's top (its highest 5 % along the normal it is mapped with)
            # on the truth's top, at the size-matched scale and at scale 1 (clouds in the truth's unit).
            n_s = frames[mirrored][:, 2]
            scales = {s0, 1.0} if with_scale else {1.0}
            for sigma, up in itertools.product((1.0, -1.0), (1.0, -1.0)):
                n_t = sigma * axes_t[:, 2]
                top_t = _top_centroid(ref, n_t)
                top_s = _top_centroid(src @ m.T, up * n_s)  # in the (mirrored) frame the rotation acts on
                base = _rotation_between(up * n_s, n_t)
                for phi in np.arange(0.0, 360.0, AZIMUTH_STEP_DEG):
                    r = rotation_about_axis(n_t, np.deg2rad(phi)) @ base
                    for sc in scales:
                        states.append(_IcpState(r, sc, top_t - sc * r @ top_s, mirrored))
    return states


COARSE_POINTS = 1000
"""Cloud and reverse points of the coarse ICP stage (:func:`align_cloud`). The reverse pairs' distances
grow with the cloud's sample spacing; with few points, a cloud that is mostly substrate scores better shrunk
onto the specimen (all its samples there) than right (issue 16: 300 points let a grain filling 10 % of the
field be fitted at scale 0.16)."""

AZIMUTH_STEP_DEG = 20.0
"""Step of the starting orientations about the substrate normal (:func:`_initial_states`)."""


def _top_centroid(p: np.ndarray, direction: np.ndarray, fraction: float = 0.05) -> np.ndarray:
    """Centroid of the ``fraction`` of points farthest along ``direction`` (a specimen's top)."""
    h = p @ direction
    return p[h >= np.quantile(h, 1.0 - fraction)].mean(axis=0)


def _rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Smallest proper rotation taking unit vector ``a`` onto unit vector ``b`` (Rodrigues; a half turn about
    an axis normal to ``a`` when they are opposite)."""
    a = a / np.linalg.norm(a)
    b = b / np.linalg.norm(b)
    v = np.cross(a, b)
    c = float(a @ b)
    if np.linalg.norm(v) < 1e-12:
        if c > 0:
            return np.eye(3)
        perp = np.cross(a, [1.0, 0.0, 0.0] if abs(a[0]) < 0.9 else [0.0, 1.0, 0.0])
        return rotation_about_axis(perp / np.linalg.norm(perp), np.pi)
    return rotation_about_axis(v / np.linalg.norm(v), float(np.arctan2(np.linalg.norm(v), c)))


def align_cloud(
    points: np.ndarray,
    truth_points: np.ndarray,
    mode: AlignMode = "similarity",
    allow_mirror: bool = True,
    init: Alignment | None = None,
    *,
    reverse_points: np.ndarray | None = None,
    symmetric: bool = True,
    trim_fraction: float = 0.9,
    max_points: int = 4000,
    max_truth_points: int = 60000,
    max_iterations: int = 30,
    n_refine: int = 3,
    seed: int = 0,
) -> Alignment:
    """Align a reconstructed cloud to the true surface by robust ICP from many starting orientations.

    Symmetric trimmed ICP: every cloud point is paired with its nearest truth point and every (visible)
    truth point with its nearest cloud point; the reverse pairs keep the scale from collapsing onto a
    patch of the surface. Pairs get trimmed Huber weights (:func:`_robust_weights`).

    1. Starts: the identity, the centroid- and size-matched identity, and the 24 axis-aligned orientations
       between the principal frames of cloud and truth — each also mirrored when ``allow_mirror``, and for
       both the reverse points and the whole truth as the reference (two size hypotheses).
    2. Every start runs two point-to-point iterations on small subsamples (closed-form weighted
       similarity, :func:`weighted_similarity`), the best quarter six more: a wide basin of convergence.
    3. The ``n_refine`` best are refined by Gauss–Newton point-to-plane ICP on a larger subsample
       (fast convergence and no bias from the spacing of the truth samples); the lowest trimmed residual wins.

    Args:
        points: (N, 3) reconstructed cloud in any frame and unit.
        truth_points: (M, 3) dense samples of the true surface (truth units).
        mode: ``"similarity"`` (estimate the scale) or ``"rigid"`` (scale fixed to 1).
        allow_mirror: also try the mirror image of the cloud (affine depth-reversal ambiguity).
        init: an extra start (e.g. a previous alignment).
        reverse_points: truth points the cloud is expected to cover (default ``truth_points``); pass the
            visible part of the truth when the cloud can only see one side (their normals are taken
            from the nearest truth point).
        symmetric: use the reverse pairs (always advisable with ``mode="similarity"``).
        trim_fraction: fraction of pairs kept in each direction (the rest are treated as outliers).
        max_points: subsample size of cloud and reverse points in the refinement.
        max_truth_points: the truth is randomly subsampled to this many points for ICP.
        max_iterations: Gauss–Newton iterations of the refinement.
        n_refine: number of best starts refined.
        seed: seed of the subsampling.

    Returns:
        The :class:`Alignment` mapping ``points`` into the truth frame.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> truth = rng.normal(size=(2000, 3)) * [3.0, 2.0, 1.0]
        >>> al = align_cloud(0.5 * truth[:, [1, 0, 2]], truth)
        >>> bool(al.mirrored), round(al.scale, 3)
        (True, 2.0)
    """
    if mode not in ("rigid", "similarity"):
        raise TopographError(f"unknown alignment mode '{mode}'", "use 'rigid' or 'similarity'")
    if not 0.2 <= trim_fraction <= 1.0:
        raise ValueError("trim_fraction must be in [0.2, 1]")
    src_all = _check_points(points, "cloud")
    truth = _check_points(truth_points, "truth")
    rev_all = truth if reverse_points is None else _check_points(reverse_points, "reverse_points")
    rng = np.random.default_rng(seed)
    with_scale = mode == "similarity"
    truth = even_subsample(truth, max_truth_points, rng)
    tree = cKDTree(truth)
    normals, _ = estimate_normals(truth)
    _, rev_idx_all = tree.query(rev_all)

    def target(n_rev: int) -> _Target:
        if not symmetric:
            return _Target(truth, tree, normals, None, None)
        pick = _subsample(np.arange(len(rev_all))[:, None], n_rev, rng)[:, 0]
        return _Target(truth, tree, normals, rev_all[pick], normals[rev_idx_all[pick]])

    coarse_src = _subsample(src_all, min(COARSE_POINTS, max_points), rng)
    # the coarse stage pairs against a sparse truth: queries from far-off starts stay cheap
    coarse_truth_idx = _subsample(np.arange(len(truth))[:, None], 3000, rng)[:, 0]
    coarse_truth = truth[coarse_truth_idx]
    coarse_rev = _subsample(rev_all, min(COARSE_POINTS, max_points), rng) if symmetric else None
    coarse_rev_normals = None if coarse_rev is None else np.zeros_like(coarse_rev)  # unused by point-to-point
    coarse_target = _Target(
        coarse_truth, cKDTree(coarse_truth), normals[coarse_truth_idx], coarse_rev, coarse_rev_normals
    )
    refs = [truth] if rev_all is truth or not symmetric else [rev_all, truth]
    starts = _initial_states(coarse_src, refs, with_scale=with_scale, allow_mirror=allow_mirror, init=init)
    # successive halving: every start runs 2 iterations, the best quarter 6 more
    coarse = [
        _icp_point_to_point(
            coarse_src, coarse_target, st, with_scale=with_scale, trim_fraction=trim_fraction, iterations=2
        )
        for st in starts
    ]
    coarse.sort(key=lambda st: st.score)
    coarse = [
        _icp_point_to_point(
            coarse_src, coarse_target, st, with_scale=with_scale, trim_fraction=trim_fraction, iterations=6
        )
        for st in coarse[: max(n_refine, len(coarse) // 4)]
    ]
    coarse.sort(key=lambda st: st.score)
    src = _subsample(src_all, max_points, rng)
    fine_target = target(max_points)
    refined = []
    for st in coarse[: max(1, n_refine)]:
        st = _icp_point_to_point(src, fine_target, st, with_scale=with_scale, trim_fraction=trim_fraction, iterations=5)
        refined.append(
            _icp_point_to_plane(
                src,
                fine_target,
                st,
                with_scale=with_scale,
                trim_fraction=trim_fraction,
                iterations=max_iterations,
                tol=1e-8,
            )
        )
    best = min(refined, key=lambda st: st.score)
    log.debug(
        "ICP: %d starts, best residual %.4g (scale %.5g, mirrored %s)",
        len(starts),
        best.score,
        best.scale,
        best.mirrored,
    )
    return Alignment(best.rotation, best.scale, best.translation, best.mirrored, best.score)


def estimate_normals(points: np.ndarray, k: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Unit normals and local sample spacing of (M, 3) surface samples by PCA of k nearest neighbours.

    Returns:
        ``(normals (M, 3), spacing (M,))``: the eigenvector of the smallest eigenvalue of each
        neighbourhood's covariance, and the mean distance to the k neighbours.
    """
    p = np.asarray(points, dtype=float)
    k = int(min(k, len(p) - 1))
    d, idx = cKDTree(p).query(p, k=k + 1)
    nb = p[idx[:, 1:]] - p[idx[:, 1:]].mean(axis=1, keepdims=True)
    cov = np.einsum("nki,nkj->nij", nb, nb) / k
    _, vecs = np.linalg.eigh(cov)
    return vecs[:, :, 0], d[:, 1:].mean(axis=1)


def surface_distance(
    points: np.ndarray,
    truth_points: np.ndarray,
    *,
    k: int = 12,
) -> np.ndarray:
    """Unsigned distance of (N, 3) points to a surface given by dense samples.

    Point-to-plane distance ``|n · (p − q)|`` to the tangent plane at the nearest sample ``q`` (normal ``n``
    by PCA of the ``k`` samples nearest to ``q``, :func:`estimate_normals`) when the foot of the
    perpendicular lies within two sample spacings of ``q`` (the sampling gap is then not counted as
    error); otherwise the point-to-point distance ``|p − q|``.

    Args:
        points: (N, 3) query points.
        truth_points: (M, 3) surface samples.
        k: neighbourhood size of the normal estimate.

    Returns:
        (N,) distances in the units of the truth.
    """
    truth = np.asarray(truth_points, dtype=float)
    p = np.asarray(points, dtype=float)
    tree = cKDTree(truth)
    d, idx = tree.query(p)
    used, inverse = np.unique(idx, return_inverse=True)
    k = int(min(k, len(truth) - 1))
    dn, nb_idx = tree.query(truth[used], k=k + 1)
    nb = truth[nb_idx[:, 1:]]
    nb = nb - nb.mean(axis=1, keepdims=True)
    _, vecs = np.linalg.eigh(np.einsum("nki,nkj->nij", nb, nb) / k)
    normals = vecs[:, :, 0][inverse]
    spacing = dn[:, 1:].mean(axis=1)[inverse]
    diff = p - truth[idx]
    normal_part = np.abs((diff * normals).sum(axis=1))
    tangential = np.sqrt(np.maximum(d**2 - normal_part**2, 0.0))
    return np.where(tangential <= 2.0 * spacing, normal_part, d)


def estimate_specimen_size(truth_points: np.ndarray) -> float:
    """Size of a specimen: its largest extent along its principal axes (a Feret-like diameter), truth units."""
    p = _check_points(truth_points, "truth")
    c, axes, _ = _principal_frame(p)
    proj = (p - c) @ axes
    return float((proj.max(axis=0) - proj.min(axis=0)).max())


def evaluate_cloud(
    points: np.ndarray,
    truth_points: np.ndarray,
    truth_distance_fn: Callable[[np.ndarray], np.ndarray] | None = None,
    specimen_size: float | None = None,
    mode: AlignMode = "similarity",
    visible_truth_points: np.ndarray | None = None,
    completeness_tol_fraction: float = 0.01,
    *,
    allow_mirror: bool = True,
    alignment: Alignment | None = None,
    point_groups: Mapping[str, Callable[[np.ndarray], np.ndarray]] | None = None,
    seed: int = 0,
    mirror_ratio: float = 0.8,
    max_truth_points: int = 60000,
) -> dict[str, Any]:
    """Align a cloud to the truth and measure its accuracy and completeness (design.md, SEM protocol).

    * distance of every aligned cloud point to the true surface: ``truth_distance_fn`` when given (exact),
      else :func:`surface_distance` to the truth samples; RMS, median and 95th percentile, in truth units
      and in % of ``specimen_size``;
    * completeness: fraction of the (visible) truth points with an aligned cloud point within
      ``completeness_tol_fraction · specimen_size``.

    Args:
        points: (N, 3) reconstructed cloud in any frame.
        truth_points: (M, 3) dense samples of the whole true surface (truth units).
        truth_distance_fn: maps (K, 3) truth-frame points to (K,) unsigned distances to the true surface.
        specimen_size: size used for the percentages (default :func:`estimate_specimen_size` of the truth).
        mode: ``"similarity"`` or ``"rigid"`` alignment (always proper: no reflection).
        visible_truth_points: the part of the truth the cameras could see (completeness and ICP reverse pairs).
        completeness_tol_fraction: completeness tolerance as a fraction of the specimen size.
        allow_mirror: also fit the mirror image of the cloud, to report whether the cloud is mirrored
            (``mirrored``: the mirror fit's median distance is below ``mirror_ratio`` × the proper fit's, over
            the points of the first of ``point_groups`` when given, the specimen, else over all points).
            The figures are always those of the proper alignment.
        alignment: skip ICP and use this alignment.
        point_groups: named selectors of aligned points ((K, 3) truth frame → (K,) bool); each group gets
            its own distance statistics under ``groups[name]`` (e.g. "grain": points over the footprint).
        seed: seed of the ICP subsampling.
        mirror_ratio: see ``allow_mirror``.
        max_truth_points: truth subsample size of the ICP (:func:`align_cloud`).

    Returns:
        A JSON-ready dict: ``rms_distance``, ``median_distance``, ``p95_distance`` (truth units),
        the same with suffix ``_pct`` (% of specimen size), ``completeness``, ``completeness_tol``,
        ``specimen_size``, ``n_points``, ``n_truth_points``, ``alignment``, ``groups``, ``mirrored``,
        ``upside_down``, ``orientation_ok`` and ``mirror_fit`` (the mirror image's distances, or None).
    """
    cloud = _check_points(points, "cloud")
    truth = _check_points(truth_points, "truth")
    visible = truth if visible_truth_points is None else _check_points(visible_truth_points, "visible truth")
    size = float(specimen_size) if specimen_size is not None else estimate_specimen_size(truth)
    if not size > 0:
        raise TopographError("the specimen size must be positive", "pass a positive specimen size")
    rev = None if visible_truth_points is None else visible
    if alignment is None:
        alignment = align_cloud(
            cloud, truth, mode, False, reverse_points=rev, seed=seed, max_truth_points=max_truth_points
        )

    def distances(al: Alignment, pts: np.ndarray) -> np.ndarray:
        moved = al.apply(pts)
        if truth_distance_fn is not None:
            return np.abs(np.asarray(truth_distance_fn(moved), dtype=float)).reshape(-1)
        return surface_distance(moved, truth)

    aligned = alignment.apply(cloud)
    dist = distances(alignment, cloud)
    mirror_fit = None
    mirrored = bool(alignment.mirrored)
    if allow_mirror and not alignment.mirrored:
        flipped = cloud @ MIRROR.T
        mal = align_cloud(flipped, truth, mode, False, reverse_points=rev, seed=seed, max_truth_points=max_truth_points)
        mdist = distances(mal, flipped)
        mirror_fit = {k: v for k, v in _distance_stats(mdist, size).items() if k != "n"}
        # Chirality shows on the specimen, not on the substrate around it: with point groups the first
        # group's points decide (a cloud that is mostly substrate has both medians at the substrate noise).
        sel, msel = _first_group(point_groups, aligned), _first_group(point_groups, mal.apply(flipped))
        if sel is not None and msel is not None:
            mirrored = bool(np.median(mdist[msel]) < mirror_ratio * np.median(dist[sel]))
        else:
            mirrored = bool(np.median(mdist) < mirror_ratio * np.median(dist))
    upside_down = bool(alignment.rotation[2, 2] < 0)
    tol = completeness_tol_fraction * size
    d_cov, _ = cKDTree(aligned).query(visible, distance_upper_bound=tol)
    completeness = float(np.mean(np.isfinite(d_cov)))
    groups = {}
    for name, select in (point_groups or {}).items():
        keep = np.asarray(select(aligned), dtype=bool).reshape(-1)
        groups[name] = _distance_stats(dist[keep], size)
    return {
        "n_points": int(len(cloud)),
        "n_truth_points": int(len(truth)),
        "specimen_size": size,
        **{k: v for k, v in _distance_stats(dist, size).items() if k != "n"},
        "completeness": completeness,
        "completeness_tol": tol,
        "alignment": alignment.to_dict(),
        "groups": groups,
        "mirrored": mirrored,
        "upside_down": upside_down,
        "orientation_ok": not mirrored and not upside_down,
        "mirror_fit": mirror_fit,
    }


def _first_group(
    point_groups: Mapping[str, Callable[[np.ndarray], np.ndarray]] | None, aligned: np.ndarray
) -> np.ndarray | None:
    """Selection of the first point group among aligned points, or None (no groups, or fewer than 20 points)."""
    if not point_groups:
        return None
    keep = np.asarray(next(iter(point_groups.values()))(aligned), dtype=bool).reshape(-1)
    return keep if keep.sum() >= 20 else None


def _distance_stats(dist: np.ndarray, size: float) -> dict[str, Any]:
    """RMS, median and 95th percentile of distances, in units and in % of ``size`` (NaN when empty)."""
    if dist.size == 0:
        rms = med = p95 = float("nan")
    else:
        rms = float(np.sqrt(np.mean(dist**2)))
        med = float(np.median(dist))
        p95 = float(np.quantile(dist, 0.95))
    return {
        "n": int(dist.size),
        "rms_distance": rms,
        "median_distance": med,
        "p95_distance": p95,
        "rms_distance_pct": 100.0 * rms / size,
        "median_distance_pct": 100.0 * med / size,
        "p95_distance_pct": 100.0 * p95 / size,
    }


def tilt_errors(
    recovered_deg: Sequence[float], true_deg: Sequence[float], *, allow_sign_flip: bool = True
) -> dict[str, Any]:
    """Errors of recovered relative tilts against the true ones.

    Both lists are made relative to their first view (``θ_f − θ_0``). The depth-reversal ambiguity of
    affine cameras flips the sign of every relative tilt, so with ``allow_sign_flip`` the sign giving the
    smaller error is used (and reported).

    Args:
        recovered_deg: (F,) recovered tilts, degrees.
        true_deg: (F,) true stage tilts, degrees.
        allow_sign_flip: accept the mirrored (sign-flipped) solution.

    Returns:
        ``{"errors_deg": (F,) signed errors, "max_abs_error_deg", "rms_error_deg", "sign_flipped"}``.
    """
    rec = np.asarray(recovered_deg, dtype=float).reshape(-1)
    tru = np.asarray(true_deg, dtype=float).reshape(-1)
    if rec.shape != tru.shape:
        raise TopographError(
            f"{rec.size} recovered tilts but {tru.size} true tilts", "give the cameras of the same series as the truth"
        )
    rec_rel = rec - rec[0]
    tru_rel = tru - tru[0]
    err = rec_rel - tru_rel
    flipped = False
    if allow_sign_flip:
        err_flip = -rec_rel - tru_rel
        if np.sum(err_flip**2) < np.sum(err**2):
            err, flipped = err_flip, True
    return {
        "errors_deg": err.tolist(),
        "max_abs_error_deg": float(np.max(np.abs(err))),
        "rms_error_deg": float(np.sqrt(np.mean(err**2))),
        "sign_flipped": flipped,
    }


def rotation_errors(recovered: Sequence[np.ndarray], true: Sequence[np.ndarray]) -> dict[str, Any]:
    """Errors of the relative rotation angles ``∠(R_f R_0ᵀ)`` of recovered vs true camera rotations.

    The angle of a relative rotation does not depend on the world frame or on the mirror branch, so it
    compares cameras without any alignment.

    Args:
        recovered: F (3, 3) world→camera rotations of the reconstruction.
        true: F (3, 3) true world→camera rotations.

    Returns:
        ``{"angles_deg": recovered angles, "true_angles_deg", "errors_deg", "max_abs_error_deg"}``.
    """
    from topograph.geometry.affine import rotation_angle_deg

    if len(recovered) != len(true):
        raise TopographError(
            f"{len(recovered)} recovered cameras but {len(true)} true ones", "give the cameras of the same series"
        )
    ang = np.array([rotation_angle_deg(recovered[0], r) for r in recovered])
    ang_t = np.array([rotation_angle_deg(true[0], r) for r in true])
    err = ang - ang_t
    return {
        "angles_deg": ang.tolist(),
        "true_angles_deg": ang_t.tolist(),
        "errors_deg": err.tolist(),
        "max_abs_error_deg": float(np.max(np.abs(err))),
    }


# ----------------------------------------------------------------------------------------------------
# The SEM protocol against a `topograph synth sem` truth, and hand-made truths
# ----------------------------------------------------------------------------------------------------


def _view_footprint_xy(truth: SemTruth) -> np.ndarray:
    """(4F, 2) substrate-plane (Z = 0) points seen at the image corners of every view: ``M[:, :2] X = x − t``."""
    hh, ww = truth.image_shape
    corners = np.array([[0.0, 0.0], [ww - 1.0, 0.0], [0.0, hh - 1.0], [ww - 1.0, hh - 1.0]])
    out = [np.linalg.solve(cam.matrix[:, :2], (corners - cam.translation).T).T for cam in truth.cameras]
    return np.vstack(out)


def sem_truth_reference(truth: SemTruth, *, max_points_per_view: int = 40000) -> tuple[np.ndarray, np.ndarray]:
    """Reference point sets of a synthetic SEM truth.

    * the true surface: dense samples of the grid (:meth:`SemTruth.surface_points`) plus samples of the
      substrate plane ``Z = 0`` beyond the grid, out to what the views' fields of view cover (a dense cloud
      includes the substrate around the grain);
    * the visible grain: the union over views of the grain points seen through the pixel centres
      (every ``stride``-th pixel, ``stride`` chosen for ≤ ``max_points_per_view`` pixels per view).

    Returns:
        ``(surface_points (M, 3), visible_grain_points (K, 3))`` in µm.
    """
    grid_pts = truth.surface_points()
    spacing = max(truth.grid_spacing_um, 1e-9)
    ny, nx = truth.surface.height.shape
    x0, y0 = truth.grid_origin_um
    x1, y1 = x0 + (nx - 1) * spacing, y0 + (ny - 1) * spacing
    fov = _view_footprint_xy(truth)
    lo = np.minimum(fov.min(axis=0), [x0, y0])
    hi = np.maximum(fov.max(axis=0), [x1, y1])
    step = max(spacing, float(np.sqrt((hi - lo).prod() / 2e5)))
    gx, gy = np.meshgrid(np.arange(lo[0], hi[0] + step, step), np.arange(lo[1], hi[1] + step, step))
    outside = (gx < x0) | (gx > x1) | (gy < y0) | (gy > y1)
    ring = np.column_stack([gx[outside], gy[outside], np.zeros(int(outside.sum()))])
    hh, ww = truth.image_shape
    stride = max(1, int(np.ceil(np.sqrt(hh * ww / max_points_per_view))))
    visible = np.vstack([truth.visible_surface_points(v, stride=stride) for v in range(len(truth.cameras))])
    if len(visible) == 0:
        visible = truth.surface_points(grain_only=True)
    return np.vstack([grid_pts, ring]), visible


def evaluate_sem_truth(
    points: np.ndarray,
    truth: SemTruth,
    *,
    mode: AlignMode = "similarity",
    allow_mirror: bool = True,
    recovered_tilts_deg: Sequence[float] | None = None,
    recovered_rotations: Sequence[np.ndarray] | None = None,
    completeness_tol_fraction: float = 0.01,
    seed: int = 0,
    recovered_tilt_axis_deg: float | None = None,
    max_truth_points: int = 60000,
) -> dict[str, Any]:
    """The SEM protocol of design.md against a synthetic truth.

    Proper similarity (or rigid) alignment, the mirror fit only to report a mirror image; distances by the truth's exact
    :meth:`SemTruth.distance_to_surface` for all points and for the points over the grain footprint
    (group "grain"); percentages of the grain's equivalent diameter; completeness of the visible grain;
    the recovered scale (``alignment.scale`` = 1 means the cloud's absolute scale is right when it is in
    µm); tilt and rotation errors when the recovered cameras are given.

    Args:
        points: (N, 3) reconstructed cloud.
        truth: the ground truth (:func:`topograph.synth.sem.load_sem_truth`).
        mode: "similarity" or "rigid".
        allow_mirror: allow the mirror image (depth-reversal ambiguity).
        recovered_tilts_deg: (F,) recovered tilts (relative to view 0).
        recovered_rotations: F (3, 3) recovered world→camera rotations.
        max_truth_points: truth subsample size of the ICP.
        recovered_tilt_axis_deg: the recovered tilt-axis direction (image, counter-clockwise from x); with it
            the tilts are compared with their sign (about that direction) and the axis error is reported.
        completeness_tol_fraction: completeness tolerance, fraction of the grain diameter.
        seed: ICP subsampling seed.

    Returns:
        JSON-ready dict (:func:`evaluate_cloud` keys, plus ``tilts`` / ``rotations`` and ``truth`` facts).
    """
    surface, visible = sem_truth_reference(truth)
    res = evaluate_cloud(
        points,
        surface,
        truth.distance_to_surface,
        truth.grain_diameter_um,
        mode,
        visible,
        completeness_tol_fraction,
        allow_mirror=allow_mirror,
        point_groups={"grain": lambda p: truth.height_at(p[:, 0], p[:, 1]) > 0},
        seed=seed,
        max_truth_points=max_truth_points,
    )
    res["unit"] = "um"
    res["specimen_size_definition"] = "grain equivalent-circle diameter"
    res["truth"] = {
        "grain_diameter_um": truth.grain_diameter_um,
        "grain_height_um": truth.grain_height_um,
        "tilts_deg": list(truth.tilts_deg),
        "pixel_size_um": truth.pixel_size_um,
    }
    if recovered_tilts_deg is not None:
        if recovered_tilt_axis_deg is not None:
            diff = (float(recovered_tilt_axis_deg) - truth.tilt_axis_deg + 90.0) % 180.0 - 90.0
            res["tilt_axis_error_deg"] = diff
            sign = 1.0 if np.cos(np.deg2rad(recovered_tilt_axis_deg - truth.tilt_axis_deg)) >= 0 else -1.0
            res["tilts"] = tilt_errors(recovered_tilts_deg, [sign * t for t in truth.tilts_deg], allow_sign_flip=False)
        else:
            res["tilts"] = tilt_errors(recovered_tilts_deg, truth.tilts_deg, allow_sign_flip=allow_mirror)
    if recovered_rotations is not None:
        res["rotations"] = rotation_errors(recovered_rotations, [c.rotation for c in truth.cameras])
    return res


def load_truth_surface(path: str | Path, n_samples: int = 200_000) -> np.ndarray:
    """A hand-made SEM truth: the true surface as a mesh (PLY/STL/OBJ, sampled uniformly) or a dense cloud (PLY).

    Args:
        path: the file; lengths in the unit the cloud will be compared in (µm for a µm reconstruction).
        n_samples: samples drawn from a mesh's faces.

    Returns:
        (M, 3) surface points.
    """
    path = Path(path)
    if not path.is_file():
        raise TopographError(f"truth surface {path} not found", "give a PLY/STL/OBJ file of the true surface")
    if path.suffix.lower() not in (".ply", ".stl", ".obj", ".off", ".glb"):
        raise TopographError(f"{path.name} is not a mesh or point-cloud file", "give a PLY, STL or OBJ file")
    import trimesh

    try:
        geom = trimesh.load(path, force="mesh" if path.suffix.lower() != ".ply" else None, process=False)
    except Exception as exc:  # trimesh raises many types for malformed files
        raise TopographError(f"cannot read {path}: {exc}", "give a PLY, STL or OBJ file") from exc
    if isinstance(geom, trimesh.Scene):
        geom = geom.dump(concatenate=True)
    if isinstance(geom, trimesh.Trimesh) and len(geom.faces) > 0:
        pts, _ = trimesh.sample.sample_surface_even(geom, n_samples, seed=0)
        pts = np.vstack([pts, geom.vertices])
    else:
        pts = np.asarray(geom.vertices, dtype=float)
    return _check_points(np.asarray(pts, dtype=float), f"truth surface {path.name}", min_points=10)
