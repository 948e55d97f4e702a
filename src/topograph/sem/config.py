"""Configuration of the SEM engine: one dataclass per stage, nested in :class:`SemConfig`.

Every field maps onto a CLI option of ``topograph sem`` or a key of a ``--config`` YAML file
(``topograph config show sem`` prints the defaults).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal

from topograph.matching.config import DenseConfig as MatcherDenseConfig
from topograph.matching.config import RomaConfig, SiftConfig


@dataclass(frozen=True)
class LoadConfig:
    auto_crop: bool = True
    """Detect and remove the instrument data bar at the bottom of each image."""
    crop_rows: int | None = None
    """Remove exactly this many rows at the bottom (overrides detection)."""
    histogram_match: bool = True
    """Match every image's grey-level histogram to the first one (charging / brightness drift)."""


def _sem_sift() -> SiftConfig:
    return SiftConfig(ratio=0.8, max_image_side=800)


@dataclass(frozen=True)
class MatchingConfig:
    """The sparse matcher and the outlier rejection after it. Each built-in matcher has its own section
    (``sift``, ``dense``, ``roma``: the fields of its config class); the section named by ``matcher`` is
    the one used. A plugin matcher takes its settings from ``options``."""

    matcher: str = "sift"
    """Sparse matcher for the cameras: sift, dense, roma or a plugin name."""
    sift: SiftConfig = field(default_factory=_sem_sift)
    """Settings of the sift matcher. ``max_image_side``: SIFT detection runs on a copy whose longer side is
    at most this, px (0: full resolution); the track positions are then refined at full resolution, and
    RANSAC's threshold grows with the downscale."""
    dense: MatcherDenseConfig = field(default_factory=MatcherDenseConfig)
    """Settings of the dense (optical flow) matcher."""
    roma: RomaConfig = field(default_factory=RomaConfig)
    """Settings of the roma matcher (``weights`` and ``dinov2_weights``: local paths; nothing is downloaded)."""
    options: dict[str, str | int | float | bool] = field(default_factory=dict)
    """Settings of a plugin matcher (the fields of its configuration)."""
    ransac_threshold_px: float = 1.0
    """Inlier threshold of RANSAC on the affine epipolar constraint, pixels."""
    min_inliers: int = 20
    """Fewest inlier matches for a pair to be used."""
    pair_window: int = 2
    """Match each view with its next ``pair_window`` views in tilt order (file order without tilt metadata)
    and the first with the last (the widest baseline): 2n − 2 pairs instead of all n(n − 1)/2, so the cost
    per added view is constant; 0 matches every pair."""
    refine_tracks: bool = True
    """Refine track positions to sub-pixel accuracy by Lucas–Kanade patch alignment."""
    track_refinement: Literal["auto", "lk", "affine"] = "auto"
    """auto: affine when a view has no tilt metadata (the cameras, tilts included, then come from the tracks,
    and LK positions leave the tilts ± 0.15° noisy: issue 16 asks 0.1°), lk otherwise; lk: translation-only
    pyramidal LK (fast); affine: affine warp + gain/bias on float images with adaptive
    windows — ~2.5x more precise positions (a sparse cloud of ~0.16 % of the grain size instead of ~0.5 %
    on rendered grains), ~5x slower, and its slight bias on grain flanks moves factorization tilts by
    ~0.05° (the dense cloud does not gain)."""
    affine_max_tracks: int = 0
    """The affine refinement refines at most this many tracks, spread evenly over the image (the most-seen
    first: :func:`topograph.geometry.tracks.spread_subset`), and the cameras, bundle adjustment and sparse
    cloud use those only; 0 refines every track."""
    seed: int = 0

    def matcher_options(self) -> dict[str, Any]:
        """Keyword options of the configured matcher: its own section, or ``options`` for a plugin."""
        section = getattr(self, self.matcher, None) if self.matcher in _MATCHER_SECTIONS else None
        if section is None:
            return dict(self.options)
        return {f.name: getattr(section, f.name) for f in fields(section)}


