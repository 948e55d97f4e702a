"""The report's results card: the measured numbers, the height map and its histogram, human labels.

Everything here reads the files a run saved (``summary.json``, ``grain_metrics.json``,
``areal_parameters.json``, ``height_map.tif``), so the card can be rebuilt at any time. The card shows
what a user came for — dimensions, volume, Sa/Sq in µm, the height map — before the quality figures.
"""

from __future__ import annotations

import base64
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

HEIGHT_MAP_FILES = ("height_map.tif", "height_um.tif", "height_px.tif")
"""Height maps of a run folder, in order of preference (SEM writes the first, meso one of the others)."""
MAX_GRID_SIDE = 240
"""Longest side of the height grid embedded for the 3D mesh and the line profile (≤ 65,535 vertices)."""
MAX_STATS_CELLS = 4_000_000
"""Cells of the height map the report's percentiles, Sa and Sq are computed on (every k-th row and column)."""

# Labels for summary / metric keys; other keys are turned into words by :func:`human_label`.
LABELS: dict[str, str] = {
    "volume": "Volume",
    "surface_area": "Surface area",
    "equivalent_sphere_diameter": "Equivalent sphere diameter",
    "sphericity": "Sphericity",
    "length_l": "Longest dimension L",
    "length_i": "Intermediate dimension I",
    "length_s": "Shortest dimension S",
    "elongation": "Elongation I/L",
    "flatness": "Flatness S/I",
    "feret_max": "Largest Feret diameter",
    "feret_min": "Smallest Feret diameter",
    "convexity": "Convexity (volume / hull volume)",
    "relies_on_underside": "Relies on the unseen underside",
    "sa": "Sa (arithmetic mean height)",
    "sq": "Sq (root-mean-square height)",
    "sp": "Sp (highest peak)",
    "sv": "Sv (deepest valley)",
    "sz": "Sz (peak to valley)",
    "ssk": "Ssk (skewness)",
    "sku": "Sku (kurtosis)",
    "sdr_percent": "Sdr (developed area ratio)",
    "camera_source": "Cameras from",
    "tilt_axis_deg": "Tilt axis in the image (° from x)",
    "relative_tilts_deg": "Tilt relative to view 0 (°)",
    "relative_tilts_uncertainty_deg": "Uncertainty of the recovered tilts",
    "height_resolution": "Height resolution and relief parallax",
    "n_tracks": "Tracks (points matched in ≥ 2 views)",
    "n_tracks_all_views": "Tracks seen in every view",
    "reprojection_rms_px_before": "Reprojection RMS before bundle adjustment (px)",
    "reprojection_rms_px_after": "Reprojection RMS after bundle adjustment (px)",
    "scales": "Scale k (px per unit)",
    "pixel_size_um": "Pixel size (µm)",
    "unit": "Unit",
    "cached_stages": "Stages reused from the cache",
    "dense": "Dense reconstruction",
    "grain_metrics": "Grain metrics",
    "areal_parameters_grain_top": "Areal parameters of the grain top",
    "reference_view": "Reference view of the height map",
    "n_points": "Dense points",
    "n_points_grain": "Dense points on the grain",
    "n_points_3plus_views": "Dense points seen in ≥ 3 views",
    "grain_pixels": "Grain pixels in the reference view",
    "closure": "How the grain is closed",
    "grain_mesh_faces": "Grain mesh triangles",
    "quality": "Quality of the fit",
    "final_loss": "Final loss",
    "final_mse_rgb": "Final colour error (MSE)",
    "final_mse_height": "Final height error (MSE)",
    "iterations": "Iterations",
    "height_coverage": "Share of the mosaic with a height",
    "mean_images_per_pixel": "Images per mosaic pixel (mean)",
    "height_unit": "Height unit",
    "lateral_unit": "Lateral unit",
    "pixel_size": "Mosaic pixel size",
    "mosaic_shape": "Mosaic size (rows, columns)",
    "height_range": "Height range",
    "scale_source": "Absolute scale from",
    "init_method": "Initial positions from",
    "form_removed": "Form removed before the parameters",
    "n_pixels": "Pixels evaluated",
    "principal_dimensions_method": "How L, I, S are measured",
    "n_vertices": "Mesh vertices",
    "n_faces": "Mesh triangles",
}
_UNIT_SUFFIXES = (
    ("_um3", "µm³"),
    ("_um2", "µm²"),
    ("_um", "µm"),
    ("_mm", "mm"),
    ("_px", "px"),
    ("_deg", "°"),
    ("_s", "s"),
    ("_percent", "%"),
    ("_kv", "kV"),
)
_UNIT_TEXT = {"um": "µm", "um^2": "µm²", "um^3": "µm³", "px": "px", "px^2": "px²", "px^3": "px³", "1": "", "%": "%"}


