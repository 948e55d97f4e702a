"""The chained flows' settings follow the specimen's size in pixels, not the image's (issue 16)."""

from __future__ import annotations

import numpy as np
import pytest

from topograph.matching.config import DenseConfig as FlowConfig
from topograph.sem.dense import (
    CHAIN_CHEAP_MIN_RELIEF_PX,
    CHAIN_CHEAP_MIN_SIDE_PX,
    CHAIN_FIRST_PASS_DOWNSCALE,
    CHAIN_PATCH_STRIDE,
    chain_flow_config,
)
from topograph.sem.relief_extent import relief_extent_px


def grain_tracks(
    diameter_px: float, image_px: int = 1024, tilt_deg: float = 10.0, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Tracks on a textured flat substrate with a hemispherical grain of ``diameter_px`` off-centre, seen at
    0° and ``tilt_deg`` about the image's y axis (orthographic), with 0.2 px matching noise."""
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, image_px, size=(3000, 2))
    centre = np.array([0.35, 0.6]) * image_px
    r = diameter_px / 2
    d2 = ((xy - centre) ** 2).sum(axis=1)
    z = np.sqrt(np.clip(r * r - d2, 0.0, None))
    t = np.deg2rad(tilt_deg)
    other = np.column_stack([xy[:, 0] * np.cos(t) + z * np.sin(t), xy[:, 1]]) + [12.0, -7.0]
    return xy + rng.normal(0, 0.2, xy.shape), other + rng.normal(0, 0.2, xy.shape)


@pytest.mark.parametrize("diameter_px", [200.0, 340.0, 700.0])
def test_relief_extent_measures_the_grain_not_the_image(diameter_px: float) -> None:
    ref, other = grain_tracks(diameter_px)
    extent = relief_extent_px(ref, other, (1024, 1024))
    assert extent is not None
    # the rim, where the parallax is below the 4 px threshold, is not counted: a few percent smaller
    assert 0.8 * diameter_px <= extent <= 1.02 * diameter_px


def test_a_flat_field_has_no_relief_extent() -> None:
    ref, other = grain_tracks(0.0)
    assert relief_extent_px(ref, other, (1024, 1024)) is None


def test_chained_flows_are_cheap_only_for_large_relief() -> None:
    direct = FlowConfig(first_pass_downscale=1, patch_stride=2)
    image = (1024, 1024)
    small = chain_flow_config(direct, image, 0.9 * CHAIN_CHEAP_MIN_RELIEF_PX)
    large = chain_flow_config(direct, image, 1.1 * CHAIN_CHEAP_MIN_RELIEF_PX)
    assert small == direct
    assert (large.first_pass_downscale, large.patch_stride) == (CHAIN_FIRST_PASS_DOWNSCALE, CHAIN_PATCH_STRIDE)
    # a small image keeps the direct settings whatever its relief; no relief estimate: the image's size decides
    assert chain_flow_config(direct, (CHAIN_CHEAP_MIN_SIDE_PX - 1, 500), 1.1 * CHAIN_CHEAP_MIN_RELIEF_PX) == direct
    assert chain_flow_config(direct, (CHAIN_CHEAP_MIN_SIDE_PX - 1, 500)) == direct
    assert chain_flow_config(direct, (CHAIN_CHEAP_MIN_SIDE_PX, 500)).first_pass_downscale == CHAIN_FIRST_PASS_DOWNSCALE


def test_stray_relief_tracks_do_not_widen_the_extent() -> None:
    ref, other = grain_tracks(200.0)
    rng = np.random.default_rng(1)
    stray = rng.choice(np.flatnonzero(np.hypot(*(ref - [358.4, 614.4]).T) > 200), 40, replace=False)
    other[stray, 1] += 10.0  # 40 mismatched substrate tracks spread over the field, 100 px or more from the grain
    extent = relief_extent_px(ref, other, (1024, 1024))
    assert extent is not None
    assert extent <= 1.02 * 200.0
