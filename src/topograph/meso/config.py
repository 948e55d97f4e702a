"""Configuration of the mesoscopic engine: nested dataclasses that round-trip to plain YAML.

The coarse-to-fine schedule is data (:class:`LevelConfig` rows), not code. Parameter groups are named
(:data:`PARAMETER_GROUPS`); a level lists the groups it trains, everything else is frozen in that level.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Literal

from topograph.errors import TopographError

PARAMETER_GROUPS: tuple[str, ...] = (
    "position",
    "scale",
    "tilt",
    "angle",
    "gain",
    "bias",
    "focal",
    "distortion",
    "centre",
    "height",
)
"""Names of the trainable parameter groups (see :class:`LearningRates` for their units)."""

_CAMERA = ("position", "scale", "tilt", "angle", "gain", "bias", "focal", "distortion", "centre")


@dataclass
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
    grid_cell: float = 1.0
    """Reconstruction grid spacing as a fraction of the round's pixel spacing. 1 gives a smooth reference
    with a wide capture range (early rounds); 0.5 a sharp one, needed for unbiased heights."""
    robust_scale: float = 0.0
    """Cauchy scale of the per-pixel RGB residual in this round (0 = plain squared error). A robust
    loss limits the influence of pixels that no camera model can fit (moving objects, specularities)."""


def default_schedule() -> tuple[LevelConfig, ...]:
    """The default rounds for ~1000-pixel-wide images: shifts -> cameras and distortion -> heights."""
    return (
        LevelConfig("shift", 8, 60, ("position",), lr_scale=4.0),
        LevelConfig("camera", 4, 150, _CAMERA, lr_scale=2.0),
        LevelConfig("camera_fine", 2, 100, _CAMERA),
        LevelConfig("height", 2, 300, (*_CAMERA, "height")),
        LevelConfig("final", 1, 40, (*_CAMERA, "height"), lr_scale=0.5),
    )


@dataclass
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
    gain: float = 3e-3
    """Log gain per image."""
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


@dataclass
class DistortionConfig:
    """Radial undistortion model shared by all images."""

    model: Literal["piecewise", "poly", "none"] = "piecewise"
    n_knots: int = 30
    """Knots ``n_r`` of the piecewise-linear magnification profile (paper Eq. 2)."""
    poly_terms: int = 4
    """Even-polynomial terms (4 terms = order 8)."""
    optimise_centre: bool = True


@dataclass
class HeightConfig:
    """Camera-centric height maps (directly optimised with total-variation regularisation)."""

    model: Literal["tv"] = "tv"
    downsample: int = 4
    """Height maps are stored at the image size divided by this factor and upsampled bilinearly."""


@dataclass
class LossConfig:
    """Loss = MSE(RGB) + height_weight * MSE(height channel) + tv_weight * TV(height maps)."""

    height_weight: float = 1e-3
    """lambda_h; heights are in object units (about one mosaic pixel), RGB in [0, 1]."""
    tv_weight: float = 2e-5
    """lambda_TV on the mean isotropic TV of the height maps (object units per map pixel)."""


@dataclass
class InitConfig:
    """Initial camera positions."""

    method: Literal["auto", "zero", "xcorr"] = "auto"
    """``auto``: zero start unless the cross-correlation estimates spread wider than ``zero_max_spread``."""
    size: int = 256
    """Long side (pixels) of the images used for phase correlation."""
    min_ncc: float = 0.25
    """A pair overlaps when the normalised cross-correlation of its overlap reaches this value ..."""
    min_overlap: float = 0.1
    """... over at least this fraction of the image area."""
    zero_max_spread: float = 0.15
    """Largest camera offset (fraction of the image's short side) for which ``auto`` starts at zero."""


@dataclass
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


@dataclass
class ModelConfig:
    """Forward-model options."""

    rectification: Literal["ortho", "reference"] = "ortho"
    """``ortho``: orthorectification (Eqs. 4-5); ``reference``: rectify to the reference camera (Eq. 6)."""
    projection: Literal["expansion", "exact"] = "expansion"
    """Tilted-pinhole back-projection: the supplement's 2nd-order expansion or the exact map."""
    level_plane: bool = True
    """Fix the tilt gauge: make the robustly fitted dominant plane of the height map ``h = 0``."""


@dataclass
class CheckConfig:
    """Input checks (warnings, never silent drops)."""

    sharpness_ratio: float = 0.5
    """Warn about images whose sharpness is below this fraction of the set's median."""
    focus_tolerance: float = 0.02
    """Warn when EXIF focal length or focus distance differ across images by more than this fraction."""


@dataclass
class OutputConfig:
    """What to write."""

    downsample: int = 1
    """Resolution of the output mosaic relative to the images."""
    min_views: int = 2
    """Heights are reported only where at least this many images overlap (one view has no parallax)."""
    max_mesh_vertices: int = 1_000_000
    """The height-field mesh is decimated to at most this many vertices."""


@dataclass
class MesoConfig:
    """Everything the mesoscopic engine needs besides the images."""

    schedule: tuple[LevelConfig, ...] = field(default_factory=default_schedule)
    lr: LearningRates = field(default_factory=LearningRates)
    distortion: DistortionConfig = field(default_factory=DistortionConfig)
    heights: HeightConfig = field(default_factory=HeightConfig)
    loss: LossConfig = field(default_factory=LossConfig)
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
        if lvl.downsample < 1 or lvl.iterations < 0:
            raise TopographError(
                f"schedule round '{lvl.name}' needs downsample >= 1 and iterations >= 0", "fix the schedule"
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
    sp = cfg.scale.scale_points
    if sp is not None and len(sp) != 4:
        raise TopographError("scale_points needs four numbers x1,y1,x2,y2", "e.g. --scale-points 10,20,400,20")
    if (sp is None) != (cfg.scale.scale_distance_mm is None):
        raise TopographError(
            "scale points and their distance must be given together", "pass both --scale-points and --scale-distance-mm"
        )
    if cfg.scale.magnification is not None and cfg.scale.magnification <= 0:
        raise TopographError("the magnification must be positive", "e.g. --magnification 0.07")
