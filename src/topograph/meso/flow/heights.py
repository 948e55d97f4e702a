"""Camera-centric height maps measured from dense matches (the flow step before the height rounds).

With the cameras refined on the matches (:mod:`topograph.meso.flow.camera_refinement`), every match gives the
height of its pixel in closed form, ``h = a.b / b.b`` (:mod:`topograph.meso.flow.dense_matches`); the estimates
of all neighbours are averaged with weights ``|b|^2`` (the inverse variance of ``h`` for a flow error equal
in every pair), pixels no neighbour measured are filled from the nearest measurements, and the maps become
the start of the height model.

Gradient descent on the photometric loss grows heights slowly where the parallax is a few pixels (it only
sees the gradient of a blurred reference); this direct measurement starts the height rounds near the
answer, and the photometric round then refines poses and heights together.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace

import cv2
import numpy as np
import torch

from topograph.meso.config import FlowHeightConfig
from topograph.meso.flow.camera_refinement import refine_cameras
from topograph.meso.flow.dense_matches import FlowMatches, flow_matches, pair_geometry
from topograph.meso.models.camera import MesoModel

log = logging.getLogger("topograph")

ROBUST_PASSES = 1
"""Reweightings of the fusion (:func:`_reweighted`) after the plain weighted mean."""
ROBUST_PX = 0.5
"""Cauchy scale of a pair's parallax misfit to the fused map in those reweightings, flow pixels: a neighbour
whose flow a highlight, a clipped patch or a blurred photo pulled counts less than the pairs that agree."""


@dataclass
class FlowHeights:
    """Result of :func:`flow_heights`: ``heights`` (N, h, w) camera-centric heights in object units,
    ``weight`` (N, h, w) summed ``|b|^2`` of the valid estimates (0 = filled), ``pairs`` the image pairs
    used, ``seconds`` wall time."""

    heights: np.ndarray
    weight: np.ndarray
    pairs: list[tuple[int, int]]
    seconds: float
    n_matches: int = 0
    """Matches that passed the forward-backward and epipolar checks."""
    refinement: str = "skipped"
    """Outcome of the camera refinement on the matches: ``ok``, ``degenerate``, ``nan`` or ``skipped``."""

    @property
    def coverage(self) -> float:
        """Share of flow-grid pixels with at least one valid match."""
        return float((self.weight > 0).mean()) if self.weight.size else 0.0


@torch.no_grad()
def flow_heights(
    model: MesoModel,
    matches: FlowMatches,
    cfg: FlowHeightConfig | None = None,
    image_weights: np.ndarray | None = None,
) -> FlowHeights:
    """Camera-centric height maps of every image from its matches with the current cameras (closed-form
    height per match, fused with weights ``w_j |b|^2``, module docstring).

    Args:
        model: the deformation model with registered cameras (its heights are not used).
        matches: from :func:`flow_matches`.
        cfg: settings.
        image_weights: (N,) weight ``w_j`` of each image as a neighbour (None = 1): a blurred photo's flow
            is less precise, so a sharp image's map leans on its sharp neighbours.

    Returns:
        The fused height maps on the flow grid (object units, positive toward the camera).
    """
    cfg = cfg or FlowHeightConfig()
    t0 = time.perf_counter()
    n = model.n_images
    h, w = matches.shape
    ds = matches.uv[1, 0] - matches.uv[0, 0] if w > 1 else 1.0  # flow pixel in full-resolution pixels
    device = model.log_focal.device
    num = np.zeros((n, h * w), np.float64)
    den = np.zeros((n, h * w), np.float64)
    cell = float(torch.sqrt(model.camera_heights().mean() / model.focal()))  # object units per pixel
    used = []
    estimates: list[tuple[int, np.ndarray, np.ndarray, np.ndarray, float]] = []
    n_valid = 0
    for p in matches.pairs:
        if len(p.flat_index) == 0:
            continue
        uv_i = torch.as_tensor(matches.uv[p.flat_index], device=device)
        uv_j = torch.as_tensor(p.uv_j, device=device)
        k = len(p.flat_index)
        a, b = pair_geometry(
            model, uv_i, uv_j, torch.full((k,), p.i, device=device), torch.full((k,), p.j, device=device)
        )
        bb = (b * b).sum(1)
        hh = (a * b).sum(1) / bb.clamp_min(1e-12)
        perp = a - hh[:, None] * b
        epi = torch.linalg.norm(perp, dim=1) / (cell * ds)
        ok = ((epi < cfg.epipolar_threshold_px) & torch.isfinite(hh) & (bb > 0)).cpu().numpy()
        idx = p.flat_index[ok]
        w_j = 1.0 if image_weights is None else float(image_weights[p.j])
        est = (p.i, idx, hh.cpu().numpy()[ok].astype(np.float64), bb.cpu().numpy()[ok].astype(np.float64), w_j)
        num[p.i, idx] += w_j * est[3] * est[2]  # flat_index is unique within a pair
        den[p.i, idx] += w_j * est[3]
        estimates.append(est)
        n_valid += int(ok.sum())
        used.append((p.i, p.j))
    heights = np.zeros((n, h, w), np.float32)
    for i in range(n):
        heights[i] = fill_and_smooth(num[i].reshape(h, w), den[i].reshape(h, w), cfg)
    for _ in range(ROBUST_PASSES):
        heights, den = _reweighted(heights, estimates, ROBUST_PX * cell * ds, cfg)
    seconds = time.perf_counter() - t0
    log.info("heights from flow: %.0f %% of pixels measured, %.1f s", 100.0 * float((den > 0).mean()), seconds)
    weight = den.reshape(n, h, w).astype(np.float32)
    return FlowHeights(heights=heights, weight=weight, pairs=used, seconds=seconds, n_matches=n_valid)


def _reweighted(
    heights: np.ndarray,
    estimates: list[tuple[int, np.ndarray, np.ndarray, np.ndarray, float]],
    scale: float,
    cfg: FlowHeightConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """One reweighting of the fusion: every pair's estimate ``h`` of a pixel weighted by ``|b|^2`` times the
    Cauchy weight ``1 / (1 + (|b| (h - h0) / scale)^2)`` of its parallax misfit to the previous maps ``h0``."""
    n, hgt, wid = heights.shape
    num = np.zeros((n, hgt * wid), np.float64)
    den = np.zeros((n, hgt * wid), np.float64)
    flat = heights.reshape(n, -1)
    for i, idx, hh, bb, w_j in estimates:
        misfit = bb * (hh - flat[i, idx]) ** 2 / scale**2
        wgt = w_j * bb / (1.0 + misfit)
        num[i, idx] += wgt * hh
        den[i, idx] += wgt
    out = np.zeros_like(heights)
    for i in range(n):
        out[i] = fill_and_smooth(num[i].reshape(hgt, wid), den[i].reshape(hgt, wid), cfg)
    return out, den


def fill_and_smooth(num: np.ndarray, den: np.ndarray, cfg: FlowHeightConfig) -> np.ndarray:
    """Weighted mean ``num / den`` where measured, holes filled by normalised Gaussian smoothing, then a
    median filter (removes isolated flow outliers)."""
    valid = den > 0
    if not valid.any():
        return np.zeros(num.shape, np.float32)
    mean = np.where(valid, num / np.maximum(den, 1e-12), 0.0).astype(np.float32)
    if not valid.all():
        m = valid.astype(np.float32)
        filled = np.full(mean.shape, np.nan, np.float32)
        for sigma in (cfg.fill_sigma_px, 4 * cfg.fill_sigma_px):  # nearest data first; far away: the median
            blur_v = cv2.GaussianBlur(mean * m, (0, 0), sigma)
            blur_w = cv2.GaussianBlur(m, (0, 0), sigma)
            todo = np.isnan(filled) & (blur_w > 1e-3)
            filled[todo] = blur_v[todo] / blur_w[todo]
        filled[np.isnan(filled)] = float(np.median(mean[valid]))
        mean = np.where(valid, mean, filled).astype(np.float32)
    if cfg.median_px >= 3:
        mean = (
            cv2.medianBlur(mean, int(cfg.median_px) | 1) if cfg.median_px <= 5 else _median_large(mean, cfg.median_px)
        )
    return mean


def _median_large(img: np.ndarray, k: int) -> np.ndarray:
    from scipy.ndimage import median_filter

    return median_filter(img, size=int(k) | 1, mode="nearest").astype(np.float32)


def _resize_maps(maps: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    h, w = shape
    if maps.shape[1:] == (h, w):
        return maps.astype(np.float32)
    return np.stack([cv2.resize(m, (w, h), interpolation=cv2.INTER_AREA) for m in maps.astype(np.float32)])


def initialise_heights(model: MesoModel, measured: FlowHeights, iterations: int = 200, lr: float = 1e-2) -> float:
    """Start the model's height maps at the measured ones
    (:meth:`~topograph.meso.models.heights.HeightModel.start_from`: a CNN is fitted to them, weighted by
    where they were measured; explicit maps are set to them). Returns the RMS misfit of the start (object
    units; 0 for explicit maps)."""
    heights = model.heights
    target = torch.from_numpy(_resize_maps(measured.heights, heights.shape))[:, None]
    measured_mask = (measured.weight > 0).astype(np.float32)
    weight = torch.from_numpy(_resize_maps(measured_mask, heights.shape))[:, None] + 0.05
    return heights.start_from(target, weight, iterations, lr)


def measure_heights(
    model: MesoModel, pixels: np.ndarray, cfg: FlowHeightConfig, seed: int = 0, image_weights: np.ndarray | None = None
) -> FlowHeights:
    """Dense matches -> cameras refined on them -> heights (``cfg.passes`` times matches and refinement: a
    second pass warps with the refined cameras, so its flow starts closer and keeps more matches);
    ``image_weights`` as in :func:`flow_heights`."""
    refinement = "skipped"
    for k in range(max(1, int(cfg.passes))):
        matches = flow_matches(model, pixels, cfg)
        if cfg.refine_iterations > 0:
            result = refine_cameras(
                model,
                matches,
                cfg.refine_iterations,
                cfg.refine_matches_per_pair,
                cfg.refine_max_matches,
                flat_weight=cfg.flat_weight,
                seed=seed + k,
            )
            if result.status != "skipped":  # a pass without matches keeps the previous pass's outcome
                refinement = result.status
    return replace(flow_heights(model, matches, cfg, image_weights), refinement=refinement)
