# %% [markdown]
# # Mesoscopic tutorial: phone photos → orthomosaic and height map, step by step
#
# The mesoscopic engine takes overlapping photos of a near-flat scene, taken by hand from a few
# centimetres, and registers, stitches and rectifies all of them *jointly* by gradient descent on a
# photometric loss (PyTorch, CPU is fine). It returns an orthomosaic and a height map in micrometres.
#
# This tutorial generates a small phantom with exact ground truth — the paper's "cut cards": six flat
# cards of known heights on a textured background — and walks through the engine:
#
# 1. generate and load the photos (EXIF: focal length, pixel pitch),
# 2. input checks (sharpness) and intrinsics,
# 3. initial camera positions (phase correlation) and overlaps,
# 4. the coarse-to-fine schedule, and the joint optimisation,
# 5. the results: loss curves, orthomosaic, height map, cameras, lens distortion,
# 6. the paper's Table-1 evaluation against the truth,
# 7. writing the result files.
#
# This file is a plain Python script and, generated from it, a Jupyter notebook
# (`python examples/make_notebooks.py`). Run either: `python examples/meso_tutorial.py` or open
# `examples/meso_tutorial.ipynb`.

# %% [markdown]
# ## Setup
#
# * `TOPOGRAPH_TUTORIAL_QUICK=1`: tiny images and a short schedule — a fast smoke run (as in the tests)
#   whose heights are rough; leave it unset for a run that takes a few minutes and gives usable numbers;
# * `TOPOGRAPH_TUTORIAL_OUT`: where the phantom and the figures go (default `./tutorial_output`).

# %%
import logging
import os
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from topograph.analysis.evaluate_meso_synthetic import evaluate_synthetic
from topograph.config import apply_overrides
from topograph.meso.config import PARAMETER_GROUPS, LevelConfig, MesoConfig, replace_settings
from topograph.meso.data import check_inputs, load_images, resolve_intrinsics
from topograph.meso.init_positions import estimate_initial_positions
from topograph.meso.outputs import write_outputs
from topograph.meso.reconstruct import reconstruct
from topograph.synth.meso import MesoSynthConfig, render_meso_sequence, write_meso_dataset

logging.basicConfig(format="%(levelname)s %(message)s")
logging.getLogger("topograph").setLevel(logging.WARNING)  # INFO shows the log of every round

QUICK = os.environ.get("TOPOGRAPH_TUTORIAL_QUICK", "0").strip().lower() not in ("", "0", "false", "no")
IMAGE_SIZE = (160, 120) if QUICK else (320, 240)  # (width, height) of the phone images, pixels
RASTER = (2, 2) if QUICK else (3, 2)  # columns x rows of the hand-held path: the number of photos
OUT = Path(os.environ.get("TOPOGRAPH_TUTORIAL_OUT", "tutorial_output")).resolve() / "meso"
FIGURES = OUT / "figures"
FIGURES.mkdir(parents=True, exist_ok=True)
INLINE = "ipykernel" in sys.modules  # running in Jupyter: show figures inline


def show(fig: plt.Figure, name: str) -> None:
    """Save a figure under OUT/figures and show it inline in a notebook."""
    path = FIGURES / f"{name}.png"
    fig.savefig(path, dpi=100, bbox_inches="tight")
    if INLINE:
        plt.show()
    else:
        print(f"[figure] {path}")
    plt.close(fig)


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


print(f"QUICK={QUICK}: {RASTER[0] * RASTER[1]} photos of {IMAGE_SIZE[0]}x{IMAGE_SIZE[1]} px; outputs in {OUT}")

# %% [markdown]
# ## 1 The phantom, and loading the photos
#
# `render_meso_sequence` ray-traces a hand-held phone path (a serpentine raster with ~70 % overlap,
# small tilts and rotations, height jitter) over the scene through a pinhole camera with a realistic,
# off-centre radial distortion, then adds vignetting, noise and JPEG compression. `write_meso_dataset`
# writes the JPEGs (with EXIF) and a `truth/` folder. The card heights are whole numbers of ground-sample
# distances (GSD: the size of one image pixel on the object).

