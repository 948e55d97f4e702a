"""The self-contained HTML report of a run folder (``report.html``).

The report is built from the files a run saved (never from live objects), so ``topograph report RUN_DIR``
can rebuild it at any time. It reads, each only if present:

* ``summary.json``: engine, command, version, images, unit, notes, warnings, timings and quality figures;
* ``config.yaml``: the effective configuration (shown verbatim with the command);
* ``series.json`` and ``thumbnails/*.png``: the inputs and the metadata found for them;
* ``figures/*.png`` and top-level ``*.png``: every stage's figures, grouped by stage;
* a cloud for the 3D view: ``dense.ply``, ``surface.ply``, ``height_map.tif`` or ``sparse.ply``.

Everything is embedded (images as base64 ``data:`` URIs, the cloud as base64 float32, the viewer
script inline), so the file opens without network. Text that comes from files is HTML-escaped; JSON
placed inside ``<script>`` has ``<``, ``>`` and ``&`` written as ``\\u003c`` etc.; a Content Security
Policy admits only the report's own scripts (by nonce) and ``data:`` images.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
import logging
import math
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from topograph.errors import TopographError
from topograph.io.atomic import write_text
from topograph.report.results import (
    HeightGrid,
    has_areal_parameters,
    headline_measures,
    height_map_png_uri,
    histogram_svg,
    human_label,
    load_height_grid,
    unit_text,
)
from topograph.report.svg_charts import bar_chart, line_chart

log = logging.getLogger("topograph")

REPORT_NAME = "report.html"
MAX_VIEWER_POINTS = 60_000
"""Most points embedded in the 3D view."""
VIEWER_SOURCES = ("dense.ply", "surface.ply", "height_map.tif", "sparse.ply")
"""Files the 3D view is built from, in order of preference."""
IMAGE_SUFFIXES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml"}
MAX_EMBED_BYTES = 2_000_000
"""Images larger than this are downscaled before embedding."""
MAX_EMBED_SIDE = 1600

_VIEWER_JS = Path(__file__).with_name("viewer.js")

# Stage of a figure, chosen by the first rule with a keyword that starts one of the stem's "_" tokens.
_STAGE_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Matching", ("match", "keypoint", "feature", "pair")),
    ("Cameras and tilts", ("camera", "tilt", "pose")),
    ("Residuals", ("residual", "reprojection")),
    ("Optimisation", ("loss", "registration", "optim", "convergence")),
    ("Lens distortion", ("distortion", "undistort", "lens")),
    ("Surface", ("orthomosaic", "height", "dense", "cloud", "surface", "mesh", "grain", "render", "depth")),
    ("Quality", ("accuracy", "quality", "error", "profile", "metric", "precision")),
)
_OTHER_STAGE = "Other figures"
_KNOWN_CAPTIONS = {
    "match_counts": "Match counts per image pair",
    "reprojection_residuals": "Reprojection residuals after bundle adjustment, histogram per view",
    "height_map": "Height map",
    "height": "Height map (colour bar and scale bar)",
    "loss": "Loss curves of the coarse-to-fine rounds",
    "distortion": "Radial lens distortion profile",
    "orthomosaic": "Orthomosaic",
    "registration_seams": "Seams between the images of the mosaic (labelled by the image owning each part) and "
    "the disagreement of overlapping images: a misregistered image shows bright bands along its seams",
    "grain_mask": "Grain mask (reference view)",
    "dense_cloud_views": "Dense cloud, rendered views",
}
# summary.json keys given their own section (everything else goes to the generic tables).
_SECTION_KEYS = {
    "engine",
    "command",
    "topograph_version",
    "images",
    "unit",
    "notes",
    "warnings",
    "timings_s",
    "match_counts",
}
_SERIES_COLUMNS = (
    "name",
    "size",
    "tilt_deg",
    "pixel_size_um",
    "working_distance_mm",
    "magnification",
    "beam_energy_kv",
    "sharpness",
    "vendor",
    "source",
)
_LABELS = {
    "relative_tilts_deg": "rel. tilt (°)",
    "reprojection_rms_px_before": "RMS before bundle adjustment (px)",
    "reprojection_rms_px_after": "RMS after bundle adjustment (px)",
    "scales": "scale",
    "tilt_deg": "tilt (°)",
    "pixel_size_um": "pixel (µm)",
    "working_distance_mm": "WD (mm)",
    "beam_energy_kv": "beam (kV)",
    "sharpness": "focus (× series median)",
    "height_resolution": "Height resolution and relief parallax",
}


def _esc(value: Any) -> str:
    """HTML-escape any value's text (quotes included)."""
    return html.escape(str(value), quote=True)


