"""The instrument's data bar: the strip of text and scale bar that SEMs burn into the bottom of an image.

Priority for how many rows to remove: an explicit crop (rows or a box) > the rows stated by the
metadata > automatic detection (:func:`detect_data_bar`).

Automatic detection looks at row statistics. A data-bar row is *flat*: most of its pixels share one
level (the bar background, or a full-width separator line), with a minority of text pixels. SEM image
rows are not: noise and texture spread their levels. The bar is the run of flat rows at the bottom that
starts with a hard edge (a full-width line or a jump in the row level) below rows that are not flat.
If the image above is itself flat (e.g. a black frame), the bar cannot be told apart and nothing is
detected.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from topograph.errors import TopographError

logger = logging.getLogger("topograph")


@dataclass(frozen=True)
class CropBox:
    """A region to keep: rows ``top:bottom`` and columns ``left:right`` (pixel indices, end exclusive)."""

    top: int
    bottom: int
    left: int
    right: int


@dataclass(frozen=True)
class DataBarDetectorConfig:
    """Thresholds of :func:`detect_data_bar`.

    Attributes:
        level_tolerance: levels (of 255) within which a pixel counts as the row's dominant level.
        flat_fraction: a row is flat when at least this fraction of its pixels is at its dominant level.
        edge_fraction: a full-width line (the bar's top edge) has at least this fraction at one level.
        edge_jump: or the row mean jumps by at least this much (in [0, 1]) into the bar.
        above_rows: how many rows above the bar must look like an image (not flat).
        above_flat_max: the mean flatness of those rows must stay below this.
        max_height_fraction: the bar is searched only in this bottom fraction of the image.
        max_gap: non-flat rows tolerated inside the bar (dense text lines).
    """

    level_tolerance: int = 3
    flat_fraction: float = 0.5
    edge_fraction: float = 0.9
    edge_jump: float = 0.25
    above_rows: int = 16
    above_flat_max: float = 0.35
    max_height_fraction: float = 0.3
    max_gap: int = 2


def row_flatness(pixels: np.ndarray, level_tolerance: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Per-row dominant level and the fraction of pixels at it.

    Args:
        pixels: (H, W) float image in [0, 1].
        level_tolerance: pixels within ± this many levels (of 255) of the mode count as dominant.

    Returns:
        ``(mode, fraction)``: (H,) int dominant level in 0..255 and (H,) float fraction in [0, 1].
    """
    q = np.clip(np.rint(np.asarray(pixels, dtype=np.float64) * 255.0), 0, 255).astype(np.int64)
    h = q.shape[0]
    # histogram per row: counts[r, v], then the count within ±tolerance of every level (box sum)
    counts = np.bincount((np.arange(h)[:, None] * 256 + q).ravel(), minlength=h * 256).reshape(h, 256)
    csum = np.concatenate([np.zeros((h, 1), dtype=np.int64), np.cumsum(counts, axis=1)], axis=1)
    levels = np.arange(256)
    hi = np.minimum(levels + level_tolerance + 1, 256)
    lo = np.maximum(levels - level_tolerance, 0)
    smoothed = csum[:, hi] - csum[:, lo]
    mode = smoothed.argmax(axis=1)
    fraction = smoothed[np.arange(h), mode] / float(q.shape[1])
    return mode, fraction


def detect_data_bar(pixels: np.ndarray, config: DataBarDetectorConfig | None = None) -> int:
    """Number of bottom rows that hold an instrument data bar (0 when none is found).

    Args:
        pixels: (H, W) float image in [0, 1] (uncropped).
        config: detection thresholds.

    Returns:
        Rows to remove from the bottom, counted from the bar's top edge.
    """
    cfg = config or DataBarDetectorConfig()
    img = np.asarray(pixels)
    h = img.shape[0]
    if h < 2 * cfg.above_rows:
        return 0
    lowest = max(h - int(cfg.max_height_fraction * h), cfg.above_rows)
    first = lowest - cfg.above_rows
    _, frac_band = row_flatness(img[first:], cfg.level_tolerance)
    frac = np.zeros(h)
    frac[first:] = frac_band
    flat = frac >= cfg.flat_fraction
    # walk up the run of flat rows, tolerating short gaps (dense text lines, a stray last image row)
    top: int | None = None
    gap = 0
    for r in range(h - 1, lowest - 1, -1):
        if flat[r]:
            top, gap = r, 0
        else:
            gap += 1
            if gap > cfg.max_gap:
                break
    if top is None:
        return 0
    if top <= lowest:
        logger.debug("data bar: flat rows reach the search limit; no bar detected")
        return 0
    # the bar starts at the first hard edge (full-width line or level jump) from the top of the run
    row_mean = np.zeros(h)
    row_mean[first:] = img[first:].mean(axis=1, dtype=np.float64)
    edge = None
    for cand in range(top, h):
        jump = abs(row_mean[cand] - row_mean[cand - 1])
        if frac[cand] >= cfg.edge_fraction or jump >= cfg.edge_jump:
            edge = cand
            break
    if edge is None:
        logger.debug("data bar: flat bottom rows from %d have no hard top edge; no bar detected", top)
        return 0
    above = frac[max(edge - cfg.above_rows, 0) : edge]
    if above.mean() >= cfg.above_flat_max:
        logger.debug(
            "data bar: the image above row %d is flat too (%.2f); cannot tell the bar apart", edge, above.mean()
        )
        return 0
    return int(h - edge)


def apply_crop(pixels: np.ndarray, rows: int = 0, box: CropBox | None = None) -> np.ndarray:
    """Remove ``rows`` bottom rows, or keep only ``box``.

    Args:
        pixels: (H, W) image.
        rows: rows to remove from the bottom (ignored when ``box`` is given).
        box: region to keep.

    Returns:
        The cropped (H', W') view.

    Raises:
        TopographError: the crop leaves no pixels or the box lies outside the image.
    """
    h, w = pixels.shape[:2]
    if box is not None:
        if not (0 <= box.top < box.bottom <= h and 0 <= box.left < box.right <= w):
            raise TopographError(
                f"crop box {box} does not fit an image of {w}x{h} px",
                "give top < bottom ≤ rows and left < right ≤ columns",
            )
        return pixels[box.top : box.bottom, box.left : box.right]
    if rows < 0 or rows >= h:
        raise TopographError(f"cannot crop {rows} rows from an image of {h} rows", "give 0 ≤ crop rows < image rows")
    return pixels[: h - rows] if rows else pixels


def choose_crop_rows(
    images: list[np.ndarray],
    names: list[str],
    metadata_rows: list[int | None],
    crop_rows: int | None = None,
    auto: bool = True,
    config: DataBarDetectorConfig | None = None,
) -> tuple[int, str]:
    """One data-bar height for a whole series (images of one size must stay one size).

    Args:
        images: (H, W) float images in [0, 1], all of one size.
        names: image names for the log.
        metadata_rows: data-bar rows stated by each image's metadata (``None`` = unknown).
        crop_rows: explicit rows to remove; overrides everything.
        auto: detect the bar from the pixels when the metadata does not state it.
        config: detection thresholds.

    Returns:
        ``(rows, how)`` with ``how`` in ``"explicit"``, ``"metadata"``, ``"detected"``, ``"none"``.
    """
    if crop_rows is not None:
        logger.info("cropping %d bottom rows from every image (explicit crop)", crop_rows)
        return int(crop_rows), "explicit"
    known = [r for r in metadata_rows if r is not None]
    if known:
        rows = max(known)
        if len(set(known)) > 1 or len(known) < len(metadata_rows):
            logger.warning(
                "metadata data-bar heights differ across the series (%s); cropping %d rows", metadata_rows, rows
            )
        if rows:
            logger.info("cropping the %d-row data bar stated in the metadata", rows)
        return rows, "metadata"
    if not auto:
        return 0, "none"
    detected = [detect_data_bar(im, config) for im in images]
    rows = max(detected) if detected else 0
    if rows == 0:
        logger.debug("no data bar detected")
        return 0, "none"
    if max(detected) - min(detected) > 2:
        logger.warning(
            "data bar detected with different heights (%s); cropping %d rows from every image",
            ", ".join(f"{n}: {d}" for n, d in zip(names, detected, strict=True)),
            rows,
        )
    logger.info("detected a %d-row data bar at the bottom; cropping it (set crop rows to override)", rows)
    return rows, "detected"
