"""Synthetic SEM tilt series: exact ray casting, exact volume, view-consistent texture, files."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from topograph.errors import TopographError
from topograph.synth.sem import (
    GrainSpec,
    RayCaster,
    grain_footprint_radius,
    grain_height_grid,
    load_sem_dataset,
    load_sem_truth,
    render_sem_series,
    render_view,
    save_sem_dataset,
)

SIZE = (220, 240)  # (H, W)


@pytest.fixture(scope="module")
def ds():
    """Three noisy views with an oblique tilt axis and a negative tilt."""
    return render_sem_series(GrainSpec(seed=5), tilts_deg=(0.0, 10.0, -20.0), tilt_axis_deg=25.0, image_size=SIZE)


def _pixels(shape: tuple[int, int], stride: int = 1) -> np.ndarray:
    yy, xx = np.mgrid[0 : shape[0] : stride, 0 : shape[1] : stride]
    return np.column_stack([xx.ravel(), yy.ravel()]).astype(float)


def test_rays_hit_the_true_surface_exactly(ds):
    caster = RayCaster(ds.surface)
    xy = _pixels(SIZE)
    for v, cam in enumerate(ds.cameras):
        hits = caster.cast(cam, xy)
        assert np.abs(cam.project(hits.points) - xy).max() < 1e-6
        off = np.abs(hits.points[:, 2] - ds.height_at(hits.points[:, 0], hits.points[:, 1]))
        assert off.max() < 1e-3 * ds.grain_height_um
        # the stored per-view truth is the same surface
        np.testing.assert_allclose(ds.view_heights[v].ravel(), hits.points[:, 2], atol=1e-4)
        assert np.array_equal(ds.view_masks[v].ravel(), hits.on_grain)
        assert 0.15 < hits.on_grain.mean() < 0.5  # the grain fills a good part of the field


def test_first_hit_matches_a_ten_times_finer_march(ds):
    """Empty-space skipping and the half-cell step miss no surface: same hits as a brute-force march."""
    xy = _pixels(SIZE, stride=3)
    cam = ds.cameras[2]  # −20° about an oblique axis: the largest horizontal ray travel
    fast = RayCaster(ds.surface).cast(cam, xy)
    slow = RayCaster(ds.surface, step_fraction=0.05, block=4).cast(cam, xy)
    dz = np.abs(fast.points[:, 2] - slow.points[:, 2])
    assert np.mean(dz > 1e-3 * ds.grain_height_um) < 1e-3


def test_specimen_centre_projects_to_image_centre_and_grain_fills_the_field(ds):
    centre = np.array([ds.specimen_centre_um])
    for cam in ds.cameras:
        np.testing.assert_allclose(cam.project(centre)[0], [(SIZE[1] - 1) / 2, (SIZE[0] - 1) / 2], atol=1e-9)
    assert 0.5 <= ds.max_feret_um / (min(SIZE) * ds.pixel_size_um) <= 0.7


def test_volume_of_a_paraboloid_cap_matches_the_analytic_value():
    r0, h = 20.0, 16.0
    spec = GrainSpec(
        diameter_um=2 * r0,
        height_fraction=h / (2 * r0),
        roughness=0.0,
        n_harmonics=0,
        profile_exponent=1.0,
        edge_softening=0.0,
        n_bumps=0,
        n_facets=0,
    )
    surf = grain_height_grid(spec, 0.1)
    volume = float(surf.height.astype(np.float64).sum()) * 0.1**2
    assert volume == pytest.approx(math.pi * r0**2 * h / 2, rel=5e-3)
    assert abs(volume / (math.pi * r0**2 * h / 2) - 1) < 1e-3


def test_volume_and_footprint_of_an_irregular_cap_match_the_analytic_values():
    """Cap H g(ρ) over the harmonic footprint: V = H · A · ∫₀¹ g(w) dw with w = 1 − ρ², A = ½∮ r(φ)² dφ."""
    spec = GrainSpec(seed=3, roughness=0.2, n_harmonics=5, n_bumps=0, n_facets=0)
    p, eps = spec.profile_exponent, spec.edge_softening
    g_mean = (((1 + eps) ** (p + 1) - eps ** (p + 1)) / (p + 1) - eps**p) / ((1 + eps) ** p - eps**p)
    phi = np.linspace(0, 2 * np.pi, 200_000, endpoint=False)
    area = 0.5 * np.mean(grain_footprint_radius(spec, phi) ** 2) * 2 * np.pi
    cap_h = spec.height_fraction * spec.diameter_um
    ds = render_sem_series(spec, tilts_deg=(0.0,), image_size=(200, 200), noise=0.0)
    assert ds.true_volume_um3 == pytest.approx(cap_h * area * g_mean, rel=5e-3)
    assert ds.footprint_area_um2 == pytest.approx(area, rel=5e-3)
    assert ds.grain_diameter_um == pytest.approx(math.sqrt(4 * area / math.pi), rel=5e-3)
    assert ds.grain_height_um == pytest.approx(cap_h, rel=1e-3)


def test_rendering_is_deterministic_per_seed():
    kw = {"tilts_deg": (0.0, 8.0), "image_size": (96, 96)}
    a = render_sem_series(GrainSpec(seed=1), seed=4, **kw)
    b = render_sem_series(GrainSpec(seed=1), seed=4, **kw)
    c = render_sem_series(GrainSpec(seed=1), seed=5, **kw)
    d = render_sem_series(GrainSpec(seed=2), seed=4, **kw)
    for x, y in zip(a.images, b.images, strict=True):
        assert np.array_equal(x, y)
    assert not np.array_equal(a.images[1], c.images[1])  # other noise ...
    assert np.array_equal(a.surface_height, c.surface_height)  # ... same grain
    assert a.true_volume_um3 != d.true_volume_um3  # other grain


def test_texture_is_attached_to_the_surface(ds):
    """A surface point facing both views has the same unshaded texture in both."""
    kw = {"texture_seed": 5, "texture_largest_um": 40.0 / 6, "noise": 0.0, "blur_sigma_px": 0.0}
    v0 = render_view(ds.surface, ds.cameras[0], SIZE, **kw)
    v1 = render_view(ds.surface, ds.cameras[1], SIZE, **kw)
    xy0 = _pixels(SIZE)
    caster = RayCaster(ds.surface)
    p = caster.cast(ds.cameras[0], xy0)
    xy1 = ds.cameras[1].project(p.points)
    inside = (xy1[:, 0] > 1) & (xy1[:, 0] < SIZE[1] - 2) & (xy1[:, 1] > 1) & (xy1[:, 1] < SIZE[0] - 2)
    back = caster.cast(ds.cameras[1], np.round(xy1))
    seen = inside & p.on_grain & (np.linalg.norm(back.points - p.points, axis=1) < 2 * ds.pixel_size_um)
    # smooth, unoccluded patches only: the same point must be seen and not near a depth edge
    assert seen.sum() > 3000
    a0 = v0.albedo.ravel()[seen]
    ix, iy = xy1[seen, 0], xy1[seen, 1]
    x0, y0 = np.floor(ix).astype(int), np.floor(iy).astype(int)
    fx, fy = ix - x0, iy - y0
    im = v1.albedo
    a1 = (
        im[y0, x0] * (1 - fx) * (1 - fy)
        + im[y0, x0 + 1] * fx * (1 - fy)
        + im[y0 + 1, x0] * (1 - fx) * fy
        + im[y0 + 1, x0 + 1] * fx * fy
    )
    assert np.corrcoef(a0, a1)[0, 1] > 0.95
    assert np.median(np.abs(a0 - a1)) < 0.02
    # a texture stuck to the image instead would not follow the parallax
    assert np.corrcoef(a0, v1.albedo.ravel()[seen])[0, 1] < 0.9


def test_sift_matches_agree_with_the_true_correspondences(ds):
    cv2 = pytest.importorskip("cv2")
    im = [(np.clip(i, 0, 1) * 255).astype(np.uint8) for i in ds.images[:2]]
    sift = cv2.SIFT_create()
    k0, d0 = sift.detectAndCompute(im[0], None)
    k1, d1 = sift.detectAndCompute(im[1], None)
    pairs = [m for m, n in cv2.BFMatcher().knnMatch(d0, d1, k=2) if m.distance < 0.75 * n.distance]
    x0 = np.array([k0[m.queryIdx].pt for m in pairs])
    x1 = np.array([k1[m.trainIdx].pt for m in pairs])
    truth = ds.cameras[1].project(RayCaster(ds.surface).cast(ds.cameras[0], x0).points)
    err = np.linalg.norm(truth - x1, axis=1)
    assert len(pairs) >= 40
    assert np.median(err) < 0.6
    assert np.mean(err < 1.5) > 0.7


def test_distance_to_surface(ds):
    hits = RayCaster(ds.surface).cast(ds.cameras[1], _pixels(SIZE, stride=2))
    on = ds.distance_to_surface(hits.points)
    assert np.percentile(on, 99) < 0.02 * ds.pixel_size_um
    pts = hits.points[hits.on_grain]
    eps = 1e-5
    gx = (ds.height_at(pts[:, 0] + eps, pts[:, 1]) - ds.height_at(pts[:, 0] - eps, pts[:, 1])) / (2 * eps)
    gy = (ds.height_at(pts[:, 0], pts[:, 1] + eps) - ds.height_at(pts[:, 0], pts[:, 1] - eps)) / (2 * eps)
    n = np.column_stack([-gx, -gy, np.ones_like(gx)])
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    delta = 0.5 * ds.pixel_size_um
    ratio = ds.distance_to_surface(pts + delta * n) / delta
    assert np.median(np.abs(ratio - 1)) < 0.005
    assert np.percentile(ratio, 95) < 1.01
    # far out over bare substrate the distance is the height
    far = np.array([[300.0, -250.0, 7.5], [-1e3, 0.0, 0.25]])
    np.testing.assert_allclose(ds.distance_to_surface(far), [7.5, 0.25], atol=1e-9)


def test_visible_surface_points_are_the_grain_pixels(ds):
    pts = ds.visible_surface_points(2)
    assert len(pts) == int(ds.view_masks[2].sum())
    assert np.abs(pts[:, 2] - ds.height_at(pts[:, 0], pts[:, 1])).max() < 1e-3 * ds.grain_height_um
    assert (pts[:, 2] > 0).all()
    assert len(ds.surface_points(grain_only=True)) > len(pts)
    with pytest.raises(TopographError):
        ds.visible_surface_points(7)


def test_saved_dataset_reloads_with_identical_truth_and_fei_metadata(ds, tmp_path):
    tifffile = pytest.importorskip("tifffile")
    save_sem_dataset(ds, tmp_path)
    truth = load_sem_truth(tmp_path)
    for a, b in zip(ds.cameras, truth.cameras, strict=True):
        assert np.array_equal(a.rotation, b.rotation)
        assert a.scale == b.scale and a.skew == b.skew
        assert np.array_equal(a.translation, b.translation)
    assert np.array_equal(truth.surface_height, ds.surface_height)
    assert truth.grid_origin_um == ds.grid_origin_um and truth.grid_spacing_um == ds.grid_spacing_um
    assert truth.true_volume_um3 == ds.true_volume_um3 and truth.spec == ds.spec
    assert truth.tilts_deg == ds.tilts_deg and truth.image_shape == ds.image_shape
    assert all(np.array_equal(a, b) for a, b in zip(truth.view_masks, ds.view_masks, strict=True))
    doc = json.loads((tmp_path / "truth" / "truth.json").read_text())
    assert doc["units"]["length"] == "um" and len(doc["views"]) == 3

    for i, tilt in enumerate(ds.tilts_deg):
        with tifffile.TiffFile(tmp_path / f"view_{i:02d}.tif") as tif:
            assert tif.is_fei
            meta = tif.fei_metadata
            assert tif.pages[0].dtype == np.uint16 and tif.pages[0].shape == SIZE
        assert meta["Stage"]["StageT"] == pytest.approx(math.radians(tilt), abs=1e-12)
        assert meta["Stage"]["StageR"] == 0
        assert meta["Scan"]["PixelWidth"] == pytest.approx(ds.pixel_size_um * 1e-6, rel=1e-12)
        assert meta["EBeam"]["WD"] == pytest.approx(0.01)
        assert meta["Image"]["ResolutionY"] == SIZE[0]
    loaded = load_sem_dataset(tmp_path)
    assert max(np.abs(a - b).max() for a, b in zip(loaded.images, ds.images, strict=True)) <= 1 / 65535


def test_no_metadata_writes_plain_pngs(ds, tmp_path):
    save_sem_dataset(ds, tmp_path, with_metadata=False)
    assert sorted(p.name for p in tmp_path.glob("view_*")) == ["view_00.png", "view_01.png", "view_02.png"]
    loaded = load_sem_dataset(tmp_path)
    assert max(np.abs(a - b).max() for a, b in zip(loaded.images, ds.images, strict=True)) <= 0.5 / 255 + 1e-6


def test_bad_input_raises_a_topograph_error(tmp_path):
    with pytest.raises(TopographError):
        render_sem_series(tilts_deg=(0.0, 85.0), image_size=(64, 64))
    with pytest.raises(TopographError):
        render_sem_series(tilts_deg=(0.0,), image_size=(64, 64), pixel_size_um=0.05)  # grain does not fit
    with pytest.raises(TopographError):
        GrainSpec(diameter_um=-1)
    with pytest.raises(TopographError):
        load_sem_truth(tmp_path)


def test_cli_writes_a_dataset(tmp_path):
    from typer.testing import CliRunner

    from topograph.cli import app

    out = tmp_path / "series"
    res = CliRunner().invoke(app, ["synth", "sem", str(out), "--size", "80x64", "--tilts", "0,6", "--seed", "2"])
    assert res.exit_code == 0, res.output
    truth = load_sem_truth(out)
    assert truth.image_shape == (64, 80) and truth.tilts_deg == (0.0, 6.0)
    assert (out / "view_01.tif").is_file()
    bad = CliRunner().invoke(app, ["synth", "sem", str(tmp_path / "x"), "--tilts", "0,a"])
    assert isinstance(bad.exception, TopographError)