def script_json(obj: Any) -> str:
    """JSON text that is safe inside ``<script>``: ``<``, ``>``, ``&``, U+2028/9 become ``\\uXXXX``."""
    text = json.dumps(obj, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
    for ch, code in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(ch, code)
    return text


# ----------------------------------------------------------------------------------------------------
# Reading artefacts
# ----------------------------------------------------------------------------------------------------


@dataclass
class RunArtifacts:
    """What a run folder holds, read leniently: absent or unreadable items are ``None``/empty.

    ``problems`` lists human-readable statements about files that exist but could not be read.
    """

    run_dir: Path
    summary: dict[str, Any]
    config_text: str | None
    series: list[dict[str, Any]]
    problems: list[str]


def _read_json(path: Path, problems: list[str]) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        problems.append(f"{path.name} could not be read: {exc}")
        log.warning("report: %s could not be read: %s", path, exc)
        return None


def read_run(run_dir: str | Path) -> RunArtifacts:
    """Read ``summary.json``, ``config.yaml`` and ``series.json`` of a run folder (each optional)."""
    run_dir = Path(run_dir)
    problems: list[str] = []
    summary = _read_json(run_dir / "summary.json", problems)
    if summary is None and not (run_dir / "summary.json").is_file():
        problems.append("summary.json is missing: quality figures and the command are not available")
    if summary is not None and not isinstance(summary, dict):
        problems.append("summary.json does not hold a JSON object")
        summary = None
    series = _read_json(run_dir / "series.json", problems)
    if series is not None and not (isinstance(series, list) and all(isinstance(r, dict) for r in series)):
        problems.append("series.json does not hold a list of objects")
        series = None
    config_text = None
    if (run_dir / "config.yaml").is_file():
        try:
            config_text = (run_dir / "config.yaml").read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            problems.append(f"config.yaml could not be read: {exc}")
    return RunArtifacts(run_dir, summary or {}, config_text, series or [], problems)


@dataclass(frozen=True)
class ViewerData:
    """Points for the 3D view.

    ``xyz`` (N, 3) float32 in ``unit``; ``intensity`` (N,) float32 in [0, 1] or None; ``rgb`` (N, 3)
    uint8 or None; ``source`` the file read; ``kind`` "cloud" or "grid" (a height map drawn as points);
    ``n_total`` the number of valid points in the file before subsampling; ``note`` a remark shown
    under the view (e.g. unknown lateral spacing).
    """

    xyz: np.ndarray
    intensity: np.ndarray | None
    rgb: np.ndarray | None
    source: str
    kind: str
    unit: str
    n_total: int
    note: str | None = None

    def payload(self) -> dict[str, Any]:
        """The JSON data block read by ``viewer.js`` (arrays as base64 little-endian bytes).

        ``lo``/``hi`` are the 0.5th/99.5th percentiles of each axis (the box the view is fitted to),
        ``z_range`` the 1st/99th percentiles of the heights (the height colour scale).
        """
        xyz = np.ascontiguousarray(self.xyz, dtype="<f4")
        z = xyz[:, 2].astype(np.float64)
        z_lo, z_hi = (float(v) for v in np.percentile(z, [1.0, 99.0]))
        if not z_hi > z_lo:
            z_lo, z_hi = float(z.min()), float(z.max())
        return {
            "n": int(len(xyz)),
            "n_total": int(self.n_total),
            "kind": self.kind,
            "unit": "µm" if self.unit == "um" else self.unit,
            "source": self.source,
            "xyz": base64.b64encode(xyz.tobytes()).decode("ascii"),
            "intensity": None
            if self.intensity is None
            else base64.b64encode(np.ascontiguousarray(self.intensity, dtype="<f4").tobytes()).decode("ascii"),
            "rgb": None
            if self.rgb is None
            else base64.b64encode(np.ascontiguousarray(self.rgb, dtype=np.uint8).tobytes()).decode("ascii"),
            # Robust bounds (0.5th / 99.5th percentiles) frame the view; a few outliers do not shrink it.
            "lo": [float(v) for v in np.percentile(xyz, 0.5, axis=0)],
            "hi": [float(v) for v in np.percentile(xyz, 99.5, axis=0)],
            "z_range": [z_lo, z_hi],
        }


def subsample_indices(n: int, max_points: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of at most ``max_points`` of ``n`` items, drawn uniformly without replacement."""
    if n <= max_points:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=max_points, replace=False))


def _unit_from_comments(comments: Iterable[str]) -> str | None:
    for c in comments:
        parts = c.split()
        if len(parts) == 2 and parts[0] == "unit":
            return parts[1]
    return None


def _to_unit_interval(values: np.ndarray) -> np.ndarray:
    """Scale intensities to [0, 1]: integers by their type's maximum, floats above 1 by their maximum."""
    if np.issubdtype(values.dtype, np.integer):
        return values.astype(np.float32) / float(np.iinfo(values.dtype).max)
    v = values.astype(np.float32)
    top = float(np.nanmax(v)) if v.size else 1.0
    return v / top if top > 1.0 else v


def read_ply_points(path: Path, max_points: int = MAX_VIEWER_POINTS, default_unit: str = "") -> ViewerData:
    """Read a PLY cloud (x, y, z + optional intensity and red/green/blue) and subsample it.

    Unlike :func:`topograph.io.exports.read_ply` this keeps true colours (meso surfaces); grey
    ``red = green = blue`` is taken as intensity. Points with a non-finite coordinate are dropped; at
    most ``max_points`` of the rest are kept (uniformly at random, fixed seed). The unit comes from a
    ``comment unit UM`` header line, else ``default_unit``.
    """
    from plyfile import PlyData

    ply = PlyData.read(str(path))
    vertex = ply["vertex"].data
    names = set(vertex.dtype.names or ())
    if not {"x", "y", "z"} <= names:
        raise ValueError(f"{path.name} has no x, y, z vertex properties")
    xyz = np.stack([np.asarray(vertex[k], dtype=np.float64) for k in ("x", "y", "z")], axis=1)
    keep = np.flatnonzero(np.isfinite(xyz).all(axis=1))
    n_total = len(keep)
    if n_total == 0:
        raise ValueError(f"{path.name} holds no finite point")
    keep = keep[subsample_indices(n_total, max_points)]
    intensity = None
    for key in ("intensity", "scalar_intensity", "grey", "gray"):
        if key in names:
            intensity = np.clip(_to_unit_interval(np.asarray(vertex[key])[keep]), 0.0, 1.0)
            break
    rgb = None
    if {"red", "green", "blue"} <= names:
        cols = np.stack([np.asarray(vertex[k])[keep] for k in ("red", "green", "blue")], axis=1)
        rgb = np.round(np.clip(_to_unit_interval(cols), 0.0, 1.0) * 255).astype(np.uint8)
        if (rgb == rgb[:, :1]).all():  # grey copy of the intensity (as write_ply stores it)
            if intensity is None:
                intensity = rgb[:, 0].astype(np.float32) / 255.0
            rgb = None
    unit = _unit_from_comments(ply.comments) or default_unit
    return ViewerData(xyz[keep].astype(np.float32), intensity, rgb, path.name, "cloud", unit, n_total)


def read_height_map_points(path: Path, max_points: int = MAX_VIEWER_POINTS, default_unit: str = "") -> ViewerData:
    """A float height-map TIFF as a grid of points ``(c·s, −r·s, h[r, c])`` with spacing ``s``.

    Every ``k``-th row and column is kept, ``k = ceil(sqrt(H·W / max_points))``; NaN heights are
    dropped. Rows go to −y so the top view shows the map as an image. ``s`` is the TIFF's pixel size in
    µm (:func:`topograph.io.exports.read_float_tiff`), else 1 (grid cells). When ``orthomosaic.png``
    beside it has the same size, its colours are attached.
    """
    from topograph.io.exports import read_float_tiff

    height, spacing = read_float_tiff(path)
    height = np.squeeze(height)
    if height.ndim != 2:
        raise ValueError(f"{path.name} is not a single-channel 2-D height map (shape {height.shape})")
    h, w = height.shape
    n_total = int(np.isfinite(height).sum())
    if n_total == 0:
        raise ValueError(f"{path.name} holds no finite height")
    step = max(1, math.ceil(math.sqrt(h * w / max_points)))
    rows, cols = np.mgrid[0:h:step, 0:w:step]
    z = height[rows, cols]
    ok = np.isfinite(z)
    note = None
    if spacing is None:
        spacing = 1.0
        note = "no grid spacing stored in the height map: lateral axes in grid cells"
    elif default_unit and default_unit != "um":
        note = f"lateral spacing in µm, heights in {default_unit}"
    xyz = np.stack([cols[ok] * spacing, -rows[ok] * spacing, z[ok]], axis=1).astype(np.float32)
    rgb = None
    ortho = path.with_name("orthomosaic.png")
    if ortho.is_file():
        import cv2

        img = cv2.imread(str(ortho), cv2.IMREAD_COLOR)
        if img is not None and img.shape[:2] == (h, w):
            rgb = img[rows[ok], cols[ok]][:, ::-1].astype(np.uint8)
    return ViewerData(xyz, None, rgb, path.name, "grid", default_unit, n_total, note)


def load_viewer_data(run_dir: str | Path, max_points: int = MAX_VIEWER_POINTS, unit: str = "") -> ViewerData | None:
    """The first readable of :data:`VIEWER_SOURCES` in ``run_dir`` as :class:`ViewerData` (None if none)."""
    run_dir = Path(run_dir)
    for name in VIEWER_SOURCES:
        path = run_dir / name
        if not path.is_file():
            continue
        try:
            if path.suffix == ".ply":
                return read_ply_points(path, max_points, unit)
            return read_height_map_points(path, max_points, unit)
        except Exception as exc:  # noqa: BLE001 - a damaged file must not stop the report
            log.warning("report: %s could not be read for the 3D view: %s", path, exc)
    return None


# ----------------------------------------------------------------------------------------------------
# Figures
# ----------------------------------------------------------------------------------------------------


def figure_stage(stem: str) -> str:
    """Stage a figure belongs to, from its file stem (``"matches_0_1"`` → ``"Matching"``)."""
    tokens = [t for t in re.split(r"[_\-\s.]+", stem.lower()) if t]
    for stage, keywords in _STAGE_RULES:
        if any(t.startswith(k) for t in tokens for k in keywords):
            return stage
    return _OTHER_STAGE


def figure_caption(stem: str, names: list[str] | None = None) -> str:
    """Caption from a figure's file stem: ``"matches_0_1"`` → ``"Matches, view 0 ↔ 1"``.

    With image ``names``, the pair's names are added in brackets. Other stems are turned into words
    (``"loss_curve"`` → ``"Loss curve"``). The result is plain text (escape it for HTML).
    """
    m = re.fullmatch(r"matches_(\d+)_(\d+)", stem)
    if m:
        i, j = int(m.group(1)), int(m.group(2))
        text = f"Matches, view {i} ↔ {j}"
        if names and i < len(names) and j < len(names):
            text += f" ({names[i]} ↔ {names[j]})"
        return text
    if stem in _KNOWN_CAPTIONS:
        return _KNOWN_CAPTIONS[stem]
    words = " ".join(t for t in re.split(r"[_\-\s]+", stem) if t)
    return (words[:1].upper() + words[1:]) if words else stem


def _natural_key(path: Path) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name.lower())]


