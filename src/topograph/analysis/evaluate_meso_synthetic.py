"""Evaluation of a mesoscopic reconstruction against a rendered sequence's truth (``topograph synth meso``):
Table 1 in the truth's frame and gauge-aligned registration, camera-position and distortion errors.

Table 1 itself is :func:`topograph.analysis.evaluate_meso.evaluate_regions` (the one implementation). The
reconstruction's frame is defined only up to a similarity (global shift, rotation and scale of the
mosaic). Poses are therefore compared after aligning the estimated frame to the truth with the
least-squares similarity (:func:`topograph.geometry.similarity.fit_similarity`) fitted to where the
images' pixels land on the background plane.

The reconstruction is read through :class:`SynthComparable` (implemented by
:class:`topograph.meso.reconstruct.MesoReconstruction`), so this module does not import the engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from topograph.analysis.evaluate_meso import Table1Result, evaluate_regions
from topograph.geometry.similarity import Similarity2D, fit_similarity

if TYPE_CHECKING:
    from topograph.synth.meso import MesoSynthTruth


class MosaicGrid(Protocol):
    """A mosaic grid: cell ``(0, 0)`` centred at ``origin`` (object units), spacing ``cell``, ``shape`` (H, W)."""

    origin: tuple[float, float]
    cell: float
    shape: tuple[int, int]


class SynthComparable(Protocol):
    """What the evaluation reads of a reconstruction (plain arrays; object units unless stated)."""

    height: np.ndarray
    """(H, W) height map in micrometres (NaN = none)."""
    grid: MosaicGrid

    @property
    def height_factors(self) -> np.ndarray:
        """(N,) factor converting each image's camera-centric heights (object units) to micrometres."""
        ...

    @property
    def camera_positions(self) -> np.ndarray:
        """(N, 2) camera nadirs."""
        ...

    def ground_points(self, uv: np.ndarray, plane_height: np.ndarray | None = None) -> np.ndarray:
        """(N, P, 2) where pixels ``uv`` (P, 2) of every image land on the plane at camera-centric height
        ``plane_height`` (N,) (0 when None)."""
        ...

    def undistort_pixels(self, uv: np.ndarray) -> np.ndarray:
        """(P, 2) undistorted pixel positions of raw pixels ``uv``."""
        ...


