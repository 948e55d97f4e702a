"""The full-resolution orthomosaic and height map: every back-projected pixel (RGB + camera-centric height)
splatted onto one grid (the reconstruction ``B`` of paper Eq. 9), and the pixel-coordinate grids it and the
rounds share.

The optimisation that produces the model is :mod:`topograph.meso.optimise`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from topograph.meso.functional.splat import GridSpec, splat_bilinear
from topograph.meso.models.camera import MesoModel
from topograph.progress import steps

_CHUNK_PIXELS = 1 << 21
"""Pixels per band when splatting full-resolution images (bounds the mosaic's transient memory)."""


def pixel_coordinates(
    full_size: tuple[int, int],
    shape: tuple[int, int],
    device: torch.device | str = "cpu",
    rows: tuple[int, int] | None = None,
) -> Tensor:
    """Full-resolution coordinates of the pixel centres of an image resized to ``shape``.

    Args:
        full_size: ``(W, H)`` of the original images.
        shape: ``(h, w)`` of the resized image.
        device: device of the result.
        rows: optional ``(r0, r1)``: only the resized image's rows ``r0 .. r1 - 1``.

    Returns:
        (h * w, 2) ``(u, v)`` in original pixels, row-major ((r1 - r0) * w rows with ``rows``).
    """
    w_full, h_full = full_size
    h, w = shape
    r0, r1 = rows if rows is not None else (0, h)
    u = (torch.arange(w, dtype=torch.float32, device=device) + 0.5) * (w_full / w) - 0.5
    v = (torch.arange(r0, r1, dtype=torch.float32, device=device) + 0.5) * (h_full / h) - 0.5
    vv, uu = torch.meshgrid(v, u, indexing="ij")
    return torch.stack((uu.reshape(-1), vv.reshape(-1)), dim=1)


def grid_around(points: Tensor, cell: float, margin_cells: int = 2) -> GridSpec:
    """The smallest grid of spacing ``cell`` (origin on a multiple of ``cell``) containing ``points``."""
    flat = points.detach().reshape(-1, 2)
    lo = torch.floor(flat.min(0).values / cell) * cell - margin_cells * cell
    hi = flat.max(0).values
    shape = torch.ceil((hi - lo) / cell).long() + margin_cells + 1
    return GridSpec(origin=(float(lo[0]), float(lo[1])), cell=float(cell), shape=(int(shape[1]), int(shape[0])))


@torch.no_grad()
def render_mosaic(
    model: MesoModel,
    pixels: np.ndarray,
    cell: float = 1.0,
    height_factors: np.ndarray | None = None,
    device: torch.device | str = "cpu",
    min_views: int = 2,
    image_weights: np.ndarray | None = None,
    description: str = "mosaic (images)",
    full_size: tuple[int, int] | None = None,
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
        image_weights: (N,) splat weight of each image (None = 1; blurred photos get less).
        description: name of the counted work shown by the active progress reporter (one step per image).
        full_size: ``(W, H)`` of the images the model was built for when ``pixels`` are a downsampled copy
            (a coarse mosaic splats fewer samples); None = the size of ``pixels``.

    Returns:
        ``(rgb, height, weight, grid)``: (H, W, 3) float32 in [0, 1], (H, W) float32 (NaN where fewer
        than ``min_views`` images), (H, W) splat weight, and the grid.
    """
    n, h, w = pixels.shape[:3]
    w_full, h_full = full_size or (w, h)
    factors = torch.ones(n) if height_factors is None else torch.as_tensor(height_factors, dtype=torch.float32)
    # bounds from the flat back-projection of the image borders, with room for height shifts
    us, vs = torch.arange(w_full, dtype=torch.float32), torch.arange(h_full, dtype=torch.float32)
    border = torch.cat(
        (
            torch.stack((us, torch.zeros_like(us)), 1),
            torch.stack((us, torch.full_like(us, h_full - 1.0)), 1),
            torch.stack((torch.zeros_like(vs), vs), 1),
            torch.stack((torch.full_like(vs, w_full - 1.0), vs), 1),
        )
    ).to(device)
    pts = model.object_points(border).reshape(-1, 2).cpu()
    lo, hi = pts.min(0).values, pts.max(0).values
    pad = 0.03 * (hi - lo)
    grid = grid_around(torch.stack((lo - pad, hi + pad)), cell)
    acc = torch.zeros(5, *grid.shape, device=device)  # RGB and height sums, then the splat weight
    views = torch.zeros(grid.shape, dtype=torch.int16, device=device)  # images that saw each cell
    own_weight = torch.zeros(grid.shape, device=device)  # one image's weight (reused, zeroed where touched)
    own = 0.25 * cell * cell  # about a quarter of one image's pixel density
    rows = max(1, _CHUNK_PIXELS // w)  # full-resolution float tensors exist for one band of rows at a time
    for i in steps(range(n), description):
        idx = torch.tensor([i], device=device)
        shape_only = torch.empty((1, 1, h, w), device=device)  # height models read only the size
        hmap = model.heights(shape_only, idx).reshape(h, w)
        window = (grid.shape[0], grid.shape[1], 0, 0)  # (y0, x0, y1, x1) the image touched
        for r0 in range(0, h, rows):
            r1 = min(h, r0 + rows)
            uv = pixel_coordinates((w_full, h_full), (h, w), device, rows=(r0, r1))
            band = torch.from_numpy(pixels[i, r0:r1]).to(device).reshape(1, -1, 3).float().div_(255.0)
            hb = hmap[r0:r1].reshape(1, -1)
            pts = model.object_points(uv, hb, idx)[0]
            vals = torch.cat((model.pose.photometric(band, idx)[0], (hb[0] * factors[i]).unsqueeze(-1)), dim=-1)
            del band, uv
            box = splat_window(
                acc, own_weight, grid.to_grid(pts), vals, None if image_weights is None else image_weights[i]
            )
            if box is not None:
                window = (
                    min(window[0], box[0]),
                    min(window[1], box[1]),
                    max(window[2], box[2]),
                    max(window[3], box[3]),
                )
        y0, x0, y1, x1 = window
        if y1 > y0 and x1 > x0:
            mine = own_weight[y0:y1, x0:x1]
            views[y0:y1, x0:x1] += mine > own * (1.0 if image_weights is None else float(image_weights[i]))
            acc[-1, y0:y1, x0:x1] += mine
            mine.zero_()
    del own_weight
    rgb, height, weight = _normalise_rows(acc, views, own, min_views)
    return rgb, height, weight, grid


def _normalise_rows(
    acc: Tensor, views: Tensor, own: float, min_views: int, rows: int = 256
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``acc`` (5, H, W) splat sums -> RGB (H, W, 3) in [0, 1] (0 where the weight is below ``own``), height
    (H, W) (NaN there or where fewer than ``min_views`` images saw the cell) and the weight (H, W), a band of
    rows at a time (the mosaic's only full-size buffers are the results)."""
    _, gh, gw = acc.shape
    rgb = np.empty((gh, gw, 3), np.float32)
    height = np.empty((gh, gw), np.float32)
    for r0 in range(0, gh, rows):
        r1 = min(gh, r0 + rows)
        a = acc[:, r0:r1]
        wsum = a[-1]
        valid = wsum > own
        avg = a[:-1] / wsum.clamp(min=1e-6)
        avg = torch.where(valid, avg, torch.zeros_like(avg))
        rgb[r0:r1] = avg[:3].permute(1, 2, 0).clamp(0, 1).cpu().numpy()
        ok = valid & (views[r0:r1] >= min_views)
        height[r0:r1] = torch.where(ok, avg[3], torch.full_like(avg[3], float("nan"))).cpu().numpy()
    weight = acc[-1].cpu().numpy().copy()
    return rgb, height, weight


def splat_window(
    acc: Tensor, weight: Tensor, grid_xy: Tensor, values: Tensor, scale: float | None = None
) -> tuple[int, int, int, int] | None:
    """:func:`splat_bilinear` of ``values`` into ``acc[:-1]`` and of the weights into ``weight``, on the
    window of the grid the samples touch (a full-grid splat per band would allocate the whole mosaic).
    Returns that window ``(y0, x0, y1, x1)`` (None when the samples miss the grid)."""
    _, gh, gw = acc.shape
    lo = torch.floor(grid_xy.min(0).values).clamp_min(0).long()
    hi = (torch.floor(grid_xy.max(0).values).long() + 2).clamp(max=torch.tensor([gw, gh], device=grid_xy.device))
    x0, y0, x1, y1 = int(lo[0]), int(lo[1]), int(hi[0]), int(hi[1])
    if x1 <= x0 or y1 <= y0:
        return None
    offset = torch.tensor([x0, y0], dtype=grid_xy.dtype, device=grid_xy.device)
    local = splat_bilinear(grid_xy - offset, values, (y1 - y0, x1 - x0))
    if scale is not None:  # a uniform weight of every sample of this band
        local *= float(scale)
    acc[:-1, y0:y1, x0:x1] += local[:-1]
    weight[y0:y1, x0:x1] += local[-1]
    return y0, x0, y1, x1