def human_label(key: str) -> str:
    """A reader's label for a summary key: ``"grain_metrics.volume.relies_on_underside"`` →
    ``"Grain metrics › Volume › Relies on the unseen underside"``; ``"working_distance_mm"`` →
    ``"Working distance (mm)"``."""
    parts = [p for p in str(key).split(".") if p]
    return " › ".join(_label_one(p) for p in parts) if parts else str(key)


def _label_one(key: str) -> str:
    if key in LABELS:
        return LABELS[key]
    unit = ""
    for suffix, text in _UNIT_SUFFIXES:
        if key.endswith(suffix) and len(key) > len(suffix):
            key, unit = key[: -len(suffix)], text
            break
    words = " ".join(t for t in re.split(r"[_\s]+", key) if t)
    words = (words[:1].upper() + words[1:]) if words else key
    return f"{words} ({unit})" if unit else words


def unit_text(unit: str | None) -> str:
    """``"um^3"`` → ``"µm³"`` (unknown units unchanged; dimensionless ``"1"`` → ``""``)."""
    if unit is None:
        return ""
    return _UNIT_TEXT.get(unit, unit)


@dataclass(frozen=True)
class Measure:
    """One number of the results card: ``label``, ``value`` (a number or text), ``unit`` (display text),
    ``footnote`` (e.g. that it includes the unseen underside)."""

    label: str
    value: float | str
    unit: str = ""
    footnote: str | None = None

    def text(self) -> str:
        v = self.value
        if isinstance(v, float):
            v = f"{v:.4g}" if math.isfinite(v) else "—"
        return f"{v} {self.unit}".strip()


UNDERSIDE_NOTE = "includes the unseen underside (the grain is closed with a flat base)"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def _value(entry: Any) -> tuple[float | None, str, bool]:
    """``(value, unit, relies_on_underside)`` of a metric entry ``{"value", "unit", ...}`` or a bare number."""
    if isinstance(entry, dict):
        v = entry.get("value")
        ok = isinstance(v, (int, float)) and not isinstance(v, bool)
        return (float(v) if ok else None), unit_text(entry.get("unit")), bool(entry.get("relies_on_underside"))
    if isinstance(entry, (int, float)) and not isinstance(entry, bool):
        return float(entry), "", False
    return None, "", False


def grain_measures(grain: dict[str, Any]) -> list[Measure]:
    """Dimensions, volume, area and shape of a grain from ``grain_metrics.json``."""
    out: list[Measure] = []
    lengths = [_value(grain.get(k)) for k in ("length_l", "length_i", "length_s")]
    if all(v is not None for v, _, _ in lengths):
        unit = lengths[0][1]
        text = " × ".join(f"{v:.3g}" for v, _, _ in lengths)
        note = UNDERSIDE_NOTE if any(u for _, _, u in lengths) else None
        out.append(Measure("Dimensions L × I × S", text, unit, note))
    for key in ("volume", "surface_area", "equivalent_sphere_diameter", "feret_max", "feret_min", "sphericity"):
        v, unit, under = _value(grain.get(key))
        if v is not None:
            out.append(Measure(_label_one(key), v, unit, UNDERSIDE_NOTE if under else None))
    return out


def areal_measures(areal: dict[str, Any], what: str) -> list[Measure]:
    """Sa, Sq, Sz of an ``areal_parameters`` dict (``what`` says over which area)."""
    out = []
    for key in ("sa", "sq", "sz"):
        v, unit, _ = _value(areal.get(key))
        if v is not None:
            out.append(Measure(f"{key[:1].upper()}{key[1:]} {what}", v, unit))
    return out


