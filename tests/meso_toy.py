"""A tiny flat scene imaged by the engine's own camera model (exact truth, renders in milliseconds).

A smooth random RGB texture lies on the object plane (one texel per object unit). Each image samples it
where the true model back-projects the image's pixels (no distortion, no tilt, height 0), so the true
camera positions are known exactly. Used by the batching, robustness and resume tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import pytest
import torch

from topograph.meso.engine import pixel_coordinates
from topograph.meso.functional.splat import sample_bilinear
from topograph.meso.models.camera import MesoModel
from topograph.meso.models.distortion import NoDistortion
from topograph.meso.models.heights import HeightMaps


@pytest.fixture
def one_thread():
    """Run a test with one torch thread (tiny tensors: thread hand-offs cost more than they save)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@dataclass
class ToyScene:
    pixels: np.ndarray
    """(N, H, W, 3) uint8."""
    positions: np.ndarray
    """(N, 2) true camera positions, object units (one unit = one image pixel)."""
    size: tuple[int, int]
    focal_px: float


def make_model(n: int, size: tuple[int, int], focal_px: float, positions: np.ndarray | None = None) -> MesoModel:
    """A model with no distortion and directly optimised height maps (all zero)."""
    pos = None if positions is None else torch.as_tensor(positions, dtype=torch.float32)
    return MesoModel(n, focal_px, NoDistortion(size), HeightMaps(n, size, 4), positions=pos)


def toy_scene(n_cols: int = 3, n_rows: int = 2, size: tuple[int, int] = (64, 48), step: float = 14.0, seed: int = 0):
    """Render ``n_cols x n_rows`` overlapping images of a flat textured plane.

    Returns:
        A :class:`ToyScene`.
    """
    rng = np.random.default_rng(seed)
    w, h = size
    focal = 100.0
    pos = np.array([[(c - (n_cols - 1) / 2) * step, (r - (n_rows - 1) / 2) * step] for r in range(n_rows) for c in range(n_cols)])
    pos += rng.normal(0.0, 1.5, pos.shape)
    tw, th = int(w + step * n_cols + 40), int(h + step * n_rows + 40)
    tex = np.stack([cv2.GaussianBlur(rng.standard_normal((th, tw)).astype(np.float32), (0, 0), 1.8) for _ in range(3)])
    tex = 0.5 + 0.18 * tex / tex.std()
    model = make_model(len(pos), size, focal, pos)
    uv = pixel_coordinates(size, (h, w))
    with torch.no_grad():
        pts = model.object_points(uv)  # (N, P, 2), object units centred on 0
        grid_xy = pts + torch.tensor([tw / 2.0, th / 2.0])
        imgs = [sample_bilinear(torch.from_numpy(tex), g).reshape(h, w, 3).numpy() for g in grid_xy]
    pixels = np.clip(np.round(np.stack(imgs) * 255.0), 0, 255).astype(np.uint8)
    return ToyScene(pixels=pixels, positions=pos, size=size, focal_px=focal)
