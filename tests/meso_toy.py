"""Tiny scenes imaged by the engine's own camera model (exact truth, render in milliseconds).

A smooth random RGB texture lies on the object plane (one texel per object unit). Each image samples it
where the true model back-projects the image's pixels (no distortion, no tilt), so the true camera
positions are known exactly. The scene is flat, or carries a relief ``H(x, y)`` (object units): a pixel
then sees the surface point ``X = R + (r_obj - R)(1 - H(X) / Z)`` (paper Eq. 5), solved by fixed-point
iteration. Used by the batching, robustness, resume and end-to-end tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
import pytest
import torch

from topograph.meso.functional.splat import sample_bilinear
from topograph.meso.init_features import PairLink
from topograph.meso.models.camera import MesoModel
from topograph.meso.models.distortion import NoDistortion
from topograph.meso.models.heights import HeightMaps
from topograph.meso.mosaic import pixel_coordinates
from topograph.meso.types import ExifInfo, MesoImages


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
    relief: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None
    """``H(x, y)``: surface height (object units, toward the camera) at object positions; None = flat."""

    def images(self) -> MesoImages:
        """The images with EXIF giving the true focal length (pitch 10 µm, focal ``focal_px / 100`` mm)."""
        exif = ExifInfo(focal_mm=self.focal_px * 0.01, pixel_pitch_um=10.0)
        names = tuple(f"toy_{i:02d}.png" for i in range(len(self.pixels)))
        return MesoImages(names, self.pixels, (exif,) * len(names))


def make_model(n: int, size: tuple[int, int], focal_px: float, positions: np.ndarray | None = None) -> MesoModel:
    """A model with no distortion and directly optimised height maps (all zero)."""
    pos = None if positions is None else torch.as_tensor(positions, dtype=torch.float32)
    return MesoModel(n, focal_px, NoDistortion(size), HeightMaps(n, size, 4), positions=pos)


def plateau_relief(height: float = 6.0, radius: float = 14.0, edge: float = 2.0, centre=(0.0, 0.0)):
    """A raised round plateau of ``height`` (soft edge of width ~``edge``) on a flat background."""

    def relief(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        r = np.hypot(x - centre[0], y - centre[1])
        return height / (1.0 + np.exp((r - radius) / edge))

    return relief


def toy_scene(
    n_cols: int = 3,
    n_rows: int = 2,
    size: tuple[int, int] = (64, 48),
    step: float = 14.0,
    seed: int = 0,
    relief: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
):
    """Render ``n_cols x n_rows`` overlapping images of a textured plane, flat or with ``relief``.

    Returns:
        A :class:`ToyScene` (object units: one texel = one image pixel at height 0; origin at the
        raster's centre).
    """
    rng = np.random.default_rng(seed)
    w, h = size
    focal = 100.0
    pos = np.array(
        [[(c - (n_cols - 1) / 2) * step, (r - (n_rows - 1) / 2) * step] for r in range(n_rows) for c in range(n_cols)]
    )
    pos += rng.normal(0.0, 1.5, pos.shape)
    tw, th = int(w + step * n_cols + 40), int(h + step * n_rows + 40)
    tex = np.stack([cv2.GaussianBlur(rng.standard_normal((th, tw)).astype(np.float32), (0, 0), 1.8) for _ in range(3)])
    tex = 0.5 + 0.18 * tex / tex.std()
    model = make_model(len(pos), size, focal, pos)
    uv = pixel_coordinates(size, (h, w))
    with torch.no_grad():
        pts = model.object_points(uv)  # (N, P, 2), object units centred on 0
        if relief is not None:
            rel = (pts - torch.as_tensor(pos, dtype=torch.float32)[:, None, :]).numpy().astype(float)
            base = pos[:, None, :]
            surface = np.zeros(rel.shape[:2])
            for _ in range(30):  # X = R + rel (1 - H(X) / Z)
                xy = base + rel * (1.0 - surface / focal)[..., None]
                surface = relief(xy[..., 0], xy[..., 1])
            pts = torch.as_tensor(base + rel * (1.0 - surface / focal)[..., None], dtype=torch.float32)
        grid_xy = pts + torch.tensor([tw / 2.0, th / 2.0])
        imgs = [sample_bilinear(torch.from_numpy(tex), g).reshape(h, w, 3).numpy() for g in grid_xy]
    pixels = np.clip(np.round(np.stack(imgs) * 255.0), 0, 255).astype(np.uint8)
    return ToyScene(pixels=pixels, positions=pos, size=size, focal_px=focal, relief=relief)


def fit_similarity(est: np.ndarray, true: np.ndarray) -> tuple[complex, complex]:
    """Least-squares similarity ``est ~ a * true + b`` of (N, 2) point sets, as complex numbers (the gauge:
    a global scale, in-plane rotation and shift are not observable)."""
    z_est, z_true = est[:, 0] + 1j * est[:, 1], true[:, 0] + 1j * true[:, 1]
    (a, b), *_ = np.linalg.lstsq(np.column_stack((z_true, np.ones_like(z_true))), z_est, rcond=None)
    return complex(a), complex(b)


def registration_rms(rec, scene: ToyScene) -> float:
    """RMS camera position error (object units) after the best similarity (:func:`fit_similarity`)."""
    est = rec.cameras.positions
    a, b = fit_similarity(est, scene.positions)
    pred = a * (scene.positions[:, 0] + 1j * scene.positions[:, 1]) + b
    return float(np.sqrt(np.mean(np.abs(pred - (est[:, 0] + 1j * est[:, 1])) ** 2)))


def height_errors(rec, scene: ToyScene) -> dict[str, float]:
    """Compare a reconstruction's height map with the scene's relief.

    The reconstruction's frame is related to the truth by a similarity (the gauge) fitted to the camera
    nadirs. Heights scale with the lateral unit; one global height offset (median) is removed.

    Returns:
        ``rms`` and ``mean_abs`` error after the offset, ``amplitude`` (truth range over the compared
        cells), ``plateau`` / ``background`` mean estimated heights where the truth is within 10 % of its
        maximum / below 1 % of it (offset removed, truth units), ``cells`` compared, ``scale`` fitted.
    """
    a, b = fit_similarity(rec.cameras.positions, scene.positions)
    g = rec.grid
    rows, cols = np.nonzero(np.isfinite(rec.height))
    z = ((g.origin[0] + g.cell * cols) + 1j * (g.origin[1] + g.cell * rows) - b) / a
    truth = scene.relief(z.real, z.imag)
    h = rec.height[rows, cols] / abs(a)
    offset = float(np.median(h - truth))
    err = h - offset - truth
    top = truth > 0.9 * truth.max()
    flat = truth < 0.01 * truth.max()
    return {
        "rms": float(np.sqrt(np.mean(err**2))),
        "mean_abs": float(np.mean(np.abs(err))),
        "amplitude": float(truth.max() - truth.min()),
        "plateau": float(np.mean(h[top] - offset)),
        "background": float(np.mean(h[flat] - offset)),
        "cells": int(err.size),
        "scale": float(abs(a)),
    }


def true_links(positions: np.ndarray, size: tuple[int, int]) -> tuple[PairLink, ...]:
    """Exact feature matches of every overlapping pair of a toy layout (unit scale, no tilt:
    ``u_j = u_i + p_i - p_j``), a 9 x 7 grid of keypoints per image, pairs with at least 8 inside both."""
    w, h = size
    u, v = np.meshgrid(np.linspace(4, w - 5, 9), np.linspace(4, h - 5, 7))
    grid = np.stack((u.ravel(), v.ravel()), 1)
    links = []
    for i in range(len(positions)):
        for j in range(i + 1, len(positions)):
            uj = grid + positions[i] - positions[j]
            inside = (uj[:, 0] >= 0) & (uj[:, 0] < w) & (uj[:, 1] >= 0) & (uj[:, 1] < h)
            if inside.sum() >= 8:
                links.append(PairLink(i, j, grid[inside], uj[inside], np.eye(3)))
    return tuple(links)
