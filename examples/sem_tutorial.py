# %% [markdown]
# # SEM tutorial: from a tilt series to a measured grain, stage by stage
#
# The `topograph sem` command runs the whole SEM pipeline in one go. This tutorial runs the same stages
# one at a time, in Python, and looks at what each stage produces:
#
# 1. **load** the series and its microscope metadata,
# 2. **match** every view pair (SIFT + RANSAC on the affine epipolar constraint),
# 3. chain the matches into **tracks**,
# 4. estimate the affine **cameras** (from metadata, or by factorization),
# 5. **bundle-adjust** cameras and points,
# 6. **dense** reconstruction: cloud, height map, grain mask, closed mesh,
# 7. **grain metrics** (volume, Feret diameters, sphericity ...).
#
# Part 1 uses a generated grain, whose exact geometry is known, so every result can be checked against
# the truth. Part 2 uses a real series of a quartz grain without any metadata. Part 3 runs the same
# pipeline in one call and writes the files and the HTML report.
#
# This file is a plain Python script and, generated from it, a Jupyter notebook
# (`python examples/make_notebooks.py`). Run either: `python examples/sem_tutorial.py` or open
# `examples/sem_tutorial.ipynb`.

# %% [markdown]
# ## Setup
#
# Parameters are read from environment variables so that the tests can run this notebook on small data:
#
# * `TOPOGRAPH_TUTORIAL_QUICK=1`: tiny images (a 300-pixel grain, the quartz images at 1/4 size) — a
#   fast smoke run whose numbers are rougher than a full run;
# * `TOPOGRAPH_SHARED_DATA`: the folder holding `sem/quartz/Quarz_01.png ...` (default: a `shared/data`
#   folder next to the repository, found from the current folder upwards);
# * `TOPOGRAPH_TUTORIAL_OUT`: where the generated data, figures and run folders go
#   (default `./tutorial_output`).

# %%
import logging
import os
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import matplotlib.pyplot as plt
import numpy as np

from topograph.analysis.evaluate_sem import Alignment, evaluate_sem_truth, tilt_errors
from topograph.config import apply_overrides
from topograph.io.images import describe_series, load_sem_series, series_warnings
from topograph.report.render import render_cloud_views
from topograph.sem.config import SemConfig
from topograph.sem.dense import run_dense
from topograph.sem.pipeline import run_sem, series_pixel_size_um, series_tilt_axis_deg
from topograph.sem.sparse import (
    PairMatches,
    estimate_cameras,
    match_series,
    refine,
    relative_tilts_deg,
    series_tracks,
)
from topograph.synth.sem import GrainSpec, load_sem_truth, render_sem_series, save_sem_dataset
from topograph.types import ImageSet, Reconstruction

logging.basicConfig(format="%(levelname)s %(message)s")
logging.getLogger("topograph").setLevel(logging.WARNING)  # INFO shows every stage's log lines

QUICK = os.environ.get("TOPOGRAPH_TUTORIAL_QUICK", "0").strip().lower() not in ("", "0", "false", "no")
GRAIN_SIZE = 300 if QUICK else 600  # side of the generated images, pixels
QUARTZ_SCALE = 0.25 if QUICK else 0.5  # resize factor of the 1200-pixel quartz images (dense time grows fast)
TILTS_DEG = (-5.0, 0.0, 5.0)  # stage tilts of the generated series, degrees
CLOUD_POINTS = 15_000 if QUICK else 100_000  # points drawn in the 3-D cloud renderings
OUT = Path(os.environ.get("TOPOGRAPH_TUTORIAL_OUT", "tutorial_output")).resolve() / "sem"
FIGURES = OUT / "figures"
FIGURES.mkdir(parents=True, exist_ok=True)


def find_shared_data() -> Path | None:
    """``$TOPOGRAPH_SHARED_DATA``, else the first ``shared/data`` folder in the current folder or above it."""
    if os.environ.get("TOPOGRAPH_SHARED_DATA"):
        return Path(os.environ["TOPOGRAPH_SHARED_DATA"])
    for folder in (Path.cwd(), *Path.cwd().parents):
        if (folder / "shared" / "data").is_dir():
            return folder / "shared" / "data"
    return None


SHARED_DATA = find_shared_data()
INLINE = "ipykernel" in sys.modules  # running in Jupyter: show figures inline


