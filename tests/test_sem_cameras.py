"""Unit tests of the camera decisions (issue 16): comparison of metadata with the images, the protrusion
witness, the depth-branch rule and the failed-camera-model check — on exact synthetic inputs."""

from __future__ import annotations

import numpy as np
import pytest

from topograph.geometry.affine import camera_from_stage
from topograph.geometry.factorization import mirror
from topograph.sem.cameras import (
    ImageGeometry,
    MetadataGeometry,
    camera_model_failure,
    choose_branch,
    compare_geometry,
    protrusion_score,
    relative_tilts_about,
)
from topograph.sem.config import CameraConfig


def _img(axis: float, tilts: list[float] | None = None) -> ImageGeometry:
    t = None if tilts is None else np.array(tilts)
    return ImageGeometry(axis, 0.05, t, None if t is None else np.full(t.shape, 0.02), None, "test")


def _meta(tilts: list[float] | None, axis: float | None, source: str = "cli") -> MetadataGeometry:
    t = None if tilts is None else np.array(tilts, dtype=float)
    n = 3 if t is None else len(t)
    return MetadataGeometry(
        t, axis, np.zeros(n), source if t is not None else None, source if axis is not None else None
    )


@pytest.mark.parametrize(
    ("meta_axis", "img_axis", "cause"),
    [(30.0, -30.0, "opposite angle sense"), (0.0, 90.0, "rotated by 90°"), (10.0, 47.0, "scan rotation")],
)
def test_axis_contradiction_names_field_values_and_cause(meta_axis: float, img_axis: float, cause: str) -> None:
    checks, warnings = compare_geometry(_img(img_axis), _meta([0, 5, 10], meta_axis))
    assert checks["axis_agrees"] is False and len(warnings) == 1
    w = warnings[0]
    assert "tilt_axis_deg" in w and f"{meta_axis:.2f}" in w and f"{img_axis:.2f}" in w and cause in w


def test_agreeing_metadata_is_quiet_and_wrong_tilts_are_named() -> None:
    checks, warnings = compare_geometry(_img(0.3, [0, -5.02, -9.97]), _meta([0, 5, 10], 180.0))
    assert checks["axis_agrees"] and checks["tilts_agree"] and not warnings
    checks, warnings = compare_geometry(_img(0.0, [0, 5.0, 10.0]), _meta([0, 3, 6], 0.0))
    assert checks["tilts_agree"] is False and "tilt_deg" in warnings[0]


