"""Configuration of the mesoscopic engine: nested dataclasses that round-trip to plain YAML.

The coarse-to-fine schedule is data (:class:`LevelConfig` rows), not code. Parameter groups are named
(:data:`PARAMETER_GROUPS`); a level lists the groups it trains, everything else is frozen in that level.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal, TypeVar

from topograph.errors import TopographError

PARAMETER_GROUPS: tuple[str, ...] = (
    "position",
    "scale",
    "tilt",
    "angle",
    "rolling",
    "shutter",
    "gain",
    "colour",
    "bias",
    "focal",
    "distortion",
    "centre",
    "height",
)
"""Names of the trainable parameter groups (see :class:`LearningRates` for their units)."""

_CAMERA = ("position", "scale", "tilt", "angle", "shutter", "gain", "colour", "bias", "focal", "distortion", "centre")
_POSE = ("position", "scale", "tilt", "angle", "shutter", "gain", "colour", "bias")
_PHOTOMETRIC = ("gain", "colour", "bias")
# "rolling" (the rolling-shutter skew) is not trained by default: refined in the flow step it traded against the
# lens and tilts on a clean sequence (registration median 0.6 -> 2.1 px), trained in the rounds alone it made
# the clean fast-preset run worse (0.40 -> 0.77 GSD); docs/benchmarks.md, issue 18. Add it to a round's `train`
# for hand-held sweeps. "shutter" (one skew for the whole sweep, times each photo's motion) is trained: one number
# cannot trade against the lens (docs/benchmarks.md, issue 18 session 11).


@dataclass(frozen=True)
class LevelConfig:
    """One coarse-to-fine round."""

    name: str
    downsample: int
    """Images (and the reconstruction grid) are downsampled by this factor in this round."""
    iterations: int
    train: tuple[str, ...]
    """Parameter groups optimised in this round (names from ``PARAMETER_GROUPS``)."""
    lr_scale: float = 1.0
    """Multiplies every learning rate in this round."""
    lr_final: float = 0.05
    """Learning rates decay exponentially to this fraction of their start value over the round."""
    warmup_iterations: int = 0
    """Scale the first steps of the round by ``(k + 1) / warmup_iterations`` (linear warm-up; 0 = none).
    A round's Adam state starts empty, so its first steps move every trained weight by about its learning
    rate; a round that continues training a CNN needs a warm-up not to kick the heights."""
    grid_cell: float = 1.0
    """Reconstruction grid spacing as a fraction of the round's pixel spacing. 1 gives a smooth reference
    with a wide capture range (early rounds); 0.5 a sharp one, needed for unbiased heights."""
    robust_scale: float = 0.0
    """Cauchy scale of the per-pixel RGB residual in this round (0 = plain squared error). A robust
    loss limits the influence of pixels that no camera model can fit (moving objects, specularities)."""
    min_size: int = 0
    """The round's downsampling is reduced so that its images keep at least this long side (pixels);
    0 = the global ``min_level_size``. Height rounds need enough pixels per unit of parallax."""
    target_size: int = 0
    """Working long side (pixels) of the round's images: the downsampling factor is chosen from the input
    size as ``round(long side / target_size)`` (then limited by ``min_size``), so 1 MP and 12 MP photos run
    the same amount of work per round; 0 = use ``downsample`` as given."""
    plateau_iterations: int = 0
    """End the round early when its lowest loss of the last this many iterations is not below
    ``1 - plateau_tolerance`` times its lowest loss before them (a converged round; the learning-rate decay
    keeps its schedule); 0 = always run every iteration."""
    plateau_tolerance: float = 1e-3
    """Relative improvement over ``plateau_iterations`` iterations that counts as progress."""


FINE_MIN_SIZE = 400
"""Long side (pixels) that the default schedule's fine camera and height rounds keep at least: measured on
the 320x240 cut-cards phantom, heights from rounds at 160 px come out at 40 % of the truth."""


def default_schedule() -> tuple[LevelConfig, ...]:
    """The default rounds for ~1000-pixel-wide images: shifts -> cameras and distortion -> heights
    (smaller images run the fine rounds at up to full resolution, see :data:`FINE_MIN_SIZE`).

    Before the height round the cameras are refined on dense flow matches and the heights measured from
    them (``heights.init: flow``); that replaces the half-resolution camera round and most of the height
    iterations of the photometric schedule. Measured on 15 cut-cards images at 1000x750
    (docs/benchmarks.md): the flow step alone reaches 0.08 GSD mean accuracy and 0.1 px registration from
    the quarter-resolution camera round; the photometric schedule (camera_fine 100 + height 300 iterations)
    reached 1.14 GSD and 0.9 px in 706 s. The height round then refines poses and heights together for
    40 iterations with a 10-iteration warm-up (its fresh Adam state would otherwise kick the CNN); it leaves
    the lens alone: the dense matches determine it better than the half-resolution photometric loss
    (trained there, the profile's error at the image corners grew from 0.1 to 0.66 px).

    No round follows the height round: a fresh Adam state restarts every CNN weight with a full-size step
    (measured on the 320x240 cut-cards phantom: RGB MSE 3.8e-4 -> 5.7e-4 over 40 iterations).

    The camera round runs all its iterations: ending it on a loss plateau (``plateau_iterations=10``, under
    0.5 % lower) saved 9 % of the CPU on 12 cut-cards images at 400x300 but left the heights at 0.60 instead of
    0.53 GSD (docs/benchmarks.md, issue 18); the ``fast`` preset uses it."""
    return (
        LevelConfig("shift", 8, 60, ("position",), lr_scale=4.0, target_size=125),
        LevelConfig("camera", 4, 150, _CAMERA, lr_scale=2.0, target_size=250),
        LevelConfig("height", 2, 40, (*_POSE, "height"), warmup_iterations=10, min_size=FINE_MIN_SIZE, target_size=500),
    )


def fast_schedule() -> tuple[LevelConfig, ...]:
    """The ``fast`` preset: the default rounds with about 40 % of their iterations (the flow step, which
    gives most of the accuracy, keeps its iterations; :func:`preset_config` gives its camera refinement a
    quarter of the matches; its flow step keeps the default neighbours: with 4 instead of 8 the 6-photo
    quick demo's heights fell from 0.55 to 1.68 GSD, docs/benchmarks.md). Its height round holds the cameras
    where the flow step's refinement on the dense matches put them (it trains the heights and the photometric
    terms only): 16 Adam steps on the photometric loss move every pose by up to about a pixel in whatever
    direction the loss's last bits point, and moved the registration of the 15-photo cut-cards phantom from
    0.06-0.09 px to 0.04-0.32 px (clean) and 0.2-0.45 px to 0.3-1.4 px (every camera effect), the heights with it
    (docs/benchmarks.md, issue 18 session 15)."""
    return (
        LevelConfig("shift", 8, 30, ("position",), lr_scale=4.0, target_size=125),
        LevelConfig(
            "camera", 4, 60, _CAMERA, lr_scale=2.0, target_size=250, plateau_iterations=10, plateau_tolerance=5e-3
        ),
        LevelConfig(
            "height", 2, 16, (*_PHOTOMETRIC, "height"), warmup_iterations=4, min_size=FINE_MIN_SIZE, target_size=500
        ),
    )


PRESETS = ("default", "fast")
"""Named starting configurations (``topograph meso --preset``)."""


@dataclass(frozen=True)
class LearningRates:
    """Adam learning rates (roughly the largest step per iteration) of each parameter group."""

    position: float = 1.0
    """Camera lateral position, object units (about one image pixel)."""
    scale: float = 2e-3
    """Log of the camera height (relative magnification)."""
    tilt: float = 2e-3
    """Object-plane normal components ``(n_x, n_y)`` (radians for small tilts)."""
    angle: float = 2e-3
    """In-plane rotation, radians."""
    rolling: float = 1e-3
    """Rolling-shutter image motion, pixels per row (a hand-held sweep: about 0.01; it moves a corner as
    much as the same in-plane angle)."""
    shutter: float = 1e-3
    """Rolling-shutter skew of the sweep, pixels per row at the median photo's motion."""
    gain: float = 3e-3
    """Log gain per image."""
    colour: float = 3e-3
    """Log white-balance gain per image and colour channel."""
    bias: float = 3e-3
    """Additive bias per image (intensities in [0, 1])."""
    focal: float = 1e-4
    """Log of the pinhole focal length."""
    distortion: float = 5e-4
    """Distortion profile values (relative magnification) or polynomial coefficients."""
    centre: float = 0.5
    """Distortion centre, pixels."""
    height: float = 1.0
    """Camera-centric height maps, object units."""


@dataclass(frozen=True)
class DistortionConfig:
    """Radial undistortion model shared by all images."""

    model: Literal["piecewise", "poly", "none"] = "piecewise"
    n_knots: int = 30
    """Knots ``n_r`` of the piecewise-linear magnification profile (paper Eq. 2)."""
    poly_terms: int = 4
    """Even-polynomial terms (4 terms = order 8)."""
    optimise_centre: bool = True


@dataclass(frozen=True)
class FlowHeightConfig:
    """Height initialisation from dense optical flow between registered images
    (:mod:`topograph.meso.flow.heights`)."""

    downsample: int = 0
    """Flow is computed on the images downsampled by this factor; 0 = automatic: long side about 500 pixels
    (``topograph.meso.flow.heights.AUTO_LONG_SIDE``; DIS on 500x375 is 4x faster than on 1000x750)."""
    min_overlap: float = 0.08
    """Neighbours of an image are the images covering at least this fraction of it (small overlaps count:
    a strip that two images alone share gets heights only from their pair)."""
    max_neighbours: int = 8
    """At most this many neighbours per image (largest overlap x baseline first)."""
    fb_threshold_px: float = 1.0
    """Keep flow whose forward-backward error is below this, pixels of the flow images."""
    epipolar_threshold_px: float = 1.0
    """Keep flow whose residual across the parallax direction is below this, flow pixels."""
    median_px: int = 5
    """Median filter of each fused height map, flow pixels (odd; 0 = none)."""
    refine_iterations: int = 10
    """Levenberg-Marquardt iterations refining cameras and distortion on the dense matches (0 = none)."""
    refine_matches_per_pair: int = 2000
    """Matches per pair used by that refinement (a fixed random subset) ..."""
    refine_max_matches: int = 200_000
    """... and at most this many in all (its memory and time do not grow with the number of images)."""
    flat_weight: float = 0.3
    """Weight of the flat-scene prior of the refinement (fixes the dome ambiguity of radial distortion with
    near-parallel views; relief counts as an outlier of it, see ``refine_cameras``). It suits steps on a flat
    base (cards, coins) and flattens smooth relief. Measured at 320x240 (docs/benchmarks.md, issue 18 sessions
    11-12), 0.3 is the default: cut cards 0.065 GSD (0.077 at 0.1); a 12-GSD dome is flattened (3 % kept) and the
    relief phantom's hills keep 46 %; with 0 the refinement is unconstrained along the dome and registration
    fails on all three scenes (the gate stops the run), so 0 is no cure for curved specimens."""
    passes: int = 1
    """Rounds of flow matching and camera refinement (the heights come from the last)."""
    fill_sigma_px: float = 8.0
    """Pixels no neighbour measured are filled by normalised Gaussian smoothing with this sigma, flow px."""


@dataclass(frozen=True)
class HeightConfig:
    """Camera-centric height maps: reparameterised by one untrained CNN (paper Sec. 3.3) or optimised
    directly with total-variation regularisation (``loss.tv_weight``)."""

    model: Literal["cnn", "tv"] = "cnn"
    """``cnn``: one encoder-decoder maps each image to its height map (the network is the regulariser);
    ``tv``: per-pixel maps with total variation."""
    downsample: int = 4
    """``tv``: maps are stored at the image size divided by this factor and upsampled bilinearly."""
    cnn_filters: tuple[int, ...] = (16, 16, 16, 32, 32)
    """Filters of the CNN's down blocks (the up blocks mirror them); fewer or narrower blocks = stronger prior."""
    cnn_lr: float = 5e-3
    """Adam learning rate of the CNN weights (replaces ``lr.height`` when ``model`` is ``cnn``)."""
    cnn_downsample: int = 0
    """The CNN sees the images downsampled by this factor (output upsampled bilinearly); 0 = automatic:
    the network input's long side is about 160 pixels (``topograph.meso.models.cnn.AUTO_LONG_SIDE``)."""
    cnn_checkpoint: bool = False
    """Gradient checkpointing of the CNN blocks: less memory, about 35 % more CNN time."""
    init: Literal["flow", "zero"] = "flow"
    """Start of the first height round: ``flow`` = heights measured by dense optical flow between the
    registered images (plane + parallax, Eqs. 4-5), the CNN fitted to them; ``zero`` = flat (the paper)."""
    flow: FlowHeightConfig = field(default_factory=FlowHeightConfig)
    fit_iterations: int = 0
    """``init: flow`` with the CNN: 0 = the measured maps become the network's fixed additive part and the
    network learns the correction from zero in the height rounds (exact start); > 0 = Adam steps fitting the
    network's output to the measured maps instead (a regularised start; slow on a CPU: ~0.5 s per step
    for 15 images)."""
    fit_lr: float = 1e-2
    """Adam learning rate of that fit."""


@dataclass(frozen=True)
class LossConfig:
    """Loss = MSE(RGB) + height_weight * MSE(height channel) + tv_weight * TV(height maps) (TV: ``tv`` heights
    only) + tie_weight * the feature tie term (feature initialisation only)."""

    height_weight: float = 1e-3
    """lambda_h; heights are in object units (about one mosaic pixel), RGB in [0, 1]."""
    tv_weight: float = 2e-5
    """lambda_TV on the mean isotropic TV of the height maps (object units per map pixel)."""
    tie_weight: float = 1e-3
    """Weight of the feature tie term (:mod:`topograph.meso.optimise.ties`): the initialisation's SIFT
    matches (``init.method`` features) keep the rounds' cameras where the images really meet; 0 = off."""
    tie_scale: float = 2.0
    """Cauchy scale of a tie's misfit, in keypoint-noise units (pixels of the images SIFT ran on)."""


@dataclass(frozen=True)
class InitConfig:
    """Initial camera positions."""

    method: Literal["auto", "zero", "xcorr", "features"] = "auto"
    """``auto``: zero start unless the cross-correlation estimates spread wider than ``zero_max_spread``;
    when cross-correlation leaves images unlinked (rotated photos, e.g. a second flight line), SIFT
    features. ``features``: positions, heights, tilts and in-plane angles from SIFT homography links solved
    jointly (:mod:`topograph.meso.init_features`, :mod:`topograph.meso.init_global`)."""
    feature_size: int = 1024
    """Long side (pixels) of the images used for SIFT matching (``features``)."""
    size: int = 256
    """Long side (pixels) of the images used for phase correlation."""
    min_ncc: float = 0.25
    """A pair overlaps when the normalised cross-correlation of its overlap reaches this value ..."""
    min_overlap: float = 0.1
    """... over at least this fraction of the image area."""
    zero_max_spread: float = 0.15
    """Largest camera offset (fraction of the image's short side) for which ``auto`` starts at zero."""


@dataclass(frozen=True)
class ScaleConfig:
    """Intrinsics and absolute scale (paper Eqs. 7-8). ``None`` = read from EXIF or unknown."""

    focal_mm: float | None = None
    """Effective focal length in mm (overrides EXIF FocalLength)."""
    pixel_pitch_um: float | None = None
    """Sensor pixel pitch of the given images in micrometres (overrides EXIF)."""
    magnification: float | None = None
    """Magnification of the reference image (image size / object size)."""
    scale_points: tuple[float, ...] | None = None
    """``(x1, y1, x2, y2)``: two pixel positions in the reference image ..."""
    scale_distance_mm: float | None = None
    """... and their true separation in mm."""
    reference_image: int = 0
    """Index of the image whose magnification is known (and the reference view for Eq. 6)."""


@dataclass(frozen=True)
class ModelConfig:
    """Forward-model options."""

    rectification: Literal["ortho", "reference"] = "ortho"
    """``ortho``: orthorectification (Eqs. 4-5); ``reference``: rectify to the reference camera (Eq. 6)."""
    projection: Literal["expansion", "exact"] = "expansion"
    """Tilted-pinhole back-projection: the supplement's 2nd-order expansion or the exact map."""
    level_plane: bool = True
    """Fix the tilt gauge: make the robustly fitted dominant plane of the height map ``h = 0``."""


@dataclass(frozen=True)
class CheckConfig:
    """Input checks (warnings, never silent drops) and quality gates."""

    sharpness_ratio: float = 0.5
    """Warn about images whose sharpness is below this fraction of the set's median (motion blur, focus) ..."""
    blurry_weight: float = 0.1
    """... and give them this weight in the reconstruction and the mosaic (they still register)."""
    focus_tolerance: float = 0.02
    """Warn when EXIF focal length or focus distance differ across images by more than this fraction."""
    gates: Literal["stop", "mark", "off"] = "stop"
    """Quality gates (:mod:`topograph.meso.quality`): ``stop`` = a failed gate ends the run with one line
    and a non-zero exit; ``mark`` = the run goes on, writes its result marked failed (summary.json, report)
    and exits non-zero; ``off`` = gates are measured and recorded only."""
    min_registration_ncc: float = 0.5
    """Every image must correlate at least this well with the mosaic of the other images."""
    min_match_coverage: float = 0.15
    """Dense flow must match at least this share of the pixels."""
    min_height_coverage: float = 0.3
    """At least this share of the mosaic must have heights seen by two or more images."""


@dataclass(frozen=True)
class OutputConfig:
    """What to write."""

    downsample: int = 1
    """Mosaic pixel = this many times the output GSD (``gsd_um``, or the reference image's native GSD)."""
    gsd_um: float = 0.0
    """Ground sampling distance of the orthomosaic and height map, micrometres per pixel (needs an absolute
    scale); 0 = the native GSD of the reference image."""
    max_mosaic_mb: float = 2000.0
    """Memory the mosaic grids may take; a finer GSD is coarsened to fit (with a warning)."""
    """Resolution of the output mosaic relative to the images."""
    min_views: int = 2
    """Heights are reported only where at least this many images overlap (one view has no parallax)."""
    max_mesh_vertices: int = 1_000_000
    """The height-field mesh is decimated to at most this many vertices."""


@dataclass(frozen=True)
class BatchingConfig:
    """Batches across images with a running-average reconstruction (paper Sec. 3.4)."""

    batch_size: int = 0
    """Images per optimisation step; 0 = automatic: every image while one step fits ``max_step_mb``,
    else as many images as fit (memory bounded by the budget, not by the number of images)."""
    max_step_mb: float = 2048.0
    """Working-memory budget of one step for the automatic batch size, MB (estimated from the measured
    cost per pixel, see ``topograph.meso.optimise.solver.BYTES_PER_PIXEL``)."""
    momentum: float = 0.5
    """``m`` of Eq. 12: how much of the old reconstruction a batch keeps where it lands. Unused when one
    batch holds every image (the reconstruction is then rebuilt each step, Eq. 9)."""


@dataclass(frozen=True)
class RobustConfig:
    """Divergence detection, rollback and checkpoints."""

    checkpoint_every: int = 20
    """Iterations between in-memory rollback checkpoints."""
    explode_factor: float = 10.0
    """A loss above this multiple of the round's lowest loss counts as divergence."""
    max_height_fraction: float = 0.25
    """A camera-centric height beyond this fraction of the mean camera height counts as divergence."""
    lr_backoff: float = 0.5
    """Learning rates are multiplied by this after each rollback."""
    max_rollbacks: int = 8
    """Rollbacks allowed per round before the round ends at its last good state."""
    save_interval_s: float = 60.0
    """Minimum seconds between checkpoint files on disk inside a round (0 = at every in-memory checkpoint);
    a checkpoint file is also written after every round."""


@dataclass(frozen=True)
class MesoConfig:
    """Everything the mesoscopic engine needs besides the images."""

    schedule: tuple[LevelConfig, ...] = field(default_factory=default_schedule)
    lr: LearningRates = field(default_factory=LearningRates)
    distortion: DistortionConfig = field(default_factory=DistortionConfig)
    heights: HeightConfig = field(default_factory=HeightConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    robust: RobustConfig = field(default_factory=RobustConfig)
    init: InitConfig = field(default_factory=InitConfig)
    scale: ScaleConfig = field(default_factory=ScaleConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    checks: CheckConfig = field(default_factory=CheckConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    min_level_size: int = 96
    """A round's downsampling is reduced so that its images keep at least this long side (pixels)."""
    device: str = "auto"
    """``auto`` (CUDA when available), ``cpu`` or ``cuda``."""
    threads: int = 0
    """Torch CPU threads; 0 = all cores."""
    seed: int = 0


def validate_config(cfg: MesoConfig) -> None:
    """Check cross-field constraints; raise :class:`TopographError` naming the offending key."""
    if not cfg.schedule:
        raise TopographError("the schedule has no rounds", "give at least one entry under 'schedule'")
    lr_names = {f.name for f in fields(LearningRates)}
    for lvl in cfg.schedule:
        if lvl.downsample < 1 or lvl.iterations < 0 or lvl.min_size < 0 or lvl.plateau_iterations < 0:
            raise TopographError(
                f"schedule round '{lvl.name}' needs downsample >= 1 and iterations, min_size, plateau_iterations >= 0",
                "fix the schedule",
            )
        unknown = [g for g in lvl.train if g not in lr_names]
        if unknown:
            raise TopographError(
                f"schedule round '{lvl.name}' trains unknown parameter group '{unknown[0]}'",
                f"use some of: {', '.join(PARAMETER_GROUPS)}",
            )
    if cfg.distortion.n_knots < 3:
        raise TopographError("distortion.n_knots must be at least 3", "use e.g. 30")
    if cfg.heights.downsample < 1 or cfg.output.downsample < 1:
        raise TopographError("downsample factors must be >= 1", "fix heights.downsample / output.downsample")
    _validate_heights(cfg.heights, cfg.loss)
    _validate_batching(cfg.batching, cfg.robust)
    sp = cfg.scale.scale_points
    if sp is not None and len(sp) != 4:
        raise TopographError("scale_points needs four numbers x1,y1,x2,y2", "e.g. --scale-points 10,20,400,20")
    if (sp is None) != (cfg.scale.scale_distance_mm is None):
        raise TopographError(
            "scale points and their distance must be given together", "pass both --scale-points and --scale-distance-mm"
        )
    if cfg.scale.magnification is not None and cfg.scale.magnification <= 0:
        raise TopographError("the magnification must be positive", "e.g. --magnification 0.07")


def _validate_heights(h: HeightConfig, loss: LossConfig) -> None:
    if not h.cnn_filters or any(k < 1 for k in h.cnn_filters):
        raise TopographError(
            f"heights.cnn_filters must be positive filter counts, got {list(h.cnn_filters)}",
            "e.g. --cnn 16,16,16,32,32",
        )
    if not h.cnn_lr > 0:
        raise TopographError(f"heights.cnn_lr must be positive, got {h.cnn_lr}", "e.g. 5e-3")
    if h.cnn_downsample < 0:
        raise TopographError("heights.cnn_downsample must be >= 0 (0 = automatic)", "e.g. 0 or 4")
    if loss.tv_weight < 0 or loss.height_weight < 0 or loss.tie_weight < 0:
        raise TopographError(
            "loss weights must be >= 0", "fix loss.tv_weight / loss.height_weight / loss.tie_weight (--tv-weight)"
        )
    if not loss.tie_scale > 0:
        raise TopographError(f"loss.tie_scale must be positive, got {loss.tie_scale}", "e.g. 2.0")


def _validate_batching(b: BatchingConfig, r: RobustConfig) -> None:
    if b.batch_size < 0:
        raise TopographError(f"batching.batch_size must be >= 0, got {b.batch_size}", "0 = automatic, e.g. 6")
    if not 0.0 <= b.momentum < 1.0:
        raise TopographError(f"batching.momentum must be in [0, 1), got {b.momentum}", "e.g. 0.5")
    if not b.max_step_mb > 0:
        raise TopographError("batching.max_step_mb must be positive", "e.g. 2048")
    if r.checkpoint_every < 1 or r.max_rollbacks < 0 or r.save_interval_s < 0:
        raise TopographError(
            "robust.checkpoint_every must be >= 1, max_rollbacks and save_interval_s >= 0", "fix the robust section"
        )
    if not 0.0 < r.lr_backoff < 1.0 or not r.explode_factor > 1.0 or not r.max_height_fraction > 0:
        raise TopographError(
            "robust needs 0 < lr_backoff < 1, explode_factor > 1 and max_height_fraction > 0", "fix the robust section"
        )


def preset_config(name: str) -> MesoConfig:
    """The configuration of a named preset (:data:`PRESETS`).

    Raises:
        TopographError: unknown preset.
    """
    if name == "default":
        return MesoConfig()
    if name == "fast":
        # the refinement's cost is linear in its matches
        return replace_settings(
            MesoConfig(schedule=fast_schedule()),
            {
                "heights.flow.refine_matches_per_pair": 1000,
                "heights.flow.refine_max_matches": 50_000,
            },
        )
    raise TopographError(f"unknown preset '{name}'", f"use one of: {', '.join(PRESETS)}")


C = TypeVar("C")


NOT_COMPUTATIONAL = ("threads", "device", "output", "checks", "robust.save_interval_s")
"""Settings that do not change the optimisation (a resumed run may change them)."""


def computational_settings(cfg: MesoConfig) -> MesoConfig:
    """``cfg`` with the settings of :data:`NOT_COMPUTATIONAL` at their defaults: two runs whose
    computational settings are equal compute the same model (the checkpoint fingerprint uses this)."""
    default = MesoConfig()
    return replace_settings(cfg, {key: _get_path(default, key.split(".")) for key in NOT_COMPUTATIONAL})


def _get_path(obj: Any, parts: list[str]) -> Any:
    for part in parts:
        obj = getattr(obj, part)
    return obj


def replace_settings(cfg: C, changes: Mapping[str, Any]) -> C:
    """A copy of a (frozen, nested) config with dotted keys replaced, e.g.
    ``replace_settings(cfg, {"heights.model": "tv", "threads": 1})``: nested :func:`dataclasses.replace`,
    values kept as given (no coercion; :func:`validate_config` checks the result).

    Raises:
        TypeError: a key names no field.
    """
    out = cfg
    for dotted, value in changes.items():
        out = _replace_path(out, dotted.split("."), value)
    return out


def _replace_path(obj: Any, parts: list[str], value: Any) -> Any:
    if len(parts) == 1:
        return replace(obj, **{parts[0]: value})
    return replace(obj, **{parts[0]: _replace_path(getattr(obj, parts[0]), parts[1:], value)})
