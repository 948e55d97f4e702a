"""The feature tie term of the photometric rounds: the initialisation's inlier matches must stay matched.

On repetitive texture (crop rows, paper fibres, fabric) the photometric loss has a minimum every texture
period and, in the coarse rounds, almost no texture at all: measured on the real aerial series, the rounds
moved cameras from the feature solution (1.4 px median misfit) to 5-41 px, failing the registration gate.
The SIFT matches that linked the photos (:class:`topograph.meso.init_global.FeatureTies`) say where the
images really meet; a Cauchy term on their misfit keeps the cameras there unless the photometric
evidence is strong::

    L_tie = w mean_m s^2 log(1 + d_m^2 / s^2),   d_m = |X_i(u_m, h_i) - X_j(v_m, h_j)| / (rho_m sigma)

``X_k`` is the model's own back-projection of image ``k`` (orthorectified with its current camera-centric
heights, without gradient: the dense heights come from the flow step, a few keypoints should not bend
them), ``rho_m`` the mean relative scale of the two images (object units per image pixel), ``sigma`` the
keypoint noise in image pixels, so ``d_m`` is in keypoint-noise units and the term does not depend on the
input resolution. For ``d << s`` it is ``w mean d^2``; a match off by many ``s`` (a tree's parallax, a
false match) pulls with a force that decays like ``1 / d``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from topograph.meso.init_global import FeatureTies
from topograph.meso.models.camera import MesoModel


@dataclass(frozen=True)
class TieTensors:
    """:class:`FeatureTies` on the compute device: ``uv`` (2M, 2) the ``uv_i`` then the ``uv_j`` pixels,
    ``image`` (2M,) their images, ``noise_px`` the keypoint noise in pixels, ``image_size`` ``(W, H)``."""

    uv: Tensor
    image: Tensor
    noise_px: float
    image_size: tuple[int, int]

    @property
    def n_matches(self) -> int:
        return int(self.uv.shape[0]) // 2


def tie_tensors(ties: FeatureTies, image_size: tuple[int, int], device: torch.device | str = "cpu") -> TieTensors:
    """The ties as tensors (see :class:`TieTensors`)."""
    uv = torch.as_tensor(np.concatenate((ties.uv_i, ties.uv_j)).reshape(-1, 2), dtype=torch.float32, device=device)
    image = torch.as_tensor(np.concatenate((ties.image_i, ties.image_j)), dtype=torch.long, device=device)
    return TieTensors(uv, image, float(ties.noise_px), (int(image_size[0]), int(image_size[1])))


def _sample_heights(heights: Tensor, shape: tuple[int, int], uv: Tensor, image_size: tuple[int, int]) -> Tensor:
    """(B, P) bilinear samples of height maps ``heights`` (B, h*w) on the round's pixel grid ``shape`` at
    full-resolution pixels ``uv`` (P, 2) (the grid's pixel centres are those of
    :func:`topograph.meso.mosaic.pixel_coordinates`)."""
    h, w = shape
    big_w, big_h = image_size
    px = (uv[:, 0] + 0.5) * (w / big_w) - 0.5
    py = (uv[:, 1] + 0.5) * (h / big_h) - 0.5
    grid = torch.stack((2.0 * px / max(1, w - 1) - 1.0, 2.0 * py / max(1, h - 1) - 1.0), -1)
    b = heights.shape[0]
    out = F.grid_sample(
        heights.reshape(b, 1, h, w), grid.expand(b, -1, -1)[:, None], align_corners=True, padding_mode="border"
    )
    return out[:, 0, 0]


def tie_misfit(
    model: MesoModel,
    ties: TieTensors,
    index: Tensor,
    heights: Tensor | None = None,
    shape: tuple[int, int] | None = None,
) -> Tensor:
    """(K,) misfit ``d_m`` (keypoint-noise units, module docstring) of the ties whose two images are in
    the batch ``index``; ``heights`` (B, h*w) the batch's camera-centric heights on the round's pixel grid
    ``shape`` (None: the flat back-projection)."""
    m = ties.n_matches
    slot = torch.full((model.n_images,), -1, dtype=torch.long, device=ties.image.device)
    slot[index.to(ties.image.device)] = torch.arange(index.numel(), device=ties.image.device)
    where = slot[ties.image]
    keep = (where[:m] >= 0) & (where[m:] >= 0)
    if not bool(keep.any()):
        return torch.zeros(0, device=ties.uv.device)
    both = torch.cat((keep, keep))
    uv, b = ties.uv[both], where[both]
    k = int(keep.sum())
    h = None
    if heights is not None and shape is not None:
        h = _sample_heights(heights.detach(), shape, uv, ties.image_size)
    # every batch image back-projects every selected pixel (one vectorised call of the model's own map);
    # each match then reads its own image's row
    pts = model.object_points(uv, h, index)
    cols = torch.arange(2 * k, device=uv.device)
    xy = pts[b, cols]
    with torch.no_grad():
        rho = model.pose.relative_scale()[index][b]
        rho = 0.5 * (rho[:k] + rho[k:])
    return torch.linalg.norm(xy[:k] - xy[k:], dim=1) / (rho * ties.noise_px)


def tie_loss(misfit: Tensor, weight: float, scale: float) -> Tensor:
    """``w mean s^2 log(1 + d^2 / s^2)`` of the misfits ``d`` (module docstring; 0 without ties)."""
    if misfit.numel() == 0 or weight <= 0:
        return misfit.new_zeros(())
    return weight * (scale**2 * torch.log1p((misfit / scale) ** 2)).mean()