def show(fig: plt.Figure, name: str) -> None:
    """Save a figure under OUT/figures; in a notebook, show the saved PNG inline (the figure is drawn once)."""
    path = FIGURES / f"{name}.png"
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)
    show_png(path)


def show_png(path: Path) -> None:
    """Show a PNG inline in a notebook, or print its path when running as a script."""
    if INLINE:
        from IPython.display import Image, display

        display(Image(filename=str(path)))
    else:
        print(f"[figure] {path}")


def print_table(rows: list[dict], columns: list[str]) -> None:
    """Print dicts as an aligned text table (floats with 4 significant digits, None as '-')."""

    def fmt(v: object) -> str:
        if v is None:
            return "-"
        if isinstance(v, float | np.floating):
            return f"{v:.4g}"
        return str(v)

    cells = [[fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[k]) for row in cells)) for k, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))


def plot_matches(ax: plt.Axes, images: ImageSet, pair: PairMatches, max_lines: int = 120) -> None:
    """Views i and j side by side; lines join matches (green: RANSAC inliers, red: rejected)."""
    i, j = pair.raw.i, pair.raw.j
    a, b = images[i].pixels, images[j].pixels
    ax.imshow(np.hstack([a, b]), cmap="gray", vmin=0, vmax=1)
    rng = np.random.default_rng(0)
    pick = rng.choice(len(pair.raw), size=min(max_lines, len(pair.raw)), replace=False)
    for k in pick:
        (x0, y0), (x1, y1) = pair.raw.xy_i[k], pair.raw.xy_j[k]
        colour = "lime" if pair.inlier_mask[k] else "red"
        ax.plot([x0, x1 + a.shape[1]], [y0, y1], color=colour, lw=0.6, alpha=0.8)
    n_in = int(pair.inlier_mask.sum())
    ax.set_title(f"{images[i].name} – {images[j].name}: {len(pair.raw)} matches, {n_in} inliers")
    ax.axis("off")


def dome_score(recon: Reconstruction, image_shape: tuple[int, int]) -> float:
    """Relief check on the sparse cloud, in the cloud's unit.

    Depth is measured toward the detector of view 0. The score is the median depth of the points seen in
    the central half of view 0 minus that of the other points. A grain centred in the image and resting
    on a substrate is a dome, nearer the detector at its centre than at its outline: the score is
    positive. A negative score means the relief came out inverted.
    """
    xy = recon.tracks.xy[0]
    seen = np.isfinite(xy).all(axis=1)
    depth = recon.points.xyz @ -recon.cameras[0].rotation[2]  # R[2] is the beam; −R[2] points to the detector
    h, w = image_shape
    centre = (np.abs(xy[:, 0] - w / 2) < w / 4) & (np.abs(xy[:, 1] - h / 2) < h / 4)
    return float(np.median(depth[seen & centre]) - np.median(depth[seen & ~centre]))


print(f"QUICK={QUICK}: grain {GRAIN_SIZE} px, quartz at {QUARTZ_SCALE:g}x; outputs in {OUT}")
print(f"shared data: {SHARED_DATA if SHARED_DATA is not None else 'not found'}")

# %% [markdown]
# ## Part 1 — a generated grain with exact ground truth
#
# `render_sem_series` builds a random grain (a height field on a flat substrate: footprint harmonics,
# bumps, flat facets) and ray-casts it through scaled orthographic cameras at the given stage tilts.
# `save_sem_dataset` writes the views the way a microscope does — 16-bit TIFFs with the FEI metadata tag
# (tilt, pixel size, working distance) — plus a `truth/` folder, which `load_sem_truth` reads back.

# %%
dataset = render_sem_series(
    GrainSpec(seed=3), tilts_deg=TILTS_DEG, image_size=(GRAIN_SIZE, GRAIN_SIZE), noise=0.02, seed=0
)
shutil.rmtree(OUT / "grain_data", ignore_errors=True)  # no views left over from an earlier run
grain_dir = save_sem_dataset(dataset, OUT / "grain_data")
truth = load_sem_truth(grain_dir)
print(f"series written to {grain_dir}: {', '.join(p.name for p in sorted(grain_dir.glob('*.tif')))}")
print(
    f"true grain: equivalent diameter {truth.grain_diameter_um:.2f} µm, height {truth.grain_height_um:.2f} µm, "
    f"volume {truth.true_volume_um3:.1f} µm³, max Feret {truth.max_feret_um:.2f} µm; "
    f"pixel size {truth.pixel_size_um:.4f} µm"
)

