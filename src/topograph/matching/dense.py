"""Dense matcher: coarse-to-fine optical flow with a forward–backward consistency check.

The flow runs on view ``j`` resampled into view ``i``'s frame by a global affine pre-alignment ``A``
(estimated from downscaled SIFT matches), so the flow only has to recover the residual (relief) disparity:

    x_j = A · [x + r(x), 1]ᵀ,      flow(x) = x_j − x,

where ``r`` is the residual flow from ``I_i`` to ``I_j ∘ A``. A pixel is kept when the backward flow ``b``
brings it back: ``e(x) = ‖r(x) + b(x + r(x))‖ < fb_threshold_px``; its score is ``exp(−e² / σ²)``.

References:
    T. Kroeger, R. Timofte, D. Dai, L. Van Gool, "Fast Optical Flow using Dense Inverse Search", ECCV 2016.
    G. Farnebäck, "Two-Frame Motion Estimation Based on Polynomial Expansion", SCIA 2003.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from typing import Any, NamedTuple

import cv2
import numpy as np

from topograph.matching.base import check_image, config_from_options, matchers, to_uint8
from topograph.matching.config import DenseConfig
from topograph.matching.sift import SiftConfig, SiftMatcher
from topograph.types import Matches

log = logging.getLogger("topograph")

_DIS_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}


class DenseFlow(NamedTuple):
    """Dense flow from view i to view j on view i's pixel grid.

    ``flow`` (H, W, 2) float32 px with ``x_j = x_i + flow``; ``valid`` (H, W) bool (forward–backward
    consistent and inside view j); ``fb_error`` (H, W) float32 px (inf where the target leaves view j).
    """

    flow: np.ndarray
    valid: np.ndarray
    fb_error: np.ndarray


def _joint_limits(a: np.ndarray, b: np.ndarray, percent: float) -> tuple[float, float] | None:
    """Shared contrast limits: the ``percent`` and ``100 − percent`` percentiles of both images' grey values
    (every other row and column: the percentiles of a million-pixel image do not need every pixel)."""
    if percent <= 0:
        return None
    a, b = a[::2, ::2], b[::2, ::2]
    both = np.concatenate([a[np.isfinite(a)], b[np.isfinite(b)]])
    if both.size == 0:
        return None
    lo, hi = np.percentile(both, [percent, 100.0 - percent])
    return float(lo), float(hi)


def estimate_prealignment(image_i: np.ndarray, image_j: np.ndarray, cfg: DenseConfig) -> np.ndarray:
    """Global affine map ``A`` (2, 3) with ``x_j ≈ A [x_i, 1]ᵀ`` from downscaled SIFT matches and RANSAC.

    Falls back to the identity when fewer than 6 matches or inliers support an affine map.
    """
    sift = SiftMatcher(SiftConfig(n_features=cfg.prealign_features, max_image_side=cfg.prealign_max_side))
    m = sift.match(image_i, image_j, 0, 1)
    identity = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    if len(m) < 6:
        log.warning("dense pre-alignment: only %d SIFT matches; using the identity", len(m))
        return identity
    a, inliers = cv2.estimateAffine2D(
        m.xy_i.astype(np.float32),
        m.xy_j.astype(np.float32),
        method=cv2.RANSAC,
        ransacReprojThreshold=float(cfg.prealign_ransac_px),
        maxIters=4000,
        confidence=0.999,
        refineIters=20,
    )
    n_in = 0 if inliers is None else int(inliers.sum())
    if a is None or n_in < 6:
        log.warning("dense pre-alignment: no affine map found (%d inliers); using the identity", n_in)
        return identity
    log.debug("dense pre-alignment: %d of %d matches support A = %s", n_in, len(m), np.round(a, 4).tolist())
    return a.astype(np.float64)


_SOLVE_SLOTS: list[threading.BoundedSemaphore] = []
"""While :func:`dense_flows` runs flows side by side: the semaphore each solve holds (at most ``threads``
solves, and their solvers' memory, at a time over all those flows)."""


def _flow_field(src: np.ndarray, dst: np.ndarray, cfg: DenseConfig) -> np.ndarray:
    """Flow ``u`` (H, W, 2) float32 with ``src(x) ≈ dst(x + u(x))`` for two uint8 images of one size."""
    with _SOLVE_SLOTS[-1] if _SOLVE_SLOTS else nullcontext():
        if cfg.method == "farneback":
            return cv2.calcOpticalFlowFarneback(src, dst, None, 0.5, 6, 15, 5, 7, 1.5, cv2.OPTFLOW_FARNEBACK_GAUSSIAN)
        dis = cv2.DISOpticalFlow_create(_DIS_PRESETS[cfg.preset])
        dis.setFinestScale(int(cfg.finest_scale))
        dis.setPatchSize(int(cfg.patch_size))
        dis.setPatchStride(int(cfg.patch_stride))
        dis.setGradientDescentIterations(int(cfg.gradient_descent_iterations))
        dis.setVariationalRefinementIterations(int(cfg.variational_refinement_iterations))
        dis.setVariationalRefinementAlpha(float(cfg.variational_refinement_alpha))
        dis.setVariationalRefinementDelta(float(cfg.variational_refinement_delta))
        dis.setVariationalRefinementGamma(float(cfg.variational_refinement_gamma))
        dis.setUseMeanNormalization(True)
        dis.setUseSpatialPropagation(True)
        return dis.calc(src, dst, None)


def flow_threads(cfg: DenseConfig) -> int:
    """Threads of one flow: ``cfg.threads``, 0 = every core."""
    return int(cfg.threads) if cfg.threads > 0 else max(1, os.cpu_count() or 1)


@contextmanager
def opencv_threads(n: int) -> Iterator[None]:
    """OpenCV's own thread count held at ``n`` (process-wide; restored afterwards). Solves that run side by
    side in our threads get one OpenCV thread each instead of each spreading over every core."""
    before = cv2.getNumThreads()
    cv2.setNumThreads(int(n))
    try:
        yield
    finally:
        cv2.setNumThreads(before)


def _side_by_side(tasks: list[Callable[[], Any]], threads: int, together: bool = True) -> list[Any]:
    """Results of independent OpenCV ``tasks`` (in order): ``threads`` at a time in threads of ours, one
    OpenCV thread each (OpenCV releases the GIL), or — ``together`` False or one thread — in turn, each
    with ``threads`` OpenCV threads."""
    if not together or threads <= 1 or len(tasks) <= 1:
        with opencv_threads(max(1, threads)):
            return [task() for task in tasks]
    with opencv_threads(1), ThreadPoolExecutor(max_workers=min(threads, len(tasks))) as pool:
        return list(pool.map(lambda task: task(), tasks))


def tile_slices(size: int, tile: int, margin: int, pieces: int | None = None) -> list[tuple[slice, slice]]:
    """Split ``range(size)`` into ``pieces`` (default ``round(size / tile)``, ≥ 1) near-equal pieces:
    ``(outer, inner)`` slice pairs where ``outer`` extends the piece by ``margin`` on both sides (clipped)
    and ``inner`` is the piece relative to ``outer``."""
    n = max(1, pieces if pieces is not None else round(size / max(int(tile), 1)))
    edges = np.linspace(0, size, n + 1).round().astype(int)
    out = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        o_lo, o_hi = max(0, lo - margin), min(size, hi + margin)
        out.append((slice(o_lo, o_hi), slice(lo - o_lo, hi - o_lo)))
    return out


ONE_PIECE_STRIPS = 2
"""An image of one tile is solved in this many strips across its longer side, whatever the thread count:
two cores solve them side by side, and the flow does not depend on the ``threads`` setting."""


def tile_grid(h: int, w: int, tile_px: int) -> tuple[int, int]:
    """(row pieces, column pieces) of the residual pass: ``round(side / tile_px)`` each (≥ 1; one piece
    with ``tile_px`` 0), an image of one piece cut into :data:`ONE_PIECE_STRIPS` strips across its longer
    side."""
    if tile_px <= 0:
        return 1, 1
    rows, cols = max(1, round(h / tile_px)), max(1, round(w / tile_px))
    if rows * cols == 1:
        return (ONE_PIECE_STRIPS, 1) if h >= w else (1, ONE_PIECE_STRIPS)
    return rows, cols


def _flow_field_tiled(src: np.ndarray, dst: np.ndarray, cfg: DenseConfig) -> np.ndarray:
    """:func:`_flow_field` solved tile by tile (:func:`tile_grid`, ``cfg.tile_margin_px`` overlap), the
    tiles :func:`flow_threads` at a time up to ``cfg.parallel_max_pixels`` per image (the solvers then hold
    one image's memory at most), in turn with every thread above. Only for small flows (a residual pass): a
    tile sees its own window of ``dst``, so displacements beyond the margin are cut off."""
    h, w = src.shape
    threads = flow_threads(cfg)
    n_rows, n_cols = tile_grid(h, w, int(cfg.tile_px))
    if n_rows * n_cols == 1:
        with opencv_threads(threads):
            return _flow_field(src, dst, cfg)
    out = np.empty((h, w, 2), np.float32)
    margin = int(cfg.tile_margin_px)
    tiles = [
        (r, c) for r in tile_slices(h, cfg.tile_px, margin, n_rows) for c in tile_slices(w, cfg.tile_px, margin, n_cols)
    ]

    def solve(tile: tuple[tuple[slice, slice], tuple[slice, slice]]) -> Callable[[], None]:
        def run() -> None:
            (ro, ri), (co, ci) = tile
            flow = _flow_field(np.ascontiguousarray(src[ro, co]), np.ascontiguousarray(dst[ro, co]), cfg)
            out[ro, co][ri, ci] = flow[ri, ci]

        return run

    _side_by_side([solve(t) for t in tiles], threads, together=h * w <= cfg.parallel_max_pixels)
    return out


def _flow_pair(a: np.ndarray, b: np.ndarray, cfg: DenseConfig) -> tuple[np.ndarray, np.ndarray]:
    """Forward (a → b) and backward (b → a) flows. They are independent and OpenCV releases the GIL, so
    images up to ``cfg.parallel_max_pixels`` run them side by side (one OpenCV thread each); larger ones
    one after the other (every thread each), so that peak memory holds one DIS solver (~190 bytes per
    pixel) instead of two."""
    tasks = [lambda: _flow_field(a, b, cfg), lambda: _flow_field(b, a, cfg)]
    forward, backward = _side_by_side(tasks, flow_threads(cfg), together=a.size <= cfg.parallel_max_pixels)
    return forward, backward


def solves_side_by_side(shape: tuple[int, int], cfg: DenseConfig) -> bool:
    """Whether every solve of :func:`dense_flow` on images of ``shape`` (H, W) with ``cfg`` runs side by side
    with another (one OpenCV thread each), never alone with every thread: the first pass's forward and
    backward flows and the residual pass's tiles all within ``cfg.parallel_max_pixels``."""
    h, w = shape
    k = int(cfg.first_pass_downscale) if cfg.passes >= 2 else 1  # noqa: PLR2004 - two passes: a residual pass
    first_px = max(1, round(w / k)) * max(1, round(h / k))
    if first_px > cfg.parallel_max_pixels:
        return False
    if cfg.passes < 2:  # noqa: PLR2004
        return True
    one_piece = tile_grid(h, w, int(cfg.tile_px)) == (1, 1)
    return not one_piece and h * w <= cfg.parallel_max_pixels


FlowJob = tuple[np.ndarray, np.ndarray, DenseConfig, "np.ndarray | None"]
"""Arguments of one :func:`dense_flow` call: image i, image j, settings, pre-alignment."""


def dense_flows(jobs: Sequence[FlowJob], threads: int, flows_at_once: int = 0) -> Iterator[DenseFlow]:
    """:func:`dense_flow` of every job, yielded in the jobs' order.

    With ``threads`` > 1 and jobs whose solves all run side by side (:func:`solves_side_by_side`), the flows
    run in worker threads of ours, ``flows_at_once`` (0: ``threads``) at a time and each submitted only when
    an earlier one is taken (so no more than that many flows and their arrays wait or run), and every solve
    holds one of ``threads`` shared slots (one OpenCV thread each): the caller's thread works on one flow
    (e.g. fuses it) while the next ones solve, the cores stay busy while a flow warps, checks or composes
    (single-threaded numpy and OpenCV calls), and memory holds ``threads`` solvers at most. Each solve is
    the same as alone (the flow does not depend on the thread count), so the results are too. Otherwise the
    flows run in turn in the caller's thread, each with ``threads`` threads.
    """
    if threads <= 1 or len(jobs) <= 1 or not all(solves_side_by_side(a.shape, cfg) for a, _, cfg, _ in jobs):
        for a, b, cfg, pre in jobs:
            yield dense_flow(a, b, cfg, pre)
        return
    slots = threading.BoundedSemaphore(threads)
    _SOLVE_SLOTS.append(slots)
    at_once = max(1, int(flows_at_once) or threads)
    pool = ThreadPoolExecutor(max_workers=at_once)
    waiting: deque[Future[DenseFlow]] = deque()
    pending = iter(jobs)

    def submit_next() -> None:
        job = next(pending, None)
        if job is not None:
            a, b, cfg, pre = job
            waiting.append(pool.submit(dense_flow, a, b, replace(cfg, threads=threads), pre))

    try:
        with opencv_threads(1):
            for _ in range(at_once):
                submit_next()
            while waiting:
                result = waiting.popleft().result()
                submit_next()
                yield result
                del result  # the caller holds it as long as it needs it
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        _SOLVE_SLOTS.remove(slots)


def forward_backward_error(forward: np.ndarray, backward: np.ndarray) -> np.ndarray:
    """Forward–backward consistency error ``e(x) = ‖u(x) + b(x + u(x))‖``, px.

    Args:
        forward: (H, W, 2) flow from image a to image b.
        backward: (H, W, 2) flow from image b to image a.

    Returns:
        (H, W) float32; inf where ``x + u(x)`` falls outside the grid.
    """
    h, w = forward.shape[:2]
    map_x = forward[..., 0] + np.arange(w, dtype=np.float32)[None, :]
    map_y = forward[..., 1] + np.arange(h, dtype=np.float32)[:, None]
    back = cv2.remap(
        backward.astype(np.float32), map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=np.nan
    )
    back += forward
    err = cv2.magnitude(back[..., 0], back[..., 1])
    inside = (map_x >= 0) & (map_x <= w - 1) & (map_y >= 0) & (map_y <= h - 1) & np.isfinite(err)
    err[~inside] = np.inf
    return err


def remove_small_regions(mask: np.ndarray, min_pixels: int) -> np.ndarray:
    """``mask`` without its 4-connected True regions of fewer than ``min_pixels`` pixels.

    Args:
        mask: (H, W) bool.
        min_pixels: Smallest region kept; ≤ 1 keeps everything.

    Returns:
        (H, W) bool.
    """
    if min_pixels <= 1 or not mask.any():
        return mask
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=4)
    keep = stats[:, cv2.CC_STAT_AREA] >= min_pixels
    keep[0] = False  # label 0 is the background (mask False)
    return keep[labels]


