"""Bilinear splatting onto a grid and bilinear sampling from it (pure torch, vectorised).

Grid coordinates are continuous pixel indices of the grid: ``(gx, gy)`` with cell ``(i, j)`` centred at
``gx = j``, ``gy = i``. Splatting distributes each sample over its 4 neighbouring cells with bilinear
weights (a scatter-add); sampling is the adjoint (bilinear interpolation), so splatting a constant image
and sampling it back returns that constant wherever the grid has weight.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class GridSpec:
    """A regular reconstruction grid on the object plane.

    ``origin`` is the object-plane ``(x, y)`` of cell (0, 0); ``cell`` the spacing (object units per
    cell); ``shape`` ``(H, W)`` in cells.
    """

    origin: tuple[float, float]
    cell: float
    shape: tuple[int, int]

    def to_grid(self, points: Tensor) -> Tensor:
        """(..., 2) object-plane points -> (..., 2) continuous grid indices ``(gx, gy)``."""
        o = torch.tensor(self.origin, dtype=points.dtype, device=points.device)
        return (points - o) / self.cell

    def to_object(self, grid_xy: Tensor) -> Tensor:
        """(..., 2) grid indices -> (..., 2) object-plane points."""
        o = torch.tensor(self.origin, dtype=grid_xy.dtype, device=grid_xy.device)
        return grid_xy * self.cell + o


def splat_bilinear(grid_xy: Tensor, values: Tensor, shape: tuple[int, int], weights: Tensor | None = None) -> Tensor:
    """Scatter-add samples onto a grid with bilinear (4-tap) weights.

    Taps falling outside the grid are dropped (the weight channel accounts for it). One 1-D ``scatter_add_``
    per channel over the 4 taps of all samples, accumulated in the values' dtype (float32: measured 2x
    faster than ``bincount``, which converts the weights to float64 first; the splat was a fifth of a 1 MP
    run's CPU, docs/benchmarks.md, issue 18).

    Args:
        grid_xy: (P, 2) continuous grid coordinates ``(gx, gy)``.
        values: (P, C) values to splat.
        shape: ``(H, W)`` of the grid.
        weights: (P,) optional per-sample weights (default 1).

    Returns:
        (C + 1, H, W): the weighted sums of the C channels and, last, the sum of weights.
    """
    h, w = shape
    c = values.shape[1]
    x0f = torch.floor(grid_xy[:, 0])
    y0f = torch.floor(grid_xy[:, 1])
    fx = grid_xy[:, 0] - x0f
    fy = grid_xy[:, 1] - y0f
    x0 = x0f.long()
    y0 = y0f.long()
    gx, gy = 1.0 - fx, 1.0 - fy
    taps = torch.stack((gx * gy, fx * gy, gx * fy, fx * fy)).to(values.dtype)  # (4, P): taps (0,0) (1,0) (0,1) (1,1)
    inside = bool(x0.min() >= 0) and bool(x0.max() < w - 1) and bool(y0.min() >= 0) and bool(y0.max() < h - 1)
    if inside:  # the four tap indices as one broadcast sum (no concatenation of four index copies)
        offsets = torch.tensor([0, 1, w, w + 1], device=x0.device).unsqueeze(1)
        idx = (y0 * w + x0).unsqueeze(0).add(offsets).reshape(-1)
    else:
        parts = []
        for k, (dx, dy) in enumerate(((0, 0), (1, 0), (0, 1), (1, 1))):
            xi, yi = x0 + dx, y0 + dy
            ok = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
            parts.append(yi.clamp(0, h - 1) * w + xi.clamp(0, w - 1))
            taps[k] *= ok
        idx = torch.cat(parts)
    if weights is not None:
        taps = taps * weights
    out = torch.zeros(c + 1, h * w, dtype=values.dtype, device=values.device)
    columns = values.t()
    # one (4, P) buffer reused by every channel (out= arguments have no autograd: fresh products with gradients)
    tracked = torch.is_grad_enabled() and (taps.requires_grad or values.requires_grad)
    weighted = None if tracked else torch.empty_like(taps)
    for k in range(c):
        product = taps * columns[k] if weighted is None else torch.mul(taps, columns[k], out=weighted)
        out[k].scatter_add_(0, idx, product.reshape(-1))
    out[c].scatter_add_(0, idx, taps.reshape(-1))
    return out.view(c + 1, h, w)


def normalise_splat(accumulated: Tensor, min_weight: float = 1e-6) -> tuple[Tensor, Tensor]:
    """Weighted average of a splat: (C + 1, H, W) -> ((C, H, W) averages, (H, W) weights).

    Cells with weight below ``min_weight`` are 0.
    """
    wsum = accumulated[-1]
    avg = accumulated[:-1] / torch.clamp(wsum, min=min_weight)
    avg = torch.where(wsum > min_weight, avg, torch.zeros_like(avg))
    return avg, wsum


def sample_bilinear(grid: Tensor, grid_xy: Tensor) -> Tensor:
    """Bilinearly sample a grid at continuous grid coordinates (differentiable in ``grid_xy``).

    Args:
        grid: (C, H, W) values.
        grid_xy: (P, 2) continuous grid coordinates ``(gx, gy)``; outside the grid the result is 0.

    Returns:
        (P, C) samples.
    """
    c, h, w = grid.shape
    gx = grid_xy[:, 0] * (2.0 / max(w - 1, 1)) - 1.0
    gy = grid_xy[:, 1] * (2.0 / max(h - 1, 1)) - 1.0
    g = torch.stack((gx, gy), dim=-1).view(1, 1, -1, 2)
    out = F.grid_sample(grid.unsqueeze(0), g, mode="bilinear", padding_mode="zeros", align_corners=True)
    return out.view(c, -1).t()


def sample_normalised(accumulated: Tensor, grid_xy: Tensor, min_weight: float = 1e-6) -> Tensor:
    """Read a splat back at continuous coordinates: bilinear samples of the sums over those of the weights.

    This is normalised convolution: cells that no sample reached (weight 0) do not pull the result
    toward 0, so the grid may be finer than the sample spacing. Differentiable in ``grid_xy``.

    Args:
        accumulated: (C + 1, H, W) output of :func:`splat_bilinear` (sums, then weights).
        grid_xy: (P, 2) continuous grid coordinates.
        min_weight: weights below this give 0.

    Returns:
        (P, C) weighted averages.
    """
    s = sample_bilinear(accumulated, grid_xy)
    w = s[:, -1:]
    return torch.where(w > min_weight, s[:, :-1] / torch.clamp(w, min=min_weight), torch.zeros_like(s[:, :-1]))