def labels_on_grid(
    labels: np.ndarray,
    origin_mm: tuple[float, float],
    texel_mm: float,
    grid: MosaicGrid,
    to_world: Similarity2D,
    fill: int = 255,
) -> np.ndarray:
    """Resample a truth label raster into a mosaic grid (nearest neighbour).

    Args:
        labels: (Ht, Wt) truth labels; texel (0, 0) centred at ``origin_mm``, spacing ``texel_mm``.
        origin_mm, texel_mm: the truth raster geometry.
        grid: the mosaic grid (object units).
        to_world: object units -> world mm.
        fill: label for cells outside the truth raster.

    Returns:
        (H, W) labels on the mosaic grid.
    """
    h, w = grid.shape
    out = np.full((h, w), fill, dtype=labels.dtype)
    rows = max(1, (1 << 20) // max(w, 1))  # a band of rows at a time: a 12 MP mosaic has ~70 M cells
    for r0 in range(0, h, rows):
        r1 = min(h, r0 + rows)
        jj, ii = np.meshgrid(np.arange(w), np.arange(r0, r1))
        obj = np.stack((grid.origin[0] + grid.cell * jj.ravel(), grid.origin[1] + grid.cell * ii.ravel()), axis=1)
        world = to_world.apply(obj)
        tx = np.round((world[:, 0] - origin_mm[0]) / texel_mm).astype(int)
        ty = np.round((world[:, 1] - origin_mm[1]) / texel_mm).astype(int)
        ok = (tx >= 0) & (tx < labels.shape[1]) & (ty >= 0) & (ty < labels.shape[0])
        band = out[r0:r1].reshape(-1)
        band[ok] = labels[ty[ok], tx[ok]]
    return out


@dataclass(frozen=True)
class SynthEvaluation:
    """Errors of a reconstruction against a rendered sequence's truth.

    ``table1`` in micrometres; ``registration_px`` (N,) per-image RMS distance (truth pixels = GSD)
    between where the estimated and the true cameras put a grid of each image's pixels on the background
    plane, after the similarity alignment ``to_world``; ``camera_position_px`` (N,) the aligned nadir
    errors; ``distortion_max_px`` / ``distortion_rms_px`` the undistortion-field error over the image
    after a similarity; ``gsd_um`` the truth GSD.
    """

    table1: Table1Result
    registration_px: np.ndarray
    camera_position_px: np.ndarray
    distortion_max_px: float
    distortion_rms_px: float
    gsd_um: float
    to_world: Similarity2D

    def to_dict(self) -> dict[str, Any]:
        return {
            "table1_um": self.table1.to_dict(),
            "gsd_um": self.gsd_um,
            "mean_accuracy_gsd": self.table1.mean_accuracy / self.gsd_um,
            "mean_precision_gsd": self.table1.mean_precision / self.gsd_um,
            "registration_rms_px": self.registration_px.tolist(),
            "registration_max_px": float(self.registration_px.max()),
            "camera_position_px": self.camera_position_px.tolist(),
            "distortion_max_px": self.distortion_max_px,
            "distortion_rms_px": self.distortion_rms_px,
            "to_world_scale_mm_per_unit": self.to_world.scale,
        }


def _pixel_grid(size: tuple[int, int], n: int = 24) -> np.ndarray:
    w, h = size
    u, v = np.meshgrid(np.linspace(0, w - 1, n), np.linspace(0, h - 1, max(2, round(n * h / w))))
    return np.stack((u.ravel(), v.ravel()), axis=1)


def evaluate_synthetic(rec: SynthComparable, truth: MesoSynthTruth, erode_px: int = 3) -> SynthEvaluation:
    """Table 1, registration, camera-position and distortion errors of ``rec`` against ``truth``.

    The estimated frame is aligned to the truth by the similarity fitted to the background-plane
    footprints of all images (pixel grids back-projected by both camera sets). The estimated
    background plane is the plane at the background's mean estimated height, so the fit is done twice:
    first on the plane of height 0, then on the plane found through the first alignment.

    Args:
        rec: the reconstruction (heights in micrometres, i.e. with absolute scale).
        truth: the rendered sequence's truth.
        erode_px: region erosion (mosaic pixels) for the Table-1 statistics.

    Returns:
        The errors.
    """
    uv = _pixel_grid(truth.image_size)
    true_pts = np.concatenate([truth.flat_points_mm(i, uv) for i in range(truth.n_images)])
    plane = None
    sim = None
    labels = None
    for _ in range(2):
        est = rec.ground_points(uv, plane).reshape(-1, 2)
        sim = fit_similarity(est, true_pts)
        labels = labels_on_grid(truth.labels, truth.origin_mm, truth.texel_mm, rec.grid, sim)
        bg = rec.height[(labels == 0) & np.isfinite(rec.height)]
        plane = float(np.median(bg)) / rec.height_factors if bg.size else None
    assert sim is not None and labels is not None
    table1 = evaluate_regions(labels, truth.region_heights_um, rec.height, truth.region_names, erode_px=erode_px)
    est = rec.ground_points(uv, plane)
    gsd = truth.gsd_mm
    p = len(uv)
    reg = np.array(
        [
            np.sqrt(np.mean(np.sum((sim.apply(est[i]) - true_pts[i * p : (i + 1) * p]) ** 2, axis=1))) / gsd
            for i in range(truth.n_images)
        ]
    )
    cam = np.linalg.norm(sim.apply(rec.camera_positions) - truth.positions_mm, axis=1) / gsd
    dense = _pixel_grid(truth.image_size, 48)
    est_u = rec.undistort_pixels(dense)
    true_u = truth.undistort(dense)
    dsim = fit_similarity(est_u, true_u)
    derr = np.linalg.norm(dsim.apply(est_u) - true_u, axis=1)
    return SynthEvaluation(
        table1=table1,
        registration_px=reg,
        camera_position_px=cam,
        distortion_max_px=float(derr.max()),
        distortion_rms_px=float(np.sqrt(np.mean(derr**2))),
        gsd_um=gsd * 1000.0,
        to_world=sim,
    )


def heights_on_grid(
    height_mm: np.ndarray, origin_mm: tuple[float, float], texel_mm: float, grid: MosaicGrid, to_world: Similarity2D
) -> np.ndarray:
    """Resample a truth height raster (mm) into a mosaic grid (bilinear): (H, W) micrometres, NaN outside."""
    import cv2

    h, w = grid.shape
    jj, ii = np.meshgrid(np.arange(w), np.arange(h))
    obj = np.stack((grid.origin[0] + grid.cell * jj.ravel(), grid.origin[1] + grid.cell * ii.ravel()), axis=1)
    world = to_world.apply(obj)
    tx = ((world[:, 0] - origin_mm[0]) / texel_mm).astype(np.float32).reshape(h, w)
    ty = ((world[:, 1] - origin_mm[1]) / texel_mm).astype(np.float32).reshape(h, w)
    src = (np.asarray(height_mm, np.float32) * 1000.0).astype(np.float32)
    return cv2.remap(src, tx, ty, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=np.nan)


@dataclass(frozen=True)
class ReliefEvaluation:
    """Height-map errors of a reconstruction of a smooth scene (``relief`` or ``dome``) against its truth.

    ``rms_um`` the RMS of ``h_est + shift - h_true`` over the cells with an estimate, after the one global
    shift ``shift = mean(h_true - h_est)`` (the height gauge); ``relief_ratio`` the least-squares slope of
    the estimated on the true heights, ``cov(h_true, h_est) / var(h_true)`` (1 = the relief's full size,
    below 1 = flattened); ``true_range_um`` the truth's 1-99 % range over the same cells; ``gsd_um``.
    """

    rms_um: float
    relief_ratio: float
    true_range_um: float
    n_cells: int
    gsd_um: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "rms_um": self.rms_um,
            "rms_gsd": self.rms_um / self.gsd_um,
            "relief_ratio": self.relief_ratio,
            "true_range_um": self.true_range_um,
            "true_range_gsd": self.true_range_um / self.gsd_um,
            "n_cells": self.n_cells,
        }


