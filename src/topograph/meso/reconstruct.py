"""Orchestration of one mesoscopic reconstruction: checks -> initialisation -> rounds -> scale -> mosaic."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from topograph.errors import TopographError
from topograph.fingerprint import digest
from topograph.meso.config import LevelConfig, MesoConfig, computational_settings, validate_config
from topograph.meso.data import check_inputs, resolve_intrinsics
from topograph.meso.functional.scale import camera_heights_mm, magnification_from_points
from topograph.meso.functional.splat import GridSpec
from topograph.meso.gauge import fit_dominant_plane, level_model
from topograph.meso.init_positions import InitialPositions, estimate_initial_positions
from topograph.meso.models.camera import MesoModel
from topograph.meso.models.cnn import HeightCNN, auto_downsample
from topograph.meso.models.distortion import distortion_models
from topograph.meso.models.heights import HeightMaps, HeightModel
from topograph.meso.mosaic import render_mosaic
from topograph.meso.optimise.checkpoint import load_checkpoint
from topograph.meso.optimise.history import History
from topograph.meso.optimise.rounds import run_rounds
from topograph.meso.quality import (
    Gate,
    QualityReport,
    SeamMap,
    enforce,
    height_gate,
    link_residuals,
    registration_gate,
    registration_scores,
    seam_map,
)
from topograph.meso.types import CameraEstimate, InputChecks, Intrinsics, MesoImages
from topograph.progress import StepReporter, reporting, stage
from topograph.timing import Timings
from topograph.types import HeightMap

log = logging.getLogger("topograph")


@dataclass(frozen=True)
class ScaleResult:
    """Absolute scale of a reconstruction (Eqs. 7-8).

    ``magnification`` of the reference image (None = unknown); ``camera_heights_mm`` (N,) (NaN when
    unknown); ``height_factors`` (N,) converting each image's camera-centric heights (object units) to
    ``height_unit``; ``mm_per_unit`` the lateral size of one object unit (None when unknown).
    """

    magnification: float | None
    camera_heights_mm: np.ndarray
    height_factors: np.ndarray
    mm_per_unit: float | None
    height_unit: str
    source: str


@dataclass
class MesoReconstruction:
    """Everything a mesoscopic reconstruction produced.

    ``ortho`` (H, W, 3) float32 in [0, 1]; ``height`` (H, W) float32 in ``scale.height_unit`` (NaN where no
    image); ``weight`` (H, W) splat weight; ``grid`` the mosaic grid in object units; ``model`` the
    optimised deformation model (CPU); ``history`` every accepted iteration of the rounds.
    """

    names: tuple[str, ...]
    ortho: np.ndarray
    height: np.ndarray
    weight: np.ndarray
    grid: GridSpec
    scale: ScaleResult
    cameras: CameraEstimate
    intrinsics: Intrinsics
    checks: InputChecks
    init: InitialPositions
    model: MesoModel
    history: History
    config: MesoConfig
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds per stage (``checks_init``, ``height_init``, ``round_<name>``, ``mosaic``) and ``total``
    (:mod:`topograph.timing`)."""
    image_size: tuple[int, int] = (0, 0)
    """``(width, height)`` of the input images."""
    quality: QualityReport = field(default_factory=QualityReport)
    """The quality gates (status ``failed`` when any failed)."""
    seams: SeamMap | None = None
    """Where the images meet in the mosaic and how well they agree there (the seam figure)."""

    @property
    def pixel_size_mm(self) -> float | None:
        """Lateral size of one mosaic pixel in mm (None when the scale is unknown)."""
        return None if self.scale.mm_per_unit is None else self.grid.cell * self.scale.mm_per_unit

    @property
    def height_factors(self) -> np.ndarray:
        """(N,) factor converting each image's camera-centric heights (object units) to ``scale.height_unit``."""
        return self.scale.height_factors

    @property
    def camera_positions(self) -> np.ndarray:
        """(N, 2) camera nadirs, object units."""
        return self.cameras.positions

    @torch.no_grad()
    def ground_points(self, uv: np.ndarray, plane_height: np.ndarray | None = None) -> np.ndarray:
        """(N, P, 2) object-plane positions of pixels ``uv`` (P, 2) of every image on the plane at camera-centric
        height ``plane_height`` (N,) (object units; 0 when None)."""
        t = torch.as_tensor(uv, dtype=torch.float32)
        h = None
        if plane_height is not None:
            h = torch.as_tensor(plane_height, dtype=torch.float32)[:, None].expand(self.model.n_images, t.shape[0])
        return self.model.object_points(t, h).cpu().numpy().astype(float)

    @torch.no_grad()
    def undistort_pixels(self, uv: np.ndarray) -> np.ndarray:
        """(P, 2) undistorted positions of raw pixels ``uv`` (P, 2) with the recovered lens profile."""
        return self.model.distortion.undistort(torch.as_tensor(uv, dtype=torch.float32)).numpy().astype(float)

    def height_map(self) -> HeightMap:
        """The height map as a :class:`topograph.types.HeightMap` (lateral unit mm, or px if unscaled)."""
        if self.pixel_size_mm is None:
            return HeightMap(
                self.height, pixel_size=self.grid.cell, unit="px", lateral_unit="px", origin=self.grid.origin
            )
        k = self.scale.mm_per_unit
        return HeightMap(
            self.height,
            pixel_size=self.pixel_size_mm,
            unit=self.scale.height_unit,
            lateral_unit="mm",
            origin=(self.grid.origin[0] * k, self.grid.origin[1] * k),
        )


