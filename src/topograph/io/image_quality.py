"""Image-quality measures for a series: which images are out of focus compared with the others."""

from __future__ import annotations

import weakref
from collections.abc import Sequence

import cv2
import numpy as np

from topograph.types import SemImage

SHARPNESS_SMOOTHING_PX = 1.0
"""Gaussian σ applied before the Laplacian: pixel noise is suppressed ~8× in variance while a defocus of
≳ 1 px still lowers the measure (rendered grains: blur σ 1.0 / 1.5 / 2.0 px → 0.66 / 0.39 / 0.26 of a
sharp view; 2.5× more noise raises it only 1.5×)."""


def sharpness(pixels: np.ndarray, smoothing_px: float = SHARPNESS_SMOOTHING_PX) -> float:
    """Focus measure: variance of the Laplacian of the Gaussian-smoothed image over the variance of that
    image (the variance-of-Laplacian measure of Pech-Pacheco et al., ICPR 2000, made band-pass against
    noise and normalised against contrast). Larger is sharper; only ratios within a series are meaningful.
    """
    img = np.asarray(pixels, dtype=np.float32)
    if smoothing_px > 0:
        img = cv2.GaussianBlur(img, (0, 0), smoothing_px)
    contrast = float(img.var())
    if not np.isfinite(contrast) or contrast <= 0:
        return 0.0
    return float(cv2.Laplacian(img, cv2.CV_32F, ksize=3).var()) / contrast


_CACHE: dict[int, tuple[weakref.ref, float]] = {}
"""id(pixels) -> (weak reference to the array, its :func:`sharpness`): a series is checked and described
from the same arrays, and the measure costs two filters of every full-size image."""


def cached_sharpness(pixels: np.ndarray) -> float:
    """:func:`sharpness` of an array, computed once per array object (while it lives)."""
    hit = _CACHE.get(id(pixels))
    if hit is not None and hit[0]() is pixels:
        return hit[1]
    value = sharpness(pixels)
    key = id(pixels)
    _CACHE[key] = (weakref.ref(pixels, lambda _ref, key=key: _CACHE.pop(key, None)), value)
    return value


def relative_sharpness(images: Sequence[np.ndarray] | Sequence[SemImage]) -> np.ndarray:
    """:func:`sharpness` of every image divided by the series median (1 = typical of the series).

    ``images``: pixel arrays, or :class:`~topograph.types.SemImage` (whose pixels are measured once,
    :func:`cached_sharpness`).
    """
    s = np.array(
        [cached_sharpness(im.pixels) if isinstance(im, SemImage) else sharpness(im) for im in images], dtype=float
    )
    med = float(np.median(s)) if len(s) else 0.0
    return s / med if med > 0 else np.ones_like(s)


def blur_warnings(names: Sequence[str], relative: np.ndarray, min_ratio: float = 0.5) -> list[str]:
    """One warning per image whose relative sharpness is below ``min_ratio`` of the series median."""
    return [
        f"{name} is less sharp than the rest of the series ({r:.2f} of the median focus measure): "
        "refocus and retake it, or expect fewer matches and noisier heights from it"
        for name, r in zip(names, relative, strict=True)
        if r < min_ratio
    ]
