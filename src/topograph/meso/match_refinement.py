"""Cameras and lens refined on dense matches (Levenberg-Marquardt, the matches' heights eliminated).

See :mod:`topograph.meso.dense_matches` for the geometry: each match's residual across its parallax
direction depends on the cameras alone, so relief does not bias them (the photometric rounds before the
heights assume a flat scene).
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.sparse
import torch

from topograph.meso.dense_matches import FlowMatches
from topograph.meso.functional.projection import backproject_tilted, backproject_tilted_exact, rotate_in_plane
from topograph.meso.models.camera import MesoModel

log = logging.getLogger("topograph")


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


_PER_IMAGE = 6
"""Per-image unknowns of the refinement: nadir (2), camera height, tilt (2), in-plane angle."""


def _cross_residual(xy_i, xy_j, nadir_i, z_i, tilt_i, angle_i, nadir_j, z_j, tilt_j, angle_j, f_i, f_j, exact):
    """Signed residuals of matches across and along their parallax direction, ``a x b / |b|`` and
    ``a . b / |b| = h |b|`` (module docstring), with every quantity given per match (so one backward pass
    yields every match's own derivatives)."""
    project = backproject_tilted_exact if exact else backproject_tilted
    rel_i = project(rotate_in_plane(xy_i[:, None, :], angle_i), tilt_i, z_i, f_i[:, None])[:, 0]
    rel_j = project(rotate_in_plane(xy_j[:, None, :], angle_j), tilt_j, z_j, f_j[:, None])[:, 0]
    a = (rel_i + nadir_i) - (rel_j + nadir_j)
    b = rel_i / z_i[:, None] - rel_j / z_j[:, None]
    b_norm = torch.linalg.norm(b, dim=1).clamp_min(1e-12)
    across = (a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]) / b_norm
    along = (a * b).sum(1) / b_norm  # = h |b|: the parallax the match's height causes
    return across, along


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
    status: dict[str, str] | None = None,
) -> tuple[float, float]:
    """Refine cameras and distortion on the dense matches (Levenberg-Marquardt, Cauchy-weighted).

    Each match's residual is its offset across its parallax direction (the height along it is eliminated
    in closed form, module docstring), so relief does not bias the cameras, unlike the photometric rounds
    before the heights, which assume a flat scene. Unknowns: every camera's nadir, height, tilt and
    in-plane angle and the distortion model. The focal length stays where it is (from EXIF or the rounds):
    matches between near-parallel views barely constrain it, and it sets the scale of the heights (Eq. 8).
    The Jacobian is exact and cheap: each
    match gets its own copy of its cameras' unknowns, so one backward pass gives every row; the
    distortion columns follow by the chain rule through the undistorted points. The solution is brought
    back to the model's gauge (geometric-mean camera height = focal length) by a similarity of the object
    frame, which leaves every residual's geometry unchanged. The mean of a piecewise profile's knots is held
    (a common factor of the magnification is a focal change, which would rescale the heights).

    Args:
        model: the deformation model (modified in place).
        matches: from :func:`flow_matches`.
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
        status: when given, ``status["refinement"]`` is set to ``ok``, ``degenerate`` (the cameras of the
            rounds were kept) or ``nan`` (the solution was not finite: a quality gate fails on it).

    Returns:
        The RMS residual (object units) of the inlier matches (< 3 ``robust_px``) before and after.
    """
    n_pairs = sum(1 for p in matches.pairs if len(p.flat_index))
    if n_pairs == 0:
        log.warning("no dense matches between the images: cameras not refined")
        return float("nan"), float("nan")
    per_pair = max(50, min(int(per_pair), int(max_matches) // n_pairs))  # memory and time bounded in N
    uv_i, uv_j, ii, jj = _sample_matches(matches, per_pair, seed)
    device = model.log_focal.device
    dt = torch.float64
    uv_i_t = torch.as_tensor(uv_i, dtype=dt, device=device)
    uv_j_t = torch.as_tensor(uv_j, dtype=dt, device=device)
    i_t = torch.as_tensor(ii, device=device)
    j_t = torch.as_tensor(jj, device=device)
    n = model.n_images
    exact = model.projection == "exact"
    dist = model.distortion
    dist_names = [name for name, _ in dist.named_parameters()]
    dist_shapes = [p.shape for _, p in dist.named_parameters()]
    dist_sizes = [int(np.prod(sh)) if len(sh) else 1 for sh in dist_shapes]
    with torch.no_grad():
        cams = torch.cat(
            (model.nadirs(), model.camera_heights()[:, None], model.pose.tilt, model.pose.angle[:, None]), dim=1
        ).to(dt)
        focal = model.focal().to(dt).reshape(1)
        dvec = (
            torch.cat([p.detach().reshape(-1) for p in dist.parameters()]).to(dt)
            if dist_names
            else torch.zeros(0, dtype=dt)
        )
    n_cam = _PER_IMAGE * n
    offsets = np.cumsum([0, *dist_sizes])
    knot_cols = np.concatenate(
        [n_cam + 1 + np.arange(offsets[k], offsets[k + 1]) for k, name in enumerate(dist_names) if name == "knots"]
        or [np.zeros(0, np.int64)]
    )
    dvec0 = dvec.clone()
    z0 = cams[:, 2].numpy().copy()
    n_par = n_cam + 1 + dvec.numel()  # the focal column stays 0: the focal length is not refined
    c2 = robust_px**2
    rows = np.arange(len(ii))
    flat_w = float(flat_weight)

    def undistort(vec: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
        if not dist_names:
            return dist.undistort(uv)
        params, k = {}, 0
        for name, sh, m in zip(dist_names, dist_shapes, dist_sizes, strict=True):
            params[name] = vec[k : k + m].reshape(sh)
            k += m
        return _undistort_with(dist, params, uv)

    def evaluate(cams_: torch.Tensor, focal_: torch.Tensor, dvec_: torch.Tensor, with_jacobian: bool):
        xy_i = undistort(dvec_, uv_i_t)
        xy_j = undistort(dvec_, uv_j_t)
        if not with_jacobian:
            with torch.no_grad():
                ci, cj = cams_[i_t], cams_[j_t]
                f = focal_.expand(len(ii))
                across, along = _cross_residual(xy_i, xy_j, ci[:, :2], ci[:, 2], ci[:, 3:5], ci[:, 5], cj[:, :2],
                                                cj[:, 2], cj[:, 3:5], cj[:, 5], f, f, exact)  # fmt: skip
                return torch.cat((across, flat_w * along)), None
        ci = cams_[i_t].clone().requires_grad_(True)
        cj = cams_[j_t].clone().requires_grad_(True)
        fi = fj = focal_.expand(len(ii))
        xi = xy_i.detach().clone().requires_grad_(True)
        xj = xy_j.detach().clone().requires_grad_(True)
        across, along = _cross_residual(xi, xj, ci[:, :2], ci[:, 2], ci[:, 3:5], ci[:, 5], cj[:, :2], cj[:, 2],
                                        cj[:, 3:5], cj[:, 5], fi, fj, exact)  # fmt: skip
        m = len(ii)
        cols = np.arange(_PER_IMAGE)
        dxy = []
        if dvec_.numel():  # d xy / d distortion by forward differences in float64 (cheap evaluations)
            eps = 1e-6
            for k in range(dvec_.numel()):
                step = torch.zeros_like(dvec_)
                step[k] = eps
                dxy.append(
                    ((undistort(dvec_ + step, uv_i_t) - xy_i) / eps, (undistort(dvec_ + step, uv_j_t) - xy_j) / eps)
                )
        # camera columns: 12 non-zeros per row (sparse); distortion columns: dense
        cam_rows, cam_cols, cam_vals = [], [], []
        jac_dist = np.zeros((2 * m, len(dxy)))
        for block, (res, scale) in enumerate(((across, 1.0), (along, flat_w))):
            gi, gj, gxi, gxj = torch.autograd.grad(res.sum(), (ci, cj, xi, xj), retain_graph=block == 0)
            rr = np.repeat(rows + block * m, _PER_IMAGE)
            cam_rows += [rr, rr]
            cam_cols += [(_PER_IMAGE * ii[:, None] + cols).ravel(), (_PER_IMAGE * jj[:, None] + cols).ravel()]
            cam_vals += [scale * gi.numpy().ravel(), scale * gj.numpy().ravel()]
            for k, (dxi, dxj) in enumerate(dxy):
                jac_dist[block * m : (block + 1) * m, k] = scale * ((gxi * dxi).sum(1) + (gxj * dxj).sum(1)).numpy()
        jac_cam = scipy.sparse.csr_matrix(
            (np.concatenate(cam_vals), (np.concatenate(cam_rows), np.concatenate(cam_cols))), shape=(2 * m, n_cam)
        )
        jac = (jac_cam, jac_dist)
        return torch.cat((across, flat_w * along)).detach(), jac

    m_rows = len(ii)
    scale2 = np.concatenate((np.full(m_rows, c2), np.full(m_rows, (flat_w * flat_px) ** 2 + 1e-30)))

    def cost(r: torch.Tensor) -> float:
        return float(np.log1p(r.numpy() ** 2 / scale2).sum())

    def inlier_rms(r: torch.Tensor) -> float:
        r = r[:m_rows]
        ok = r * r < 9.0 * c2
        return float((r[ok] ** 2).mean().sqrt()) if bool(ok.any()) else float("nan")

    r, _ = evaluate(cams, focal, dvec, False)
    before = inlier_rms(r)
    lam = 1e-3
    for _ in range(int(iterations)):
        r, jac = evaluate(cams, focal, dvec, True)
        rn = r.numpy()
        w = 1.0 / (1.0 + rn * rn / scale2)  # IRLS weights of the Cauchy losses
        jac_cam, jac_dist = jac
        hess, grad = np.zeros((n_par, n_par)), np.zeros(n_par)
        wc = jac_cam.multiply(w[:, None]).tocsr()
        wd = jac_dist * w[:, None]
        dist_sl = slice(n_cam + 1, n_par)
        hess[:n_cam, :n_cam] = (jac_cam.T @ wc).toarray()
        hess[:n_cam, dist_sl] = jac_cam.T @ wd
        hess[dist_sl, :n_cam] = hess[:n_cam, dist_sl].T
        hess[dist_sl, dist_sl] = jac_dist.T @ wd
        grad[:n_cam] = wc.T @ rn
        grad[dist_sl] = wd.T @ rn
        if knot_cols.size:  # the mean magnification is a scale gauge (a focal change): keep it where it is
            v = np.zeros(n_par)
            v[knot_cols] = 1.0 / knot_cols.size
            k_w = 1e3 * max(float(np.diag(hess).max()), 1.0)
            hess += k_w * np.outer(v, v)
            grad += k_w * v * float((dvec - dvec0).numpy()[knot_cols - n_cam - 1].mean())
        diag = np.diag(hess).copy()
        diag[diag <= 0] = 1.0
        current = cost(r)
        improved = False
        for _ in range(8):
            try:
                delta = np.linalg.solve(hess + lam * np.diag(diag) + 1e-9 * np.eye(n_par), -grad)
            except np.linalg.LinAlgError:
                lam *= 10.0
                continue
            d = torch.as_tensor(delta, dtype=dt)
            cams_new = cams + d[:n_cam].reshape(n, _PER_IMAGE)
            focal_new = focal + d[n_cam : n_cam + 1]
            dvec_new = dvec + d[n_cam + 1 :]
            r_new, _ = evaluate(cams_new, focal_new, dvec_new, False)
            if cost(r_new) < current:
                cams, focal, dvec = cams_new, focal_new, dvec_new
                lam = max(lam / 3.0, 1e-7)
                improved = True
                break
            lam *= 10.0
        if not improved:
            break
    r, _ = evaluate(cams, focal, dvec, False)
    after = inlier_rms(r)
    # A common factor of the camera heights is a gauge (undone by _write_back), but with few matches the
    # solution can slide down it toward a collapsed frame where every residual vanishes: refused.
    ratio = cams[:, 2].numpy() / z0
    with np.errstate(invalid="ignore", divide="ignore"):  # a height at or below the object plane: NaN, refused
        log_ratio = np.log(np.where(ratio > 0, ratio, np.nan))
    shrink = float(np.exp(log_ratio.mean()))
    spread = float(np.abs(log_ratio - log_ratio.mean()).max())
    if not np.isfinite(after) or not 0.5 < shrink < 2.0 or spread > 0.2 or float(cams[:, 3:5].abs().max()) > 0.3:
        if status is not None:
            status["refinement"] = "degenerate" if np.isfinite(after) and np.isfinite(shrink) else "nan"
        log.warning(
            "refinement on the dense matches degenerated (camera heights x%.2f, spread %.0f %%): kept the "
            "cameras of the rounds", shrink, 100.0 * spread,
        )  # fmt: skip
        return before, before
    log.debug("refinement: common camera-height factor %.4f (a gauge), spread %.4f", shrink, spread)
    _write_back(model, cams, focal, dvec)
    if status is not None:
        status["refinement"] = "ok"
    log.info(
        "cameras refined on flow matches: residual %.3f -> %.3f units (%d matches; height factor %.3f)",
        before, after, len(ii), shrink,
    )  # fmt: skip
    return before, after


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
def _write_back(model: MesoModel, cams: torch.Tensor, focal: torch.Tensor, dvec: torch.Tensor) -> None:
    """Store refined nadirs, heights, tilts, angles, focal and distortion in the model's parameterisation,
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
    k = 0
    for p in model.distortion.parameters():
        m = p.numel()
        p.copy_(dvec[k : k + m].reshape(p.shape).to(p.dtype))
        k += m