# %% [markdown]
# ### 1.1 Load
#
# `load_sem_series` reads the images (TIFF/PNG/JPEG), parses the vendor metadata, crops the data bar
# if there is one, orders the views by tilt and matches their histograms to the first view.
# `describe_series` gives one row per view: what was found and where it came from.

# %%
images = load_sem_series([grain_dir])
rows = describe_series(images)
print_table(rows, ["name", "size", "crop_rows", "tilt_deg", "pixel_size_um", "working_distance_mm", "vendor"])
print(f"where each value of {rows[0]['name']} came from: {rows[0]['source']}")
for warning in series_warnings(images):
    print("acquisition warning:", warning)

fig, axes = plt.subplots(1, len(images), figsize=(4 * len(images), 4))
for ax, im in zip(axes, images.images, strict=True):
    ax.imshow(im.pixels, cmap="gray", vmin=0, vmax=1)
    ax.set_title(f"{im.name}: tilt {im.metadata.tilt_deg:+.1f}°")
    ax.axis("off")
show(fig, "grain_views")

# %% [markdown]
# ### 1.2 Match
#
# `match_series` matches every pair of views (SIFT by default; `matching.matcher` selects `dense` or
# `roma`) and keeps the matches consistent with one affine fundamental matrix (RANSAC). The affine
# epipolar lines are parallel, and their direction gives the tilt axis in the image.

# %%
cfg = SemConfig()
matches = match_series(images, cfg.matching)
print("inlier matches per pair (rows/columns = views):")
print(matches.counts)
print_table(
    [
        {
            "pair": f"{images[p.raw.i].name} – {images[p.raw.j].name}",
            "raw": len(p.raw),
            "inliers": int(p.inlier_mask.sum()),
            "epipolar_rms_px": p.epipolar_rms_px,
        }
        for p in matches.pairs
    ],
    ["pair", "raw", "inliers", "epipolar_rms_px"],
)
print(f"tilt axis from the epipolar geometry: {matches.tilt_axis_deg:.2f}° from the image x axis")

fig, ax = plt.subplots(figsize=(10, 5))
plot_matches(ax, images, matches.pairs[-1])
show(fig, "grain_matches")

# %% [markdown]
# ### 1.3 Tracks
#
# `series_tracks` chains the pairwise inliers into multi-view tracks: a point seen in view 0 and view 1,
# and in view 1 and view 2, becomes one track seen in three views. It fails with a clear message when a
# view shares too few points with the others.

# %%
tracks = series_tracks(images, matches)
seen = tracks.visible.sum(axis=0)
print(f"{tracks.n_tracks} tracks; seen in every view: {int((seen == len(images)).sum())}")
for f, im in enumerate(images.images):
    print(f"  {im.name}: {int(tracks.visible[f].sum())} tracks")

fig, ax = plt.subplots(figsize=(5, 5))
ax.imshow(images[0].pixels, cmap="gray", vmin=0, vmax=1)
sc = ax.scatter(*tracks.xy[0].T, c=seen, s=6, cmap="plasma")
fig.colorbar(sc, ax=ax, label="views that see the track")
ax.set_title(f"tracks in {images[0].name}")
ax.axis("off")
show(fig, "grain_tracks")

# %% [markdown]
# ### 1.4 Cameras
#
# Every view gets a scaled orthographic camera `x = k [[1,0,0],[s,1,0]] R X + t`. With tilts in the
# metadata (as here) the rotations come from the stage tilt about the tilt axis and `k = 1 / pixel size`,
# so the cloud is in micrometres. Without metadata, the cameras come from the **factorization** of the
# track matrix (Poelman–Kanade; at least 3 views).
#
# Factorization cannot tell a relief from its depth-reversed twin (the *depth-reversal ambiguity* of
# affine cameras): both explain the images equally well, with opposite tilt signs. topograph decides with
# two witnesses — the metadata tilt sense where known, and "a specimen on a substrate protrudes" — and
# says which in the notes (docs/conventions.md). Here we run the
# factorization too and compare both with the true tilts.

