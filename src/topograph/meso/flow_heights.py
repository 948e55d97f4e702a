"""Camera-centric height maps from dense optical flow between registered images (plane + parallax).

After the camera rounds every image is registered on the object plane up to its relief parallax. For an
image ``i`` and an overlapping image ``j``, ``j`` is warped into ``i``'s pixel frame through the object
plane at height 0; the dense flow from ``i`` to the warped ``j`` is then the parallax alone. A surface
point of height ``h`` seen at pixel ``u`` of ``i`` and ``u_j`` of ``j`` lies, by orthorectification
(paper Eqs. 4-5), at

    R_i + rel_i (1 - h / Z_i) = R_j + rel_j (1 - h / Z_j),

with ``rel`` the flat back-projection relative to the nadir ``R`` and ``Z`` the camera height. Hence

    flat_i - flat_j = h (rel_i / Z_i - rel_j / Z_j) = h b,

which is linear in ``h``: ``h = a.b / b.b`` per pixel, and the part of ``a = flat_i - flat_j``
perpendicular to ``b`` is the epipolar residual. Estimates from all neighbours are averaged with
weights ``|b|^2`` (the inverse variance of ``h`` for a flow error equal in every pair).

Gradient descent on the photometric loss grows heights slowly where the parallax is a few pixels (it
only sees the gradient of a blurred reference); this direct estimate starts the height rounds near the
answer, and the joint rounds then refine cameras and heights together.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import cv2
import numpy as np
import scipy.sparse
import torch

from topograph.matching.dense import DenseConfig, _flow_pair, forward_backward_error
from topograph.meso.config import FlowHeightConfig
from topograph.meso.engine import pixel_coordinates
from topograph.meso.functional.projection import backproject_tilted, backproject_tilted_exact, rotate_in_plane
from topograph.meso.models.camera import MesoModel

log = logging.getLogger("topograph")


AUTO_LONG_SIDE = 500
"""Long side (pixels) of the flow images chosen by ``FlowHeightConfig.downsample = 0``."""


def flow_downsample(cfg: FlowHeightConfig, image_size: tuple[int, int]) -> int:
    """The flow's downsampling factor for ``(W, H)`` images (``cfg.downsample``, or automatic when 0)."""
    if cfg.downsample > 0:
        return int(cfg.downsample)
    return max(1, round(max(image_size) / AUTO_LONG_SIDE))


@dataclass
class FlowHeights:
    """Result of :func:`flow_heights`: ``heights`` (N, h, w) camera-centric heights in object units,
    ``weight`` (N, h, w) summed ``|b|^2`` of the valid estimates (0 = filled), ``pairs`` the image pairs
    used, ``seconds`` wall time."""

    heights: np.ndarray
    weight: np.ndarray
    pairs: list[tuple[int, int]]
    seconds: float


@dataclass
class PairMatches:
    """Dense correspondences of one image pair: pixel ``flat_index`` of image ``i``'s flow grid matches
    ``uv_j`` (full-resolution pixels) of image ``j``."""

    i: int
    j: int
    flat_index: np.ndarray
    uv_j: np.ndarray


@dataclass
class FlowMatches:
    """Dense correspondences of every neighbouring pair on the flow grid ``shape`` (h, w), whose pixel
    centres are ``uv`` (h * w, 2) in full-resolution pixels."""

    pairs: list[PairMatches]
    uv: np.ndarray
    shape: tuple[int, int]
    seconds: float


