"""End to end through ``reconstruct()``: CNN and TV heights, determinism, checkpoint/resume, rollback.

A tiny relief scene (6 images of 64x48 px, a round plateau 6 object units high, exact truth; see
tests/meso_toy.py) with a short schedule keeps each reconstruction to a few seconds.
"""

from __future__ import annotations

import dataclasses
import logging
import re

import numpy as np
import pytest
import torch
from meso_toy import height_errors, plateau_relief, registration_rms, toy_scene
from typer.testing import CliRunner

from topograph.cli import app
from topograph.errors import TopographError
from topograph.meso.config import LevelConfig, MesoConfig, computational_settings, replace_settings
from topograph.meso.models.cnn import HeightCNN
from topograph.meso.models.heights import HeightMaps
from topograph.meso.optimise.checkpoint import load_checkpoint
from topograph.meso.reconstruct import reconstruct
from topograph.progress import NoSteps

CAM = ("position", "scale", "tilt", "angle", "gain", "bias")
RELIEF = 6.0


@pytest.fixture(scope="module")
def scene():
    return toy_scene(3, 2, relief=plateau_relief(RELIEF, 14.0, 2.0))


def toy_config(model: str, height_iterations: int = 100) -> MesoConfig:
    cfg = MesoConfig(
        schedule=(
            LevelConfig("shift", 2, 30, ("position",), lr_scale=0.5),
            LevelConfig("camera", 1, 30, CAM, lr_scale=0.3),
            LevelConfig("height", 1, height_iterations, (*CAM, "height"), lr_scale=0.3),
        )
    )
    settings = {"distortion.model": "none", "threads": 1, "min_level_size": 16, "heights.model": model}
    settings |= {"heights.downsample": 2, "heights.cnn_filters": (8, 8, 8, 8), "heights.cnn_downsample": 2}
    cfg = replace_settings(cfg, settings | {"heights.cnn_lr": 2e-2})  # x 0.3 in the height round
    return cfg


@pytest.mark.parametrize("model", ["tv", pytest.param("cnn", marks=pytest.mark.slow)])
def test_cnn_and_tv_heights_recover_the_toy_relief(scene, model):
    rec = reconstruct(scene.images(), toy_config(model))
    assert isinstance(rec.model.heights, HeightCNN if model == "cnn" else HeightMaps)
    e = height_errors(rec, scene)
    # measured: tv rms 0.58, plateau 5.30, background 0.12; cnn rms 0.24, plateau 5.98, background -0.04
    assert e["cells"] > 3000
    assert e["rms"] < 0.15 * RELIEF, e
    assert abs(e["plateau"] - RELIEF) < 0.25 * RELIEF, e
    assert abs(e["background"]) < 0.05 * RELIEF, e
    # nadirs trade off against small tilts on a relief (measured 0.36 tv, 0.64 cnn): within one pixel
    assert registration_rms(rec, scene) < 1.0, registration_rms(rec, scene)
    assert rec.history[-1].mse_rgb < 0.2 * rec.history[0].mse_rgb


class Interrupt(Exception):
    pass


