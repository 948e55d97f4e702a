"""Camera-centric height models: the :class:`HeightModel` protocol and explicit maps with total variation.

A height model maps the images of one round to one height map per image, co-aligned with the image
(camera-centric), and exposes a regulariser. Two implement :class:`HeightModel`: :class:`HeightMaps`
(explicit maps, TV-regularised) and :class:`topograph.meso.models.cnn.HeightCNN` (an untrained network,
paper Sec. 3.3). The engine talks to either through the protocol only.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from topograph.meso.config import HeightConfig
from topograph.meso.functional.regularizers import total_variation


class HeightModel(Protocol):
    """What the engine needs of a camera-centric height model (heights in object units, positive toward
    the camera)."""

    def __call__(self, images: Tensor, index: Tensor | None = None) -> Tensor:
        """(N, 1, H, W) heights at the size of ``images`` (N, C, H, W; only the size is read)."""
        ...

    def regularization(self) -> Tensor:
        """The height regulariser (weighted by ``loss.tv_weight``)."""
        ...

    def groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters by group (``height``)."""
        ...

    @property
    def shape(self) -> tuple[int, int]:
        """``(h, w)`` of the stored maps (:attr:`maps`)."""
        ...

    @property
    def maps(self) -> Tensor:
        """(N, 1, h, w) current heights at the model's own resolution (no gradient)."""
        ...

    def set_maps(self, maps: Tensor) -> None:
        """Make the heights equal ``maps`` (N, 1, h, w) (a gauge change; see :mod:`topograph.meso.gauge`)."""
        ...

    def prepare(self, pixels: np.ndarray) -> None:
        """Called once with the (N, H, W, 3) uint8 images before the rounds."""
        ...

    def start_from(self, target: Tensor, weight: Tensor, iterations: int, lr: float) -> float:
        """Start at measured maps ``target`` (N, 1, h, w) with confidence ``weight``; returns the RMS misfit
        of the start (object units)."""
        ...

    def learning_rate(self, cfg: HeightConfig, default: float) -> float:
        """Adam rate of the ``height`` group (``default``: the configured ``lr.height``)."""
        ...

    def step_bytes_per_image(self) -> float:
        """Working memory of one image in a step that trains the heights, beyond the pixels' own."""
        ...

    def describe(self, cfg: HeightConfig, tv_weight: float) -> str:
        """One line for the log."""
        ...


class HeightMaps(nn.Module):
    """Per-image height maps stored at ``image size / downsample``, upsampled bilinearly on use.

    Heights are in object units (the unit of the camera heights ``Z``), positive toward the camera.
    """

    def __init__(self, n_images: int, image_size: tuple[int, int], downsample: int = 4) -> None:
        super().__init__()
        w, h = image_size
        self.maps = nn.Parameter(torch.zeros(n_images, 1, max(2, round(h / downsample)), max(2, round(w / downsample))))

    def forward(self, images: Tensor, index: Tensor | None = None) -> Tensor:
        """Height maps at the size of ``images``.

        Args:
            images: (N, C, H, W) images of this round (only their size is used here).
            index: optional (N,) image indices when ``images`` is a subset.

        Returns:
            (N, 1, H, W) camera-centric heights.
        """
        maps = self.maps if index is None else self.maps[index]
        size = images.shape[-2:]
        if tuple(maps.shape[-2:]) == tuple(size):
            return maps
        return F.interpolate(maps, size=tuple(size), mode="bilinear", align_corners=False)

    def regularization(self) -> Tensor:
        """Mean isotropic total variation of the stored maps (supplement Eq. 7)."""
        return total_variation(self.maps)

    def groups(self) -> dict[str, list[nn.Parameter]]:
        return {"height": [self.maps]}

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.maps.shape[-2]), int(self.maps.shape[-1]))

    @torch.no_grad()
    def set_maps(self, maps: Tensor) -> None:
        self.maps.copy_(maps.to(self.maps.device).reshape(self.maps.shape))

    def prepare(self, pixels: np.ndarray) -> None:
        """Nothing to prepare: explicit maps do not read the images."""

    def start_from(self, target: Tensor, weight: Tensor, iterations: int, lr: float) -> float:
        """The maps are set to ``target`` (exact start: misfit 0)."""
        self.set_maps(target)
        return 0.0

    def learning_rate(self, cfg: HeightConfig, default: float) -> float:
        return default

    def step_bytes_per_image(self) -> float:
        return 0.0

    def describe(self, cfg: HeightConfig, tv_weight: float) -> str:
        return f"maps with total variation (weight {tv_weight:g})"
