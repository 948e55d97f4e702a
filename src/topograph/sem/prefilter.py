"""Denoising of noisy SEM images before the dense flow, in proportion to their measured noise.

The flow sees the images after a percentile contrast stretch to 8 bits (:mod:`topograph.matching.dense`); at
low contrast the detector noise is then ``σ`` grey levels (:func:`topograph.sem.image_noise.
stretched_noise_grey`). Non-local means (Buades, Coll, Morel 2005) averages pixels whose surrounding patches
look alike, with weights ``exp(−max(d² − 2σ², 0) / h²)`` (``d²`` the patches' mean squared difference), so
unlike a Gaussian blur it keeps texture that repeats nowhere else only where ``h`` is small against the
texture's own contrast. The filter strength follows the noise: ``h = k σ``.

Reference:
    A. Buades, B. Coll, J.-M. Morel, "A non-local algorithm for image denoising", CVPR 2005.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING

import cv2
import numpy as np

from topograph.sem.image_noise import (
    NOISY_IMAGE_MIN_GREY,
    noise_adapted_smoothness,
    noise_sigma,
    stretched_noise_grey,
)

if TYPE_CHECKING:
    from topograph.matching.config import DenseConfig as FlowConfig
    from topograph.types import ImageSet

log = logging.getLogger("topograph")


def stretch_limits(image: np.ndarray, percent: float = 0.5) -> tuple[float, float]:
    """Grey values of the ``percent`` and ``100 − percent`` percentiles (every other row and column)."""
    lo, hi = np.percentile(np.asarray(image, dtype=np.float32)[::2, ::2], [percent, 100.0 - percent])
    return float(lo), float(max(hi, lo + 1e-6))


def nlm_denoise(
    image: np.ndarray, h_factor: float, limits: tuple[float, float], template_px: int = 7, search_px: int = 21
) -> np.ndarray:
    """Non-local means of a float (H, W) image with strength ``h = h_factor · σ`` (σ: the image's Immerkær noise
    in the 8-bit grey levels of ``limits`` → 0…255). Returns float32 in the image's own units (values beyond
    ``limits`` are clipped to them, as the flow's stretch does)."""
    lo, hi = limits
    u8 = np.clip((np.asarray(image, dtype=np.float32) - lo) * (255.0 / (hi - lo)), 0, 255).round().astype(np.uint8)
    sigma = noise_sigma(u8.astype(np.float32))
    out = cv2.fastNlMeansDenoising(u8, None, float(h_factor * sigma), int(template_px), int(search_px))
    return (out.astype(np.float32) * np.float32((hi - lo) / 255.0) + np.float32(lo)).astype(np.float32)


FLOW_DENOISE_H_FACTOR = 0.8
"""Non-local-means strength before the flow, as a multiple of the stretched noise σ. On the 1024-px
low-contrast render (σ 13.8 grey levels, smoothness already ×7.6) the flow's error along the epipolar line,
reference → 5° neighbour: none 0.380 px RMS, k 0.5 0.391, 0.7 0.373, 0.8 0.355, 0.9 0.363, 1.2 0.407
(docs/benchmarks.md, issue 16, session 15)."""


def denoised_for_flow(
    pixels: list[np.ndarray], reference: int, noise_grey: float, min_noise_grey: float, percent: float = 0.5
) -> list[np.ndarray]:
    """The series' images as the dense flow should see them: unchanged below ``min_noise_grey`` (stretched
    noise of the reference image, :func:`topograph.sem.image_noise.stretched_noise_grey`), else each one
    denoised by :func:`nlm_denoise` (``h`` = :data:`FLOW_DENOISE_H_FACTOR` σ) in the reference image's
    stretch."""
    if not noise_grey >= min_noise_grey or FLOW_DENOISE_H_FACTOR <= 0:
        return pixels
    limits = stretch_limits(pixels[reference], percent)
    return [nlm_denoise(p, FLOW_DENOISE_H_FACTOR, limits) for p in pixels]


def noise_adapted_flow_inputs(
    flow_cfg: FlowConfig, images: ImageSet, reference: int
) -> tuple[FlowConfig, list[np.ndarray]]:
    """The dense stage's flow settings and the pixels of every view for its flows, adapted to the reference
    image's noise after the flow's contrast stretch (:func:`topograph.sem.image_noise.stretched_noise_grey`,
    estimated once): from :data:`topograph.sem.image_noise.NOISY_IMAGE_MIN_GREY` on, the smoothness
    :func:`topograph.sem.image_noise.noise_adapted_smoothness` and the images :func:`denoised_for_flow`;
    below it (every real series measured, full-contrast renders) both unchanged."""
    pixels = [images[f].pixels for f in range(len(images))]
    noise = stretched_noise_grey(pixels[reference], flow_cfg.stretch_percent)
    alpha = noise_adapted_smoothness(flow_cfg.variational_refinement_alpha, noise)
    if alpha != flow_cfg.variational_refinement_alpha:
        # the variational iterations stay at 5: 20 lowered the flow's error by 7 % (one pair, 1024 px) but not
        # the cloud's (low contrast 1024 px: RMS 0.249 → 0.252 % of D, coverage 97.9 → 97.1 %, +35 CPU-s; session 15)
        log.info(
            "dense flow: noisy images (σ %.1f grey levels), smoothness %.0f instead of %.0f",
            noise,
            alpha,
            flow_cfg.variational_refinement_alpha,
        )
        flow_cfg = replace(flow_cfg, variational_refinement_alpha=alpha)
    out = denoised_for_flow(pixels, reference, noise, NOISY_IMAGE_MIN_GREY, flow_cfg.stretch_percent)
    if out is not pixels:
        log.info("dense flow: non-local means h %.1f grey levels before the flow", FLOW_DENOISE_H_FACTOR * noise)
    return flow_cfg, out
