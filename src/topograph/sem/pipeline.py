"""The SEM pipeline: load → match → tracks → cameras → triangulate + bundle adjust → (dense) → outputs.

``run_sem`` is the Python API behind ``topograph sem``. Orchestration only: the work is in the stage
functions of :mod:`topograph.sem.sparse` and :mod:`topograph.sem.dense`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from threadpoolctl import threadpool_limits

from topograph import __version__
from topograph.config import to_yaml
from topograph.errors import TopographError
from topograph.fingerprint import digest
from topograph.geometry.factorization import TiltUncertainty, relative_tilts, tilt_uncertainty
from topograph.geometry.tracks import spread_subset
from topograph.heap import SEM_RUN, reused_heap
from topograph.hints import phrase
from topograph.io.atomic import write_json, write_text
from topograph.io.exports import write_ply
from topograph.io.images import describe_series, load_sem_series, series_warnings
from topograph.io.sidecar import MetadataOverrides
from topograph.io.stage_cache import StageCache
from topograph.io.staging import output_transaction
from topograph.progress import StepReporter, reporting, stage
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
from topograph.timing import Timings
from topograph.types import ImageSet, Reconstruction, Tracks

if TYPE_CHECKING:
    from topograph.sem.dense import DenseResult

log = logging.getLogger("topograph")

BLAS_THREADS = 1
"""BLAS threads during an SEM run. The engine's linear algebra is many small problems (bundle adjustment,
8 × 8 patch normal equations, 3 × 3 fits) for which OpenBLAS's worker threads only spin: on quartz they
burned ~6 of 35 CPU-seconds and slowed the bundle adjustment from 0.2 to 6 s wall on a busy machine. The
work that can use both cores runs in threads of its own (flows, patch alignment, output writers)."""


def blas_threads_limited() -> threadpool_limits:
    """Context that holds every BLAS library at :data:`BLAS_THREADS` threads (scipy's own OpenBLAS is
    loaded first: a limit covers only the libraries loaded when it is set)."""
    import scipy.linalg  # noqa: F401

    return threadpool_limits(limits=BLAS_THREADS, user_api="blas")


def run_threads(cfg: SemConfig) -> int:
    """CPU threads of a run: ``cfg.threads``, 0 = every core."""
    return int(cfg.threads) if cfg.threads > 0 else max(1, os.cpu_count() or 1)


@contextlib.contextmanager
def opencv_threads(n: int) -> Iterator[None]:
    """OpenCV's thread count held at ``n`` during a run (restored afterwards); the flows lower it to one per
    solve where they run solves side by side (:func:`topograph.matching.dense.opencv_threads`)."""
    from topograph.matching.dense import opencv_threads as hold

    with hold(n):
        yield


@dataclass(frozen=True)
class SparseResult:
    """What the sparse stages produce (and the run folder's cache keeps): matches, cameras, the adjusted
    reconstruction and the uncertainty of factorization tilts."""

    matches: SparseMatches
    cameras: CameraEstimate
    reconstruction: Reconstruction
    tilt_uncertainty: TiltUncertainty | None


@dataclass(frozen=True)
class SemRun:
    """Everything an SEM run produced, built once when the computation is done; the files are in ``out_dir``.

    The fields every engine's run record has (:class:`topograph.run_record.RunRecord`): ``engine``,
    ``out_dir``, ``command``, ``config``, ``status``, ``warnings``, ``timings_s`` and ``summary``.
    """

    images: ImageSet
    matches: SparseMatches
    cameras: CameraEstimate
    reconstruction: Reconstruction
    pixel_size_um: float | None
    unit: str
    out_dir: Path | None
    config: SemConfig
    command: str | None
    timings_s: Mapping[str, float]
    """Seconds per stage (``load``, ``match``, ``cameras``, ``bundle``, ``dense``) and ``total``."""
    warnings: tuple[str, ...]
    dense: DenseResult | None
    """Dense cloud, height map, meshes and grain metrics (None with ``dense.enabled: false``)."""
    tilt_uncertainty: TiltUncertainty | None
    """Statistical and systematic uncertainty of factorization tilts (None for metadata cameras)."""
    relief: ReliefCheck
    """Height resolution of the series and the parallax of the specimen's relief."""
    cached_stages: tuple[str, ...]
    """Stages whose result came from the run folder's cache instead of being recomputed."""
    camera_failure: str | None
    """Why the camera model failed (bundle adjustment above ``bundle.max_rms_px`` or rising), None when fine."""
    relief_failure: str | None
    """Why the relief's sign cannot be trusted (no grain above the substrate after a contested, weak or
    undecided depth branch), None when fine."""
    engine: Literal["sem"] = "sem"

    @property
    def failure(self) -> str | None:
        """The reason the result must not be used, or None."""
        return self.camera_failure or self.relief_failure

    @property
    def status(self) -> Literal["ok", "failed"]:
        """ "ok", or "failed" when the camera model or the relief sign failed (the CLI then exits with status 4)."""
        return "failed" if self.failure else "ok"

    @functools.cached_property
    def summary(self) -> dict[str, object]:
        """Machine-readable summary of the run (also written as summary.json)."""
        return build_summary(self)


def series_pixel_size_um(images: ImageSet) -> float | None:
    """The pixel size shared by the series (µm), or None when any view lacks one."""
    sizes = [im.metadata.pixel_size_um for im in images.images]
    if any(s is None for s in sizes):
        return None
    return float(sizes[0])


def series_tilt_axis_deg(images: ImageSet) -> float | None:
    axes = [im.metadata.tilt_axis_deg for im in images.images if im.metadata.tilt_axis_deg is not None]
    return float(axes[0]) if axes else None


def series_fingerprint(images: ImageSet) -> str:
    """Digest of the loaded series: pixels after cropping and histogram matching, plus the metadata used.

    Hashing what was loaded (not the files) covers the load options, the sidecar and the CLI overrides.
    """
    return digest(
        [
            (im.name, im.pixels, {k: v for k, v in dataclasses.asdict(im.metadata).items() if k not in _NOT_HASHED})
            for im in images.images
        ]
    )


_NOT_HASHED = ("source", "original")
"""Metadata that does not change the computation (where a value came from, the raw tags)."""


def run_sem(
    inputs: str | Path | Sequence[str | Path],
    out_dir: str | Path | None,
    cfg: SemConfig | None = None,
    *,
    command: str | None = None,
    progress: StepReporter | None = None,
    overrides: MetadataOverrides | None = None,
    sidecar: str | Path | None = None,
    on_loaded: Callable[[ImageSet], None] | None = None,
    use_cache: bool = True,
) -> SemRun:
    """Reconstruct a tilt series.

    ``out_dir`` is checked and locked before any compute and replaced as a whole when the run succeeds
    (:func:`topograph.io.staging.output_transaction`).

    Args:
        inputs: image files, or one folder (a single path is taken as a one-item list).
        out_dir: output folder (written only when the run succeeds), or None to keep results in memory.
        cfg: configuration (defaults when None).
        command: the command line, saved for reproducibility.
        progress: receives the stages and counted steps (default: the reporter installed with
            :func:`topograph.progress.reporting`, if any).
        overrides: tilts / tilt axis / pixel size given on the command line (they win over file tags).
        sidecar: YAML/JSON file with metadata for the series.
        on_loaded: called with the loaded series before matching (to show the parsed metadata).
        use_cache: reuse the sparse stages (matching, cameras, bundle adjustment) cached in ``out_dir/cache``
            by an earlier run with the same images and the same settings of those stages.

    Returns:
        The :class:`SemRun` with cameras, sparse cloud, quality figures and (when enabled) the dense results.
    """
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]  # one path, not a sequence of its characters
    cfg = cfg or SemConfig()
    args = SemInputs(list(inputs), cfg, command, overrides, Path(sidecar) if sidecar else None, on_loaded, use_cache)
    with reporting(progress), blas_threads_limited(), opencv_threads(run_threads(cfg)), reused_heap(SEM_RUN):
        if out_dir is None:
            return _run_sem(args, None, None)
        with (
            output_transaction(out_dir, [*inputs, *([sidecar] if sidecar else [])]) as stage_dir,
            ThreadPoolExecutor(max_workers=1) as writer,  # finished before the transaction ends
        ):
            run = _run_sem(args, Path(out_dir), stage_dir, writer if run_threads(cfg) > 1 else None)
    log.info("results written to %s (report: %s)", out_dir, Path(out_dir) / "report.html")
    return run


