"""Preview figures: a point cloud seen from two viewpoints, and a colour-mapped height map with a scale bar.

Figures are composed with NumPy and Pillow (colour maps from OpenCV's viridis, text in matplotlib's
DejaVu Sans font) and written atomically: a dense SEM run does not pay matplotlib's ~0.9 s import and its
figure layout (~1.5 s of a quartz run together).
"""

from __future__ import annotations

import functools
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
    u = _pretty(unit)
    bar = nice_length(2.0 * half / 5.0)
    label = _format_length_um(bar) if unit == "um" else f"{bar:g} {u}"
    panels = []
    for (elev, azim), basis in zip(views, bases, strict=True):
        image = splat_orthographic(xyz, colour, basis, centre, half, size_px, splat)
        rgb = colourize(image, vmin, vmax, cmap, bad=(213, 221, 230))
        _scale_bar(rgb, bar * size_px / (2.0 * half), label, frame=False)
        panels.append((rgb, f"elevation {elev:g}°, azimuth {azim:g}°"))
    log.debug("rendered %d points from %d viewpoints (splat %d px)", len(xyz), len(views), splat)
    return _save(_compose_panels(panels, title), path_png)


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
        cmap: colour map, "viridis" or "gray".

    Returns:
        The written path.

    Raises:
        TopographError: not 2-D, all NaN, or a non-positive pixel size.
    """
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
    import cv2

    # display size: the longer side ~800 px (nearest-neighbour up, area-averaged down)
    zoom = HEIGHT_MAP_SIDE_PX / max(h, w)
    dw, dh = max(1, round(w * zoom)), max(1, round(h * zoom))
    rgb = colourize(z, vmin, vmax, cmap, bad=(217, 217, 217))
    rgb = cv2.resize(rgb, (dw, dh), interpolation=cv2.INTER_NEAREST if zoom >= 1 else cv2.INTER_AREA)
    bar = nice_length(w * pixel_size_um / 5.0)
    label = _format_length_um(bar) if unit in ("µm", "um") else f"{bar:g} {unit}"
    _scale_bar(rgb, bar / pixel_size_um * dw / w, label, frame=True)
    return _save(_with_colour_bar(rgb, vmin, vmax, cmap, f"height [{unit}]", title), path)


def _save(image: np.ndarray, path: str | os.PathLike[str]) -> Path:
    """Write an (H, W, 3) uint8 RGB figure as PNG (atomically)."""
    from PIL import Image

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise TopographError(f"figures are written as PNG, got '{path.name}'", "use a .png file name")
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")
    log.info("wrote %s", path)
    return path


HEIGHT_MAP_SIDE_PX = 800
"""Longer side of the drawn height map, px."""
_BG = (255, 255, 255)
_INK = (20, 20, 20)


def _font_file() -> str | None:
    """DejaVu Sans as shipped inside the matplotlib package (found without importing it), or None."""
    import importlib.util

    spec = importlib.util.find_spec("matplotlib")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
    return str(path) if path.is_file() else None


@functools.lru_cache(maxsize=8)
def _font(size: int):  # noqa: ANN202 - PIL.ImageFont.FreeTypeFont
    """DejaVu Sans (has µ and °) at ``size`` px; Pillow's built-in font when it is not installed."""
    from PIL import ImageFont

    path = _font_file()
    return ImageFont.truetype(path, size) if path else ImageFont.load_default(size=size)


def colourize(
    values: np.ndarray, vmin: float, vmax: float, cmap: str = "viridis", bad: tuple[int, int, int] = (217, 217, 217)
) -> np.ndarray:
    """(H, W, 3) uint8 RGB of ``values`` mapped linearly from [vmin, vmax] through ``cmap`` ("viridis": OpenCV's
    table, the colours of matplotlib's viridis; or "gray"); NaN pixels get the colour ``bad``."""
    import cv2

    v = np.asarray(values, dtype=np.float32)
    bad_mask = ~np.isfinite(v)
    scale = 255.0 / (vmax - vmin) if vmax > vmin else 0.0
    u8 = np.clip((np.nan_to_num(v, nan=vmin) - vmin) * scale + 0.5, 0, 255).astype(np.uint8)
    if cmap == "gray":
        rgb = np.repeat(u8[..., None], 3, axis=2)
    elif cmap == "viridis":
        rgb = np.ascontiguousarray(cv2.applyColorMap(u8, cv2.COLORMAP_VIRIDIS)[..., ::-1])
    else:
        raise TopographError(f"unknown colour map '{cmap}'", "use viridis or gray")
    rgb[bad_mask] = bad
    return rgb


