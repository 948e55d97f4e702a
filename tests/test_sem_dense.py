"""Unit tests of the dense SEM stage's building blocks: per-pixel triangulation by observation pattern,
the epipolar check, outlier removal with its matching-tolerance floor, the fast mesh writers and the
z-buffered cloud preview. (End-to-end accuracy on rendered grains: tests/test_sem_pipeline.py.)"""

from __future__ import annotations

import numpy as np
import pytest
import trimesh
from plyfile import PlyData

from topograph.errors import TopographError
from topograph.geometry.affine import camera_from_stage
from topograph.geometry.dense_triangulation import NormalEquations, RelativeObservation, epipolar_distance_px
from topograph.io.exports import write_mesh_ply, write_stl
from topograph.report.render import render_cloud_views, splat_orthographic, view_basis
from topograph.sem.dense import _on_epipolar_line, grain_mesh_step, remove_grid_outliers


def _cameras(tilts=(0.0, 5.0, 10.0)):
    """Stage cameras tilted about the image y axis (tilt axis 90°), 0.5 µm pixels."""
    return [camera_from_stage(t, 90.0, pixel_size_um=0.5, translation_px=np.array([300.0 + t, 200.0])) for t in tilts]


def test_normal_equations_recover_points_for_every_observation_pattern() -> None:
    rng = np.random.default_rng(0)
    cams = _cameras()
    pts = rng.uniform(-50, 50, size=(5000, 3))
    acc = NormalEquations(len(pts))
    seen = [np.ones(len(pts), bool), rng.random(len(pts)) < 0.7, rng.random(len(pts)) < 0.7]
    for cam, vis in zip(cams, seen, strict=True):
        acc.add_view(cam, cam.project(pts), vis)
    out = acc.solve(min_views=2)
    n_obs = np.sum(seen, axis=0)
    ok = n_obs >= 2
    np.testing.assert_array_equal(acc.count, n_obs)
    np.testing.assert_allclose(out[ok], pts[ok], atol=1e-9)
    assert np.isnan(out[~ok]).all()
    # Four views; one observation of some pixels 3 px off across the epipolar line. Least squares spreads
    # it (residual 2.25 px there, 0.75 px in the others), the residual check drops just that observation
    # and the point comes back exactly from the other three.
    cams4 = _cameras((0.0, 4.0, 8.0, 12.0))
    bad = rng.choice(len(pts), 300, replace=False)
    acc2 = NormalEquations(len(pts))
    for k, cam in enumerate(cams4):
        xy = cam.project(pts)
        if k == 2:
            xy[bad] += [0.0, 3.0]
        acc2.add_view(cam, xy, np.ones(len(pts), bool))
    first = acc2.solve()
    assert np.abs(first[bad] - pts[bad]).max() > 0.3  # 0.75 px of 0.5 µm
    assert acc2.reject(first, threshold_px=1.0, keep_slots=(2,)) == 0  # a kept slot is never dropped
    assert acc2.reject(first, threshold_px=1.0) == len(bad)
    np.testing.assert_array_equal(acc2.count[bad], 3)
    np.testing.assert_allclose(acc2.solve(), pts, atol=1e-9)  # the float64 observations as given