def dense_flow(
    image_i: np.ndarray,
    image_j: np.ndarray,
    cfg: DenseConfig | None = None,
    prealignment: np.ndarray | None = None,
) -> DenseFlow:
    """Dense correspondences from view i to view j with forward–backward validation.

    Args:
        image_i: float32 (H, W) in [0, 1].
        image_j: float32 (H', W') in [0, 1].
        cfg: Flow settings (defaults: :class:`DenseConfig`).
        prealignment: Optional (2, 3) affine map ``x_j ≈ A [x_i, 1]ᵀ`` known by the caller (e.g. from the
            sparse matches); when given it replaces the SIFT pre-alignment.

    Returns:
        :class:`DenseFlow` on view i's grid: ``x_j = x_i + flow``, ``valid`` where ``e < fb_threshold_px``,
        the target lies inside view j (by ``border_px``) and the consistent region holds at least
        ``min_region_px`` pixels; ``fb_error`` e in px (measured in view i's frame after the affine
        pre-alignment).
    """
    cfg = cfg or DenseConfig()
    img_i = check_image(image_i, "image_i")
    img_j = check_image(image_j, "image_j")
    h, w = img_i.shape
    hj, wj = img_j.shape
    limits = _joint_limits(img_i, img_j, cfg.stretch_percent)
    u8_i = to_uint8(img_i, clahe=cfg.clahe, limits=limits)
    u8_j = to_uint8(img_j, clahe=cfg.clahe, limits=limits)
    if prealignment is not None:
        a = np.asarray(prealignment, dtype=np.float64)
        if a.shape != (2, 3) or not np.all(np.isfinite(a)):
            raise ValueError(f"prealignment must be a finite (2, 3) affine matrix, got shape {a.shape}")
    elif cfg.prealign:
        a = estimate_prealignment(img_i, img_j, cfg)
    else:
        a = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    warped_j = cv2.warpAffine(
        u8_j, a, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE
    )
    first = cfg
    if cfg.passes >= 2 and cfg.first_pass_variational_iterations is not None:
        first = replace(first, variational_refinement_iterations=cfg.first_pass_variational_iterations)
    if cfg.passes >= 2 and cfg.first_pass_patch_stride is not None:
        first = replace(first, patch_stride=cfg.first_pass_patch_stride)
    if cfg.passes >= 2 and cfg.first_pass_gradient_descent_iterations is not None:
        first = replace(first, gradient_descent_iterations=cfg.first_pass_gradient_descent_iterations)
    k = int(cfg.first_pass_downscale) if cfg.passes >= 2 else 1
    if k > 1:
        forward, fb_error = _coarse_flow(u8_i, warped_j, first, k)
    elif cfg.passes >= 2 and cfg.check_downscale > 1:
        forward, backward = _flow_pair_coarse_backward(u8_i, warped_j, first, int(cfg.check_downscale))
        fb_error = forward_backward_error(forward, backward)
        del backward
    else:
        forward, backward = _flow_pair(u8_i, warped_j, first)
        fb_error = forward_backward_error(forward, backward)
        del backward
    del u8_i, u8_j, warped_j
    # x_j = A [x + r, 1]ᵀ, flow = x_j − x; float32 (1e-4 px at 2000 px) and one (H, W, 2) array at a time
    gx = np.arange(w, dtype=np.float32)[None, :]
    gy = np.arange(h, dtype=np.float32)[:, None]
    forward[..., 0] += gx
    forward[..., 1] += gy  # now the warped-frame position y = x + r
    a32 = a.astype(np.float32)
    flow = cv2.transform(forward, a32)  # A [y, 1]ᵀ: the position in view j
    b = float(cfg.border_px)
    xj, yj = flow[..., 0], flow[..., 1]
    inside = (xj >= b - 0.5) & (xj <= wj - 0.5 - b) & (yj >= b - 0.5) & (yj <= hj - 0.5 - b)
    flow[..., 0] -= gx
    flow[..., 1] -= gy
    del forward
    fb_error[~inside] = np.inf
    valid = remove_small_regions(fb_error < cfg.fb_threshold_px, cfg.min_region_px)
    result = DenseFlow(flow, valid, fb_error)
    for _ in range(max(0, cfg.passes - 1)):
        result = refine_flow(img_i, img_j, result, cfg, limits)
    log.debug("dense flow: %.1f%% of %d×%d pixels forward–backward consistent", 100 * result.valid.mean(), w, h)
    return result