# %%
pixel_size = series_pixel_size_um(images)
cams = estimate_cameras(images, tracks, matches, cfg.cameras, series_tilt_axis_deg(images), pixel_size)
print(f"camera source: {cams.source}; tilt axis {cams.tilt_axis_deg:.2f}°")
for note in cams.notes:
    print("  note:", note)

cfg_fact = apply_overrides(cfg, {"cameras.source": "factorization"})
cams_fact = estimate_cameras(images, tracks, matches, cfg_fact.cameras, None, pixel_size)
print("\nfactorization notes:")
for note in cams_fact.notes:
    print("  note:", note)
tilts_fact = relative_tilts_deg(cams_fact.cameras)
err = tilt_errors(tilts_fact, truth.tilts_deg)
print_table(
    [
        {"view": im.name, "true_rel_tilt_deg": t - truth.tilts_deg[0], "factorization_deg": tf}
        for im, t, tf in zip(images.images, truth.tilts_deg, tilts_fact, strict=True)
    ],
    ["view", "true_rel_tilt_deg", "factorization_deg"],
)
print(
    f"factorization tilt error: max {err['max_abs_error_deg']:.3f}°"
    + (" (after flipping the sign: the mirror branch)" if err["sign_flipped"] else "")
)

# %% [markdown]
# ### 1.5 Triangulation and bundle adjustment
#
# `refine` triangulates every track by linear least squares, then refines cameras and points together
# by bundle adjustment (robust soft-L1 loss). Metadata rotations stay fixed by default
# (`bundle.trust_metadata_rotations`): with a few small tilts the data constrain the tilt angle only
# weakly. The reprojection RMS per view, before and after, is the first quality figure to look at:
# a few tenths of a pixel is good.

# %%
unit = "um" if pixel_size is not None else "px"
recon = refine(cams.cameras, tracks, cfg.bundle, unit, cams.source, cams.notes)
print_table(
    [
        {
            "view": im.name,
            "rel_tilt_deg": float(recon.tilts_deg[f]),
            "scale_px_per_um": recon.cameras[f].scale,
            "rms_before_px": float(recon.rms_px_before[f]),
            "rms_after_px": float(recon.rms_px_after[f]),
        }
        for f, im in enumerate(images.images)
    ],
    ["view", "rel_tilt_deg", "scale_px_per_um", "rms_before_px", "rms_after_px"],
)
print(f"sparse cloud: {len(recon.points)} points in {recon.points.unit}")
score = dome_score(recon, images[0].shape)
print(f"relief check: dome score {score:+.2f} {unit} (> 0: the grain's centre is nearest the detector)")

# %% [markdown]
# ### 1.6 Dense reconstruction
#
# `run_dense` matches every view to the reference view (the median tilt) pixel by pixel with
# coarse-to-fine optical flow, rejects correspondences that are inconsistent or off their epipolar
# line, triangulates one point per reference pixel from all views that see it, fits the substrate
# plane, segments the grain (the largest region clearly above the plane), and builds a height map, a
# closed grain mesh and the grain metrics.

# %%
dense = run_dense(images, recon, cfg.dense, pixel_size)
summary = dense.summary()
print(
    f"reference view {images[dense.reference_view].name}: {summary['n_points']} dense points, "
    f"{summary['n_points_grain']} on the grain, {summary['n_points_3plus_views']} pixels seen in 3+ views"
)

fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
axes[0].imshow(images[dense.reference_view].pixels, cmap="gray", vmin=0, vmax=1)
axes[0].contour(dense.grain_mask, levels=[0.5], colors="yellow", linewidths=1)
axes[0].set_title("reference view and grain mask")
im = axes[1].imshow(dense.n_views_grid, cmap="magma")
fig.colorbar(im, ax=axes[1], label="observations per pixel")
axes[1].set_title("observations fused into each pixel")
im = axes[2].imshow(dense.height_map.height, cmap="viridis")
fig.colorbar(im, ax=axes[2], label=f"height above the substrate [{unit}]")
axes[2].set_title(f"height map ({dense.height_map.pixel_size:.3g} {unit} per pixel)")
for ax in axes:
    ax.axis("off")
show(fig, "grain_dense")

