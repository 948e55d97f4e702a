"""The images' noise level and the flow smoothness that follows it (issue 16, the low-contrast row)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from topograph.sem.image_noise import (
    FLOW_SMOOTHNESS_NOISE_GREY,
    MAX_SMOOTHNESS_FACTOR,
    NOISY_IMAGE_MIN_GREY,
    noise_adapted_smoothness,
    noise_sigma,
    stretched_noise_grey,
)


def textured(contrast: float, noise: float, seed: int = 0, size: int = 512) -> np.ndarray:
    """A smooth random texture of peak-to-peak ``contrast`` around mid-grey plus white noise of σ ``noise``."""
    rng = np.random.default_rng(seed)
    tex = cv2.GaussianBlur(rng.normal(size=(size, size)).astype(np.float32), (0, 0), 3.0)
    tex = (tex - tex.min()) / (tex.max() - tex.min()) - 0.5
    return 0.5 + contrast * tex + rng.normal(0, noise, tex.shape).astype(np.float32)


@pytest.mark.parametrize("sigma", [0.005, 0.02, 0.05])
def test_noise_sigma_recovers_white_noise_under_texture(sigma: float) -> None:
    assert noise_sigma(textured(0.6, sigma)) == pytest.approx(sigma, rel=0.12)


@pytest.mark.parametrize("contrast", [0.6, 0.6 * 0.35])
def test_stretched_noise_is_the_noise_in_the_stretched_grey_levels(contrast: float) -> None:
    image = textured(contrast, 0.02)
    lo, hi = np.percentile(image, [0.5, 99.5])
    assert stretched_noise_grey(image) == pytest.approx(255 * 0.02 / (hi - lo), rel=0.12)


def test_stretched_noise_grows_as_the_contrast_falls() -> None:
    full = stretched_noise_grey(textured(0.6, 0.005))
    low = stretched_noise_grey(textured(0.6 * 0.35, 0.005))
    # the same (weak) noise after stretching a third of the contrast: ~1 / 0.35 times the grey levels
    assert low / full == pytest.approx(1 / 0.35, rel=0.15)


def test_smoothness_follows_the_noise_only_on_noisy_images() -> None:
    alpha = 100.0
    assert noise_adapted_smoothness(alpha, 0.5 * NOISY_IMAGE_MIN_GREY) == alpha
    assert noise_adapted_smoothness(alpha, 0.99 * NOISY_IMAGE_MIN_GREY) == alpha
    noisy = 13.8
    assert noise_adapted_smoothness(alpha, noisy) == pytest.approx(alpha * (noisy / FLOW_SMOOTHNESS_NOISE_GREY) ** 2)
    assert noise_adapted_smoothness(alpha, 1000.0) == alpha * MAX_SMOOTHNESS_FACTOR
    assert noise_adapted_smoothness(alpha, float("nan")) == alpha
