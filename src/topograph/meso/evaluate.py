"""Evaluation against ground truth: the paper's Table-1 protocol and gauge-aligned pose/distortion errors.

Table 1 (Zhou et al. 2021): for each region (background and each card) take the mean and standard
deviation of the estimated heights; apply one global shift ``dh = mean over regions of (h_true - h_est)``;
accuracy = ``|mean_region + dh - h_true|``, precision = the region's standard deviation; report the means
of both and the optimal rescale factor ``cov(h_true, h_est) / var(h_est)`` over the region means.

The reconstruction's frame is defined only up to a similarity (global shift, rotation and scale of the
mosaic). Poses are therefore compared after aligning the estimated frame to the truth with the
least-squares similarity (Umeyama) fitted to where the images' pixels land on the background plane.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import torch

from topograph.meso.functional.splat import GridSpec

if TYPE_CHECKING:
    from topograph.meso.reconstruct import MesoReconstruction
    from topograph.synth.meso import MesoSynthTruth


@dataclass(frozen=True)
class RegionResult:
    """One region of Table 1 (heights in the height map's unit)."""

    label: int
    name: str
    true_height: float
    mean: float
    std: float
    n_pixels: int
    accuracy: float


@dataclass(frozen=True)
class Table1Result:
    """Table-1 summary: per-region results, the global shift, mean accuracy/precision and rescale."""

    regions: tuple[RegionResult, ...]
    shift: float
    mean_accuracy: float
    mean_precision: float
    rescale: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "shift": self.shift,
            "mean_accuracy": self.mean_accuracy,
            "mean_precision": self.mean_precision,
            "rescale": self.rescale,
            "regions": [r.__dict__ for r in self.regions],
        }


def evaluate_regions(
    labels: np.ndarray,
    region_heights: Mapping[int, float],
    height: np.ndarray,
    names: Mapping[int, str] | None = None,
    erode_px: int = 0,
    min_pixels: int = 10,
) -> Table1Result:
    """Table-1 accuracy and precision of an estimated height map against labelled regions.

    Args:
        labels: (H, W) integer region labels in the same frame as ``height`` (labels not in
            ``region_heights`` are ignored).
        region_heights: true height of each label.
        height: (H, W) estimated heights (NaN = no estimate).
        names: optional label names.
        erode_px: shrink every region by this many pixels first (keeps edges out of the statistics).
        min_pixels: regions with fewer valid pixels are skipped.

    Returns:
        The per-region statistics and the summary.

    Raises:
        ValueError: shapes differ, or fewer than two regions have enough pixels.
    """
    if labels.shape != height.shape:
        raise ValueError(f"labels {labels.shape} and height {height.shape} must have one shape")
    kernel = np.ones((2 * erode_px + 1, 2 * erode_px + 1), np.uint8) if erode_px > 0 else None
    stats = []
    for lab, h_true in sorted(region_heights.items()):
        mask = (labels == lab).astype(np.uint8)
        if kernel is not None:
            mask = cv2.erode(mask, kernel)
        vals = height[(mask > 0) & np.isfinite(height)]
        if vals.size < min_pixels:
            continue
        stats.append((int(lab), float(h_true), float(vals.mean()), float(vals.std()), int(vals.size)))
    if len(stats) < 2:
        raise ValueError("fewer than two regions have enough valid pixels for the Table-1 evaluation")
    h_true = np.array([s[1] for s in stats])
    h_est = np.array([s[2] for s in stats])
    shift = float(np.mean(h_true - h_est))
    acc = np.abs(h_est + shift - h_true)
    var = float(np.var(h_est))
    rescale = float(np.mean((h_true - h_true.mean()) * (h_est - h_est.mean())) / var) if var > 0 else float("nan")
    regions = tuple(
        RegionResult(
            label=s[0],
            name=(names or {}).get(s[0], str(s[0])),
            true_height=s[1],
            mean=s[2],
            std=s[3],
            n_pixels=s[4],
            accuracy=float(a),
        )
        for s, a in zip(stats, acc, strict=True)
    )
    return Table1Result(
        regions=regions,
        shift=shift,
        mean_accuracy=float(acc.mean()),
        mean_precision=float(np.mean([s[3] for s in stats])),
        rescale=rescale,
    )


