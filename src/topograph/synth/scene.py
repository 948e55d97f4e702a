"""Exact synthetic correspondences of a tilt series seen by scaled orthographic cameras.

The scene is a bumpy blob (a star-shaped surface ``r(ω) = R (1 + Σ bumps)``) centred at the world
origin; its upper part (the side facing the beam) is sampled uniformly in direction. Cameras come from
:func:`topograph.geometry.affine.camera_from_stage`, so the ground truth follows exactly the frame
conventions of the SEM engine.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from topograph.geometry.affine import camera_from_stage
from topograph.types import AffineCamera, Tracks


def bumpy_blob_points(n_points: int, radius: float, rng: np.random.Generator, z_min_frac: float = -0.3) -> np.ndarray:
    """Points on a bumpy blob surface.

    ``r(ω) = radius · (1 + 0.12 sin(3 ω_x + 1) sin(2 ω_y) + 0.08 cos(4 ω_z + 2 ω_x) + 0.05 sin(7 ω_y))`` along
    random unit directions ``ω`` with ``ω_z ≥ z_min_frac`` (the side facing the detector), and the
    blob is flattened to 0.7 along Z like a grain resting on a substrate.

    Args:
        n_points: number of points P.
        radius: mean radius in world units.
        rng: NumPy random generator.
        z_min_frac: lowest ``ω_z`` kept (−1 keeps the whole blob).

    Returns:
        (P, 3) float64 world points.
    """
    out = np.empty((0, 3))
    while out.shape[0] < n_points:
        w = rng.normal(size=(2 * n_points + 16, 3))
        w /= np.linalg.norm(w, axis=1, keepdims=True)
        w = w[w[:, 2] >= z_min_frac]
        out = np.vstack([out, w])
    w = out[:n_points]
    bumps = (
        0.12 * np.sin(3.0 * w[:, 0] + 1.0) * np.sin(2.0 * w[:, 1])
        + 0.08 * np.cos(4.0 * w[:, 2] + 2.0 * w[:, 0])
        + 0.05 * np.sin(7.0 * w[:, 1])
    )
    pts = radius * (1.0 + bumps)[:, None] * w
    pts[:, 2] *= 0.7
    return pts


def make_affine_scene(
    n_views: int,
    n_points: int,
    tilts_deg: Sequence[float],
    tilt_axis_deg: float = 0.0,
    noise_px: float = 0.0,
    scale: float = 1.0,
    seed: int = 0,
    missing_fraction: float = 0.0,
    *,
    radius_px: float = 400.0,
    image_center_px: tuple[float, float] = (512.0, 512.0),
    drift_px: float = 20.0,
) -> tuple[tuple[AffineCamera, ...], np.ndarray, Tracks]:
    """A tilt series of a bumpy blob with exact (optionally noisy) multi-view tracks.

    View ``f`` is ``camera_from_stage(tilts_deg[f], tilt_axis_deg, pixel_size_um=1/scale)`` with a
    translation that puts the blob centre at ``image_center_px`` plus a random stage drift; the
    observations are ``x = k [[1,0,0],[0,1,0]] R X + t + n`` with ``n ~ N(0, noise_px²)`` per coordinate.

    Args:
        n_views: number of views F.
        n_points: number of points / tracks P.
        tilts_deg: stage tilt of every view, degrees (length F).
        tilt_axis_deg: in-image direction of the tilt axis, degrees.
        noise_px: standard deviation of the Gaussian noise added to every coordinate, px.
        scale: camera scale k in px per world unit (1 / pixel size).
        seed: random seed (points, drift, noise, missing observations).
        missing_fraction: fraction of observations removed (set to NaN); every track keeps ≥ 2 views
            (ignored for 2 views).
        radius_px: blob radius as seen in the image, px (the blob spans about ``2 radius_px``).
        image_center_px: where the blob centre projects, px.
        drift_px: standard deviation of the per-view translation drift, px.

    Returns:
        ``(cameras, points, tracks)``: F cameras, (P, 3) true world points (world units = px / scale),
        and the :class:`Tracks` (F, P, 2) of observations (NaN where removed).
    """
    if len(tilts_deg) != n_views:
        raise ValueError(f"tilts_deg must have {n_views} entries, got {len(tilts_deg)}")
    if not 0.0 <= missing_fraction < 1.0:
        raise ValueError("missing_fraction must be in [0, 1)")
    rng = np.random.default_rng(seed)
    points = bumpy_blob_points(n_points, radius_px / scale, rng)
    centre = np.asarray(image_center_px, dtype=float)
    cameras = tuple(
        camera_from_stage(
            float(t),
            tilt_axis_deg,
            pixel_size_um=1.0 / scale,
            translation_px=centre + (drift_px * rng.normal(size=2) if f > 0 else 0.0),
        )
        for f, t in enumerate(tilts_deg)
    )
    xy = np.stack([cam.project(points) for cam in cameras])
    if noise_px > 0:
        xy = xy + rng.normal(scale=noise_px, size=xy.shape)
    if missing_fraction > 0 and n_views > 2:
        drop = rng.random((n_views, n_points)) < missing_fraction
        # keep >= 2 views per track: restore the two views with the smallest random keys where needed
        too_few = (~drop).sum(axis=0) < 2
        keys = rng.random((n_views, n_points))
        order = np.argsort(keys, axis=0)[:2]
        for r in range(2):
            drop[order[r, too_few], np.nonzero(too_few)[0]] = False
        xy[drop] = np.nan
    return cameras, points, Tracks(xy)
