"""Dense correspondences between registered images of a mesoscopic sequence (plane + parallax).

For an image ``i`` and an overlapping image ``j``, ``j`` is warped into ``i``'s pixel frame through the
object plane at height 0 with the current cameras; the dense optical flow (OpenCV DIS, forward-backward
checked) from ``i`` to the warped ``j`` is then the relief parallax plus the cameras' residual errors.
Every consistent flow vector gives a match between a pixel of ``i`` and a raw pixel of ``j`` -- a match
that does not depend on the cameras. By orthorectification (paper Eqs. 4-5) a surface point of height
``h`` seen in both lies at ``R_i + rel_i (1 - h / Z_i) = R_j + rel_j (1 - h / Z_j)`` (``rel`` the flat
back-projection relative to the nadir ``R``, ``Z`` the camera height), hence

    a = flat_i - flat_j = h (rel_i / Z_i - rel_j / Z_j) = h b        (:func:`pair_geometry`)

which is linear in ``h``: the component of ``a`` along ``b`` is the height's parallax, the component
across ``b`` the matches' disagreement with the cameras.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from topograph.matching.dense import DenseConfig, _flow_pair, forward_backward_error
from topograph.meso.config import FlowHeightConfig
from topograph.meso.functional.projection import rolling_shutter, rotate_in_plane
from topograph.meso.models.camera import MesoModel
from topograph.meso.mosaic import pixel_coordinates
from topograph.progress import steps

log = logging.getLogger("topograph")


AUTO_LONG_SIDE = 500
"""Long side (pixels) of the flow images chosen by ``FlowHeightConfig.downsample = 0``."""


def flow_downsample(cfg: FlowHeightConfig, image_size: tuple[int, int]) -> int:
    """The flow's downsampling factor for ``(W, H)`` images (``cfg.downsample``, or automatic when 0)."""
    if cfg.downsample > 0:
        return int(cfg.downsample)
    return max(1, round(max(image_size) / AUTO_LONG_SIDE))


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
    rotated = rotate_in_plane(rolling_shutter(xy[:, None, :], model.rolling_shifts()[image]), pose.angle[image])
    z = model.camera_heights()[image]
    rel = model.projection.backproject(rotated, pose.tilt[image], z, model.focal())[:, 0]
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


CONTRAST_SIGMA_FRACTION = 0.02
"""Window (Gaussian sigma) of :func:`local_contrast`, as a fraction of the flow images' long side: 6.4 px at
320x240, 10 px at the automatic 500-px flow size -- wider than DIS's 8-px patches, narrower than a highlight
or a vignette (a fifth of the frame and more)."""


def local_contrast(gray: np.ndarray, sigma_px: float, floor: float = 3.0) -> np.ndarray:
    """``gray`` (uint8) with its local mean removed and its local contrast equalised, as uint8 around 128:

        n = 128 + 40 (g - G_s * g) / max(sqrt(G_s * (g - G_s * g)^2), floor)

    (``G_s`` a Gaussian of sigma ``sigma_px``; ``floor`` gray levels keep flat, noisy areas from being
    amplified). It is invariant to a gain and an offset that vary slowly across the image: auto exposure, white
    balance, vignetting and a smooth specular highlight that one photo of a pair sees and the other does not --
    each of which DIS, whose patch SSD and brightness constancy match contrast, reads as a texture change.
    """
    g = gray.astype(np.float32)
    high = g - cv2.GaussianBlur(g, (0, 0), sigma_px)
    spread = np.sqrt(cv2.GaussianBlur(high * high, (0, 0), sigma_px))
    return np.clip(128.0 + 40.0 * high / np.maximum(spread, floor) + 0.5, 0, 255).astype(np.uint8)


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
    sigma = CONTRAST_SIGMA_FRACTION * max(h, w)
    normalised = [local_contrast(g, sigma) for g in grays]
    flow_cfg = DenseConfig(
        preset="medium", patch_size=8, patch_stride=3, variational_refinement_iterations=5, stretch_percent=0.0
    )
    cols = np.arange(w, dtype=np.float32)[None, :]
    rows = np.arange(h, dtype=np.float32)[:, None]
    pairs: list[PairMatches] = []
    neighbours = list(enumerate(_neighbours(model, (w_full, h_full), affines, cfg)))
    for i, chosen in steps(neighbours, "flow matches (images)"):
        for j in chosen:
            u_j = invert_flat(model, j, flat[i], affines[j]).cpu().numpy().reshape(h, w, 2).astype(np.float32)
            map_x = (u_j[..., 0] + 0.5) / sx - 0.5
            map_y = (u_j[..., 1] + 0.5) / sy - 0.5
            inside = (map_x >= 0) & (map_x <= w - 1) & (map_y >= 0) & (map_y <= h - 1)
            if inside.mean() < cfg.min_overlap * 0.5:
                continue
            warped = cv2.remap(grays[j], map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
            fwd, bwd = _flow_pair(normalised[i], local_contrast(warped, sigma), flow_cfg)
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


def pair_geometry(model: MesoModel, uv_i: torch.Tensor, uv_j: torch.Tensor, i: torch.Tensor, j: torch.Tensor):
    """``a = flat_i - flat_j`` and ``b = rel_i / Z_i - rel_j / Z_j`` of matched points (module docstring)."""
    rel_i, r_i, z_i = flat_per_point(model, uv_i, i)
    rel_j, r_j, z_j = flat_per_point(model, uv_j, j)
    a = (rel_i + r_i) - (rel_j + r_j)
    b = rel_i / z_i[:, None] - rel_j / z_j[:, None]
    return a, b