def _grain_cloud(kind: str, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    xy = rng.uniform(-100, 100, size=(6000, 2))
    if kind == "grain":
        z = 60 * np.clip(1 - (np.hypot(*xy.T) / 45) ** 2, 0, None) ** 0.5
    elif kind == "off-centre pair":
        z = 50 * np.clip(1 - (np.hypot(xy[:, 0] - 55, xy[:, 1] + 40) / 30) ** 2, 0, None) ** 0.5
        z += 35 * np.clip(1 - (np.hypot(xy[:, 0] + 50, xy[:, 1] - 45) / 25) ** 2, 0, None) ** 0.5
    else:  # a dome that fills the field
        z = 150 * (1 - (np.hypot(*xy.T) / 150) ** 2)
    z = z + 0.3 * xy[:, 0] * 0.1 + rng.normal(0, 0.3, len(z))  # a slightly tilted world frame
    return np.column_stack([xy, z])


@pytest.mark.parametrize("kind", ["grain", "off-centre pair", "field-filling dome"])
def test_protrusion_score_sign(kind: str) -> None:
    p = _grain_cloud(kind)
    assert protrusion_score(p) > 0.1
    assert protrusion_score(p * [1, 1, -1]) < -0.1  # the depth-reversed twin is a pit


def _scene(tilts: list[float], axis: float) -> tuple[tuple, np.ndarray]:
    cams = tuple(camera_from_stage(t, axis) for t in tilts)
    return cams, _grain_cloud("grain")


def test_branch_rule_with_both_witnesses_and_options() -> None:
    cams, pts = _scene([0, 5, 10], 30.0)
    agree = choose_branch(cams, pts, _meta([0, 5, 10], 30.0), CameraConfig())
    assert not agree.mirrored and agree.warning is None and "agree" in agree.rule
    # metadata in the opposite sense: protrusion wins, one warning names the disagreement
    opposite = choose_branch(cams, pts, _meta([0, -5, -10], 30.0), CameraConfig())
    assert not opposite.mirrored and "tilt sense" in opposite.warning
    forced = choose_branch(cams, pts, _meta([0, -5, -10], 30.0), CameraConfig(relief="metadata"))
    assert forced.mirrored
    assert choose_branch(cams, pts, _meta(None, None), CameraConfig(relief="recess")).mirrored
    assert choose_branch(cams, pts, _meta(None, None), CameraConfig(flip_relief=True)).mirrored
    # the twin of a pit protrudes: the rule picks it, whichever branch it is handed
    m_cams, m_pts = mirror(cams, pts)
    assert choose_branch(m_cams, m_pts, _meta(None, None), CameraConfig()).mirrored
    # tilts about a given axis direction: right-handed, negated for the opposite direction
    np.testing.assert_allclose(relative_tilts_about(cams, 30.0), [0, 5, 10], atol=1e-9)
    np.testing.assert_allclose(relative_tilts_about(cams, 210.0), [0, -5, -10], atol=1e-9)


def test_failed_camera_model() -> None:
    assert camera_model_failure(np.array([0.3, 0.4]), np.array([0.29, 0.35]), 1.0) is None
    # a robust cost may end a little above its start in plain RMS: not a failure (4 MP render: 0.40 → 0.41 px)
    assert camera_model_failure(np.array([0.40]), np.array([0.41]), 1.0) is None
    assert camera_model_failure(np.array([0.59]), np.array([0.60]), 1.0) is None  # 12 MP render
    assert "to 1.01 px" in camera_model_failure(np.array([0.98]), np.array([1.01]), 1.0)  # above 1 px: failed
    assert "rose" in camera_model_failure(np.array([0.40]), np.array([0.50]), 1.0)  # a 25 % rise: failed
    assert "rose" in camera_model_failure(np.array([0.30]), np.array([0.60]), 1.0)
    rose = camera_model_failure(np.array([5.4, 5.4]), np.array([6.3, 6.3]), 1.0)
    assert rose is not None and "rose from 5.40 to 6.30 px" in rose and "--cameras images" in rose
    assert "ended" in camera_model_failure(np.array([3.0]), np.array([1.5]), 1.0)


def _weak_bump() -> np.ndarray:
    """A noisy substrate with a low bump: the relief says "protrudes" only weakly (score 0.1–0.3)."""
    rng = np.random.default_rng(0)
    xy = rng.uniform(-100, 100, size=(6000, 2))
    z = np.where(np.hypot(*xy.T) < 30, 3.0, 0.0) + rng.normal(0, 1.0, len(xy))
    return np.column_stack([xy, z])


def test_grain_dominated_sparse_cloud_protrudes() -> None:
    """Most points on a wide grain, few on the substrate (a faint substrate texture): the median point lies on
    the grain's top, and a median-centred skew called this grain a pit (issue 16, low contrast at 800 px)."""
    rng = np.random.default_rng(1)
    xy = np.vstack([rng.uniform(-100, 100, size=(600, 2)), rng.uniform(-60, 60, size=(4000, 2))])
    z = 18 * np.clip(1 - (np.hypot(*xy.T) / 75) ** 2, 0, None) ** 0.5 + rng.normal(0, 0.2, len(xy))
    p = np.column_stack([xy, z])
    assert np.median(z) > 9  # most points are on the grain
    assert protrusion_score(p) > 0.5
    assert protrusion_score(p * [1, 1, -1]) < -0.5


def test_weak_relief_does_not_overrule_agreeing_metadata() -> None:
    cams, _ = _scene([0, 5, 10], 30.0)
    pts = _weak_bump()
    assert 0.1 < protrusion_score(pts) < 0.3
    # metadata in the opposite sense, agreeing with the images' axis and tilts: the metadata branch is kept
    kept = choose_branch(cams, pts, _meta([0, -5, -10], 30.0), CameraConfig())
    assert kept.mirrored and kept.confidence == "contested" and not kept.trusted
    assert "weakly" in kept.warning and "tilt sense" in kept.warning
    # metadata that contradicts the images' geometry is doubtful: the relief decides, warned
    doubtful = choose_branch(cams, pts, _meta([0, -5, -10], 30.0), CameraConfig(), geometry_agrees=False)
    assert not doubtful.mirrored and doubtful.confidence == "contested" and doubtful.warning
    # a clear relief overrules agreeing metadata (the rule), warned
    clear = choose_branch(cams, _grain_cloud("grain"), _meta([0, -5, -10], 30.0), CameraConfig())
    assert not clear.mirrored and clear.confidence == "contested" and "recess" in clear.warning
    # a weak relief alone decides but is warned; a flat one leaves the branch undecided, warned
    weak = choose_branch(cams, pts, _meta(None, None), CameraConfig())
    assert not weak.mirrored and weak.confidence == "weak" and "weak relief" in weak.warning
    flat = np.column_stack([pts[:, :2], np.random.default_rng(2).normal(0, 1.0, len(pts))])
    undecided = choose_branch(cams, flat, _meta(None, None), CameraConfig())
    assert undecided.confidence == "undecided" and "undecided" in undecided.warning
    agreed = choose_branch(cams, _grain_cloud("grain"), _meta([0, 5, 10], 30.0), CameraConfig())
    assert agreed.confidence == "confirmed" and agreed.trusted and agreed.warning is None