cloud_png = render_cloud_views(
    dense.cloud.xyz, dense.cloud.intensity, FIGURES / "grain_cloud.png", unit=unit, max_points=CLOUD_POINTS
)
show_png(cloud_png)

# %% [markdown]
# ### 1.7 Grain metrics, and the truth
#
# The grain's top is measured; its underside is never seen. The closed solid is the measured top
# closed by a flat base on the substrate plane (`dense.closure`), so volume and everything derived from
# the whole solid *rely on the modelled underside* (marked `*`). For this generated grain the underside
# really is flat, so the measured values can be compared with the truth directly.

# %%
metrics = dense.metrics
if metrics is None:
    print("no grain was found above the substrate (give a mask: dense.mask)")
else:
    print(metrics.one_line())
    print("(* = relies on the modelled underside)\n")
    top = float(np.nanmax(dense.height_map.height[dense.grain_mask]))
    print_table(
        [
            {"quantity": "volume [µm³]", "reconstructed": metrics.volume, "truth": truth.true_volume_um3},
            {"quantity": "max Feret [µm]", "reconstructed": metrics.feret_max, "truth": truth.max_feret_um},
            {"quantity": "height [µm]", "reconstructed": top, "truth": truth.grain_height_um},
        ],
        ["quantity", "reconstructed", "truth"],
    )

# %% [markdown]
# `evaluate_sem_truth` runs the evaluation protocol: it aligns the cloud to the true surface by a
# similarity transform (ICP from many starts; the mirror image is allowed) — this is
# `topograph.analysis.evaluate_sem.evaluate_cloud` with the synthetic truth's exact distance function —
# and reports the distances of the cloud to the true surface, in µm and in % of the grain diameter, and
# the completeness (the share of the visible true surface that has a reconstructed point nearby).
# For a truth given as a mesh or cloud, use `load_truth_surface` and `evaluate_cloud`.

# %%
ev = evaluate_sem_truth(
    dense.cloud.xyz,
    truth,
    recovered_tilts_deg=recon.tilts_deg,
    recovered_rotations=[c.rotation for c in recon.cameras],
)
grain_stats = ev["groups"]["grain"]
print(
    f"distance to the true surface: RMS {ev['rms_distance']:.3f} µm ({ev['rms_distance_pct']:.2f} % of the "
    f"diameter), median {ev['median_distance']:.3f} µm, 95th percentile {ev['p95_distance']:.3f} µm"
)
print(f"on the grain only: RMS {grain_stats['rms_distance']:.3f} µm ({grain_stats['rms_distance_pct']:.2f} %)")
print(f"completeness: {100 * ev['completeness']:.1f} % within {ev['completeness_tol']:.2f} µm")
print(
    f"alignment scale {ev['alignment']['scale']:.4f} (1 = the absolute scale is right), "
    f"mirrored: {ev['alignment']['mirrored']}; tilt errors max {ev['tilts']['max_abs_error_deg']:.3f}°"
)

a = ev["alignment"]
alignment = Alignment(np.array(a["rotation"]), a["scale"], np.array(a["translation"]), a["mirrored"])
aligned = alignment.apply(dense.cloud.xyz)
dist = truth.distance_to_surface(aligned)
fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
sc = axes[0].scatter(aligned[:, 0], aligned[:, 1], c=dist, s=1, cmap="inferno", vmax=np.quantile(dist, 0.98))
fig.colorbar(sc, ax=axes[0], label="distance to the true surface [µm]")
axes[0].set_aspect("equal")
axes[0].set_title("aligned dense cloud, seen from above")
axes[0].set_xlabel("x [µm]")
axes[0].set_ylabel("y [µm]")
axes[1].hist(dist, bins=60, color="tab:blue")
axes[1].set_xlabel("distance to the true surface [µm]")
axes[1].set_ylabel("points")
axes[1].set_yscale("log")
show(fig, "grain_vs_truth")

# %% [markdown]
# ## Part 2 — a real series without metadata: the quartz grain
#
# Three 8-bit PNGs of one quartz grain (from Töberg & Reithmeier 2020, BSD-3-Clause), without tilt,
# tilt axis or pixel size. So: cameras by factorization, the tilt axis from the matches, and the
# result in *pixel units* (give `--pixel-size-um` on the command line, or a sidecar, for micrometres).
# The part is skipped when the images are not found.

