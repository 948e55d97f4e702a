"""The images' noise level as the dense flow sees it (after its contrast stretch).

Immerkær's estimator: the response ``r = I * N`` to the second-difference kernel
``N = [[1, −2, 1], [−2, 4, −2], [1, −2, 1]]`` vanishes on locally linear intensity and has standard deviation
``6 σ`` (``‖N‖₂ = 6``) on white noise of standard deviation ``σ``. Taken robustly,
``σ = 1.4826 · median |r| / 6``, so that edges and texture contribute little.

Reference:
    J. Immerkær, "Fast Noise Variance Estimation", Computer Vision and Image Understanding 64(2), 1996.
"""

from __future__ import annotations

import cv2
import numpy as np

_KERNEL = np.array([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]], dtype=np.float32)


def noise_sigma(image: np.ndarray) -> float:
    """Robust Immerkær noise standard deviation of a (H, W) image, in its own grey units."""
    img = np.asarray(image, dtype=np.float32)
    r = cv2.filter2D(img, cv2.CV_32F, _KERNEL, borderType=cv2.BORDER_REFLECT)[1:-1, 1:-1]
    return 1.4826 * float(np.median(np.abs(r))) / 6.0


def stretched_noise_grey(image: np.ndarray, percent: float = 0.5) -> float:
    """Noise standard deviation in the 8-bit grey levels of the flow's percentile contrast stretch
    (``percent`` and ``100 − percent`` percentiles → 0 and 255): ``255 σ / (p_hi − p_lo)``."""
    img = np.asarray(image, dtype=np.float32)
    lo, hi = np.percentile(img[::2, ::2], [percent, 100.0 - percent])
    return 255.0 * noise_sigma(img) / max(float(hi - lo), 1e-12)


FLOW_SMOOTHNESS_NOISE_GREY = 5.0
"""The noise (grey levels after the stretch) at which the default flow smoothness was chosen: the rendered
grains' σ 0.02 at full contrast (estimated 5.0); real series measure 6–8 (quartz 6.2–6.5, the DSA grain
6.9–8.0, a Zeiss fixture 8.2)."""
NOISY_IMAGE_MIN_GREY = 10.0
"""From this noise on (grey levels after the stretch) the flow's smoothness follows the noise."""
MAX_SMOOTHNESS_FACTOR = 32.0
"""Largest factor on the flow's smoothness."""


def noise_adapted_smoothness(alpha: float, noise_grey: float) -> float:
    """The flow's variational smoothness weight for images of stretched noise ``noise_grey``.

    The smoothness term balances a data term whose noise variance grows with ``σ²``, so the weight that
    keeps the same balance is ``α (σ / σ₀)²`` (σ₀ = :data:`FLOW_SMOOTHNESS_NOISE_GREY`, at most
    :data:`MAX_SMOOTHNESS_FACTOR` times ``α``). Applied only from :data:`NOISY_IMAGE_MIN_GREY` on: below it
    (every real series measured, full-contrast renders) ``alpha`` unchanged, so textured series keep
    their detail. The 1024-px low-contrast render (σ ≈ 13.8): ×7.6; its flow error along the epipolar line
    0.411 → 0.387 px at ×8, its cloud's RMS 0.275 → 0.253 % of D (docs/benchmarks.md, issue 16, session 14).
    """
    if not noise_grey >= NOISY_IMAGE_MIN_GREY:
        return float(alpha)
    factor = min((noise_grey / FLOW_SMOOTHNESS_NOISE_GREY) ** 2, MAX_SMOOTHNESS_FACTOR)
    return float(alpha) * factor