_MATCHER_SECTIONS = ("sift", "dense", "roma")
"""Fields of :class:`MatchingConfig` that are the settings of the built-in matcher of that name."""


@dataclass(frozen=True)
class CameraConfig:
    source: Literal["auto", "metadata", "images", "factorization"] = "auto"
    """Where the camera geometry comes from. The tilt axis and relative tilts are always measured from the
    images and compared with the metadata (a contradiction is a warning naming the field). auto: the image
    tilt axis with the metadata tilts when the two agree, the cameras of the images (factorization, ≥ 3 views)
    when the tilts contradict the images or are missing; metadata: the tags' tilts (and axis, when given)
    whatever the images say; images (alias factorization): the factorization alone."""
    model: Literal["scaled_orthographic", "orthographic"] = "scaled_orthographic"
    """Factorization model: Poelman–Kanade scaled orthographic or Tomasi–Kanade orthographic."""
    relief: Literal["auto", "metadata", "protrude", "recess"] = "auto"
    """Which of the two depth-reversed branches: auto = the metadata tilt sense (when known) and a specimen
    that protrudes from its substrate; on disagreement the protrusion wins with a warning. metadata /
    protrude / recess force one witness (recess: specimens that are holes)."""
    flip_relief: bool = False
    """Invert the chosen branch of the depth-reversal ambiguity (relief and tilt signs together)."""


@dataclass(frozen=True)
class BundleConfig:
    enabled: bool = True
    loss: Literal["linear", "soft_l1", "huber", "cauchy"] = "soft_l1"
    f_scale_px: float = 1.0
    """Residual scale of the robust loss, pixels."""
    refine_rotations: bool = True
    """Refine the rotations of factorization cameras."""
    trust_metadata_rotations: bool = True
    """Keep rotations from stage metadata fixed: with a few small tilts the data constrain the tilt angle
    only weakly (it trades against depth), so a calibrated stage reading is the better estimate."""
    max_nfev: int = 100
    max_rms_px: float = 1.0
    """Reprojection RMS above which, or a rise during the adjustment of more than 10 % + 0.05 px (the robust
    cost may end a correct model 1–2 % above its start in plain RMS), the camera model is reported as failed:
    a warning, ``"status": "failed"`` in summary.json and exit status 4 of the CLI (a quality failure)."""


