"""Settings of the built-in matchers (``sift``, ``dense``, ``roma``): plain frozen dataclasses without
OpenCV, so that configurations (and the command line's option tables built from them) load without the
matchers themselves."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class SiftConfig:
    """Settings of the ``sift`` matcher."""

    n_features: int = 0
    """Keep the n strongest keypoints per image; 0 keeps all."""
    contrast_threshold: float = 0.02
    """OpenCV SIFT contrast threshold (lower → more keypoints; OpenCV's default is 0.04)."""
    edge_threshold: float = 10.0
    """OpenCV SIFT edge-response threshold."""
    n_octave_layers: int = 3
    sigma: float = 1.6
    """Gaussian blur of the base octave, px."""
    root_sift: bool = True
    """Use RootSIFT descriptors (L1-normalise, square root): Euclidean distance ≙ Hellinger kernel."""
    ratio: float = 0.8
    """Lowe ratio test: keep a match when d1 < ratio · d2 (values ≥ 1 disable the test)."""
    mutual: bool = True
    """Keep only mutual nearest neighbours (i's best in j has i as its best in i)."""
    stretch_percent: float = 0.5
    """Percentile contrast stretch before detection (see :func:`topograph.matching.base.to_uint8`)."""
    clahe: bool = True
    """Contrast-limited adaptive histogram equalisation before detection."""
    clahe_clip: float = 2.0
    clahe_tile: int = 8
    max_image_side: int = 0
    """Detect on a copy downscaled so its longer side is at most this (0: full resolution)."""
    chunk_size: int = 256
    """Descriptor rows per block of the nearest-neighbour search (bounds memory: chunk × N₂ floats; 256
    is 1.4× faster than 1024 on the 12,000 × 13,000 quartz descriptors)."""


@dataclass(frozen=True)
class DenseConfig:
    """Settings of the ``dense`` matcher."""

    method: Literal["dis", "farneback"] = "dis"
    """Flow algorithm: OpenCV DIS (Dense Inverse Search) or Farnebäck polynomial expansion."""
    preset: Literal["ultrafast", "fast", "medium"] = "medium"
    """DIS preset the explicit DIS settings below start from."""
    finest_scale: int = 0
    """DIS: finest pyramid level solved (0 = full resolution, 1 = half ...)."""
    patch_size: int = 8
    """DIS patch side, px."""
    patch_stride: int = 3
    """DIS patch stride, px (smaller → denser, slower)."""
    gradient_descent_iterations: int = 12
    """DIS inverse-search iterations per patch."""
    variational_refinement_iterations: int = 3
    """DIS variational refinement iterations per level (0 disables it)."""
    variational_refinement_alpha: float = 20.0
    """DIS smoothness weight of the variational refinement."""
    variational_refinement_delta: float = 5.0
    """DIS weight of the variational refinement's brightness-constancy term (OpenCV's default)."""
    variational_refinement_gamma: float = 10.0
    """DIS weight of the variational refinement's gradient-constancy term (OpenCV's default)."""
    fb_threshold_px: float = 0.5
    """Keep pixels whose forward–backward error is below this, px."""
    fb_sigma_px: float = 0.5
    """σ of the score ``exp(−e²/σ²)``, px."""
    stride: int = 1
    """Sample every stride-th pixel of view i's grid."""
    prealign: bool = True
    """Pre-align view j to view i by an affine map from downscaled SIFT matches (handles large shifts)."""
    prealign_max_side: int = 400
    """Longer image side used for the pre-alignment SIFT, px."""
    prealign_features: int = 4000
    """Strongest SIFT keypoints per image used for the pre-alignment."""
    prealign_ransac_px: float = 20.0
    """RANSAC threshold of the affine pre-alignment, px (generous: relief parallax is not affine, the map
    only has to remove the bulk shift, rotation and scale)."""
    stretch_percent: float = 0.5
    """Percentile contrast stretch (one mapping shared by both images)."""
    clahe: bool = False
    """CLAHE on both images before the flow."""
    min_region_px: int = 100
    """Drop consistent regions (4-connected components of the valid mask) smaller than this many pixels:
    isolated islands of accidental forward–backward agreement inside occluded or textureless areas."""
    border_px: float = 1.0
    """Reject correspondences whose target lies closer than this to the border of view j, px."""
    passes: int = 1
    """Flow passes: each further pass warps view j by the current flow and solves for the residual flow,
    which removes most of the smoothness bias on steep relief (see :func:`topograph.matching.dense.refine_flow`)."""
    first_pass_variational_iterations: int | None = None
    """DIS variational refinement iterations of the first pass when ``passes`` ≥ 2 (None: as the others).
    The later passes solve the small residual flow and correct it, so fewer suffice here."""
    parallel_max_pixels: int = 2_000_000
    """Compute the forward and backward flows in parallel threads up to this image size, px (memory: see
    :func:`topograph.matching.dense._flow_pair`)."""
    refine_backward: bool = True
    """Check every further pass forward–backward too (one more flow per pass); False keeps the first
    pass's check and validity."""
    first_pass_patch_stride: int | None = None
    """DIS patch stride of the first pass when ``passes`` ≥ 2 (None: ``patch_stride``); the later passes
    correct the first, so a sparser first pass costs little accuracy."""
    first_pass_gradient_descent_iterations: int | None = None
    """DIS patch gradient-descent iterations of the first pass when ``passes`` ≥ 2 (None: as the others)."""
    first_pass_downscale: int = 1
    """With ``passes`` ≥ 2: solve the first pass (forward, backward and their check) on both images
    downscaled by this whole factor (area averaging) and upsample its flow; the later passes at full
    resolution correct it. 2 costs a quarter of the first pass's time and memory."""
    check_downscale: int = 1
    """With a full-resolution first pass (``first_pass_downscale`` 1): solve its backward flow, which only
    serves the forward–backward check, on images downscaled by this whole factor (area averaging) and
    upsample it; the forward flow stays at full resolution. 2 costs a quarter of the backward solve."""
    tile_px: int = 0
    """Solve the residual flow of the later passes in square tiles of about this side, px (0: the whole
    image in one piece; an image of one tile is split in two strips, see :func:`tile_grid`). The
    residual is small, so tiles with a ``tile_margin_px`` margin give the whole-image flow while memory
    holds ``threads`` tiles' solvers, whatever the image size."""
    tile_margin_px: int = 32
    """Overlap around each tile, px (discarded after the solve)."""
    threads: int = 0
    """CPU threads of one flow (0 = all cores). Independent solves run side by side, one OpenCV thread
    each: the forward and backward flows (images up to ``parallel_max_pixels``) and the tiles of the later
    passes; a solve that runs alone gets every thread. 1: everything in turn on one thread. The flow is
    the same whatever the count."""


@dataclass(frozen=True)
class RomaConfig:
    """Settings of the ``roma`` matcher."""

    weights: str | None = None
    """Local path of the RoMa weights (e.g. roma_outdoor.pth); required."""
    dinov2_weights: str | None = None
    """Local path of the DINOv2 ViT-L/14 weights (dinov2_vitl14_pretrain.pth); required."""
    device: str = "auto"
    """Torch device: "auto" (CUDA when available, else CPU), "cpu", "cuda", "cuda:1" ..."""
    coarse_res: int = 560
    """Coarse matching resolution, px (multiple of 14)."""
    upsample_res: int = 864
    """Resolution of the upsampled refinement, px."""
    mode: Literal["sample", "dense"] = "sample"
    """"sample": ``num_samples`` certainty-balanced samples; "dense": every warp pixel above ``min_certainty``."""
    num_samples: int = 10000
    """Number of correspondences drawn in "sample" mode."""
    min_certainty: float = 0.05
    """Lowest certainty kept in "dense" mode."""
    stride: int = 1
    """Keep every stride-th warp pixel in "dense" mode."""
    seed: int = 0
    """Seed of the sampling (the global torch RNG state is restored afterwards)."""