def test_blocked_solve_with_rejection_is_the_per_pixel_least_squares(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks of 1000 pixels, two threads: every pixel's point is its own least-squares point over the
    observations that survive the reprojection check (here: the 3-px outliers of slot 2), float32 out."""
    import topograph.geometry.dense_triangulation as dt

    monkeypatch.setattr(dt, "SOLVE_CHUNK_PX", 1000)
    rng = np.random.default_rng(5)
    cams = _cameras((0.0, 4.0, 8.0, 12.0))
    n = 7500
    pts = rng.uniform(-50, 50, size=(n, 3))
    acc = NormalEquations(n)
    bad = rng.choice(n, 400, replace=False)
    seen = [np.ones(n, bool)] + [rng.random(n) < 0.8 for _ in cams[1:]]
    for k, (cam, vis) in enumerate(zip(cams, seen, strict=True)):
        xy = cam.project(pts).astype(np.float32)
        xy[~vis] = np.nan  # never read where not valid
        if k == 2:
            xy[bad] += [0.0, 3.0]
        acc.add_view(cam, xy, vis)
    out, removed = acc.solve_with_rejection(2, 1.0, keep_slots=(0,), threads=2)
    assert out.dtype == np.float32
    assert removed >= int(seen[2][bad].sum())  # the 3-px observations, and where few views share the error more
    assert not (acc.code[bad[seen[2][bad]]] & 4).any()  # every 3-px observation of slot 2 dropped
    ok = acc.count >= 2
    assert ok.mean() > 0.9 and np.isnan(out[~ok]).all()
    np.testing.assert_allclose(out[ok], pts[ok], atol=2e-3)  # float32 observations of ~300 px
    # the same as one solve, one rejection and a second solve over the whole array
    acc2 = NormalEquations(n)
    for cam, obs in zip(cams, acc.observations, strict=True):
        acc2.add_view(cam, obs, np.isfinite(obs).all(axis=1))
    first = acc2.solve()
    assert acc2.reject(first, 1.0, keep_slots=(0,)) == removed
    np.testing.assert_array_equal(acc2.solve(dtype=np.float32), out)


def test_normal_equations_hold_no_float64_per_pixel_arrays(monkeypatch: pytest.MonkeyPatch) -> None:
    """Accumulating five views of 1 M pixels and solving them with rejection allocates < 24 B per pixel
    beyond the observations themselves (the pattern codes, the float32 points, one block's work arrays, here
    blocks of 16 k pixels: at 3–4 MP the default blocks weigh as little); an (N, 3) float64 right-hand side
    alone would be 24 B."""
    import tracemalloc

    import topograph.geometry.dense_triangulation as dt

    monkeypatch.setattr(dt, "SOLVE_CHUNK_PX", 1 << 14)
    n = 1 << 20
    cams = _cameras((0.0, 3.0, 6.0, 9.0, 12.0))
    pts = np.random.default_rng(2).uniform(-50, 50, size=(n, 3))
    observations = [cam.project(pts).astype(np.float32) for cam in cams]
    valid = np.ones(n, bool)
    tracemalloc.start()
    try:
        acc = NormalEquations(n)
        for cam, xy in zip(cams, observations, strict=True):
            acc.add_view(cam, xy, valid)
        out, _ = acc.solve_with_rejection(2, 1.0, keep_slots=(0,))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert np.isfinite(out).all()
    assert peak < 24 * n, f"{peak / n:.1f} B per pixel"


def test_chained_match_as_a_displacement_lowers_the_depth_noise() -> None:
    """Views at −5°, 0° (reference) and +5°; direct matches a, b and a chained match b' = x_a + u_ab, every
    flow with independent 0.3 px noise. As an absolute observation of b, b' repeats a's error; as the
    displacement u_ab every error is independent and the least-squares point has the smallest depth noise."""
    rng = np.random.default_rng(3)
    a_cam, ref_cam, b_cam = _cameras((-5.0, 0.0, 5.0))
    n, sigma = 40_000, 0.3
    pts = rng.uniform(-50, 50, size=(n, 3))
    x_ref, x_a, x_b = ref_cam.project(pts), a_cam.project(pts), b_cam.project(pts)
    obs_a = x_a + rng.normal(0, sigma, (n, 2))
    obs_b = x_b + rng.normal(0, sigma, (n, 2))
    u_ab = x_b - x_a + rng.normal(0, sigma, (n, 2))
    ones = np.ones(n, bool)
    depth_dir = ref_cam.viewing_direction
    rms = {}
    for name, (cam, xy) in {
        "absolute": (b_cam, obs_a + u_ab),
        "displacement": (RelativeObservation(b_cam, a_cam), u_ab),
    }.items():
        acc = NormalEquations(n)
        acc.add_view(ref_cam, x_ref, ones)
        acc.add_view(a_cam, obs_a, ones)
        acc.add_view(b_cam, obs_b, ones)
        acc.add_view(cam, xy, ones)
        rms[name] = float(np.sqrt(np.mean(((acc.solve() - pts) @ depth_dir) ** 2)))
    # the exact depth standard deviation of each least-squares point: (HᵀH)⁻¹ Hᵀ C H (HᵀH)⁻¹ along the ray
    rows = {
        "absolute": (b_cam.matrix, [[0, 0, 0, 0], [0, 1, 0, 1], [0, 0, 1, 0], [0, 1, 0, 2]]),
        "displacement": (b_cam.matrix - a_cam.matrix, [[0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]),
    }
    for name, (last, cov_blocks) in rows.items():
        h = np.vstack([ref_cam.matrix, a_cam.matrix, b_cam.matrix, last])
        cov = sigma**2 * np.kron(np.array(cov_blocks, float), np.eye(2))
        g = np.linalg.inv(h.T @ h) @ h.T
        assert rms[name] == pytest.approx(np.sqrt(depth_dir @ g @ cov @ g.T @ depth_dir), rel=0.03)
    assert rms["displacement"] < 0.97 * rms["absolute"]  # 0.705 vs 0.737 (4 %; 13 % with an exact reference)


def test_epipolar_distance_is_the_offset_across_the_line() -> None:
    rng = np.random.default_rng(1)
    ref, other = _cameras((0.0, 8.0))
    pts = rng.uniform(-40, 40, size=(100, 3))
    xr, xo = ref.project(pts), other.project(pts)
    assert epipolar_distance_px(ref, other, xr, xo).max() < 1e-9
    # Epipolar lines run along the image x axis for a tilt about y: a shift in y is a distance, in x not.
    np.testing.assert_allclose(epipolar_distance_px(ref, other, xr, xo + [0.0, 0.7]), 0.7, atol=1e-6)
    assert epipolar_distance_px(ref, other, xr, xo + [5.0, 0.0]).max() < 1e-6


def test_epipolar_check_over_the_grid_keeps_what_the_distance_keeps(monkeypatch) -> None:
    """The chunked whole-grid check (no gathers) keeps exactly the valid matches within the threshold of
    epipolar_distance_px, NaN targets never; chunks smaller than the grid change nothing."""
    import topograph.sem.dense as dense_module

    rng = np.random.default_rng(3)
    ref, other = _cameras((0.0, 7.0))
    pts = rng.uniform(-40, 40, size=(4800, 3))
    grid = ref.project(pts).astype(np.float32)
    xy = (other.project(pts) + rng.normal(0, 0.6, (len(grid), 2))).astype(np.float32)
    xy[::97] = np.nan
    valid = rng.random(len(grid)) < 0.8
    dist = epipolar_distance_px(ref, other, grid, xy)
    expected = valid & (dist <= 0.5)
    assert 0.2 < expected.mean() < 0.7  # the threshold splits the noisy matches
    np.testing.assert_array_equal(_on_epipolar_line(ref, other, grid, xy, valid, 0.5), expected)
    monkeypatch.setattr(dense_module, "EPIPOLAR_CHUNK_PX", 1000)
    np.testing.assert_array_equal(_on_epipolar_line(ref, other, grid, xy, valid, 0.5), expected)


def test_outlier_removal_keeps_rough_relief_above_the_matching_floor_and_drops_spikes() -> None:
    rng = np.random.default_rng(2)
    yy, xx = np.mgrid[0:200, 0:200]
    # Fine relief (period 4 px, amplitude 3) plus small noise: the 5×5 median misses the relief.
    depth = (3.0 * np.sin(xx * np.pi / 2) + rng.normal(0, 0.05, xx.shape)).astype(np.float32)
    spikes = rng.random(depth.shape) < 0.002
    depth[spikes] += 60.0
    depth[:5] = np.nan
    kept_plain = remove_grid_outliers(depth, std_ratio=3.0, floor=0.0)
    kept = remove_grid_outliers(depth, std_ratio=3.0, floor=10.0)
    relief = np.isfinite(depth) & ~spikes
    assert not kept[spikes].any() and not kept_plain[spikes].any()
    assert kept[relief].mean() > 0.999
    assert kept_plain[relief].mean() < kept[relief].mean()  # without the floor, real relief is lost
    assert not kept[:5].any()


def test_grain_mesh_step_bounds_the_cell_count() -> None:
    assert grain_mesh_step(50_000, 0.5, max_cells=120_000) == 0.5
    step = grain_mesh_step(700_000, 1.0, max_cells=120_000)
    assert step == 3.0 and 700_000 / step**2 <= 120_000


def test_mesh_writers_round_trip(tmp_path) -> None:
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=2.0)
    ply = write_mesh_ply(tmp_path / "s.ply", sphere.vertices, sphere.faces, comments=["unit px"])
    data = PlyData.read(str(ply))
    v = np.column_stack([data["vertex"][a] for a in "xyz"])
    f = np.vstack(data["face"]["vertex_indices"])
    assert data["vertex"].data.dtype["x"] == np.float32  # float32 vertices: exact to float32 rounding
    np.testing.assert_array_equal(v, sphere.vertices.astype(np.float32))
    np.testing.assert_array_equal(f, sphere.faces)
    assert "unit px" in data.comments
    stl = trimesh.load(str(write_stl(tmp_path / "s.stl", sphere.vertices, sphere.faces)), force="mesh")
    assert stl.is_watertight
    assert stl.volume == pytest.approx(sphere.volume, rel=1e-5)
    np.testing.assert_allclose(stl.face_normals, sphere.face_normals, atol=1e-5)
    with pytest.raises(TopographError, match="outside its vertex list"):
        write_mesh_ply(tmp_path / "b.ply", sphere.vertices, sphere.faces + len(sphere.vertices))
    assert not list(tmp_path.glob(".*tmp*"))


def test_splat_keeps_the_point_nearest_the_viewer(tmp_path) -> None:
    # Two points on one line of sight from above: the higher one (nearer the viewer) must win.
    xyz = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.5], [-1.0, -1.0, 0.5]])
    values = np.array([0.1, 0.9, 0.5, 0.5])
    basis = view_basis(90.0, -90.0)
    img = splat_orthographic(xyz, values, basis, centre=np.zeros(3), half_extent=1.5, size_px=31, splat_px=1)
    assert img[15, 15] == pytest.approx(0.9)
    assert np.isfinite(img).sum() == 3
    # The same from below: the lower point wins.
    img = splat_orthographic(xyz, values, view_basis(-90.0, -90.0), np.zeros(3), 1.5, 31, 1)
    assert img[15, 15] == pytest.approx(0.1)
    rng = np.random.default_rng(3)
    cloud = rng.normal(size=(300_000, 3))
    out = render_cloud_views(cloud, None, tmp_path / "v.png", unit="px")
    import matplotlib.image as mpimg

    assert mpimg.imread(out).shape[1] > 1.5 * mpimg.imread(out).shape[0]


def test_chained_pairs_only_for_short_series() -> None:
    """3 views: the one pair without the reference; 5 or 7 views: direct flows only (as accurate, fewer
    flows); with no length limit: neighbours in tilt order."""
    from topograph.sem.config import DenseConfig
    from topograph.sem.dense import chained_pairs

    assert chained_pairs([0.0, 5.0, 10.0], 1, DenseConfig()) == [(0, 2)]
    assert chained_pairs([-10.0, -5.0, 0.0, 5.0, 10.0], 2, DenseConfig()) == []
    assert chained_pairs([0.0, 5.0, 10.0], 1, DenseConfig(chain_pairs=False)) == []
    unlimited = DenseConfig(chain_pairs_max_views=0)
    assert chained_pairs([10.0, -10.0, 0.0, 5.0, -5.0], 2, unlimited) == [(1, 4), (4, 3), (3, 0)]
