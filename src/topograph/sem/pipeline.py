"""The SEM pipeline: load → match → tracks → cameras → triangulate + bundle adjust → (dense) → outputs.

``run_sem`` is the Python API behind ``topograph sem``. Orchestration only: the work is in the stage
functions of :mod:`topograph.sem.sparse` and :mod:`topograph.sem.dense`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from topograph import __version__
from topograph.config import to_yaml
from topograph.errors import TopographError
from topograph.geometry.factorization import TiltUncertainty, relative_tilts, tilt_uncertainty
from topograph.hints import phrase
from topograph.io.atomic import write_json, write_text
from topograph.io.exports import write_ply
from topograph.io.images import describe_series, load_sem_series, series_warnings
from topograph.io.sidecar import MetadataOverrides
from topograph.io.stage_cache import StageCache, fingerprint
from topograph.io.staging import output_transaction
from topograph.sem.cameras import camera_model_failure, relative_tilts_about
from topograph.sem.config import SemConfig
from topograph.sem.relief import ReliefCheck, check_relief
from topograph.sem.sparse import (
    CameraEstimate,
    SparseMatches,
    camera_summary,
    estimate_cameras,
    match_series,
    refine,
    refine_tracks,
    series_tracks,
)
from topograph.types import ImageSet, Reconstruction

log = logging.getLogger("topograph")


@dataclass
class SemRun:
    """Everything a run produced (in memory); the files are in ``out_dir``."""

    images: ImageSet
    matches: SparseMatches
    cameras: CameraEstimate
    reconstruction: Reconstruction
    pixel_size_um: float | None
    unit: str
    out_dir: Path | None
    timings_s: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    dense: Any = None
    summary: dict[str, Any] = field(default_factory=dict)
    tilt_uncertainty: TiltUncertainty | None = None
    """Statistical and systematic uncertainty of factorization tilts (None for metadata cameras)."""
    relief: ReliefCheck | None = None
    """Height resolution of the series and the parallax of the specimen's relief."""
    cached_stages: list[str] = field(default_factory=list)
    """Stages whose result came from the run folder's cache instead of being recomputed."""
    camera_failure: str | None = None
    """Why the camera model failed (bundle adjustment above ``bundle.max_rms_px`` or rising), None when fine."""
    relief_failure: str | None = None
    """Why the relief's sign cannot be trusted (no grain above the substrate after a contested, weak or
    undecided depth branch), None when fine."""

    @property
    def failure(self) -> str | None:
        """The reason the result must not be used, or None."""
        return self.camera_failure or self.relief_failure

    @property
    def status(self) -> str:
        """ "ok", or "failed" when the camera model or the relief sign failed (the CLI then exits with status 4)."""
        return "failed" if self.failure else "ok"


def series_pixel_size_um(images: ImageSet) -> float | None:
    """The pixel size shared by the series (µm), or None when any view lacks one."""
    sizes = [im.metadata.pixel_size_um for im in images.images]
    if any(s is None for s in sizes):
        return None
    return float(sizes[0])


def series_tilt_axis_deg(images: ImageSet) -> float | None:
    axes = [im.metadata.tilt_axis_deg for im in images.images if im.metadata.tilt_axis_deg is not None]
    return float(axes[0]) if axes else None


StageHook = Callable[[str], None]


def series_fingerprint(images: ImageSet) -> str:
    """Digest of the loaded series: pixels after cropping and histogram matching, plus the metadata used.

    Hashing what was loaded (not the files) covers the load options, the sidecar and the CLI overrides.
    """
    h = hashlib.sha256()
    for im in images.images:
        h.update(im.name.encode())
        h.update(str((im.pixels.shape, im.pixels.dtype.str)).encode())
        h.update(np.ascontiguousarray(im.pixels).data)
        meta = {k: v for k, v in dataclasses.asdict(im.metadata).items() if k not in ("source", "original")}
        h.update(json.dumps(meta, sort_keys=True, default=str).encode())
    return h.hexdigest()


