"""Dense stage of the SEM engine: dense flow to every view → fused per-pixel triangulation → filtering →
substrate plane and grain mask → height map, mesh and grain metrics.

The reference view is the one with the median tilt (occlusions split evenly on both sides). Every other
view is matched to it by coarse-to-fine optical flow with a forward–backward check; correspondences
off their affine epipolar line are rejected; the rest enter one least-squares point per reference
pixel, so a pixel seen in three views is triangulated from three.

Which pixels become points — one rule everywhere, grain and substrate alike: the match in at least one
other view is forward–backward consistent (``fb_threshold_px``) and within ``epipolar_threshold_px`` of
its epipolar line, every observation kept after fusion reprojects within that threshold, and the depth is
no outlier against its neighbours (:func:`remove_grid_outliers`). A featureless substrate (the quartz
series: detector noise only, no matchable texture even when blurred) yields no consistent matches and
so no points: its height is never filled in from the fitted plane.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
from scipy import ndimage

from topograph.analysis.grain_mask import grain_mask_from_height, implausible_mask
from topograph.errors import TopographError
from topograph.geometry.dense_triangulation import (
    NormalEquations,
    RelativeObservation,
    epipolar_line_map,
    viewing_direction_nullspace,
)
from topograph.geometry.local_regression import local_linear_smooth
from topograph.matching.dense import DenseConfig as FlowConfig
from topograph.matching.dense import DenseFlow, dense_flows, flow_threads
from topograph.progress import steps
from topograph.sem.config import DenseConfig
from topograph.sem.prefilter import noise_adapted_flow_inputs
from topograph.sem.relief_extent import reference_relief_extent_px
from topograph.types import AffineCamera, HeightMap, ImageSet, PointCloud, Reconstruction

if TYPE_CHECKING:  # trimesh and the analysis modules load with the dense stage, not with this module
    import trimesh

    from topograph.analysis.grain import GrainMetrics
    from topograph.analysis.surface import ArealParameters

log = logging.getLogger("topograph")


FRAME_NAME = "substrate"
FRAME = (
    "substrate frame: x, y in the fitted substrate plane, z = height above it toward the detector "
    "(right-handed); the same frame for dense.ply, sparse.ply, grain_mesh.* and surface_mesh.ply"
)
HEIGHT_MAP_FRAME = (
    "reference view pixel grid (column, row) × grid_spacing; value = height above the substrate plane "
    "(z of the substrate frame)"
)


@dataclass(frozen=True)
class Plane:
    """Plane ``n · X = d`` with unit normal ``n`` pointing toward the detector."""

    normal: np.ndarray
    offset: float

    def height(self, points: np.ndarray) -> np.ndarray:
        """Signed distance of (N, 3) points above the plane."""
        return points @ self.normal - self.offset

    def frame(self) -> np.ndarray:
        """(3, 3) rotation whose rows are e1, e2 (in the plane) and the normal: world → plane frame."""
        n = self.normal
        helper = np.array([1.0, 0.0, 0.0]) if abs(n[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
        e1 = helper - (helper @ n) * n
        e1 /= np.linalg.norm(e1)
        e2 = np.cross(n, e1)
        return np.vstack([e1, e2, n])


CLOUD_FILES_APART_MIN_POINTS = 2_000_000
"""Clouds of more points write their preview figure and their PLY one after the other, not side by side: the
two files' work arrays grow with the cloud (~300 and ~200 MB at 4 M points: the preview's 2 M-point subset,
the PLY's records) and side by side they made the peak of a 3 × 4 MP run (1.09 instead of 1.0 GB,
docs/benchmarks.md, issue 21, session 15). Smaller clouds write every file side by side."""


@dataclass(frozen=True)
class DenseResult:
    reference_view: int
    points_grid: np.ndarray
    """(H, W, 3) fused point of every reference pixel, NaN where rejected."""
    n_views_grid: np.ndarray
    """(H, W) number of views that saw each pixel."""
    point_mask: np.ndarray
    """(H, W) bool: the reference pixels whose point is in the cloud (row-major order, see :attr:`cloud`)."""
    reference_pixels: np.ndarray
    """(H, W) float32 reference image in [0, 1]: the cloud's intensity."""
    plane: Plane
    grain_mask: np.ndarray
    """(H, W) bool grain pixels of the reference view."""
    height_map: HeightMap
    grain_mesh: trimesh.Trimesh | None
    """The closed grain mesh (None when no grain was found or the mask was refused)."""
    surface_mesh: trimesh.Trimesh | None
    """The visible surface (None without any dense point)."""
    metrics: GrainMetrics | None
    areal: ArealParameters | None
    """Areal parameters of the grain top."""
    closure: str
    unit: str
    timings_s: Mapping[str, float] = field(default_factory=dict)
    """Seconds per step of :func:`run_dense` (the seconds of :meth:`write` are its return value)."""
    surface_stride: int = 1
    """Reference pixels per node of ``surface_mesh`` (its node (r, c) is reference pixel (k r, k c))."""
    side_by_side: bool = True
    """Whether the series is within :func:`within_side_by_side_budget` (its files may be written side by side)."""
    base_plane: str = "substrate"
    """Where heights are measured from: ``"substrate"`` (the plane fitted to the substrate) or
    ``"lowest points"`` (no substrate in view: the plane facing the detector through the lowest 2 % of
    points, a base that moves with the cloud's low tail — heights, volume and the underside's metrics
    carry that uncertainty)."""
    warnings: tuple[str, ...] = ()
    """Warnings of the dense stage (already logged) for the run's summary."""

    @cached_property
    def cloud(self) -> PointCloud:
        """The dense cloud in the reconstruction frame: float64 points of :attr:`point_mask` (row-major) with
        the reference image's intensity. Built on first use (the run's own files are written from the grid
        block by block, :meth:`output_cloud_xyz`), so the stage holds no second copy of its points."""
        xyz = self.points_grid[self.point_mask].astype(np.float64)
        intensity = np.clip(self.reference_pixels[self.point_mask].astype(np.float32), 0, 1)
        return PointCloud(xyz, unit=self.unit, intensity=intensity)

    @property
    def n_points(self) -> int:
        """Points in the dense cloud."""
        return int(np.count_nonzero(self.point_mask))

    def output_cloud_xyz(self, dtype: type = np.float32, rows_per_block: int = 256) -> np.ndarray:
        """(N, 3) points of :attr:`cloud` in the output frame (:meth:`to_output_frame`, in float64, then
        ``dtype``), computed ``rows_per_block`` grid rows at a time: no float64 (N, 3) copy of the cloud."""
        out = np.empty((self.n_points, 3), dtype=dtype)
        at = 0
        for lo in range(0, self.point_mask.shape[0], rows_per_block):
            sel = self.point_mask[lo : lo + rows_per_block]
            block = self.points_grid[lo : lo + rows_per_block][sel]
            out[at : at + len(block)] = self.to_output_frame(block)
            at += len(block)
        return out

    def to_output_frame(self, xyz: np.ndarray) -> np.ndarray:
        """(N, 3) reconstruction-frame points → the substrate frame of every output file (see :data:`FRAME`)."""
        origin = self.plane.normal * self.plane.offset
        return (np.asarray(xyz, dtype=np.float64) - origin) @ self.plane.frame().T

    def output_transform(self) -> np.ndarray:
        """(4, 4) homogeneous matrix of :meth:`to_output_frame` (reconstruction frame → output frame)."""
        m = np.eye(4)
        m[:3, :3] = self.plane.frame()
        m[:3, 3] = -self.plane.frame() @ (self.plane.normal * self.plane.offset)
        return m

    def surface_mesh_vertices(self) -> np.ndarray:
        """``surface_mesh`` vertices in the output frame: the fused 3-D point of each node's reference pixel
        (the in-memory mesh lies on the reference pixel grid, with z = height above the substrate)."""
        mesh = self.surface_mesh
        step = self.surface_stride * self.height_map.pixel_size
        cols = np.rint(mesh.vertices[:, 0] / step).astype(np.int64) * self.surface_stride
        rows = np.rint(mesh.vertices[:, 1] / step).astype(np.int64) * self.surface_stride
        return self.to_output_frame(self.points_grid[rows, cols])

    def summary(self) -> dict[str, Any]:
        grain = int(self.grain_mask.sum())
        return {
            "reference_view": self.reference_view,
            "n_points": self.n_points,
            "n_points_grain": int(np.isfinite(self.points_grid[self.grain_mask]).all(axis=1).sum()) if grain else 0,
            "n_points_3plus_views": int((self.n_views_grid >= 3).sum()),
            "grain_pixels": grain,
            "closure": self.closure,
            "base_plane": self.base_plane,
            "grain_metrics": self.metrics.to_dict() if self.metrics is not None else None,
            "areal_parameters_grain_top": self.areal.to_dict() if self.areal is not None else None,
            "grain_mesh_faces": int(len(self.grain_mesh.faces)) if self.grain_mesh is not None else 0,
            "timings_s": dict(self.timings_s),
        }

    def _render_cloud_views(self, path: Path, unit: str) -> None:
        """The cloud's preview figure (:func:`topograph.report.render.render_cloud_views`) from the random
        subset it draws itself beyond ``MAX_RENDER_POINTS`` (same seed, same points, same figure), taken
        here so that only the subset's float64 output-frame points exist."""
        from topograph.report.render import MAX_RENDER_POINTS, render_cloud_views

        n = self.n_points
        idx = np.flatnonzero(self.point_mask)
        if n > MAX_RENDER_POINTS:
            idx = idx[np.sort(np.random.default_rng(0).choice(n, MAX_RENDER_POINTS, replace=False))]
        xyz = self.to_output_frame(self.points_grid.reshape(-1, 3)[idx])
        intensity = np.clip(self.reference_pixels.ravel()[idx].astype(np.float32), 0, 1)
        render_cloud_views(xyz, intensity, path, unit=unit)

    def write(self, out: Path, threads: int = 1) -> dict[str, float]:
        """Write cloud, height map (TIFF + PNG), meshes, metrics and renderings into ``out``, the files
        ``threads`` at a time (they are independent; encoding and writing release the GIL in parts).

        Returns:
            The seconds spent on each file, as ``write_<name>`` (the run's summary.json adds them to the dense
            stage's ``timings_s``).
        """
        from topograph import __version__
        from topograph.io.atomic import write_json
        from topograph.io.exports import (
            separate_pinched_vertices,
            write_height_map,
            write_mesh_ply,
            write_ply,
            write_png,
            write_stl,
        )
        from topograph.report.render import height_map_png

        unit_text = "micrometres" if self.unit == "um" else "pixel units of view 0 (no pixel size known)"
        shown_unit = "µm" if self.unit == "um" else "px"
        px = self.height_map.pixel_size

        seconds: dict[str, float] = {}
        tasks: list[Callable[[], None]] = []

        def timed(name: str, fn: Callable[..., object], *args: Any, **kwargs: Any) -> Callable[[], None]:
            def run() -> None:
                t0 = time.perf_counter()
                fn(*args, **kwargs)
                seconds[f"write_{name}"] = time.perf_counter() - t0

            tasks.append(run)
            return run

        # One frame for every 3-D file: the substrate frame (FRAME); the in-memory cloud stays in the
        # reconstruction frame, the grain mesh is built in the substrate frame already.
        comments = [
            f"topograph {__version__} dense SEM cloud",
            f"unit {self.unit}",
            f"unit_description {unit_text}",
            f"frame {FRAME_NAME}",
        ]
        figure = out / "figures" / "dense_cloud_views.png"
        timed("cloud_views_png", self._render_cloud_views, figure, shown_unit)
        facts = {
            "frame": HEIGHT_MAP_FRAME,
            "reference_view": self.reference_view,
            "grid_spacing": px,
            "grid_spacing_unit": self.unit,
        }
        timed(
            "height_map",
            write_height_map,
            out,
            self.height_map.height,
            px if self.unit == "um" else None,  # pixel-unit runs: no physical resolution
            self.unit,
            facts,
        )
        timed("height_map_png", height_map_png, self.height_map.height, px, out / "height_map.png", unit=shown_unit)
        timed("grain_mask_png", write_png, out / "grain_mask.png", (self.grain_mask * 255).astype(np.uint8))
        mesh_comments = [f"unit {self.unit}", f"frame {FRAME_NAME}", "written by topograph"]  # as write_mesh's
        if self.grain_mesh is not None:
            mesh = self.grain_mesh

            def grain_mesh_files() -> None:
                # What write_mesh does for each file, once for both: the watertight check and the pinched-
                # vertex separation take longer than writing (~1 s each on quartz's 0.3 M faces).
                t0 = time.perf_counter()
                vertices = np.asarray(mesh.vertices)
                if mesh.is_watertight:
                    vertices = separate_pinched_vertices(vertices, mesh.faces)
                seconds["write_grain_mesh_prepare"] = time.perf_counter() - t0
                header = f"topograph mesh, unit {self.unit}"
                for name, fn, path, kwargs in (
                    ("grain_mesh_ply", write_mesh_ply, out / "grain_mesh.ply", {"comments": mesh_comments}),
                    ("grain_mesh_stl", write_stl, out / "grain_mesh.stl", {"header": header}),
                ):
                    t0 = time.perf_counter()
                    fn(path, vertices, mesh.faces, **kwargs)
                    seconds[f"write_{name}"] = time.perf_counter() - t0

            tasks.append(grain_mesh_files)
        if self.surface_mesh is not None:
            # open by construction (a height field): no watertight check, no pinched vertices to separate
            timed(
                "surface_mesh_ply",
                write_mesh_ply,
                out / "surface_mesh.ply",
                self.surface_mesh_vertices(),
                self.surface_mesh.faces,
                comments=mesh_comments,
            )

        def write_cloud() -> None:
            # built here, not before: the cloud's arrays (float32, as the PLY stores them) exist only while
            # its file is written
            intensity = np.clip(self.reference_pixels[self.point_mask].astype(np.float32), 0, 1)
            write_ply(out / "dense.ply", PointCloud(self.output_cloud_xyz(), self.unit, intensity), comments=comments)

        timed("dense_ply", write_cloud)
        if threads > 1 and self.n_points > CLOUD_FILES_APART_MIN_POINTS:
            # two lanes: the cloud's preview and its PLY one after the other, the other files beside them
            lanes = [[tasks[0], tasks[-1]], tasks[1:-1]]
            with ThreadPoolExecutor(max_workers=2) as pool:
                list(pool.map(lambda lane: [task() for task in lane], lanes))  # re-raises the first failure
        elif threads > 1:
            with ThreadPoolExecutor(max_workers=int(threads)) as pool:
                list(pool.map(lambda task: task(), tasks))  # re-raises the first failure
        else:
            for task in tasks:
                task()
        if self.metrics is not None:
            write_json(out / "grain_metrics.json", {"unit": self.unit, **self.metrics.to_dict()})
        if self.areal is not None:
            write_json(out / "areal_parameters.json", self.areal.to_dict())
        return seconds


