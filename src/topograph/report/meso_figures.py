"""Figures of a mesoscopic reconstruction (matplotlib, object-oriented API, no global state)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from topograph.io.atomic import atomic_path


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=120)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, bbox_inches="tight")
    return path


def nice_length(target: float) -> float:
    """The largest 1, 2 or 5 x 10^k not above ``target`` (> 0)."""
    k = math.floor(math.log10(target))
    for m in (5.0, 2.0, 1.0):
        if m * 10**k <= target:
            return m * 10**k
    return 10.0 ** (k - 1) * 5.0


def height_figure(
    height: np.ndarray, pixel_size: float, lateral_unit: str, height_unit: str, path: Path, title: str = ""
) -> Path:
    """Colour-mapped height map with a colour bar and a scale bar.

    Args:
        height: (H, W) heights (NaN = no data).
        pixel_size: lateral size of one pixel in ``lateral_unit``.
        lateral_unit: e.g. "mm" (or "px" when unscaled).
        height_unit: e.g. "um".
        path: output PNG.
        title: figure title.
    """
    h, w = height.shape
    fig = _figure(8.0, 8.0 * h / max(w, 1) + 0.8)
    ax = fig.add_subplot(1, 1, 1)
    finite = height[np.isfinite(height)]
    lo, hi = np.percentile(finite, [1, 99]) if finite.size else (0.0, 1.0)
    im = ax.imshow(np.ma.masked_invalid(height), cmap="viridis", vmin=lo, vmax=hi, interpolation="nearest")
    cb = fig.colorbar(im, ax=ax, fraction=0.035, pad=0.02)
    cb.set_label(f"height ({'µm' if height_unit == 'um' else height_unit})")
    bar = nice_length(0.2 * w * pixel_size)
    bar_px = bar / pixel_size
    x0, y0 = 0.04 * w, 0.94 * h
    ax.plot([x0, x0 + bar_px], [y0, y0], color="white", linewidth=4, solid_capstyle="butt")
    ax.plot([x0, x0 + bar_px], [y0, y0], color="black", linewidth=1.5, solid_capstyle="butt")
    ax.text(
        x0 + bar_px / 2,
        y0 - 0.02 * h,
        f"{bar:g} {lateral_unit}",
        color="white",
        ha="center",
        va="bottom",
        fontsize=9,
        bbox={"facecolor": "black", "alpha": 0.5, "pad": 1, "edgecolor": "none"},
    )
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return _save(fig, path)


def loss_figure(levels: Sequence[str], loss: Sequence[float], mse_rgb: Sequence[float], path: Path) -> Path:
    """Loss (and its RGB part) per iteration, rounds marked: ``levels`` the round name of every iteration."""
    fig = _figure(7.0, 3.5)
    ax = fig.add_subplot(1, 1, 1)
    if len(levels):
        loss = np.asarray(loss, dtype=float)
        x = np.arange(len(loss))
        ax.semilogy(x, loss, label="total loss", linewidth=1)
        ax.semilogy(x, np.asarray(mse_rgb, dtype=float), label="MSE (RGB)", linewidth=1, alpha=0.7)
        level = None
        for i, name in enumerate(levels):
            if name != level:
                level = name
                ax.axvline(i, color="grey", linewidth=0.6, linestyle=":")
                ax.text(i, loss.max(), f" {level}", fontsize=7, va="top", rotation=90, color="grey")
        ax.legend(fontsize=8)
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    return _save(fig, path)


def distortion_figure(description: dict[str, Any], image_size: tuple[int, int], path: Path) -> Path:
    """The radial undistortion profile: magnification and radial displacement in pixels."""
    r = np.asarray(description["profile_radius_px"], dtype=float)
    m = np.asarray(description["profile_magnification"], dtype=float)
    r_corner = 0.5 * math.hypot(*image_size)
    fig = _figure(7.0, 3.2)
    ax1 = fig.add_subplot(1, 2, 1)
    ax1.plot(r, m, color="C0")
    ax1.axvline(r_corner, color="grey", linestyle=":", linewidth=0.8)
    ax1.set_xlabel("radius from centre (px)")
    ax1.set_ylabel("relative magnification M(r)")
    ax2 = fig.add_subplot(1, 2, 2)
    ax2.plot(r, (m - 1.0) * r, color="C1")
    ax2.axvline(r_corner, color="grey", linestyle=":", linewidth=0.8)
    ax2.set_xlabel("radius from centre (px)")
    ax2.set_ylabel("undistortion shift (px)")
    c = description.get("centre_px", [0, 0])
    fig.suptitle(f"{description.get('model', '')} distortion, centre ({c[0]:.1f}, {c[1]:.1f}) px", fontsize=9)
    return _save(fig, path)


def seam_figure(
    grey: np.ndarray, owner: np.ndarray, disagreement: np.ndarray, labels: Sequence[str], path: Path
) -> Path:
    """Two panels: the mosaic's grey values with the seams (borders between the images that own the cells,
    :class:`topograph.meso.quality.SeamMap`) and each image's label at its region's centre; and the
    disagreement of the overlapping images with the same seams (a misregistered image: bright bands)."""
    h, w = owner.shape
    seam = np.zeros_like(owner, dtype=bool)
    seen = owner >= 0
    seam[:, 1:] |= (owner[:, 1:] != owner[:, :-1]) & seen[:, 1:] & seen[:, :-1]  # between two images only
    seam[1:, :] |= (owner[1:, :] != owner[:-1, :]) & seen[1:, :] & seen[:-1, :]
    aspect = h / max(w, 1)
    fig = _figure(11.0, max(3.0, 5.2 * aspect + 0.8))
    axes = fig.subplots(1, 2)
    g = np.where(np.isfinite(grey), grey, np.nan)
    lo, hi = np.nanpercentile(g, [1, 99]) if np.isfinite(g).any() else (0.0, 1.0)
    axes[0].imshow(g, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
    over = np.zeros((h, w, 4))
    over[seam] = (1.0, 0.85, 0.0, 1.0)
    axes[0].imshow(over, interpolation="nearest")
    for k, label in enumerate(labels):
        rows, cols = np.nonzero(owner == k)
        if rows.size:
            axes[0].text(np.median(cols), np.median(rows), label, color="yellow", fontsize=6, ha="center",
                         va="center", bbox={"facecolor": "black", "alpha": 0.5, "pad": 1, "linewidth": 0})  # fmt: skip
    axes[0].set_title("mosaic and seams (image owning each cell)", fontsize=9)
    im = axes[1].imshow(disagreement, cmap="magma", vmin=0.0, vmax=1.5, interpolation="nearest")
    over[seam] = (0.3, 0.9, 1.0, 0.8)
    axes[1].imshow(over, interpolation="nearest")
    axes[1].set_title("disagreement of overlapping images (RMS / overall RMS)", fontsize=9)
    fig.colorbar(im, ax=axes[1], fraction=0.04)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    return _save(fig, path)
