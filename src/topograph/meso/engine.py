"""The optimisation engine: level data, the stitching loss, one round of Adam, the final mosaic.

Each iteration back-projects every pixel of every image (RGB + camera-centric height), splats all of them
onto a common grid (the reconstruction ``B``, paper Eq. 9), samples ``B`` back at the same coordinates
(the prediction) and minimises the mismatch (Eq. 10). ``B`` is built without gradients (Eq. 11: the
reconstruction is a temporarily static reference), so gradients reach the parameters only through the
sampling coordinates and the pixel values.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import Tensor

from topograph.meso.config import LearningRates, LevelConfig, LossConfig
from topograph.meso.functional.splat import GridSpec, normalise_splat, sample_normalised, splat_bilinear
from topograph.meso.models.camera import MesoModel
from topograph.meso.optim.optimizer import build_optimizer
from topograph.meso.progress import NullProgress, ProgressSink

log = logging.getLogger("topograph")


@dataclass
class LevelData:
    """Images of one round on the compute device.

    ``pixels`` (N, P, 3) float32 in [0, 1]; ``uv`` (P, 2) the full-resolution pixel coordinates of the
    downsampled pixel centres; ``shape`` ``(h, w)`` of the downsampled images; ``downsample`` the factor.
    """

    pixels: Tensor
    uv: Tensor
    shape: tuple[int, int]
    downsample: int

    @property
    def images(self) -> Tensor:
        """(N, 3, h, w) view of ``pixels``."""
        n = self.pixels.shape[0]
        h, w = self.shape
        return self.pixels.view(n, h, w, 3).permute(0, 3, 1, 2)


def pixel_coordinates(full_size: tuple[int, int], shape: tuple[int, int], device: torch.device | str = "cpu") -> Tensor:
    """Full-resolution coordinates of the pixel centres of an image resized to ``shape``.

    Args:
        full_size: ``(W, H)`` of the original images.
        shape: ``(h, w)`` of the resized image.

    Returns:
        (h * w, 2) ``(u, v)`` in original pixels, row-major.
    """
    w_full, h_full = full_size
    h, w = shape
    u = (torch.arange(w, dtype=torch.float32, device=device) + 0.5) * (w_full / w) - 0.5
    v = (torch.arange(h, dtype=torch.float32, device=device) + 0.5) * (h_full / h) - 0.5
    vv, uu = torch.meshgrid(v, u, indexing="ij")
    return torch.stack((uu.reshape(-1), vv.reshape(-1)), dim=1)


def make_level(pixels: np.ndarray, downsample: int, device: torch.device | str = "cpu") -> LevelData:
    """Downsample (N, H, W, 3) uint8 images by ``downsample`` (area averaging) into a :class:`LevelData`."""
    n, h_full, w_full = pixels.shape[:3]
    h, w = max(2, round(h_full / downsample)), max(2, round(w_full / downsample))
    out = np.empty((n, h, w, 3), dtype=np.float32)
    for i in range(n):
        img = pixels[i].astype(np.float32) / 255.0
        out[i] = img if (h, w) == (h_full, w_full) else cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
    t = torch.from_numpy(out).to(device).view(n, h * w, 3)
    return LevelData(
        pixels=t, uv=pixel_coordinates((w_full, h_full), (h, w), device), shape=(h, w), downsample=downsample
    )


def grid_around(points: Tensor, cell: float, margin_cells: int = 2) -> GridSpec:
    """The smallest grid of spacing ``cell`` (origin on a multiple of ``cell``) containing ``points``."""
    flat = points.detach().reshape(-1, 2)
    lo = torch.floor(flat.min(0).values / cell) * cell - margin_cells * cell
    hi = flat.max(0).values
    shape = torch.ceil((hi - lo) / cell).long() + margin_cells + 1
    return GridSpec(origin=(float(lo[0]), float(lo[1])), cell=float(cell), shape=(int(shape[1]), int(shape[0])))


@dataclass
class LossTerms:
    """Loss components of one iteration (``total`` carries the gradient)."""

    total: Tensor
    mse_rgb: float
    mse_height: float
    tv: float


def compute_loss(
    model: MesoModel,
    data: LevelData,
    loss: LossConfig,
    with_regulariser: bool,
    robust_scale: float = 0.0,
    grid_cell: float = 1.0,
) -> LossTerms:
    """The stitching loss of all images: MSE(RGB) + lambda_h MSE(height) + lambda_TV TV (Eqs. 9-10).

    Args:
        model: the deformation model.
        data: this round's images.
        loss: weights.
        with_regulariser: add the height regulariser (only when heights are trained).
        grid_cell: reconstruction grid spacing as a fraction of the round's pixel spacing. A grid finer
            than the pixels keeps the reconstruction sharp; with the normalised sampling below, cells
            no sample reached do not bias the prediction.
        robust_scale: if > 0, the RGB term is the Cauchy loss ``c^2 log(1 + |r|^2 / c^2)`` of each pixel's
            residual (summed over channels, divided by 3), which equals the MSE for small residuals.

    Returns:
        The loss terms.

    The prediction is the normalised bilinear sample of the splat: ``sample(sums) / sample(weights)``,
    i.e. the reconstruction (Eq. 9) read back at the same coordinates (exactly so where the weights are
    smooth).
    """
    n = data.pixels.shape[0]
    heights = model.heights(data.images).reshape(n, -1)
    pts = model.object_points(data.uv, heights)
    grid = grid_around(pts, float(data.downsample) * grid_cell)
    g = grid.to_grid(pts).reshape(-1, 2)
    rgb = model.pose.photometric(data.pixels)
    values = torch.cat((rgb, heights.unsqueeze(-1)), dim=-1).reshape(-1, 4)
    with torch.no_grad():
        acc = splat_bilinear(g.detach(), values.detach(), grid.shape)
    pred = sample_normalised(acc, g)
    res = pred - values
    sq = (res[:, :3] ** 2).sum(1)
    mse_rgb = sq.mean() / 3.0
    if robust_scale > 0:
        c2 = 3.0 * robust_scale**2
        data_term = (c2 * torch.log1p(sq / c2)).mean() / 3.0
    else:
        data_term = mse_rgb
    mse_h = (res[:, 3] ** 2).mean()
    import os

    hd = float(os.environ.get("HUBER", "0"))
    if hd > 0:
        h_term = (2 * hd * hd * (torch.sqrt(1 + (res[:, 3] / hd) ** 2) - 1)).mean()
    else:
        h_term = mse_h
    total = data_term + loss.height_weight * h_term
    tv_val = 0.0
    if with_regulariser:
        tv = model.heights.regularization()
        total = total + loss.tv_weight * tv
        tv_val = float(tv.detach())
    return LossTerms(total=total, mse_rgb=float(mse_rgb.detach()), mse_height=float(mse_h.detach()), tv=tv_val)


def solve_level(
    model: MesoModel,
    data: LevelData,
    level: LevelConfig,
    lr: LearningRates,
    loss: LossConfig,
    history: list[dict],
    progress: ProgressSink | None = None,
    checkpoint_every: int = 25,
    grid_cell: float = 1.0,
) -> MesoModel:
    """Optimise one coarse-to-fine round with Adam and exponentially decaying learning rates.

    Divergence (a non-finite loss, or a loss above 10x the round's best) rolls the model back to the
    last checkpoint and halves the learning rates.

    Args:
        model: modified in place.
        data: the round's images.
        level: the round (iterations, trained groups, learning-rate scale and decay).
        lr: base learning rates.
        loss: loss weights.
        history: one dict per iteration is appended (level, iteration, loss terms).
        progress: progress sink.
        checkpoint_every: iterations between rollback checkpoints.
        grid_cell: reconstruction grid spacing relative to the round's pixel spacing.

    Returns:
        The model.
    """
    progress = progress or NullProgress()
    opt = build_optimizer(model.groups(), level.train, lr, level.lr_scale)
    if opt is None or level.iterations == 0:
        return model
    gamma = level.lr_final ** (1.0 / max(1, level.iterations))
    train_heights = "height" in level.train
    best = math.inf
    checkpoint = {k: v.detach().clone() for k, v in model.state_dict().items()}
    progress.start(f"{level.name} (1/{level.downsample})", level.iterations)
    for it in range(level.iterations):
        opt.zero_grad(set_to_none=True)
        terms = compute_loss(model, data, loss, train_heights, level.robust_scale, grid_cell)
        value = float(terms.total.detach())
        if not math.isfinite(value) or value > 10.0 * best:
            log.warning("round %s diverged at iteration %d (loss %.3g); rolling back", level.name, it, value)
            model.load_state_dict(checkpoint)
            for g in opt.param_groups:
                g["lr"] *= 0.5
            opt.state.clear()
            progress.update(value)
            continue
        terms.total.backward()
        opt.step()
        for g in opt.param_groups:
            g["lr"] *= gamma
        best = min(best, value)
        if (it + 1) % checkpoint_every == 0:
            checkpoint = {k: v.detach().clone() for k, v in model.state_dict().items()}
        history.append(
            {
                "level": level.name,
                "iteration": it,
                "loss": value,
                "mse_rgb": terms.mse_rgb,
                "mse_height": terms.mse_height,
                "tv": terms.tv,
            }
        )
        progress.update(value)
    log.info("round %s: loss %.4e (rgb %.4e)", level.name, history[-1]["loss"], history[-1]["mse_rgb"])
    return model


@torch.no_grad()
def render_mosaic(
    model: MesoModel,
    pixels: np.ndarray,
    cell: float = 1.0,
    height_factors: np.ndarray | None = None,
    device: torch.device | str = "cpu",
    min_views: int = 2,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, GridSpec]:
    """Splat every full-resolution pixel (RGB and height) onto one grid: the orthomosaic and height map.

    Args:
        model: the optimised model.
        pixels: (N, H, W, 3) uint8 images.
        cell: grid spacing in object units.
        height_factors: (N,) factor converting each image's camera-centric heights (object units) to
            the output unit (e.g. micrometres, from Eq. 8); 1 when None.
        device: compute device.
        min_views: heights are reported only where at least this many images contribute (a point seen
            by one image has no parallax, so its height is not observable).

    Returns:
        ``(rgb, height, weight, grid)``: (H, W, 3) float32 in [0, 1], (H, W) float32 (NaN where fewer
        than ``min_views`` images), (H, W) splat weight, and the grid.
    """
    n, h, w = pixels.shape[:3]
    uv = pixel_coordinates((w, h), (h, w), device)
    factors = torch.ones(n) if height_factors is None else torch.as_tensor(height_factors, dtype=torch.float32)
    # bounds from the flat back-projection of the image borders, with room for height shifts
    border = torch.cat((uv[:w], uv[-w:], uv[::w], uv[w - 1 :: w]))
    pts = model.object_points(border).reshape(-1, 2).cpu()
    lo, hi = pts.min(0).values, pts.max(0).values
    pad = 0.03 * (hi - lo)
    grid = grid_around(torch.stack((lo - pad, hi + pad)), cell)
    acc = torch.zeros(5, *grid.shape, device=device)
    views = torch.zeros(grid.shape, device=device)
    own = 0.25 * cell * cell  # about a quarter of one image's pixel density
    for i in range(n):
        idx = torch.tensor([i], device=device)
        img = torch.from_numpy(pixels[i].astype(np.float32) / 255.0).to(device)
        hmap = model.heights(img.permute(2, 0, 1)[None], idx).reshape(1, -1)
        pts = model.object_points(uv, hmap, idx)[0]
        rgb = model.pose.photometric(img.reshape(1, -1, 3), idx)[0]
        vals = torch.cat((rgb, (hmap[0] * factors[i]).unsqueeze(-1)), dim=-1)
        one = splat_bilinear(grid.to_grid(pts), vals, grid.shape)
        views += one[-1] > own
        acc += one
    avg, wsum = normalise_splat(acc)
    valid = wsum > own
    observed = views >= min_views
    rgb = avg[:3].permute(1, 2, 0).clamp(0, 1).cpu().numpy()
    height = torch.where(valid & observed, avg[3], torch.full_like(avg[3], float("nan"))).cpu().numpy()
    rgb[~valid.cpu().numpy()] = 0.0
    return rgb.astype(np.float32), height.astype(np.float32), wsum.cpu().numpy(), grid