@dataclass(frozen=True)
class SemInputs:
    """The arguments of one :func:`run_sem` call."""

    inputs: list[str | Path]
    cfg: SemConfig
    command: str | None
    overrides: MetadataOverrides | None
    sidecar: Path | None
    on_loaded: Callable[[ImageSet], None] | None
    use_cache: bool


def _run_sem(
    args: SemInputs, out_dir: Path | None, stage_dir: Path | None, writer: ThreadPoolExecutor | None = None
) -> SemRun:
    """Compute the run and, with ``stage_dir``, write its files there (see :func:`run_sem`); ``writer``: a
    thread that writes files while the computation goes on."""
    cfg = args.cfg
    timings = Timings()

    # the tracks' and bundle adjustment's scipy modules load beside the images' loading and matching, the
    # meshes' modules (dense stage) after them
    preload = preload_modules(later_modules(cfg.dense.enabled), first=SPARSE_MODULES)
    stage("load")
    with timings.timed("load"):
        images = load_sem_series(
            args.inputs,
            overrides=args.overrides,
            sidecar=args.sidecar,
            crop_rows=cfg.load.crop_rows,
            auto_crop=cfg.load.auto_crop,
            histogram_match=cfg.load.histogram_match,
            min_images=2,
        )
        if args.on_loaded is not None:
            args.on_loaded(images)
        warnings = series_warnings(images)
        for w in warnings:
            log.warning(w)
        pixel_size = series_pixel_size_um(images)
        unit = "um" if pixel_size is not None else "px"
        if pixel_size is None:
            log.warning("no pixel size known: the cloud is in pixel units (give --pixel-size-um for µm)")

    store = StageCache(out_dir, enabled=args.use_cache)
    sparse_key = store.key("sparse", series_fingerprint(images), cfg.matching, cfg.cameras, cfg.bundle)
    sparse = store.load("sparse", sparse_key)
    if isinstance(sparse, SparseResult):
        for note in sparse.cameras.notes:
            log.info(note)
        for w in sparse.cameras.warnings:
            log.warning(w)
    else:
        sparse = sparse_stages(images, cfg, pixel_size, unit, timings, preload.first_loaded)
        store.save("sparse", sparse_key, sparse)
    cams, recon, tilt_error = sparse.cameras, sparse.reconstruction, sparse.tilt_uncertainty
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

    preload.join()  # its modules are the dense stage's: never imported from two threads at once
    figures = None  # the series' figures need only the sparse result: written beside the dense stage
    if stage_dir is not None and writer is not None:
        figures = writer.submit(write_series_figures, images, sparse.matches, recon, stage_dir)
    dense = None
    relief_failure: str | None = None
    if cfg.dense.enabled:
        from topograph.sem.dense import run_dense

        stage("dense")
        with timings.timed("dense"):
            dense = run_dense(images, recon, cfg.dense, pixel_size, run_threads(cfg))
        warnings.extend(dense.warnings)  # logged by the dense stage
        if not cfg.dense.mask:
            from topograph.analysis.grain_mask import implausible_mask

            finite = np.isfinite(dense.points_grid).all(axis=2)
            if (refusal := implausible_mask(dense.grain_mask, finite)) is not None:
                warnings.append(refusal)
                branch = cams.branch
                if branch is not None and not branch.trusted:
                    relief_failure = (
                        f"untrusted relief: no grain stands above the substrate and the depth branch was "
                        f"{branch.confidence} ({branch.rule}) — the result may be upside down; choose the "
                        "relief with --relief protrude|recess or --flip-relief, or give --tilts with --tilt-axis-deg"
                    )
                    warnings.append(relief_failure)
                    log.warning(relief_failure)

    run = SemRun(
        images=images,
        matches=sparse.matches,
        cameras=cams,
        reconstruction=recon,
        pixel_size_um=pixel_size,
        unit=unit,
        out_dir=out_dir,
        config=cfg,
        command=args.command,
        timings_s=timings.frozen(),
        warnings=tuple(warnings),
        dense=dense,
        tilt_uncertainty=tilt_error,
        relief=relief,
        cached_stages=tuple(store.hits),
        camera_failure=failure,
        relief_failure=relief_failure,
    )
    if stage_dir is not None:
        from topograph.report.html import write_report

        stage("write")
        if figures is not None:
            figures.result()
        write_outputs(run, stage_dir, series_figures=figures is None)
        store.write(stage_dir)
        write_report(stage_dir)  # inside the transaction: OUT never lacks its report
    return run