def find_figures(run_dir: Path) -> list[Path]:
    """Image files in ``run_dir/figures`` and at the top level of ``run_dir``, in natural order."""
    found: list[Path] = []
    for folder in (run_dir / "figures", run_dir):
        if folder.is_dir():
            files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
            found += sorted((p for p in files if not p.name.startswith(".")), key=_natural_key)
    return found


def jpeg_data_uri(path: Path, quality: int = 85) -> tuple[str | None, str | None]:
    """A raster image re-encoded as JPEG (at most :data:`MAX_EMBED_SIDE` px on the long side) as a data URI.

    Photographs with overlays (match figures) shrink about tenfold against PNG at no loss a reader sees.
    """
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        return image_data_uri(path)
    h, w = img.shape[:2]
    s = min(1.0, MAX_EMBED_SIDE / max(h, w))
    if s < 1.0:
        img = cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        return image_data_uri(path)
    note = f"downscaled from {w}×{h} px for the report" if s < 1.0 else None
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode("ascii"), note


def image_data_uri(path: Path) -> tuple[str | None, str | None]:
    """``(data URI, note)`` for an image file; large raster images are downscaled first.

    Files up to :data:`MAX_EMBED_BYTES` are embedded byte for byte. Larger PNG/JPEG files are reduced
    to :data:`MAX_EMBED_SIDE` pixels on the long side and re-encoded (the note says so). An unreadable
    file gives ``(None, reason)``.
    """
    mime = IMAGE_SUFFIXES[path.suffix.lower()]
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return None, f"could not be read: {exc}"
    note = None
    if len(raw) > MAX_EMBED_BYTES and mime != "image/svg+xml":
        import cv2

        img = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_UNCHANGED)
        if img is None:
            return None, "could not be decoded"
        h, w = img.shape[:2]
        s = min(1.0, MAX_EMBED_SIDE / max(h, w))
        if s < 1.0:
            img = cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
        if img.dtype != np.uint8:
            img = cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
        ok, buf = cv2.imencode(".png", img)
        if ok and buf.nbytes > MAX_EMBED_BYTES:
            ok, buf = cv2.imencode(".jpg", img[..., :3] if img.ndim == 3 else img, [cv2.IMWRITE_JPEG_QUALITY, 90])
            mime = "image/jpeg"
        else:
            mime = "image/png"
        if not ok:
            return None, "could not be re-encoded"
        raw = buf.tobytes()
        note = f"downscaled from {w}×{h} px for the report"
    return f"data:{mime};base64,{base64.b64encode(raw).decode('ascii')}", note