class InterruptAfter(NoSteps):
    """A progress reporter that raises after ``n`` iterations of the rounds (a crash in the middle of a
    round); other counted work (the flow step's per-image progress, the camera refinement's steps) is not
    counted."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.in_round = False

    def begin(self, description: str, total: int) -> None:
        self.in_round = re.fullmatch(ROUND_DESCRIPTION, description) is not None

    def step(self, loss: float | None = None) -> None:
        if not self.in_round:
            return
        self.n -= 1
        if self.n == 0:
            raise Interrupt


ROUND_DESCRIPTION = r"(shift|camera|height) \(1/\d+\)"
"""A round's progress description (``solve_round``: its name and downsampling), not e.g. the flow step's
"camera refinement on the flow matches"."""


def resumable_config() -> MesoConfig:
    cfg = toy_config("cnn")
    schedule = (
        LevelConfig("shift", 2, 10, ("position",), lr_scale=0.5),
        LevelConfig("camera", 1, 10, CAM, lr_scale=0.3),
        LevelConfig("height", 1, 30, (*CAM, "height"), lr_scale=0.3),
    )
    cfg = replace_settings(cfg, {"schedule": schedule})
    # a checkpoint file at every in-memory checkpoint
    cfg = replace_settings(
        cfg, {"heights.cnn_downsample": 4, "robust.save_interval_s": 0.0, "robust.checkpoint_every": 10}
    )
    return cfg


@pytest.mark.slow
def test_same_seed_same_heights_and_resume_ends_where_the_uninterrupted_run_ends(scene, tmp_path):
    images = scene.images()
    cfg = resumable_config()
    first = reconstruct(images, cfg, checkpoint=tmp_path / "a" / "checkpoint.pt")
    second = reconstruct(images, cfg)
    np.testing.assert_array_equal(first.height, second.height)  # bit-identical (NaN where unobserved)
    assert np.isfinite(first.height).sum() > 3000 and np.nanmax(np.abs(first.height)) > 0.1  # heights moved

    # a run that crashes in the height round (iteration 15 of 30) ...
    ckpt = tmp_path / "b" / "checkpoint.pt"
    with pytest.raises(Interrupt):
        reconstruct(images, cfg, InterruptAfter(10 + 10 + 15), checkpoint=ckpt)
    saved = load_checkpoint(ckpt)
    assert saved.next_round == 2 and saved.round_state is not None and saved.round_state.iteration == 10
    # ... resumed from its checkpoint ends with the parameters and heights of the uninterrupted run
    resumed = reconstruct(images, cfg, checkpoint=ckpt, resume=True)
    for (name, a), (_, b) in zip(first.model.state_dict().items(), resumed.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    np.testing.assert_array_equal(first.height, resumed.height)
    assert [h.loss for h in resumed.history] == [h.loss for h in first.history]

    # a finished checkpoint resumes to the same result without optimising again
    again = reconstruct(images, cfg, checkpoint=ckpt, resume=True)
    np.testing.assert_array_equal(first.height, again.height)

    # a checkpoint of another run is refused: other settings, other images, or none at all
    other = replace_settings(cfg, {"heights.cnn_lr": 2 * cfg.heights.cnn_lr})
    with pytest.raises(TopographError, match="another run"):
        reconstruct(images, other, checkpoint=ckpt, resume=True)
    flipped = toy_scene(3, 2, relief=plateau_relief(RELIEF, 14.0, 2.0), seed=1).images()
    with pytest.raises(TopographError, match="another run"):
        reconstruct(flipped, cfg, checkpoint=ckpt, resume=True)
    with pytest.raises(TopographError, match="no checkpoint"):
        reconstruct(images, cfg, checkpoint=tmp_path / "missing.pt", resume=True)
    # settings that do not change the computation do not make it another run
    relaxed = replace_settings(cfg, {"threads": 2, "robust.save_interval_s": 30.0, "output.min_views": 3})
    assert computational_settings(relaxed) == computational_settings(cfg)
    assert computational_settings(other) != computational_settings(cfg)


@pytest.mark.slow
def test_injected_divergence_is_rolled_back_and_the_run_converges(scene, caplog):
    cfg = toy_config("tv", height_iterations=60)
    camera = cfg.schedule[1]
    # a learning rate 100x too large in the camera round: cameras jump ~30 units in the first step
    cfg = replace_settings(
        cfg, {"schedule": (cfg.schedule[0], LevelConfig(camera.name, 1, 30, CAM, lr_scale=30.0), cfg.schedule[2])}
    )
    with caplog.at_level(logging.WARNING, logger="topograph"):
        rec = reconstruct(scene.images(), cfg)
    rollbacks = [r.getMessage() for r in caplog.records if "rolled back" in r.getMessage()]
    assert rollbacks and all(m.startswith("round camera") for m in rollbacks), rollbacks
    assert not any("ending the round" in r.getMessage() for r in caplog.records)
    camera_its = [h.iteration for h in rec.history if h.level == "camera"]
    assert camera_its == list(range(30))  # every iteration done once after the rollbacks
    assert all(np.isfinite(h.loss) for h in rec.history)
    assert registration_rms(rec, scene) < 1.0
    e = height_errors(rec, scene)
    assert e["rms"] < 0.2 * RELIEF and abs(e["plateau"] - RELIEF) < 0.3 * RELIEF, e


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--regularizer", "l1"], "--regularizer must be cnn or tv"),
        (["--cnn", "16,x,32"], "--cnn needs positive integer"),
        (["--cnn", "16,0"], "--cnn needs positive integer"),
        (["--tv-weight", "-1e-4"], "--tv-weight must be >= 0"),
        (["--batch-size", "-2"], "--batch-size must be >= 0"),
    ],
)
def test_cli_rejects_bad_height_and_batch_options(tmp_path, args, message):
    result = CliRunner().invoke(app, ["meso", str(tmp_path), "-o", str(tmp_path / "out"), *args])
    assert isinstance(result.exception, TopographError), result.output
    assert message in str(result.exception)
    assert "\n" not in str(result.exception)


@pytest.mark.slow
def test_warm_up_keeps_a_continuation_round_from_kicking_the_cnn_heights(scene):
    """A further round that keeps training the CNN starts a fresh Adam state: without a warm-up its first
    step moves every weight by about its learning rate (measured: loss x7.7, plateau 6.0 -> 4.7); with a
    linear warm-up over 10 iterations the loss stays near its level and the plateau keeps its height."""
    results = {}
    for warmup in (0, 10):
        cfg = toy_config("cnn")
        # the CNN trained from flat heights: the case where a kick costs most
        cfg = replace_settings(cfg, {"heights.init": "zero"})
        again = LevelConfig("again", 1, 20, (*CAM, "height"), lr_scale=0.3, warmup_iterations=warmup)
        cfg = dataclasses.replace(cfg, schedule=(*cfg.schedule, again))
        rec = reconstruct(scene.images(), cfg)
        before = [r.loss for r in rec.history if r.level == "height"][-1]
        during = [r.loss for r in rec.history if r.level == "again"]
        results[warmup] = (max(during) / before, height_errors(rec, scene)["plateau"])
    # measured: no warm-up 7.7x, plateau 4.72; warm-up 1.27x, plateau 5.95
    assert results[0][0] > 3.0, results  # the scenario does kick without a warm-up
    assert results[10][0] < 1.6, results
    assert abs(results[10][1] - RELIEF) < 0.3, results
    assert abs(results[10][1] - RELIEF) < abs(results[0][1] - RELIEF), results
