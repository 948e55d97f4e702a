"""A batch's stitching loss against the running reconstruction (paper Eqs. 10-12, Sec. 3.4).

The batch is back-projected (:func:`topograph.meso.optimise.batching.batch_values`), blended into the
running reconstruction ``B`` without gradients, and compared with ``B`` sampled back at the same
coordinates; gradients reach the parameters through the sampling coordinates and the batch's own values.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from topograph.meso.config import LossConfig
from topograph.meso.functional.splat import sample_normalised
from topograph.meso.models.camera import MesoModel
from topograph.meso.optimise.batching import BatchedLevel, RunningReconstruction, batch_values
from topograph.meso.optimise.ties import TieTensors, tie_loss, tie_misfit


@dataclass
class LossTerms:
    """Loss components of one iteration (``total`` carries the gradient)."""

    total: Tensor
    mse_rgb: float
    mse_height: float
    tv: float


@dataclass
class BatchTerms(LossTerms):
    """Loss terms of one batch plus the largest absolute camera-centric height in it (object units)."""

    max_abs_height: float = 0.0
    tie_px: float = float("nan")
    """Median misfit of the batch's feature ties, image pixels (NaN without ties)."""


def batch_loss(
    model: MesoModel,
    level: BatchedLevel,
    index: Tensor,
    recon: RunningReconstruction,
    loss: LossConfig,
    momentum: float,
    with_regulariser: bool,
    robust_scale: float = 0.0,
    ties: TieTensors | None = None,
) -> LossTerms:
    """Update ``recon`` with a batch and return the batch's stitching loss (Eqs. 10-12).

    The prediction is the normalised bilinear read-back of the running splat (sampled sums over sampled
    weights), so a grid finer than the pixels does not pull predictions toward empty cells.

    Loss = data term (MSE of RGB, or its Cauchy version when ``robust_scale > 0``; each pixel weighted by its
    image's weight when the level has image weights) + lambda_h MSE(height)
    + lambda_TV x the height model's regulariser (when ``with_regulariser``) + the feature tie term
    (:mod:`topograph.meso.optimise.ties`, weight ``loss.tie_weight``, when ``ties`` are given). Gradients
    reach the parameters through the sampling coordinates and the batch's own values, never through ``recon``.

    Args:
        model: the deformation model.
        level: the round's images.
        index: (B,) the batch.
        recon: the running reconstruction (updated in place, without gradients).
        loss: loss weights.
        momentum: ``m`` of Eq. 12.
        with_regulariser: add the height regulariser.
        robust_scale: Cauchy scale of the per-pixel RGB residual (0 = squared error).
        ties: the initialisation's feature matches (None = no tie term).

    Returns:
        The loss terms (``total`` carries the gradient).
    """
    bv = batch_values(model, level, index, recon.grid)
    recon.update(bv.grid_xy, bv.values, momentum, bv.weights)
    pred = sample_normalised(recon.accumulated(), bv.grid_xy)
    res = pred - bv.values
    sq = (res[:, :3] ** 2).sum(1)
    mse_rgb = sq.mean() / 3.0
    per_pixel = 3.0 * robust_scale**2 * torch.log1p(sq / (3.0 * robust_scale**2)) if robust_scale > 0 else sq
    if bv.weights is None:
        data_term = per_pixel.mean() / 3.0
    else:  # a blurred photo's pixels count less: its misfit to the sharp reconstruction would bend the shared CNN
        data_term = (bv.weights * per_pixel).sum() / bv.weights.sum().clamp_min(1e-12) / 3.0
    mse_h = (res[:, 3] ** 2).mean()
    total = data_term + loss.height_weight * mse_h
    tie_px = float("nan")
    if ties is not None and loss.tie_weight > 0:
        misfit = tie_misfit(model, ties, index, bv.heights, level.shape)
        total = total + tie_loss(misfit, loss.tie_weight, loss.tie_scale)
        if misfit.numel():
            tie_px = float(misfit.detach().median()) * ties.noise_px
    reg = 0.0
    if with_regulariser:
        r = model.heights.regularization()
        if r.requires_grad or float(r) != 0.0:
            total = total + loss.tv_weight * r
        reg = float(r.detach())
    return BatchTerms(
        total=total,
        mse_rgb=float(mse_rgb.detach()),
        mse_height=float(mse_h.detach()),
        tv=reg,
        max_abs_height=float(bv.heights.detach().abs().max()),
        tie_px=tie_px,
    )