def run_sem(
    inputs: str | Path | Sequence[str | Path],
    out_dir: str | Path | None,
    cfg: SemConfig | None = None,
    overrides: MetadataOverrides | None = None,
    sidecar: str | Path | None = None,
    command: str | None = None,
    on_stage: StageHook | None = None,
    on_loaded: Callable[[ImageSet], None] | None = None,
    use_cache: bool = True,
) -> SemRun:
    """Reconstruct a tilt series; ``out_dir`` is checked and locked before any compute and replaced as a
    whole when the run succeeds (:func:`topograph.io.staging.output_transaction`).

    The arguments are those of :func:`_run_sem`.
    """
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]  # one path, not a sequence of its characters
    args = (inputs, out_dir, cfg, overrides, sidecar, command, on_stage, on_loaded, use_cache)
    if out_dir is None:
        return _run_sem(*args, stage_dir=None)
    with output_transaction(out_dir, [*inputs, *([sidecar] if sidecar else [])]) as stage_dir:
        run = _run_sem(*args, stage_dir=stage_dir)
    log.info("results written to %s (report: %s)", out_dir, Path(out_dir) / "report.html")
    return run


def _run_sem(
    inputs: Sequence[str | Path],
    out_dir: str | Path | None,
    cfg: SemConfig | None = None,
    overrides: MetadataOverrides | None = None,
    sidecar: str | Path | None = None,
    command: str | None = None,
    on_stage: StageHook | None = None,
    on_loaded: Callable[[ImageSet], None] | None = None,
    use_cache: bool = True,
    stage_dir: Path | None = None,
) -> SemRun:
    """Reconstruct a tilt series.

    Args:
        inputs: image files, or one folder (a single path is taken as a one-item list).
        out_dir: output folder (written only when the run succeeds), or None to keep results in memory.
        cfg: configuration (defaults when None).
        overrides: tilts / tilt axis / pixel size given on the command line (they win over file tags).
        sidecar: YAML/JSON file with metadata for the series.
        command: the command line, saved for reproducibility.
        on_stage: called with the name of each stage as it starts (progress display).
        on_loaded: called with the loaded series before matching (to show the parsed metadata).
        use_cache: reuse the sparse stages (matching, cameras, bundle adjustment) cached in ``out_dir/cache``
            by an earlier run with the same images and the same settings of those stages.
        stage_dir: the staging folder the files are written into (None: keep the results in memory).

    Returns:
        The :class:`SemRun` with cameras, sparse cloud, quality figures and (when enabled) the dense results.
    """
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    cfg = cfg or SemConfig()
    stage = on_stage or (lambda name: None)
    timings: dict[str, float] = {}
    t_all = time.perf_counter()

    stage("load")
    t0 = time.perf_counter()
    images = load_sem_series(
        inputs,
        overrides=overrides,
        sidecar=Path(sidecar) if sidecar else None,
        crop_rows=cfg.load.crop_rows,
        auto_crop=cfg.load.auto_crop,
        histogram_match=cfg.load.histogram_match,
        min_images=2,
    )
    if on_loaded is not None:
        on_loaded(images)
    warnings = series_warnings(images)
    for w in warnings:
        log.warning(w)
    pixel_size = series_pixel_size_um(images)
    unit = "um" if pixel_size is not None else "px"
    if pixel_size is None:
        log.warning("no pixel size known: the cloud is in pixel units (give --pixel-size-um for µm)")
    timings["load"] = time.perf_counter() - t0

    store = StageCache(out_dir, enabled=use_cache)
    sparse_fp = fingerprint("sparse", series_fingerprint(images), cfg.matching, cfg.cameras, cfg.bundle)
    cached = store.load("sparse", sparse_fp)
    if cached is not None:
        matches, cams, recon, tilt_error = cached
        for note in cams.notes:
            log.info(note)
        for w in cams.warnings:
            log.warning(w)
    else:
        stage("match")
        t0 = time.perf_counter()
        matches = match_series(images, cfg.matching)
        tracks = series_tracks(images, matches)
        if cfg.matching.refine_tracks:
            method = cfg.matching.track_refinement
            if method == "auto":  # tilts measured from the tracks need the precise positions
                method = "affine" if any(t is None for t in images.tilts_deg) else "lk"
            tracks = refine_tracks(images, tracks, method, max(1.0, matches.detection_downscale))
        timings["match"] = time.perf_counter() - t0

        stage("cameras")
        t0 = time.perf_counter()
        cams = estimate_cameras(images, tracks, matches, cfg.cameras, series_tilt_axis_deg(images), pixel_size)
        for note in cams.notes:
            log.info(note)
        timings["cameras"] = time.perf_counter() - t0

        stage("bundle")
        t0 = time.perf_counter()
        recon = refine(cams.cameras, tracks, cfg.bundle, unit, cams.source, cams.notes)
        cams, recon = tilts_about_estimated_axis(cams, recon)
        timings["bundle"] = time.perf_counter() - t0
        tilt_error = factorization_tilt_uncertainty(recon, cfg)
        store.save("sparse", sparse_fp, (matches, cams, recon, tilt_error))
    warnings.extend(cams.warnings)
    failure = camera_model_failure(recon.rms_px_before, recon.rms_px_after, cfg.bundle.max_rms_px)
    if failure is not None:
        warnings.append(failure)
        log.warning(failure)
    _log_cameras(images, recon)
    relief = check_relief(recon)
    log.info(relief.describe(pixel_size))
    if (low_parallax := relief.warning()) is not None:
        warnings.append(low_parallax)
        log.warning(low_parallax)
    if tilt_error is not None:
        log.info(tilt_error.describe())
        if not tilt_error.consistent:
            warnings.append(
                "the recovered tilts depend on the image region by up to ± "
                + ", ".join(f"{v:.2f}" for v in tilt_error.region_spread_deg)
                + "° (the views deform beyond the affine model, e.g. scan drift): "
                "take the tilts with that uncertainty, or give the stage tilts with --tilts"
            )
            log.warning(warnings[-1])

    warnings = [phrase(w) for w in warnings]  # arguments, not --flags, for Python callers
    run = SemRun(images, matches, cams, recon, pixel_size, unit, Path(out_dir) if out_dir else None, timings, warnings)
    run.cached_stages = store.hits
    run.tilt_uncertainty = tilt_error
    run.relief = relief
    run.camera_failure = failure

    if cfg.dense.enabled:
        from topograph.sem.dense import run_dense

        stage("dense")
        t0 = time.perf_counter()
        run.dense = run_dense(images, recon, cfg.dense, pixel_size)
        timings["dense"] = time.perf_counter() - t0
        if not cfg.dense.mask:
            from topograph.analysis.grain_mask import implausible_mask

            finite = np.isfinite(run.dense.points_grid).all(axis=2)
            if (refusal := implausible_mask(run.dense.grain_mask, finite)) is not None:
                run.warnings.append(refusal)
                branch = getattr(cams, "branch", None)
                if branch is not None and not branch.trusted:
                    run.relief_failure = (
                        f"untrusted relief: no grain stands above the substrate and the depth branch was "
                        f"{branch.confidence} ({branch.rule}) — the result may be upside down; choose the relief "
                        "with --relief protrude|recess or --flip-relief, or give --tilts with --tilt-axis-deg"
                    )
                    run.warnings.append(run.relief_failure)
                    log.warning(run.relief_failure)

    timings["total"] = time.perf_counter() - t_all
    run.summary = build_summary(run, cfg, command)
    if stage_dir is not None:
        from topograph.report.html import write_report

        stage("write")
        write_outputs(run, cfg, stage_dir, command)
        store.write(stage_dir)
        write_report(stage_dir)  # inside the transaction: OUT never lacks its report
    return run