# %%
synth_cfg = MesoSynthConfig(
    scene="cut_cards", image_size=IMAGE_SIZE, raster=RASTER, supersample=1 if QUICK else 2, seed=0
)
t0 = time.perf_counter()
phantom = render_meso_sequence(synth_cfg)
shutil.rmtree(OUT / "phantom", ignore_errors=True)  # no photos left over from an earlier run
data_dir = write_meso_dataset(phantom, OUT / "phantom")
truth = phantom.truth
print(f"rendered {truth.n_images} photos in {time.perf_counter() - t0:.1f} s into {data_dir}")
print(f"GSD {truth.gsd_mm * 1000:.1f} µm per pixel; camera about {truth.heights_mm.mean():.1f} mm above the scene")
print_table(
    [{"region": truth.region_names[k], "true_height_um": v} for k, v in sorted(truth.region_heights_um.items())],
    ["region", "true_height_um"],
)

images = load_images([data_dir / "images" / name for name in phantom.names])
print_table(
    [
        {
            "image": name,
            "focal_mm": e.focal_mm,
            "focal_35mm": e.focal_35mm,
            "pixel_pitch_um": e.pixel_pitch_um,
            "camera": e.camera,
        }
        for name, e in zip(images.names, images.exif, strict=True)
    ],
    ["image", "focal_mm", "focal_35mm", "pixel_pitch_um", "camera"],
)

cols, rows = RASTER
fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 2.4 * rows))
for ax, img, name in zip(axes.ravel(), images.pixels, images.names, strict=True):
    ax.imshow(img)
    ax.set_title(name, fontsize=8)
    ax.axis("off")
show(fig, "photos")

fig, axes = plt.subplots(1, 2, figsize=(12, 4))
im = axes[0].imshow(truth.height_mm * 1000.0, cmap="viridis")
fig.colorbar(im, ax=axes[0], label="true height [µm]")
axes[0].set_title("true height map")
axes[1].imshow(truth.texture)
axes[1].set_title("true scene texture")
for ax in axes:
    ax.axis("off")
show(fig, "truth")

# %% [markdown]
# ## 2 Input checks and intrinsics
#
# Before optimising anything the engine checks the photos: sharpness relative to the set's median
# (blurry photos are listed, never dropped) and EXIF focal length / focus distance drift (autofocus
# changes the magnification). `resolve_intrinsics` settles the focal length and pixel pitch (command
# line / config first, then EXIF).
#
# **Absolute scale** needs one more number: the magnification of one reference photo, or two points in
# it of known separation (`scale.scale_points` and `scale.scale_distance_mm`). Here we take the
# phantom's true magnification of photo 0; with real photos, measure it (e.g. a ruler in the scene).

# %%
cfg = MesoConfig(threads=2)
cfg = apply_overrides(cfg, {"scale.magnification": float(truth.magnifications[0])})
checks = check_inputs(images, cfg.checks)
print("relative sharpness:", ", ".join(f"{s:.2f}" for s in checks.sharpness))
for warning in checks.warnings:
    print("warning:", warning)
intrinsics = resolve_intrinsics(images, cfg.scale)
print(
    f"focal {intrinsics.focal_mm:.3f} mm ({intrinsics.source['focal_mm']}), pixel pitch "
    f"{intrinsics.pixel_pitch_mm * 1000:.2f} µm ({intrinsics.source['pixel_pitch']}), "
    f"pinhole focal {intrinsics.focal_px:.1f} px, magnification {intrinsics.magnification:.4f}"
)

# %% [markdown]
# ## 3 Initial positions and overlaps
#
# Phase correlation between every pair of downsampled photos gives their relative shifts and a
# verified overlap (normalised cross-correlation over the overlapping part). A least-squares solve turns
# the shifts into camera positions. With small offsets the optimisation simply starts at zero
# (`init.method = "auto"`). A photo that overlaps nothing stops the run with a clear message.

# %%
init = estimate_initial_positions(images.pixels, images.names, cfg.init)
print(f"start: {init.method}; verified overlapping pairs: {int((init.overlap > 0).sum() // 2)}")
fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
xy = init.xcorr_positions
axes[0].plot(xy[:, 0], xy[:, 1], "-o")
for k, name in enumerate(images.names):
    axes[0].annotate(name.removesuffix(".jpg"), xy[k], fontsize=7)
