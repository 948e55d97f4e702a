"""Automatic rollback on divergence, checkpoints and bit-exact resume of a round (tiny flat scene)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from meso_toy import make_model, one_thread, toy_scene

import topograph.meso.optimise.loss as loss_module
from topograph.errors import TopographError
from topograph.fingerprint import digest
from topograph.meso.config import LearningRates, LevelConfig, LossConfig
from topograph.meso.optimise.batching import make_batched_level
from topograph.meso.optimise.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from topograph.meso.optimise.history import History
from topograph.meso.optimise.solver import BatchingConfig, RobustConfig, solve_round

pytestmark = pytest.mark.usefixtures("one_thread")
_ = one_thread

ROUND = LevelConfig("shift", 1, 120, ("position",), lr_scale=0.3, lr_final=0.05)


def _model(scene):
    rng = np.random.default_rng(1)
    init = scene.positions + rng.normal(0.0, 2.5, scene.positions.shape)
    return make_model(len(init), scene.size, scene.focal_px, init)


def _error(model, truth):
    est = model.pose.position.detach().numpy().astype(float)
    d = (est - est.mean(0)) - (truth - truth.mean(0))
    return float(np.sqrt((d**2).sum(1).mean()))


def test_rollback_on_injected_nan_and_the_run_finishes(monkeypatch, caplog):
    scene = toy_scene()
    model = _model(scene)
    level = make_batched_level(scene.pixels, 1)
    real = loss_module.sample_normalised
    calls = {"n": 0}

    def faulty(grid, xy):
        calls["n"] += 1
        out = real(grid, xy)
        return out * float("nan") if calls["n"] in (30, 31, 75) else out

    monkeypatch.setattr(loss_module, "sample_normalised", faulty)
    robust = RobustConfig(checkpoint_every=10)
    with caplog.at_level(logging.WARNING, logger="topograph"):
        history = solve_round(
            model, level, ROUND, 0, LearningRates(), LossConfig(), BatchingConfig(3, 0.5), robust
        ).records
    rollbacks = [r for r in caplog.records if "rolled back" in r.getMessage()]
    assert len(rollbacks) == 3  # two NaNs in a row at iteration 29, then one at a later iteration
    assert "non-finite loss" in rollbacks[0].getMessage()
    assert [h.iteration for h in history] == list(range(ROUND.iterations))  # all iterations done once
    assert all(np.isfinite(h.loss) for h in history)
    assert torch.isfinite(model.pose.position).all()
    assert _error(model, scene.positions) < 0.2


def test_rollback_limit_ends_the_round_at_the_last_good_state(monkeypatch, caplog):
    scene = toy_scene()
    model = _model(scene)
    level = make_batched_level(scene.pixels, 1)
    real = loss_module.sample_normalised
    calls = {"n": 0}

    def broken_after(grid, xy):
        calls["n"] += 1
        out = real(grid, xy)
        return out * float("nan") if calls["n"] > 25 else out

    monkeypatch.setattr(loss_module, "sample_normalised", broken_after)
    robust = RobustConfig(checkpoint_every=10, max_rollbacks=3)
    with caplog.at_level(logging.WARNING, logger="topograph"):
        history = solve_round(
            model, level, ROUND, 0, LearningRates(), LossConfig(), BatchingConfig(3, 0.5), robust
        ).records
    assert any("ending the round" in r.getMessage() for r in caplog.records)
    assert len(history) == 20  # the last checkpoint before the fault
    assert torch.isfinite(model.pose.position).all()


def test_resume_from_checkpoint_ends_where_the_uninterrupted_run_ends(tmp_path):
    scene = toy_scene()
    level = make_batched_level(scene.pixels, 1)
    robust = RobustConfig(checkpoint_every=10, save_interval_s=0.0)
    args = (LearningRates(), LossConfig(), BatchingConfig(2, 0.5), robust)

    full = _model(scene)
    full_history = solve_round(full, level, ROUND, 0, *args, seed=3).records

    # interrupted run: saves checkpoints, "crashes" after the one at iteration 50
    path = tmp_path / "checkpoint.pt"
    fp = digest(("a", "b"), scene.pixels.shape, {"seed": 3})
    first = _model(scene)

    class Interrupt(Exception):
        pass

    def save(state, records):
        save_checkpoint(path, Checkpoint(first.state_dict(), 0, state, [r.to_dict() for r in records], fp))
        if state.iteration == 50:
            raise Interrupt

    with pytest.raises(Interrupt):
        solve_round(first, level, ROUND, 0, *args, seed=3, on_checkpoint=save)

    ckpt = load_checkpoint(path, fp)
    assert ckpt.round_state is not None and ckpt.round_state.iteration == 50
    resumed = _model(scene)
    resumed.load_state_dict(ckpt.model)
    history = (
        History.from_dicts(ckpt.history)
        + solve_round(resumed, level, ROUND, 0, *args, seed=3, resume=ckpt.round_state).records
    )
    for (name, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert [h.loss for h in history] == [h.loss for h in full_history]

    with pytest.raises(TopographError, match="another run"):
        load_checkpoint(path, digest(("a", "c"), scene.pixels.shape, {"seed": 3}))
    with pytest.raises(TopographError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
