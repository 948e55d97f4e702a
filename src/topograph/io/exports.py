"""Every output file of both engines: clouds, meshes, height maps, images (one naming and unit policy).

Every writer goes through :func:`topograph.io.atomic.atomic_path` (temp file + rename), so a crash never
leaves a half-written file under the final name. docs/outputs.md lists the files per engine.

* Units: lengths in micrometres (``um``) when the scale is known, else in pixels (``px``) — for both
  engines, laterally and in height. The unit is stated in every file that can hold it.
* PLY (clouds and meshes): binary little-endian, ``x y z`` float32, a header comment ``unit <um|px>``
  (and ``frame <name>``). Clouds: optional ``nx ny nz`` and ``intensity`` float32 plus grey
  ``red green blue`` uchar (so viewers show it); meshes: optional vertex colours, ``face`` lists.
* STL: binary; meshes are made watertight *as stored* (:func:`separate_pinched_vertices`): STL keeps no
  vertex indices, so a reader merges equal positions, and two vertices that share a position (a bow-tie)
  would make the re-read mesh non-manifold.
* Height maps: ``height_map.tif`` float32 with ImageJ metadata (Fiji shows the unit; in µm runs the
  resolution is the pixel size, in pixel runs no physical resolution is written) and our JSON facts in
  the ImageJ ``Info`` field; ``height_map.gwy`` for Gwyddion (and MountainsMap, which imports .gwy) with
  lateral and z units in metres, unknown heights masked.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from topograph.errors import TopographError
from topograph.io.atomic import atomic_path, to_jsonable
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


def write_float_tiff(
    path: str | Path,
    array: np.ndarray,
    pixel_size_um: float | None,
    unit: str = "um",
    facts: dict | None = None,
) -> Path:
    """Write a 2-D raster (e.g. a height map) as a float32 ImageJ TIFF.

    Args:
        path: target file (``.tif``).
        array: (H, W) values (NaN allowed, e.g. unknown heights).
        pixel_size_um: grid spacing in µm; ``None`` in pixel-unit runs: then no physical resolution is
            written (ImageJ unit "pixel").
        unit: unit of the values (``um``, ``px``, ``mm``); ImageJ's value unit ``vunit``.
        facts: extra JSON facts (frame, origin ...) stored with ``pixel_size_um`` and ``unit`` in ``Info``.

    Returns:
        ``path``.
    """
    import tifffile

    a = np.asarray(array, dtype=np.float32)
    if a.ndim != 2:
        raise ValueError(f"write_float_tiff expects a 2-D array, got shape {a.shape}")
    if pixel_size_um is not None and not (np.isfinite(pixel_size_um) and pixel_size_um > 0):
        raise ValueError(f"pixel_size_um must be positive, got {pixel_size_um}")
    info = {"pixel_size_um": pixel_size_um, "unit": unit, "shape": list(a.shape), **(facts or {})}
    metadata: dict = {"axes": "YX", "vunit": unit, "Info": json.dumps(to_jsonable(info))}
    kwargs: dict = {}
    if pixel_size_um is not None:
        metadata["unit"] = "um"
        kwargs["resolution"] = (1.0 / float(pixel_size_um), 1.0 / float(pixel_size_um))
    else:
        metadata["unit"] = "pixel"
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, a, imagej=True, metadata=metadata, **kwargs)
    return Path(path)


def read_float_tiff(path: str | Path) -> tuple[np.ndarray, float | None]:
    """Read a raster TIFF and its pixel size.

    The pixel size comes from topograph's JSON (ImageJ ``Info``, or the ImageDescription of older
    files), else from an ImageJ calibration in µm/nm/mm, else from the resolution tags (centimetre or
    inch units), else ``None``.

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
            imagej = tif.imagej_metadata or {}
            tags = page.tags
            res_unit = tags.valueof(296)  # ResolutionUnit
            x_res = tags.valueof(282)  # XResolution (numerator, denominator)
    except Exception as exc:
        raise TopographError(f"cannot read TIFF {path}: {exc}", "give a complete TIFF file") from exc
    per_unit = None
    if x_res is not None:
        per_unit = x_res[0] / x_res[1] if isinstance(x_res, tuple) and x_res[1] else float(x_res or 0)
    for text in (imagej.get("Info"), description):
        try:
            meta = json.loads(text) if text else {}
        except (json.JSONDecodeError, TypeError, ValueError):
            continue
        if isinstance(meta, dict) and "pixel_size_um" in meta:
            value = meta["pixel_size_um"]
            return np.asarray(array, dtype=np.float32), float(value) if value is not None else None
    ij_unit = str(imagej.get("unit", "")).replace("\\u00B5", "u").replace("µ", "u").replace("micron", "um")
    if imagej and per_unit:
        scale = {"um": 1.0, "nm": 1e-3, "mm": 1e3, "cm": 1e4}.get(ij_unit)
        return np.asarray(array, dtype=np.float32), (scale / per_unit if scale else None)
    pixel_size = None
    if per_unit and res_unit in (2, 3):
        pixel_size = (UM_PER_CM if res_unit == 3 else 2.54 * UM_PER_CM) / per_unit
    return np.asarray(array, dtype=np.float32), pixel_size