def _coarse_flow(a: np.ndarray, b: np.ndarray, cfg: DenseConfig, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Forward flow a → b and its forward–backward error, both solved on the images downscaled by ``k``
    (area averaging) and brought back to full resolution: the flow bilinearly (``u = k u_k`` at
    ``x = k (x_k + ½) − ½``, which is how ``cv2.resize`` samples), the error per coarse pixel, in full-
    resolution px."""
    h, w = a.shape
    size = (max(1, round(w / k)), max(1, round(h / k)))
    small_a = cv2.resize(a, size, interpolation=cv2.INTER_AREA)
    small_b = cv2.resize(b, size, interpolation=cv2.INTER_AREA)
    forward, backward = _flow_pair(small_a, small_b, cfg)
    err = forward_backward_error(forward, backward)
    del backward
    sx, sy = w / size[0], h / size[1]
    flow = cv2.resize(forward, (w, h), interpolation=cv2.INTER_LINEAR)
    flow[..., 0] *= np.float32(sx)
    flow[..., 1] *= np.float32(sy)
    err = cv2.resize(err * np.float32(max(sx, sy)), (w, h), interpolation=cv2.INTER_NEAREST)
    return flow, err


def upsample_flow(flow: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A flow solved on a downscaled grid brought to the (H, W) grid ``shape``: bilinear resampling
    (``cv2.resize`` samples ``x = s (x_k + ½) − ½``) and the vectors scaled by the size ratios."""
    h, w = shape
    sx, sy = w / flow.shape[1], h / flow.shape[0]
    up = cv2.resize(flow, (w, h), interpolation=cv2.INTER_LINEAR)
    up[..., 0] *= np.float32(sx)
    up[..., 1] *= np.float32(sy)
    return up


def _flow_pair_coarse_backward(a: np.ndarray, b: np.ndarray, cfg: DenseConfig, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Forward flow a → b at full resolution and the backward flow b → a solved on both images downscaled
    by ``k`` and upsampled (it only checks the forward flow), side by side (:func:`_side_by_side`)."""
    h, w = a.shape
    size = (max(1, round(w / k)), max(1, round(h / k)))
    small_a = cv2.resize(a, size, interpolation=cv2.INTER_AREA)
    small_b = cv2.resize(b, size, interpolation=cv2.INTER_AREA)
    forward, backward = _side_by_side(
        [lambda: _flow_field(a, b, cfg), lambda: _flow_field(small_b, small_a, cfg)], flow_threads(cfg)
    )
    return forward, upsample_flow(backward, (h, w))


def refine_flow(
    image_i: np.ndarray, image_j: np.ndarray, current: DenseFlow, cfg: DenseConfig, limits: tuple[float, float] | None
) -> DenseFlow:
    """One more flow pass: warp view j onto view i with the current flow ``u``, solve the residual flow
    ``r`` between view i and the warped view, and compose ``x_j = x + r(x) + u(x + r(x))``.

    The residual is small and nearly uniform, so the flow's smoothness prior no longer pulls the
    disparity of steep relief toward its surroundings. Validity is the current validity and the
    forward–backward consistency of the residual pass.
    """
    h, w = image_i.shape
    # pixel coordinates broadcast (no (H, W) grids) and results written in place: a flow in flight holds
    # fewer image-sized arrays beside the solvers (flows run side by side, see dense_flows)
    gx = np.arange(w, dtype=np.float32)[None, :]
    gy = np.arange(h, dtype=np.float32)[:, None]
    u = current.flow
    warped = cv2.remap(
        np.asarray(image_j, dtype=np.float32),
        gx + u[..., 0],
        gy + u[..., 1],
        cv2.INTER_CUBIC,
        borderMode=cv2.BORDER_REPLICATE,
    )
    u8_i = to_uint8(image_i, clahe=cfg.clahe, limits=limits)
    u8_w = to_uint8(np.clip(warped, 0.0, 1.0, out=warped), clahe=cfg.clahe, limits=limits)
    del warped
    if not cfg.refine_backward:
        r = _flow_field_tiled(u8_i, u8_w, cfg)
        del u8_i, u8_w
        u_at = cv2.remap(u, gx + r[..., 0], gy + r[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        u_at += r  # x_j = x + r(x) + u(x + r(x)), float32 as r and u
        return DenseFlow(u_at, current.valid, current.fb_error)
    r, rb = _flow_pair(u8_i, u8_w, cfg)
    fb = forward_backward_error(r, rb)
    del rb
    u_at = cv2.remap(u, gx + r[..., 0], gy + r[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    u_at += r
    fb_error = np.where(np.isfinite(current.fb_error), np.maximum(current.fb_error, fb), np.inf).astype(np.float32)
    valid = current.valid & remove_small_regions(fb < cfg.fb_threshold_px, cfg.min_region_px)
    return DenseFlow(u_at, valid, fb_error)


def flow_to_matches(result: DenseFlow, i: int, j: int, stride: int = 1, sigma_px: float = 0.5) -> Matches:
    """Sample a validated dense flow on a regular grid into :class:`~topograph.types.Matches`.

    Args:
        result: Output of :func:`dense_flow`.
        i: View index of the flow's source grid.
        j: View index of the target.
        stride: Keep every stride-th pixel along x and y.
        sigma_px: σ of the score ``exp(−e²/σ²)``, px.

    Returns:
        Matches with ``xy_i`` the valid grid pixels (row-major order) and ``xy_j = xy_i + flow``.
    """
    s = max(int(stride), 1)
    valid = result.valid[::s, ::s]
    ys, xs = np.nonzero(valid)
    xs = xs * s
    ys = ys * s
    xy_i = np.stack([xs, ys], axis=1).astype(np.float64)
    xy_j = xy_i + result.flow[ys, xs].astype(np.float64)
    err = result.fb_error[ys, xs].astype(np.float64)
    scores = np.exp(-(err**2) / max(sigma_px, 1e-12) ** 2)
    return Matches(i, j, xy_i, xy_j, scores)


class DenseMatcher:
    """Dense optical-flow matcher (see :class:`DenseConfig`)."""

    name = "dense"

    def __init__(self, config: DenseConfig | None = None) -> None:
        self.config = config or DenseConfig()

    def flow(self, image_i: np.ndarray, image_j: np.ndarray) -> DenseFlow:
        """The raw validated flow field of a pair (see :func:`dense_flow`)."""
        return dense_flow(image_i, image_j, self.config)

    def match(self, image_i: np.ndarray, image_j: np.ndarray, i: int, j: int) -> Matches:
        """Every ``stride``-th forward–backward consistent pixel of view i with its position in view j."""
        return flow_to_matches(self.flow(image_i, image_j), i, j, self.config.stride, self.config.fb_sigma_px)


@matchers.register("dense")
def create_dense(**options: Any) -> DenseMatcher:
    """Factory of the ``dense`` matcher; ``options`` are :class:`DenseConfig` fields."""
    return DenseMatcher(config_from_options(DenseConfig, options, "dense"))
