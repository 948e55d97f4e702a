"""Linear triangulation, reprojection residuals and bundle adjustment of affine cameras."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from topograph.errors import TopographError
from topograph.geometry.bundle import BundleProblem, bundle_adjust, rotvec_to_matrix
from topograph.geometry.factorization import factorize, relative_tilts
from topograph.geometry.triangulation import per_view_rms_px, reprojection_residuals, triangulate
from topograph.synth.scene import make_affine_scene
from topograph.types import Tracks


def _perturb(cameras, seed: int, rot_deg: float = 0.5, rel_scale: float = 3e-3, shift_px: float = 3.0):
    rng = np.random.default_rng(seed)
    out = [cameras[0]]
    for c in cameras[1:]:
        r = rotvec_to_matrix(rng.normal(scale=np.deg2rad(rot_deg), size=3)) @ c.rotation
        out.append(
            replace(
                c,
                rotation=r,
                scale=c.scale * (1 + rng.normal(scale=rel_scale)),
                translation=c.translation + rng.normal(scale=shift_px, size=2),
            )
        )
    return out


def _predicted_cov(cameras, views: np.ndarray, sigma: float) -> np.ndarray:
    a = np.vstack([cameras[f].matrix for f in views])
    return sigma**2 * np.linalg.inv(a.T @ a)


def test_triangulation_is_exact_without_noise_and_matches_a_per_point_reference() -> None:
    cams, pts, tr = make_affine_scene(
        4, 500, [-6, 0, 6, 12], tilt_axis_deg=30.0, scale=2.0, seed=0, missing_fraction=0.3
    )
    x = triangulate(cams, tr)
    assert np.abs(x - pts).max() < 1e-8
    r = reprojection_residuals(cams, x, tr)
    assert r.shape == (4, 500, 2) and np.nanmax(np.abs(r)) < 1e-8
    assert (np.isnan(r[..., 0]) == ~tr.visible).all()
    # slow reference on noisy data: one lstsq per point
    _, _, noisy = make_affine_scene(
        4, 60, [-6, 0, 6, 12], tilt_axis_deg=30.0, noise_px=1.0, seed=1, missing_fraction=0.3
    )
    fast = triangulate(cams, noisy)
    for p in range(60):
        v = np.nonzero(noisy.visible[:, p])[0]
        a = np.vstack([cams[f].matrix for f in v])
        b = np.concatenate([noisy.xy[f, p] - cams[f].translation for f in v])
        assert np.allclose(fast[p], np.linalg.lstsq(a, b, rcond=None)[0], atol=1e-9)


def test_triangulation_error_matches_the_noise_bound() -> None:
    """0.5 px noise, tilts 0/5/10: errors follow σ²(AᵀA)⁻¹ (depth ≈ σ / √(Σ sin² Δθ) ≈ 4 px)."""
    sigma, tilts = 0.5, [0.0, 5.0, 10.0]
    cams, pts, tr = make_affine_scene(3, 3000, tilts, tilt_axis_deg=0.0, noise_px=sigma, seed=2)
    err = triangulate(cams, tr) - pts
    cov = _predicted_cov(cams, np.arange(3), sigma)
    assert np.allclose(np.mean(err**2, axis=0) / np.diag(cov), 1.0, atol=0.1)
    assert 3.0 < np.sqrt(cov[2, 2]) < 5.0  # the depth is the weak direction
    # with missing views: Mahalanobis distance² averages 3 (χ² with 3 dof)
    cams, pts, tr = make_affine_scene(4, 3000, [0, 4, 8, 12], noise_px=sigma, seed=3, missing_fraction=0.3)
    err = triangulate(cams, tr) - pts
    d2 = [
        e @ np.linalg.solve(_predicted_cov(cams, np.nonzero(tr.visible[:, p])[0], sigma), e) for p, e in enumerate(err)
    ]
    assert abs(np.mean(d2) - 3.0) < 0.25


def test_untriangulable_tracks_are_nan() -> None:
    cams, _, tr = make_affine_scene(3, 20, [0, 5, 10], seed=4)
    xy = tr.xy.copy()
    xy[1:, :5] = np.nan  # seen in one view only
    x = triangulate(cams, Tracks(xy))
    assert np.isnan(x[:5]).all() and np.isfinite(x[5:]).all()
    same = [cams[0], cams[0], cams[0]]  # parallel viewing directions: no depth
    assert np.isnan(triangulate(same, tr)).all()
    rms = per_view_rms_px(cams, x, Tracks(xy))
    assert rms.shape == (3,) and np.all(rms < 1e-8)
    with pytest.raises(ValueError):
        triangulate(cams[:2], tr)


def test_per_view_rms_at_the_noise_level() -> None:
    """With the true cameras, view f keeps E‖r_f‖² = σ² (2 − tr(M_f (AᵀA)⁻¹ M_fᵀ)) (hat-matrix leverage)."""
    sigma = 0.5
    cams, _, tr = make_affine_scene(5, 4000, [-10, -5, 0, 5, 10], noise_px=sigma, seed=5)
    rms = per_view_rms_px(cams, triangulate(cams, tr), tr)
    inv = _predicted_cov(cams, np.arange(5), 1.0)
    expected = [sigma * np.sqrt(2.0 - np.trace(c.matrix @ inv @ c.matrix.T)) for c in cams]
    assert np.allclose(rms, expected, rtol=0.03)


@pytest.mark.parametrize("tilts", [[0.0, 5.0, 10.0], [-10.0, -5.0, 0.0, 5.0, 10.0]])
def test_bundle_adjustment_reaches_the_maximum_likelihood_fit(tilts: list[float]) -> None:
    cams, pts, tr = make_affine_scene(
        len(tilts), 1000, tilts, tilt_axis_deg=20.0, noise_px=0.5, seed=6, missing_fraction=0.1
    )
    start = _perturb(cams, 7)
    res = bundle_adjust(start, triangulate(start, tr), tr)
    ml = bundle_adjust(cams, triangulate(cams, tr), tr)  # started at the truth
    assert res.rms_before.min() > 1.0
    assert np.allclose(res.rms_after, ml.rms_after, rtol=2e-3)
    expected = 0.5 * np.sqrt(2 * (1 - 3 / (2 * len(tilts))))  # E‖r‖² = 2σ²(1 − 3/(2F))
    assert abs(np.sqrt(np.mean(res.rms_after**2)) / expected - 1) < 0.05
    # gauge: camera 1 is held fixed
    assert res.cameras[0] is start[0] or np.array_equal(res.cameras[0].rotation, start[0].rotation)
    assert res.cameras[0].scale == start[0].scale and np.array_equal(res.cameras[0].translation, start[0].translation)
    true_rel = np.asarray(tilts) - tilts[0]
    assert np.abs(relative_tilts(res.cameras)[0] - true_rel).max() < 0.3
    assert res.n_iter > 0 and res.points.shape == pts.shape


def test_depth_gauge_is_held_by_one_translation_component() -> None:
    cams, _, tr = make_affine_scene(3, 400, [0, 6, 12], noise_px=0.3, seed=8)
    start = _perturb(cams, 9)
    res = bundle_adjust(start, triangulate(start, tr), tr)
    n = start[0].rotation[2]
    g = int(np.argmax([np.linalg.norm(c.matrix @ n) if f else 0 for f, c in enumerate(start)]))
    e = start[g].matrix @ n
    e /= np.linalg.norm(e)
    assert abs((res.cameras[g].translation - start[g].translation) @ e) < 1e-9
    assert np.linalg.norm(res.cameras[g].translation - start[g].translation) > 0.1  # the other component moved


@pytest.mark.parametrize("skew", [False, True])
def test_analytic_jacobian_matches_central_differences(skew: bool) -> None:
    cams, _, tr = make_affine_scene(
        4, 30, [0, 5, 10, 15], tilt_axis_deg=-30.0, noise_px=0.3, seed=10, missing_fraction=0.2
    )
    start = _perturb(cams, 11)
    prob = BundleProblem(start, triangulate(start, tr), tr, refine_skew=skew)
    x = prob.x0 + np.random.default_rng(0).normal(scale=1e-2, size=prob.x0.size)  # away from ω = 0
    jac = prob.jacobian(x).toarray()
    num = np.empty_like(jac)
    for i in range(x.size):
        h = 1e-6 * max(1.0, abs(x[i]))
        e = np.zeros_like(x)
        e[i] = h
        num[:, i] = (prob.residuals(x + e) - prob.residuals(x - e)) / (2 * h)
    assert np.abs(jac - num).max() < 1e-5 * np.abs(num).max()
    assert not np.any(jac[prob.sparsity.toarray() == 0])  # the values sit inside the declared pattern
    # and the finite-difference solver path on the same pattern reaches the same optimum
    a = bundle_adjust(start, triangulate(start, tr), tr, loss="linear")
    b = bundle_adjust(start, triangulate(start, tr), tr, loss="linear", jac="2-point")
    assert np.allclose(a.rms_after, b.rms_after, rtol=1e-4)


def test_fixed_rotations_and_scales_and_skew_refinement() -> None:
    tilts = [-10, -5, 0, 5, 10]
    cams, pts, tr = make_affine_scene(5, 1500, tilts, noise_px=0.2, seed=12)
    true_skew = [0.0, 2e-3, 0.0, -1e-3, 0.0]
    skewed = [replace(c, skew=s) for c, s in zip(cams, true_skew, strict=True)]
    xy = np.stack([c.project(pts) for c in skewed]) + np.random.default_rng(13).normal(scale=0.2, size=tr.xy.shape)
    obs = Tracks(xy)
    start = [replace(c, translation=c.translation + 2.0) if f else c for f, c in enumerate(cams)]
    fixed = bundle_adjust(start, triangulate(start, obs), obs, refine_rotations=False, refine_scale=False)
    for a, b in zip(fixed.cameras, start, strict=True):
        assert np.array_equal(a.rotation, b.rotation) and a.scale == b.scale and a.skew == b.skew
    sk = bundle_adjust(start, triangulate(start, obs), obs, refine_skew=True)
    assert np.abs(np.array([c.skew for c in sk.cameras]) - true_skew).max() < 5e-4  # measured 2e-4
    assert sk.rms_after.mean() < 0.9 * fixed.rms_after.mean()


def test_robust_loss_with_outliers() -> None:
    tilts = [-10.0, -5.0, 0.0, 5.0, 10.0]
    cams, _, tr = make_affine_scene(5, 1000, tilts, tilt_axis_deg=5.0, noise_px=0.5, seed=14, missing_fraction=0.1)
    rng = np.random.default_rng(15)
    xy = tr.xy.copy()
    bad = (rng.random(xy.shape[:2]) < 0.05) & tr.visible
    xy[bad] += rng.normal(scale=30.0, size=(int(bad.sum()), 2))
    obs = Tracks(xy)
    start = _perturb(cams, 16)
    res = bundle_adjust(start, triangulate(start, obs), obs, loss="soft_l1", f_scale_px=1.0)
    assert np.abs(relative_tilts(res.cameras)[0] - (np.asarray(tilts) + 10.0)).max() < 0.3
    r = np.linalg.norm(reprojection_residuals(res.cameras, res.points, tr), axis=2)  # against clean tracks
    clean = tr.visible & ~(bad.any(axis=0)[None, :])
    expected = 0.5 * np.sqrt(2 * (1 - 3 / 10))  # the noise level E‖r‖ of an inlier
    assert np.sqrt(np.mean(r[clean] ** 2)) < 1.1 * expected  # outliers do not pull the fit


def test_factorization_then_bundle_adjustment() -> None:
    tilts = [0.0, 5.0, 10.0, 15.0]
    _, _, tr = make_affine_scene(4, 2000, tilts, tilt_axis_deg=-10.0, noise_px=0.3, seed=17, missing_fraction=0.2)
    fac = factorize(tr, known_tilts_deg=tilts)
    x = triangulate(fac.cameras, tr)
    assert np.isfinite(x).all()
    res = bundle_adjust(fac.cameras, x, tr)
    assert np.sum(res.rms_after**2) <= np.sum(res.rms_before**2) + 1e-9
    assert np.abs(relative_tilts(res.cameras)[0] - tilts).max() < 0.15


def test_bundle_bad_input() -> None:
    cams, pts, tr = make_affine_scene(3, 20, [0, 5, 10], seed=18)
    with pytest.raises(TopographError):
        bundle_adjust(cams[:1], pts, Tracks(tr.xy[:1]))
    with pytest.raises(TopographError):
        bundle_adjust(cams, np.full_like(pts, np.nan), tr)
    with pytest.raises(ValueError):
        bundle_adjust(cams, pts[:5], tr)
