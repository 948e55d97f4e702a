"""Camera-centric height maps: directly optimised maps with total-variation regularisation.

A height model maps the images of one round to one height map per image, co-aligned with the image
(camera-centric), and exposes a regulariser. Part 2 of the engine adds a CNN reparameterisation with
the same interface (``forward(images) -> maps``, ``regularization() -> scalar``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from topograph.meso.functional.regularizers import total_variation


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
