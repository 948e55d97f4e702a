"""PLY, float TIFF and PNG writers/readers: exact round trips, units and pixel size, clear errors."""

from __future__ import annotations

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
        assert xres[0] / xres[1] == pytest.approx(1e4 / 0.25)  # pixels per cm
        assert int(page.tags["ResolutionUnit"].value) == 3
        assert '"unit": "um"' in page.description


def test_float_tiff_pixel_size_from_tags_or_none(tmp_path: Path) -> None:
    a = np.ones((8, 9), np.float32)
    tifffile.imwrite(tmp_path / "tags.tif", a, resolution=(1e4 / 2.0, 1e4 / 2.0), resolutionunit="CENTIMETER")
    _, px = read_float_tiff(tmp_path / "tags.tif")
    assert px == pytest.approx(2.0)
    write_float_tiff(tmp_path / "nopx.tif", a, pixel_size_um=None)
    _, px = read_float_tiff(tmp_path / "nopx.tif")
    assert px is None
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