def tilts_about_estimated_axis(cams: CameraEstimate, recon: Reconstruction) -> tuple[CameraEstimate, Reconstruction]:
    """Tilt axis and relative tilts of the adjusted cameras, the axis pointing the way the estimate chose
    (near ±90° the line's canonical direction could otherwise flip and with it every tilt sign)."""
    _, axis, _ = relative_tilts(recon.cameras)
    if np.cos(np.deg2rad(axis - cams.tilt_axis_deg)) < 0:
        axis = axis + 180.0 if axis <= 0 else axis - 180.0
    tilts = relative_tilts_about(recon.cameras, axis)
    return dataclasses.replace(cams, tilt_axis_deg=float(axis)), dataclasses.replace(recon, tilts_deg=tilts)


def factorization_tilt_uncertainty(recon: Reconstruction, cfg: SemConfig) -> TiltUncertainty | None:
    """Bootstrap and image-region uncertainty of tilts recovered by factorization (None otherwise).

    With a few small tilts the angle is seen only through second-order foreshortening, so a deformation
    of the images as small as 0.1 % shifts it by several per cent; the region split reveals it.
    """
    complete = int(recon.tracks.visible.all(axis=0).sum())
    if recon.camera_source != "factorization" or recon.tracks.n_views < 3 or complete < 40:
        return None
    return tilt_uncertainty(recon.tracks, cfg.cameras.model, reference_tilts_deg=recon.tilts_deg, n_bootstrap=40)