axes[0].invert_yaxis()
axes[0].set_aspect("equal")
axes[0].set_title("positions from phase correlation [px]")
im = axes[1].imshow(init.overlap, vmin=0, vmax=1, cmap="Blues")
fig.colorbar(im, ax=axes[1], label="verified overlap")
axes[1].set_title("pairwise overlap")
show(fig, "init")

# %% [markdown]
# ## 4 The schedule, and the joint optimisation
#
# The engine optimises in coarse-to-fine rounds. Each round works on downsampled photos and trains a
# chosen set of parameter groups; the rest stay frozen:
#
# 1. lateral shifts only, on heavily downsampled photos;
# 2. all camera parameters (height/scale, tilt, in-plane angle, gain/bias, focal length) and the lens
#    distortion;
# 3. the camera-centric height maps too.
#
# Before the first round that trains the heights (`heights.init: flow`, the default), each photo is
# matched densely (optical flow) to its neighbours after warping them through the object plane: what is
# left is relief parallax. The cameras and the lens distortion are refined on these matches
# (Levenberg-Marquardt, with the height of each match eliminated in closed form, Eqs. 4-5) and the
# height maps measured from them, so the height round only refines.
#
# The default schedule (`topograph.meso.config.default_schedule`) is for ~1000-pixel photos; for these
# small photos we use shorter rounds. Each iteration splats all photos onto a common grid, predicts
# every photo from it and takes an Adam step on the difference.

# %%
camera_groups = tuple(g for g in PARAMETER_GROUPS if g != "height")
if QUICK:
    schedule = (
        LevelConfig("shift", downsample=2, iterations=10, train=("position",), lr_scale=4.0),
        LevelConfig("camera", downsample=2, iterations=20, train=camera_groups, lr_scale=2.0),
        LevelConfig("height", downsample=2, iterations=20, train=(*camera_groups, "height")),
    )
else:
    schedule = (
        LevelConfig("shift", downsample=4, iterations=40, train=("position",), lr_scale=4.0),
        LevelConfig("camera", downsample=2, iterations=100, train=camera_groups, lr_scale=2.0),
        LevelConfig("height", downsample=2, iterations=40, train=(*camera_groups, "height"), warmup_iterations=10),
    )  # no round after the heights: a fresh optimiser state restarts the CNN and lowers its heights
cfg = replace(cfg, schedule=schedule)
if QUICK:  # the flow step needs more than 4 photos of 160x120 (it refuses to refine on so few): start flat
    cfg = replace_settings(cfg, {"heights.init": "zero"})
print_table(
    [
        {"round": lv.name, "downsample": lv.downsample, "iterations": lv.iterations, "trains": ", ".join(lv.train)}
        for lv in cfg.schedule
    ],
    ["round", "downsample", "iterations", "trains"],
)

t0 = time.perf_counter()
rec = reconstruct(images, cfg)
print(f"reconstruction took {time.perf_counter() - t0:.1f} s")
print("timings [s]:", {k: round(v, 2) for k, v in rec.timings.items()})

fig, ax = plt.subplots(figsize=(9, 3.5))
for name in dict.fromkeys(h.level for h in rec.history):
    steps = [k for k, h in enumerate(rec.history) if h.level == name]
    ax.plot(steps, [rec.history[k].mse_rgb for k in steps], label=name)
ax.set_yscale("log")
ax.set_xlabel("iteration")
ax.set_ylabel("photometric MSE")
ax.legend()
ax.set_title("loss per round")
show(fig, "loss")

# %% [markdown]
# ## 5 Results: orthomosaic, height map, cameras, distortion
#
# `rec.ortho` is the orthomosaic (RGB in [0, 1]) and `rec.height` the co-registered height map, in
# micrometres when the scale is known (`rec.scale`), NaN where no photo landed. `rec.height_map()`
# returns it as a `HeightMap` with its pixel size. The tilt of the whole scene is a gauge freedom: the
# engine levels the dominant plane (here the background) to height 0.

# %%
hmap = rec.height_map()
print(
    f"mosaic {rec.ortho.shape[1]}x{rec.ortho.shape[0]} px at {hmap.pixel_size * 1000:.1f} µm per pixel; "
    f"heights in {hmap.unit} (scale from {rec.scale.source})"
)
fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
axes[0].imshow(rec.ortho)
axes[0].set_title("orthomosaic")
lo, hi = np.nanpercentile(rec.height, [1, 99])
im = axes[1].imshow(rec.height, cmap="viridis", vmin=lo, vmax=hi)
fig.colorbar(im, ax=axes[1], label=f"height [{hmap.unit}]")
axes[1].set_title("height map")
for ax in axes:
    ax.axis("off")
