"""Writing a mesoscopic reconstruction to disk (every file atomically).

Files in the output folder:

* ``orthomosaic.png`` (RGBA, transparent where no image) and ``orthomosaic.tif`` (RGB, with resolution)
* ``height_um.tif``: float32 heights in micrometres (``height_px.tif`` in mosaic pixels when the scale is
  unknown), NaN where fewer than ``output.min_views`` images overlap; TIFF resolution in pixels per cm and
  a JSON description with ``pixel_size_mm`` and the origin
* ``height.png``: colour height map with colour bar and scale bar
* ``surface.ply``: the height field as a triangle mesh with vertex colours (x, y, z in mm, or px)
* ``cameras.json``: poses, focal length, distortion profile and centre, scale
* ``loss.png``, ``distortion.png``: figures; ``history.csv``: loss per iteration
* ``input_checks.json``: sharpness, overlap matrix, EXIF drift warnings; ``config.yaml``: resolved config
* ``summary.json``: engine, command, version, units, pixel size, scale source, quality figures, timings
* ``series.json`` and ``thumbnails/``: the inputs (:func:`write_inputs`)
"""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from topograph import __version__
from topograph.config import to_yaml
from topograph.io.atomic import atomic_path, write_json, write_text
from topograph.meso.figures import distortion_figure, height_figure, loss_figure
from topograph.meso.reconstruct import MesoReconstruction
from topograph.meso.types import MesoImages


def write_height_tiff(
    path: Path, height: np.ndarray, pixel_size_mm: float | None, unit: str, origin_mm: tuple[float, float] | None
) -> Path:
    """Float32 height TIFF with resolution tags (pixels per cm) and a JSON description."""
    import tifffile

    desc = {"unit": unit, "pixel_size_mm": pixel_size_mm, "origin_mm": list(origin_mm) if origin_mm else None}
    kwargs: dict = {"description": json.dumps(desc), "metadata": None}
    if pixel_size_mm:
        res = 10.0 / pixel_size_mm
        kwargs.update(resolution=(res, res), resolutionunit="CENTIMETER")
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, height.astype(np.float32), **kwargs)
    return path


