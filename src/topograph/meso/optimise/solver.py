"""One coarse-to-fine round with batches, a running reconstruction, automatic rollback and checkpoints.

Each iteration draws a batch of images (a pure function of seed, round and iteration, so runs are
reproducible and resumable), updates the running reconstruction where the batch lands (Eq. 12) and takes
one Adam step on the batch's stitching loss. Learning rates decay exponentially over the round.

Divergence -- a non-finite loss or gradient, a loss above ``explode_factor`` x the round's lowest, or a
camera-centric height beyond ``max_height_fraction`` of the camera height -- rolls the model, the
optimiser and the reconstruction back to the last in-memory checkpoint and multiplies every learning
rate by ``lr_backoff``; the round then continues from the checkpoint's iteration. After
``max_rollbacks`` rollbacks in one round the round ends at its last good state (with a warning), so a
run always finishes.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from topograph.meso.config import BatchingConfig, LearningRates, LevelConfig, LossConfig, RobustConfig
from topograph.meso.models.camera import MesoModel
from topograph.meso.optimise.batching import (
    BatchedLevel,
    RunningReconstruction,
    batch_order,
    fill_reconstruction,
    footprint_grid,
)
from topograph.meso.optimise.checkpoint import RoundState
from topograph.meso.optimise.loss import batch_loss
from topograph.meso.optimise.optimizer import build_optimizer
from topograph.meso.progress import NullProgress, ProgressSink

log = logging.getLogger("topograph")

__all__ = ["BatchingConfig", "RobustConfig", "batch_at", "effective_batch_size", "solve_round"]


def batch_at(iteration: int, n_images: int, batch_size: int, seed: int, round_index: int) -> torch.Tensor:
    """The batch of one iteration: epoch ``iteration // batches_per_epoch`` is a permutation drawn from a
    generator seeded with ``(seed, round_index, epoch)``; every image appears once per epoch."""
    if batch_size <= 0 or batch_size >= n_images:
        return torch.arange(n_images)
    n_batches = math.ceil(n_images / batch_size)
    epoch, k = divmod(iteration, n_batches)
    gen = torch.Generator().manual_seed(1_000_003 * (seed + 1) + 10_007 * round_index + epoch)
    return batch_order(n_images, batch_size, gen)[k]


BYTES_PER_PIXEL = 330.0
"""Measured peak working memory of one step per image pixel of the round (forward + backward of the
back-projection, splatting and sampling; float32 on CPU)."""


def effective_batch_size(batching: BatchingConfig, n_images: int, bytes_per_image: float) -> int:
    """Images per step: ``batching.batch_size`` if set, else as many as fit ``max_step_mb`` (at least 1);
    a result equal to ``n_images`` means every image in every step."""
    if batching.batch_size > 0:
        return min(int(batching.batch_size), n_images)
    fit = int(batching.max_step_mb * 2**20 // max(1.0, bytes_per_image))
    return max(1, min(n_images, fit))


def step_bytes_per_image(model: MesoModel, level: BatchedLevel, train_heights: bool) -> float:
    """Estimated working memory of one image in one step (see :data:`BYTES_PER_PIXEL`)."""
    out = BYTES_PER_PIXEL * level.uv.shape[0]
    if train_heights:
        out += model.heights.step_bytes_per_image()
    return out


def _finite_grads(opt: torch.optim.Optimizer) -> bool:
    for g in opt.param_groups:
        for p in g["params"]:
            if p.grad is not None and not bool(torch.isfinite(p.grad).all()):
                return False
    return True


@dataclass
class _Snapshot:
    iteration: int
    model: dict
    optimizer: dict
    recon: dict
    history_len: int


def solve_round(
    model: MesoModel,
    level: BatchedLevel,
    level_cfg: LevelConfig,
    round_index: int,
    lr: LearningRates,
    loss: LossConfig,
    batching: BatchingConfig,
    robust: RobustConfig,
    history: list[dict],
    seed: int = 0,
    progress: ProgressSink | None = None,
    resume: RoundState | None = None,
    on_checkpoint: Callable[[RoundState], None] | None = None,
) -> MesoModel:
    """Optimise one round (see the module docstring).

    Args:
        model: modified in place.
        level: the round's images.
        level_cfg: iterations, trained groups, learning-rate scale and decay, robust loss scale.
        round_index: position of the round in the schedule (seeds the batches).
        lr: base learning rates.
        loss: loss weights.
        batching: batch size and momentum.
        robust: divergence and checkpoint settings.
        history: one dict per accepted iteration is appended; rolled-back iterations are removed.
        seed: run seed.
        progress: progress sink.
        resume: continue this round from a saved state (the model must hold the saved parameters).
        on_checkpoint: called with the round's state at in-memory checkpoints, at most every
            ``robust.save_interval_s`` seconds (to write a resumable checkpoint file).

    Returns:
        The model.
    """
    progress = progress or NullProgress()
    n = level.n_images
    opt = build_optimizer(model.groups(), level_cfg.train, lr, level_cfg.lr_scale)
    iterations = int(level_cfg.iterations)
    if opt is None or iterations == 0:
        return model
    gamma = level_cfg.lr_final ** (1.0 / max(1, iterations))
    warmup = int(getattr(level_cfg, "warmup_iterations", 0))
    train_heights = "height" in level_cfg.train
    batch_size = effective_batch_size(batching, n, step_bytes_per_image(model, level, train_heights))
    all_in_one = batch_size >= n
    momentum = 0.0 if all_in_one else float(batching.momentum)
    recon = RunningReconstruction(
        footprint_grid(model, level, getattr(level_cfg, "grid_cell", 1.0)), 4, level.pixels.device
    )
    if resume is not None:
        opt.load_state_dict(resume.optimizer)
        recon.load_state_dict(resume.recon)
        start, best, rollbacks = resume.iteration, resume.best, resume.rollbacks
    else:
        if not all_in_one:
            fill_reconstruction(model, level, recon, batch_size)
        start, best, rollbacks = 0, math.inf, 0

    def snapshot(it: int) -> _Snapshot:
        return _Snapshot(
            iteration=it,
            model={k: v.detach().clone() for k, v in model.state_dict().items()},
            optimizer=copy.deepcopy(opt.state_dict()),
            recon=recon.state_dict(),
            history_len=len(history),
        )

    def round_state(it: int) -> RoundState:
        return RoundState(round_index, it, copy.deepcopy(opt.state_dict()), recon.state_dict(), best, rollbacks)

    snap = snapshot(start)
    last_save = time.monotonic()
    with torch.no_grad():
        z_mean = float(model.camera_heights().mean())
    height_limit = robust.max_height_fraction * z_mean
    log.info(
        "round %s: %d images per step of %d%s", level_cfg.name, batch_size, n, "" if all_in_one else f", m={momentum}"
    )
    progress.start(f"{level_cfg.name} (1/{level.downsample})", iterations - start)
    it = start
    while it < iterations:
        index = batch_at(it, n, batch_size, seed, round_index)
        opt.zero_grad(set_to_none=True)
        terms = batch_loss(model, level, index, recon, loss, momentum, train_heights, level_cfg.robust_scale)
        value = float(terms.total.detach())
        reason = ""
        if not math.isfinite(value):
            reason = "non-finite loss"
        elif value > robust.explode_factor * best:
            reason = f"loss {value:.3g} > {robust.explode_factor:g} x best {best:.3g}"
        elif train_heights and terms.max_abs_height > height_limit:
            reason = f"height {terms.max_abs_height:.3g} beyond {height_limit:.3g}"
        if not reason:
            terms.total.backward()
            if not _finite_grads(opt):
                reason = "non-finite gradient"
        if reason:
            rollbacks += 1
            model.load_state_dict(snap.model)
            opt.load_state_dict(copy.deepcopy(snap.optimizer))
            recon.load_state_dict(snap.recon)
            del history[snap.history_len :]
            if rollbacks > robust.max_rollbacks:
                log.warning(
                    "round %s: %s at iteration %d after %d rollbacks; ending the round at iteration %d",
                    level_cfg.name, reason, it, rollbacks - 1, snap.iteration,
                )  # fmt: skip
                break
            for g in opt.param_groups:
                g["lr"] *= robust.lr_backoff
            snap.optimizer = copy.deepcopy(opt.state_dict())
            log.warning(
                "round %s: %s at iteration %d; rolled back to iteration %d, learning rates x%g",
                level_cfg.name, reason, it, snap.iteration, robust.lr_backoff,
            )  # fmt: skip
            it = snap.iteration
            progress.update(value)
            continue
        warm = min(1.0, (it + 1) / warmup) if warmup > 0 else 1.0
        if warm < 1.0:  # the stored rates stay undamped: checkpoints and rollbacks see the schedule's values
            for g in opt.param_groups:
                g["lr"] *= warm
        opt.step()
        for g in opt.param_groups:
            g["lr"] *= gamma / warm
        best = min(best, value)
        history.append(
            {
                "level": level_cfg.name,
                "iteration": it,
                "loss": value,
                "mse_rgb": terms.mse_rgb,
                "mse_height": terms.mse_height,
                "tv": terms.tv,
                "batch": index.tolist(),
            }
        )
        progress.update(value)
        it += 1
        if it % robust.checkpoint_every == 0 and it < iterations:
            snap = snapshot(it)
            if on_checkpoint is not None and time.monotonic() - last_save >= robust.save_interval_s:
                on_checkpoint(round_state(it))
                last_save = time.monotonic()
    if history:
        log.info("round %s: loss %.4e (rgb %.4e), %d rollbacks", level_cfg.name, history[-1]["loss"],
                 history[-1]["mse_rgb"], rollbacks)  # fmt: skip
    return model