def headline_measures(summary: dict[str, Any], run_dir: Path, height: HeightGrid | None) -> list[Measure]:
    """The results card's numbers for a run folder (SEM grain or meso surface), in reading order."""
    out: list[Measure] = []
    dense = summary.get("dense") if isinstance(summary.get("dense"), dict) else {}
    grain = dense.get("grain_metrics") or _read_json(run_dir / "grain_metrics.json")
    if isinstance(grain, dict):
        out += grain_measures(grain)
    areal = dense.get("areal_parameters_grain_top")
    what = "of the grain top"
    if not isinstance(areal, dict):
        areal = _read_json(run_dir / "areal_parameters.json")
        what = "of the height map"
    if isinstance(areal, dict):
        out += areal_measures(areal, what)
    if height is not None:
        if not any(m.label.startswith("Sa") for m in out) and height.sa is not None:
            out.append(Measure("Sa of the height map (mean plane removed)", height.sa, height.unit))
            out.append(Measure("Sq of the height map (mean plane removed)", height.sq, height.unit))
        out.append(Measure("Height range (1st–99th percentile)", f"{height.p01:.4g} … {height.p99:.4g}", height.unit))
        if height.spacing is not None:
            w, h = height.full_shape[1] * height.spacing, height.full_shape[0] * height.spacing
            unit = height.lateral_unit
            if unit == "µm" and max(w, h) >= 10_000:  # a phone mosaic: mm reads better
                w, h, unit = w / 1000, h / 1000, "mm"
            out.append(Measure("Height map extent (width × height)", f"{w:.4g} × {h:.4g}", unit))
    n = dense.get("n_points")
    if isinstance(n, int):
        out.append(Measure("Dense points", f"{n:,}"))
    return out


@dataclass(frozen=True)
class HeightGrid:
    """A height map reduced for the report.

    ``z`` (h, w) float32 heights (NaN unknown) on every ``step``-th row and column of the full map
    ``full_shape``; ``spacing`` µm per full-map pixel or None; ``unit`` of the heights (display text);
    ``values`` the finite heights of the full map (for the histogram); ``p01``/``p99`` percentiles;
    ``sa``/``sq`` after removing the mean plane (None when it cannot be computed); ``rgb`` (h, w, 3) uint8
    colours from ``orthomosaic.png`` when it matches.
    """

    z: np.ndarray
    step: int
    full_shape: tuple[int, int]
    spacing: float | None
    unit: str
    values: np.ndarray
    p01: float
    p99: float
    sa: float | None
    sq: float | None
    rgb: np.ndarray | None
    source: str
    lateral_unit: str = "µm"
    """Unit of ``spacing``: µm, or px when the run has no pixel size (heights in px too)."""

    def payload(self) -> dict[str, Any]:
        """The JSON block read by ``viewer.js`` for the mesh and the line profile (arrays base64, little-endian)."""
        z = np.ascontiguousarray(self.z, dtype="<f4")
        return {
            "rows": int(z.shape[0]),
            "cols": int(z.shape[1]),
            "z": base64.b64encode(z.tobytes()).decode("ascii"),
            "cell": float(self.step * (self.spacing or 1.0)),
            "lateral_unit": self.lateral_unit if self.spacing is not None else "px",
            "unit": self.unit,
            "z_range": [self.p01, self.p99],
            "rgb": None if self.rgb is None else base64.b64encode(np.ascontiguousarray(self.rgb).tobytes()).decode(),
            "source": self.source,
        }


def has_areal_parameters(summary: dict[str, Any], run_dir: Path) -> bool:
    """The run stored its own areal parameters (``summary.json`` or ``areal_parameters.json``), which the
    results card shows instead of the height map's Sa and Sq (:func:`headline_measures`)."""
    dense = summary.get("dense") if isinstance(summary.get("dense"), dict) else {}
    if isinstance(dense.get("areal_parameters_grain_top"), dict):
        return True
    return isinstance(_read_json(run_dir / "areal_parameters.json"), dict)


