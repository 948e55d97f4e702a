"""The grain (specimen) mask in the reference view, from the height map above the substrate plane.

Made for grains nobody drew: any size (10–80 % of the field), off-centre, touching the image border, several
grains in one field, on dark or bright substrates, at low contrast (those change how much of the field has a
height, not how the heights separate grain from substrate). A mask that covers almost nothing is refused
(:func:`implausible_mask`) instead of measuring a speck.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage

MIN_MASK_FRACTION = 0.01
"""A grain mask holding fewer than this fraction of the dense points is implausible (no metrics)."""


def grain_mask_from_height(
    height: np.ndarray, plane_noise: float, min_fraction: float = 0.02, keep_fraction: float = 0.1
) -> np.ndarray:
    """Grain = every connected region clearly above the substrate plane that is not a speck, holes filled.

    Unknown pixels (NaN: flanks at grazing view, rejected matches) are filled by a normalised Gaussian
    average of their known neighbours first, so that the speckled rim of a grain is not eaten away.
    Threshold: ``max(5 σ_substrate, min_fraction · h₉₉.₅)``. Regions are kept when they hold at least
    ``keep_fraction`` of the largest one and 0.1 % of the field (two grains in one field stay two grains;
    dust and noise blobs go). Holes are filled region by region (a grain touching the border keeps its
    border-open concavities).

    Args:
        height: (H, W) heights above the substrate plane, NaN unknown.
        plane_noise: robust σ of the substrate heights (0 when unknown).
        min_fraction: threshold as a fraction of the highest point.
        keep_fraction: smallest kept region relative to the largest.

    Returns:
        (H, W) bool mask.
    """
    valid = np.isfinite(height)
    if not valid.any():
        return valid
    w = valid.astype(np.float32)
    num = cv2.GaussianBlur(np.where(valid, height, 0).astype(np.float32), (0, 0), 3.0)
    den = cv2.GaussianBlur(w, (0, 0), 3.0)
    smooth = np.where(den > 0.05, num / np.maximum(den, 1e-6), np.nan)
    filled = np.where(valid, height, smooth)
    top = np.nanpercentile(height, 99.5)
    thr = max(5.0 * plane_noise, min_fraction * top)
    raw = np.nan_to_num(filled, nan=-np.inf) > thr
    lab, n = ndimage.label(raw)
    if n == 0:
        return raw
    sizes = np.asarray(ndimage.sum(raw, lab, index=np.arange(1, n + 1)))
    keep = sizes >= max(keep_fraction * sizes.max(), 1e-3 * raw.size)
    mask = np.isin(lab, 1 + np.flatnonzero(keep))
    return ndimage.binary_fill_holes(mask)


def implausible_mask(mask: np.ndarray, finite: np.ndarray, min_fraction: float = MIN_MASK_FRACTION) -> str | None:
    """One line when the mask selects under ``min_fraction`` of the dense points (grain metrics refused)."""
    n_dense = int(np.count_nonzero(finite))
    n_grain = int(np.count_nonzero(mask & finite))
    if n_dense == 0 or n_grain >= min_fraction * n_dense:
        return None
    return (
        f"grain metrics refused: the grain mask holds {n_grain} of {n_dense} dense points "
        f"({100.0 * n_grain / n_dense:.2f} % < {100.0 * min_fraction:g} %), which is no grain — check the relief "
        "sign (--relief), or give the grain with --mask"
    )
