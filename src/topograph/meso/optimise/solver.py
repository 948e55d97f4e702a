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
    check_grid_size,
    fill_reconstruction,
    footprint_grid,
)
from topograph.meso.optimise.checkpoint import RoundState
from topograph.meso.optimise.history import IterationRecord
from topograph.meso.optimise.loss import BatchTerms, batch_loss
from topograph.meso.optimise.optimizer import build_optimizer
from topograph.meso.optimise.ties import TieTensors
from topograph.progress import NoSteps, StepReporter, current

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
    n_records: int


@dataclass(frozen=True)
class RoundResult:
    """Outcome of :func:`solve_round`: the accepted iterations (rolled-back ones removed) and the number of
    rollbacks (including those before a resume)."""

    records: tuple[IterationRecord, ...]
    rollbacks: int


CheckpointHook = Callable[[RoundState, tuple[IterationRecord, ...]], None]
"""Called with the round's state and its accepted records so far (to write a resumable checkpoint file)."""


class _RoundSolver:
    """The state of one round while it runs (module docstring): optimiser, running reconstruction,
    in-memory checkpoint, divergence bookkeeping and the accepted records."""

    def __init__(self, model: MesoModel, level: BatchedLevel, level_cfg: LevelConfig, round_index: int,
                 opt: torch.optim.Optimizer, batching: BatchingConfig, robust: RobustConfig,
                 ties: TieTensors | None = None) -> None:  # fmt: skip
        self.model, self.level, self.cfg, self.round_index, self.opt = model, level, level_cfg, round_index, opt
        self.robust, self.ties = robust, ties
        self.tie_px = float("nan")
        self.iterations = int(level_cfg.iterations)
        self.gamma = level_cfg.lr_final ** (1.0 / max(1, self.iterations))
        self.warmup = int(getattr(level_cfg, "warmup_iterations", 0))
        self.train_heights = "height" in level_cfg.train
        n = level.n_images
        self.batch_size = effective_batch_size(batching, n, step_bytes_per_image(model, level, self.train_heights))
        self.all_in_one = self.batch_size >= n
        self.momentum = 0.0 if self.all_in_one else float(batching.momentum)
        grid = footprint_grid(model, level, getattr(level_cfg, "grid_cell", 1.0))
        check_grid_size(grid, level, level_cfg.name)
        self.recon = RunningReconstruction(grid, 4, level.pixels.device)
        self.records: list[IterationRecord] = []
        self.best, self.rollbacks, self.start = math.inf, 0, 0
        with torch.no_grad():
            z_mean = float(model.camera_heights().mean())
        self.height_limit = robust.max_height_fraction * z_mean

    def begin(self, resume: RoundState | None) -> None:
        """Start from scratch (the running reconstruction filled from every image) or from a saved state."""
        if resume is not None:
            self.opt.load_state_dict(resume.optimizer)
            self.recon.load_state_dict(resume.recon)
            self.start, self.best, self.rollbacks = resume.iteration, resume.best, resume.rollbacks
        elif not self.all_in_one:
            fill_reconstruction(self.model, self.level, self.recon, self.batch_size)

    def snapshot(self, it: int) -> _Snapshot:
        return _Snapshot(
            iteration=it,
            model={k: v.detach().clone() for k, v in self.model.state_dict().items()},
            optimizer=copy.deepcopy(self.opt.state_dict()),
            recon=self.recon.state_dict(),
            n_records=len(self.records),
        )

    def state(self, it: int) -> RoundState:
        return RoundState(
            self.round_index, it, copy.deepcopy(self.opt.state_dict()), self.recon.state_dict(), self.best,
            self.rollbacks,
        )  # fmt: skip

    def divergence(self, value: float, terms: BatchTerms) -> str:
        """Why an iteration is refused (empty when it is accepted); back-propagates an accepted loss."""
        robust = self.robust
        if not math.isfinite(value):
            return "non-finite loss"
        if value > robust.explode_factor * self.best:
            return f"loss {value:.3g} > {robust.explode_factor:g} x best {self.best:.3g}"
        if self.train_heights and terms.max_abs_height > self.height_limit:
            return f"height {terms.max_abs_height:.3g} beyond {self.height_limit:.3g}"
        terms.total.backward()
        return "" if _finite_grads(self.opt) else "non-finite gradient"

    def roll_back(self, snap: _Snapshot, reason: str, it: int) -> bool:
        """Return to the in-memory checkpoint; False when the rollback limit ends the round there."""
        self.rollbacks += 1
        self.model.load_state_dict(snap.model)
        self.opt.load_state_dict(copy.deepcopy(snap.optimizer))
        self.recon.load_state_dict(snap.recon)
        del self.records[snap.n_records :]
        name = self.cfg.name
        if self.rollbacks > self.robust.max_rollbacks:
            log.warning(
                "round %s: %s at iteration %d after %d rollbacks; ending the round at iteration %d",
                name, reason, it, self.rollbacks - 1, snap.iteration,
            )  # fmt: skip
            return False
        for g in self.opt.param_groups:
            g["lr"] *= self.robust.lr_backoff
        snap.optimizer = copy.deepcopy(self.opt.state_dict())
        log.warning(
            "round %s: %s at iteration %d; rolled back to iteration %d, learning rates x%g",
            name, reason, it, snap.iteration, self.robust.lr_backoff,
        )  # fmt: skip
        return True

    def converged(self, prior: tuple[float, ...]) -> bool:
        """The loss plateau (``plateau_iterations``, ``plateau_tolerance``): the lowest loss of the last
        ``k`` accepted iterations is not below ``1 - tol`` times the lowest before them. ``prior`` are the
        losses of this round's iterations before a resume (the decision is the uninterrupted run's)."""
        k = int(getattr(self.cfg, "plateau_iterations", 0))
        losses = (*prior, *(r.loss for r in self.records))
        if k <= 0 or len(losses) <= max(k, self.warmup):
            return False
        before, recent = min(losses[:-k]), min(losses[-k:])
        return recent > before * (1.0 - float(self.cfg.plateau_tolerance))

    def step(self, it: int) -> None:
        """Adam step with the warm-up factor, then the exponential decay of every rate."""
        warm = min(1.0, (it + 1) / self.warmup) if self.warmup > 0 else 1.0
        if warm < 1.0:  # the stored rates stay undamped: checkpoints and rollbacks see the schedule's values
            for g in self.opt.param_groups:
                g["lr"] *= warm
        self.opt.step()
        for g in self.opt.param_groups:
            g["lr"] *= self.gamma / warm

    def run(
        self,
        loss: LossConfig,
        seed: int,
        progress: StepReporter,
        on_checkpoint: CheckpointHook | None,
        prior: tuple[float, ...] = (),
    ) -> None:
        """Iterate from ``start`` to the round's end (or to the rollback limit, or to a loss plateau)."""
        n, cfg, robust = self.level.n_images, self.cfg, self.robust
        snap = self.snapshot(self.start)
        last_save = time.monotonic()
        it = self.start
        while it < self.iterations:
            index = batch_at(it, n, self.batch_size, seed, self.round_index)
            self.opt.zero_grad(set_to_none=True)
            terms = batch_loss(
                self.model, self.level, index, self.recon, loss, self.momentum, self.train_heights, cfg.robust_scale,
                self.ties,
            )  # fmt: skip
            value = float(terms.total.detach())
            reason = self.divergence(value, terms)
            if reason:
                if not self.roll_back(snap, reason, it):
                    break
                it = snap.iteration
                progress.step(value)
                continue
            self.step(it)
            self.best = min(self.best, value)
            self.tie_px = terms.tie_px
            self.records.append(
                IterationRecord(cfg.name, it, value, terms.mse_rgb, terms.mse_height, terms.tv, tuple(index.tolist()))
            )
            progress.step(value)
            it += 1
            if it < self.iterations and self.converged(prior):
                log.info("round %s: loss plateau, ending after %d of %d iterations", cfg.name, it, self.iterations)
                break
            if it % robust.checkpoint_every == 0 and it < self.iterations:
                snap = self.snapshot(it)
                if on_checkpoint is not None and time.monotonic() - last_save >= robust.save_interval_s:
                    on_checkpoint(self.state(it), tuple(self.records))
                    last_save = time.monotonic()


