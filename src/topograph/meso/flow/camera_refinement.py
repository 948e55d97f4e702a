"""Cameras and lens refined on dense matches (Levenberg-Marquardt, the matches' heights eliminated).

See :mod:`topograph.meso.flow.dense_matches` for the geometry: each match's residual across its parallax
direction depends on the cameras alone, so relief does not bias them (the photometric rounds before the
heights assume a flat scene). This module builds the problem (:class:`MatchProblem`: unknowns, residuals,
Cauchy-weighted normal equations); the damping loop is the generic
:func:`topograph.geometry.levenberg_marquardt.levenberg_marquardt`.

Unknown vector layout: ``6 N`` camera unknowns (per image: nadir (2), camera height, tilt (2), in-plane
angle), then the focal length (held: its column stays 0), then the sweep's rolling-shutter skew (one number,
``MesoModel.rolling_shifts``; the free per-image terms are applied, not refined), then the distortion model's
parameters.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import scipy.sparse
import torch

from topograph.geometry.levenberg_marquardt import levenberg_marquardt
from topograph.meso.flow.dense_matches import FlowMatches
from topograph.meso.functional.projection import Projection, rolling_shutter, rotate_in_plane
from topograph.meso.models.camera import MesoModel, sweep_motion
from topograph.progress import counted

log = logging.getLogger("topograph")

_PER_IMAGE = 6
"""Per-image unknowns of the refinement: nadir (2), camera height, tilt (2), in-plane angle. Refining the
rolling-shutter terms here too traded them against the lens and tilts on a clean sequence (registration
median 0.6 -> 2.1 px at 320x240), so they stay as the photometric rounds left them."""


@dataclass(frozen=True)
class RefinementResult:
    """Outcome of :func:`refine_cameras`: RMS residual (object units) of the inlier matches (< 3
    ``robust_px``) before and after, and ``status`` ``ok``, ``degenerate`` (the cameras of the rounds were
    kept) or ``nan`` (the solution was not finite: a quality gate fails on it); ``skipped`` without matches."""

    before: float
    after: float
    status: str


def _sample_matches(matches: FlowMatches, per_pair: int, seed: int) -> tuple[np.ndarray, ...]:
    """A fixed random subset of at most ``per_pair`` matches of every pair: ``(uv_i, uv_j, i, j)``."""
    gen = np.random.default_rng(seed)
    ui, uj, ii, jj = [], [], [], []
    for p in matches.pairs:
        k = min(per_pair, len(p.flat_index))
        if k == 0:
            continue
        pick = np.sort(gen.choice(len(p.flat_index), size=k, replace=False))
        ui.append(matches.uv[p.flat_index[pick]])
        uj.append(p.uv_j[pick])
        ii.append(np.full(k, p.i))
        jj.append(np.full(k, p.j))
    return np.concatenate(ui), np.concatenate(uj), np.concatenate(ii), np.concatenate(jj)


def _cross_residual(xy_i, xy_j, cam_i, cam_j, f_i, f_j, projection: Projection, shift_i, shift_j):
    """Signed residuals of matches across and along their parallax direction, ``a x b / |b|`` and
    ``a . b / |b| = h |b|`` (module docstring), in image pixels (divided by the pair's mean ``Z / f``), with
    every quantity given per match (so one backward pass yields every match's own derivatives).
    ``cam_*`` (M, 6): nadir, camera height, tilt, angle; ``shift_*`` (M, 2) the rolling-shutter terms."""
    nadir_i, z_i, tilt_i, angle_i = cam_i[:, :2], cam_i[:, 2], cam_i[:, 3:5], cam_i[:, 5]
    nadir_j, z_j, tilt_j, angle_j = cam_j[:, :2], cam_j[:, 2], cam_j[:, 3:5], cam_j[:, 5]
    rot_i = rotate_in_plane(rolling_shutter(xy_i[:, None, :], shift_i), angle_i)
    rot_j = rotate_in_plane(rolling_shutter(xy_j[:, None, :], shift_j), angle_j)
    rel_i = projection.backproject(rot_i, tilt_i, z_i, f_i[:, None])[:, 0]
    rel_j = projection.backproject(rot_j, tilt_j, z_j, f_j[:, None])[:, 0]
    a = (rel_i + nadir_i) - (rel_j + nadir_j)
    b = rel_i / z_i[:, None] - rel_j / z_j[:, None]
    b_norm = torch.linalg.norm(b, dim=1).clamp_min(1e-12)
    # In image pixels (object units over the pair's Z / f): in object units a common factor of every camera
    # height and nadir scales every residual with it, so the solution slid toward a collapsed frame
    # ("camera heights x0.01" at 320x240); in pixels that similarity is an exact gauge (cost unchanged).
    px = 2.0 / (z_i / f_i + z_j / f_j)
    across = (a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]) / b_norm * px
    along = (a * b).sum(1) / b_norm * px  # = h |b|: the parallax the match's height causes
    return across, along


class MatchProblem:
    """The refinement's least-squares problem on a fixed subset of matches (module docstring).

    Residuals: every match's offset across its parallax direction (Cauchy scale ``robust_px``) and,
    weighted by ``flat_weight``, its parallax along it (the flat-scene prior, Cauchy scale ``flat_px``).
    The Jacobian is exact and cheap: each match gets its own copy of its cameras' unknowns, so one
    backward pass gives every row; the distortion columns follow by the chain rule through the
    undistorted points (forward differences of the undistortion in float64).
    """

    def __init__(self, model: MesoModel, sample: tuple[np.ndarray, ...], robust_px: float, flat_weight: float,
                 flat_px: float, refine_shutter: bool = True) -> None:  # fmt: skip
        uv_i, uv_j, self.ii, self.jj = sample
        device = model.log_focal.device
        dt = torch.float64
        self.uv_i = torch.as_tensor(uv_i, dtype=dt, device=device)
        self.uv_j = torch.as_tensor(uv_j, dtype=dt, device=device)
        self.i_t = torch.as_tensor(self.ii, device=device)
        self.j_t = torch.as_tensor(self.jj, device=device)
        # The per-image terms stay as the rounds left them; the sweep's skew is an unknown times each photo's
        # motion, the motion fixed at the rounds' cameras (its direction and relative speed; a nadir's step of
        # a refinement changes it by far less than the skew is known)
        with torch.no_grad():
            motion = sweep_motion(model.nadirs(), model.pose.angle, model.pose.relative_scale()).to(dt)
        base = model.pose.rolling.detach().to(dt)
        self.base_i, self.base_j = base[self.i_t], base[self.j_t]
        self.motion_i, self.motion_j = motion[self.i_t], motion[self.j_t]
        # Observable only if some photos move against others (a serpentine's lines): when every photo moves the
        # same way, one skew for all is a sheared object frame, a gauge the refinement slid along (a one-way
        # raster toy: registration 0.3 -> 2.8 px, tests/test_meso_rounds.py), so it is held there.
        self.refine_shutter = bool(refine_shutter) and bool(float((motion @ motion.T).min()) < 0.0)
        self.n = model.n_images
        self.projection = model.projection
        self.dist = model.distortion
        named = list(self.dist.named_parameters())
        self.dist_names = [name for name, _ in named]
        self.dist_shapes = [p.shape for _, p in named]
        self.dist_sizes = [int(np.prod(sh)) if len(sh) else 1 for sh in self.dist_shapes]
        self.n_cam = _PER_IMAGE * self.n
        self.shutter_col = self.n_cam + 1
        self.dist0 = self.n_cam + 2  # first distortion column
        offsets = np.cumsum([0, *self.dist_sizes])
        self.knot_cols = np.concatenate(
            [self.dist0 + np.arange(offsets[k], offsets[k + 1]) for k, nm in enumerate(self.dist_names)
             if nm == "knots"] or [np.zeros(0, np.int64)]
        )  # fmt: skip
        self.m = len(self.ii)
        self.c2 = robust_px**2
        self.flat_w = float(flat_weight)
        self.scale2 = np.concatenate((np.full(self.m, self.c2), np.full(self.m, (self.flat_w * flat_px) ** 2 + 1e-30)))
        self.x0 = self.start(model)
        self.scale_hold = self._scale_hold()

    @torch.no_grad()
    def _scale_hold(self) -> np.ndarray:
        """(n_par,) gradient of the matched pixels' mean log magnification ``mean_p log(|xy_p| / |uv_p - c|)``
        with respect to the knots (zero elsewhere): the direction of the lens' scale that the refinement holds.

        A common factor of the magnification where the matches lie shrinks or grows the whole frame, and every
        residual in pixels with it (footprints and nadirs alike), so the cost slides down it; holding the
        knots' plain mean let the profile reshape under that mean (knots where few pixels are up, where many
        are down) and the cut-cards frame came out 3.7 % small at 320 x 240 (tests/test_meso_pipeline.py,
        docs/benchmarks.md, issue 18 session 12). Weighted by where the pixels are, the hold is on the scale
        the matches see."""
        v = np.zeros(self.dist0 + sum(self.dist_sizes))
        if not self.knot_cols.size:
            return v
        _, _, _, dvec = self.split(self.x0)
        uv = torch.cat((self.uv_i, self.uv_j))
        xy = self.undistort(dvec, uv)
        r2 = (xy * xy).sum(1).clamp_min(1e-12)
        eps = 1e-6
        for col in self.knot_cols:
            step = torch.zeros_like(dvec)
            step[col - self.dist0] = eps
            dxy = (self.undistort(dvec + step, uv) - xy) / eps
            v[col] = float(((xy * dxy).sum(1) / r2).mean())  # d log|xy| / d knot
        return v

    @torch.no_grad()
    def start(self, model: MesoModel) -> np.ndarray:
        """The model's current unknowns as one float64 vector (cameras, focal, sweep skew, distortion)."""
        dt = torch.float64
        cams = torch.cat(
            (
                model.nadirs(),
                model.camera_heights()[:, None],
                model.pose.tilt,
                model.pose.angle[:, None],
            ),
            dim=1,
        ).to(dt)
        focal = model.focal().to(dt).reshape(1)
        shutter = model.pose.shutter.detach().to(dt).reshape(1)
        dvec = torch.cat([p.detach().reshape(-1) for p in self.dist.parameters()]).to(dt) if self.dist_names else \
            torch.zeros(0, dtype=dt)  # fmt: skip
        return torch.cat((cams.reshape(-1), focal, shutter.cpu(), dvec)).cpu().numpy()

    def split(self, x: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(cams (N, 6), focal (1,), shutter (1,), distortion (D,))`` views of an unknown vector (float64)."""
        t = torch.from_numpy(np.asarray(x, dtype=np.float64))
        cams = t[: self.n_cam].reshape(self.n, _PER_IMAGE)
        return cams, t[self.n_cam : self.n_cam + 1], t[self.shutter_col : self.dist0], t[self.dist0 :]

    def shifts(self, shutter: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(M, 2) rolling-shutter terms of every match's two images for a sweep skew ``shutter`` ((1,) or (M,))."""
        s = shutter.reshape(-1, 1)
        return self.base_i + s * self.motion_i, self.base_j + s * self.motion_j

    def undistort(self, dvec: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
        if not self.dist_names:
            return self.dist.undistort(uv)
        params, k = {}, 0
        for name, sh, m in zip(self.dist_names, self.dist_shapes, self.dist_sizes, strict=True):
            params[name] = dvec[k : k + m].reshape(sh)
            k += m
        return _undistort_with(self.dist, params, uv)

    @torch.no_grad()
    def residuals(self, x: np.ndarray) -> np.ndarray:
        """(2 M,) residuals: across, then ``flat_weight`` x along."""
        cams, focal, shutter, dvec = self.split(x)
        ci, cj = cams[self.i_t], cams[self.j_t]
        f = focal.expand(self.m)
        xy_i, xy_j = self.undistort(dvec, self.uv_i), self.undistort(dvec, self.uv_j)
        shift_i, shift_j = self.shifts(shutter)
        across, along = _cross_residual(xy_i, xy_j, ci, cj, f, f, self.projection, shift_i, shift_j)
        return torch.cat((across, self.flat_w * along)).numpy()

    def cost(self, x: np.ndarray) -> float:
        """Sum of the Cauchy losses ``rho(r) = c^2 / 2 log(1 + r^2 / c^2)`` (:meth:`cauchy`)."""
        return self.cauchy(self.residuals(x))

    def cauchy(self, r: np.ndarray) -> float:
        """``sum c^2 / 2 log(1 + r^2 / c^2)``: the loss whose IRLS normal equations :meth:`normal_equations`
        builds (``rho' = r / (1 + r^2 / c^2)``). Without the ``c^2`` factor (before session 11) the step
        acceptance weighed the flat prior's block by ``1 / (flat_weight flat_px)^2`` (~70x the matches), so
        ``flat_weight`` changed the steps but not which were accepted: any weight > 0 flattened the scene."""
        return float((0.5 * self.scale2 * np.log1p(r**2 / self.scale2)).sum())

    def inlier_rms(self, x: np.ndarray) -> float:
        """RMS of the across residuals below 3 ``robust_px`` (object units)."""
        r = torch.from_numpy(self.residuals(x)[: self.m])
        ok = r * r < 9.0 * self.c2
        return float((r[ok] ** 2).mean().sqrt()) if bool(ok.any()) else float("nan")

    def jacobian(self, x: np.ndarray) -> tuple[np.ndarray, scipy.sparse.csr_matrix, np.ndarray]:
        """Residuals (2 M,), the sparse camera columns (2 M, 6 N) and the dense columns (2 M, 1 + D): the sweep's
        skew (zero when it is held), then the distortion."""
        cams, focal, shutter, dvec = self.split(x)
        with torch.no_grad():
            xy_i, xy_j = self.undistort(dvec, self.uv_i), self.undistort(dvec, self.uv_j)
        ci = cams[self.i_t].clone().requires_grad_(True)
        cj = cams[self.j_t].clone().requires_grad_(True)
        f = focal.expand(self.m)
        xi = xy_i.detach().clone().requires_grad_(True)
        xj = xy_j.detach().clone().requires_grad_(True)
        sm = shutter.expand(self.m).clone().requires_grad_(True)  # one copy per match: its own derivative
        shift_i, shift_j = self.shifts(sm)
        across, along = _cross_residual(xi, xj, ci, cj, f, f, self.projection, shift_i, shift_j)
        dxy = []
        eps = 1e-6  # d xy / d distortion by forward differences in float64 (cheap evaluations)
        for k in range(dvec.numel()):
            step = torch.zeros_like(dvec)
            step[k] = eps
            moved_i, moved_j = self.undistort(dvec + step, self.uv_i), self.undistort(dvec + step, self.uv_j)
            dxy.append(((moved_i - xy_i) / eps, (moved_j - xy_j) / eps))
        m, cols, rows = self.m, np.arange(_PER_IMAGE), np.arange(self.m)
        cam_rows, cam_cols, cam_vals = [], [], []  # camera columns: 12 non-zeros per row (sparse)
        jac_dense = np.zeros((2 * m, 1 + len(dxy)))
        for block, (res, scale) in enumerate(((across, 1.0), (along, self.flat_w))):
            gi, gj, gxi, gxj, gs = torch.autograd.grad(res.sum(), (ci, cj, xi, xj, sm), retain_graph=block == 0)
            rr = np.repeat(rows + block * m, _PER_IMAGE)
            cam_rows += [rr, rr]
            cam_cols += [(_PER_IMAGE * self.ii[:, None] + cols).ravel(), (_PER_IMAGE * self.jj[:, None] + cols).ravel()]
            cam_vals += [scale * gi.numpy().ravel(), scale * gj.numpy().ravel()]
            if self.refine_shutter:
                jac_dense[block * m : (block + 1) * m, 0] = scale * gs.numpy()
            for k, (dxi, dxj) in enumerate(dxy):
                jac_dense[block * m : (block + 1) * m, 1 + k] = (
                    scale * ((gxi * dxi).sum(1) + (gxj * dxj).sum(1)).numpy()
                )
        jac_cam = scipy.sparse.csr_matrix(
            (np.concatenate(cam_vals), (np.concatenate(cam_rows), np.concatenate(cam_cols))), shape=(2 * m, self.n_cam)
        )
        return torch.cat((across, self.flat_w * along)).detach().numpy(), jac_cam, jac_dense

    def normal_equations(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """IRLS-weighted ``(J^T W J, J^T W r, cost)`` of the Cauchy losses, with the gauge of a piecewise
        profile's mean knot held (a common factor of the magnification is a focal change)."""
        rn, jac_cam, jac_dist = self.jacobian(x)  # dense columns: the sweep's skew, then the distortion
        w = 1.0 / (1.0 + rn * rn / self.scale2)  # IRLS weights of the Cauchy losses
        n_cam, n_par = self.n_cam, len(x)
        hess, grad = np.zeros((n_par, n_par)), np.zeros(n_par)
        wc = jac_cam.multiply(w[:, None]).tocsr()
        wd = jac_dist * w[:, None]
        dist_sl = slice(self.shutter_col, n_par)
        hess[:n_cam, :n_cam] = (jac_cam.T @ wc).toarray()
        hess[:n_cam, dist_sl] = jac_cam.T @ wd
        hess[dist_sl, :n_cam] = hess[:n_cam, dist_sl].T
        hess[dist_sl, dist_sl] = jac_dist.T @ wd
        grad[:n_cam] = wc.T @ rn
        grad[dist_sl] = wd.T @ rn
        # The mean camera height is not held here: holding it (a stiff penalty) stopped the collapse of the
        # frame on few matches at 320x240 but also stopped the exact-match refinement converging and took the
        # cut-cards pipeline test from < 1 to 2.1 GSD (docs/benchmarks.md, session 10); the caller refuses a
        # collapsed refinement ("camera heights x0.01") instead.
        if self.knot_cols.size:  # the matches' mean magnification is a scale gauge: keep it where it is
            v = self.scale_hold
            k_w = 1e3 * max(float(np.diag(hess).max()), 1.0) / max(float(v @ v), 1e-12) / self.knot_cols.size
            hess += k_w * np.outer(v, v)
            grad += k_w * v * float(v @ (x - self.x0))
        return hess, grad, self.cauchy(rn)


def refine_cameras(
    model: MesoModel,
    matches: FlowMatches,
    iterations: int = 10,
    per_pair: int = 2000,
    max_matches: int = 200_000,
    robust_px: float = 0.5,
    flat_weight: float = 0.3,
    flat_px: float = 0.2,
    seed: int = 0,
    refine_shutter: bool = True,
) -> RefinementResult:
    """Refine cameras and distortion on the dense matches (Levenberg-Marquardt, Cauchy-weighted).

    Each match's residual is its offset across its parallax direction (the height along it is eliminated
    in closed form, :mod:`topograph.meso.flow.dense_matches`), so relief does not bias the cameras, unlike
    the photometric rounds before the heights, which assume a flat scene. Unknowns: every camera's nadir,
    height, tilt and in-plane angle, the sweep's rolling-shutter skew and the distortion model (the per-image
    rolling-shutter terms applied as they are).
    The focal length stays where it is (from EXIF or the rounds): matches between near-parallel views
    barely constrain it, and it sets the scale of
    the heights (Eq. 8). The solution is brought back to the model's gauge (geometric-mean camera height =
    focal length) by a similarity of the object frame, which leaves every residual's geometry unchanged.

    Args:
        model: the deformation model (modified in place unless the solution degenerates).
        matches: from :func:`topograph.meso.flow.dense_matches.flow_matches`.
        iterations: Levenberg-Marquardt iterations.
        per_pair: matches drawn per pair (a fixed random subset) ...
        max_matches: ... and at most this many in all (fewer per pair when there are many pairs).
        robust_px: Cauchy scale of the residual, object units (~ pixels).
        flat_weight: weight of the flat-scene prior: every match's parallax along its baseline, ``h |b|``,
            is a (weighted, Cauchy-robust) residual too. Relief is then an outlier of a flat scene, as in the
            photometric camera rounds; the prior only decides the directions the matches leave free, chiefly
            the dome (a paraboloid of the scene traded for radial distortion with near-parallel views).
        flat_px: Cauchy scale of that prior, object units (parallax beyond a few times this counts as relief).
        seed: subset seed.
        refine_shutter: refine the sweep's rolling-shutter skew (``pose.shutter``, one number) too. The
            photometric rounds set it at a quarter resolution on a flat scene; the dense matches see the
            skew where the sweep's lines overlap (neighbouring lines run in opposite directions, so their
            photos are sheared the opposite way) at the flow's resolution. Held when no photo moves against
            another (one skew for all is then a sheared frame, a gauge).

    Returns:
        The inlier RMS before and after, and the outcome.
    """
    n_pairs = sum(1 for p in matches.pairs if len(p.flat_index))
    if n_pairs == 0:
        log.warning("no dense matches between the images: cameras not refined")
        return RefinementResult(float("nan"), float("nan"), "skipped")
    per_pair = max(50, min(int(per_pair), int(max_matches) // n_pairs))  # memory and time bounded in N
    problem = MatchProblem(
        model, _sample_matches(matches, per_pair, seed), robust_px, flat_weight, flat_px, refine_shutter
    )
    before = problem.inlier_rms(problem.x0)
    with counted("camera refinement on the flow matches", iterations) as step:
        x = levenberg_marquardt(problem.x0, problem.normal_equations, problem.cost, iterations, on_step=step).x
    after = problem.inlier_rms(x)
    cams, focal, shutter, dvec = problem.split(x)
    # A common factor of the camera heights is a gauge (undone by _write_back), but with few matches the
    # solution can slide down it toward a collapsed frame where every residual vanishes: refused.
    ratio = cams[:, 2].numpy() / problem.split(problem.x0)[0][:, 2].numpy()
    with np.errstate(invalid="ignore", divide="ignore"):  # a height at or below the object plane: NaN, refused
        log_ratio = np.log(np.where(ratio > 0, ratio, np.nan))
    shrink = float(np.exp(log_ratio.mean()))
    spread = float(np.abs(log_ratio - log_ratio.mean()).max())
    if not np.isfinite(after) or not 0.5 < shrink < 2.0 or spread > 0.2 or float(cams[:, 3:5].abs().max()) > 0.3:
        log.warning(
            "refinement on the dense matches degenerated (camera heights x%.2f, spread %.0f %%): kept the "
            "cameras of the rounds", shrink, 100.0 * spread,
        )  # fmt: skip
        status = "degenerate" if np.isfinite(after) and np.isfinite(shrink) else "nan"
        return RefinementResult(before, before, status)
    log.debug("refinement: common camera-height factor %.4f (a gauge), spread %.4f", shrink, spread)
    _write_back(model, cams, focal, shutter, dvec)
    log.info(
        "cameras refined on flow matches: residual %.3f -> %.3f units (%d matches; height factor %.3f; sweep "
        "skew %.5f -> %.5f px/row)", before, after, problem.m, shrink, float(problem.x0[problem.shutter_col]),
        float(shutter[0]),
    )  # fmt: skip
    return RefinementResult(before, after, "ok")


def _undistort_with(dist: torch.nn.Module, params: dict[str, torch.Tensor], uv: torch.Tensor) -> torch.Tensor:
    """``dist.undistort(uv)`` evaluated with the given parameter values (float64)."""
    return torch.func.functional_call(_Undistort(dist), {"dist." + k: v for k, v in params.items()}, (uv,))


class _Undistort(torch.nn.Module):
    def __init__(self, dist: torch.nn.Module) -> None:
        super().__init__()
        self.dist = dist

    def forward(self, uv: torch.Tensor) -> torch.Tensor:
        return self.dist.undistort(uv)


@torch.no_grad()
def _write_back(model: MesoModel, cams: torch.Tensor, focal: torch.Tensor, shutter: torch.Tensor, dvec: torch.Tensor
                ) -> None:  # fmt: skip
    """Store refined nadirs, heights, tilts, angles, focal, sweep skew and distortion in the model's parameterisation,
    after the similarity of the object frame that restores its gauge (geometric-mean height = focal)."""
    f = float(focal[0])
    z = cams[:, 2]
    s = f / float(torch.exp(torch.log(z).mean()))
    nadir, z = cams[:, :2] * s, z * s
    tilt = cams[:, 3:5]
    nz = torch.sqrt(torch.clamp(1.0 - (tilt * tilt).sum(1), min=1e-6))
    pose = model.pose
    dtype = pose.position.dtype
    pose.position.copy_((nadir - z[:, None] * tilt / nz[:, None]).to(dtype))
    pose.log_scale.copy_(torch.log(z / f).to(dtype))
    pose.tilt.copy_(tilt.to(dtype))
    pose.angle.copy_(cams[:, 5].to(dtype))
    model.log_focal.copy_(torch.log(focal[0]).to(dtype))
    pose.shutter.copy_(shutter[0].to(pose.shutter.dtype))  # pixels per row: a similarity of the frame leaves it
    k = 0
    for p in model.distortion.parameters():
        m = p.numel()
        p.copy_(dvec[k : k + m].reshape(p.shape).to(p.dtype))
        k += m
