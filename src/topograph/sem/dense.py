"""Dense stage of the SEM engine: dense flow to every view → fused per-pixel triangulation → filtering →
substrate plane and grain mask → height map, mesh and grain metrics.

The reference view is the one with the median tilt (occlusions split evenly on both sides). Every other
view is matched to it by coarse-to-fine optical flow with a forward–backward check; correspondences
off their affine epipolar line are rejected; the rest enter one least-squares point per reference
pixel, so a pixel seen in three views is triangulated from three.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from scipy import ndimage

from topograph.errors import TopographError
from topograph.geometry.dense_triangulation import (
    NormalEquations,
    epipolar_distance_px,
    reprojection_error_px,
    viewing_direction_nullspace,
)
from topograph.matching.dense import DenseConfig as FlowConfig
from topograph.matching.dense import dense_flow
from topograph.sem.config import DenseConfig
from topograph.types import AffineCamera, HeightMap, ImageSet, PointCloud, Reconstruction

log = logging.getLogger("topograph")


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


@dataclass
class DenseResult:
    reference_view: int
    points_grid: np.ndarray
    """(H, W, 3) fused point of every reference pixel, NaN where rejected."""
    n_views_grid: np.ndarray
    """(H, W) number of views that saw each pixel."""
    cloud: PointCloud
    plane: Plane
    grain_mask: np.ndarray
    """(H, W) bool grain pixels of the reference view."""
    height_map: HeightMap
    grain_mesh: Any  # trimesh.Trimesh, closed
    surface_mesh: Any  # trimesh.Trimesh, visible surface
    metrics: Any  # GrainMetrics
    areal: Any  # ArealParameters of the grain top
    closure: str
    unit: str

    def summary(self) -> dict[str, Any]:
        grain = int(self.grain_mask.sum())
        return {
            "reference_view": self.reference_view,
            "n_points": len(self.cloud),
            "n_points_grain": int(np.isfinite(self.points_grid[self.grain_mask]).all(axis=1).sum()) if grain else 0,
            "n_points_3plus_views": int((self.n_views_grid >= 3).sum()),
            "grain_pixels": grain,
            "closure": self.closure,
            "grain_metrics": self.metrics.to_dict() if self.metrics is not None else None,
            "areal_parameters_grain_top": self.areal.to_dict() if self.areal is not None else None,
        }

    def write(self, out: Path, run: Any) -> None:
        """Write cloud, height map (TIFF + PNG), meshes, metrics and renderings into ``out``."""
        from topograph import __version__
        from topograph.analysis.mesh import write_mesh
        from topograph.analysis.render import height_map_png, render_cloud_views
        from topograph.io.atomic import write_json
        from topograph.io.exports import write_float_tiff, write_ply

        unit_text = "micrometres" if self.unit == "um" else "pixel units of view 0 (no pixel size known)"
        write_ply(
            out / "dense.ply",
            self.cloud,
            comments=[f"topograph {__version__} dense SEM cloud", f"unit {self.unit}", f"unit_description {unit_text}"],
        )
        px = self.height_map.pixel_size
        write_float_tiff(out / "height_map.tif", self.height_map.height, px, unit=self.unit)
        height_map_png(self.height_map.height, px, out / "height_map.png", unit="µm" if self.unit == "um" else "px")
        cv2.imwrite(str(_tmp_png(out / "grain_mask.png")), (self.grain_mask * 255).astype(np.uint8))
        _tmp_png(out / "grain_mask.png").replace(out / "grain_mask.png")
        if self.grain_mesh is not None:
            write_mesh(self.grain_mesh, out / "grain_mesh.ply")
            write_mesh(self.grain_mesh, out / "grain_mesh.stl")
        if self.surface_mesh is not None:
            write_mesh(self.surface_mesh, out / "surface_mesh.ply")
        render_cloud_views(
            self.cloud.xyz,
            self.cloud.intensity,
            out / "figures" / "dense_cloud_views.png",
            unit="µm" if self.unit == "um" else "px",
        )
        if self.metrics is not None:
            write_json(out / "grain_metrics.json", {"unit": self.unit, **self.metrics.to_dict()})
        if self.areal is not None:
            write_json(out / "areal_parameters.json", self.areal.to_dict())


def _tmp_png(path: Path) -> Path:
    return path.with_name(f".{path.stem}.tmp.png")


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


def fuse_dense(
    images: ImageSet, recon: Reconstruction, cfg: DenseConfig, ref: int
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray | None]]:
    """Fused (H, W, 3) points of the reference grid, (H, W) view counts and per-view visibility masks."""
    h, w = images[ref].shape
    ys, xs = np.mgrid[0:h, 0:w]
    grid = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float64)
    cams = recon.cameras
    acc = NormalEquations(h * w)
    acc.add_view(cams[ref], grid, np.ones(h * w, dtype=bool))
    flow_cfg = FlowConfig(
        fb_threshold_px=cfg.fb_threshold_px,
        passes=cfg.flow_passes,
        variational_refinement_alpha=cfg.flow_smoothness,
        variational_refinement_iterations=10,
    )
    observations: list[tuple[int, np.ndarray, np.ndarray]] = []
    for f in range(len(images)):
        if f == ref:
            continue
        res = dense_flow(images[ref].pixels, images[f].pixels, flow_cfg)
        flow, valid = res.flow, res.valid
        xy = grid + flow.reshape(-1, 2).astype(np.float64)
        ok = valid.ravel().copy()
        epi = epipolar_distance_px(cams[ref], cams[f], grid[ok], xy[ok])
        keep = np.flatnonzero(ok)[epi <= cfg.epipolar_threshold_px]
        mask = np.zeros(h * w, dtype=bool)
        mask[keep] = True
        log.info(
            "dense %s → %s: %.1f%% consistent, %.1f%% on the epipolar line",
            images[ref].name,
            images[f].name,
            100 * valid.mean(),
            100 * mask.mean(),
        )
        acc.add_view(cams[f], xy, mask)
        observations.append((f, xy.astype(np.float32), mask))
    if cfg.chain_pairs:
        chained = _chained_observations(images, recon, ref, observations, flow_cfg, cfg)
        for f, xy, mask in chained:
            acc.add_view(cams[f], xy.astype(np.float64), mask)
        observations.extend(chained)
    points = acc.solve(min_views=max(2, cfg.min_views))
    # One pass of residual rejection: a view whose reprojection error is large is dropped for that pixel.
    finite = np.isfinite(points).all(axis=1)
    bad_any = False
    for f, xy, mask in observations:
        sel = np.flatnonzero(mask & finite)
        err = reprojection_error_px(cams[f], points[sel], xy[sel].astype(np.float64))
        bad = sel[err > cfg.epipolar_threshold_px]
        mask[bad] = False
        if bad.size:
            bad_any = True
            m = cams[f].matrix
            mtm = m.T @ m
            acc.ata[bad] -= mtm[np.triu_indices(3)]
            acc.atb[bad] -= (xy[bad].astype(np.float64) - cams[f].translation) @ m
            acc.count[bad] -= 1
    visible: list[np.ndarray | None] = [None] * len(images)
    for f, _xy, mask in observations:
        visible[f] = mask.reshape(h, w) if visible[f] is None else (visible[f] | mask.reshape(h, w))
    if bad_any:
        points = acc.solve(min_views=max(2, cfg.min_views))
    return points.reshape(h, w, 3), acc.count.reshape(h, w).astype(np.int16), visible


def _chained_observations(
    images: ImageSet,
    recon: Reconstruction,
    ref: int,
    direct: list[tuple[int, np.ndarray, np.ndarray]],
    flow_cfg: FlowConfig,
    cfg: DenseConfig,
) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """Second, independent observations from pairs without the reference view.

    For a pair (a, b), the reference pixel's direct match ``x_a`` is carried on by the a→b flow:
    ``x_b' = x_a + u_ab(x_a)``. It enters the least squares as one more observation of view b (its noise
    is independent of the direct ref→b flow). With three views every such pair is used; with more, the
    pairs of neighbours in tilt order.
    """
    h, w = images[ref].shape
    direct_by_view = {f: (xy, mask) for f, xy, mask in direct}
    order = [int(v) for v in np.argsort(recon.tilts_deg) if int(v) != ref]
    if len(images) <= 3:
        pairs = [(a, b) for i, a in enumerate(order) for b in order[i + 1 :]]
    else:
        pairs = list(zip(order[:-1], order[1:], strict=True))
    out: list[tuple[int, np.ndarray, np.ndarray]] = []
    for a, b in pairs:
        res = dense_flow(images[a].pixels, images[b].pixels, flow_cfg)
        xy_a, mask_a = direct_by_view[a]
        mx = xy_a[:, 0].reshape(h, w).astype(np.float32)
        my = xy_a[:, 1].reshape(h, w).astype(np.float32)
        flow_at = cv2.remap(res.flow, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=np.nan)
        valid_at = cv2.remap(res.valid.astype(np.uint8), mx, my, cv2.INTER_NEAREST, borderValue=0) > 0
        xy_b = xy_a.astype(np.float64) + flow_at.reshape(-1, 2)
        ok = mask_a & valid_at.ravel() & np.isfinite(xy_b).all(axis=1)
        ok_idx = np.flatnonzero(ok)
        grid = np.stack(np.meshgrid(np.arange(w), np.arange(h)), axis=-1).reshape(-1, 2).astype(np.float64)
        epi = epipolar_distance_px(recon.cameras[ref], recon.cameras[b], grid[ok_idx], xy_b[ok_idx])
        keep = np.zeros(h * w, dtype=bool)
        keep[ok_idx[epi <= cfg.epipolar_threshold_px]] = True
        out.append((b, np.nan_to_num(xy_b).astype(np.float32), keep))
        log.info(
            "dense chain %s → %s: %.1f%% of the reference pixels", images[a].name, images[b].name, 100 * keep.mean()
        )
    return out


def remove_grid_outliers(points_grid: np.ndarray, depth: np.ndarray, std_ratio: float, window: int = 5) -> np.ndarray:
    """Statistical outlier removal on the organised cloud: drop points whose depth departs from the median
    of their ``window × window`` neighbourhood by more than ``std_ratio`` robust standard deviations
    (1.4826 · MAD of all departures). Returns the kept-mask (H, W)."""
    valid = np.isfinite(depth)
    if valid.sum() < 10:
        return valid
    filled = np.where(valid, depth, np.nanmedian(depth))
    med = ndimage.median_filter(filled, size=window, mode="nearest")
    dev = np.abs(depth - med)
    sigma = 1.4826 * np.nanmedian(dev[valid]) + 1e-12
    return valid & (dev <= std_ratio * sigma)


def fit_substrate_plane(
    points: np.ndarray, border_points: np.ndarray, toward_detector: np.ndarray, seed: int = 0
) -> Plane:
    """RANSAC plane through the substrate, seeded by the image border (where the substrate is), then a
    least-squares refit on all inliers of the whole cloud. The normal points toward the detector."""
    rng = np.random.default_rng(seed)
    cand = border_points if len(border_points) >= 100 else points
    if len(cand) < 3:
        raise TopographError("too few dense points to find the substrate plane", "check the dense matches / mask")
    scale = np.linalg.norm(np.ptp(points, axis=0)) + 1e-12
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
    inl = points[np.abs(points @ n - d) < thr]
    c = inl.mean(axis=0)
    _, _, vt = np.linalg.svd(inl - c, full_matrices=False)
    n = vt[2]
    if n @ toward_detector < 0:
        n = -n
    return Plane(n, float(n @ c))


def grain_mask_from_height(height: np.ndarray, plane_noise: float, min_fraction: float = 0.02) -> np.ndarray:
    """Grain = the largest connected region clearly above the substrate plane, holes filled.

    Unknown pixels (NaN: flanks at grazing view, rejected matches) are filled by a normalised Gaussian
    average of their known neighbours first, so that the speckled rim of a grain is not eaten away.
    Threshold: max(5 σ of the substrate, 2 % of the highest point)."""
    valid = np.isfinite(height)
    if not valid.any():
        return valid
    w = valid.astype(np.float32)
    num = cv2.GaussianBlur(np.where(valid, height, 0).astype(np.float32), (0, 0), 3.0)
    den = cv2.GaussianBlur(w, (0, 0), 3.0)
    smooth = np.where(den > 0.05, num / np.maximum(den, 1e-6), np.nan)
    filled = np.where(valid, height, smooth)
    top = np.nanpercentile(height, 99.5)
    thr = max(5.0 * plane_noise, min_fraction * top)
    raw = np.nan_to_num(filled, nan=-np.inf) > thr
    lab, n = ndimage.label(raw)
    if n == 0:
        return raw
    sizes = ndimage.sum(raw, lab, index=np.arange(1, n + 1))
    mask = lab == (1 + int(np.argmax(sizes)))
    return ndimage.binary_fill_holes(mask)


def run_dense(images: ImageSet, recon: Reconstruction, cfg: DenseConfig, pixel_size_um: float | None) -> DenseResult:
    """Dense cloud, substrate plane, grain mask, height map, meshes and grain metrics of a reconstructed series."""
    from topograph.analysis.grain import grain_metrics
    from topograph.analysis.mesh import close_with_base, heightfield_mesh
    from topograph.analysis.surface import areal_parameters

    ref = choose_reference_view(recon, cfg.reference_view)
    unit = recon.points.unit
    grid, nviews, visible = fuse_dense(images, recon, cfg, ref)
    h, w = nviews.shape

    finite = np.isfinite(grid).all(axis=2)
    if finite.sum() < 100:
        raise TopographError(
            "the dense matching found almost no consistent correspondences",
            "check the cameras (sparse reprojection error) or raise --fb-threshold",
        )
    toward = recon.cameras[ref].rotation[2]
    depth = np.where(finite, grid @ toward, np.nan)
    keep = remove_grid_outliers(grid, depth, cfg.outlier_std_ratio)
    grid[~keep] = np.nan
    finite = keep
    border = np.zeros((h, w), dtype=bool)
    bw = max(4, int(0.08 * min(h, w)))
    border[:bw] = border[-bw:] = True
    border[:, :bw] = border[:, -bw:] = True
    pts = grid[finite]
    border_cover = float((finite & border).sum()) / float(border.sum())
    plane = fit_substrate_plane(pts, grid[finite & border], toward)
    stage_normal = np.array([0.0, 0.0, 1.0])  # metadata frame: the stage; factorization: the first view
    tilt_off = float(np.degrees(np.arccos(np.clip(abs(plane.normal @ stage_normal), 0.0, 1.0))))
    if border_cover < 0.25 or tilt_off > 25.0:  # noqa: PLR2004 - see the log message
        # A featureless substrate gives (almost) no points at the image border; a plane fitted there runs
        # through the grain. Fall back to the plane facing the detector through the lowest points.
        depth_n = pts @ stage_normal
        plane = Plane(stage_normal, float(np.percentile(depth_n, 2.0)))
        log.warning(
            "the substrate is hardly matched (%.0f%% of the image border has depth, fitted plane tilted %.0f°): "
            "heights are measured from the plane facing the detector through the lowest 2%% of points",
            100 * border_cover,
            tilt_off,
        )
    height = np.where(finite, grid @ plane.normal - plane.offset, np.nan).astype(np.float32)
    sub = height[finite & border]
    fallback = border_cover < 0.25 or tilt_off > 25.0
    plane_noise = float(1.4826 * np.median(np.abs(sub - np.median(sub)))) if sub.size and not fallback else 0.0
    if cfg.mask:
        mask = load_user_mask(cfg.mask, (h, w))
    else:
        mask = grain_mask_from_height(height, plane_noise)
    intensity = images[ref].pixels[finite].astype(np.float32)
    cloud = PointCloud(pts.astype(np.float64), unit=unit, intensity=np.clip(intensity, 0, 1))
    log.info("dense cloud: %d points (%d on the grain)", len(cloud), int((mask & finite).sum()))

    # Height map in the reference view (grid spacing = one reference pixel on the specimen).
    px_world = 1.0 / recon.cameras[ref].scale
    hmap = HeightMap(height=height, pixel_size=px_world, unit=unit, lateral_unit=unit)

    # Meshes in the substrate frame (z = height above the substrate plane).
    frame = plane.frame()
    local = (grid.reshape(-1, 3) - plane.normal * plane.offset) @ frame.T
    local = local.reshape(h, w, 3)
    surface_mesh = heightfield_mesh(np.where(finite, local[..., 2], np.nan), px_world) if finite.any() else None
    grain_mesh = metrics = areal = None
    grain_pts = local[mask & finite]
    if len(grain_pts) >= 50:
        outline = footprint_outline(mask, finite, recon.cameras[ref], plane)
        top, footprint, origin = grain_top_grid(grain_pts, px_world, outline)
        grain_mesh = close_with_base(
            top, base_z=0.0, closure=cfg.closure, pixel_size=px_world, origin=origin, mask=footprint
        )
        metrics = grain_metrics(grain_mesh, unit=unit, closure=cfg.closure)
        areal = areal_parameters(np.where(mask, height, np.nan), px_world, form="none", unit=unit)
    else:
        log.warning("no grain found above the substrate: metrics skipped (give --mask to select it)")
    return DenseResult(
        reference_view=ref,
        points_grid=grid,
        n_views_grid=nviews,
        cloud=cloud,
        plane=plane,
        grain_mask=mask,
        height_map=hmap,
        grain_mesh=grain_mesh,
        surface_mesh=surface_mesh,
        metrics=metrics,
        areal=areal,
        closure=cfg.closure,
        unit=unit,
    )


def footprint_outline(grain_mask: np.ndarray, known: np.ndarray, camera: AffineCamera, plane: Plane) -> np.ndarray:
    """Outline of the grain's footprint on the substrate, in the substrate frame (z = 0), (K, 3).

    The steep flanks of a grain are seen at a grazing angle, so their pixels often have no depth. The
    grain's region in the reference image is therefore grown over the unknown pixels next to it, and the
    rays of its outline pixels are intersected with the substrate plane.
    """
    grown = grain_mask.copy()
    for _ in range(50):  # grow over adjacent unknown pixels (flanks), never over known substrate
        nxt = ndimage.binary_dilation(grown) & (~known | grain_mask)
        if (nxt == grown).all():
            break
        grown = nxt
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