def solve_round(
    model: MesoModel,
    level: BatchedLevel,
    level_cfg: LevelConfig,
    round_index: int,
    lr: LearningRates,
    loss: LossConfig,
    batching: BatchingConfig,
    robust: RobustConfig,
    seed: int = 0,
    progress: StepReporter | None = None,
    resume: RoundState | None = None,
    on_checkpoint: CheckpointHook | None = None,
    prior_losses: tuple[float, ...] = (),
    ties: TieTensors | None = None,
) -> RoundResult:
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
        seed: run seed.
        progress: receives one counted step per iteration, with its loss (default: the active reporter,
            :func:`topograph.progress.current`).
        resume: continue this round from a saved state (the model must hold the saved parameters).
        on_checkpoint: called with the round's state and its records so far at in-memory checkpoints, at
            most every ``robust.save_interval_s`` seconds (to write a resumable checkpoint file).
        prior_losses: with ``resume``, the losses of this round's iterations before it (the loss-plateau
            test, ``level_cfg.plateau_iterations``, then decides as in the uninterrupted run).
        ties: the initialisation's feature matches, tied to the cameras by ``loss.tie_weight``
            (:mod:`topograph.meso.optimise.ties`; None = photometric loss alone).

    Returns:
        The accepted iterations of this call (after ``resume.iteration`` when resuming) and the rollbacks.
    """
    progress = progress or current() or NoSteps()
    opt = build_optimizer(model.groups(), level_cfg.train, lr, level_cfg.lr_scale)
    if opt is None or int(level_cfg.iterations) == 0:
        return RoundResult((), 0)
    solver = _RoundSolver(model, level, level_cfg, round_index, opt, batching, robust, ties)
    solver.begin(resume)
    n, m = level.n_images, solver.momentum
    log.info("round %s: %d images per step of %d%s", level_cfg.name, solver.batch_size, n,
             "" if solver.all_in_one else f", m={m}")  # fmt: skip
    progress.begin(f"{level_cfg.name} (1/{level.downsample})", solver.iterations - solver.start)
    try:
        solver.run(loss, seed, progress, on_checkpoint, tuple(prior_losses) if resume is not None else ())
    finally:
        progress.end()
    if solver.records:
        last = solver.records[-1]
        tied = f", feature ties {solver.tie_px:.2f} px median" if math.isfinite(solver.tie_px) else ""
        log.info("round %s: loss %.4e (rgb %.4e)%s, %d rollbacks", level_cfg.name, last.loss, last.mse_rgb, tied,
                 solver.rollbacks)  # fmt: skip
    return RoundResult(tuple(solver.records), solver.rollbacks)