def load_height_grid(
    run_dir: Path, unit: str, max_side: int = MAX_GRID_SIDE, with_areal: bool = True
) -> HeightGrid | None:
    """The run's height map (:data:`HEIGHT_MAP_FILES`) reduced to at most ``max_side`` px per side (None when
    absent or unreadable); ``unit`` is the unit of the heights (``"um"``, or ``"px"`` without a scale).
    ``with_areal`` False leaves Sa and Sq out (None): a run that stored its areal parameters shows those,
    and the plane fit over the map costs ~0.35 CPU-s at 1200² px."""
    from topograph.errors import TopographError
    from topograph.io.exports import read_float_tiff

    found = [run_dir / name for name in HEIGHT_MAP_FILES if (run_dir / name).is_file()]
    if not found:
        return None
    path = found[0]
    try:
        full, spacing = read_float_tiff(path)
    except TopographError:
        return None
    full = np.squeeze(full)
    if full.ndim != 2 or not np.isfinite(full).any():
        return None
    step = max(1, math.ceil(max(full.shape) / max_side))
    z = full[::step, ::step].astype(np.float32)
    values = full[np.isfinite(full)]
    # percentiles, Sa and Sq from every k-th cell of a large map: the plane fit and the gradients of a
    # 12 MP run's 42 M-cell mosaic held ~2.9 GB of float64 temporaries (docs/benchmarks.md, issue 18)
    k = max(1, math.ceil(math.sqrt(full.size / MAX_STATS_CELLS)))
    sub = full[::k, ::k]
    p01, p99 = (float(v) for v in np.nanpercentile(sub, [1.0, 99.0]))
    sa = sq = None
    try:
        if with_areal:
            from topograph.analysis.surface import areal_parameters

            ap = areal_parameters(sub, (spacing or 1.0) * k, form="plane", unit=unit or "px")
            sa, sq = ap.sa, ap.sq
    except Exception:  # noqa: BLE001 - a degenerate map only loses the two numbers
        pass
    rgb = None
    ortho = run_dir / "orthomosaic.png"
    if ortho.is_file():
        import cv2

        img = cv2.imread(str(ortho), cv2.IMREAD_COLOR)
        if img is not None and img.shape[:2] == full.shape:
            rgb = np.ascontiguousarray(img[::step, ::step, ::-1])
    shape = (int(full.shape[0]), int(full.shape[1]))
    lateral = "µm" if unit in ("um", "") else "px"  # a run without pixel size stores spacing 1 = one pixel
    return HeightGrid(
        z, step, shape, spacing, unit_text(unit) or unit, values, p01, p99, sa, sq, rgb, path.name, lateral
    )


def height_map_png_uri(grid: HeightGrid, max_side: int = 720) -> str:
    """The height map coloured with viridis between the 1st and 99th percentiles (NaN grey) as a PNG data URI."""
    import cv2
    from matplotlib import colormaps

    z = grid.z
    t = np.clip((z - grid.p01) / ((grid.p99 - grid.p01) or 1.0), 0.0, 1.0)
    rgba = colormaps["viridis"](np.nan_to_num(t))
    rgb = (rgba[..., :3] * 255).astype(np.uint8)
    rgb[~np.isfinite(z)] = (200, 200, 200)
    s = max_side / max(rgb.shape[:2])
    if s > 1:  # enlarge small grids without blurring heights together
        rgb = cv2.resize(rgb, (round(rgb.shape[1] * s), round(rgb.shape[0] * s)), interpolation=cv2.INTER_NEAREST)
    ok, buf = cv2.imencode(".png", rgb[..., ::-1])
    return "data:image/png;base64," + base64.b64encode(buf.tobytes()).decode("ascii") if ok else ""


def histogram_svg(values: np.ndarray, unit: str, bins: int = 40, width: int = 420, height: int = 200) -> str:
    """Histogram of heights between the 0.5th and 99.5th percentiles as SVG text (share of pixels per bin)."""
    from topograph.report.svg_charts import nice_ticks

    lo, hi = (float(v) for v in np.percentile(values, [0.5, 99.5]))
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    counts, edges = np.histogram(np.clip(values, lo, hi), bins=bins, range=(lo, hi))
    share = 100.0 * counts / max(1, counts.sum())
    left, right, top, bottom = 46, 10, 10, 34
    pw, ph = width - left - right, height - top - bottom
    ymax = float(share.max()) or 1.0
    parts = [
        f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        'font-family="sans-serif" font-size="11" role="img" aria-label="height histogram">',
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#fff" stroke="#ccd"/>',
    ]
    bw = pw / bins
    for k, v in enumerate(share):
        bh = ph * float(v) / ymax
        parts.append(
            f'<rect x="{left + k * bw:.1f}" y="{top + ph - bh:.1f}" width="{max(bw - 1, 0.5):.1f}" '
            f'height="{bh:.1f}" fill="#2c718e"/>'
        )
    for t in nice_ticks(lo, hi, 5):
        if lo <= t <= hi:
            x = left + pw * (t - lo) / (hi - lo)
            parts.append(f'<line x1="{x:.1f}" y1="{top + ph}" x2="{x:.1f}" y2="{top + ph + 4}" stroke="#667"/>')
            parts.append(f'<text x="{x:.1f}" y="{top + ph + 15}" text-anchor="middle">{t:.4g}</text>')
    parts.append(f'<text x="{left + pw / 2:.1f}" y="{height - 4}" text-anchor="middle">height ({unit})</text>')
    parts.append(f'<text x="{left - 6}" y="{top + 10}" text-anchor="end">{ymax:.2g}%</text>')
    parts.append(f'<text x="{left - 6}" y="{top + ph}" text-anchor="end">0</text>')
    parts.append("</svg>")
    return "".join(parts)