@dataclass(frozen=True)
class DenseConfig:
    enabled: bool = True
    """Run the dense stage (dense cloud, height map, mesh, grain metrics)."""
    stride: int = 1
    """Keep every stride-th pixel of the reference grid."""
    fb_threshold_px: float = 0.75
    """Forward–backward consistency threshold of the dense flow, pixels (0.75 keeps ~3 % more quartz
    points than 0.5 at unchanged accuracy on rendered grains)."""
    epipolar_threshold_px: float = 1.0
    """Reject dense correspondences farther than this from their epipolar line, pixels."""
    reference_view: str = "median"
    """View whose pixel grid carries the dense cloud and the height map: median, first, last or an index."""
    chain_pairs: bool = True
    """Add independent observations through pairs without the reference view (x_b = x_a + u_ab(x_a))."""
    chain_pairs_max_views: int = 3
    """... only for series of at most this many views (0: any length). With 3 views the chained flow lowers
    the RMS error on a rendered 1-MP grain from 0.188 to 0.161 % of the diameter; with 5 views the direct
    flows alone are as accurate (0.129 vs 0.132 %) for a fifth less CPU time (docs/benchmarks.md)."""
    chain_as_displacement: bool = False
    """Enter a chained match as the displacement ``x_b − x_a = u_ab`` it measures
    (:class:`topograph.geometry.dense_triangulation.RelativeObservation`) instead of an absolute position in
    view b: its error is then independent of the direct match in view a (generalised least squares: 4 %
    less depth noise for equal flow noise, no CPU cost). Off: on rendered 1-MP grains it moved the RMS by
    −2 % (low contrast, 0.289 → 0.283 % of D), 0 (0/5/10°, 0.183) and +2 % (10 % grain, 0.226 → 0.230) —
    the chained 10° flow is noisier than the direct 5° flows, so equal weights are not its optimum."""
    flow_passes: int = 2
    """Dense-flow passes (the second solves the residual flow after warping; removes smoothing bias)."""
    flow_smoothness: float = 100.0
    """Smoothness weight of the flow's variational refinement (OpenCV DIS alpha). 100 instead of 50 and
    patch stride 2 instead of 3 lower the median error on rendered grains by ~10 % (0/5/10°, 600 px:
    0.157 → 0.139 % and 0.226 → 0.197 % of the diameter) for ~2.3 s more flow on quartz (docs/benchmarks.md)."""
    flow_patch_stride: int = 2
    """Spacing of the flow's DIS patches, px (2: each pixel's flow averages more overlapping patches)."""
    flow_first_pass_downscale: int = 0
    """The first flow pass (forward, backward, consistency check) runs on images downscaled by this whole
    factor and the second pass corrects it at full resolution. 1: full resolution (the most accurate: on
    600-px rendered grains a factor 2 raises the RMS error from 0.22 to 0.29 % of the diameter); 2: a
    quarter of the first pass's time and memory; 0 (automatic): 1 up to 2 megapixels, 2 above, where the
    grain spans enough pixels for the flow's error to stay small against it."""
    flow_check_downscale: int = 1
    """With a full-resolution first flow pass: its backward flow, used only for the forward–backward
    check, runs on images downscaled by this factor. 1: full resolution; 2: ~1.2 CPU-s less per flow at
    1.44 MP, but the RMS error on a rendered 1-MP grain rises from 0.161 to 0.166 % of the diameter."""
    flow_first_pass_patch_stride: int = 2
    """DIS patch stride of the first flow pass, px (the second pass uses ``flow_patch_stride``)."""
    flow_first_pass_gradient_iterations: int = 12
    """DIS patch gradient-descent iterations of the first flow pass (the residual pass uses 12)."""
    flow_tile_px: int = 832
    """The second (residual) flow pass runs in tiles of about this side, ``threads`` at a time (one OpenCV
    thread each): memory holds those tiles' flow solvers (~190 B per pixel), not a whole image's (0: one
    piece). Sides up to 1.5 times this are one tile; an image of one tile (quartz's 1200²) is solved in two
    strips, so that two cores share it."""
    depth_smoothing_px: float = 0.0
    """σ (reference pixels) of a robust local-plane fit of the fused depth along the reference rays
    (:func:`topograph.geometry.local_regression.local_linear_smooth`); 0: off. For noisy, low-contrast
    series of smooth specimens: it averages the flow's noise (1-MP low-contrast grain: RMS 0.289 → 0.255 %
    of D at 3, 0.243 at 5) but rounds creases and fine relief (L-block 0.200 → 0.204 at 3); ~1–2 CPU-s per MP."""
    depth_smoothing_robust_passes: int = 1
    """Reweighted (Cauchy) passes of that fit after the first."""
    min_views: int = 2
    """A fused point needs at least this many views."""
    outlier_std_ratio: float = 3.0
    """Statistical outlier removal: drop points farther than this many robust standard deviations from
    the median depth of their 5×5 grid neighbourhood."""
    mask: str | None = None
    """User mask image of the grain in the reference view (white = grain); default: automatic."""
    closure: Literal["base", "mirrored"] = "base"
    """How the unseen underside is closed for volume metrics."""


@dataclass(frozen=True)
class SemConfig:
    load: LoadConfig = field(default_factory=LoadConfig)
    matching: MatchingConfig = field(default_factory=MatchingConfig)
    cameras: CameraConfig = field(default_factory=CameraConfig)
    bundle: BundleConfig = field(default_factory=BundleConfig)
    dense: DenseConfig = field(default_factory=DenseConfig)
    threads: int = 0
    """CPU threads of the run (0 = every core): independent flow solves, tiles and patch alignments run
    side by side, one library thread each; BLAS stays at one thread. 1: all in turn on one core (a batch's
    default: its parallelism comes from the workers). The results do not depend on it."""
