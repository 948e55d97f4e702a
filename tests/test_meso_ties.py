"""The feature tie term of the photometric rounds: it measures a camera's offset from its feature matches in
image pixels (keypoint-noise units), its gradient moves a displaced camera back, and on a field of crop rows
(where the photometric rounds alone drift by whole row periods) it keeps the registration."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from meso_toy import ToyScene, make_model, one_thread, registration_rms, true_links  # noqa: F401 - one_thread is a fixture

from topograph.meso.config import LevelConfig, MesoConfig, replace_settings
from topograph.meso.functional.splat import sample_bilinear
from topograph.meso.init_global import feature_ties
from topograph.meso.mosaic import pixel_coordinates
from topograph.meso.optimise.ties import tie_loss, tie_misfit, tie_tensors
from topograph.meso.reconstruct import reconstruct

SIZE = (96, 72)
POSITIONS = np.array([[-20.0, -10.0], [0.0, -10.0], [20.0, -10.0], [-20.0, 10.0], [0.0, 10.0], [20.0, 10.0]])


def test_tie_misfit_is_the_offset_in_keypoint_noise_units():
    links = true_links(POSITIONS, SIZE)
    moved = POSITIONS.copy()
    moved[4] += (6.0, -8.0)  # 10 px off its matches
    model = make_model(len(moved), SIZE, 100.0, moved)
    for noise in (1.0, 2.5):
        ties = tie_tensors(feature_ties(links, noise), SIZE)
        with torch.no_grad():
            d = tie_misfit(model, ties, torch.arange(len(moved))).numpy()
        four = feature_ties(links, noise)
        touches = (four.image_i == 4) | (four.image_j == 4)
        assert np.allclose(d[touches], 10.0 / noise, atol=1e-3)
        assert np.abs(d[~touches]).max() < 1e-3
    # a batch without image 4's partners keeps only the ties inside it
    ties = tie_tensors(feature_ties(links, 1.0), SIZE)
    with torch.no_grad():
        d = tie_misfit(model, ties, torch.tensor([0, 1])).numpy()
    assert len(d) == sum(lk.inliers for lk in links if (lk.i, lk.j) == (0, 1)) and np.abs(d).max() < 1e-3


def test_renumbered_ties_follow_the_kept_images():
    ties = feature_ties(true_links(POSITIONS, SIZE), 1.0)
    sub = ties.renumbered([1, 2, 4, 5])
    assert set(np.unique(np.r_[sub.image_i, sub.image_j])) <= {0, 1, 2, 3}
    kept = np.isin(ties.image_i, [1, 2, 4, 5]) & np.isin(ties.image_j, [1, 2, 4, 5])
    assert sub.n_matches == int(kept.sum()) and np.array_equal(sub.uv_i, ties.uv_i[kept])


def test_tie_loss_gradient_moves_a_displaced_camera_back():
    links = true_links(POSITIONS, SIZE)
    moved = POSITIONS.copy()
    moved[4] += (6.0, -8.0)
    model = make_model(len(moved), SIZE, 100.0, moved)
    ties = tie_tensors(feature_ties(links, 1.0), SIZE)
    opt = torch.optim.Adam([model.pose.position], lr=0.5)
    for _ in range(100):
        opt.zero_grad()
        tie_loss(tie_misfit(model, ties, torch.arange(len(moved))), 1.0, 2.0).backward()
        opt.step()
    pos = model.pose.position.detach().numpy()
    pos -= pos.mean(0) - POSITIONS.mean(0)  # the gauge: a common shift is free
    assert np.abs(pos - POSITIONS).max() < 0.2, pos - POSITIONS
    assert float(tie_loss(torch.zeros(0), 1.0, 2.0)) == 0.0


@pytest.mark.parametrize("scale", [0.5, 2.0])
def test_tie_loss_is_cauchy(scale):
    d = torch.tensor([0.01, 100.0])
    loss = [float(tie_loss(d[k : k + 1], 1.0, scale)) for k in range(2)]
    assert loss[0] == pytest.approx(1e-4, rel=1e-3)  # ~ d^2 for small misfits
    assert loss[1] == pytest.approx(scale**2 * np.log1p((100.0 / scale) ** 2))


def _crop_rows(n_cols: int = 3, n_rows: int = 2, size: tuple[int, int] = (240, 180), seed: int = 0) -> ToyScene:
    """A field of crop rows seen by the engine's own camera model (flat, no tilt, no lens): rows of a 4-px
    period at 30 degrees (aliased in the 1/4 shift round), weeds and soil as sparse spots and mid-frequency
    noise (what SIFT matches), a faint low-frequency shade, and 35 % vignetting; 8 % overlap margin aside,
    neighbours overlap by ~2/3."""
    rng = np.random.default_rng(seed)
    w, h = size
    focal, step = 300.0, (80.0, 90.0)
    pos = np.array(
        [
            [(c - (n_cols - 1) / 2) * step[0], (r - (n_rows - 1) / 2) * step[1]]
            for r in range(n_rows)
            for c in range(n_cols)
        ]
    )
    pos += rng.normal(0.0, 3.0, pos.shape)
    tw, th = int(w + step[0] * n_cols + 80), int(h + step[1] * n_rows + 80)
    yy, xx = np.mgrid[0:th, 0:tw].astype(np.float32)
    rows = np.sin(2 * np.pi * (xx * np.cos(np.pi / 6) + yy * np.sin(np.pi / 6)) / 4.0)
    spots = np.zeros((th, tw), np.float32)
    k = tw * th // 900
    spots[rng.integers(0, th, k), rng.integers(0, tw, k)] = 1.0
    spots = cv2.GaussianBlur(spots, (0, 0), 2.0)
    mid, low = (cv2.GaussianBlur(rng.standard_normal((th, tw)).astype(np.float32), (0, 0), s) for s in (3.0, 25.0))
    grey = 0.5 + 0.15 * rows + 0.3 * spots / spots.max() + 0.08 * mid / mid.std() + 0.03 * low / low.std()
    tex = torch.from_numpy(np.stack([grey * c for c in (1.0, 0.9, 0.7)]).astype(np.float32))
    model = make_model(len(pos), size, focal, pos)
    uv = pixel_coordinates(size, (h, w))
    r2 = ((uv[:, 0] - w / 2) ** 2 + (uv[:, 1] - h / 2) ** 2) / (0.25 * (w * w + h * h))
    with torch.no_grad():
        pts = model.object_points(uv) + torch.tensor([tw / 2.0, th / 2.0])
        imgs = [(sample_bilinear(tex, g) * (1.0 - 0.35 * r2)[:, None]).reshape(h, w, 3).numpy() for g in pts]
    pixels = np.clip(np.round(np.stack(imgs) * 255.0), 0, 255).astype(np.uint8)
    return ToyScene(pixels=pixels, positions=pos, size=size, focal_px=focal)


@pytest.mark.slow
def test_ties_keep_the_registration_on_crop_rows(one_thread):  # noqa: F811 (fixture)
    """The photometric rounds alone walk the cameras off by whole row periods (measured: 11 units RMS, feature
    residual 20 px median, from a 0.1 px start); tied to the SIFT matches they stay registered."""
    scene = _crop_rows()
    camera = ("position", "scale", "tilt", "angle", "gain", "bias")
    base = replace_settings(
        MesoConfig(),
        {
            "threads": 1, "checks.gates": "off", "init.method": "features", "heights.init": "zero",
            "heights.model": "tv", "distortion.model": "none", "model.level_plane": False,
            "schedule": (
                LevelConfig("shift", 4, 60, ("position",), lr_scale=4.0),
                LevelConfig("camera", 2, 60, camera, lr_scale=2.0),
            ),
        },
    )  # fmt: skip
    out = {}
    for weight in (0.0, base.loss.tie_weight):
        rec = reconstruct(scene.images(), replace_settings(base, {"loss.tie_weight": weight}))
        assert rec.init.method == "features" and rec.init.ties is not None
        out[weight] = (registration_rms(rec, scene), float(np.nanmax(rec.quality.registration_residual_px)))
    assert np.nanmax(rec.init.residual_px) < 0.5  # the start is right: SIFT sees the weeds, not the rows
    (rms_free, res_free), (rms_tied, res_tied) = out[0.0], out[base.loss.tie_weight]
    assert rms_tied < 1.0 and res_tied < 1.0, out
    assert rms_free > 3.0 and res_free > 3.0, out  # the scene does pull the untied rounds off
