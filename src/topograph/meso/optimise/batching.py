"""Batching across images with a running-average reconstruction (paper Sec. 3.4, Eq. 12).

Each optimisation step takes a batch of images, back-projects their pixels, updates the reconstruction
``B`` only where the batch lands, samples ``B`` back at the same coordinates and registers the batch
to it. ``B`` is a temporarily static reference: it is updated without gradients (Eq. 11), so memory is
bounded by the batch, not the number of images.

The reconstruction is kept as running splat sums ``S`` (weighted sums of the values, C channels) and
``W`` (sum of the splat weights) per cell, ``B = S / W``. A batch with splat sums ``(S_b, W_b)`` updates
the cells it visits (``W_b > 0``) as::

    S <- m S + (1 - m) S_b,    W <- m W + (1 - m) W_b                      (Eq. 12, in sum form)

so ``B`` moves toward the batch's own average ``S_b / W_b`` by a fraction that grows with the batch's
weight in the cell (``1 - m`` where old and new weights are equal), cells seen for the first time take
the batch's value, and cells the batch does not visit keep their value. When one batch holds every
image and the parameters do not change, ``B`` is exactly the full-pass reconstruction (Eq. 9).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import Tensor

from topograph.errors import QualityError
from topograph.meso.functional.splat import GridSpec, splat_bilinear
from topograph.meso.models.camera import MesoModel
from topograph.meso.mosaic import pixel_coordinates


@dataclass
class BatchedLevel:
    """Images of one round stored compactly (uint8) and converted to float32 one batch at a time.

    ``pixels`` (N, h, w, 3) uint8; ``uv`` (P, 2) full-resolution coordinates of the downsampled pixel
    centres; ``shape`` ``(h, w)``; ``downsample`` the factor.
    """

    pixels: Tensor
    uv: Tensor
    shape: tuple[int, int]
    downsample: int
    image_weights: Tensor | None = None
    """(N,) weight of each image in the running reconstruction (None = 1; blurred photos get less)."""

    @property
    def n_images(self) -> int:
        return int(self.pixels.shape[0])

    def batch(self, index: Tensor) -> Tensor:
        """(B, P, 3) float32 intensities in [0, 1] of the images ``index``."""
        b = self.pixels[index]
        return b.reshape(b.shape[0], -1, 3).float().div_(255.0)

    def size_proxy(self, n: int) -> Tensor:
        """An (n, 3, h, w) tensor without storage, for height models that only read the size."""
        h, w = self.shape
        return torch.zeros((), device=self.pixels.device).expand(n, 3, h, w)


def make_batched_level(pixels: np.ndarray, downsample: int, device: torch.device | str = "cpu") -> BatchedLevel:
    """Downsample (N, H, W, 3) uint8 images by ``downsample`` (area averaging), kept as uint8."""
    n, h_full, w_full = pixels.shape[:3]
    h, w = max(2, round(h_full / downsample)), max(2, round(w_full / downsample))
    if (h, w) == (h_full, w_full):
        out = np.ascontiguousarray(pixels)
    else:
        out = np.empty((n, h, w, 3), dtype=np.uint8)
        for i in range(n):
            out[i] = cv2.resize(pixels[i], (w, h), interpolation=cv2.INTER_AREA)
    return BatchedLevel(
        pixels=torch.from_numpy(out).to(device),
        uv=pixel_coordinates((w_full, h_full), (h, w), device),
        shape=(h, w),
        downsample=int(downsample),
    )


class RunningReconstruction:
    """The running-average reconstruction ``B = S / W`` on a fixed grid (module docstring, Eq. 12).

    Args:
        grid: the reconstruction grid (object units).
        channels: value channels (RGB + height = 4).
        device: compute device.
    """

    def __init__(self, grid: GridSpec, channels: int = 4, device: torch.device | str = "cpu") -> None:
        self.grid = grid
        h, w = grid.shape
        self.sums = torch.zeros(channels, h, w, device=device)
        self.weights = torch.zeros(h, w, device=device)

    @torch.no_grad()
    def update(self, grid_xy: Tensor, values: Tensor, momentum: float, weights: Tensor | None = None) -> None:
        """Blend one batch into the cells it visits: ``S <- m S + (1-m) S_b``, ``W <- m W + (1-m) W_b``.

        Args:
            grid_xy: (P, 2) continuous grid coordinates of the batch's samples.
            values: (P, C) their values.
            momentum: ``m`` in [0, 1); 0 replaces the visited cells by the batch's average.
            weights: (P,) optional sample weights.
        """
        acc = splat_bilinear(grid_xy.detach(), values.detach(), self.grid.shape, weights)
        visited = acc[-1] > 0
        keep = torch.where(visited, torch.full_like(self.weights, momentum), torch.ones_like(self.weights))
        self.sums.mul_(keep).add_(acc[:-1], alpha=1.0 - momentum)
        self.weights.mul_(keep).add_(acc[-1], alpha=1.0 - momentum)

    @torch.no_grad()
    def accumulate(self, grid_xy: Tensor, values: Tensor, weights: Tensor | None = None) -> None:
        """Add one batch's splat sums (plain sums: a pass over all batches gives the full-pass ``B``)."""
        acc = splat_bilinear(grid_xy.detach(), values.detach(), self.grid.shape, weights)
        self.sums.add_(acc[:-1])
        self.weights.add_(acc[-1])

    def reset(self) -> None:
        """Forget everything (all cells empty)."""
        self.sums.zero_()
        self.weights.zero_()

    def average(self, min_weight: float = 1e-6) -> Tensor:
        """(C, H, W) ``S / W`` (0 where ``W <= min_weight``)."""
        w = self.weights
        avg = self.sums / w.clamp(min=min_weight)
        return torch.where(w > min_weight, avg, torch.zeros_like(avg))

    def accumulated(self) -> Tensor:
        """(C + 1, H, W) running sums then weights (the layout of ``splat_bilinear``)."""
        return torch.cat((self.sums, self.weights.unsqueeze(0)))

    def state_dict(self) -> dict:
        """Plain-data state (tensors and the grid) for checkpoints."""
        g = self.grid
        return {"sums": self.sums.clone(), "weights": self.weights.clone(), "grid": (g.origin, g.cell, g.shape)}

    def load_state_dict(self, state: dict) -> None:
        origin, cell, shape = state["grid"]
        self.grid = GridSpec(origin=tuple(origin), cell=float(cell), shape=tuple(shape))
        self.sums = state["sums"].to(self.sums.device).clone()
        self.weights = state["weights"].to(self.weights.device).clone()


