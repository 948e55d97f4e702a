"""Writing a mesoscopic reconstruction to disk (every file through :mod:`topograph.io.exports`).

Units follow the one policy of both engines: micrometres when the scale is known (lateral and height),
else mosaic pixels (``px``). Files in the output folder:

* ``orthomosaic.png`` (RGBA, transparent where no image) and ``orthomosaic.tif`` (RGB, resolution in µm)
* ``height_map.tif`` (float32 ImageJ TIFF, µm or px, NaN where fewer than ``output.min_views`` images
  overlap) and ``height_map.gwy`` (Gwyddion); ``height_map.png``: colour map with colour and scale bars
* ``surface.ply``: the height field as a triangle mesh with vertex colours in the mosaic frame (:data:`FRAME`)
* ``cameras.json``: poses, focal length, distortion profile and centre, scale, and the frame
* ``loss.png``, ``distortion.png``: figures; ``history.csv``: loss per iteration
* ``registration.csv`` (per-image registration NCC and residual) and ``registration_seams.png`` (seams and
  the disagreement of overlapping images)
* ``input_checks.json``: sharpness, overlap matrix, EXIF drift warnings; ``config.yaml``: resolved config
* ``summary.json``: engine, command, version, units, frame, pixel size, scale source, quality, timings
* ``series.json`` and ``thumbnails/``: the inputs (:func:`write_inputs`)
"""

from __future__ import annotations

import dataclasses
import io
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from topograph import __version__
from topograph.config import to_yaml
from topograph.io.atomic import write_json, write_text
from topograph.io.exports import write_height_map, write_mesh_ply, write_png, write_rgb_tiff
from topograph.meso.optimise.history import History
from topograph.meso.quality import registration_csv, registration_rows
from topograph.meso.reconstruct import MesoReconstruction
from topograph.meso.types import MesoImages
from topograph.report.meso_figures import distortion_figure, height_figure, loss_figure, seam_figure

log = logging.getLogger("topograph")

FRAME = (
    "mosaic frame: x to the right and y up the orthomosaic (y = −row), z = height above the dominant plane "
    "toward the cameras (right-handed); x, y of mosaic pixel (col, row) = origin + pixel_size · (col, −row)"
)
"""The frame of ``surface.ply`` and of the camera positions in ``cameras.json`` (``position_output``)."""

FIGURE_MAX_SIDE = 2000
"""Cells along the long side of the height-map figure (the mosaic is sampled with a stride above it)."""