def _log_cameras(images: ImageSet, recon: Reconstruction) -> None:
    for f, im in enumerate(images.images):
        log.info(
            "view %d %s after bundle adjustment: tilt %+.3f° rel. to view 0, scale %.5f; "
            "reprojection RMS before → after %.3f → %.3f px",
            f,
            im.name,
            recon.tilts_deg[f],
            recon.cameras[f].scale,
            recon.rms_px_before[f],
            recon.rms_px_after[f],
        )


def build_summary(run: SemRun, cfg: SemConfig, command: str | None) -> dict[str, Any]:
    """Machine-readable summary of a run (also written as summary.json)."""
    recon = run.reconstruction
    full = recon.tracks.visible.all(axis=0)
    summary: dict[str, Any] = {
        "topograph_version": __version__,
        "engine": "sem",
        "status": run.status,
        "camera_model_failure": run.camera_failure,
        "relief_failure": run.relief_failure,
        "command": command,
        "images": [im.name for im in run.images.images],
        "unit": run.unit,
        "pixel_size_um": run.pixel_size_um,
        "camera_source": recon.camera_source,
        "tilt_axis_deg": run.cameras.tilt_axis_deg,
        "frame": "right-handed; X along image x, Y along image up, Z toward the detector (docs/conventions.md)",
        "camera_checks": run.cameras.summary() if hasattr(run.cameras, "summary") else None,
        "relative_tilts_deg": recon.tilts_deg,
        "relative_tilts_uncertainty_deg": _uncertainty_summary(run.tilt_uncertainty),
        "height_resolution": run.relief.summary(run.pixel_size_um) if run.relief is not None else None,
        "scales": [c.scale for c in recon.cameras],
        "n_tracks": recon.tracks.n_tracks,
        "n_tracks_all_views": int(full.sum()),
        "reprojection_rms_px_before": recon.rms_px_before,
        "reprojection_rms_px_after": recon.rms_px_after,
        "match_counts": run.matches.counts,
        "notes": list(recon.notes),
        "warnings": run.warnings,
        "timings_s": run.timings_s,
        "cached_stages": list(run.cached_stages),
    }
    summary["frame"] = output_frame(run)
    if run.dense is not None and hasattr(run.dense, "summary"):
        summary["dense"] = run.dense.summary()
    return summary


SPARSE_FRAME = (
    "reconstruction frame (no dense stage, so no substrate plane): x, y, z of the cameras' world — the "
    "stage for metadata cameras, view 0 for factorization"
)


def output_frame(run: SemRun) -> str:
    """The frame every 3-D file of the run is written in (docs/outputs.md)."""
    if run.dense is not None and hasattr(run.dense, "to_output_frame"):
        from topograph.sem.dense import FRAME

        return FRAME
    return SPARSE_FRAME


def _uncertainty_summary(u: TiltUncertainty | None) -> dict[str, Any] | None:
    if u is None:
        return None
    return {
        "total": u.uncertainty_deg,
        "statistical": u.statistical_deg,
        "image_region_spread": u.region_spread_deg,
        "consistent_across_image": bool(u.consistent),
        "n_tracks": int(u.n_tracks),
        "method": "bootstrap over complete tracks; halves of the image along and across the tilt axis",
    }