@torch.no_grad()
def footprint_grid(
    model: MesoModel, level: BatchedLevel, cell_fraction: float = 1.0, pad: float = 0.05, margin_cells: int = 2
) -> GridSpec:
    """A fixed grid covering every image's flat footprint.

    The cell is ``cell_fraction`` x the round's pixel spacing (its downsampling factor, object units).

    The footprints are the back-projections of the image borders at height 0, enlarged by ``pad`` of
    their extent on each side (room for camera motion and height shifts during the round).
    """
    h, w = level.shape
    uv = level.uv
    border = torch.cat((uv[:w], uv[-w:], uv[::w], uv[w - 1 :: w]))
    pts = model.object_points(border).reshape(-1, 2)
    lo, hi = pts.min(0).values, pts.max(0).values
    ext = pad * (hi - lo)
    lo, hi = lo - ext, hi + ext
    cell = float(level.downsample) * float(cell_fraction)
    origin = torch.floor(lo / cell) * cell - margin_cells * cell
    shape = torch.ceil((hi - origin) / cell).long() + margin_cells + 1
    return GridSpec(origin=(float(origin[0]), float(origin[1])), cell=cell, shape=(int(shape[1]), int(shape[0])))


MAX_GRID_CELLS_PER_IMAGE_PIXEL = 64.0
"""A round's reconstruction grid of more cells than this times the round's image pixels (all images) means
the cameras diverged (a footprint reaching toward the horizon; a run of 15 photos of 320x240 once asked
for 3e9 cells). Sound layouts stay far below it: the grid is the footprints' bounding box with 5 % padding, ~1.2
cells per pixel for photos that tile a rectangle, ~26 for 40 photos in one diagonal line at 80 % stride."""


