"""Bundle adjustment of affine cameras and points (robust sparse nonlinear least squares).

Minimises ``Σ_{f,p visible} ρ(‖k_f C(s_f) R_f X_p + t_f − x_fp‖² / f_scale²)`` over the cameras and the
points with :func:`scipy.optimize.least_squares` (method "trf", LSMR trust-region solver), where
``C(s) = [[1, 0, 0], [s, 1, 0]]`` and ρ is the robust loss. The Jacobian is sparse with an explicit
pattern (``jac_sparsity``): a residual depends only on its view's camera and its point. By default the
exact Jacobian is filled into that pattern; ``jac="2-point"`` uses finite differences on the same
pattern instead (reference implementation).

Parameters: per view a rotation-vector update ``ω_f`` with ``R_f = Exp(ω_f) R_f⁰`` (no singularity near
the start), the scale ``k_f``, optionally the skew ``s_f``, the translation ``t_f``; per point ``X_p``.

Gauge. Affine reconstructions are defined up to a similarity of the world (rotation 3, translation 3,
scale 1 degrees of freedom). Camera 1 is held fixed (rotation 3, scale 1, translation 2, and its skew),
which removes six of them; the seventh is a shift of every point along camera 1's viewing direction
``n = R_1[2]``, which camera 1 cannot see and every other view g absorbs in ``t_g → t_g − M_g n δ``.
It is removed by also holding the component of one translation along that image direction fixed:
the view g with the largest ``‖M_g n‖`` (the most tilted relative to view 1) keeps ``t_g · e_g`` fixed,
``e_g = M_g n / ‖M_g n‖``, and only ``t_g · e_g⊥`` is free. This pins the mean depth of the points
exactly and keeps the Jacobian sparse (a mean-Z constraint would add a dense row).

Identifiability. The images fix the F camera matrices only up to a common affine map of the world
(9 degrees of freedom), i.e. ``6F − 9`` numbers. With camera 1 fixed the model has ``4(F − 1)`` free
camera parameters (rotations and scales), ``5(F − 1)`` with skew. Two views (``3 < 4``) cannot fix the
tilt angle (the depth–tilt "bas-relief" ambiguity of affine views): rotation refinement then only moves
along that ambiguity from the start and a warning is logged; skew needs ≥ 4 views.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from topograph.errors import TopographError
from topograph.geometry.triangulation import per_view_rms_px
from topograph.types import AffineCamera, Tracks

if TYPE_CHECKING:
    from scipy.sparse import csr_matrix

logger = logging.getLogger("topograph")


@dataclass(frozen=True)
class BundleResult:
    """Refined cameras and points.

    Attributes:
        cameras: F refined cameras (camera 1 unchanged: it fixes the gauge).
        points: (P, 3) refined points (NaN rows stay NaN).
        rms_before: (F,) per-view reprojection RMS before refinement, px.
        rms_after: (F,) per-view reprojection RMS after refinement, px.
        n_iter: number of Jacobian evaluations (trust-region iterations).
        message: the solver's termination message.
    """

    cameras: tuple[AffineCamera, ...]
    points: np.ndarray
    rms_before: np.ndarray
    rms_after: np.ndarray
    n_iter: int
    message: str = ""


def rotvec_to_matrix(w: np.ndarray) -> np.ndarray:
    """Rodrigues' formula ``Exp(ω) = I + sin θ/θ [ω]× + (1 − cos θ)/θ² [ω]×²`` for a stack (..., 3) → (..., 3, 3)."""
    w = np.asarray(w, dtype=float)
    theta = np.linalg.norm(w, axis=-1)[..., None, None]
    k = np.zeros((*w.shape[:-1], 3, 3))
    k[..., 0, 1], k[..., 0, 2], k[..., 1, 2] = -w[..., 2], w[..., 1], -w[..., 0]
    k[..., 1, 0], k[..., 2, 0], k[..., 2, 1] = w[..., 2], -w[..., 1], w[..., 0]
    small = theta < 1e-8
    safe = np.where(small, 1.0, theta)
    a = np.where(small, 1.0 - theta**2 / 6.0, np.sin(safe) / safe)
    b = np.where(small, 0.5 - theta**2 / 24.0, (1.0 - np.cos(safe)) / safe**2)
    return np.eye(3) + a * k + b * (k @ k)


