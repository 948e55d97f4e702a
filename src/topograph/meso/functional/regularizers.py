"""Regularisers on camera-centric height maps (pure torch)."""

from __future__ import annotations

import torch
from torch import Tensor


def total_variation(maps: Tensor, eps: float = 1e-8) -> Tensor:
    """Isotropic total variation, mean over pixels (supplement Eq. 7, normalised by the pixel count).

    ``TV(h) = mean_{x,y} sqrt(|d_x h|^2 + |d_y h|^2)`` with forward finite differences.

    Args:
        maps: (N, C, H, W) maps (H, W >= 2).
        eps: smoothing inside the square root (keeps the gradient finite on flat areas).

    Returns:
        () the mean isotropic TV.
    """
    dx = maps[..., :-1, 1:] - maps[..., :-1, :-1]
    dy = maps[..., 1:, :-1] - maps[..., :-1, :-1]
    return torch.sqrt(dx * dx + dy * dy + eps).mean()
