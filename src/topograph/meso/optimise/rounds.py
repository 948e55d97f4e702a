"""Running the coarse-to-fine schedule: round data, the per-round solver, checkpoints and resume.

Rounds run in order with :func:`topograph.meso.optimise.solver.solve_round` on images kept as uint8 at the
round's resolution (converted to float32 one batch at a time). With a checkpoint path, the run state is
saved inside rounds (at most every ``robust.save_interval_s`` seconds) and after each round; ``resume``
continues from that file: finished rounds are skipped and an interrupted round continues from its saved
iteration, so the resumed run ends where an uninterrupted run with the same seed ends.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from topograph.errors import TopographError
from topograph.heap import MESO_ROUNDS, reused_heap
from topograph.meso.config import LearningRates, LevelConfig, MesoConfig
from topograph.meso.flow.heights import FlowHeights, initialise_heights, measure_heights
from topograph.meso.init_global import FeatureTies
from topograph.meso.models.camera import MesoModel
from topograph.meso.optimise.batching import BatchedLevel, footprint_grid, make_batched_level
from topograph.meso.optimise.checkpoint import Checkpoint, RoundState, load_checkpoint, save_checkpoint
from topograph.meso.optimise.history import History, IterationRecord
from topograph.meso.optimise.photometric import fit_gains
from topograph.meso.optimise.solver import solve_round
from topograph.meso.optimise.ties import tie_tensors
from topograph.meso.quality import Gate, enforce, match_gate, refinement_gate
from topograph.progress import StepReporter, stage
from topograph.timing import Timings

log = logging.getLogger("topograph")


def effective_learning_rates(cfg: MesoConfig, model: MesoModel) -> LearningRates:
    """The configured rates, with the height model's own rate for the ``height`` group (a CNN's
    ``heights.cnn_lr``, :meth:`~topograph.meso.models.heights.HeightModel.learning_rate`)."""
    return replace(cfg.lr, height=model.heights.learning_rate(cfg.heights, cfg.lr.height))


def clip_measured_heights(measured: FlowHeights, model: MesoModel, max_height_fraction: float) -> FlowHeights:
    """Flow heights limited to half the divergence bound of the rounds (``max_height_fraction`` of the mean
    camera height): a few wild matches (measured on real aerial photos: 45 % of the flight height) would
    otherwise start the height round beyond the bound, and every rollback returns to the same start."""
    limit = 0.5 * max_height_fraction * float(model.camera_heights().detach().mean())
    wild = np.abs(measured.heights) > limit
    if wild.any():
        log.warning("flow heights: %.2f %% of pixels beyond +-%.3g units clipped", 100.0 * wild.mean(), limit)
    return replace(measured, heights=np.clip(measured.heights, -limit, limit))


@dataclass(frozen=True)
class RoundsResult:
    """Outcome of :func:`run_rounds`: the optimised ``model``, its ``history`` (every accepted iteration,
    including those restored from a checkpoint) and ``timings`` (seconds of this call's ``height_init`` and
    ``round_<name>``, :mod:`topograph.timing`)."""

    model: MesoModel
    history: History
    timings: Mapping[str, float]
    gates: tuple[Gate, ...] = ()
    """The flow step's dense-matching and refinement gates (none when this call did not run it)."""


def _flow_step(
    model: MesoModel, pixels: np.ndarray, cfg: MesoConfig, image_weights: np.ndarray | None
) -> tuple[Gate, Gate]:
    """The flow step before the first height round (:mod:`topograph.meso.flow`): heights measured from dense
    matches start the height model. Returns its dense-matching and refinement gates (:func:`enforce`)."""
    stage("flow step: dense matches, camera refinement, heights")
    measured = measure_heights(model, pixels, cfg.heights.flow, cfg.seed, image_weights)
    measured = clip_measured_heights(measured, model, cfg.robust.max_height_fraction)
    misfit = initialise_heights(model, measured, cfg.heights.fit_iterations, cfg.heights.fit_lr)
    gates = (
        enforce(match_gate(measured.coverage, measured.n_matches, cfg.checks), cfg.checks),
        enforce(refinement_gate(measured.refinement), cfg.checks),
    )
    log.info("heights started from the flow measurement (fit misfit %.3g units)", misfit)
    return gates