def _gray(img: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    h, w = shape
    g = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    if g.shape != (h, w):
        g = cv2.resize(g, (w, h), interpolation=cv2.INTER_AREA)
    return g


@torch.no_grad()
def _flat(model: MesoModel, uv: torch.Tensor, j: int) -> torch.Tensor:
    """(P, 2) absolute flat back-projection of pixels ``uv`` (full-resolution units) of image ``j``."""
    rel, pos, _ = model.flat_points(uv, torch.tensor([j], device=uv.device))
    return rel[0] + pos[0]


def flat_per_point(model: MesoModel, uv: torch.Tensor, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Flat back-projection of points that each belong to their own image (differentiable).

    Args:
        model: the deformation model.
        uv: (P, 2) raw full-resolution pixel coordinates.
        image: (P,) image index of each point.

    Returns:
        ``(relative, nadir, Z)``: (P, 2) points relative to their camera's nadir, (P, 2) nadirs, (P,) camera
        heights.
    """
    xy = model.distortion.undistort(uv)
    pose = model.pose
    project = backproject_tilted if model.projection == "expansion" else backproject_tilted_exact
    rotated = rotate_in_plane(xy[:, None, :], pose.angle[image])
    z = model.camera_heights()[image]
    rel = project(rotated, pose.tilt[image], z, model.focal())[:, 0]
    return rel, model.nadirs()[image], z


@torch.no_grad()
def invert_flat(
    model: MesoModel, j: int, targets: torch.Tensor, affine: np.ndarray, iterations: int = 4
) -> torch.Tensor:
    """Pixels of image ``j`` whose flat back-projection is ``targets`` (Newton steps with a fixed affine
    Jacobian ``affine`` (2, 3): ``flat_j(u) ~ A u + c``).

    Args:
        model: the deformation model.
        j: image index.
        targets: (P, 2) object-plane points.
        affine: least-squares affine fit of ``flat_j`` (pixels -> object).
        iterations: Newton steps (the map is nearly affine: 3-4 reach 1e-3 px).

    Returns:
        (P, 2) full-resolution pixel coordinates.
    """
    a = torch.as_tensor(affine[:, :2], dtype=targets.dtype, device=targets.device)
    c = torch.as_tensor(affine[:, 2], dtype=targets.dtype, device=targets.device)
    a_inv = torch.linalg.inv(a)
    u = (targets - c) @ a_inv.T
    for _ in range(iterations):
        u = u + (targets - _flat(model, u, j)) @ a_inv.T
    return u


def _affine_fit(uv: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """(2, 3) least-squares affine map ``xy ~ A uv + c``."""
    design = np.column_stack((uv, np.ones(len(uv))))
    coef, *_ = np.linalg.lstsq(design, xy, rcond=None)
    return coef.T


def _sample(field: np.ndarray, map_x: np.ndarray, map_y: np.ndarray) -> np.ndarray:
    return cv2.remap(field, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=np.nan)


@torch.no_grad()
def _neighbours(
    model: MesoModel, size: tuple[int, int], affines: list[np.ndarray], cfg: FlowHeightConfig
) -> list[list[int]]:
    """Per image, its neighbours: overlap >= ``min_overlap``, best ``overlap x baseline / Z`` first."""
    w_full, h_full = size
    device = model.log_focal.device
    n = model.n_images
    nadir = model.nadirs().cpu().numpy().astype(np.float64)
    z = model.camera_heights().cpu().numpy().astype(np.float64)
    coarse = pixel_coordinates((w_full, h_full), (12, 16), device)
    out: list[list[int]] = []
    for i in range(n):
        pts = _flat(model, coarse, i)
        scored = []
        for j in range(n):
            if j == i:
                continue
            u = invert_flat(model, j, pts, affines[j], iterations=2).cpu().numpy()
            inside = (u[:, 0] >= 0) & (u[:, 0] <= w_full - 1) & (u[:, 1] >= 0) & (u[:, 1] <= h_full - 1)
            overlap = float(inside.mean())
            if overlap >= cfg.min_overlap:
                scored.append((overlap * float(np.linalg.norm(nadir[i] - nadir[j]) / z[i]), j))
        out.append([j for _, j in sorted(scored, reverse=True)[: cfg.max_neighbours]])
    return out


@torch.no_grad()
def flow_matches(model: MesoModel, pixels: np.ndarray, cfg: FlowHeightConfig | None = None) -> FlowMatches:
    """Dense correspondences between each image and its neighbours (module docstring).

    Image ``j`` is warped into image ``i``'s frame through the object plane with the current cameras, so
    the flow only has to find the relief parallax and the cameras' residual errors; matches failing the
    forward-backward check or landing outside ``j`` are dropped. The matches themselves do not depend on
    the cameras (they map pixels of ``i`` to raw pixels of ``j``).

    Args:
        model: the deformation model with roughly registered cameras.
        pixels: (N, H, W, 3) uint8 full-resolution images.
        cfg: settings.

    Returns:
        The matches of every pair.
    """
    cfg = cfg or FlowHeightConfig()
    t0 = time.perf_counter()
    n, h_full, w_full = pixels.shape[:3]
    ds = flow_downsample(cfg, (w_full, h_full))
    h, w = max(2, round(h_full / ds)), max(2, round(w_full / ds))
    device = model.log_focal.device
    uv = pixel_coordinates((w_full, h_full), (h, w), device)
    sx, sy = w_full / w, h_full / h
    rel, nadir, _ = model.flat_points(uv)
    flat = (rel + nadir[:, None, :]).float()
    uv_np = uv.cpu().numpy()
    sub = slice(None, None, 97)
    affines = [_affine_fit(uv_np[sub], flat[j].cpu().numpy()[sub]) for j in range(n)]
    grays = [_gray(pixels[i], (h, w)) for i in range(n)]
    flow_cfg = DenseConfig(
        preset="medium", patch_size=8, patch_stride=3, variational_refinement_iterations=5, stretch_percent=0.0
    )
    cols = np.arange(w, dtype=np.float32)[None, :]
    rows = np.arange(h, dtype=np.float32)[:, None]
    pairs: list[PairMatches] = []
    for i, chosen in enumerate(_neighbours(model, (w_full, h_full), affines, cfg)):
        for j in chosen:
            u_j = invert_flat(model, j, flat[i], affines[j]).cpu().numpy().reshape(h, w, 2).astype(np.float32)
            map_x = (u_j[..., 0] + 0.5) / sx - 0.5
            map_y = (u_j[..., 1] + 0.5) / sy - 0.5
            inside = (map_x >= 0) & (map_x <= w - 1) & (map_y >= 0) & (map_y <= h - 1)
            if inside.mean() < cfg.min_overlap * 0.5:
                continue
            warped = cv2.remap(grays[j], map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
            fwd, bwd = _flow_pair(grays[i], warped, flow_cfg)
            fb = forward_backward_error(fwd, bwd)
            tx, ty = fwd[..., 0] + cols, fwd[..., 1] + rows
            matched = _sample(u_j, tx, ty)  # raw pixels of j
            inside_t = _sample(inside.astype(np.float32), tx, ty)
            ok = (fb < cfg.fb_threshold_px) & (inside_t > 0.999) & np.isfinite(matched).all(-1)
            idx = np.flatnonzero(ok)
            pairs.append(PairMatches(i, j, idx.astype(np.int32), matched.reshape(-1, 2)[idx]))  # 12 B per match
    seconds = time.perf_counter() - t0
    log.info(
        "flow matches: %d pairs at %dx%d, %.1f M matches, %.1f s",
        len(pairs), w, h, sum(len(p.flat_index) for p in pairs) / 1e6, seconds,
    )  # fmt: skip
    return FlowMatches(pairs, uv_np, (h, w), seconds)


def _pair_geometry(model: MesoModel, uv_i: torch.Tensor, uv_j: torch.Tensor, i: torch.Tensor, j: torch.Tensor):
    """``a = flat_i - flat_j`` and ``b = rel_i / Z_i - rel_j / Z_j`` of matched points (module docstring)."""
    rel_i, r_i, z_i = flat_per_point(model, uv_i, i)
    rel_j, r_j, z_j = flat_per_point(model, uv_j, j)
    a = (rel_i + r_i) - (rel_j + r_j)
    b = rel_i / z_i[:, None] - rel_j / z_j[:, None]
    return a, b


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
    _write_back(model, cams, focal, dvec)
    log.info("cameras refined on flow matches: residual %.3f -> %.3f units (%d matches)", before, after, len(ii))
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


@torch.no_grad()
def flow_heights(model: MesoModel, matches: FlowMatches, cfg: FlowHeightConfig | None = None) -> FlowHeights:
    """Camera-centric height maps of every image from its matches with the current cameras (closed-form
    height per match, fused with weights ``|b|^2``, module docstring).

    Args:
        model: the deformation model with registered cameras (its heights are not used).
        matches: from :func:`flow_matches`.
        cfg: settings.

    Returns:
        The fused height maps on the flow grid (object units, positive toward the camera).
    """
    cfg = cfg or FlowHeightConfig()
    t0 = time.perf_counter()
    n = model.n_images
    h, w = matches.shape
    ds = matches.uv[1, 0] - matches.uv[0, 0] if w > 1 else 1.0  # flow pixel in full-resolution pixels
    device = model.log_focal.device
    num = np.zeros((n, h * w), np.float64)
    den = np.zeros((n, h * w), np.float64)
    cell = float(torch.sqrt(model.camera_heights().mean() / model.focal()))  # object units per pixel
    used = []
    for p in matches.pairs:
        if len(p.flat_index) == 0:
            continue
        uv_i = torch.as_tensor(matches.uv[p.flat_index], device=device)
        uv_j = torch.as_tensor(p.uv_j, device=device)
        k = len(p.flat_index)
        a, b = _pair_geometry(
            model, uv_i, uv_j, torch.full((k,), p.i, device=device), torch.full((k,), p.j, device=device)
        )
        bb = (b * b).sum(1)
        hh = (a * b).sum(1) / bb.clamp_min(1e-12)
        perp = a - hh[:, None] * b
        epi = torch.linalg.norm(perp, dim=1) / (cell * ds)
        ok = ((epi < cfg.epipolar_threshold_px) & torch.isfinite(hh) & (bb > 0)).cpu().numpy()
        idx = p.flat_index[ok]
        num[p.i, idx] += (bb * hh).cpu().numpy()[ok]  # flat_index is unique within a pair
        den[p.i, idx] += bb.cpu().numpy()[ok]
        used.append((p.i, p.j))
    heights = np.zeros((n, h, w), np.float32)
    for i in range(n):
        heights[i] = fill_and_smooth(num[i].reshape(h, w), den[i].reshape(h, w), cfg)
    seconds = time.perf_counter() - t0
    log.info("heights from flow: %.0f %% of pixels measured, %.1f s", 100.0 * float((den > 0).mean()), seconds)
    return FlowHeights(heights=heights, weight=den.reshape(n, h, w).astype(np.float32), pairs=used, seconds=seconds)


def fill_and_smooth(num: np.ndarray, den: np.ndarray, cfg: FlowHeightConfig) -> np.ndarray:
    """Weighted mean ``num / den`` where measured, holes filled by normalised Gaussian smoothing, then a
    median filter (removes isolated flow outliers)."""
    valid = den > 0
    if not valid.any():
        return np.zeros(num.shape, np.float32)
    mean = np.where(valid, num / np.maximum(den, 1e-12), 0.0).astype(np.float32)
    if not valid.all():
        m = valid.astype(np.float32)
        filled = np.full(mean.shape, np.nan, np.float32)
        for sigma in (cfg.fill_sigma_px, 4 * cfg.fill_sigma_px):  # nearest data first; far away: the median
            blur_v = cv2.GaussianBlur(mean * m, (0, 0), sigma)
            blur_w = cv2.GaussianBlur(m, (0, 0), sigma)
            todo = np.isnan(filled) & (blur_w > 1e-3)
            filled[todo] = blur_v[todo] / blur_w[todo]
        filled[np.isnan(filled)] = float(np.median(mean[valid]))
        mean = np.where(valid, mean, filled).astype(np.float32)
    if cfg.median_px >= 3:
        mean = (
            cv2.medianBlur(mean, int(cfg.median_px) | 1) if cfg.median_px <= 5 else _median_large(mean, cfg.median_px)
        )
    return mean


def _median_large(img: np.ndarray, k: int) -> np.ndarray:
    from scipy.ndimage import median_filter

    return median_filter(img, size=int(k) | 1, mode="nearest").astype(np.float32)


def _resize_maps(maps: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    h, w = shape
    if maps.shape[1:] == (h, w):
        return maps.astype(np.float32)
    return np.stack([cv2.resize(m, (w, h), interpolation=cv2.INTER_AREA) for m in maps.astype(np.float32)])


def initialise_heights(model: MesoModel, measured: FlowHeights, iterations: int = 200, lr: float = 1e-2) -> float:
    """Start the model's height maps at the measured ones.

    A CNN is fitted to them (weighted by where they were measured, see :meth:`HeightCNN.fit`); explicit
    maps are set to them. Returns the RMS misfit of the start (object units; 0 for explicit maps).
    """
    from topograph.meso.models.cnn import HeightCNN
    from topograph.meso.models.heights import HeightMaps

    heights = model.heights
    if isinstance(heights, HeightCNN):
        target = torch.from_numpy(_resize_maps(measured.heights, heights.shape))[:, None]
        if iterations <= 0:  # the measured maps become the fixed part; the network learns the residual from 0
            heights.set_maps(target)
            return 0.0
        measured_mask = (measured.weight > 0).astype(np.float32)
        weight = torch.from_numpy(_resize_maps(measured_mask, heights.shape))[:, None] + 0.05
        return heights.fit(target, weight, iterations, lr)
    if isinstance(heights, HeightMaps):
        with torch.no_grad():
            shape = tuple(heights.maps.shape[-2:])
            maps = torch.from_numpy(_resize_maps(measured.heights, shape))[:, None]
            heights.maps.copy_(maps.to(heights.maps.device))
        return 0.0
    raise TypeError(f"cannot initialise heights of type {type(heights).__name__}")


def measure_heights(model: MesoModel, pixels: np.ndarray, cfg: FlowHeightConfig, seed: int = 0) -> FlowHeights:
    """Dense matches -> cameras refined on them -> heights (``cfg.passes`` times matches and refinement: a
    second pass warps with the refined cameras, so its flow starts closer and keeps more matches)."""
    for k in range(max(1, int(cfg.passes))):
        matches = flow_matches(model, pixels, cfg)
        if cfg.refine_iterations > 0:
            refine_cameras(
                model,
                matches,
                cfg.refine_iterations,
                cfg.refine_matches_per_pair,
                cfg.refine_max_matches,
                flat_weight=cfg.flat_weight,
                seed=seed + k,
            )
    return flow_heights(model, matches, cfg)
