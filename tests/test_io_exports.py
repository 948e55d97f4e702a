"""PLY, float TIFF and PNG writers/readers: exact round trips, units and pixel size, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
from plyfile import PlyData, PlyElement

from topograph.errors import TopographError
from topograph.io.exports import read_float_tiff, read_ply, write_float_tiff, write_ply, write_png
from topograph.types import PointCloud


def _cloud(n: int = 500, unit: str = "um", with_extras: bool = True) -> PointCloud:
    rng = np.random.default_rng(3)
    xyz = rng.normal(0.0, 50.0, (n, 3))
    normals = rng.normal(size=(n, 3))
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    return PointCloud(
        xyz=xyz,
        unit=unit,
        intensity=rng.random(n) if with_extras else None,
        normals=normals if with_extras else None,
    )


def test_ply_round_trip(tmp_path: Path) -> None:
    cloud = _cloud()
    path = write_ply(tmp_path / "out" / "cloud.ply", cloud, ["made by a test", "unit um", "tilts 0 5 10"])
    header = path.read_bytes()[:400].decode("ascii", errors="replace")
    assert "format binary_little_endian 1.0" in header
    assert header.count("comment unit um") == 1 and "comment tilts 0 5 10" in header
    back = read_ply(path)
    assert back.unit == "um" and len(back) == len(cloud)
    assert np.abs(back.xyz - cloud.xyz).max() < 1e-5 * np.abs(cloud.xyz).max()  # float32 precision
    assert np.abs(back.intensity - cloud.intensity).max() < 1e-6
    assert np.abs(back.normals - cloud.normals).max() < 1e-6
    data = PlyData.read(str(path))
    v = data["vertex"].data
    assert v["x"].dtype == np.float32 and v["red"].dtype == np.uint8
    assert np.array_equal(v["red"], np.rint(cloud.intensity * 255).astype(np.uint8))
    assert [p.name for p in tmp_path.joinpath("out").iterdir()] == ["cloud.ply"]  # no temp files left


def test_ply_minimal_and_pixel_units(tmp_path: Path) -> None:
    cloud = _cloud(10, unit="px", with_extras=False)
    back = read_ply(write_ply(tmp_path / "c.ply", cloud))
    assert back.unit == "px" and back.intensity is None and back.normals is None


def test_ply_errors(tmp_path: Path) -> None:
    with pytest.raises(TopographError, match="no points"):
        write_ply(tmp_path / "e.ply", PointCloud(np.zeros((0, 3))))
    (tmp_path / "text.ply").write_text("hello, I am not a PLY\n")
    with pytest.raises(TopographError, match="not a readable PLY"):
        read_ply(tmp_path / "text.ply")
    empty = np.zeros(0, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4")])
    PlyData([PlyElement.describe(empty, "vertex")]).write(str(tmp_path / "empty.ply"))
    with pytest.raises(TopographError, match="holds no points"):
        read_ply(tmp_path / "empty.ply")
    with pytest.raises(TopographError, match="not found"):
        read_ply(tmp_path / "missing.ply")


def test_float_tiff_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    height = rng.normal(0.0, 3.0, (40, 60)).astype(np.float32)
    height[5, 7] = np.nan
    path = write_float_tiff(tmp_path / "h.tif", height, pixel_size_um=0.25)
    back, px = read_float_tiff(path)
    assert px == pytest.approx(0.25)
    assert back.dtype == np.float32 and np.array_equal(back, height, equal_nan=True)
    with tifffile.TiffFile(path) as tif:
        page = tif.pages.first
        xres = page.tags["XResolution"].value
        assert xres[0] / xres[1] == pytest.approx(1 / 0.25)  # pixels per µm, ImageJ calibration
        ij = tif.imagej_metadata
        assert ij["unit"] == "um" and ij["vunit"] == "um"  # Fiji shows µm laterally and for the values
        assert json.loads(ij["Info"])["pixel_size_um"] == 0.25


def test_float_tiff_pixel_size_from_tags_or_none(tmp_path: Path) -> None:
    a = np.ones((8, 9), np.float32)
    tifffile.imwrite(tmp_path / "tags.tif", a, resolution=(1e4 / 2.0, 1e4 / 2.0), resolutionunit="CENTIMETER")
    _, px = read_float_tiff(tmp_path / "tags.tif")
    assert px == pytest.approx(2.0)
    write_float_tiff(tmp_path / "nopx.tif", a, pixel_size_um=None, unit="px")
    _, px = read_float_tiff(tmp_path / "nopx.tif")
    assert px is None
    with tifffile.TiffFile(tmp_path / "nopx.tif") as tif:  # pixel-unit run: no physical resolution at all
        assert tif.imagej_metadata["unit"] == "pixel"
        res = tif.pages.first.tags.valueof(282)
        assert res is None or res[0] / res[1] == pytest.approx(1.0)
        assert tif.pages.first.tags.valueof(296) in (None, 1)  # ResolutionUnit NONE
    with pytest.raises(TopographError):
        read_float_tiff(tmp_path / "missing.tif")


def test_png_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    grey = rng.integers(0, 256, (20, 30), dtype=np.uint8)
    rgb = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    write_png(tmp_path / "g.png", grey)
    write_png(tmp_path / "c.png", rgb)
    assert np.array_equal(cv2.imread(str(tmp_path / "g.png"), cv2.IMREAD_UNCHANGED), grey)
    assert np.array_equal(cv2.imread(str(tmp_path / "c.png"))[..., ::-1], rgb)  # stored RGB, OpenCV reads BGR
    with pytest.raises(ValueError):
        write_png(tmp_path / "f.png", grey.astype(np.float32))


def test_height_map_gwy_holds_scale_z_unit_and_mask(tmp_path: Path) -> None:
    import gwyfile

    from topograph.io.exports import write_height_map

    height = np.arange(12, dtype=np.float32).reshape(3, 4) * 0.5
    height[0, 0] = np.nan
    tif, gwy = write_height_map(tmp_path, height, 0.2, "um", {"frame": "test"})
    assert tif.name == "height_map.tif" and gwy.name == "height_map.gwy"
    obj = gwyfile.load(str(gwy))
    field = gwyfile.util.get_datafields(obj)["height (um)"]
    assert field.xreal == pytest.approx(4 * 0.2e-6) and field.yreal == pytest.approx(3 * 0.2e-6)
    assert field.si_unit_xy.unitstr == "m" and field.si_unit_z.unitstr == "m"
    assert field.data[2, 3] == pytest.approx(5.5e-6)
    assert obj["/0/mask"].data[0, 0] == 1.0 and obj["/0/mask"].data[1, 1] == 0.0
    _, px_gwy = write_height_map(tmp_path, height, None, "px", name="px_map")
    f2 = gwyfile.util.get_datafields(gwyfile.load(str(px_gwy)))["height (px)"]
    assert f2.si_unit_xy.unitstr == "px" and f2.xreal == 4 and f2.si_unit_z.unitstr == "px"


def test_stl_round_trip_of_a_pinched_solid_is_watertight(tmp_path: Path) -> None:
    """Two cubes touching along one edge, held by distinct vertex indices there (a bow-tie): watertight in
    memory, but after an STL round trip the merged edge has 4 faces unless the writer separates the
    pinched vertices (the quartz grain_mesh.stl had 7 such edges)."""
    import trimesh

    from topograph.io.exports import write_mesh

    a = trimesh.creation.box(extents=(1, 1, 1))
    a.apply_translation((0.5, 0.5, 0.5))
    b = trimesh.creation.box(extents=(1, 1, 1))
    b.apply_translation((-0.5, -0.5, 0.5))
    solid = trimesh.Trimesh(
        np.vstack([a.vertices, b.vertices]), np.vstack([a.faces, b.faces + len(a.vertices)]), process=False
    )
    assert solid.is_watertight
    solid.export(tmp_path / "naive.stl")
    naive = trimesh.load(tmp_path / "naive.stl")
    assert not naive.is_watertight  # the failure the writer must avoid
    write_mesh(solid, tmp_path / "m.stl", unit="um")
    write_mesh(solid, tmp_path / "m.ply", unit="um")
    stl = trimesh.load(tmp_path / "m.stl")
    ply = trimesh.load(tmp_path / "m.ply")
    assert stl.is_watertight and ply.is_watertight
    assert abs(stl.volume / ply.volume - 1) < 1e-3 and abs(ply.volume / 2.0 - 1) < 1e-3
    from plyfile import PlyData

    data = PlyData.read(str(tmp_path / "m.ply"))
    assert data["vertex"].data.dtype["x"] == np.float32 and "unit um" in data.comments