def write_outputs(run: SemRun, cfg: SemConfig, out: Path, command: str | None) -> None:
    """Write every artefact of a run into ``out`` (a staging folder)."""
    from topograph.geometry.triangulation import reprojection_residuals
    from topograph.report.match_figures import draw_match_count_matrix, draw_matches
    from topograph.report.svg_charts import histogram_svg
    from topograph.report.thumbnails import write_thumbnails

    recon = run.reconstruction
    unit_text = "micrometres" if run.unit == "um" else "pixel units of view 0 (no pixel size known)"
    to_output = getattr(run.dense, "to_output_frame", None)  # the dense stage's substrate frame, if any
    sparse = recon.points
    if to_output is not None:
        sparse = dataclasses.replace(sparse, xyz=to_output(sparse.xyz), normals=None)
    frame_name = "substrate" if to_output is not None else "reconstruction"
    write_ply(
        out / "sparse.ply",
        sparse,
        comments=[
            f"topograph {__version__} sparse SEM cloud",
            f"unit {run.unit}",
            f"unit_description {unit_text}",
            f"frame {frame_name}",
        ],
    )
    cameras = {
        "unit": run.unit,
        "pixel_size_um": run.pixel_size_um,
        "model": "x = k [[1,0,0],[s,1,0]] R X + t",
        "source": recon.camera_source,
        "tilt_axis_deg": run.cameras.tilt_axis_deg,
        "frame": "cameras map reconstruction-frame points X; output files are in the frame below",
        "output_frame": output_frame(run),
        "reconstruction_to_output": run.dense.output_transform() if to_output is not None else np.eye(4),
        "notes": list(recon.notes),
        "views": [
            {
                "name": im.name,
                "metadata_tilt_deg": im.metadata.tilt_deg,
                "relative_tilt_deg": float(recon.tilts_deg[f]),
                "reprojection_rms_px_before": float(recon.rms_px_before[f]),
                "reprojection_rms_px_after": float(recon.rms_px_after[f]),
                **camera_summary(recon.cameras)[f],
            }
            for f, im in enumerate(run.images.images)
        ],
    }
    write_json(out / "cameras.json", cameras)
    names = run.images.names
    figs = out / "figures"
    for p in run.matches.pairs:
        i, j = p.raw.i, p.raw.j
        draw_matches(
            run.images[i].pixels, run.images[j].pixels, p.raw, figs / f"matches_{i}_{j}.jpg", inlier_mask=p.inlier_mask
        )
    draw_match_count_matrix(run.matches.counts, names, figs / "match_counts.png")
    residual_px = np.linalg.norm(reprojection_residuals(recon.cameras, recon.points.xyz, recon.tracks), axis=2)
    samples = {f"{f}: {names[f]}": [float(v) for v in residual_px[f] if np.isfinite(v)] for f in range(len(names))}
    write_text(
        figs / "reprojection_residuals.svg",
        histogram_svg(samples, "reprojection residual after bundle adjustment (px)"),
    )
    header = "," + ",".join(names)
    rows = [header] + [names[f] + "," + ",".join(str(int(c)) for c in run.matches.counts[f]) for f in range(len(names))]
    write_text(out / "match_counts.csv", "\n".join(rows) + "\n")
    write_json(out / "series.json", describe_series(run.images))
    write_thumbnails([im.pixels for im in run.images.images], names, out / "thumbnails")
    write_text(out / "config.yaml", to_yaml(cfg))
    if run.dense is not None:
        run.dense.write(out, run)
    write_json(out / "summary.json", run.summary)


def command_line() -> str:
    """The command as typed (for reproducibility records)."""
    return " ".join(["topograph", *sys.argv[1:]])


def require_inputs(inputs: Sequence[str | Path]) -> None:
    if not inputs:
        raise TopographError("no input images given", "pass image files or a folder: topograph sem IMAGES... -o OUT")
