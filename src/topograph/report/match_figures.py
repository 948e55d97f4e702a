"""Diagnostic figures of the matching stage: a pair's correspondences and the match-count matrix.

Both writers take plain arrays (not live pipeline objects) and write image files atomically (PNG, or JPEG
by the file's suffix).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from topograph.io.atomic import atomic_path
from topograph.types import Matches

log = logging.getLogger("topograph")

_INLIER_BGR = (60, 200, 60)
_OUTLIER_BGR = (50, 50, 230)
_UNKNOWN_BGR = (0, 200, 255)


def _as_bgr(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim != 2:
        raise ValueError(f"images must be 2-D (H, W), got shape {img.shape}")
    if np.issubdtype(img.dtype, np.floating):
        img = np.clip(np.nan_to_num(img.astype(np.float32)) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    else:
        img = np.clip(img, 0, 255).astype(np.uint8)
    return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)


def select_lines(n: int, max_lines: int, inlier_mask: np.ndarray | None, seed: int = 0) -> np.ndarray:
    """Indices of at most ``max_lines`` of ``n`` matches, drawn without replacement.

    With an inlier mask, inliers and outliers are drawn in proportion to their counts (each class keeps at
    least one line when present), so the figure shows the real outlier rate.
    """
    rng = np.random.default_rng(seed)
    if n <= max_lines:
        return np.arange(n)
    if inlier_mask is None:
        return np.sort(rng.choice(n, size=max_lines, replace=False))
    inl = np.flatnonzero(inlier_mask)
    out = np.flatnonzero(~inlier_mask)
    k_out = round(max_lines * out.size / n)
    k_out = min(out.size, max(k_out, 1 if out.size else 0))
    k_in = min(inl.size, max_lines - k_out)
    picks = [rng.choice(inl, size=k_in, replace=False), rng.choice(out, size=k_out, replace=False)]
    return np.sort(np.concatenate(picks))


def draw_matches(
    image_i: np.ndarray,
    image_j: np.ndarray,
    matches: Matches,
    path: str | os.PathLike[str],
    max_lines: int = 300,
    inlier_mask: np.ndarray | None = None,
    seed: int = 0,
    max_side_px: int = 1600,
) -> Path:
    """Write views i and j side by side with lines joining matched points.

    Lines are green for inliers and red for outliers when ``inlier_mask`` is given, amber otherwise.
    At most ``max_lines`` matches are drawn (see :func:`select_lines`); a caption band above the images
    gives the counts. Views are reduced so the side-by-side canvas is at most ``max_side_px`` wide (a
    diagnostic figure: keeps it quick to encode and small enough to embed in the report unchanged).

    Args:
        image_i: View i, (H, W) float in [0, 1] or uint8.
        image_j: View j, (H', W') float in [0, 1] or uint8.
        matches: Correspondences; ``xy_i`` in view i, ``xy_j`` in view j (px).
        path: Output image file (PNG recommended); written atomically.
        max_lines: Most lines drawn.
        inlier_mask: Optional (N,) bool, True for inliers.
        seed: Seed of the line subsampling.
        max_side_px: Longest side of the drawn views side by side, px (0: full resolution).

    Returns:
        ``path``.
    """
    a = _as_bgr(image_i)
    b = _as_bgr(image_j)
    zoom = 1.0
    side_by_side = max(a.shape[1] + b.shape[1], a.shape[0], b.shape[0])
    if max_side_px > 0 and side_by_side > max_side_px:
        zoom = max_side_px / side_by_side
        a = cv2.resize(
            a, (max(1, round(a.shape[1] * zoom)), max(1, round(a.shape[0] * zoom))), interpolation=cv2.INTER_AREA
        )
        b = cv2.resize(
            b, (max(1, round(b.shape[1] * zoom)), max(1, round(b.shape[0] * zoom))), interpolation=cv2.INTER_AREA
        )
    n = len(matches)
    mask = None
    if inlier_mask is not None:
        mask = np.asarray(inlier_mask, dtype=bool).reshape(-1)
        if mask.shape != (n,):
            raise ValueError(f"inlier_mask must have shape ({n},), got {mask.shape}")
    h = max(a.shape[0], b.shape[0])
    canvas = np.zeros((h, a.shape[1] + b.shape[1], 3), np.uint8)
    canvas[: a.shape[0], : a.shape[1]] = a
    canvas[: b.shape[0], a.shape[1] :] = b
    side = max(canvas.shape[:2])
    thickness = max(1, round(side / 1200))
    radius = max(2, round(side / 500))
    shift = 4  # sub-pixel drawing: coordinates in 1/16 px
    offset = np.array([a.shape[1], 0.0])
    for k in select_lines(n, max(int(max_lines), 0), mask, seed):
        colour = _UNKNOWN_BGR if mask is None else (_INLIER_BGR if mask[k] else _OUTLIER_BGR)
        # x_zoomed = (x + 0.5) · zoom − 0.5 keeps pixel centres aligned under INTER_AREA resizing.
        p = tuple(int(v) for v in np.round(((matches.xy_i[k] + 0.5) * zoom - 0.5) * (1 << shift)))
        q = tuple(int(v) for v in np.round((((matches.xy_j[k] + 0.5) * zoom - 0.5) + offset) * (1 << shift)))
        cv2.line(canvas, p, q, colour, thickness, cv2.LINE_AA, shift)
        cv2.circle(canvas, p, radius << shift, colour, thickness, cv2.LINE_AA, shift)
        cv2.circle(canvas, q, radius << shift, colour, thickness, cv2.LINE_AA, shift)
    caption = f"views {matches.i}-{matches.j}: {n} matches"
    if mask is not None:
        caption += f", {int(mask.sum())} inliers ({100.0 * mask.mean() if n else 0.0:.1f}%)"
    scale = max(0.5, side / 1600)
    (tw, th), base = cv2.getTextSize(caption, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    header = np.zeros((th + base + 12, canvas.shape[1], 3), np.uint8)
    cv2.putText(header, caption, (8, th + 6), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thickness, cv2.LINE_AA)
    canvas = np.vstack([header, canvas])
    out = Path(path)
    # Match figures are photographs with lines: JPEG keeps them readable at a tenth of the PNG size.
    params = [cv2.IMWRITE_JPEG_QUALITY, 85] if out.suffix.lower() in (".jpg", ".jpeg") else []
    with atomic_path(out) as tmp:
        if not cv2.imwrite(str(tmp), canvas, params):
            raise ValueError(f"OpenCV could not write an image with the suffix of {out.name}")
    log.debug("wrote %s (%d matches)", out, n)
    return out


def draw_match_count_matrix(counts: np.ndarray, names: Sequence[str], path: str | os.PathLike[str]) -> Path:
    """Write the (F, F) match-count matrix as an annotated heat map (viridis; drawn with OpenCV).

    Rows and columns are labelled by view index; a legend column lists the view names.

    Args:
        counts: (F, F) non-negative counts; entry (i, j) is the number of matches between views i and j.
        names: F view names (axis labels).
        path: Output image file (PNG recommended); written atomically.

    Returns:
        ``path``.
    """
    c = np.asarray(counts, dtype=float)
    if c.ndim != 2 or c.shape[0] != c.shape[1]:
        raise ValueError(f"counts must be a square (F, F) matrix, got shape {c.shape}")
    f = c.shape[0]
    if len(names) != f:
        raise ValueError(f"expected {f} names for a {f}×{f} matrix, got {len(names)}")
    cell = int(np.clip(640 // max(f, 1), 24, 72))
    font, fscale, white, black = cv2.FONT_HERSHEY_SIMPLEX, cell / 120.0, (255, 255, 255), (0, 0, 0)
    margin_top, margin_left = 60, 48
    legend_w = 16 + 9 * min(max((len(n) for n in names), default=1) + 5, 48)
    grid_w = cell * f
    height = max(margin_top + grid_w + 16, margin_top + 18 * f + 16)
    canvas = np.full((height, margin_left + grid_w + legend_w, 3), 255, np.uint8)
    finite = np.isfinite(c)
    vmax = float(np.max(c[finite])) if finite.any() and np.max(c[finite]) > 0 else 1.0
    level = np.clip(np.nan_to_num(c) / vmax * 255.0, 0, 255).astype(np.uint8)
    colours = cv2.applyColorMap(level, cv2.COLORMAP_VIRIDIS)
    cv2.putText(canvas, "matches per view pair (row i, column j)", (8, 22), font, 0.55, black, 1, cv2.LINE_AA)
    for i in range(f):
        y0 = margin_top + i * cell
        cv2.putText(canvas, str(i), (10, y0 + cell // 2 + 5), font, 0.45, black, 1, cv2.LINE_AA)
        cv2.putText(
            canvas, str(i), (margin_left + i * cell + cell // 2 - 5, margin_top - 8), font, 0.45, black, 1, cv2.LINE_AA
        )
        for j in range(f):
            x0 = margin_left + j * cell
            colour = tuple(int(v) for v in colours[i, j]) if finite[i, j] else (200, 200, 200)
            cv2.rectangle(canvas, (x0, y0), (x0 + cell - 1, y0 + cell - 1), colour, -1)
            if finite[i, j] and f <= 20:
                text = f"{c[i, j]:.0f}"
                (tw, th), _ = cv2.getTextSize(text, font, fscale, 1)
                ink = black if c[i, j] > 0.6 * vmax else white
                cv2.putText(
                    canvas, text, (x0 + (cell - tw) // 2, y0 + (cell + th) // 2), font, fscale, ink, 1, cv2.LINE_AA
                )
    for i, name in enumerate(names):
        label = f"{i}: {name}" if len(name) <= 44 else f"{i}: {name[:41]}..."
        cv2.putText(
            canvas, label, (margin_left + grid_w + 12, margin_top + 14 + 18 * i), font, 0.42, black, 1, cv2.LINE_AA
        )
    out = Path(path)
    with atomic_path(out) as tmp:
        if not cv2.imwrite(str(tmp), canvas):
            raise ValueError(f"OpenCV could not write an image with the suffix of {out.name}")
    log.debug("wrote %s", out)
    return out