def choose_reference_view(recon: Reconstruction, choice: str = "median") -> int:
    """The reference view: "median" (median tilt: occlusions split evenly), "first" or "last" (by tilt:
    the longest baselines), or a view index."""
    order = np.argsort(recon.tilts_deg)
    if choice == "median":
        return int(order[len(order) // 2])
    if choice == "first":
        return int(order[0])
    if choice == "last":
        return int(order[-1])
    try:
        idx = int(choice)
    except ValueError as exc:
        raise TopographError(f"unknown reference view '{choice}'", "use median, first, last or a view index") from exc
    if not 0 <= idx < len(recon.cameras):
        raise TopographError(f"reference view {idx} does not exist", f"use 0 … {len(recon.cameras) - 1}")
    return idx


FLOW_VARIATIONAL_ITERATIONS = 5
"""DIS variational refinement iterations per pyramid level of the final flow pass: 5 instead of 10 saves
~15 % of the flow time with the same accuracy on 600-px rendered grains (0/5/10°, seeds 21/22: RMS 0.223
and 0.309 % of the diameter instead of 0.221 and 0.305, medians 0.139 and 0.188 instead of 0.140 and
0.193 %); fewer (2), or a patch stride of 3 in either pass, cost 5–15 % of accuracy."""
FLOW_FIRST_PASS_VARIATIONAL_ITERATIONS = 4
"""... and of the first pass, which the second (residual) pass corrects: 4 instead of 10 saves ~20 % of the
stage with the same accuracy on rendered grains (RMS 0.245 vs 0.244 % of the diameter, median 0.159 %)."""
FLOW_REFINE_BACKWARD = False
"""Forward–backward check of the residual pass too. Off: the first pass's check decides validity; the
backward residual flow costs a quarter of the stage and changed no accuracy figure on rendered grains."""


FULL_RESOLUTION_FIRST_PASS_MAX_PX = 2_000_000
"""Automatic ``flow_first_pass_downscale``: full-resolution first pass up to this many pixels per image."""


def first_pass_downscale(cfg: DenseConfig, n_pixels: int) -> int:
    """The first flow pass's downscale factor for images of ``n_pixels`` (``cfg.flow_first_pass_downscale``,
    0 = automatic)."""
    if cfg.flow_first_pass_downscale > 0:
        return int(cfg.flow_first_pass_downscale)
    return 1 if n_pixels <= FULL_RESOLUTION_FIRST_PASS_MAX_PX else 2


SEQUENTIAL_COARSE_PASS_MIN_PX = 500_000
"""With a downscaled first pass (large images, where the fused observations already hold several hundred
MB), its forward and backward flows take turns from this many coarse pixels on, unless the series is small
enough for :data:`SIDE_BY_SIDE_MAX_OBSERVATION_PX`: memory holds one DIS solver (~190 B per pixel) instead of
two; each solve still uses every core."""

SIDE_BY_SIDE_MAX_OBSERVATION_PX = 24_000_000
"""Images above 2 MP still solve side by side (two solvers, one OpenCV thread each, the flows in a worker
thread beside the fusion, see :func:`flow_schedule`) while pixels × observation slots (views + chained pairs)
stay within this: the fused observations (8 B per pixel and slot, :class:`NormalEquations`) and the views'
images grow with the series, the second solver and flow in flight (~250 MB at 4 MP) with the image. Measured
whole-process peaks (docs/benchmarks.md, issue 21, sessions 14 and 15): with the float64 right-hand sides and
cloud of session 14, 3 × 4 MP (4 slots: 16 M) 1.05–1.24 GB side by side and 7 × 3 MP (7 slots: 21 M) 1.08 GB;
with the leaner accumulator and cloud of session 15, 3 × 4 MP ~1.0 GB and 7 × 3 MP ~0.82 GB side by side. A
solve alone uses both cores through OpenCV's threads, but only ~60 % of it runs in parallel."""


def flow_schedule(n_pixels: int, n_slots: int, cfg: DenseConfig) -> tuple[int, int]:
    """``(parallel_max_pixels, flows_at_once)`` of the dense stage's flows for images of ``n_pixels`` and
    ``n_slots`` observation slots: images of a full-resolution first pass (≤ 2 MP) solve everything side by
    side, ``threads`` flows at once (0); larger ones side by side one flow at a time (the next flow solves
    while the caller fuses the last) within :data:`SIDE_BY_SIDE_MAX_OBSERVATION_PX`, else in turn."""
    if first_pass_downscale(cfg, n_pixels) == 1:
        return FlowConfig.parallel_max_pixels, 0
    if within_side_by_side_budget(n_pixels, n_slots):
        return max(n_pixels, FlowConfig.parallel_max_pixels), 1
    return SEQUENTIAL_COARSE_PASS_MIN_PX, 1


def within_side_by_side_budget(n_pixels: int, n_slots: int) -> bool:
    """Whether a series of ``n_pixels`` images and ``n_slots`` observation slots may hold two solvers (and,
    later, two output files' copies of the cloud) at once: :data:`SIDE_BY_SIDE_MAX_OBSERVATION_PX`."""
    return n_pixels * n_slots <= SIDE_BY_SIDE_MAX_OBSERVATION_PX


def flow_config(cfg: DenseConfig, n_pixels: int = 0, threads: int = 0, parallel_max_pixels: int = 0) -> FlowConfig:
    """Dense-flow settings of the SEM dense stage (see :class:`topograph.matching.dense.DenseConfig`) for
    images of ``n_pixels``, with ``threads`` CPU threads (0: every core) and solves side by side up to
    ``parallel_max_pixels`` (0: :func:`flow_schedule` of a two-view series)."""
    k = first_pass_downscale(cfg, n_pixels)
    parallel = parallel_max_pixels or flow_schedule(n_pixels, 2, cfg)[0]
    return FlowConfig(
        parallel_max_pixels=parallel,
        fb_threshold_px=cfg.fb_threshold_px,
        passes=cfg.flow_passes,
        variational_refinement_alpha=cfg.flow_smoothness,
        patch_stride=cfg.flow_patch_stride,
        variational_refinement_iterations=FLOW_VARIATIONAL_ITERATIONS,
        first_pass_variational_iterations=FLOW_FIRST_PASS_VARIATIONAL_ITERATIONS,
        refine_backward=FLOW_REFINE_BACKWARD,
        first_pass_downscale=k,
        check_downscale=cfg.flow_check_downscale,
        first_pass_patch_stride=cfg.flow_first_pass_patch_stride,
        first_pass_gradient_descent_iterations=cfg.flow_first_pass_gradient_iterations,
        tile_px=cfg.flow_tile_px,
        threads=threads,
    )


CHAIN_FIRST_PASS_DOWNSCALE = 4
"""First-pass downscale of the chained flows (at least the direct flows' own): their full-resolution
residual pass recovers the detail, and the chained observation is checked against the direct ones by the
fused point's reprojection. 4 instead of 1 drops 2 of quartz's 9 DIS solves (~2.4 CPU-s) and, on the 3 × 1
MP rendered grain (seed 31), gives RMS 0.157 % of D instead of 0.161, median 0.098 instead of 0.101,
coverage 99.4 % and volume error −0.33 % both (2: 0.157, 0.099, 99.3 %, −0.33 %)."""
CHAIN_PATCH_STRIDE = 3
"""DIS patch stride of the chained flows' residual pass (their quarter-resolution first pass keeps
``flow_first_pass_patch_stride``, the direct flows ``flow_patch_stride``): the
chained observation is one of several per pixel and the fused point's reprojection check weighs it, so its
sparser patch search costs no accuracy — 3 × 1 MP rendered grain (seed 31): RMS 0.155 % of D instead of
0.157, median 0.095 instead of 0.098, coverage 99.4 %, volume error −0.34 % (−0.33) — and saves a quarter
of the chained flow (1.25 → 0.92 CPU-s at 1 MP)."""
CHAIN_CHEAP_MIN_RELIEF_PX = 110 * CHAIN_FIRST_PASS_DOWNSCALE
"""The chained flows take those cheaper settings only when the specimen's relief spans at least this many
reference pixels (:func:`topograph.sem.relief_extent.reference_relief_extent_px`, from the sparse tracks;
about 0.8 times the grain's extent, its rim's parallax being small): their coarse first pass then still
sees it across 110 px. A smaller grain keeps the direct flows' settings — on the 1024-px render of a
grain filling 10 % of the field (relief 301 px) the quarter-resolution first pass raised the RMS error from
0.226 to 0.254 % of D (docs/benchmarks.md, issue 16, sessions 13 and 14) — and so does a small image (at
360 px the cheap settings took the contradicting-metadata case of tests/test_sem_conventions.py from
91.1 % to 89.2 % completeness, bound 90 %). Relief of the other renders: 500–580 px for the default grain at
1024 px, up to 450–740 px at 512 px (hence :data:`CHAIN_CHEAP_MIN_SIDE_PX` too); quartz (3 × 1200²) 950 px."""
CHAIN_CHEAP_MIN_SIDE_PX = 240 * CHAIN_FIRST_PASS_DOWNSCALE
"""... and only for images whose longer side is at least this (also without a relief estimate, too few
sparse tracks off the substrate plane): on the 512-px renders, whose relief estimates reach 450–470 px,
the cheaper settings cost 2–10 % RMS (two grains 0.182 → 0.200 % of D, bright substrate 0.186 → 0.195)."""


def chain_flow_config(
    flow_cfg: FlowConfig, image_shape: tuple[int, int], relief_extent_px: float | None = None
) -> FlowConfig:
    """Flow settings of a chained view pair of images of ``image_shape`` (H, W) whose relief spans
    ``relief_extent_px`` reference pixels (None: unknown): the direct flows' settings with
    :data:`CHAIN_FIRST_PASS_DOWNSCALE` and :data:`CHAIN_PATCH_STRIDE` when the image's longer side is at
    least :data:`CHAIN_CHEAP_MIN_SIDE_PX` and the relief (when known) spans at least
    :data:`CHAIN_CHEAP_MIN_RELIEF_PX`."""
    cheap = max(image_shape) >= CHAIN_CHEAP_MIN_SIDE_PX
    if relief_extent_px is not None:
        cheap = cheap and relief_extent_px >= CHAIN_CHEAP_MIN_RELIEF_PX
    log.debug("chained flows: relief extent %s px, %s settings", relief_extent_px, "cheaper" if cheap else "direct")
    if not cheap:
        return flow_cfg
    k = max(int(flow_cfg.first_pass_downscale), CHAIN_FIRST_PASS_DOWNSCALE)
    stride = max(int(flow_cfg.patch_stride), CHAIN_PATCH_STRIDE)
    return replace(flow_cfg, first_pass_downscale=k, patch_stride=stride)


def fuse_dense(
    images: ImageSet, recon: Reconstruction, cfg: DenseConfig, ref: int, threads: int = 0
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray | None]]:
    """Fused points of the reference grid: (H, W, 3) float32 (NaN where rejected), (H, W) int16 number of
    observations per pixel (the reference view included) and per-view visibility masks (H, W) bool.

    Observations: the reference pixel itself, its flow match in every other view (forward–backward
    consistent and within ``epipolar_threshold_px`` of its epipolar line) and, with ``chain_pairs`` (series
    of at most ``chain_pairs_max_views`` views), the match carried on through pairs without the reference
    view. One least-squares point per pixel (:class:`NormalEquations`); observations whose reprojection
    error exceeds the epipolar threshold are dropped once and the point is solved again.
    """
    h, w = images[ref].shape
    n = h * w
    cams = recon.cameras
    grid = _pixel_grid(h, w)
    acc = NormalEquations(n)
    acc.add_view(cams[ref], grid, np.ones(n, dtype=bool))
    others = [f for f in range(len(images)) if f != ref]
    chains = chained_pairs(recon.tilts_deg, ref, cfg)
    parallel, flows_at_once = flow_schedule(n, len(images) + len(chains), cfg)
    flow_cfg, pixels = noise_adapted_flow_inputs(flow_config(cfg, n, threads, parallel), images, ref)  # issue 16
    chain_cfg = chain_flow_config(flow_cfg, (h, w), reference_relief_extent_px(recon, ref, (h, w)) if chains else None)
    # Every flow (direct and chained) is independent of the others: they run side by side where the images
    # allow it (dense_flows) and are fused in this order as they come.
    jobs = [(pixels[ref], pixels[f], flow_cfg, track_prealignment(recon, ref, f)) for f in others]
    jobs += [(pixels[a], pixels[b], chain_cfg, track_prealignment(recon, a, b)) for a, b in chains]
    flows = dense_flows(jobs, flow_threads(flow_cfg), flows_at_once)
    direct: dict[int, int] = {}  # view → observation slot
    slot_view: list[int] = [ref]
    for f in steps(others, "dense matching (to the reference view)"):
        res = next(flows)
        xy = grid + res.flow.reshape(-1, 2)
        mask = _on_epipolar_line(cams[ref], cams[f], grid, xy, res.valid.ravel(), cfg.epipolar_threshold_px)
        log.info(
            "dense %s → %s: %.1f%% consistent, %.1f%% on the epipolar line",
            images[ref].name,
            images[f].name,
            100 * res.valid.mean(),
            100 * mask.mean(),
        )
        del res
        direct[f] = acc.add_view(cams[f], xy, mask)
        slot_view.append(f)
    if chains:
        for a, b in steps(chains, "dense matching (chained view pairs)"):
            xy_b, keep = _chained_observation(next(flows), acc, direct[a], grid, cfg, cams[ref], cams[b], (h, w))
            if cfg.chain_as_displacement:  # independent errors: see RelativeObservation
                acc.add_view(RelativeObservation(cams[b], cams[a]), xy_b - acc.observations[direct[a]], keep)
            else:
                acc.add_view(cams[b], xy_b, keep)
            slot_view.append(b)
            log.info(
                "dense chain %s → %s: %.1f%% of the reference pixels", images[a].name, images[b].name, 100 * keep.mean()
            )
    # slot 0 (the reference pixel itself) is never rejected; the flows' threads are free by now
    points, _ = acc.solve_with_rejection(
        max(2, cfg.min_views), cfg.epipolar_threshold_px, keep_slots=(0,), threads=flow_threads(flow_cfg)
    )
    visible: list[np.ndarray | None] = [None] * len(images)
    for k, f in enumerate(slot_view):
        if f == ref:
            continue
        seen = ((acc.code >> np.uint32(k)) & np.uint32(1)).astype(bool).reshape(h, w)
        visible[f] = seen if visible[f] is None else (visible[f] | seen)
    return points.reshape(h, w, 3), acc.count.reshape(h, w), visible


def track_prealignment(recon: Reconstruction, i: int, j: int, ransac_px: float = 20.0) -> np.ndarray | None:
    """Affine map ``x_j ≈ A [x_i, 1]ᵀ`` (2, 3) from the sparse tracks seen in views i and j (RANSAC), or
    None when fewer than 6 tracks support it. It replaces the dense matcher's own SIFT pre-alignment."""
    xy = recon.tracks.xy
    both = np.isfinite(xy[i]).all(axis=1) & np.isfinite(xy[j]).all(axis=1)
    if both.sum() < 6:  # noqa: PLR2004 - an affine map needs a few more than 3 points
        return None
    a, inliers = cv2.estimateAffine2D(
        xy[i, both].astype(np.float32),
        xy[j, both].astype(np.float32),
        method=cv2.RANSAC,
        ransacReprojThreshold=ransac_px,
        maxIters=2000,
        confidence=0.999,
        refineIters=10,
    )
    if a is None or inliers is None or int(inliers.sum()) < 6:  # noqa: PLR2004
        return None
    return a.astype(np.float64)


def _pixel_grid(h: int, w: int) -> np.ndarray:
    """(H·W, 2) float32 pixel centres (x, y) in row-major order."""
    grid = np.empty((h, w, 2), dtype=np.float32)
    grid[..., 0] = np.arange(w, dtype=np.float32)[None, :]
    grid[..., 1] = np.arange(h, dtype=np.float32)[:, None]
    return grid.reshape(-1, 2)


EPIPOLAR_CHUNK_PX = 1 << 20
"""Pixels per chunk of :func:`_on_epipolar_line` (its float64 temporaries stay ~8 MB)."""


def _on_epipolar_line(
    ref: AffineCamera, other: AffineCamera, grid: np.ndarray, xy: np.ndarray, valid: np.ndarray, threshold: float
) -> np.ndarray:
    """``valid`` restricted to the matches within ``threshold`` px of their affine epipolar line.

    The distance of :func:`epipolar_distance_px`, ``|(x_o − B p − c) × e| = |n·x_o − (nB)·p − n·c|`` with the
    line's normal ``n = (e_y, −e_x)``, over the whole grid in float64 chunks (no gathers of the valid rows;
    NaN targets compare False).
    """
    b, c, e = epipolar_line_map(ref, other)
    normal = np.array([e[1], -e[0]])
    along_p = normal @ b
    offset = float(normal @ c)
    mask = np.zeros(len(grid), dtype=bool)
    for lo in range(0, len(grid), EPIPOLAR_CHUNK_PX):
        hi = min(lo + EPIPOLAR_CHUNK_PX, len(grid))
        dist = xy[lo:hi].astype(np.float64) @ normal
        dist -= grid[lo:hi].astype(np.float64) @ along_p
        dist -= offset
        np.abs(dist, out=dist)
        mask[lo:hi] = valid[lo:hi] & (dist <= threshold)
    return mask


def chained_pairs(tilts_deg: Any, ref: int, cfg: DenseConfig) -> list[tuple[int, int]]:
    """View pairs without the reference view whose flows add chained observations: none unless
    ``cfg.chain_pairs`` and the series has at most ``cfg.chain_pairs_max_views`` views (0: any); then all
    of them with three views, else neighbours in tilt order."""
    n_views = len(tilts_deg)
    if not cfg.chain_pairs or 0 < cfg.chain_pairs_max_views < n_views:
        return []
    order = [int(v) for v in np.argsort(tilts_deg) if int(v) != ref]
    if n_views <= 3:
        return [(a, b) for i, a in enumerate(order) for b in order[i + 1 :]]
    return list(zip(order[:-1], order[1:], strict=True))


def _chained_observation(
    res: DenseFlow,
    acc: NormalEquations,
    slot_a: int,
    grid: np.ndarray,
    cfg: DenseConfig,
    cam_ref: AffineCamera,
    cam_b: AffineCamera,
    ref_shape: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """A second, independent observation of view b for every reference pixel matched in view a.

    The reference pixel's direct match ``x_a`` is carried on by the a→b flow ``res``: ``x_b' = x_a +
    u_ab(x_a)`` (bilinear in the flow; its noise is independent of the direct ref→b flow). Returns ``(x_b'
    (N, 2) float32, kept (N,) bool)``; kept needs the a-match, a consistent a→b flow at ``x_a`` and the
    epipolar check against the reference pixel.
    """
    xy_a = acc.observations[slot_a]
    has_a = ((acc.code >> np.uint32(slot_a)) & np.uint32(1)).astype(bool)
    mx = xy_a[:, 0].reshape(ref_shape)
    my = xy_a[:, 1].reshape(ref_shape)
    flow_at = cv2.remap(res.flow, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=np.nan)
    valid_at = cv2.remap(res.valid.view(np.uint8), mx, my, cv2.INTER_NEAREST, borderValue=0).ravel() > 0
    del res
    xy_b = xy_a + flow_at.reshape(-1, 2)
    keep = _on_epipolar_line(cam_ref, cam_b, grid, xy_b, has_a & valid_at, cfg.epipolar_threshold_px)
    return np.nan_to_num(xy_b), keep


OUTLIER_FLOOR_PX = 0.25
"""Smallest outlier threshold, as the disparity (px) it causes in the widest-baseline view: departures
from the neighbourhood median below this are matching noise or real fine relief, never outliers. (Without
it, 3 robust σ of a rough real surface drops ~40 % of the quartz grain; at 0.25 px the rendered grains keep
their accuracy.)"""


def remove_grid_outliers(depth: np.ndarray, std_ratio: float, floor: float = 0.0, window: int = 5) -> np.ndarray:
    """Statistical outlier removal on the organised cloud; returns the kept-mask (H, W).

    A point is dropped when its depth departs from the median of its ``window × window`` neighbourhood by
    more than ``max(std_ratio · σ, floor)``, with σ = 1.4826 · median of all departures. The ``floor``
    (the depth change that moves a match by the matching tolerance, see :func:`depth_per_pixel`) keeps
    real fine relief: on a textured surface σ reflects the roughness, not the matching error, and a
    threshold of a few σ alone would remove much of a rough surface.

    Args:
        depth: (H, W) depth along the reference viewing direction, NaN = no point.
        std_ratio: threshold in robust standard deviations.
        floor: smallest threshold, depth units.
        window: neighbourhood side (3 or 5: OpenCV's float median filter).
    """
    valid = np.isfinite(depth)
    if valid.sum() < 10:
        return valid
    filled = np.where(valid, depth, np.float32(np.nanmedian(depth))).astype(np.float32)
    med = cv2.medianBlur(filled, 5 if window >= 5 else 3)
    dev = np.abs(depth - med)
    sigma = 1.4826 * float(np.median(dev[valid])) + 1e-12
    return valid & (dev <= max(std_ratio * sigma, floor))


def depth_per_pixel(recon: Reconstruction, ref: int) -> float:
    """Depth change (world units) along the reference view's ray that moves its match in the view with the
    widest baseline by one pixel: ``1 / max_f |M_f d_ref|`` (``d_ref`` the unit viewing direction)."""
    d = viewing_direction_nullspace(recon.cameras[ref])
    rate = max(float(np.linalg.norm(c.matrix @ d)) for f, c in enumerate(recon.cameras) if f != ref)
    return 1.0 / max(rate, 1e-12)


RANSAC_MAX_POINTS = 20_000
"""The substrate RANSAC scores its plane hypotheses on at most this many (random) candidate points."""


PLANE_BLOCK_POINTS = 1 << 18
"""Points per float64 block of :func:`fit_substrate_plane`'s inlier test and scatter sums."""


def fit_substrate_plane(
    points: np.ndarray, border_points: np.ndarray, toward_detector: np.ndarray, seed: int = 0
) -> Plane:
    """RANSAC plane through the substrate, seeded by the image border (where the substrate is), then a
    least-squares refit on all inliers of the whole cloud. The normal points toward the detector.

    ``points`` (N, 3) and ``border_points`` may be float32 (the fused grid's own values): the hypotheses are
    scored in float64 and the refit is the total least-squares plane through the inliers' centroid ``c``,
    its normal the eigenvector of the smallest eigenvalue of the scatter ``Σ (X − c)(X − c)ᵀ``, summed in
    float64 blocks of :data:`PLANE_BLOCK_POINTS` (the same plane as the SVD of the centred inliers, without
    an (N, 3) float64 copy of them).
    """
    rng = np.random.default_rng(seed)
    cand = border_points if len(border_points) >= 100 else points
    if len(cand) < 3:
        raise TopographError("too few dense points to find the substrate plane", "check the dense matches / mask")
    if len(cand) > RANSAC_MAX_POINTS:  # hypotheses are scored on a random subset; the refit uses every point
        cand = cand[rng.choice(len(cand), RANSAC_MAX_POINTS, replace=False)]
    cand = np.asarray(cand, dtype=np.float64)
    # column by column: 3x faster than numpy's axis-0 reduction over (N, 3) rows
    extent = np.array([float(points[:, k].max()) - float(points[:, k].min()) for k in range(3)])
    scale = np.linalg.norm(extent) + 1e-12
    thr = 0.003 * scale
    best, best_n = None, -1
    for _ in range(300):
        s = cand[rng.choice(len(cand), 3, replace=False)]
        n = np.cross(s[1] - s[0], s[2] - s[0])
        if np.linalg.norm(n) < 1e-12:
            continue
        n /= np.linalg.norm(n)
        cnt = int((np.abs((cand - s[0]) @ n) < thr).sum())
        if cnt > best_n:
            best, best_n = (n, float(n @ s[0])), cnt
    n, d = best
    # scatter about a point near the cloud (no cancellation), moved to the centroid at the end
    shift = cand.mean(axis=0)
    count, total, scatter = 0, np.zeros(3), np.zeros((3, 3))
    for lo in range(0, len(points), PLANE_BLOCK_POINTS):
        block = np.asarray(points[lo : lo + PLANE_BLOCK_POINTS], dtype=np.float64)
        inl = block[np.abs(block @ n - d) < thr] - shift
        count += len(inl)
        total += inl.sum(axis=0)
        scatter += inl.T @ inl
    mean = total / count
    _, vectors = np.linalg.eigh(scatter - count * np.outer(mean, mean))
    n = vectors[:, 0]
    c = shift + mean
    if n @ toward_detector < 0:
        n = -n
    return Plane(n, float(n @ c))


MAX_GRAIN_MESH_CELLS = 120_000
"""The closed grain mesh is built on a grid of whole reference pixels, coarsened so that the grain's top
has at most about this many cells (quartz: 3 px cells, ~0.3 M faces; a rendered 600² grain: 1 px). The
metrics change by far less than their own uncertainty, and meshing, checking, measuring and writing
stay well under a second instead of tens of seconds for ~2.6 M faces at full resolution."""


MAX_SURFACE_MESH_CELLS = 1_000_000
"""The open surface mesh of all points uses every k-th reference pixel, k the smallest whole number that
keeps it under about this many cells (k = 1 up to ~1000² measured pixels), so its size follows the
series' resolution only up to this bound."""


def grain_mesh_step(n_grain_pixels: int, pixel_size: float, max_cells: int = MAX_GRAIN_MESH_CELLS) -> float:
    """Cell size of the grain mesh: ``k · pixel_size`` with the smallest whole ``k`` such that
    ``n_grain_pixels / k² ≤ max_cells``."""
    k = max(1, int(np.ceil(np.sqrt(max(n_grain_pixels, 1) / max_cells))))
    return k * pixel_size


def run_dense(
    images: ImageSet, recon: Reconstruction, cfg: DenseConfig, pixel_size_um: float | None, threads: int = 0
) -> DenseResult:
    """Dense cloud, substrate plane, grain mask, height map, meshes and grain metrics of a reconstructed series
    (``threads``: CPU threads of the flows, 0 = every core).

    Step timings (CPU-bound wall seconds) are kept in :attr:`DenseResult.timings_s`.
    """
    from topograph.analysis.grain import grain_metrics
    from topograph.analysis.mesh import close_with_base
    from topograph.analysis.surface import areal_parameters

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    ref = choose_reference_view(recon, cfg.reference_view)
    unit = recon.points.unit
    grid, nviews, visible = fuse_dense(images, recon, cfg, ref, threads)
    h, w = nviews.shape
    timings["fuse"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    finite = np.isfinite(grid).all(axis=2)
    if finite.sum() < 100:
        raise TopographError(
            "the dense matching found almost no consistent correspondences",
            "check the cameras (sparse reprojection error) or raise --fb-threshold",
        )
    toward = -recon.cameras[ref].rotation[2]  # toward the detector (R[2] is the beam; docs/conventions.md)
    depth = grid @ toward.astype(np.float32)  # NaN where no point
    floor = OUTLIER_FLOOR_PX * depth_per_pixel(recon, ref)
    keep = remove_grid_outliers(depth, cfg.outlier_std_ratio, floor)
    log.info("dense outlier removal: %d of %d points kept", int(keep.sum()), int(finite.sum()))
    grid[~keep] = np.nan
    if cfg.depth_smoothing_px > 0:  # each point moves along the reference ray only
        smoothed = local_linear_smooth(
            depth, keep, cfg.depth_smoothing_px, robust_passes=cfg.depth_smoothing_robust_passes
        )
        grid += ((smoothed - depth) * keep)[..., None] * toward.astype(np.float32)
        resid = (depth - smoothed)[keep]
        log.info(
            "dense depth smoothing: residual %.3f px of the widest disparity (robust σ)",
            1.4826 * float(np.median(np.abs(resid - np.median(resid)))) * OUTLIER_FLOOR_PX / max(floor, 1e-12),
        )
        del smoothed
    del depth
    finite = keep
    border = np.zeros((h, w), dtype=bool)
    bw = max(4, int(0.08 * min(h, w)))
    border[:bw] = border[-bw:] = True
    border[:, :bw] = border[:, -bw:] = True
    pts = grid[finite]  # float32, as fused
    border_cover = float((finite & border).sum()) / float(border.sum())
    plane = fit_substrate_plane(pts, pts[border[finite]], toward)
    stage_normal = np.array([0.0, 0.0, 1.0])  # metadata frame: the stage; factorization: the first view
    tilt_off = float(np.degrees(np.arccos(np.clip(abs(plane.normal @ stage_normal), 0.0, 1.0))))
    fallback = border_cover < 0.25 or tilt_off > 25.0  # noqa: PLR2004 - see the log message
    dense_warnings: list[str] = []
    if fallback:
        # A featureless substrate gives (almost) no points at the image border; a plane fitted there runs
        # through the grain. Fall back to the plane facing the detector through the lowest points.
        plane = Plane(stage_normal, float(np.percentile(pts.astype(np.float64) @ stage_normal, 2.0)))
        dense_warnings.append(
            f"the substrate is hardly matched ({100 * border_cover:.0f}% of the image border has depth, fitted "
            f"plane tilted {tilt_off:.0f}°): heights are measured from the plane facing the detector through "
            "the lowest 2% of points, so heights, the grain volume and the underside's metrics depend on that "
            "base; image the grain with substrate around it for a measured base"
        )
        log.warning(dense_warnings[-1])
    del pts  # the cloud is the grid's points of `finite` (DenseResult.cloud)
    height = (grid @ plane.normal.astype(np.float32) - np.float32(plane.offset)).astype(np.float32)
    sub = height[finite & border]
    plane_noise = float(1.4826 * np.median(np.abs(sub - np.median(sub)))) if sub.size and not fallback else 0.0
    if cfg.mask:
        mask = load_user_mask(cfg.mask, (h, w))
    else:
        mask = grain_mask_from_height(height, plane_noise)
    log.info("dense cloud: %d points (%d on the grain)", int(finite.sum()), int((mask & finite).sum()))
    timings["filter_plane_mask"] = time.perf_counter() - t0

    # Height map in the reference view (grid spacing = one reference pixel on the specimen).
    px_world = 1.0 / recon.cameras[ref].scale
    hmap = HeightMap(height=height, pixel_size=px_world, unit=unit, lateral_unit=unit)

    # Meshes in the substrate frame (z = height above the substrate plane).
    t0 = time.perf_counter()
    k = int(np.ceil(np.sqrt(max(int(finite.sum()), 1) / MAX_SURFACE_MESH_CELLS)))
    side_by_side = within_side_by_side_budget(h * w, len(images) + len(chained_pairs(recon.tilts_deg, ref, cfg)))
    # The surface mesh and the areal parameters need only the height map: in a thread beside the grain mesh
    # and its metrics (numpy releases the GIL) where two cores and the memory budget allow it, else in turn.
    two_cores = flow_threads(FlowConfig(threads=threads)) > 1
    beside = ThreadPoolExecutor(max_workers=1) if side_by_side and two_cores else None
    try:
        surface_task = beside.submit(_surface_mesh, height, finite, k, px_world) if beside else None
        surface_mesh = None if beside else _surface_mesh(height, finite, k, px_world)
        grain_mesh = metrics = areal = None
        grain_sel = mask & finite
        refusal = None if cfg.mask else implausible_mask(mask, finite)
        if refusal is not None:
            log.warning(refusal)
        if refusal is None and int(grain_sel.sum()) >= 50:  # noqa: PLR2004 - fewer points make no grain
            grain_height = np.where(mask, height, np.nan)
            args = (grain_height, px_world)
            areal_task = beside.submit(areal_parameters, *args, form="none", unit=unit) if beside else None
            frame = plane.frame()
            grain_pts = (grid[grain_sel].astype(np.float64) - plane.normal * plane.offset) @ frame.T
            outline = footprint_outline(mask, finite, recon.cameras[ref], plane)
            step = grain_mesh_step(int(mask.sum()), px_world)
            top, footprint, origin = grain_top_grid(grain_pts, step, outline)
            grain_mesh = close_with_base(
                top, base_z=0.0, closure=cfg.closure, pixel_size=step, origin=origin, mask=footprint
            )
            timings["grain_mesh"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            metrics = grain_metrics(grain_mesh, unit=unit, closure=cfg.closure)
            areal = areal_task.result() if areal_task else areal_parameters(*args, form="none", unit=unit)
            del grain_height, args
            timings["grain_metrics"] = time.perf_counter() - t0
        elif refusal is None:
            log.warning("no grain found above the substrate: metrics skipped (give --mask to select it)")
        if surface_task is not None:
            surface_mesh = surface_task.result()
    finally:
        if beside is not None:
            beside.shutdown(wait=True, cancel_futures=True)
    return DenseResult(
        reference_view=ref,
        points_grid=grid,
        n_views_grid=nviews,
        point_mask=finite,
        reference_pixels=images[ref].pixels,
        plane=plane,
        grain_mask=mask,
        height_map=hmap,
        grain_mesh=grain_mesh,
        surface_mesh=surface_mesh,
        metrics=metrics,
        areal=areal,
        closure=cfg.closure,
        unit=unit,
        timings_s=timings,
        surface_stride=k,
        side_by_side=side_by_side,
        base_plane="lowest points" if fallback else "substrate",
        warnings=tuple(dense_warnings),
    )


def _surface_mesh(height: np.ndarray, known: np.ndarray, k: int, pixel_size: float) -> trimesh.Trimesh | None:
    """The open surface mesh of every ``k``-th pixel of the height map (None without any known pixel)."""
    from topograph.analysis.mesh import heightfield_mesh

    return heightfield_mesh(height[::k, ::k], k * pixel_size) if known.any() else None


def footprint_outline(grain_mask: np.ndarray, known: np.ndarray, camera: AffineCamera, plane: Plane) -> np.ndarray:
    """Outline of the grain's footprint on the substrate, in the substrate frame (z = 0), (K, 3).

    The steep flanks of a grain are seen at a grazing angle, so their pixels often have no depth. The
    grain's region in the reference image is therefore grown over the unknown pixels next to it, and the
    rays of its outline pixels are intersected with the substrate plane.
    """
    # grow over adjacent unknown pixels (flanks) by up to 50 px, never over known substrate (geodesic dilation)
    grown = ndimage.binary_dilation(grain_mask, iterations=50, mask=~known | grain_mask)
    grown = ndimage.binary_fill_holes(grown)
    edge = grown & ~ndimage.binary_erosion(grown)
    ys, xs = np.nonzero(edge)
    xy = np.stack([xs, ys], axis=1).astype(np.float64)
    d = viewing_direction_nullspace(camera)
    x0 = (xy - camera.translation) @ np.linalg.pinv(camera.matrix).T
    lam = (plane.offset - x0 @ plane.normal) / (d @ plane.normal)
    world = x0 + lam[:, None] * d
    return (world - plane.normal * plane.offset) @ plane.frame().T


def grain_top_grid(
    grain_points: np.ndarray, step: float, outline: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """The grain's top as a gap-free height grid in the substrate frame.

    The points (substrate frame, z = height) are rasterised (median per cell). The footprint is the
    rasterised area, extended to the ``outline`` (footprint edge points at z = 0, see
    :func:`footprint_outline`), with holes filled. Footprint cells without points (flanks seen at a grazing
    angle, rejected pixels) are interpolated linearly between the known top and the outline at z = 0, so
    that closing the top with a base adds no spurious holes or vertical cliffs.
    Returns ``(height (H, W), footprint (H, W) bool, origin (x, y))``.
    """
    from topograph.analysis.mesh import rasterize_cloud

    pts = grain_points if outline is None or not len(outline) else np.vstack([grain_points, outline])
    hm = rasterize_cloud(pts, step, max_gap_cells=0)
    z = hm.height.astype(np.float64)
    known = np.isfinite(z)
    footprint = known.copy()
    if outline is not None and len(outline) >= 3:
        cols = (outline[:, 0] - hm.origin[0]) / step
        rows = (outline[:, 1] - hm.origin[1]) / step
        ring = np.zeros(z.shape, np.uint8)
        hull = cv2.convexHull(np.stack([cols, rows], 1).astype(np.float32))
        # the outline is not convex in general: rasterise its points, close the ring, fill it
        ring[
            np.clip(np.rint(rows).astype(int), 0, z.shape[0] - 1), np.clip(np.rint(cols).astype(int), 0, z.shape[1] - 1)
        ] = 1
        del hull
        footprint |= ndimage.binary_closing(ring.astype(bool), iterations=2)
    footprint = ndimage.binary_fill_holes(ndimage.binary_closing(footprint, iterations=2)) | known
    missing = footprint & ~known
    if missing.any():
        # Fill the footprint's gaps from their known surroundings (fast marching inpainting).
        filled = cv2.inpaint(np.where(known, z, 0.0).astype(np.float32), missing.astype(np.uint8), 3, cv2.INPAINT_TELEA)
        z[missing] = filled[missing]
    z = np.maximum(z, 0.0)
    return np.where(footprint, z, np.nan), footprint, hm.origin


def load_user_mask(path: str, shape: tuple[int, int]) -> np.ndarray:
    """A user mask image (white = grain) of the reference view's size."""
    m = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if m is None:
        raise TopographError(f"cannot read the mask image {path}", "give a PNG/TIFF with white grain pixels")
    if m.shape != shape:
        if m.shape[1] == shape[1] and m.shape[0] > shape[0]:
            m = m[: shape[0]]  # mask drawn on the uncropped image
        else:
            raise TopographError(
                f"mask {path} is {m.shape[1]}×{m.shape[0]} px but the images are {shape[1]}×{shape[0]}",
                "draw the mask on the reference view at full size",
            )
    return m > 127