MESH_MODULES = ("trimesh", "manifold3d")
"""Third-party modules of the dense stage's meshes: ~0.2–0.35 CPU-s of imports (with networkx, scipy.spatial
…) that :func:`preload_modules` takes off the critical path. The output writers' matplotlib (~0.3 CPU-s) is
not preloaded: imported early it would sit in memory through the dense stage's peak (+28 MB on quartz)."""


def later_modules(dense: bool) -> tuple[str, ...]:
    """The third-party modules a run imports after its sparse stages that :func:`preload_modules` loads."""
    return MESH_MODULES if dense else ()


SPARSE_MODULES = ("scipy.sparse.csgraph", "scipy.optimize")
"""Third-party modules of the tracks (connected components) and the bundle adjustment: ~0.4 CPU-s of
imports that :func:`preload_modules` loads beside the images' loading and the matching (OpenCV's SIFT
releases the GIL) instead of before them."""


class PreloadThread(threading.Thread):
    """The thread of :func:`preload_modules`; ``first_loaded`` is set once its ``first`` modules are in."""

    first_loaded: threading.Event


def preload_modules(names: Sequence[str], first: Sequence[str] = ()) -> PreloadThread:
    """Import ``first``, then ``names``, in a thread beside the run's own work (whose OpenCV and numpy work
    releases the GIL), so their imports leave the critical path; wait for ``first_loaded`` (``first``) or
    join the thread (all) before anything else imports them. A module that fails to import is left to the
    code that needs it (it then says why)."""
    ready = threading.Event()

    def load() -> None:
        try:
            for name in first:
                with contextlib.suppress(Exception):
                    importlib.import_module(name)
        finally:
            ready.set()
        for name in names:
            with contextlib.suppress(Exception):
                importlib.import_module(name)

    thread = PreloadThread(target=load, name="topograph-preload", daemon=True)
    thread.first_loaded = ready
    thread.start()
    return thread


