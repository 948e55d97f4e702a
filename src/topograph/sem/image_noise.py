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