def _chart_uri(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _new_figure(width: float = 6.4, height: float = 3.2) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    return fig, fig.add_subplot(1, 1, 1)


def residual_chart(labels: list[str], series: dict[str, list[float | None]]) -> str:
    """Grouped bar chart of per-view values (e.g. RMS before/after bundle adjustment) as an SVG data URI."""
    return bar_chart(labels, series, "reprojection RMS (px)")


def tilt_chart(recovered: list[float | None], metadata: list[float | None] | None) -> str:
    """Recovered relative tilt per view (and the metadata's, relative to view 0) as an SVG data URI."""
    series: dict[str, list[float | None]] = {"recovered": list(recovered)}
    if metadata is not None:
        series["metadata"] = list(metadata)
    return line_chart(list(range(len(recovered))), series, "tilt relative to view 0 (°)")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# ----------------------------------------------------------------------------------------------------
# HTML pieces
# ----------------------------------------------------------------------------------------------------


def _fmt(v: Any) -> str:
    """Plain text for one value (not escaped)."""
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (dict, list)):
        text = json.dumps(v, separators=(", ", ": "), ensure_ascii=False, default=str)
        return text if len(text) <= 300 else text[:297] + "…"
    text = str(v)
    return text if len(text) <= 300 else text[:297] + "…"


def _fmt_list(values: list[Any]) -> str:
    if all(_is_number(v) or v is None for v in values):
        if len(values) <= 12:
            return ", ".join(_fmt(v) for v in values)
        nums = [float(v) for v in values if v is not None]
        if nums:
            return f"{len(values)} values, {min(nums):.4g} … {max(nums):.4g}"
    if all(isinstance(v, list) for v in values):
        return f"{len(values)} × {max(len(v) for v in values) if values else 0} values"
    return _fmt(values)


def _label(key: str) -> str:
    return _LABELS.get(key) or human_label(key)


def _table(header: list[str], rows: list[list[str]], cls: str = "") -> str:
    """An HTML table from already-escaped cell HTML."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _flatten(prefix: str, obj: Any, rows: list[tuple[str, str]]) -> None:
    if isinstance(obj, dict):
        if not obj:
            rows.append((prefix, "—"))
        for k, v in obj.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, rows)
    elif isinstance(obj, list):
        rows.append((prefix, _fmt_list(obj)))
    else:
        rows.append((prefix, _fmt(obj)))


def _readable(obj: Any) -> Any:
    """Metric entries ``{"value", "unit", "relies_on_underside"}`` as one text (``"2.1e+08 µm³ (includes the
    unseen underside)"``); the list of such metrics is dropped (each entry says it)."""
    if not isinstance(obj, dict):
        return obj
    if "value" in obj and "unit" in obj and set(obj) <= {"value", "unit", "relies_on_underside", "definition"}:
        text = f"{_fmt(obj['value'])} {unit_text(obj.get('unit'))}".strip()
        if obj.get("relies_on_underside"):
            text += " (includes the unseen underside)"
        return text
    return {k: _readable(v) for k, v in obj.items() if not (k == "relies_on_underside" and isinstance(v, list))}


def key_value_table(obj: dict[str, Any], human: bool = True) -> str:
    """A two-column table of a (nested) dict; all text escaped.

    With ``human`` the keys read as labels (``"grain_metrics.volume.relies_on_underside"`` → ``"Grain
    metrics › Volume › Relies on the unseen underside"``); without, as the dotted keys of the JSON file.
    """
    rows: list[tuple[str, str]] = []
    _flatten("", _readable(obj) if human else obj, rows)
    if human:
        return _table(["quantity", "value"], [[_esc(human_label(k)), _esc(v)] for k, v in rows], "kv")
    return _table(["key", "value"], [[f"<code>{_esc(k)}</code>", _esc(v)] for k, v in rows], "kv")


def _per_view_keys(summary: dict[str, Any], n: int) -> list[str]:
    if n == 0:
        return []
    return [
        k
        for k, v in summary.items()
        if k not in _SECTION_KEYS
        and isinstance(v, list)
        and len(v) == n
        and all(_is_number(a) or a is None for a in v)
        and any(_is_number(a) for a in v)
    ]


def _series_names(run: RunArtifacts) -> list[str]:
    images = run.summary.get("images")
    if isinstance(images, list) and images:
        return [str(v) for v in images]
    return [str(r.get("name", f"image {k}")) for k, r in enumerate(run.series)]


def _section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{anchor}"><h2>{_esc(title)}</h2>{body}</section>'


