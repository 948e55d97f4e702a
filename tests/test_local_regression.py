"""Robust local linear regression of a depth grid (topograph.geometry.local_regression)."""

from __future__ import annotations

import numpy as np

from topograph.geometry.local_regression import local_linear_smooth


def test_planes_are_kept_exactly_and_noise_drops_as_predicted() -> None:
    h, w = 240, 320
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    plane = 3.0 + 0.2 * xx - 0.1 * yy
    valid = np.ones((h, w), bool)
    valid[100:140, 80:260] = False  # a hole and a missing border strip: the fit must not lean toward them
    valid[:, :15] = False
    out = local_linear_smooth(np.where(valid, plane, np.nan), valid, 4.0)
    assert np.abs(out - plane)[valid].max() < 1e-3  # a Gaussian average would be off by ~1 at the strip
    assert np.isnan(out[~valid]).all()  # invalid nodes are returned as given
    rng = np.random.default_rng(0)
    noisy = plane + rng.normal(0.0, 1.0, (h, w)).astype(np.float32)
    out = local_linear_smooth(noisy, valid, 4.0, robust_passes=0)
    inner = np.zeros_like(valid)
    inner[20:-20, 35:-20] = True
    inner &= valid & (np.abs(yy - 120) > 35)
    # white noise of σ 1 under a Gaussian window σ_w: σ / (2 √π σ_w) = 0.071 for σ_w = 4
    assert np.std((out - plane)[inner]) < 0.08


def test_robust_pass_discounts_isolated_spikes() -> None:
    h, w = 200, 200
    rng = np.random.default_rng(1)
    z = rng.normal(0.0, 0.2, (h, w)).astype(np.float32)
    spikes = rng.random((h, w)) < 0.01
    z[spikes] += 20.0  # mismatches that escaped the outlier removal
    valid = np.ones((h, w), bool)
    plain = local_linear_smooth(z, valid, 3.0, robust_passes=0)
    robust = local_linear_smooth(z, valid, 3.0, robust_passes=1)
    clean = ~spikes
    clean[:10] = clean[-10:] = clean[:, :10] = clean[:, -10:] = False
    assert np.sqrt(np.mean(plain[clean] ** 2)) > 0.2  # each spike leaks ~20 × its window weight
    assert np.sqrt(np.mean(robust[clean] ** 2)) < 0.1
