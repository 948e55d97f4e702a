"""Grain shape metrics on solids with exact ground truth, and the ``topograph analyze`` command on meshes."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import trimesh
from typer.testing import CliRunner

from topograph.analysis.grain import feret_min, grain_metrics
from topograph.analysis.mesh import close_with_base, heightfield_mesh, write_mesh
from topograph.errors import TopographError


def rotated_box(extents: tuple[float, float, float], seed: int = 0) -> trimesh.Trimesh:
    box = trimesh.creation.box(extents=extents)
    rot = trimesh.transformations.random_rotation_matrix(np.random.default_rng(seed).random(3))
    rot[:3, 3] = [5.0, -2.0, 7.0]
    box.apply_transform(rot)
    return box


def test_icosphere_volume_area_sphericity() -> None:
    r = 2.0
    g = grain_metrics(trimesh.creation.icosphere(subdivisions=4, radius=r), unit="um")
    assert g.volume == pytest.approx(4 / 3 * np.pi * r**3, rel=0.01)  # measured −0.2 %
    assert g.surface_area == pytest.approx(4 * np.pi * r**2, rel=0.01)
    assert g.sphericity == pytest.approx(1.0, abs=0.01)  # measured 0.9998
    assert g.equivalent_sphere_diameter == pytest.approx(2 * r, rel=0.01)
    for length in (g.length_l, g.length_i, g.length_s, g.feret_max, g.feret_min):
        assert length == pytest.approx(2 * r, rel=0.01)
    assert g.convexity == pytest.approx(1.0, abs=1e-9)
    assert g.relies_on_underside == frozenset()


def test_box_principal_dimensions_and_feret_are_exact() -> None:
    g = grain_metrics(rotated_box((3.0, 2.0, 1.0)), unit="um")
    assert (g.length_l, g.length_i, g.length_s) == pytest.approx((3.0, 2.0, 1.0), abs=1e-9)
    assert g.feret_max == pytest.approx(np.sqrt(14.0), abs=1e-9)  # space diagonal
    assert g.feret_min == pytest.approx(1.0, abs=1e-9)
    assert g.elongation == pytest.approx(2 / 3) and g.flatness == pytest.approx(0.5)
    assert g.volume == pytest.approx(6.0) and g.surface_area == pytest.approx(22.0)
    assert g.sphericity == pytest.approx(np.pi ** (1 / 3) * 36 ** (2 / 3) / 22)
    assert g.convexity == pytest.approx(1.0)


def test_feret_min_of_a_tetrahedron_is_attained_between_edges() -> None:
    # regular tetrahedron with edge a: min width a/√2, between opposite edges (not at a face normal)
    v = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=float)  # edge 2√2
    assert feret_min(v, None) == pytest.approx(2.0, rel=1e-3)


def test_convexity_of_an_l_shaped_prism() -> None:
    # an L of three unit squares (hull: a pentagon of area 3.5), 0.5 high, closed on a flat base
    mask = np.zeros((21, 21), dtype=bool)
    mask[:, :11] = True
    mask[:11, :] = True
    solid = close_with_base(np.full((21, 21), 0.5), 0.0, pixel_size=0.1, mask=mask)
    g = grain_metrics(solid, closure="base")
    assert g.volume == pytest.approx(1.5)
    assert g.convexity == pytest.approx(3.0 / 3.5, rel=1e-9)
    torus = grain_metrics(trimesh.creation.torus(major_radius=2.0, minor_radius=0.5))
    assert torus.convexity < 0.6  # measured 0.545


def test_hemisphere_base_closure_flags_underside_dependent_quantities() -> None:
    n = 80
    h = 2.4 / n
    c = (np.arange(n + 1) - n / 2) * h
    x, y = np.meshgrid(c, c)
    z = np.sqrt(np.clip(1 - x**2 - y**2, 0, None))
    solid = close_with_base(heightfield_mesh(z, h, (c[0], c[0]), x**2 + y**2 < 1), 0.0)
    g = grain_metrics(solid, unit="um", closure="base")
    assert {"volume", "surface_area", "sphericity", "length_s", "flatness", "convexity"} <= g.relies_on_underside
    assert g.closure == "flat base on the substrate plane"
    assert g.length_s == pytest.approx(1.0, rel=0.01) and g.length_l == pytest.approx(2.0, rel=0.03)
    d = g.to_dict()
    assert d["volume"]["unit"] == "um^3" and d["surface_area"]["unit"] == "um^2" and d["sphericity"]["unit"] == "1"
    assert d["volume"]["relies_on_underside"] is True
    assert json.loads(json.dumps(d)) == d
    line = g.one_line()
    assert "V µm³=" in line and "\n" not in line and "*" in line


def test_inward_winding_is_measured_as_outward() -> None:
    box = rotated_box((1.0, 2.0, 3.0))
    box = trimesh.Trimesh(box.vertices, box.faces[:, ::-1], process=False)
    assert grain_metrics(box).volume == pytest.approx(6.0)


def test_grain_metrics_errors() -> None:
    with pytest.raises(TopographError, match="empty"):
        grain_metrics(trimesh.Trimesh())
    open_dome = heightfield_mesh(np.ones((5, 5)), 1.0)
    with pytest.raises(TopographError, match="--close base") as exc:
        grain_metrics(open_dome)
    assert "not closed" in exc.value.cause
    with pytest.raises(TopographError, match="unknown closure"):
        grain_metrics(rotated_box((1, 1, 1)), closure="glued")


# ---- CLI -------------------------------------------------------------------------------------------


def test_cli_analyze_stl_writes_the_volume_to_json(tmp_path) -> None:
    from topograph.cli import app

    stl = write_mesh(rotated_box((3.0, 2.0, 1.0)), tmp_path / "box.stl")
    out = tmp_path / "m.json"
    result = CliRunner().invoke(app, ["analyze", str(stl), "--json", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["kind"] == "mesh"
    assert data["grain"]["volume"]["value"] == pytest.approx(6.0, rel=1e-5)
    assert data["grain"]["feret_max"]["value"] == pytest.approx(np.sqrt(14), rel=1e-5)
    assert data["grain"]["relies_on_underside"] == []
    assert "Grain metrics" in result.output


def test_cli_analyze_open_mesh_needs_close_then_closes_it(tmp_path) -> None:
    from topograph.cli import app

    n = 60
    h = 2.4 / n
    c = (np.arange(n + 1) - n / 2) * h
    x, y = np.meshgrid(c, c)
    z = np.sqrt(np.clip(1 - x**2 - y**2, 0, None))
    ply = write_mesh(heightfield_mesh(z, h, (c[0], c[0])), tmp_path / "dome.ply", unit="um")
    runner = CliRunner()
    result = runner.invoke(app, ["analyze", str(ply)])
    assert isinstance(result.exception, TopographError) and "--close base" in str(result.exception)
    out = tmp_path / "d.json"
    result = runner.invoke(app, ["analyze", str(ply), "--close", "base", "--json", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["grain"]["volume"]["value"] == pytest.approx(2 / 3 * np.pi, rel=0.005)
    assert data["grain"]["closure"] == "flat base on the substrate plane"
    assert any("substrate level" in note for note in data["notes"])


def test_cli_analyze_point_cloud(tmp_path) -> None:
    from plyfile import PlyData, PlyElement

    from topograph.cli import app

    rng = np.random.default_rng(3)
    xy = rng.uniform(-1.25, 1.25, (30000, 2))
    z = np.sqrt(np.clip(1 - (xy**2).sum(axis=1), 0, None)) + rng.normal(0, 0.003, len(xy))
    v = np.empty(len(xy), dtype=[("x", "f4"), ("y", "f4"), ("z", "f4")])
    v["x"], v["y"], v["z"] = xy[:, 0], xy[:, 1], z
    PlyData([PlyElement.describe(v, "vertex")], comments=["unit um"]).write(str(tmp_path / "cloud.ply"))
    out = tmp_path / "c.json"
    result = CliRunner().invoke(app, ["analyze", str(tmp_path / "cloud.ply"), "--json", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["kind"] == "point cloud"
    assert data["grain"]["volume"]["value"] == pytest.approx(2 / 3 * np.pi, rel=0.03)


def test_cli_errors_are_one_line_with_exit_status_3(tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "topograph", "analyze", str(tmp_path / "nope.stl")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 3  # input error (2 is a usage error), see topograph.errors
    assert "file not found" in proc.stderr and "Traceback" not in proc.stderr
    empty = tmp_path / "empty.ply"
    empty.write_text(
        "ply\nformat ascii 1.0\nelement vertex 0\nproperty float x\nproperty float y\nproperty float z\nend_header\n"
    )
    from topograph.cli import app

    result = CliRunner().invoke(app, ["analyze", str(empty)])
    assert isinstance(result.exception, TopographError) and "empty" in str(result.exception)