def _figure(uri: str | None, caption: str, file_label: str, note: str | None = None) -> str:
    img = f'<img src="{uri}" alt="{_esc(caption)}" loading="lazy">' if uri else '<div class="missing">unreadable</div>'
    extra = f" — {_esc(note)}" if note else ""
    label = f'<span class="file">{_esc(file_label)}</span>'
    return f"<figure>{img}<figcaption>{_esc(caption)} {label}{extra}</figcaption></figure>"


def header_html(run: RunArtifacts, built: str) -> str:
    s = run.summary
    engine = s.get("engine")
    facts = [
        ("engine", engine),
        ("topograph", s.get("topograph_version")),
        ("images", len(_series_names(run)) or None),
        ("unit", "µm" if s.get("unit") == "um" else s.get("unit")),
        ("total time (s)", (s.get("timings_s") or {}).get("total") if isinstance(s.get("timings_s"), dict) else None),
        ("report built", built),
    ]
    items = "".join(f"<span><b>{_esc(k)}</b> {_esc(_fmt(v))}</span>" for k, v in facts if v is not None)
    title = f"topograph {engine} run" if engine else "topograph run"
    failed = ""
    if s.get("status") == "failed":  # the run's quality gates failed: say so before anything else
        title = f"FAILED: {title}"
        sem_reasons = [x for x in (s.get("camera_model_failure"), s.get("relief_failure")) if x]
        lines = (s.get("quality_gates") or {}).get("failed") or sem_reasons
        failed = '<div class="problems"><b>This run failed its quality gates; do not use its result.</b><ul>'
        failed += "".join(f"<li>{_esc(x)}</li>" for x in lines) + "</ul></div>"
    return f'<header><h1>{_esc(title)} — {_esc(run.run_dir.name)}</h1>{failed}<div class="facts">{items}</div></header>'


def problems_html(run: RunArtifacts) -> str:
    if not run.problems:
        return ""
    return '<div class="problems"><ul>' + "".join(f"<li>{_esc(p)}</li>" for p in run.problems) + "</ul></div>"


def reproduce_html(run: RunArtifacts) -> str:
    """Collapsed at the end: the command and configuration, every value of summary.json by key, timings."""
    command = run.summary.get("command")
    parts = ["<details><summary>Reproduce this run: command and configuration</summary>", "<h3>Command</h3>"]
    parts.append(f"<pre>{_esc(command)}</pre>" if command else '<p class="muted">no command recorded</p>')
    parts.append("<h3>Configuration (config.yaml)</h3>")
    if run.config_text is not None:
        parts.append(f"<pre>{_esc(run.config_text)}</pre>")
    else:
        parts.append('<p class="muted">no config.yaml in this run folder</p>')
    parts.append("</details>")
    raw = {k: v for k, v in run.summary.items() if k not in ("command",)}
    if raw:
        parts.append("<details><summary>All values of summary.json, by key</summary>")
        parts.append(key_value_table(raw, human=False) + "</details>")
    timings = _timings(run.summary)
    if timings:
        parts.append("<details><summary>Timings (s)</summary>" + key_value_table(timings) + "</details>")
    return _section("reproduce", "Reproduce, raw values and timings", "".join(parts))


