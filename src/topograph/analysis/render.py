"""Preview figures: a point cloud seen from two viewpoints, and a colour-mapped height map with a scale bar.

Figures are drawn with matplotlib's object API on an Agg canvas (no pyplot state, no display) and
written atomically.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import numpy as np

from topograph.errors import TopographError
from topograph.io.atomic import atomic_path

log = logging.getLogger("topograph")

MAX_RENDER_POINTS = 2_000_000
"""Clouds beyond this many points are subsampled for the preview."""


def _pretty(unit: str) -> str:
    return "µm" if unit == "um" else unit


def view_basis(elevation_deg: float, azimuth_deg: float) -> np.ndarray:
    """(3, 3) rows: screen right ``r``, screen up ``u`` and the direction toward the viewer ``e``.

    Same convention as matplotlib's 3-D axes: ``e = (cos el cos az, cos el sin az, sin el)``,
    ``r = (−sin az, cos az, 0)``, ``u = e × r`` rotated to point up: ``u = (−sin el cos az, −sin el sin az, cos el)``.
    """
    el, az = np.radians(elevation_deg), np.radians(azimuth_deg)
    e = np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
    r = np.array([-np.sin(az), np.cos(az), 0.0])
    u = np.array([-np.sin(el) * np.cos(az), -np.sin(el) * np.sin(az), np.cos(el)])
    return np.vstack([r, u, e])


def splat_orthographic(
    xyz: np.ndarray,
    values: np.ndarray,
    basis: np.ndarray,
    centre: np.ndarray,
    half_extent: float,
    size_px: int,
    splat_px: int = 2,
) -> np.ndarray:
    """Orthographic z-buffered point rendering: (size_px, size_px) float image, NaN where no point.

    Each point ``p`` lands at screen ``(r·(p − c), u·(p − c))`` scaled so that ``±half_extent`` spans the
    image, as a ``splat_px × splat_px`` square; where squares overlap the point nearest the viewer
    (largest ``e·p``) wins — the points are drawn far to near, and NumPy's fancy assignment keeps the
    last write.
    """
    q = (xyz - centre) @ basis.T  # (N, 3): right, up, toward the viewer
    scale = (size_px - splat_px) / (2.0 * half_extent)
    col = np.clip(((q[:, 0] + half_extent) * scale).astype(np.int64), 0, size_px - splat_px)
    row = np.clip(((half_extent - q[:, 1]) * scale).astype(np.int64), 0, size_px - splat_px)
    order = np.argsort(q[:, 2], kind="stable")
    col, row, val = col[order], row[order], values[order]
    image = np.full((size_px, size_px), np.nan, dtype=np.float32)
    flat = image.ravel()
    offsets = [dy * size_px + dx for dy in range(splat_px) for dx in range(splat_px)]
    base = row * size_px + col
    idx = (base[:, None] + np.asarray(offsets)[None, :]).ravel()  # far-to-near order kept per point
    flat[idx] = np.repeat(val.astype(np.float32), len(offsets))
    return image


def render_cloud_views(
    points: np.ndarray,
    intensity: np.ndarray | None,
    path_png: str | os.PathLike[str],
    views: tuple[tuple[float, float], ...] = ((30.0, -60.0), (90.0, -90.0)),
    *,
    unit: str = "um",
    max_points: int = MAX_RENDER_POINTS,
    seed: int = 0,
    title: str | None = None,
    size_px: int = 560,
) -> Path:
    """Render a point cloud from several viewpoints side by side (orthographic, z-buffered point splats).

    Points are coloured by ``intensity`` (grey) when given, else by height z (viridis), stretched between
    the 1st and 99th percentiles. Every panel uses the same scale (the cloud's bounding box fits the
    panel in every view) and carries a scale bar. Clouds with more
    than ``max_points`` points are subsampled uniformly at random with ``seed``. The splats are drawn with
    NumPy (:func:`splat_orthographic`), so a million points take a fraction of a second.

    Args:
        points: (N, 3) coordinates in ``unit``.
        intensity: (N,) values in [0, 1] or None.
        path_png: output PNG path (written atomically).
        views: (elevation°, azimuth°) per panel, matplotlib's 3-D convention.
        unit: length unit for the scale bar.
        max_points: subsampling limit.
        seed: random seed of the subsampling.
        title: optional figure title.
        size_px: side of each panel's raster, pixels.

    Returns:
        The written path.

    Raises:
        TopographError: empty cloud, bad shapes or no views.
    """
    import matplotlib as mpl
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    xyz = np.asarray(points, dtype=float)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise TopographError(f"a point cloud must have shape (N, 3), got {xyz.shape}", "pass x, y, z columns")
    keep = np.isfinite(xyz).all(axis=1)
    if intensity is not None:
        intensity = np.asarray(intensity, dtype=float)
        if intensity.shape != (len(xyz),):
            raise TopographError("intensity must have one value per point", "pass an (N,) array or None")
        intensity = intensity[keep]
    xyz = xyz[keep]
    if len(xyz) == 0:
        raise TopographError("the point cloud is empty (no finite points)", "nothing to render")
    if not views:
        raise TopographError("no viewpoint given", "pass at least one (elevation, azimuth) pair")
    if len(xyz) > max_points:
        idx = np.sort(np.random.default_rng(seed).choice(len(xyz), max_points, replace=False))
        xyz = xyz[idx]
        intensity = None if intensity is None else intensity[idx]
    colour, cmap = (intensity, "gray") if intensity is not None else (xyz[:, 2], "viridis")
    vmin, vmax = (float(v) for v in np.percentile(colour, [1.0, 99.0]))
    if vmax <= vmin:
        vmin, vmax = vmin - 0.5, vmax + 0.5
    lo, hi = xyz.min(axis=0), xyz.max(axis=0)
    centre = 0.5 * (lo + hi)
    bases = [view_basis(elev, azim) for elev, azim in views]
    # one scale for all panels: the largest screen extent of the bounding box's corners over the views
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    half = 1.02 * max(float(np.abs((corners - centre) @ b[:2].T).max()) for b in bases) or 1.0
    splat = int(np.clip(np.round(1.5 * size_px / np.sqrt(len(xyz))), 1, 6))
    colours = mpl.colormaps[cmap].with_extremes(bad="#d5dde6")
    u = _pretty(unit)
    bar = nice_length(2.0 * half / 5.0)

    fig = Figure(figsize=(4.6 * len(views), 4.9), dpi=110)
    FigureCanvasAgg(fig)
    for k, ((elev, azim), basis) in enumerate(zip(views, bases, strict=True)):
        image = splat_orthographic(xyz, colour, basis, centre, half, size_px, splat)
        ax = fig.add_subplot(1, len(views), k + 1)
        extent = (-half, half, -half, half)
        ax.imshow(
            np.ma.masked_invalid(image), cmap=colours, vmin=vmin, vmax=vmax, extent=extent, interpolation="nearest"
        )
        label = _format_length_um(bar) if unit == "um" else f"{bar:g} {u}"
        ax.add_artist(
            AnchoredSizeBar(ax.transData, bar, label, "lower right", pad=0.4, frameon=False, fontproperties={"size": 8})
        )
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"elevation {elev:g}°, azimuth {azim:g}°", fontsize=9)
    if title:
        fig.suptitle(title)
    log.debug("rendered %d points from %d viewpoints (splat %d px)", len(xyz), len(views), splat)
    return _save(fig, path_png)


def nice_length(target: float) -> float:
    """The largest 1, 2 or 5 × 10^k not exceeding ``target`` (> 0), e.g. 37 → 20, 0.8 → 0.5."""
    if not target > 0 or not math.isfinite(target):
        raise ValueError(f"target must be positive and finite, got {target}")
    exp = math.floor(math.log10(target))
    for m in (5.0, 2.0, 1.0):
        value = m * 10.0**exp
        if value <= target * (1 + 1e-12):
            return value
    return 10.0 ** (exp - 1) * 5.0


def _format_length_um(length_um: float) -> str:
    if length_um >= 1000:
        return f"{length_um / 1000:g} mm"
    if length_um < 1:
        return f"{length_um * 1000:g} nm"
    return f"{length_um:g} µm"


def height_map_png(
    height: np.ndarray,
    pixel_size_um: float,
    path: str | os.PathLike[str],
    unit: str = "µm",
    *,
    title: str | None = None,
    cmap: str = "viridis",
) -> Path:
    """Colour-mapped height map with a colour bar (heights in ``unit``) and a round-length scale bar.

    NaN pixels are drawn light grey. The colour range spans the 0.5–99.5 percentiles so that a few
    outliers do not wash out the map. The scale bar is :func:`nice_length` of a fifth of the map width.

    Args:
        height: (H, W) heights, NaN = unknown.
        pixel_size_um: lateral size of one pixel, µm.
        path: output PNG path (written atomically).
        unit: height unit shown on the colour bar.
        title: optional axes title.
        cmap: matplotlib colour map name.

    Returns:
        The written path.

    Raises:
        TopographError: not 2-D, all NaN, or a non-positive pixel size.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    z = np.asarray(height, dtype=float)
    if z.ndim != 2:
        raise TopographError(f"a height map must be 2-D (H, W), got shape {z.shape}", "pass one height map")
    finite = np.isfinite(z)
    if not finite.any():
        raise TopographError("the height map has no valid pixels (all NaN)", "check the height map")
    if not np.isfinite(pixel_size_um) or pixel_size_um <= 0:
        raise TopographError(f"pixel size must be positive, got {pixel_size_um}", "pass --pixel-size-um")
    h, w = z.shape
    vmin, vmax = np.percentile(z[finite], [0.5, 99.5])
    if vmax <= vmin:
        vmin, vmax = vmin - 0.5, vmax + 0.5
    import matplotlib as mpl

    colours = mpl.colormaps[cmap].with_extremes(bad="0.85")
    aspect = h / w
    fig = Figure(figsize=(7.0, max(2.5, min(12.0, 6.0 * aspect)) + 0.6), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    extent = (0.0, w * pixel_size_um, h * pixel_size_um, 0.0)
    im = ax.imshow(np.ma.masked_invalid(z), cmap=colours, vmin=vmin, vmax=vmax, extent=extent, interpolation="nearest")
    cbar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    cbar.set_label(f"height [{unit}]")
    bar = nice_length(w * pixel_size_um / 5.0)
    scale_bar = AnchoredSizeBar(
        ax.transData,
        bar,
        _format_length_um(bar) if unit in ("µm", "um") else f"{bar:g} {unit}",
        "lower right",
        pad=0.4,
        color="black",
        frameon=True,
        size_vertical=max(h, w) * pixel_size_um / 150.0,
        fontproperties={"size": 9},
    )
    scale_bar.patch.set_alpha(0.75)
    ax.add_artist(scale_bar)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)
    return _save(fig, path)


def _save(fig: object, path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise TopographError(f"figures are written as PNG, got '{path.name}'", "use a .png file name")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")  # type: ignore[attr-defined]
    log.info("wrote %s", path)
    return path
