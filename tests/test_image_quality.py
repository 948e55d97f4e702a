"""Focus check of a series: a defocused image is named, a sharp series and the real quartz series are not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from topograph.io.image_quality import blur_warnings, relative_sharpness, sharpness
from topograph.io.images import load_sem_series, series_warnings
from topograph.synth.sem import render_sem_series
from topograph.types import ImageSet, SemImage


@pytest.fixture(scope="module")
def series() -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The same 0/5/10° grain rendered in focus (blur σ 0.6 px) and defocused (σ 1.8 px), both with noise."""
    sharp = render_sem_series(image_size=(400, 400), seed=3)
    soft = render_sem_series(image_size=(400, 400), seed=3, blur_sigma_px=1.8)
    return [np.asarray(p, np.float32) for p in sharp.images], [np.asarray(p, np.float32) for p in soft.images]


def test_a_defocused_view_is_named(series: tuple[list[np.ndarray], list[np.ndarray]]) -> None:
    sharp, soft = series
    rel = relative_sharpness([sharp[0], soft[1], sharp[2]])
    assert rel[1] < 0.45 and rel[0] > 0.9 and rel[2] > 0.9, rel  # measured 1.0 / 0.31 / 1.02
    views = [sharp[0], soft[1], sharp[2]]
    images = ImageSet(tuple(SemImage(n, p) for n, p in zip(("a.png", "b.png", "c.png"), views, strict=True)))
    warnings = [w for w in series_warnings(images) if "less sharp" in w]
    assert len(warnings) == 1 and warnings[0].startswith("b.png"), warnings


def test_a_sharp_series_and_more_noise_are_not_flagged(series: tuple[list[np.ndarray], list[np.ndarray]]) -> None:
    sharp, _ = series
    rel = relative_sharpness(sharp)
    assert np.all(np.abs(rel - 1.0) < 0.1), rel
    assert blur_warnings(["a", "b", "c"], rel) == []
    noisy = sharp[1] + np.random.default_rng(0).normal(scale=0.03, size=sharp[1].shape).astype(np.float32)
    assert sharpness(noisy) > sharpness(sharp[1])  # noise never reads as blur
    assert sharpness(np.zeros((50, 50), np.float32)) == 0.0


def test_real_quartz_series_is_not_flagged(quartz_dir: Path) -> None:
    """Quarz_01 is visibly softer than the other two (0.63 of the median: less power at 0.1–0.35 cycles/px)
    but matches well; the warning is for clearly defocused images."""
    images = load_sem_series([quartz_dir])
    rel = relative_sharpness([im.pixels for im in images.images])
    assert 0.5 < rel[0] < 0.8 and np.all(rel[1:] > 0.9), rel
    assert not any("less sharp" in w for w in series_warnings(images))


def test_sharpness_of_an_image_is_measured_once(monkeypatch):
    import topograph.io.image_quality as iq
    from topograph.types import SemImage

    rng = np.random.default_rng(3)
    images = [SemImage(f"{k}.tif", rng.random((40, 40)).astype(np.float32)) for k in range(3)]
    first = iq.relative_sharpness(images)
    calls = []
    monkeypatch.setattr(iq, "sharpness", lambda px, *a: calls.append(px) or 1.0)
    np.testing.assert_array_equal(iq.relative_sharpness(images), first)  # cached: the stub is never called
    assert not calls
    assert iq.relative_sharpness([images[0].pixels.copy()])[0] == 1.0 and len(calls) == 1  # plain arrays: measured