show(fig, "mosaic")

cams = rec.cameras.to_dict()["cameras"]
print_table(
    [
        {
            "image": c["name"],
            "x_mm": None if c["position_mm"] is None else c["position_mm"][0],
            "y_mm": None if c["position_mm"] is None else c["position_mm"][1],
            "height_mm": c["height_mm"],
            "tilt_deg": c["tilt_deg"],
            "rotation_deg": c["in_plane_angle_deg"],
        }
        for c in cams
    ],
    ["image", "x_mm", "y_mm", "height_mm", "tilt_deg", "rotation_deg"],
)
print("true camera heights [mm]:", ", ".join(f"{z:.2f}" for z in truth.heights_mm))

radius, magnification = rec.model.distortion.profile(100)
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(radius, magnification, label="recovered")
ax.plot(radius, truth.distortion_magnification(radius), "--", label="true")
ax.set_xlabel("distance from the distortion centre [px]")
ax.set_ylabel("undistortion magnification M(r)")
ax.legend()
ax.set_title("lens distortion profile")
show(fig, "distortion")

# %% [markdown]
# ## 6 Table-1 evaluation against the truth
#
# The protocol of the paper's Table 1: for each region (the background and each card) take the mean and
# standard deviation of the estimated heights; apply one global shift so that the regions agree on
# average; **accuracy** is each region's remaining offset, **precision** its standard deviation. The
# optimal rescale factor (1.0 is ideal) tells whether the height scale is right. `evaluate_synthetic`
# first aligns the mosaic to the truth (a 2-D similarity fitted to where the photos' pixels land) and
# also reports registration and lens-distortion errors in pixels (GSD).

# %%
ev = evaluate_synthetic(rec, truth)
table = ev.table1
print_table(
    [
        {
            "region": r.name,
            "true_um": r.true_height,
            "shifted_mean_um": r.mean + table.shift,
            "std_um": r.std,
            "accuracy_um": r.accuracy,
            "pixels": r.n_pixels,
        }
        for r in table.regions
    ],
    ["region", "true_um", "shifted_mean_um", "std_um", "accuracy_um", "pixels"],
)
print(
    f"mean accuracy {table.mean_accuracy:.0f} µm ({table.mean_accuracy / ev.gsd_um:.2f} GSD), "
    f"mean precision {table.mean_precision:.0f} µm ({table.mean_precision / ev.gsd_um:.2f} GSD), "
    f"rescale factor {table.rescale:.3f}"
)
print(
    f"registration RMS per photo: max {ev.registration_px.max():.2f} px; "
    f"distortion error: RMS {ev.distortion_rms_px:.2f} px, max {ev.distortion_max_px:.2f} px"
)

fig, ax = plt.subplots(figsize=(6, 4))
true_h = [r.true_height for r in table.regions]
ax.errorbar(true_h, [r.mean + table.shift for r in table.regions], yerr=[r.std for r in table.regions], fmt="o")
ax.plot([0, max(true_h)], [0, max(true_h)], "k--", lw=1, label="ideal")
ax.set_xlabel("true height [µm]")
ax.set_ylabel("estimated height (shifted) [µm]")
ax.set_title("Table 1: estimated vs true region heights")
ax.legend()
show(fig, "table1")

# %% [markdown]
# ## 7 Writing the results
#
# `write_outputs` writes everything a run produces, each file atomically: the orthomosaic (PNG with
# transparency, TIFF with resolution), the height map (float32 TIFF in µm with its pixel size, and a
# PNG), the surface mesh (PLY), cameras and distortion (JSON), loss history, input checks, the resolved
# configuration and a summary. `topograph.meso.run_meso(paths, out_dir, cfg)` — behind the
# `topograph meso` command — does load, reconstruct and write in one call.

# %%
files = write_outputs(rec, OUT / "run")
for key, path in sorted(files.items()):
    print(f"{key:20s} {path.relative_to(OUT)}")