def sparse_stages(
    images: ImageSet,
    cfg: SemConfig,
    pixel_size_um: float | None,
    unit: str,
    timings: Timings,
    modules_loaded: threading.Event | None = None,
) -> SparseResult:
    """Match → tracks → cameras → triangulation and bundle adjustment → tilt uncertainty
    (``modules_loaded``: set when :data:`SPARSE_MODULES` are imported by a :func:`preload_modules` thread)."""
    stage("match")
    with timings.timed("match"):
        matches = match_series(images, cfg.matching)
        if modules_loaded is not None:
            modules_loaded.wait()  # never imported from two threads at once
        tracks = series_tracks(images, matches)
        if cfg.matching.refine_tracks:
            method = cfg.matching.track_refinement
            if method == "auto":  # tilts measured from the tracks need the precise positions
                method = "affine" if any(t is None for t in images.tilts_deg) else "lk"
            if method == "affine":
                tracks = affine_subset(tracks, cfg.matching.affine_max_tracks)
            tracks = refine_tracks(images, tracks, method, max(1.0, matches.detection_downscale), run_threads(cfg))
            tracks = seen_twice(tracks)

    stage("cameras")
    with timings.timed("cameras"):
        cams = estimate_cameras(images, tracks, matches, cfg.cameras, series_tilt_axis_deg(images), pixel_size_um)
        for note in cams.notes:
            log.info(note)

    stage("bundle")
    with timings.timed("bundle"):
        recon = refine(cams.cameras, tracks, cfg.bundle, unit, cams.source, cams.notes)
        cams, recon = tilts_about_estimated_axis(cams, recon)
    return SparseResult(matches, cams, recon, factorization_tilt_uncertainty(recon, cfg))


def seen_twice(tracks: Tracks) -> Tracks:
    """The tracks still seen in two views or more (the refinement drops the observations it cannot refine)."""
    keep = tracks.visible.sum(axis=0) >= 2
    return tracks if keep.all() else Tracks(tracks.xy[:, keep])


def affine_subset(tracks: Tracks, max_tracks: int) -> Tracks:
    """The tracks the affine refinement refines (``matching.affine_max_tracks``, spread over the image)."""
    keep = spread_subset(tracks, max_tracks)
    if keep.size < tracks.n_tracks:
        log.info("affine track refinement: %d of %d tracks, spread over the image", keep.size, tracks.n_tracks)
        return Tracks(tracks.xy[:, keep])
    return tracks


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


def build_summary(run: SemRun) -> dict[str, object]:
    """Machine-readable summary of a run (also written as summary.json)."""
    recon = run.reconstruction
    full = recon.tracks.visible.all(axis=0)
    summary: dict[str, object] = {
        "topograph_version": __version__,
        "engine": "sem",
        "status": run.status,
        "camera_model_failure": run.camera_failure,
        "relief_failure": run.relief_failure,
        "command": run.command,
        "images": [im.name for im in run.images.images],
        "unit": run.unit,
        "pixel_size_um": run.pixel_size_um,
        "camera_source": recon.camera_source,
        "tilt_axis_deg": run.cameras.tilt_axis_deg,
        "frame": "right-handed; X along image x, Y along image up, Z toward the detector (docs/conventions.md)",
        "camera_checks": run.cameras.summary(),
        "relative_tilts_deg": recon.tilts_deg,
        "relative_tilts_uncertainty_deg": _uncertainty_summary(run.tilt_uncertainty),
        "height_resolution": run.relief.summary(run.pixel_size_um),
        "scales": [c.scale for c in recon.cameras],
        "n_tracks": recon.tracks.n_tracks,
        "n_tracks_all_views": int(full.sum()),
        "reprojection_rms_px_before": recon.rms_px_before,
        "reprojection_rms_px_after": recon.rms_px_after,
        "match_counts": run.matches.counts,
        "notes": list(recon.notes),
        "warnings": list(run.warnings),
        "timings_s": dict(run.timings_s),
        "cached_stages": list(run.cached_stages),
    }
    summary["frame"] = output_frame(run)
    if run.dense is not None:
        summary["dense"] = run.dense.summary()
    return summary


