"""Affine factorization (Tomasi–Kanade / Poelman–Kanade) and the depth-reversal ambiguity."""

from __future__ import annotations

import numpy as np
import pytest

from topograph.errors import TopographError
from topograph.geometry.affine import R0, camera_from_stage
from topograph.geometry.factorization import factorize, mirror, relative_tilts, resolve_mirror
from topograph.geometry.triangulation import reprojection_residuals
from topograph.synth.scene import make_affine_scene
from topograph.types import Tracks

SERIES = [[0.0, 5.0, 10.0], [0.0, 5.0, 10.0, 15.0], [-10.0, -5.0, 0.0, 5.0, 10.0]]
MODELS = ["scaled_orthographic", "orthographic"]


def _true_relative(tilts: list[float]) -> np.ndarray:
    return np.asarray(tilts) - tilts[0]


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("tilts", SERIES)
def test_exact_recovery_without_noise(tilts: list[float], model: str) -> None:
    cams, pts, tr = make_affine_scene(len(tilts), 600, tilts, tilt_axis_deg=25.0, seed=0)
    res = factorize(tr, model, known_tilts_deg=tilts)
    assert np.abs(res.relative_tilts_deg - _true_relative(tilts)).max() < 1e-6
    assert abs(res.tilt_axis_deg - 25.0) < 1e-6
    assert np.allclose(res.cameras[0].rotation, R0, atol=1e-12)  # world = stage frame of view 1
    assert np.allclose(res.scales, 1.0, atol=1e-9)
    assert res.rms_px.max() < 1e-8
    # points = true points in the stage frame of view 1 (X' = R₀ R_1 X), centred
    y = (pts - pts.mean(axis=0)) @ cams[0].rotation.T @ R0
    assert np.abs(res.points - y).max() < 1e-6
    assert all(abs(c.skew) < 1e-15 for c in res.cameras)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("tilts", SERIES)
def test_tilt_angles_at_low_noise(tilts: list[float], model: str) -> None:
    """0.05 px noise, 600 points over ~800 px: every relative tilt within 0.05° (measured ≤ 0.035° on 8 seeds)."""
    for seed in range(4):
        _, _, tr = make_affine_scene(len(tilts), 600, tilts, tilt_axis_deg=15.0, noise_px=0.05, seed=seed)
        res = factorize(tr, model, known_tilts_deg=tilts)
        assert np.abs(res.relative_tilts_deg - _true_relative(tilts)).max() < 0.05
        assert abs(res.tilt_axis_deg - 15.0) < 0.1


@pytest.mark.parametrize(
    ("tilts", "model", "limit"),
    [
        (SERIES[0], "scaled_orthographic", 0.20),
        (SERIES[0], "orthographic", 0.16),
        (SERIES[1], "scaled_orthographic", 0.11),
        (SERIES[2], "scaled_orthographic", 0.11),
        (SERIES[2], "orthographic", 0.07),
    ],
)
def test_tilt_angles_at_half_pixel_noise_are_near_the_cramer_rao_bound(
    tilts: list[float], model: str, limit: float
) -> None:
    """0.5 px noise, 600 points: RMS tilt error over 8 seeds.

    The Cramér–Rao bound (from the bundle-adjustment Jacobian at the truth) of the last view's tilt is
    0.19° (scaled orthographic) / 0.14° (orthographic) for 0/5/10° and 0.083° / 0.060° for −10…10°:
    with small tilts the tilt angle is only seen through the second-order (cos θ) foreshortening, so
    0.05° is out of reach at this noise. Measured RMS: 0.13, 0.096, 0.057, 0.053, 0.035° (with the y-down
    image frame of before issue 16; in the right-handed frame the scenes are other noise draws, and the
    fourth case measures 0.102°).
    """
    errs = []
    for seed in range(8):
        _, _, tr = make_affine_scene(len(tilts), 600, tilts, tilt_axis_deg=15.0, noise_px=0.5, seed=seed)
        res = factorize(tr, model, known_tilts_deg=tilts)
        errs.append(res.relative_tilts_deg - _true_relative(tilts))
        expected = 0.5 * np.sqrt(2.0 * (1.0 - 3.0 / (2 * len(tilts))))  # E‖r‖² = 2σ²(1 − 3/(2F))
        assert abs(np.sqrt(np.mean(res.rms_px**2)) / expected - 1.0) < 0.1
    assert np.sqrt(np.mean(np.square(errs))) < limit


