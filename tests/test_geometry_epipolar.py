"""Affine epipolar geometry: Gold-Standard fit, residuals, RANSAC and the tilt axis, on exact synthetic scenes."""

from __future__ import annotations

import numpy as np
import pytest

from topograph.geometry.affine import camera_from_stage
from topograph.geometry.epipolar import (
    epipolar_disparity_px,
    epipolar_residuals_px,
    fit_affine_fundamental,
    ransac_affine_fundamental,
    tilt_axis_from_fundamental,
)
from topograph.synth.scene import bumpy_blob_points, make_affine_scene


def _with_outliers(xy_i: np.ndarray, xy_j: np.ndarray, fraction: float, seed: int):
    rng = np.random.default_rng(seed)
    out = rng.random(len(xy_i)) < fraction
    xj = xy_j.copy()
    xj[out] = rng.uniform(0.0, 1024.0, size=(int(out.sum()), 2))
    return xy_i, xj, out


@pytest.mark.parametrize("axis_deg", [0.0, 30.0, -45.0, 90.0, 137.0])
def test_exact_fit_and_tilt_axis(axis_deg: float) -> None:
    cams, _, tr = make_affine_scene(2, 300, [0.0, 7.0], tilt_axis_deg=axis_deg, seed=1)
    f = fit_affine_fundamental(tr.xy[0], tr.xy[1])
    assert np.allclose(f[:2, :2], 0.0) and f[2, 2] != 0.0
    assert np.isclose(f[0, 2] ** 2 + f[1, 2] ** 2 + f[2, 0] ** 2 + f[2, 1] ** 2, 1.0)
    assert epipolar_residuals_px(f, tr.xy[0], tr.xy[1]).max() < 1e-8
    expected = (axis_deg + 90.0) % 180.0 - 90.0
    expected = 90.0 if expected == -90.0 else expected
    got = tilt_axis_from_fundamental(f)
    assert -90.0 < got <= 90.0
    assert abs(got - expected) < 1e-6


def test_tilt_axis_with_a_scale_change_and_nonzero_first_tilt() -> None:
    pts = bumpy_blob_points(400, 300.0, np.random.default_rng(2))
    ci = camera_from_stage(-12.0, 22.0, translation_px=np.array([500.0, 480.0]))
    cj = camera_from_stage(3.0, 22.0, pixel_size_um=1 / 1.02, translation_px=np.array([520.0, 470.0]))
    f = fit_affine_fundamental(ci.project(pts), cj.project(pts))
    assert abs(tilt_axis_from_fundamental(f) - 22.0) < 1e-6


def test_residual_is_the_geometric_distance() -> None:
    _, _, tr = make_affine_scene(2, 200, [0.0, 8.0], tilt_axis_deg=10.0, seed=3)
    f = fit_affine_fundamental(tr.xy[0], tr.xy[1])
    n = np.array([f[0, 2], f[1, 2], f[2, 0], f[2, 1]])
    # moving the 4-vector (x_j, y_j, x_i, y_i) by 2.5 px along the unit normal gives a residual of 2.5 px
    xj = tr.xy[1] + 2.5 * n[:2]
    xi = tr.xy[0] + 2.5 * n[2:]
    assert np.allclose(epipolar_residuals_px(f, xi, xj), 2.5, atol=1e-8)
    # and moving both points along their epipolar lines keeps it at zero
    d0 = epipolar_disparity_px(f, tr.xy[0], tr.xy[1])
    lj = np.array([-n[1], n[0]]) / np.hypot(n[0], n[1])
    assert np.allclose(epipolar_residuals_px(f, tr.xy[0], tr.xy[1] + 40.0 * lj), 0.0, atol=1e-8)
    assert np.allclose(epipolar_disparity_px(f, tr.xy[0], tr.xy[1] + 40.0 * lj) - d0, 40.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ransac_with_30_percent_outliers(seed: int) -> None:
    axis = -35.0
    _, _, tr = make_affine_scene(2, 1000, [0.0, 8.0], tilt_axis_deg=axis, noise_px=0.3, seed=seed)
    xi, xj, out = _with_outliers(tr.xy[0], tr.xy[1], 0.3, seed + 100)
    res = ransac_affine_fundamental(xi, xj, threshold_px=1.0, seed=seed)
    assert res
    recall = (res.inliers & ~out).sum() / (~out).sum()
    precision = (res.inliers & ~out).sum() / res.inliers.sum()
    assert recall >= 0.95  # measured 0.996–1.0
    assert precision >= 0.99
    assert abs(tilt_axis_from_fundamental(res.F) - axis) < 0.5  # measured ≤ 0.2°
    # residual of an inlier = noise projected on the unit 4-D normal: RMS ≈ σ = 0.3 px
    assert 0.2 < res.rms_px < 0.4
    assert 0 < res.n_iters <= 2000


def test_ransac_is_deterministic_for_a_seed() -> None:
    _, _, tr = make_affine_scene(2, 400, [0.0, 6.0], noise_px=0.3, seed=4)
    xi, xj, _ = _with_outliers(tr.xy[0], tr.xy[1], 0.3, 5)
    a = ransac_affine_fundamental(xi, xj, seed=7)
    b = ransac_affine_fundamental(xi, xj, seed=7)
    assert np.array_equal(a.inliers, b.inliers) and np.allclose(a.F, b.F)


def test_ransac_failures_are_falsy_with_a_reason() -> None:
    few = ransac_affine_fundamental(np.zeros((3, 2)), np.ones((3, 2)))
    assert not few and "matches" in few.reason
    same = np.tile([[10.0, 20.0]], (50, 1))
    degenerate = ransac_affine_fundamental(same, same + 1.0)
    assert not degenerate and "degenerate" in degenerate.reason
    nan = np.full((20, 2), np.nan)
    assert not ransac_affine_fundamental(nan, nan)


def test_bad_shapes_raise() -> None:
    with pytest.raises(ValueError):
        fit_affine_fundamental(np.zeros((10, 3)), np.zeros((10, 3)))
    with pytest.raises(ValueError):
        epipolar_residuals_px(np.eye(3), np.zeros((10, 2)), np.zeros((9, 2)))