def check_grid_size(grid: GridSpec, level: BatchedLevel, round_name: str) -> None:
    """Stop with a one-line :class:`QualityError` when ``grid`` is implausibly large for ``level``
    (:data:`MAX_GRID_CELLS_PER_IMAGE_PIXEL`) instead of allocating it."""
    h, w = level.shape
    pixels = level.n_images * h * w
    cells = grid.shape[0] * grid.shape[1]
    if cells > MAX_GRID_CELLS_PER_IMAGE_PIXEL * pixels:
        raise QualityError(
            f"round {round_name} failed: the cameras diverged (their footprints span {cells:.3g} grid cells, "
            f"{cells / pixels:.0f}x the images' {pixels:.3g} pixels)",
            "try: photos with more overlap, fewer photos, or another start (--set init.method=features or xcorr)",
        )


def batch_order(n_images: int, batch_size: int, generator: torch.Generator) -> list[Tensor]:
    """One epoch: a random permutation of the images cut into ``ceil(n / batch_size)`` near-equal batches."""
    perm = torch.randperm(n_images, generator=generator)
    n_batches = max(1, math.ceil(n_images / max(1, batch_size)))
    return [b for b in torch.tensor_split(perm, n_batches) if b.numel()]


def batch_stream(n_images: int, batch_size: int, generator: torch.Generator) -> Iterator[Tensor]:
    """Endless batches, epoch after epoch (see :func:`batch_order`); all images when the batch holds them."""
    while True:
        if batch_size <= 0 or batch_size >= n_images:
            yield torch.arange(n_images)
        else:
            yield from batch_order(n_images, batch_size, generator)


@dataclass
class BatchValues:
    """Where a batch lands and what it carries: ``grid_xy`` (B*P, 2) (differentiable), ``values``
    (B*P, 4) RGB after gain/bias and camera-centric height, ``heights`` (B, P)."""

    grid_xy: Tensor
    values: Tensor
    heights: Tensor
    weights: Tensor | None = None
    """(B*P,) splat weight of each sample (None = 1)."""


def batch_values(model: MesoModel, level: BatchedLevel, index: Tensor, grid: GridSpec) -> BatchValues:
    """Back-project the pixels of images ``index`` (RGB + height) into grid coordinates (Fig. 3).

    Args:
        model: the deformation model.
        level: the round's images.
        index: (B,) image indices.
        grid: the reconstruction grid.

    Returns:
        The batch's grid coordinates and values.
    """
    b = int(index.numel())
    idx = index.to(level.pixels.device)
    heights = model.heights(level.size_proxy(b), idx).reshape(b, -1)
    pts = model.object_points(level.uv, heights, idx)
    g = grid.to_grid(pts).reshape(-1, 2)
    rgb = model.pose.photometric(level.batch(idx), idx)
    values = torch.cat((rgb, heights.unsqueeze(-1)), dim=-1).reshape(-1, 4)
    weights = None
    if level.image_weights is not None:
        weights = level.image_weights[idx].repeat_interleave(heights.shape[1])
    return BatchValues(grid_xy=g, values=values, heights=heights, weights=weights)


@torch.no_grad()
def fill_reconstruction(
    model: MesoModel, level: BatchedLevel, recon: RunningReconstruction, batch_size: int
) -> RunningReconstruction:
    """Rebuild ``recon`` from every image, one batch at a time (equals the full-pass ``B`` of Eq. 9)."""
    recon.reset()
    n = level.n_images
    step = n if batch_size <= 0 else batch_size
    for start in range(0, n, step):
        idx = torch.arange(start, min(n, start + step))
        bv = batch_values(model, level, idx, recon.grid)
        recon.accumulate(bv.grid_xy, bv.values, bv.weights)
    return recon