def left_jacobian_so3(w: np.ndarray) -> np.ndarray:
    """Left Jacobian of SO(3): ``J_l(ω) = I + (1 − cos θ)/θ² [ω]× + (θ − sin θ)/θ³ [ω]×²``.

    It satisfies ``Exp(ω + δ) ≈ Exp(J_l(ω) δ) Exp(ω)`` for small δ.
    """
    w = np.asarray(w, dtype=float)
    theta = float(np.linalg.norm(w))
    k = np.array([[0.0, -w[2], w[1]], [w[2], 0.0, -w[0]], [-w[1], w[0], 0.0]])
    if theta < 1e-6:
        return np.eye(3) + 0.5 * k + (k @ k) / 6.0
    return np.eye(3) + (1.0 - np.cos(theta)) / theta**2 * k + (theta - np.sin(theta)) / theta**3 * (k @ k)


class BundleProblem:
    """The residuals, exact sparse Jacobian and sparsity pattern of one bundle adjustment.

    Parameter vector ``x``: the free camera parameters (per view, in order: ω (3), k, s, t (2, or 1 for
    the gauge view), each only when free), then the 3 coordinates of every active point (finite initial
    point seen in ≥ 2 views). Residuals: ``(x, y)`` of every visible observation of an active point,
    grouped by view. See the module docstring for the model and the gauge.
    """

    def __init__(
        self,
        cameras: Sequence[AffineCamera],
        points: np.ndarray,
        tracks: Tracks,
        *,
        refine_rotations: bool = True,
        refine_scale: bool = True,
        refine_skew: bool = False,
    ) -> None:
        n_f = len(cameras)
        self.n_views = n_f
        self.r0 = np.stack([c.rotation for c in cameras])
        self.k0 = np.array([c.scale for c in cameras], dtype=float)
        self.s0 = np.array([c.skew for c in cameras], dtype=float)
        self.t0 = np.stack([c.translation for c in cameras])
        pts0 = np.asarray(points, dtype=float)
        vis = tracks.visible
        self.active = np.nonzero(np.isfinite(pts0).all(axis=1) & (vis.sum(axis=0) >= 2))[0]
        self.obs_f, self.obs_q = np.nonzero(vis[:, self.active])  # sorted by view
        self.obs_xy = tracks.xy[:, self.active][self.obs_f, self.obs_q]
        self.bounds = np.searchsorted(self.obs_f, np.arange(n_f + 1))
        self._layout(cameras, refine_rotations, refine_scale, refine_skew)
        self.x0 = np.concatenate([np.zeros(self.n_cam), pts0[self.active].ravel()])
        for f in range(n_f):
            if self.scale_col[f] >= 0:
                self.x0[self.scale_col[f]] = self.k0[f]
            if self.skew_col[f] >= 0:
                self.x0[self.skew_col[f]] = self.s0[f]
        self._pattern()

    def _layout(self, cameras: Sequence[AffineCamera], rot: bool, scale: bool, skew: bool) -> None:
        n_f = self.n_views
        self.rot_col = -np.ones((n_f, 3), dtype=int)
        self.scale_col = -np.ones(n_f, dtype=int)
        self.skew_col = -np.ones(n_f, dtype=int)
        self.trans_col = -np.ones((n_f, 2), dtype=int)
        depth = np.array([c.matrix @ cameras[0].rotation[2] for c in cameras])  # image of the depth direction
        mag = np.linalg.norm(depth, axis=1)
        mag[0] = 0.0
        self.gauge_view = int(np.argmax(mag)) if mag.max() > 1e-9 else -1
        if self.gauge_view < 0:
            logger.warning("bundle adjustment: no view sees depth relative to view 1; depth gauge left free")
            e = np.array([1.0, 0.0])
        else:
            e = depth[self.gauge_view] / mag[self.gauge_view]
        self.gauge_dir = np.array([-e[1], e[0]])
        col = 0
        for f in range(1, n_f):
            if rot:
                self.rot_col[f] = np.arange(col, col + 3)
                col += 3
            if scale:
                self.scale_col[f] = col
                col += 1
            if skew:
                self.skew_col[f] = col
                col += 1
            if f == self.gauge_view:
                self.trans_col[f, 1] = col
                col += 1
            else:
                self.trans_col[f] = np.arange(col, col + 2)
                col += 2
        self.n_cam = col
        n_shape = 3 * int(rot) + int(scale) + int(skew)
        if n_shape * (n_f - 1) > 6 * n_f - 9:
            logger.warning(
                "bundle adjustment: %d free camera-shape parameters but only %d are observable with %d views; "
                "the refinement moves along the ambiguity from the start",
                n_shape * (n_f - 1),
                6 * n_f - 9,
                n_f,
            )

    def _pattern(self) -> None:
        """Sparsity: rows 2o, 2o+1 ← camera columns of view obs_f[o] and the 3 columns of point obs_q[o]."""
        cam_cols = [
            np.concatenate([self.rot_col[f], [self.scale_col[f], self.skew_col[f]], self.trans_col[f]])
            for f in range(self.n_views)
        ]
        self.cam_cols = [c[c >= 0] for c in cam_cols]
        rows, cols = [], []
        for f in range(self.n_views):
            o = np.arange(self.bounds[f], self.bounds[f + 1])
            q = self.obs_q[o]
            n_c = self.cam_cols[f].size
            r = np.broadcast_to((2 * o[:, None, None] + np.arange(2)[None, :, None]), (o.size, 2, n_c + 3))
            c = np.empty((o.size, 2, n_c + 3), dtype=int)
            c[:, :, :n_c] = self.cam_cols[f]
            c[:, :, n_c:] = self.n_cam + 3 * q[:, None, None] + np.arange(3)[None, None, :]
            rows.append(r.ravel())
            cols.append(c.ravel())
        from scipy.sparse import coo_matrix  # imported where used: ~0.2 s that a run can load beside its matching

        rr, cc = np.concatenate(rows), np.concatenate(cols)
        shape = (2 * self.obs_f.size, self.x0.size)
        template = coo_matrix((np.arange(1, rr.size + 1, dtype=float), (rr, cc)), shape=shape).tocsr()
        self._order = template.data.astype(np.int64) - 1  # csr entry → position in the per-view layout
        self._template = template
        self.sparsity = coo_matrix((np.ones(rr.size, dtype=np.int8), (rr, cc)), shape=shape).tocsr()

    def unpack(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(R (F,3,3), k (F,), s (F,), t (F,2), points (P_active,3))`` from a parameter vector."""
        w = np.where(self.rot_col >= 0, x[self.rot_col], 0.0)
        rot = rotvec_to_matrix(w) @ self.r0
        k = np.where(self.scale_col >= 0, x[self.scale_col], self.k0)
        s = np.where(self.skew_col >= 0, x[self.skew_col], self.s0)
        t = self.t0 + np.where(self.trans_col >= 0, x[self.trans_col], 0.0)
        if self.gauge_view >= 0:
            g = self.gauge_view
            t[g] = self.t0[g] + x[self.trans_col[g, 1]] * self.gauge_dir
        return rot, k, s, t, x[self.n_cam :].reshape(-1, 3)

    @staticmethod
    def _matrices(rot: np.ndarray, k: np.ndarray, s: np.ndarray) -> np.ndarray:
        c = np.zeros((len(k), 2, 3))
        c[:, 0, 0] = 1.0
        c[:, 1, 1] = 1.0
        c[:, 1, 0] = s
        return k[:, None, None] * (c @ rot)

    def residuals(self, x: np.ndarray) -> np.ndarray:
        """(2N,) reprojection residuals ``M_f X_p + t_f − x_fp`` in px."""
        rot, k, s, t, pts = self.unpack(x)
        m = self._matrices(rot, k, s)
        out = np.empty((self.obs_f.size, 2))
        for f in range(self.n_views):
            sl = slice(self.bounds[f], self.bounds[f + 1])
            out[sl] = pts[self.obs_q[sl]] @ m[f].T + t[f] - self.obs_xy[sl]
        return out.ravel()

    def jacobian(self, x: np.ndarray) -> csr_matrix:
        """Exact Jacobian on :attr:`sparsity`.

        With ``Y = R_f X`` and ``R_f = Exp(ω_f) R_f⁰``: ``∂r/∂ω = −k C [Y]× J_l(ω)`` (``J_l`` the left
        Jacobian of SO(3)), ``∂r/∂k = C Y``, ``∂r/∂s = (0, k Y_x)``, ``∂r/∂t = I`` (``e_g⊥`` for the gauge
        view) and ``∂r/∂X = M_f``.
        """
        rot, k, s, _, pts = self.unpack(x)
        m = self._matrices(rot, k, s)
        w = np.where(self.rot_col >= 0, x[self.rot_col], 0.0)
        vals = []
        for f in range(self.n_views):
            y = pts[self.obs_q[self.bounds[f] : self.bounds[f + 1]]] @ rot[f].T  # (n, 3)
            n = y.shape[0]
            c_f = np.array([[1.0, 0.0, 0.0], [s[f], 1.0, 0.0]])
            blocks = []
            if self.rot_col[f, 0] >= 0:
                a = k[f] * c_f
                d = np.stack([np.cross(y, a[0]), np.cross(y, a[1])], axis=1)  # −k C [Y]× as (n, 2, 3)
                blocks.append(d @ left_jacobian_so3(w[f]))
            if self.scale_col[f] >= 0:
                blocks.append((y @ c_f.T)[:, :, None])
            if self.skew_col[f] >= 0:
                sk = np.zeros((n, 2, 1))
                sk[:, 1, 0] = k[f] * y[:, 0]
                blocks.append(sk)
            if f == self.gauge_view:
                blocks.append(np.broadcast_to(self.gauge_dir[None, :, None], (n, 2, 1)))
            elif f > 0:
                blocks.append(np.broadcast_to(np.eye(2)[None], (n, 2, 2)))
            blocks.append(np.broadcast_to(m[f][None], (n, 2, 3)))
            vals.append(np.concatenate(blocks, axis=2).ravel())
        out = self._template.copy()
        out.data = np.concatenate(vals)[self._order]
        return out

    def cameras(self, x: np.ndarray) -> tuple[AffineCamera, ...]:
        """The cameras encoded by ``x``."""
        rot, k, s, t, _ = self.unpack(x)
        return tuple(
            AffineCamera(rotation=rot[f], scale=float(k[f]), skew=float(s[f]), translation=t[f])
            for f in range(self.n_views)
        )


def bundle_adjust(
    cameras: Sequence[AffineCamera],
    points: np.ndarray,
    tracks: Tracks,
    *,
    refine_rotations: bool = True,
    refine_scale: bool = True,
    refine_skew: bool = False,
    loss: str = "soft_l1",
    f_scale_px: float = 1.0,
    max_nfev: int = 100,
    jac: Literal["analytic", "2-point"] = "analytic",
) -> BundleResult:
    """Refine cameras and points by robust sparse least squares (module docstring for model and gauge).

    Args:
        cameras: F ≥ 2 initial cameras (metadata or factorization).
        points: (P, 3) initial points (NaN rows are left out and stay NaN).
        tracks: (F, P, 2) observations in px.
        refine_rotations: refine ``R_f`` of views 2..F.
        refine_scale: refine ``k_f`` of views 2..F.
        refine_skew: refine ``s_f`` of views 2..F.
        loss: robust loss of :func:`scipy.optimize.least_squares` ("linear", "soft_l1", "huber", "cauchy").
        f_scale_px: inlier scale of the robust loss, px.
        max_nfev: maximum number of function evaluations.
        jac: "analytic" (exact sparse Jacobian, default) or "2-point" (finite differences on the same
            explicit ``jac_sparsity``; slower, kept as the reference implementation).

    Returns:
        A :class:`BundleResult`.

    Raises:
        TopographError: fewer than 2 views or no point seen in 2 views.
    """
    n_f = len(cameras)
    if n_f < 2 or tracks.n_views != n_f:
        raise TopographError(
            f"bundle adjustment needs ≥ 2 views with one camera each (got {n_f} cameras, {tracks.n_views} views)",
            "pass one camera per view of the tracks",
        )
    pts0 = np.asarray(points, dtype=float)
    if pts0.shape != (tracks.n_tracks, 3):
        raise ValueError(f"points must have shape ({tracks.n_tracks}, 3), got {pts0.shape}")
    problem = BundleProblem(
        cameras,
        pts0,
        tracks,
        refine_rotations=refine_rotations,
        refine_scale=refine_scale,
        refine_skew=refine_skew,
    )
    if problem.active.size == 0:
        raise TopographError("no triangulated point is seen in two views", "check the matches and cameras")
    from scipy.optimize import least_squares  # imported where used (see BundleProblem)

    rms_before = per_view_rms_px(cameras, pts0, tracks)
    sol = least_squares(
        problem.residuals,
        problem.x0,
        jac=problem.jacobian if jac == "analytic" else "2-point",
        jac_sparsity=None if jac == "analytic" else problem.sparsity,
        method="trf",
        loss=loss,
        f_scale=f_scale_px,
        max_nfev=max_nfev,
        x_scale="jac",
        tr_solver="lsmr",
    )
    new_cams = problem.cameras(sol.x)
    new_pts = pts0.copy()
    new_pts[problem.active] = problem.unpack(sol.x)[4]
    rms_after = per_view_rms_px(new_cams, new_pts, tracks)
    logger.info(
        "bundle adjustment: %d points, %d observations, reprojection RMS before → after %.3f → %.3f px (%s)",
        problem.active.size,
        problem.obs_f.size,
        float(np.nanmean(rms_before)),
        float(np.nanmean(rms_after)),
        sol.message,
    )
    return BundleResult(new_cams, new_pts, rms_before, rms_after, int(sol.njev or 0), str(sol.message))