def _scale_bar(rgb: np.ndarray, length_px: float, label: str, *, frame: bool) -> None:
    """Draw a scale bar of ``length_px`` with its label in the lower right corner of ``rgb`` (in place)."""
    from PIL import Image, ImageDraw

    h, w = rgb.shape[:2]
    font = _font(max(11, min(16, w // 40)))
    img = Image.fromarray(rgb)
    draw = ImageDraw.Draw(img, "RGBA")
    tw = draw.textlength(label, font=font)
    bar_w = max(2.0, float(length_px))
    thick = max(3, h // 120)
    pad = 6
    box_w = max(bar_w, tw) + 2 * pad
    box_h = thick + font.size + 3 * pad
    x1, y1 = w - 8, h - 8
    x0, y0 = x1 - box_w, y1 - box_h
    if frame:
        draw.rectangle((x0, y0, x1, y1), fill=(255, 255, 255, 190), outline=(0, 0, 0, 120))
    cx = 0.5 * (x0 + x1)
    draw.rectangle((cx - bar_w / 2, y1 - pad - thick, cx + bar_w / 2, y1 - pad), fill=_INK)
    draw.text((cx - tw / 2, y0 + pad), label, font=font, fill=_INK)
    rgb[:] = np.asarray(img)


def _tick_values(vmin: float, vmax: float) -> np.ndarray:
    """Round tick values (multiples of a 1-2-5 step, about five of them) within [vmin, vmax]."""
    step = nice_length((vmax - vmin) / 4.0)
    first = math.ceil(vmin / step - 1e-9) * step
    return np.arange(first, vmax + 1e-9 * step, step)


def _with_colour_bar(rgb: np.ndarray, vmin: float, vmax: float, cmap: str, label: str, title: str | None) -> np.ndarray:
    """The map ``rgb`` on a white canvas with a vertical colour bar (ticks, label) at its right and a title."""
    from PIL import Image, ImageDraw

    h, w = rgb.shape[:2]
    font = _font(14)
    margin, gap, bar_w = 12, 16, 22
    top = margin + (26 if title else 0)
    ticks = _tick_values(vmin, vmax)
    texts = [f"{t + 0.0:.4g}" for t in ticks]
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_w = int(max((probe.textlength(t, font=font) for t in texts), default=0.0))
    width = margin + w + gap + bar_w + 6 + text_w + 8 + font.size + 6 + margin
    canvas = Image.new("RGB", (width, top + h + margin), _BG)
    canvas.paste(Image.fromarray(rgb), (margin, top))
    ramp = np.linspace(vmax, vmin, h, dtype=np.float32)[:, None].repeat(bar_w, axis=1)
    bx = margin + w + gap
    canvas.paste(Image.fromarray(colourize(ramp, vmin, vmax, cmap)), (bx, top))
    draw = ImageDraw.Draw(canvas)
    draw.rectangle((bx, top, bx + bar_w - 1, top + h - 1), outline=_INK)
    for t, text in zip(ticks, texts, strict=True):
        y = top + (vmax - t) / (vmax - vmin) * (h - 1)
        draw.line((bx + bar_w, y, bx + bar_w + 4, y), fill=_INK)
        draw.text((bx + bar_w + 6, y - font.size / 2 - 1), text, font=font, fill=_INK)
    tag = Image.new("RGB", (int(probe.textlength(label, font=font)) + 4, font.size + 6), _BG)
    ImageDraw.Draw(tag).text((2, 1), label, font=font, fill=_INK)
    tag = tag.rotate(90, expand=True)
    canvas.paste(tag, (bx + bar_w + 6 + text_w + 8, top + max(0, (h - tag.height) // 2)))
    if title:
        big = _font(16)
        draw.text(((width - draw.textlength(title, font=big)) / 2, margin - 2), title, font=big, fill=_INK)
    return np.asarray(canvas)


def _compose_panels(panels: list[tuple[np.ndarray, str]], title: str | None) -> np.ndarray:
    """Panels side by side on a white canvas, each with a caption above it, and an optional figure title."""
    from PIL import Image, ImageDraw

    font = _font(13)
    margin, gap, cap = 10, 14, 22
    top = margin + (28 if title else 0)
    h = max(p.shape[0] for p, _ in panels)
    width = 2 * margin + sum(p.shape[1] for p, _ in panels) + gap * (len(panels) - 1)
    canvas = Image.new("RGB", (width, top + cap + h + margin), _BG)
    draw = ImageDraw.Draw(canvas)
    x = margin
    for rgb, caption in panels:
        canvas.paste(Image.fromarray(rgb), (x, top + cap))
        cx = x + (rgb.shape[1] - draw.textlength(caption, font=font)) / 2
        draw.text((cx, top + 2), caption, font=font, fill=_INK)
        x += rgb.shape[1] + gap
    if title:
        big = _font(16)
        draw.text(((width - draw.textlength(title, font=big)) / 2, margin), title, font=big, fill=_INK)
    return np.asarray(canvas)