def read_raster_facts(path: str | Path) -> dict:
    """The JSON facts topograph stored with a raster TIFF (ImageJ ``Info``, or the ImageDescription of older
    files): ``unit``, ``pixel_size_um``, ``frame`` …; ``{}`` when there are none. An ImageJ value unit
    (``vunit``) fills ``unit`` when the JSON lacks it."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        imagej = tif.imagej_metadata or {}
        description = tif.pages.first.description
    for text in (imagej.get("Info"), description):
        try:
            meta = json.loads(text) if text and str(text).strip().startswith("{") else None
        except (json.JSONDecodeError, TypeError, ValueError):
            meta = None
        if isinstance(meta, dict):
            return meta
    return {"unit": imagej["vunit"]} if "vunit" in imagej else {}


def write_gwy(path: str | Path, array: np.ndarray, pixel_size_um: float | None, unit: str, title: str) -> Path:
    """Write a 2-D raster as a Gwyddion ``.gwy`` file: one channel with lateral and z units.

    Lengths are stored in metres (Gwyddion's convention) when ``pixel_size_um`` is known and the values
    are in ``um`` (or ``mm``); in pixel-unit runs the lateral unit is ``px`` with one unit per pixel.
    Unknown values (NaN) are set to the lowest valid value and masked (``/0/mask``), as Gwyddion does.

    The small components are serialised by gwyfile; the two float64 arrays are streamed to the file a band
    of rows at a time (gwyfile's own ``tofile`` holds about eight copies of each: 5 GB for a 12 MP mosaic).
    """
    import struct

    from gwyfile.objects import GwySIUnit, serialize_component

    a = np.asarray(array)
    if a.ndim != 2:
        raise ValueError(f"write_gwy expects a 2-D array, got shape {a.shape}")
    to_m = {"um": 1e-6, "mm": 1e-3, "nm": 1e-9}
    h, w = a.shape
    if pixel_size_um is not None:
        xy_unit, step = "m", float(pixel_size_um) * 1e-6
    else:
        xy_unit, step = "px", 1.0
    z_factor, z_unit = (to_m[unit], "m") if unit in to_m else (1.0, unit)
    finite = np.isfinite(a)
    masked = not bool(finite.all())
    fill = float(np.min(a[finite])) if finite.any() else 0.0
    rows = max(1, (1 << 20) // max(w, 1))

    def bands(mask: bool):  # the field's values, float64 little-endian, a band of rows at a time
        for r0 in range(0, h, rows):
            ok = finite[r0 : r0 + rows]
            if mask:
                yield (~ok).astype("<f8").tobytes()
            else:
                yield (np.where(ok, a[r0 : r0 + rows].astype("<f8"), fill) * z_factor).tobytes()

    def field(z: str) -> tuple[bytes, int]:  # a GwyDataField's bytes before its data, and its total size
        head = b"".join(
            serialize_component(k, v, t)
            for k, v, t in (
                ("xres", w, "i"), ("yres", h, "i"), ("xreal", w * step, "d"), ("yreal", h * step, "d"),
                ("xoff", 0.0, "d"), ("yoff", 0.0, "d"), ("si_unit_xy", GwySIUnit(unitstr=xy_unit), "o"),
                ("si_unit_z", GwySIUnit(unitstr=z), "o"),
            )
        ) + b"data\0D" + struct.pack("<I", h * w)  # fmt: skip
        body = len(head) + 8 * h * w
        return b"GwyDataField\0" + struct.pack("<I", body) + head, len(b"GwyDataField\0") + 4 + body

    parts = [("/0/data", *field(z_unit), False)]
    if masked:
        parts.append(("/0/mask", *field(""), True))
    title_bytes = serialize_component("/0/data/title", title, "s")
    size = len(title_bytes) + sum(len(k.encode()) + 2 + n for k, _, n, _ in parts)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(b"GWYP" + b"GwyContainer\0" + struct.pack("<I", size))
        for k, head, _, mask in parts[:1]:
            f.write(k.encode() + b"\0o" + head)
            for chunk in bands(mask):
                f.write(chunk)
        f.write(title_bytes)
        for k, head, _, mask in parts[1:]:
            f.write(k.encode() + b"\0o" + head)
            for chunk in bands(mask):
                f.write(chunk)
    return Path(path)


def write_height_map(
    folder: str | Path,
    height: np.ndarray,
    pixel_size_um: float | None,
    unit: str,
    facts: dict | None = None,
    name: str = "height_map",
) -> list[Path]:
    """``<name>.tif`` (float32 ImageJ TIFF) and ``<name>.gwy`` (Gwyddion) of one height map.

    Args:
        folder: output folder.
        height: (H, W) heights, NaN = unknown.
        pixel_size_um: grid spacing in µm, or None in pixel-unit runs.
        unit: height unit (``um`` or ``px``).
        facts: frame, origin and other facts stored in the TIFF's JSON.
    """
    folder = Path(folder)
    return [
        write_float_tiff(folder / f"{name}.tif", height, pixel_size_um, unit=unit, facts=facts),
        write_gwy(folder / f"{name}.gwy", height, pixel_size_um, unit, title=f"height ({unit})"),
    ]


def write_rgb_tiff(path: str | Path, rgb_uint8: np.ndarray, pixel_size_um: float | None) -> Path:
    """An 8-bit RGB image as TIFF, calibrated in µm for ImageJ when the pixel size is known."""
    import tifffile

    a = np.asarray(rgb_uint8)
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"write_rgb_tiff expects (H, W, 3) uint8, got {a.shape} {a.dtype}")
    kwargs: dict = {"photometric": "rgb", "metadata": None}
    if pixel_size_um is not None:
        per_cm = UM_PER_CM / float(pixel_size_um)
        kwargs.update(resolution=(per_cm, per_cm), resolutionunit="CENTIMETER")
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, a, **kwargs)
    return Path(path)


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
    path: str | Path,
    vertices: np.ndarray,
    faces: np.ndarray,
    comments: list[str] | None = None,
    colours: np.ndarray | None = None,
) -> Path:
    """Write a triangle mesh as a binary little-endian PLY in one vectorised pass.

    Layout: ``vertex`` with ``x y z`` float32 (and ``red green blue`` uchar with ``colours``), ``face``
    with ``list uchar int vertex_indices``. Each record is one row of a structured array, so a million
    faces take well under a second (plyfile's per-face list path takes ~10 µs per face); plyfile and
    trimesh read the file back.

    Args:
        path: target file (``.ply``).
        vertices: (V, 3) positions.
        faces: (F, 3) vertex indices (< 2³¹).
        comments: header comment lines (one each, newlines replaced).
        colours: optional (V, 3) uint8 vertex colours.

    Returns:
        ``path``.

    Raises:
        TopographError: empty mesh or indices out of range.
    """
    v = np.asarray(vertices)
    f = np.asarray(faces)
    if v.ndim != 2 or v.shape[1] != 3 or f.ndim != 2 or f.shape[1] != 3 or len(f) == 0:
        raise TopographError(
            f"a mesh needs (V, 3) vertices and (F ≥ 1, 3) faces, got {v.shape} and {f.shape}", "check the mesh"
        )
    if f.min() < 0 or f.max() >= len(v):
        raise TopographError("the mesh has face indices outside its vertex list", "repair the mesh before writing it")
    vfields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if colours is not None:
        vfields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    vert = np.empty(len(v), dtype=vfields)
    vert["x"], vert["y"], vert["z"] = v[:, 0], v[:, 1], v[:, 2]
    if colours is not None:
        c = np.asarray(colours, dtype=np.uint8)
        vert["red"], vert["green"], vert["blue"] = c[:, 0], c[:, 1], c[:, 2]
    record = np.empty(len(f), dtype=[("n", "u1"), ("idx", "<i4", (3,))])
    record["n"] = 3
    record["idx"] = f
    lines = ["ply", "format binary_little_endian 1.0"]
    lines += [f"comment {c.replace(chr(10), ' ')}" for c in (comments or [])]
    lines += [f"element vertex {len(v)}"]
    lines += [f"property {'float' if t == '<f4' else 'uchar'} {n}" for n, t in vfields]
    lines += [f"element face {len(f)}", "property list uchar int vertex_indices", "end_header"]
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(("\n".join(lines) + "\n").encode("ascii", errors="replace"))
        fh.write(vert.tobytes())
        fh.write(record.tobytes())
    return Path(path)


def separate_pinched_vertices(vertices: np.ndarray, faces: np.ndarray, fraction: float = 1e-4) -> np.ndarray:
    """Move apart distinct vertices that share one position (as stored in float32), keeping the topology.

    A closed mesh may touch itself at a point (a bow-tie: two fans of faces meeting at one position but
    held by two vertex indices). Formats without shared vertices (STL) and readers that merge equal
    positions turn that point into one non-manifold vertex, so the re-read mesh is no longer watertight.
    Each copy is moved toward the centroid of its own faces by ``fraction`` of the mean edge length at
    it, and at least 64 float32 steps at the mesh's largest coordinate — so the copies stay apart when
    stored as float32, while the enclosed volume changes by ~ ``fraction`` of the faces around them.

    Returns:
        (V, 3) float64 vertices (a copy; unchanged when no two vertices coincide).
    """
    v = np.asarray(vertices, dtype=np.float64).copy()
    f = np.asarray(faces, dtype=np.int64)
    key = np.ascontiguousarray(v.astype(np.float32)).view(np.dtype((np.void, 12))).ravel()
    _, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    pinched = np.nonzero(counts[inverse] > 1)[0]
    if len(pinched) == 0:
        return v
    floor = 64.0 * float(np.spacing(np.float32(np.abs(v).max())))
    # (face, pinched vertex) incidences, each face once per vertex, gathered in one pass over the faces
    is_pinched = np.zeros(len(v), dtype=bool)
    is_pinched[pinched] = True
    face_idx, corner = np.nonzero(is_pinched[f])
    pairs = np.unique(np.stack([f[face_idx, corner], face_idx], axis=1), axis=0)
    if len(pairs) == 0:
        return v
    vid, around = pairs[:, 0], pairs[:, 1]
    tri = v[f[around]]  # (K, 3, 3) the faces around each pinched vertex
    centroid = tri.mean(axis=1)
    edge = np.linalg.norm(tri - np.roll(tri, 1, axis=1), axis=2).mean(axis=1)  # (K,)
    ids, start, count = np.unique(vid, return_index=True, return_counts=True)
    target = np.add.reduceat(centroid, start, axis=0) / count[:, None]
    mean_edge = np.add.reduceat(edge, start) / count
    direction = target - v[ids]
    norm = np.linalg.norm(direction, axis=1)
    move = norm > 0
    step = np.maximum(fraction * mean_edge[move], floor)
    v[ids[move]] += direction[move] / norm[move, None] * step[:, None]
    return v


def write_mesh(
    mesh: Any, path: str | Path, unit: str = "um", frame: str | None = None, colours: np.ndarray | None = None
) -> Path:
    """Write a ``trimesh.Trimesh`` atomically as PLY (float32, ``comment unit``), STL (binary) or OBJ.

    The format follows the suffix. STL has no place for the unit; PLY and OBJ carry it as a comment.
    Watertight meshes have pinched vertices separated first (:func:`separate_pinched_vertices`), so the
    file stays watertight when read back by tools that merge vertices by position.

    Raises:
        TopographError: unsupported suffix or empty mesh.
    """
    import trimesh

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".ply", ".stl", ".obj"):
        raise TopographError(f"cannot write a mesh as '{suffix or path.name}'", "use a .ply, .stl or .obj file name")
    if len(mesh.faces) == 0:
        raise TopographError("the mesh has no faces", "nothing to write")
    vertices = np.asarray(mesh.vertices)
    if mesh.is_watertight:
        vertices = separate_pinched_vertices(vertices, mesh.faces)
    comments = [f"unit {unit}", *([f"frame {frame}"] if frame else []), "written by topograph"]
    if suffix == ".ply":
        write_mesh_ply(path, vertices, mesh.faces, comments=comments, colours=colours)
    elif suffix == ".stl":
        write_stl(path, vertices, mesh.faces, header=f"topograph mesh, unit {unit}")
    else:
        with atomic_path(path) as tmp:
            text = trimesh.exchange.obj.export_obj(
                trimesh.Trimesh(vertices, mesh.faces, process=False), include_normals=False, include_texture=False
            )
            tmp.write_text("".join(f"# {c}\n" for c in comments) + text, encoding="utf-8")
    logger.info("wrote %s (%d vertices, %d faces)", path, len(mesh.vertices), len(mesh.faces))
    return path


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