def run_rounds(
    model: MesoModel,
    pixels: np.ndarray,
    cfg: MesoConfig,
    levels: Sequence[LevelConfig],
    progress: StepReporter | None = None,
    device: torch.device | str = "cpu",
    checkpoint: str | Path | None = None,
    resume: bool = False,
    fingerprint: str = "",
    image_weights: np.ndarray | None = None,
    ties: FeatureTies | None = None,
) -> RoundsResult:
    """Optimise ``model`` over ``levels`` with :func:`topograph.meso.optimise.solver.solve_round`, with checkpoints.

    Args:
        model: the deformation model (modified in place; loaded from the checkpoint when resuming).
        pixels: (N, H, W, 3) uint8 images.
        cfg: configuration (learning rates, loss, batching, robustness, seed).
        levels: the rounds to run (``cfg.schedule``, possibly with adjusted downsampling factors).
        progress: receives the rounds' iterations with their loss (default: the active reporter).
        device: compute device.
        checkpoint: file for resumable checkpoints (None = no files).
        resume: continue from ``checkpoint``.
        fingerprint: identifies the run (:func:`topograph.fingerprint.digest`); a checkpoint of another run is
            refused.
        image_weights: (N,) weight of each image in the running reconstruction (None = 1).
        ties: the feature initialisation's matches, tied to the cameras in every round (``loss.tie_weight``).

    Returns:
        The model, the history, the timings and the flow step's gates (a failed one stops the run when
        ``cfg.checks.gates == "stop"``).

    Raises:
        TopographError: ``resume`` without a usable checkpoint of this run.
    """
    start_round, round_state, history = 0, None, History()
    if resume:
        if checkpoint is None:
            raise TopographError("resuming needs a checkpoint file", "give the output folder of the earlier run")
        ck = load_checkpoint(checkpoint, fingerprint)
        model.load_state_dict(ck.model)
        history = History.from_dicts(ck.history)
        start_round, round_state = ck.next_round, ck.round_state
        where = "finished" if start_round >= len(levels) else f"round {start_round}"
        if round_state is not None:
            where += f", iteration {round_state.iteration}"
        log.info("resuming from %s (%s)", checkpoint, where)
    lr = effective_learning_rates(cfg, model)
    timings = Timings()
    gates: tuple[Gate, ...] = ()
    cache: dict[int, BatchedLevel] = {}
    tied = None
    if ties is not None and ties.n_matches and cfg.loss.tie_weight > 0:
        tied = tie_tensors(ties, (pixels.shape[2], pixels.shape[1]), device)
    first_height_round = next((r for r, lvl in enumerate(levels) if "height" in lvl.train), None)
    # the rounds' tensors are allocated and freed every iteration: keep them in the heap (topograph.heap)
    with reused_heap(MESO_ROUNDS):
        for r, level in enumerate(levels):
            if r < start_round:
                continue
            resumed_inside = r == start_round and round_state is not None
            if r == first_height_round and cfg.heights.init == "flow" and not resumed_inside:
                with timings.timed("height_init"):
                    gates = _flow_step(model, pixels, cfg, image_weights)
            if level.downsample not in cache:
                cache.clear()
                cache[level.downsample] = make_batched_level(pixels, level.downsample, device)
                if image_weights is not None:
                    cache[level.downsample].image_weights = torch.as_tensor(image_weights, dtype=torch.float32).to(
                        device
                    )

            def save(
                state: RoundState, records: tuple[IterationRecord, ...], r: int = r, done: History = history
            ) -> None:
                save_checkpoint(
                    checkpoint, Checkpoint(model.state_dict(), r, state, (done + records).to_dicts(), fingerprint)
                )

            if "gain" in level.train and not resumed_inside:  # a closed-form start: Adam moves a gain slowly
                lvl = cache[level.downsample]
                fit_gains(model, lvl, footprint_grid(model, lvl, level.grid_cell), colour="colour" in level.train)
            with timings.timed(f"round_{level.name}"):
                result = solve_round(
                    model, cache[level.downsample], level, r, lr, cfg.loss, cfg.batching, cfg.robust, seed=cfg.seed,
                    progress=progress, resume=round_state if r == start_round else None,
                    on_checkpoint=save if checkpoint is not None else None,
                    prior_losses=tuple(x.loss for x in history if x.level == level.name) if resumed_inside else (),
                    ties=tied,
                )  # fmt: skip
            history = history + result.records
            if checkpoint is not None:
                save_checkpoint(
                    checkpoint, Checkpoint(model.state_dict(), r + 1, None, history.to_dicts(), fingerprint)
                )
    cache.clear()
    return RoundsResult(model, history, timings.frozen(total=False), gates)