# %%
quartz_dir = SHARED_DATA / "sem" / "quartz" if SHARED_DATA is not None else None
HAVE_QUARTZ = quartz_dir is not None and (quartz_dir / "Quarz_01.png").is_file()
if not HAVE_QUARTZ:
    print(
        "Quartz images not found: Part 2 is skipped. Set TOPOGRAPH_SHARED_DATA to the folder that holds "
        "sem/quartz/Quarz_01.png (e.g. ../shared/data relative to the repository)."
    )

# %% [markdown]
# ### 2.1 Load (and resize)
#
# Nothing is known about these images. To keep the run short they are resized by `QUARTZ_SCALE`
# (`load_sem_series` has no resize option; we rebuild the `ImageSet` — when the pixel size is known it
# must grow by the same factor).

# %%
if HAVE_QUARTZ:
    full = load_sem_series([quartz_dir])
    q_images = ImageSet(
        tuple(
            replace(
                im,
                pixels=cv2.resize(im.pixels, None, fx=QUARTZ_SCALE, fy=QUARTZ_SCALE, interpolation=cv2.INTER_AREA),
                metadata=im.metadata
                if im.metadata.pixel_size_um is None
                else replace(im.metadata, pixel_size_um=im.metadata.pixel_size_um / QUARTZ_SCALE),
            )
            for im in full.images
        )
    )
    print_table(describe_series(q_images), ["name", "size", "tilt_deg", "pixel_size_um", "vendor"])

# %% [markdown]
# ### 2.2 Match, tracks
#
# The estimated tilt axis is the direction of the epipolar lines: about 90° here, i.e. the stage was
# tilted about the image's vertical axis and the parallax is horizontal.

# %%
if HAVE_QUARTZ:
    q_matches = match_series(q_images, cfg.matching)
    print("inlier matches per pair:")
    print(q_matches.counts)
    print(f"tilt axis from the epipolar geometry: {q_matches.tilt_axis_deg:.2f}°")
    q_tracks = series_tracks(q_images, q_matches)
    print(f"{q_tracks.n_tracks} tracks, {int(q_tracks.visible.all(axis=0).sum())} seen in all views")
    fig, ax = plt.subplots(figsize=(10, 5))
    plot_matches(ax, q_images, q_matches.pairs[0])
    show(fig, "quartz_matches")

# %% [markdown]
# ### 2.3 Cameras by factorization, bundle adjustment, and a relief check
#
# The notes say how the tilt axis was found and which depth branch was kept: without tilt metadata the
# protrusion witness decides (a grain resting on a substrate protrudes from it). `dome_score` (defined in
# the setup) checks that independently on the sparse cloud: the grain's centre is nearer the detector
# than its outline. Were the relief inverted, the other branch is chosen with `cameras.flip_relief` (the
# `--flip-relief` option of `topograph sem`) or `cameras.relief`.

# %%
if HAVE_QUARTZ:
    q_cams = estimate_cameras(q_images, q_tracks, q_matches, cfg.cameras, None, None)
    for note in q_cams.notes:
        print("note:", note)
    q_recon = refine(q_cams.cameras, q_tracks, cfg.bundle, "px", q_cams.source, q_cams.notes)
    recon_default = q_recon
    score = dome_score(q_recon, q_images[0].shape)
    print(f"dome score with the default branch: {score:+.1f} px")
    if score < 0:
        print("the relief is inverted: choosing the other mirror branch (cameras.flip_relief = true)")
        cfg_flip = apply_overrides(cfg, {"cameras.flip_relief": True})
        q_cams = estimate_cameras(q_images, q_tracks, q_matches, cfg_flip.cameras, None, None)
        q_recon = refine(q_cams.cameras, q_tracks, cfg.bundle, "px", q_cams.source, q_cams.notes)
        print(f"dome score after flipping: {dome_score(q_recon, q_images[0].shape):+.1f} px")
    print_table(
        [
            {
                "view": im.name,
                "rel_tilt_deg": float(q_recon.tilts_deg[f]),
                "rms_before_px": float(q_recon.rms_px_before[f]),
                "rms_after_px": float(q_recon.rms_px_after[f]),
            }
            for f, im in enumerate(q_images.images)
        ],
        ["view", "rel_tilt_deg", "rms_before_px", "rms_after_px"],
    )

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, r, title in ((axes[0], recon_default, "default mirror branch"), (axes[1], q_recon, "chosen branch")):
        d = r.points.xyz @ r.cameras[0].rotation[2]
        sc = ax.scatter(*r.tracks.xy[0].T, c=d - np.median(d), s=5, cmap="viridis")
        fig.colorbar(sc, ax=ax, label="depth toward the detector [px]")
        ax.set_xlim(0, q_images[0].shape[1])
        ax.set_ylim(q_images[0].shape[0], 0)
        ax.set_aspect("equal")
        ax.set_title(title)
    fig.suptitle(f"sparse points in {q_images[0].name}, coloured by depth")
    show(fig, "quartz_relief")