@pytest.mark.parametrize(("axis_deg", "rotation_deg"), [(0.0, 0.0), (35.0, 20.0), (-70.0, -45.0), (120.0, 10.0)])
def test_relative_tilts_of_metadata_cameras(axis_deg: float, rotation_deg: float) -> None:
    tilts = [-7.0, 2.0, 11.0]
    cams = [camera_from_stage(t, axis_deg, rotation_deg) for t in tilts]
    rel, axis, dev = relative_tilts(cams)
    sign = 1.0 if np.cos(np.deg2rad(axis_deg)) > 0 else -1.0  # the axis is reported pointing toward +x
    assert np.allclose(rel, sign * (np.asarray(tilts) + 7.0), atol=1e-9)
    assert abs(((axis - axis_deg) + 90.0) % 180.0 - 90.0) < 1e-9 and -90.0 < axis <= 90.0
    assert dev < 1e-6


def test_incomplete_tracks_are_left_out() -> None:
    _, _, tr = make_affine_scene(4, 800, [0, 4, 8, 12], tilt_axis_deg=-20.0, seed=3, missing_fraction=0.25)
    res = factorize(tr, known_tilts_deg=[0, 4, 8, 12])
    complete = np.nonzero(tr.visible.all(axis=0))[0]
    assert np.array_equal(res.track_indices, complete) and res.points.shape == (complete.size, 3)
    assert np.abs(res.relative_tilts_deg - [0, 4, 8, 12]).max() < 1e-6
    assert any("complete tracks" in n for n in res.notes)


def test_mirror_keeps_projections_and_negates_tilts() -> None:
    _, _, tr = make_affine_scene(3, 200, [0, 6, 12], tilt_axis_deg=40.0, noise_px=0.2, seed=5)
    res = factorize(tr)
    cams_m, pts_m = mirror(res.cameras, res.points)
    sub = Tracks(tr.xy[:, res.track_indices])
    r0 = reprojection_residuals(res.cameras, res.points, sub)
    r1 = reprojection_residuals(cams_m, pts_m, sub)
    assert np.allclose(r0, r1, atol=1e-9)
    t0, a0, _ = relative_tilts(res.cameras)
    t1, a1, _ = relative_tilts(cams_m)
    assert np.allclose(t1, -t0, atol=1e-9) and abs(a1 - a0) < 1e-9
    assert np.allclose(pts_m[:, 2], -res.points[:, 2])