def write_orthomosaic(out: Path, rgb: np.ndarray, valid: np.ndarray, pixel_size_mm: float | None) -> list[Path]:
    """``orthomosaic.png`` (RGBA) and ``orthomosaic.tif`` (RGB uint8)."""
    import tifffile

    u8 = np.clip(np.round(rgb * 255.0), 0, 255).astype(np.uint8)
    rgba = np.dstack((u8, np.where(valid, 255, 0).astype(np.uint8)))
    png = out / "orthomosaic.png"
    with atomic_path(png) as tmp:
        cv2.imwrite(str(tmp), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    tif = out / "orthomosaic.tif"
    kwargs: dict = {"photometric": "rgb", "metadata": None}
    if pixel_size_mm:
        res = 10.0 / pixel_size_mm
        kwargs.update(resolution=(res, res), resolutionunit="CENTIMETER")
    with atomic_path(tif) as tmp:
        tifffile.imwrite(tmp, u8, **kwargs)
    return [png, tif]


def height_field_mesh(
    height: np.ndarray,
    rgb: np.ndarray,
    pixel_size: float,
    origin: tuple[float, float],
    z_scale: float,
    max_vertices: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Triangle mesh of a height field: one vertex per (decimated) valid cell, two triangles per quad.

    Args:
        height: (H, W) heights (NaN = none).
        rgb: (H, W, 3) colours in [0, 1].
        pixel_size: lateral spacing of the cells.
        origin: lateral position of cell (0, 0).
        z_scale: factor taking heights to the lateral unit (e.g. 1e-3 for um -> mm).
        max_vertices: decimate with a stride so that at most this many vertices are used.

    Returns:
        ``(xyz (V, 3) float32, colours (V, 3) uint8, faces (F, 3) int32)``.
    """
    h, w = height.shape
    stride = max(1, int(np.ceil(np.sqrt(h * w / max(1, max_vertices)))))
    hs = height[::stride, ::stride]
    cs = rgb[::stride, ::stride]
    hh, ww = hs.shape
    valid = np.isfinite(hs)
    index = np.full((hh, ww), -1, dtype=np.int64)
    index[valid] = np.arange(int(valid.sum()))
    ii, jj = np.nonzero(valid)
    xyz = np.column_stack(
        (origin[0] + pixel_size * stride * jj, origin[1] + pixel_size * stride * ii, hs[ii, jj] * z_scale)
    ).astype(np.float32)
    colours = np.clip(np.round(cs[ii, jj] * 255), 0, 255).astype(np.uint8)
    a = index[:-1, :-1]
    b = index[:-1, 1:]
    c = index[1:, :-1]
    d = index[1:, 1:]
    quad = (a >= 0) & (b >= 0) & (c >= 0) & (d >= 0)
    faces = np.concatenate(
        (np.column_stack((a[quad], c[quad], b[quad])), np.column_stack((b[quad], c[quad], d[quad])))
    ).astype(np.int32)
    return xyz, colours, faces


def write_ply(path: Path, xyz: np.ndarray, colours: np.ndarray, faces: np.ndarray, comment: str) -> Path:
    """Binary PLY with coloured vertices and triangular faces."""
    from plyfile import PlyData, PlyElement

    vert = np.empty(
        len(xyz), dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")]
    )
    vert["x"], vert["y"], vert["z"] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    vert["red"], vert["green"], vert["blue"] = colours[:, 0], colours[:, 1], colours[:, 2]
    face = np.empty(len(faces), dtype=[("vertex_indices", "i4", (3,))])
    face["vertex_indices"] = faces
    ply = PlyData([PlyElement.describe(vert, "vertex"), PlyElement.describe(face, "face")], comments=[comment])
    with atomic_path(path) as tmp:
        ply.write(str(tmp))
    return path


def _history_csv(history: list[dict]) -> str:
    buf = io.StringIO()
    buf.write("level,iteration,loss,mse_rgb,mse_height,tv\n")
    for r in history:
        buf.write(
            f"{r['level']},{r['iteration']},{r['loss']:.6e},{r['mse_rgb']:.6e},{r['mse_height']:.6e},{r['tv']:.6e}\n"
        )
    return buf.getvalue()


def run_quality(rec: MesoReconstruction) -> dict[str, Any]:
    """Quality figures a run can state without ground truth: the final loss terms, the share of the
    mosaic seen by at least ``min_views`` images, and the mean number of images per mosaic pixel."""
    last: dict[str, Any] = rec.history[-1] if rec.history else {}
    cell_area = rec.grid.cell**2
    seen = rec.weight > 0.25 * cell_area
    return {
        "final_loss": last.get("loss"),
        "final_mse_rgb": last.get("mse_rgb"),
        "final_mse_height": last.get("mse_height"),
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


def write_outputs(rec: MesoReconstruction, out_dir: str | Path, command: str | None = None) -> dict[str, Path]:
    """Write every output file of ``rec`` into ``out_dir`` (created if needed).

    Returns:
        Name -> path of each written file.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    scaled = rec.pixel_size_mm is not None
    px = rec.pixel_size_mm if scaled else rec.grid.cell
    lateral = "mm" if scaled else "px"
    unit = rec.scale.height_unit
    hm = rec.height_map()
    valid = rec.weight > 0.25 * rec.grid.cell**2
    png, tif = write_orthomosaic(out, rec.ortho, valid, rec.pixel_size_mm)
    files["orthomosaic_png"], files["orthomosaic_tif"] = png, tif
    hname = "height_um.tif" if unit == "um" else "height_px.tif"
    files["height_tif"] = write_height_tiff(
        out / hname, rec.height, rec.pixel_size_mm, unit, hm.origin if scaled else None
    )
    files["height_png"] = height_figure(rec.height, px, lateral, unit, out / "height.png", "height map")
    z_scale = 1e-3 if (scaled and unit == "um") else 1.0
    xyz, col, faces = height_field_mesh(
        rec.height, rec.ortho, px, hm.origin, z_scale, rec.config.output.max_mesh_vertices
    )
    files["surface_ply"] = write_ply(
        out / "surface.ply", xyz, col, faces, f"topograph meso height field; units {lateral}"
    )
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
    files["cameras_json"] = write_json(out / "cameras.json", cams)
    files["loss_png"] = loss_figure(rec.history, out / "loss.png")
    files["distortion_png"] = distortion_figure(rec.cameras.distortion, rec.image_size, out / "distortion.png")
    files["history_csv"] = write_text(out / "history.csv", _history_csv(rec.history))
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
        "mosaic_shape": list(rec.height.shape),
        "height_range": [float(finite.min()), float(finite.max())] if finite.size else None,
        "scale_source": rec.scale.source,
        "init_method": rec.init.method,
        "quality": run_quality(rec),
        "timings_s": rec.timings,
        "warnings": list(rec.checks.warnings),
        "quality_gates": rec.quality.to_dict(rec.names),
    }
    files["summary_json"] = write_json(out / "summary.json", summary)
    return files
