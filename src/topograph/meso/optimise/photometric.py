"""Per-photo, per-channel gains fitted in closed form from the photos' overlaps (auto exposure, white balance).

The rounds' photometric model is ``g_i c_ik I_ik + b_i`` (:class:`~topograph.meso.models.pose.PoseModel`),
trained by Adam at a learning rate of a few 1e-3 per step: over a round that moves a log gain by ~0.1, while a
phone's auto exposure changes it by up to ~0.3 between photos (the 15-photo cut-cards phantom with
exposure +-30 % and white balance +-15 %: log gains still 0.13 RMS off after the camera round, half of it
absorbed by the biases). Gains that far off leave a misfit of the texture's contrast times the gain error in
every pixel, which the poses and heights then fit.

Here every photo is splatted alone onto the round's grid at height 0 with its current pose; every overlapping
pair ``(i, j)`` gives the median log ratio ``r_ijk = median(log I_jk - log I_ik)`` of the cells both see,
per channel ``k``, over cells where neither photo is clipped or dark; the log gains then solve
``min sum_ij n_ij (L_ik - L_jk - r_ijk)^2`` with ``sum_i L_ik = 0`` (least squares on the overlap graph, each
pair weighted by its shared cells ``n_ij``). A median over the overlap is robust to what one photo alone
sees (a specular highlight moving with the camera), the exclusion of clipped pixels to a gain no pixel
obeys. The result sets ``log_gain`` (the mean over channels) and ``log_colour`` (the rest), biases 0.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from topograph.meso.functional.splat import GridSpec, splat_bilinear
from topograph.meso.models.camera import MesoModel
from topograph.meso.optimise.batching import BatchedLevel

log = logging.getLogger("topograph")

CLIPPED = 250.0 / 255.0
"""A channel at or above this is clipped (its gain is not the photo's)."""
DARK = 10.0 / 255.0
"""A channel below this is a ratio of noise."""
MIN_SHARED_CELLS = 50
"""Pairs sharing fewer usable cells are not linked."""
KEEP_WITHIN = 0.02
"""Photometric terms whose log gains are within this RMS of the fit are kept as they are (biases included): a
round continuing from a sound photometric state is not reset (measured on the 15-photo cut-cards phantom: a
clean sequence's gains sit 0.005 from the fit after the camera round, every camera effect's 0.095)."""


def pair_log_gains(
    log_values: np.ndarray, usable: np.ndarray, min_shared: int = MIN_SHARED_CELLS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Median log ratios of every overlapping pair.

    Args:
        log_values: (N, C, M) log intensities of every photo on the common cells.
        usable: (N, M) cells each photo sees unclipped and not dark.
        min_shared: fewest shared cells of a linked pair.

    Returns:
        ``(pairs (K, 2), ratios (K, C) = median(log_j - log_i), counts (K,))``.
    """
    n = log_values.shape[0]
    pairs, ratios, counts = [], [], []
    for i in range(n):
        for j in range(i + 1, n):
            both = usable[i] & usable[j]
            k = int(both.sum())
            if k < min_shared:
                continue
            pairs.append((i, j))
            ratios.append(np.median(log_values[j][:, both] - log_values[i][:, both], axis=1))
            counts.append(k)
    c = log_values.shape[1]
    if not pairs:
        return np.zeros((0, 2), int), np.zeros((0, c)), np.zeros(0)
    return np.array(pairs), np.array(ratios), np.array(counts, float)


def solve_log_gains(n_images: int, pairs: np.ndarray, ratios: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """(N, C) log gains ``L`` with ``L_i - L_j ~ r_ij`` (``r_ij = median(log I_j - log I_i)``: the gain that
    brings photo ``i`` to ``j``'s brightness is ``exp(r_ij)`` up to the common factor), weights ``sqrt(n_ij)``
    and the gauge ``sum_i L_i = 0``; photos in no pair get 0.

    ``min sum n_ij (L_i - L_j - r_ij)^2`` (normal equations of a graph Laplacian plus the gauge row)."""
    c = ratios.shape[1] if ratios.ndim == 2 else 1
    if len(pairs) == 0:
        return np.zeros((n_images, c))
    rows = len(pairs) + 1
    a = np.zeros((rows, n_images))
    w = np.sqrt(counts)
    a[np.arange(len(pairs)), pairs[:, 0]] = w
    a[np.arange(len(pairs)), pairs[:, 1]] = -w
    a[-1, :] = 1.0
    rhs = np.vstack((w[:, None] * ratios, np.zeros((1, c))))
    sol, *_ = np.linalg.lstsq(a, rhs, rcond=None)
    linked = np.zeros(n_images, bool)
    linked[pairs.ravel()] = True
    sol[~linked] = 0.0
    return sol


@torch.no_grad()
def fit_gains(
    model: MesoModel, level: BatchedLevel, grid: GridSpec, colour: bool = True, keep_within: float = KEEP_WITHIN
) -> float:
    """Set every photo's gains from its overlaps (module docstring), unless they already agree with them.

    Args:
        model: the deformation model (its ``pose`` gains and biases are overwritten, and its white balance
            when ``colour``).
        level: the round's images.
        grid: the round's reconstruction grid.
        colour: fit the white balance too (a round that trains the ``colour`` group); otherwise only the gain
            (the mean over the channels) and the white balance stays as it is.
        keep_within: leave every photometric term as it is when the current log gains are within this RMS of
            the fit (:data:`KEEP_WITHIN`); 0 = always set them.

    Returns:
        The RMS distance of the log gains to the fit before it (0 when the photos share no overlap).
    """
    n = level.n_images
    h, w = grid.shape
    cells = np.zeros((n, 3, h * w), np.float32)
    usable = np.zeros((n, h * w), bool)
    for i in range(n):
        idx = torch.tensor([i], device=level.pixels.device)
        raw = level.batch(idx).reshape(-1, 3)
        pts = model.object_points(level.uv, None, idx).reshape(-1, 2)
        ok = ((raw < CLIPPED) & (raw > DARK)).all(1).to(raw.dtype)
        acc = splat_bilinear(grid.to_grid(pts), torch.cat((raw, ok[:, None]), 1), grid.shape)
        wsum = acc[-1].reshape(-1)
        seen = wsum > 0.5
        # a cell is usable when (nearly) all the pixels landing in it are unclipped
        share = acc[3].reshape(-1) / wsum.clamp_min(1e-12)
        use = seen & (share > 0.99)
        mean = acc[:3].reshape(3, -1) / wsum.clamp_min(1e-12)
        cells[i] = np.log(np.maximum(mean.cpu().numpy(), 1e-6))
        usable[i] = use.cpu().numpy()
    pairs, ratios, counts = pair_log_gains(cells, usable)
    target = solve_log_gains(n, pairs, ratios, counts)
    pose = model.pose
    before = (pose.log_gain - pose.log_gain.mean())[:, None] + pose.colour()
    compare = target if colour else np.broadcast_to(target.mean(1, keepdims=True), target.shape)
    current = before.cpu().numpy() if colour else before.mean(1, keepdim=True).expand_as(before).cpu().numpy()
    distance = float(np.sqrt(np.mean((compare - current) ** 2))) if len(pairs) else 0.0
    if distance < keep_within:
        log.info("gains within %.3f RMS of the fit on %d overlapping pairs: kept", distance, len(pairs))
        return distance
    gain = torch.as_tensor(target.mean(1), dtype=pose.log_gain.dtype, device=pose.log_gain.device)
    white = torch.as_tensor(target - target.mean(1, keepdims=True), dtype=gain.dtype, device=gain.device)
    # the model multiplies photo i by exp(log_gain + colour) = exp(L_i): its brightness brought to the others'
    pose.log_gain.copy_(gain)
    if colour:
        pose.log_colour.copy_(white)
    pose.bias.zero_()
    log.info("gains fitted on %d overlapping pairs: log gains moved %.3f RMS", len(pairs), distance)
    return distance