def effective_downsample(downsample: int, long_side: int, min_size: int) -> int:
    """``downsample`` reduced so that the downsampled long side stays at least ``min_size`` pixels."""
    return max(1, min(int(downsample), long_side // max(1, min_size)))


def select_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cpu`` / ``cuda`` as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TopographError("CUDA was requested but is not available", "use --device cpu")
    return torch.device(name)


def build_heights(n_images: int, image_size: tuple[int, int], cfg: MesoConfig) -> HeightModel:
    """The configured camera-centric height model: :class:`HeightCNN` (``heights.model == "cnn"``, seeded
    with ``cfg.seed``; call :meth:`~HeightModel.prepare` before use) or TV-regularised :class:`HeightMaps`."""
    h = cfg.heights
    if h.model == "tv":
        return HeightMaps(n_images, image_size, h.downsample)
    d = h.cnn_downsample if h.cnn_downsample > 0 else auto_downsample(image_size)
    return HeightCNN(n_images, image_size, h.cnn_filters, downsample=d, checkpoint=h.cnn_checkpoint, seed=cfg.seed)


def build_model(
    n_images: int, image_size: tuple[int, int], focal_px: float, positions: np.ndarray, cfg: MesoConfig
) -> MesoModel:
    """The deformation model with the configured distortion and height models."""
    distortion = distortion_models.create(
        cfg.distortion.model,
        image_size,
        optimise_centre=cfg.distortion.optimise_centre,
        n_knots=cfg.distortion.n_knots,
        poly_terms=cfg.distortion.poly_terms,
    )
    return MesoModel(
        n_images,
        focal_px,
        distortion,
        build_heights(n_images, image_size, cfg),
        positions=torch.as_tensor(positions, dtype=torch.float32),
        rectification=cfg.model.rectification,
        projection=cfg.model.projection,
        reference_image=cfg.scale.reference_image,
    )


def round_levels(cfg: MesoConfig, image_size: tuple[int, int]) -> tuple[LevelConfig, ...]:
    """``cfg.schedule`` with each round's downsampling factor chosen from the input size (``target_size``:
    a long side of about that many pixels) and reduced so that the round's images keep a long side of at
    least ``level.min_size`` pixels (``cfg.min_level_size`` when 0)."""
    long_side = max(image_size)
    out = []
    for lvl in cfg.schedule:
        ds = max(1, round(long_side / lvl.target_size)) if lvl.target_size > 0 else lvl.downsample
        out.append(replace(lvl, downsample=effective_downsample(ds, long_side, lvl.min_size or cfg.min_level_size)))
    return tuple(out)


@torch.no_grad()
def mosaic_cell(model: MesoModel, scale: ScaleResult, cfg: MesoConfig, image_size: tuple[int, int]) -> float:
    """Mosaic spacing in object units: ``output.gsd_um`` (needs the scale) or the reference image's native
    GSD (its relative scale), times ``output.downsample``, coarsened to fit ``output.max_mosaic_mb``."""
    out = cfg.output
    native = float(model.pose.relative_scale()[cfg.scale.reference_image])
    if out.gsd_um > 0 and scale.mm_per_unit is None:
        raise TopographError(
            "--gsd-um needs an absolute scale", "give --magnification or --scale-points, or leave out --gsd-um"
        )
    cell = (out.gsd_um * 1e-3 / scale.mm_per_unit if out.gsd_um > 0 else native) * max(1, out.downsample)
    # extent: the images' flat footprints (as render_mosaic bounds them); ~48 bytes per mosaic cell
    w, h = image_size
    corners = torch.tensor([[0.0, 0.0], [w, 0.0], [0.0, h], [w, h]], device=model.log_focal.device)
    pts = model.object_points(corners).reshape(-1, 2)
    span = (pts.max(0).values - pts.min(0).values) * 1.06
    cells = float(span[0] * span[1]) / cell**2
    budget = out.max_mosaic_mb * 1e6 / 48.0
    if cells > budget:
        coarser = cell * (cells / budget) ** 0.5
        log.warning(
            "mosaic at the requested GSD would need %.0f MB: rendered %.2fx coarser (raise output.max_mosaic_mb)",
            cells * 48 / 1e6, coarser / cell,
        )  # fmt: skip
        cell = coarser
    return cell


@torch.no_grad()
def resolve_scale(model: MesoModel, intrinsics: Intrinsics, cfg: MesoConfig) -> ScaleResult:
    """Magnification of the reference image -> camera heights in mm and unit conversions (Eqs. 7-8).

    The magnification is given, or measured from two points of known separation in the reference image
    after undistortion with the recovered profile. Without either, heights stay in object units
    (about one mosaic pixel) and a warning is logged.
    """
    j = cfg.scale.reference_image
    n = model.n_images
    z = model.camera_heights().cpu().numpy().astype(float)
    m = intrinsics.magnification
    source = "magnification"
    if m is None and cfg.scale.scale_points is not None:
        x1, y1, x2, y2 = cfg.scale.scale_points
        pts = torch.tensor([[x1, y1], [x2, y2]], dtype=torch.float32, device=model.log_focal.device)
        und = model.distortion.undistort(pts)
        sep = float(torch.linalg.norm(und[1] - und[0]))
        if sep <= 0:
            raise TopographError("the two scale points coincide", "give two distinct pixel positions")
        m = magnification_from_points(sep, float(cfg.scale.scale_distance_mm), intrinsics.pixel_pitch_mm)
        source = "scale points"
        log.info(
            "magnification of %s from scale points: %.5f (%.1f px for %.3f mm)", j, m, sep, cfg.scale.scale_distance_mm
        )
    if m is None:
        log.warning("no absolute scale (give --magnification or --scale-points): heights are in mosaic pixels")
        return ScaleResult(None, np.full(n, np.nan), np.ones(n), None, "px", "none")
    z_mm = camera_heights_mm(intrinsics.focal_mm, m, z / z[j])
    rel_scale = float(model.pose.relative_scale()[j])
    mm_per_unit = intrinsics.pixel_pitch_mm / (m * rel_scale)
    return ScaleResult(m, z_mm, z_mm / z * 1000.0, mm_per_unit, "um", source)


@torch.no_grad()
def camera_estimate(model: MesoModel, names: tuple[str, ...], scale: ScaleResult) -> CameraEstimate:
    """Plain-array camera parameters of the optimised model."""
    pose = model.pose
    return CameraEstimate(
        names=names,
        positions=model.nadirs().cpu().numpy().astype(float),
        heights=model.camera_heights().cpu().numpy().astype(float),
        tilts=pose.tilt.cpu().numpy().astype(float),
        angles_deg=np.degrees(pose.angle.cpu().numpy().astype(float)),
        gains=torch.exp(pose.log_gain - pose.log_gain.mean()).cpu().numpy().astype(float),
        biases=(pose.bias - pose.bias.mean()).cpu().numpy().astype(float),
        focal_px=float(model.focal()),
        distortion=model.distortion.describe(),
        heights_mm=scale.camera_heights_mm,
        mm_per_unit=scale.mm_per_unit,
    )


def renumber_links(links: tuple, keep: list[int]) -> tuple:
    """The feature links among the ``keep`` images, renumbered to their positions in ``keep``."""
    index = {k: m for m, k in enumerate(keep)}
    return tuple(replace(lk, i=index[lk.i], j=index[lk.j]) for lk in links if lk.i in index and lk.j in index)


def drop_unlinked(
    images: MesoImages, init: InitialPositions, checks: InputChecks, cfg: MesoConfig
) -> tuple[MesoImages, InitialPositions, InputChecks, MesoConfig]:
    """Leave out the images the initialisation could not link to the others (named in a warning); the
    reference image's index is renumbered."""
    keep = [k for k in range(len(images)) if init.linked[k]]
    if cfg.scale.reference_image not in keep:
        raise TopographError(
            f"the reference image {images.names[cfg.scale.reference_image]} links to no other photo",
            "choose another --reference-image or remove it",
        )
    dropped = [images.names[k] for k in range(len(images)) if not init.linked[k]]
    note = (
        f"{len(dropped)} photo(s) link to no other photo (or overlap too little to register) and were left out: "
        f"{', '.join(dropped)}"
    )
    log.warning(note)
    sub = np.ix_(keep, keep)
    init = replace(
        init,
        positions=init.positions[keep],
        overlap=init.overlap[sub],
        ncc=init.ncc[sub],
        xcorr_positions=init.xcorr_positions[keep],
        angles=None if init.angles is None else init.angles[keep],
        linked=None,
        tilts=None if init.tilts is None else init.tilts[keep],
        log_scales=None if init.log_scales is None else init.log_scales[keep],
        residual_px=None if init.residual_px is None else init.residual_px[keep],
        links=renumber_links(init.links, keep),
        ties=None if init.ties is None else init.ties.renumbered(keep),
    )
    checks = replace(
        checks,
        sharpness=checks.sharpness[keep],
        isolated=tuple(dropped),
        focal_mm=tuple(checks.focal_mm[k] for k in keep) if checks.focal_mm else (),
        focus_distance_m=tuple(checks.focus_distance_m[k] for k in keep) if checks.focus_distance_m else (),
        warnings=(*checks.warnings, note),
    )
    cfg = replace(cfg, scale=replace(cfg.scale, reference_image=keep.index(cfg.scale.reference_image)))
    return images.subset(keep), init, checks, cfg


def check_registration(
    model: MesoModel, images: MesoImages, cfg: MesoConfig, device: torch.device
) -> tuple[Gate, np.ndarray, np.ndarray]:
    """Per-image registration scores (leave-one-out NCC with the mosaic) and the registration gate
    (:func:`~topograph.meso.quality.enforce`): ``(gate, ncc, overlap)``."""
    ncc, overlap = registration_scores(model, images.pixels, device=device)
    log.info(
        "registration (NCC with the mosaic of the other images): median %.2f, worst %.2f (%s)",
        float(np.nanmedian(ncc)) if np.isfinite(ncc).any() else float("nan"),
        float(np.nanmin(ncc)) if np.isfinite(ncc).any() else float("nan"),
        images.names[int(np.nanargmin(ncc))] if np.isfinite(ncc).any() else "-",
    )
    return enforce(registration_gate(images.names, ncc, overlap, cfg.checks), cfg.checks), ncc, overlap


def check_and_initialise(
    images: MesoImages, cfg: MesoConfig
) -> tuple[MesoImages, InputChecks, Intrinsics, InitialPositions, MesoConfig]:
    """Input checks, intrinsics and initial positions; images linked to no other are left out
    (:func:`drop_unlinked`, which renumbers the reference image in the returned configuration)."""
    stage("input checks")
    checks = check_inputs(images, cfg.checks)
    intrinsics = resolve_intrinsics(images, cfg.scale)
    log.info(
        "%d images %dx%d; focal %.3f mm (%s), pitch %.3f um (%s), f = %.1f px",
        len(images), *images.size, intrinsics.focal_mm, intrinsics.source["focal_mm"],
        intrinsics.pixel_pitch_mm * 1000, intrinsics.source["pixel_pitch"], intrinsics.focal_px,
    )  # fmt: skip
    stage("initial positions")
    init = estimate_initial_positions(
        images.pixels, images.names, cfg.init, focal_px=intrinsics.focal_px, projection=cfg.model.projection
    )
    if init.linked is not None and not init.linked.all():
        images, init, checks, cfg = drop_unlinked(images, init, checks, cfg)
    return images, replace(checks, overlap=init.overlap), intrinsics, init, cfg


def start_model(images: MesoImages, intrinsics: Intrinsics, init: InitialPositions, cfg: MesoConfig) -> MesoModel:
    """The deformation model at the initial positions and angles, its height model prepared on the images."""
    model = build_model(len(images), images.size, intrinsics.focal_px, init.positions, cfg)
    with torch.no_grad():
        pose = model.pose
        for value, param in ((init.angles, pose.angle), (init.tilts, pose.tilt), (init.log_scales, pose.log_scale)):
            if value is not None:
                param.copy_(torch.as_tensor(value, dtype=param.dtype))
    model.heights.prepare(images.pixels)
    log.info("heights: %s", model.heights.describe(cfg.heights, cfg.loss.tv_weight))
    return model


def downsampled(pixels: np.ndarray, factor: float) -> np.ndarray:
    """(N, H, W, 3) uint8 images area-averaged by ``factor`` (a copy; the images themselves when ``factor <= 1``)."""
    import cv2

    n, h, w = pixels.shape[:3]
    size = (max(2, round(w / factor)), max(2, round(h / factor)))
    if factor <= 1 or size == (w, h):
        return pixels
    out = np.empty((n, size[1], size[0], 3), np.uint8)
    for i in range(n):
        out[i] = cv2.resize(pixels[i], size, interpolation=cv2.INTER_AREA)
    return out


@dataclass(frozen=True)
class Mosaic:
    """The rendered outputs of :func:`finish`: ``ortho`` (H, W, 3), ``height`` (H, W) in
    ``scale.height_unit``, splat ``weight`` (H, W), their ``grid``, the absolute ``scale`` and
    ``height_coverage``, the share of the seen mosaic with a height (observed by two or more images)."""

    ortho: np.ndarray
    height: np.ndarray
    weight: np.ndarray
    grid: GridSpec
    scale: ScaleResult
    height_coverage: float


def finish(
    model: MesoModel,
    images: MesoImages,
    intrinsics: Intrinsics,
    cfg: MesoConfig,
    device: torch.device,
    weights: np.ndarray | None,
) -> Mosaic:
    """After the rounds and the registration gate: levelling to the dominant plane (the gauge), absolute
    scale and the full-resolution mosaic."""
    if cfg.model.level_plane:
        coarse = 4.0 * cfg.output.downsample
        # the plane needs a coarse height map only: images at the mosaic's cell size splat 1/16 of the samples
        small = downsampled(images.pixels, coarse)
        _, h_units, _, g = render_mosaic(
            model, small, coarse, None, device, description="levelling (images)", full_size=images.size
        )
        del small
        plane = fit_dominant_plane(h_units, g)
        level_model(model, plane, images.size)
        log.info("levelled to the dominant plane: slopes %.2e, %.2e; offset %.3g units", *plane)
    scale = resolve_scale(model, intrinsics, cfg)
    cell = mosaic_cell(model, scale, cfg, images.size)
    ortho, height, weight, grid = render_mosaic(
        model, images.pixels, cell, scale.height_factors, device, cfg.output.min_views, weights, "orthomosaic (images)"
    )
    log.info("orthomosaic %dx%d px at %.3g object units per pixel", grid.shape[1], grid.shape[0], grid.cell)
    seen = weight > 0.25 * grid.cell**2
    coverage = float(np.isfinite(height)[seen].mean()) if seen.any() else 0.0
    return Mosaic(ortho, height, weight, grid, scale, coverage)


def reconstruct(
    images: MesoImages,
    cfg: MesoConfig | None = None,
    progress: StepReporter | None = None,
    checkpoint: str | Path | None = None,
    resume: bool = False,
) -> MesoReconstruction:
    """Jointly register, stitch and rectify a phone sequence; return the orthomosaic and height map.

    Args:
        images: the ordered images (at least 2, one size).
        cfg: configuration (defaults when None).
        progress: receives the rounds (one counted step per iteration, with its loss) and the flow step's
            counted work (default: the reporter installed with :func:`topograph.progress.reporting`).
        checkpoint: file for resumable checkpoints (written atomically after every round and inside rounds
            every ``robust.save_interval_s``); None = no file.
        resume: continue the interrupted run saved in ``checkpoint`` (same images and settings); it ends
            where the uninterrupted run ends.

    Returns:
        The reconstruction (mosaic, heights in micrometres when the scale is known, cameras, history).

    Raises:
        TopographError: bad input (see :func:`topograph.meso.data.load_images`,
            :func:`~topograph.meso.data.resolve_intrinsics`,
            :func:`~topograph.meso.init_positions.estimate_initial_positions`), or ``resume`` without a
            checkpoint of this run.
    """
    cfg = cfg or MesoConfig()
    validate_config(cfg)
    if len(images) < 2:
        raise TopographError(f"the mesoscopic engine needs at least 2 images, got {len(images)}", "add images")
    if resume and checkpoint is None:
        raise TopographError("resuming needs a checkpoint file", "give the output folder of the earlier run")
    timings = Timings()
    with reporting(progress), timings.timed("checks_init"):
        device = select_device(cfg.device)
        torch.set_num_threads(cfg.threads if cfg.threads > 0 else max(1, os.cpu_count() or 1))
        torch.manual_seed(cfg.seed)
        # what a checkpoint must belong to: image names and shape, a pixel subsample, the computational settings
        fingerprint = digest(images.names, images.pixels.shape, images.pixels[:, ::7, ::7], computational_settings(cfg))
        if resume:  # refuse a foreign checkpoint before the (slower) checks and initialisation
            load_checkpoint(checkpoint, fingerprint)
        images, checks, intrinsics, init, cfg = check_and_initialise(images, cfg)
    model = start_model(images, intrinsics, init, cfg).to(device)
    blurry = checks.sharpness < cfg.checks.sharpness_ratio
    weights = np.where(blurry, cfg.checks.blurry_weight, 1.0) if blurry.any() else None
    with reporting(progress):
        rounds = run_rounds(
            model, images.pixels, cfg, round_levels(cfg, images.size), device=device,
            checkpoint=checkpoint, resume=resume, fingerprint=fingerprint, image_weights=weights, ties=init.ties,
        )  # fmt: skip
    model = rounds.model
    for name, seconds in rounds.timings.items():
        timings.add(name, seconds)
    model.eval()
    with reporting(progress), timings.timed("mosaic"):
        stage("registration check")
        registration, ncc, overlap = check_registration(model, images, cfg, device)
        residual_px = link_residuals(model, init.links, len(images))
        seams = seam_map(model, images.pixels, device=device)
        mosaic = finish(model, images, intrinsics, cfg, device, weights)
        coverage = enforce(height_gate(mosaic.height_coverage, cfg.checks), cfg.checks)
    quality = QualityReport((*rounds.gates, registration, coverage), ncc, overlap, residual_px)
    timings_s = dict(timings.frozen())
    model = model.cpu()
    return MesoReconstruction(
        names=images.names,
        ortho=mosaic.ortho,
        height=mosaic.height,
        weight=mosaic.weight,
        grid=mosaic.grid,
        scale=mosaic.scale,
        cameras=camera_estimate(model, images.names, mosaic.scale),
        intrinsics=intrinsics,
        checks=checks,
        init=init,
        model=model,
        history=rounds.history,
        config=cfg,
        timings=timings_s,
        image_size=images.size,
        quality=quality,
        seams=seams,
    )