@dataclass(frozen=True)
class Similarity2D:
    """``dst = scale * R @ src + t`` with a proper rotation ``R`` (2, 2)."""

    scale: float
    rotation: np.ndarray
    translation: np.ndarray

    def apply(self, points: np.ndarray) -> np.ndarray:
        """(P, 2) -> (P, 2)."""
        return self.scale * np.asarray(points, dtype=float) @ self.rotation.T + self.translation


def fit_similarity(src: np.ndarray, dst: np.ndarray) -> Similarity2D:
    """Least-squares similarity from ``src`` to ``dst`` (Umeyama 1991), reflections excluded.

    Args:
        src, dst: (P, 2) corresponding points, P >= 2.

    Returns:
        The similarity minimising ``sum |dst - s R src - t|^2``.
    """
    src = np.asarray(src, dtype=float)
    dst = np.asarray(dst, dtype=float)
    ms, md = src.mean(0), dst.mean(0)
    a, b = src - ms, dst - md
    cov = b.T @ a / len(src)
    u, sv, vt = np.linalg.svd(cov)
    d = np.diag([1.0, np.sign(np.linalg.det(u @ vt))])
    rot = u @ d @ vt
    var = (a * a).sum() / len(src)
    scale = float(np.trace(np.diag(sv) @ d) / var)
    return Similarity2D(scale, rot, md - scale * rot @ ms)


def labels_on_grid(
    labels: np.ndarray,
    origin_mm: tuple[float, float],
    texel_mm: float,
    grid: GridSpec,
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
    jj, ii = np.meshgrid(np.arange(w), np.arange(h))
    obj = np.stack((grid.origin[0] + grid.cell * jj.ravel(), grid.origin[1] + grid.cell * ii.ravel()), axis=1)
    world = to_world.apply(obj)
    tx = np.round((world[:, 0] - origin_mm[0]) / texel_mm).astype(int)
    ty = np.round((world[:, 1] - origin_mm[1]) / texel_mm).astype(int)
    ok = (tx >= 0) & (tx < labels.shape[1]) & (ty >= 0) & (ty < labels.shape[0])
    out = np.full(h * w, fill, dtype=labels.dtype)
    out[ok] = labels[ty[ok], tx[ok]]
    return out.reshape(h, w)


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


@torch.no_grad()
def _estimated_points(rec: MesoReconstruction, uv: np.ndarray, plane_height: np.ndarray | None) -> np.ndarray:
    model = rec.model
    t = torch.as_tensor(uv, dtype=torch.float32)
    h = None
    if plane_height is not None:
        h = torch.as_tensor(plane_height, dtype=torch.float32)[:, None].expand(model.n_images, t.shape[0])
    return model.object_points(t, h).cpu().numpy().astype(float)


def evaluate_synthetic(rec: MesoReconstruction, truth: MesoSynthTruth, erode_px: int = 3) -> SynthEvaluation:
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
        est = _estimated_points(rec, uv, plane).reshape(-1, 2)
        sim = fit_similarity(est, true_pts)
        labels = labels_on_grid(truth.labels, truth.origin_mm, truth.texel_mm, rec.grid, sim)
        bg = rec.height[(labels == 0) & np.isfinite(rec.height)]
        plane = float(np.median(bg)) / rec.scale.height_factors if bg.size else None
    assert sim is not None and labels is not None
    table1 = evaluate_regions(labels, truth.region_heights_um, rec.height, truth.region_names, erode_px=erode_px)
    est = _estimated_points(rec, uv, plane)
    gsd = truth.gsd_mm
    p = len(uv)
    reg = np.array(
        [
            np.sqrt(np.mean(np.sum((sim.apply(est[i]) - true_pts[i * p : (i + 1) * p]) ** 2, axis=1))) / gsd
            for i in range(truth.n_images)
        ]
    )
    cam = np.linalg.norm(sim.apply(rec.cameras.positions) - truth.positions_mm, axis=1) / gsd
    dense = _pixel_grid(truth.image_size, 48)
    with torch.no_grad():
        est_u = rec.model.distortion.undistort(torch.as_tensor(dense, dtype=torch.float32)).numpy().astype(float)
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