# %% [markdown]
# ### 2.4 Dense reconstruction, height map, metrics
#
# The height map is measured from the substrate plane, which is fitted to the dense points near the
# image border. The quartz grain lies on a featureless substrate with almost no dense matches, so check
# how much of the border has points, and how far the fitted plane is from facing the detector, before
# trusting heights and metrics.

# %%
if HAVE_QUARTZ:
    q_dense = run_dense(q_images, q_recon, cfg.dense, None)
    q_summary = q_dense.summary()
    print(f"{q_summary['n_points']} dense points, {q_summary['n_points_grain']} on the grain")
    h, w = q_dense.grain_mask.shape
    band = max(4, int(0.08 * min(h, w)))
    border = np.zeros((h, w), dtype=bool)
    border[:band] = border[-band:] = True
    border[:, :band] = border[:, -band:] = True
    covered = float(np.isfinite(q_dense.points_grid[border]).all(axis=1).mean())
    toward = q_recon.cameras[q_dense.reference_view].rotation[2]
    plane_angle = float(np.degrees(np.arccos(min(1.0, abs(q_dense.plane.normal @ toward)))))
    print(f"border pixels with a dense point: {100 * covered:.0f} %")
    print(f"substrate plane normal vs the reference viewing direction: {plane_angle:.1f}°")
    if q_dense.metrics is not None:
        print("grain metrics (pixel units):", q_dense.metrics.one_line())
    else:
        print("no grain region found above the fitted plane: metrics skipped")

    q_depth = q_dense.points_grid @ toward
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    im = axes[0].imshow(q_depth - np.nanmedian(q_depth), cmap="viridis")
    fig.colorbar(im, ax=axes[0], label="depth toward the detector [px]")
    axes[0].set_title("dense depth (reference view)")
    im = axes[1].imshow(q_dense.height_map.height, cmap="viridis")
    fig.colorbar(im, ax=axes[1], label="height above the fitted plane [px]")
    axes[1].contour(q_dense.grain_mask, levels=[0.5], colors="white", linewidths=1)
    axes[1].set_title("height map and grain mask")
    for ax in axes:
        ax.axis("off")
    show(fig, "quartz_dense")
    show_png(
        render_cloud_views(
            q_dense.cloud.xyz, q_dense.cloud.intensity, FIGURES / "quartz_cloud.png", unit="px", max_points=CLOUD_POINTS
        )
    )

# %% [markdown]
# ## Part 3 — the whole pipeline in one call
#
# `run_sem` chains the same stages (the Python API behind `topograph sem`) and, given an output folder,
# writes everything atomically: clouds (PLY), cameras and summary (JSON), figures, height map (TIFF),
# meshes, metrics and a self-contained `report.html`. Configuration keys are the dotted names of
# `SemConfig` (`topograph config show sem` lists them); `apply_overrides` changes a few. In the quick run
# the dense stage is switched off here to save time.

# %%
run_cfg = apply_overrides(SemConfig(), {"dense.enabled": not QUICK, "matching.sift.ratio": 0.8})
run = run_sem([grain_dir], OUT / "grain_run", run_cfg, command="sem_tutorial.py")
print(f"camera source {run.summary['camera_source']}, {run.summary['n_tracks']} tracks")
print("timings [s]:", {k: round(v, 2) for k, v in run.timings_s.items()})
print("files written:")
for path in sorted(p for p in (OUT / "grain_run").rglob("*") if p.is_file()):
    print("  ", path.relative_to(OUT))