def _timings(summary: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(summary.get("timings_s"), dict):
        out.update(summary["timings_s"])
    for k, v in summary.items():
        if isinstance(v, dict) and isinstance(v.get("timings_s"), dict):
            out[k] = v["timings_s"]
    return out


def inputs_html(run: RunArtifacts) -> str:
    names = _series_names(run)
    parts = []
    thumbs_dir = run.run_dir / "thumbnails"
    thumbs = sorted((p for p in thumbs_dir.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES), key=_natural_key)
    if thumbs:
        cells = []
        for p in thumbs:
            m = re.match(r"(\d+)_", p.name)
            k = int(m.group(1)) if m else None
            caption = f"{k}: {names[k]}" if k is not None and k < len(names) else p.stem
            uri, note = image_data_uri(p)
            cells.append(_figure(uri, caption, p.name, note))
        parts.append(f'<div class="thumbs">{"".join(cells)}</div>')
    if run.series:
        columns = [c for c in _SERIES_COLUMNS if any(c in r for r in run.series)]
        columns += list(dict.fromkeys(k for r in run.series for k in r if k not in columns))
        rows = [[_esc(k)] + [_esc(_fmt(r.get(c))) for c in columns] for k, r in enumerate(run.series)]
        parts.append("<h3>Metadata found</h3>")
        parts.append(_table(["#"] + [_esc(_label(c)) for c in columns], rows, "series"))
    elif names:
        parts.append("<ul>" + "".join(f"<li>{_esc(n)}</li>" for n in names) + "</ul>")
    if not parts:
        parts.append('<p class="muted">no thumbnails, series.json or image list in this run folder</p>')
    return _section("inputs", "Inputs", "".join(parts))


def notes_html(run: RunArtifacts) -> str:
    """The run's notes (how the cameras and the relief were decided); the warnings are on the results card."""
    items = run.summary.get("notes")
    if not (isinstance(items, list) and items):
        return ""
    body = "<ul>" + "".join(f"<li>{_esc(_fmt(v))}</li>" for v in items) + "</ul>"
    return _section("notes", "Notes", body)


def match_matrix_html(counts: Any, names: list[str]) -> str:
    """The match-count matrix as a shaded HTML table ('' when ``counts`` is not a square numeric matrix)."""
    if not (isinstance(counts, list) and counts and all(isinstance(r, list) and len(r) == len(counts) for r in counts)):
        return ""
    if not all(_is_number(v) or v is None for r in counts for v in r):
        return ""
    n = len(counts)
    top = max([float(v) for r in counts for v in r if v is not None] + [1.0])
    labels = [names[k] if k < len(names) else str(k) for k in range(n)]
    rows = []
    for i, r in enumerate(counts):
        cells = [f"<b>{_esc(i)}</b> {_esc(labels[i])}"]
        for v in r:
            alpha = 0.0 if v is None else 0.85 * float(v) / top
            cells.append(f'<span class="cell" style="background: rgba(44,113,142,{alpha:.2f})">{_esc(_fmt(v))}</span>')
        rows.append(cells)
    return "<h3>Matches per image pair</h3>" + _table(["view"] + [_esc(k) for k in range(n)], rows, "matrix")


def registration_html(summary: dict[str, Any]) -> str:
    """The meso run's per-image registration table (worst NCC first), or '' without one."""
    gates = summary.get("quality_gates")
    rows = gates.get("registration") if isinstance(gates, dict) else None
    if not (isinstance(rows, list) and rows and all(isinstance(r, dict) for r in rows)):
        return ""
    limit = next((g.get("threshold") for g in gates.get("gates", []) if g.get("step") == "registration"), None)

    def key(r: dict[str, Any]) -> float:
        v = r.get("ncc_with_mosaic")
        return float(v) if _is_number(v) else -1e9

    body = []
    for r in sorted(rows, key=key):
        v = r.get("ncc_with_mosaic")
        ok = _is_number(v) and (limit is None or float(v) >= float(limit))
        mark = '<span class="ok">pass</span>' if ok else "<b>FAIL</b>"
        body.append([_esc(r.get("image")), _esc(_fmt(v)), _esc(_fmt(r.get("overlap"))),
                     _esc(_fmt(r.get("residual_px"))), mark])  # fmt: skip
    head = f"<h3>Registration per image (worst first; gate: NCC ≥ {_esc(_fmt(limit))})</h3>"
    note = (
        '<p class="muted">NCC: band-passed grey values of the image against the mosaic of the other images, '
        "over the part they cover (covered). Residual: median misfit of its feature matches under the final "
        "cameras, in image pixels (relief adds its parallax).</p>"
    )
    return head + note + _table(["image", "NCC", "covered", "residual px", "gate"], body, "series")


def quality_html(run: RunArtifacts) -> str:
    s = run.summary
    names = _series_names(run)
    parts = [registration_html(s)]
    per_view = _per_view_keys(s, len(names))
    if per_view:
        rows = [[_esc(k), _esc(names[k])] + [_esc(_fmt(s[c][k])) for c in per_view] for k in range(len(names))]
        parts.append("<h3>Per view</h3>")
        parts.append(_table(["#", "image"] + [_esc(_label(c)) for c in per_view], rows, "series"))
    charts = []
    rms = {k: s[k] for k in per_view if k.startswith("reprojection_rms")}
    if rms:
        series = {k.removeprefix("reprojection_rms_px_"): v for k, v in rms.items()}  # short legend: before/after
        caption = "Reprojection RMS per view, before and after bundle adjustment"
        charts.append(_figure(residual_chart([str(k) for k in range(len(names))], series), caption, ""))
    if "relative_tilts_deg" in per_view:
        meta = [r.get("tilt_deg") for r in run.series] if len(run.series) == len(names) else None
        if meta is not None and _is_number(meta[0]):
            meta = [float(v) - float(meta[0]) if _is_number(v) else None for v in meta]
        else:
            meta = None
        charts.append(_figure(tilt_chart(s["relative_tilts_deg"], meta), "Recovered tilts", ""))
    if charts:
        parts.append(f'<div class="figs">{"".join(charts)}</div>')
    parts.append(match_matrix_html(s.get("match_counts"), names))
    scalars = {k: v for k, v in s.items() if k not in _SECTION_KEYS and k not in per_view and not isinstance(v, dict)}
    if scalars:
        parts.append("<h3>Figures of merit</h3>" + key_value_table(scalars))
    for k, v in s.items():
        if k not in _SECTION_KEYS and isinstance(v, dict):
            shown = {kk: vv for kk, vv in v.items() if kk != "timings_s"}  # timings are collapsed at the end
            parts.append(f"<h3>{_esc(_label(k))}</h3>" + key_value_table(shown))
    body = "".join(parts)
    return _section("quality", "Quality", body) if body else ""


def mesh_payload(grid: HeightGrid) -> dict[str, Any]:
    """The viewer's data block for a height-field mesh: the reduced grid, its box and its height range.

    ``viewer.js`` builds the vertices (x = c·cell, y = −r·cell, z) and two triangles per grid cell whose
    four corners have a height, shaded by a fixed light, coloured by height or by the orthomosaic.
    """
    g = grid.payload()
    z = grid.z
    rows, cols = z.shape
    cell = g["cell"]
    finite = z[np.isfinite(z)]
    z_lo, z_hi = (float(v) for v in np.percentile(finite, [0.5, 99.5]))
    return {
        "kind": "mesh",
        "grid": g,
        "n": int(finite.size),
        "n_total": int(grid.values.size),
        "unit": grid.unit,
        "source": grid.source,
        "lo": [0.0, -(rows - 1) * cell, z_lo],
        "hi": [(cols - 1) * cell, 0.0, z_hi],
        "z_range": [grid.p01, grid.p99],
    }


def viewer_html(data: ViewerData | None, grid: HeightGrid | None = None, anchor: str = "view3d") -> str:
    """The orbit viewer: a shaded mesh of the height map when there is one, else the cloud's points."""
    if data is None and grid is None:
        body = '<p class="muted">no dense.ply, surface.ply, height_map.tif or sparse.ply in this run folder</p>'
        return f'<div id="{anchor}">{body}</div>'
    options = ['<option value="height">height</option>']
    if grid is not None:
        payload = mesh_payload(grid)
        if grid.rgb is not None:
            options.append('<option value="rgb" selected>image colour</option>')
        cells = f"{grid.z.shape[1]}×{grid.z.shape[0]} grid"
        sub = f"surface mesh on a {cells} (every {grid.step}. pixel of the height map)"
        note = "" if grid.spacing is not None else "<br>no pixel size in the height map: lateral axes in pixels"
        what = f"{_esc(grid.source)}: {_esc(sub)}, unit {_esc(grid.unit)}{note}"
    else:
        assert data is not None
        payload = data.payload()
        if data.intensity is not None:
            options.append('<option value="intensity">intensity</option>')
        if data.rgb is not None:
            options.append('<option value="rgb" selected>image colour</option>')
        kind = "height map drawn as points" if data.kind == "grid" else "point cloud"
        n = payload["n"]
        sub = f"{n:,} of {data.n_total:,} points" if data.n_total > n else f"{n:,} points"
        note = f"<br>{_esc(data.note)}" if data.note else ""
        what = f"{_esc(data.source)}: {_esc(kind)}, {_esc(sub)}{', unit ' + _esc(data.unit) if data.unit else ''}{note}"
    return (
        f'<div id="{anchor}" class="viewer" data-topograph-viewer>'
        '<canvas width="720" height="480"></canvas>'
        '<div class="controls">'
        f'<label>colour <select data-role="colour">{"".join(options)}</select></label>'
        '<label>point size <input data-role="point-size" type="range" min="1" max="6" step="1" value="2"></label>'
        '<label>relief × <span data-role="relief-value">1</span> '
        '<input data-role="relief" type="range" min="-0.5" max="3" step="0.05" value="0"></label>'
        '<span data-role="legend" class="legend"></span>'
        "</div>"
        '<p class="muted" data-role="status">3D view needs JavaScript</p>'
        f'<p class="muted">{what}</p>'
        f'<script type="application/json">{script_json(payload)}</script>'
        "</div>"
    )


def profile_html(grid: HeightGrid) -> str:
    """The height map with a line profile the reader places by clicking two points (drawn by viewer.js)."""
    uri = height_map_png_uri(grid)
    return (
        '<div class="profile" data-topograph-profile>'
        f'<div class="map"><img src="{uri}" alt="height map"><canvas></canvas></div>'
        '<div class="profile-chart" data-role="chart"></div>'
        '<p class="muted" data-role="profile-status">click two points on the height map to place the profile</p>'
        "</div>"
    )


def results_card_html(run: RunArtifacts, viewer: ViewerData | None, grid: HeightGrid | None) -> str:
    """The first thing a reader sees: height map, 3D view, the measured numbers, warnings, histogram, profile."""
    measures = headline_measures(run.summary, run.run_dir, grid)
    rows = []
    notes: list[str] = []
    for m in measures:
        mark = ""
        if m.footnote:
            if m.footnote not in notes:
                notes.append(m.footnote)
            mark = f"<sup>{notes.index(m.footnote) + 1}</sup>"
        rows.append(f"<tr><th>{_esc(m.label)}{mark}</th><td>{_esc(m.text())}</td></tr>")
    table = f'<table class="measures"><tbody>{"".join(rows)}</tbody></table>' if rows else ""
    foot = "".join(f'<p class="muted"><sup>{k + 1}</sup> {_esc(n)}</p>' for k, n in enumerate(notes))
    if not rows:
        table = '<p class="muted">no measured values in this run folder (summary.json, height_map.tif)</p>'
    warnings = run.summary.get("warnings")
    if isinstance(warnings, list) and warnings:
        warn = '<h3>Warnings</h3><ul class="warn">' + "".join(f"<li>{_esc(_fmt(w))}</li>" for w in warnings) + "</ul>"
    elif "warnings" in run.summary:
        warn = '<p class="ok">no warnings</p>'
    else:
        warn = ""
    view3d = viewer_html(viewer, grid, "view3d")
    left = f'<div class="card-numbers"><h3>Measured</h3>{table}{foot}{warn}</div>'
    right = f'<div class="card-view"><h3>3D view</h3>{view3d}</div>'
    lower = ""
    if grid is not None:
        hist = histogram_svg(grid.values, grid.unit or "unit")
        lower = (
            '<div class="card-row">'
            f"<div><h3>Height map and line profile</h3>{profile_html(grid)}</div>"
            f'<div><h3>Height histogram</h3><figure class="hist">{hist}'
            f"<figcaption>{_esc(f'{grid.values.size:,} heights of {grid.source}')}</figcaption></figure></div>"
            "</div>"
        )
    body = f'<div class="card-row">{left}{right}</div>{lower}'
    return f'<section id="results" class="card"><h2>Result</h2>{body}</section>'


def figures_html(run: RunArtifacts) -> str:
    names = _series_names(run)
    groups: dict[str, list[str]] = {}
    for path in find_figures(run.run_dir):
        stem = path.stem
        photo = stem.startswith("matches_") and path.suffix.lower() == ".png"  # runs before JPEG match figures
        uri, note = jpeg_data_uri(path) if photo else image_data_uri(path)
        label = str(path.relative_to(run.run_dir))
        groups.setdefault(figure_stage(stem), []).append(_figure(uri, figure_caption(stem, names), label, note))
    if not groups:
        return ""
    order = [name for name, _ in _STAGE_RULES] + [_OTHER_STAGE]
    body = "".join(
        f'<h3>{_esc(stage)}</h3><div class="figs">{"".join(groups[stage])}</div>' for stage in order if stage in groups
    )
    return _section("figures", "Figures", body)


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d2127;background:#f6f7f9}
header{background:#1b1e23;color:#eef;padding:14px 24px}
header h1{margin:0 0 6px;font-size:20px;font-weight:600}
.facts span{margin-right:18px;font-size:13px;color:#c8cdd6}.facts b{color:#fff;font-weight:600}
nav{padding:6px 24px;background:#e6e9ee;font-size:13px}nav a{margin-right:14px;color:#2c5f8a}
main{padding:0 24px 40px;max-width:1500px}
section{margin-top:22px}h2{font-size:17px;border-bottom:1px solid #ccd;padding-bottom:4px}h3{font-size:14px}
pre{background:#fff;border:1px solid #dde;padding:10px;overflow:auto;max-height:420px;font-size:12px;
white-space:pre-wrap}
table{border-collapse:collapse;background:#fff;font-size:12.5px;margin-bottom:10px}
td,th{border:1px solid #dde;padding:3px 8px;text-align:left;vertical-align:top}th{background:#eef1f5}
table.matrix td{text-align:right}.cell{display:inline-block;min-width:42px;padding:1px 4px}
.figs,.thumbs{display:flex;flex-wrap:wrap;gap:14px}
figure{margin:0;background:#fff;border:1px solid #dde;padding:6px;max-width:100%}
figure img{display:block;max-width:min(720px,100%);height:auto}
.thumbs figure img{max-width:200px}
figcaption{font-size:12px;margin-top:4px}.file{color:#889;font-family:monospace;font-size:11px}
.muted{color:#667}.warn li{color:#8a4b00}
.problems{background:#fff3e0;border:1px solid #f0b070;padding:4px 14px;margin-top:14px}
.viewer canvas{background:#1b1e23;max-width:100%;height:auto;cursor:grab;touch-action:none;display:block}
.controls{display:flex;flex-wrap:wrap;gap:16px;align-items:center;margin-top:6px;font-size:13px}
.legend{display:inline-flex;align-items:center;gap:6px}.colourbar{display:inline-block;width:160px;height:12px}
.card{background:#fff;border:1px solid #ccd;border-radius:6px;padding:4px 18px 14px;margin-top:18px}
.card-row{display:flex;flex-wrap:wrap;gap:24px;align-items:flex-start}.card-row>div{flex:1 1 420px;min-width:0}
table.measures th{background:#f4f6f9;font-weight:600;max-width:320px}
table.measures td{font-size:14px;white-space:nowrap}
.ok{color:#2d6a2d}.hist svg{max-width:100%;height:auto}
.profile .map{position:relative;width:min(560px,100%);cursor:crosshair}
.profile .map img{display:block;width:100%;height:auto;image-rendering:pixelated}
.profile .map canvas{position:absolute;left:0;top:0;width:100%;height:100%;pointer-events:none}
.profile-chart svg{max-width:100%;height:auto;background:#fff}
details{margin:8px 0}details summary{cursor:pointer;font-weight:600}
"""

# Records script errors in the page (data-js-errors on <html>) so a headless browser can check them.
_ERROR_HOOK_JS = """
(function(){var n=0;function note(){n++;document.documentElement.setAttribute("data-js-errors",String(n));}
window.addEventListener("error",note);window.addEventListener("unhandledrejection",note);})();
"""


def build_report(run_dir: str | Path) -> str:
    """The complete HTML text of the report of ``run_dir`` (see the module docstring for what it reads)."""
    run = read_run(run_dir)
    unit = run.summary.get("unit") if isinstance(run.summary.get("unit"), str) else ""
    height_unit = run.summary.get("height_unit") if isinstance(run.summary.get("height_unit"), str) else unit
    grid = load_height_grid(run.run_dir, height_unit, with_areal=not has_areal_parameters(run.summary, run.run_dir))
    viewer = None if grid is not None else load_viewer_data(run.run_dir, unit=unit)
    built = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    nonce = secrets.token_urlsafe(16)
    csp = f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'nonce-{nonce}'"
    sections = [
        results_card_html(run, viewer, grid),
        notes_html(run),
        quality_html(run),
        inputs_html(run),
        figures_html(run),
        reproduce_html(run),
    ]
    sections = [s for s in sections if s]
    nav = "".join(
        f'<a href="#{a}">{t}</a>'
        for a, t in (
            ("results", "Result"),
            ("notes", "Notes"),
            ("quality", "Quality"),
            ("inputs", "Inputs"),
            ("figures", "Figures"),
            ("reproduce", "Reproduce"),
        )
        if any(f'<section id="{a}"' in s for s in sections)
    )
    engine = run.summary.get("engine")
    title = f"topograph {engine or ''} report — {run.run_dir.name}"
    viewer_js = _VIEWER_JS.read_text(encoding="utf-8") if viewer is not None or grid is not None else ""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>{_esc(title)}</title>"
        f"<style>{_CSS}</style>"
        f'<script nonce="{nonce}">{_ERROR_HOOK_JS}</script>'
        "</head><body>"
        f"{header_html(run, built)}<nav>{nav}</nav><main>{problems_html(run)}{''.join(sections)}</main>"
        + (f'<script nonce="{nonce}">{viewer_js}</script>' if viewer_js else "")
        + "</body></html>\n"
    )


def check_run_dir(run_dir: str | Path, require_summary: bool = False) -> Path:
    """``run_dir`` as a Path; TopographError when it is not a folder (or, if asked, has no summary.json)."""
    path = Path(run_dir)
    if not path.is_dir():
        raise TopographError(f"run folder {path} does not exist", "pass the -o/--out folder of a topograph run")
    if require_summary and not (path / "summary.json").is_file():
        raise TopographError(
            f"{path} holds no summary.json, so it is not a topograph run folder",
            "pass the -o/--out folder of a finished `topograph sem` or `topograph meso` run",
        )
    return path


def write_report(run_dir: str | Path) -> Path:
    """Write ``run_dir/report.html`` (atomically) from the run's saved artefacts and return its path.

    Absent items are left out of the report; unreadable ones are listed at its top. Raises
    :class:`~topograph.errors.TopographError` only when ``run_dir`` is not a folder.
    """
    path = check_run_dir(run_dir)
    text = build_report(path)
    out = write_text(path / REPORT_NAME, text)
    log.info("report written to %s (%.1f MB)", out, len(text.encode("utf-8")) / 1e6)
    return out
