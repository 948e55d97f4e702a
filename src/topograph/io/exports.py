"""Standard output files: PLY point clouds, float32 TIFF rasters with pixel size, 8-bit PNG previews.

Every writer goes through :func:`topograph.io.atomic.atomic_path` (temp file + rename), so a crash never
leaves a half-written file under the final name.

* PLY: binary little-endian; ``x y z`` float32, optional ``nx ny nz`` float32, optional ``intensity``
  float32 in [0, 1] plus the same as grey ``red green blue`` uchar (so viewers show it); the length unit
  is stated in a header comment ``unit <um|px>``.
* Float TIFF: float32, resolution tags in pixels per centimetre (``10⁴ / pixel_size_um``) and an
  ImageDescription JSON ``{"pixel_size_um": …, "unit": …}``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from topograph.errors import TopographError
from topograph.io.atomic import atomic_path
from topograph.types import PointCloud

logger = logging.getLogger("topograph")

UM_PER_CM = 1e4


def write_ply(path: str | Path, cloud: PointCloud, comments: list[str] | None = None) -> Path:
    """Write a point cloud as a binary little-endian PLY.

    Args:
        path: target file (``.ply``).
        cloud: (N, 3) points in ``cloud.unit``; optional intensity (N,) in [0, 1] and normals (N, 3).
        comments: extra header comments (one line each); ``unit <cloud.unit>`` is always written first
            and a caller's own ``unit <x>`` line is dropped, so the unit is stated exactly once.

    Returns:
        ``path``.

    Raises:
        TopographError: the cloud is empty.
    """
    from plyfile import PlyData, PlyElement

    n = len(cloud)
    if n == 0:
        raise TopographError(f"no points to write to {path}", "check the reconstruction log for why the cloud is empty")
    fields: list[tuple[str, str]] = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if cloud.normals is not None:
        fields += [("nx", "<f4"), ("ny", "<f4"), ("nz", "<f4")]
    if cloud.intensity is not None:
        fields += [("intensity", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")]
    vertex = np.empty(n, dtype=fields)
    for i, axis in enumerate("xyz"):
        vertex[axis] = cloud.xyz[:, i]
    if cloud.normals is not None:
        for i, axis in enumerate(("nx", "ny", "nz")):
            vertex[axis] = cloud.normals[:, i]
    if cloud.intensity is not None:
        inten = np.clip(np.nan_to_num(np.asarray(cloud.intensity, dtype=np.float64), nan=0.0), 0.0, 1.0)
        vertex["intensity"] = inten
        gray = np.rint(inten * 255.0).astype(np.uint8)
        for c in ("red", "green", "blue"):
            vertex[c] = gray
    extra = [c.replace("\n", " ") for c in (comments or [])]
    # the unit line is written once, from the cloud itself (a caller's own "unit …" line is dropped)
    header = [f"unit {cloud.unit}"] + [c for c in extra if not (len(c.split()) == 2 and c.split()[0] == "unit")]
    data = PlyData([PlyElement.describe(vertex, "vertex")], text=False, byte_order="<", comments=header)
    with atomic_path(path) as tmp:
        data.write(str(tmp))
    logger.debug("wrote %d points (%s) to %s", n, cloud.unit, path)
    return Path(path)


def read_ply(path: str | Path) -> PointCloud:
    """Read a PLY point cloud (as written by :func:`write_ply`, or any PLY with x, y, z vertices).

    The unit comes from a ``unit <u>`` header comment ("px" when absent). Intensity is read from the
    ``intensity`` property, else from ``red`` / 255.

    Raises:
        TopographError: missing file, not a PLY, no vertex element or no vertices.
    """
    from plyfile import PlyData

    path = Path(path)
    if not path.is_file():
        raise TopographError(f"PLY file not found: {path}", "check the path")
    try:
        data = PlyData.read(str(path))
    except Exception as exc:  # plyfile raises several types for malformed input
        raise TopographError(f"{path} is not a readable PLY file: {exc}", "give a PLY point cloud file") from exc
    if "vertex" not in [el.name for el in data.elements]:
        raise TopographError(f"{path} has no vertex element", "give a PLY point cloud file")
    v = data["vertex"].data
    if len(v) == 0:
        raise TopographError(f"{path} holds no points", "re-run the step that writes it")
    names = v.dtype.names or ()
    if not {"x", "y", "z"} <= set(names):
        raise TopographError(f"{path} vertices have no x, y, z coordinates", "give a PLY point cloud file")
    unit = "px"
    for comment in data.comments:
        parts = comment.split()
        if len(parts) == 2 and parts[0] == "unit":
            unit = parts[1]
    xyz = np.stack([np.asarray(v[a], dtype=np.float64) for a in "xyz"], axis=1)
    normals = None
    if {"nx", "ny", "nz"} <= set(names):
        normals = np.stack([np.asarray(v[a], dtype=np.float64) for a in ("nx", "ny", "nz")], axis=1)
    intensity = None
    if "intensity" in names:
        intensity = np.asarray(v["intensity"], dtype=np.float64)
    elif "red" in names:
        intensity = np.asarray(v["red"], dtype=np.float64) / 255.0
    return PointCloud(xyz=xyz, unit=unit, intensity=intensity, normals=normals)


def write_float_tiff(path: str | Path, array: np.ndarray, pixel_size_um: float | None, unit: str = "um") -> Path:
    """Write a 2-D raster (e.g. a height map) as a float32 TIFF with its pixel size.

    Args:
        path: target file (``.tif``).
        array: (H, W) values (NaN allowed, e.g. unknown heights).
        pixel_size_um: grid spacing in µm; ``None`` when unknown (pixel units; no resolution tags).
        unit: unit of the values, stored in the description JSON.

    Returns:
        ``path``.
    """
    import tifffile

    a = np.asarray(array, dtype=np.float32)
    if a.ndim != 2:
        raise ValueError(f"write_float_tiff expects a 2-D array, got shape {a.shape}")
    if pixel_size_um is not None and not (np.isfinite(pixel_size_um) and pixel_size_um > 0):
        raise ValueError(f"pixel_size_um must be positive, got {pixel_size_um}")
    description = json.dumps({"pixel_size_um": pixel_size_um, "unit": unit, "shape": list(a.shape)})
    kwargs: dict = {}
    if pixel_size_um is not None:
        per_cm = UM_PER_CM / float(pixel_size_um)
        kwargs = {"resolution": (per_cm, per_cm), "resolutionunit": "CENTIMETER"}
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, a, description=description, metadata=None, photometric="minisblack", **kwargs)
    return Path(path)


def read_float_tiff(path: str | Path) -> tuple[np.ndarray, float | None]:
    """Read a raster TIFF and its pixel size.

    The pixel size comes from the description JSON written by :func:`write_float_tiff`, else from the
    resolution tags (centimetre or inch units), else ``None``.

    Returns:
        ``(array, pixel_size_um)``: (H, W) float32 and µm or ``None``.

    Raises:
        TopographError: missing or unreadable file.
    """
    import tifffile

    path = Path(path)
    if not path.is_file():
        raise TopographError(f"TIFF file not found: {path}", "check the path")
    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages.first
            array = page.asarray()
            description = page.description
            tags = page.tags
            res_unit = tags.valueof(296)  # ResolutionUnit
            x_res = tags.valueof(282)  # XResolution (numerator, denominator)
    except Exception as exc:
        raise TopographError(f"cannot read TIFF {path}: {exc}", "give a complete TIFF file") from exc
    pixel_size = None
    try:
        meta = json.loads(description) if description else {}
        if isinstance(meta, dict) and meta.get("pixel_size_um") is not None:
            pixel_size = float(meta["pixel_size_um"])
    except (json.JSONDecodeError, TypeError, ValueError):
        pass
    if pixel_size is None and x_res is not None and res_unit in (2, 3):
        per_unit = x_res[0] / x_res[1] if isinstance(x_res, tuple) else float(x_res)
        if per_unit > 0:
            pixel_size = (UM_PER_CM if res_unit == 3 else 2.54 * UM_PER_CM) / per_unit
    return np.asarray(array, dtype=np.float32), pixel_size


def write_png(path: str | Path, array_uint8: np.ndarray) -> Path:
    """Write an 8-bit grey (H, W) or RGB/RGBA (H, W, 3|4) image as PNG.

    Raises:
        ValueError: wrong dtype or shape.
    """
    import cv2

    a = np.asarray(array_uint8)
    if a.dtype != np.uint8:
        raise ValueError(f"write_png expects uint8, got {a.dtype}")
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (3, 4))):
        raise ValueError(f"write_png expects (H, W) or (H, W, 3|4), got {a.shape}")
    if a.ndim == 3:
        a = cv2.cvtColor(a, cv2.COLOR_RGB2BGR if a.shape[2] == 3 else cv2.COLOR_RGBA2BGRA)
    ok, buf = cv2.imencode(".png", a)
    if not ok:
        raise ValueError("PNG encoding failed")
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.tobytes())
    return Path(path)


def write_mesh_ply(
    path: str | Path, vertices: np.ndarray, faces: np.ndarray, comments: list[str] | None = None
) -> Path:
    """Write a triangle mesh as a binary little-endian PLY in one vectorised pass.

    Layout: ``vertex`` with ``x y z`` float64, ``face`` with ``list uchar int vertex_indices``. Each face
    record is packed as one (uchar 3, int32 × 3) row of a structured array, so a million faces take well
    under a second (a per-face writer such as plyfile's list path takes ~10 µs per face).

    Args:
        path: target file (``.ply``).
        vertices: (V, 3) positions.
        faces: (F, 3) vertex indices (< 2³¹).
        comments: header comment lines (one each, newlines replaced).

    Returns:
        ``path``.

    Raises:
        TopographError: empty mesh or indices out of range.
    """
    v = np.ascontiguousarray(vertices, dtype="<f8")
    f = np.asarray(faces)
    if v.ndim != 2 or v.shape[1] != 3 or f.ndim != 2 or f.shape[1] != 3 or len(f) == 0:
        raise TopographError(
            f"a mesh needs (V, 3) vertices and (F ≥ 1, 3) faces, got {v.shape} and {f.shape}", "check the mesh"
        )
    if f.min() < 0 or f.max() >= len(v):
        raise TopographError("the mesh has face indices outside its vertex list", "repair the mesh before writing it")
    record = np.empty(len(f), dtype=[("n", "u1"), ("idx", "<i4", (3,))])
    record["n"] = 3
    record["idx"] = f
    lines = ["ply", "format binary_little_endian 1.0"]
    lines += [f"comment {c.replace(chr(10), ' ')}" for c in (comments or [])]
    lines += [
        f"element vertex {len(v)}",
        "property double x",
        "property double y",
        "property double z",
        f"element face {len(f)}",
        "property list uchar int vertex_indices",
        "end_header",
    ]
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(("\n".join(lines) + "\n").encode("ascii", errors="replace"))
        fh.write(v.tobytes())
        fh.write(record.tobytes())
    return Path(path)


def write_stl(path: str | Path, vertices: np.ndarray, faces: np.ndarray, header: str = "topograph") -> Path:
    """Write a triangle mesh as binary STL (80-byte header, uint32 count, 50-byte records).

    Each record holds the unit facet normal ``n = (b − a) × (c − a) / ‖·‖`` (float32; zero for degenerate
    triangles), the three corners (float32) and a zero attribute word.

    Raises:
        TopographError: empty mesh.
    """
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    if len(f) == 0:
        raise TopographError("the mesh has no faces", "nothing to write")
    tri = v[f]  # (F, 3, 3)
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    norm = np.linalg.norm(n, axis=1, keepdims=True)
    n = np.divide(n, norm, out=np.zeros_like(n), where=norm > 0)
    record = np.zeros(len(f), dtype=[("normal", "<f4", (3,)), ("corners", "<f4", (3, 3)), ("attr", "<u2")])
    record["normal"] = n
    record["corners"] = tri
    head = header.encode("ascii", errors="replace")[:80].ljust(80, b" ")
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(head)
        fh.write(np.uint32(len(f)).tobytes())
        fh.write(record.tobytes())
    return Path(path)
