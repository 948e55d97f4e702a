"""The feature tie term of the photometric rounds: it measures a camera's offset from its feature matches in
image pixels (keypoint-noise units), and its gradient moves a displaced camera back."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from meso_toy import make_model

from topograph.meso.init_features import PairLink
from topograph.meso.init_global import feature_ties
from topograph.meso.optimise.ties import tie_loss, tie_misfit, tie_tensors

SIZE = (96, 72)
POSITIONS = np.array([[-20.0, -10.0], [0.0, -10.0], [20.0, -10.0], [-20.0, 10.0], [0.0, 10.0], [20.0, 10.0]])


def _true_links(positions: np.ndarray) -> list[PairLink]:
    """Exact matches of every overlapping pair (unit scale, no tilt: ``u_j = u_i + p_i - p_j``)."""
    w, h = SIZE
    u, v = np.meshgrid(np.linspace(4, w - 5, 9), np.linspace(4, h - 5, 7))
    grid = np.stack((u.ravel(), v.ravel()), 1)
    links = []
    for i in range(len(positions)):
        for j in range(i + 1, len(positions)):
            uj = grid + positions[i] - positions[j]
            inside = (uj[:, 0] >= 0) & (uj[:, 0] < w) & (uj[:, 1] >= 0) & (uj[:, 1] < h)
            if inside.sum() >= 8:
                links.append(PairLink(i, j, grid[inside], uj[inside], np.eye(3)))
    return links


def test_tie_misfit_is_the_offset_in_keypoint_noise_units():
    links = _true_links(POSITIONS)
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
    ties = feature_ties(_true_links(POSITIONS), 1.0)
    sub = ties.renumbered([1, 2, 4, 5])
    assert set(np.unique(np.r_[sub.image_i, sub.image_j])) <= {0, 1, 2, 3}
    kept = np.isin(ties.image_i, [1, 2, 4, 5]) & np.isin(ties.image_j, [1, 2, 4, 5])
    assert sub.n_matches == int(kept.sum()) and np.array_equal(sub.uv_i, ties.uv_i[kept])


def test_tie_loss_gradient_moves_a_displaced_camera_back():
    links = _true_links(POSITIONS)
    moved = POSITIONS.copy()
    moved[4] += (6.0, -8.0)
    model = make_model(len(moved), SIZE, 100.0, moved)
    ties = tie_tensors(feature_ties(links, 1.0), SIZE)
    opt = torch.optim.Adam([model.pose.position], lr=0.5)
    for _ in range(150):
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
