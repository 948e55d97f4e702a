"""Batching with a running-average reconstruction (paper Eq. 12) on a tiny flat scene with exact truth."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from meso_toy import make_model, one_thread, toy_scene

from topograph.errors import QualityError
from topograph.meso.config import LearningRates, LevelConfig, LossConfig
from topograph.meso.functional.splat import GridSpec, normalise_splat, splat_bilinear
from topograph.meso.optimise.batching import (
    MAX_GRID_CELLS_PER_IMAGE_PIXEL,
    RunningReconstruction,
    batch_values,
    check_grid_size,
    fill_reconstruction,
    footprint_grid,
    make_batched_level,
)
from topograph.meso.optimise.loss import batch_loss
from topograph.meso.optimise.solver import BatchingConfig, RobustConfig, batch_at, effective_batch_size, solve_round

pytestmark = pytest.mark.usefixtures("one_thread")
_ = one_thread


def _start(scene, offset: float = 2.5):
    rng = np.random.default_rng(1)
    init = scene.positions + rng.normal(0.0, offset, scene.positions.shape)
    return make_model(len(init), scene.size, scene.focal_px, init)


def _aligned_error(model, truth: np.ndarray) -> float:
    """RMS camera-position error after removing the common shift (the gauge), object units = pixels."""
    est = model.pose.position.detach().numpy().astype(float)
    d = (est - est.mean(0)) - (truth - truth.mean(0))
    return float(np.sqrt((d**2).sum(1).mean()))


def _full_pass(model, level, grid):
    bv = batch_values(model, level, torch.arange(level.n_images), grid)
    avg, _ = normalise_splat(splat_bilinear(bv.grid_xy.detach(), bv.values.detach(), grid.shape))
    return avg


def test_running_reconstruction_with_all_images_equals_full_pass():
    scene = toy_scene()
    model = _start(scene)
    level = make_batched_level(scene.pixels, 1)
    grid = footprint_grid(model, level)
    full = _full_pass(model, level, grid)
    recon = RunningReconstruction(grid)
    everyone = torch.arange(level.n_images)
    with torch.no_grad():
        for _ in range(3):  # momentum 0.5, every image in the one batch, parameters fixed
            bv = batch_values(model, level, everyone, grid)
            recon.update(bv.grid_xy, bv.values, momentum=0.5)
            assert torch.allclose(recon.average(), full, atol=1e-5)
    # filling batch by batch (plain sums) also gives the full pass
    filled = fill_reconstruction(model, level, RunningReconstruction(grid), batch_size=2)
    assert torch.allclose(filled.average(), full, atol=1e-5)
    # a batch blends only where it lands: cells outside image 0's footprint keep their value
    before = recon.average().clone()
    with torch.no_grad():
        bv = batch_values(model, level, torch.tensor([0]), grid)
        recon.update(bv.grid_xy, bv.values * 0.0, momentum=0.5)
    hit = splat_bilinear(bv.grid_xy, bv.values, grid.shape)[-1] > 0
    after = recon.average()
    assert torch.equal(after[:, ~hit], before[:, ~hit])
    assert float((after[:3, hit] - before[:3, hit]).abs().mean()) > 0.05


def test_momentum_optimisation_with_one_batch_ends_where_the_full_pass_ends():
    """Registering with m = 0.5 and every image in the batch converges to the full-pass solution."""
    scene = toy_scene()
    level = make_batched_level(scene.pixels, 1)
    ends = []
    for momentum in (0.0, 0.5):
        model = _start(scene)
        for p in model.parameters():
            p.requires_grad_(False)
        model.pose.position.requires_grad_(True)
        recon = RunningReconstruction(footprint_grid(model, level))
        opt = torch.optim.Adam([model.pose.position], lr=0.3)
        for it in range(150):
            for g in opt.param_groups:
                g["lr"] = 0.3 * 0.02 ** (it / 150)
            opt.zero_grad()
            terms = batch_loss(model, level, torch.arange(level.n_images), recon, LossConfig(), momentum, False)
            terms.total.backward()
            opt.step()
        ends.append(model.pose.position.detach().clone())
        assert _aligned_error(model, scene.positions) < 0.1
    d = (ends[0] - ends[0].mean(0)) - (ends[1] - ends[1].mean(0))
    assert float(d.abs().max()) < 0.05


def test_batched_round_registers_the_images():
    """Batches of 2 of 6 images with a running reconstruction recover the true positions."""
    scene = toy_scene()
    model = _start(scene)
    assert _aligned_error(model, scene.positions) > 2.0
    level = make_batched_level(scene.pixels, 1)
    cfg = LevelConfig("shift", 1, 240, ("position",), lr_scale=0.3, lr_final=0.02)
    history = solve_round(
        model, level, cfg, 0, LearningRates(), LossConfig(), BatchingConfig(2, 0.5), RobustConfig()
    ).records
    assert _aligned_error(model, scene.positions) < 0.15
    assert all(len(h.batch) == 2 for h in history)
    # every image appears once per epoch of 3 batches
    seen = sorted(sum((batch_at(k, 6, 2, 0, 0).tolist() for k in range(3)), []))
    assert seen == list(range(6))
    assert not torch.equal(batch_at(0, 6, 2, 0, 0), batch_at(3, 6, 2, 0, 0)) or not torch.equal(
        batch_at(1, 6, 2, 0, 0), batch_at(4, 6, 2, 0, 0)
    )


def test_automatic_batch_size_bounds_the_step_memory():
    cfg = BatchingConfig(batch_size=0, max_step_mb=100.0)
    per_image = 30 * 2**20  # 30 MB per image and step
    assert effective_batch_size(cfg, 2, per_image) == 2  # fits: every image in every step
    assert effective_batch_size(cfg, 21, per_image) == 3  # 3 x 30 MB <= 100 MB
    assert effective_batch_size(cfg, 42, per_image) == 3  # twice the images, same step memory
    assert effective_batch_size(cfg, 5, 500 * 2**20) == 1
    assert effective_batch_size(BatchingConfig(batch_size=4), 21, per_image) == 4
    assert effective_batch_size(BatchingConfig(batch_size=40), 21, per_image) == 21


def test_a_diverged_cameras_grid_stops_the_round_with_one_line():
    scene = toy_scene()
    model = _start(scene)
    level = make_batched_level(scene.pixels, 1)
    grid = footprint_grid(model, level)
    h, w = level.shape
    ratio = grid.shape[0] * grid.shape[1] / (level.n_images * h * w)
    assert ratio < 3.0, ratio  # a sound start: far below the limit
    check_grid_size(grid, level, "shift")  # passes
    side = int(np.sqrt(MAX_GRID_CELLS_PER_IMAGE_PIXEL * level.n_images * h * w)) + 2
    diverged = GridSpec(origin=grid.origin, cell=grid.cell, shape=(side, side))
    with pytest.raises(QualityError, match="round shift failed: the cameras diverged"):
        check_grid_size(diverged, level, "shift")
