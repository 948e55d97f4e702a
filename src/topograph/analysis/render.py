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

MAX_RENDER_POINTS = 200_000


def _pretty(unit: str) -> str:
    return "µm" if unit == "um" else unit


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
) -> Path:
    """Render a point cloud from several viewpoints side by side (3-D scatter, equal axis scaling).

    Points are coloured by ``intensity`` (grey) when given, else by height z (viridis). Clouds with more
    than ``max_points`` points are subsampled uniformly at random with ``seed``.

    Args:
        points: (N, 3) coordinates in ``unit``.
        intensity: (N,) values in [0, 1] or None.
        path_png: output PNG path (written atomically).
        views: (elevation°, azimuth°) per panel.
        unit: length unit for the axis labels.
        max_points: subsampling limit.
        seed: random seed of the subsampling.
        title: optional figure title.

    Returns:
        The written path.

    Raises:
        TopographError: empty cloud, bad shapes or no views.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

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
    if intensity is not None:
        colour, cmap, vmin, vmax = intensity, "gray", 0.0, 1.0
    else:
        colour, cmap, vmin, vmax = xyz[:, 2], "viridis", None, None
    lo, hi = xyz.min(axis=0), xyz.max(axis=0)
    centre = 0.5 * (lo + hi)
    half = 0.5 * float(np.max(hi - lo)) or 1.0
    size = max(0.2, min(4.0, 2e4 / len(xyz)))
    u = _pretty(unit)

    fig = Figure(figsize=(5.0 * len(views), 5.0), dpi=110)
    FigureCanvasAgg(fig)
    for k, (elev, azim) in enumerate(views):
        ax = fig.add_subplot(1, len(views), k + 1, projection="3d")
        ax.scatter(xyz[:, 0], xyz[:, 1], xyz[:, 2], c=colour, cmap=cmap, vmin=vmin, vmax=vmax, s=size, linewidths=0)
        for setter, c in zip((ax.set_xlim, ax.set_ylim, ax.set_zlim), centre, strict=True):
            setter(c - half, c + half)
        ax.set_box_aspect((1.0, 1.0, 1.0))
        ax.set_xlabel(f"x [{u}]")
        ax.set_ylabel(f"y [{u}]")
        if abs(elev) < 80:  # seen from (nearly) straight above, the z axis is edge-on and unreadable
            ax.set_zlabel(f"z [{u}]")
        else:
            ax.set_zticks([])
        ax.view_init(elev=elev, azim=azim)
        ax.set_title(f"elevation {elev:g}°, azimuth {azim:g}°", fontsize=9)
    if title:
        fig.suptitle(title)
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