def evaluate_relief(rec: SynthComparable, truth: MesoSynthTruth) -> ReliefEvaluation:
    """Height errors of ``rec`` against a smooth truth surface (:class:`ReliefEvaluation`).

    The frame is aligned as in :func:`evaluate_synthetic` (similarity of the images' footprints), twice: on
    the estimate's plane of height 0, then on the plane that the first alignment says is the truth's
    ``z = 0`` (the median of ``h_est - h_true``), since camera-centric heights scale the footprints.
    """
    uv = _pixel_grid(truth.image_size)
    true_pts = np.concatenate([truth.flat_points_mm(i, uv) for i in range(truth.n_images)])
    plane = None
    for _ in range(2):
        sim = fit_similarity(rec.ground_points(uv, plane).reshape(-1, 2), true_pts)
        h_true = heights_on_grid(truth.height_mm, truth.origin_mm, truth.texel_mm, rec.grid, sim)
        ok = np.isfinite(rec.height) & np.isfinite(h_true)
        if not ok.any():
            raise ValueError("the reconstruction's height map does not overlap the truth")
        plane = float(np.median(rec.height[ok] - h_true[ok])) / rec.height_factors
    est, ref = rec.height[ok].astype(float), h_true[ok].astype(float)
    shift = float(np.mean(ref - est))
    rms = float(np.sqrt(np.mean((est + shift - ref) ** 2)))
    var = float(np.var(ref))
    ratio = float(np.mean((ref - ref.mean()) * (est - est.mean())) / var) if var > 0 else float("nan")
    lo, hi = np.percentile(ref, [1, 99])
    return ReliefEvaluation(rms, ratio, float(hi - lo), int(ok.sum()), truth.gsd_mm * 1000.0)