def write_orthomosaic(out: Path, rgb: np.ndarray, valid: np.ndarray, pixel_size_um: float | None) -> list[Path]:
    """``orthomosaic.png`` (RGBA) and ``orthomosaic.tif`` (RGB uint8, calibrated in µm when known)."""
    rgba = np.empty((*rgb.shape[:2], 4), np.uint8)
    rows = max(1, (1 << 20) // max(1, rgb.shape[1]))  # float temporaries for a band of rows, not the mosaic
    for r0 in range(0, rgb.shape[0], rows):
        rgba[r0 : r0 + rows, :, :3] = np.clip(np.round(rgb[r0 : r0 + rows] * 255.0), 0, 255)
        rgba[r0 : r0 + rows, :, 3] = np.where(valid[r0 : r0 + rows], 255, 0)
    u8 = rgba[..., :3]
    return [write_png(out / "orthomosaic.png", rgba), write_rgb_tiff(out / "orthomosaic.tif", u8, pixel_size_um)]


def height_field_mesh(
    height: np.ndarray,
    rgb: np.ndarray,
    pixel_size: float,
    origin: tuple[float, float],
    z_scale: float,
    max_vertices: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Coloured triangle mesh of a height field, by the one mesher of both engines
    (:func:`topograph.analysis.mesh.heightfield_mesh`) on a grid decimated to at most ``max_vertices``.

    Args:
        height: (H, W) heights (NaN = none).
        rgb: (H, W, 3) colours in [0, 1].
        pixel_size: lateral spacing of the cells.
        origin: lateral position of cell (0, 0).
        z_scale: factor taking heights to the lateral unit.
        max_vertices: decimate with a stride so that at most this many vertices are used.

    Returns:
        ``(xyz (V, 3) float32, colours (V, 3) uint8, faces (F, 3) int32)``; empty when no cell has four
        valid corners.
    """
    from topograph.analysis.mesh import heightfield_mesh
    from topograph.errors import TopographError

    h, w = height.shape
    stride = max(1, int(np.ceil(np.sqrt(h * w / max(1, max_vertices)))))
    step = pixel_size * stride
    try:
        mesh = heightfield_mesh(height[::stride, ::stride] * z_scale, step, origin)
    except TopographError:  # no cell with four valid corners
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8), np.zeros((0, 3), np.int32)
    v = np.asarray(mesh.vertices)
    cols = np.rint((v[:, 0] - origin[0]) / step).astype(np.int64)
    rows = np.rint((v[:, 1] - origin[1]) / step).astype(np.int64)
    colours = np.clip(np.round(rgb[::stride, ::stride][rows, cols] * 255), 0, 255).astype(np.uint8)
    return v.astype(np.float32), colours, np.asarray(mesh.faces, dtype=np.int32)


def _history_csv(history: History) -> str:
    buf = io.StringIO()
    buf.write("level,iteration,loss,mse_rgb,mse_height,tv\n")
    for r in history:
        buf.write(f"{r.level},{r.iteration},{r.loss:.6e},{r.mse_rgb:.6e},{r.mse_height:.6e},{r.tv:.6e}\n")
    return buf.getvalue()


def run_quality(rec: MesoReconstruction) -> dict[str, Any]:
    """Quality figures a run can state without ground truth: the final loss terms, the share of the
    mosaic seen by at least ``min_views`` images, and the mean number of images per mosaic pixel."""
    last = rec.history[-1] if rec.history else None
    cell_area = rec.grid.cell**2
    seen = rec.weight > 0.25 * cell_area
    return {
        "final_loss": last.loss if last else None,
        "final_mse_rgb": last.mse_rgb if last else None,
        "final_mse_height": last.mse_height if last else None,
        "iterations": len(rec.history),
        "height_coverage": float(np.isfinite(rec.height).mean()) if rec.height.size else 0.0,
        "mean_images_per_pixel": float((rec.weight[seen] / cell_area).mean()) if seen.any() else 0.0,
    }


def write_inputs(images: MesoImages, out_dir: str | Path) -> list[Path]:
    """``series.json`` (names, size, EXIF facts) and ``thumbnails/`` of the input images."""
    from topograph.report.thumbnails import write_thumbnails

    out = Path(out_dir)
    h, w = images.pixels.shape[1:3]
    series = [
        {"name": name, "width_px": int(w), "height_px": int(h), **dataclasses.asdict(exif)}
        for name, exif in zip(images.names, images.exif, strict=True)
    ]
    return [
        write_json(out / "series.json", series),
        *write_thumbnails(list(images.pixels), list(images.names), out / "thumbnails"),
    ]


def write_registration(rec: MesoReconstruction, out: Path) -> dict[str, Path]:
    """``registration.csv`` (per image, worst NCC first: NCC with the mosaic of the others, covered share,
    feature residual in px, gate passed) and ``registration_seams.png`` (:func:`seam_figure`)."""
    rows = registration_rows(rec.names, rec.quality, rec.config.checks.min_registration_ncc)
    files = {"registration_csv": write_text(out / "registration.csv", registration_csv(rows))}
    if rec.seams is not None:
        labels = [n.rsplit(".", 1)[0] for n in rec.names]
        s = rec.seams
        files["seams_png"] = seam_figure(s.grey, s.owner, s.disagreement, labels, out / "registration_seams.png")
    return files


def write_outputs(rec: MesoReconstruction, out_dir: str | Path, command: str | None = None) -> dict[str, Path]:
    """Write every output file of ``rec`` into ``out_dir`` (created if needed).

    Returns:
        Name -> path of each written file.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    notes: list[str] = []
    scaled = rec.pixel_size_mm is not None
    # one unit policy: µm when the scale is known (lateral and height), else mosaic pixels / object units
    pixel_um = rec.pixel_size_mm * 1000.0 if scaled else None
    px = pixel_um if scaled else rec.grid.cell
    lateral = "um" if scaled else "px"
    unit = rec.scale.height_unit
    hm = rec.height_map()
    origin = (hm.origin[0] * 1000.0, hm.origin[1] * 1000.0) if scaled else hm.origin
    valid = rec.weight > 0.25 * rec.grid.cell**2
    files["orthomosaic_png"], files["orthomosaic_tif"] = write_orthomosaic(out, rec.ortho, valid, pixel_um)
    facts = {"frame": "mosaic raster (column, row); value = height above the dominant plane", "origin": origin}
    files["height_tif"], files["height_gwy"] = write_height_map(out, rec.height, pixel_um, unit, facts)
    bar_px, bar_unit = (rec.pixel_size_mm, "mm") if scaled else (px, "px")  # a scale bar of a few mm
    # the figure is ~1000 px wide: every k-th cell (matplotlib would otherwise hold float64 copies of a
    # 12 MP mosaic's ~40 M cells)
    k = max(1, math.ceil(max(rec.height.shape) / FIGURE_MAX_SIDE))
    files["height_png"] = height_figure(
        rec.height[::k, ::k], bar_px * k, bar_unit, unit, out / "height_map.png", "height map"
    )
    # heights share the lateral unit (µm, or object units when unscaled): z_scale 1
    xyz, col, faces = height_field_mesh(rec.height, rec.ortho, px, origin, 1.0, rec.config.output.max_mesh_vertices)
    xyz[:, 1] = -xyz[:, 1]  # y up: the right-handed mosaic frame (FRAME) ...
    faces = faces[:, ::-1]  # ... mirrors the grid, so the winding is reversed to keep normals facing up
    if len(faces):
        files["surface_ply"] = write_mesh_ply(
            out / "surface.ply",
            xyz,
            faces,
            comments=[f"unit {lateral}", "frame mosaic", "topograph meso height field"],
            colours=col,
        )
    else:
        notes.append("no mosaic cell has four known heights: surface.ply is not written")
        log.warning(notes[-1])
    cams = rec.cameras.to_dict()
    cams["scale"] = {
        "source": rec.scale.source,
        "magnification_reference": rec.scale.magnification,
        "reference_image": rec.config.scale.reference_image,
        "effective_focal_mm": rec.intrinsics.focal_mm,
        "pixel_pitch_um": rec.intrinsics.pixel_pitch_mm * 1000.0,
        "mosaic_pixel_size_mm": rec.pixel_size_mm,
    }
    cams["frame"] = (
        "object plane = the robustly fitted dominant plane of the scene; x right, y down; positions are the "
        "cameras' nadirs (vanishing points); units: object units (mm_per_unit mm each)"
    )
    cams["output_frame"] = FRAME
    k_um = rec.scale.mm_per_unit * 1000.0 if scaled else 1.0
    for cam, pos in zip(cams["cameras"], rec.cameras.positions, strict=True):
        cam["position_output"] = [float(pos[0] * k_um), float(-pos[1] * k_um)]  # surface.ply's x, y
    cams["position_output_unit"] = lateral
    files["cameras_json"] = write_json(out / "cameras.json", cams)
    h = rec.history
    files["loss_png"] = loss_figure([r.level for r in h], [r.loss for r in h], [r.mse_rgb for r in h], out / "loss.png")
    files["distortion_png"] = distortion_figure(rec.cameras.distortion, rec.image_size, out / "distortion.png")
    files["history_csv"] = write_text(out / "history.csv", _history_csv(rec.history))
    files.update(write_registration(rec, out))
    files["input_checks_json"] = write_json(out / "input_checks.json", rec.checks.to_dict(rec.names))
    files["config_yaml"] = write_text(out / "config.yaml", to_yaml(rec.config))
    finite = rec.height[np.isfinite(rec.height)]
    summary = {
        "topograph_version": __version__,
        "engine": "meso",
        "status": rec.quality.status,
        "command": command,
        "images": list(rec.names),
        "unit": lateral,
        "height_unit": unit,
        "lateral_unit": lateral,
        "pixel_size": px,
        "pixel_size_um": pixel_um,
        "frame": FRAME,
        "mosaic_shape": list(rec.height.shape),
        "height_range": [float(finite.min()), float(finite.max())] if finite.size else None,
        "scale_source": rec.scale.source,
        "init_method": rec.init.method,
        "quality": run_quality(rec),
        "timings_s": rec.timings,
        "warnings": [*rec.checks.warnings, *notes],
        "quality_gates": rec.quality.to_dict(rec.names),
    }
    files["summary_json"] = write_json(out / "summary.json", summary)
    return files