SPARSE_FRAME = (
    "reconstruction frame (no dense stage, so no substrate plane): x, y, z of the cameras' world — the "
    "stage for metadata cameras, view 0 for factorization"
)


def output_frame(run: SemRun) -> str:
    """The frame every 3-D file of the run is written in (docs/outputs.md)."""
    if run.dense is not None:
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


def write_outputs(run: SemRun, out: Path, series_figures: bool = True) -> None:
    """Write every artefact of a run into ``out`` (a staging folder); ``series_figures`` False: the files of
    :func:`write_series_figures` are written already."""
    recon = run.reconstruction
    unit_text = "micrometres" if run.unit == "um" else "pixel units of view 0 (no pixel size known)"
    to_output = run.dense.to_output_frame if run.dense is not None else None  # the substrate frame, if any
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
        "reconstruction_to_output": run.dense.output_transform() if run.dense is not None else np.eye(4),
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
    if series_figures:
        write_series_figures(run.images, run.matches, recon, out)
    write_text(out / "config.yaml", to_yaml(run.config))
    summary = run.summary
    if run.dense is not None:
        # the file writes are timed by the dense stage's writer; summary.json lists them with its steps
        summary["dense"]["timings_s"].update(run.dense.write(out, dense_write_threads(run)))  # type: ignore[index]
    write_json(out / "summary.json", summary)


PARALLEL_WRITE_MAX_PX = 2_000_000
"""The dense files are written side by side up to this many reference pixels, or when the series is within the
dense stage's side-by-side memory budget (:attr:`DenseResult.side_by_side`, e.g. 3 × 4 MP); else in turn
(each holds copies of the cloud or mesh: side by side they raised the peak memory of a 7 × 3 MP series)."""


def dense_write_threads(run: SemRun) -> int:
    """Threads writing the dense files (:data:`PARALLEL_WRITE_MAX_PX`)."""
    dense = run.dense
    small = dense is not None and (dense.n_views_grid.size <= PARALLEL_WRITE_MAX_PX or dense.side_by_side)
    return run_threads(run.config) if small else 1


def write_series_figures(images: ImageSet, matches: SparseMatches, recon: Reconstruction, out: Path) -> None:
    """The files of a run that need only its sparse result: match figures and counts, the reprojection
    residuals, series.json and the thumbnails."""
    from topograph.geometry.triangulation import reprojection_residuals
    from topograph.report.match_figures import draw_match_count_matrix, draw_matches
    from topograph.report.svg_charts import histogram_svg
    from topograph.report.thumbnails import write_thumbnails

    names = images.names
    figs = out / "figures"
    for p in matches.pairs:
        i, j = p.raw.i, p.raw.j
        draw_matches(
            images[i].pixels, images[j].pixels, p.raw, figs / f"matches_{i}_{j}.jpg", inlier_mask=p.inlier_mask
        )
    draw_match_count_matrix(matches.counts, names, figs / "match_counts.png")
    residual_px = np.linalg.norm(reprojection_residuals(recon.cameras, recon.points.xyz, recon.tracks), axis=2)
    samples = {f"{f}: {names[f]}": [float(v) for v in residual_px[f] if np.isfinite(v)] for f in range(len(names))}
    write_text(
        figs / "reprojection_residuals.svg",
        histogram_svg(samples, "reprojection residual after bundle adjustment (px)"),
    )
    header = "," + ",".join(names)
    rows = [header] + [names[f] + "," + ",".join(str(int(c)) for c in matches.counts[f]) for f in range(len(names))]
    write_text(out / "match_counts.csv", "\n".join(rows) + "\n")
    write_json(out / "series.json", describe_series(images))
    write_thumbnails([im.pixels for im in images.images], names, out / "thumbnails")


def command_line() -> str:
    """The command as typed (for reproducibility records)."""
    return " ".join(["topograph", *sys.argv[1:]])


def require_inputs(inputs: Sequence[str | Path]) -> None:
    if not inputs:
        raise TopographError("no input images given", "pass image files or a folder: topograph sem IMAGES... -o OUT")