def test_mirror_resolution_by_metadata_convention_and_flip() -> None:
    tilts = [10.0, 5.0, 0.0]  # decreasing: the no-metadata convention picks the inverted relief
    cams, pts, tr = make_affine_scene(3, 400, tilts, tilt_axis_deg=0.0, noise_px=0.1, seed=6)
    true_z = ((pts - pts.mean(axis=0)) @ cams[0].rotation.T @ R0)[:, 2]

    def relief_sign(r) -> float:
        return float(np.sign(np.corrcoef(r.points[:, 2], true_z)[0, 1]))

    meta = factorize(tr, known_tilts_deg=tilts)
    assert np.abs(meta.relative_tilts_deg - [0, -5, -10]).max() < 0.1  # 0.1 px noise, 400 points: ~0.06°
    assert relief_sign(meta) == 1.0
    assert any("metadata" in n for n in meta.notes)

    conv = factorize(tr)
    assert conv.relative_tilts_deg[-1] > 0 and relief_sign(conv) == -1.0
    assert any("convention" in n for n in conv.notes)

    flipped = factorize(tr, known_tilts_deg=tilts, flip=True)
    assert np.allclose(flipped.relative_tilts_deg, -meta.relative_tilts_deg) and relief_sign(flipped) == -1.0
    assert any("flip" in n for n in flipped.notes)

    # partial metadata (first tilt unknown) still decides; an axis pointing to −x flips the metadata sign
    assert relief_sign(resolve_mirror(conv, [None, 5.0, 0.0])) == 1.0
    assert relief_sign(resolve_mirror(conv, [-10.0, -5.0, 0.0], known_tilt_axis_deg=180.0)) == 1.0
    # equal metadata tilts carry no sign information → the convention
    assert relief_sign(resolve_mirror(meta, [3.0, 3.0, 3.0])) == -1.0
    # one mirror note only
    assert sum(n.startswith("mirror branch") for n in resolve_mirror(meta, tilts).notes) == 1
    with pytest.raises(TopographError):
        resolve_mirror(meta, [0.0, 1.0])


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_mirror_resolution_with_a_vertical_tilt_axis(seed: int) -> None:
    """Near ±90° the estimated axis may come out as −89.9°: the metadata axis decides the sign."""
    tilts = [0.0, 5.0, 10.0]
    cams, pts, tr = make_affine_scene(3, 300, tilts, tilt_axis_deg=90.0, noise_px=0.3, seed=seed)
    res = factorize(tr, known_tilts_deg=tilts, known_tilt_axis_deg=90.0)
    true_z = ((pts - pts.mean(axis=0)) @ cams[0].rotation.T @ R0)[:, 2]
    assert np.corrcoef(res.points[:, 2], true_z)[0, 1] > 0.99
    assert abs(abs(res.tilt_axis_deg) - 90.0) < 0.5


def test_bad_input_raises() -> None:
    _, _, tr = make_affine_scene(3, 50, [0, 5, 10], seed=7)
    with pytest.raises(TopographError, match="3 views"):
        factorize(Tracks(tr.xy[:2]))
    few = tr.xy.copy()
    few[0, 3:] = np.nan
    with pytest.raises(TopographError, match="4 tracks"):
        factorize(Tracks(few))
    with pytest.raises(TopographError, match="model"):
        factorize(tr, "perspective")  # type: ignore[arg-type]
    _, _, flat = make_affine_scene(3, 50, [4.0, 4.0, 4.0], seed=7)
    with pytest.raises(TopographError, match="depth"):
        factorize(flat)


@pytest.mark.parametrize(
    "tilts", [[0.0, 5.0, 10.0], [0.0, 5.0, 10.0, 15.0], [-10.0, -5.0, 0.0, 5.0, 10.0]], ids=["3v", "4v", "5v"]
)
def test_tilt_angles_within_0_05_deg_at_half_pixel_noise_with_many_tracks(tilts: list[float]) -> None:
    """Issue acceptance: 0.05° at 0.5 px noise. The Cramér–Rao bound at 600 tracks is 0.19° (0/5/10°), so
    the series needs tens of thousands of tracks (dense matching gives far more); with 60,000 the spread
    is ≈ 0.02°, and 0.05° is about 2.5 σ."""
    _, _, tracks = make_affine_scene(len(tilts), 60_000, tilts, noise_px=0.5, seed=3)
    res = factorize(tracks, model="scaled_orthographic")
    assert np.abs(res.relative_tilts_deg - _true_relative(tilts)).max() < 0.05


def test_rotation_vector_matches_scipy_including_small_and_half_turn_angles():
    from scipy.spatial.transform import Rotation

    from topograph.geometry.factorization import rotation_vector

    rots = Rotation.random(500, random_state=4)
    for r in rots:
        np.testing.assert_allclose(rotation_vector(r.as_matrix()), r.as_rotvec(), atol=1e-9)
    for angle in (0.0, 1e-9, 1e-4, np.deg2rad(5.0), np.pi - 1e-8):
        axis = np.array([0.3, -0.5, 0.81])
        vec = angle * axis / np.linalg.norm(axis)
        got = rotation_vector(Rotation.from_rotvec(vec).as_matrix())
        if angle > np.pi - 1e-6:  # at a half turn the sign of the axis is arbitrary
            got = got * np.sign(got @ vec)
        np.testing.assert_allclose(got, vec, atol=1e-7)
