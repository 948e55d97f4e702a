"""Height resolution and relief parallax of a tilt series (the low-parallax warning)."""

from __future__ import annotations

import numpy as np
import pytest

from topograph.geometry.affine import camera_from_stage
from topograph.sem.relief import check_relief, height_resolution_px
from topograph.types import PointCloud, Reconstruction, Tracks

TILTS = (0.0, 5.0, 10.0)


def test_height_resolution_is_precision_over_sine_of_the_widest_tilt() -> None:
    assert height_resolution_px(10.0, 0.1) == pytest.approx(0.1 / np.sin(np.deg2rad(10.0)), rel=1e-12)
    assert height_resolution_px(-10.0, 0.2) == pytest.approx(1.1518, abs=1e-4)
    assert height_resolution_px(0.0) == float("inf")


def _recon(relief_um: float, pixel_size_um: float) -> Reconstruction:
    """Points spread ±30 µm across the view and uniformly over ``relief_um`` along view 0's direction."""
    rng = np.random.default_rng(0)
    cams = tuple(camera_from_stage(t, 90.0, pixel_size_um=pixel_size_um) for t in TILTS)
    n = 4000
    local = np.column_stack([rng.uniform(-30, 30, n), rng.uniform(-30, 30, n), rng.uniform(0, relief_um, n)])
    xyz = local @ cams[0].rotation  # camera-0 frame → world
    xy = np.stack([c.project(xyz) for c in cams])
    zeros = np.zeros(3)
    return Reconstruction(cams, PointCloud(xyz, "um"), Tracks(xy), zeros, zeros, np.array(TILTS), "metadata")


def test_relief_and_parallax_in_pixels_of_the_reference_view() -> None:
    check = check_relief(_recon(relief_um=10.0, pixel_size_um=0.1))
    # 2nd–98th percentile of a uniform 100 px range = 96 px; parallax 96 · sin 10° = 16.7 px.
    assert check.largest_tilt_difference_deg == pytest.approx(10.0)
    assert check.relief_px == pytest.approx(96.0, rel=0.02)
    assert check.relief_parallax_px == pytest.approx(96.0 * np.sin(np.deg2rad(10.0)), rel=0.02)
    assert check.warning() is None
    summary = check.summary(0.1)
    assert summary["height_resolution_um"] == pytest.approx(0.1 * 0.1 / np.sin(np.deg2rad(10.0)))
    assert summary["relief_um"] == pytest.approx(9.6, rel=0.02)
    assert "0.576 µm" not in check.describe(0.1) and "0.0576 µm" in check.describe(0.1)


def test_flat_specimen_gets_the_low_parallax_warning() -> None:
    check = check_relief(_recon(relief_um=2.0, pixel_size_um=0.1))  # 19 px of relief → 3.3 px of parallax
    assert check.relief_parallax_px == pytest.approx(19.2 * np.sin(np.deg2rad(10.0)), rel=0.03)
    text = check.warning()
    assert text is not None and "little parallax" in text and "3.3 px" in text
    assert check.summary(None)["relief_um"] is None
