"""Where the dense error of one convention-matrix case comes from (issue 16).

    python benchmarks/bench_sem_error_breakdown.py "low contrast" [--size 800]

Renders the case of ``bench_sem_conventions.py`` whose name contains the argument, runs ``topograph sem``
(dense, default settings), aligns the cloud as that benchmark does (proper similarity ICP) and splits the
error of every reference pixel that sees the grain (its fused point against the true surface point on
the same pixel ray):

* the normal distance to the surface (the benchmark's "grain RMS") and the error along the reference ray
  (depth), by the true surface slope and by the distance from the grain's outline;
* the share of reference grain pixels that hold a point, by slope (is a wall seen at all?);
* the dense flow's error along the true disparity from the reference view to every other view, by slope
  (a systematic part, e.g. the rim pulled toward the substrate, against the noise).

Percentages are of the grain's equivalent diameter D.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from bench_sem_conventions import named_case, render_case  # noqa: E402
from test_sem_conventions import metadata_overrides  # noqa: E402

from topograph.analysis.evaluate_sem import Alignment, evaluate_sem_truth  # noqa: E402
from topograph.matching.dense import dense_flow  # noqa: E402
from topograph.sem.config import SemConfig  # noqa: E402
from topograph.sem.dense import flow_config  # noqa: E402
from topograph.sem.pipeline import run_sem  # noqa: E402
from topograph.synth.sem import cast_rays, load_sem_truth, save_sem_dataset  # noqa: E402

SLOPE_BANDS_DEG = ((0, 10), (10, 60), (60, 75), (75, 91))
EDGE_BANDS_PX = ((0, 4), (4, 16), (16, 64), (64, 10**6))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("case", help="part of a case name of bench_sem_conventions.py")
    ap.add_argument("--size", type=int, default=800)
    args = ap.parse_args()
    name, case, kw = named_case(args.case)
    ds = render_case(case, kw, args.size)
    with tempfile.TemporaryDirectory() as tmp:
        path = save_sem_dataset(ds, Path(tmp) / "series", with_metadata=False)
        truth = load_sem_truth(path)
        run = run_sem([path], None, SemConfig(), overrides=metadata_overrides(case, truth.pixel_size_um))
    order = [int(im.name.split("_")[-1].split(".")[0]) for im in run.images.images]
    ref = run.dense.reference_view
    cloud = run.dense.cloud.xyz
    if len(cloud) > 300_000:  # as the convention benchmark scores it
        cloud = cloud[np.random.default_rng(0).choice(len(cloud), 300_000, replace=False)]
    res = evaluate_sem_truth(cloud, truth, max_truth_points=20000)
    al = res["alignment"]
    align = Alignment(np.array(al["rotation"]), al["scale"], np.array(al["translation"]), False)
    d_um = truth.grain_diameter_um
    grid = run.dense.points_grid.astype(np.float64)
    h, w, _ = grid.shape
    ok = np.isfinite(grid).all(axis=2)
    pts = np.full((h, w, 3), np.nan)
    pts[ok] = align.apply(grid[ok])
    dist = np.full((h, w), np.nan)
    dist[ok] = truth.distance_to_surface(pts[ok])
    view = order[ref]
    cam = truth.cameras[view]
    yy, xx = np.mgrid[0:h, 0:w]
    pix = np.column_stack([xx.ravel(), yy.ravel()]).astype(float)
    hits = cast_rays(truth.surface, cam, pix)
    true_pts = hits.points.reshape(h, w, 3)
    on = hits.on_grain.reshape(h, w)
    ray = np.cross(cam.matrix[0], cam.matrix[1])
    ray /= np.linalg.norm(ray)
    depth_err = (pts - true_pts) @ ray
    gy, gx = np.gradient(truth.surface.height, truth.grid_spacing_um)
    slope_grid = np.degrees(np.arctan(np.hypot(gx, gy)))
    x0, y0 = truth.grid_origin_um
    sp = truth.grid_spacing_um
    ci = np.clip(np.rint((true_pts[..., 0] - x0) / sp).astype(int), 0, slope_grid.shape[1] - 1)
    cj = np.clip(np.rint((true_pts[..., 1] - y0) / sp).astype(int), 0, slope_grid.shape[0] - 1)
    slope = slope_grid[cj, ci]
    edge = ndimage.distance_transform_edt(on)
    sel = on & ok

    def pct(v: np.ndarray) -> float:
        return float(100 * np.sqrt(np.nanmean(np.square(v))) / d_um)

    print(
        f"## {name} ({args.size} px): D = {d_um:.2f} µm = {d_um / truth.pixel_size_um:.0f} px, scale {al['scale']:.4f}"
    )
    print(f"grain RMS (benchmark group) {res['groups']['grain']['rms_distance_pct']:.3f} % of D; per reference pixel:")
    print(
        f"normal distance RMS {pct(dist[sel]):.3f} %, "
        f"depth error along the reference ray RMS {pct(depth_err[sel]):.3f} %"
    )
    tot = np.nansum(dist[sel] ** 2)
    print(
        "| true slope ° | share of grain px | with a point | normal RMS % D | depth RMS % D "
        "| \\|depth err\\| < 1 % D | share of squared error |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for lo, hi in SLOPE_BANDS_DEG:
        band = on & (slope >= lo) & (slope < hi)
        m = band & ok
        if m.sum() < 50:
            continue
        print(
            f"| {lo}–{hi} | {100 * band.sum() / on.sum():.1f} % | {100 * m.sum() / band.sum():.1f} % | "
            f"{pct(dist[m]):.3f} | "
            f"{pct(depth_err[m]):.3f} | {100 * np.mean(np.abs(depth_err[m]) < 0.01 * d_um):.1f} % | "
            f"{100 * np.nansum(dist[m] ** 2) / tot:.1f} % |"
        )
    print("| px from the grain outline | share | normal RMS % D | share of squared error |")
    print("|---|---:|---:|---:|")
    for lo, hi in EDGE_BANDS_PX:
        m = sel & (edge >= lo) & (edge < hi)
        if m.sum() >= 50:
            rng = f"{lo}–{hi}" if hi < 10**6 else f"≥ {lo}"
            print(
                f"| {rng} | {100 * m.sum() / sel.sum():.1f} % | {pct(dist[m]):.3f} | "
                f"{100 * np.nansum(dist[m] ** 2) / tot:.1f} % |"
            )
    # the flow alone, against the true correspondences (same flow settings as the dense stage)
    flow_cfg = flow_config(SemConfig().dense, h * w)
    images = run.images
    on_flat = on.ravel()
    plane_hit = true_pts.reshape(-1, 3) - (true_pts.reshape(-1, 3)[:, 2] / ray[2])[:, None] * ray  # ray ∩ Z = 0
    print(
        "| flow ref → view | median true disparity px "
        "| mean error along it px, slope 0–20° / 20–50° / 50–70° / 70–90° | RMS px |"
    )
    print("|---|---:|---|---:|")
    for k in range(len(images)):
        if k == ref:
            continue
        cam_k = truth.cameras[order[k]]
        x_true = true_pts.reshape(-1, 3) @ cam_k.matrix.T + cam_k.translation
        disparity = x_true - (plane_hit @ cam_k.matrix.T + cam_k.translation)
        mag = np.linalg.norm(disparity, axis=1)
        fl = dense_flow(images[ref].pixels, images[k].pixels, flow_cfg)
        err = np.einsum("ij,ij->i", pix + fl.flow.reshape(-1, 2) - x_true, disparity / np.maximum(mag, 1e-9)[:, None])
        m = fl.valid.ravel() & on_flat & (mag > 1.0)
        bands = []
        for lo, hi in ((0, 20), (20, 50), (50, 70), (70, 91)):
            mm = m & (slope.ravel() >= lo) & (slope.ravel() < hi)
            bands.append(f"{err[mm].mean():+.3f}" if mm.sum() >= 50 else "—")
        rms = float(np.sqrt(np.mean(err[m] ** 2)))
        print(f"| {images[ref].name} → {images[k].name} | {np.median(mag[m]):.1f} | {' / '.join(bands)} | {rms:.3f} |")


if __name__ == "__main__":
    main()
