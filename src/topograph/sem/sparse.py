"""Sparse stages of the SEM engine: pairwise matching, tracks, cameras, triangulation, bundle adjustment.

Each stage is a function taking and returning typed containers; :mod:`topograph.sem.pipeline` wires them.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass

import numpy as np

from topograph.errors import TopographError
from topograph.geometry.affine import decompose_affine_matrix
from topograph.geometry.bundle import bundle_adjust
from topograph.geometry.epipolar import ransac_affine_fundamental, tilt_axis_from_fundamental
from topograph.geometry.factorization import relative_tilts
from topograph.geometry.tracks import build_tracks, match_count_matrix
from topograph.geometry.triangulation import per_view_rms_px, triangulate
from topograph.matching.base import create_matcher
from topograph.progress import steps
from topograph.sem.cameras import CameraEstimate, estimate_cameras
from topograph.sem.config import BundleConfig, MatchingConfig
from topograph.types import AffineCamera, ImageSet, Matches, PointCloud, Reconstruction, Tracks

__all__ = ["CameraEstimate", "estimate_cameras"]

log = logging.getLogger("topograph")


@dataclass(frozen=True)
class PairMatches:
    """Matches of one view pair with their RANSAC verdict."""

    raw: Matches
    inlier_mask: np.ndarray
    """(N,) bool over ``raw``."""
    fundamental: np.ndarray | None
    """Affine fundamental matrix (3, 3) fitted on the inliers, None when RANSAC failed."""
    epipolar_rms_px: float

    @property
    def inliers(self) -> Matches:
        return self.raw.subset(self.inlier_mask)


@dataclass(frozen=True)
class SparseMatches:
    pairs: tuple[PairMatches, ...]
    counts: np.ndarray
    """(F, F) inlier match counts."""
    tilt_axis_deg: float | None
    """Tilt-axis direction in the image estimated from the epipolar geometry (median over pairs)."""
    detection_downscale: float = 1.0
    """Full-resolution pixels per pixel of the image the keypoints were detected on (≥ 1): keypoint
    positions are that much coarser until the tracks are refined."""


def series_pairs(images: ImageSet, window: int) -> list[tuple[int, int]]:
    """View pairs to match: each view with its next ``window`` views in tilt order (file order when a tilt
    is unknown) plus the first with the last in that order (the widest baseline); every pair when
    ``window`` ≤ 0 or covers the series. ``(i, j)`` with ``i < j``, sorted."""
    n = len(images)
    if window <= 0 or window >= n - 1:
        return list(itertools.combinations(range(n), 2))
    tilts = images.tilts_deg
    order = np.argsort(tilts, kind="stable") if all(t is not None for t in tilts) else np.arange(n)
    chosen = {(int(order[0]), int(order[-1]))}
    for k in range(n):
        for d in range(1, window + 1):
            if k + d < n:
                chosen.add((int(order[k]), int(order[k + d])))
    return sorted((min(a, b), max(a, b)) for a, b in chosen)


def detection_downscale(images: ImageSet, max_side: int) -> float:
    """Full-resolution px per detection px when detecting on copies with the longer side ≤ ``max_side``."""
    side = max(max(im.shape) for im in images.images)
    return max(1.0, side / max_side) if max_side > 0 else 1.0


def match_series(images: ImageSet, cfg: MatchingConfig) -> SparseMatches:
    """Match the view pairs of :func:`series_pairs`, reject outliers by RANSAC on the affine epipolar
    constraint."""
    options = cfg.matcher_options()
    matcher = create_matcher(cfg.matcher, **options)
    # A matcher that detects on a reduced copy (max_image_side) gives keypoints that much coarser.
    scale = detection_downscale(images, int(options.get("max_image_side") or 0))
    n = len(images)
    pairs: list[PairMatches] = []
    axes: list[float] = []
    features = None
    if hasattr(matcher, "detect") and hasattr(matcher, "match_features"):
        features = [matcher.detect(im.pixels) for im in steps(images.images, "features")]
    # Keypoints from a downscaled copy are as precise as its pixels: the epipolar threshold follows.
    threshold_px = cfg.ransac_threshold_px * scale
    for i, j in steps(series_pairs(images, cfg.pair_window), "matching image pairs"):
        if features is not None:
            raw = matcher.match_features(features[i], features[j], i, j)
        else:
            raw = matcher.match(images[i].pixels, images[j].pixels, i, j)
        fit = ransac_affine_fundamental(raw.xy_i, raw.xy_j, threshold_px=threshold_px, seed=cfg.seed)
        if not fit or int(np.sum(fit.inliers)) < cfg.min_inliers:
            n_in = int(np.sum(fit.inliers)) if fit else 0
            log.warning(
                "pair %s–%s: only %d consistent matches of %d raw; the pair is not used",
                images[i].name,
                images[j].name,
                n_in,
                len(raw),
            )
            pairs.append(PairMatches(raw, np.zeros(len(raw), dtype=bool), None, float("nan")))
            continue
        pair = PairMatches(raw, np.asarray(fit.inliers, dtype=bool), fit.F, float(fit.rms_px))
        pairs.append(pair)
        axes.append(tilt_axis_from_fundamental(fit.F))
        log.info(
            "pair %s–%s: %d matches, %d inliers (epipolar RMS %.2f px)",
            images[i].name,
            images[j].name,
            len(raw),
            len(pair.inliers),
            fit.rms_px,
        )
    counts = match_count_matrix([p.inliers for p in pairs], n)
    return SparseMatches(tuple(pairs), counts, _circular_median_axis(axes) if axes else None, scale)


def _circular_median_axis(axes_deg: list[float]) -> float:
    """Average of axis directions (period 180°) by doubling the angle."""
    a = np.deg2rad(2.0 * np.asarray(axes_deg))
    mean = 0.5 * np.rad2deg(np.arctan2(np.sin(a).mean(), np.cos(a).mean()))
    return float(mean - 180.0 if mean > 90.0 else mean)


def series_tracks(images: ImageSet, matches: SparseMatches, min_tracks: int = 8) -> Tracks:
    """Chain the inlier matches into tracks; fail clearly when the series does not hold together."""
    tracks = build_tracks([p.inliers for p in matches.pairs], len(images))
    seen = tracks.visible.sum(axis=1)
    lonely = [images[f].name for f in range(len(images)) if seen[f] < min_tracks]
    if tracks.n_tracks < min_tracks or lonely:
        who = ", ".join(lonely) if lonely else "the series"
        raise TopographError(
            f"too few matches: {who} shares fewer than {min_tracks} consistent points with the other views",
            "check that the images show the same area, are in focus and differ by a small tilt (3–15°)",
        )
    log.info("%d tracks (%d seen in all %d views)", tracks.n_tracks, int(tracks.visible.all(axis=0).sum()), len(images))
    return tracks


def refine_tracks(
    images: ImageSet, tracks: Tracks, method: str = "lk", max_shift_px: float = 1.0, threads: int = 0
) -> Tracks:
    """Sub-pixel refinement of the track positions: ``lk`` (:func:`refine_tracks_lk`, translation-only
    pyramidal Lucas–Kanade, fast) or ``affine`` (:func:`topograph.matching.patch_align.refine_tracks_affine`,
    affine warp + gain/bias on float images, several window sizes: about 2.5× more precise positions on
    rendered grains, about 5× slower; ``threads`` patch chunks side by side, 0 = every core)."""
    if method == "lk":
        return refine_tracks_lk(images, tracks, max_shift_px=max_shift_px)
    if method == "affine":
        from topograph.matching.patch_align import refine_tracks_affine

        return refine_tracks_affine(images, tracks, threads=threads)
    raise TopographError(f"unknown track refinement {method!r}", "use matching.track_refinement: lk or affine")


def refine_tracks_lk(images: ImageSet, tracks: Tracks, window_px: int = 21, max_shift_px: float = 1.0) -> Tracks:
    """Sub-pixel refinement of the track positions by Lucas–Kanade patch alignment.

    Keypoint positions of a feature detector are repeatable to a few tenths of a pixel only, which the
    small tilts of a series turn into large depth errors (depth error ≈ position error / sin Δθ). Each
    track keeps its position in its first view (the anchor); its positions in the other views are
    re-estimated by aligning the anchor's ``window_px`` patch (OpenCV pyramidal LK, starting from the
    matched position). A refinement that fails or moves by more than ``max_shift_px`` is not applied.
    """
    import cv2

    xy = tracks.xy.copy()
    vis = tracks.visible
    anchor = np.argmax(vis, axis=0)
    u8 = [np.clip(im.pixels * 255.0 + 0.5, 0, 255).astype(np.uint8) for im in images.images]
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.001)
    moved = []
    for a in range(tracks.n_views):
        for f in range(tracks.n_views):
            if f == a:
                continue
            sel = np.flatnonzero((anchor == a) & vis[f])
            if sel.size == 0:
                continue
            p0 = xy[a, sel].astype(np.float32).reshape(-1, 1, 2)
            p1 = xy[f, sel].astype(np.float32).reshape(-1, 1, 2)
            new, status, _err = cv2.calcOpticalFlowPyrLK(
                u8[a],
                u8[f],
                p0,
                p1.copy(),
                winSize=(window_px, window_px),
                maxLevel=1,
                criteria=criteria,
                flags=cv2.OPTFLOW_USE_INITIAL_FLOW,
            )
            new = new.reshape(-1, 2).astype(np.float64)
            shift = np.linalg.norm(new - xy[f, sel], axis=1)
            ok = (status.ravel() == 1) & (shift <= max_shift_px)
            xy[f, sel[ok]] = new[ok]
            moved.append(shift[ok])
    if moved:
        shifts = np.concatenate(moved)
        log.info("track refinement: median shift %.3f px over %d positions", float(np.median(shifts)), shifts.size)
    return Tracks(xy)


def refine(
    cameras: tuple[AffineCamera, ...], tracks: Tracks, cfg: BundleConfig, unit: str, source: str, notes: tuple[str, ...]
) -> Reconstruction:
    """Triangulate every track and refine cameras and points by bundle adjustment."""
    points = triangulate(cameras, tracks)
    ok = np.isfinite(points).all(axis=1)
    tracks = Tracks(tracks.xy[:, ok])
    points = points[ok]
    rms_before = per_view_rms_px(cameras, points, tracks)
    if cfg.enabled:
        ba = bundle_adjust(
            cameras,
            points,
            tracks,
            refine_rotations=cfg.refine_rotations and not (source == "metadata" and cfg.trust_metadata_rotations),
            loss=cfg.loss,
            f_scale_px=cfg.f_scale_px,
            max_nfev=cfg.max_nfev,
        )
        cameras, points = tuple(ba.cameras), ba.points
    rms_after = per_view_rms_px(cameras, points, tracks)
    tilts = relative_tilts_deg(cameras)
    cloud = PointCloud(np.asarray(points, dtype=np.float64), unit=unit)
    return Reconstruction(
        cameras=tuple(cameras),
        points=cloud,
        tracks=tracks,
        rms_px_before=np.asarray(rms_before),
        rms_px_after=np.asarray(rms_after),
        tilts_deg=tilts,
        camera_source=source,
        notes=notes,
    )


def relative_tilts_deg(cameras: tuple[AffineCamera, ...]) -> np.ndarray:
    """Signed tilt of every view relative to the first about the common tilt axis, degrees: right-handed
    about the axis direction in (−90°, 90°] counter-clockwise from image x
    (:func:`topograph.geometry.factorization.relative_tilts`; docs/conventions.md)."""
    return np.asarray(relative_tilts(cameras)[0], dtype=float)


def camera_summary(cameras: tuple[AffineCamera, ...]) -> list[dict[str, object]]:
    """JSON-ready description of each camera (R, k, s, t and the decomposed scale/skew)."""
    rows = []
    for c in cameras:
        k, s, _ = decompose_affine_matrix(c.matrix)
        rows.append(
            {
                "rotation": c.rotation,
                "scale": c.scale,
                "skew": c.skew,
                "translation_px": c.translation,
                "matrix": c.matrix,
                "effective_scale": k,
                "effective_skew": s,
            }
        )
    return rows
